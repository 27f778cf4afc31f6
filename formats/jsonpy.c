#include "jsonpy.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* p at the opening quote of a string: the byte after its closing quote (or end, if unterminated).
 * Both scans below look only at the bytes outside strings. */
static const char *after_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return end;
}

/* The deepest nesting of arrays and objects in text[0..len), brackets inside strings not counted. */
static size_t nesting_depth(const char *text, size_t len)
{
    size_t depth = 0, max = 0;
    const char *end = text + len;
    for (const char *p = text; p < end; p++) {
        char c = *p;
        if (c == '"') {
            p = after_string(p, end) - 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                max = depth;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return max;
}

/* Above the bits cJSON uses (type in the low 8, cJSON_IsReference 256, cJSON_StringIsConst 512). */
#define MM_JSON_FLOAT (1 << 14)

int mm_json_is_float(const cJSON *v)
{
    return cJSON_IsNumber(v) && (v->type & MM_JSON_FLOAT) != 0;
}

void mm_json_set_float(cJSON *v, int is_float)
{
    if (is_float)
        v->type |= MM_JSON_FLOAT;
    else
        v->type &= ~MM_JSON_FLOAT;
}

/* The next number token in [p, end) outside strings: returns the byte after it and sets *is_float if it
 * has a fraction or an exponent; NULL when there is none. */
static const char *next_number(const char *p, const char *end, int *is_float)
{
    for (; p < end; p++) {
        char c = *p;
        if (c == '"') {
            p = after_string(p, end) - 1;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            *is_float = 0;
            for (; p < end && *p && strchr("0123456789+-.eE", *p); p++)
                *is_float |= *p == '.' || *p == 'e' || *p == 'E';
            return p;
        }
    }
    return NULL;
}

/* cJSON builds items in document order, so the k-th number item of a pre-order walk is the k-th number
 * token of the text (outside strings, no other token has digits). Pairs them and marks the floats. If
 * the two ever disagreed in count, the rest stays unmarked (written as before: integral values as ints). */
static void mark_floats(cJSON *v, const char **p, const char *end)
{
    for (; v && *p; v = v->next) {
        if (cJSON_IsNumber(v)) {
            int is_float = 0;
            *p = next_number(*p, end, &is_float);
            if (*p)
                mm_json_set_float(v, is_float);
        } else if (v->child) {
            mark_floats(v->child, p, end);
        }
    }
}

int mm_json_parse(const char *text, size_t len, cJSON **out, mm_err *err)
{
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (*out) {
        const char *p = text;
        if (!end || end < text || end > text + len)
            end = text + len;
        mark_floats(*out, &p, end);
        return 0;
    }
    size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    /* cJSON stops at the bracket that opens one level too many; it gives no reason, so tell a
     * syntax error from the depth limit by the nesting up to and including that byte. */
    if (nesting_depth(text, at < len ? at + 1 : len) > CJSON_NESTING_LIMIT)
        return mm_err_set(err, -EINVAL,
                          "JSON nested more than %d levels deep at byte %zu (refused: no real file nests that deep)",
                          CJSON_NESTING_LIMIT, at);
    return mm_err_set(err, -EINVAL, "not valid JSON (syntax error at byte %zu)", at);
}

/* Decodes one UTF-8 sequence; invalid bytes are passed through as U+FFFD. */
static unsigned decode_utf8(const unsigned char **pp)
{
    const unsigned char *p = *pp;
    unsigned c = *p, cp;
    int n;
    if (c < 0x80) {
        *pp = p + 1;
        return c;
    } else if ((c & 0xe0) == 0xc0) {
        cp = c & 0x1f;
        n = 1;
    } else if ((c & 0xf0) == 0xe0) {
        cp = c & 0x0f;
        n = 2;
    } else if ((c & 0xf8) == 0xf0) {
        cp = c & 0x07;
        n = 3;
    } else {
        *pp = p + 1;
        return 0xfffd;
    }
    for (int i = 1; i <= n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            *pp = p + 1;
            return 0xfffd;
        }
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    *pp = p + n + 1;
    return cp;
}

void mm_json_string_py(const char *s, mm_buf *b)
{
    mm_buf_puts(b, "\"");
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = decode_utf8(&p);
        switch (c) {
        case '"': mm_buf_puts(b, "\\\""); break;
        case '\\': mm_buf_puts(b, "\\\\"); break;
        case '\n': mm_buf_puts(b, "\\n"); break;
        case '\r': mm_buf_puts(b, "\\r"); break;
        case '\t': mm_buf_puts(b, "\\t"); break;
        case '\b': mm_buf_puts(b, "\\b"); break;
        case '\f': mm_buf_puts(b, "\\f"); break;
        default:
            if (c < 0x20 || (c >= 0x7f && c < 0x10000)) {
                mm_buf_printf(b, "\\u%04x", c);
            } else if (c >= 0x10000) {
                c -= 0x10000;
                mm_buf_printf(b, "\\u%04x\\u%04x", 0xd800 + (c >> 10), 0xdc00 + (c & 0x3ff));
            } else {
                char ch = (char)c;
                mm_buf_append(b, &ch, 1);
            }
        }
    }
    mm_buf_puts(b, "\"");
}

typedef struct keyed {
    const cJSON *item;
    int pos;
} keyed;

/* By key, and equal keys in document order: a file with a duplicated key is written the same way
 * every time (Python keeps only the last one; cJSON keeps both). */
static int cmp_key(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    int c = strcmp(x->item->string, y->item->string);
    return c ? c : x->pos - y->pos;
}

static void indent(mm_buf *b, int level)
{
    mm_buf_puts(b, "\n");
    for (int i = 0; i < level; i++)
        mm_buf_puts(b, "  ");
}

static void write_value(const cJSON *v, mm_buf *b, int level)
{
    if (cJSON_IsNull(v)) {
        mm_buf_puts(b, "null");
    } else if (cJSON_IsTrue(v)) {
        mm_buf_puts(b, "true");
    } else if (cJSON_IsFalse(v)) {
        mm_buf_puts(b, "false");
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        /* An int of any size stays an int (Python's are unbounded); past 2^53 cJSON's double has
         * already rounded it, as the reader's contract says. */
        if (!mm_json_is_float(v) && isfinite(d) && floor(d) == d) {
            mm_buf_printf(b, "%.0f", d == 0 ? 0.0 : d); /* an int has no -0 (json.loads("-0") is 0) */
        } else {
            char tmp[64];
            mm_format_double(d, tmp, sizeof tmp);
            mm_buf_puts(b, tmp);
        }
    } else if (cJSON_IsString(v)) {
        mm_json_string_py(v->valuestring, b);
    } else if (cJSON_IsArray(v)) {
        int n = cJSON_GetArraySize(v);
        if (n == 0) {
            mm_buf_puts(b, "[]");
            return;
        }
        mm_buf_puts(b, "[");
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, v)
        {
            indent(b, level + 1);
            write_value(e, b, level + 1);
            if (++i < n)
                mm_buf_puts(b, ",");
        }
        indent(b, level);
        mm_buf_puts(b, "]");
    } else if (cJSON_IsObject(v)) {
        int n = cJSON_GetArraySize(v);
        if (n == 0) {
            mm_buf_puts(b, "{}");
            return;
        }
        keyed *items = mm_xmalloc((size_t)n * sizeof *items);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, v)
        {
            items[i] = (keyed){e, i};
            i++;
        }
        qsort(items, (size_t)n, sizeof *items, cmp_key);
        mm_buf_puts(b, "{");
        for (i = 0; i < n; i++) {
            indent(b, level + 1);
            mm_json_string_py(items[i].item->string, b);
            mm_buf_puts(b, ": ");
            write_value(items[i].item, b, level + 1);
            if (i + 1 < n)
                mm_buf_puts(b, ",");
        }
        free(items);
        indent(b, level);
        mm_buf_puts(b, "}");
    } else {
        mm_buf_puts(b, "null");
    }
}

void mm_json_write_py(const cJSON *v, mm_buf *b)
{
    write_value(v, b, 0);
}

int mm_json_has(const cJSON *obj, const char *key)
{
    return cJSON_IsObject(obj) && cJSON_GetObjectItemCaseSensitive(obj, key) != NULL;
}
