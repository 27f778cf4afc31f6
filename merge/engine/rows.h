/* Reading the remapped inputs of an embedding-like tensor (merge/plan/rowmap.h says which row comes
 * from where). Thread-safe: the padding rows are computed once per input under a lock and published
 * with release semantics; everything else is reads. */
#ifndef MM_ROWS_H
#define MM_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "merge/plan/plan.h"

/* Elements [e, e + n) of input i of t (t->rowmap set) as float32 values rounded to the remapped dtype.
 * raw: scratch of at least n * 8 bytes. The first read of a padding row computes that input's column
 * mean over its n_vocab remapped rows (a pass over the input). 0, or -EIO (an input could not be read
 * or changed: logged once per file) or -ENOMEM. */
int mm_rows_load(const mm_out_tensor *t, size_t i, uint64_t e, size_t n, unsigned char *raw, float *dst);

#endif
