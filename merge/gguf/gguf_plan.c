#include "gguf_plan.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gguf_vocab.h"

const char mm_gguf_outtype_names[] = "auto, bf16, f16, f32, q8_0";

int mm_gguf_outtype_parse(const char *s, mm_gguf_outtype *out)
{
    static const struct {
        const char *name;
        mm_gguf_outtype t;
    } names[] = {{"auto", MM_GGUF_OUT_AUTO}, {"f32", MM_GGUF_OUT_F32}, {"f16", MM_GGUF_OUT_F16}, {"bf16", MM_GGUF_OUT_BF16},
                 {"q8_0", MM_GGUF_OUT_Q8_0}};
    for (size_t i = 0; i < MM_COUNT(names); i++)
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].t;
            return 0;
        }
    return -EINVAL;
}

/* --gguf auto as the converter decides it: the dtype of the first tensor of two or more dimensions. */
static mm_gguf_outtype resolve_auto(const mm_plan *p, const mm_gguf_arch *a)
{
    for (size_t i = 0; i < a->ntensors; i++) {
        const mm_gguf_tensor *t = &a->tensors[i];
        if (t->src == MM_GGUF_GENERATED || t->ndim < 2)
            continue;
        mm_dtype dt = p->tensors[t->src].dtype;
        if (dt == MM_DT_BF16)
            return MM_GGUF_OUT_BF16;
        if (dt == MM_DT_F16)
            return MM_GGUF_OUT_F16;
    }
    return MM_GGUF_OUT_F16;
}

static uint32_t file_type(mm_gguf_outtype t)
{
    switch (t) {
    case MM_GGUF_OUT_F32:
        return MM_GGUF_FTYPE_ALL_F32;
    case MM_GGUF_OUT_BF16:
        return MM_GGUF_FTYPE_MOSTLY_BF16;
    case MM_GGUF_OUT_Q8_0:
        return MM_GGUF_FTYPE_MOSTLY_Q8_0;
    default:
        return MM_GGUF_FTYPE_MOSTLY_F16;
    }
}

/* The type the outtype writes its quantisable tensors in (the file name's TYPE). */
static mm_gguf_qtype main_qtype(mm_gguf_outtype t)
{
    switch (t) {
    case MM_GGUF_OUT_F32:
        return MM_GGML_F32;
    case MM_GGUF_OUT_BF16:
        return MM_GGML_BF16;
    case MM_GGUF_OUT_Q8_0:
        return MM_GGML_Q8_0;
    default:
        return MM_GGML_F16;
    }
}

/* A tensor's type in the file: the converter's rule (prepare_tensors) — F32 where it keeps F32, else the
 * outtype, and Q8_0 falls back to F16 for rows that are not whole blocks. */
static mm_gguf_qtype tensor_type(const mm_gguf_tensor *t, mm_gguf_outtype o)
{
    if (t->keep_f32)
        return MM_GGML_F32;
    mm_gguf_qtype q = main_qtype(o);
    return q == MM_GGML_Q8_0 && t->shape[t->ndim - 1] % MM_Q8_0_BLOCK ? MM_GGML_F16 : q;
}

/* The converter's size label (gguf-py's model_weight_count_rounded_notation with two digits): "494M",
 * "7.2B", "36K". */
static void size_label(uint64_t n, char *out, size_t len)
{
    double v;
    const char *suffix;
    if (n > 1000000000000ull) {
        v = (double)n * 1e-12;
        suffix = "T";
    } else if (n > 1000000000ull) {
        v = (double)n * 1e-9;
        suffix = "B";
    } else if (n > 1000000ull) {
        v = (double)n * 1e-6;
        suffix = "M";
    } else {
        v = (double)n * 1e-3;
        suffix = "K";
    }
    /* Python: fix = max(2 - len(str(round(v)).lstrip('0')), 0) */
    char digits[32];
    snprintf(digits, sizeof digits, "%.0f", nearbyint(v));
    const char *d = digits;
    while (*d == '0')
        d++;
    int fix = 2 - (int)strlen(d);
    snprintf(out, len, "%.*f%s", fix > 0 ? fix : 0, v, suffix);
}

/* The converter's file name part for a model name: spaces and slashes become '-'. NULL: the config
 * file's stem. */
static char *name_part(const char *name, const char *config_path)
{
    char *stem = NULL;
    if (!name) {
        const char *slash = strrchr(config_path, '/');
        stem = mm_xstrdup(slash ? slash + 1 : config_path);
        char *dot = strrchr(stem, '.');
        if (dot && dot != stem)
            *dot = 0;
        name = stem;
    }
    while (*name == ' ')
        name++;
    char *s = mm_xstrdup(*name ? name : "ggml-model");
    for (size_t n = strlen(s); n > 0 && s[n - 1] == ' '; n--)
        s[n - 1] = 0;
    for (char *c = s; *c; c++)
        if (*c == ' ' || *c == '/')
            *c = '-';
    free(stem);
    return s;
}

/* What the read path (merge/engine/gguf_read.c) relies on: at most 4 dimensions (GGUF's limit); a
 * source tensor of a float dtype whose leading rows (all of them, or fewer: Gemma 3's embedding cut to
 * the vocabulary) the tensor is; heads that split a permuted tensor's rows into halves; a permuted 1-D
 * tensor kept F32, so its elements can be moved one by one. */
static int check_tensor(const mm_plan *p, const mm_gguf_tensor *gt, mm_err *err)
{
    if (gt->ndim < 1 || gt->ndim > 4)
        return mm_err_set(err, -ENOTSUP, "--gguf: %s has %d dimensions; GGUF tensors have 1 to 4", gt->name,
                          gt->ndim);
    if (gt->permute_heads && (gt->shape[0] % gt->permute_heads || (gt->shape[0] / gt->permute_heads) % 2 ||
                              (gt->ndim == 1 && !gt->keep_f32)))
        return mm_err_set(err, -EINVAL,
                          "--gguf: %s has %llu rows, which %u attention heads do not split into heads of an even "
                          "size (config.json's head counts do not fit the tensor)",
                          gt->name, (unsigned long long)gt->shape[0], gt->permute_heads);
    if (gt->src == MM_GGUF_GENERATED)
        return 0;
    const mm_out_tensor *t = &p->tensors[gt->src];
    int same = t->ndim == gt->ndim && gt->shape[0] <= t->shape[0];
    for (int d = 1; same && d < gt->ndim; d++)
        same = gt->shape[d] == t->shape[d];
    if (!same)
        return mm_err_set(err, -EINVAL, "--gguf: %s is not made of leading rows of %s", gt->name, t->name);
    if (!mm_dtype_is_computable(t->dtype))
        return mm_err_set(err, -ENOTSUP,
                          "--gguf: output tensor %s is %s; the GGUF view converts float32, float16 and bfloat16 "
                          "tensors only (set the merge's dtype)",
                          t->name, mm_dtype_name(t->dtype));
    return 0;
}

void mm_gguf_file_free(mm_gguf_file *g)
{
    if (!g)
        return;
    free(g->file_name);
    mm_buf_free(&g->header);
    mm_gguf_arch_free(&g->arch);
    free(g->types);
    free(g->offsets);
    free(g->nbytes);
    free(g->row_elems);
    free(g);
}

int mm_gguf_plan(const mm_plan *p, mm_gguf_outtype t, const char *name, mm_gguf_file **out, mm_err *err)
{
    mm_gguf_file *g = mm_xcalloc(1, sizeof *g);
    mm_gguf_kvs params = {0}, kv = {0};
    /* The converter's ftype for auto is decided before the parameters are written; arch_build needs it,
     * and auto needs the tensor list: build once with a provisional type, then set the real one. */
    int rc = mm_gguf_arch_build(p, file_type(t), &params, &g->arch, err);
    if (rc < 0)
        goto fail;
    if (t == MM_GGUF_OUT_AUTO)
        t = resolve_auto(p, &g->arch);
    g->ftype = file_type(t);
    g->type_name = mm_gguf_qtype_name(main_qtype(t));
    mm_gguf_set_u32(&params, "general.file_type", g->ftype);

    size_t n = g->arch.ntensors;
    for (size_t i = 0; i < n; i++)
        if ((rc = check_tensor(p, &g->arch.tensors[i], err)) < 0)
            goto fail;
    mm_gguf_tinfo *ti = mm_xcalloc(n ? n : 1, sizeof *ti);
    g->types = mm_xcalloc(n ? n : 1, sizeof *g->types);
    g->nbytes = mm_xcalloc(n ? n : 1, sizeof *g->nbytes);
    g->row_elems = mm_xcalloc(n ? n : 1, sizeof *g->row_elems);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const mm_gguf_tensor *gt = &g->arch.tensors[i];
        g->types[i] = tensor_type(gt, t);
        ti[i].name = gt->name;
        ti[i].ndim = (uint32_t)gt->ndim;
        ti[i].type = g->types[i];
        uint64_t numel = 1;
        for (int d = 0; d < gt->ndim; d++) {
            ti[i].ne[d] = gt->shape[gt->ndim - 1 - d];
            numel *= gt->shape[d];
        }
        /* a permuted 1-D tensor (a q/k bias) moves single elements: rows of one (it is F32, see check_tensor) */
        g->row_elems[i] = gt->permute_heads && gt->ndim == 1 ? 1 : ti[i].ne[0];
        g->nbytes[i] = numel / ti[i].ne[0] * mm_gguf_row_bytes(g->types[i], ti[i].ne[0]);
        total += numel;
    }

    char label[32];
    size_label(total, label, sizeof label);
    char *base = name_part(name, p->cfg->path);
    g->file_name = mm_xasprintf("%s-%s-%s.gguf", base, label, g->type_name);

    /* The converter's key order: architecture (the writer's first key), the keys written while the
     * tensors were prepared, type, the naming keys, the family's parameters, the quantization version,
     * then the tokenizer. */
    mm_gguf_set_str(&kv, "general.architecture", g->arch.arch);
    for (size_t i = 0; i < g->arch.early.n; i++)
        mm_gguf_set_kv(&kv, &g->arch.early.kv[i]);
    mm_gguf_set_str(&kv, "general.type", "model");
    mm_gguf_set_str(&kv, "general.name", base);
    mm_gguf_set_str(&kv, "general.size_label", label);
    free(base);
    for (size_t i = 0; i < params.n; i++)
        mm_gguf_set_kv(&kv, &params.kv[i]);
    mm_gguf_set_u32(&kv, "general.quantization_version", MM_GGUF_QUANT_VERSION);
    rc = mm_gguf_vocab_build(p, g->arch.arch, &kv, err);
    if (rc == 0)
        mm_gguf_header(&kv, ti, n, &g->header, &g->offsets, &g->size);
    free(ti);
    if (rc < 0)
        goto fail;
    mm_gguf_kvs_free(&params);
    mm_gguf_kvs_free(&kv);
    *out = g;
    return 0;
fail:
    mm_gguf_kvs_free(&params);
    mm_gguf_kvs_free(&kv);
    mm_gguf_file_free(g);
    return rc;
}
