#include "fwd_layer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fwd_math.h"
#include "fwd_par.h"
#include "fwd_weights.h"

/* ---- weights ---------------------------------------------------------------------------------------- */

/* Loads "<prefix>layers.<i>.<suffix>" into the next of l's buffers (grown when too small) and points
 * *dst at it. */
static int load(const mm_model *m, const mm_fwd_arch *a, size_t i, const char *suffix, size_t rows, size_t cols,
                mm_fwd_layer *l, float **dst, mm_err *err)
{
    char name[256];
    snprintf(name, sizeof name, "%slayers.%zu.%s", a->prefix, i, suffix);
    size_t k = l->nowned++, n = rows * (cols ? cols : 1);
    if (l->cap[k] < n) {
        free(l->owned[k]);
        l->cap[k] = (l->owned[k] = malloc(n * sizeof *l->owned[k])) ? n : 0;
        if (!l->owned[k])
            return mm_err_set(err, -ENOMEM, "%s: out of memory", name);
    }
    *dst = l->owned[k];
    return mm_fwd_load_into(m, name, rows, cols, *dst, err);
}

int mm_fwd_layer_load(const mm_model *m, const mm_fwd_arch *a, size_t i, mm_fwd_layer *l, mm_err *err)
{
    float *owned[24];
    size_t cap[24];
    memcpy(owned, l->owned, sizeof owned);
    memcpy(cap, l->cap, sizeof cap);
    memset(l, 0, sizeof *l);
    memcpy(l->owned, owned, sizeof owned);
    memcpy(l->cap, cap, sizeof cap);
    const size_t H = a->hidden, I = a->inter, QD = a->heads * a->head_dim, KD = a->kv_heads * a->head_dim;
    int rc = load(m, a, i, "input_layernorm.weight", H, 0, l, &l->in_norm, err);
    if (rc == 0 && a->sandwich) {
        /* Gemma 2/3: post_attention_layernorm norms the attention output; the MLP has its own pair */
        if ((rc = load(m, a, i, "post_attention_layernorm.weight", H, 0, l, &l->attn_post_norm, err)) == 0 &&
            (rc = load(m, a, i, "pre_feedforward_layernorm.weight", H, 0, l, &l->mlp_pre_norm, err)) == 0)
            rc = load(m, a, i, "post_feedforward_layernorm.weight", H, 0, l, &l->mlp_post_norm, err);
    } else if (rc == 0) {
        rc = load(m, a, i, "post_attention_layernorm.weight", H, 0, l, &l->mlp_pre_norm, err);
    }
    if (rc == 0 && a->qk_norm && (rc = load(m, a, i, "self_attn.q_norm.weight", a->head_dim, 0, l, &l->q_norm, err)) == 0)
        rc = load(m, a, i, "self_attn.k_norm.weight", a->head_dim, 0, l, &l->k_norm, err);
    if (rc == 0 && a->fused_qkv) {
        /* Phi-3: rows [q; k; v] of one Linear, so the three are views */
        if ((rc = load(m, a, i, "self_attn.qkv_proj.weight", QD + 2 * KD, H, l, &l->wq, err)) == 0) {
            l->wk = l->wq + QD * H;
            l->wv = l->wk + KD * H;
        }
    } else if (rc == 0) {
        if ((rc = load(m, a, i, "self_attn.q_proj.weight", QD, H, l, &l->wq, err)) == 0 &&
            (rc = load(m, a, i, "self_attn.k_proj.weight", KD, H, l, &l->wk, err)) == 0)
            rc = load(m, a, i, "self_attn.v_proj.weight", KD, H, l, &l->wv, err);
        if (rc == 0 && a->qkv_bias && (rc = load(m, a, i, "self_attn.q_proj.bias", QD, 0, l, &l->bq, err)) == 0 &&
            (rc = load(m, a, i, "self_attn.k_proj.bias", KD, 0, l, &l->bk, err)) == 0)
            rc = load(m, a, i, "self_attn.v_proj.bias", KD, 0, l, &l->bv, err);
    }
    if (rc == 0 && (rc = load(m, a, i, "self_attn.o_proj.weight", H, QD, l, &l->wo, err)) == 0 && a->o_bias)
        rc = load(m, a, i, "self_attn.o_proj.bias", H, 0, l, &l->bo, err);
    if (rc == 0 && a->fused_gate_up) {
        if ((rc = load(m, a, i, "mlp.gate_up_proj.weight", 2 * I, H, l, &l->wg, err)) == 0)
            l->wu = l->wg + I * H;
    } else if (rc == 0) {
        if ((rc = load(m, a, i, "mlp.gate_proj.weight", I, H, l, &l->wg, err)) == 0)
            rc = load(m, a, i, "mlp.up_proj.weight", I, H, l, &l->wu, err);
        if (rc == 0 && a->mlp_bias && (rc = load(m, a, i, "mlp.gate_proj.bias", I, 0, l, &l->bg, err)) == 0)
            rc = load(m, a, i, "mlp.up_proj.bias", I, 0, l, &l->bu, err);
    }
    if (rc == 0 && (rc = load(m, a, i, "mlp.down_proj.weight", H, I, l, &l->wd, err)) == 0 && a->mlp_bias)
        rc = load(m, a, i, "mlp.down_proj.bias", H, 0, l, &l->bd, err);
    if (rc < 0)
        mm_fwd_layer_free(l);
    return rc;
}

void mm_fwd_layer_free(mm_fwd_layer *l)
{
    for (size_t i = 0; i < l->nowned; i++)
        free(l->owned[i]);
    memset(l, 0, sizeof *l);
}

/* ---- the run ---------------------------------------------------------------------------------------- */

/* Everything a job of the run may need; each job reads the fields of its step. */
typedef struct run {
    const mm_fwd_arch *a;
    const mm_fwd_layer *l;
    size_t batch, seq, window;
    const uint8_t *mask;
    const mm_fwd_rot *rot;
    float *q, *k, *v, *att, *scores; /* scores: seq floats per thread part, see job_attend */
    size_t nparts;
    /* the current projection y[:, j] = x W^T + b, or norm y[r] = norm(x[r]) over n floats, or gate */
    const float *x, *w, *b;
    float *y;
    size_t in, stride;
} run;

static void job_linear(void *ctx, size_t j0, size_t j1)
{
    const run *r = ctx;
    mm_fwd_linear(r->x, r->batch * r->seq, r->in, r->w, r->b, j0, j1, r->y, r->stride);
}

static void job_norm(void *ctx, size_t r0, size_t r1)
{
    const run *r = ctx;
    for (size_t i = r0; i < r1; i++)
        mm_fwd_rmsnorm(r->x + i * r->in, r->in, r->w, r->a->eps, r->a->norm_plus_one, r->y + i * r->in);
}

/* q/k head norms and RoPE, row by row (the position of a row is its index in its sequence) */
static void job_qk(void *ctx, size_t r0, size_t r1)
{
    const run *r = ctx;
    const mm_fwd_arch *a = r->a;
    const size_t hd = a->head_dim;
    for (size_t i = r0; i < r1; i++) {
        const size_t pos = i % r->seq;
        for (size_t h = 0; h < a->heads + a->kv_heads; h++) {
            int is_q = h < a->heads;
            float *x = is_q ? r->q + (i * a->heads + h) * hd : r->k + (i * a->kv_heads + h - a->heads) * hd;
            if (a->qk_norm)
                mm_fwd_rmsnorm(x, hd, is_q ? r->l->q_norm : r->l->k_norm, a->eps, a->norm_plus_one, x);
            mm_fwd_apply_rope(x, r->rot, pos);
        }
    }
}

/* (sequence, head) pairs; a part's scratch is found from its first pair */
static void job_attend(void *ctx, size_t p0, size_t p1)
{
    const run *r = ctx;
    const mm_fwd_arch *a = r->a;
    const size_t hd = a->head_dim, QD = a->heads * hd, KD = a->kv_heads * hd, group = a->heads / a->kv_heads;
    const size_t total = r->batch * a->heads;
    size_t part = 0;
    while (part + 1 < r->nparts && total * (part + 1) / r->nparts <= p0)
        part++;
    float *scores = r->scores + part * r->seq;
    for (size_t p = p0; p < p1; p++) {
        const size_t b = p / a->heads, h = p % a->heads, kvh = h / group, row0 = b * r->seq;
        mm_fwd_attend(r->q + row0 * QD + h * hd, r->k + row0 * KD + kvh * hd, r->v + row0 * KD + kvh * hd, QD, KD, hd,
                      r->seq, r->mask ? r->mask + row0 : NULL, r->window, a->attn_scale, a->softcap, scores,
                      r->att + row0 * QD + h * hd);
    }
}

static void job_gate(void *ctx, size_t r0, size_t r1)
{
    const run *r = ctx;
    mm_fwd_gate(r->a->act, r->y + r0 * r->in, r->x + r0 * r->in, (r1 - r0) * r->in);
}

static void linear(run *r, size_t threads, const float *x, size_t in, const float *w, const float *b, size_t out,
                   float *y)
{
    r->x = x, r->in = in, r->w = w, r->b = b, r->y = y, r->stride = out;
    mm_fwd_parallel(out, threads, job_linear, r);
}

static void norm(run *r, size_t threads, const float *x, size_t n, const float *w, float *y)
{
    r->x = x, r->in = n, r->w = w, r->y = y;
    mm_fwd_parallel(r->batch * r->seq, threads, job_norm, r);
}

static void add(float *x, const float *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += d[i];
}

int mm_fwd_layer_run(const mm_fwd_arch *a, const mm_fwd_layer *l, size_t window, const mm_fwd_rot *rot,
                     float *x, size_t batch, size_t seq, const uint8_t *mask, size_t threads,
                     mm_err *err)
{
    const size_t N = batch * seq, H = a->hidden, I = a->inter, QD = a->heads * a->head_dim,
                 KD = a->kv_heads * a->head_dim;
    if (threads > 16)
        threads = 16;
    /* one block for every activation of the layer: xn, q, k, v, att, o, g, u, scores */
    size_t total = N * (2 * H + 2 * QD + 2 * KD + 2 * I) + threads * seq;
    float *buf = malloc(total * sizeof *buf);
    if (!buf)
        return mm_err_set(err, -ENOMEM, "forward pass: out of memory for the activations of %zu tokens", N);
    float *xn = buf, *o = xn + N * H, *g = o + N * H, *u = g + N * I;
    run r = { .a = a, .l = l, .batch = batch, .seq = seq, .window = window, .rot = rot, .mask = mask,
              .q = u + N * I };
    r.k = r.q + N * QD, r.v = r.k + N * KD, r.att = r.v + N * KD, r.scores = r.att + N * QD;

    /* attention: x += [post_norm](o_proj(attend(rope(q), rope(k), v))) of the normed x */
    norm(&r, threads, x, H, l->in_norm, xn);
    linear(&r, threads, xn, H, l->wq, l->bq, QD, r.q);
    linear(&r, threads, xn, H, l->wk, l->bk, KD, r.k);
    linear(&r, threads, xn, H, l->wv, l->bv, KD, r.v);
    mm_fwd_parallel(N, threads, job_qk, &r);
    r.nparts = threads < batch * a->heads ? threads : batch * a->heads; /* job_attend finds its scratch by it */
    mm_fwd_parallel(batch * a->heads, r.nparts, job_attend, &r);
    linear(&r, threads, r.att, QD, l->wo, l->bo, H, o);
    if (l->attn_post_norm)
        norm(&r, threads, o, H, l->attn_post_norm, o);
    add(x, o, N * H);

    /* MLP: x += [post_norm](down(act(gate(xn)) * up(xn))) of the normed x */
    norm(&r, threads, x, H, l->mlp_pre_norm, xn);
    linear(&r, threads, xn, H, l->wg, l->bg, I, g);
    linear(&r, threads, xn, H, l->wu, l->bu, I, u);
    r.x = u, r.y = g, r.in = I;
    mm_fwd_parallel(N, threads, job_gate, &r);
    linear(&r, threads, g, I, l->wd, l->bd, H, o);
    if (l->mlp_post_norm)
        norm(&r, threads, o, H, l->mlp_post_norm, o);
    add(x, o, N * H);
    free(buf);
    return 0;
}
