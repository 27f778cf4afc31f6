/* The merge methods: their names, parameters (with defaults, types, per-model or global), dtype rules
 * and elementwise kernels (MERGE-SPEC B2, D3). Methods of the spec that are not implemented yet are
 * listed so their names give "not implemented yet" instead of "unknown". */
#ifndef MM_METHOD_H
#define MM_METHOD_H

#include <stddef.h>

#include "dtype.h"
#include "util.h"

struct mm_out_tensor;

typedef enum { MM_PT_NUM, MM_PT_BOOL } mm_ptype;

typedef struct mm_param_def {
    const char *name;
    mm_ptype type;
    int required;
    double def;     /* default when not required (bools as 0/1); NAN means "no default: unset" */
} mm_param_def;

/* How the computation dtype is chosen when `dtype:` is not set (B3.2). */
typedef enum {
    MM_DTR_PROMOTE, /* torch promotion of all inputs (linear) */
    MM_DTR_BASE,    /* the base model's dtype (task-arithmetic family) */
    MM_DTR_SOURCE,  /* the single input's dtype (passthrough) */
} mm_dtype_rule;

/* How inputs of embedding tensors with different shapes are reconciled (B2 common rules). */
typedef enum { MM_CROP_NONE, MM_CROP_COMMON, MM_CROP_TO_BASE } mm_crop_rule;

/* One chunk of elementwise work: in[i][k] is element k of input i (source order) as a float32 holding
 * a value of the computation dtype; the kernel writes out[k] (also rounded to the computation dtype). */
typedef struct mm_kernel_args {
    const struct mm_out_tensor *t;
    const float *const *in;
    size_t n;
    float *out;
    float *scratch; /* n floats the kernel may use */
} mm_kernel_args;

typedef struct mm_method {
    const char *name;
    int implemented;
    const mm_param_def *gparams; /* global parameters (evaluated against the output tensor name) */
    size_t ngparams;
    const mm_param_def *mparams; /* per-model parameters (evaluated against each input tensor name) */
    size_t nmparams;
    int needs_base;              /* the base model has a special role and must be among the inputs */
    int single_input;            /* exactly one input per output tensor (passthrough) */
    mm_dtype_rule dtype_rule;
    mm_crop_rule crop;
    /* Plan-time checks and per-tensor constants (e.g. rounded weights); 0 or -errno with a message. */
    int (*prepare)(struct mm_out_tensor *t, mm_err *err);
    void (*kernel)(const mm_kernel_args *a);
} mm_method;

/* The method called `name` (implemented or not), or NULL. */
const mm_method *mm_method_find(const char *name);
/* All known method names, for suggestions. */
const char *const *mm_method_names(size_t *n);

#endif
