/* Fuzzes the GGUF view (merge/gguf: the family's keys and tensor list from config.json, the tokenizer keys
 * from the tokenizer files; merge/engine/gguf_read.c: the data). The input is a model folder's files,
 * split by lines "=====": config.json, then tokenizer.json (or "SPM:" and a tokenizer.model),
 * tokenizer_config.json, special_tokens_map.json, added_tokens.json, chat_template.jinja (an empty or
 * missing part: the file is absent). The tensors are those of a small Llama-shaped model made once with
 * mm-mkmodel (hidden 64, 4 heads, 2 key/value heads, vocabulary 96); the output type is chosen by the
 * input's length. A one-model passthrough merge of the folder is planned with --gguf.
 *
 * Properties: a refused view has a message; an accepted one has a file named *.gguf whose header starts
 * "GGUF" version 3 with its tensor count, tensors at ascending 32-byte-aligned offsets inside the file,
 * and every byte of it reads (front to back in 64 KiB pieces) without error. */
#include <string.h>

#include "config/config.h"
#include "fuzz.h"
#include "merge/engine/vfs.h"
#include "merge/gguf/gguf_plan.h"
#include "merge/plan/plan.h"

static const char *const FILES[] = {"config.json", "tokenizer.json", "tokenizer_config.json",
                                    "special_tokens_map.json", "added_tokens.json", "chat_template.jinja"};
static char dir[4096], model[4200], yml[4200];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_tempdir("gguf", dir, sizeof dir);
    snprintf(model, sizeof model, "%s/model", dir);
    fuzz_sh("'%s' '%s' --hidden 64 --intermediate 96 --vocab 96 --heads 4 --kv-heads 2 >/dev/null", fuzz_mkmodel(),
            model);
    snprintf(yml, sizeof yml, "%s/merge.yml", dir);
    FILE *f = fopen(yml, "w");
    if (!f || fprintf(f, "merge_method: passthrough\nmodels:\n  - model: %s\n", model) < 0 || fclose(f) != 0)
        exit(1);
    return 0;
}

static void check_file(mm_vfs *v)
{
    size_t idx = mm_vfs_count(v) - 1; /* the GGUF file comes after the plan's files */
    const char *name = mm_vfs_name(v, idx);
    size_t nlen = strlen(name);
    FUZZ_CHECK(nlen > 5 && strcmp(name + nlen - 5, ".gguf") == 0);
    uint64_t size = mm_vfs_size(v, idx);
    enum { CHUNK = 1 << 16 };
    char *buf = malloc(CHUNK);
    FUZZ_CHECK(buf && size >= 24 && mm_vfs_read(v, idx, 0, 24, buf) == 24);
    uint32_t version;
    memcpy(&version, buf + 4, 4);
    FUZZ_CHECK(memcmp(buf, "GGUF", 4) == 0 && version == 3);
    for (uint64_t off = 0; off < size; off += CHUNK) {
        ssize_t n = mm_vfs_read(v, idx, off, CHUNK, buf);
        FUZZ_CHECK(n == (ssize_t)(size - off < CHUNK ? size - off : CHUNK));
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *end = data + size;
    const uint8_t *rest = fuzz_put_parts(model, data, end, FILES, 1, 0);
    fuzz_put_parts(model, rest, end, FILES + 1, 5, 1);
    static const mm_gguf_outtype types[] = {MM_GGUF_OUT_Q8_0, MM_GGUF_OUT_BF16, MM_GGUF_OUT_F16, MM_GGUF_OUT_F32,
                                            MM_GGUF_OUT_AUTO};
    mm_plan_options po;
    mm_plan_options_default(&po);
    po.gguf = (int)types[size % 5];
    mm_config *cfg = NULL;
    mm_plan *plan = NULL;
    mm_vfs *vfs = NULL;
    mm_err err;
    err.msg[0] = 0;
    if (mm_config_load(yml, &cfg, &err) == 0 && mm_plan_build(cfg, &po, &plan, &err) == 0) {
        mm_gguf_file *g = NULL;
        if (mm_gguf_plan(plan, (mm_gguf_outtype)po.gguf, NULL, &g, &err) == 0) {
            for (size_t i = 0; i < g->arch.ntensors; i++) {
                FUZZ_CHECK(g->offsets[i] % MM_GGUF_ALIGN == 0 && g->offsets[i] + g->nbytes[i] <= g->size);
                FUZZ_CHECK(i == 0 || g->offsets[i] >= g->offsets[i - 1] + g->nbytes[i - 1]);
                FUZZ_CHECK(g->offsets[i] >= g->header.len);
            }
            mm_gguf_file_free(g);
            FUZZ_CHECK(mm_vfs_from_plan(plan, &vfs, &err) == 0);
            check_file(vfs);
            mm_vfs_free(vfs);
        } else {
            FUZZ_CHECK(err.msg[0] != 0);
        }
    }
    mm_plan_free(plan);
    mm_config_free(cfg);
    return 0;
}
