/* A folder's tokenizer (formats/tokenizer.h): the model's vocabulary from tokenizer.json or tokenizer.model,
 * tokenizer.json's added tokens, the chat template, and the order of it all. The added and special tokens
 * of tokenizer_config.json and the legacy files are formats/tokspecial.c's; the JSON helpers tokjson.c's.
 * The rules are transformers 5.x's (tokenization_utils_base.py, tokenization_utils_tokenizers.py,
 * convert_slow_tokenizer.py: read at 5.3.0.dev0) on top of the `tokenizers` library's (0.22: tokenizer/
 * serialization.rs, models/{bpe,unigram,wordpiece,wordlevel}/serialization.rs, added_vocabulary.rs;
 * formats/tokvocab.c). Each function names the code it follows. */
#include "tokenizer.h"

#include "tokload.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int mm_tok_merge_parts(const cJSON *m, const char **a, size_t *alen, const char **b, size_t *blen)
{
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring, *sp = strchr(s, ' ');
        if (strncmp(s, "#version", 8) == 0)
            return 0;
        if (!sp || strchr(sp + 1, ' '))
            return -1;
        *a = s, *alen = (size_t)(sp - s), *b = sp + 1, *blen = strlen(sp + 1);
        return 1;
    }
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) != 2 || !cJSON_IsString(m->child) || !cJSON_IsString(m->child->next))
        return -1;
    *a = m->child->valuestring, *alen = strlen(*a), *b = m->child->next->valuestring, *blen = strlen(*b);
    return 1;
}

void mm_tokenizer_free(mm_tokenizer *t)
{
    if (!t)
        return;
    mm_tokv_free(t);
    free(t->model_type);
    free(t->chat_template);
    free(t->bos_token);
    free(t->eos_token);
    cJSON_Delete(t->tokenizer_json);
    cJSON_Delete(t->tokenizer_config);
    mm_spm_free(t->spm);
    free(t);
}

/* ---- the model's vocabulary: tokenizer.json ---------------------------------------------------------- */

/* BPE's merges, checked as BpeBuilder::build does: each "a b" (split at its one space; lines starting
 * "#version" skipped, as convert_merges_to_hashmap) or [a, b], all of one form, with a, b and a + b
 * without b's continuing_subword_prefix in the vocabulary. */
static int check_merges(loader *L, const cJSON *merges, const char *prefix, mm_err *err)
{
    mm_tokenizer *t = L->t;
    size_t plen = prefix ? strlen(prefix) : 0, i = 0;
    int strings = -1;
    mm_buf joined = {0};
    int rc = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, merges)
    {
        const char *a, *b;
        size_t alen, blen;
        char where[PLACE];
        mm_tok_at(where, "model.merges[%zu]", i++);
        int is_string = cJSON_IsString(m);
        if (strings < 0)
            strings = is_string;
        if (is_string != strings) {
            rc = mm_err_set(err, -EINVAL,
                            "%s: %s: %s among %s (all merges must be \"a b\" strings, or all [a, b] pairs)",
                            L->json_path, where, mm_tok_json_type(m), strings ? "strings" : "pairs");
            break;
        }
        int parts = mm_tok_merge_parts(m, &a, &alen, &b, &blen);
        if (parts == 0)
            continue;
        if (parts < 0) {
            if (is_string)
                rc = mm_err_set(err, -EINVAL, "%s: %s: \"%s\" is not two tokens split by one space", L->json_path,
                                where, m->valuestring);
            else
                rc = mm_err_set(err, -EINVAL, "%s: %s: a merge is a string \"a b\" or a pair [a, b] of strings",
                                L->json_path, where);
            break;
        }
        char q[160];
        if (mm_tokenizer_id(t, a, alen) < 0 || mm_tokenizer_id(t, b, blen) < 0) {
            int missing_a = mm_tokenizer_id(t, a, alen) < 0;
            rc = mm_err_set(err, -EINVAL, "%s: %s: %s is not in model.vocab", L->json_path, where,
                            mm_quote(q, sizeof q, missing_a ? a : b, missing_a ? alen : blen));
            break;
        }
        if (blen < plen) {
            rc = mm_err_set(err, -EINVAL, "%s: %s: %s is shorter than continuing_subword_prefix", L->json_path, where,
                            mm_quote(q, sizeof q, b, blen));
            break;
        }
        joined.len = 0;
        mm_buf_append(&joined, a, alen);
        mm_buf_append(&joined, b + plen, blen - plen);
        if (mm_tokenizer_id(t, joined.data, joined.len) < 0) {
            rc = mm_err_set(err, -EINVAL, "%s: %s: the merged token %s is not in model.vocab", L->json_path, where,
                            mm_quote(q, sizeof q, joined.data, joined.len));
            break;
        }
        t->nmerges++;
    }
    mm_buf_free(&joined);
    return rc;
}

/* The model of tokenizer.json ("model": {"type": ..., "vocab": ...}), as the library deserializes it
 * (models/{bpe,unigram,wordpiece,wordlevel}/serialization.rs), into the id table. */
static int read_model(loader *L, const cJSON *root, mm_err *err)
{
    mm_tokenizer *t = L->t;
    const char *path = L->json_path;
    char where[PLACE];
    const cJSON *model, *type, *vocab, *e;
    int rc;
    mm_tok_at(where, "%s: model", path);
    if ((rc = mm_tok_member(root, "model", path, &model, err)) < 0)
        return rc;
    if (!cJSON_IsObject(model))
        return mm_tok_bad_type(where, "needs an object", model, err);
    if ((rc = mm_tok_member(model, "type", where, &type, err)) < 0 ||
        (rc = mm_tok_member(model, "vocab", where, &vocab, err)) < 0)
        return rc;
    if (!cJSON_IsString(type))
        return mm_err_set(err, -EINVAL,
                          "%s: \"type\" must name the model (BPE, Unigram, WordPiece, WordLevel), not be %s", where,
                          mm_tok_json_type(type));
    static const char *const types[] = {"BPE", "Unigram", "WordPiece", "WordLevel"};
    size_t k;
    for (k = 0; k < MM_COUNT(types) && strcmp(type->valuestring, types[k]) != 0; k++)
        ;
    if (k == MM_COUNT(types))
        return mm_err_set(err, -EINVAL, "%s: unknown model type \"%s\" (BPE, Unigram, WordPiece or WordLevel)", where,
                          type->valuestring);
    t->model_type = mm_xstrdup(types[k]);
    mm_tok_at(where, "%s: model.vocab", path);
    int unigram = k == 1;
    if (unigram ? !cJSON_IsArray(vocab) : !cJSON_IsObject(vocab))
        return mm_tok_bad_type(where,
                               unigram ? "a Unigram vocabulary is a list of [piece, score]"
                                       : "the vocabulary is an object of token: id",
                               vocab, err);
    size_t count = (size_t)cJSON_GetArraySize(vocab), i = 0;
    mm_tokv_begin(t, count);
    cJSON_ArrayForEach(e, vocab)
    {
        if (unigram) {
            /* Unigram::from: the list's order gives the ids */
            if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 2 || !cJSON_IsString(e->child) ||
                !cJSON_IsNumber(e->child->next))
                return mm_err_set(err, -EINVAL, "%s[%zu]: an entry is [piece, score] (a string and a number)", where,
                                  i);
            const char *s = e->child->valuestring;
            rc = mm_tokv_model_add(t, s, strlen(s), i, where, err);
        } else {
            uint64_t id;
            if (mm_tok_json_id(e, &id) < 0) {
                char q[160];
                return mm_err_set(err, -EINVAL, "%s: the id of %s is %s, not an integer from 0 to 2^32 - 1", where,
                                  mm_quote(q, sizeof q, e->string, strlen(e->string)),
                                  cJSON_IsNumber(e) ? "a number" : mm_tok_json_type(e));
            }
            rc = mm_tokv_model_add(t, e->string, strlen(e->string), id, where, err);
        }
        if (rc < 0)
            return rc;
        i++;
    }
    /* Model::get_vocab_size: the map's size, or the Unigram list's length (equal: duplicates are refused) */
    mm_tokv_model_done(t, count);
    mm_tok_at(where, "%s: model", path);
    if (k == 0) { /* BPE */
        const cJSON *merges, *prefix;
        if ((rc = mm_tok_member(model, "merges", where, &merges, err)) < 0 ||
            (rc = mm_tok_member(model, "continuing_subword_prefix", where, &prefix, err)) < 0)
            return rc;
        if (!cJSON_IsArray(merges))
            return mm_tok_bad_type(where, "BPE needs \"merges\", a list", merges, err);
        if (prefix && !cJSON_IsNull(prefix) && !cJSON_IsString(prefix))
            return mm_tok_bad_type(where, "\"continuing_subword_prefix\" is a string or null", prefix, err);
        return check_merges(L, merges, cJSON_IsString(prefix) ? prefix->valuestring : NULL, err);
    }
    if (unigram) {
        const cJSON *unk, *bf;
        uint64_t id;
        if ((rc = mm_tok_member(model, "unk_id", where, &unk, err)) < 0 ||
            (rc = mm_tok_member(model, "byte_fallback", where, &bf, err)) < 0)
            return rc;
        if (unk && !cJSON_IsNull(unk) && (mm_tok_json_id(unk, &id) < 0 || id >= count))
            return mm_err_set(err, -EINVAL, "%s: \"unk_id\" must be null or the index of a vocabulary entry (0 to %zu)",
                              where, count ? count - 1 : 0);
        if (bf && !cJSON_IsBool(bf))
            return mm_tok_bad_type(where, "\"byte_fallback\" is a bool", bf, err);
        return 0;
    }
    const cJSON *unk; /* WordPiece and WordLevel: a required unk_token */
    if ((rc = mm_tok_member(model, "unk_token", where, &unk, err)) < 0)
        return rc;
    if (!cJSON_IsString(unk))
        return mm_tok_bad_type(where, "needs \"unk_token\", a string", unk, err);
    return 0;
}

/* Tokenizer deserialization (tokenizer/serialization.rs): "version" 1.0 if given, the model, then
 * "added_tokens" added in file order in one add_tokens call; the ids they declare are only compared
 * there (a warning), here they must match. "padding", when set, gives transformers its pad token. */
static int read_tokenizer_json(loader *L, mm_err *err)
{
    mm_tokenizer *t = L->t;
    const cJSON *root = t->tokenizer_json, *v;
    const char *path = L->json_path;
    int rc;
    if (!cJSON_IsObject(root))
        return mm_tok_bad_type(path, "the file holds an object", root, err);
    if ((rc = mm_tok_member(root, "version", path, &v, err)) < 0)
        return rc;
    if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "1.0") != 0))
        return mm_err_set(err, -EINVAL, "%s: \"version\" must be \"1.0\" (the only one the tokenizers library reads)",
                          path);
    if ((rc = read_model(L, root, err)) < 0)
        return rc;
    char where[PLACE];
    mm_tok_at(where, "%s: added_tokens", path);
    if ((rc = mm_tok_member(root, "added_tokens", path, &L->added_tokens, err)) < 0)
        return rc;
    if (!cJSON_IsArray(L->added_tokens))
        return mm_tok_bad_type(where, "needs a list (every tokenizer.json the library writes has one)", L->added_tokens,
                               err);
    size_t n = (size_t)cJSON_GetArraySize(L->added_tokens), i = 0;
    mm_tok_spec *specs = mm_xcalloc(n, sizeof *specs);
    uint64_t *declared = mm_xcalloc(n, sizeof *declared);
    long *ids = mm_xcalloc(n, sizeof *ids);
    cJSON_ArrayForEach(v, L->added_tokens)
    {
        mm_tok_at(where, "%s: added_tokens[%zu]", path, i);
        if ((rc = mm_tok_parse_added_with_id(v, where, &specs[i], &declared[i], err)) < 0)
            goto out;
        i++;
    }
    mm_tok_at(where, "%s: added_tokens", path);
    if ((rc = mm_tokv_add_tokens(t, specs, n, ids, where, err)) < 0)
        goto out;
    for (i = 0; i < n; i++) {
        mm_tok_at(where, "%s: added_tokens[%zu]", path, i);
        if ((rc = mm_tok_check_declared(t, where, &specs[i], declared[i], ids[i], err)) < 0)
            goto out;
    }
    if ((rc = mm_tok_member(root, "padding", path, &v, err)) < 0)
        goto out;
    if (v && !cJSON_IsNull(v)) {
        const cJSON *pad;
        mm_tok_at(where, "%s: padding", path);
        if (!cJSON_IsObject(v)) {
            rc = mm_tok_bad_type(where, "is null or an object", v, err);
            goto out;
        }
        if ((rc = mm_tok_member(v, "pad_token", where, &pad, err)) < 0)
            goto out;
        if (!cJSON_IsString(pad)) {
            rc = mm_tok_bad_type(where, "needs \"pad_token\", a string", pad, err);
            goto out;
        }
        L->padding_pad = pad->valuestring;
    }
out:
    free(specs);
    free(declared);
    free(ids);
    return rc;
}

/* ---- the model's vocabulary: tokenizer.model alone ---------------------------------------------------- */

/* SentencePieceExtractor.extract: the pieces in order are the vocabulary (a piece's id is its index;
 * Model::get_vocab_size is their number), Unigram for a UNIGRAM model and BPE otherwise. A text that is
 * both a normal and a control piece (sentencepiece allows it) cannot be one key of get_vocab(): refused. */
static int read_spm(loader *L, char *data, size_t len, mm_err *err)
{
    mm_tokenizer *t = L->t;
    int rc = mm_spm_parse_file(L->spm_path, data, len, &t->spm, err);
    if (rc < 0)
        return rc;
    const mm_spm_model *m = t->spm;
    t->model_type = mm_xstrdup(m->model_type == MM_SPM_UNIGRAM ? "Unigram" : "BPE");
    char where[PLACE];
    mm_tok_at(where, "%s: pieces", L->spm_path);
    mm_tokv_begin(t, m->npieces);
    for (size_t i = 0; i < m->npieces; i++)
        if ((rc = mm_tokv_model_add(t, m->pieces[i].piece, m->pieces[i].len, i, where, err)) < 0)
            return rc;
    mm_tokv_model_done(t, m->npieces);
    return 0;
}

/* ---- the chat template --------------------------------------------------------------------------------- */

/* Text file `name` of the folder (named `path` in messages): UTF-8 without NUL bytes. */
static int read_text(const mm_tok_files *files, const char *name, const char *path, char **out, mm_err *err)
{
    size_t len;
    int rc = files->read(files->ctx, name, MM_TOK_MAX_JSON, out, &len, err);
    if (rc < 0)
        return rc;
    size_t valid = mm_utf8_valid_len(*out, len), nul = strlen(*out);
    if (valid < len || nul < len) {
        free(*out);
        *out = NULL;
        return mm_err_set(err, -EINVAL, "%s: not UTF-8 text without NUL bytes (at byte %zu)", path,
                          valid < nul ? valid : nul);
    }
    return 0;
}

/* _from_pretrained: chat_template.jinja is the "default" template and additional_chat_templates/NAME.jinja
 * the template NAME; when any exists they replace the config's chat_template. Otherwise the config's
 * (a string, or a list of {name, template} that __init__ makes a dict). A dict gives its "default" (what
 * get_chat_template applies, and mergekit's _set_chat_template takes). */
static int read_chat_template(loader *L, mm_err *err)
{
    mm_tokenizer *t = L->t;
    const mm_tok_files *f = L->files;
    char *path = mm_path_join(f->label, "chat_template.jinja");
    int rc = read_text(f, "chat_template.jinja", path, &t->chat_template, err), from_files = rc == 0;
    free(path);
    if (rc == -ENOENT)
        rc = 0;
    if (rc < 0)
        return rc;
    char **names;
    size_t n;
    f->list(f->ctx, "additional_chat_templates", &names, &n);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (rc < 0 || len < 6 || strcmp(names[i] + len - 6, ".jinja") != 0)
            continue;
        from_files = 1;
        if (strcmp(names[i], "default.jinja") == 0) {
            char *name = mm_path_join("additional_chat_templates", names[i]), *p = mm_path_join(f->label, name);
            free(t->chat_template);
            t->chat_template = NULL;
            rc = read_text(f, name, p, &t->chat_template, err);
            free(name);
            free(p);
        }
    }
    mm_tok_free_names(names, n);
    if (rc < 0 || from_files || !t->tokenizer_config)
        return rc;
    const cJSON *ct, *e;
    if ((rc = mm_tok_member(t->tokenizer_config, "chat_template", L->config_path, &ct, err)) < 0)
        return rc;
    char where[PLACE];
    mm_tok_at(where, "%s: chat_template", L->config_path);
    if (!ct || cJSON_IsNull(ct))
        return 0;
    if (cJSON_IsString(ct)) {
        t->chat_template = mm_xstrdup(ct->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(ct))
        return mm_tok_bad_type(where, "is a string or a list of {name, template}", ct, err);
    size_t i = 0;
    const char *found = NULL;
    cJSON_ArrayForEach(e, ct)
    {
        char w[PLACE];
        mm_tok_at(w, "%s[%zu]", where, i++);
        const cJSON *name, *tmpl;
        if (!cJSON_IsObject(e))
            return mm_tok_bad_type(w, "an entry is an object {name, template}", e, err);
        if ((rc = mm_tok_member(e, "name", w, &name, err)) < 0 ||
            (rc = mm_tok_member(e, "template", w, &tmpl, err)) < 0)
            return rc;
        if (!cJSON_IsString(name) || !cJSON_IsString(tmpl))
            return mm_err_set(err, -EINVAL, "%s: needs \"name\" and \"template\", both strings", w);
        for (const cJSON *f = ct->child; f != e; f = f->next) {
            const cJSON *other = cJSON_GetObjectItemCaseSensitive(f, "name");
            if (cJSON_IsString(other) && strcmp(other->valuestring, name->valuestring) == 0)
                return mm_err_set(err, -EINVAL, "%s: a second template named \"%s\"", w, name->valuestring);
        }
        if (strcmp(name->valuestring, "default") == 0)
            found = tmpl->valuestring;
    }
    if (found)
        t->chat_template = mm_xstrdup(found);
    return 0;
}

/* ---- the folder ---------------------------------------------------------------------------------------- */

int mm_tokenizer_load_files(const mm_tok_files *files, mm_tokenizer **out, mm_err *err)
{
    mm_tokenizer *t = mm_xcalloc(1, sizeof *t);
    loader L = {.t = t, .files = files};
    L.config_path = mm_path_join(files->label, "tokenizer_config.json");
    L.json_path = mm_path_join(files->label, "tokenizer.json");
    L.spm_path = mm_path_join(files->label, "tokenizer.model");
    int rc = mm_tok_read_json(files, "tokenizer_config.json", L.config_path, &t->tokenizer_config, err);
    if (rc == 0)
        rc = mm_tok_read_json(files, "tokenizer.json", L.json_path, &t->tokenizer_json, err);
    if (rc == 0) {
        char *data;
        size_t len;
        if (t->tokenizer_json) {
            t->kind = MM_TOK_FAST;
            rc = read_tokenizer_json(&L, err);
        } else if ((rc = files->read(files->ctx, "tokenizer.model", MM_SPM_MAX_FILE, &data, &len, err)) == 0) {
            t->kind = MM_TOK_SPM;
            rc = read_spm(&L, data, len, err);
        } else if (rc == -ENOENT) {
            rc = mm_err_set(err, -ENOENT,
                            "%s: no tokenizer.json nor tokenizer.model (other tokenizer files are not read)",
                            files->label);
        }
    }
    if (rc == 0)
        rc = mm_tok_read_config(&L, err);
    if (rc == 0)
        rc = read_chat_template(&L, err);
    if (rc == 0)
        mm_tokv_finish(t);
    free(L.config_path);
    free(L.json_path);
    free(L.spm_path);
    free(L.stm_path);
    free(L.atj_path);
    if (rc < 0) {
        mm_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ---- a folder on disk ---------------------------------------------------------------------------------- */

static int folder_read(void *ctx, const char *name, size_t max, char **data, size_t *len, mm_err *err)
{
    char *path = mm_path_join(ctx, name);
    struct stat st;
    int rc = stat(path, &st) != 0 && errno == ENOENT ? -ENOENT : mm_file_read_all(path, max, data, len, err);
    free(path);
    return rc;
}

static void folder_list(void *ctx, const char *dir, char ***names, size_t *n)
{
    char *path = mm_path_join(ctx, dir);
    DIR *dp = opendir(path);
    *names = NULL;
    *n = 0;
    free(path);
    if (!dp)
        return;
    struct dirent *de;
    size_t cap = 0;
    while ((de = readdir(dp))) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            *names = mm_xrealloc(*names, cap * sizeof **names);
        }
        (*names)[(*n)++] = mm_xstrdup(de->d_name);
    }
    closedir(dp);
}

void mm_tok_free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int mm_tokenizer_load(const char *folder, mm_tokenizer **out, mm_err *err)
{
    mm_tok_files f = {folder, folder_read, folder_list, (void *)(uintptr_t)folder};
    return mm_tokenizer_load_files(&f, out, err);
}
