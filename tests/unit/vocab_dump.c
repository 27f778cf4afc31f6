/* A test-only program (not installed): builds an output vocabulary with merge/plan/vocab.c and writes its
 * served files, for tests/integration/test_vocab_build.py to compare with tests/reference/tokenizer_eval.py.
 *
 *   vocab_dump SPEC.json OUTDIR
 *
 * SPEC: {"models": [{"ref", "folder", "vocab_size": n or null}], "base": i,
 *        "source": "base" | "union" | {"ref", "folder", "model": i or -1}, "tokens": [...],
 *        "chat_template": text (optional)}
 * Prints {"vocab": [token by id], "added": [{"id", "content", "single_word", "lstrip", "rstrip",
 * "normalized", "special"}], "perms": {ref: [old id, -1 absent, -2 beyond]}, "stripped": [...],
 * "base": i, "donor": i, "donor_folder", "files": [names]} and writes the served files into OUTDIR (a
 * source_path file is copied). When the vocabulary builds but its files cannot be served, "files_error"
 * holds the message and nothing is written. Other errors: the message on stderr, exit 1. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/jsonpy.h"
#include "formats/tokvocab.h"
#include "merge/plan/vocab.h"

static int fail(const char *msg)
{
    fprintf(stderr, "%s\n", msg);
    return 1;
}

static int write_file(const char *dir, const char *name, const char *data, size_t len)
{
    char *p = mm_path_join(dir, name);
    FILE *f = fopen(p, "wb");
    int ok = f && fwrite(data, 1, len, f) == len;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok)
        fprintf(stderr, "%s: cannot write\n", p);
    free(p);
    return ok ? 0 : -1;
}

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int main(int argc, char **argv)
{
    mm_err err = {{0}};
    if (argc != 3)
        return fail("usage: vocab_dump SPEC.json OUTDIR");
    char *text;
    size_t len;
    if (mm_file_read_all(argv[1], 1u << 26, &text, &len, &err) < 0)
        return fail(err.msg);
    cJSON *spec;
    if (mm_json_parse(text, len, &spec, &err) < 0)
        return fail(err.msg);
    free(text);

    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(spec, "models"), *m;
    size_t n = (size_t)cJSON_GetArraySize(ms), i = 0;
    mm_vocab_model *models = mm_xcalloc(n + 1, sizeof *models);
    cJSON_ArrayForEach(m, ms)
    {
        const cJSON *vs = cJSON_GetObjectItemCaseSensitive(m, "vocab_size");
        models[i++] = (mm_vocab_model){str_of(m, "ref"), str_of(m, "folder"),
                                       cJSON_IsNumber(vs) ? (long)vs->valuedouble : -1};
    }
    mm_vocab_spec vs = {0};
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(spec, "source");
    if (cJSON_IsString(src))
        vs.source = strcmp(src->valuestring, "union") == 0 ? MM_VOCAB_UNION : MM_VOCAB_BASE;
    else {
        vs.source = MM_VOCAB_MODEL;
        vs.source_ref = str_of(src, "ref");
        vs.source_folder = str_of(src, "folder");
        vs.source_model = (int)cJSON_GetObjectItemCaseSensitive(src, "model")->valuedouble;
    }
    const cJSON *toks = cJSON_GetObjectItemCaseSensitive(spec, "tokens"), *t;
    const char **tv = mm_xcalloc((size_t)cJSON_GetArraySize(toks) + 1, sizeof *tv);
    cJSON_ArrayForEach(t, toks) tv[vs.ntokens++] = t->valuestring;
    vs.tokens = tv;
    size_t base = (size_t)cJSON_GetObjectItemCaseSensitive(spec, "base")->valuedouble;

    mm_vocab *v;
    if (mm_vocab_build(models, n, base, &vs, &v, &err) < 0) {
        free(models);
        free(tv);
        cJSON_Delete(spec);
        return fail(err.msg);
    }
    mm_vocab_file *files = NULL;
    size_t nfiles = 0;
    int files_rc = mm_vocab_files(v, str_of(spec, "chat_template"), &files, &nfiles, &err);

    cJSON *o = cJSON_CreateObject();
    cJSON *vocab = cJSON_AddArrayToObject(o, "vocab");
    for (size_t id = 0; id < v->n_tokens; id++)
        cJSON_AddItemToArray(vocab, cJSON_CreateString(v->out->tokens[id]));
    cJSON_AddItemToObject(o, "added", mm_tokv_added_json(v->out));
    cJSON *perms = cJSON_AddObjectToObject(o, "perms");
    for (size_t k = 0; k < n; k++) {
        cJSON *p = cJSON_AddArrayToObject(perms, models[k].ref);
        for (size_t id = 0; id < v->n_tokens; id++)
            cJSON_AddItemToArray(p, cJSON_CreateNumber((double)v->perm[k][id]));
    }
    cJSON *st = cJSON_AddArrayToObject(o, "stripped");
    for (size_t k = 0; k < v->nstripped; k++)
        cJSON_AddItemToArray(st, cJSON_CreateString(v->stripped[k]));
    cJSON_AddNumberToObject(o, "base", (double)v->base);
    cJSON_AddNumberToObject(o, "donor", v->donor);
    cJSON_AddStringToObject(o, "donor_folder", v->donor_folder);
    if (files_rc < 0)
        cJSON_AddStringToObject(o, "files_error", err.msg);
    cJSON *names = cJSON_AddArrayToObject(o, "files");
    int rc = 0;
    for (size_t k = 0; k < nfiles && rc == 0; k++) {
        cJSON_AddItemToArray(names, cJSON_CreateString(files[k].name));
        char *data = files[k].data;
        size_t dlen = files[k].len;
        if (files[k].source_path && mm_file_read_all(files[k].source_path, 1u << 30, &data, &dlen, &err) < 0)
            rc = fail(err.msg);
        else
            rc = write_file(argv[2], files[k].name, data, dlen);
        if (data != files[k].data)
            free(data);
    }
    mm_buf b = {0};
    mm_json_write_py(o, &b);
    puts(b.data);
    mm_buf_free(&b);
    cJSON_Delete(o);
    mm_vocab_files_free(files, nfiles);
    mm_vocab_free(v);
    free(models);
    free(tv);
    cJSON_Delete(spec);
    return rc ? 1 : 0;
}
