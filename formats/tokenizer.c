/* The rules below are transformers 5.x's (tokenization_utils_base.py, tokenization_utils_tokenizers.py,
 * convert_slow_tokenizer.py: read at 5.3.0.dev0) on top of the `tokenizers` library's (0.22,
 * tokenizers/src/tokenizer/serialization.rs and added_vocabulary.rs; formats/tokvocab.c). Each function
 * names the code it follows. */
#include "tokenizer.h"

#include "jsonpy.h"
#include "tokvocab.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Places in messages: "DIR/tokenizer.json: added_tokens[3]". A path can be PATH_MAX long. */
#define PLACE 4608

__attribute__((format(printf, 2, 3))) static char *at(char *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, PLACE, fmt, ap);
    va_end(ap);
    return buf;
}

void mm_tokenizer_free(mm_tokenizer *t)
{
    if (!t)
        return;
    mm_tokv_free(t);
    free(t->model_type);
    free(t->chat_template);
    cJSON_Delete(t->tokenizer_json);
    cJSON_Delete(t->tokenizer_config);
    mm_spm_free(t->spm);
    free(t);
}

/* ---- JSON, strictly ---------------------------------------------------------------------------------- */

/* The byte offset of the first \u0000 escape inside a string of text[0..len), or -1. cJSON ends its
 * strings at a NUL, so a token holding U+0000 would silently lose its tail. */
static long nul_escape(const char *text, size_t len)
{
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        if (!in_string) {
            in_string = text[i] == '"';
        } else if (text[i] == '"') {
            in_string = 0;
        } else if (text[i] == '\\' && i + 1 < len) {
            if (text[i + 1] == 'u' && i + 5 < len && memcmp(text + i + 2, "0000", 4) == 0)
                return (long)i;
            i++;
        }
    }
    return -1;
}

/* Reads and parses `path` as transformers does (json.load of UTF-8 text). 0 with *out = NULL when the
 * file does not exist; an error for text that is not UTF-8, not JSON, or holds a \u0000 escape. */
static int read_json(const char *path, cJSON **out, mm_err *err)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT)
        return 0;
    char *text;
    size_t len;
    int rc = mm_file_read_all(path, MM_TOK_MAX_JSON, &text, &len, err);
    if (rc < 0)
        return rc;
    size_t valid = mm_utf8_valid_len(text, len);
    long nul = nul_escape(text, len);
    if (valid < len)
        rc = mm_err_set(err, -EINVAL, "%s: not valid UTF-8 (at byte %zu)", path, valid);
    else if (nul >= 0)
        rc = mm_err_set(err, -EINVAL, "%s: a string holds \\u0000 (at byte %ld), which this reader cannot keep", path, nul);
    else if ((rc = mm_json_parse(text, len, out, err)) < 0)
        mm_err_prefix(err, "%s", path);
    free(text);
    return rc;
}

/* obj's member `key` (NULL when absent). A key written twice is an error: json.load keeps the last,
 * cJSON the first, and the two readings must not differ. */
static int member(const cJSON *obj, const char *key, const char *where, const cJSON **out, mm_err *err)
{
    *out = NULL;
    const cJSON *e;
    cJSON_ArrayForEach(e, obj)
    {
        if (e->string && strcmp(e->string, key) == 0) {
            if (*out)
                return mm_err_set(err, -EINVAL, "%s: \"%s\" is written twice", where, key);
            *out = e;
        }
    }
    return 0;
}

static const char *json_type(const cJSON *v)
{
    if (!v)
        return "nothing";
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsBool(v))
        return "a bool";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsArray(v))
        return "a list";
    return "an object";
}

/* An id as the library reads one (serde u32) and Python as an int: an integer written without a
 * fraction or exponent, 0 to 2^32 - 1. */
static int json_id(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v) || mm_json_is_float(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 4294967295.0 || floor(d) != d)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static int bad_type(const char *where, const char *what, const cJSON *v, mm_err *err)
{
    return mm_err_set(err, -EINVAL, "%s: %s, not %s", where, what, json_type(v));
}

/* ---- special tokens: str or AddedToken ---------------------------------------------------------------- */

/* A token as transformers holds it before adding: a Python str, or an AddedToken with flags. */
typedef struct tokval {
    const char *content;
    size_t len;
    int added;    /* an AddedToken (spec's flags hold), else a str */
    int raw_dict; /* a {"__type": "AddedToken"} object of tokenizer_config.json: still a dict, whose str()
                     is no token, where _from_pretrained collects special tokens for added_tokens.json */
    mm_tok_spec spec;
} tokval;

static tokval str_val(const char *s, size_t len)
{
    return (tokval){s, len, 0, 0, {s, len, 0, 0, 0, 0, 0}};
}

/* AddedToken(**obj): content, and the flags single_word, lstrip, rstrip (False), special (False, or
 * True for force_special: special_tokens_map.json's entries are made special) and normalized (not
 * special). "__type" is allowed where `typed` (the marker convert_added_tokens removes); any other key is
 * an error (the tokenizers binding prints "Ignored unknown kwarg option" and drops it). */
static int parse_added_dict(const cJSON *o, int typed, int force_special, const char *where, tokval *out, mm_err *err)
{
    const cJSON *content = NULL, *e;
    int flags[5] = {0, 0, 0, 0, -1}; /* single_word, lstrip, rstrip, special, normalized (-1: not given) */
    static const char *const names[5] = {"single_word", "lstrip", "rstrip", "special", "normalized"};
    cJSON_ArrayForEach(e, o)
    {
        size_t k;
        for (k = 0; k < 5 && strcmp(e->string, names[k]) != 0; k++)
            ;
        if (k < 5) {
            if (!cJSON_IsBool(e))
                return mm_err_set(err, -EINVAL, "%s: \"%s\" is %s, not a bool", where, e->string, json_type(e));
            flags[k] = cJSON_IsTrue(e);
        } else if (strcmp(e->string, "content") == 0) {
            content = e;
        } else if (!(typed && strcmp(e->string, "__type") == 0)) {
            return mm_err_set(err, -EINVAL, "%s: unknown key \"%s\" for an AddedToken", where, e->string);
        }
        /* written twice? */
        const cJSON *dup;
        int rc = member(o, e->string, where, &dup, err);
        if (rc < 0)
            return rc;
    }
    if (!cJSON_IsString(content))
        return mm_err_set(err, -EINVAL, "%s: an AddedToken needs \"content\" (a string), not %s", where, json_type(content));
    if (force_special)
        flags[3] = 1;
    *out = (tokval){content->valuestring, strlen(content->valuestring), 1, 0, {0}};
    out->spec = (mm_tok_spec){out->content, out->len, (unsigned)flags[3], (unsigned)flags[0], (unsigned)flags[1],
                              (unsigned)flags[2], (unsigned)(flags[4] < 0 ? !flags[3] : flags[4])};
    return 0;
}

/* The value of a special-token kwarg in tokenizer_config.json: null (*set = 0), a str, or an AddedToken
 * object marked {"__type": "AddedToken"} (convert_added_tokens); anything else is refused, as
 * PreTrainedTokenizerBase.__init__ raises TypeError for it. */
static int config_token(const cJSON *v, const char *where, tokval *out, int *set, mm_err *err)
{
    *set = 0;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (cJSON_IsString(v)) {
        *out = str_val(v->valuestring, strlen(v->valuestring));
        *set = 1;
        return 0;
    }
    const cJSON *type = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "__type") : NULL;
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "AddedToken") != 0)
        return mm_err_set(err, -EINVAL, "%s: a special token must be a string or an object with \"__type\": "
                                        "\"AddedToken\", not %s",
                          where, json_type(v));
    int rc = parse_added_dict(v, 1, 0, where, out, err);
    out->raw_dict = 1;
    *set = rc == 0;
    return rc;
}

/* ---- the model's vocabulary: tokenizer.json ---------------------------------------------------------- */

typedef struct loader {
    mm_tokenizer *t;
    char *json_path, *config_path, *spm_path, *stm_path, *atj_path;
    const cJSON *added_tokens; /* tokenizer.json's */
    char *padding_pad;         /* tokenizer.json's padding.pad_token */
} loader;

/* BPE's merges, checked as BpeBuilder::build does: each "a b" (split at its one space; lines starting
 * "#version" skipped, as convert_merges_to_hashmap) or [a, b], all of one form, with a, b and a + b
 * without b's continuing_subword_prefix in the vocabulary. */
static int check_merges(loader *L, const cJSON *merges, const char *prefix, mm_err *err)
{
    mm_tokenizer *t = L->t;
    size_t plen = prefix ? strlen(prefix) : 0, i = 0;
    int strings = -1;
    mm_buf joined = {0};
    int rc = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, merges)
    {
        const char *a, *b;
        size_t alen, blen;
        char where[PLACE];
        at(where, "model.merges[%zu]", i++);
        int is_string = cJSON_IsString(m);
        if (strings < 0)
            strings = is_string;
        if (is_string != strings) {
            rc = mm_err_set(err, -EINVAL, "%s: %s: %s among %s (all merges must be \"a b\" strings, or all [a, b] pairs)",
                            L->json_path, where, json_type(m), strings ? "strings" : "pairs");
            break;
        }
        if (is_string) {
            const char *s = m->valuestring;
            if (strncmp(s, "#version", 8) == 0)
                continue;
            const char *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                rc = mm_err_set(err, -EINVAL, "%s: %s: \"%s\" is not two tokens split by one space", L->json_path, where, s);
                break;
            }
            a = s, alen = (size_t)(sp - s), b = sp + 1, blen = strlen(b);
        } else {
            if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) != 2 || !cJSON_IsString(m->child) ||
                !cJSON_IsString(m->child->next)) {
                rc = mm_err_set(err, -EINVAL, "%s: %s: a merge is a string \"a b\" or a pair [a, b] of strings",
                                L->json_path, where);
                break;
            }
            a = m->child->valuestring, alen = strlen(a), b = m->child->next->valuestring, blen = strlen(b);
        }
        char q[160];
        if (mm_tokenizer_id(t, a, alen) < 0 || mm_tokenizer_id(t, b, blen) < 0) {
            int missing_a = mm_tokenizer_id(t, a, alen) < 0;
            rc = mm_err_set(err, -EINVAL, "%s: %s: %s is not in model.vocab", L->json_path, where,
                            mm_quote(q, sizeof q, missing_a ? a : b, missing_a ? alen : blen));
            break;
        }
        if (blen < plen) {
            rc = mm_err_set(err, -EINVAL, "%s: %s: %s is shorter than continuing_subword_prefix", L->json_path, where,
                            mm_quote(q, sizeof q, b, blen));
            break;
        }
        joined.len = 0;
        mm_buf_append(&joined, a, alen);
        mm_buf_append(&joined, b + plen, blen - plen);
        if (mm_tokenizer_id(t, joined.data, joined.len) < 0) {
            rc = mm_err_set(err, -EINVAL, "%s: %s: the merged token %s is not in model.vocab", L->json_path, where,
                            mm_quote(q, sizeof q, joined.data, joined.len));
            break;
        }
        t->nmerges++;
    }
    mm_buf_free(&joined);
    return rc;
}

/* The model of tokenizer.json ("model": {"type": ..., "vocab": ...}), as the library deserializes it
 * (models/{bpe,unigram,wordpiece,wordlevel}/serialization.rs), into the id table. */
static int read_model(loader *L, const cJSON *root, mm_err *err)
{
    mm_tokenizer *t = L->t;
    const char *path = L->json_path;
    char where[PLACE];
    const cJSON *model, *type, *vocab, *e;
    int rc;
    at(where, "%s: model", path);
    if ((rc = member(root, "model", path, &model, err)) < 0)
        return rc;
    if (!cJSON_IsObject(model))
        return bad_type(where, "needs an object", model, err);
    if ((rc = member(model, "type", where, &type, err)) < 0 || (rc = member(model, "vocab", where, &vocab, err)) < 0)
        return rc;
    if (!cJSON_IsString(type))
        return mm_err_set(err, -EINVAL, "%s: \"type\" must name the model (BPE, Unigram, WordPiece, WordLevel), not be %s",
                          where, json_type(type));
    static const char *const types[] = {"BPE", "Unigram", "WordPiece", "WordLevel"};
    size_t k;
    for (k = 0; k < MM_COUNT(types) && strcmp(type->valuestring, types[k]) != 0; k++)
        ;
    if (k == MM_COUNT(types))
        return mm_err_set(err, -EINVAL, "%s: unknown model type \"%s\" (BPE, Unigram, WordPiece or WordLevel)", where,
                          type->valuestring);
    t->model_type = mm_xstrdup(types[k]);
    at(where, "%s: model.vocab", path);
    int unigram = k == 1;
    if (unigram ? !cJSON_IsArray(vocab) : !cJSON_IsObject(vocab))
        return bad_type(where, unigram ? "a Unigram vocabulary is a list of [piece, score]"
                                       : "the vocabulary is an object of token: id",
                        vocab, err);
    size_t count = (size_t)cJSON_GetArraySize(vocab), i = 0;
    mm_tokv_begin(t, count);
    cJSON_ArrayForEach(e, vocab)
    {
        if (unigram) {
            /* Unigram::from: the list's order gives the ids */
            if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 2 || !cJSON_IsString(e->child) ||
                !cJSON_IsNumber(e->child->next))
                return mm_err_set(err, -EINVAL, "%s[%zu]: an entry is [piece, score] (a string and a number)", where, i);
            const char *s = e->child->valuestring;
            rc = mm_tokv_model_add(t, s, strlen(s), i, where, err);
        } else {
            uint64_t id;
            if (json_id(e, &id) < 0) {
                char q[160];
                return mm_err_set(err, -EINVAL, "%s: the id of %s is %s, not an integer from 0 to 2^32 - 1", where,
                                  mm_quote(q, sizeof q, e->string, strlen(e->string)),
                                  cJSON_IsNumber(e) ? "a number" : json_type(e));
            }
            rc = mm_tokv_model_add(t, e->string, strlen(e->string), id, where, err);
        }
        if (rc < 0)
            return rc;
        i++;
    }
    /* Model::get_vocab_size: the map's size, or the Unigram list's length (equal: duplicates are refused) */
    mm_tokv_model_done(t, count);
    at(where, "%s: model", path);
    if (k == 0) { /* BPE */
        const cJSON *merges, *prefix;
        if ((rc = member(model, "merges", where, &merges, err)) < 0 ||
            (rc = member(model, "continuing_subword_prefix", where, &prefix, err)) < 0)
            return rc;
        if (!cJSON_IsArray(merges))
            return bad_type(where, "BPE needs \"merges\", a list", merges, err);
        if (prefix && !cJSON_IsNull(prefix) && !cJSON_IsString(prefix))
            return bad_type(where, "\"continuing_subword_prefix\" is a string or null", prefix, err);
        return check_merges(L, merges, cJSON_IsString(prefix) ? prefix->valuestring : NULL, err);
    }
    if (unigram) {
        const cJSON *unk, *bf;
        uint64_t id;
        if ((rc = member(model, "unk_id", where, &unk, err)) < 0 || (rc = member(model, "byte_fallback", where, &bf, err)) < 0)
            return rc;
        if (unk && !cJSON_IsNull(unk) && (json_id(unk, &id) < 0 || id >= count))
            return mm_err_set(err, -EINVAL, "%s: \"unk_id\" must be null or the index of a vocabulary entry (0 to %zu)",
                              where, count ? count - 1 : 0);
        if (bf && !cJSON_IsBool(bf))
            return bad_type(where, "\"byte_fallback\" is a bool", bf, err);
        return 0;
    }
    const cJSON *unk; /* WordPiece and WordLevel: a required unk_token */
    if ((rc = member(model, "unk_token", where, &unk, err)) < 0)
        return rc;
    if (!cJSON_IsString(unk))
        return bad_type(where, "needs \"unk_token\", a string", unk, err);
    return 0;
}

/* tokenizer.json's added_tokens entry: AddedTokenWithId, {id, content, single_word, lstrip, rstrip,
 * normalized, special}, every field required as serde derives it (other keys are ignored, as serde does). */
static int parse_added_with_id(const cJSON *e, const char *where, mm_tok_spec *spec, uint64_t *id, mm_err *err)
{
    static const char *const names[5] = {"single_word", "lstrip", "rstrip", "normalized", "special"};
    unsigned flags[5];
    const cJSON *v;
    int rc;
    if (!cJSON_IsObject(e))
        return bad_type(where, "an added token is an object", e, err);
    if ((rc = member(e, "id", where, &v, err)) < 0)
        return rc;
    if (json_id(v, id) < 0)
        return mm_err_set(err, -EINVAL, "%s: \"id\" must be an integer from 0 to 2^32 - 1, not %s", where, json_type(v));
    if ((rc = member(e, "content", where, &v, err)) < 0)
        return rc;
    if (!cJSON_IsString(v))
        return bad_type(where, "\"content\" must be a string", v, err);
    const char *content = v->valuestring;
    for (int k = 0; k < 5; k++) {
        if ((rc = member(e, names[k], where, &v, err)) < 0)
            return rc;
        if (!cJSON_IsBool(v))
            return mm_err_set(err, -EINVAL, "%s: \"%s\" must be a bool, not %s", where, names[k], json_type(v));
        flags[k] = cJSON_IsTrue(v);
    }
    *spec = (mm_tok_spec){content, strlen(content), flags[4], flags[0], flags[1], flags[2], flags[3]};
    return 0;
}

/* The token at an id after adding, for messages. */
static const char *token_desc(const mm_tokenizer *t, long id, char *buf, size_t size)
{
    size_t len;
    const char *s = mm_tokenizer_token(t, id, &len);
    if (!s)
        snprintf(buf, size, "nothing");
    else
        mm_quote(buf, size, s, len);
    return buf;
}

/* A declared id against the one the token got. */
static int check_declared(const mm_tokenizer *t, const char *where, const mm_tok_spec *s, uint64_t declared, long got,
                          mm_err *err)
{
    char q[160], q2[160];
    if (s->len == 0)
        return mm_err_set(err, -EINVAL, "%s: an added token with empty content (transformers ignores it)", where);
    if (got != (long)declared)
        return mm_err_set(err, -EINVAL, "%s: %s is declared at id %llu but transformers gives it id %ld (id %llu holds %s); "
                                        "its embedding row would belong to another token",
                          where, mm_quote(q, sizeof q, s->content, s->len), (unsigned long long)declared, got,
                          (unsigned long long)declared, token_desc(t, (long)declared, q2, sizeof q2));
    return 0;
}

/* Tokenizer deserialization (tokenizer/serialization.rs): "version" 1.0 if given, the model, then
 * "added_tokens" added in file order in one add_tokens call; the ids they declare are only compared
 * there (a warning), here they must match. "padding", when set, gives transformers its pad token. */
static int read_tokenizer_json(loader *L, mm_err *err)
{
    mm_tokenizer *t = L->t;
    const cJSON *root = t->tokenizer_json, *v;
    const char *path = L->json_path;
    int rc;
    if (!cJSON_IsObject(root))
        return bad_type(path, "the file holds an object", root, err);
    if ((rc = member(root, "version", path, &v, err)) < 0)
        return rc;
    if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "1.0") != 0))
        return mm_err_set(err, -EINVAL, "%s: \"version\" must be \"1.0\" (the only one the tokenizers library reads)", path);
    if ((rc = read_model(L, root, err)) < 0)
        return rc;
    char where[PLACE];
    at(where, "%s: added_tokens", path);
    if ((rc = member(root, "added_tokens", path, &L->added_tokens, err)) < 0)
        return rc;
    if (!cJSON_IsArray(L->added_tokens))
        return bad_type(where, "needs a list (every tokenizer.json the library writes has one)", L->added_tokens, err);
    size_t n = (size_t)cJSON_GetArraySize(L->added_tokens), i = 0;
    mm_tok_spec *specs = mm_xcalloc(n, sizeof *specs);
    uint64_t *declared = mm_xcalloc(n, sizeof *declared);
    long *ids = mm_xcalloc(n, sizeof *ids);
    cJSON_ArrayForEach(v, L->added_tokens)
    {
        at(where, "%s: added_tokens[%zu]", path, i);
        if ((rc = parse_added_with_id(v, where, &specs[i], &declared[i], err)) < 0)
            goto out;
        i++;
    }
    at(where, "%s: added_tokens", path);
    if ((rc = mm_tokv_add_tokens(t, specs, n, ids, where, err)) < 0)
        goto out;
    for (i = 0; i < n; i++) {
        at(where, "%s: added_tokens[%zu]", path, i);
        if ((rc = check_declared(t, where, &specs[i], declared[i], ids[i], err)) < 0)
            goto out;
    }
    if ((rc = member(root, "padding", path, &v, err)) < 0)
        goto out;
    if (v && !cJSON_IsNull(v)) {
        const cJSON *pad;
        at(where, "%s: padding", path);
        if (!cJSON_IsObject(v)) {
            rc = bad_type(where, "is null or an object", v, err);
            goto out;
        }
        if ((rc = member(v, "pad_token", where, &pad, err)) < 0)
            goto out;
        if (!cJSON_IsString(pad)) {
            rc = bad_type(where, "needs \"pad_token\", a string", pad, err);
            goto out;
        }
        L->padding_pad = pad->valuestring;
    }
out:
    free(specs);
    free(declared);
    free(ids);
    return rc;
}

/* ---- the model's vocabulary: tokenizer.model alone ---------------------------------------------------- */

/* SentencePieceExtractor.extract: the pieces in order are the vocabulary (a piece's id is its index;
 * Model::get_vocab_size is their number), Unigram for a UNIGRAM model and BPE otherwise. A text that is
 * both a normal and a control piece (sentencepiece allows it) cannot be one key of get_vocab(): refused. */
static int read_spm(loader *L, mm_err *err)
{
    mm_tokenizer *t = L->t;
    int rc = mm_spm_read_file(L->spm_path, &t->spm, err);
    if (rc < 0)
        return rc;
    const mm_spm_model *m = t->spm;
    t->model_type = mm_xstrdup(m->model_type == MM_SPM_UNIGRAM ? "Unigram" : "BPE");
    char where[PLACE];
    at(where, "%s: pieces", L->spm_path);
    mm_tokv_begin(t, m->npieces);
    for (size_t i = 0; i < m->npieces; i++)
        if ((rc = mm_tokv_model_add(t, m->pieces[i].piece, m->pieces[i].len, i, where, err)) < 0)
            return rc;
    mm_tokv_model_done(t, m->npieces);
    return 0;
}

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
        return at(where, "%s: added_tokens[%zu]", x->source, x->index);
    if (strstr(x->source, "added_tokens.json"))
        return at(where, "%s: %s", x->source, mm_quote(q, sizeof q, x->key, strlen(x->key)));
    return at(where, "%s: added_tokens_decoder['%s']", x->source, x->key);
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
            int same = prev->spec.len == cur->spec.len && memcmp(prev->spec.content, cur->spec.content, cur->spec.len) == 0;
            if (prev->key && cur->key)
                return mm_err_set(err, -EINVAL, "%s: id %llu is given twice (%s and %s)", dec_where(cur, where),
                                  (unsigned long long)cur->id, mm_quote(q, sizeof q, prev->spec.content, prev->spec.len),
                                  mm_quote(q2, sizeof q2, cur->spec.content, cur->spec.len));
            if (prev->key && !same)
                return mm_err_set(err, -EINVAL, "%s: %s at id %llu, where %s has %s (transformers would drop the latter)",
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
    at(where, "%s: added_tokens_decoder", L->config_path);
    if (!cJSON_IsObject(dec))
        return bad_type(where, "is an object of id: AddedToken", dec, err);
    const cJSON *e;
    cJSON_ArrayForEach(e, dec)
    {
        const char *key = e->string;
        at(where, "%s: added_tokens_decoder['%.40s']", L->config_path, key);
        size_t n = strspn(key, "0123456789");
        if (n == 0 || key[n] || n > 10 || strtoull(key, NULL, 10) > 4294967295ull)
            return mm_err_set(err, -EINVAL, "%s: the key must be an id (decimal digits, up to 2^32 - 1)", where);
        if (!cJSON_IsObject(e))
            return bad_type(where, "an added token is an object", e, err);
        dec_entry *x = dec_add(d, strtoull(key, NULL, 10));
        x->source = L->config_path;
        x->key = key;
        tokval tv;
        int rc = parse_added_dict(e, 1, 0, where, &tv, err);
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
    int set;
} named;

typedef struct specials {
    tokval std[NSTD];
    int std_set[NSTD], std_given[NSTD]; /* given: the key is in init_kwargs (even as null) */
    named *auto_, *explicit_;           /* model-specific: AddedToken-valued keys, and string-valued ones */
    size_t nauto, nexplicit;
    tokval *extra;
    size_t nextra;
    int extra_given, additional_given;  /* extra_special_tokens / additional_special_tokens in init_kwargs */
    tokval *additional;                 /* additional_special_tokens, when extra is not given */
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
    (*list)[(*n)++] = (named){mm_xstrdup(key), *v, 1};
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
        return bad_type(where, "a list of special tokens", list, err);
    size_t cap = (size_t)cJSON_GetArraySize(list), i = 0;
    *out = mm_xcalloc(cap ? cap : 1, sizeof **out);
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        char w[PLACE];
        at(w, "%s[%zu]", where, i++);
        tokval tv;
        int set, rc;
        if (legacy && cJSON_IsObject(e))
            rc = parse_added_dict(e, 1, 1, w, &tv, err), set = rc == 0;
        else
            rc = config_token(e, w, &tv, &set, err);
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
        at(where, "%s: %s", L->config_path, key);
        int k = std_index(key);
        if (k >= 0 || strcmp(key, "extra_special_tokens") == 0 || strcmp(key, "additional_special_tokens") == 0 ||
            ends_with_token(key)) {
            const cJSON *dup;
            if ((rc = member(cfg, key, L->config_path, &dup, err)) < 0)
                return rc;
        }
        if (k >= 0) {
            s->std_given[k] = 1;
            if ((rc = config_token(e, where, &s->std[k], &s->std_set[k], err)) < 0)
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
                if ((rc = parse_added_dict(e, 1, 0, where, &tv, err)) < 0)
                    return rc;
                named_put(&s->auto_, &s->nauto, key, &tv);
            }
        }
    }
    if (!extra && additional) /* init_kwargs.setdefault("extra_special_tokens", pop("additional_special_tokens")) */
        extra = additional;
    if (extra && !cJSON_IsNull(extra)) {
        s->extra_given = !cJSON_IsObject(extra); /* an object is popped into the model-specific tokens */
        at(where, "%s: %s", L->config_path, extra->string);
        if (cJSON_IsObject(extra)) { /* named model-specific tokens */
            cJSON_ArrayForEach(e, extra)
            {
                char w[PLACE];
                at(w, "%s['%.60s']", where, e->string);
                tokval tv;
                int set;
                if ((rc = config_token(e, w, &tv, &set, err)) < 0)
                    return rc;
                if (!set)
                    return mm_err_set(err, -EINVAL, "%s: null is no special token", w);
                named_put(&s->explicit_, &s->nexplicit, e->string, &tv);
            }
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
        return bad_type(L->stm_path, "the file holds an object", stm, err);
    cJSON_ArrayForEach(e, stm)
    {
        const char *key = e->string;
        const cJSON *dup;
        if ((rc = member(stm, key, L->stm_path, &dup, err)) < 0)
            return rc;
        at(where, "%s: %s", L->stm_path, key);
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
                const cJSON *f;
                cJSON_ArrayForEach(f, e)
                {
                    char w[PLACE];
                    at(w, "%s['%.60s']", where, f->string);
                    tokval tv;
                    int set;
                    if ((rc = config_token(f, w, &tv, &set, err)) < 0)
                        return rc;
                    if (!set)
                        return mm_err_set(err, -EINVAL, "%s: null is no special token", w);
                    named_put(&s->explicit_, &s->nexplicit, f->string, &tv);
                }
            } else if (cJSON_IsNull(e)) {
                free(s->extra);
                s->extra = NULL;
                s->nextra = 0;
                s->extra_given = 1;
            } else {
                return bad_type(where, "a list of special tokens", e, err);
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
            if ((rc = parse_added_dict(e, 1, 1, where, &tv, err)) < 0)
                return rc;
            set = 1;
        } else if (cJSON_IsString(e)) {
            tv = str_val(e->valuestring, strlen(e->valuestring));
            set = 1;
        } else if (!cJSON_IsNull(e) && k >= 0) {
            return bad_type(where, "a special token is a string or an object", e, err);
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
        return bad_type(L->atj_path, "the file holds an object of token: id", atj, err);
    const cJSON *e;
    cJSON_ArrayForEach(e, atj)
    {
        char where[PLACE], q[160];
        at(where, "%s: %s", L->atj_path, mm_quote(q, sizeof q, e->string, strlen(e->string)));
        uint64_t id; /* a key written twice gives its token two ids, or one id twice: refused below */
        if (json_id(e, &id) < 0)
            return mm_err_set(err, -EINVAL, "%s: the id must be an integer from 0 to 2^32 - 1, not %s", where,
                              cJSON_IsNumber(e) ? "a number" : json_type(e));
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
        int rc = parse_added_with_id(e, at(where, "%s: added_tokens[%zu]", L->json_path, i), &spec, &id, err);
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
            for (j = 0; j < nencoder && !(toks[j].len == v->len && memcmp(toks[j].content, v->content, v->len) == 0); j++)
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
    at(where, "%s: added and special tokens",
             t->tokenizer_config ? L->config_path : t->kind == MM_TOK_FAST ? L->json_path : L->spm_path);
    rc = mm_tokv_add_tokens(t, toks, n, ids, where, err);
    for (size_t i = 0; i < d->n && rc == 0; i++)
        rc = check_declared(t, dec_where(&d->e[i], where), &d->e[i].spec, d->e[i].id, ids[i], err);
    free(named_v);
    free(toks);
    free(ids);
    return rc;
}

/* ---- the chat template --------------------------------------------------------------------------------- */

static int read_text(const char *path, char **out, mm_err *err)
{
    size_t len;
    int rc = mm_file_read_all(path, MM_TOK_MAX_JSON, out, &len, err);
    if (rc < 0)
        return rc;
    size_t valid = mm_utf8_valid_len(*out, len), nul = strlen(*out);
    if (valid < len || nul < len) {
        free(*out);
        *out = NULL;
        return mm_err_set(err, -EINVAL, "%s: not UTF-8 text without NUL bytes (at byte %zu)", path, valid < nul ? valid : nul);
    }
    return 0;
}

/* _from_pretrained: chat_template.jinja is the "default" template and additional_chat_templates/NAME.jinja
 * the template NAME; when any exists they replace the config's chat_template. Otherwise the config's
 * (a string, or a list of {name, template} that __init__ makes a dict). A dict gives its "default" (what
 * get_chat_template applies, and mergekit's _set_chat_template takes). */
static int read_chat_template(loader *L, const char *folder, mm_err *err)
{
    mm_tokenizer *t = L->t;
    char *path = mm_path_join(folder, "chat_template.jinja");
    struct stat st;
    int rc = 0, from_files = 0;
    if (stat(path, &st) == 0) {
        from_files = 1;
        rc = read_text(path, &t->chat_template, err);
    }
    free(path);
    if (rc < 0)
        return rc;
    char *dir = mm_path_join(folder, "additional_chat_templates");
    DIR *dp = opendir(dir);
    if (dp) {
        struct dirent *de;
        while ((de = readdir(dp))) {
            size_t n = strlen(de->d_name);
            if (n < 6 || strcmp(de->d_name + n - 6, ".jinja") != 0)
                continue;
            from_files = 1;
            if (strcmp(de->d_name, "default.jinja") == 0) {
                char *p = mm_path_join(dir, de->d_name);
                free(t->chat_template);
                t->chat_template = NULL;
                rc = read_text(p, &t->chat_template, err);
                free(p);
                if (rc < 0)
                    break;
            }
        }
        closedir(dp);
    }
    free(dir);
    if (rc < 0 || from_files || !t->tokenizer_config)
        return rc;
    const cJSON *ct, *e;
    if ((rc = member(t->tokenizer_config, "chat_template", L->config_path, &ct, err)) < 0)
        return rc;
    char where[PLACE];
    at(where, "%s: chat_template", L->config_path);
    if (!ct || cJSON_IsNull(ct))
        return 0;
    if (cJSON_IsString(ct)) {
        t->chat_template = mm_xstrdup(ct->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(ct))
        return bad_type(where, "is a string or a list of {name, template}", ct, err);
    size_t i = 0;
    const char *found = NULL;
    cJSON_ArrayForEach(e, ct)
    {
        char w[PLACE];
        at(w, "%s[%zu]", where, i++);
        const cJSON *name, *tmpl;
        if (!cJSON_IsObject(e))
            return bad_type(w, "an entry is an object {name, template}", e, err);
        if ((rc = member(e, "name", w, &name, err)) < 0 || (rc = member(e, "template", w, &tmpl, err)) < 0)
            return rc;
        if (!cJSON_IsString(name) || !cJSON_IsString(tmpl))
            return mm_err_set(err, -EINVAL, "%s: needs \"name\" and \"template\", both strings", w);
        for (const cJSON *f = ct->child; f != e; f = f->next) {
            const cJSON *other = cJSON_GetObjectItemCaseSensitive(f, "name");
            if (cJSON_IsString(other) && strcmp(other->valuestring, name->valuestring) == 0)
                return mm_err_set(err, -EINVAL, "%s: a second template named \"%s\"", w, name->valuestring);
        }
        if (strcmp(name->valuestring, "default") == 0)
            found = tmpl->valuestring;
    }
    if (found)
        t->chat_template = mm_xstrdup(found);
    return 0;
}

/* ---- the folder ---------------------------------------------------------------------------------------- */

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Everything after the model's vocabulary: the config's decoder (or the legacy files), the special
 * tokens, the second add_tokens call. */
static int read_config(loader *L, const char *folder, mm_err *err)
{
    mm_tokenizer *t = L->t;
    const cJSON *cfg = t->tokenizer_config, *dec = NULL, *v;
    specials s = {0};
    decoder d = {0};
    cJSON *stm = NULL, *atj = NULL;
    int rc = 0;
    if (cfg) {
        if (!cJSON_IsObject(cfg))
            return bad_type(L->config_path, "the file holds an object", cfg, err);
        if ((rc = member(cfg, "added_tokens_decoder", L->config_path, &dec, err)) < 0 ||
            (rc = member(cfg, "fast_tokenizer_files", L->config_path, &v, err)) < 0)
            return rc;
        if (v)
            return mm_err_set(err, -EINVAL, "%s: \"fast_tokenizer_files\" (tokenizer files chosen by transformers version) "
                                            "is not supported",
                              L->config_path);
        if ((rc = member(cfg, "model_specific_special_tokens", L->config_path, &v, err)) < 0)
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
        L->stm_path = mm_path_join(folder, "special_tokens_map.json");
        L->atj_path = mm_path_join(folder, "added_tokens.json");
        if ((rc = read_json(L->stm_path, &stm, err)) < 0 || (stm && (rc = stm_specials(L, stm, &s, err)) < 0))
            goto out;
        if ((rc = read_json(L->atj_path, &atj, err)) < 0 || (atj && (rc = added_tokens_json(L, atj, &s, &d, err)) < 0))
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
        } pro[] = {{0, m->bos_id, m->bos_piece, "<s>"}, {1, m->eos_id, m->eos_piece, "</s>"},
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

int mm_tokenizer_load(const char *folder, mm_tokenizer **out, mm_err *err)
{
    mm_tokenizer *t = mm_xcalloc(1, sizeof *t);
    loader L = {.t = t};
    L.config_path = mm_path_join(folder, "tokenizer_config.json");
    L.json_path = mm_path_join(folder, "tokenizer.json");
    L.spm_path = mm_path_join(folder, "tokenizer.model");
    int rc = read_json(L.config_path, &t->tokenizer_config, err);
    if (rc == 0)
        rc = read_json(L.json_path, &t->tokenizer_json, err);
    if (rc == 0) {
        if (t->tokenizer_json) {
            t->kind = MM_TOK_FAST;
            rc = read_tokenizer_json(&L, err);
        } else if (exists(L.spm_path)) {
            t->kind = MM_TOK_SPM;
            rc = read_spm(&L, err);
        } else {
            rc = mm_err_set(err, -ENOENT, "%s: no tokenizer.json nor tokenizer.model (other tokenizer files are not read)",
                            folder);
        }
    }
    if (rc == 0)
        rc = read_config(&L, folder, err);
    if (rc == 0)
        rc = read_chat_template(&L, folder, err);
    if (rc == 0)
        mm_tokv_finish(t);
    free(L.config_path);
    free(L.json_path);
    free(L.spm_path);
    free(L.stm_path);
    free(L.atj_path);
    if (rc < 0) {
        mm_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}
