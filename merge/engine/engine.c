#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/scratch.h"
#include "formats/numeric.h"
#include "merge/plan/lora.h"
#include "merge/plan/moe.h"
#include "merge/plan/rowmap.h"
#include "rows.h"

/* A load mask has one bit per input. */
_Static_assert(MM_MAX_INPUTS <= 64, "mm_engine_stream_inputs: one bit of a uint64_t per input");

/* Elements per step: inputs and output of one step stay in L2 cache. */
#define CHUNK 8192

/* Logged once per file, with how the file changed if it did (merge/plan/srcfile.h). */
static int read_fail(const mm_input *in, int rc)
{
    return mm_srcfile_failed(in->mt->shard->src, rc);
}

/* File offset of the first byte of an input's tensor data. */
static uint64_t data_offset(const mm_input *in)
{
    return in->mt->shard->hdr.data_start + in->mt->st->begin;
}

/* An input's raw bytes are read ahead in windows of up to this many bytes: one pread per chunk of
 * CHUNK elements (16 KiB of bf16) cost a third more CPU than reading 256 KiB at a time (measured on a
 * warm 730 MB shard: 2.4-2.7 GB/s against 3.4-4.2 GB/s per core). Mapping the sources instead was
 * slower still on the machines we measure (0.9-1.1 GB/s: page-table work per 4 KiB page). */
#define WINDOW_BYTES (256u * 1024u)

/* The raw bytes of one input over a stretch of the walk: elements [e0, e0 + n) at buf. */
typedef struct window {
    unsigned char *buf;
    uint64_t e0, n;
} window;

/* Raw bytes of input elements [e, e + n) in output element numbering (crop-aware). */
static int read_raw(const mm_out_tensor *t, const mm_input *in, uint64_t e, size_t n, unsigned char *dst)
{
    const mm_st_tensor *st = in->mt->st;
    const size_t es = mm_dtype_size(st->dtype);
    const uint64_t base = data_offset(in);
    if (!in->src_cols) {
        int rc = mm_pread_full(in->mt->shard->fd, dst, n * es, base + e * es);
        return rc < 0 ? read_fail(in, rc) : 0;
    }
    const uint64_t cols = t->shape[1];
    while (n > 0) {
        uint64_t r = e / cols, c = e % cols;
        size_t take = (size_t)(cols - c) < n ? (size_t)(cols - c) : n;
        int rc = mm_pread_full(in->mt->shard->fd, dst, take * es, base + (r * in->src_cols + c) * es);
        if (rc < 0)
            return read_fail(in, rc);
        dst += take * es;
        e += take;
        n -= take;
    }
    return 0;
}

void mm_engine_prefetch(const mm_out_tensor *t, uint64_t e0, uint64_t e1)
{
    if (e1 > t->numel)
        e1 = t->numel;
    /* A remapped embedding's rows are scattered over its inputs, packed experts over theirs: nothing
     * contiguous to announce. */
    if (e1 <= e0 || t->rowmap || t->concat_seg)
        return;
    for (size_t i = 0; i < t->ninputs; i++) {
        const mm_input *in = &t->inputs[i];
        const uint64_t es = mm_dtype_size(in->mt->st->dtype);
        /* A cropped (2-D) input's elements are spread over rows of src_cols: the span from the first
         * element's row to the last element's. */
        uint64_t a = e0, z = e1;
        if (in->src_cols) {
            const uint64_t cols = t->shape[1];
            a = e0 / cols * in->src_cols + e0 % cols;
            z = (e1 - 1) / cols * in->src_cols + (e1 - 1) % cols + 1;
        }
        (void)posix_fadvise(in->mt->shard->fd, (off_t)(data_offset(in) + a * es),
                            (off_t)((z - a) * es), POSIX_FADV_WILLNEED);
    }
}

/* Input values cast to the computation dtype on load, as mergekit's loader does (B3.1). A tensor a
 * LoRA adapter changes is first made what the merged checkpoint would store: base + delta rounded once
 * into the base's dtype (D19). A remapped embedding's rows come from merge/engine/rows.c. */
/* The source's values of elements [e, e + n) of `in` as its model stores them: an adapter's change (D19)
 * applied and rounded once into the source dtype. e counts in the source's own numbering, whose rows
 * have row_len elements. */
/* The raw bytes of elements [e, e + n) of an uncropped input: from its window w, refilled from e on
 * (up to `lim`, the end of the walk, and the window's size) when they are not all in it; else read into
 * raw. Sets *bytes to where they are. */
static int raw_bytes(const mm_out_tensor *t, const mm_input *in, uint64_t e, size_t n, window *w, uint64_t lim,
                     unsigned char *raw, const unsigned char **bytes)
{
    const size_t es = mm_dtype_size(in->mt->st->dtype);
    if (!w || in->src_cols || n * es > WINDOW_BYTES) {
        *bytes = raw;
        return read_raw(t, in, e, n, raw);
    }
    if (e < w->e0 || e + n > w->e0 + w->n) {
        uint64_t take = WINDOW_BYTES / es;
        if (take > lim - e)
            take = lim - e > n ? lim - e : n;
        w->e0 = e;
        w->n = 0; /* nothing valid until the read succeeds */
        int rc = read_raw(t, in, e, (size_t)take, w->buf);
        if (rc < 0)
            return rc;
        w->n = take;
    }
    *bytes = w->buf + (e - w->e0) * es;
    return 0;
}

static int source_values(const mm_out_tensor *t, const mm_input *in, uint64_t e, size_t n, uint64_t row_len,
                         window *w, uint64_t lim, unsigned char *raw, float *dst)
{
    const unsigned char *bytes;
    int rc = raw_bytes(t, in, e, n, w, lim, raw, &bytes);
    if (rc < 0)
        return rc;
    mm_dtype sd = in->mt->st->dtype;
    mm_load_f32(sd, bytes, dst, n);
    if (in->mt->lora) {
        if ((rc = mm_lora_apply(in->mt->lora, e, n, row_len, dst)) < 0)
            return rc;
        mm_vround(sd, dst, n);
    }
    return 0;
}

/* A packed MoE tensor (t->concat_seg): elements [e, e + n) from the inputs laid end to end, each with
 * its expert's noise and residual_scale in its own dtype (D20), then in the computation dtype. */
static int load_concat(const mm_out_tensor *t, uint64_t e, size_t n, unsigned char *raw, float *dst)
{
    const uint64_t seg = t->concat_seg;
    while (n > 0) {
        const mm_input *in = &t->inputs[e / seg];
        uint64_t off = e % seg;
        size_t take = seg - off < n ? (size_t)(seg - off) : n;
        const mm_st_tensor *st = in->mt->st;
        int rc = source_values(t, in, off, take, st->ndim ? st->shape[st->ndim - 1] : 1, NULL, 0, raw, dst);
        if (rc < 0)
            return rc;
        mm_moe_expert_effects(st->dtype, dst, take, off, in->mvals[0], in->mvals[1], t->seed, in->stream);
        dst += take;
        e += take;
        n -= take;
    }
    return 0;
}

static int load_input(const mm_out_tensor *t, const mm_input *in, uint64_t e, size_t n, window *w, uint64_t lim,
                      unsigned char *raw, float *dst)
{
    if (t->concat_seg) {
        int rc = load_concat(t, e, n, raw, dst);
        if (rc == 0)
            mm_vround(t->comp, dst, n);
        return rc;
    }
    if (t->rowmap) {
        int rc = mm_rows_load(t, (size_t)(in - t->inputs), e, n, raw, dst);
        if (rc == 0 && t->rowmap->dtype != t->comp)
            mm_vround(t->comp, dst, n);
        return rc;
    }
    int rc = source_values(t, in, e, n, mm_engine_row_len(t), w, lim, raw, dst);
    if (rc < 0)
        return rc;
    mm_dtype sd = in->mt->st->dtype;
    if (sd != t->comp)
        mm_vround(t->comp, dst, n);
    return 0;
}

uint64_t mm_engine_row_len(const mm_out_tensor *t)
{
    return t->ndim >= 2 ? t->shape[t->ndim - 1] : (t->numel ? t->numel : 1);
}

/* Chunks start at multiples of this (see mm_align). */
static uint64_t alignment(const mm_out_tensor *t)
{
    switch (t->method->align) {
    case MM_ALIGN_ROWS: return mm_engine_row_len(t);
    default: return 1;
    }
}

/* Walks [e0, e0 + n) in chunks (a multiple of the alignment, unless at the end), loading the inputs
 * of `load` (MM_ENGINE_ALL_INPUTS for kernels) and calling fn for each. Shared by kernels (fn computes
 * and stores) and pre-passes. */
typedef int (*chunk_fn)(void *ctx, mm_kernel_args *a);

static int walk(const mm_out_tensor *t, uint64_t e0, uint64_t n, uint64_t load, chunk_fn fn, void *ctx)
{
    const uint64_t al = alignment(t);
    const size_t k = t->concat_seg ? 1 : t->ninputs; /* packed experts are read as one input */
    size_t chunk = (size_t)(al >= CHUNK ? al : CHUNK - CHUNK % al);
    if (chunk > n)
        chunk = (size_t)n;
    /* Windows for inputs read as they lie (not packed experts, not remapped rows). */
    const size_t nwin = t->concat_seg || t->rowmap ? 0 : k;
    float *vals = mm_scratch_borrow(MM_SCRATCH_ENGINE_VALS, (k + 1 + MM_KERNEL_SCRATCH) * chunk * sizeof(float));
    unsigned char *raw = mm_scratch_borrow(MM_SCRATCH_ENGINE_RAW, chunk * 8 + nwin * WINDOW_BYTES);
    const float **in = malloc((k ? k : 1) * sizeof *in);
    window *win = calloc(nwin ? nwin : 1, sizeof *win);
    if (!vals || !raw || !in || !win) {
        mm_scratch_return(MM_SCRATCH_ENGINE_VALS, vals);
        mm_scratch_return(MM_SCRATCH_ENGINE_RAW, raw);
        free(in);
        free(win);
        return -ENOMEM;
    }
    /* The buffers keep their places whatever is loaded; an input not loaded is NULL, so that a use of
     * it fails at once instead of reading stale values. Packed experts are one input: always loaded. */
    if (t->concat_seg)
        load = MM_ENGINE_ALL_INPUTS;
    for (size_t i = 0; i < k; i++)
        in[i] = load >> i & 1 ? vals + i * chunk : NULL;
    for (size_t i = 0; i < nwin; i++)
        win[i].buf = raw + chunk * 8 + i * WINDOW_BYTES;
    mm_kernel_args a = {.t = t, .row_len = mm_engine_row_len(t), .in = in, .out = vals + k * chunk,
                        .scratch = vals + (k + 1) * chunk};
    int rc = 0;
    for (uint64_t done = 0; done < n && rc == 0; done += chunk) {
        size_t m = n - done < chunk ? (size_t)(n - done) : chunk;
        for (size_t i = 0; i < k && rc == 0; i++)
            if (in[i])
                rc = load_input(t, &t->inputs[i], e0 + done, m, nwin ? &win[i] : NULL, e0 + n, raw, (float *)in[i]);
        if (rc < 0)
            break;
        a.e0 = e0 + done;
        a.n = m;
        rc = fn(ctx, &a);
    }
    mm_scratch_return(MM_SCRATCH_ENGINE_VALS, vals);
    mm_scratch_return(MM_SCRATCH_ENGINE_RAW, raw);
    free(in);
    free(win);
    /* Only now are the bytes known to come from the files that were opened: a write that began before
     * the last read had already changed their mtime/ctime (merge/plan/srcfile.h). */
    return rc == 0 ? mm_srcfile_verify_tensor(t) : rc;
}

typedef struct compute_ctx {
    const void *stats;
    unsigned char *out; /* bytes of element `first` */
    uint64_t first;
} compute_ctx;

static int compute_chunk(void *vctx, mm_kernel_args *a)
{
    compute_ctx *c = vctx;
    a->stats = c->stats;
    a->t->method->kernel(a);
    mm_store_f32(a->t->dtype, a->out, c->out + (a->e0 - c->first) * mm_dtype_size(a->t->dtype), a->n);
    return 0;
}

typedef struct stream_ctx {
    mm_stream_fn fn;
    void *ctx;
} stream_ctx;

static int stream_chunk(void *vctx, mm_kernel_args *a)
{
    stream_ctx *c = vctx;
    a->out = NULL;
    return c->fn(c->ctx, a);
}

int mm_engine_stream_inputs(const mm_out_tensor *t, uint64_t e0, uint64_t e1, uint64_t load, mm_stream_fn fn,
                            void *ctx)
{
    stream_ctx c = {fn, ctx};
    return e1 > e0 ? walk(t, e0, e1 - e0, load, stream_chunk, &c) : 0;
}

int mm_engine_stream_range(const mm_out_tensor *t, uint64_t e0, uint64_t e1, mm_stream_fn fn, void *ctx)
{
    return mm_engine_stream_inputs(t, e0, e1, MM_ENGINE_ALL_INPUTS, fn, ctx);
}

int mm_engine_stream(const mm_out_tensor *t, mm_stream_fn fn, void *ctx)
{
    return mm_engine_stream_range(t, 0, t->numel, fn, ctx);
}

/* Output bytes equal the input bytes: passthrough without scale, nothing to convert or crop. */
static int is_copy(const mm_out_tensor *t)
{
    /* (moe_expert is single-input too, but adds noise: a random method is never a copy) */
    if (!t->method->single_input || t->method->random)
        return 0;
    const mm_input *in = &t->inputs[0];
    if (t->rowmap || in->src_cols || in->mt->lora || in->mt->st->dtype != t->dtype)
        return 0;
    if (t->comp == MM_DT_NONE)
        return 1;
    /* A round trip through an equal or wider computation dtype changes nothing. */
    return isnan(in->mvals[0]) && (t->comp == t->dtype || t->comp == MM_DT_F32);
}

int mm_engine_read(const mm_out_tensor *t, const void *stats, uint64_t off, size_t len, void *buf)
{
    if (len == 0)
        return 0;
    const size_t es = mm_dtype_size(t->dtype);
    /* Whole elements, widened below to the method's alignment. */
    uint64_t e0 = off / es, e1 = (off + len + es - 1) / es;
    /* This range and the next one of the same size: reads are mostly sequential, and with several
     * threads computing neighbouring blocks the kernel's own readahead sees no sequential stream. */
    mm_engine_prefetch(t, e0, e1 + (e1 - e0));
    if (is_copy(t)) {
        const mm_input *in = &t->inputs[0];
        int rc = mm_pread_full(in->mt->shard->fd, buf, len, data_offset(in) + off);
        return rc < 0 ? read_fail(in, rc) : mm_srcfile_verify(in->mt->shard->src);
    }
    const uint64_t al = alignment(t);
    e0 -= e0 % al;
    e1 = e1 % al ? e1 + (al - e1 % al) : e1;
    if (e1 > t->numel)
        e1 = t->numel;
    const uint64_t skip = off - e0 * es;
    compute_ctx c = {.stats = stats, .first = e0};
    if (skip == 0 && (e1 - e0) * es == len) {
        c.out = buf;
        return walk(t, e0, e1 - e0, MM_ENGINE_ALL_INPUTS, compute_chunk, &c);
    }
    c.out = mm_scratch_borrow(MM_SCRATCH_ENGINE_OUT, (size_t)((e1 - e0) * es));
    if (!c.out)
        return -ENOMEM;
    int rc = walk(t, e0, e1 - e0, MM_ENGINE_ALL_INPUTS, compute_chunk, &c);
    if (rc == 0)
        memcpy(buf, c.out + skip, len);
    mm_scratch_return(MM_SCRATCH_ENGINE_OUT, c.out);
    return rc;
}
