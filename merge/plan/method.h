/* The merge methods: their names, parameters (with defaults, types, per-model or global), dtype rules
 * and elementwise kernels (docs/merge-contract.md D3). Methods of mergekit that are not implemented yet are
 * listed so their names give "not implemented yet" instead of "unknown". */
#ifndef MM_METHOD_H
#define MM_METHOD_H

#include <stddef.h>

#include "formats/dtype.h"
#include "base/util.h"

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

/* How the engine cuts a tensor into chunks for a method's kernel. Methods whose output at an element
 * depends on its whole row (della's ranks, per-row slerp, filter-wise model_stock, arcee_fusion's
 * softmax) get chunks of whole rows; the others any range (a selection threshold carries its own
 * tie-break index, select.h). A read of any other range is computed on the aligned range around it and
 * copied out. */
typedef enum { MM_ALIGN_NONE, MM_ALIGN_ROWS } mm_align;

/* One chunk of work: in[i][k] is element e0 + k of input i (source order; the output tensor's flat
 * numbering, crops applied) as a float32 holding a value of the computation dtype. A kernel writes
 * out[k] (rounded to the computation dtype). During a pre-pass the same structure describes a chunk of
 * the stream with out == NULL. */
typedef struct mm_kernel_args {
    const struct mm_out_tensor *t;
    const void *stats;      /* the tensor's statistics blob from the pre-pass; NULL without one */
    uint64_t e0;            /* flat index of element 0 of this chunk */
    uint64_t row_len;       /* elements per row: the last dimension (the whole tensor when 1-D) */
    const float *const *in;
    size_t n;
    float *out;
    float *scratch;         /* MM_KERNEL_SCRATCH * n floats the kernel may use */
} mm_kernel_args;
#define MM_KERNEL_SCRATCH 4

typedef struct mm_method {
    const char *name;
    int implemented;
    const mm_param_def *gparams; /* global parameters (evaluated against the output tensor name) */
    size_t ngparams;
    const mm_param_def *mparams; /* per-model parameters (evaluated against each input tensor name) */
    size_t nmparams;
    int needs_base;              /* the base model has a special role and must be among the inputs */
    int single_input;            /* exactly one input per output tensor (passthrough) */
    int random;                  /* uses the counter-based RNG (D6): the tensor name joins the recipe */
    mm_dtype_rule dtype_rule;
    mm_crop_rule crop;
    mm_align align;
    /* Plan-time checks and per-tensor constants (e.g. rounded weights); 0 or -errno with a message
     * (the planner adds the config position). Also where a method sets t->dtype when its output dtype
     * differs from the computation dtype (D8) — only when `out_dtype` is not set. May be NULL. */
    int (*prepare)(struct mm_out_tensor *t, mm_err *err);
    /* Statistics (docs/design.md "Recipes and blocks"): stats_size(t) bytes (0 or NULL: none) that
     * prepass fills by streaming over the inputs (mm_engine_stream, any number of passes, bounded
     * memory). The blob is plain bytes without pointers: it is stored in the cache under the recipe
     * hash and handed to every kernel call of that tensor. Computed once per tensor (single-flight). */
    size_t (*stats_size)(const struct mm_out_tensor *t);
    int (*prepass)(const struct mm_out_tensor *t, void *stats);
    void (*kernel)(const mm_kernel_args *a);
} mm_method;

/* The internal methods of mergekit-moe outputs (D20, merge/methods/method_moe.c), not merge_methods: an
 * expert tensor with noise (per-model parameters scale and noise), experts packed into one tensor (the same
 * parameters per input), and a router weight or zeros. */
extern const mm_method mm_method_moe_expert, mm_method_moe_packed, mm_method_moe_router;

/* The method called `name` (implemented or not), or NULL. */
const mm_method *mm_method_find(const char *name);
/* All known method names, for suggestions. */
const char *const *mm_method_names(size_t *n);

#endif
