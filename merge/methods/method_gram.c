/* Norm- and Gram-based methods (B2.3-B2.7): slerp, nuslerp, multislerp, karcher, model_stock.
 *
 * Every one of them needs reductions over a whole tensor (or a whole row or column) before any output
 * element is known. The pre-pass streams the inputs and accumulates sums of squares and dot products
 * in double (D4) over the elementwise values mergekit reduces, computed and rounded as D3 says; a
 * reduction whose operands depend on an earlier scalar gets its own pass (nuslerp: norms, then the
 * cosine of the normalised vectors; multislerp: four). The scalars are rounded to the computation dtype
 * wherever mergekit's are 1-element tensors of that dtype, and float32 transcendental scalars are
 * correctly rounded. The kernel then replays mergekit's elementwise ops with those scalars, one
 * rounding per torch op (D3): only the reductions' accumulation order differs from mergekit's.
 * Exceptions: slerp runs in float32 NumPy in mergekit (one rounding at the end), and karcher's
 * iteration, which mergekit rounds at every step, runs on coefficients of the Gram matrix (B2.6).
 *
 * Row-local statistics (nuslerp's row mode, filter-wise model_stock) are computed in the kernel from
 * whole rows (MM_ALIGN_ROWS), without a pre-pass.
 *
 * A data-dependent error (multislerp's "the weighted sum of the input tensors is zero" with three or
 * more models) can only be found by the pre-pass: it logs one line naming the tensor and fails with
 * -EIO, so the read that needed it fails. Everything else is checked at mount time in prepare(). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include "method_internal.h"

/* ==== per-op array helpers: one torch op each, rounded to the computation dtype ==== */

static void v_sub(mm_dtype dt, const float *x, const float *y, float *d, size_t n)
{
    for (size_t k = 0; k < n; k++)
        d[k] = x[k] - y[k];
    mm_vround(dt, d, n);
}

static void v_add(mm_dtype dt, const float *x, const float *y, float *d, size_t n)
{
    for (size_t k = 0; k < n; k++)
        d[k] = x[k] + y[k];
    mm_vround(dt, d, n);
}

/* x * s with s a float32 scalar: a Python number (D3: used as float32, un-rounded) or the value of a
 * 1-element tensor of the dtype. */
static void v_mul(mm_dtype dt, const float *x, float s, float *d, size_t n)
{
    for (size_t k = 0; k < n; k++)
        d[k] = x[k] * s;
    mm_vround(dt, d, n);
}

static void v_div(mm_dtype dt, const float *x, float s, float *d, size_t n)
{
    for (size_t k = 0; k < n; k++)
        d[k] = x[k] / s;
    mm_vround(dt, d, n);
}

/* acc += x in float32: a sum over the model axis, rounded once by the caller (D3). */
static void v_acc(float *acc, const float *x, size_t n)
{
    for (size_t k = 0; k < n; k++)
        acc[k] += x[k];
}

/* A Python number as torch stores it in a tensor of the dtype, or rounds it before an add/compare. */
static float num_to(mm_dtype dt, double x)
{
    return mm_round_to(dt, (float)x);
}

/* torch.norm of a tensor of dtype dt from its sum of squares: the float result rounded to dt. */
static float norm_to(mm_dtype dt, double sq)
{
    /* a sum with a NaN or infinite term stays NaN or inf, as torch.norm's does */
    return mm_round_to(dt, (float)sqrt(sq < 0 ? 0 : sq));
}

/* float32 transcendental functions of 1-element tensors, correctly rounded: float32 libm versions
 * (glibc's acosf, NumPy's own SIMD sin) differ from each other in the last bit on a few percent of
 * arguments, which in float32 moves the outputs by ulps; the correctly rounded value is the one
 * definition every implementation approximates, and a reference reproduces it in float64. */
static float acos32(float x)
{
    return (float)acos((double)x);
}

static float sin32(float x)
{
    return (float)sin((double)x);
}

static float cos32(float x)
{
    return (float)cos((double)x);
}

/* ==== double reductions (D4). Four independent lanes: deterministic for a given chunking (the
 * engine's chunks are fixed), and the compiler may vectorise them. ==== */

static double d_dot(const float *x, const float *y, size_t n)
{
    double s[4] = {0, 0, 0, 0};
    size_t k = 0;
    for (; k + 4 <= n; k += 4)
        for (int l = 0; l < 4; l++)
            s[l] += (double)x[k + l] * (double)y[k + l];
    for (; k < n; k++)
        s[0] += (double)x[k] * (double)y[k];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* Σ round(x*y): torch's `(x * y).sum()`, whose products are a tensor of the dtype before the sum. */
static double d_dot_rounded(mm_dtype dt, const float *x, const float *y, size_t n)
{
    double s[4] = {0, 0, 0, 0};
    size_t k = 0;
    for (; k + 4 <= n; k += 4)
        for (int l = 0; l < 4; l++)
            s[l] += (double)mm_round_to(dt, x[k + l] * y[k + l]);
    for (; k < n; k++)
        s[0] += (double)mm_round_to(dt, x[k] * y[k]);
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* ==== inputs as the methods see them ==== */

/* Input i over chunk elements [off, off + n): the task vector round(X_i - B) when base >= 0 (built in
 * buf), else X_i itself (no copy). */
static const float *vec_of(const mm_kernel_args *a, size_t i, int base, size_t off, size_t n, float *buf)
{
    if (base < 0)
        return a->in[i] + off;
    v_sub(a->t->comp, a->in[i] + off, a->in[base] + off, buf, n);
    return buf;
}

/* The indexes of the inputs other than the base, in D1 order; returns their count. */
static size_t others(const mm_out_tensor *t, size_t *idx)
{
    size_t n = 0;
    for (size_t i = 0; i < t->ninputs; i++)
        if ((int)i != t->base)
            idx[n++] = i;
    return n;
}

/* mergekit exempts base_model from a required per-model parameter (B1.5); the planner does that only
 * for methods that need a base, so methods with an optional base declare `weight` optional and check
 * the other models here. */
static int require_weights(const mm_out_tensor *t, size_t widx, mm_err *err)
{
    for (size_t i = 0; i < t->ninputs; i++)
        if ((int)i != t->base && isnan(t->inputs[i].mvals[widx]))
            return mm_err_set(err, -EINVAL,
                              "tensor '%s': source %zu (%s) has no 'weight'; merge_method %s requires it for every "
                              "model except base_model (add `parameters: {weight: ...}` under the model, or once "
                              "in the top-level parameters)",
                              t->name, i + 1, t->inputs[i].mt->shard->path, t->method->name);
    return 0;
}

/* ==== Gram matrix of a set of vectors, accumulated over chunks or rows ==== */

#define GRAM_MAX (MM_MAX_INPUTS * (MM_MAX_INPUTS + 1) / 2)

typedef struct gram {
    const mm_out_tensor *t;
    size_t nv;                 /* vectors */
    size_t idx[MM_MAX_INPUTS]; /* input index of each vector */
    int base;                  /* subtracted from every vector when >= 0 (task vectors) */
    int round_products;        /* off-diagonal terms are Σ round(v_i v_j) (torch's `(a * b).sum()`) */
    double g[GRAM_MAX];        /* packed: g[tri(i, j)] = <v_i, v_j> for i <= j */
} gram;

static size_t tri(size_t i, size_t j)
{
    return i <= j ? j * (j + 1) / 2 + i : i * (i + 1) / 2 + j;
}

static void gram_init(gram *g, const mm_out_tensor *t, const size_t *idx, size_t nv, int base, int round_products)
{
    g->t = t;
    g->nv = nv;
    memcpy(g->idx, idx, nv * sizeof *idx);
    g->base = base;
    g->round_products = round_products;
    memset(g->g, 0, tri(nv - 1, nv - 1) * sizeof g->g[0] + sizeof g->g[0]);
}

/* Adds elements [off, off + n) of a chunk. The vectors are rebuilt per pair, so two buffers of n
 * floats suffice whatever the number of models (the inputs are in memory; only flops are repeated). */
static void gram_add(gram *g, const mm_kernel_args *a, size_t off, size_t n, float *buf0, float *buf1)
{
    const mm_dtype dt = g->t->comp;
    for (size_t j = 0; j < g->nv; j++) {
        const float *vj = vec_of(a, g->idx[j], g->base, off, n, buf1);
        g->g[tri(j, j)] += d_dot(vj, vj, n);
        for (size_t i = 0; i < j; i++) {
            const float *vi = vec_of(a, g->idx[i], g->base, off, n, buf0);
            g->g[tri(i, j)] += g->round_products ? d_dot_rounded(dt, vi, vj, n) : d_dot(vi, vj, n);
        }
    }
}

static int gram_chunk(void *ctx, const mm_kernel_args *a)
{
    gram_add(ctx, a, 0, a->n, a->scratch, a->scratch + a->n);
    return 0;
}

/* One streaming pass over the whole tensor. */
static int gram_run(gram *g)
{
    return mm_engine_stream(g->t, gram_chunk, g);
}

/* ==== slerp (B2.3) ==== */
enum { SL_T };
static const mm_param_def slerp_g[] = {{"t", MM_PT_NUM, 1, NAN}};

/* s0 multiplies the base, s1 the other model (float32, as NumPy casts its float64 scalars). */
typedef struct slerp_stats {
    float s0, s1;
} slerp_stats;

static int slerp_prepare(mm_out_tensor *t, mm_err *err)
{
    if (t->ninputs != 2)
        return mm_err_set(err, -EINVAL,
                          "tensor '%s': merge_method slerp merges exactly two models, one of which is base_model; "
                          "this slice has %zu (use nuslerp, multislerp or linear for other counts)",
                          t->name, t->ninputs);
    return 0;
}

static size_t slerp_stats_size(const mm_out_tensor *t)
{
    (void)t;
    return sizeof(slerp_stats);
}

/* mergekit's slerp runs on float32 NumPy arrays: ‖a‖, ‖b‖ and the dot d of the normalised arrays are
 * float32 values (here: from double sums, rounded); θ0 and sin θ0 are float32; tθ0, s0 and s1 are
 * float64 (NumPy 1.x promotes a float32 scalar with a Python float to float64); the array products use
 * s0, s1 cast to float32. */
static int slerp_prepass(const mm_out_tensor *t, void *stats)
{
    slerp_stats *st = stats;
    size_t idx[2] = {(size_t)t->base, (size_t)(1 - t->base)};
    gram g;
    gram_init(&g, t, idx, 2, -1, 0);
    int rc = gram_run(&g);
    if (rc < 0)
        return rc;
    const float na = (float)sqrt(g.g[tri(0, 0)]), nb = (float)sqrt(g.g[tri(1, 1)]);
    /* normalize() divides only by a norm above 1e-8. */
    const double da = (double)na > 1e-8 ? na : 1.0, db = (double)nb > 1e-8 ? nb : 1.0;
    const float d = (float)(g.g[tri(0, 1)] / (da * db));
    const double tt = t->gvals[SL_T];
    if (fabs((double)d) > 0.9995) {
        /* Nearly colinear: lerp of the un-normalised arrays. */
        st->s0 = (float)(1.0 - tt);
        st->s1 = (float)tt;
        return 0;
    }
    const float th0 = acos32(d), sin_th0 = sin32(th0);
    const double th_t = (double)th0 * tt;
    st->s0 = (float)(sin((double)th0 - th_t) / (double)sin_th0);
    st->s1 = (float)(sin(th_t) / (double)sin_th0);
    return 0;
}

static void slerp_kernel(const mm_kernel_args *a)
{
    const slerp_stats *st = a->stats;
    const float *x0 = a->in[a->t->base], *x1 = a->in[1 - a->t->base];
    /* float32 array ops, then the cast to the base tensor's dtype. */
    for (size_t k = 0; k < a->n; k++)
        a->out[k] = st->s0 * x0[k] + st->s1 * x1[k];
    mm_vround(a->t->comp, a->out, a->n);
}

/* ==== nuslerp (B2.4) ==== */
enum { NU_FLATTEN, NU_ROW_WISE };
enum { NU_WEIGHT };
static const mm_param_def nuslerp_g[] = {{"nuslerp_flatten", MM_PT_BOOL, 0, 1}, {"nuslerp_row_wise", MM_PT_BOOL, 0, 0}};
static const mm_param_def nuslerp_m[] = {{"weight", MM_PT_NUM, 0, NAN}};
/* kc slots: the Python numbers 1 - t and t as float32 (D3: what torch multiplies by). */
enum { NU_KC_1MT, NU_KC_T };

/* One vector's coefficients: res = round(round(round(a v0) + round(b v1)) / s) with a = sin((1-t)θ),
 * b = sin(tθ), s = sin θ. The lerp branch (|sin θ| < 1e-8), round(round((1-t) v0) + round(t v1)), is
 * the same expression with a = 1 - t, b = t, s = 1 (a division by 1 changes nothing). */
typedef struct nus_coef {
    float a, b, s;
} nus_coef;

typedef enum { NU_MODE_FLAT, NU_MODE_ROWS, NU_MODE_COLS } nu_mode;

static nu_mode nus_mode(const mm_out_tensor *t)
{
    if (t->gvals[NU_FLATTEN] != 0)
        return NU_MODE_FLAT;
    return t->gvals[NU_ROW_WISE] != 0 ? NU_MODE_COLS : NU_MODE_ROWS;
}

/* Vectors with pre-pass statistics; element e belongs to vector e % count. Flatten: one vector.
 * Columns (`row_wise: true` transposes dim 0 with the last): the vectors run along dim 0, so there are
 * numel / shape[0] of them (one for a 1-D tensor, which the transpose leaves alone). Rows: none, the
 * kernel computes each row's statistics from the whole row. */
static uint64_t nus_nvec(const mm_out_tensor *t)
{
    switch (nus_mode(t)) {
    case NU_MODE_FLAT: return 1;
    case NU_MODE_COLS: return t->ndim >= 2 && t->shape[0] ? t->numel / t->shape[0] : 1;
    default: return 0;
    }
}

static int nuslerp_prepare(mm_out_tensor *t, mm_err *err)
{
    size_t idx[MM_MAX_INPUTS];
    size_t n = others(t, idx);
    if (t->base >= 0 && t->ninputs == 2)
        return mm_err_set(err, -EINVAL,
                          "tensor '%s': base_model is one of the two models nuslerp merges; with nuslerp the base "
                          "must be a third model (or remove base_model)",
                          t->name);
    if (n != 2)
        return mm_err_set(err, -EINVAL,
                          "tensor '%s': merge_method nuslerp merges exactly two models (plus an optional third "
                          "base_model); this slice has %zu besides the base",
                          t->name, n);
    int rc = require_weights(t, NU_WEIGHT, err);
    if (rc < 0)
        return rc;
    const double w1 = t->inputs[idx[0]].mvals[NU_WEIGHT], w2 = t->inputs[idx[1]].mvals[NU_WEIGHT];
    const double tt = fabs(w1 + w2) < 1e-6 ? 0.5 : w2 / (w1 + w2);
    t->kc[NU_KC_1MT] = (float)(1.0 - tt);
    t->kc[NU_KC_T] = (float)tt;
    return 0;
}

static size_t nuslerp_stats_size(const mm_out_tensor *t)
{
    return (size_t)nus_nvec(t) * sizeof(nus_coef);
}

/* _normalize's divisor: the norm (a tensor of the dtype) clamped to at least 1e-7. */
static float nus_norm(mm_dtype dt, double sq)
{
    const float nr = norm_to(dt, sq), lo = num_to(dt, 1e-7);
    return nr < lo ? lo : nr;
}

/* The cosine's terms: round(round(v0/n0) * round(v1/n1)), the product of the normalised vectors as
 * torch computes it before summing. Over a run of one vector (u0, u1: scratch), or one element. */
static double nus_unit_dot(mm_dtype dt, const float *v0, const float *v1, float n0, float n1, float *u0, float *u1,
                           size_t n)
{
    v_div(dt, v0, n0, u0, n);
    v_div(dt, v1, n1, u1, n);
    return d_dot_rounded(dt, u0, u1, n);
}

static double nus_unit_prod(mm_dtype dt, float v0, float v1, float n0, float n1)
{
    return (double)mm_round_to(dt, mm_round_to(dt, v0 / n0) * mm_round_to(dt, v1 / n1));
}

/* From the cosine (a value of the dtype): θ = acos(clamp(c, -1, 1)), sin θ, sin((1-t)θ), sin(tθ),
 * each a 1-element tensor of the dtype. */
static nus_coef nus_coef_of(const mm_out_tensor *t, float c)
{
    const mm_dtype dt = t->comp;
    const float cc = c < -1.0f ? -1.0f : c > 1.0f ? 1.0f : c;
    const float th = mm_round_to(dt, acos32(cc));
    nus_coef k;
    k.s = mm_round_to(dt, sin32(th));
    if (fabsf(k.s) < num_to(dt, 1e-8)) {
        k.a = t->kc[NU_KC_1MT];
        k.b = t->kc[NU_KC_T];
        k.s = 1.0f;
        return k;
    }
    k.a = mm_round_to(dt, sin32(mm_round_to(dt, t->kc[NU_KC_1MT] * th)));
    k.b = mm_round_to(dt, sin32(mm_round_to(dt, t->kc[NU_KC_T] * th)));
    return k;
}

static float nus_elem(mm_dtype dt, const nus_coef *k, float v0, float v1)
{
    const float x = mm_round_to(dt, k->a * v0), y = mm_round_to(dt, k->b * v1);
    return mm_round_to(dt, mm_round_to(dt, x + y) / k->s);
}

/* Flatten/column pre-pass: pass 1 sums v0² and v1² per vector, which become the clamped norms n0, n1;
 * pass 2 sums the products of the normalised elements (d). (The cosine from Σ v0 v1 / (n0 n1) in one
 * pass would skip the rounding of the normalised elements, which flips the rounded cosine often
 * enough to matter, even in float32 for short columns.) */
typedef struct nus_pass {
    const mm_out_tensor *t;
    size_t i0, i1;
    uint64_t nvec;
    int pass;
    double *s0, *s1, *d;
    float *n0, *n1;
} nus_pass;

static int nus_chunk(void *ctx, const mm_kernel_args *a)
{
    const nus_pass *p = ctx;
    const mm_dtype dt = p->t->comp;
    const size_t n = a->n;
    const float *v0 = vec_of(a, p->i0, p->t->base, 0, n, a->scratch);
    const float *v1 = vec_of(a, p->i1, p->t->base, 0, n, a->scratch + n);
    float *u0 = a->scratch + 2 * n, *u1 = a->scratch + 3 * n;
    if (p->nvec == 1) {
        if (p->pass == 1) {
            p->s0[0] += d_dot(v0, v0, n);
            p->s1[0] += d_dot(v1, v1, n);
        } else {
            p->d[0] += nus_unit_dot(dt, v0, v1, p->n0[0], p->n1[0], u0, u1, n);
        }
        return 0;
    }
    /* Columns: runs of consecutive vectors, each element adding to its own accumulator. */
    for (size_t k = 0; k < n;) {
        const uint64_t v = (a->e0 + k) % p->nvec;
        const size_t run = p->nvec - v < n - k ? (size_t)(p->nvec - v) : n - k;
        for (size_t j = 0; j < run; j++) {
            if (p->pass == 1) {
                p->s0[v + j] += (double)v0[k + j] * v0[k + j];
                p->s1[v + j] += (double)v1[k + j] * v1[k + j];
            } else {
                p->d[v + j] += nus_unit_prod(dt, v0[k + j], v1[k + j], p->n0[v + j], p->n1[v + j]);
            }
        }
        k += run;
    }
    return 0;
}

static int nuslerp_prepass(const mm_out_tensor *t, void *stats)
{
    const mm_dtype dt = t->comp;
    size_t idx[MM_MAX_INPUTS];
    others(t, idx);
    const size_t nv = (size_t)nus_nvec(t);
    nus_pass p = {.t = t, .i0 = idx[0], .i1 = idx[1], .nvec = nv, .pass = 1};
    void *mem = calloc(nv, 3 * sizeof(double) + 2 * sizeof(float));
    if (!mem)
        return -ENOMEM;
    p.s0 = mem;
    p.s1 = p.s0 + nv;
    p.d = p.s1 + nv;
    p.n0 = (float *)(p.d + nv);
    p.n1 = p.n0 + nv;
    int rc = mm_engine_stream(t, nus_chunk, &p);
    for (size_t v = 0; v < nv && rc == 0; v++) {
        p.n0[v] = nus_norm(dt, p.s0[v]);
        p.n1[v] = nus_norm(dt, p.s1[v]);
    }
    if (rc == 0) {
        p.pass = 2;
        rc = mm_engine_stream(t, nus_chunk, &p);
    }
    nus_coef *out = stats;
    for (size_t v = 0; v < nv && rc == 0; v++)
        out[v] = nus_coef_of(t, mm_round_to(dt, (float)p.d[v]));
    free(mem);
    return rc;
}

static void nuslerp_kernel(const mm_kernel_args *a)
{
    const mm_out_tensor *t = a->t;
    const mm_dtype dt = t->comp;
    const size_t n = a->n;
    size_t idx[MM_MAX_INPUTS];
    others(t, idx);
    const float *v0 = vec_of(a, idx[0], t->base, 0, n, a->scratch);
    const float *v1 = vec_of(a, idx[1], t->base, 0, n, a->scratch + n);
    if (nus_mode(t) == NU_MODE_ROWS) {
        float *u0 = a->scratch + 2 * n, *u1 = a->scratch + 3 * n;
        const size_t len = (size_t)a->row_len;
        for (size_t r = 0; r + len <= n; r += len) {
            const float n0 = nus_norm(dt, d_dot(v0 + r, v0 + r, len)), n1 = nus_norm(dt, d_dot(v1 + r, v1 + r, len));
            const double c = nus_unit_dot(dt, v0 + r, v1 + r, n0, n1, u0, u1, len);
            const nus_coef k = nus_coef_of(t, mm_round_to(dt, (float)c));
            for (size_t j = r; j < r + len; j++)
                a->out[j] = nus_elem(dt, &k, v0[j], v1[j]);
        }
    } else {
        const nus_coef *coef = a->stats;
        const uint64_t nvec = nus_nvec(t);
        uint64_t v = a->e0 % nvec;
        for (size_t k = 0; k < n; k++) {
            a->out[k] = nus_elem(dt, &coef[v], v0[k], v1[k]);
            if (++v == nvec)
                v = 0;
        }
    }
    if (t->base >= 0)
        v_add(dt, a->in[t->base], a->out, a->out, n);
}

/* ==== multislerp (B2.5) ==== */
enum { MS_NORMALIZE, MS_EPS };
enum { MS_WEIGHT };
static const mm_param_def multislerp_g[] = {{"normalize_weights", MM_PT_BOOL, 0, 1}, {"eps", MM_PT_NUM, 0, 1e-8}};
static const mm_param_def multislerp_m[] = {{"weight", MM_PT_NUM, 0, NAN}};

/* The scalars of mergekit's multislerp, all values of the dtype, indexed by input (base unused):
 * dd = ‖T_i‖ + eps, dot = <U_i, M̂>; mn = ‖M‖; cos τ, q = sin τ / τ, avg = Σ w_i ‖T_i‖. `lerp`: ‖M‖ < eps
 * with two models, the linear fallback. The weights (normalised) are in kc[] from prepare. */
typedef struct ms_stats {
    int32_t lerp;
    float mn, cos_tau, q, avg;
    float dd[MM_MAX_INPUTS], dot[MM_MAX_INPUTS];
} ms_stats;

static int multislerp_prepare(mm_out_tensor *t, mm_err *err)
{
    size_t idx[MM_MAX_INPUTS];
    if (others(t, idx) == 0)
        return mm_err_set(err, -EINVAL, "tensor '%s': merge_method multislerp needs a model besides base_model",
                          t->name);
    int rc = require_weights(t, MS_WEIGHT, err);
    if (rc < 0)
        return rc;
    /* torch.tensor(weight, dtype) then, if normalize_weights, weights / weights.sum(). */
    mm_method_round_weights(t, MS_WEIGHT);
    if (t->gvals[MS_NORMALIZE] == 0)
        return 0;
    const float sum = mm_method_weight_sum(t, t->base);
    if (sum == 0)
        return mm_err_set(err, -EINVAL,
                          "tensor '%s': the weights sum to 0 (after rounding to %s), so normalize_weights would "
                          "divide by zero (change the weights or set `normalize_weights: false`)",
                          t->name, mm_dtype_name(t->comp));
    for (size_t i = 0; i < t->ninputs; i++)
        if ((int)i != t->base)
            t->kc[i] = mm_round_to(t->comp, t->kc[i] / sum);
    return 0;
}

static size_t multislerp_stats_size(const mm_out_tensor *t)
{
    /* One model: returned as it is, nothing to compute. */
    return t->ninputs - (t->base >= 0) >= 2 ? sizeof(ms_stats) : 0;
}

/* U_i = round(T_i / dd_i) into dst. */
static void ms_unit(const mm_kernel_args *a, const ms_stats *st, size_t i, float *dst)
{
    const float *ti = vec_of(a, i, a->t->base, 0, a->n, dst);
    v_div(a->t->comp, ti, st->dd[i], dst, a->n);
}

/* The stages of mergekit's chain over one chunk, shared by the pre-pass (which needs each stage's
 * output to reduce it) and the kernel. u and tmp are scratch. */

/* m = M = Σ round(w_i U_i), float32 sum over the models, one rounding. */
static void ms_mean(const mm_kernel_args *a, const ms_stats *st, float *u, float *tmp, float *m)
{
    const mm_out_tensor *t = a->t;
    memset(m, 0, a->n * sizeof *m);
    for (size_t i = 0; i < t->ninputs; i++) {
        if ((int)i == t->base)
            continue;
        ms_unit(a, st, i, u);
        v_mul(t->comp, u, t->kc[i], tmp, a->n);
        v_acc(m, tmp, a->n);
    }
    mm_vround(t->comp, m, a->n);
}

/* m = M̂ = M / ‖M‖. */
static void ms_mean_unit(const mm_kernel_args *a, const ms_stats *st, float *u, float *tmp, float *m)
{
    ms_mean(a, st, u, tmp, m);
    v_div(a->t->comp, m, st->mn, m, a->n);
}

/* r = R = Σ round(w_i round(U_i - round(d_i M̂))), float32 sum over the models, one rounding. */
static void ms_tangent(const mm_kernel_args *a, const ms_stats *st, const float *mh, float *u, float *tmp, float *r)
{
    const mm_out_tensor *t = a->t;
    const mm_dtype dt = t->comp;
    memset(r, 0, a->n * sizeof *r);
    for (size_t i = 0; i < t->ninputs; i++) {
        if ((int)i == t->base)
            continue;
        ms_unit(a, st, i, u);
        v_mul(dt, mh, st->dot[i], tmp, a->n);
        v_sub(dt, u, tmp, u, a->n);
        v_mul(dt, u, t->kc[i], tmp, a->n);
        v_acc(r, tmp, a->n);
    }
    mm_vround(dt, r, a->n);
}

/* The pre-pass runs mergekit's reductions in order, each over the elements the previous scalars
 * define (D4): 1. ‖T_i‖ 2. ‖M‖ 3. <U_i, M̂> 4. ‖R‖. Four streaming passes; sum[] collects one. */
typedef struct ms_pass {
    const mm_out_tensor *t;
    ms_stats *st;
    int pass;
    double sum[MM_MAX_INPUTS];
} ms_pass;

static int ms_chunk(void *ctx, const mm_kernel_args *a)
{
    ms_pass *p = ctx;
    const mm_out_tensor *t = p->t;
    const size_t n = a->n;
    float *u = a->scratch, *tmp = u + n, *mh = tmp + n, *r = mh + n;
    if (p->pass == 1) {
        for (size_t i = 0; i < t->ninputs; i++)
            if ((int)i != t->base) {
                const float *ti = vec_of(a, i, t->base, 0, n, u);
                p->sum[i] += d_dot(ti, ti, n);
            }
    } else if (p->pass == 2) {
        ms_mean(a, p->st, u, tmp, mh);
        p->sum[0] += d_dot(mh, mh, n);
    } else if (p->pass == 3) {
        ms_mean_unit(a, p->st, u, tmp, mh);
        for (size_t i = 0; i < t->ninputs; i++)
            if ((int)i != t->base) {
                ms_unit(a, p->st, i, u);
                p->sum[i] += d_dot_rounded(t->comp, u, mh, n);
            }
    } else {
        ms_mean_unit(a, p->st, u, tmp, mh);
        ms_tangent(a, p->st, mh, u, tmp, r);
        p->sum[0] += d_dot(r, r, n);
    }
    return 0;
}

static int ms_stream(ms_pass *p, int pass)
{
    p->pass = pass;
    memset(p->sum, 0, sizeof p->sum);
    return mm_engine_stream(p->t, ms_chunk, p);
}

static int multislerp_prepass(const mm_out_tensor *t, void *stats)
{
    const mm_dtype dt = t->comp;
    ms_stats *st = stats;
    memset(st, 0, sizeof *st);
    ms_pass *p = malloc(sizeof *p);
    if (!p)
        return -ENOMEM;
    p->t = t;
    p->st = st;
    const float eps = num_to(dt, t->gvals[MS_EPS]);
    float nrm[MM_MAX_INPUTS] = {0};
    int rc = ms_stream(p, 1);
    for (size_t i = 0; i < t->ninputs && rc == 0; i++) {
        if ((int)i == t->base)
            continue;
        nrm[i] = norm_to(dt, p->sum[i]);
        st->dd[i] = mm_round_to(dt, nrm[i] + eps);
    }
    if (rc == 0)
        rc = ms_stream(p, 2);
    if (rc == 0) {
        st->mn = norm_to(dt, p->sum[0]);
        if (st->mn < eps && t->ninputs - (t->base >= 0) == 2) {
            st->lerp = 1;
            free(p);
            return 0;
        }
        if (st->mn < eps) {
            mm_log_error("tensor '%s': multislerp: the weighted sum of the unit task vectors is zero (norm < eps = "
                         "%g), where mergekit raises ValueError (antipodal models with balancing weights?); change "
                         "the weights",
                         t->name, t->gvals[MS_EPS]);
            rc = -EIO;
        }
    }
    if (rc == 0)
        rc = ms_stream(p, 3);
    for (size_t i = 0; i < t->ninputs && rc == 0; i++)
        st->dot[i] = mm_round_to(dt, (float)p->sum[i]);
    if (rc == 0)
        rc = ms_stream(p, 4);
    if (rc == 0) {
        const float tau = mm_round_to(dt, norm_to(dt, p->sum[0]) + eps);
        st->cos_tau = mm_round_to(dt, cos32(tau));
        st->q = mm_round_to(dt, mm_round_to(dt, sin32(tau)) / tau);
        /* (norms * weights).sum(): products of the dtype, float32 sum in model order, one rounding. */
        float avg = 0;
        for (size_t i = 0; i < t->ninputs; i++)
            if ((int)i != t->base)
                avg += mm_round_to(dt, nrm[i] * t->kc[i]);
        st->avg = mm_round_to(dt, avg);
    }
    free(p);
    return rc;
}

static void multislerp_kernel(const mm_kernel_args *a)
{
    const mm_out_tensor *t = a->t;
    const mm_dtype dt = t->comp;
    const size_t n = a->n;
    const ms_stats *st = a->stats;
    size_t idx[MM_MAX_INPUTS];
    float *out = a->out, *u = a->scratch, *tmp = u + n, *mh = tmp + n, *r = mh + n;
    if (others(t, idx) == 1) {
        memcpy(out, a->in[idx[0]], n * sizeof *out);
        return;
    }
    if (st->lerp) {
        /* T_0 w_0 + T_1 w_1 */
        v_mul(dt, vec_of(a, idx[0], t->base, 0, n, u), t->kc[idx[0]], out, n);
        v_mul(dt, vec_of(a, idx[1], t->base, 0, n, u), t->kc[idx[1]], tmp, n);
        v_add(dt, out, tmp, out, n);
    } else {
        /* (M̂ cos τ + R sin τ / τ) · Σ w_i ‖T_i‖ */
        ms_mean_unit(a, st, u, tmp, mh);
        ms_tangent(a, st, mh, u, tmp, r);
        v_mul(dt, mh, st->cos_tau, out, n);
        v_mul(dt, r, st->q, tmp, n);
        v_add(dt, out, tmp, out, n);
        v_mul(dt, out, st->avg, out, n);
    }
    if (t->base >= 0)
        v_add(dt, out, a->in[t->base], out, n);
}

/* ==== karcher (B2.6) ==== */
enum { KA_MAX_ITER, KA_TOL };
static const mm_param_def karcher_g[] = {{"max_iter", MM_PT_NUM, 0, 10}, {"tol", MM_PT_NUM, 0, 1e-5}};

/* The output is Σ c_i X_i: c_i = scale · gam_i / n_i, with u = Σ gam_i X_i / n_i mergekit's last iterate
 * (0 for inputs left out) and scale = Σ α_i n_i. */
typedef struct ka_stats {
    double c[MM_MAX_INPUTS];
} ka_stats;

static size_t karcher_stats_size(const mm_out_tensor *t)
{
    return t->ninputs >= 2 ? sizeof(ka_stats) : 0;
}

/* x^T G y over the valid set, G the Gram matrix of the unit vectors. */
static double ka_form(const double *gu, size_t k, const double *x, const double *y)
{
    double s = 0;
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < k; j++)
            s += x[i] * gu[i * k + j] * y[j];
    return s;
}

static double ka_len(const double *gu, size_t k, const double *x)
{
    const double q = ka_form(gu, k, x, x);
    return sqrt(q < 0 ? 0 : q); /* rounding may leave a tiny negative; NaN stays NaN */
}

/* mergekit's Riemannian iteration, run on the coefficients of u in span{U_i} (u = Σ gam_i U_i), so that
 * every dot product is a quadratic form of the unit vectors' Gram matrix gu (k valid inputs, weights
 * al already normalised over them). */
static void ka_iterate(const double *gu, size_t k, const double *al, double tol, long max_iter, double *gam)
{
    double tan[MM_MAX_INPUTS], p[MM_MAX_INPUTS];
    memcpy(gam, al, k * sizeof *gam);
    double len = ka_len(gu, k, gam);
    for (size_t i = 0; i < k; i++)
        gam[i] = len < tol ? (i == 0) : gam[i] / len;
    for (long it = 0; it < max_iter; it++) {
        for (size_t i = 0; i < k; i++) {
            p[i] = 0; /* <u, U_i> */
            for (size_t j = 0; j < k; j++)
                p[i] += gu[i * k + j] * gam[j];
        }
        memset(tan, 0, k * sizeof *tan);
        for (size_t i = 0; i < k; i++) {
            const double c = p[i] < -1 ? -1 : p[i] > 1 ? 1 : p[i], th = acos(c);
            if (th < tol)
                continue;
            const double f = al[i] * th / sin(th);
            tan[i] += f;
            for (size_t j = 0; j < k; j++)
                tan[j] -= f * c * gam[j];
        }
        const double tn = ka_len(gu, k, tan);
        if (tn < tol)
            break;
        for (size_t i = 0; i < k; i++)
            gam[i] = cos(tn) * gam[i] + sin(tn) * tan[i] / tn;
        len = ka_len(gu, k, gam);
        if (len > tol)
            for (size_t i = 0; i < k; i++)
                gam[i] /= len;
    }
}

static int karcher_prepass(const mm_out_tensor *t, void *stats)
{
    ka_stats *st = stats;
    memset(st, 0, sizeof *st);
    const size_t k = t->ninputs;
    size_t all[MM_MAX_INPUTS], valid[MM_MAX_INPUTS], nvalid = 0;
    for (size_t i = 0; i < k; i++)
        all[i] = i;
    gram *g = malloc(sizeof *g);
    double *gu = malloc(k * k * sizeof *gu);
    if (!g || !gu) {
        free(g);
        free(gu);
        return -ENOMEM;
    }
    gram_init(g, t, all, k, -1, 0);
    int rc = gram_run(g);
    const double tol = t->gvals[KA_TOL], alpha = 1.0 / (double)k;
    double n[MM_MAX_INPUTS], scale = 0, alpha_sum = 0;
    for (size_t i = 0; i < k && rc == 0; i++) {
        n[i] = (float)sqrt(g->g[tri(i, i)]); /* torch.linalg.norm(x.float()): a float32 value */
        scale += alpha * n[i];
        /* (a zero norm is never valid: its unit vector is 0 and cannot be normalised) */
        if (n[i] > tol && n[i] > 0) {
            valid[nvalid++] = i;
            alpha_sum += alpha;
        }
    }
    if (rc == 0 && nvalid > 0) {
        double al[MM_MAX_INPUTS], gam[MM_MAX_INPUTS];
        for (size_t a = 0; a < nvalid; a++) {
            al[a] = alpha / alpha_sum;
            for (size_t b = 0; b < nvalid; b++)
                gu[a * nvalid + b] = g->g[tri(valid[a], valid[b])] / (n[valid[a]] * n[valid[b]]);
        }
        const double mi = t->gvals[KA_MAX_ITER];
        /* Any number a config gives: one beyond long does not convert (undefined behaviour; fuzz_config). */
        ka_iterate(gu, nvalid, al, tol, mi >= (double)LONG_MAX ? LONG_MAX : mi > 0 ? (long)mi : 0, gam);
        for (size_t a = 0; a < nvalid; a++)
            st->c[valid[a]] = scale * gam[a] / n[valid[a]];
    }
    free(g);
    free(gu);
    return rc;
}

/* mergekit rounds every iterate to the dtype, which a coefficient-space iteration cannot replay (B2.6):
 * the combination is computed in double and rounded once, the closest value to the exact mean. */
static void karcher_kernel(const mm_kernel_args *a)
{
    const mm_out_tensor *t = a->t;
    const size_t n = a->n;
    if (t->ninputs == 1) {
        memcpy(a->out, a->in[0], n * sizeof *a->out);
        return;
    }
    const ka_stats *st = a->stats;
    for (size_t k = 0; k < n; k++) {
        double s = 0;
        for (size_t i = 0; i < t->ninputs; i++)
            s += st->c[i] * (double)a->in[i][k];
        a->out[k] = (float)s;
    }
    mm_vround(t->comp, a->out, n);
}

/* ==== model_stock (B2.7) ==== */
enum { MST_FILTER_WISE };
static const mm_param_def model_stock_g[] = {{"filter_wise", MM_PT_BOOL, 0, 0}};

/* t and 1 - t, values of the dtype. */
typedef struct mst_stats {
    float t, omt;
} mst_stats;

static int model_stock_prepare(mm_out_tensor *t, mm_err *err)
{
    if (t->ninputs < 3)
        return mm_err_set(err, -EINVAL,
                          "tensor '%s': merge_method model_stock needs base_model and at least two other models; "
                          "this slice has %zu besides the base",
                          t->name, t->ninputs - 1);
    return 0;
}

static size_t model_stock_stats_size(const mm_out_tensor *t)
{
    return t->gvals[MST_FILTER_WISE] != 0 ? 0 : sizeof(mst_stats);
}

/* From the Gram matrix of the N offsets (off-diagonal terms over rounded products): the pairwise
 * cosines <o_i,o_j> / max(‖o_i‖‖o_j‖, 1e-6) clamped to [-1, 1], their mean c (float32 sum, divided,
 * rounded), t = N c / (1 + (N - 1) c) — every step a tensor of the dtype. */
static mst_stats mst_from_gram(mm_dtype dt, const gram *g)
{
    const size_t nv = g->nv;
    const float lo = num_to(dt, 1e-6);
    float csum = 0;
    for (size_t j = 0; j < nv; j++)
        for (size_t i = 0; i < j; i++) {
            float np = mm_round_to(dt, norm_to(dt, g->g[tri(i, i)]) * norm_to(dt, g->g[tri(j, j)]));
            np = np < lo ? lo : np;
            float c = mm_round_to(dt, mm_round_to(dt, (float)g->g[tri(i, j)]) / np);
            csum += c < -1.0f ? -1.0f : c > 1.0f ? 1.0f : c;
        }
    const float c = mm_round_to(dt, csum / (float)(nv * (nv - 1) / 2));
    const float num = mm_round_to(dt, (float)nv * c);
    const float den = mm_round_to(dt, 1.0f + mm_round_to(dt, (float)(nv - 1) * c));
    mst_stats s;
    s.t = mm_round_to(dt, num / den);
    s.omt = mm_round_to(dt, 1.0f - s.t);
    return s;
}

static int model_stock_prepass(const mm_out_tensor *t, void *stats)
{
    size_t idx[MM_MAX_INPUTS];
    const size_t nv = others(t, idx);
    gram *g = malloc(sizeof *g);
    if (!g)
        return -ENOMEM;
    gram_init(g, t, idx, nv, t->base, 1);
    int rc = gram_run(g);
    if (rc == 0)
        *(mst_stats *)stats = mst_from_gram(t->comp, g);
    free(g);
    return rc;
}

/* out = t · (Σ w_i) / N + (1 - t) · w_0 over [off, off + n); Python's sum() rounds after each add. */
static void mst_combine(const mm_kernel_args *a, const mst_stats *s, size_t off, size_t n)
{
    const mm_out_tensor *t = a->t;
    const mm_dtype dt = t->comp;
    const float *b = a->in[t->base] + off;
    float *acc = a->scratch + off, *out = a->out + off;
    size_t nv = 0;
    memset(acc, 0, n * sizeof *acc);
    for (size_t i = 0; i < t->ninputs; i++)
        if ((int)i != t->base) {
            v_add(dt, acc, a->in[i] + off, acc, n);
            nv++;
        }
    v_div(dt, acc, (float)nv, acc, n);
    v_mul(dt, acc, s->t, acc, n);
    v_mul(dt, b, s->omt, out, n);
    v_add(dt, acc, out, out, n);
}

static void model_stock_kernel(const mm_kernel_args *a)
{
    const mm_out_tensor *t = a->t;
    if (a->stats) {
        mst_combine(a, a->stats, 0, a->n);
        return;
    }
    /* filter_wise: a t per row (a 1-D tensor is one row), from that row's offsets. */
    size_t idx[MM_MAX_INPUTS];
    const size_t nv = others(t, idx), len = (size_t)a->row_len;
    gram g;
    for (size_t r = 0; r + len <= a->n; r += len) {
        gram_init(&g, t, idx, nv, t->base, 1);
        gram_add(&g, a, r, len, a->scratch + r, a->out + r); /* out is free until mst_combine */
        mst_stats s = mst_from_gram(t->comp, &g);
        mst_combine(a, &s, r, len);
    }
}

/* ==== descriptors ==== */

const mm_method mm_method_slerp = {
    .name = "slerp", .implemented = 1, .gparams = slerp_g, .ngparams = MM_COUNT(slerp_g), .needs_base = 1,
    .dtype_rule = MM_DTR_BASE, .crop = MM_CROP_COMMON, .align = MM_ALIGN_NONE, .prepare = slerp_prepare,
    .stats_size = slerp_stats_size, .prepass = slerp_prepass, .kernel = slerp_kernel};

const mm_method mm_method_nuslerp = {
    .name = "nuslerp", .implemented = 1, .gparams = nuslerp_g, .ngparams = MM_COUNT(nuslerp_g), .mparams = nuslerp_m,
    .nmparams = MM_COUNT(nuslerp_m), .dtype_rule = MM_DTR_PROMOTE, .crop = MM_CROP_COMMON, .align = MM_ALIGN_ROWS,
    .prepare = nuslerp_prepare, .stats_size = nuslerp_stats_size, .prepass = nuslerp_prepass,
    .kernel = nuslerp_kernel};

const mm_method mm_method_multislerp = {
    .name = "multislerp", .implemented = 1, .gparams = multislerp_g, .ngparams = MM_COUNT(multislerp_g),
    .mparams = multislerp_m, .nmparams = MM_COUNT(multislerp_m), .dtype_rule = MM_DTR_PROMOTE, .crop = MM_CROP_NONE,
    .align = MM_ALIGN_NONE, .prepare = multislerp_prepare, .stats_size = multislerp_stats_size,
    .prepass = multislerp_prepass, .kernel = multislerp_kernel};

const mm_method mm_method_karcher = {
    .name = "karcher", .implemented = 1, .gparams = karcher_g, .ngparams = MM_COUNT(karcher_g),
    .dtype_rule = MM_DTR_SOURCE, .crop = MM_CROP_COMMON, .align = MM_ALIGN_NONE, .stats_size = karcher_stats_size,
    .prepass = karcher_prepass, .kernel = karcher_kernel};

const mm_method mm_method_model_stock = {
    .name = "model_stock", .implemented = 1, .gparams = model_stock_g, .ngparams = MM_COUNT(model_stock_g),
    .needs_base = 1, .dtype_rule = MM_DTR_PROMOTE, .crop = MM_CROP_COMMON, .align = MM_ALIGN_ROWS,
    .prepare = model_stock_prepare, .stats_size = model_stock_stats_size, .prepass = model_stock_prepass,
    .kernel = model_stock_kernel};
