#include "rows.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "formats/numeric.h"
#include "merge/plan/lora.h"
#include "merge/plan/rowmap.h"

/* Elements [c, c + n) from the start of row `row` of input j's own tensor (n may span several rows), as
 * its model stores them (an adapter's change included, rounded once into the tensor's dtype as in
 * merge/engine/engine.c), in float32; with to_remapped, rounded to the remapped dtype too (a no-op, and
 * skipped, when that is the tensor's own dtype). */
static int source_row(const mm_out_tensor *t, size_t j, uint64_t row, uint64_t c, size_t n, unsigned char *raw,
                      float *dst, int to_remapped)
{
    const mm_input *in = &t->inputs[j];
    const mm_dtype sd = in->mt->st->dtype;
    const size_t es = mm_dtype_size(sd);
    const uint64_t cols = t->rowmap->cols, e = row * cols + c;
    int rc = mm_pread_full(in->mt->shard->fd, raw, n * es, in->mt->shard->hdr.data_start + in->mt->st->begin + e * es);
    if (rc < 0)
        return mm_srcfile_failed(in->mt->shard->src, rc);
    mm_load_f32(sd, raw, dst, n);
    if (in->mt->lora) {
        if ((rc = mm_lora_apply(in->mt->lora, e, n, cols, dst)) < 0)
            return rc;
        mm_vround(sd, dst, n);
    }
    if (to_remapped && sd != t->rowmap->dtype)
        mm_vround(t->rowmap->dtype, dst, n);
    return 0;
}

/* Columns [c, c + n) of remapped row `row` < n_vocab of input i. tmp: n floats of scratch (averages). */
static int vocab_row(const mm_out_tensor *t, size_t i, uint64_t row, uint64_t c, size_t n, unsigned char *raw,
                     float *dst, float *tmp)
{
    const mm_rowmap *rm = t->rowmap;
    const mm_rowdef *d = &rm->def[row];
    int64_t own = rm->own[i][row];
    int rc = 0;
    if (own >= 0 && !d->force)
        return source_row(t, i, (uint64_t)own, c, n, raw, dst, 1);
    if (d->kind == MM_ROW_FROM)
        return source_row(t, d->input, d->arg, c, n, raw, dst, 1);
    memset(dst, 0, n * sizeof *dst);
    if (d->kind == MM_ROW_ZERO)
        return 0;
    /* torch: acc = zeros; acc += row (in float32, rounded to the dtype each time); acc /= count */
    size_t count = 0;
    for (size_t j = 0; j < rm->ninputs && rc == 0; j++) {
        if (!(d->arg >> j & 1))
            continue;
        if ((rc = source_row(t, j, (uint64_t)rm->own[j][row], c, n, raw, tmp, 0)) < 0)
            break;
        for (size_t k = 0; k < n; k++)
            dst[k] += tmp[k];
        mm_vround(rm->dtype, dst, n);
        count++;
    }
    for (size_t k = 0; k < n; k++)
        dst[k] /= (float)count;
    mm_vround(rm->dtype, dst, n);
    return rc;
}

/* The padding row of input i: the column mean of its remapped rows [0, n_vocab), in double, rounded once
 * to float32 and then to the remapped dtype. Computed once; the reads are verified before it is kept. */
static int pad_row(const mm_out_tensor *t, size_t i, const float **out)
{
    mm_rowmap *rm = t->rowmap;
    float *p = atomic_load_explicit(&rm->pad[i], memory_order_acquire);
    if (p) {
        *out = p;
        return 0;
    }
    pthread_mutex_lock(&rm->pad_lock);
    int rc = 0;
    if (!(p = atomic_load_explicit(&rm->pad[i], memory_order_acquire))) {
        /* rows in chunks of about 64K elements, read as any block reads them (own rows in runs) */
        const size_t cols = (size_t)rm->cols, step = cols < 65536 ? 65536 / cols : 1;
        double *sum = calloc(cols, sizeof *sum);
        float *rows = malloc(step * cols * sizeof *rows);
        unsigned char *raw = malloc(step * cols * 8);
        p = malloc(cols * sizeof *p);
        if (!sum || !rows || !raw || !p)
            rc = -ENOMEM;
        for (uint64_t r = 0; r < rm->n_vocab && rc == 0; r += step) {
            size_t m = rm->n_vocab - r < step ? (size_t)(rm->n_vocab - r) : step;
            rc = mm_rows_load(t, i, r * cols, m * cols, raw, rows);
            for (size_t j = 0; j < m && rc == 0; j++)
                for (size_t k = 0; k < cols; k++)
                    sum[k] += rows[j * cols + k];
        }
        if (rc == 0)
            rc = mm_srcfile_verify_tensor(t);
        if (rc == 0) {
            for (size_t k = 0; k < cols; k++)
                p[k] = (float)(sum[k] / (double)(rm->n_vocab ? rm->n_vocab : 1));
            mm_vround(rm->dtype, p, cols);
            atomic_store_explicit(&rm->pad[i], p, memory_order_release);
        } else {
            free(p);
            p = NULL;
        }
        free(sum);
        free(rows);
        free(raw);
    }
    pthread_mutex_unlock(&rm->pad_lock);
    *out = p;
    return rc;
}

/* The elements, from row r on (at column c, which must be 0), of the longest run of whole rows among the
 * next n elements that input i reads from its own consecutive rows (own row, no `force`): vocabularies
 * that keep most tokens in place, as a union does for its base, read such runs with one pread. 0 when
 * row r is no such row or c is not 0. */
static size_t own_run(const mm_rowmap *rm, size_t i, uint64_t r, uint64_t c, size_t n)
{
    const int64_t *own = rm->own[i];
    if (c != 0 || own[r] < 0 || rm->def[r].force)
        return 0;
    uint64_t m = 1, max = n / rm->cols;
    while (m < max && r + m < rm->n_vocab && own[r + m] == own[r] + (int64_t)m && !rm->def[r + m].force)
        m++;
    return m <= max ? (size_t)(m * rm->cols) : 0;
}

int mm_rows_load(const mm_out_tensor *t, size_t i, uint64_t e, size_t n, unsigned char *raw, float *dst)
{
    const mm_rowmap *rm = t->rowmap;
    const uint64_t cols = rm->cols;
    float *tmp = malloc((n ? n : 1) * sizeof *tmp);
    if (!tmp)
        return -ENOMEM;
    int rc = 0;
    while (n > 0 && rc == 0) {
        uint64_t r = e / cols, c = e % cols;
        size_t take = (size_t)(cols - c) < n ? (size_t)(cols - c) : n;
        size_t run = r < rm->n_vocab ? own_run(rm, i, r, c, n) : 0;
        if (run) {
            /* whole rows that are the model's own, in its order: one read */
            take = run;
            rc = source_row(t, i, (uint64_t)rm->own[i][r], 0, take, raw, dst, 1);
        } else if (r < rm->n_vocab) {
            rc = vocab_row(t, i, r, c, take, raw, dst, tmp);
        } else {
            const float *pad;
            if ((rc = pad_row(t, i, &pad)) == 0)
                memcpy(dst, pad + c, take * sizeof *dst);
        }
        dst += take;
        e += take;
        n -= take;
    }
    free(tmp);
    return rc;
}
