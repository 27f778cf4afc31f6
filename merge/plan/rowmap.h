/* The embedding remap of D19 (mergekit's PermutedEmbeddings): with a tokenizer option, every input of an
 * embedding-like tensor is read as a [n_rows, cols] matrix whose row t belongs to output token t. The
 * planner decides, per row, where it comes from (this file); the engine reads rows that way
 * (merge/engine/rows.h). Nothing is materialised: a block of the output reads only the source rows of its
 * own rows, except padding rows, whose value is a per-input column mean computed once.
 *
 * Row t < n_vocab of input i: its own row own[i][t] when its model has the token and the token is not
 * forced; else def[t]: a `tokenizer: tokens:` entry's source (a model's row of the token, row token_id
 * or the row of `token` of a model, or zeros); else, when exactly one of the tensor's models has the
 * token, that model's row; when none has it, zeros (logged); when the base has it, the base's row; else
 * the mean of the rows of the models that have it, in input order, computed as torch does in the
 * remapped dtype: acc = round(acc + row) per model, then round(acc / count).
 * Rows n_vocab..n_rows (pad_to_multiple_of): the column mean of the input's remapped rows [0, n_vocab),
 * summed in double and rounded once (D4), where mergekit uses torch.mean (within one rounding).
 * The remapped dtype is the config's `dtype:`, else the first input's. */
#ifndef MM_ROWMAP_H
#define MM_ROWMAP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "base/sha256.h"
#include "plan.h"

typedef enum { MM_ROW_ZERO, MM_ROW_FROM, MM_ROW_MEAN } mm_row_kind;

typedef struct mm_rowdef {
    uint8_t kind;   /* mm_row_kind */
    uint8_t force;  /* the token's `tokens:` entry has force: true */
    uint32_t input; /* MM_ROW_FROM: index into the tensor's inputs */
    uint64_t arg;   /* MM_ROW_FROM: that input's row; MM_ROW_MEAN: bit i for each input i averaged */
} mm_rowdef;

typedef struct mm_rowmap {
    uint64_t n_vocab, n_rows, cols;
    mm_dtype dtype;            /* the remapped dtype */
    const int64_t **own;       /* [ninputs]: the vocabulary's permutation of each input's model (>= 0 or -1) */
    mm_rowdef *def;            /* [n_vocab] */
    size_t ninputs;
    _Atomic(float *) *pad;     /* [ninputs]: the padding row of each input, computed on first use */
    pthread_mutex_t pad_lock;
} mm_rowmap;

/* With p->vocab set and o an embedding-like tensor whose inputs are filled in: builds o->rowmap and sets
 * o's shape to [n_rows, cols] ([n_rows] for 1-D inputs such as a vocabulary-sized bias). Errors, with
 * the tensor and model named: inputs whose row lengths differ, a token at an id >= a model's vocab_size,
 * a row beyond an input's rows, a `tokens:` source that is not among the tensor's models, a token a
 * named source model does not have, a model_token id out of range. */
int mm_rowmap_build(const mm_plan *p, mm_out_tensor *o, mm_err *err);
void mm_rowmap_free(mm_rowmap *r);

/* The number of rows of every remapped embedding: the output vocabulary's length rounded up to
 * pad_to_multiple_of; config.json's vocab_size. */
uint64_t mm_rowmap_rows(const mm_plan *p);

/* Adds everything that determines the remapped rows to a recipe hash. */
void mm_rowmap_hash(mm_sha256 *s, const mm_rowmap *r);

#endif
