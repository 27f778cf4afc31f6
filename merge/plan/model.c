#include "model.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/jsonpy.h"
#include "merge/plan/lora.h"

#define MAX_JSON_FILE (64u << 20)

static int exists(const char *dir, const char *name)
{
    char *p = mm_path_join(dir, name);
    int ok = access(p, F_OK) == 0;
    free(p);
    return ok;
}

int mm_shard_open(mm_shard *s, const char *path, mm_err *err)
{
    memset(s, 0, sizeof *s);
    s->fd = -1;
    /* Opened (and its identity taken) before the header is read, and checked after: a file replaced
     * in between must not pair one file's header with another's data. */
    int rc = mm_srcfile_open(path, &s->src, err);
    if (rc < 0)
        return rc;
    s->path = mm_srcfile_path(s->src);
    s->fd = mm_srcfile_fd(s->src);
    rc = mm_st_read_file(path, &s->hdr, err);
    if (rc == 0 && !mm_srcfile_unchanged(s->src))
        rc = mm_err_set(err, -EAGAIN, "%s: changed while it was being opened (try again)", path);
    return rc;
}

static int load_index(mm_model *m, const char *index_path, mm_err *err)
{
    char *text;
    size_t len;
    int rc = mm_file_read_all(index_path, MAX_JSON_FILE, &text, &len, err);
    if (rc < 0)
        return rc;
    mm_st_index ix;
    rc = mm_st_index_parse(text, len, &ix, err);
    free(text);
    if (rc < 0) {
        mm_err_prefix(err, "%s", index_path);
        return rc;
    }
    m->shards = mm_xcalloc(ix.nfiles, sizeof *m->shards);
    for (size_t i = 0; i < ix.nfiles && rc == 0; i++) {
        char *p = mm_path_join(m->path, ix.files[i]);
        rc = mm_shard_open(&m->shards[i], p, err);
        free(p);
        m->nshards++;
    }
    /* Every weight_map entry must be in the shard it names. */
    for (size_t e = 0; e < ix.n && rc == 0; e++) {
        const mm_shard *s = &m->shards[ix.file_of[e]];
        int found = 0;
        for (size_t j = 0; j < s->hdr.n && !found; j++)
            found = strcmp(s->hdr.tensors[j].name, ix.names[e]) == 0;
        if (!found)
            rc = mm_err_set(err, -EINVAL, "%s: weight_map says '%s' is in %s, but that file has no such tensor",
                            index_path, ix.names[e], ix.files[ix.file_of[e]]);
    }
    mm_st_index_free(&ix);
    return rc;
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const mm_model_tensor *)a)->name, ((const mm_model_tensor *)b)->name);
}

static int index_tensors(mm_model *m, mm_err *err)
{
    size_t n = 0;
    for (size_t i = 0; i < m->nshards; i++)
        n += m->shards[i].hdr.n;
    m->tensors = mm_xcalloc(n, sizeof *m->tensors);
    for (size_t i = 0; i < m->nshards; i++)
        for (size_t j = 0; j < m->shards[i].hdr.n; j++) {
            mm_model_tensor *t = &m->tensors[m->ntensors++];
            t->st = &m->shards[i].hdr.tensors[j];
            t->shard = &m->shards[i];
            t->name = t->st->name;
        }
    qsort(m->tensors, m->ntensors, sizeof *m->tensors, cmp_tensor);
    for (size_t i = 1; i < m->ntensors; i++)
        if (strcmp(m->tensors[i - 1].name, m->tensors[i].name) == 0)
            return mm_err_set(err, -EINVAL, "%s: tensor '%s' is stored in two shards (%s and %s)", m->path,
                              m->tensors[i].name, m->tensors[i - 1].shard->path, m->tensors[i].shard->path);
    return 0;
}

void mm_shard_close(mm_shard *s)
{
    mm_st_header_free(&s->hdr);
    mm_srcfile_close(s->src);
}

int mm_model_is(const mm_model *m, const char *path, const char *lora_path)
{
    if (strcmp(m->path, path) != 0 || !m->lora != !lora_path)
        return 0;
    return !lora_path || strcmp(m->lora->folder, lora_path) == 0;
}

int mm_model_open(const char *path, const char *lora_path, mm_model **out, mm_err *err)
{
    mm_model *m = mm_xcalloc(1, sizeof *m);
    m->path = mm_xstrdup(path);
    int rc;
    if (exists(path, "model.safetensors.index.json")) {
        char *ip = mm_path_join(path, "model.safetensors.index.json");
        rc = load_index(m, ip, err);
        free(ip);
    } else if (exists(path, "model.safetensors")) {
        char *p = mm_path_join(path, "model.safetensors");
        m->shards = mm_xcalloc(1, sizeof *m->shards);
        m->nshards = 1;
        rc = mm_shard_open(&m->shards[0], p, err);
        free(p);
    } else if (exists(path, "pytorch_model.bin") || exists(path, "pytorch_model.bin.index.json")) {
        rc = mm_err_set(err, -ENOTSUP,
                        "%s: has only pickle weights (pytorch_model.bin); mergemount reads safetensors only "
                        "(convert the model to safetensors first, e.g. with transformers' save_pretrained(..., "
                        "safe_serialization=True))",
                        path);
    } else {
        rc = mm_err_set(err, -ENOENT, "%s: no model.safetensors or model.safetensors.index.json in this folder "
                                      "(is it a model folder?)",
                        path);
    }
    if (rc == 0)
        rc = index_tensors(m, err);
    if (rc == 0 && exists(path, "config.json")) {
        char *cp = mm_path_join(path, "config.json"), *text;
        size_t len;
        rc = mm_file_read_all(cp, MAX_JSON_FILE, &text, &len, err);
        if (rc == 0) {
            rc = mm_json_parse(text, len, &m->config, err);
            free(text);
            if (rc < 0)
                mm_err_prefix(err, "%s", cp);
            else if (!cJSON_IsObject(m->config))
                rc = mm_err_set(err, -EINVAL, "%s: not a JSON object", cp);
        }
        free(cp);
    }
    if (rc == 0 && lora_path) {
        rc = mm_lora_open(lora_path, &m->lora, err);
        if (rc == 0)
            rc = mm_lora_attach(m->lora, m, err);
    }
    if (rc < 0) {
        mm_model_free(m);
        return rc;
    }
    mm_arch_infer(&m->arch, m->tensors, m->ntensors, m->config);
    *out = m;
    return 0;
}

void mm_model_free(mm_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nshards; i++)
        mm_shard_close(&m->shards[i]);
    mm_lora_free(m->lora);
    for (size_t i = 0; i < m->ntensors; i++)
        free(m->tensors[i].template_name);
    free(m->shards);
    free(m->tensors);
    cJSON_Delete(m->config);
    mm_arch_free(&m->arch);
    free(m->path);
    free(m);
}

const mm_model_tensor *mm_model_find(const mm_model *m, const char *name)
{
    mm_model_tensor key = {.name = name};
    return bsearch(&key, m->tensors, m->ntensors, sizeof key, cmp_tensor);
}

int mm_layer_of(const char *name, char **template_name)
{
    *template_name = NULL;
    /* A name that already holds "{}" would make its template ambiguous (the placeholder is found by
     * searching for "{}"): such a name, which no real checkpoint has, is no layer tensor. */
    if (strstr(name, "{}"))
        return -1;
    const char *p = name;
    while (p) {
        const char *dot = strchr(p, '.');
        const char *end = dot ? dot : p + strlen(p);
        /* A layer index sits between dots: ".<digits>." (D12). */
        if (p != name && dot && end > p) {
            const char *q = p;
            while (q < end && isdigit((unsigned char)*q))
                q++;
            if (q == end && end - p < 9) {
                int layer = atoi(p);
                *template_name = mm_xasprintf("%.*s{}%s", (int)(p - name), name, end);
                return layer;
            }
        }
        p = dot ? dot + 1 : NULL;
    }
    return -1;
}

char *mm_layer_name(const char *template_name, int layer)
{
    const char *h = strstr(template_name, "{}");
    return mm_xasprintf("%.*s%d%s", (int)(h - template_name), template_name, layer, h + 2);
}
