/* nearswap (B2.12), ram and ramplus_tl (B2.11), sce (B2.10), arcee_fusion (B2.13).
 *
 * Numerics (D3, D4): every elementwise op is computed in float32 and rounded to the computation dtype
 * in the order mergekit's torch code performs it; statistics (counts, variances, sums of squares,
 * softmax sums, KL sums) accumulate in double over those rounded values. Two results are float32 in
 * mergekit even with bf16/f16 inputs, because a float32 tensor enters the last ops (ramplus_tl's λ,
 * arcee_fusion's float mask): their kernels write the float32 values unrounded and the engine rounds
 * them once when storing, into the input dtype (D8) or `out_dtype`. */
#include <errno.h>
#include <stdint.h>

#include "method_internal.h"
#include "select.h"

/* ---- shared helpers ---- */

/* Number of models besides the base. */
static size_t n_others(const mm_out_tensor *t)
{
    return t->ninputs - (t->base >= 0 ? 1 : 0);
}

/* mergekit returns the base tensor unchanged when no other model has this tensor. Returns 1 if so. */
static int only_base(const mm_kernel_args *a)
{
    if (n_others(a->t) > 0)
        return 0;
    memcpy(a->out, a->in[a->t->base], a->n * sizeof(float));
    return 1;
}

/* d[0..m) = x_i - base over chunk elements [k0, k0 + m), rounded: the task vector `t - base_tensor`. */
static void task_range(const mm_kernel_args *a, size_t i, size_t k0, size_t m, float *d)
{
    const float *x = a->in[i] + k0, *b = a->in[a->t->base] + k0;
    for (size_t k = 0; k < m; k++)
        d[k] = x[k] - b[k];
    mm_vround(a->t->comp, d, m);
}

/* The same over the whole chunk. */
static void task_vector(const mm_kernel_args *a, size_t i, float *d)
{
    task_range(a, i, 0, a->n, d);
}

/* A Python number used by torch as a tensor operand of the computation dtype (clamp bounds,
 * comparisons, additions): rounded to that dtype (D3). */
static float dtype_number(const mm_out_tensor *t, double x)
{
    return mm_round_to(t->comp, (float)x);
}

/* torch.clamp(x, min=lo): NaN stays NaN. */
static float clamp_min(float x, float lo)
{
    return x < lo ? lo : x;
}

static int base_and_one_other(mm_out_tensor *t, mm_err *err)
{
    if (t->ninputs == 2)
        return 0;
    return mm_err_set(err, -EINVAL,
                      "tensor '%s': merge_method %s merges the base model with exactly one other model, but "
                      "this slice has %zu other model%s (list the base model and one other model)",
                      t->name, t->method->name, n_others(t), n_others(t) == 1 ? "" : "s");
}

/* Streams a tensor's inputs once, computing a per-element statistic for each chunk (into the first n
 * floats of the chunk's scratch; the fn may use the rest) and handing it to a sink. Shared by the
 * pre-passes of sce (variance) and arcee_fusion (importance). */
typedef void (*values_fn)(const mm_kernel_args *a, float *v);
typedef int (*sink_fn)(void *ctx, const mm_kernel_args *a, const float *v);
typedef struct values_stream {
    values_fn values;
    sink_fn sink;
    void *ctx;
} values_stream;

static int values_chunk(void *vctx, const mm_kernel_args *a)
{
    values_stream *s = vctx;
    s->values(a, a->scratch);
    return s->sink(s->ctx, a, a->scratch);
}

static int stream_values(const mm_out_tensor *t, values_fn values, sink_fn sink, void *ctx)
{
    values_stream s = {values, sink, ctx};
    return mm_engine_stream(t, values_chunk, &s);
}

/* Exact selection (D5, D7) of several order statistics of one per-element statistic: streams passes
 * until every selector has its answer, feeding each pass only the selectors that still need one. */
#define MAX_SEL 3
typedef struct select_ctx {
    mm_selector *const *sel;
    size_t nsel;
    int active[MAX_SEL];
} select_ctx;

static int select_sink(void *vctx, const mm_kernel_args *a, const float *v)
{
    select_ctx *c = vctx;
    for (size_t j = 0; j < c->nsel; j++)
        if (c->active[j])
            mm_selector_feed(c->sel[j], v, a->n);
    return 0;
}

static int run_selection(const mm_out_tensor *t, values_fn values, mm_selector *const *sel, size_t nsel)
{
    select_ctx c = {.sel = sel, .nsel = nsel};
    for (;;) {
        int any = 0;
        for (size_t j = 0; j < nsel; j++)
            any |= c.active[j] = mm_selector_pass_needed(sel[j]);
        if (!any)
            return 0;
        int rc = stream_values(t, values, select_sink, &c);
        if (rc != 0)
            return rc;
        for (size_t j = 0; j < nsel; j++)
            if (c.active[j])
                mm_selector_end_pass(sel[j]);
    }
}

/* ---- nearswap (B2.12) ---- */
enum { NS_T };
static const mm_param_def nearswap_g[] = {{"t", MM_PT_NUM, 1, NAN}};

/* absdiff = |a - b|; weight = (t / absdiff.clamp(min=1e-6)).clamp(0, 1); out = weight*b + (1-weight)*a,
 * with a the base. `t / tensor` is torch's Tensor.__rtruediv__, i.e. reciprocal(tensor) * t: two
 * rounded ops. */
static void nearswap_kernel(const mm_kernel_args *a)
{
    const mm_out_tensor *t = a->t;
    const mm_dtype dt = t->comp;
    const size_t n = a->n;
    const float *base = a->in[t->base], *x = a->in[t->base == 0 ? 1 : 0];
    const float tf = (float)t->gvals[NS_T], lo = dtype_number(t, 1e-6);
    float *w = a->out, *tmp = a->scratch;
    for (size_t k = 0; k < n; k++)
        w[k] = base[k] - x[k];
    mm_vround(dt, w, n);
    for (size_t k = 0; k < n; k++)
        w[k] = 1.0f / clamp_min(fabsf(w[k]), lo);
    mm_vround(dt, w, n);
    for (size_t k = 0; k < n; k++) {
        float v = w[k] * tf;       /* tensor * Python number: the number as float32 (D3) */
        v = mm_round_to(dt, v);
        w[k] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
    for (size_t k = 0; k < n; k++)
        tmp[k] = 1.0f - w[k];
    mm_vround(dt, tmp, n);
    for (size_t k = 0; k < n; k++)
        tmp[k] = tmp[k] * base[k];
    mm_vround(dt, tmp, n);
    for (size_t k = 0; k < n; k++)
        w[k] = w[k] * x[k];
    mm_vround(dt, w, n);
    for (size_t k = 0; k < n; k++)
        w[k] = w[k] + tmp[k];
    mm_vround(dt, w, n);
}

const mm_method mm_method_nearswap = {
    .name = "nearswap", .implemented = 1, .gparams = nearswap_g, .ngparams = MM_COUNT(nearswap_g), .needs_base = 1,
    .dtype_rule = MM_DTR_PROMOTE, .crop = MM_CROP_NONE, .prepare = base_and_one_other, .kernel = nearswap_kernel};

/* ---- ram, ramplus_tl (B2.11) ---- */
enum { RAM_EPSILON };
static const mm_param_def ram_g[] = {{"epsilon", MM_PT_NUM, 0, 1e-5}};
enum { RP_R, RP_ALPHA, RP_EPSILON };
static const mm_param_def ramplus_g[] = {
    {"r", MM_PT_NUM, 0, 0.1}, {"alpha", MM_PT_NUM, 0, 0.2}, {"epsilon", MM_PT_NUM, 0, 1e-5}};

/* The activity threshold: `tv.abs() > epsilon` compares in the tensor dtype, so epsilon is rounded. */
static float ram_eps(const mm_out_tensor *t)
{
    return dtype_number(t, t->gvals[t->method == &mm_method_ram ? RAM_EPSILON : RP_EPSILON]);
}

/* c[k] = number of models whose task vector is active (|τ_i| > ε) at element k. */
static void ram_counts(const mm_kernel_args *a, float *c, float *d)
{
    const float eps = ram_eps(a->t);
    memset(c, 0, a->n * sizeof *c);
    for (size_t i = 0; i < a->t->ninputs; i++) {
        if ((int)i == a->t->base)
            continue;
        task_vector(a, i, d);
        for (size_t k = 0; k < a->n; k++)
            c[k] += fabsf(d[k]) > eps;
    }
}

/* ramplus_tl's statistics: per input (indexed like t->inputs; the base's entries stay 0), the counts
 * S_i (active where ≥2 models are) and U_i (active alone), and λ_i = 1 + r·clamp(S_i/max(U_i, ε), 0, α). */
typedef struct ramplus_stats {
    uint64_t shared[MM_MAX_INPUTS];
    uint64_t unique[MM_MAX_INPUTS];
    float lambda[MM_MAX_INPUTS];
} ramplus_stats;

/* The shared body: out = base + Σ_i (u_i·λ_i + o_i), where z_i = τ_i·[active], u_i = z_i·[c = 1] and
 * o_i = z_i·[c > 1] / max(c, 1) (rounded). ram (lambda NULL) rounds every step to the dtype. ramplus_tl
 * multiplies u_i by a float32 λ_i, which makes the rest float32 in torch: u_i·λ_i, the sums and
 * the final base addition are float32 ops, only o_i is rounded to the dtype. */
static void ram_body(const mm_kernel_args *a, const float *lambda)
{
    const mm_out_tensor *t = a->t;
    const mm_dtype dt = t->comp, acc_dt = lambda ? MM_DT_F32 : dt;
    const size_t n = a->n;
    const float eps = ram_eps(t), *b = a->in[t->base];
    float *acc = a->out, *c = a->scratch, *d = a->scratch + n, *o = a->scratch + 2 * n;
    ram_counts(a, c, d);
    memset(acc, 0, n * sizeof *acc);
    for (size_t i = 0; i < t->ninputs; i++) {
        if ((int)i == t->base)
            continue;
        task_vector(a, i, d);
        for (size_t k = 0; k < n; k++) {
            float z = d[k] * (float)(fabsf(d[k]) > eps); /* tv * nonzero_mask: exact (τ or ±0) */
            o[k] = z * (float)(c[k] > 1.0f) / (c[k] < 1.0f ? 1.0f : c[k]);
            d[k] = z * (float)(c[k] == 1.0f);
        }
        mm_vround(dt, o, n);
        if (lambda) {
            for (size_t k = 0; k < n; k++)
                d[k] = d[k] * lambda[i];
        }
        for (size_t k = 0; k < n; k++)
            d[k] = d[k] + o[k];
        mm_vround(acc_dt, d, n);
        for (size_t k = 0; k < n; k++)
            acc[k] += d[k]; /* .sum(dim=0): float32 accumulation in model order */
    }
    mm_vround(acc_dt, acc, n);
    for (size_t k = 0; k < n; k++)
        acc[k] = b[k] + acc[k];
    mm_vround(acc_dt, acc, n);
}

static void ram_kernel(const mm_kernel_args *a)
{
    if (!only_base(a))
        ram_body(a, NULL);
}

static void ramplus_kernel(const mm_kernel_args *a)
{
    if (!only_base(a))
        ram_body(a, ((const ramplus_stats *)a->stats)->lambda);
}

static size_t ramplus_stats_size(const mm_out_tensor *t)
{
    (void)t;
    return sizeof(ramplus_stats);
}

static int ramplus_count_chunk(void *vctx, const mm_kernel_args *a)
{
    ramplus_stats *s = vctx;
    const size_t n = a->n;
    const float eps = ram_eps(a->t);
    float *c = a->scratch, *d = a->scratch + n;
    ram_counts(a, c, d);
    for (size_t i = 0; i < a->t->ninputs; i++) {
        if ((int)i == a->t->base)
            continue;
        uint64_t sh = 0, un = 0;
        task_vector(a, i, d);
        for (size_t k = 0; k < n; k++) {
            int active = fabsf(d[k]) > eps;
            sh += (uint64_t)(active && c[k] > 1.0f);
            un += (uint64_t)(active && c[k] == 1.0f);
        }
        s->shared[i] += sh;
        s->unique[i] += un;
    }
    return 0;
}

/* λ as torch computes it: the counts are int64 tensors, `unique.clamp(min=ε)` and the division
 * produce float32 (default dtype), and r, α, 1 enter as float32 numbers. */
static float ramplus_lambda(const mm_out_tensor *t, uint64_t shared, uint64_t unique)
{
    const float eps = (float)t->gvals[RP_EPSILON], alpha = (float)t->gvals[RP_ALPHA], r = (float)t->gvals[RP_R];
    float rho = (float)shared / clamp_min((float)unique, eps);
    rho = clamp_min(rho, 0.0f);
    rho = rho > alpha ? alpha : rho;
    float scaled = r * rho;
    return 1.0f + scaled;
}

static int ramplus_prepass(const mm_out_tensor *t, void *stats)
{
    ramplus_stats *s = stats;
    memset(s, 0, sizeof *s);
    int rc = mm_engine_stream(t, ramplus_count_chunk, s);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < t->ninputs; i++)
        if ((int)i != t->base)
            s->lambda[i] = ramplus_lambda(t, s->shared[i], s->unique[i]);
    return 0;
}

const mm_method mm_method_ram = {
    .name = "ram", .implemented = 1, .gparams = ram_g, .ngparams = MM_COUNT(ram_g), .needs_base = 1,
    .dtype_rule = MM_DTR_PROMOTE, .crop = MM_CROP_NONE, .kernel = ram_kernel};

const mm_method mm_method_ramplus_tl = {
    .name = "ramplus_tl", .implemented = 1, .gparams = ramplus_g, .ngparams = MM_COUNT(ramplus_g), .needs_base = 1,
    .dtype_rule = MM_DTR_PROMOTE, .crop = MM_CROP_NONE, .stats_size = ramplus_stats_size,
    .prepass = ramplus_prepass, .kernel = ramplus_kernel};

/* ---- sce (B2.10) ---- */
enum { SCE_INT8_MASK, SCE_SELECT_TOPK };
static const mm_param_def sce_g[] = {{"int8_mask", MM_PT_BOOL, 0, 0}, {"select_topk", MM_PT_NUM, 0, 1.0}};

/* How the variance mask applies: not at all (select_topk >= 1: mergekit skips the multiplication),
 * everything masked (select_topk <= 0 or k = 0), or the top-k variances kept. */
enum { SCE_ALL, SCE_NONE, SCE_TOP };

/* sce's statistics. Under SCE_TOP, `keep` says which variances are among the k largest: above the
 * threshold, or equal to it and before a flat index cut (D5: lower indexes first), so kernels of any
 * range need no alignment and no per-block tie table. omega[i] is input i's matrix-level weight
 * (0 for the base). */
typedef struct sce_stats {
    uint32_t mode;
    uint32_t unused;     /* zero: the blob is hashed and cached as bytes */
    mm_select_rule keep;
    uint64_t k;
    float omega[MM_MAX_INPUTS];
} sce_stats;

/* v[k] = torch.var(τ[:, k], unbiased=False) over the other models, rounded to the dtype (torch returns
 * it in the tensor dtype). Mean and squared deviations in double over the rounded τ (D4). Works on
 * blocks of VAR_BLOCK elements with the model loop outside, so the inner loops vectorise. */
#define VAR_BLOCK 256
static void sce_variance(const mm_kernel_args *a, float *v)
{
    const mm_out_tensor *t = a->t;
    const double nm = (double)n_others(t);
    double mean[VAR_BLOCK], sq[VAR_BLOCK];
    float d[VAR_BLOCK];
    for (size_t k0 = 0; k0 < a->n; k0 += VAR_BLOCK) {
        const size_t m = a->n - k0 < VAR_BLOCK ? a->n - k0 : VAR_BLOCK;
        memset(mean, 0, sizeof mean);
        memset(sq, 0, sizeof sq);
        for (size_t i = 0; i < t->ninputs; i++) {
            if ((int)i == t->base)
                continue;
            task_range(a, i, k0, m, d);
            for (size_t k = 0; k < m; k++)
                mean[k] += d[k];
        }
        for (size_t k = 0; k < m; k++)
            mean[k] = mean[k] / nm;
        for (size_t i = 0; i < t->ninputs; i++) {
            if ((int)i == t->base)
                continue;
            task_range(a, i, k0, m, d);
            for (size_t k = 0; k < m; k++) {
                const double dev = d[k] - mean[k];
                sq[k] += dev * dev;
            }
        }
        for (size_t k = 0; k < m; k++)
            v[k0 + k] = (float)(sq[k] / nm);
        mm_vround(t->comp, v + k0, m);
    }
}

static void no_values(const mm_kernel_args *a, float *v)
{
    (void)a;
    (void)v;
}

/* m[k] = 1 where element e0 + k is kept by the variance selection, 0 elsewhere; v holds the variances
 * (SCE_TOP only) and may be m itself. */
static void sce_keep(const sce_stats *s, const mm_kernel_args *a, const float *v, float *m)
{
    if (s->mode != SCE_TOP) {
        for (size_t k = 0; k < a->n; k++)
            m[k] = s->mode == SCE_ALL ? 1.0f : 0.0f;
        return;
    }
    for (size_t k = 0; k < a->n; k++)
        m[k] = (float)mm_select_in(&s->keep, mm_select_key_inline(v[k]), a->e0 + k);
}

/* d = τ_i, times the mask unless mergekit skips the masking (select_topk >= 1). */
static void sce_masked_tv(const sce_stats *s, const mm_kernel_args *a, size_t i, const float *m, float *d)
{
    task_vector(a, i, d);
    if (s->mode != SCE_ALL)
        for (size_t k = 0; k < a->n; k++)
            d[k] = d[k] * m[k];
}

static size_t sce_stats_size(const mm_out_tensor *t)
{
    (void)t;
    return sizeof(sce_stats);
}

static int count_nonzero_sink(void *vctx, const mm_kernel_args *a, const float *v)
{
    uint64_t *nnz = vctx, c = 0;
    for (size_t k = 0; k < a->n; k++)
        c += v[k] != 0.0f;
    *nnz += c;
    return 0;
}

/* The last pass: which threshold-equal elements are kept (the index cut of s->keep), and
 * Σ_k round(τ_ik·m_k)² per model in double. */
typedef struct sce_omega_ctx {
    sce_stats *s;
    mm_rule_builder rule;
    double sq[MM_MAX_INPUTS];
} sce_omega_ctx;

static int sce_omega_sink(void *vctx, const mm_kernel_args *a, const float *v)
{
    sce_omega_ctx *c = vctx;
    const size_t n = a->n;
    float *m = a->scratch + n, *d = a->scratch + 2 * n;
    if (c->s->mode == SCE_TOP) {
        for (size_t k = 0; k < n; k++)
            m[k] = (float)mm_rule_feed(&c->rule, mm_select_key_inline(v[k]), a->e0 + k);
        c->s->keep = c->rule.rule;
    } else {
        sce_keep(c->s, a, v, m);
    }
    for (size_t i = 0; i < a->t->ninputs; i++) {
        if ((int)i == a->t->base)
            continue;
        sce_masked_tv(c->s, a, i, m, d);
        for (size_t k = 0; k < n; k++)
            d[k] = d[k] * d[k]; /* tvs ** 2 */
        mm_vround(a->t->comp, d, n);
        double sq = 0.0;
        for (size_t k = 0; k < n; k++)
            sq += d[k];
        c->sq[i] += sq;
    }
    return 0;
}

/* ω_i = mean(τ_i²) (a tensor of the dtype), normalised by their float32 sum (.item()); below 1e-6 the
 * weights are ones_like(w) / K. */
static void sce_weights(const mm_out_tensor *t, const double *sq, float *omega)
{
    const mm_dtype dt = t->comp;
    float w[MM_MAX_INPUTS], wsum = 0.0f;
    for (size_t i = 0; i < t->ninputs; i++) {
        if ((int)i == t->base)
            continue;
        w[i] = mm_round_to(dt, (float)(sq[i] / (double)t->numel));
        wsum += w[i];
    }
    wsum = mm_round_to(dt, wsum);
    for (size_t i = 0; i < t->ninputs; i++) {
        if ((int)i == t->base)
            continue;
        const float q = fabs((double)wsum) < 1e-6 ? 1.0f / (float)n_others(t) : w[i] / wsum;
        omega[i] = mm_round_to(dt, q);
    }
}

/* The variance selection: k = int(count_nonzero(v) * select_topk), computed as torch does (an int64
 * 0-dim tensor times a Python float gives float32), then the k largest variances. */
static int sce_select(const mm_out_tensor *t, sce_stats *s, mm_rule_builder *rule)
{
    const double topk = t->gvals[SCE_SELECT_TOPK];
    if (topk >= 1.0) {
        s->mode = SCE_ALL;
        return 0;
    }
    s->mode = SCE_NONE;
    if (!(topk > 0.0))
        return 0;
    uint64_t nnz = 0;
    int rc = stream_values(t, sce_variance, count_nonzero_sink, &nnz);
    if (rc != 0)
        return rc;
    const float kf = (float)nnz * (float)topk;
    uint64_t k = (uint64_t)kf;
    if (k > t->numel)
        k = t->numel;
    s->k = k;
    if (k == 0)
        return 0;
    mm_selector *sel = mm_selector_new(k, 1);
    if (!sel)
        return -ENOMEM;
    rc = run_selection(t, sce_variance, &sel, 1);
    if (rc == 0) {
        s->mode = SCE_TOP;
        mm_rule_begin(rule, mm_selector_threshold_key(sel), 1, mm_selector_ties_kept(sel),
                      mm_selector_ties_total(sel));
        s->keep = rule->rule;
    }
    mm_selector_free(sel);
    return rc;
}

static int sce_prepass(const mm_out_tensor *t, void *stats)
{
    sce_stats *s = stats;
    memset(s, 0, sizeof *s);
    if (n_others(t) == 0 || t->numel == 0)
        return 0;
    sce_omega_ctx c = {.s = s};
    int rc = sce_select(t, s, &c.rule);
    if (rc == 0)
        rc = stream_values(t, s->mode == SCE_TOP ? sce_variance : no_values, sce_omega_sink, &c);
    if (rc == 0)
        sce_weights(t, c.sq, s->omega);
    return rc;
}

/* out = base + (Σ_i round(τ_i·ω_i e_i)) / max(Σ_i ω_i e_i, 1e-6), with e_i = [sign τ_i = s] and
 * s = +1 where round(Σ_i τ_i) >= 0, else -1 (τ masked first). */
static void sce_kernel(const mm_kernel_args *a)
{
    if (only_base(a))
        return;
    const mm_out_tensor *t = a->t;
    const sce_stats *s = a->stats;
    const mm_dtype dt = t->comp;
    const size_t n = a->n;
    float *num = a->out, *m = a->scratch, *sum = a->scratch + n, *d = a->scratch + 2 * n, *den = a->scratch + 3 * n;
    if (s->mode == SCE_TOP)
        sce_variance(a, m);
    sce_keep(s, a, m, m);
    memset(sum, 0, n * sizeof *sum);
    for (size_t i = 0; i < t->ninputs; i++) {
        if ((int)i == t->base)
            continue;
        sce_masked_tv(s, a, i, m, d);
        for (size_t k = 0; k < n; k++)
            sum[k] += d[k];
    }
    mm_vround(dt, sum, n);
    memset(num, 0, n * sizeof *num);
    memset(den, 0, n * sizeof *den);
    for (size_t i = 0; i < t->ninputs; i++) {
        if ((int)i == t->base)
            continue;
        sce_masked_tv(s, a, i, m, d);
        const float w = s->omega[i];
        for (size_t k = 0; k < n; k++) {
            /* sign(τ) == majority sign, where the majority is + when round(Σ τ) >= 0 (a zero τ never agrees) */
            const int agree = sum[k] >= 0.0f ? d[k] > 0.0f : d[k] < 0.0f;
            const float ew = w * (float)agree;
            den[k] += ew;
            d[k] = d[k] * ew;
        }
        mm_vround(dt, d, n);
        for (size_t k = 0; k < n; k++)
            num[k] += d[k];
    }
    mm_vround(dt, num, n);
    mm_vround(dt, den, n);
    const float lo = dtype_number(t, 1e-6), *b = a->in[t->base];
    for (size_t k = 0; k < n; k++)
        num[k] = num[k] / clamp_min(den[k], lo);
    mm_vround(dt, num, n);
    for (size_t k = 0; k < n; k++)
        num[k] = b[k] + num[k];
    mm_vround(dt, num, n);
}

const mm_method mm_method_sce = {
    .name = "sce", .implemented = 1, .gparams = sce_g, .ngparams = MM_COUNT(sce_g), .needs_base = 1,
    .dtype_rule = MM_DTR_PROMOTE, .crop = MM_CROP_NONE, .stats_size = sce_stats_size, .prepass = sce_prepass,
    .kernel = sce_kernel};

/* ---- arcee_fusion (B2.13) ---- */

/* The quartiles of the importance over the whole tensor (D7: exact, Q(q) = the (floor(q·(N−1))+1)-th
 * smallest) and the threshold median + 1.5·(Q3 − Q1), all values of the dtype. */
typedef struct arcee_stats {
    float q25, q50, q75, thr;
} arcee_stats;

/* p = F.softmax(x) + 1e-8 over one row, in the steps of torch's CPU softmax kernel: e = exp(x − max)
 * as float32 values, their sum (in double, D4, then a float32), p = e · (1/sum) with a float32
 * reciprocal, rounded to the dtype; then + 1e-8 (rounded to the dtype first) and rounded again. */
static void softmax_row(mm_dtype dt, const float *x, size_t len, float eps, float *p)
{
    float mx = -INFINITY;
    for (size_t j = 0; j < len; j++)
        mx = x[j] > mx ? x[j] : mx;
    double sum = 0.0;
    for (size_t j = 0; j < len; j++) {
        p[j] = (float)exp((double)(x[j] - mx));
        sum += p[j];
    }
    const float recip = 1.0f / (float)sum;
    for (size_t j = 0; j < len; j++)
        p[j] = p[j] * recip;
    mm_vround(dt, p, len);
    for (size_t j = 0; j < len; j++)
        p[j] = p[j] + eps;
    mm_vround(dt, p, len);
}

/* imp[k] = |M − A| · KL_row for the whole rows of the chunk: KL_row = Σ p·log(p/q) with every
 * elementwise op rounded to the dtype and the sum in double, rounded to the dtype (D4). Uses the
 * scratch beyond its first n floats. */
static void arcee_importance(const mm_kernel_args *a, float *imp)
{
    const mm_out_tensor *t = a->t;
    const mm_dtype dt = t->comp;
    const size_t n = a->n, len = (size_t)a->row_len;
    const float *ma = a->in[t->base == 0 ? 1 : 0], *ba = a->in[t->base];
    float *p = a->scratch + n, *q = a->scratch + 2 * n;
    const float eps = dtype_number(t, 1e-8);
    for (size_t k = 0; k < n; k++)
        imp[k] = ma[k] - ba[k];
    mm_vround(dt, imp, n);
    for (size_t r0 = 0; r0 < n; r0 += len) {
        float *pr = p + r0, *qr = q + r0, *ir = imp + r0;
        softmax_row(dt, ma + r0, len, eps, pr);
        softmax_row(dt, ba + r0, len, eps, qr);
        for (size_t j = 0; j < len; j++)
            qr[j] = pr[j] / qr[j];
        mm_vround(dt, qr, len);
        for (size_t j = 0; j < len; j++)
            qr[j] = (float)log((double)qr[j]);
        mm_vround(dt, qr, len);
        for (size_t j = 0; j < len; j++)
            qr[j] = pr[j] * qr[j];
        mm_vround(dt, qr, len);
        double kl = 0.0;
        for (size_t j = 0; j < len; j++)
            kl += qr[j];
        const float klr = mm_round_to(dt, (float)kl);
        for (size_t j = 0; j < len; j++)
            ir[j] = fabsf(ir[j]) * klr;
        mm_vround(dt, ir, len);
    }
}

static size_t arcee_stats_size(const mm_out_tensor *t)
{
    (void)t;
    return sizeof(arcee_stats);
}

static int arcee_prepass(const mm_out_tensor *t, void *stats)
{
    arcee_stats *s = stats;
    memset(s, 0, sizeof *s);
    if (t->numel == 0)
        return 0;
    const uint64_t last = t->numel - 1;
    /* floor(q·(N−1)) + 1 for q = 1/4, 1/2, 3/4, in exact integer arithmetic. */
    const uint64_t rank[MAX_SEL] = {last / 4 + 1, last / 2 + 1, 3 * last / 4 + 1};
    mm_selector *sel[MAX_SEL] = {NULL};
    int rc = 0;
    for (size_t j = 0; j < MAX_SEL && rc == 0; j++)
        if (!(sel[j] = mm_selector_new(rank[j], 0)))
            rc = -ENOMEM;
    if (rc == 0)
        rc = run_selection(t, arcee_importance, sel, MAX_SEL);
    if (rc == 0) {
        const mm_dtype dt = t->comp;
        s->q25 = mm_selector_threshold(sel[0]);
        s->q50 = mm_selector_threshold(sel[1]);
        s->q75 = mm_selector_threshold(sel[2]);
        const float iqr = mm_round_to(dt, s->q75 - s->q25);
        const float spread = mm_round_to(dt, 1.5f * iqr);
        s->thr = mm_round_to(dt, s->q50 + spread);
    }
    for (size_t j = 0; j < MAX_SEL; j++)
        mm_selector_free(sel[j]);
    return rc;
}

/* out = A + (M − A)·[I >= thr]: the mask is a float32 tensor, so the product and the sum are float32
 * values, written unrounded (the engine rounds once into the stored dtype). */
static void arcee_kernel(const mm_kernel_args *a)
{
    const mm_out_tensor *t = a->t;
    const arcee_stats *s = a->stats;
    const float *ma = a->in[t->base == 0 ? 1 : 0], *ba = a->in[t->base];
    float *imp = a->scratch;
    arcee_importance(a, imp);
    for (size_t k = 0; k < a->n; k++) {
        const float delta = mm_round_to(t->comp, ma[k] - ba[k]);
        a->out[k] = ba[k] + delta * (float)(imp[k] >= s->thr);
    }
}

const mm_method mm_method_arcee_fusion = {
    .name = "arcee_fusion", .implemented = 1, .needs_base = 1, .dtype_rule = MM_DTR_PROMOTE,
    .crop = MM_CROP_COMMON, .align = MM_ALIGN_ROWS, .prepare = base_and_one_other,
    .stats_size = arcee_stats_size, .prepass = arcee_prepass, .kernel = arcee_kernel};
