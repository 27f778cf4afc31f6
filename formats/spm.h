/* sentencepiece models (`tokenizer.model`): a strict reader of the serialized ModelProto
 * (src/sentencepiece_model.proto of google/sentencepiece), for models that ship no tokenizer.json.
 *
 * Read: the pieces (text, score, type), trainer_spec's model_type, vocab_size, byte_fallback, the
 * unk/bos/eos/pad ids and pieces, and normalizer_spec's name, precompiled_charsmap and three flags.
 * Fields not listed are skipped, whatever they hold, as protobuf readers skip unknown fields; the file's
 * bytes are kept whole, so a writer can serve it unchanged.
 *
 * Refused, with the byte offset and the field's place ("pieces[12].type"): malformed wire data
 * (formats/pbwire.h), a listed field with a wire type other than its own, an enum value the .proto does
 * not define (protobuf would keep the default and hide the value), an int32 field whose varint is no
 * int32, a bool other than 0 or 1, and a piece or piece name that is not UTF-8. Then the checks
 * sentencepiece's own loader makes (ModelInterface::InitializePieces, ModelFactory::Create), so that
 * what is read here is what sentencepiece loads: no empty piece; no piece twice among the normal,
 * user-defined and unused pieces, nor twice among the control, unknown and byte pieces (sentencepiece
 * keeps the two kinds apart and allows one text in both); exactly one UNKNOWN piece; BYTE pieces only
 * with byte_fallback, each "<0xHH>" (upper-case hex), and with byte_fallback all 256 of them. Beyond
 * sentencepiece: trainer_spec's unk/bos/eos/pad ids must be -1 (none) or a piece's index (transformers
 * builds its Unigram model with unk_id, which the tokenizers library refuses beyond the vocabulary). */
#ifndef MM_SPM_H
#define MM_SPM_H

#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

/* ModelProto.SentencePiece.Type; the values are the .proto's. */
typedef enum mm_spm_type {
    MM_SPM_NORMAL = 1,
    MM_SPM_UNKNOWN = 2,
    MM_SPM_CONTROL = 3,
    MM_SPM_USER_DEFINED = 4,
    MM_SPM_UNUSED = 5,
    MM_SPM_BYTE = 6,
} mm_spm_type;

/* TrainerSpec.ModelType; the values are the .proto's. */
typedef enum mm_spm_model_type {
    MM_SPM_UNIGRAM = 1,
    MM_SPM_BPE = 2,
    MM_SPM_WORD = 3,
    MM_SPM_CHAR = 4,
} mm_spm_model_type;

typedef struct mm_spm_piece {
    const char *piece; /* NUL-terminated; `len` counts the bytes (a piece may hold U+0000) */
    size_t len;
    float score;      /* 0 when absent */
    mm_spm_type type; /* NORMAL when absent */
} mm_spm_piece;

typedef struct mm_spm_model {
    mm_spm_piece *pieces; /* by id: a piece's id is its index */
    size_t npieces;
    /* trainer_spec (the .proto's defaults when absent) */
    mm_spm_model_type model_type;           /* UNIGRAM */
    int32_t vocab_size;                     /* 8000: what training aimed at; npieces is the vocabulary */
    int byte_fallback;                      /* 0 */
    int32_t unk_id, bos_id, eos_id, pad_id; /* 0, 1, 2, -1 */
    const char *unk_piece, *bos_piece, *eos_piece, *pad_piece; /* "<unk>", "<s>", "</s>", "<pad>" */
    /* normalizer_spec */
    const char *normalizer_name;         /* "" when absent */
    const uint8_t *precompiled_charsmap; /* into raw; NULL and 0 when absent */
    size_t precompiled_charsmap_len;
    int add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces; /* 1, 1, 1 */
    /* the file as read */
    uint8_t *raw;
    size_t raw_len;
    char *strings; /* private: the text of every piece and name above */
} mm_spm_model;

/* The largest tokenizer.model read (real ones are under 10 MB: Gemma's 256000 pieces take 4.2). */
#define MM_SPM_MAX_FILE (256u << 20)

/* Parses a serialized ModelProto (len bytes; copied, so data may go away). 0 with *out (free with
 * mm_spm_free) or -EINVAL with a message giving the byte offset and field; messages do not name the
 * file (callers prefix it). Time O(n log n) in the number of pieces. */
int mm_spm_parse(const void *data, size_t len, mm_spm_model **out, mm_err *err);

/* Parses the bytes of file `path` (data: heap, len bytes, taken over and freed whatever the outcome), for
 * files read by other means than mm_spm_read_file. Messages name the path. */
int mm_spm_parse_file(const char *path, char *data, size_t len, mm_spm_model **out, mm_err *err);

/* Reads and parses `path` (at most MM_SPM_MAX_FILE bytes). Messages name the path. */
int mm_spm_read_file(const char *path, mm_spm_model **out, mm_err *err);

void mm_spm_free(mm_spm_model *m);

/* "NORMAL", "UNKNOWN", ...; "UNIGRAM", "BPE", "WORD", "CHAR" (the .proto's names). */
const char *mm_spm_type_name(mm_spm_type t);
const char *mm_spm_model_type_name(mm_spm_model_type t);

#endif
