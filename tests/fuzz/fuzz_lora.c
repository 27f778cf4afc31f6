/* Fuzzes LoRA adapter reading and applying (merge/plan/lora.c, D19): the input is a little-endian u16
 * length N, then N bytes of adapter_config.json, then the bytes of adapter_model.safetensors. They are
 * written to a folder and applied to a base model made once with mm-mkmodel (Llama-shaped, hidden 8,
 * vocabulary 16, 1 layer, f32: `model.layers.0.self_attn.q_proj.weight` is [8, 8], `v_proj` [4, 8],
 * `model.embed_tokens.weight` [16, 8]).
 *
 * Properties of an accepted adapter: every change belongs to a base tensor of its shape with rank >= 1,
 * and applying it to the whole tensor, and to a range starting inside a row, gives the same values for
 * the common elements. A refused adapter has a message. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "merge/plan/lora.h"

static char base[4096], adapter[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char dir[2048];
    fuzz_tempdir("lora", dir, sizeof dir);
    snprintf(base, sizeof base, "%s/base", dir);
    snprintf(adapter, sizeof adapter, "%s/adapter", dir);
    fuzz_sh("'%s' '%s' --hidden 8 --intermediate 12 --vocab 16 --heads 2 --kv-heads 1 --layers 1 --dtype f32 "
            ">/dev/null && mkdir '%s'", fuzz_mkmodel(), base, adapter);
    return 0;
}

static void write_file(const char *name, const uint8_t *data, size_t size)
{
    char *p = mm_path_join(adapter, name);
    FILE *f = fopen(p, "wb");
    FUZZ_CHECK(f && fwrite(data, 1, size, f) == size && fclose(f) == 0);
    free(p);
}

static void check_delta(mm_model *m, mm_lora_delta *d)
{
    char *name = mm_xasprintf("%s.weight", d->module);
    const mm_model_tensor *t = mm_model_find(m, name);
    free(name);
    FUZZ_CHECK(t && t->lora == d && d->rank >= 1);
    FUZZ_CHECK(t->st->ndim == 2 && t->st->shape[0] == d->rows && t->st->shape[1] == d->cols);
    size_t n = (size_t)(d->rows * d->cols);
    float *all = calloc(n, sizeof *all), *part = calloc(n, sizeof *part);
    int rc = mm_lora_apply(d, 0, n, d->cols, all);
    FUZZ_CHECK(rc == 0);
    size_t from = n / 2 + (d->cols > 1); /* inside a row when there are several columns */
    if (from < n) {
        FUZZ_CHECK(mm_lora_apply(d, from, n - from, d->cols, part) == 0);
        FUZZ_CHECK(memcmp(all + from, part, (n - from) * sizeof *all) == 0);
    }
    free(all);
    free(part);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t n = (size_t)data[0] | (size_t)data[1] << 8;
    if (n > size - 2)
        n = size - 2;
    write_file("adapter_config.json", data + 2, n);
    write_file("adapter_model.safetensors", data + 2 + n, size - 2 - n);
    mm_model *m;
    mm_err err = {{0}};
    int rc = mm_model_open(base, adapter, &m, &err);
    if (rc < 0) {
        FUZZ_CHECK(err.msg[0] != '\0');
        return 0;
    }
    FUZZ_CHECK(m->lora != NULL);
    for (size_t i = 0; i < m->lora->n; i++)
        check_delta(m, &m->lora->deltas[i]);
    mm_model_free(m);
    return 0;
}
