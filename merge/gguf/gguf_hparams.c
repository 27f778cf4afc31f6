#include "gguf_hparams.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/jsonpy.h"

/* ---- transformers' config classes (5.x), as far as the converter reads them ---------------------- */

/* One __init__ argument with its default: an int, a float or None. */
typedef struct hp_default {
    const char *key;
    char kind; /* 'i', 'f', 'n' */
    double v;
} hp_default;

/* How a class derives values and treats RoPE (see its __init__ and convert_rope_params_to_dict). */
enum {
    KV_FROM_HEADS = 1 << 0,     /* num_key_value_heads None -> num_attention_heads */
    HEAD_DIM_FROM_HIDDEN = 1 << 1, /* head_dim None -> hidden_size // num_attention_heads */
    QWEN2_WINDOW = 1 << 2,      /* sliding_window kept only with use_sliding_window; layer types by window */
    GEMMA2_LAYERS = 1 << 3,     /* layer types alternate, set before the RoPE conversion */
    GEMMA3_TEXT = 1 << 4,       /* per-layer-type rope_parameters, bidirectional window, layer pattern */
    PHI3_ROPE = 1 << 5,         /* Phi3Config's own RoPE conversion (su/yarn -> longrope, its own omp) */
};

typedef struct hp_class {
    const char *model_type;
    unsigned flags;
    const hp_default *defaults;
} hp_class;

#define I(k, v) {k, 'i', v}
#define F(k, v) {k, 'f', v}
#define N(k) {k, 'n', 0}

static const hp_default llama_defaults[] = {
    I("vocab_size", 32000), I("hidden_size", 4096), I("intermediate_size", 11008), I("num_hidden_layers", 32),
    I("num_attention_heads", 32), N("num_key_value_heads"), I("max_position_embeddings", 2048),
    F("rms_norm_eps", 1e-6), N("head_dim"), {0, 0, 0}};
static const hp_default mistral_defaults[] = {
    I("vocab_size", 32000), I("hidden_size", 4096), I("intermediate_size", 14336), I("num_hidden_layers", 32),
    I("num_attention_heads", 32), I("num_key_value_heads", 8), N("head_dim"), I("max_position_embeddings", 131072),
    F("rms_norm_eps", 1e-6), I("sliding_window", 4096), {0, 0, 0}};
static const hp_default qwen2_defaults[] = {
    I("vocab_size", 151936), I("hidden_size", 4096), I("intermediate_size", 22016), I("num_hidden_layers", 32),
    I("num_attention_heads", 32), I("num_key_value_heads", 32), I("max_position_embeddings", 32768),
    F("rms_norm_eps", 1e-6), I("sliding_window", 4096), I("max_window_layers", 28), {0, 0, 0}};
static const hp_default gemma_defaults[] = {
    I("vocab_size", 256000), I("hidden_size", 3072), I("intermediate_size", 24576), I("num_hidden_layers", 28),
    I("num_attention_heads", 16), I("num_key_value_heads", 16), I("head_dim", 256), I("max_position_embeddings", 8192),
    F("rms_norm_eps", 1e-6), {0, 0, 0}};
static const hp_default gemma2_defaults[] = {
    I("vocab_size", 256000), I("hidden_size", 2304), I("intermediate_size", 9216), I("num_hidden_layers", 26),
    I("num_attention_heads", 8), I("num_key_value_heads", 4), I("head_dim", 256), I("max_position_embeddings", 8192),
    F("rms_norm_eps", 1e-6), I("sliding_window", 4096), F("final_logit_softcapping", 30.0),
    F("attn_logit_softcapping", 50.0), {0, 0, 0}};
static const hp_default gemma3_text_defaults[] = {
    I("vocab_size", 262208), I("hidden_size", 2304), I("intermediate_size", 9216), I("num_hidden_layers", 26),
    I("num_attention_heads", 8), I("num_key_value_heads", 4), I("head_dim", 256), I("max_position_embeddings", 131072),
    F("rms_norm_eps", 1e-6), I("sliding_window", 4096), N("final_logit_softcapping"), N("attn_logit_softcapping"),
    {0, 0, 0}};
static const hp_default phi3_defaults[] = {
    I("vocab_size", 32064), I("hidden_size", 3072), I("intermediate_size", 8192), I("num_hidden_layers", 32),
    I("num_attention_heads", 32), N("num_key_value_heads"), I("max_position_embeddings", 4096),
    I("original_max_position_embeddings", 4096), F("rms_norm_eps", 1e-5), N("sliding_window"),
    /* not an __init__ argument: kwargs.setdefault("partial_rotary_factor", 1.0) keeps it as an attribute */
    F("partial_rotary_factor", 1.0), {0, 0, 0}};

static const hp_class classes[] = {
    {"llama", KV_FROM_HEADS | HEAD_DIM_FROM_HIDDEN, llama_defaults},
    {"mistral", KV_FROM_HEADS | HEAD_DIM_FROM_HIDDEN, mistral_defaults},
    {"qwen2", KV_FROM_HEADS | QWEN2_WINDOW, qwen2_defaults},
    {"gemma", 0, gemma_defaults},
    {"gemma2", GEMMA2_LAYERS, gemma2_defaults},
    {"gemma3_text", GEMMA3_TEXT, gemma3_text_defaults},
    {"phi3", KV_FROM_HEADS | PHI3_ROPE, phi3_defaults},
};

#define ROPE_DEFAULT_THETA 10000.0       /* RotaryEmbeddingConfigMixin.default_theta */
#define GEMMA3_GLOBAL_THETA 1000000.0    /* Gemma3TextConfig.default_theta["global"] */
#define GEMMA3_LOCAL_THETA 10000.0       /* ... ["local"] */

/* ---- small cJSON helpers ------------------------------------------------------------------------ */

const cJSON *mm_gguf_hp_get(const cJSON *obj, const char *key)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}


static int is_none(const cJSON *v)
{
    return !v || cJSON_IsNull(v);
}

static cJSON *num(double v, int is_float)
{
    cJSON *n = cJSON_CreateNumber(v);
    mm_json_set_float(n, is_float);
    return n;
}

/* obj[key] = item (replacing an existing one in place, as a dict assignment keeps its position). item is
 * consumed either way: a config that holds something else where a dict belongs (a rope_scaling that is a
 * string) must not leak what was meant for it. */
static void put(cJSON *obj, const char *key, cJSON *item)
{
    if (!cJSON_IsObject(obj))
        cJSON_Delete(item);
    else if (mm_json_has(obj, key))
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, item);
    else
        cJSON_AddItemToObject(obj, key, item);
}

/* dict.setdefault(key, item): item is consumed either way. */
static void setdefault(cJSON *obj, const char *key, cJSON *item)
{
    if (!cJSON_IsObject(obj) || mm_json_has(obj, key))
        cJSON_Delete(item);
    else
        cJSON_AddItemToObject(obj, key, item);
}

/* kwargs.pop(key): the detached item or NULL. */
static cJSON *pop(cJSON *obj, const char *key)
{
    return cJSON_DetachItemFromObjectCaseSensitive(obj, key);
}

static int str_is(const cJSON *v, const char *s)
{
    return cJSON_IsString(v) && strcmp(v->valuestring, s) == 0;
}

int mm_gguf_hp_truthy(const cJSON *v)
{
    if (is_none(v) || cJSON_IsFalse(v))
        return 0;
    if (cJSON_IsNumber(v))
        return v->valuedouble != 0;
    if (cJSON_IsString(v))
        return v->valuestring[0] != 0;
    if (cJSON_IsArray(v) || cJSON_IsObject(v))
        return v->child != NULL;
    return 1;
}

/* ---- values ------------------------------------------------------------------------------------- */

int mm_gguf_hp_int(const cJSON *v, const char *what, int64_t *out, mm_err *err)
{
    if (cJSON_IsBool(v)) {
        *out = cJSON_IsTrue(v);
        return 0;
    }
    if (is_none(v))
        return mm_err_set(err, -EINVAL,
                          "config.json: %s is %s; llama.cpp's converter needs an integer there (fix: set it in the "
                          "config.json of the model the merge takes it from)",
                          what, v ? "null" : "missing");
    if (!cJSON_IsNumber(v) || mm_json_is_float(v) || v->valuedouble != floor(v->valuedouble) ||
        fabs(v->valuedouble) > 9007199254740992.0)
        return mm_err_set(err, -EINVAL,
                          "config.json: %s must be an integer (the GGUF writer packs it as one and llama.cpp's "
                          "converter fails on anything else)",
                          what);
    *out = (int64_t)v->valuedouble;
    return 0;
}

int mm_gguf_hp_u32(const cJSON *v, const char *what, uint32_t *out, mm_err *err)
{
    int64_t i;
    int rc = mm_gguf_hp_int(v, what, &i, err);
    if (rc < 0)
        return rc;
    if (i < 0 || i > (int64_t)UINT32_MAX)
        return mm_err_set(err, -EINVAL, "config.json: %s = %lld does not fit the GGUF key's unsigned 32 bits", what,
                          (long long)i);
    *out = (uint32_t)i;
    return 0;
}

int mm_gguf_hp_num(const cJSON *v, const char *what, double *out, mm_err *err)
{
    if (cJSON_IsBool(v)) {
        *out = cJSON_IsTrue(v);
        return 0;
    }
    if (!cJSON_IsNumber(v))
        return mm_err_set(err, -EINVAL,
                          "config.json: %s is %s; llama.cpp's converter needs a number there (fix: set it in the "
                          "config.json of the model the merge takes it from)",
                          what, !v ? "missing" : cJSON_IsNull(v) ? "null" : "not a number");
    *out = v->valuedouble;
    return 0;
}

/* ---- the config class: defaults and derived values ----------------------------------------------- */

/* The integer value of obj[key], or `dflt` when it is not an integer (the cases where transformers'
 * own arithmetic would already have failed, which the converter cannot get past either). */
static int64_t int_or(const cJSON *obj, const char *key, int64_t dflt)
{
    int64_t v;
    return mm_gguf_hp_int(mm_gguf_hp_get(obj, key), key, &v, NULL) == 0 ? v : dflt;
}

static void fill_defaults(cJSON *c, const hp_class *cls)
{
    for (const hp_default *d = cls->defaults; d->key; d++)
        setdefault(c, d->key, d->kind == 'n' ? cJSON_CreateNull() : num(d->v, d->kind == 'f'));
    if ((cls->flags & KV_FROM_HEADS) && is_none(mm_gguf_hp_get(c, "num_key_value_heads")))
        put(c, "num_key_value_heads", cJSON_Duplicate(mm_gguf_hp_get(c, "num_attention_heads"), 1));
    if ((cls->flags & HEAD_DIM_FROM_HIDDEN) && is_none(mm_gguf_hp_get(c, "head_dim"))) {
        int64_t heads = int_or(c, "num_attention_heads", 0), hidden = int_or(c, "hidden_size", 0);
        if (heads > 0)
            put(c, "head_dim", num((double)(hidden / heads), 0));
    }
    if (cls->flags & QWEN2_WINDOW) {
        setdefault(c, "use_sliding_window", cJSON_CreateFalse());
        if (!mm_gguf_hp_truthy(mm_gguf_hp_get(c, "use_sliding_window")))
            put(c, "sliding_window", cJSON_CreateNull());
    }
    if (cls->flags & GEMMA3_TEXT) {
        setdefault(c, "use_bidirectional_attention", cJSON_CreateFalse());
        /* bidirectional attention: window = window // 2 + 1 ("due to fa we set exclusive bounds") */
        if (mm_gguf_hp_truthy(mm_gguf_hp_get(c, "use_bidirectional_attention")))
            put(c, "sliding_window", num((double)(int_or(c, "sliding_window", 0) / 2 + 1), 0));
    }
}

/* Whether layer type `t` is among the class's layer types as they stand when its RoPE parameters are
 * converted (only the classes that set self.layer_types before calling the base __init__ have any). */
static int has_layer_type(const cJSON *c, const hp_class *cls, const char *t)
{
    const cJSON *lt = mm_gguf_hp_get(c, "layer_types");
    if (!(cls->flags & (QWEN2_WINDOW | GEMMA2_LAYERS | GEMMA3_TEXT)))
        return 0;
    if (!is_none(lt)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, lt) if (str_is(e, t)) return 1;
        return 0;
    }
    int64_t n = int_or(c, "num_hidden_layers", 0);
    for (int64_t i = 0; i < n; i++) {
        int sliding;
        if (cls->flags & QWEN2_WINDOW)
            sliding = !is_none(mm_gguf_hp_get(c, "sliding_window")) && i >= int_or(c, "max_window_layers", 28);
        else if (cls->flags & GEMMA2_LAYERS)
            sliding = (i + 1) % 2 != 0;
        else {
            int64_t pattern = int_or(c, "sliding_window_pattern", 6);
            sliding = pattern != 0 && (i + 1) % pattern != 0;
        }
        if (strcmp(t, sliding ? "sliding_attention" : "full_attention") == 0)
            return 1;
    }
    return 0;
}

/* Whether every key of rope_parameters names a layer type (then it holds one dict per layer type). */
static int keys_are_layer_types(const cJSON *c, const hp_class *cls, const cJSON *rp)
{
    const cJSON *e;
    if (!rp->child)
        return 0;
    cJSON_ArrayForEach(e, rp) if (!has_layer_type(c, cls, e->string)) return 0;
    return 1;
}

static int rope_type_scaled(const cJSON *rp)
{
    const cJSON *t = mm_gguf_hp_get(rp, "rope_type");
    return str_is(t, "llama3") || str_is(t, "yarn") || str_is(t, "longrope");
}

/* rope_parameters.setdefault("rope_type", rope_parameters.get("type", "default")) */
static void default_rope_type(cJSON *rp)
{
    const cJSON *type = mm_gguf_hp_get(rp, "type");
    setdefault(rp, "rope_type", type ? cJSON_Duplicate(type, 1) : cJSON_CreateString("default"));
}

/* standardize_rope_params and validate_rope of RotaryEmbeddingConfigMixin. */
static void standardize_rope(cJSON *c, const hp_class *cls, cJSON *rp)
{
    const cJSON *max_pos = mm_gguf_hp_get(c, "max_position_embeddings");
    if (!keys_are_layer_types(c, cls, rp)) {
        default_rope_type(rp);
        /* rope_theta is no attribute yet: setdefault(None) (a no-op unless it was missing) */
        setdefault(rp, "rope_theta", cJSON_CreateNull());
        if (rope_type_scaled(rp)) {
            if (cls->flags & PHI3_ROPE) /* the class attribute wins over the dict (Phi-3's exception) */
                put(rp, "original_max_position_embeddings",
                    cJSON_Duplicate(mm_gguf_hp_get(c, "original_max_position_embeddings"), 1));
            else
                setdefault(rp, "original_max_position_embeddings",
                           max_pos ? cJSON_Duplicate(max_pos, 1) : cJSON_CreateNull());
        }
        /* validate_rope writes rope_type back (type, or default) */
        default_rope_type(rp);
        return;
    }
    cJSON *sub;
    cJSON_ArrayForEach(sub, rp)
    {
        if (!cJSON_IsObject(sub))
            continue;
        default_rope_type(sub);
        if (rope_type_scaled(sub))
            setdefault(sub, "original_max_position_embeddings",
                       max_pos ? cJSON_Duplicate(max_pos, 1) : cJSON_CreateNull());
    }
}

/* convert_rope_params_to_dict of the mixin (and Phi3Config's variant): rope_scaling or rope_parameters,
 * rope_theta moved in, then standardized. The result replaces both keys as rope_parameters. */
static void convert_rope(cJSON *c, const hp_class *cls)
{
    cJSON *scaling = pop(c, "rope_scaling"), *params = pop(c, "rope_parameters");
    cJSON *rp;
    if (mm_gguf_hp_truthy(scaling)) {
        rp = scaling;
        cJSON_Delete(params);
    } else {
        rp = !is_none(params) ? params : cJSON_CreateObject();
        if (rp != params)
            cJSON_Delete(params);
        cJSON_Delete(scaling);
    }
    cJSON *theta = pop(c, "rope_theta");
    setdefault(rp, "rope_theta", theta ? theta : num(ROPE_DEFAULT_THETA, 1));
    const cJSON *prf = mm_gguf_hp_get(c, "partial_rotary_factor"); /* kwargs.get: it stays an attribute */
    if (!is_none(prf))
        setdefault(rp, "partial_rotary_factor", cJSON_Duplicate(prf, 1));
    standardize_rope(c, cls, rp);
    if (cls->flags & PHI3_ROPE) {
        const cJSON *t = mm_gguf_hp_get(rp, "rope_type");
        if (str_is(t, "su") || str_is(t, "yarn"))
            put(rp, "rope_type", cJSON_CreateString("longrope"));
    }
    cJSON_AddItemToObject(c, "rope_parameters", rp);
}

/* Gemma3TextConfig.convert_rope_params_to_dict: one dict per layer type, rope_scaling into the global
 * one, rope_theta and rope_local_base_freq as their thetas. */
static void convert_rope_gemma3(cJSON *c, const hp_class *cls)
{
    cJSON *scaling = pop(c, "rope_scaling"), *rp = pop(c, "rope_parameters");
    if (is_none(rp)) {
        cJSON_Delete(rp);
        rp = cJSON_CreateObject();
        cJSON *s = cJSON_AddObjectToObject(rp, "sliding_attention"), *f = cJSON_AddObjectToObject(rp, "full_attention");
        cJSON_AddStringToObject(s, "rope_type", "default");
        cJSON_AddStringToObject(f, "rope_type", "default");
    }
    if (!cJSON_IsObject(rp)) {
        cJSON_Delete(rp);
        rp = cJSON_CreateObject();
    }
    const char *which[2] = {"full_attention", "sliding_attention"};
    for (int i = 0; i < 2; i++)
        if (is_none(mm_gguf_hp_get(rp, which[i]))) {
            put(rp, which[i], cJSON_CreateObject());
            cJSON_AddStringToObject(cJSON_GetObjectItemCaseSensitive(rp, which[i]), "rope_type", "default");
        }
    cJSON *full = cJSON_GetObjectItemCaseSensitive(rp, "full_attention");
    cJSON *sliding = cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention");
    if (cJSON_IsObject(scaling) && cJSON_IsObject(full)) { /* dict.update */
        const cJSON *e;
        cJSON_ArrayForEach(e, scaling) put(full, e->string, cJSON_Duplicate(e, 1));
    }
    cJSON_Delete(scaling);
    cJSON *theta = pop(c, "rope_theta"), *local = pop(c, "rope_local_base_freq");
    if (cJSON_IsObject(full))
        setdefault(full, "rope_theta", theta ? theta : num(GEMMA3_GLOBAL_THETA, 1));
    else
        cJSON_Delete(theta);
    if (cJSON_IsObject(sliding))
        setdefault(sliding, "rope_theta", local ? local : num(GEMMA3_LOCAL_THETA, 1));
    else
        cJSON_Delete(local);
    standardize_rope(c, cls, rp);
    cJSON_AddItemToObject(c, "rope_parameters", rp);
}

/* A text config dict through its class: what to_dict() gives for it. */
static void apply_class(cJSON *c, const hp_class *cls)
{
    fill_defaults(c, cls);
    if (cls->flags & GEMMA3_TEXT)
        convert_rope_gemma3(c, cls);
    else
        convert_rope(c, cls);
}

static const hp_class *find_class(const char *model_type)
{
    for (size_t i = 0; i < MM_COUNT(classes); i++)
        if (strcmp(classes[i].model_type, model_type) == 0)
            return &classes[i];
    return NULL;
}

/* ---- loading ----------------------------------------------------------------------------------- */

static const char *first_arch(const cJSON *obj)
{
    const cJSON *a = mm_gguf_hp_get(obj, "architectures");
    const cJSON *first = cJSON_IsArray(a) ? cJSON_GetArrayItem(a, 0) : NULL;
    return cJSON_IsString(first) ? first->valuestring : NULL;
}

/* TextModel.__init__'s mirroring of RoPE keys still at the top level into rope_parameters (only when it
 * holds no per-layer-type dicts). */
static void mirror_rope(mm_gguf_hp *hp, cJSON *rp)
{
    if (mm_gguf_hp_get(rp, "full_attention") || mm_gguf_hp_get(rp, "sliding_attention"))
        return;
    static const char *const theta_keys[] = {"global_rope_theta", "rope_global_theta", "rope_theta_global",
                                             "rope_theta", "rotary_emb_base", NULL};
    static const char *const local_keys[] = {"local_rope_theta", "rope_local_theta", "rope_theta_local",
                                             "swa_rope_theta", "rope_local_base_freq", NULL};
    static const char *const prf_keys[] = {"partial_rotary_factor", "rope_pct", "rope_percent", NULL};
    static const char *const omp_keys[] = {"original_max_position_embeddings", NULL};
    const cJSON *theta = mm_gguf_hp_find(hp, theta_keys), *local = mm_gguf_hp_find(hp, local_keys);
    const cJSON *prf = mm_gguf_hp_find(hp, prf_keys), *omp = mm_gguf_hp_find(hp, omp_keys);
    if (!is_none(local)) {
        cJSON *s = cJSON_CreateObject();
        cJSON_AddItemToObject(s, "rope_theta", cJSON_Duplicate(local, 1));
        put(rp, "sliding_attention", s);
    }
    if (!mm_json_has(rp, "rope_theta") && !is_none(theta))
        put(rp, "rope_theta", cJSON_Duplicate(theta, 1));
    const cJSON *type = mm_gguf_hp_get(rp, "type");
    if (!mm_json_has(rp, "rope_type") && !is_none(type))
        put(rp, "rope_type", cJSON_Duplicate(type, 1));
    if (!mm_json_has(rp, "partial_rotary_factor") && !is_none(prf))
        put(rp, "partial_rotary_factor", cJSON_Duplicate(prf, 1));
    if (!mm_json_has(rp, "original_max_position_embeddings") && !is_none(omp))
        put(rp, "original_max_position_embeddings", cJSON_Duplicate(omp, 1));
}

int mm_gguf_hp_load(const mm_plan *p, mm_gguf_hp *hp, mm_err *err)
{
    memset(hp, 0, sizeof *hp);
    char *text = NULL;
    size_t len = 0;
    int rc = mm_plan_file_bytes(p, "config.json", &text, &len, err);
    if (rc == -ENOENT)
        return mm_err_set(err, rc, "the GGUF view needs the output's config.json, and this merge serves none");
    if (rc < 0)
        return rc;
    rc = mm_json_parse(text, len, &hp->root, err);
    free(text);
    if (rc < 0) {
        mm_err_prefix(err, "config.json");
        return rc;
    }
    if (!cJSON_IsObject(hp->root))
        return mm_err_set(err, -EINVAL, "config.json: not a JSON object");
    /* get_model_architecture: text_config's architectures when it names any, else the top level's */
    const char *arch = first_arch(mm_gguf_hp_get(hp->root, "text_config"));
    if (!arch)
        arch = first_arch(hp->root);
    hp->hf_arch = mm_xstrdup(arch ? arch : "");
    hp->empty = cJSON_CreateObject();
    hp->rope = hp->empty;
    return 0;
}

int mm_gguf_hp_prepare(mm_gguf_hp *hp, mm_err *err)
{
    cJSON *root = hp->root;
    const cJSON *mt = mm_gguf_hp_get(root, "model_type");
    if (!cJSON_IsString(mt))
        return mm_err_set(err, -ENOTSUP,
                          "config.json has no model_type, so the values transformers' AutoConfig would give "
                          "llama.cpp's converter are unknown and the GGUF view cannot match it (fix: add the "
                          "model_type of the architecture to the donor's config.json)");
    /* Gemma3Config: the text part is a Gemma3TextConfig (a missing one is all defaults). */
    int multimodal = strcmp(mt->valuestring, "gemma3") == 0;
    const hp_class *cls = find_class(multimodal ? "gemma3_text" : mt->valuestring);
    if (!cls)
        return mm_err_set(err, -ENOTSUP,
                          "config.json: model_type '%s' is not one the GGUF view knows transformers' defaults of "
                          "(llama, mistral, qwen2, gemma, gemma2, gemma3, gemma3_text, phi3)",
                          mt->valuestring);
    cJSON *text_cfg = pop(root, "text_config");
    if (multimodal) {
        if (!cJSON_IsObject(text_cfg)) {
            cJSON_Delete(text_cfg);
            text_cfg = cJSON_CreateObject();
        }
        apply_class(text_cfg, cls);
    } else {
        apply_class(root, cls); /* a text_config of these classes is kept as it is */
    }
    if (cJSON_IsObject(text_cfg)) { /* {**hparams, **hparams["text_config"]} */
        const cJSON *e;
        cJSON_ArrayForEach(e, text_cfg) put(root, e->string, cJSON_Duplicate(e, 1));
    }
    if (text_cfg)
        cJSON_AddItemToObject(root, "text_config", text_cfg);
    /* self.hparams.get("rope_parameters", self.hparams.get("rope_scaling")) or {} */
    cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (!rp)
        rp = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (!cJSON_IsObject(rp) || !rp->child)
        rp = hp->empty;
    mirror_rope(hp, rp);
    hp->rope = rp;
    return 0;
}

void mm_gguf_hp_free(mm_gguf_hp *hp)
{
    cJSON_Delete(hp->root);
    cJSON_Delete(hp->empty);
    free(hp->hf_arch);
    memset(hp, 0, sizeof *hp);
}

const cJSON *mm_gguf_hp_find(const mm_gguf_hp *hp, const char *const *keys)
{
    for (; *keys; keys++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(hp->root, *keys);
        if (v)
            return v;
    }
    return NULL;
}

const cJSON *mm_gguf_hp_rope_main(const mm_gguf_hp *hp)
{
    const cJSON *full = mm_gguf_hp_get(hp->rope, "full_attention");
    return full ? full : hp->rope;
}
