/* JSON helpers. Reading: cJSON with messages that say where and why a file is refused.
 * Writing: JSON the way Python's json.dumps(obj, indent=2, sort_keys=True) does (transformers'
 * save_pretrained format for config.json): 2-space indent, ", " / ": " separators, keys sorted,
 * non-ASCII escaped as \uXXXX, floats in Python repr. cJSON keeps only a double per number, so
 * mm_json_parse marks the numbers the text wrote as floats (mm_json_is_float) and the writer prints those
 * as Python floats (`10000.0`, `1e-06`) and the others as integers, as json.loads + json.dumps would. */
#ifndef MM_JSONPY_H
#define MM_JSONPY_H

#include <stddef.h>

#include "base/util.h"

typedef struct cJSON cJSON;

/* Parses `len` bytes of JSON text into *out (caller frees with cJSON_Delete). text[len] must be a
 * readable NUL byte even though the length bounds the parse: some cJSON releases read one byte past the
 * end of truncated input (cJSON issue #800), and the terminator keeps that read inside the buffer. On failure -EINVAL with "not valid JSON (syntax error at byte N)", or, for arrays and
 * objects nested deeper than cJSON's limit (CJSON_NESTING_LIMIT, 1000 levels), a message saying so:
 * cJSON refuses such input rather than recursing into it. Messages do not name the file; callers
 * prefix it. */
int mm_json_parse(const char *text, size_t len, cJSON **out, mm_err *err);

/* Whether number item `v` was written with a fraction or an exponent (`10000.0`, `1e-06`), which
 * Python's json reads as a float; mm_json_parse sets it, in O(len) after the parse. Numbers made by
 * cJSON_Create*, or changed with cJSON_SetNumberValue, keep what they had (a new one is no float). The
 * mark is carried in the item's type bits, which cJSON_Duplicate copies and cJSON's own checks mask
 * off (cJSON_IsNumber tests type & 0xFF), so it survives duplication and deletion needs nothing. */
/* `key in obj` as Python has it: case-sensitive (cJSON_HasObjectItem ignores case, so a "Torch_Dtype" key
 * would pass for "torch_dtype"). 0 for an obj that is no object. */
int mm_json_has(const cJSON *obj, const char *key);
int mm_json_is_float(const cJSON *v);
void mm_json_set_float(cJSON *v, int is_float);

/* Appends the JSON text of `v` to b (no trailing newline). A number that is no float (mm_json_is_float)
 * and has an integral value is written as an integer whatever its size; one written as an integer
 * beyond 2^53 comes out as cJSON's double rounded it. Non-finite numbers (a float token beyond the
 * double range) are written as Python writes them, `Infinity`, which is not JSON. */
void mm_json_write_py(const cJSON *v, mm_buf *b);
/* Appends a JSON string literal with Python's escaping. */
void mm_json_string_py(const char *s, mm_buf *b);

#endif
