/* Shared by the method files (merge/method_*.c); not a public interface. */
#ifndef MM_METHOD_INTERNAL_H
#define MM_METHOD_INTERNAL_H

#include <math.h>
#include <string.h>

#include "merge/engine/engine.h"
#include "merge/plan/method.h"
#include "formats/numeric.h"
#include "merge/plan/plan.h"


/* Slots of mm_out_tensor.kc used by the weighted methods: kc[i] is input i's weight rounded to the
 * computation dtype (D3: mergekit turns weights into a tensor of that dtype), kc[MM_KC_DIV] the divisor. */
#define MM_KC_DIV MM_MAX_INPUTS

/* Sum of rounded weights as torch computes `weights.sum(dim=0)`: float32 accumulation in model order,
 * rounded once. `skip` excludes one input (the base in task arithmetic); -1 excludes none. */
float mm_method_weight_sum(const mm_out_tensor *t, int skip);
/* kc[i] = input i's per-model parameter widx rounded to the computation dtype (0 when unset). */
void mm_method_round_weights(mm_out_tensor *t, size_t widx);

/* The method descriptors, one per file family. */
extern const mm_method mm_method_linear, mm_method_passthrough;
extern const mm_method mm_method_task_arithmetic, mm_method_ties, mm_method_dare_ties, mm_method_dare_linear,
    mm_method_breadcrumbs, mm_method_breadcrumbs_ties, mm_method_della, mm_method_della_linear;
extern const mm_method mm_method_slerp, mm_method_nuslerp, mm_method_multislerp, mm_method_karcher,
    mm_method_model_stock;
extern const mm_method mm_method_nearswap, mm_method_ram, mm_method_ramplus_tl, mm_method_sce,
    mm_method_arcee_fusion;

#endif
