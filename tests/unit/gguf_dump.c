/* A test-only program (not installed): writes the GGUF view's header for a config, the tensor data left
 * zero, so that the key/values and tensor infos can be compared with llama.cpp's converter without
 * computing the merge.
 *
 *   gguf_dump CONFIG TYPE NAME OUT.gguf
 *
 * Errors: the message on stderr, exit 1. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "merge/gguf/gguf_plan.h"
#include "plan_dump.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: gguf_dump CONFIG TYPE NAME OUT.gguf\n");
        return 1;
    }
    mm_err err = {{0}};
    mm_gguf_outtype t;
    if (mm_gguf_outtype_parse(argv[2], &t) < 0) {
        fprintf(stderr, "TYPE: one of %s\n", mm_gguf_outtype_names);
        return 1;
    }
    mm_config *cfg = NULL;
    mm_plan *plan = NULL;
    mm_gguf_file *g = NULL;
    int rc = mm_dump_plan(argv[1], &cfg, &plan, &err);
    if (rc == 0)
        rc = mm_gguf_plan(plan, t, argv[3], &g, &err);
    if (rc < 0) {
        return mm_dump_fail(&err, cfg, plan);
    }
    int fd = open(argv[4], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, g->header.data, g->header.len) != (ssize_t)g->header.len ||
        ftruncate(fd, (off_t)g->size) < 0 || close(fd) < 0) {
        perror(argv[4]);
        return 1;
    }
    printf("%s\n", g->file_name);
    mm_gguf_file_free(g);
    mm_plan_free(plan);
    mm_config_free(cfg);
    return 0;
}
