/* A small source model written with the project's safetensors writer, shared by the unit tests that plan
 * merges (test_plan, test_vfs; test_gguf_arch writes its own tensor lists with check_write_safetensors). */
#ifndef MM_MODEL_FIXTURE_H
#define MM_MODEL_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "formats/safetensors.h"

/* dir/model.safetensors holding the tensors t[0..n) (laid out here, in this order; their names are freed):
 * data byte i is i * 7 % 251 when `patterned` (tests that read values tell tensors apart by it), else 0. */
static inline void check_write_safetensors(const char *dir, mm_st_tensor *t, size_t n, int patterned)
{
    char *hdr;
    size_t hsize;
    mm_st_layout(t, n, &hdr, &hsize);
    char *path = mm_xasprintf("%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    fwrite(hdr, 1, hsize, f);
    for (uint64_t i = 0; i < t[n - 1].end; i++)
        fputc(patterned ? (int)(i * 7 % 251) : 0, f);
    fclose(f);
    free(path);
    free(hdr);
    for (size_t i = 0; i < n; i++)
        free(t[i].name);
}

/* A Llama-shaped model folder root/name with `layers` layers, hidden size h, vocab v, bf16 weights (byte i
 * of the data is i * 7 % 251), config.json and tokenizer.json; lm_head unless tied, and layer 1 without
 * its MLP when skip_layer1_mlp. Heap path. */
static inline char *check_make_model(const char *root, const char *name, int layers, int h, int v, int with_lm_head,
                              int skip_layer1_mlp)
{
    char *dir = mm_xasprintf("%s/%s", root, name);
    mkdir(dir, 0755);
    mm_st_tensor t[64];
    size_t n = 0;
    t[n++] = (mm_st_tensor){.name = mm_xstrdup("model.embed_tokens.weight"), .dtype = MM_DT_BF16, .ndim = 2,
                            .shape = {(uint64_t)v, (uint64_t)h}};
    t[n++] = (mm_st_tensor){.name = mm_xstrdup("model.norm.weight"), .dtype = MM_DT_BF16, .ndim = 1,
                            .shape = {(uint64_t)h}};
    if (with_lm_head)
        t[n++] = (mm_st_tensor){.name = mm_xstrdup("lm_head.weight"), .dtype = MM_DT_BF16, .ndim = 2,
                                .shape = {(uint64_t)v, (uint64_t)h}};
    for (int l = 0; l < layers; l++) {
        t[n++] = (mm_st_tensor){.name = mm_xasprintf("model.layers.%d.self_attn.q_proj.weight", l), .dtype = MM_DT_BF16,
                                .ndim = 2, .shape = {(uint64_t)h, (uint64_t)h}};
        if (!(skip_layer1_mlp && l == 1))
            t[n++] = (mm_st_tensor){.name = mm_xasprintf("model.layers.%d.mlp.down_proj.weight", l),
                                    .dtype = MM_DT_BF16, .ndim = 2, .shape = {(uint64_t)h, (uint64_t)(2 * h)}};
    }
    check_write_safetensors(dir, t, n, 1);
    char *cfg = mm_xasprintf("%s/config.json", dir);
    char *text = mm_xasprintf("{\"architectures\": [\"LlamaForCausalLM\"], \"num_hidden_layers\": %d, "
                              "\"rms_norm_eps\": 1e-05, \"torch_dtype\": \"float32\", \"vocab_size\": %d}",
                              layers, v);
    check_write_file(cfg, text, strlen(text));
    free(cfg);
    free(text);
    char *tok = mm_xasprintf("%s/tokenizer.json", dir);
    check_write_file(tok, "{}", 2);
    free(tok);
    return dir;
}

#endif
