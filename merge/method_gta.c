/* The generalised task-arithmetic family (B2.8, B2.9): task_arithmetic, ties, dare_ties, dare_linear,
 * breadcrumbs, breadcrumbs_ties, della, della_linear. */
#include <errno.h>

#include "method_internal.h"

/* ---- task_arithmetic (B2.8 without sparsification or consensus) ---- */
enum { TA_NORMALIZE, TA_RESCALE, TA_INT8_MASK, TA_LAMBDA };
enum { TA_WEIGHT, TA_DENSITY };
static const mm_param_def ta_g[] = {
    {"normalize", MM_PT_BOOL, 0, 0}, {"rescale", MM_PT_BOOL, 0, 0}, {"int8_mask", MM_PT_BOOL, 0, 0},
    {"lambda", MM_PT_NUM, 0, 1.0}};
static const mm_param_def ta_m[] = {{"weight", MM_PT_NUM, 1, NAN}, {"density", MM_PT_NUM, 0, 1.0}};

static int ta_prepare(mm_out_tensor *t, mm_err *err)
{
    (void)err;
    mm_method_round_weights(t, TA_WEIGHT);
    float div = mm_method_weight_sum(t, t->base);
    t->kc[MM_KC_DIV] = fabsf(div) < 1e-8f ? 1.0f : div;
    return 0;
}

static void ta_kernel(const mm_kernel_args *a)
{
    const mm_out_tensor *t = a->t;
    const mm_dtype dt = t->comp;
    const size_t n = a->n;
    const float *b = a->in[t->base];
    float *acc = a->out, *d = a->scratch;
    memset(acc, 0, n * sizeof *acc);
    for (size_t i = 0; i < t->ninputs; i++) {
        if ((int)i == t->base)
            continue;
        const float w = t->kc[i], *x = a->in[i];
        for (size_t k = 0; k < n; k++)
            d[k] = x[k] - b[k];          /* task vector */
        mm_vround(dt, d, n);
        for (size_t k = 0; k < n; k++)
            d[k] = w * d[k];             /* weighted */
        mm_vround(dt, d, n);
        for (size_t k = 0; k < n; k++)
            acc[k] += d[k];              /* float32 sum over models */
    }
    mm_vround(dt, acc, n);
    if (t->gvals[TA_NORMALIZE] != 0) {
        const float div = t->kc[MM_KC_DIV];
        for (size_t k = 0; k < n; k++)
            acc[k] = acc[k] / div;
        mm_vround(dt, acc, n);
    }
    if (t->gvals[TA_LAMBDA] != 1.0) {
        const float lam = (float)t->gvals[TA_LAMBDA];
        for (size_t k = 0; k < n; k++)
            acc[k] = acc[k] * lam;
        mm_vround(dt, acc, n);
    }
    for (size_t k = 0; k < n; k++)
        acc[k] = b[k] + acc[k];
    mm_vround(dt, acc, n);
}

const mm_method mm_method_task_arithmetic = {
    .name = "task_arithmetic", .implemented = 1, .gparams = ta_g, .ngparams = MM_N(ta_g), .mparams = ta_m,
    .nmparams = MM_N(ta_m), .needs_base = 1, .dtype_rule = MM_DTR_BASE, .crop = MM_CROP_TO_BASE,
    .prepare = ta_prepare, .kernel = ta_kernel};

/* Not implemented yet: their names give "not implemented yet" at mount time. */
const mm_method mm_method_ties = {.name = "ties"};
const mm_method mm_method_dare_ties = {.name = "dare_ties"};
const mm_method mm_method_dare_linear = {.name = "dare_linear"};
const mm_method mm_method_breadcrumbs = {.name = "breadcrumbs"};
const mm_method mm_method_breadcrumbs_ties = {.name = "breadcrumbs_ties"};
const mm_method mm_method_della = {.name = "della"};
const mm_method mm_method_della_linear = {.name = "della_linear"};
