/* Private to config/: what config.c (the merge config) shares with moe.c (the mergekit-moe config) —
 * the walking context, messages that name the place, unknown-key warnings, model references and
 * dtypes. */
#ifndef MM_CONFIG_INTERNAL_H
#define MM_CONFIG_INTERNAL_H

#include "config.h"
#include "ytree.h"

typedef struct mm_cfg_ctx {
    mm_config *c;
    mm_err *err;
} mm_cfg_ctx;

/* The keys of one level of the schema, for unknown-key warnings (D11). */
typedef struct mm_cfg_level {
    const char *where; /* completes "unknown key 'x' ..." */
    const char *const *keys;
    size_t nkeys;
} mm_cfg_level;

/* The position of node n (the start of the file when n is NULL). */
mm_srcpos mm_cfg_pos(const mm_cfg_ctx *x, const mm_ynode *n);
/* Sets x->err to "<file>:<line>:<col>: <message>" at node n and returns code. */
int mm_cfg_fail(const mm_cfg_ctx *x, const mm_ynode *n, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Present and not null: pydantic's Optional fields treat `key:` with nothing after it as unset. */
int mm_cfg_given(const mm_ynode *n);
/* A node as it reads in a message: a scalar's text in quotes, otherwise its kind. */
const char *mm_cfg_shown(const mm_ynode *n, char *buf, size_t len);
/* Warns about every key of `map` that `lv` does not have (D11), with a hint where it belongs. */
void mm_cfg_check_keys(const mm_cfg_ctx *x, const mm_ynode *map, const mm_cfg_level *lv);
/* Reads and resolves the model reference at n (D14); need_weights: it must hold safetensors weights. */
int mm_cfg_load_ref(const mm_cfg_ctx *x, const mm_ynode *n, const char *key, int need_weights, mm_modelref *r);
/* Reads dtype key `key` of root when given (bfloat16, float16, float32 and their aliases). */
int mm_cfg_load_dtype(const mm_cfg_ctx *x, const mm_ynode *root, const char *key, mm_dtype *out, mm_srcpos *pos);
/* Frees what a model reference owns. */
void mm_cfg_free_ref(mm_modelref *r);

/* The mergekit-moe config at root (moe.c): fills x->c->moe, base_model and dtype. */
int mm_cfg_load_moe(const mm_cfg_ctx *x, const mm_ynode *root);
void mm_cfg_free_moe(mm_moe_def *m);

#endif
