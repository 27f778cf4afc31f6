/* The sparsifiers of the task-arithmetic family (mergekit's sparsify.py), block-wise: whatever needs the
 * whole tensor (magnitude thresholds, L1 sums) comes from a pre-pass into a statistics blob, and a
 * kernel chunk then decides every element alone.
 *
 * A kernel (method_gta.c) works on a chunk in two phases:
 *   A. DELLA only: mm_sparse_masks ranks whole rows and stores the keep bit of every element for every
 *      sparsified model, bit j of a 32-bit word per element for the j-th model other than the base
 *      (so at most MM_SPARSE_MAX_MODELS).
 *   B. mm_task_vector + mm_sparse_apply per model: tau' = tau * mask, rescaled; the mask comes from
 *      the statistics (selections), the generator (dare) or the phase-A bits (della).
 *
 * Tie and order rules (D5, D6, D9):
 *  - magnitude (ties): the k = floor(rho*N) largest |tau| over the whole tensor; among elements equal
 *    to the threshold the lower flat index is kept first.
 *  - outliers (breadcrumbs): ascending ranks [n_bot, N - n_top) of |tau|; at each of the two
 *    thresholds the lower flat index is kept first; n_top = 0 keeps [n_bot, N) (D9).
 *  - random (dare): keep iff u < p, u = mm_rng_uniform(seed, mm_rng_stream(tensor, input position),
 *    flat index), p = density rounded to the work dtype.
 *  - della: per row (the last dimension; a 1-D tensor is one row), rank r = 0..L-1 of |tau| ascending,
 *    equal magnitudes ranked by index (lower index, lower rank); p from r as mergekit computes it in
 *    the work dtype; then the same Bernoulli test as random. Difference: for 3-D tensors mergekit
 *    ranks along axis 1; here the last axis (kernel chunks are whole rows of the last dimension).
 *
 * A selection reaches the kernel as a rule per bound (select.h): the threshold key and one flat index
 * `cut` below which threshold-equal elements are kept. That is the "lower index first" rule for any
 * chunk alone, with no per-granule tie table and no chunk alignment. */
#ifndef MM_SPARSIFY_H
#define MM_SPARSIFY_H

#include <stdint.h>

#include "merge/plan/method.h"
#include "merge/plan/plan.h"
#include "select.h"

typedef enum {
    MM_SPARSE_NONE,      /* task_arithmetic */
    MM_SPARSE_MAGNITUDE, /* ties */
    MM_SPARSE_RANDOM,    /* dare_* */
    MM_SPARSE_OUTLIERS,  /* breadcrumbs* */
    MM_SPARSE_DELLA,     /* della* */
} mm_sparse_kind;

/* Which sparsifier a method uses and where its parameters are. */
typedef struct mm_sparse_cfg {
    mm_sparse_kind kind;
    size_t density; /* index of `density` in the method's per-model parameters */
    size_t extra;   /* index of `gamma` (outliers) or `epsilon` (della) */
    size_t rescale; /* index of `rescale` in the method's global parameters */
} mm_sparse_cfg;

/* What happens to one model's task vector in one tensor. */
typedef enum {
    MM_SP_KEEP, /* density >= 1: unchanged */
    MM_SP_ZERO, /* nothing kept (della density <= 0, dare density 0, breadcrumbs floor(rho*N) = 0) */
    MM_SP_MASK, /* masked, and rescaled when `rescale` */
} mm_sparse_action;

/* Statistics of one input (the blob is an array of these indexed by input position; the base's entry
 * is unused). Plain bytes: the blob is cached. */
typedef struct mm_sparse_stats {
    mm_select_rule lo, hi; /* magnitude band: inside lo (above a lower bound) and inside hi */
    double l1, l1_kept;    /* ||tau||_1 and ||tau * mask||_1 in double (when rescaling) */
    float factor;          /* the L1 rescale factor in the work dtype; 1 = unchanged */
    uint32_t reserved;
} mm_sparse_stats;

/* DELLA's limit: one bit per model in the phase-A words. */
#define MM_SPARSE_MAX_MODELS 32

/* Plan-time checks (B2.8/B2.9 errors): 0 or -EINVAL with a message naming the tensor and model. */
int mm_sparse_check(const mm_out_tensor *t, const mm_sparse_cfg *c, mm_err *err);
mm_sparse_action mm_sparse_action_of(const mm_out_tensor *t, const mm_sparse_cfg *c, size_t input);
/* Bytes of the statistics blob: 0 when no model needs statistics (nothing to select, no rescale). */
size_t mm_sparse_stats_size(const mm_out_tensor *t, const mm_sparse_cfg *c);
/* Fills st[ninputs] by streaming passes over the inputs. Returns 0, -EIO or -ENOMEM. */
int mm_sparse_prepass(const mm_out_tensor *t, const mm_sparse_cfg *c, mm_sparse_stats *st);

/* Phase A, DELLA only (its masks need whole rows): bits[k] (k < a->n) gets bit mm_sparse_bit(input)
 * set when element e0 + k of that input's task vector is kept. Uses a->scratch entirely. */
void mm_sparse_masks(const mm_kernel_args *a, const mm_sparse_cfg *c, uint32_t *bits);
/* Phase B: d (input `input`'s task vector for the elements a describes) becomes the sparsified task
 * vector. `bits`: the phase-A words of the same elements (DELLA). Only
 * a->t, a->stats, a->e0 and a->n are used, so a may describe part of a kernel chunk. */
void mm_sparse_apply(const mm_kernel_args *a, const mm_sparse_cfg *c, size_t input, const uint32_t *bits, float *d);

/* d[k] = x[k] - b[k] rounded to the computation dtype: input `input`'s task vector. */
void mm_task_vector(const mm_kernel_args *a, size_t input, float *d);
/* The bit of input `input` in the phase-A words. */
static inline unsigned mm_sparse_bit(const mm_out_tensor *t, size_t input)
{
    return (unsigned)input - ((int)input > t->base ? 1u : 0u);
}

#endif
