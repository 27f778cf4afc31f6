/* The `chat_template` option (docs/merge-contract.md D19), as mergekit's merge.py _set_chat_template:
 *   "auto"        the most common chat template among the referenced models (each stripped of leading
 *                 and trailing whitespace; ties go to the first seen, models in config order with the
 *                 tokenizer base first); none found: no template is set;
 *   alpaca, chatml, llama3, mistral, exaone
 *                 our own Jinja templates (merge/plan/chat.c) that render the same text as mergekit's
 *                 built-in files of those names, under transformers' rendering rules;
 *   anything else must look like Jinja (>= 20 characters and containing '{'), and is used as it is.
 * Planning only; thread-safe (no state). */
#ifndef MM_CHAT_H
#define MM_CHAT_H

#include <stddef.h>

#include "base/util.h"

/* The built-in template of `name`, or NULL when name is none of the five. Static storage. */
const char *mm_chat_builtin(const char *name);

/* Chooses the template to serve for option value `opt` (not NULL). templates[0..n): each referenced
 * model's default chat template in the order above (NULL for a model without one). 0 with *out a heap
 * string, or NULL when "auto" finds no template; -EINVAL with "chat_template: ... (fix)" in err for an
 * invalid inline template. `where` ("merge.yml:7:16") prefixes the message. */
int mm_chat_choose(const char *opt, const char *const *templates, size_t n, const char *where, char **out,
                   mm_err *err);

#endif
