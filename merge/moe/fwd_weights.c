#include "fwd_weights.h"

#include <errno.h>
#include <stdlib.h>

#include "formats/numeric.h"
#include "merge/plan/lora.h"

/* Elements [e, e + n) of t (rows of `cols`) as float32, with the adapter's change. */
static int read_elems(const mm_model_tensor *t, uint64_t e, size_t n, uint64_t cols, float *dst, mm_err *err)
{
    const mm_dtype dt = t->st->dtype;
    if (!mm_dtype_is_computable(dt))
        return mm_err_set(err, -ENOTSUP, "%s: dtype %s cannot be computed with (BF16, F16, F32)", t->name,
                          mm_dtype_name(dt));
    /* through a bounded buffer: a whole-tensor one (tens of MB) would be a fresh mmap, page-faulted in,
     * for every weight of every layer */
    enum { CHUNK = 1 << 18 };
    const size_t es = mm_dtype_size(dt);
    unsigned char *raw = malloc((n < CHUNK ? n : CHUNK) * es + 1); /* + 1: never malloc(0) */
    if (!raw)
        return mm_err_set(err, -ENOMEM, "%s: out of memory", t->name);
    int rc = 0;
    const uint64_t base = t->shard->hdr.data_start + t->st->begin;
    for (size_t done = 0; done < n && rc == 0; done += CHUNK) {
        size_t m = n - done < CHUNK ? n - done : CHUNK;
        rc = mm_pread_full(t->shard->fd, raw, m * es, base + (e + done) * es);
        if (rc < 0)
            rc = mm_srcfile_failed(t->shard->src, rc);
        else
            mm_load_f32(dt, raw, dst + done, m);
    }
    if (rc == 0)
        rc = mm_srcfile_verify(t->shard->src);
    free(raw);
    if (rc == 0 && t->lora) {
        if ((rc = mm_lora_apply(t->lora, e, n, cols, dst)) == 0)
            mm_vround(dt, dst, n);
    }
    if (rc < 0)
        return mm_err_set(err, rc, "%s: cannot read it from %s", t->name, t->shard->path);
    return 0;
}

int mm_fwd_load_into(const mm_model *m, const char *name, size_t rows, size_t cols, float *dst, mm_err *err)
{
    const mm_model_tensor *t = mm_model_find(m, name);
    if (!t)
        return mm_err_set(err, -EINVAL, "%s: no tensor %s", m->path, name);
    const int ndim = cols ? 2 : 1;
    if (t->st->ndim != ndim || t->st->shape[0] != rows || (cols && t->st->shape[1] != cols))
        return mm_err_set(err, -EINVAL, "%s: shape is not [%zu%s%.0zu] as config.json says", name, rows,
                          cols ? ", " : "", cols);
    const size_t n = rows * (cols ? cols : 1);
    return read_elems(t, 0, n, cols ? cols : n, dst, err);
}

int mm_fwd_load(const mm_model *m, const char *name, size_t rows, size_t cols, float **out, mm_err *err)
{
    *out = NULL;
    float *v = malloc(rows * (cols ? cols : 1) * sizeof *v + 1);
    if (!v)
        return mm_err_set(err, -ENOMEM, "%s: out of memory", name);
    int rc = mm_fwd_load_into(m, name, rows, cols, v, err);
    if (rc < 0) {
        free(v);
        return rc;
    }
    *out = v;
    return 0;
}

int mm_fwd_load_row(const mm_model_tensor *t, size_t row, float *dst, mm_err *err)
{
    const uint64_t cols = t->st->shape[1];
    return read_elems(t, (uint64_t)row * cols, (size_t)cols, cols, dst, err);
}
