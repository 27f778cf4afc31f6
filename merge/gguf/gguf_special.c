/* gguf-py's SpecialVocab (gguf/vocab.py), which every set_vocab of the converter ends with: the special
 * token ids (tokenizer_config.json's named tokens looked up in tokenizer.json's added_tokens, then
 * config.json's *_token_id), the add_*_token flags (tokenizer.json's post-processor, then
 * tokenizer_config.json), the BPE merges, the chat template and the normalizer flags — and add_to_gguf,
 * which writes them. Ported rule by rule, with Python's truthiness and equality where the original
 * relies on them (a bos_token written as an AddedToken dict is no str, and compares unequal to one). */
#include "gguf_vocab_int.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "formats/jsonpy.h"

static const char *const DEFAULT_TYPES[] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};

/* The GGUF key of each type that gguf_writer has an add_{type}_token_id for (the others are skipped
 * with a warning: cls, prefix, suffix, middle, fsep). */
static const struct {
    const char *type, *key;
} ID_KEYS[] = {
    {"bos", "tokenizer.ggml.bos_token_id"},       {"eos", "tokenizer.ggml.eos_token_id"},
    {"unk", "tokenizer.ggml.unknown_token_id"},   {"sep", "tokenizer.ggml.seperator_token_id"},
    {"pad", "tokenizer.ggml.padding_token_id"},   {"mask", "tokenizer.ggml.mask_token_id"},
    {"eot", "tokenizer.ggml.eot_token_id"},       {"eom", "tokenizer.ggml.eom_token_id"},
};
/* add_add_{type}_token exists for these only */
static const struct {
    const char *type, *key;
} ADD_KEYS[] = {
    {"bos", "tokenizer.ggml.add_bos_token"},
    {"eos", "tokenizer.ggml.add_eos_token"},
    {"sep", "tokenizer.ggml.add_sep_token"},
};

/* ---- Python values ------------------------------------------------------------------------------------- */

int mm_gv_truthy(const cJSON *v)
{
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v))
        return 0;
    if (cJSON_IsString(v))
        return v->valuestring[0] != 0;
    if (cJSON_IsNumber(v))
        return v->valuedouble != 0;
    if (cJSON_IsArray(v) || cJSON_IsObject(v))
        return v->child != NULL;
    return 1;
}

int mm_gv_int(const cJSON *v, long long *out)
{
    if (cJSON_IsBool(v)) {
        *out = cJSON_IsTrue(v);
        return 1;
    }
    if (!cJSON_IsNumber(v) || mm_json_is_float(v))
        return 0;
    double d = v->valuedouble;
    /* beyond long long: kept as the largest, which no id check lets through */
    *out = d >= 9.2e18 ? LLONG_MAX : d <= -9.2e18 ? LLONG_MIN : (long long)d;
    return 1;
}

/* dict.get(key) (a value that is no dict is read as an empty one: the library would have refused it) */
static const cJSON *get(const cJSON *o, const char *key)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

static int is_none(const cJSON *v)
{
    return !v || cJSON_IsNull(v);
}

/* a == b for JSON values */
static int py_eq(const cJSON *a, const cJSON *b)
{
    if (is_none(a) || is_none(b))
        return is_none(a) && is_none(b);
    if (cJSON_IsString(a) && cJSON_IsString(b))
        return strcmp(a->valuestring, b->valuestring) == 0;
    return cJSON_Compare(a, b, 1);
}

/* x.get('SpecialToken', {}).get('id') of a template piece */
static const cJSON *special_id(const cJSON *piece)
{
    return get(get(piece, "SpecialToken"), "id");
}

/* ---- the state of one load ------------------------------------------------------------------------------ */

typedef struct load {
    const mm_gv *g;
    mm_gv_special *sv;
    cJSON *cfg;   /* a copy of tokenizer_config.json, which the post-processor rules write to */
    cJSON *grave; /* values replaced in cfg, kept alive: the rules hold pointers to them */
} load;

/* tokenizer_config[key] = val (None when val is NULL) */
static void cfg_set(load *L, const char *key, const cJSON *val)
{
    cJSON *old = cJSON_DetachItemFromObjectCaseSensitive(L->cfg, key);
    if (old)
        cJSON_AddItemToArray(L->grave, old);
    cJSON_AddItemToObject(L->cfg, key, val ? cJSON_Duplicate(val, 1) : cJSON_CreateNull());
}

static int has_type(const mm_gv_special *sv, const char *type)
{
    for (size_t i = 0; i < sv->ntypes; i++)
        if (strcmp(sv->types[i], type) == 0)
            return 1;
    return 0;
}

static void set_add(mm_gv_special *sv, const char *type, int value)
{
    for (size_t i = 0; i < sv->nadds; i++)
        if (strcmp(sv->adds[i].type, type) == 0) {
            sv->adds[i].value = value; /* a dict keeps the key's first position */
            return;
        }
    sv->adds[sv->nadds].type = type;
    sv->adds[sv->nadds++].value = value;
}

int mm_gv_special_set(mm_gv_special *sv, const char *type, long long id, mm_err *err)
{
    if (id < 0)
        return mm_err_set(err, -EINVAL, "special token %s: id %lld is negative (the converter stops: invalid value)",
                          type, id);
    if (sv->n_vocab >= 0 && id >= sv->n_vocab)
        return 0; /* out of range: skipped with a warning */
    if (id > UINT32_MAX)
        return mm_err_set(err, -EINVAL, "special token %s: id %lld does not fit the GGUF's uint32", type, id);
    for (size_t i = 0; i < sv->nids; i++)
        if (strcmp(sv->ids[i].type, type) == 0)
            return 0;
    sv->ids[sv->nids].type = type;
    sv->ids[sv->nids++].id = (uint32_t)id;
    return 0;
}

/* _set_special_token with a JSON value: only what isinstance(tid, int) takes counts */
static int set_json(mm_gv_special *sv, const char *type, const cJSON *v, mm_err *err)
{
    long long id;
    return mm_gv_int(v, &id) ? mm_gv_special_set(sv, type, id, err) : 0;
}

/* _parse_normalizer */
static void parse_normalizer(mm_gv_special *sv, const cJSON *n)
{
    const cJSON *type = get(n, "type"), *v;
    if (!cJSON_IsString(type))
        return;
    const char *t = type->valuestring;
    if (strcmp(t, "Lowercase") == 0) {
        sv->lowercase = 1;
    } else if (strcmp(t, "StripAccents") == 0) {
        sv->strip_accents = 1;
    } else if (strcmp(t, "BertNormalizer") == 0) {
        /* the value as given: None leaves the flag unwritten, anything else is packed as a bool */
        if ((v = get(n, "lowercase")))
            sv->lowercase = is_none(v) ? -1 : mm_gv_truthy(v);
        if ((v = get(n, "strip_accents")))
            sv->strip_accents = is_none(v) ? -1 : mm_gv_truthy(v);
    } else if (strcmp(t, "Sequence") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, get(n, "normalizers")) parse_normalizer(sv, e);
    }
}

static void add_merge(mm_gv_special *sv, char *m)
{
    sv->merges = mm_xrealloc(sv->merges, (sv->nmerges + 1) * sizeof *sv->merges);
    sv->merges[sv->nmerges++] = m;
}

/* tokenizer.json's model.merges: "a b" strings as they are; [a, b] pairs (transformers >= 4.45) joined by a
 * space, a space inside a part written as U+0120 (chr(ord(' ') + 256)) so that the join stays two parts. */
static int read_merges(load *L, const cJSON *merges, mm_err *err)
{
    if (!cJSON_IsArray(merges) || !merges->child)
        return 0;
    const cJSON *m, *first = merges->child;
    if (cJSON_IsString(first)) {
        cJSON_ArrayForEach(m, merges)
        {
            if (!cJSON_IsString(m))
                goto bad;
            add_merge(L->sv, mm_xstrdup(m->valuestring));
        }
        return 0;
    }
    if (!cJSON_IsArray(first) || cJSON_GetArraySize(first) != 2 || !cJSON_IsString(first->child))
        goto bad;
    cJSON_ArrayForEach(m, merges)
    {
        if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) != 2 || !cJSON_IsString(m->child) ||
            !cJSON_IsString(m->child->next))
            goto bad;
        mm_buf b = {0};
        for (const cJSON *part = m->child; part; part = part->next) {
            if (part != m->child)
                mm_buf_append(&b, " ", 1);
            for (const char *c = part->valuestring; *c; c++)
                if (*c == ' ')
                    mm_buf_append(&b, "\xc4\xa0", 2);
                else
                    mm_buf_append(&b, c, 1);
        }
        mm_buf_append(&b, "", 1);
        add_merge(L->sv, b.data);
    }
    return 0;
bad:;
    char *path = mm_gv_path(L->g, "tokenizer.json");
    int rc = mm_err_set(err, -EINVAL, "%s: model.merges: neither all \"a b\" strings nor all [a, b] pairs", path);
    free(path);
    return rc;
}

/* One TemplateProcessing of the post-processor ("crude parsing", as vocab.py calls it): whether it adds
 * bos / eos / sep, and the special tokens it implies. The variables are the caller's special_* locals. */
typedef struct specials {
    const cJSON *bos, *cls, *eos, *sep;
} specials;

static void template_processing(load *L, const cJSON *proc, specials *s)
{
    mm_gv_special *sv = L->sv;
    const cJSON *single = get(proc, "single"), *pair = get(proc, "pair");
    int nsingle = cJSON_IsArray(single) ? cJSON_GetArraySize(single) : 0;
    const cJSON *first = NULL, *last = NULL;
    int cfg = mm_gv_truthy(L->cfg);
    if (nsingle > 1) {
        first = special_id(cJSON_GetArrayItem(single, 0));
        if (mm_gv_truthy(first)) {
            if (!cfg) {
                s->bos = first;
            } else if (!py_eq(first, s->bos) && !py_eq(first, s->cls)) {
                if (!mm_gv_truthy(s->bos))
                    cfg_set(L, "bos_token", s->bos = first);
                if (!mm_gv_truthy(s->cls))
                    cfg_set(L, "cls_token", s->cls = first);
            }
            set_add(sv, "bos", py_eq(first, s->bos) || py_eq(first, s->cls));
        } else {
            first = NULL;
        }
        last = special_id(cJSON_GetArrayItem(single, nsingle - 1));
        if (mm_gv_truthy(last)) {
            if (!cfg) {
                s->eos = last;
            } else if (!py_eq(last, s->eos)) {
                /* the eos the template replaces becomes eot (or eom) */
                if (!has_type(sv, "eot")) {
                    sv->types[sv->ntypes++] = "eot";
                    cfg_set(L, "eot_token", s->eos);
                } else if (!has_type(sv, "eom")) {
                    sv->types[sv->ntypes++] = "eom";
                    cfg_set(L, "eom_token", s->eos);
                }
                cfg_set(L, "eos_token", s->eos = last);
            }
            set_add(sv, "eos", py_eq(last, s->eos));
        } else {
            last = NULL;
        }
    }
    int npair = cJSON_IsArray(pair) ? cJSON_GetArraySize(pair) : 0;
    if (npair == 0)
        return;
    int start = first && py_eq(special_id(cJSON_GetArrayItem(pair, 0)), first) ? 1 : 0;
    int stop = last && py_eq(special_id(cJSON_GetArrayItem(pair, npair - 1)), last) ? npair - 1 : npair;
    if (stop <= start)
        return;
    const cJSON *a = get(get(cJSON_GetArrayItem(pair, start), "Sequence"), "id");
    const cJSON *b = get(get(cJSON_GetArrayItem(pair, stop - 1), "Sequence"), "id");
    /* A [sep] [eos] B: the pieces strictly between the two sequences */
    if (!cJSON_IsString(a) || strcmp(a->valuestring, "A") != 0 || !cJSON_IsString(b) ||
        strcmp(b->valuestring, "B") != 0 || stop - start - 2 <= 0)
        return;
    int inner = stop - start - 2, add_sep = 0;
    const cJSON *entry = special_id(cJSON_GetArrayItem(pair, start + 1));
    if (mm_gv_truthy(entry) && (py_eq(entry, s->sep) || py_eq(entry, s->eos)) && !last)
        add_sep = 1;
    if (inner == 2) {
        entry = special_id(cJSON_GetArrayItem(pair, start + 2));
        if (mm_gv_truthy(entry) && (py_eq(entry, s->sep) || py_eq(entry, s->eos)))
            add_sep = 1;
    }
    set_add(sv, "sep", add_sep);
    if (add_sep && !mm_gv_truthy(s->sep) && cfg)
        cfg_set(L, "sep_token", s->eos);
}

size_t mm_gv_processors(const cJSON *pp, const cJSON **out, size_t max)
{
    const cJSON *list = get(pp, "processors"), *e;
    if (!list) {
        out[0] = pp;
        return 1;
    }
    size_t n = 0;
    cJSON_ArrayForEach(e, list) if (n < max) out[n++] = e;
    return n;
}

/* The post-processor part of _try_load_from_tokenizer_json. */
static void post_processor(load *L, const cJSON *tj)
{
    int cfg = mm_gv_truthy(L->cfg);
    specials s = {get(L->cfg, "bos_token"), get(L->cfg, "cls_token"), get(L->cfg, "eos_token"),
                  get(L->cfg, "sep_token")};
    if (!mm_gv_truthy(s.bos) && mm_gv_truthy(s.cls) && cfg)
        cfg_set(L, "bos_token", s.bos = s.cls);
    if (!mm_gv_truthy(s.eos) && mm_gv_truthy(s.sep) && cfg)
        cfg_set(L, "eos_token", s.eos = s.sep);
    const cJSON *pp = get(tj, "post_processor");
    if (!mm_gv_truthy(pp))
        return;
    const cJSON *procs[16];
    size_t n = mm_gv_processors(pp, procs, MM_COUNT(procs));
    for (size_t i = 0; i < n; i++) {
        const cJSON *proc = procs[i], *type = get(proc, "type");
        if (!cJSON_IsString(type))
            continue;
        if (strcmp(type->valuestring, "RobertaProcessing") == 0) {
            set_add(L->sv, "bos", 1);
            set_add(L->sv, "eos", 1);
            set_add(L->sv, "sep", 1);
            if (!mm_gv_truthy(s.cls) && cfg) {
                const cJSON *c = get(proc, "cls");
                s.cls = c ? cJSON_GetArrayItem(c, 0) : s.bos;
                cfg_set(L, "cls_token", s.cls);
            }
            if (!mm_gv_truthy(s.sep) && cfg) {
                const cJSON *c = get(proc, "sep");
                s.sep = c ? cJSON_GetArrayItem(c, 0) : s.eos;
                cfg_set(L, "sep_token", s.sep);
            }
        } else if (strcmp(type->valuestring, "TemplateProcessing") == 0) {
            template_processing(L, proc, &s);
        }
    }
}

/* merges.txt (_try_load_merges_txt): a first line starting with '#' skipped, then each non-empty line's
 * first two whitespace-separated parts, lines of another count skipped. */
static int merges_txt(load *L, mm_err *err)
{
    char *text;
    int rc = mm_gv_read_text(L->g, "merges.txt", &text, err);
    if (rc < 0)
        return rc == -ENOENT ? 0 : rc;
    static const char WS[] = " \t\n\v\f\r";
    char *line = text, *next;
    int first = 1;
    for (; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        line += strspn(line, WS);
        if (first) {
            first = 0;
            if (*line == '#')
                continue;
        }
        char *parts[3];
        int n = 0;
        for (char *t = line; *t && n < 3; n++) {
            parts[n] = t;
            t += strcspn(t, WS);
            if (*t)
                *t++ = 0;
            t += strspn(t, WS);
        }
        if (n == 2)
            add_merge(L->sv, mm_xasprintf("%s %s", parts[0], parts[1]));
    }
    free(text);
    return 0;
}

/* The chat template that applies: tokenizer_config.json's chat_template key when present (even null),
 * else chat_template.jinja (with additional_chat_templates/ *.jinja, a list), else chat_template.json's. */
static int chat_template(load *L, mm_err *err)
{
    mm_gv_special *sv = L->sv;
    const mm_gv *g = L->g;
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(L->cfg, "chat_template");
    char *jinja = NULL;
    int rc = 0;
    if (!ct) {
        rc = mm_gv_read_text(g, "chat_template.jinja", &jinja, err);
        if (rc == 0) {
            char **names;
            size_t n, njinja = 0;
            g->files.list(g->files.ctx, "additional_chat_templates", &names, &n);
            for (size_t i = 0; i < n && rc == 0; i++) {
                size_t len = strlen(names[i]);
                if (len <= 6 || strcmp(names[i] + len - 6, ".jinja") != 0)
                    continue;
                if (++njinja > 1) {
                    rc = mm_err_set(err, -ENOTSUP,
                                    "%s: more than one additional chat template: the converter lists them in an order "
                                    "of its file system and of Python's string hashing, which cannot be reproduced",
                                    g->files.label);
                    break;
                }
                if (!sv->ntemplates) {
                    sv->tnames = mm_xcalloc(2, sizeof *sv->tnames);
                    sv->ttemplates = mm_xcalloc(2, sizeof *sv->ttemplates);
                    sv->tnames[0] = mm_xstrdup("default");
                    sv->ttemplates[0] = jinja;
                    jinja = NULL;
                    sv->ntemplates = 1;
                }
                char *name = mm_path_join("additional_chat_templates", names[i]);
                sv->tnames[1] = mm_xstrndup(names[i], len - 6); /* the path's stem */
                rc = mm_gv_read_text(g, name, &sv->ttemplates[1], err);
                sv->ntemplates = 2;
                free(name);
            }
            mm_tok_free_names(names, n);
            if (rc < 0) {
                free(jinja);
                return rc;
            }
            sv->has_template = 1;
            sv->template_str = jinja;
            return 0;
        }
        if (rc != -ENOENT)
            return rc;
        cJSON *ctj = NULL;
        if ((rc = mm_tokenizer_read_json(&g->files, "chat_template.json", &ctj, err)) < 0)
            return rc;
        const cJSON *v = get(ctj, "chat_template");
        if (cJSON_IsString(v)) {
            sv->has_template = 1;
            sv->template_str = mm_xstrdup(v->valuestring);
        } else if (cJSON_IsArray(v)) {
            rc = -1; /* the list form, below */
        }
        if (rc == 0) {
            cJSON_Delete(ctj);
            return 0;
        }
        cJSON_AddItemToArray(L->grave, cJSON_DetachItemFromObjectCaseSensitive(ctj, "chat_template"));
        cJSON_Delete(ctj);
        ct = cJSON_GetArrayItem(L->grave, cJSON_GetArraySize(L->grave) - 1);
    }
    if (is_none(ct))
        return 0;
    if (cJSON_IsString(ct)) {
        sv->has_template = 1;
        sv->template_str = mm_xstrdup(ct->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(ct))
        return 0; /* "Bad type for chat_template field": ignored */
    size_t n = (size_t)cJSON_GetArraySize(ct), i = 0;
    sv->tnames = mm_xcalloc(n + 1, sizeof *sv->tnames);
    sv->ttemplates = mm_xcalloc(n + 1, sizeof *sv->ttemplates);
    const cJSON *e;
    cJSON_ArrayForEach(e, ct)
    {
        const cJSON *name = get(e, "name"), *tmpl = get(e, "template");
        if (!cJSON_IsObject(e) || (name && !cJSON_IsString(name)) || (!is_none(tmpl) && !cJSON_IsString(tmpl))) {
            char *path = mm_gv_path(g, "tokenizer_config.json");
            rc = mm_err_set(err, -EINVAL,
                            "%s: chat_template[%zu]: an entry is {\"name\": a string, \"template\": a string}", path, i);
            free(path);
            return rc;
        }
        sv->tnames[i] = mm_xstrdup(name ? name->valuestring : "");
        sv->ttemplates[i] = is_none(tmpl) ? NULL : mm_xstrdup(tmpl->valuestring);
        sv->ntemplates = ++i;
    }
    sv->has_template = 1;
    return 0;
}

/* _try_load_from_tokenizer_json (the tokenizer_config.json part included) */
static int from_tokenizer_json(load *L, int load_merges, mm_err *err)
{
    mm_gv_special *sv = L->sv;
    const cJSON *tj = L->g->tok->tokenizer_json, *added = NULL;
    int rc;
    if (tj) {
        if (load_merges && (rc = read_merges(L, get(get(tj, "model"), "merges"), err)) < 0)
            return rc;
        const cJSON *norm = get(tj, "normalizer");
        if (mm_gv_truthy(norm))
            parse_normalizer(sv, norm);
        added = get(tj, "added_tokens");
        if (mm_gv_truthy(tj))
            post_processor(L, tj);
    }
    if (!mm_gv_truthy(L->cfg))
        return 0;
    if ((rc = chat_template(L, err)) < 0)
        return rc;
    for (size_t i = 0; i < sv->ntypes; i++) {
        const char *type = sv->types[i];
        char key[32];
        snprintf(key, sizeof key, "add_%s_token", type);
        const cJSON *v = get(L->cfg, key);
        if (cJSON_IsBool(v))
            set_add(sv, type, cJSON_IsTrue(v));
        snprintf(key, sizeof key, "%s_token", type);
        v = get(L->cfg, key);
        const char *content;
        if (cJSON_IsString(v))
            content = v->valuestring;
        else if (cJSON_IsString(get(v, "content")))
            content = get(v, "content")->valuestring;
        else
            continue;
        /* the first added token of tokenizer.json with that content */
        const cJSON *a;
        cJSON_ArrayForEach(a, (cJSON_IsArray(added) ? added : NULL))
        {
            const cJSON *c = get(a, "content");
            if (cJSON_IsString(c) && strcmp(c->valuestring, content) == 0) {
                if ((rc = set_json(sv, type, get(a, "id"), err)) < 0)
                    return rc;
                break;
            }
        }
    }
    return 0;
}

/* _try_load_from_config_json: config.json's {type}_token_id, else text_config's. */
static int from_config_json(load *L, mm_err *err)
{
    const cJSON *cfg = L->g->config;
    if (!cfg)
        return 0;
    for (size_t i = 0; i < L->sv->ntypes; i++) {
        char key[32];
        snprintf(key, sizeof key, "%s_token_id", L->sv->types[i]);
        const cJSON *v = get(cfg, key);
        if (is_none(v))
            v = get(get(cfg, "text_config"), key);
        int rc = set_json(L->sv, L->sv->types[i], v, err);
        if (rc < 0) {
            char *path = mm_gv_path(L->g, "config.json");
            mm_err_prefix(err, "%s: %s", path, key);
            free(path);
            return rc;
        }
    }
    return 0;
}

int mm_gv_special_load(const mm_gv *g, int load_merges, const char *const *types, size_t ntypes, long long n_vocab,
                       mm_gv_special *sv, mm_err *err)
{
    memset(sv, 0, sizeof *sv);
    if (!types)
        types = DEFAULT_TYPES, ntypes = MM_COUNT(DEFAULT_TYPES);
    for (size_t i = 0; i < ntypes; i++)
        sv->types[sv->ntypes++] = types[i];
    sv->n_vocab = n_vocab;
    sv->lowercase = sv->strip_accents = -1;
    const cJSON *tc = g->tok->tokenizer_config;
    load L = {g, sv, tc ? cJSON_Duplicate(tc, 1) : NULL, cJSON_CreateArray()};
    int rc = from_tokenizer_json(&L, load_merges, err);
    if (rc == 0)
        rc = from_config_json(&L, err);
    if (rc == 0 && load_merges && !sv->nmerges)
        rc = merges_txt(&L, err);
    cJSON_Delete(L.cfg);
    cJSON_Delete(L.grave);
    if (rc < 0)
        mm_gv_special_free(sv);
    return rc;
}

/* add_chat_template of a list: each named template as tokenizer.chat_template.NAME (the name's characters
 * other than ASCII letters and digits made '_'), their names as tokenizer.chat_templates, the one named
 * "default" as tokenizer.chat_template. */
static int add_template_list(const mm_gv *g, const mm_gv_special *sv, mm_err *err)
{
    const char *deflt = NULL, *name1 = NULL;
    char **clean = mm_xcalloc(sv->ntemplates + 1, sizeof *clean);
    size_t distinct = 0;
    int rc = 0;
    for (size_t i = 0; i < sv->ntemplates; i++) {
        mm_buf b = {0};
        const char *s = sv->tnames[i];
        while (*s) {
            uint32_t cp;
            size_t n = mm_utf8_next(s, &cp);
            char c = *s;
            int keep = n == 1 && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'));
            mm_buf_append(&b, keep ? s : "_", 1);
            s += n ? n : 1;
        }
        mm_buf_append(&b, "", 1);
        clean[i] = b.data;
        if (!*clean[i] || !sv->ttemplates[i])
            continue;
        if (strcmp(clean[i], "default") == 0) {
            deflt = sv->ttemplates[i];
            continue;
        }
        size_t j;
        for (j = 0; j < i && !(clean[j] && strcmp(clean[j], clean[i]) == 0 && sv->ttemplates[j]); j++)
            ;
        if (j == i && ++distinct == 1)
            name1 = clean[i];
    }
    if (distinct > 1) {
        rc = mm_err_set(err, -ENOTSUP,
                        "%s: %zu named chat templates besides \"default\": the converter lists their names in the order "
                        "of a Python set (string hashing), which cannot be reproduced",
                        g->files.label, distinct);
        goto out;
    }
    for (size_t i = 0; i < sv->ntemplates; i++) {
        if (!*clean[i] || !sv->ttemplates[i] || strcmp(clean[i], "default") == 0 || !*sv->ttemplates[i])
            continue;
        char *key = mm_xasprintf("tokenizer.chat_template.%s", clean[i]);
        mm_gguf_set_str(g->kv, key, sv->ttemplates[i]);
        free(key);
    }
    if (name1)
        mm_gguf_set_arr_str(g->kv, "tokenizer.chat_templates", &name1, NULL, 1);
    if (deflt && *deflt)
        mm_gguf_set_str(g->kv, "tokenizer.chat_template", deflt);
out:
    for (size_t i = 0; i < sv->ntemplates; i++)
        free(clean[i]);
    free(clean);
    return rc;
}

int mm_gv_special_add(const mm_gv *g, const mm_gv_special *sv, mm_err *err)
{
    if (sv->nmerges)
        mm_gguf_set_arr_str(g->kv, "tokenizer.ggml.merges", (const char *const *)sv->merges, NULL, sv->nmerges);
    for (size_t i = 0; i < sv->nids; i++)
        for (size_t k = 0; k < MM_COUNT(ID_KEYS); k++)
            if (strcmp(sv->ids[i].type, ID_KEYS[k].type) == 0)
                mm_gguf_set_u32(g->kv, ID_KEYS[k].key, sv->ids[i].id);
    for (size_t i = 0; i < sv->nadds; i++)
        for (size_t k = 0; k < MM_COUNT(ADD_KEYS); k++)
            if (strcmp(sv->adds[i].type, ADD_KEYS[k].type) == 0)
                mm_gguf_set_bool(g->kv, ADD_KEYS[k].key, sv->adds[i].value);
    if (sv->has_template) {
        if (sv->ntemplates) {
            int rc = add_template_list(g, sv, err);
            if (rc < 0)
                return rc;
        } else if (sv->template_str && *sv->template_str) { /* add_string writes no empty string */
            mm_gguf_set_str(g->kv, "tokenizer.chat_template", sv->template_str);
        }
    }
    if (sv->lowercase >= 0)
        mm_gguf_set_bool(g->kv, "tokenizer.ggml.normalizer.lowercase", sv->lowercase);
    if (sv->strip_accents >= 0)
        mm_gguf_set_bool(g->kv, "tokenizer.ggml.normalizer.strip_accents", sv->strip_accents);
    return 0;
}

void mm_gv_special_free(mm_gv_special *sv)
{
    for (size_t i = 0; i < sv->nmerges; i++)
        free(sv->merges[i]);
    free(sv->merges);
    free(sv->template_str);
    for (size_t i = 0; i < sv->ntemplates; i++) {
        free(sv->tnames[i]);
        free(sv->ttemplates[i]);
    }
    free(sv->tnames);
    free(sv->ttemplates);
    memset(sv, 0, sizeof *sv);
}
