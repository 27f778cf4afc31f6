/* The vocabulary of a `tokenizers` library Tokenizer (Rust, tokenizers/src/tokenizer/): the model's
 * token -> id map, and the AddedVocabulary on top with the library's rule for the ids of added tokens.
 * Builds the id table, hash and added tokens of an mm_tokenizer; formats/tokenizer.c decides what goes
 * in, in transformers' order. For formats/, its tests, and merge/plan/vocab.c, which builds the output
 * tokenizer of a merge and the stripped base with the same id rule.
 *
 * Every `where` is the file and place for messages ("DIR/tokenizer.json: model.vocab"). */
#ifndef MM_TOKVOCAB_H
#define MM_TOKVOCAB_H

#include "tokenizer.h"

/* An AddedToken to add: content, len bytes (copied), and its flags. */
typedef struct mm_tok_spec {
    const char *content;
    size_t len;
    unsigned special : 1, single_word : 1, lstrip : 1, rstrip : 1, normalized : 1;
} mm_tok_spec;

/* Starts the model's vocabulary of `count` entries: ids may run up to count + MM_TOK_MAX_GAP. */
void mm_tokv_begin(mm_tokenizer *t, size_t count);

/* One entry of the model's vocabulary. A token already in it, an id already taken, or an id beyond
 * count + MM_TOK_MAX_GAP (or INT32_MAX) is an error. */
int mm_tokv_model_add(mm_tokenizer *t, const char *token, size_t len, uint64_t id, const char *where, mm_err *err);

/* The model's vocabulary is complete: `size` is Model::get_vocab_size (base_size), which the ids of new
 * added tokens start from. */
void mm_tokv_model_done(mm_tokenizer *t, size_t size);

/* One call of AddedVocabulary::add_tokens (tokenizers 0.22, and the same rule since): tokens in order;
 * an empty one is ignored (ids[i] = -1); one whose content is an added token with the same flags is
 * skipped; otherwise the token keeps the id its content already has (an added token's, else the
 * model's), and a new content gets the next id: at the start of the call, 1 + the largest added id if
 * that is at least the model's size (or the model is empty), else the model's size, counting up within
 * the call. The AddedToken at that id becomes this one (its flags replace the earlier ones). ids (may be
 * NULL) gets each token's id. A new id that the model's vocabulary gives another token (a model with
 * gaps in its ids) is an error: the library would map two tokens to one id. */
int mm_tokv_add_tokens(mm_tokenizer *t, const mm_tok_spec *toks, size_t n, long *ids, const char *where, mm_err *err);

/* Sorts `added` by id (added_tokens_decoder's order) and fills n_ids. */
void mm_tokv_finish(mm_tokenizer *t);

/* A deep copy of a loaded (finished) tokenizer: vocabulary, added tokens, parsed files, chat template,
 * sentencepiece model. Adding tokens to the copy leaves `src` as it is. 0 with *out, or the error of
 * re-parsing src's tokenizer.model bytes (not expected: they parsed before). */
int mm_tokv_copy(const mm_tokenizer *src, mm_tokenizer **out, mm_err *err);

/* tokenizer.json's "added_tokens" for t (AddedVocabulary's Serialize): every added token sorted by id,
 * as {id, content, single_word, lstrip, rstrip, normalized, special}. t must be finished. */
cJSON *mm_tokv_added_json(const mm_tokenizer *t);

/* One added token as those files write it: {id (when with_id), content, single_word, lstrip, rstrip,
 * normalized, special}; tokenizer_config.json's added_tokens_decoder entries are the same without id. */
cJSON *mm_tokv_added_state(const mm_tok_added *a, int with_id);

/* Frees what the functions above allocated. */
void mm_tokv_free(mm_tokenizer *t);

#endif
