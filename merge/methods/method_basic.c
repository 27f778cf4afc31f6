/* linear (B2.1) and passthrough (B2.2): elementwise, no statistics. */
#include <errno.h>

#include "method_internal.h"

/* ---- linear (B2.1) ---- */
enum { LIN_NORMALIZE };
enum { LIN_WEIGHT };
static const mm_param_def linear_g[] = {{"normalize", MM_PT_BOOL, 0, 1}};
static const mm_param_def linear_m[] = {{"weight", MM_PT_NUM, 1, NAN}};

static int linear_prepare(mm_out_tensor *t, mm_err *err)
{
    mm_method_round_weights(t, LIN_WEIGHT);
    t->kc[MM_KC_DIV] = mm_method_weight_sum(t, -1);
    if (t->gvals[LIN_NORMALIZE] != 0 && t->kc[MM_KC_DIV] == 0)
        return mm_err_set(err, -EINVAL,
                          "tensor '%s': the weights sum to 0 (after rounding to %s), so normalize would divide by "
                          "zero (change the weights or set `normalize: false`)",
                          t->name, mm_dtype_name(t->comp));
    return 0;
}

MM_VECTOR_LOOP static void linear_kernel(const mm_kernel_args *a)
{
    const mm_out_tensor *t = a->t;
    const mm_dtype dt = t->comp;
    const size_t n = a->n;
    float *acc = a->out;
    /* (weights * tensors).sum(dim=0): each product rounded, float32 sum in model order, rounded once. */
    memset(acc, 0, n * sizeof *acc);
    for (size_t i = 0; i < t->ninputs; i++)
        mm_vaxpy_round(dt, acc, a->in[i], t->kc[i], n);
    mm_vround(dt, acc, n);
    if (t->gvals[LIN_NORMALIZE] != 0) {
        const float div = t->kc[MM_KC_DIV];
        for (size_t k = 0; k < n; k++)
            acc[k] = acc[k] / div;
        mm_vround(dt, acc, n);
    }
}

/* ---- passthrough (B2.2) ---- */
enum { PT_SCALE };
static const mm_param_def passthrough_m[] = {{"scale", MM_PT_NUM, 0, NAN}};

static void passthrough_kernel(const mm_kernel_args *a)
{
    const mm_out_tensor *t = a->t;
    double scale = t->inputs[0].mvals[PT_SCALE];
    if (isnan(scale)) {
        memcpy(a->out, a->in[0], a->n * sizeof(float));
        return;
    }
    /* tensor * Python number: torch >= 2.1 multiplies by the number as float32, unrounded (D3). */
    const float s = (float)scale;
    for (size_t k = 0; k < a->n; k++)
        a->out[k] = a->in[0][k] * s;
    mm_vround(t->comp, a->out, a->n);
}

const mm_method mm_method_linear = {
    .name = "linear", .implemented = 1, .gparams = linear_g, .ngparams = MM_COUNT(linear_g), .mparams = linear_m,
    .nmparams = MM_COUNT(linear_m), .dtype_rule = MM_DTR_PROMOTE, .crop = MM_CROP_COMMON, .prepare = linear_prepare,
    .kernel = linear_kernel};

const mm_method mm_method_passthrough = {
    .name = "passthrough", .implemented = 1, .mparams = passthrough_m, .nmparams = MM_COUNT(passthrough_m),
    .single_input = 1, .dtype_rule = MM_DTR_SOURCE, .crop = MM_CROP_NONE, .kernel = passthrough_kernel};
