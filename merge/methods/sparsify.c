/* The sparsifiers of the task-arithmetic family (B2.9); see sparsify.h for the rules and
 * method_gta.c for how a kernel combines the results. */
#include "sparsify.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "merge/engine/engine.h"
#include "formats/numeric.h"
#include "base/philox.h"

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
    /* gamma is any number >= 0 a config gives (rho is in (0, 1) here): clamp gamma x n to n before
     * converting, as a double beyond uint64_t does not convert (undefined behaviour; fuzz_config). */
    const double top = gamma * (double)n;
    band b = {.target = (uint64_t)(rho * (double)n), .n_top = top < (double)n ? (uint64_t)top : n};
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

MM_VECTOR_LOOP void mm_task_vector(const mm_kernel_args *a, size_t input, float *d)
{
    const float *x = a->in[input], *b = a->in[a->t->base];
    MM_ROUNDED_LOOP(a->t->comp, d, a->n, k, x[k] - b[k]);
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
    if (dt == MM_DT_BF16) /* the same keys in fewer operations: most merges compute in bf16 */
        for (size_t k = 0; k < n; k++)
            keys[k] = mm_select_key_abs_bf16(x[k] - b[k]);
    else
        for (size_t k = 0; k < n; k++)
            keys[k] = mm_select_key_inline(fabsf(mm_round_to(dt, x[k] - b[k])));
}

/* The keys of elements [at, at + n) of the chunk. */
MM_VECTOR_LOOP static void magnitude_keys(const mm_kernel_args *a, size_t input, size_t at, size_t n, uint32_t *keys)
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

/* Whether r admits every key (mm_rule_all): multiplying by its 1 changes no bit, so it is not tested. */
static int admits_all(const mm_select_rule *r)
{
    const mm_select_rule all = mm_rule_all();
    return r->thr == all.thr && r->above == all.above && r->cut == all.cut;
}

/* The key of |x| for x already rounded to the computation dtype (bf16: the shortcut, which rounds
 * again and so changes nothing). */
static inline uint32_t abs_key(int bf16, float x)
{
    return bf16 ? mm_select_key_abs_bf16(x) : mm_select_key_inline(fabsf(x));
}

/* v[k] *= 1 or 0: whether |v[k]| (element e0 + k) lies in the band [lo, hi] of the statistics, its key
 * computed in the same loop. ties keeps the largest values, so its band has one bound; one loop per
 * case keeps each loop lean. Inlined with a constant `bf16`, so each dtype gets its own loops. */
MM_INLINE_LOOP void band_scale_dt(const mm_sparse_stats *st, uint64_t e0, int bf16, uint32_t n, float *v)
{
    const local_rule lo = localize(&st->lo, e0, n), hi = localize(&st->hi, e0, n);
    const int lo_all = admits_all(&st->lo), hi_all = admits_all(&st->hi);
    if (lo_all && hi_all)
        return;
    if (lo_all || hi_all) {
        const local_rule r = lo_all ? hi : lo; /* the one bound */
        for (uint32_t k = 0; k < n; k++)
            v[k] = v[k] * (float)local_in(r, abs_key(bf16, v[k]), k);
    } else {
        for (uint32_t k = 0; k < n; k++) {
            const uint32_t key = abs_key(bf16, v[k]);
            v[k] = v[k] * (float)(local_in(lo, key, k) & local_in(hi, key, k));
        }
    }
}

MM_VECTOR_LOOP static void band_scale(const mm_sparse_stats *st, uint64_t e0, mm_dtype comp, uint32_t n, float *v)
{
    if (comp == MM_DT_BF16)
        band_scale_dt(st, e0, 1, n, v);
    else
        band_scale_dt(st, e0, 0, n, v);
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

MM_VECTOR_LOOP void mm_sparse_apply(const mm_kernel_args *a, const mm_sparse_cfg *c, size_t input, const uint32_t *bits, float *d)
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
        band_scale((const mm_sparse_stats *)a->stats + input, a->e0, t->comp, (uint32_t)n, d);
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

/* ---- passes shared by threads ----
 * A pass is split into tasks of TASK_ELEMS elements (rounded up to whole alignment units) that the
 * threads take in index order. Whatever a pass sums or counts is kept per task and combined in task
 * order afterwards, and the tasks depend only on the tensor: the statistics, down to the rounding of
 * the double sums, are the same for any number of threads. Selector histograms are exact counts, so
 * those are kept per thread instead (a histogram per task would cost memory in proportion to N); only
 * a few bins around each threshold are kept per task, within a budget (windows, below). */
#define TASK_ELEMS (1u << 18)
#define MAX_THREADS 16
/* Selector forks (1 MiB each) a pass may allocate for its extra threads. */
#define FORK_BUDGET 256

/* The selections of one model of a magnitude/outliers pre-pass. */
typedef struct band_job {
    mm_selector *sel[2];      /* [0]: the N - n_bot largest (lower bound); [1]: the n_top largest */
    mm_rule_builder rule[2];  /* [0]: above the lower bound; [1]: below the upper bound */
    uint64_t keep[2];         /* threshold-equal elements inside each bound (first ones by index) */
    float value[2];           /* each bound's threshold as a |tau| value */
    int counted[2];           /* the tasks' equal[] of each bound came from a selection pass's window */
} band_job;

/* A window: the bins bin0 + j * step (j < nbins) of selector sel[bound] of an input, counted per task
 * during a selection pass (window_begin). */
typedef struct window {
    size_t input;
    int bound;
    uint32_t bin0, step, nbins;
} window;

/* One task's share of one model's statistics. */
typedef struct task_part {
    double l1;       /* ||tau||_1 over the task */
    double l1_kept;  /* the kept |tau| over the task; for a band, those not equal to a threshold */
    uint64_t equal[2]; /* elements equal to each band threshold */
} task_part;

typedef struct prepass_ctx prepass_ctx;

/* One thread of a pass. */
typedef struct worker {
    prepass_ctx *p;
    uint64_t task;     /* the task being streamed */
    uint64_t streamed; /* elements this thread streamed in the pass */
    int rc;
    /* where this thread counts each selection: the model's selector (thread 0) or a fork of it */
    mm_selector *sel[MM_MAX_INPUTS][2];
} worker;

typedef int (*task_done_fn)(worker *w);

struct prepass_ctx {
    const mm_out_tensor *t;
    const mm_sparse_cfg *c;
    mm_sparse_stats *st;
    int rescale;
    int first;                /* first pass of the selection phase: also sum ||tau||_1 */
    uint64_t base_bit, models; /* load masks (bit i: input i): the base; the models with a mask */
    int passes;
    double pass_secs[MAX_LOGGED];
    uint64_t streamed;        /* elements seen by the current pass (a locate pass may stop early) */
    band_job job[MM_MAX_INPUTS];
    uint64_t task_size, ntasks;
    task_part *parts;         /* [task][input] */
    size_t nworkers;
    worker *workers;
    /* the pass running */
    mm_stream_fn fn;
    task_done_fn task_done;   /* called after each task; STOP ends the pass early */
    uint64_t load;            /* the inputs it loads (bit i: input i) */
    atomic_uint_fast64_t next; /* the next task to take */
    atomic_int stop;
    /* the locate pass's early stop: the tasks finished, and the equal elements of the leading ones */
    pthread_mutex_t lock;
    unsigned char *done;
    uint64_t contig;          /* tasks [0, contig) are finished */
    uint64_t seen[MM_MAX_INPUTS][2];
    /* the thresholds' windows (window_setup): keys of a sample of each model's elements, and the
     * per-task counts of the windows of the selection pass running */
    uint32_t *sample;         /* [input][nsample] */
    size_t nsample;
    uint32_t win_bins;        /* bins per window at most; 0: no windows */
    size_t win_slots;         /* windows room is made for: one per selector */
    window *win;              /* [slot]: the windows of the pass running */
    size_t nwin;
    uint32_t *win_counts;     /* [task][slot][bin] */
    uint64_t *win_last;       /* [worker][slot][bin]: the counts at the end of the worker's last task */
    int cuts_counted, cuts_located; /* for the log: cuts whose counts came from a window, from a locate pass */
};

#define STOP 1 /* a stream callback's "done early" */

static int active(const prepass_ctx *p, size_t i)
{
    return mm_sparse_action_of(p->t, p->c, i) == MM_SP_MASK;
}

static task_part *parts_of(const prepass_ctx *p, uint64_t task)
{
    return p->parts + task * p->t->ninputs;
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *run_worker(void *arg)
{
    worker *w = arg;
    prepass_ctx *p = w->p;
    while (!atomic_load(&p->stop)) {
        const uint64_t task = atomic_fetch_add(&p->next, 1);
        if (task >= p->ntasks)
            break;
        const uint64_t e0 = task * p->task_size;
        const uint64_t e1 = p->t->numel - e0 < p->task_size ? p->t->numel : e0 + p->task_size;
        w->task = task;
        int rc = mm_engine_stream_inputs(p->t, e0, e1, p->load, p->fn, w);
        if (rc == 0 && p->task_done)
            rc = p->task_done(w);
        if (rc != 0) {
            w->rc = rc < 0 ? rc : 0;
            atomic_store(&p->stop, 1);
        }
    }
    return NULL;
}

/* One pass over all tasks on nworkers threads (this one included), loading the inputs of `load`; its
 * time and how far it went are logged (-v) for the benchmark. Returns 0 or the first error in thread
 * order. */
static int run_pass(prepass_ctx *p, mm_stream_fn fn, task_done_fn task_done, uint64_t load)
{
    const double t0 = seconds_now();
    p->fn = fn;
    p->load = load;
    p->task_done = task_done;
    atomic_store(&p->next, 0);
    atomic_store(&p->stop, 0);
    for (size_t w = 0; w < p->nworkers; w++)
        p->workers[w].rc = 0, p->workers[w].streamed = 0;
    pthread_t threads[MAX_THREADS];
    size_t started = 1;
    /* a thread that cannot start is no error: the others take its tasks */
    while (started < p->nworkers && pthread_create(&threads[started], NULL, run_worker, &p->workers[started]) == 0)
        started++;
    run_worker(&p->workers[0]);
    for (size_t w = 1; w < started; w++)
        pthread_join(threads[w], NULL);
    int rc = 0;
    p->streamed = 0;
    for (size_t w = 0; w < p->nworkers; w++) {
        rc = rc ? rc : p->workers[w].rc;
        p->streamed += p->workers[w].streamed;
    }
    if (p->passes < MAX_LOGGED)
        p->pass_secs[p->passes] = seconds_now() - t0;
    p->passes++;
    return rc;
}

static size_t selector_count(const prepass_ctx *p)
{
    size_t n = 0;
    for (size_t i = 0; i < p->t->ninputs; i++)
        n += (p->job[i].sel[0] != NULL) + (p->job[i].sel[1] != NULL);
    return n;
}

/* Threads: one per CPU, no more than there are tasks, and few enough that their selector forks
 * stay within FORK_BUDGET. */
static size_t thread_count(const prepass_ctx *p)
{
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t n = cpus > 1 ? (size_t)cpus : 1;
    n = n < MAX_THREADS ? n : MAX_THREADS;
    n = n < p->ntasks ? n : (size_t)p->ntasks;
    const size_t nsel = selector_count(p);
    if (nsel && n > 1 + FORK_BUDGET / nsel)
        n = 1 + FORK_BUDGET / nsel;
    return n ? n : 1;
}

/* Tasks, their parts and the threads. Called once the selectors exist (they bound the threads). */
static int setup_passes(prepass_ctx *p)
{
    const mm_out_tensor *t = p->t;
    uint64_t al = 1;
    if (t->method->align == MM_ALIGN_ROWS)
        al = mm_engine_row_len(t);
    p->task_size = (TASK_ELEMS + al - 1) / al * al;
    p->ntasks = (t->numel + p->task_size - 1) / p->task_size;
    p->nworkers = thread_count(p);
    p->parts = calloc(p->ntasks * t->ninputs + 1, sizeof *p->parts);
    p->done = calloc(p->ntasks + 1, 1);
    p->workers = calloc(p->nworkers, sizeof *p->workers);
    if (!p->parts || !p->done || !p->workers)
        return -ENOMEM;
    for (size_t w = 0; w < p->nworkers; w++)
        p->workers[w].p = p;
    p->base_bit = t->base >= 0 ? (uint64_t)1 << t->base : 0; /* (the task-arithmetic family needs one) */
    for (size_t i = 0; i < t->ninputs; i++)
        if (active(p, i))
            p->models |= (uint64_t)1 << i;
    return 0;
}

/* ---- selection passes ---- */

/* Before a selection pass: thread 0 feeds the selectors, every other thread forks of them. */
static int fork_selectors(prepass_ctx *p)
{
    for (size_t w = 0; w < p->nworkers; w++)
        for (size_t i = 0; i < p->t->ninputs; i++)
            for (int s = 0; s < 2; s++) {
                mm_selector *m = p->job[i].sel[s];
                worker *wk = &p->workers[w];
                wk->sel[i][s] = NULL;
                if (!m || !mm_selector_pass_needed(m))
                    continue;
                wk->sel[i][s] = w == 0 ? m : mm_selector_fork(m);
                if (!wk->sel[i][s])
                    return -ENOMEM;
            }
    return 0;
}

/* After it (whatever the outcome): the forks' counts go to the selectors, and the forks away. */
static void merge_selectors(prepass_ctx *p)
{
    for (size_t w = 1; w < p->nworkers; w++)
        for (size_t i = 0; i < p->t->ninputs; i++)
            for (int s = 0; s < 2; s++) {
                mm_selector **f = &p->workers[w].sel[i][s];
                if (*f)
                    mm_selector_merge(p->job[i].sel[s], *f);
                mm_selector_free(*f);
                *f = NULL;
            }
}

/* The start of every pass's chunk: count it, and split the chunk's scratch into n floats (magnitudes)
 * and n keys. Returns the current task's parts. */
static task_part *chunk_begin(worker *w, const mm_kernel_args *a, float **m, uint32_t **keys)
{
    w->streamed += a->n;
    *m = a->scratch;
    *keys = (uint32_t *)(void *)(a->scratch + a->n);
    return parts_of(w->p, w->task);
}

static int select_chunk(void *vctx, const mm_kernel_args *a)
{
    worker *w = vctx;
    prepass_ctx *p = w->p;
    float *m;
    uint32_t *keys;
    task_part *part = chunk_begin(w, a, &m, &keys);
    for (size_t i = 0; i < a->t->ninputs; i++) {
        if (!active(p, i))
            continue;
        magnitude_keys(a, i, 0, a->n, keys);
        for (int s = 0; s < 2; s++)
            if (w->sel[i][s])
                mm_selector_feed_keys(w->sel[i][s], keys, a->n);
        if (p->first && p->rescale) {
            magnitudes(a, i, m);
            part[i].l1 += sum_double(m, a->n);
        }
    }
    return 0;
}

/* ---- windows: the threshold-equal elements of every task counted during the selection pass ----
 * refine_cut needs, per task, how many elements equal each threshold. A selector's histogram bin of
 * the threshold in its last pass counts exactly those (select.h), so each worker reads the bins around
 * a guess of the threshold's bin before and after each of its tasks; when the pass ends with the
 * threshold inside the window, the counts per task are known and no locate pass is needed for that
 * bound. The guess only decides what is counted, never the result: a threshold outside its window is
 * counted by the locate pass as before. The counts are exact, so they do not depend on the threads. */

/* The guesses come from the keys of about SAMPLE_SPOTS x SAMPLE_RUN elements spread evenly over the
 * tensor: a few hundred small reads, nothing next to a pass. */
#define SAMPLE_SPOTS 64
#define SAMPLE_RUN 512
/* A window is the guessed bin and WINDOW_SIDE bins on each side (bins that can hold values: for f16
 * values pass 2 has 8 per bucket, mm_selector_bin_step). A bf16 magnitude has one bin per value (128
 * per octave), and a sample of 32K elements puts the rank of a threshold within a few tenths of a
 * percent, a few values of a smooth distribution. */
#define WINDOW_SIDE 32
/* Bytes of per-task window counts a pre-pass may hold (fewer bins per window beyond that). */
#define WINDOW_BUDGET (8u << 20)

typedef struct sample_ctx {
    prepass_ctx *p;
    size_t at;
} sample_ctx;

static int sample_chunk(void *vctx, const mm_kernel_args *a)
{
    sample_ctx *c = vctx;
    prepass_ctx *p = c->p;
    for (size_t i = 0; i < a->t->ninputs; i++)
        if (active(p, i))
            magnitude_keys(a, i, 0, a->n, p->sample + i * p->nsample + c->at);
    c->at += a->n;
    return 0;
}

/* Spot j of the sample: SAMPLE_RUN elements at j/SAMPLE_SPOTS of the tensor, or the whole tensor when
 * it is not larger than the sample. */
static void sample_spot(const prepass_ctx *p, size_t j, uint64_t *e0, uint64_t *e1)
{
    const uint64_t n = p->t->numel;
    if (n <= (uint64_t)SAMPLE_SPOTS * SAMPLE_RUN) {
        *e0 = 0;
        *e1 = j == 0 ? n : 0;
        return;
    }
    *e0 = n / SAMPLE_SPOTS * j; /* < n - SAMPLE_RUN */
    *e1 = *e0 + SAMPLE_RUN;
}

static int take_sample(prepass_ctx *p)
{
    uint64_t e0, e1;
    for (size_t j = 0; j < SAMPLE_SPOTS; j++) {
        sample_spot(p, j, &e0, &e1);
        p->nsample += (size_t)(e1 - e0);
    }
    p->sample = malloc(p->t->ninputs * p->nsample * sizeof *p->sample);
    if (!p->sample)
        return -ENOMEM;
    sample_ctx c = {p, 0};
    int rc = 0;
    for (size_t j = 0; j < SAMPLE_SPOTS && rc == 0; j++) {
        sample_spot(p, j, &e0, &e1);
        rc = mm_engine_stream_inputs(p->t, e0, e1, p->base_bit | p->models, sample_chunk, &c);
    }
    return rc;
}

/* Once the tasks and threads are set: room for one window per selector, and the sample. Without
 * alignment (the band methods have none) the spots can start anywhere; with one, no windows. */
static int window_setup(prepass_ctx *p)
{
    const size_t nsel = selector_count(p);
    if (nsel == 0 || p->ntasks == 0 || p->t->method->align != MM_ALIGN_NONE || p->task_size > UINT32_MAX)
        return 0;
    const uint64_t bytes_per_bin = p->ntasks * nsel * sizeof *p->win_counts;
    uint64_t bins = WINDOW_BUDGET / bytes_per_bin;
    bins = bins < 2 * WINDOW_SIDE + 1 ? bins : 2 * WINDOW_SIDE + 1;
    if (bins < 3)
        return 0;
    p->win_bins = (uint32_t)(bins - 1) | 1; /* odd: the guess in the middle */
    p->win_slots = nsel;
    p->win = calloc(nsel, sizeof *p->win);
    p->win_counts = calloc(p->ntasks * nsel * p->win_bins, sizeof *p->win_counts);
    p->win_last = calloc(p->nworkers * nsel * p->win_bins, sizeof *p->win_last);
    if (!p->win || !p->win_counts || !p->win_last)
        return -ENOMEM;
    return take_sample(p);
}

/* Before a selection pass (the forks exist): a window around the guessed bin of every selector in it,
 * and every worker's counts of those bins so far. */
static void window_begin(prepass_ctx *p)
{
    p->nwin = 0;
    if (!p->win_bins)
        return;
    for (size_t i = 0; i < p->t->ninputs; i++)
        for (int s = 0; s < 2; s++) {
            mm_selector *sel = p->job[i].sel[s];
            if (!sel || !mm_selector_pass_needed(sel))
                continue;
            const uint32_t guess = mm_selector_estimate_bin(sel, p->sample + i * p->nsample, p->nsample,
                                                            p->t->numel);
            if (guess == MM_SELECT_NO_BIN)
                continue;
            /* win_bins steps centred on the guess, moved inside [0, 65536) at either end */
            const uint32_t step = mm_selector_bin_step(sel), below = guess / step, above = (65535u - guess) / step;
            uint32_t lo = p->win_bins / 2 < below ? p->win_bins / 2 : below;
            const uint32_t hi = p->win_bins - 1 - lo < above ? p->win_bins - 1 - lo : above;
            lo = p->win_bins - 1 - hi < below ? p->win_bins - 1 - hi : below;
            p->win[p->nwin++] = (window){i, s, guess - lo * step, step, lo + hi + 1};
        }
    for (size_t w = 0; w < p->nworkers; w++)
        for (size_t x = 0; x < p->nwin; x++) {
            const window *win = &p->win[x];
            const mm_selector *sel = p->workers[w].sel[win->input][win->bound];
            uint64_t *last = p->win_last + (w * p->win_slots + x) * p->win_bins;
            for (uint32_t b = 0; b < win->nbins; b++)
                last[b] = mm_selector_bin_count(sel, win->bin0 + b * win->step);
        }
}

/* After each task of a selection pass: the task's counts are the worker's counts now minus those at
 * the end of its previous task (a worker feeds its own selector or fork only). */
static int window_task_done(worker *w)
{
    prepass_ctx *p = w->p;
    const size_t wi = (size_t)(w - p->workers);
    for (size_t x = 0; x < p->nwin; x++) {
        const window *win = &p->win[x];
        const mm_selector *sel = w->sel[win->input][win->bound];
        uint32_t *c = p->win_counts + (w->task * p->win_slots + x) * p->win_bins;
        uint64_t *last = p->win_last + (wi * p->win_slots + x) * p->win_bins;
        for (uint32_t b = 0; b < win->nbins; b++) {
            const uint64_t now = mm_selector_bin_count(sel, win->bin0 + b * win->step);
            c[b] = (uint32_t)(now - last[b]); /* at most the task's size */
            last[b] = now;
        }
    }
    return 0;
}

/* After the pass (selectors merged and ended): every selection that ended in it with its threshold's
 * bin inside the window has its per-task counts. */
static void window_end(prepass_ctx *p)
{
    for (size_t x = 0; x < p->nwin; x++) {
        const window *win = &p->win[x];
        band_job *j = &p->job[win->input];
        const mm_selector *sel = j->sel[win->bound];
        if (mm_selector_pass_needed(sel)) /* pass 1 of two: the bins were the wrong ones */
            continue;
        const uint32_t bin = mm_selector_threshold_bin(sel);
        if (bin < win->bin0 || (bin - win->bin0) % win->step || (bin - win->bin0) / win->step >= win->nbins)
            continue;
        for (uint64_t task = 0; task < p->ntasks; task++)
            parts_of(p, task)[win->input].equal[win->bound] =
                p->win_counts[(task * p->win_slots + x) * p->win_bins + (bin - win->bin0) / win->step];
        j->counted[win->bound] = 1;
    }
}

/* ---- the locate pass: where the kept threshold-equal elements end ---- */

/* Whether bound b of a model still needs the per-task counts of its threshold-equal elements: its cut
 * was not known without looking (all or none of them kept), and no window counted them. */
static int uncounted(const band_job *j, int b)
{
    return !mm_rule_done(&j->rule[b]) && !j->counted[b];
}

static int located(const band_job *j)
{
    return !uncounted(j, 0) && !uncounted(j, 1);
}

/* Whether every cut is found (and no sum is wanted), so that no locate pass is needed. */
static int all_located(const prepass_ctx *p)
{
    if (p->rescale)
        return 0;
    for (size_t i = 0; i < p->t->ninputs; i++)
        if (active(p, i) && !located(&p->job[i]))
            return 0;
    return 1;
}

/* m[k] *= whether element k lies strictly inside the band; threshold-equal elements become 0 (their
 * share is added per task from the counts, once the cuts are known: finish_sums). */
MM_VECTOR_LOOP static void strict_band(const band_job *j, const uint32_t *keys, uint32_t n, float *m)
{
    mm_select_rule r[2] = {j->rule[0].rule, j->rule[1].rule};
    r[0].cut = r[1].cut = 0;
    const local_rule lo = localize(&r[0], 0, n), hi = localize(&r[1], 0, n);
    for (uint32_t k = 0; k < n; k++) {
        const float v = m[k] * (float)(local_in(lo, keys[k], k) & local_in(hi, keys[k], k));
        m[k] = keys[k] == lo.thr || keys[k] == hi.thr ? 0.0f : v;
    }
}

static int locate_chunk(void *vctx, const mm_kernel_args *a)
{
    worker *w = vctx;
    prepass_ctx *p = w->p;
    float *m;
    uint32_t *keys;
    task_part *part = chunk_begin(w, a, &m, &keys);
    for (size_t i = 0; i < a->t->ninputs; i++) {
        const band_job *j = &p->job[i];
        if (!active(p, i) || (!p->rescale && located(j)))
            continue;
        magnitude_keys(a, i, 0, a->n, keys);
        for (int b = 0; b < 2; b++) /* (the sums need the counts of the bounds known without looking too) */
            if (!j->counted[b])
                part[i].equal[b] += mm_select_count(keys, a->n, j->rule[b].rule.thr);
        if (!p->rescale)
            continue;
        magnitudes(a, i, m);
        strict_band(j, keys, (uint32_t)a->n, m);
        part[i].l1_kept += sum_double(m, a->n);
    }
    return 0;
}

/* After each task of a locate pass without sums: STOP once the finished leading tasks hold every
 * kept threshold-equal element (the cuts lie in them; the tasks taken later are not needed). */
static int count_done(worker *w)
{
    prepass_ctx *p = w->p;
    const uint64_t task = w->task;
    pthread_mutex_lock(&p->lock);
    p->done[task] = 1;
    for (; p->contig < p->ntasks && p->done[p->contig]; p->contig++) {
        const task_part *part = parts_of(p, p->contig);
        for (size_t i = 0; i < p->t->ninputs; i++)
            for (int b = 0; b < 2; b++)
                p->seen[i][b] += part[i].equal[b];
    }
    int all = 1;
    for (size_t i = 0; i < p->t->ninputs; i++)
        for (int b = 0; b < 2; b++)
            if (active(p, i) && uncounted(&p->job[i], b) && p->seen[i][b] < p->job[i].keep[b])
                all = 0;
    pthread_mutex_unlock(&p->lock);
    return all ? STOP : 0;
}

typedef struct refine_ctx {
    size_t input;
    mm_rule_builder *b;
} refine_ctx;

static int refine_chunk(void *vctx, const mm_kernel_args *a)
{
    refine_ctx *r = vctx;
    uint32_t *keys = (uint32_t *)(void *)a->scratch;
    magnitude_keys(a, r->input, 0, a->n, keys);
    mm_rule_feed_block(r->b, keys, a->n, a->e0);
    return mm_rule_done(r->b) ? STOP : 0;
}

/* The cut of bound b of model i from the per-task counts: the task in which the kept equal elements
 * run out is scanned again alone (one task, not the tensor). */
static int refine_cut(prepass_ctx *p, size_t i, int b)
{
    mm_rule_builder *rb = &p->job[i].rule[b];
    if (mm_rule_done(rb))
        return 0;
    for (uint64_t task = 0; task < p->ntasks; task++) {
        const uint64_t equal = parts_of(p, task)[i].equal[b];
        if (equal < rb->left) {
            rb->left -= equal;
            continue;
        }
        const uint64_t e0 = task * p->task_size;
        const uint64_t e1 = p->t->numel - e0 < p->task_size ? p->t->numel : e0 + p->task_size;
        rb->rule.cut = e0; /* every equal element before the task is inside */
        refine_ctx r = {i, rb};
        const int rc = mm_engine_stream_inputs(p->t, e0, e1, p->base_bit | (uint64_t)1 << i, refine_chunk, &r);
        return rc == STOP ? 0 : rc < 0 ? rc : -EIO;
    }
    return -EIO; /* fewer equal elements than the selection counted: the input changed under us */
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
    j->keep[0] = keep_lo;
    j->keep[1] = keep_hi;
    for (int s = 0; s < 2; s++) {
        mm_selector *sel = j->sel[s];
        if (!sel)
            continue;
        mm_rule_begin(&j->rule[s], mm_selector_threshold_key(sel), s == 0, j->keep[s], mm_selector_ties_total(sel));
        j->value[s] = mm_selector_threshold(sel);
    }
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

/* The inputs a locate pass loads: the base and the models it counts or sums. */
static uint64_t locate_inputs(const prepass_ctx *p)
{
    uint64_t load = p->base_bit;
    for (size_t i = 0; i < p->t->ninputs; i++)
        if (active(p, i) && (p->rescale || !located(&p->job[i])))
            load |= (uint64_t)1 << i;
    return load;
}

/* For the log: how the cuts that need a scan got their per-task counts. */
static void count_cuts(prepass_ctx *p)
{
    for (size_t i = 0; i < p->t->ninputs; i++)
        for (int b = 0; b < 2 && active(p, i); b++)
            if (!mm_rule_done(&p->job[i].rule[b]))
                ++*(p->job[i].counted[b] ? &p->cuts_counted : &p->cuts_located);
}

static int band_prepass(prepass_ctx *p)
{
    const mm_out_tensor *t = p->t;
    int rc = window_setup(p);
    p->first = 1;
    while (rc == 0 && selections_pending(p)) {
        rc = fork_selectors(p);
        if (rc == 0) {
            window_begin(p);
            rc = run_pass(p, select_chunk, p->nwin ? window_task_done : NULL, p->base_bit | p->models);
        }
        merge_selectors(p);
        end_selection_pass(p);
        if (rc == 0)
            window_end(p);
        p->first = 0;
    }
    if (rc == 0) {
        for (size_t i = 0; i < t->ninputs; i++)
            if (active(p, i))
                band_rules(&p->job[i]);
        count_cuts(p);
        if (!all_located(p))
            rc = run_pass(p, locate_chunk, p->rescale ? NULL : count_done, locate_inputs(p));
        for (size_t i = 0; i < t->ninputs && rc == 0; i++)
            for (int b = 0; b < 2 && rc == 0 && active(p, i); b++)
                rc = refine_cut(p, i, b);
    }
    for (size_t i = 0; i < t->ninputs && rc == 0; i++) {
        if (active(p, i)) {
            p->st[i].lo = p->job[i].rule[0].rule;
            p->st[i].hi = p->job[i].rule[1].rule;
        }
    }
    return rc;
}

/* dare / della with rescale: one pass drawing the masks to sum ||tau||_1 and ||tau * mask||_1. */
static int sums_chunk(void *vctx, const mm_kernel_args *a)
{
    worker *w = vctx;
    prepass_ctx *p = w->p;
    task_part *part = parts_of(p, w->task);
    w->streamed += a->n;
    for (size_t i = 0; i < a->t->ninputs; i++) {
        if (!active(p, i))
            continue;
        sink s = {.l1 = &part[i].l1, .l1_kept = &part[i].l1_kept};
        model_masks(a, p->c, i, &s);
    }
    return 0;
}

/* The share of a task's `equal` threshold-equal elements (value v) in ||tau * mask||_1, given that
 * the first *left of them still to come are kept: kept * v, exact in double (a float times a count
 * below 2^29). The others are tau * 0: NaN when v is inf or NaN, as torch computes it. */
static double equal_share(uint64_t equal, uint64_t *left, float v)
{
    const uint64_t kept = equal < *left ? equal : *left;
    *left -= kept;
    double s = 0;
    if (kept)
        s += (double)kept * v;
    if (equal > kept)
        s += (double)(v * 0.0f);
    return s;
}

/* The L1 sums of model i from the task parts, in task order. */
static void finish_sums(prepass_ctx *p, size_t i)
{
    const band_job *j = &p->job[i];
    const int band = p->c->kind == MM_SPARSE_MAGNITUDE || p->c->kind == MM_SPARSE_OUTLIERS;
    /* both bounds at one value: one set of equal elements, counted by both */
    const int bounds = band ? (j->rule[0].rule.thr == j->rule[1].rule.thr ? 1 : 2) : 0;
    uint64_t left[2] = {j->keep[0], j->keep[1]};
    double l1 = 0, kept = 0;
    for (uint64_t task = 0; task < p->ntasks; task++) {
        const task_part *part = &parts_of(p, task)[i];
        double s = part->l1_kept;
        for (int b = 0; b < bounds; b++)
            s += equal_share(part->equal[b], &left[b], j->value[b]);
        l1 += part->l1;
        kept += s;
    }
    p->st[i].l1 = l1;
    p->st[i].l1_kept = kept;
}

/* -v: "pre-pass of 'NAME' (METHOD): 1.234 s, 2 passes (0.800 + 0.434 s, the last over 52%), cuts
 * counted in the selection pass 2, by a locate pass 1". */
static void log_prepass(const prepass_ctx *p, double secs)
{
    char detail[160] = "", cuts[80] = "";
    size_t at = 0;
    for (int i = 0; i < p->passes && i < MAX_LOGGED && at < sizeof detail; i++)
        at += (size_t)snprintf(detail + at, sizeof detail - at, "%s%.3f", i ? " + " : "", p->pass_secs[i]);
    if (p->cuts_counted + p->cuts_located)
        snprintf(cuts, sizeof cuts, ", cuts counted in the selection pass %d, by a locate pass %d", p->cuts_counted,
                 p->cuts_located);
    mm_log_debug("pre-pass of '%s' (%s): %.3f s, %d pass%s (%s s, the last over %.0f%%)%s", p->t->name,
                 p->t->method->name, secs, p->passes, p->passes == 1 ? "" : "es", detail,
                 p->t->numel ? 100.0 * (double)p->streamed / (double)p->t->numel : 100.0, cuts);
}

/* The selectors of every model of a band kind (they bound the threads: setup_passes). */
static int begin_selections(prepass_ctx *p)
{
    int rc = 0;
    if (p->c->kind == MM_SPARSE_MAGNITUDE || p->c->kind == MM_SPARSE_OUTLIERS)
        for (size_t i = 0; i < p->t->ninputs && rc == 0; i++)
            if (active(p, i))
                rc = band_begin(p, i);
    return rc;
}

static void prepass_free(prepass_ctx *p)
{
    for (size_t i = 0; i < p->t->ninputs; i++) {
        mm_selector_free(p->job[i].sel[0]);
        mm_selector_free(p->job[i].sel[1]);
    }
    pthread_mutex_destroy(&p->lock);
    free(p->sample);
    free(p->win);
    free(p->win_counts);
    free(p->win_last);
    free(p->parts);
    free(p->done);
    free(p->workers);
    free(p);
}

int mm_sparse_prepass(const mm_out_tensor *t, const mm_sparse_cfg *c, mm_sparse_stats *st)
{
    prepass_ctx *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->t = t;
    p->c = c;
    p->st = st;
    p->rescale = rescaling(t, c);
    atomic_init(&p->next, 0);
    atomic_init(&p->stop, 0);
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return -ENOMEM;
    }
    memset(st, 0, t->ninputs * sizeof *st);
    for (size_t i = 0; i < t->ninputs; i++) {
        st[i].lo = st[i].hi = mm_rule_all();
        st[i].factor = 1.0f;
    }
    const double t0 = seconds_now();
    /* The first pass reads every input front to back: the disk works on all of them while we compute. */
    mm_engine_prefetch(t, 0, t->numel);
    int rc = begin_selections(p);
    if (rc == 0)
        rc = setup_passes(p);
    if (rc == 0 && (c->kind == MM_SPARSE_MAGNITUDE || c->kind == MM_SPARSE_OUTLIERS))
        rc = band_prepass(p);
    else if (rc == 0 && p->rescale)
        rc = run_pass(p, sums_chunk, NULL, p->base_bit | p->models);
    for (size_t i = 0; i < t->ninputs && rc == 0 && p->rescale; i++) {
        if (!active(p, i))
            continue;
        finish_sums(p, i);
        st[i].factor = rescale_factor(work_dtype(t, c), st[i].l1, st[i].l1_kept);
    }
    log_prepass(p, seconds_now() - t0);
    prepass_free(p);
    return rc;
}
