#include "forward.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/numeric.h"
#include "fwd_arch.h"
#include "fwd_layer.h"
#include "fwd_par.h"
#include "fwd_weights.h"

int mm_forward_dims(const mm_model *m, size_t *layers, size_t *hidden, mm_err *err)
{
    mm_fwd_arch a;
    int rc = mm_fwd_arch_open(m, &a, err);
    if (rc < 0)
        return rc;
    *layers = a.layers;
    *hidden = a.hidden;
    mm_fwd_arch_free(&a);
    return 0;
}

/* hidden_states[0]: the embedding rows of the ids, times sqrt(hidden) for Gemma (transformers makes that
 * normalizer a tensor of the model's dtype, so it is rounded to the embedding's dtype first). */
static int embed(const mm_model *m, const mm_fwd_arch *a, const int32_t *ids, size_t n, float *x, mm_err *err)
{
    char name[96];
    snprintf(name, sizeof name, "%sembed_tokens.weight", a->prefix);
    const mm_model_tensor *t = mm_model_find(m, name);
    if (!t || t->st->ndim != 2 || t->st->shape[1] != a->hidden)
        return mm_err_set(err, -EINVAL, "%s: %s is missing or not [vocab, %zu]", m->path, name, a->hidden);
    const float scale = mm_round_to(t->st->dtype, sqrtf((float)a->hidden));
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint64_t)ids[i] >= t->st->shape[0])
            return mm_err_set(err, -EINVAL, "token id %ld is outside the vocabulary of %s (%llu rows)", (long)ids[i],
                              m->path, (unsigned long long)t->st->shape[0]);
        int rc = mm_fwd_load_row(t, (size_t)ids[i], x + i * a->hidden, err);
        if (rc < 0)
            return rc;
        if (a->embed_scale)
            for (size_t k = 0; k < a->hidden; k++)
                x[i * a->hidden + k] *= scale;
    }
    return 0;
}

/* A layer's weights loaded on a thread of its own, so that reading layer i + 1 overlaps computing layer
 * i: at most two layers are in memory. */
typedef struct loader {
    const mm_model *m;
    const mm_fwd_arch *a;
    size_t i;
    mm_fwd_layer l;
    mm_err err;
    int rc, started;
    pthread_t tid;
} loader;

static void *load_main(void *arg)
{
    loader *ld = arg;
    ld->rc = mm_fwd_layer_load(ld->m, ld->a, ld->i, &ld->l, &ld->err);
    return NULL;
}

static void load_start(loader *ld, const mm_model *m, const mm_fwd_arch *a, size_t i)
{
    ld->m = m, ld->a = a, ld->i = i, ld->rc = 0;
    ld->started = pthread_create(&ld->tid, NULL, load_main, ld) == 0;
    if (!ld->started)
        load_main(ld); /* no thread: load now, on the caller's */
}

/* Waits for the load; 0 with ld->l filled, or its error copied into err. */
static int load_finish(loader *ld, mm_err *err)
{
    if (ld->started)
        pthread_join(ld->tid, NULL);
    ld->started = 0;
    if (ld->rc < 0)
        *err = ld->err;
    return ld->rc;
}

int mm_forward_hidden(const mm_model *m, const int32_t *ids, const uint8_t *mask, size_t batch, size_t seq,
                      float *out, mm_err *err)
{
    mm_fwd_arch a;
    int rc = mm_fwd_arch_open(m, &a, err);
    if (rc < 0)
        return rc;
    const size_t n = batch * seq, H = a.hidden, threads = mm_fwd_threads();
    /* [0] full-attention layers, [1] sliding-window ones */
    mm_fwd_rot rot[2];
    float *inv_freq = malloc((a.rope[0].rot_dim / 2 + a.rope[1].rot_dim / 2 + 1) * sizeof *inv_freq);
    if (!inv_freq) {
        mm_fwd_arch_free(&a);
        return mm_err_set(err, -ENOMEM, "forward pass: out of memory");
    }
    rot[0].inv_freq = inv_freq;
    rot[1].inv_freq = inv_freq + a.rope[0].rot_dim / 2;
    mm_fwd_rope_freqs(&a.rope[0], seq, &rot[0]);
    mm_fwd_rope_freqs(&a.rope[1], seq, &rot[1]);
    /* each layer runs in place on out[l + 1], a copy of its input out[l]; the last layer's output is not
     * one of the hidden states asked for, so that layer is never run */
    const size_t nrun = n ? a.layers - 1 : 0;
    loader ld[2] = { 0 };
    if (nrun)
        load_start(&ld[0], m, &a, 0);
    rc = n ? embed(m, &a, ids, n, out, err) : 0;
    for (size_t i = 0; i < nrun; i++) {
        loader *cur = &ld[i % 2], *next = &ld[(i + 1) % 2];
        int lrc = load_finish(cur, rc < 0 ? &(mm_err){ 0 } : err);
        if (rc == 0)
            rc = lrc;
        if (rc < 0) {
            mm_fwd_layer_free(&cur->l);
            break;
        }
        if (i + 1 < nrun)
            load_start(next, m, &a, i + 1);
        float *x = out + (i + 1) * n * H;
        memcpy(x, out + i * n * H, n * H * sizeof *x);
        rc = mm_fwd_layer_run(&a, &cur->l, a.window[i], &rot[a.window[i] != 0], x, batch, seq, mask, threads, err);
        /* cur's buffers stay for layer i + 2 (mm_fwd_layer_load reuses them) */
        if (rc < 0) {
            mm_err_prefix(err, "layer %zu", i);
            if (i + 1 < nrun)
                load_finish(next, &(mm_err){ 0 });
            break;
        }
    }
    mm_fwd_layer_free(&ld[0].l);
    mm_fwd_layer_free(&ld[1].l);
    free(inv_freq);
    mm_fwd_arch_free(&a);
    return rc;
}

void mm_forward_plug(mm_plan_options *o)
{
    o->moe_hidden = mm_forward_hidden;
    o->moe_dims = mm_forward_dims;
}
