/* PEFT LoRA adapters (D19): the config, the factor tensors, their base tensors, and the change they make
 * to a range of base elements. */
#include "merge/plan/lora.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/jsonpy.h"
#include "formats/numeric.h"

#define MAX_CONFIG (16u << 20)

/* ---- adapter_config.json ---- */

typedef struct lora_config {
    int r;
    double alpha;
    int rslora, fan_in_fan_out;
    const cJSON *rank_pattern, *alpha_pattern; /* objects or NULL; owned by the parsed tree */
} lora_config;

static int bad_config(mm_err *err, const char *path, const char *key, const char *what)
{
    return mm_err_set(err, -EINVAL, "%s: '%s' %s", path, key, what);
}

static int unsupported(mm_err *err, const char *path, const char *what)
{
    return mm_err_set(err, -ENOTSUP, "%s: %s is not supported (mergemount applies plain LoRA adapters: "
                                     "peft_type LORA without DoRA, bias or modules_to_save)",
                      path, what);
}

/* A pattern key (rank_pattern / alpha_pattern) as PEFT matches it: `re.match(rf".*\.{key}$", module)`.
 * Only plain names are taken, which is what people write ("q_proj", "model.layers.3.mlp.up_proj"). */
static int check_pattern_keys(const cJSON *obj, const char *path, const char *key, mm_err *err)
{
    if (!obj || cJSON_IsNull(obj))
        return 0;
    if (!cJSON_IsObject(obj))
        return bad_config(err, path, key, "must be a mapping of module names to numbers");
    const cJSON *e;
    cJSON_ArrayForEach(e, obj)
    {
        if (strpbrk(e->string, "*+?()[]{}|^$\\"))
            return mm_err_set(err, -ENOTSUP, "%s: %s key '%s' is a regular expression, which is not supported yet; "
                              "give module names (e.g. 'q_proj' or 'model.layers.3.self_attn.q_proj')",
                              path, key, e->string);
        if (!cJSON_IsNumber(e) || e->valuedouble <= 0)
            return mm_err_set(err, -EINVAL, "%s: %s['%s'] must be a positive number", path, key, e->string);
    }
    return 0;
}

static int parse_config(const cJSON *c, const char *path, lora_config *cfg, mm_err *err)
{
    if (!cJSON_IsObject(c))
        return mm_err_set(err, -EINVAL, "%s: not a JSON object", path);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, "peft_type");
    if (!cJSON_IsString(v))
        return bad_config(err, path, "peft_type", "is missing (a PEFT adapter_config.json names its type, e.g. "
                          "\"peft_type\": \"LORA\")");
    if (strcmp(v->valuestring, "LORA") != 0) {
        char what[128];
        snprintf(what, sizeof what, "peft_type %.64s", v->valuestring);
        return unsupported(err, path, what);
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "use_dora")))
        return unsupported(err, path, "use_dora: true (DoRA)");
    v = cJSON_GetObjectItemCaseSensitive(c, "bias");
    if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && strcmp(v->valuestring, "none") == 0))
        return unsupported(err, path, "bias other than \"none\"");
    v = cJSON_GetObjectItemCaseSensitive(c, "modules_to_save");
    if (v && !cJSON_IsNull(v) && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0))
        return unsupported(err, path, "modules_to_save");
    v = cJSON_GetObjectItemCaseSensitive(c, "r");
    if (v && (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble != floor(v->valuedouble) ||
              v->valuedouble > 1e6))
        return bad_config(err, path, "r", "must be a whole number >= 1 (the adapter's rank)");
    cfg->r = v ? (int)v->valuedouble : 8; /* PEFT's default */
    v = cJSON_GetObjectItemCaseSensitive(c, "lora_alpha");
    if (v && !cJSON_IsNumber(v))
        return bad_config(err, path, "lora_alpha", "must be a number");
    cfg->alpha = v ? v->valuedouble : 8; /* PEFT's default */
    v = cJSON_GetObjectItemCaseSensitive(c, "use_rslora");
    cfg->rslora = cJSON_IsTrue(v);
    v = cJSON_GetObjectItemCaseSensitive(c, "fan_in_fan_out");
    cfg->fan_in_fan_out = cJSON_IsTrue(v);
    cfg->rank_pattern = cJSON_GetObjectItemCaseSensitive(c, "rank_pattern");
    cfg->alpha_pattern = cJSON_GetObjectItemCaseSensitive(c, "alpha_pattern");
    int rc = check_pattern_keys(cfg->rank_pattern, path, "rank_pattern", err);
    return rc ? rc : check_pattern_keys(cfg->alpha_pattern, path, "alpha_pattern", err);
}

/* The value a pattern map gives `module` (the first key that is the module's name or its last dotted
 * components, in file order, as PEFT's lookup), or `def`. */
static double pattern_value(const cJSON *obj, const char *module, double def)
{
    if (!cJSON_IsObject(obj))
        return def;
    size_t ml = strlen(module);
    const cJSON *e;
    cJSON_ArrayForEach(e, obj)
    {
        size_t kl = strlen(e->string);
        if (kl == ml ? strcmp(module, e->string) == 0
                     : kl < ml && module[ml - kl - 1] == '.' && strcmp(module + ml - kl, e->string) == 0)
            return e->valuedouble;
    }
    return def;
}

/* ---- factor names ---- */

/* Splits `base_model.model.<M>.<factor>[.<adapter name>][.weight]` into M and the factor: 'A'/'B' for
 * lora_A/lora_B, 'a'/'b' for lora_embedding_A/_B. 0 when the name is no LoRA factor. */
static int split_factor(const char *name, char **module, char *factor)
{
    static const char prefix[] = "base_model.model.";
    static const struct {
        const char *word;
        char factor;
    } words[] = {{".lora_embedding_A", 'a'}, {".lora_embedding_B", 'b'}, {".lora_A", 'A'}, {".lora_B", 'B'}};
    if (strncmp(name, prefix, sizeof prefix - 1) != 0)
        return 0;
    const char *m = name + sizeof prefix - 1;
    for (size_t w = 0; w < MM_COUNT(words); w++) {
        const char *hit = NULL;
        for (const char *p = strstr(m, words[w].word); p; p = strstr(p + 1, words[w].word))
            hit = p;
        if (!hit || hit == m)
            continue;
        const char *rest = hit + strlen(words[w].word);
        /* rest: "", ".weight", ".<adapter>", ".<adapter>.weight" */
        const char *dot2 = rest[0] == '.' ? strchr(rest + 1, '.') : NULL;
        int ok = rest[0] == '\0' || (rest[0] == '.' && rest[1] && (!dot2 || strcmp(dot2, ".weight") == 0));
        if (!ok)
            continue;
        *module = mm_xstrndup(m, (size_t)(hit - m));
        *factor = words[w].factor;
        return 1;
    }
    return 0;
}

static int cmp_delta(const void *a, const void *b)
{
    return strcmp(((const mm_lora_delta *)a)->module, ((const mm_lora_delta *)b)->module);
}

/* Pairs the factors of the adapter file into deltas, with each module's rank and scaling. */
static int collect_factors(mm_lora *l, const lora_config *cfg, const char *file, mm_err *err)
{
    const mm_st_header *h = &l->file.hdr;
    l->deltas = mm_xcalloc(h->n ? h->n : 1, sizeof *l->deltas);
    int rc = 0;
    for (size_t i = 0; i < h->n && rc == 0; i++) {
        const mm_st_tensor *t = &h->tensors[i];
        char *module = NULL, f = 0;
        if (!split_factor(t->name, &module, &f)) {
            rc = mm_err_set(err, -ENOTSUP,
                            "%s: tensor '%s' is not a LoRA factor (lora_A/lora_B or lora_embedding_A/B); adapters "
                            "with other weights (modules_to_save, biases) are not supported",
                            file, t->name);
            break;
        }
        mm_lora_delta *d = NULL;
        for (size_t k = 0; k < l->n && !d; k++)
            if (strcmp(l->deltas[k].module, module) == 0)
                d = &l->deltas[k];
        if (!d) {
            d = &l->deltas[l->n++];
            d->owner = l;
            d->module = module;
            d->embedding = f == 'a' || f == 'b';
            d->transposed = d->embedding || cfg->fan_in_fan_out;
        } else {
            free(module);
        }
        const mm_st_tensor **slot = f == 'A' || f == 'a' ? &d->a : &d->b;
        if (d->embedding != (f == 'a' || f == 'b'))
            rc = mm_err_set(err, -EINVAL, "%s: module '%s' mixes lora_embedding_* and lora_A/lora_B factors", file,
                            d->module);
        else if (*slot)
            rc = mm_err_set(err, -EINVAL, "%s: module '%s' has two lora_%c factors ('%s' and '%s')", file, d->module,
                            f == 'A' || f == 'a' ? 'A' : 'B', (*slot)->name, t->name);
        else if (t->ndim != 2 || !mm_dtype_is_computable(t->dtype))
            rc = mm_err_set(err, -EINVAL, "%s: '%s' must be a 2-D F32, F16 or BF16 tensor", file, t->name);
        *slot = t;
    }
    for (size_t k = 0; k < l->n && rc == 0; k++) {
        mm_lora_delta *d = &l->deltas[k];
        if (!d->a || !d->b) {
            rc = mm_err_set(err, -EINVAL, "%s: module '%s' has lora_%c but no lora_%c (the adapter file is "
                            "incomplete)",
                            file, d->module, d->a ? 'A' : 'B', d->a ? 'B' : 'A');
            break;
        }
        int r = (int)pattern_value(cfg->rank_pattern, d->module, cfg->r);
        double alpha = pattern_value(cfg->alpha_pattern, d->module, cfg->alpha);
        /* A: [r, in] (embeddings: [r, num_embeddings]); B: [out, r] (embeddings: [dim, r]). */
        if (d->a->shape[0] != (uint64_t)r || d->b->shape[1] != (uint64_t)r) {
            rc = mm_err_set(err, -EINVAL,
                            "%s: module '%s' has rank %llu (lora_A [%llu, %llu], lora_B [%llu, %llu]) but the "
                            "adapter_config.json gives it r = %d (check r and rank_pattern)",
                            file, d->module, (unsigned long long)d->a->shape[0], (unsigned long long)d->a->shape[0],
                            (unsigned long long)d->a->shape[1], (unsigned long long)d->b->shape[0],
                            (unsigned long long)d->b->shape[1], r);
            break;
        }
        d->rank = r;
        /* PEFT: lora_alpha / r, or lora_alpha / sqrt(r) with rslora, a Python float. */
        d->scaling = (float)(cfg->rslora ? alpha / sqrt((double)r) : alpha / r);
        d->rows = d->transposed ? d->a->shape[1] : d->b->shape[0];
        d->cols = d->transposed ? d->b->shape[0] : d->a->shape[1];
    }
    if (rc == 0)
        qsort(l->deltas, l->n, sizeof *l->deltas, cmp_delta);
    return rc;
}

int mm_lora_open(const char *folder, mm_lora **out, mm_err *err)
{
    mm_lora *l = mm_xcalloc(1, sizeof *l);
    l->folder = mm_xstrdup(folder);
    pthread_mutex_init(&l->lock, NULL);
    char *cp = mm_path_join(folder, "adapter_config.json"), *wp = mm_path_join(folder, "adapter_model.safetensors");
    char *text = NULL;
    size_t len;
    cJSON *c = NULL;
    lora_config cfg = {0};
    int rc = 0;
    if (access(cp, F_OK) != 0)
        rc = mm_err_set(err, -ENOENT, "%s: no adapter_config.json in this folder (a LoRA reference base+adapter needs "
                        "a PEFT adapter folder)", folder);
    if (rc == 0 && access(wp, F_OK) != 0) {
        char *bin = mm_path_join(folder, "adapter_model.bin");
        rc = access(bin, F_OK) == 0
                 ? mm_err_set(err, -ENOTSUP, "%s: the adapter has only pickle weights (adapter_model.bin); mergemount "
                              "reads safetensors only (convert it: load it with PEFT and call "
                              "save_pretrained(folder, safe_serialization=True))", folder)
                 : mm_err_set(err, -ENOENT, "%s: no adapter_model.safetensors in this folder", folder);
        free(bin);
    }
    if (rc == 0)
        rc = mm_file_read_all(cp, MAX_CONFIG, &text, &len, err);
    if (rc == 0 && (rc = mm_json_parse(text, len, &c, err)) < 0)
        mm_err_prefix(err, "%s", cp);
    if (rc == 0)
        rc = parse_config(c, cp, &cfg, err);
    if (rc == 0)
        rc = mm_shard_open(&l->file, wp, err);
    if (rc == 0)
        rc = collect_factors(l, &cfg, wp, err);
    free(text);
    cJSON_Delete(c);
    free(cp);
    free(wp);
    if (rc < 0) {
        mm_lora_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

void mm_lora_free(mm_lora *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->deltas[i].module);
        free(l->deltas[i].l);
        free(l->deltas[i].r);
    }
    free(l->deltas);
    mm_shard_close(&l->file);
    pthread_mutex_destroy(&l->lock);
    free(l->folder);
    free(l);
}

int mm_lora_attach(mm_lora *l, mm_model *m, mm_err *err)
{
    for (size_t i = 0; i < l->n; i++) {
        mm_lora_delta *d = &l->deltas[i];
        char *name = mm_xasprintf("%s.weight", d->module), a[96], b[96], w[96];
        mm_model_tensor *t = (mm_model_tensor *)mm_model_find(m, name);
        int rc = 0;
        if (!t) {
            rc = mm_err_set(err, -EINVAL, "%s: the adapter changes '%s', which the base model %s does not have (is "
                            "it the adapter of another model?)",
                            l->file.path, name, m->path);
        } else if (t->st->ndim != 2 || t->st->shape[0] != d->rows || t->st->shape[1] != d->cols) {
            mm_st_shape_text(d->a, a, sizeof a);
            mm_st_shape_text(d->b, b, sizeof b);
            mm_st_shape_text(t->st, w, sizeof w);
            rc = mm_err_set(err, -EINVAL,
                            "%s: the factors of '%s' (A %s, B %s) make a [%llu, %llu] change%s, but the base model's "
                            "'%s' is %s (is it the adapter of another model? is fan_in_fan_out right?)",
                            l->file.path, d->module, a, b, (unsigned long long)d->rows, (unsigned long long)d->cols,
                            d->transposed ? " (transposed)" : "", name, w);
        } else if (!mm_dtype_is_computable(t->st->dtype)) {
            rc = mm_err_set(err, -EINVAL, "%s: '%s' of the base model is %s; an adapter can change only F32, F16 and "
                            "BF16 tensors",
                            l->file.path, name, mm_dtype_name(t->st->dtype));
        }
        free(name);
        if (rc < 0)
            return rc;
        t->lora = d;
    }
    return 0;
}

/* ---- applying ---- */

/* Reads factor t of the adapter file as float32. */
static int read_factor(mm_lora *l, const mm_st_tensor *t, float **out)
{
    uint64_t numel = t->shape[0] * t->shape[1];
    size_t es = mm_dtype_size(t->dtype);
    unsigned char *raw = malloc(numel * es + 1);
    float *v = malloc(numel * sizeof *v + 1);
    int rc = raw && v ? mm_srcfile_pread(l->file.src, raw, numel * es, l->file.hdr.data_start + t->begin) : -ENOMEM;
    if (rc == 0)
        mm_load_f32(t->dtype, raw, v, numel);
    free(raw);
    if (rc < 0) {
        free(v);
        return rc;
    }
    *out = v;
    return 0;
}

/* L [rows][rank] and R [rank][cols] from A and B (see mm_lora_delta), into *lo and *ro. */
static int load_factors(const mm_lora_delta *d, float **lo, float **ro)
{
    float *a, *b;
    int rc = read_factor(d->owner, d->a, &a);
    if (rc < 0)
        return rc;
    if ((rc = read_factor(d->owner, d->b, &b)) < 0) {
        free(a);
        return rc;
    }
    const uint64_t r = (uint64_t)d->rank;
    if (!d->transposed) {
        *lo = b; /* B [rows][r] */
        *ro = a; /* A [r][cols] */
        return 0;
    }
    /* transposed: L[i][k] = A[k][i] (A is [r][rows]); R[k][j] = B[j][k] (B is [cols][r]) */
    float *l = malloc(d->rows * r * sizeof *l + 1), *rr = malloc(r * d->cols * sizeof *rr + 1);
    if (!l || !rr) {
        free(l);
        free(rr);
        free(a);
        free(b);
        return -ENOMEM;
    }
    for (uint64_t k = 0; k < r; k++) {
        for (uint64_t i = 0; i < d->rows; i++)
            l[i * r + k] = a[k * d->rows + i];
        for (uint64_t j = 0; j < d->cols; j++)
            rr[k * d->cols + j] = b[j * r + k];
    }
    free(a);
    free(b);
    *lo = l;
    *ro = rr;
    return 0;
}

int mm_lora_apply(mm_lora_delta *d, uint64_t e, size_t n, uint64_t out_cols, float *vals)
{
    /* Published once: l is written before r is stored with release, and read after r is loaded with
     * acquire, so a reader that sees r sees l. */
    if (!__atomic_load_n(&d->r, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&d->owner->lock);
        int rc = 0;
        if (!d->r) {
            float *l, *r;
            if ((rc = load_factors(d, &l, &r)) == 0) {
                d->l = l;
                __atomic_store_n(&d->r, r, __ATOMIC_RELEASE);
            }
        }
        pthread_mutex_unlock(&d->owner->lock);
        if (rc < 0)
            return rc;
    }
    const uint64_t rank = (uint64_t)d->rank;
    float acc[256];
    while (n > 0) {
        uint64_t row = e / out_cols, col = e % out_cols;
        size_t run = (size_t)(out_cols - col) < n ? (size_t)(out_cols - col) : n;
        if (run > MM_COUNT(acc))
            run = MM_COUNT(acc);
        /* Σ_k in k order, each product and sum rounded to float32 (no fused multiply-add: the build
         * uses -ffp-contract=off), then times the scaling, as PEFT's (B @ A) * scaling. */
        for (size_t j = 0; j < run; j++)
            acc[j] = 0.0f;
        for (uint64_t k = 0; k < rank; k++) {
            const float lk = d->l[row * rank + k];
            const float *rk = d->r + k * d->cols + col;
            for (size_t j = 0; j < run; j++)
                acc[j] += lk * rk[j];
        }
        for (size_t j = 0; j < run; j++)
            vals[j] += acc[j] * d->scaling;
        vals += run;
        e += run;
        n -= run;
    }
    return 0;
}
