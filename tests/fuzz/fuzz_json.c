/* Fuzzes the JSON reader and the Python-style writer (formats/jsonpy.c): the input is the text of a
 * config.json.
 *
 * Properties of every accepted text whose strings are well-formed UTF-8 (what Python's json can read at
 * all) and whose numbers are within the double range (beyond it Python too writes the non-JSON
 * `Infinity`): the writer's output reads back; the tree read back has the same shape, the same numbers
 * with the same int/float kind, and writing it again gives the same text (the writer's output is a
 * fixed point, as json.dumps(json.loads(s)) is for its own output). Other accepted texts are only
 * written, for the sanitizers. */
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "formats/jsonpy.h"
#include "fuzz.h"

static int utf8(const char *s)
{
    return !s || mm_utf8_valid_len(s, strlen(s)) == strlen(s);
}

/* Whether the round trip applies to v (see the properties above). */
static int python_readable(const cJSON *v)
{
    for (; v; v = v->next) {
        if (cJSON_IsNumber(v) && !isfinite(v->valuedouble))
            return 0;
        if (!utf8(v->string) || (cJSON_IsString(v) && !utf8(v->valuestring)))
            return 0;
        if (v->child && !python_readable(v->child))
            return 0;
    }
    return 1;
}

/* Same shape, numbers and kinds; object members compared in order, as both trees are in written order
 * after one round (the first is compared through its written text instead). */
static void check_same(const cJSON *a, const cJSON *b)
{
    for (; a && b; a = a->next, b = b->next) {
        FUZZ_CHECK((a->type & 0xFF) == (b->type & 0xFF));
        if (cJSON_IsNumber(a)) {
            FUZZ_CHECK(a->valuedouble == b->valuedouble || (isnan(a->valuedouble) && isnan(b->valuedouble)));
            FUZZ_CHECK(mm_json_is_float(a) == mm_json_is_float(b));
        }
        check_same(a->child, b->child);
    }
    FUZZ_CHECK(!a && !b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0; /* mm_json_parse wants a NUL after the text (see jsonpy.h) */
    cJSON *v = NULL;
    mm_err err = {0};
    if (mm_json_parse(text, size, &v, &err) == 0) {
        mm_buf once = {0};
        mm_json_write_py(v, &once);
        if (python_readable(v)) {
            cJSON *w = NULL, *x = NULL;
            FUZZ_CHECK(mm_json_parse(once.data, once.len, &w, &err) == 0);
            mm_buf twice = {0};
            mm_json_write_py(w, &twice);
            FUZZ_CHECK(twice.len == once.len && memcmp(twice.data, once.data, once.len) == 0);
            FUZZ_CHECK(mm_json_parse(twice.data, twice.len, &x, &err) == 0);
            check_same(w, x);
            mm_buf_free(&twice);
            cJSON_Delete(x);
            cJSON_Delete(w);
        }
        mm_buf_free(&once);
        cJSON_Delete(v);
    }
    free(text);
    return 0;
}
