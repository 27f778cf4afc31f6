/* The served tokenizer files of a merge's output (merge/plan/vocab.h mm_vocab_files): the donor's files
 * made to load, in transformers 5 and in formats/tokenizer.c, as exactly the output vocabulary. That
 * holds because a loader re-adds tokenizer.json's added_tokens (then added_tokens_decoder) in id order in
 * one add_tokens call: the output's ids run without holes (vocab.c checks) and its added tokens that the
 * model lacks are the ids from the model's size up, so each gets its own id back. JSON is written as
 * Python's json.dumps(indent=2, sort_keys=True) writes it (transformers' tokenizer_config.json). */
#include "vocab.h"

#include "formats/jsonpy.h"
#include "formats/tokvocab.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct files {
    mm_vocab_file *f;
    size_t n;
} files;

static mm_vocab_file *add(files *fs, const char *name)
{
    fs->f = mm_xrealloc(fs->f, (fs->n + 1) * sizeof *fs->f);
    mm_vocab_file *f = &fs->f[fs->n++];
    *f = (mm_vocab_file){.name = mm_xstrdup(name)};
    return f;
}

static void add_json(files *fs, const char *name, const cJSON *j)
{
    mm_buf b = {0};
    mm_json_write_py(j, &b);
    mm_buf_puts(&b, "\n");
    mm_vocab_file *f = add(fs, name);
    f->data = b.data;
    f->len = b.len;
}

/* The donor's file `name` served as it is, when it has one. */
static void add_source(files *fs, const char *folder, const char *name)
{
    char *p = mm_path_join(folder, name);
    struct stat st;
    if (stat(p, &st) == 0)
        add(fs, name)->source_path = p;
    else
        free(p);
}

/* tokenizer_config.json's added_tokens_decoder: {"<id>": {content, lstrip, normalized, rstrip,
 * single_word, special}} (transformers' AddedToken.__getstate__). */
static cJSON *decoder_json(const mm_tokenizer *t)
{
    cJSON *d = cJSON_CreateObject();
    for (size_t i = 0; i < t->nadded; i++) {
        const mm_tok_added *a = &t->added[i];
        char key[24];
        snprintf(key, sizeof key, "%d", a->id);
        cJSON_AddItemToObject(d, key, mm_tokv_added_state(a, 0));
    }
    return d;
}

static int same_added(const mm_tokenizer *a, const mm_tokenizer *b)
{
    if (a->n_ids != b->n_ids || a->nadded != b->nadded)
        return 0;
    for (size_t i = 0; i < a->nadded; i++) {
        const mm_tok_added *x = &a->added[i], *y = &b->added[i];
        if (x->id != y->id || x->len != y->len || memcmp(x->content, y->content, x->len) != 0 ||
            x->special != y->special || x->single_word != y->single_word || x->lstrip != y->lstrip ||
            x->rstrip != y->rstrip || x->normalized != y->normalized)
            return 0;
    }
    return 1;
}

/* tokenizer_config.json: `donor` (NULL: none) with every other key kept, added_tokens_decoder set to
 * decoder_of's added tokens (unless NULL) and chat_template set (unless NULL); then chat_template.jinja,
 * which transformers >= 4.43 reads before the config's key. Nothing is written when all three are NULL. */
static void add_config(files *fs, const cJSON *donor, const mm_tokenizer *decoder_of, const char *chat_template)
{
    if (donor || decoder_of || chat_template) {
        cJSON *c = donor ? cJSON_Duplicate(donor, 1) : cJSON_CreateObject();
        if (decoder_of) {
            cJSON_DeleteItemFromObjectCaseSensitive(c, "added_tokens_decoder");
            cJSON_AddItemToObject(c, "added_tokens_decoder", decoder_json(decoder_of));
        }
        if (chat_template) {
            cJSON_DeleteItemFromObjectCaseSensitive(c, "chat_template");
            cJSON_AddStringToObject(c, "chat_template", chat_template);
        }
        add_json(fs, "tokenizer_config.json", c);
        cJSON_Delete(c);
    }
    if (chat_template) {
        mm_vocab_file *f = add(fs, "chat_template.jinja");
        f->data = mm_xstrdup(chat_template);
        f->len = strlen(chat_template);
    }
}

int mm_tokenizer_config_files(const char *folder, const char *chat_template, mm_vocab_file **out, size_t *nout,
                              mm_err *err)
{
    char *path = mm_path_join(folder, "tokenizer_config.json"), *text = NULL;
    size_t len = 0;
    cJSON *donor = NULL;
    struct stat st;
    int rc = 0;
    if (stat(path, &st) == 0) {
        rc = mm_file_read_all(path, MM_TOK_MAX_JSON, &text, &len, err);
        if (rc == 0 && (rc = mm_json_parse(text, len, &donor, err)) < 0)
            mm_err_prefix(err, "%s", path);
        if (rc == 0 && !cJSON_IsObject(donor))
            rc = mm_err_set(err, -EINVAL, "%s: not a JSON object (fix or remove the file)", path);
    }
    files fs = {0};
    if (rc == 0)
        add_config(&fs, donor, NULL, chat_template);
    cJSON_Delete(donor);
    free(text);
    free(path);
    *out = fs.f;
    *nout = fs.n;
    return rc;
}

void mm_vocab_files_free(mm_vocab_file *files, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(files[i].name);
        free(files[i].data);
        free(files[i].source_path);
    }
    free(files);
}

int mm_vocab_files(const mm_vocab *v, const char *chat_template, mm_vocab_file **out, size_t *nout, mm_err *err)
{
    const mm_tokenizer *o = v->out;
    files fs = {0};
    int decoder = 1;
    if (o->kind == MM_TOK_FAST) {
        /* the output's tokenizer.json: the donor's (the stripped model for base/union), its added tokens */
        cJSON *j = cJSON_Duplicate(o->tokenizer_json, 1);
        cJSON_ReplaceItemInObjectCaseSensitive(j, "added_tokens", mm_tokv_added_json(o));
        add_json(&fs, "tokenizer.json", j);
        cJSON_Delete(j);
    } else {
        /* sentencepiece only: the pieces are the model; added tokens come from the config. A Unigram one
         * with an added_tokens_decoder does not load in transformers 5.3 (its placeholder renaming treats
         * the piece list as a dict): served only when the donor's own files already give the output's
         * added tokens, and then without touching the decoder. */
        add_source(&fs, v->donor_folder, "tokenizer.model");
        if (strcmp(o->model_type, "Unigram") == 0) {
            if (!same_added(o, v->donor_tok)) {
                mm_vocab_files_free(fs.f, fs.n);
                return mm_err_set(err, -EINVAL,
                                  "the output tokenizer adds tokens to the Unigram sentencepiece tokenizer of %s "
                                  "(tokenizer.model only), which transformers 5 cannot load with added tokens in "
                                  "tokenizer_config.json; fix: take the tokenizer from a model with a "
                                  "tokenizer.json (tokenizer source or base_model), or leave out `tokens:`",
                                  v->donor_folder);
            }
            decoder = o->tokenizer_config && mm_json_has(o->tokenizer_config, "added_tokens_decoder");
        }
    }
    add_config(&fs, o->tokenizer_config, decoder ? o : NULL, chat_template);
    add_source(&fs, v->donor_folder, "special_tokens_map.json");
    *out = fs.f;
    *nout = fs.n;
    return 0;
}
