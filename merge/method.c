#include "method.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "numeric.h"
#include "plan.h"

/* Slots of mm_out_tensor.kc used by the weighted methods: kc[i] is input i's weight rounded to the
 * computation dtype (D3: mergekit turns weights into a tensor of that dtype), kc[KC_DIV] the divisor. */
#define KC_DIV MM_MAX_INPUTS

/* Sum of rounded weights as torch computes `weights.sum(dim=0)`: float32 accumulation in model order,
 * rounded once. `skip` excludes one input (the base in task arithmetic); -1 excludes none. */
static float weight_sum(const mm_out_tensor *t, int skip)
{
    float acc = 0.0f;
    for (size_t i = 0; i < t->ninputs; i++)
        if ((int)i != skip)
            acc += t->kc[i];
    return mm_round_to(t->comp, acc);
}

static void round_weights(mm_out_tensor *t, size_t widx)
{
    for (size_t i = 0; i < t->ninputs; i++)
        t->kc[i] = isnan(t->inputs[i].mvals[widx]) ? 0.0f : mm_round_to(t->comp, (float)t->inputs[i].mvals[widx]);
}

/* ---- linear (B2.1) ---- */
enum { LIN_NORMALIZE };
enum { LIN_WEIGHT };
static const mm_param_def linear_g[] = {{"normalize", MM_PT_BOOL, 0, 1}};
static const mm_param_def linear_m[] = {{"weight", MM_PT_NUM, 1, NAN}};

static int linear_prepare(mm_out_tensor *t, mm_err *err)
{
    round_weights(t, LIN_WEIGHT);
    t->kc[KC_DIV] = weight_sum(t, -1);
    if (t->gvals[LIN_NORMALIZE] != 0 && t->kc[KC_DIV] == 0)
        return mm_err_set(err, -EINVAL,
                          "tensor '%s': the weights sum to 0 (after rounding to %s), so normalize would divide by "
                          "zero (change the weights or set `normalize: false`)",
                          t->name, mm_dtype_name(t->comp));
    return 0;
}

static void linear_kernel(const mm_kernel_args *a)
{
    const mm_out_tensor *t = a->t;
    const mm_dtype dt = t->comp;
    const size_t n = a->n;
    float *acc = a->out, *prod = a->scratch;
    /* (weights * tensors).sum(dim=0): each product rounded, float32 sum in model order, rounded once. */
    memset(acc, 0, n * sizeof *acc);
    for (size_t i = 0; i < t->ninputs; i++) {
        const float w = t->kc[i], *x = a->in[i];
        for (size_t k = 0; k < n; k++)
            prod[k] = w * x[k];
        mm_vround(dt, prod, n);
        for (size_t k = 0; k < n; k++)
            acc[k] += prod[k];
    }
    mm_vround(dt, acc, n);
    if (t->gvals[LIN_NORMALIZE] != 0) {
        const float div = t->kc[KC_DIV];
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
    round_weights(t, TA_WEIGHT);
    float div = weight_sum(t, t->base);
    t->kc[KC_DIV] = fabsf(div) < 1e-8f ? 1.0f : div;
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
        const float div = t->kc[KC_DIV];
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

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define TODO(n) {.name = n}

static const mm_method methods[] = {
    {.name = "linear", .implemented = 1, .gparams = linear_g, .ngparams = N(linear_g), .mparams = linear_m,
     .nmparams = N(linear_m), .dtype_rule = MM_DTR_PROMOTE, .crop = MM_CROP_COMMON, .prepare = linear_prepare,
     .kernel = linear_kernel},
    {.name = "passthrough", .implemented = 1, .mparams = passthrough_m, .nmparams = N(passthrough_m),
     .single_input = 1, .dtype_rule = MM_DTR_SOURCE, .crop = MM_CROP_NONE, .kernel = passthrough_kernel},
    {.name = "task_arithmetic", .implemented = 1, .gparams = ta_g, .ngparams = N(ta_g), .mparams = ta_m,
     .nmparams = N(ta_m), .needs_base = 1, .dtype_rule = MM_DTR_BASE, .crop = MM_CROP_TO_BASE,
     .prepare = ta_prepare, .kernel = ta_kernel},
    TODO("slerp"), TODO("nuslerp"), TODO("multislerp"), TODO("karcher"), TODO("model_stock"),
    TODO("arcee_fusion"), TODO("nearswap"), TODO("sce"), TODO("ram"), TODO("ramplus_tl"), TODO("ties"),
    TODO("dare_ties"), TODO("dare_linear"), TODO("breadcrumbs"), TODO("breadcrumbs_ties"), TODO("della"),
    TODO("della_linear"),
};

const mm_method *mm_method_find(const char *name)
{
    for (size_t i = 0; i < N(methods); i++)
        if (strcmp(methods[i].name, name) == 0)
            return &methods[i];
    return NULL;
}

const char *const *mm_method_names(size_t *n)
{
    static const char *names[N(methods)];
    for (size_t i = 0; i < N(methods); i++)
        names[i] = methods[i].name;
    *n = N(methods);
    return names;
}
