/* Strict JSON access for the tokenizer files, and the AddedToken values they hold (formats/tokload.h). */
#include "tokload.h"

#include "jsonpy.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

char *mm_tok_at(char *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, PLACE, fmt, ap);
    va_end(ap);
    return buf;
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

int mm_tok_read_json(const mm_tok_files *files, const char *name, const char *path, cJSON **out, mm_err *err)
{
    *out = NULL;
    char *text;
    size_t len;
    int rc = files->read(files->ctx, name, MM_TOK_MAX_JSON, &text, &len, err);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    size_t valid = mm_utf8_valid_len(text, len);
    long nul = nul_escape(text, len);
    if (valid < len)
        rc = mm_err_set(err, -EINVAL, "%s: not valid UTF-8 (at byte %zu)", path, valid);
    else if (nul >= 0)
        rc = mm_err_set(err, -EINVAL, "%s: a string holds \\u0000 (at byte %ld), which this reader cannot keep", path,
                        nul);
    else if ((rc = mm_json_parse(text, len, out, err)) < 0)
        mm_err_prefix(err, "%s", path);
    free(text);
    return rc;
}

int mm_tokenizer_read_json(const mm_tok_files *files, const char *name, cJSON **out, mm_err *err)
{
    char *path = mm_path_join(files->label, name);
    int rc = mm_tok_read_json(files, name, path, out, err);
    free(path);
    return rc;
}

/* obj's member `key` (NULL when absent). A key written twice is an error: json.load keeps the last,
 * cJSON the first, and the two readings must not differ. */
int mm_tok_member(const cJSON *obj, const char *key, const char *where, const cJSON **out, mm_err *err)
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

const char *mm_tok_json_type(const cJSON *v)
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
int mm_tok_json_id(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v) || mm_json_is_float(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 4294967295.0 || floor(d) != d)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

int mm_tok_bad_type(const char *where, const char *what, const cJSON *v, mm_err *err)
{
    return mm_err_set(err, -EINVAL, "%s: %s, not %s", where, what, mm_tok_json_type(v));
}

/* ---- special tokens: str or AddedToken ---------------------------------------------------------------- */

/* AddedToken(**obj): content, and the flags single_word, lstrip, rstrip (False), special (False, or
 * True for force_special: special_tokens_map.json's entries are made special) and normalized (not
 * special). "__type" is allowed where `typed` (the marker convert_added_tokens removes); any other key is
 * an error (the tokenizers binding prints "Ignored unknown kwarg option" and drops it). */
int mm_tok_parse_added_dict(const cJSON *o, int typed, int force_special, const char *where, tokval *out, mm_err *err)
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
                return mm_err_set(err, -EINVAL, "%s: \"%s\" is %s, not a bool", where, e->string, mm_tok_json_type(e));
            flags[k] = cJSON_IsTrue(e);
        } else if (strcmp(e->string, "content") == 0) {
            content = e;
        } else if (!(typed && strcmp(e->string, "__type") == 0)) {
            return mm_err_set(err, -EINVAL, "%s: unknown key \"%s\" for an AddedToken", where, e->string);
        }
        /* written twice? */
        const cJSON *dup;
        int rc = mm_tok_member(o, e->string, where, &dup, err);
        if (rc < 0)
            return rc;
    }
    if (!cJSON_IsString(content))
        return mm_err_set(err, -EINVAL, "%s: an AddedToken needs \"content\" (a string), not %s", where,
                          mm_tok_json_type(content));
    if (force_special)
        flags[3] = 1;
    *out = (tokval){content->valuestring, strlen(content->valuestring), 1, 0, {0}};
    out->spec = (mm_tok_spec){out->content,
                              out->len,
                              (unsigned)flags[3],
                              (unsigned)flags[0],
                              (unsigned)flags[1],
                              (unsigned)flags[2],
                              (unsigned)(flags[4] < 0 ? !flags[3] : flags[4])};
    return 0;
}

/* The value of a special-token kwarg in tokenizer_config.json: null (*set = 0), a str, or an AddedToken
 * object marked {"__type": "AddedToken"} (convert_added_tokens); anything else is refused, as
 * PreTrainedTokenizerBase.__init__ raises TypeError for it. */
int mm_tok_config_token(const cJSON *v, const char *where, tokval *out, int *set, mm_err *err)
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
        return mm_err_set(err, -EINVAL,
                          "%s: a special token must be a string or an object with \"__type\": "
                          "\"AddedToken\", not %s",
                          where, mm_tok_json_type(v));
    int rc = mm_tok_parse_added_dict(v, 1, 0, where, out, err);
    out->raw_dict = 1;
    *set = rc == 0;
    return rc;
}

/* tokenizer.json's added_tokens entry: AddedTokenWithId, {id, content, single_word, lstrip, rstrip,
 * normalized, special}, every field required as serde derives it (other keys are ignored, as serde does). */
int mm_tok_parse_added_with_id(const cJSON *e, const char *where, mm_tok_spec *spec, uint64_t *id, mm_err *err)
{
    static const char *const names[5] = {"single_word", "lstrip", "rstrip", "normalized", "special"};
    unsigned flags[5];
    const cJSON *v;
    int rc;
    if (!cJSON_IsObject(e))
        return mm_tok_bad_type(where, "an added token is an object", e, err);
    if ((rc = mm_tok_member(e, "id", where, &v, err)) < 0)
        return rc;
    if (mm_tok_json_id(v, id) < 0)
        return mm_err_set(err, -EINVAL, "%s: \"id\" must be an integer from 0 to 2^32 - 1, not %s", where,
                          mm_tok_json_type(v));
    if ((rc = mm_tok_member(e, "content", where, &v, err)) < 0)
        return rc;
    if (!cJSON_IsString(v))
        return mm_tok_bad_type(where, "\"content\" must be a string", v, err);
    const char *content = v->valuestring;
    for (int k = 0; k < 5; k++) {
        if ((rc = mm_tok_member(e, names[k], where, &v, err)) < 0)
            return rc;
        if (!cJSON_IsBool(v))
            return mm_err_set(err, -EINVAL, "%s: \"%s\" must be a bool, not %s", where, names[k], mm_tok_json_type(v));
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
int mm_tok_check_declared(const mm_tokenizer *t, const char *where, const mm_tok_spec *s, uint64_t declared, long got,
                          mm_err *err)
{
    char q[160], q2[160];
    if (s->len == 0)
        return mm_err_set(err, -EINVAL, "%s: an added token with empty content (transformers ignores it)", where);
    if (got != (long)declared)
        return mm_err_set(err, -EINVAL,
                          "%s: %s is declared at id %llu but transformers gives it id %ld (id %llu holds %s); "
                          "its embedding row would belong to another token",
                          where, mm_quote(q, sizeof q, s->content, s->len), (unsigned long long)declared, got,
                          (unsigned long long)declared, token_desc(t, (long)declared, q2, sizeof q2));
    return 0;
}
