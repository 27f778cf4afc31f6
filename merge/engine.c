#include "engine.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "numeric.h"

/* Elements per step: inputs and output of one step stay in L2 cache. */
#define CHUNK 8192

static int read_fail(const mm_input *in, int rc)
{
    mm_log_error("cannot read %s: %s", in->mt->shard->path, strerror(-rc));
    return -EIO;
}

/* Raw bytes of input elements [e, e + n) in output element numbering (crop-aware). */
static int read_raw(const mm_out_tensor *t, const mm_input *in, uint64_t e, size_t n, unsigned char *dst)
{
    const mm_st_tensor *st = in->mt->st;
    const size_t es = mm_dtype_size(st->dtype);
    const uint64_t base = in->mt->shard->hdr.data_start + st->begin;
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

/* Input values cast to the computation dtype on load, as mergekit's loader does (B3.1). */
static int load_input(const mm_out_tensor *t, const mm_input *in, uint64_t e, size_t n, unsigned char *raw,
                      float *dst)
{
    int rc = read_raw(t, in, e, n, raw);
    if (rc < 0)
        return rc;
    mm_dtype sd = in->mt->st->dtype;
    mm_load_f32(sd, raw, dst, n);
    if (sd != t->comp)
        mm_vround(t->comp, dst, n);
    return 0;
}

/* Output bytes equal the input bytes: passthrough without scale, nothing to convert or crop. */
static int is_copy(const mm_out_tensor *t)
{
    const mm_input *in = &t->inputs[0];
    if (!t->method->single_input || in->src_cols || in->mt->st->dtype != t->dtype)
        return 0;
    if (t->comp == MM_DT_NONE)
        return 1;
    /* A round trip through an equal or wider computation dtype changes nothing. */
    return isnan(in->mvals[0]) && (t->comp == t->dtype || t->comp == MM_DT_F32);
}

static int compute(const mm_out_tensor *t, uint64_t e0, size_t n, unsigned char *out)
{
    const size_t k = t->ninputs, chunk = n < CHUNK ? n : CHUNK;
    float *vals = malloc((k + 2) * chunk * sizeof(float));
    unsigned char *raw = malloc(chunk * 8);
    const float **in = malloc(k * sizeof *in);
    if (!vals || !raw || !in) {
        free(vals);
        free(raw);
        free(in);
        return -ENOMEM;
    }
    for (size_t i = 0; i < k; i++)
        in[i] = vals + i * chunk;
    float *res = vals + k * chunk, *scratch = vals + (k + 1) * chunk;
    const size_t oes = mm_dtype_size(t->dtype);
    int rc = 0;
    for (size_t done = 0; done < n && rc == 0; done += chunk) {
        size_t m = n - done < chunk ? n - done : chunk;
        for (size_t i = 0; i < k && rc == 0; i++)
            rc = load_input(t, &t->inputs[i], e0 + done, m, raw, (float *)in[i]);
        if (rc < 0)
            break;
        mm_kernel_args a = {.t = t, .in = in, .n = m, .out = res, .scratch = scratch};
        t->method->kernel(&a);
        mm_store_f32(t->dtype, res, out + done * oes, m);
    }
    free(vals);
    free(raw);
    free(in);
    return rc;
}

int mm_engine_read(const mm_plan *p, const mm_out_tensor *t, uint64_t off, size_t len, void *buf)
{
    (void)p;
    if (len == 0)
        return 0;
    if (is_copy(t)) {
        const mm_input *in = &t->inputs[0];
        int rc = mm_pread_full(in->mt->shard->fd, buf, len, in->mt->shard->hdr.data_start + in->mt->st->begin + off);
        return rc < 0 ? read_fail(in, rc) : 0;
    }
    const size_t es = mm_dtype_size(t->dtype);
    const uint64_t e0 = off / es, e1 = (off + len + es - 1) / es;
    const size_t head = (size_t)(off - e0 * es);
    if (head == 0 && len % es == 0)
        return compute(t, e0, (size_t)(e1 - e0), buf);
    /* A range that cuts through elements: compute whole elements aside and copy the part asked for. */
    unsigned char *tmp = malloc((size_t)(e1 - e0) * es);
    if (!tmp)
        return -ENOMEM;
    int rc = compute(t, e0, (size_t)(e1 - e0), tmp);
    if (rc == 0)
        memcpy(buf, tmp + head, len);
    free(tmp);
    return rc;
}
