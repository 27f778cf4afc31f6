#include "rows.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "formats/numeric.h"
#include "merge/plan/lora.h"
#include "merge/plan/rowmap.h"

/* Columns [c, c + n) of row `row` of input j's own tensor, as its model stores them (an adapter's change
 * included, rounded once into the tensor's dtype as in merge/engine/engine.c), in float32. */
static int source_row(const mm_out_tensor *t, size_t j, uint64_t row, uint64_t c, size_t n, unsigned char *raw,
                      float *dst)
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
        rc = source_row(t, i, (uint64_t)own, c, n, raw, dst);
    else if (d->kind == MM_ROW_FROM)
        rc = source_row(t, d->input, d->arg, c, n, raw, dst);
    else if (d->kind == MM_ROW_ZERO)
        memset(dst, 0, n * sizeof *dst);
    else {
        /* torch: acc = zeros; acc += row (rounded to the dtype each time); acc /= count */
        size_t count = 0;
        memset(dst, 0, n * sizeof *dst);
        for (size_t j = 0; j < rm->ninputs && rc == 0; j++) {
            if (!(d->arg >> j & 1))
                continue;
            if ((rc = source_row(t, j, (uint64_t)rm->own[j][row], c, n, raw, tmp)) < 0)
                break;
            for (size_t k = 0; k < n; k++)
                dst[k] += tmp[k];
            mm_vround(rm->dtype, dst, n);
            count++;
        }
        for (size_t k = 0; k < n; k++)
            dst[k] /= (float)count;
    }
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
        const size_t cols = (size_t)rm->cols;
        double *sum = calloc(cols, sizeof *sum);
        float *row = malloc(2 * cols * sizeof *row);
        unsigned char *raw = malloc(cols * 8);
        p = malloc(cols * sizeof *p);
        if (!sum || !row || !raw || !p)
            rc = -ENOMEM;
        for (uint64_t r = 0; r < rm->n_vocab && rc == 0; r++) {
            rc = vocab_row(t, i, r, 0, cols, raw, row, row + cols);
            for (size_t k = 0; k < cols && rc == 0; k++)
                sum[k] += row[k];
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
        free(row);
        free(raw);
    }
    pthread_mutex_unlock(&rm->pad_lock);
    *out = p;
    return rc;
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
        if (r < rm->n_vocab) {
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
