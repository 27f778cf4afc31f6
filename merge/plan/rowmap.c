#include "rowmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "merge/plan/vocab.h"

/* The input that stands for model `model` among o's inputs (the first of a model given twice: both
 * read the same remapped matrix), or -1. */
static int input_of(const mm_out_tensor *o, size_t model)
{
    for (size_t i = 0; i < o->ninputs; i++)
        if (o->inputs[i].model_idx == model)
            return (int)i;
    return -1;
}

static uint64_t rows_of(const mm_input *in)
{
    return in->mt->st->ndim ? in->mt->st->shape[0] : 1;
}

static uint64_t cols_of(const mm_input *in)
{
    return in->mt->st->ndim >= 2 ? in->mt->st->shape[1] : 1;
}

/* The source of a `tokens:` entry as a row definition (mergekit's compute_default_embedding). */
static int entry_row(const mm_plan *p, const mm_out_tensor *o, const mm_tok_entry *e, uint64_t t, mm_rowdef *d,
                     mm_err *err)
{
    const mm_vocab *v = p->vocab;
    char pos[512];
    mm_srcpos_format(&e->pos, pos, sizeof pos);
    d->force = (uint8_t)e->force;
    if (e->kind == MM_TSRC_ZERO) {
        d->kind = MM_ROW_ZERO;
        return 0;
    }
    int in = -1;
    for (size_t m = 0; m < p->nmodels && in < 0; m++)
        if (mm_model_is(p->models[m], e->model.path, e->model.lora_path))
            in = input_of(o, m);
    if (in < 0)
        return mm_err_set(err, -EINVAL,
                          "%s: tokenizer.tokens['%s'] takes its row from model '%s', which is not one of the models "
                          "of tensor '%s' (name one of its models)",
                          pos, e->token, e->model.ref, o->name);
    size_t m = o->inputs[in].model_idx;
    d->kind = MM_ROW_FROM;
    d->input = (uint32_t)in;
    if (e->kind == MM_TSRC_MODEL) {
        if (v->perm[m][t] < 0)
            return mm_err_set(err, -EINVAL,
                              "%s: tokenizer.tokens['%s']: model '%s' has no token '%s' to take the row from (give "
                              "another source, or {kind: model_token, model: ..., token_id: N})",
                              pos, e->token, e->model.ref, e->token);
        d->arg = (uint64_t)v->perm[m][t];
        return 0;
    }
    long long id = e->token_id;
    if (e->token_text) {
        const mm_tokenizer *tok = v->tok[m] ? v->tok[m] : v->tok[v->base];
        id = mm_tokenizer_id(tok, e->token_text, strlen(e->token_text));
        if (id < 0)
            return mm_err_set(err, -EINVAL,
                              "%s: tokenizer.tokens['%s']: model '%s' has no token '%s' (give its row with token_id: N "
                              "instead)",
                              pos, e->token, e->model.ref, e->token_text);
    }
    if ((uint64_t)id >= rows_of(&o->inputs[in]))
        return mm_err_set(err, -EINVAL,
                          "%s: tokenizer.tokens['%s']: token_id %lld is out of range for model '%s', whose '%s' has "
                          "%llu rows (give an id below %llu)",
                          pos, e->token, id, e->model.ref, o->inputs[in].mt->name,
                          (unsigned long long)rows_of(&o->inputs[in]), (unsigned long long)rows_of(&o->inputs[in]));
    d->arg = (uint64_t)id;
    return 0;
}

/* mergekit's assign_embedding_sources for a token without a `tokens:` entry. `zeros` counts the tokens
 * no model has. */
static void default_row(const mm_plan *p, const mm_out_tensor *o, uint64_t t, mm_rowdef *d, size_t *zeros)
{
    uint64_t mask = 0;
    size_t count = 0, only = 0;
    for (size_t i = 0; i < o->ninputs; i++)
        if (input_of(o, o->inputs[i].model_idx) == (int)i && p->vocab->perm[o->inputs[i].model_idx][t] >= 0) {
            mask |= 1ull << i;
            count++;
            only = i;
        }
    d->kind = MM_ROW_MEAN;
    d->arg = mask;
    if (count == 0) {
        d->kind = MM_ROW_ZERO;
        ++*zeros;
    } else if (count == 1 || (o->base >= 0 && (mask >> input_of(o, o->inputs[o->base].model_idx) & 1))) {
        size_t i = count == 1 ? only : (size_t)input_of(o, o->inputs[o->base].model_idx);
        d->kind = MM_ROW_FROM;
        d->input = (uint32_t)i;
        d->arg = (uint64_t)p->vocab->perm[o->inputs[i].model_idx][t];
    }
}

/* Every row the permutations name must exist: ids >= a model's vocab_size are mergekit's KeyError, rows
 * beyond the tensor its IndexError. */
static int check_perms(const mm_plan *p, const mm_out_tensor *o, mm_err *err)
{
    const mm_vocab *v = p->vocab;
    for (size_t i = 0; i < o->ninputs; i++) {
        size_t m = o->inputs[i].model_idx;
        uint64_t rows = rows_of(&o->inputs[i]);
        for (size_t t = 0; t < v->n_tokens; t++) {
            int64_t r = v->perm[m][t];
            size_t len;
            const char *tok = mm_tokenizer_token(v->out, (long)t, &len);
            if (r == MM_VOCAB_BEYOND)
                return mm_err_set(err, -EINVAL,
                                  "tensor '%s': token '%.*s' of the output vocabulary is in the tokenizer of model '%s' "
                                  "at an id beyond its vocab_size in config.json, so that model has no row for it (fix "
                                  "the model's config.json vocab_size, or remove the token from its tokenizer)",
                                  o->name, (int)(len > 200 ? 200 : len), tok, p->model_refs[m]);
            if (r >= 0 && (uint64_t)r >= rows)
                return mm_err_set(err, -EINVAL,
                                  "tensor '%s' of model '%s' has %llu rows, but its tokenizer puts token '%.*s' at id "
                                  "%lld (the tokenizer and the weights do not belong together)",
                                  o->name, p->model_refs[m], (unsigned long long)rows, (int)(len > 200 ? 200 : len),
                                  tok, (long long)r);
        }
    }
    return 0;
}

uint64_t mm_rowmap_rows(const mm_plan *p)
{
    uint64_t n = p->vocab->n_tokens, pad = (uint64_t)p->cfg->pad_to_multiple_of;
    return pad && n % pad ? n + pad - n % pad : n;
}

int mm_rowmap_build(const mm_plan *p, mm_out_tensor *o, mm_err *err)
{
    const mm_vocab *v = p->vocab;
    const mm_config *cfg = p->cfg;
    uint64_t cols = cols_of(&o->inputs[0]);
    for (size_t i = 0; i < o->ninputs; i++) {
        if (o->inputs[i].mt->st->ndim > 2 || o->inputs[i].mt->st->ndim != o->inputs[0].mt->st->ndim ||
            cols_of(&o->inputs[i]) != cols) {
            char a[128], b[128];
            mm_st_shape_text(o->inputs[0].mt->st, a, sizeof a);
            mm_st_shape_text(o->inputs[i].mt->st, b, sizeof b);
            return mm_err_set(err, -EINVAL,
                              "tensor '%s': shape %s in model '%s' but %s in model '%s': embeddings remapped to the "
                              "output vocabulary must have rows of one length (the models must have the same hidden "
                              "size)",
                              o->name, a, p->model_refs[o->inputs[0].model_idx], b,
                              p->model_refs[o->inputs[i].model_idx]);
        }
        if (!mm_dtype_is_computable(o->inputs[i].mt->st->dtype))
            return mm_err_set(err, -EINVAL, "tensor '%s' of model '%s' has dtype %s; embeddings are remapped in F32, "
                              "F16 or BF16 only", o->name, p->model_refs[o->inputs[i].model_idx],
                              mm_dtype_name(o->inputs[i].mt->st->dtype));
    }
    int rc = check_perms(p, o, err);
    if (rc < 0)
        return rc;
    mm_rowmap *r = mm_xcalloc(1, sizeof *r);
    o->rowmap = r;
    pthread_mutex_init(&r->pad_lock, NULL);
    r->n_vocab = v->n_tokens;
    r->n_rows = mm_rowmap_rows(p);
    r->cols = cols;
    r->dtype = cfg->dtype != MM_DT_NONE ? cfg->dtype : o->inputs[0].mt->st->dtype;
    r->ninputs = o->ninputs;
    r->own = mm_xcalloc(o->ninputs, sizeof *r->own);
    r->pad = mm_xcalloc(o->ninputs, sizeof *r->pad);
    for (size_t i = 0; i < o->ninputs; i++)
        r->own[i] = v->perm[o->inputs[i].model_idx];
    r->def = mm_xcalloc(r->n_vocab ? r->n_vocab : 1, sizeof *r->def);
    unsigned char *given = mm_xcalloc(r->n_vocab ? r->n_vocab : 1, 1);
    for (size_t k = 0; k < cfg->ntokens && rc == 0; k++) {
        const mm_tok_entry *e = &cfg->tokens[k];
        int t = mm_tokenizer_id(v->out, e->token, strlen(e->token));
        if (t < 0)
            continue; /* cannot happen: every entry was added to the output vocabulary */
        rc = entry_row(p, o, e, (uint64_t)t, &r->def[t], err);
        given[t] = 1;
    }
    size_t zeros = 0;
    for (uint64_t t = 0; t < r->n_vocab && rc == 0; t++)
        if (!given[t])
            default_row(p, o, t, &r->def[t], &zeros);
    free(given);
    if (rc < 0)
        return rc;
    if (zeros)
        mm_log_warn("tensor '%s': %zu tokens of the output vocabulary are in none of its models; their rows are zeros",
                    o->name, zeros);
    o->ndim = o->inputs[0].mt->st->ndim;
    o->shape[0] = r->n_rows;
    if (o->ndim == 2)
        o->shape[1] = cols;
    o->numel = r->n_rows * cols;
    return 0;
}

void mm_rowmap_free(mm_rowmap *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->ninputs; i++)
        free(atomic_load(&r->pad[i]));
    free(r->pad);
    free(r->own);
    free(r->def);
    pthread_mutex_destroy(&r->pad_lock);
    free(r);
}

void mm_rowmap_hash(mm_sha256 *s, const mm_rowmap *r)
{
    mm_sha256_u64(s, r->n_vocab);
    mm_sha256_u64(s, r->n_rows);
    mm_sha256_u64(s, r->cols);
    mm_sha256_u64(s, (uint64_t)r->dtype);
    for (size_t i = 0; i < r->ninputs; i++)
        mm_sha256_update(s, r->own[i], r->n_vocab * sizeof *r->own[i]);
    /* The table as bytes: its padding is zero (the array is calloc'ed and filled field by field). */
    mm_sha256_update(s, r->def, r->n_vocab * sizeof *r->def);
}
