#include "gguf_read.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "formats/numeric.h"

/* Rows made per step: bounds the scratch whatever the read's size. */
#define STEP_VALUES (1u << 18)

/* Source rows [r0, r1) of tensor i as float32 after the converter's transforms, into v (row-major,
 * (r1 - r0) * cols values). raw: scratch for the source bytes of whole heads. */
static int source_rows(const mm_gguf_file *g, const mm_plan *p, mm_blocks *b, size_t i, uint64_t r0, uint64_t r1,
                       float *v)
{
    const mm_gguf_tensor *gt = &g->arch.tensors[i];
    const uint64_t cols = g->row_elems[i];
    if (gt->src == MM_GGUF_GENERATED) {
        memcpy(v, gt->gen + r0 * cols, (size_t)((r1 - r0) * cols) * sizeof *v);
        return 0;
    }
    const mm_out_tensor *t = &p->tensors[gt->src];
    const size_t es = mm_dtype_size(t->dtype);
    /* A permuted tensor's output rows come from anywhere in their head: read whole heads. */
    uint64_t hd = gt->permute_heads ? t->shape[0] / gt->permute_heads : 1;
    uint64_t s0 = r0 / hd * hd, s1 = (r1 + hd - 1) / hd * hd;
    size_t n = (size_t)((s1 - s0) * cols);
    char *raw = malloc(n * es);
    float *f = gt->permute_heads ? malloc(n * sizeof *f) : v;
    if (!raw || !f) {
        free(raw);
        if (f != v)
            free(f);
        return -ENOMEM;
    }
    int rc = mm_blocks_read(b, t, s0 * cols * es, n * es, raw);
    if (rc == 0) {
        mm_load_f32(t->dtype, raw, f, n);
        if (gt->permute_heads) {
            /* output row h*hd + 2i + j is input row h*hd + j*hd/2 + i */
            for (uint64_t r = r0; r < r1; r++) {
                uint64_t h = r / hd, k = r % hd, in = h * hd + (k % 2) * (hd / 2) + k / 2;
                memcpy(v + (r - r0) * cols, f + (in - s0) * cols, (size_t)cols * sizeof *v);
            }
        }
        if (gt->add_one) {
            /* torch adds in the tensor's dtype: a half tensor's sum is rounded to half (bf16 was made
             * float32 before the converter's modify_tensors, so it adds in float32) */
            size_t m = (size_t)((r1 - r0) * cols);
            for (size_t k = 0; k < m; k++)
                v[k] += 1.0f;
            if (t->dtype == MM_DT_F16)
                mm_vround(MM_DT_F16, v, m);
        }
    }
    free(raw);
    if (f != v)
        free(f);
    return rc;
}

static void encode(mm_gguf_qtype type, const float *v, size_t n, char *out)
{
    switch (type) {
    case MM_GGML_F32:
        memcpy(out, v, n * sizeof *v);
        break;
    case MM_GGML_F16:
        mm_store_f32(MM_DT_F16, v, out, n);
        break;
    case MM_GGML_BF16:
        mm_store_f32(MM_DT_BF16, v, out, n);
        break;
    case MM_GGML_Q8_0:
        mm_gguf_to_q8_0(v, n, (uint8_t *)out);
        break;
    }
}

/* The part [a, e) (relative to the tensor's data) of tensor i into out. */
static int tensor_part(const mm_gguf_file *g, const mm_plan *p, mm_blocks *b, size_t i, uint64_t a, uint64_t e,
                       char *out)
{
    const uint64_t cols = g->row_elems[i];
    const uint64_t rb = mm_gguf_row_bytes(g->types[i], cols);
    uint64_t step = STEP_VALUES / cols ? STEP_VALUES / cols : 1;
    float *v = malloc((size_t)(step * cols) * sizeof *v);
    char *enc = malloc((size_t)(step * rb));
    int rc = v && enc ? 0 : -ENOMEM;
    for (uint64_t r = a / rb; rc == 0 && r * rb < e; r += step) {
        uint64_t r1 = r + step, rows_end = (e + rb - 1) / rb;
        if (r1 > rows_end)
            r1 = rows_end;
        rc = source_rows(g, p, b, i, r, r1, v);
        if (rc < 0)
            break;
        encode(g->types[i], v, (size_t)((r1 - r) * cols), enc);
        uint64_t lo = r * rb > a ? r * rb : a, hi = r1 * rb < e ? r1 * rb : e;
        memcpy(out + (lo - a), enc + (lo - r * rb), (size_t)(hi - lo));
    }
    free(v);
    free(enc);
    return rc;
}

int mm_gguf_read(const mm_gguf_file *g, const mm_plan *p, mm_blocks *b, uint64_t off, size_t len, char *buf)
{
    const uint64_t end = off + len;
    memset(buf, 0, len); /* the padding; every other byte is overwritten below */
    if (off < g->header.len)
        memcpy(buf, g->header.data + off, (size_t)((end < g->header.len ? end : g->header.len) - off));
    /* first tensor whose data ends after off (offsets ascend) */
    size_t lo = 0, hi = g->arch.ntensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (g->offsets[mid] + g->nbytes[mid] <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < g->arch.ntensors && g->offsets[i] < end; i++) {
        uint64_t ts = g->offsets[i], te = ts + g->nbytes[i];
        uint64_t a = off > ts ? off : ts, e = end < te ? end : te;
        if (a >= e)
            continue;
        int rc = tensor_part(g, p, b, i, a - ts, e - ts, buf + (a - off));
        if (rc < 0)
            return rc;
    }
    return 0;
}
