/* The output folder: shards and their headers (D15, B5.3-B5.4), index, config.json, the donor's
 * tokenizer files, the model card and the verbatim config (D2, D16). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/jsonpy.h"
#include "formats/tokenizer.h"
#include "merge/plan/config_out.h"
#include "merge/plan/lora.h"
#include "merge/plan/moe.h"
#include "merge/plan/rowmap.h"
#include "merge/plan/vocab.h"
#include "plan_internal.h"
#include "recipe.h"

/* Files served from the tokenizer donor as they are (B5.1, B7: the plain "copy tokenizer" path). */
static const char *const tokenizer_files[] = {
    "tokenizer.json",       "tokenizer_config.json", "tokenizer.model",        "special_tokens_map.json",
    "added_tokens.json",    "vocab.json",            "merges.txt",             "vocab.txt",
    "spiece.model",         "generation_config.json", "chat_template.jinja",   "chat_template.json",
    "preprocessor_config.json", "processor_config.json",
};

static mm_out_file *add_file(mm_plan *p, const char *name, mm_file_kind kind)
{
    p->files = mm_xrealloc(p->files, (p->nfiles + 1) * sizeof *p->files);
    mm_out_file *f = &p->files[p->nfiles++];
    memset(f, 0, sizeof *f);
    f->name = mm_xstrdup(name);
    f->kind = kind;
    return f;
}

static void add_static(mm_plan *p, const char *name, char *data, size_t len)
{
    mm_out_file *f = add_file(p, name, MM_FILE_STATIC);
    f->data = data;
    f->data_len = len;
    f->size = len;
}

static int cmp_order(const void *a, const void *b, void *arg)
{
    const mm_out_tensor *t = arg;
    const mm_out_tensor *x = &t[*(const size_t *)a], *y = &t[*(const size_t *)b];
    int c = strcmp(x->group_label, y->group_label);
    return c ? c : strcmp(x->name, y->name);
}

static uint64_t tensor_bytes(const mm_out_tensor *t)
{
    return t->numel * mm_dtype_size(t->dtype);
}

/* Output tensors by the address of their name: mm_st_layout reorders a shard's entries, and each entry
 * is found again by its (borrowed) name pointer in log time; a scan per entry made planning quadratic
 * in the tensor count (minutes for 100,000 tensors). */
typedef struct name_ref {
    uintptr_t name;
    size_t idx;
} name_ref;

static int cmp_name_ref(const void *a, const void *b)
{
    uintptr_t x = ((const name_ref *)a)->name, y = ((const name_ref *)b)->name;
    return (x > y) - (x < y);
}

static name_ref *names_by_address(const mm_plan *p)
{
    name_ref *r = mm_xmalloc((p->ntensors ? p->ntensors : 1) * sizeof *r);
    for (size_t i = 0; i < p->ntensors; i++)
        r[i] = (name_ref){(uintptr_t)p->tensors[i].name, i};
    qsort(r, p->ntensors, sizeof *r, cmp_name_ref);
    return r;
}

/* The index of the tensor whose name is `name` (which must be one of them). */
static size_t tensor_of_name(const name_ref *r, size_t n, const char *name)
{
    name_ref key = {(uintptr_t)name, 0};
    const name_ref *hit = bsearch(&key, r, n, sizeof *r, cmp_name_ref);
    return hit->idx;
}

/* Greedy fill in mergekit's save order (B5.3): a shard is closed before a tensor that would overflow
 * it, unless the shard is empty. */
static void plan_shards(mm_plan *p)
{
    size_t n = p->ntensors;
    size_t *ord = mm_xmalloc((n ? n : 1) * sizeof *ord);
    for (size_t i = 0; i < n; i++)
        ord[i] = i;
    qsort_r(ord, n, sizeof *ord, cmp_order, p->tensors);
    size_t *shard_of = mm_xcalloc(n ? n : 1, sizeof *shard_of);
    size_t nshards = 0;
    uint64_t cur = 0, max = p->opt.out_shard_size;
    for (size_t k = 0; k < n; k++) {
        uint64_t sz = tensor_bytes(&p->tensors[ord[k]]);
        if (nshards == 0 || (max > 0 && cur > 0 && cur + sz > max)) {
            nshards++;
            cur = 0;
        }
        cur += sz;
        shard_of[ord[k]] = nshards - 1;
    }
    if (nshards == 0)
        nshards = 1; /* a merge without tensors still gets its (empty) model.safetensors */
    name_ref *by_name = names_by_address(p);
    const char **wm_names = mm_xcalloc(n ? n : 1, sizeof *wm_names);
    const char **wm_files = mm_xcalloc(n ? n : 1, sizeof *wm_files);
    uint64_t total = 0;
    for (size_t s = 0; s < nshards; s++) {
        char *fname = nshards == 1 ? mm_xstrdup("model.safetensors")
                                   : mm_xasprintf("model-%05zu-of-%05zu.safetensors", s + 1, nshards);
        mm_out_file *f = add_file(p, fname, MM_FILE_SHARD);
        size_t fidx = p->nfiles - 1;
        free(fname);
        mm_st_tensor *st = mm_xcalloc(n ? n : 1, sizeof *st);
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (shard_of[i] != s)
                continue;
            const mm_out_tensor *t = &p->tensors[i];
            st[m].name = t->name; /* borrowed: identifies the tensor again after sorting */
            st[m].dtype = t->dtype;
            st[m].ndim = t->ndim;
            memcpy(st[m].shape, t->shape, sizeof st[m].shape);
            m++;
        }
        size_t hsize;
        mm_st_layout(st, m, &f->data, &hsize);
        f->data_len = hsize;
        f->tensors = mm_xcalloc(m ? m : 1, sizeof *f->tensors);
        f->ntensors = m;
        uint64_t data = 0;
        for (size_t k = 0; k < m; k++) {
            size_t i = tensor_of_name(by_name, n, st[k].name);
            f->tensors[k] = i;
            p->tensors[i].file_idx = fidx;
            p->tensors[i].file_offset = hsize + st[k].begin;
            wm_names[i] = p->tensors[i].name;
            data = st[k].end;
        }
        f->size = hsize + data;
        total += data;
        free(st);
    }
    if (nshards > 1) {
        for (size_t i = 0; i < n; i++)
            wm_files[i] = p->files[p->tensors[i].file_idx].name;
        char *idx = mm_st_index_json(wm_names, wm_files, n, total);
        add_static(p, "model.safetensors.index.json", idx, strlen(idx));
    }
    free(by_name);
    free(wm_names);
    free(wm_files);
    free(shard_of);
    free(ord);
}

/* The dtype recorded as config.json dtype and torch_dtype: the one most output bytes are stored in (D8). */
static mm_dtype main_dtype(const mm_plan *p)
{
    uint64_t bytes[MM_DT_COUNT] = {0};
    for (size_t i = 0; i < p->ntensors; i++)
        if (mm_dtype_is_computable(p->tensors[i].dtype))
            bytes[p->tensors[i].dtype] += tensor_bytes(&p->tensors[i]);
    mm_dtype best = MM_DT_NONE;
    for (int d = 0; d < MM_DT_COUNT; d++)
        if (bytes[d] && (best == MM_DT_NONE || bytes[d] > bytes[best]))
            best = (mm_dtype)d;
    return best;
}

/* Sets module mod's layer count in the output config.json and makes its per-layer lists follow its
 * layers. A text decoder whose config.json leaves the count to the model class's default (LLaVA's
 * text_config) gets num_hidden_layers written when the count changes. Another module whose count
 * changed but that config.json has no count for is an error: transformers would build it with the old
 * count, and its key is not known. */
static int set_module_layers(const mm_plan *p, cJSON *cfg, const mm_plan_module *mod, mm_err *err)
{
    const mm_model *donor = p->models[p->donor];
    const mm_module *dm = mod->module;
    cJSON *dkey, *key;
    const cJSON *dholder = mm_arch_count_holder(dm, donor->config, &dkey);
    cJSON *holder = mm_arch_count_holder(dm, cfg, &key);
    if (holder) {
        /* The donor's count as config.json says it, which may disagree with its tensors (a count that
         * is no int is no list length: 0, so nothing is taken for a per-layer list) */
        const double dv = dkey->valuedouble;
        const int dn = dv >= 0 && dv <= INT_MAX ? (int)dv : 0;
        mm_config_slice_layer_lists(holder, dholder, dn, mod->origin, mod->out_layers);
        mm_config_write_layer_types(holder, dholder, dn, mod->origin, mod->out_layers);
        cJSON_SetNumberValue(key, mod->out_layers);
        return 0;
    }
    if (mod->out_layers == mod->in_layers || !dm->stack)
        return 0;
    if (dm->kind != MM_MOD_TEXT)
        return mm_err_set(err, -EINVAL,
                          "the %s now has %d layers instead of %d, but the config.json of '%s' records no layer count "
                          "for it to change (transformers would build it with its default count); keep the %s's "
                          "layers as they are",
                          mod->name, mod->out_layers, mod->in_layers, p->model_refs[p->donor], mod->name);
    cJSON *tc = cJSON_GetObjectItemCaseSensitive(cfg, "text_config");
    cJSON_AddNumberToObject(cJSON_IsObject(tc) ? tc : cfg, "num_hidden_layers", mod->out_layers);
    return 0;
}

static int plan_config_json(mm_plan *p, mm_err *err)
{
    const mm_modelref *ref = mm_config_donor(p->cfg);
    const mm_model *donor = p->models[p->donor];
    if (!donor->config) {
        char pos[512];
        mm_srcpos_format(&ref->pos, pos, sizeof pos);
        return mm_err_set(err, -ENOENT,
                          "%s: model '%s' (%s) has no config.json; the output's config.json is taken from it "
                          "(base_model, else the first model)",
                          pos, ref->ref, ref->path);
    }
    cJSON *cfg = cJSON_Duplicate(donor->config, 1);
    mm_dtype dt = main_dtype(p);
    if (dt != MM_DT_NONE)
        mm_config_set_dtype(cfg, mm_dtype_torch_name(dt));
    int rc = 0;
    for (size_t i = 0; i < p->nmodules && rc == 0; i++)
        rc = set_module_layers(p, cfg, &p->modules[i], err);
    /* mergekit's _update_config_vocab: the output vocabulary's length, padded */
    if (rc == 0 && p->vocab)
        mm_config_set_vocab_size(cfg, (long)mm_rowmap_rows(p));
    if (rc == 0) {
        mm_buf b = {0};
        mm_json_write_py(cfg, &b);
        mm_buf_puts(&b, "\n");
        add_static(p, "config.json", b.data, b.len);
    }
    cJSON_Delete(cfg);
    return rc;
}

/* Whether `real` (a resolved path) is `root` or lies below it. */
static int path_within(const char *real, const char *root)
{
    size_t n = strlen(root);
    return strncmp(real, root, n) == 0 && (real[n] == '\0' || real[n] == '/' || (n == 1 && root[0] == '/'));
}

/* Whether the donor file at `path` resolves to a file of the model itself: inside the model folder or,
 * for a Hugging Face cache snapshot (REPO/snapshots/REV), inside REPO, where the snapshot's links point
 * (REPO/blobs). Links elsewhere are how a downloaded folder would make us serve any file the user can
 * read (a `tokenizer.json` linking to a private key, say) to every reader of the mount and to an upload. */
static int donor_file_allowed(const char *folder, const char *path)
{
    char *real = realpath(path, NULL), *root = realpath(folder, NULL);
    int ok = real && root && path_within(real, root);
    if (!ok && real && root) {
        char *slash = strrchr(root, '/');
        if (slash && slash != root) {
            *slash = '\0'; /* root = REPO/snapshots */
            char *up = strrchr(root, '/');
            if (up && strcmp(up + 1, "snapshots") == 0) {
                *up = '\0'; /* root = REPO */
                ok = root[0] && path_within(real, root);
            }
        }
    }
    free(real);
    free(root);
    return ok;
}

/* Serves a donor file as it is, unless it links outside its model folder. */
static void add_donor_file(mm_plan *p, const char *folder, const char *name, char *path)
{
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
        free(path);
        return;
    }
    if (!donor_file_allowed(folder, path)) {
        mm_log_warn("%s is a link to a file outside the model folder; it is not served (copy the file into the "
                    "folder to use it)",
                    path);
        free(path);
        return;
    }
    mm_out_file *f = add_file(p, name, MM_FILE_SOURCE);
    f->source_path = path;
    f->size = (uint64_t)st.st_size;
}

/* Whether the plan writes `name` itself: the tokenizer files of an output vocabulary, or those that hold
 * the chosen chat template; the donor's would contradict them. The slow-tokenizer files (vocab.json,
 * merges.txt, ...) are not written but go too with a new vocabulary: they would describe the old one. */
static int replaced(const mm_plan *p, const char *name)
{
    static const char *const chat[] = {"tokenizer_config.json", "chat_template.jinja", "chat_template.json"};
    static const char *const kept[] = {"generation_config.json", "preprocessor_config.json", "processor_config.json"};
    if (p->vocab) {
        for (size_t i = 0; i < MM_COUNT(kept); i++)
            if (strcmp(name, kept[i]) == 0)
                return 0;
        return 1;
    }
    for (size_t i = 0; p->chat_template && i < MM_COUNT(chat); i++)
        if (strcmp(name, chat[i]) == 0)
            return 1;
    return 0;
}

static int plan_tokenizer(mm_plan *p, mm_err *err)
{
    const mm_config *cfg = p->cfg;
    const mm_modelref *ref = cfg->tokenizer_source == MM_TOK_MODEL ? cfg->tokenizer_model : mm_config_donor(cfg);
    mm_vocab_file *files = NULL;
    size_t n = 0;
    int rc = 0;
    if (p->vocab)
        rc = mm_vocab_files(p->vocab, p->chat_template, &files, &n, err);
    else if (p->chat_template)
        rc = mm_tokenizer_config_files(ref->path, p->chat_template, &files, &n, err);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (files[i].source_path)
            add_donor_file(p, ref->path, files[i].name, mm_xstrdup(files[i].source_path));
        else {
            add_static(p, files[i].name, files[i].data, files[i].len);
            files[i].data = NULL;
        }
    }
    mm_vocab_files_free(files, n);
    for (size_t i = 0; i < MM_COUNT(tokenizer_files) && rc == 0; i++)
        if (!replaced(p, tokenizer_files[i]))
            add_donor_file(p, ref->path, tokenizer_files[i], mm_path_join(ref->path, tokenizer_files[i]));
    return rc;
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const mm_out_file *)a)->name, ((const mm_out_file *)b)->name);
}

static int64_t path_mtime(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return 0;
    return (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
}

int mm_plan_build(const mm_config *cfg, const mm_plan_options *opt, mm_plan **out, mm_err *err)
{
    mm_plan *p = mm_xcalloc(1, sizeof *p);
    p->cfg = cfg;
    p->opt = *opt;
    char pos[512];
    mm_srcpos_format(&cfg->method_pos, pos, sizeof pos);
    const mm_method *m = mm_method_find(cfg->moe ? "passthrough" : cfg->merge_method);
    int rc = 0;
    if (cfg->moe) {
        /* a mergekit-moe config (D20): its own planner, config.json and router weights */
    } else if (!m) {
        size_t nn;
        const char *const *names = mm_method_names(&nn);
        const char *sugg = mm_suggest(cfg->merge_method, names, nn);
        mm_buf list = {0};
        for (size_t i = 0; i < nn; i++)
            mm_buf_printf(&list, "%s%s", i ? ", " : "", names[i]);
        if (sugg)
            rc = mm_err_set(err, -EINVAL, "%s: unknown merge_method '%s' (did you mean '%s'?)", pos, cfg->merge_method,
                            sugg);
        else
            rc = mm_err_set(err, -EINVAL, "%s: unknown merge_method '%s' (known methods: %s)", pos, cfg->merge_method,
                            list.data);
        mm_buf_free(&list);
    } else if (!m->implemented) {
        size_t nn;
        const char *const *names = mm_method_names(&nn);
        mm_buf list = {0};
        for (size_t i = 0; i < nn; i++)
            if (mm_method_find(names[i])->implemented)
                mm_buf_printf(&list, "%s%s", list.len ? ", " : "", names[i]);
        rc = mm_err_set(err, -ENOTSUP, "%s: merge_method '%s' is not implemented yet in mergemount (available now: %s)",
                        pos, m->name, list.data ? list.data : "none");
        mm_buf_free(&list);
    }
    p->method = m;
    if (rc == 0)
        rc = cfg->moe ? mm_plan_moe(p, err) : mm_plan_tensors(p, err);
    if (rc == 0)
        plan_shards(p);
    if (rc == 0 && cfg->moe)
        add_static(p, "config.json", mm_xstrdup(p->moe_config), strlen(p->moe_config));
    else if (rc == 0)
        rc = plan_config_json(p, err);
    if (rc == 0 && p->opt.copy_tokenizer)
        rc = plan_tokenizer(p, err);
    if (rc == 0 && p->opt.write_model_card) {
        char *card = mm_card_text(p);
        add_static(p, "README.md", card, strlen(card));
        add_static(p, "mergekit_config.yml", mm_xstrndup(cfg->text, cfg->text_len), cfg->text_len);
    }
    if (rc < 0) {
        mm_plan_free(p);
        return rc;
    }
    for (size_t i = 0; i < p->ntensors; i++) {
        mm_out_tensor *t = &p->tensors[i];
        mm_recipe_hash(p, t, t->recipe);
        t->block_elems = (1u << 20) / mm_dtype_size(t->dtype);
    }
    /* Sort files by name; shard indexes in tensors must follow. */
    qsort(p->files, p->nfiles, sizeof *p->files, cmp_file);
    for (size_t i = 0; i < p->nfiles; i++)
        for (size_t k = 0; k < p->files[i].ntensors; k++)
            p->tensors[p->files[i].tensors[k]].file_idx = i;
    p->mtime_ns = path_mtime(cfg->path);
    for (size_t i = 0; i < p->nmodels; i++) {
        const mm_model *md = p->models[i];
        for (size_t s = 0; s <= md->nshards; s++) {
            const mm_shard *sh = s < md->nshards ? &md->shards[s] : md->lora ? &md->lora->file : NULL;
            int64_t m = sh ? mm_srcfile_id(sh->src)->mtime_ns : 0;
            if (m > p->mtime_ns)
                p->mtime_ns = m;
        }
    }
    *out = p;
    return 0;
}

void mm_plan_free(mm_plan *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->ntensors; i++) {
        mm_out_tensor *t = &p->tensors[i];
        for (size_t j = 0; j < t->ninputs; j++)
            free(t->inputs[j].mvals);
        free(t->inputs);
        free(t->gvals);
        free(t->group_label);
        free(t->name);
        mm_rowmap_free(t->rowmap);
    }
    free(p->tensors);
    for (size_t i = 0; i < p->nfiles; i++) {
        free(p->files[i].name);
        free(p->files[i].data);
        free(p->files[i].source_path);
        free(p->files[i].tensors);
    }
    free(p->files);
    for (size_t i = 0; i < p->nmodels; i++) {
        mm_model_free(p->models[i]);
        free(p->model_refs[i]);
    }
    free(p->models);
    free(p->model_refs);
    for (size_t i = 0; i < p->nmodules; i++) {
        free(p->modules[i].name);
        free(p->modules[i].origin);
    }
    free(p->modules);
    mm_vocab_free(p->vocab);
    free(p->chat_template);
    mm_moe_free(p);
    free(p);
}

int mm_plan_file_bytes(const mm_plan *p, const char *name, char **data, size_t *len, mm_err *err)
{
    mm_out_file key = {.name = (char *)(uintptr_t)name};
    const mm_out_file *f = bsearch(&key, p->files, p->nfiles, sizeof *p->files, cmp_file);
    if (!f)
        return -ENOENT;
    if (f->kind == MM_FILE_SHARD)
        return -EISDIR;
    if (f->kind == MM_FILE_SOURCE)
        return mm_file_read_all(f->source_path, MM_TOK_MAX_JSON, data, len, err);
    *data = mm_xmalloc(f->data_len + 1);
    memcpy(*data, f->data, f->data_len);
    (*data)[f->data_len] = 0;
    *len = f->data_len;
    return 0;
}
