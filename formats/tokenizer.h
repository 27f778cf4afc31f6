/* A model folder's tokenizer as transformers (>= 5, the version mergekit requires) sees it through
 * AutoTokenizer: the numbers mergekit's tokenizer merge builds on (mergekit/tokenizer/build.py):
 * tokenizer.get_vocab() (token -> id, added tokens included), tokenizer.added_tokens_decoder (id ->
 * AddedToken), tokenizer.vocab_size (the model's vocabulary without added tokens), len(tokenizer), and
 * the chat template. Reading only: nothing here changes or writes a tokenizer.
 *
 * Which files, and which of transformers' rules (formats/tokenizer.c says each rule where it applies it):
 * - tokenizer.json present (MM_TOK_FAST): the `tokenizers` library's Tokenizer.from_file: the model's
 *   vocabulary (BPE: `model.vocab` map and `merges` as "a b" strings or [a, b] pairs; Unigram: `model.vocab`
 *   list of [piece, score]; WordPiece, WordLevel: map), then its `added_tokens` added in file order with
 *   the library's id rule (AddedVocabulary::add_tokens). Then TokenizersBackend.__init__: the entries of
 *   tokenizer_config.json's `added_tokens_decoder`, in id order, and the special tokens of the config not
 *   yet among the added tokens, added the same way.
 * - only tokenizer.model (MM_TOK_SPM): the sentencepiece pieces are the model's vocabulary, a piece's id
 *   its index (transformers' SentencePieceExtractor); CONTROL and USER_DEFINED pieces become added tokens,
 *   as do the config's, and the unk/bos/eos pieces of trainer_spec unless the config names its own.
 * - tokenizer_config.json without `added_tokens_decoder` (files written before transformers 4.34): the
 *   legacy rule of PreTrainedTokenizerBase._from_pretrained: special_tokens_map.json, added_tokens.json
 *   and tokenizer.json's `added_tokens` make the decoder instead.
 * - the chat template: chat_template.jinja and additional_chat_templates/NAME.jinja when any exists
 *   (they replace the config's, as transformers has it), else tokenizer_config.json's `chat_template`
 *   (a string, or a list of {name, template}); when that gives named templates, the one named "default".
 * Folders with neither tokenizer.json nor tokenizer.model (vocab.txt, vocab.json + merges.txt of old slow
 * tokenizers, tekken.json) are refused, as are tokenizer classes with remote code (not read: the generic
 * rule is applied whatever tokenizer_class says).
 *
 * Strict where transformers would be silent or would guess, so that an id here is the id of the
 * embedding row it names: every id an added token's file declares (tokenizer.json's `added_tokens[].id`,
 * the keys of `added_tokens_decoder`, the values of added_tokens.json) must be the id transformers gives
 * it (the library ignores the declared id and assigns its own, warning at most); a token twice in the
 * model's vocabulary, two tokens for one id, an id that is no integer or is beyond what the vocabulary can
 * span, a value of the wrong JSON type, a key written twice, text that is not UTF-8, and a JSON string
 * holding U+0000 (which cJSON cannot keep) are errors naming the file and the place in it. */
#ifndef MM_TOKENIZER_H
#define MM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "spm.h"
#include "base/util.h"

typedef struct cJSON cJSON;

/* An entry of added_tokens_decoder: the AddedToken at `id`. */
typedef struct mm_tok_added {
    char *content; /* NUL-terminated; len bytes (the same storage as tokens[id]) */
    size_t len;
    int id;
    unsigned special : 1, single_word : 1, lstrip : 1, rstrip : 1, normalized : 1;
} mm_tok_added;

typedef enum mm_tok_kind {
    MM_TOK_FAST, /* tokenizer.json present */
    MM_TOK_SPM,  /* only tokenizer.model */
} mm_tok_kind;

/* The largest JSON file read (Gemma 3's tokenizer.json is 33 MB). */
#define MM_TOK_MAX_JSON (512u << 20)
/* How far a vocabulary's ids may run past its number of tokens (ids nothing maps to): tokenizers allows
 * gaps, but a table spanning 2^31 ids for a handful of tokens is a hostile file, not a tokenizer. */
#define MM_TOK_MAX_GAP (1u << 20)

typedef struct mm_tokenizer {
    mm_tok_kind kind;
    char *model_type; /* "BPE", "Unigram", "WordPiece", "WordLevel" (MM_TOK_SPM: "Unigram" for a
                         UNIGRAM sentencepiece model, "BPE" otherwise, as transformers converts it) */
    /* every id: its token (bytes + length), NULL for an id nothing maps to */
    char **tokens; /* [id_end]; NUL-terminated, token_lens[id] bytes */
    size_t *token_lens;
    size_t id_end;       /* 1 + the largest id (n_ids when the ids have no gap) */
    size_t n_ids;        /* len(tokenizer): the number of distinct tokens of get_vocab() */
    size_t base_size;    /* transformers' tokenizer.vocab_size: the model's vocabulary without added
                            tokens (Unigram: the length of the vocab list; sentencepiece: the pieces) */
    mm_tok_added *added; /* added_tokens_decoder, by id */
    size_t nadded;
    size_t nmerges;      /* BPE: the merges of tokenizer.json (validated, kept in tokenizer_json) */
    char *chat_template; /* the template transformers applies by default (see above), else NULL */
    char *bos_token;     /* the named bos_token's text (tokenizer.bos_token), else NULL */
    char *eos_token;     /* the same for eos_token */
    cJSON *tokenizer_json, *tokenizer_config; /* parsed files (NULL if absent), kept for writing back later */
    mm_spm_model *spm;                        /* MM_TOK_SPM: tokenizer.model; NULL for MM_TOK_FAST (read it with
                                                 mm_spm_read_file if a writer needs it: transformers does not) */

    /* private (formats/tokvocab.c) */
    int32_t *added_of; /* [id_end]: index into added, or -1 */
    size_t ids_cap, added_cap;
    size_t added_end; /* 1 + the largest added id, 0 when none: add_tokens' next id in O(1), so a union
                         adding tokens one call at a time stays linear */
    int32_t *slots; /* open-addressing hash of token -> id: ids, -1 for empty */
    size_t nslots;
    size_t model_count, model_limit;
    struct mm_tok_arena *arena;
} mm_tokenizer;

/* Reads the tokenizer of model folder `folder`. 0 with *out (free with mm_tokenizer_free), or a negative
 * errno with a message naming the file and the place ("DIR/tokenizer.json: model.vocab: 'ab' has id 7,
 * which 'cd' has already"). Time O(n) on average in the size of the files. */
int mm_tokenizer_load(const char *folder, mm_tokenizer **out, mm_err *err);

/* Where a tokenizer's files come from when they are not a folder's on disk (the output folder of a plan,
 * whose files are computed: merge/gguf reads the served tokenizer so). Names are relative to the folder
 * ("tokenizer.json", "additional_chat_templates/tool_use.jinja"). */
typedef struct mm_tok_files {
    const char *label; /* the folder as messages name it: "LABEL/tokenizer.json: ..." */
    /* The bytes of file `name` (heap, NUL-terminated, at most max bytes): 0, -ENOENT without a message when
     * there is no such file, or -errno with a message naming it. */
    int (*read)(void *ctx, const char *name, size_t max, char **data, size_t *len, mm_err *err);
    /* The names of the files of directory `dir` (heap array of heap strings, *n of them; none when it does
     * not exist). */
    void (*list)(void *ctx, const char *dir, char ***names, size_t *n);
    void *ctx;
} mm_tok_files;

/* Frees what mm_tok_files.list gives. */
void mm_tok_free_names(char **names, size_t n);

/* mm_tokenizer_load reading through `files`: the same rules and messages. */
int mm_tokenizer_load_files(const mm_tok_files *files, mm_tokenizer **out, mm_err *err);

/* Reads and parses JSON file `name` of `files` as the loader does (json.load of UTF-8 text, strict about
 * what cJSON cannot keep): 0 with *out (NULL when there is no such file), or an error naming the file. */
int mm_tokenizer_read_json(const mm_tok_files *files, const char *name, cJSON **out, mm_err *err);

/* The two parts of one entry of tokenizer.json's model.merges: "a b" (one space) or [a, b]. 1 with the
 * parts (pointing into m), 0 for a "#version" line (skipped by the library), -1 for anything else. */
int mm_tok_merge_parts(const cJSON *m, const char **a, size_t *alen, const char **b, size_t *blen);

/* get_vocab()[token] or -1 (token: len bytes). O(1) on average: a hash table. */
int mm_tokenizer_id(const mm_tokenizer *t, const char *token, size_t len);

/* The token of `id` (and its length, if len is not NULL), or NULL for an id nothing maps to. */
const char *mm_tokenizer_token(const mm_tokenizer *t, long id, size_t *len);

/* added_tokens_decoder[id], or NULL when id is no added token. */
const mm_tok_added *mm_tokenizer_added(const mm_tokenizer *t, long id);

void mm_tokenizer_free(mm_tokenizer *t);

#endif
