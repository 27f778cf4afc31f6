/* The sparsifiers of the task-arithmetic family (B2.9); see sparsify.h for the rules and
 * method_gta.c for how a kernel combines the results. */
#include "sparsify.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "numeric.h"
#include "philox.h"

/* ---- parameters and actions ---- */

static double density_of(const mm_out_tensor *t, const mm_sparse_cfg *c, size_t i)
{
    return t->inputs[i].mvals[c->density];
}

static double extra_of(const mm_out_tensor *t, const mm_sparse_cfg *c, size_t i)
{
    return t->inputs[i].mvals[c->extra];
}

static int sparsified(const mm_out_tensor *t, size_t i)
{
    return (int)i != t->base;
}

/* The dtype mergekit's sparsifier computes in: the tensor's own for magnitude selection; for the
 * Bernoulli ones bf16 stays bf16 on CPU, while f16 (no CPU bernoulli) and f32 use float32. */
static mm_dtype work_dtype(const mm_out_tensor *t, const mm_sparse_cfg *c)
{
    if ((c->kind == MM_SPARSE_RANDOM || c->kind == MM_SPARSE_DELLA) && t->comp != MM_DT_BF16)
        return MM_DT_F32;
    return t->comp;
}

/* breadcrumbs' band in ascending rank order: keep [n_bot, N - n_top) (B2.9, D9). */
typedef struct band {
    uint64_t target, n_top, n_bot;
} band;

static band outlier_band(uint64_t n, double rho, double gamma)
{
    band b = {.target = (uint64_t)(rho * (double)n), .n_top = (uint64_t)(gamma * (double)n)};
    if (b.target + b.n_top > n)
        b.n_top = n - b.target; /* n_bot would be negative: give up outliers to reach the target */
    b.n_bot = n - b.target - b.n_top;
    return b;
}

mm_sparse_action mm_sparse_action_of(const mm_out_tensor *t, const mm_sparse_cfg *c, size_t i)
{
    if (c->kind == MM_SPARSE_NONE || !sparsified(t, i))
        return MM_SP_KEEP;
    const double rho = density_of(t, c, i);
    if (rho >= 1)
        return MM_SP_KEEP;
    switch (c->kind) {
    case MM_SPARSE_OUTLIERS: return outlier_band(t->numel, rho, extra_of(t, c, i)).target ? MM_SP_MASK : MM_SP_ZERO;
    case MM_SPARSE_RANDOM:
    case MM_SPARSE_DELLA: return rho <= 0 ? MM_SP_ZERO : MM_SP_MASK;
    default: return MM_SP_MASK; /* magnitude: k = 0 is refused by mm_sparse_check */
    }
}

static int rescaling(const mm_out_tensor *t, const mm_sparse_cfg *c)
{
    return t->gvals[c->rescale] != 0;
}

/* ---- plan-time checks ---- */

static const char *model_file(const mm_out_tensor *t, size_t i)
{
    return t->inputs[i].mt->shard->path;
}

static int check_model(const mm_out_tensor *t, const mm_sparse_cfg *c, size_t i, mm_err *err)
{
    const double rho = density_of(t, c, i);
    /* gamma or epsilon: only the methods that have one */
    const double x = c->kind == MM_SPARSE_OUTLIERS || c->kind == MM_SPARSE_DELLA ? extra_of(t, c, i) : 0;
    const char *name = t->method->name;
    if (isnan(rho))
        return mm_err_set(err, -EINVAL, "tensor '%s', model %s: density is not a number", t->name, model_file(t, i));
    if (rho >= 1)
        return 0;
    switch (c->kind) {
    case MM_SPARSE_MAGNITUDE:
        if ((uint64_t)fmax(rho * (double)t->numel, 0) == 0)
            return mm_err_set(err, -EINVAL,
                              "tensor '%s', model %s: %s keeps floor(density x elements) = floor(%g x %" PRIu64
                              ") = 0 values of the task vector; use a density that keeps at least one "
                              "(mergekit stops with an assertion here)",
                              t->name, model_file(t, i), name, rho, t->numel);
        return 0;
    case MM_SPARSE_OUTLIERS:
        if (rho <= 0)
            return mm_err_set(err, -EINVAL, "tensor '%s', model %s: %s needs a density > 0 (got %g)", t->name,
                              model_file(t, i), name, rho);
        if (!(x >= 0))
            return mm_err_set(err, -EINVAL, "tensor '%s', model %s: %s needs gamma >= 0 (got %g)", t->name,
                              model_file(t, i), name, x);
        return 0;
    case MM_SPARSE_RANDOM:
        if (rho < 0)
            return mm_err_set(err, -EINVAL, "tensor '%s', model %s: %s needs a density in [0, 1] (got %g)",
                              t->name, model_file(t, i), name, rho);
        return 0;
    case MM_SPARSE_DELLA:
        if (rho > 0 && !(rho - x > 0 && rho + x < 1))
            return mm_err_set(err, -EINVAL,
                              "tensor '%s', model %s: %s needs 0 < density - epsilon and density + epsilon < 1, "
                              "but density %g and epsilon %g give [%g, %g]",
                              t->name, model_file(t, i), name, rho, x, rho - x, rho + x);
        return 0;
    default: return 0;
    }
}

int mm_sparse_check(const mm_out_tensor *t, const mm_sparse_cfg *c, mm_err *err)
{
    if (c->kind == MM_SPARSE_NONE)
        return 0;
    if (c->kind == MM_SPARSE_DELLA && t->ninputs > MM_SPARSE_MAX_MODELS + 1) /* one mask bit per model */
        return mm_err_set(err, -EINVAL, "tensor '%s': %s merges at most %d models besides the base (got %zu)",
                          t->name, t->method->name, MM_SPARSE_MAX_MODELS, t->ninputs - 1);
    for (size_t i = 0; i < t->ninputs; i++) {
        int rc = sparsified(t, i) ? check_model(t, c, i, err) : 0;
        if (rc < 0)
            return rc;
    }
    return 0;
}

size_t mm_sparse_stats_size(const mm_out_tensor *t, const mm_sparse_cfg *c)
{
    /* Selections always need statistics; Bernoulli masks only for the L1 sums of rescale. */
    int needs = c->kind == MM_SPARSE_MAGNITUDE || c->kind == MM_SPARSE_OUTLIERS || rescaling(t, c);
    if (c->kind == MM_SPARSE_NONE || !needs)
        return 0;
    for (size_t i = 0; i < t->ninputs; i++)
        if (mm_sparse_action_of(t, c, i) == MM_SP_MASK)
            return t->ninputs * sizeof(mm_sparse_stats);
    return 0;
}

/* ---- elementwise pieces ---- */

void mm_task_vector(const mm_kernel_args *a, size_t input, float *d)
{
    const float *x = a->in[input], *b = a->in[a->t->base];
    for (size_t k = 0; k < a->n; k++)
        d[k] = x[k] - b[k];
    mm_vround(a->t->comp, d, a->n);
}

/* |tau| of element k as the sparsifier sees it (abs is exact in any dtype). */
static inline float mag(const mm_kernel_args *a, size_t input, size_t k)
{
    return fabsf(mm_round_to(a->t->comp, a->in[input][k] - a->in[a->t->base][k]));
}

/* |tau| of the whole chunk: whole-array ops, so they vectorise. */
static void magnitudes(const mm_kernel_args *a, size_t input, float *m)
{
    mm_task_vector(a, input, m);
    for (size_t k = 0; k < a->n; k++)
        m[k] = fabsf(m[k]);
}

/* keys[k] = key of |round(x - b)|, in one loop: a pass over each input computes nothing else. */
static inline void magnitude_keys_dt(mm_dtype dt, const float *x, const float *b, uint32_t *keys, size_t n)
{
    for (size_t k = 0; k < n; k++)
        keys[k] = mm_select_key_inline(fabsf(mm_round_to(dt, x[k] - b[k])));
}

/* The keys of elements [at, at + n) of the chunk. */
static void magnitude_keys(const mm_kernel_args *a, size_t input, size_t at, size_t n, uint32_t *keys)
{
    const float *x = a->in[input] + at, *b = a->in[a->t->base] + at;
    switch (a->t->comp) { /* constant dtypes: each loop is specialised (and the bf16 one vectorised) */
    case MM_DT_BF16: magnitude_keys_dt(MM_DT_BF16, x, b, keys, n); break;
    case MM_DT_F16: magnitude_keys_dt(MM_DT_F16, x, b, keys, n); break;
    default: magnitude_keys_dt(MM_DT_F32, x, b, keys, n); break;
    }
}

/* Sum of m[0..n) in double with independent partial sums (one dependency chain per lane would cap a
 * pass at one add per cycle latency); D4 fixes the precision, not the order. */
static double sum_double(const float *m, size_t n)
{
    double lane[8] = {0};
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++)
            lane[j] += m[k + j];
    double s = 0;
    for (; k < n; k++)
        s += m[k];
    for (int j = 0; j < 8; j++)
        s += lane[j];
    return s;
}

/* Where the keep decisions of one model go: phase-A bits, a task vector to mask, or the L1 sums of a
 * pre-pass. */
typedef struct sink {
    uint32_t *bits;
    uint32_t bit;
    float *scale;
    double *l1, *l1_kept;
} sink;

static inline void sink_put(const sink *s, const mm_kernel_args *a, size_t input, size_t k, int keep)
{
    if (s->bits) {
        s->bits[k] |= (uint32_t)keep << s->bit;
    } else if (s->scale) {
        s->scale[k] = s->scale[k] * (float)keep; /* tensor * mask: exact (and inf * 0 = NaN, as torch) */
    } else {
        const float m = mag(a, input, k);
        *s->l1 += m;
        if (keep)
            *s->l1_kept += m;
    }
}

/* random (dare): keep iff u < p, p = density in the work dtype (torch.full_like(.., density)). */
static void random_masks(const mm_kernel_args *a, const mm_sparse_cfg *c, size_t input, const sink *s)
{
    const mm_out_tensor *t = a->t;
    const float p = mm_round_to(work_dtype(t, c), (float)density_of(t, c, input));
    const uint64_t stream = mm_rng_stream(t->name, input);
    for (size_t k = 0; k < a->n; k++)
        sink_put(s, a, input, k, mm_rng_uniform(t->seed, stream, a->e0 + k) < p);
}

/* Stable LSD radix sort of 32-bit keys carrying 32-bit values, 8 bits per pass; passes in which every
 * key has the same digit are skipped (bf16 magnitudes skip the two low bytes). Returns the buffer
 * that holds the sorted values. */
static uint32_t *radix_sort(uint32_t *k, uint32_t *v, uint32_t *k2, uint32_t *v2, size_t n)
{
    for (unsigned shift = 0; shift < 32; shift += 8) {
        size_t pos[256] = {0};
        for (size_t i = 0; i < n; i++)
            pos[(k[i] >> shift) & 255u]++;
        if (pos[(k[0] >> shift) & 255u] == n)
            continue;
        size_t sum = 0;
        for (unsigned d = 0; d < 256; d++) {
            size_t c = pos[d];
            pos[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++) {
            size_t at = pos[(k[i] >> shift) & 255u]++;
            k2[at] = k[i];
            v2[at] = v[i];
        }
        uint32_t *tk = k, *tv = v;
        k = k2;
        v = v2;
        k2 = tk;
        v2 = tv;
    }
    return v;
}

/* DELLA's keep probability at ascending rank r (0-based) in a row, op by op as mergekit computes it
 * in the work dtype w: ranks = r + 1, r_hat = ((ranks - min) / (max - min)).clamp(0, 1),
 * p = (density - epsilon) + r_hat * 2 * epsilon. `span` = max - min, `base` = round(density - epsilon)
 * (a Python number added to a tensor is rounded first, D3), `eps` = epsilon as float32 (multiplied
 * unrounded, D3). A row of one element (mergekit: 0/0 = NaN) gets r_hat = 0.5, i.e. p = density. */
static inline float della_prob(mm_dtype w, size_t r, float span, float eps, float base)
{
    float q = 0.5f;
    if (span != 0) {
        float rank = mm_round_to(w, mm_round_to(w, (float)r) + 1.0f);
        q = mm_round_to(w, mm_round_to(w, rank - 1.0f) / span);
        q = q < 0 ? 0 : q > 1 ? 1 : q;
    }
    float t = mm_round_to(w, mm_round_to(w, q * 2.0f) * eps);
    return mm_round_to(w, t + base);
}

/* della: rank every row of the chunk and draw the mask. Uses 4 * row_len words of a->scratch. */
static void della_masks(const mm_kernel_args *a, const mm_sparse_cfg *c, size_t input, const sink *s)
{
    const mm_out_tensor *t = a->t;
    const mm_dtype w = work_dtype(t, c);
    const size_t len = (size_t)a->row_len;
    const double rho = density_of(t, c, input), epsilon = extra_of(t, c, input);
    const float eps = (float)epsilon, base = mm_round_to(w, (float)(rho - epsilon));
    const float span = mm_round_to(w, mm_round_to(w, mm_round_to(w, (float)(len - 1)) + 1.0f) - 1.0f);
    const uint64_t stream = mm_rng_stream(t->name, input);
    uint32_t *keys = (uint32_t *)(void *)a->scratch, *idx = keys + len, *keys2 = idx + len, *idx2 = keys2 + len;
    for (size_t r0 = 0; r0 < a->n; r0 += len) {
        magnitude_keys(a, input, r0, len, keys);
        for (size_t j = 0; j < len; j++)
            idx[j] = (uint32_t)j;
        const uint32_t *order = radix_sort(keys, idx, keys2, idx2, len);
        for (size_t r = 0; r < len; r++) {
            const size_t k = r0 + order[r];
            const float p = della_prob(w, r, span, eps, base);
            sink_put(s, a, input, k, mm_rng_uniform(t->seed, stream, a->e0 + k) < p);
        }
    }
}

/* A rule with its index bound made relative to a chunk: 32-bit compares vectorise, 64-bit ones do
 * not (SSE2). */
typedef struct local_rule {
    uint32_t thr, above, lim;
} local_rule;

static local_rule localize(const mm_select_rule *r, uint64_t e0, size_t n)
{
    uint64_t lim = r->cut <= e0 ? 0 : r->cut - e0;
    return (local_rule){r->thr, r->above, (uint32_t)(lim < n ? lim : n)};
}

static inline uint32_t local_in(local_rule r, uint32_t key, uint32_t k)
{
    return key == r.thr ? k < r.lim : (key > r.thr) == r.above;
}

/* v[k] *= 1 or 0: whether keys[k] (element e0 + k) lies in the band [lo, hi] of the statistics. */
static void band_scale(const mm_sparse_stats *st, uint64_t e0, const uint32_t *keys, uint32_t n, float *v)
{
    const local_rule lo = localize(&st->lo, e0, n), hi = localize(&st->hi, e0, n);
    for (uint32_t k = 0; k < n; k++)
        v[k] = v[k] * (float)(local_in(lo, keys[k], k) & local_in(hi, keys[k], k));
}

static void model_masks(const mm_kernel_args *a, const mm_sparse_cfg *c, size_t input, const sink *s)
{
    if (c->kind == MM_SPARSE_RANDOM)
        random_masks(a, c, input, s);
    else
        della_masks(a, c, input, s);
}

void mm_sparse_masks(const mm_kernel_args *a, const mm_sparse_cfg *c, uint32_t *bits)
{
    memset(bits, 0, a->n * sizeof *bits);
    for (size_t i = 0; i < a->t->ninputs; i++) {
        if (mm_sparse_action_of(a->t, c, i) != MM_SP_MASK)
            continue;
        sink s = {.bits = bits, .bit = mm_sparse_bit(a->t, i)};
        della_masks(a, c, i, &s);
    }
}

void mm_sparse_apply(const mm_kernel_args *a, const mm_sparse_cfg *c, size_t input, const uint32_t *bits, float *d,
                     uint32_t *tmp)
{
    const mm_out_tensor *t = a->t;
    const size_t n = a->n;
    switch (mm_sparse_action_of(t, c, input)) {
    case MM_SP_KEEP: return;
    case MM_SP_ZERO: memset(d, 0, n * sizeof *d); return;
    case MM_SP_MASK: break;
    }
    /* tensor * mask: the mask is 0/1 in the tensor's dtype, so this is exact (and 0 * inf = NaN). */
    if (c->kind == MM_SPARSE_DELLA) {
        const unsigned bit = mm_sparse_bit(t, input);
        for (size_t k = 0; k < n; k++)
            d[k] = d[k] * (float)((bits[k] >> bit) & 1u);
    } else if (c->kind == MM_SPARSE_RANDOM) {
        sink s = {.scale = d};
        random_masks(a, c, input, &s);
    } else {
        for (size_t k = 0; k < n; k++)
            tmp[k] = mm_select_key_inline(fabsf(d[k]));
        band_scale((const mm_sparse_stats *)a->stats + input, a->e0, tmp, (uint32_t)n, d);
    }
    const float f = a->stats ? ((const mm_sparse_stats *)a->stats)[input].factor : 1.0f;
    if (f == 1.0f)
        return;
    /* masked * (before / after) in the work dtype, then .to(tensor dtype). */
    const mm_dtype w = work_dtype(t, c);
    for (size_t k = 0; k < n; k++)
        d[k] = d[k] * f;
    mm_vround(w, d, n);
    if (w != t->comp)
        mm_vround(t->comp, d, n);
}

/* ---- pre-pass ---- */

/* rescaled_masked_tensor's factor: both L1 sums are 0-d tensors of the work dtype (float32
 * accumulation rounded once; here double rounded once), compared with eps = 1e-7 in that dtype, and
 * divided in it. A sum that overflows f16 (mergekit: inf, so a factor of NaN or 0) keeps the
 * double-precision value instead. */
static float rescale_factor(mm_dtype w, double l1, double l1_kept)
{
    float before = mm_round_to(w, (float)l1), after = mm_round_to(w, (float)l1_kept);
    if (!isfinite(before) || !isfinite(after)) {
        before = (float)l1;
        after = (float)l1_kept;
    }
    const float eps = mm_round_to(w, 1e-7f);
    if (before < eps || after < eps)
        return 1.0f;
    return mm_round_to(w, before / after);
}

#define MAX_LOGGED 4

/* The selections of one model of a magnitude/outliers pre-pass. */
typedef struct band_job {
    mm_selector *sel[2];      /* [0]: the N - n_bot largest (lower bound); [1]: the n_top largest */
    mm_rule_builder rule[2];  /* [0]: above the lower bound; [1]: below the upper bound */
} band_job;

typedef struct prepass_ctx {
    const mm_out_tensor *t;
    const mm_sparse_cfg *c;
    mm_sparse_stats *st;
    int rescale;
    int first;                /* first stream of the selection phase: also sum ||tau||_1 */
    int passes;
    double pass_secs[MAX_LOGGED];
    uint64_t streamed;        /* elements seen by the current pass (a locate pass may stop early) */
    band_job job[MM_MAX_INPUTS];
} prepass_ctx;

static int active(const prepass_ctx *p, size_t i)
{
    return mm_sparse_action_of(p->t, p->c, i) == MM_SP_MASK;
}

static int select_chunk(void *vctx, const mm_kernel_args *a)
{
    prepass_ctx *p = vctx;
    p->streamed += a->n;
    float *m = a->scratch;
    for (size_t i = 0; i < a->t->ninputs; i++) {
        if (!active(p, i))
            continue;
        band_job *j = &p->job[i];
        uint32_t *keys = (uint32_t *)(void *)(a->scratch + a->n);
        magnitude_keys(a, i, 0, a->n, keys);
        for (int s = 0; s < 2; s++)
            if (j->sel[s] && mm_selector_pass_needed(j->sel[s]))
                mm_selector_feed_keys(j->sel[s], keys, a->n);
        if (p->first && p->rescale) {
            magnitudes(a, i, m);
            p->st[i].l1 += sum_double(m, a->n);
        }
    }
    return 0;
}

/* Whether every cut is found (and no sum is wanted), so a locate pass may stop. */
static int all_located(const prepass_ctx *p)
{
    if (p->rescale)
        return 0;
    for (size_t i = 0; i < p->t->ninputs; i++)
        if (active(p, i) && !(mm_rule_done(&p->job[i].rule[0]) && mm_rule_done(&p->job[i].rule[1])))
            return 0;
    return 1;
}

#define STOP 1 /* a stream callback's "done early" */

static int locate_chunk(void *vctx, const mm_kernel_args *a)
{
    prepass_ctx *p = vctx;
    p->streamed += a->n;
    for (size_t i = 0; i < a->t->ninputs; i++) {
        if (!active(p, i))
            continue;
        band_job *j = &p->job[i];
        if (!p->rescale && mm_rule_done(&j->rule[0]) && mm_rule_done(&j->rule[1]))
            continue; /* this model's cuts are found; another one's are not yet */
        float *m = a->scratch;
        uint32_t *keys = (uint32_t *)(void *)(a->scratch + a->n);
        magnitude_keys(a, i, 0, a->n, keys);
        /* both builders see every element, to count the equal ones in index order */
        mm_rule_feed_block(&j->rule[0], keys, a->n, a->e0);
        mm_rule_feed_block(&j->rule[1], keys, a->n, a->e0);
        if (!p->rescale)
            continue;
        /* the kept |tau|: the band test on the rules as they stand after this block */
        magnitudes(a, i, m);
        const mm_sparse_stats now = {.lo = j->rule[0].rule, .hi = j->rule[1].rule};
        band_scale(&now, a->e0, keys, (uint32_t)a->n, m);
        p->st[i].l1_kept += sum_double(m, a->n);
    }
    return all_located(p) ? STOP : 0;
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One streaming pass; its time and how far it went are logged (-v) for the benchmark. */
static int stream(const mm_out_tensor *t, mm_stream_fn fn, prepass_ctx *p)
{
    const double t0 = seconds_now();
    p->streamed = 0;
    int rc = mm_engine_stream(t, fn, p);
    if (p->passes < MAX_LOGGED)
        p->pass_secs[p->passes] = seconds_now() - t0;
    p->passes++;
    return rc == STOP ? 0 : rc;
}

/* Selectors of model i: its band as "the N - n_bot largest" minus "the n_top largest". */
static int band_begin(prepass_ctx *p, size_t i)
{
    const mm_out_tensor *t = p->t;
    const double rho = density_of(t, p->c, i);
    band b = {.target = (uint64_t)(rho * (double)t->numel)};
    if (p->c->kind == MM_SPARSE_OUTLIERS)
        b = outlier_band(t->numel, rho, extra_of(t, p->c, i));
    else
        b.n_bot = t->numel - b.target;
    band_job *j = &p->job[i];
    if (b.n_bot > 0 && !(j->sel[0] = mm_selector_new(t->numel - b.n_bot, 1)))
        return -ENOMEM;
    if (b.n_top > 0 && !(j->sel[1] = mm_selector_new(b.n_top, 1)))
        return -ENOMEM;
    return 0;
}

/* After the selection passes: the rules, with how many threshold-equal elements each keeps. At the
 * lower bound the first c0 equal ones are inside the N - n_bot largest; at the upper bound the
 * n_top largest hold c1 of its equal ones, so the first (equal - c1) stay. When both bounds are the
 * same value, the band holds c0 - c1 of its elements: the first ones. */
static void band_rules(band_job *j)
{
    mm_selector *lo = j->sel[0], *hi = j->sel[1];
    uint64_t keep_lo = lo ? mm_selector_ties_kept(lo) : 0;
    uint64_t keep_hi = hi ? mm_selector_ties_total(hi) - mm_selector_ties_kept(hi) : 0;
    if (lo && hi && mm_selector_threshold_key(lo) == mm_selector_threshold_key(hi))
        keep_lo = keep_hi = mm_selector_ties_kept(lo) - mm_selector_ties_kept(hi);
    j->rule[0] = j->rule[1] = (mm_rule_builder){.rule = mm_rule_all()};
    if (lo)
        mm_rule_begin(&j->rule[0], mm_selector_threshold_key(lo), 1, keep_lo, mm_selector_ties_total(lo));
    if (hi)
        mm_rule_begin(&j->rule[1], mm_selector_threshold_key(hi), 0, keep_hi, mm_selector_ties_total(hi));
}

static int selections_pending(const prepass_ctx *p)
{
    for (size_t i = 0; i < p->t->ninputs; i++)
        for (int s = 0; s < 2; s++)
            if (p->job[i].sel[s] && mm_selector_pass_needed(p->job[i].sel[s]))
                return 1;
    return 0;
}

static void end_selection_pass(prepass_ctx *p)
{
    for (size_t i = 0; i < p->t->ninputs; i++)
        for (int s = 0; s < 2; s++)
            if (p->job[i].sel[s])
                mm_selector_end_pass(p->job[i].sel[s]);
}

static int band_prepass(prepass_ctx *p)
{
    const mm_out_tensor *t = p->t;
    int rc = 0;
    for (size_t i = 0; i < t->ninputs && rc == 0; i++)
        if (active(p, i))
            rc = band_begin(p, i);
    p->first = 1;
    while (rc == 0 && selections_pending(p)) {
        rc = stream(t, select_chunk, p);
        end_selection_pass(p);
        p->first = 0;
    }
    if (rc == 0) {
        for (size_t i = 0; i < t->ninputs; i++)
            if (active(p, i))
                band_rules(&p->job[i]);
        if (!all_located(p))
            rc = stream(t, locate_chunk, p);
    }
    for (size_t i = 0; i < t->ninputs; i++) {
        if (rc == 0 && active(p, i)) {
            p->st[i].lo = p->job[i].rule[0].rule;
            p->st[i].hi = p->job[i].rule[1].rule;
        }
        mm_selector_free(p->job[i].sel[0]);
        mm_selector_free(p->job[i].sel[1]);
    }
    return rc;
}

/* dare / della with rescale: one pass drawing the masks to sum ||tau||_1 and ||tau * mask||_1. */
static int sums_chunk(void *vctx, const mm_kernel_args *a)
{
    prepass_ctx *p = vctx;
    p->streamed += a->n;
    for (size_t i = 0; i < a->t->ninputs; i++) {
        if (!active(p, i))
            continue;
        sink s = {.l1 = &p->st[i].l1, .l1_kept = &p->st[i].l1_kept};
        model_masks(a, p->c, i, &s);
    }
    return 0;
}

/* The first pass reads every input tensor front to back: ask the kernel to read all of it now, so
 * that the disk works while this thread computes instead of each pread waiting for its own pages. */
static void prefetch_inputs(const mm_out_tensor *t)
{
    for (size_t i = 0; i < t->ninputs; i++) {
        const mm_model_tensor *mt = t->inputs[i].mt;
        (void)posix_fadvise(mt->shard->fd, (off_t)(mt->shard->hdr.data_start + mt->st->begin),
                            (off_t)(mt->st->end - mt->st->begin), POSIX_FADV_WILLNEED);
    }
}

/* -v: "pre-pass of 'NAME' (METHOD): 1.234 s, 2 passes (0.800 + 0.434 s, the last over 52%)". */
static void log_prepass(const prepass_ctx *p, double secs)
{
    char detail[160] = "";
    size_t at = 0;
    for (int i = 0; i < p->passes && i < MAX_LOGGED && at < sizeof detail; i++)
        at += (size_t)snprintf(detail + at, sizeof detail - at, "%s%.3f", i ? " + " : "", p->pass_secs[i]);
    mm_log_debug("pre-pass of '%s' (%s): %.3f s, %d passes (%s s, the last over %.0f%%)", p->t->name,
                 p->t->method->name, secs, p->passes, detail,
                 p->t->numel ? 100.0 * (double)p->streamed / (double)p->t->numel : 100.0);
}

int mm_sparse_prepass(const mm_out_tensor *t, const mm_sparse_cfg *c, mm_sparse_stats *st)
{
    prepass_ctx *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    *p = (prepass_ctx){.t = t, .c = c, .st = st, .rescale = rescaling(t, c)};
    memset(st, 0, t->ninputs * sizeof *st);
    for (size_t i = 0; i < t->ninputs; i++) {
        st[i].lo = st[i].hi = mm_rule_all();
        st[i].factor = 1.0f;
    }
    const double t0 = seconds_now();
    int rc = 0;
    prefetch_inputs(t);
    if (c->kind == MM_SPARSE_MAGNITUDE || c->kind == MM_SPARSE_OUTLIERS)
        rc = band_prepass(p);
    else if (p->rescale)
        rc = stream(t, sums_chunk, p);
    if (rc == 0 && p->rescale)
        for (size_t i = 0; i < t->ninputs; i++)
            if (active(p, i))
                st[i].factor = rescale_factor(work_dtype(t, c), st[i].l1, st[i].l1_kept);
    log_prepass(p, seconds_now() - t0);
    free(p);
    return rc;
}
