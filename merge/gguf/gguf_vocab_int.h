/* Internal to the tokenizer side of the GGUF view (gguf_vocab.c, gguf_special.c, gguf_pre.c): the served
 * folder as the converter reads it, and the port of gguf-py's SpecialVocab.
 *
 * The converter's rules are those of llama.cpp's convert_hf_to_gguf.py (conversion/base.py, llama.py,
 * qwen.py, gemma.py, phi.py) and gguf-py (vocab.py, gguf_writer.py), read in May 2026. Python's dict and
 * truthiness rules matter where they decide a key or its position; the functions say where. */
#ifndef MM_GGUF_VOCAB_INT_H
#define MM_GGUF_VOCAB_INT_H

#include "gguf_vocab.h"

#include "formats/tokenizer.h"

typedef struct cJSON cJSON;

/* The served folder: its files (through the plan), its tokenizer as transformers reads it, config.json. */
typedef struct mm_gv {
    const mm_plan *p;
    mm_tok_files files;
    mm_tokenizer *tok;   /* tokenizer_json and tokenizer_config are its parsed files (NULL when absent) */
    cJSON *config;       /* config.json as json.load reads it, NULL when absent */
    mm_gguf_kvs *kv;
} mm_gv;

/* "LABEL/name" for messages (heap). */
char *mm_gv_path(const mm_gv *g, const char *name);
/* Text file `name` as Python's open(encoding="utf-8").read() gives it (universal newlines: "\r\n" and
 * "\r" become "\n"): 0 with *out (heap), -ENOENT without a message when absent, else an error. */
int mm_gv_read_text(const mm_gv *g, const char *name, char **out, mm_err *err);

/* Python's truthiness of a JSON value (NULL: absent, None). */
int mm_gv_truthy(const cJSON *v);
/* A JSON value that Python's isinstance(v, int) takes: an integer number written without fraction or
 * exponent, or a bool (True is 1). 1 with *out, else 0. */
int mm_gv_int(const cJSON *v, long long *out);

/* The processors of tokenizer.json's post_processor pp: its "processors" (a Sequence), else pp itself
 * (post_processor.get('processors', [post_processor])). Up to max into out; their number. */
size_t mm_gv_processors(const cJSON *pp, const cJSON **out, size_t max);

/* ---- gguf-py's SpecialVocab (vocab.py) ---- */

#define MM_GV_MAX_TYPES 16

typedef struct mm_gv_special {
    const char *types[MM_GV_MAX_TYPES]; /* special_token_types (static strings), grown by TemplateProcessing */
    size_t ntypes;
    long long n_vocab;                  /* -1: None */
    struct {
        const char *type;
        uint32_t id;
    } ids[MM_GV_MAX_TYPES]; /* special_token_ids, in insertion order */
    size_t nids;
    struct {
        const char *type;
        int value;
    } adds[MM_GV_MAX_TYPES]; /* add_special_token, in insertion order */
    size_t nadds;
    char **merges;  /* heap strings */
    size_t nmerges;
    /* chat_template: none, a string, or named templates (a list of {name, template}) */
    int has_template;
    char *template_str;
    char **tnames, **ttemplates; /* the list form: names (NULL: the entry had none) and templates */
    size_t ntemplates;
    int lowercase, strip_accents; /* -1: None */
} mm_gv_special;

/* SpecialVocab(path, load_merges, special_token_types (NULL: the default seven), n_vocab (-1: None)):
 * reads tokenizer.json, tokenizer_config.json, the chat template files, config.json (and merges.txt).
 * Free with mm_gv_special_free. */
int mm_gv_special_load(const mm_gv *g, int load_merges, const char *const *types, size_t ntypes, long long n_vocab,
                       mm_gv_special *sv, mm_err *err);
/* _set_special_token(type, id): ids at or beyond n_vocab and types already set are left alone. */
int mm_gv_special_set(mm_gv_special *sv, const char *type, long long id, mm_err *err);
/* add_to_gguf: merges, the ids, the add_*_token flags, the chat template(s), the normalizer flags. */
int mm_gv_special_add(const mm_gv *g, const mm_gv_special *sv, mm_err *err);
void mm_gv_special_free(mm_gv_special *sv);

/* ---- tokenizer.ggml.pre (gguf_pre.c) ---- */

/* The converter's name for the BPE pre-tokenizer of the served tokenizer.json (get_vocab_base_pre). */
int mm_gv_pre_name(const mm_gv *g, const char **name, mm_err *err);

#endif
