/* The generalised task-arithmetic family (B2.8, B2.9): task_arithmetic, ties, dare_ties, dare_linear,
 * breadcrumbs, breadcrumbs_ties, della, della_linear. One kernel for all of them:
 *   tau_i = round(X_i - B); tau'_i = sparsified tau_i (sparsify.c); delta_i = round(w_i * tau'_i);
 *   consensus (sum): S = round(sum_i delta_i), s = S >= 0 ? +1 : -1, m_i = sign(delta_i) == s,
 *                    num = round(sum_i m_i delta_i), den = round(sum_i m_i w_i) (0 -> 1) per element;
 *   otherwise:       num = round(sum_i delta_i), den = round(sum_i w_i) (|den| < 1e-8 -> 1);
 *   normalize: num = round(num / den); lambda != 1: num = round(num * lambda); out = round(B + num).
 * Sums over models accumulate in float32 in input order and round once (D3). `int8_mask` only
 * changes the dtype of mergekit's sign mask, not a value, so it is accepted and has no effect.
 * task_arithmetic is the case without sparsifier and consensus: the same ops as before this family
 * shared its kernel, so its bytes did not change. */
#include <stdatomic.h>

#include "method_internal.h"
#include "sparsify.h"

enum { G_NORMALIZE, G_RESCALE, G_INT8_MASK, G_LAMBDA };
enum { M_WEIGHT, M_DENSITY, M_EXTRA };

/* Global parameters; only the defaults of normalize and rescale differ between methods (B2.8). */
#define GTA_GPARAMS(var, normalize, rescale)                                                           \
    static const mm_param_def var[] = {{"normalize", MM_PT_BOOL, 0, normalize},                        \
                                       {"rescale", MM_PT_BOOL, 0, rescale},                            \
                                       {"int8_mask", MM_PT_BOOL, 0, 0},                                \
                                       {"lambda", MM_PT_NUM, 0, 1.0}}
GTA_GPARAMS(g_plain, 0, 0);
GTA_GPARAMS(g_normalize, 1, 0);
GTA_GPARAMS(g_rescale, 0, 1);
GTA_GPARAMS(g_both, 1, 1);

static const mm_param_def m_plain[] = {{"weight", MM_PT_NUM, 1, NAN}, {"density", MM_PT_NUM, 0, 1.0}};
static const mm_param_def m_gamma[] = {
    {"weight", MM_PT_NUM, 1, NAN}, {"density", MM_PT_NUM, 0, 1.0}, {"gamma", MM_PT_NUM, 0, 0.01}};
static const mm_param_def m_epsilon[] = {
    {"weight", MM_PT_NUM, 1, NAN}, {"density", MM_PT_NUM, 0, 1.0}, {"epsilon", MM_PT_NUM, 0, 0.15}};

/* What distinguishes the methods besides their parameter defaults. */
typedef struct gta_def {
    const mm_method *method;
    mm_sparse_kind kind;
    int consensus;
} gta_def;

static const gta_def defs[] = {
    {&mm_method_task_arithmetic, MM_SPARSE_NONE, 0},   {&mm_method_ties, MM_SPARSE_MAGNITUDE, 1},
    {&mm_method_dare_ties, MM_SPARSE_RANDOM, 1},       {&mm_method_dare_linear, MM_SPARSE_RANDOM, 0},
    {&mm_method_breadcrumbs, MM_SPARSE_OUTLIERS, 0},   {&mm_method_breadcrumbs_ties, MM_SPARSE_OUTLIERS, 1},
    {&mm_method_della, MM_SPARSE_DELLA, 1},            {&mm_method_della_linear, MM_SPARSE_DELLA, 0},
};

static const gta_def *def_of(const mm_out_tensor *t, mm_sparse_cfg *cfg)
{
    const gta_def *d = &defs[0];
    for (size_t i = 0; i < MM_COUNT(defs); i++)
        if (defs[i].method == t->method)
            d = &defs[i];
    *cfg = (mm_sparse_cfg){.kind = d->kind, .density = M_DENSITY, .extra = M_EXTRA, .rescale = G_RESCALE};
    return d;
}

static int gta_prepare(mm_out_tensor *t, mm_err *err)
{
    mm_sparse_cfg cfg;
    def_of(t, &cfg);
    mm_method_round_weights(t, M_WEIGHT);
    float div = mm_method_weight_sum(t, t->base);
    t->kc[MM_KC_DIV] = fabsf(div) < 1e-8f ? 1.0f : div;
    return mm_sparse_check(t, &cfg, err);
}

static size_t gta_stats_size(const mm_out_tensor *t)
{
    mm_sparse_cfg cfg;
    def_of(t, &cfg);
    return mm_sparse_stats_size(t, &cfg);
}

static int gta_prepass(const mm_out_tensor *t, void *stats)
{
    mm_sparse_cfg cfg;
    def_of(t, &cfg);
    return mm_sparse_prepass(t, &cfg, stats);
}

/* Buffers of one block of the kernel (a part of the chunk small enough for every model's delta). */
typedef struct gta_block {
    const mm_kernel_args *a; /* the block: e0, n and inputs shifted from the chunk */
    const mm_sparse_cfg *cfg;
    const uint32_t *bits;     /* DELLA's phase-A words for the block, else NULL */
    float *delta;             /* nonbase * stride: round(w_i * tau'_i) of each model other than the base */
    size_t stride;
    float *sum, *den;         /* consensus S (then its sign, sign_of) and divisor */
} gta_block;

/* delta_j = round(w_i * tau'_i) for every input i other than the base (j counts them). */
MM_VECTOR_LOOP static void weighted_deltas(const gta_block *g)
{
    const mm_kernel_args *a = g->a;
    const mm_out_tensor *t = a->t;
    float *d = g->delta;
    for (size_t i = 0; i < t->ninputs; i++) {
        if ((int)i == t->base)
            continue;
        mm_task_vector(a, i, d);
        mm_sparse_apply(a, g->cfg, i, g->bits, d);
        const float w = t->kc[i];
        MM_ROUNDED_LOOP(t->comp, d, a->n, k, w * d[k]);
        d += g->stride;
    }
}

/* acc = round(sum_j delta_j): float32 accumulation in model order from +0.0 (so that a sum of -0.0
 * is +0.0, as torch's), one rounding, fused with the last addition. */
MM_VECTOR_LOOP static void model_sum(const gta_block *g, size_t nonbase, float *acc)
{
    const size_t n = g->a->n;
    memset(acc, 0, n * sizeof *acc);
    for (size_t j = 0; j + 1 < nonbase; j++) {
        const float *d = g->delta + j * g->stride;
        for (size_t k = 0; k < n; k++)
            acc[k] += d[k];
    }
    const float *last = g->delta + (nonbase - 1) * g->stride;
    MM_ROUNDED_LOOP(g->a->t->comp, acc, n, k, acc[k] + last[k]);
}

static inline uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* S >= 0 ? +1.0 : -1.0, where -0.0 counts as >= 0 and NaN as -1 (mergekit: the sign of S with 0 as +1;
 * NaN compares false). Once per element, for all models. Bit patterns and integer selects throughout:
 * GCC 12 does not vectorise a loop with a float compare. */
static inline float sign_of(float s)
{
    const uint32_t sb = bits_of(s);
    return float_of(sb <= 0x7f800000u || sb == 0x80000000u ? 0x3f800000u : 0xbf800000u);
}

/* get_mask(method="sum"): sign(delta_i) == sg (sign_of), as 1.0 or 0.0. A delta of 0 (sign 0) never
 * matches, nor does NaN (sign NaN); an infinity matches by its sign. */
static inline float agrees(float delta, float sg)
{
    const uint32_t d = bits_of(delta);
    const uint32_t one = ((d & 0x7fffffffu) - 1u) < 0x7f800000u ? 0x3f800000u : 0u; /* nonzero, not NaN */
    return float_of((d ^ bits_of(sg)) >> 31 ? 0u : one);
}

/* Sign consensus: acc = round(sum m_j delta_j), divided per element by round(sum m_j w_j) (0 -> 1)
 * when normalizing. The products with the 0/1 mask are exact, as in torch. */
MM_VECTOR_LOOP static void mix_consensus(const gta_block *g, size_t nonbase, float *acc)
{
    const mm_out_tensor *t = g->a->t;
    const size_t n = g->a->n;
    float *sum = g->sum, *den = g->den;
    model_sum(g, nonbase, sum);
    for (size_t k = 0; k < n; k++) { /* each element's sign, once for all models; the sums start at +0.0 */
        sum[k] = sign_of(sum[k]);
        acc[k] = den[k] = 0.0f;
    }
    size_t j = 0;
    for (size_t i = 0; i < t->ninputs; i++) {
        if ((int)i == t->base)
            continue;
        const float w = t->kc[i], *d = g->delta + j++ * g->stride;
        for (size_t k = 0; k < n; k++) {
            const float m = agrees(d[k], sum[k]);
            acc[k] += d[k] * m;
            den[k] += w * m;
        }
    }
    if (t->gvals[G_NORMALIZE] == 0) {
        mm_vround(t->comp, acc, n);
    } else if (t->comp == MM_DT_BF16) { /* the three roundings in one pass */
        for (size_t k = 0; k < n; k++) {
            const float a = mm_round_bf16(acc[k]), dn = mm_round_bf16(den[k]);
            acc[k] = mm_round_bf16(a / (dn + (float)(dn == 0))); /* a divisor of 0 becomes 1 */
        }
    } else {
        mm_vround(t->comp, acc, n);
        mm_vround(t->comp, den, n);
        MM_ROUNDED_LOOP(t->comp, acc, n, k, acc[k] / (den[k] + (float)(den[k] == 0)));
    }
}

/* Without consensus: acc = round(sum_j delta_j), divided by the rounded weight sum when normalizing. */
MM_VECTOR_LOOP static void mix_sum(const gta_block *g, size_t nonbase, float *acc)
{
    const mm_out_tensor *t = g->a->t;
    const size_t n = g->a->n;
    model_sum(g, nonbase, acc);
    if (t->gvals[G_NORMALIZE] != 0) {
        const float div = t->kc[MM_KC_DIV];
        MM_ROUNDED_LOOP(t->comp, acc, n, k, acc[k] / div);
    }
}

/* One block: mix the deltas, then lambda and the base. */
MM_VECTOR_LOOP static void gta_block_run(const gta_block *g, int consensus)
{
    const mm_kernel_args *a = g->a;
    const mm_out_tensor *t = a->t;
    const size_t n = a->n, nonbase = t->ninputs - 1;
    const float *b = a->in[t->base];
    float *acc = a->out;
    weighted_deltas(g);
    if (consensus)
        mix_consensus(g, nonbase, acc);
    else
        mix_sum(g, nonbase, acc);
    if (t->gvals[G_LAMBDA] != 1.0) {
        const float lam = (float)t->gvals[G_LAMBDA];
        MM_ROUNDED_LOOP(t->comp, acc, n, k, acc[k] * lam);
    }
    MM_ROUNDED_LOOP(t->comp, acc, n, k, b[k] + acc[k]);
}

/* The chunk is cut into blocks for which every model's delta fits in the scratch space, so each
 * delta is computed once: blocks of `room / (models + 2)` elements (the deltas, S and the divisor).
 * DELLA first draws its masks for the whole chunk. */
static void gta_kernel(const mm_kernel_args *a)
{
    const mm_out_tensor *t = a->t;
    const size_t n = a->n;
    if (t->ninputs == 1) { /* no task vector: mergekit returns the base as it is */
        memcpy(a->out, a->in[t->base], n * sizeof *a->out);
        return;
    }
    mm_sparse_cfg cfg;
    const gta_def *def = def_of(t, &cfg);
    float *room = a->scratch;
    size_t room_len = MM_KERNEL_SCRATCH * n;
    const uint32_t *bits = NULL;
    if (cfg.kind == MM_SPARSE_DELLA) {
        /* Phase A uses all of scratch (the row sort), so the words go to `out` first; then they move
         * to scratch and `out` is reused for floats. The fences keep the compiler from moving float
         * stores across the word accesses (different types, so it may assume they do not alias). */
        mm_sparse_masks(a, &cfg, (uint32_t *)(void *)a->out);
        atomic_signal_fence(memory_order_seq_cst);
        memcpy(room, a->out, n * sizeof *room);
        atomic_signal_fence(memory_order_seq_cst);
        bits = (const uint32_t *)(const void *)room;
        room += n;
        room_len -= n;
    }
    const size_t nonbase = t->ninputs - 1;
    size_t stride = room_len / (nonbase + 2);
    /* Blocks of at most BLOCK elements keep the working set (inputs and buffers) in the L1 cache:
     * each whole-array op then costs a fraction of what an L2-bound one does. */
    enum { BLOCK = 1024 };
    stride = stride < BLOCK ? stride : BLOCK;
    /* A tiny chunk (a few elements at a tensor's end) may not leave room for one element per model. */
    enum { SMALL = 16 };
    float small[(MM_MAX_INPUTS + 2) * SMALL];
    if (stride < SMALL) {
        room = small;
        stride = SMALL;
    }
    const float *in[MM_MAX_INPUTS];
    for (size_t off = 0; off < n; off += stride) {
        mm_kernel_args sub = *a;
        for (size_t i = 0; i < t->ninputs; i++)
            in[i] = a->in[i] + off;
        sub.in = in;
        sub.e0 = a->e0 + off;
        sub.n = n - off < stride ? n - off : stride;
        sub.out = a->out + off;
        sub.scratch = NULL;
        gta_block g = {.a = &sub, .cfg = &cfg, .bits = bits ? bits + off : NULL, .delta = room, .stride = stride,
                       .sum = room + nonbase * stride, .den = room + (nonbase + 1) * stride};
        gta_block_run(&g, def->consensus);
    }
}

/* All of them need the base (task vectors), compute in its dtype, crop embeddings to its shape. */
#define GTA_METHOD(var, nm, g, m, al, rnd)                                                              \
    const mm_method var = {.name = nm, .implemented = 1, .gparams = g, .ngparams = MM_COUNT(g), .mparams = m, \
                           .nmparams = MM_COUNT(m), .needs_base = 1, .random = rnd, .dtype_rule = MM_DTR_BASE, \
                           .crop = MM_CROP_TO_BASE, .align = al, .prepare = gta_prepare,                 \
                           .stats_size = gta_stats_size, .prepass = gta_prepass, .kernel = gta_kernel}

GTA_METHOD(mm_method_task_arithmetic, "task_arithmetic", g_plain, m_plain, MM_ALIGN_NONE, 0);
/* Selections and Bernoulli masks decide each element alone (sparsify.h); DELLA ranks whole rows. */
GTA_METHOD(mm_method_ties, "ties", g_normalize, m_plain, MM_ALIGN_NONE, 0);
GTA_METHOD(mm_method_dare_ties, "dare_ties", g_rescale, m_plain, MM_ALIGN_NONE, 1);
GTA_METHOD(mm_method_dare_linear, "dare_linear", g_rescale, m_plain, MM_ALIGN_NONE, 1);
GTA_METHOD(mm_method_breadcrumbs, "breadcrumbs", g_plain, m_gamma, MM_ALIGN_NONE, 0);
GTA_METHOD(mm_method_breadcrumbs_ties, "breadcrumbs_ties", g_plain, m_gamma, MM_ALIGN_NONE, 0);
GTA_METHOD(mm_method_della, "della", g_both, m_epsilon, MM_ALIGN_ROWS, 1);
GTA_METHOD(mm_method_della_linear, "della_linear", g_rescale, m_epsilon, MM_ALIGN_ROWS, 1);
