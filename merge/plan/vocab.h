/* The output vocabulary of a merge with a tokenizer option (`tokenizer_source: base | union | <model>`,
 * or the `tokenizer: {source, tokens, pad_to_multiple_of}` block), built as mergekit's
 * tokenizer/build.py builds it, and each model's permutation from output token ids to its own embedding
 * rows (docs/merge-contract.md D19). Planning only: no tensor data is read here; merge/plan/rowmap.c
 * turns the permutations into the row sources of each embedding-like tensor.
 *
 * The rules (tests/reference/tokenizer_eval.py build_vocabulary is the independent reference):
 * - the tokenizer base is base_model, else the first model (config order); its tokenizer is stripped of
 *   every token whose id >= its config vocab_size (or its number of ids when the config has none): only
 *   a BPE tokenizer.json can be stripped (mergekit refuses others); merges with a stripped part are
 *   dropped; a kept merge whose product is stripped is an error.
 * - source base: the stripped base. source <model>: that model's tokenizer as it loads (not stripped; it
 *   may be a model outside the merge). source union: the stripped base, then, over the models (base
 *   first, then config order), with n = the model's config vocab_size else its base_size: every token
 *   with id < n that is neither an added token of any model (id < n) nor in the base is added as a plain
 *   token (normalized, not special; a new id), in model id order; then every added token with id < n,
 *   the first definition of a content winning, with its flags.
 * - `tokens:` entries are then added one at a time (plain tokens; one already present keeps its id).
 * - a model whose folder has no tokenizer uses the base's vocabulary for its permutation.
 * - perm[m][t]: the id of output token t in model m's (loaded; the base's stripped) vocabulary, -1 when
 *   it has none, MM_VOCAB_BEYOND when that id >= the model's vocab_size (config, else its number of
 *   ids): mergekit then fails with a KeyError when the row is needed (rowmap.c reports it).
 *
 * Thread-safety: built once at plan time, read-only afterwards. */
#ifndef MM_VOCAB_H
#define MM_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "base/util.h"
#include "formats/tokenizer.h"

#define MM_VOCAB_BEYOND (-2)

typedef struct mm_vocab_model {
    const char *ref;    /* the reference as written, for messages */
    const char *folder; /* the model's folder: its tokenizer files */
    long vocab_size;    /* config.json's vocabulary size (at the model's vocab key), or -1 when it has none */
} mm_vocab_model;

typedef enum mm_vocab_source { MM_VOCAB_BASE, MM_VOCAB_UNION, MM_VOCAB_MODEL } mm_vocab_source;

typedef struct mm_vocab_spec {
    mm_vocab_source source;
    const char *source_folder; /* MM_VOCAB_MODEL: the folder whose tokenizer is the output's */
    const char *source_ref;    /* MM_VOCAB_MODEL: its reference, for messages */
    int source_model;          /* MM_VOCAB_MODEL: its index among the models, or -1 when outside the merge */
    const char *const *tokens; /* `tokens:` keys in config order (UTF-8, NUL-terminated) */
    size_t ntokens;
} mm_vocab_spec;

typedef struct mm_vocab {
    mm_tokenizer *out;   /* the output tokenizer (get_vocab, added_tokens_decoder, base_size, ...) */
    size_t n_tokens;     /* len(get_vocab()) of the output: its ids are exactly 0..n_tokens-1 */
    size_t nmodels;
    mm_tokenizer **tok;  /* [nmodels]: each model's tokenizer as the permutation sees it (the base's
                            stripped), NULL for a model without one (it uses the base's); their
                            tokenizer_json is freed once built (only `out`'s is written back) */
    int64_t **perm;      /* [nmodels][n_tokens]: see above */
    size_t base;         /* index of the tokenizer base */
    int donor;           /* index of the model whose tokenizer files the output's derive from (the base
                            for base/union, the source model), -1 for a source outside the merge */
    const mm_tokenizer *donor_tok; /* that tokenizer (the base's stripped one for base/union) */
    char *donor_folder;  /* its folder */
    char **stripped;     /* tokens stripped from the base (ids >= its vocab_size), id order */
    size_t nstripped;
} mm_vocab;

/* Builds the output vocabulary of `spec` over models[0..n) (config order; `base` indexes the tokenizer
 * base). Every tokenizer is read with mm_tokenizer_load. 0 with *out (free with mm_vocab_free), or a
 * negative errno with a message naming the model, the file and the fix: a base without tokenizer, a
 * non-BPE base that would need stripping, a tokenizer that does not load, an output vocabulary whose
 * ids have holes (mergekit: IndexError), a source model without tokenizer. */
int mm_vocab_build(const mm_vocab_model *models, size_t n, size_t base, const mm_vocab_spec *spec, mm_vocab **out,
                   mm_err *err);
void mm_vocab_free(mm_vocab *v);

/* The served tokenizer files of the output, as transformers' save_pretrained of the output tokenizer
 * would leave them readable (what is written is in merge/plan/vocab_files.c):
 *   tokenizer.json           (fast donors) the donor's, with the model section stripped as the base was
 *                            and `added_tokens` = every added token of the output, sorted by id;
 *   tokenizer.model          (sentencepiece-only donors) the donor's file, unchanged;
 *   tokenizer_config.json    the donor's, with added_tokens_decoder = the output's added tokens and, when
 *                            chat_template is not NULL, `chat_template` set to it;
 *   special_tokens_map.json  the donor's, when it has one;
 *   chat_template.jinja      chat_template, when not NULL (transformers >= 4.43 reads it first).
 * Each file is {name, bytes} (bytes NULL with source_path set: serve that file as it is). 0, or -ENOMEM /
 * -EINVAL with a message. */
typedef struct mm_vocab_file {
    char *name;
    char *data;
    size_t len;
    char *source_path;
} mm_vocab_file;

int mm_vocab_files(const mm_vocab *v, const char *chat_template, mm_vocab_file **files, size_t *nfiles,
                   mm_err *err);
void mm_vocab_files_free(mm_vocab_file *files, size_t n);

/* Without an output vocabulary (no tokenizer option) but with a chat template: the folder's
 * tokenizer_config.json with `chat_template` set (a new one holding only it when the folder has none),
 * and chat_template.jinja; everything else of the folder's tokenizer is served as it is. */
int mm_tokenizer_config_files(const char *folder, const char *chat_template, mm_vocab_file **files, size_t *nfiles,
                              mm_err *err);

#endif
