/* Added and special tokens as transformers 5 joins them to the backend's (PreTrainedTokenizerBase.
 * _from_pretrained and __init__, TokenizersBackend.__init__, SentencePieceExtractor.extract; read at
 * 5.3.0.dev0): tokenizer_config.json's added_tokens_decoder or the legacy files, the named and extra
 * special tokens, then one add_tokens call (formats/tokvocab.c). */
#include "tokload.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- tokenizer_config.json: added tokens and special tokens ------------------------------------------- */

/* One entry of the added_tokens_decoder that _from_pretrained builds, by id. */
typedef struct dec_entry {
    uint64_t id;
    size_t seq;
    mm_tok_spec spec;
    const char *source; /* its file, and its key there or its index in added_tokens, for messages */
    const char *key;
    size_t index;
} dec_entry;

static const char *dec_where(const dec_entry *x, char *where)
{
    char q[160];
    if (!x->key)
        return mm_tok_at(where, "%s: added_tokens[%zu]", x->source, x->index);
    if (strstr(x->source, "added_tokens.json"))
        return mm_tok_at(where, "%s: %s", x->source, mm_quote(q, sizeof q, x->key, strlen(x->key)));
    return mm_tok_at(where, "%s: added_tokens_decoder['%s']", x->source, x->key);
}

typedef struct decoder {
    dec_entry *e;
    size_t n, cap;
} decoder;

/* Appends an entry; dec_finish applies "a later entry for an id replaces the earlier", as the dict does. */
static dec_entry *dec_add(decoder *d, uint64_t id)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 64;
        d->e = mm_xrealloc(d->e, d->cap * sizeof *d->e);
    }
    d->e[d->n] = (dec_entry){.id = id, .seq = d->n};
    return &d->e[d->n++];
}

static int cmp_dec(const void *a, const void *b)
{
    const dec_entry *x = a, *y = b;
    if (x->id != y->id)
        return (x->id > y->id) - (x->id < y->id);
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* Sorts by id and keeps the last entry of each id. Where an id has two: two keys of
 * added_tokens_decoder ("1" and "01") or of added_tokens.json are an error; so is a token of
 * added_tokens.json that tokenizer.json's added_tokens replace with another (transformers drops it). */
static int dec_finish(decoder *d, mm_err *err)
{
    if (d->n > 1)
        qsort(d->e, d->n, sizeof *d->e, cmp_dec);
    size_t o = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (o > 0 && d->e[o - 1].id == d->e[i].id) {
            dec_entry *prev = &d->e[o - 1], *cur = &d->e[i];
            char where[PLACE], q[160], q2[160];
            int same =
                prev->spec.len == cur->spec.len && memcmp(prev->spec.content, cur->spec.content, cur->spec.len) == 0;
            if (prev->key && cur->key)
                return mm_err_set(err, -EINVAL, "%s: id %llu is given twice (%s and %s)", dec_where(cur, where),
                                  (unsigned long long)cur->id,
                                  mm_quote(q, sizeof q, prev->spec.content, prev->spec.len),
                                  mm_quote(q2, sizeof q2, cur->spec.content, cur->spec.len));
            if (prev->key && !same)
                return mm_err_set(err, -EINVAL,
                                  "%s: %s at id %llu, where %s has %s (transformers would drop the latter)",
                                  dec_where(cur, where), mm_quote(q, sizeof q, cur->spec.content, cur->spec.len),
                                  (unsigned long long)cur->id, prev->source,
                                  mm_quote(q2, sizeof q2, prev->spec.content, prev->spec.len));
            *prev = *cur;
        } else {
            d->e[o++] = d->e[i];
        }
    }
    d->n = o;
    return 0;
}

/* tokenizer_config.json's added_tokens_decoder: {"id": {AddedToken fields}}. Keys are ids written as
 * decimal digits (int() takes more, no file has it); an id twice is an error (the dict keeps the last). */
static int config_decoder(loader *L, const cJSON *dec, decoder *d, mm_err *err)
{
    char where[PLACE];
    mm_tok_at(where, "%s: added_tokens_decoder", L->config_path);
    if (!cJSON_IsObject(dec))
        return mm_tok_bad_type(where, "is an object of id: AddedToken", dec, err);
    const cJSON *e;
    cJSON_ArrayForEach(e, dec)
    {
        const char *key = e->string;
        mm_tok_at(where, "%s: added_tokens_decoder['%.40s']", L->config_path, key);
        size_t n = strspn(key, "0123456789");
        if (n == 0 || key[n] || n > 10 || strtoull(key, NULL, 10) > 4294967295ull)
            return mm_err_set(err, -EINVAL, "%s: the key must be an id (decimal digits, up to 2^32 - 1)", where);
        if (!cJSON_IsObject(e))
            return mm_tok_bad_type(where, "an added token is an object", e, err);
        dec_entry *x = dec_add(d, strtoull(key, NULL, 10));
        x->source = L->config_path;
        x->key = key;
        tokval tv;
        int rc = mm_tok_parse_added_dict(e, 1, 0, where, &tv, err);
        if (rc < 0)
            return rc;
        x->spec = tv.spec;
    }
    return 0;
}

/* The special tokens of PreTrainedTokenizerBase: the seven named ones in this order, then the
 * model-specific named ones, then extra_special_tokens (formerly additional_special_tokens). */
static const char *const STD_NAMES[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                        "pad_token", "cls_token", "mask_token"};
enum { NSTD = 7 };

typedef struct named {
    char *key;
    tokval v;
} named;

typedef struct specials {
    tokval std[NSTD];
    int std_set[NSTD], std_given[NSTD]; /* given: the key is in init_kwargs (even as null) */
    named *auto_, *explicit_;           /* model-specific: AddedToken-valued keys, and string-valued ones */
    size_t nauto, nexplicit;
    tokval *extra;
    size_t nextra;
    int extra_given, additional_given; /* extra_special_tokens / additional_special_tokens in init_kwargs */
    tokval *additional;                /* additional_special_tokens, when extra is not given */
    size_t nadditional;
} specials;

static void specials_free(specials *s)
{
    for (size_t i = 0; i < s->nauto; i++)
        free(s->auto_[i].key);
    for (size_t i = 0; i < s->nexplicit; i++)
        free(s->explicit_[i].key);
    free(s->auto_);
    free(s->explicit_);
    free(s->extra);
    free(s->additional);
}

/* key = value in a model-specific map, keeping the first position of a key (a dict update). */
static void named_put(named **list, size_t *n, const char *key, const tokval *v)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*list)[i].key, key) == 0) {
            (*list)[i].v = *v;
            return;
        }
    *list = mm_xrealloc(*list, (*n + 1) * sizeof **list);
    (*list)[(*n)++] = (named){mm_xstrdup(key), *v};
}

static int std_index(const char *key)
{
    for (int i = 0; i < NSTD; i++)
        if (strcmp(key, STD_NAMES[i]) == 0)
            return i;
    return -1;
}

static int ends_with_token(const char *key)
{
    size_t n = strlen(key);
    return n >= 6 && strcmp(key + n - 6, "_token") == 0;
}

/* A list of special tokens (extra_special_tokens): str or {"__type": "AddedToken"} items (typed), or,
 * from special_tokens_map.json, plain AddedToken objects made special (legacy). */
static int token_list(const cJSON *list, const char *where, int legacy, tokval **out, size_t *n, mm_err *err)
{
    *out = NULL;
    *n = 0;
    if (!list || cJSON_IsNull(list))
        return 0;
    if (!cJSON_IsArray(list))
        return mm_tok_bad_type(where, "a list of special tokens", list, err);
    size_t cap = (size_t)cJSON_GetArraySize(list), i = 0;
    *out = mm_xcalloc(cap ? cap : 1, sizeof **out);
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        char w[PLACE];
        mm_tok_at(w, "%s[%zu]", where, i++);
        tokval tv;
        int set, rc;
        if (legacy && cJSON_IsObject(e))
            rc = mm_tok_parse_added_dict(e, 1, 1, w, &tv, err), set = rc == 0;
        else
            rc = mm_tok_config_token(e, w, &tv, &set, err);
        if (rc < 0)
            return rc;
        if (!set) /* None in the list: str(None) is added, and add_tokens raises TypeError */
            return mm_err_set(err, -EINVAL, "%s: null is no special token", w);
        (*out)[(*n)++] = tv;
    }
    return 0;
}

static int same_tokval(const tokval *a, const tokval *b)
{
    if (a->added != b->added || a->len != b->len || memcmp(a->content, b->content, a->len) != 0)
        return 0;
    return !a->added || (a->spec.special == b->spec.special && a->spec.single_word == b->spec.single_word &&
                         a->spec.lstrip == b->spec.lstrip && a->spec.rstrip == b->spec.rstrip &&
                         a->spec.normalized == b->spec.normalized);
}

/* An object of named model-specific tokens (extra_special_tokens written as an object; its place
 * `where`): each a special token, not null, into the explicit names. */
static int named_object(const cJSON *obj, const char *where, specials *s, mm_err *err)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, obj)
    {
        char w[PLACE];
        mm_tok_at(w, "%s['%.60s']", where, e->string);
        tokval tv;
        int set, rc;
        if ((rc = mm_tok_config_token(e, w, &tv, &set, err)) < 0)
            return rc;
        if (!set)
            return mm_err_set(err, -EINVAL, "%s: null is no special token", w);
        named_put(&s->explicit_, &s->nexplicit, e->string, &tv);
    }
    return 0;
}

/* The special-token kwargs of tokenizer_config.json, as _from_pretrained and __init__ sort them:
 * additional_special_tokens becomes extra_special_tokens unless that is given; string-valued keys
 * ending in "_token" (not the seven) are model-specific ("explicit"), as are the entries of an
 * extra_special_tokens object; AddedToken-valued ones are collected by __init__ ("auto"). */
static int config_specials(loader *L, const cJSON *cfg, specials *s, mm_err *err)
{
    char where[PLACE];
    const cJSON *e, *extra = NULL, *additional = NULL;
    int rc;
    if (!cfg)
        return 0;
    cJSON_ArrayForEach(e, cfg)
    {
        const char *key = e->string;
        mm_tok_at(where, "%s: %s", L->config_path, key);
        int k = std_index(key);
        if (k >= 0 || strcmp(key, "extra_special_tokens") == 0 || strcmp(key, "additional_special_tokens") == 0 ||
            ends_with_token(key)) {
            const cJSON *dup;
            if ((rc = mm_tok_member(cfg, key, L->config_path, &dup, err)) < 0)
                return rc;
        }
        if (k >= 0) {
            s->std_given[k] = 1;
            if ((rc = mm_tok_config_token(e, where, &s->std[k], &s->std_set[k], err)) < 0)
                return rc;
        } else if (strcmp(key, "extra_special_tokens") == 0) {
            extra = e;
        } else if (strcmp(key, "additional_special_tokens") == 0) {
            additional = e;
        } else if (ends_with_token(key) && cJSON_IsString(e)) {
            tokval tv = str_val(e->valuestring, strlen(e->valuestring));
            named_put(&s->explicit_, &s->nexplicit, key, &tv);
        } else if (ends_with_token(key) && cJSON_IsObject(e)) {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(e, "__type");
            if (cJSON_IsString(type) && strcmp(type->valuestring, "AddedToken") == 0) {
                tokval tv;
                if ((rc = mm_tok_parse_added_dict(e, 1, 0, where, &tv, err)) < 0)
                    return rc;
                named_put(&s->auto_, &s->nauto, key, &tv);
            }
        }
    }
    if (!extra && additional) /* init_kwargs.setdefault("extra_special_tokens", pop("additional_special_tokens")) */
        extra = additional;
    if (extra && !cJSON_IsNull(extra)) {
        s->extra_given = !cJSON_IsObject(extra); /* an object is popped into the model-specific tokens */
        mm_tok_at(where, "%s: %s", L->config_path, extra->string);
        if (cJSON_IsObject(extra)) { /* named model-specific tokens */
            if ((rc = named_object(extra, where, s, err)) < 0)
                return rc;
        } else if ((rc = token_list(extra, where, 0, &s->extra, &s->nextra, err)) < 0) {
            return rc;
        }
    } else if (extra) {
        s->extra_given = 1;
    }
    return 0;
}

/* The legacy merge of special_tokens_map.json into init_kwargs (_from_pretrained, when the config has
 * no added_tokens_decoder): each key replaces the config's; an object becomes AddedToken(special=True);
 * an extra_special_tokens list is merged into the config's, an object of them becomes model-specific
 * named tokens; additional_special_tokens is kept for __init__, which takes it when extra_special_tokens
 * is not given. (Objects in that last list stay dicts in transformers 5, whose add_tokens then raises
 * TypeError; they are read here as special AddedTokens, as transformers 4 did.) */
static int stm_specials(loader *L, const cJSON *stm, specials *s, mm_err *err)
{
    char where[PLACE];
    const cJSON *e;
    int rc;
    if (!cJSON_IsObject(stm))
        return mm_tok_bad_type(L->stm_path, "the file holds an object", stm, err);
    cJSON_ArrayForEach(e, stm)
    {
        const char *key = e->string;
        const cJSON *dup;
        if ((rc = mm_tok_member(stm, key, L->stm_path, &dup, err)) < 0)
            return rc;
        mm_tok_at(where, "%s: %s", L->stm_path, key);
        if (strcmp(key, "extra_special_tokens") == 0) {
            if (cJSON_IsArray(e)) {
                tokval *items;
                size_t n;
                if ((rc = token_list(e, where, 1, &items, &n, err)) < 0) {
                    free(items);
                    return rc;
                }
                for (size_t i = 0; i < n; i++) {
                    size_t j;
                    for (j = 0; j < s->nextra && !same_tokval(&s->extra[j], &items[i]); j++)
                        ;
                    if (j == s->nextra) {
                        s->extra = mm_xrealloc(s->extra, (s->nextra + 1) * sizeof *s->extra);
                        s->extra[s->nextra++] = items[i];
                    }
                }
                free(items);
                s->extra_given = 1;
            } else if (cJSON_IsObject(e)) { /* replaces the list, then popped into model-specific tokens */
                free(s->extra);
                s->extra = NULL;
                s->nextra = 0;
                s->extra_given = 0;
                if ((rc = named_object(e, where, s, err)) < 0)
                    return rc;
            } else if (cJSON_IsNull(e)) {
                free(s->extra);
                s->extra = NULL;
                s->nextra = 0;
                s->extra_given = 1;
            } else {
                return mm_tok_bad_type(where, "a list of special tokens", e, err);
            }
            continue;
        }
        if (strcmp(key, "additional_special_tokens") == 0) {
            free(s->additional);
            if ((rc = token_list(e, where, 1, &s->additional, &s->nadditional, err)) < 0)
                return rc;
            s->additional_given = 1;
            continue;
        }
        int k = std_index(key), set = 0;
        tokval tv;
        if (cJSON_IsObject(e)) {
            if ((rc = mm_tok_parse_added_dict(e, 1, 1, where, &tv, err)) < 0)
                return rc;
            set = 1;
        } else if (cJSON_IsString(e)) {
            tv = str_val(e->valuestring, strlen(e->valuestring));
            set = 1;
        } else if (!cJSON_IsNull(e) && k >= 0) {
            return mm_tok_bad_type(where, "a special token is a string or an object", e, err);
        }
        if (k >= 0) {
            s->std_given[k] = 1;
            s->std_set[k] = set;
            if (set)
                s->std[k] = tv;
        } else if (ends_with_token(key) && set) {
            /* a kwarg __init__ collects as model-specific; a key the config had keeps its place */
            named_put(&s->auto_, &s->nauto, key, &tv);
        }
    }
    return 0;
}

/* added_tokens.json ({token: id}, legacy): AddedToken(token, normalized=not special, special) where
 * special means the token is one of the named or extra special tokens, as _from_pretrained tests it:
 * by str(), for which a config object is still a dict and counts as no token. */
static int added_tokens_json(loader *L, const cJSON *atj, const specials *s, decoder *d, mm_err *err)
{
    if (!cJSON_IsObject(atj))
        return mm_tok_bad_type(L->atj_path, "the file holds an object of token: id", atj, err);
    const cJSON *e;
    cJSON_ArrayForEach(e, atj)
    {
        char where[PLACE], q[160];
        mm_tok_at(where, "%s: %s", L->atj_path, mm_quote(q, sizeof q, e->string, strlen(e->string)));
        uint64_t id; /* a key written twice gives its token two ids, or one id twice: refused below */
        if (mm_tok_json_id(e, &id) < 0)
            return mm_err_set(err, -EINVAL, "%s: the id must be an integer from 0 to 2^32 - 1, not %s", where,
                              cJSON_IsNumber(e) ? "a number" : mm_tok_json_type(e));
        size_t len = strlen(e->string);
        int special = 0;
        for (int k = 0; k < NSTD; k++)
            if (s->std_set[k] && !s->std[k].raw_dict && s->std[k].len && s->std[k].len == len &&
                memcmp(s->std[k].content, e->string, len) == 0)
                special = 1;
        for (size_t k = 0; k < s->nextra; k++)
            if (!s->extra[k].raw_dict && s->extra[k].len == len && memcmp(s->extra[k].content, e->string, len) == 0)
                special = 1;
        dec_entry *x = dec_add(d, id);
        x->spec = (mm_tok_spec){e->string, len, (unsigned)special, 0, 0, 0, (unsigned)!special};
        x->source = L->atj_path;
        x->key = e->string;
    }
    return 0;
}

/* The legacy decoder's last source: tokenizer.json's added_tokens, each replacing what added_tokens.json
 * put at its id. */
static int legacy_from_tokenizer_json(loader *L, decoder *d, mm_err *err)
{
    const cJSON *e;
    size_t i = 0;
    cJSON_ArrayForEach(e, L->added_tokens)
    {
        char where[PLACE];
        mm_tok_spec spec;
        uint64_t id;
        int rc =
            mm_tok_parse_added_with_id(e, mm_tok_at(where, "%s: added_tokens[%zu]", L->json_path, i), &spec, &id, err);
        if (rc < 0)
            return rc;
        dec_entry *x = dec_add(d, id);
        x->spec = spec;
        x->source = L->json_path;
        x->index = i++;
    }
    return 0;
}

/* TokenizersBackend.__init__ after super().__init__: every added_tokens_decoder entry in id order (its
 * duplicate test compares hashes of ids with hashes of tokens, so none is ever skipped), then each named
 * special token whose text is not among the backend's added tokens nor those entries, then each extra
 * special token likewise; strings become AddedToken(special=True), and an AddedToken whose text a named
 * special token has is made special. All in one add_tokens call. Then each entry must have its id. */
static int add_config_tokens(loader *L, decoder *d, specials *s, mm_err *err)
{
    mm_tokenizer *t = L->t;
    int rc = dec_finish(d, err);
    if (rc < 0)
        return rc;
    size_t cap = d->n + NSTD + s->nauto + s->nexplicit + s->nextra, n = 0;
    mm_tok_spec *toks = mm_xcalloc(cap ? cap : 1, sizeof *toks);
    long *ids = mm_xcalloc(cap ? cap : 1, sizeof *ids);
    /* the named tokens, in _special_tokens_map's order: the seven, then {**auto, **explicit} */
    tokval **named_v = mm_xcalloc(NSTD + s->nauto + s->nexplicit + 1, sizeof *named_v);
    size_t nnamed = 0;
    for (int k = 0; k < NSTD; k++)
        if (s->std_set[k])
            named_v[nnamed++] = &s->std[k];
    for (size_t i = 0; i < s->nauto; i++) {
        tokval *v = &s->auto_[i].v;
        for (size_t j = 0; j < s->nexplicit; j++)
            if (strcmp(s->explicit_[j].key, s->auto_[i].key) == 0)
                v = &s->explicit_[j].v;
        named_v[nnamed++] = v;
    }
    for (size_t j = 0; j < s->nexplicit; j++) {
        size_t i;
        for (i = 0; i < s->nauto && strcmp(s->explicit_[j].key, s->auto_[i].key) != 0; i++)
            ;
        if (i == s->nauto)
            named_v[nnamed++] = &s->explicit_[j].v;
    }
    /* bos_token, eos_token: mergekit-moe prefixes router prompts with the first and pads with it (else
     * with the second) */
    if (s->std_set[0])
        t->bos_token = mm_xstrndup(s->std[0].content, s->std[0].len);
    if (s->std_set[1])
        t->eos_token = mm_xstrndup(s->std[1].content, s->std[1].len);
    for (size_t i = 0; i < d->n; i++)
        toks[n++] = d->e[i].spec;
    size_t nencoder = n; /* encoder: the backend's added tokens, and those entries */
    for (int pass = 0; pass < 2; pass++) {
        size_t m = pass == 0 ? nnamed : s->nextra;
        for (size_t i = 0; i < m; i++) {
            const tokval *v = pass == 0 ? named_v[i] : &s->extra[i];
            int id = mm_tokenizer_id(t, v->content, v->len);
            if (id >= 0 && mm_tokenizer_added(t, id))
                continue;
            size_t j;
            for (j = 0; j < nencoder && !(toks[j].len == v->len && memcmp(toks[j].content, v->content, v->len) == 0);
                 j++)
                ;
            if (j < nencoder)
                continue;
            toks[n++] = v->added ? v->spec : (mm_tok_spec){v->content, v->len, 1, 0, 0, 0, 0};
        }
    }
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < nnamed && !toks[i].special; k++)
            if (named_v[k]->len == toks[i].len && memcmp(named_v[k]->content, toks[i].content, toks[i].len) == 0)
                toks[i].special = 1;
    char where[PLACE];
    mm_tok_at(where, "%s: added and special tokens",
              t->tokenizer_config      ? L->config_path
              : t->kind == MM_TOK_FAST ? L->json_path
                                       : L->spm_path);
    rc = mm_tokv_add_tokens(t, toks, n, ids, where, err);
    for (size_t i = 0; i < d->n && rc == 0; i++)
        rc = mm_tok_check_declared(t, dec_where(&d->e[i], where), &d->e[i].spec, d->e[i].id, ids[i], err);
    free(named_v);
    free(toks);
    free(ids);
    return rc;
}

/* Everything after the model's vocabulary: the config's decoder (or the legacy files), the special
 * tokens, the second add_tokens call. */
int mm_tok_read_config(loader *L, mm_err *err)
{
    mm_tokenizer *t = L->t;
    const cJSON *cfg = t->tokenizer_config, *dec = NULL, *v;
    specials s = {0};
    decoder d = {0};
    cJSON *stm = NULL, *atj = NULL;
    int rc = 0;
    if (cfg) {
        if (!cJSON_IsObject(cfg))
            return mm_tok_bad_type(L->config_path, "the file holds an object", cfg, err);
        if ((rc = mm_tok_member(cfg, "added_tokens_decoder", L->config_path, &dec, err)) < 0 ||
            (rc = mm_tok_member(cfg, "fast_tokenizer_files", L->config_path, &v, err)) < 0)
            return rc;
        if (v)
            return mm_err_set(err, -EINVAL,
                              "%s: \"fast_tokenizer_files\" (tokenizer files chosen by transformers version) "
                              "is not supported",
                              L->config_path);
        if ((rc = mm_tok_member(cfg, "model_specific_special_tokens", L->config_path, &v, err)) < 0)
            return rc;
        if (v) /* never saved by transformers; as a kwarg it would be replaced or merged in ways not read here */
            return mm_err_set(err, -EINVAL, "%s: \"model_specific_special_tokens\" is not supported", L->config_path);
    }
    if ((rc = config_specials(L, cfg, &s, err)) < 0)
        goto out;
    if (dec) {
        rc = config_decoder(L, dec, &d, err);
    } else {
        /* legacy: special_tokens_map.json, added_tokens.json, tokenizer.json's added_tokens */
        L->stm_path = mm_path_join(L->files->label, "special_tokens_map.json");
        L->atj_path = mm_path_join(L->files->label, "added_tokens.json");
        if ((rc = mm_tok_read_json(L->files, "special_tokens_map.json", L->stm_path, &stm, err)) < 0 ||
            (stm && (rc = stm_specials(L, stm, &s, err)) < 0))
            goto out;
        if ((rc = mm_tok_read_json(L->files, "added_tokens.json", L->atj_path, &atj, err)) < 0 ||
            (atj && (rc = added_tokens_json(L, atj, &s, &d, err)) < 0))
            goto out;
        if (L->added_tokens && (rc = legacy_from_tokenizer_json(L, &d, err)) < 0)
            goto out;
    }
    if (rc < 0)
        goto out;
    if (t->kind == MM_TOK_SPM) {
        /* SentencePieceExtractor: CONTROL (special) and USER_DEFINED pieces as additional_special_tokens,
         * which __init__ takes when extra_special_tokens is not given; then bos/eos/unk of trainer_spec,
         * when their id is set, unless given (setdefault). */
        const mm_spm_model *m = t->spm;
        free(s.additional);
        s.additional = NULL;
        s.nadditional = 0;
        for (size_t i = 0; i < m->npieces; i++) {
            const mm_spm_piece *p = &m->pieces[i];
            if (p->type != MM_SPM_CONTROL && p->type != MM_SPM_USER_DEFINED)
                continue;
            s.additional = mm_xrealloc(s.additional, (s.nadditional + 1) * sizeof *s.additional);
            tokval tv = {p->piece, p->len, 1, 0, {p->piece, p->len, p->type == MM_SPM_CONTROL, 0, 0, 0, 0}};
            s.additional[s.nadditional++] = tv;
        }
        s.additional_given = 1;
        const struct {
            int k;
            int32_t id;
            const char *piece, *def;
        } pro[] = {{0, m->bos_id, m->bos_piece, "<s>"},
                   {1, m->eos_id, m->eos_piece, "</s>"},
                   {2, m->unk_id, m->unk_piece, "<unk>"}};
        for (size_t i = 0; i < MM_COUNT(pro); i++)
            if (pro[i].id >= 0 && !s.std_given[pro[i].k]) {
                const char *p = *pro[i].piece ? pro[i].piece : pro[i].def;
                s.std[pro[i].k] = str_val(p, strlen(p));
                s.std_set[pro[i].k] = s.std_given[pro[i].k] = 1;
            }
    } else if (L->padding_pad && !s.std_given[4]) { /* kwargs.setdefault("pad_token", padding's) */
        s.std[4] = str_val(L->padding_pad, strlen(L->padding_pad));
        s.std_set[4] = s.std_given[4] = 1;
    }
    if (!s.extra_given && s.additional_given) {
        free(s.extra);
        s.extra = s.additional;
        s.nextra = s.nadditional;
        s.additional = NULL;
        s.nadditional = 0;
    }
    rc = add_config_tokens(L, &d, &s, err);
out:
    specials_free(&s);
    free(d.e);
    cJSON_Delete(stm);
    cJSON_Delete(atj);
    return rc;
}
