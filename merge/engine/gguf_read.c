#include "gguf_read.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/scratch.h"
#include "formats/numeric.h"

/* Rows made per step: bounds the scratch whatever the read's size (a row longer than this is one step). */
#define STEP_VALUES (1u << 17)

/* Scratch comes from base/scratch.h (per thread, kept between reads): at most four buffers of a step. */

/* Input rows [s0, s0 + n) of t as float32 into f (raw: scratch for n rows of t's bytes). */
static int load_rows(mm_blocks *b, const mm_out_tensor *t, uint64_t cols, uint64_t s0, uint64_t n, char *raw,
                     float *f)
{
    const size_t es = mm_dtype_size(t->dtype);
    int rc = mm_blocks_read(b, t, s0 * cols * es, (size_t)(n * cols * es), raw);
    if (rc == 0)
        mm_load_f32(t->dtype, raw, f, (size_t)(n * cols));
    return rc;
}

/* Output rows [r0, r1) of a permuted Q/K with heads of hd rows: output row h*hd + 2i + j is input row h*hd + j*hd/2 + i. Per
 * head, the rows asked for come from two runs of input rows (j = 0 and j = 1), read as two runs rather
 * than the whole head, since a read of a few rows must not cost a head. */
static int permuted_rows(mm_blocks *b, const mm_out_tensor *t, uint64_t hd, uint64_t cols, uint64_t r0, uint64_t r1,
                         char *raw, float *f, float *v)
{
    for (uint64_t h = r0 / hd; h * hd < r1; h++) {
        uint64_t k0 = r0 > h * hd ? r0 - h * hd : 0, k1 = r1 < (h + 1) * hd ? r1 - h * hd : hd;
        uint64_t i0 = k0 / 2, i1 = (k1 - 1) / 2 + 1;
        for (uint64_t j = 0; j < 2; j++) {
            int rc = load_rows(b, t, cols, h * hd + j * (hd / 2) + i0, i1 - i0, raw, f);
            if (rc < 0)
                return rc;
            for (uint64_t k = k0 + ((k0 % 2) != j); k < k1; k += 2)
                memcpy(v + (h * hd + k - r0) * cols, f + (k / 2 - i0) * cols, (size_t)cols * sizeof *v);
        }
    }
    return 0;
}

/* Source rows [r0, r1) of tensor i as float32 after the converter's transforms, into v (row-major,
 * (r1 - r0) * cols values). */
static int source_rows(const mm_gguf_file *g, const mm_plan *p, mm_blocks *b, size_t i, uint64_t r0, uint64_t r1,
                       float *v)
{
    const mm_gguf_tensor *gt = &g->arch.tensors[i];
    const uint64_t cols = g->row_elems[i], n = r1 - r0;
    if (gt->src == MM_GGUF_GENERATED) {
        memcpy(v, gt->gen + r0 * cols, (size_t)(n * cols) * sizeof *v);
        return 0;
    }
    const mm_out_tensor *t = &p->tensors[gt->src];
    char *raw = mm_scratch_borrow(MM_SCRATCH_GGUF_RAW, (size_t)(n * cols) * mm_dtype_size(t->dtype));
    float *f = gt->permute_heads ? mm_scratch_borrow(MM_SCRATCH_GGUF_PERMUTED, (size_t)(n * cols) * sizeof *f) : NULL;
    int rc = raw && (f || !gt->permute_heads) ? 0 : -ENOMEM;
    if (rc == 0)
        rc = gt->permute_heads ? permuted_rows(b, t, gt->shape[0] / gt->permute_heads, cols, r0, r1, raw, f, v)
                               : load_rows(b, t, cols, r0, n, raw, v);
    mm_scratch_return(MM_SCRATCH_GGUF_RAW, raw);
    mm_scratch_return(MM_SCRATCH_GGUF_PERMUTED, f);
    if (rc == 0 && gt->add_one) {
        /* torch adds in the tensor's dtype: a half tensor's sum is rounded to half (bf16 was made float32
         * before the converter's modify_tensors, so it adds in float32) */
        for (size_t k = 0; k < (size_t)(n * cols); k++)
            v[k] += 1.0f;
        if (t->dtype == MM_DT_F16)
            mm_vround(MM_DT_F16, v, (size_t)(n * cols));
    }
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
    float *v = mm_scratch_borrow(MM_SCRATCH_GGUF_VALUES, (size_t)(step * cols) * sizeof *v);
    char *enc = mm_scratch_borrow(MM_SCRATCH_GGUF_ENCODED, (size_t)(step * rb));
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
    mm_scratch_return(MM_SCRATCH_GGUF_VALUES, v);
    mm_scratch_return(MM_SCRATCH_GGUF_ENCODED, enc);
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
