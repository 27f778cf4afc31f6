/* A test-only program (not installed): the tokenizer keys of the GGUF view for a config and a GGUF
 * architecture, written as a GGUF holding only them (no tensors), so that they can be compared with what
 * llama.cpp's converter writes for the built folder without the model side of the view.
 *
 *   gguf_vocab_dump CONFIG ARCH OUT.gguf
 *
 * Errors: the message on stderr, exit 1. */
#include <stdio.h>
#include <stdlib.h>

#include "merge/gguf/gguf_vocab.h"
#include "plan_dump.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: gguf_vocab_dump CONFIG ARCH OUT.gguf\n");
        return 1;
    }
    mm_err err = {{0}};
    mm_config *cfg = NULL;
    mm_plan *plan = NULL;
    mm_gguf_kvs kv = {0};
    int rc = mm_dump_plan(argv[1], &cfg, &plan, &err);
    if (rc == 0)
        rc = mm_gguf_vocab_build(plan, argv[2], &kv, &err);
    if (rc < 0) {
        mm_gguf_kvs_free(&kv);
        return mm_dump_fail(&err, cfg, plan);
    }
    mm_buf header = {0};
    uint64_t *offsets, size;
    mm_gguf_header(&kv, NULL, 0, &header, &offsets, &size);
    FILE *f = fopen(argv[3], "wb");
    if (!f || fwrite(header.data, 1, header.len, f) != header.len || fclose(f) != 0) {
        perror(argv[3]);
        return 1;
    }
    free(offsets);
    mm_buf_free(&header);
    mm_gguf_kvs_free(&kv);
    mm_plan_free(plan);
    mm_config_free(cfg);
    return 0;
}
