/* One decoder layer of the forward pass (merge/moe/forward.h): its weights, loaded as float32 and freed
 * as a unit, and its run over a whole batch. */
#ifndef MM_FWD_LAYER_H
#define MM_FWD_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "fwd_arch.h"

/* The weights of layer i. NULL for the parts the family does not have (biases, q/k norms, the Gemma 2/3
 * sandwich norms). Fused tensors (Phi-3) are views into one buffer. */
typedef struct mm_fwd_layer {
    float *in_norm, *attn_post_norm, *mlp_pre_norm, *mlp_post_norm, *q_norm, *k_norm;
    float *wq, *wk, *wv, *wo, *bq, *bk, *bv, *bo;
    float *wg, *wu, *wd, *bg, *bu, *bd;
    float *owned[24]; /* the buffers, freed by mm_fwd_layer_free */
    size_t cap[24];   /* their sizes in floats */
    size_t nowned;
} mm_fwd_layer;

/* Loads layer `i` of m as a describes it into l, reusing l's buffers from an earlier load (a zeroed l
 * has none): the layers of a model have the same sizes, and a fresh allocation of tens of MB per weight
 * per layer is page-faulted in each time (it was ~40% of a pass). 0 or -errno (mm_fwd_load's errors);
 * on error l's buffers are freed. */
int mm_fwd_layer_load(const mm_model *m, const mm_fwd_arch *a, size_t i, mm_fwd_layer *l, mm_err *err);
void mm_fwd_layer_free(mm_fwd_layer *l);

/* x [batch][seq][hidden] becomes the layer's output, in place. mask: [batch][seq] or NULL; window: the
 * layer's sliding window (0: none); rot: its RoPE for this seq. 0 or -ENOMEM. */
int mm_fwd_layer_run(const mm_fwd_arch *a, const mm_fwd_layer *l, size_t window, const mm_fwd_rot *rot,
                     float *x, size_t batch, size_t seq, const uint8_t *mask, size_t threads,
                     mm_err *err);

#endif
