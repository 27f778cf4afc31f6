/* Weights of the forward pass (merge/moe/forward.h) read from a source model as float32: a whole tensor
 * of an expected shape, or some rows of one (the embedding rows of the prompt's ids). Values are the
 * model's as stored, an attached LoRA adapter's change included and rounded into the tensor's dtype, as
 * the merge engine reads them (merge/engine/engine.c). */
#ifndef MM_FWD_WEIGHTS_H
#define MM_FWD_WEIGHTS_H

#include <stddef.h>

#include "base/util.h"
#include "merge/plan/model.h"

/* The tensor `name` (heap, rows * cols floats, caller frees) checked to have shape [rows, cols], or
 * [rows] when cols is 0. Errors: -EINVAL (missing, other shape), -ENOTSUP (dtype), -EIO, -ENOMEM;
 * messages name the tensor. */
int mm_fwd_load(const mm_model *m, const char *name, size_t rows, size_t cols, float **out, mm_err *err);

/* The same into dst (rows * cols floats, or rows when cols is 0), which the caller owns. */
int mm_fwd_load_into(const mm_model *m, const char *name, size_t rows, size_t cols, float *dst, mm_err *err);

/* Row `row` of the 2-D tensor t (cols floats) into dst. */
int mm_fwd_load_row(const mm_model_tensor *t, size_t row, float *dst, mm_err *err);

#endif
