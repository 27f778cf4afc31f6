/* Writes JSON the way Python's json.dumps(obj, indent=2, sort_keys=True) does (transformers'
 * save_pretrained format for config.json): 2-space indent, ", " / ": " separators, keys sorted,
 * non-ASCII escaped as \uXXXX, floats in Python repr. cJSON keeps no int/float distinction, so an
 * integral number is written as an integer. */
#ifndef MM_JSONPY_H
#define MM_JSONPY_H

#include "util.h"

typedef struct cJSON cJSON;

/* Appends the JSON text of `v` to b (no trailing newline). */
void mm_json_write_py(const cJSON *v, mm_buf *b);
/* Appends a JSON string literal with Python's escaping. */
void mm_json_string_py(const char *s, mm_buf *b);

#endif
