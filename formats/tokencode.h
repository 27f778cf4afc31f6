/* Text to token ids as transformers (>= 5) gives them for a folder's tokenizer:
 * `tokenizer(text, add_special_tokens=False)["input_ids"]`, what mergekit-moe's router prompts need
 * (mergekit/moe/router.py). Encoding only: no post-processor (no BOS/EOS added: add_special_tokens
 * is False), no truncation, no padding, no offsets.
 *
 * The steps are the `tokenizers` library's (Tokenizer::encode of tokenizer/mod.rs), in its order:
 *  1. added tokens (AddedVocabulary::extract_and_normalize): the added tokens that are not
 *     `normalized` are found in the raw text, leftmost and longest first (the library's Aho-Corasick
 *     LeftmostLongest), then the normalizer runs on the text between them, then the `normalized` added
 *     tokens are found the same way in that normalized text. A match of a `single_word` token with a
 *     letter, number or '_' right before or after it is no match; `lstrip` / `rstrip` widen a match over
 *     the whitespace before / after it. Each match is its token's id.
 *  2. the normalizer, per piece of text between added tokens (listed below);
 *  3. the pre-tokenizer, splitting each piece into words (below);
 *  4. the model, per word: BPE (merges by rank: the pair of lowest rank first, leftmost among equal
 *     ranks; `ignore_merges`: a word that is a token of the vocabulary is that token; characters not in
 *     the vocabulary become the `<0xNN>` tokens of their UTF-8 bytes with `byte_fallback` when all of
 *     them exist, else `unk_token`, consecutive ones fused into one with `fuse_unk`) or Unigram (Viterbi:
 *     the segmentation of highest total piece score; a character no piece starts gets the unknown
 *     piece at min score - 10, as sentencepiece; consecutive unknowns fused; `byte_fallback` as BPE).
 *
 * What a folder gives each step:
 *  - tokenizer.json (MM_TOK_FAST): its "normalizer", "pre_tokenizer" and "model". Supported:
 *    normalizer null, "NFC" (only for text NFC leaves as it is: text holding a code point NFC could
 *    change is refused, not normalized) or a "Sequence" of those; pre_tokenizer null, "ByteLevel"
 *    (GPT-2's byte-to-character alphabet; use_regex true splits with GPT-2's pattern; add_prefix_space
 *    puts a space before a piece that does not start with one), "Split" with behavior "Isolated",
 *    invert false and one of the patterns of GPT-2, Llama 3 or Qwen 2 (matched by hand-written code, not
 *    a regex engine: any other pattern is refused), "Whitespace" (\w+|[^\w\s]+), "Metaspace"
 *    (replacement, prepend_scheme always/first/never, split), or a "Sequence" of those; model "BPE"
 *    (dropout null, no continuing_subword_prefix nor end_of_word_suffix). Anything else is refused with
 *    an error naming the key and its value ("DIR/tokenizer.json: pre_tokenizer.type: \"BertPreTokenizer\"
 *    is not supported").
 *  - tokenizer.model alone (MM_TOK_SPM): what transformers 5's TokenizersBackend builds from it
 *    (SpmConverter.build_tokenizer_from_spm_proto, reached from convert_to_native_format): the
 *    normalizer Replace(" ", "▁") and no pre-tokenizer (so no dummy prefix: the `legacy` and
 *    `add_dummy_prefix` rules of the slow LlamaTokenizer and of model-specific converters do not apply to
 *    this generic class); a UNIGRAM model is Unigram(pieces with their scores, unk_id of trainer_spec,
 *    byte_fallback of trainer_spec), any other BPE(vocab = the pieces by index, merges =
 *    generate_merges(vocab): every split of a piece into two pieces, ranked by the id of the piece,
 *    then by the length of the left part; unk_token = trainer_spec's unk_piece, fuse_unk, byte_fallback
 *    of trainer_spec). A model with a precompiled_charsmap (a sentencepiece normalization rule other
 *    than identity) is refused: that normalizer is not implemented. So is a tokenizer_config.json
 *    naming a tokenizer_class other than PreTrainedTokenizerFast / TokenizersBackend: those classes
 *    build another pipeline.
 *
 * Text must be UTF-8 (an error otherwise, with the byte offset). */
#ifndef MM_TOKENCODE_H
#define MM_TOKENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* A tokenizer made ready to encode: its pipeline read and checked, the BPE merges hashed. Keeps a
 * pointer to the tokenizer, which must outlive it and keep its tokenizer_json. */
typedef struct mm_tok_encoder mm_tok_encoder;

/* 0 with *out (free with mm_tok_encoder_free), -ENOTSUP for a pipeline not supported (see above), or
 * -EINVAL for a malformed one; messages name the file and key. Time O(size of the vocabulary and
 * merges). */
int mm_tok_encoder_new(const mm_tokenizer *t, mm_tok_encoder **out, mm_err *err);

/* Encodes text (len bytes, need not be NUL-terminated): 0 with *ids (heap, free()) and *n, or -EINVAL
 * for text that is not UTF-8, -ENOTSUP for text a supported step cannot handle (NFC changing it), or
 * the error of a vocabulary missing a token the model needs (unk_token). Time: about O(len * L) with
 * L the longest token, O(w^2) per pre-tokenized word of w characters for BPE. */
int mm_tok_encoder_encode(const mm_tok_encoder *e, const char *text, size_t len, int32_t **ids, size_t *n,
                          mm_err *err);

void mm_tok_encoder_free(mm_tok_encoder *e);

/* What an encoder's normalizer and pre-tokenizer are, when they are one of the known families' whole
 * definitions (llama.cpp names its pre-tokenizers so: merge/gguf): */
typedef enum mm_tok_pipeline {
    MM_TOK_PIPE_OTHER,
    MM_TOK_PIPE_GPT2,   /* no normalizer; ByteLevel splitting with GPT-2's pattern, no prefix space */
    MM_TOK_PIPE_LLAMA3, /* no normalizer; Split(Llama 3's pattern), then ByteLevel without pattern nor prefix space */
    MM_TOK_PIPE_QWEN2,  /* NFC; Split(Qwen 2's pattern), then the same ByteLevel */
} mm_tok_pipeline;
mm_tok_pipeline mm_tok_encoder_pipeline(const mm_tok_encoder *e);

/* mm_tok_encoder_new + mm_tok_encoder_encode + mm_tok_encoder_free, for one text. */
int mm_tokenizer_encode(const mm_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, mm_err *err);

#endif
