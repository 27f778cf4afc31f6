/* Internal to the encoder (formats/tokencode.c, tokpretok.c, tokmodel.c): the compiled pipeline and
 * the pieces its steps hand each other. formats/tokencode.h has the contract. */
#ifndef MM_TOKENC_H
#define MM_TOKENC_H

#include "tokencode.h"

/* A growable list of ids. */
typedef struct mm_idvec {
    int32_t *v;
    size_t n, cap;
} mm_idvec;
void mm_idvec_push(mm_idvec *iv, int32_t id);

/* Byte ranges of a text: the words a pre-tokenizer splits it into. */
typedef struct mm_span {
    size_t off, len;
} mm_span;
typedef struct mm_spans {
    mm_span *v;
    size_t n, cap;
} mm_spans;
void mm_spans_push(mm_spans *sp, size_t off, size_t len);

/* The split patterns known (tokpretok.c). */
typedef enum mm_tok_pattern {
    MM_PAT_GPT2,       /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    MM_PAT_LLAMA3,     /* (?i:'s|...|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
    MM_PAT_QWEN2,      /* Llama 3's with \p{N} (single digits) */
    MM_PAT_WHITESPACE, /* \w+|[^\w\s]+ (the Whitespace pre-tokenizer: text between matches is dropped) */
} mm_tok_pattern;

/* One step of the pre-tokenizer. */
typedef struct mm_tok_prestep {
    enum { MM_PRE_SPLIT, MM_PRE_BYTELEVEL, MM_PRE_METASPACE } kind;
    mm_tok_pattern pattern;   /* SPLIT; BYTELEVEL with use_regex: MM_PAT_GPT2 */
    int use_regex;            /* BYTELEVEL */
    int add_prefix_space;     /* BYTELEVEL */
    char replacement[5];      /* METASPACE: one character, UTF-8 */
    int prepend;              /* METASPACE: 0 never, 1 always, 2 first */
    int split;                /* METASPACE */
} mm_tok_prestep;

#define MM_TOK_MAX_STEPS 8

/* Added tokens grouped by first byte, longest first within a group: v[first[b] .. first[b + 1]). */
typedef struct mm_tok_addlist {
    const mm_tok_added **v;
    size_t n;
    size_t first[257];
} mm_tok_addlist;

struct mm_tok_encoder {
    const mm_tokenizer *t;
    /* normalizer */
    int nfc;           /* NFC (text must already be NFC) */
    int space_to_meta; /* Replace(" ", "▁") */
    /* pre-tokenizer */
    mm_tok_prestep steps[MM_TOK_MAX_STEPS];
    size_t nsteps;
    /* model */
    int unigram;
    uint8_t *in_model; /* [t->id_end]: the id is a token of the model's vocabulary (not only an added one) */
    int32_t unk_id;    /* -1: none */
    int fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_id[256]; /* <0xNN>, -1 when missing */
    /* BPE: (left id, right id) -> rank and merged id, open addressing */
    struct mm_tok_merge *merges;
    size_t nmerge_slots;
    /* Unigram: piece scores by id, the unknown piece's score, the longest piece in bytes */
    double *scores;
    double unk_score;
    size_t max_piece;
    /* added tokens: those matched in the raw text, those matched after the normalizer */
    mm_tok_addlist added_raw, added_norm;
};

/* ---- pre-tokenizers (tokpretok.c) ---- */

/* Appends to out the pieces `pattern` splits s[0..len) into (offsets relative to s): every match
 * and, for the Split patterns, the text between matches (Isolated). s is valid UTF-8. */
void mm_tokpre_split(mm_tok_pattern pattern, const char *s, size_t len, mm_spans *out);
/* s[0..len) in GPT-2's byte alphabet (each byte its own character), appended to out. */
void mm_tokpre_bytelevel(const char *s, size_t len, mm_buf *out);
/* Runs the pre-tokenizer steps on one normalized piece; `first` tells whether it starts the text
 * (Metaspace's prepend_scheme "first"). out gets the words as (offset, length) into *words (heap). */
void mm_tokpre_run(const mm_tok_encoder *e, const char *s, size_t len, int first, mm_buf *words, mm_spans *out);

/* ---- models (tokmodel.c) ---- */

/* BPE merges from tokenizer.json's model.merges ("a b" or [a, b]; validated by the loader) or, for a
 * sentencepiece BPE model, generate_merges' rule. */
int mm_tokm_bpe_init(mm_tok_encoder *e, const cJSON *merges, const char *where, mm_err *err);
int mm_tokm_bpe_init_spm(mm_tok_encoder *e, mm_err *err);
/* Unigram from the sentencepiece pieces. */
void mm_tokm_unigram_init(mm_tok_encoder *e);
/* The ids of one word. */
int mm_tokm_encode(const mm_tok_encoder *e, const char *w, size_t len, mm_idvec *out, mm_err *err);
void mm_tokm_free(mm_tok_encoder *e);

#endif
