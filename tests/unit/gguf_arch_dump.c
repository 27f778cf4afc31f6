/* A test-only program (not installed): prints the GGUF view's tensor list for a config as JSON — each
 * tensor's GGUF name, source tensor, shape and transforms, and the generated tensors' values as float32
 * bit patterns — so that the transforms can be checked against llama.cpp's converter on the built folder.
 *
 *   gguf_arch_dump CONFIG
 *
 * {"arch": "llama", "tensors": [{"name": "rope_freqs.weight", "src": null, "shape": [4], "permute_heads": 0,
 *   "add_one": 0, "keep_f32": 1, "gen": [1065353216, ...]}, ...]}
 *
 * Errors: the message on stderr, exit 1. */
#include <stdio.h>
#include <string.h>

#include "formats/jsonpy.h"
#include "merge/gguf/gguf_arch.h"
#include "plan_dump.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gguf_arch_dump CONFIG\n");
        return 1;
    }
    mm_err err = {{0}};
    mm_config *cfg = NULL;
    mm_plan *plan = NULL;
    mm_gguf_arch a = {0};
    mm_gguf_kvs kv = {0};
    int rc = mm_dump_plan(argv[1], &cfg, &plan, &err);
    if (rc == 0)
        rc = mm_gguf_arch_build(plan, MM_GGUF_FTYPE_ALL_F32, &kv, &a, &err);
    if (rc < 0) {
        mm_gguf_kvs_free(&kv);
        mm_gguf_arch_free(&a);
        return mm_dump_fail(&err, cfg, plan);
    }
    mm_buf b = {0};
    mm_buf_puts(&b, "{\"arch\": ");
    mm_json_string_py(a.arch, &b);
    mm_buf_puts(&b, ", \"tensors\": [");
    for (size_t i = 0; i < a.ntensors; i++) {
        const mm_gguf_tensor *t = &a.tensors[i];
        mm_buf_puts(&b, i ? ",\n  {\"name\": " : "\n  {\"name\": ");
        mm_json_string_py(t->name, &b);
        mm_buf_puts(&b, ", \"src\": ");
        if (t->src == MM_GGUF_GENERATED)
            mm_buf_puts(&b, "null");
        else
            mm_json_string_py(plan->tensors[t->src].name, &b);
        mm_buf_puts(&b, ", \"shape\": [");
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            mm_buf_printf(&b, "%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
            numel *= t->shape[d];
        }
        mm_buf_printf(&b, "], \"permute_heads\": %u, \"add_one\": %d, \"keep_f32\": %d", t->permute_heads, t->add_one,
                      t->keep_f32);
        if (t->gen) {
            mm_buf_puts(&b, ", \"gen\": [");
            for (uint64_t j = 0; j < numel; j++) {
                uint32_t u;
                memcpy(&u, &t->gen[j], sizeof u);
                mm_buf_printf(&b, "%s%u", j ? ", " : "", u);
            }
            mm_buf_puts(&b, "]");
        }
        mm_buf_puts(&b, "}");
    }
    mm_buf_puts(&b, "]}\n");
    fputs(b.data, stdout);
    mm_buf_free(&b);
    mm_gguf_kvs_free(&kv);
    mm_gguf_arch_free(&a);
    mm_plan_free(plan);
    mm_config_free(cfg);
    return 0;
}
