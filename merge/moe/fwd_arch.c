#include "fwd_arch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* What sets a family apart; everything else is read from the config. */
typedef struct family {
    const char *type;
    int norm_plus_one, embed_scale, qkv_bias, qk_norm, fused, sandwich;
    mm_fwd_act act;         /* the activation when the config names none */
    const char *act_key;    /* the config key transformers reads the activation from */
    int window_kind;        /* how layers get a sliding window, see layer_windows() */
    double window;          /* sliding_window when the config has no such key (its config class's default) */
    double theta;           /* rope_theta when the config has none */
    int cfg_attn_bias;      /* attention_bias decides the q/k/v/o biases (else only qkv_bias does) */
    int cfg_mlp_bias;       /* mlp_bias decides the MLP's biases (else there are none) */
} family;

/* WIN_NONE: the family's attention has no window whatever the config says; WIN_ALL: every layer has
 * sliding_window; WIN_QWEN: only with use_sliding_window, by layer_types or from max_window_layers on;
 * WIN_TYPES: by layer_types, or by Gemma's sliding_window_pattern. */
enum { WIN_NONE, WIN_ALL, WIN_QWEN, WIN_TYPES };

static const family families[] = {
    { "llama", 0, 0, 0, 0, 0, 0, MM_ACT_SILU, "hidden_act", WIN_NONE, 0, 10000.0, 1, 1 },
    { "mistral", 0, 0, 0, 0, 0, 0, MM_ACT_SILU, "hidden_act", WIN_ALL, 4096, 10000.0, 0, 0 },
    { "qwen2", 0, 0, 1, 0, 0, 0, MM_ACT_SILU, "hidden_act", WIN_QWEN, 4096, 10000.0, 0, 0 },
    { "qwen3", 0, 0, 0, 1, 0, 0, MM_ACT_SILU, "hidden_act", WIN_QWEN, 4096, 10000.0, 1, 0 },
    { "gemma", 1, 1, 0, 0, 0, 0, MM_ACT_GELU_TANH, "hidden_act", WIN_NONE, 0, 10000.0, 1, 0 },
    { "gemma2", 1, 1, 0, 0, 0, 1, MM_ACT_GELU_TANH, "hidden_activation", WIN_TYPES, 4096, 10000.0, 1, 0 },
    { "gemma3_text", 1, 1, 0, 1, 0, 1, MM_ACT_GELU_TANH, "hidden_activation", WIN_TYPES, 4096, 1000000.0, 1, 0 },
    { "phi3", 0, 0, 0, 0, 1, 0, MM_ACT_SILU, "hidden_act", WIN_ALL, 0, 10000.0, 0, 0 },
};
static const char supported[] = "llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text (gemma3), phi3";

static const cJSON *item(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNull(v) ? NULL : v;
}

static double num(const cJSON *o, const char *key, double dflt)
{
    const cJSON *v = item(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static int need_size(const cJSON *o, const char *key, size_t *out, mm_err *err)
{
    const cJSON *v = item(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble != floor(v->valuedouble))
        return mm_err_set(err, -EINVAL, "config.json: %s must be a positive integer", key);
    *out = (size_t)v->valuedouble;
    return 0;
}

static int activation(const cJSON *cfg, const family *f, mm_fwd_act *out, mm_err *err)
{
    const cJSON *v = item(cfg, f->act_key);
    *out = f->act;
    if (!v)
        return 0;
    const char *s = cJSON_GetStringValue(v);
    /* transformers' ACT2FN: "gelu" is the exact (erf) GELU; the tanh approximations share one formula */
    if (s && strcmp(s, "silu") == 0)
        *out = MM_ACT_SILU;
    else if (s && strcmp(s, "gelu") == 0)
        *out = MM_ACT_GELU_ERF;
    else if (s && (strcmp(s, "gelu_pytorch_tanh") == 0 || strcmp(s, "gelu_new") == 0))
        *out = MM_ACT_GELU_TANH;
    else
        return mm_err_set(err, -EINVAL, "config.json: %s %s is not supported (silu, gelu, gelu_pytorch_tanh)",
                          f->act_key, s ? s : "(not a string)");
    return 0;
}

/* One rope_parameters dict (or the old rope_scaling, or none), with the config's own keys as fallbacks;
 * theta: the base when the dict has no rope_theta. */
static int rope_of(const cJSON *cfg, const cJSON *p, double theta, size_t head_dim, mm_fwd_rope *r, mm_err *err)
{
    memset(r, 0, sizeof *r);
    const char *type = p ? cJSON_GetStringValue(item(p, "rope_type")) : NULL;
    if (p && !type)
        type = cJSON_GetStringValue(item(p, "type"));
    if (!type || strcmp(type, "default") == 0)
        r->type = MM_ROPE_DEFAULT;
    else if (strcmp(type, "linear") == 0)
        r->type = MM_ROPE_LINEAR;
    else if (strcmp(type, "dynamic") == 0)
        r->type = MM_ROPE_DYNAMIC;
    else if (strcmp(type, "llama3") == 0)
        r->type = MM_ROPE_LLAMA3;
    else if (strcmp(type, "yarn") == 0)
        r->type = MM_ROPE_YARN;
    else if (strcmp(type, "longrope") == 0)
        r->type = MM_ROPE_LONGROPE;
    else
        return mm_err_set(err, -EINVAL, "config.json: rope type %s is not supported (default, linear, dynamic, llama3, "
                          "yarn, longrope)", type);
    r->theta = num(p, "rope_theta", theta);
    r->factor = num(p, "factor", 1.0);
    r->low_freq_factor = num(p, "low_freq_factor", 1.0);
    r->high_freq_factor = num(p, "high_freq_factor", 4.0);
    r->max_pos = num(cfg, "max_position_embeddings", 2048);
    /* Phi-3 keeps original_max_position_embeddings beside the rope dict, and it wins (transformers) */
    r->original_max_pos = num(cfg, "original_max_position_embeddings", num(p, "original_max_position_embeddings", r->max_pos));
    double prf = num(p, "partial_rotary_factor", num(cfg, "partial_rotary_factor", 1.0));
    r->rot_dim = (size_t)((double)head_dim * prf) & ~(size_t)1;
    if (r->type == MM_ROPE_YARN || r->type == MM_ROPE_LONGROPE) {
        /* without a factor, the ratio of the context lengths */
        r->factor = num(p, "factor", r->max_pos / r->original_max_pos);
        r->attention_factor = num(p, "attention_factor", -1.0);
        r->mscale = num(p, "mscale", 0);
        r->mscale_all_dim = num(p, "mscale_all_dim", 0);
        r->beta_fast = num(p, "beta_fast", 0) ? num(p, "beta_fast", 0) : 32;
        r->beta_slow = num(p, "beta_slow", 0) ? num(p, "beta_slow", 0) : 1;
        r->truncate = !cJSON_IsFalse(item(p, "truncate"));
    }
    if (r->type == MM_ROPE_LONGROPE) {
        const char *keys[2] = { "short_factor", "long_factor" };
        double **dst[2] = { &r->short_factor, &r->long_factor };
        for (int k = 0; k < 2; k++) {
            const cJSON *arr = item(p, keys[k]);
            if (!cJSON_IsArray(arr) || (size_t)cJSON_GetArraySize(arr) != r->rot_dim / 2)
                return mm_err_set(err, -EINVAL, "config.json: longrope %s must be a list of %zu numbers", keys[k],
                                  r->rot_dim / 2);
            *dst[k] = mm_xcalloc(r->rot_dim / 2 + 1, sizeof **dst[k]);
            for (size_t i = 0; i < r->rot_dim / 2; i++) {
                const cJSON *v = cJSON_GetArrayItem(arr, (int)i);
                if (!cJSON_IsNumber(v) || !(v->valuedouble > 0))
                    return mm_err_set(err, -EINVAL, "config.json: longrope %s must be a list of positive numbers",
                                      keys[k]);
                (*dst[k])[i] = v->valuedouble;
            }
        }
    }
    if (r->type != MM_ROPE_DEFAULT && !(r->factor > 0))
        return mm_err_set(err, -EINVAL, "config.json: rope factor must be positive");
    if (r->type == MM_ROPE_LLAMA3 && !(r->high_freq_factor > r->low_freq_factor))
        return mm_err_set(err, -EINVAL, "config.json: llama3 rope needs high_freq_factor > low_freq_factor");
    return 0;
}

/* The rope dicts of full and sliding layers: Gemma 3 has one per layer type (new format: rope_parameters
 * keyed by layer type; old: rope_scaling for full layers, rope_local_base_freq for sliding ones). */
static int ropes(const cJSON *cfg, const family *f, size_t head_dim, mm_fwd_rope r[2], mm_err *err)
{
    const cJSON *p = item(cfg, "rope_parameters");
    if (!cJSON_IsObject(p))
        p = item(cfg, "rope_scaling");
    if (!cJSON_IsObject(p))
        p = NULL;
    const cJSON *full = p ? item(p, "full_attention") : NULL, *slide = p ? item(p, "sliding_attention") : NULL;
    const double theta = num(cfg, "rope_theta", f->theta), local = num(cfg, "rope_local_base_freq", 10000.0);
    int rc;
    if (full || slide) {
        if ((rc = rope_of(cfg, full, theta, head_dim, &r[0], err)) < 0)
            return rc;
        return rope_of(cfg, slide, local, head_dim, &r[1], err);
    }
    if ((rc = rope_of(cfg, p, theta, head_dim, &r[0], err)) < 0)
        return rc;
    if (strcmp(f->type, "gemma3_text") == 0)
        return rope_of(cfg, NULL, local, head_dim, &r[1], err); /* the scaling is the full layers' only */
    r[1] = r[0];
    return 0;
}

/* Which layers have a sliding window, the way each family's config class decides it. */
static int layer_windows(const cJSON *cfg, const family *f, mm_fwd_arch *a, mm_err *err)
{
    a->window = mm_xcalloc(a->layers, sizeof *a->window);
    /* an absent key takes the config class's default; a null one means no window */
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(cfg, "sliding_window");
    double w = key ? num(cfg, "sliding_window", 0) : f->window;
    if (!(w >= 1) || f->window_kind == WIN_NONE)
        return 0;
    const cJSON *types = item(cfg, "layer_types");
    if (f->window_kind == WIN_QWEN && !cJSON_IsTrue(item(cfg, "use_sliding_window")))
        return 0;
    for (size_t i = 0; i < a->layers; i++) {
        int sliding;
        if (cJSON_IsArray(types)) {
            const char *t = cJSON_GetStringValue(cJSON_GetArrayItem(types, (int)i));
            if (!t)
                return mm_err_set(err, -EINVAL, "config.json: layer_types has no entry for layer %zu", i);
            sliding = strcmp(t, "sliding_attention") == 0;
        } else if (f->window_kind == WIN_QWEN) {
            sliding = (double)i >= num(cfg, "max_window_layers", 0);
        } else if (f->window_kind == WIN_TYPES) {
            sliding = (i + 1) % (size_t)num(cfg, "sliding_window_pattern", strcmp(f->type, "gemma2") == 0 ? 2 : 6) != 0;
        } else {
            sliding = 1;
        }
        a->window[i] = sliding ? (size_t)w : 0;
    }
    return 0;
}

/* The prefix of the text model's tensor names, found by its embedding. */
static int find_prefix(const mm_model *m, mm_fwd_arch *a, mm_err *err)
{
    static const char *const prefixes[] = { "model.", "model.language_model.", "language_model.model.", "" };
    for (size_t i = 0; i < MM_COUNT(prefixes); i++) {
        char name[96];
        snprintf(name, sizeof name, "%sembed_tokens.weight", prefixes[i]);
        if (mm_model_find(m, name)) {
            snprintf(a->prefix, sizeof a->prefix, "%s", prefixes[i]);
            return 0;
        }
    }
    return mm_err_set(err, -EINVAL, "%s: no embed_tokens.weight (model., model.language_model. or "
                      "language_model.model.)", m->path);
}

int mm_fwd_arch_open(const mm_model *m, mm_fwd_arch *a, mm_err *err)
{
    memset(a, 0, sizeof *a);
    if (!m->config)
        return mm_err_set(err, -EINVAL, "%s: no config.json, so the architecture is unknown", m->path);
    const cJSON *cfg = m->config;
    const char *type = cJSON_GetStringValue(item(cfg, "model_type"));
    const cJSON *text = item(cfg, "text_config");
    if (cJSON_IsObject(text)) {
        /* a multimodal wrapper (gemma3): the language model's own config */
        cfg = text;
        const char *t = cJSON_GetStringValue(item(text, "model_type"));
        if (t)
            type = t;
    }
    const family *f = NULL;
    for (size_t i = 0; type && i < MM_COUNT(families); i++)
        if (strcmp(families[i].type, type) == 0)
            f = &families[i];
    if (!f)
        return mm_err_set(err, -EINVAL, "%s: model_type %s is not supported by the forward pass (supported: %s)",
                          m->path, type ? type : "(none)", supported);
    snprintf(a->family, sizeof a->family, "%s", f->type);
    int rc;
    if ((rc = need_size(cfg, "hidden_size", &a->hidden, err)) < 0 ||
        (rc = need_size(cfg, "intermediate_size", &a->inter, err)) < 0 ||
        (rc = need_size(cfg, "num_attention_heads", &a->heads, err)) < 0 ||
        (rc = need_size(cfg, "num_hidden_layers", &a->layers, err)) < 0)
        goto fail;
    a->kv_heads = item(cfg, "num_key_value_heads") ? 0 : a->heads;
    if (!a->kv_heads && (rc = need_size(cfg, "num_key_value_heads", &a->kv_heads, err)) < 0)
        goto fail;
    a->head_dim = item(cfg, "head_dim") ? 0 : a->hidden / a->heads;
    if (!a->head_dim && (rc = need_size(cfg, "head_dim", &a->head_dim, err)) < 0)
        goto fail;
    if (a->heads % a->kv_heads != 0) {
        rc = mm_err_set(err, -EINVAL, "config.json: num_attention_heads %zu is not a multiple of num_key_value_heads %zu",
                        a->heads, a->kv_heads);
        goto fail;
    }
    a->eps = (float)num(cfg, "rms_norm_eps", 1e-6);
    a->norm_plus_one = f->norm_plus_one;
    a->embed_scale = f->embed_scale;
    a->o_bias = f->cfg_attn_bias && cJSON_IsTrue(item(cfg, "attention_bias"));
    a->qkv_bias = f->qkv_bias || a->o_bias;
    a->mlp_bias = f->cfg_mlp_bias && cJSON_IsTrue(item(cfg, "mlp_bias"));
    a->qk_norm = f->qk_norm;
    a->fused_qkv = a->fused_gate_up = f->fused;
    a->sandwich = f->sandwich;
    double qpas = num(cfg, "query_pre_attn_scalar", 0);
    a->attn_scale = (float)(f->sandwich && qpas > 0 ? 1.0 / sqrt(qpas) : 1.0 / sqrt((double)a->head_dim));
    a->softcap = f->sandwich ? (float)num(cfg, "attn_logit_softcapping", 0) : 0.0f;
    if ((rc = activation(cfg, f, &a->act, err)) < 0 || (rc = ropes(cfg, f, a->head_dim, a->rope, err)) < 0 ||
        (rc = layer_windows(cfg, f, a, err)) < 0 || (rc = find_prefix(m, a, err)) < 0)
        goto fail;
    return 0;
fail:
    mm_fwd_arch_free(a);
    return rc;
}

void mm_fwd_arch_free(mm_fwd_arch *a)
{
    free(a->window);
    a->window = NULL;
    /* rope[1] may be a copy of rope[0] that shares its arrays */
    if (a->rope[1].short_factor != a->rope[0].short_factor)
        free(a->rope[1].short_factor), free(a->rope[1].long_factor);
    free(a->rope[0].short_factor), free(a->rope[0].long_factor);
    memset(a->rope, 0, sizeof a->rope);
}

/* yarn's attention scaling of a context extended `scale` times */
static double yarn_mscale(double scale, double mscale)
{
    return scale <= 1 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

/* yarn: the (fractional) dimension index whose wavelength makes `rotations` turns over the trained length */
static double yarn_correction_dim(double rotations, double dim, double base, double max_pos)
{
    return dim * log(max_pos / (rotations * 2.0 * M_PI)) / (2.0 * log(base));
}

void mm_fwd_rope_freqs(const mm_fwd_rope *r, size_t seq, mm_fwd_rot *rot)
{
    const size_t dim = r->rot_dim;
    double base = r->theta;
    float *inv_freq = rot->inv_freq;
    rot->dim = dim;
    rot->scale = 1.0f;
    if (r->type == MM_ROPE_YARN || r->type == MM_ROPE_LONGROPE) {
        double s = r->attention_factor;
        if (s < 0 && r->type == MM_ROPE_YARN)
            s = r->mscale && r->mscale_all_dim ? yarn_mscale(r->factor, r->mscale) / yarn_mscale(r->factor, r->mscale_all_dim)
                                               : yarn_mscale(r->factor, 1.0);
        else if (s < 0)
            s = r->factor <= 1 ? 1.0 : sqrt(1.0 + log(r->factor) / log(r->original_max_pos));
        rot->scale = (float)s;
    }
    double low = 0, high = 0;
    if (r->type == MM_ROPE_YARN) {
        low = yarn_correction_dim(r->beta_fast, (double)dim, base, r->original_max_pos);
        high = yarn_correction_dim(r->beta_slow, (double)dim, base, r->original_max_pos);
        if (r->truncate)
            low = floor(low), high = ceil(high);
        low = low < 0 ? 0 : low;
        high = high > (double)dim - 1 ? (double)dim - 1 : high;
        if (low == high)
            high += 0.001; /* transformers' guard against a zero-width ramp */
    }
    if (r->type == MM_ROPE_DYNAMIC && (double)seq > r->max_pos) {
        /* NTK-aware scaling, applied by transformers only once a sequence is longer than the trained length */
        base *= pow(r->factor * (double)seq / r->max_pos - (r->factor - 1.0), (double)dim / ((double)dim - 2.0));
    }
    for (size_t i = 0; i < dim / 2; i++) {
        double f = 1.0 / pow(base, (double)(2 * i) / (double)dim);
        if (r->type == MM_ROPE_LINEAR) {
            f /= r->factor;
        } else if (r->type == MM_ROPE_LLAMA3) {
            /* long wavelengths are slowed by `factor`, short ones kept, the band between interpolated */
            double wavelen = 2.0 * M_PI / f;
            double low_wl = r->original_max_pos / r->low_freq_factor, high_wl = r->original_max_pos / r->high_freq_factor;
            if (wavelen > low_wl) {
                f /= r->factor;
            } else if (wavelen >= high_wl) {
                double s = (r->original_max_pos / wavelen - r->low_freq_factor) / (r->high_freq_factor - r->low_freq_factor);
                f = (1.0 - s) * f / r->factor + s * f;
            }
        } else if (r->type == MM_ROPE_YARN) {
            /* interpolated (f / factor) below the ramp, extrapolated (f) above it, blended along it */
            double ramp = ((double)i - low) / (high - low);
            double extra = 1.0 - (ramp < 0 ? 0 : ramp > 1 ? 1 : ramp);
            f = f / r->factor * (1.0 - extra) + f * extra;
        } else if (r->type == MM_ROPE_LONGROPE) {
            /* per-frequency factors, the long ones once a sequence outgrows the trained length */
            f /= ((double)seq > r->original_max_pos ? r->long_factor : r->short_factor)[i];
        }
        inv_freq[i] = (float)f;
    }
}
