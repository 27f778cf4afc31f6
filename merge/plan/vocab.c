/* The output vocabulary of a merge and each model's permutation (merge/plan/vocab.h), as mergekit's
 * tokenizer/build.py builds them (get_stripped_tokenizer, build_union_tokenizer, build_tokenizer);
 * tests/reference/tokenizer_eval.py build_vocabulary is the reference. Every tokenizer is an
 * mm_tokenizer, and every token added (stripped base, union, `tokens:`) goes through formats/tokvocab.c's
 * AddedVocabulary::add_tokens, so the ids here are the ids the `tokenizers` library would give. */
#include "vocab.h"

#include "formats/tokvocab.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* AddedToken(str) as the Python bindings make it for add_tokens(str): normalized, not special. */
static mm_tok_spec plain(const char *s, size_t len)
{
    return (mm_tok_spec){s, len, 0, 0, 0, 0, 1};
}

static mm_tok_spec spec_of(const mm_tok_added *a)
{
    return (mm_tok_spec){a->content, a->len, a->special, a->single_word, a->lstrip, a->rstrip, a->normalized};
}

static int has_file(const char *folder, const char *name)
{
    char *p = mm_path_join(folder, name);
    struct stat st;
    int r = stat(p, &st) == 0;
    free(p);
    return r;
}

/* The model's tokenizer, or *out = NULL when its folder has none (mergekit then assumes the base's). */
static int load(const char *ref, const char *folder, mm_tokenizer **out, mm_err *err)
{
    *out = NULL;
    int rc = mm_tokenizer_load(folder, out, err);
    if (rc == -ENOENT && !has_file(folder, "tokenizer.json") && !has_file(folder, "tokenizer.model"))
        return 0;
    if (rc < 0)
        mm_err_prefix(err, "tokenizer of model %s (fix its files or leave out the tokenizer option)", ref);
    return rc;
}

/* ---- stripping the base (get_stripped_tokenizer) ------------------------------------------------------ */

/* t without every token whose id >= size: the model's vocabulary entries and added tokens with such ids,
 * and the merges with such a part, are dropped from the serialized tokenizer, which is then read again
 * (Tokenizer.from_str: the model, then the remaining added tokens in id order in one add_tokens call).
 * A kept merge whose product is dropped is an error (from_str fails in mergekit). */
static int strip(const mm_vocab_model *m, const mm_tokenizer *t, size_t size, mm_tokenizer **out, mm_err *err)
{
    char q[160], q2[160], q3[160];
    const char *first = t->tokens[size];
    for (size_t id = size + 1; !first && id < t->id_end; id++)
        first = t->tokens[id];
    if (t->kind != MM_TOK_FAST || strcmp(t->model_type, "BPE") != 0)
        return mm_err_set(err, -EINVAL,
                          "base model %s (%s): its tokenizer has %zu ids, %s among them at or beyond its vocab_size "
                          "%zu, and mergekit strips those only from a BPE tokenizer.json, not from %s %s; fix: "
                          "make config.json's vocab_size cover every token id, or choose as base_model a model "
                          "whose tokenizer fits its vocab_size",
                          m->ref, m->folder, t->n_ids, mm_quote(q, sizeof q, first, strlen(first)), size,
                          t->kind == MM_TOK_FAST ? "a" : "a sentencepiece", t->model_type);
    cJSON *json = cJSON_Duplicate(t->tokenizer_json, 1);
    cJSON *model = cJSON_GetObjectItemCaseSensitive(json, "model");
    cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    size_t plen = cJSON_IsString(prefix) ? strlen(prefix->valuestring) : 0;
    mm_tokenizer *s = mm_xcalloc(1, sizeof *s);
    mm_buf joined = {0};
    char where[512];
    snprintf(where, sizeof where, "the stripped tokenizer of base model %s", m->ref);
    int rc = 0;
    s->kind = MM_TOK_FAST;
    s->model_type = mm_xstrdup("BPE");
    /* the model's vocabulary: the entries with ids < size (ids as the loader validated them) */
    mm_tokv_begin(s, (size_t)cJSON_GetArraySize(vocab));
    size_t kept = 0;
    for (cJSON *e = vocab->child, *next; e && rc == 0; e = next) {
        next = e->next;
        if ((size_t)e->valuedouble >= size) {
            cJSON_Delete(cJSON_DetachItemViaPointer(vocab, e));
            continue;
        }
        rc = mm_tokv_model_add(s, e->string, strlen(e->string), (uint64_t)e->valuedouble, where, err);
        kept++;
    }
    mm_tokv_model_done(s, kept);
    /* the merges: a stripped part drops the merge; a stripped product of a kept one is an error */
    for (cJSON *e = merges->child, *next; e && rc == 0; e = next) {
        next = e->next;
        const char *a, *b;
        size_t alen, blen;
        if (mm_tok_merge_parts(e, &a, &alen, &b, &blen) <= 0)
            continue;
        if (mm_tokenizer_id(s, a, alen) < 0 || mm_tokenizer_id(s, b, blen) < 0) {
            cJSON_Delete(cJSON_DetachItemViaPointer(merges, e));
            continue;
        }
        joined.len = 0; /* the product as BpeBuilder checks it: b without continuing_subword_prefix */
        mm_buf_append(&joined, a, alen);
        mm_buf_append(&joined, b + (blen >= plen ? plen : blen), blen >= plen ? blen - plen : 0);
        if (mm_tokenizer_id(s, joined.data, joined.len) < 0)
            rc = mm_err_set(err, -EINVAL,
                            "base model %s (%s): stripping the tokens at ids >= its vocab_size %zu removes %s but "
                            "keeps the merge %s %s that makes it (mergekit fails reloading the stripped "
                            "tokenizer); fix: make config.json's vocab_size cover every token id, or choose "
                            "another base_model",
                            m->ref, m->folder, size, mm_quote(q, sizeof q, joined.data, joined.len),
                            mm_quote(q2, sizeof q2, a, alen), mm_quote(q3, sizeof q3, b, blen));
        else
            s->nmerges++;
    }
    mm_buf_free(&joined);
    /* the added tokens with ids < size, re-added in id order in one call */
    mm_tok_spec *specs = mm_xcalloc(t->nadded + 1, sizeof *specs);
    size_t n = 0;
    for (size_t i = 0; i < t->nadded; i++)
        if ((size_t)t->added[i].id < size)
            specs[n++] = spec_of(&t->added[i]);
    if (rc == 0)
        rc = mm_tokv_add_tokens(s, specs, n, NULL, where, err);
    free(specs);
    if (rc < 0) {
        cJSON_Delete(json);
        mm_tokenizer_free(s);
        return rc;
    }
    mm_tokv_finish(s);
    cJSON_ReplaceItemInObjectCaseSensitive(json, "added_tokens", mm_tokv_added_json(s));
    s->tokenizer_json = json;
    s->tokenizer_config = t->tokenizer_config ? cJSON_Duplicate(t->tokenizer_config, 1) : NULL;
    s->chat_template = t->chat_template ? mm_xstrdup(t->chat_template) : NULL;
    s->bos_token = t->bos_token ? mm_xstrdup(t->bos_token) : NULL;
    s->eos_token = t->eos_token ? mm_xstrdup(t->eos_token) : NULL;
    *out = s;
    return 0;
}

/* ---- the union (build_union_tokenizer) ----------------------------------------------------------------- */

/* Adds to `res` (a copy of the stripped base) the tokens of the models in `order` (base first): with n =
 * a model's vocab_size (config, else its base_size; mergekit's `or`: 0 counts as none), every token of id
 * < n that is no added token of any model (id < n) nor a base token, as a plain token, in model id order
 * (one add_tokens call each, as mergekit; one already added is skipped as identical); then every added
 * token of id < n, the first definition of a content winning. */
static int add_union(mm_tokenizer *res, mm_tokenizer *const *tok, const mm_vocab_model *models, const size_t *order,
                     size_t norder, mm_err *err)
{
    const mm_tokenizer *base = tok[order[0]];
    size_t total = 0;
    for (size_t k = 0; k < norder; k++)
        total += tok[order[k]]->nadded;
    /* the set of added contents: an mm_tokenizer's hash, its "ids" the index into firsts */
    mm_tokenizer *seen = mm_xcalloc(1, sizeof *seen);
    const mm_tok_added **firsts = mm_xcalloc(total + 1, sizeof *firsts);
    size_t nfirst = 0, *lim = mm_xcalloc(norder, sizeof *lim);
    int rc = 0;
    mm_tokv_begin(seen, total);
    for (size_t k = 0; k < norder && rc == 0; k++) {
        const mm_tokenizer *t = tok[order[k]];
        long vs = models[order[k]].vocab_size;
        lim[k] = vs > 0 ? (size_t)vs : t->base_size;
        for (size_t i = 0; i < t->nadded && rc == 0; i++) {
            const mm_tok_added *a = &t->added[i];
            if ((size_t)a->id >= lim[k] || mm_tokenizer_id(seen, a->content, a->len) >= 0)
                continue;
            rc = mm_tokv_model_add(seen, a->content, a->len, nfirst, "union", err);
            firsts[nfirst++] = a;
        }
    }
    char where[64] = "the union tokenizer";
    for (size_t k = 0; k < norder && rc == 0; k++) {
        const mm_tokenizer *t = tok[order[k]];
        size_t end = lim[k] < t->id_end ? lim[k] : t->id_end;
        for (size_t id = 0; id < end && rc == 0; id++) {
            const char *s = t->tokens[id];
            size_t len = t->token_lens[id];
            if (!s || mm_tokenizer_id(seen, s, len) >= 0 || mm_tokenizer_id(base, s, len) >= 0)
                continue;
            mm_tok_spec p = plain(s, len);
            rc = mm_tokv_add_tokens(res, &p, 1, NULL, where, err);
        }
    }
    for (size_t i = 0; i < nfirst && rc == 0; i++) {
        mm_tok_spec p = spec_of(firsts[i]);
        rc = mm_tokv_add_tokens(res, &p, 1, NULL, where, err);
    }
    mm_tokenizer_free(seen);
    free(firsts);
    free(lim);
    return rc;
}

static void drop_json(mm_tokenizer *t)
{
    cJSON_Delete(t->tokenizer_json);
    t->tokenizer_json = NULL;
}

/* ---- the whole build --------------------------------------------------------------------------------- */

void mm_vocab_free(mm_vocab *v)
{
    if (!v)
        return;
    mm_tokenizer_free(v->out);
    for (size_t i = 0; v->tok && i <= v->nmodels; i++) /* slot nmodels: a source outside the merge */
        mm_tokenizer_free(v->tok[i]);
    for (size_t i = 0; v->perm && i < v->nmodels; i++)
        free(v->perm[i]);
    for (size_t i = 0; i < v->nstripped; i++)
        free(v->stripped[i]);
    free(v->tok);
    free(v->perm);
    free(v->stripped);
    free(v->donor_folder);
    free(v);
}

/* The output's ids must be 0..n-1: PermutedEmbeddings writes row id of a len(get_vocab()) table. */
static int check_no_holes(const mm_vocab *v, const char *source, mm_err *err)
{
    const mm_tokenizer *o = v->out;
    if (o->id_end == o->n_ids)
        return 0;
    size_t hole = 0;
    while (o->tokens[hole])
        hole++;
    return mm_err_set(err, -EINVAL,
                      "the output tokenizer (from %s) has %zu tokens but ids up to %zu, none at id %zu: its "
                      "embedding rows would have holes (mergekit fails with IndexError); fix: use a tokenizer "
                      "source whose ids run without gaps",
                      source, o->n_ids, o->id_end - 1, hole);
}

int mm_vocab_build(const mm_vocab_model *models, size_t n, size_t base, const mm_vocab_spec *spec, mm_vocab **out,
                   mm_err *err)
{
    mm_vocab *v = mm_xcalloc(1, sizeof *v);
    v->nmodels = n;
    v->base = base;
    v->tok = mm_xcalloc(n + 1, sizeof *v->tok);
    mm_tokenizer *loaded_base = NULL; /* the base as it loads, while the source may still need it */
    int rc = 0;
    char src_desc[512];
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = load(models[i].ref, models[i].folder, &v->tok[i], err);
        /* Only the base's and the source's files are written back (a 128K vocabulary is ~20 MB of
         * cJSON nodes): the others' go at once, so that the peak holds at most those two. */
        if (rc == 0 && v->tok[i] && i != base && (int)i != spec->source_model)
            drop_json(v->tok[i]);
    }
    if (rc == 0 && !v->tok[base])
        rc = mm_err_set(err, -ENOENT,
                        "base model %s (%s) has no tokenizer (tokenizer.json or tokenizer.model), which the "
                        "tokenizer option builds on; fix: add its tokenizer files or choose another base_model",
                        models[base].ref, models[base].folder);
    if (rc < 0)
        goto fail;
    /* strip the base of ids >= its vocab_size (config, else its number of ids; mergekit's `or`) */
    long bvs = models[base].vocab_size;
    size_t bsize = bvs > 0 ? (size_t)bvs : v->tok[base]->n_ids;
    for (size_t id = bsize; id < v->tok[base]->id_end; id++)
        if (v->tok[base]->tokens[id]) {
            v->stripped = mm_xrealloc(v->stripped, (v->nstripped + 1) * sizeof *v->stripped);
            v->stripped[v->nstripped++] = mm_xstrdup(v->tok[base]->tokens[id]);
        }
    if (v->nstripped) {
        mm_tokenizer *s = NULL;
        if ((rc = strip(&models[base], v->tok[base], bsize, &s, err)) < 0)
            goto fail;
        loaded_base = v->tok[base];
        v->tok[base] = s;
    }
    /* the output tokenizer */
    if (spec->source == MM_VOCAB_MODEL) {
        const mm_tokenizer *src;
        snprintf(src_desc, sizeof src_desc, "tokenizer source %s", spec->source_ref);
        v->donor = spec->source_model;
        if (spec->source_model < 0) {
            if ((rc = load(spec->source_ref, spec->source_folder, &v->tok[n], err)) < 0)
                goto fail;
            src = v->tok[n];
        } else {
            /* that model's tokenizer as it loads: the base unstripped */
            size_t sm = (size_t)spec->source_model;
            src = sm == base && loaded_base ? loaded_base : v->tok[sm];
        }
        if (!src) {
            rc = mm_err_set(err, -ENOENT,
                            "tokenizer source %s (%s) has no tokenizer (tokenizer.json or tokenizer.model); fix: "
                            "add its tokenizer files or choose another tokenizer source",
                            spec->source_ref, spec->source_folder);
            goto fail;
        }
        v->donor_folder = mm_xstrdup(spec->source_folder);
        v->donor_tok = spec->source_model < 0 ? v->tok[n] : v->tok[spec->source_model];
        rc = mm_tokv_copy(src, &v->out, err);
    } else {
        snprintf(src_desc, sizeof src_desc, "base model %s", models[base].ref);
        v->donor = (int)base;
        v->donor_folder = mm_xstrdup(models[base].folder);
        v->donor_tok = v->tok[base];
        rc = mm_tokv_copy(v->tok[base], &v->out, err);
        if (rc == 0 && spec->source == MM_VOCAB_UNION) {
            size_t *order = mm_xcalloc(n, sizeof *order), k = 0;
            order[k++] = base;
            for (size_t i = 0; i < n; i++)
                if (i != base && v->tok[i])
                    order[k++] = i;
            rc = add_union(v->out, v->tok, models, order, k, err);
            free(order);
        }
    }
    /* `tokens:`: one add_tokens(str) call each */
    for (size_t i = 0; i < spec->ntokens && rc == 0; i++) {
        mm_tok_spec p = plain(spec->tokens[i], strlen(spec->tokens[i]));
        rc = mm_tokv_add_tokens(v->out, &p, 1, NULL, "tokenizer.tokens", err);
    }
    if (rc < 0)
        goto fail;
    mm_tokv_finish(v->out);
    if ((rc = check_no_holes(v, src_desc, err)) < 0)
        goto fail;
    v->n_tokens = v->out->n_ids;
    /* perm[m][t]: output token t's id in model m's vocabulary (the base's for a model without one) */
    v->perm = mm_xcalloc(n, sizeof *v->perm);
    for (size_t m = 0; m < n; m++) {
        const mm_tokenizer *t = v->tok[m] ? v->tok[m] : v->tok[base];
        size_t lim = models[m].vocab_size >= 0 ? (size_t)models[m].vocab_size : t->n_ids;
        v->perm[m] = mm_xmalloc((v->n_tokens ? v->n_tokens : 1) * sizeof **v->perm);
        for (size_t id = 0; id < v->n_tokens; id++) {
            int old = mm_tokenizer_id(t, v->out->tokens[id], v->out->token_lens[id]);
            v->perm[m][id] = old < 0 ? -1 : (size_t)old < lim ? old : MM_VOCAB_BEYOND;
        }
    }
    mm_tokenizer_free(loaded_base);
    /* Only the output's own tokenizer.json is written back. */
    for (size_t i = 0; i <= n; i++)
        if (v->tok[i])
            drop_json(v->tok[i]);
    *out = v;
    return 0;
fail:
    mm_tokenizer_free(loaded_base);
    mm_vocab_free(v);
    return rc;
}
