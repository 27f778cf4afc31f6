/* Internal to formats/tokenizer.c, tokjson.c and tokspecial.c, which read a model folder's tokenizer
 * (formats/tokenizer.h): what the file reading the vocabularies and the one applying transformers' rules
 * for added and special tokens share. */
#ifndef MM_TOKLOAD_H
#define MM_TOKLOAD_H

#include "tokenizer.h"
#include "tokvocab.h"

/* Places in messages: "DIR/tokenizer.json: added_tokens[3]". A path can be PATH_MAX long. */
#define PLACE 4608

/* Formats a place into buf (PLACE bytes) and returns buf. */
char *mm_tok_at(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A token as transformers holds it before adding: a Python str, or an AddedToken with flags. */
typedef struct tokval {
    const char *content;
    size_t len;
    int added;    /* an AddedToken (spec's flags hold), else a str */
    int raw_dict; /* a {"__type": "AddedToken"} object of tokenizer_config.json: still a dict, whose str()
                     is no token, where _from_pretrained collects special tokens for added_tokens.json */
    mm_tok_spec spec;
} tokval;

static inline tokval str_val(const char *s, size_t len)
{
    return (tokval){s, len, 0, 0, {s, len, 0, 0, 0, 0, 0}};
}

/* The folder being read: its files, and what one step leaves the next. */
typedef struct loader {
    mm_tokenizer *t;
    const mm_tok_files *files;
    char *json_path, *config_path, *spm_path, *stm_path, *atj_path;
    const cJSON *added_tokens; /* tokenizer.json's */
    char *padding_pad;         /* tokenizer.json's padding.pad_token */
} loader;

/* ---- strict JSON, and AddedToken values (tokjson.c) ---- */

/* Reads and parses file `name` of `files` (named `path` in messages) as transformers does (json.load of
 * UTF-8 text). 0 with *out = NULL when the file does not exist; an error for text that is not UTF-8, not
 * JSON, or holds a \u0000 escape. */
int mm_tok_read_json(const mm_tok_files *files, const char *name, const char *path, cJSON **out, mm_err *err);
/* obj's member `key` (NULL when absent); a key written twice is an error. */
int mm_tok_member(const cJSON *obj, const char *key, const char *where, const cJSON **out, mm_err *err);
/* "a string", "a list", ... for messages. */
const char *mm_tok_json_type(const cJSON *v);
/* An integer id from 0 to 2^32 - 1 written without fraction or exponent: 0, else -1. */
int mm_tok_json_id(const cJSON *v, uint64_t *out);
/* "WHERE: WHAT, not (v's type)"; returns -EINVAL. */
int mm_tok_bad_type(const char *where, const char *what, const cJSON *v, mm_err *err);
/* AddedToken(**obj); `typed` allows the "__type" key, force_special makes the token special. */
int mm_tok_parse_added_dict(const cJSON *o, int typed, int force_special, const char *where, tokval *out, mm_err *err);
/* A special-token kwarg of tokenizer_config.json: null (*set = 0), a str, or {"__type": "AddedToken"}. */
int mm_tok_config_token(const cJSON *v, const char *where, tokval *out, int *set, mm_err *err);
/* One entry of tokenizer.json's added_tokens (AddedTokenWithId). */
int mm_tok_parse_added_with_id(const cJSON *e, const char *where, mm_tok_spec *spec, uint64_t *id, mm_err *err);
/* A declared id against the one the token got (`got`; -1 for an empty token, which is ignored). */
int mm_tok_check_declared(const mm_tokenizer *t, const char *where, const mm_tok_spec *s, uint64_t declared, long got,
                          mm_err *err);

/* ---- added and special tokens (tokspecial.c) ---- */

/* Everything after the model's vocabulary: tokenizer_config.json's added_tokens_decoder (or the legacy
 * files), the special tokens, and the second add_tokens call. */
int mm_tok_read_config(loader *L, mm_err *err);

#endif
