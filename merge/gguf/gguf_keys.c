/* The hyperparameter keys of each family as llama.cpp's converter writes them (set_gguf_parameters of
 * TextModel, LlamaModel, Qwen2Model, GemmaModel, Gemma2Model, Gemma3Model, Phi3MiniModel): the same
 * keys, in the same order, with the GGUF writer's value types (u32 counts, f32 floats, a string for the
 * RoPE scaling type). A key set twice keeps its first position (the writer's dict). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/jsonpy.h"
#include "gguf_arch_int.h"

/* ---- appending keys ----------------------------------------------------------------------------- */

static char *key_name(const mm_gguf_keyw *w, const char *suffix)
{
    return mm_xasprintf("%s.%s", w->arch, suffix);
}

/* A u32 the converter computed (Python's struct refuses a negative or too large one as it does). */
static void key_u32v(mm_gguf_keyw *w, const char *suffix, int64_t v, const char *what)
{
    if (w->rc < 0)
        return;
    if (v < 0 || v > (int64_t)UINT32_MAX) {
        w->rc = mm_err_set(w->err, -EINVAL, "config.json: %s gives %s = %lld, which does not fit the GGUF key's "
                           "unsigned 32 bits", what, suffix, (long long)v);
        return;
    }
    char *k = key_name(w, suffix);
    mm_gguf_set_u32(w->kv, k, (uint32_t)v);
    free(k);
}

void mm_gguf_key_u32(mm_gguf_keyw *w, const char *suffix, const cJSON *v, const char *what)
{
    uint32_t u;
    if (w->rc < 0 || (w->rc = mm_gguf_hp_u32(v, what, &u, w->err)) < 0)
        return;
    key_u32v(w, suffix, u, what);
}

void mm_gguf_key_count(mm_gguf_keyw *w, const char *suffix, const cJSON *v, const char *what)
{
    if (!cJSON_IsArray(v)) {
        mm_gguf_key_u32(w, suffix, v, what);
        return;
    }
    /* add_array: nothing for an empty list, else INT32 elements (the type of an int first element) */
    int n = cJSON_GetArraySize(v);
    if (w->rc < 0 || n == 0)
        return;
    int32_t *vals = mm_xcalloc((size_t)n, sizeof *vals);
    const cJSON *e;
    int i = 0;
    cJSON_ArrayForEach(e, v)
    {
        int64_t x;
        if ((w->rc = mm_gguf_hp_int(e, what, &x, w->err)) < 0)
            break;
        if (cJSON_IsBool(e) || x < INT32_MIN || x > INT32_MAX) {
            w->rc = mm_err_set(w->err, -EINVAL, "config.json: %s must be a list of 32-bit integers", what);
            break;
        }
        vals[i++] = (int32_t)x;
    }
    if (w->rc == 0) {
        char *k = key_name(w, suffix);
        mm_gguf_set_arr_i32(w->kv, k, vals, (size_t)n);
        free(k);
    }
    free(vals);
}

void mm_gguf_key_f32v(mm_gguf_keyw *w, const char *suffix, double v)
{
    if (w->rc < 0)
        return;
    char *k = key_name(w, suffix);
    mm_gguf_set_f32(w->kv, k, (float)v);
    free(k);
}

void mm_gguf_key_f32(mm_gguf_keyw *w, const char *suffix, const cJSON *v, const char *what)
{
    double d;
    if (w->rc < 0 || (w->rc = mm_gguf_hp_num(v, what, &d, w->err)) < 0)
        return;
    mm_gguf_key_f32v(w, suffix, d);
}

static void key_str(mm_gguf_keyw *w, const char *suffix, const char *s)
{
    if (w->rc < 0)
        return;
    char *k = key_name(w, suffix);
    mm_gguf_set_str(w->kv, k, s);
    free(k);
}

static void fail(mm_gguf_keyw *w, int code, const char *msg)
{
    if (w->rc == 0)
        w->rc = mm_err_set(w->err, code, "%s", msg);
}

/* ---- reading hparams ---------------------------------------------------------------------------- */

static int is_none(const cJSON *v)
{
    return !v || cJSON_IsNull(v);
}

/* hparams.get(key, default) with a number default: the item, or `tmp` holding the default. */
static const cJSON *get_or(const cJSON *obj, const char *key, cJSON *tmp, double dflt, int is_float)
{
    const cJSON *v = mm_gguf_hp_get(obj, key);
    if (v)
        return v;
    memset(tmp, 0, sizeof *tmp);
    tmp->type = cJSON_Number;
    tmp->valuedouble = dflt;
    tmp->valueint = (int)dflt;
    mm_json_set_float(tmp, is_float);
    return tmp;
}

#define KEYS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- TextModel.set_gguf_parameters -------------------------------------------------------------- */

/* The RoPE scaling keys of the global rope parameters' rope_type. */
static void rope_scaling(const mm_gguf_hp *hp, mm_gguf_keyw *w)
{
    const cJSON *rp = mm_gguf_hp_rope_main(hp);
    const cJSON *type = mm_gguf_hp_get(rp, "rope_type");
    if (is_none(type))
        return;
    if (!cJSON_IsString(type))
        {
        fail(w, -EINVAL, "config.json: the RoPE parameters' rope_type is not a string");
        return;
    }
    const char *t = type->valuestring;
    const cJSON *factor = mm_gguf_hp_get(rp, "factor");
    if (strcmp(t, "linear") == 0 && !is_none(factor)) {
        key_str(w, "rope.scaling.type", "linear");
        mm_gguf_key_f32(w, "rope.scaling.factor", factor, "rope_scaling.factor");
    } else if (strcmp(t, "yarn") == 0 && !is_none(factor)) {
        key_str(w, "rope.scaling.type", "yarn");
        mm_gguf_key_f32(w, "rope.scaling.factor", factor, "rope_scaling.factor");
        mm_gguf_key_u32(w, "rope.scaling.original_context_length",
                        mm_gguf_hp_get(rp, "original_max_position_embeddings"),
                        "rope_scaling.original_max_position_embeddings");
        const cJSON *v;
        if (!is_none(v = mm_gguf_hp_get(rp, "extrapolation_factor")))
            mm_gguf_key_f32(w, "rope.scaling.yarn_ext_factor", v, "rope_scaling.extrapolation_factor");
        v = mm_gguf_hp_get(rp, "attention_factor");
        if (!v)
            v = mm_gguf_hp_get(rp, "attn_factor");
        if (!is_none(v))
            mm_gguf_key_f32(w, "rope.scaling.yarn_attn_factor", v, "rope_scaling.attention_factor");
        if (!is_none(v = mm_gguf_hp_get(rp, "beta_fast")))
            mm_gguf_key_f32(w, "rope.scaling.yarn_beta_fast", v, "rope_scaling.beta_fast");
        if (!is_none(v = mm_gguf_hp_get(rp, "beta_slow")))
            mm_gguf_key_f32(w, "rope.scaling.yarn_beta_slow", v, "rope_scaling.beta_slow");
    } else if (strcmp(t, "su") == 0 || strcmp(t, "longrope") == 0) {
        key_str(w, "rope.scaling.type", "longrope");
    }
    /* dynamic, llama3 (the rope_freqs tensor) and unknown types: no key */
}

static void text_model_params(const mm_gguf_hp *hp, uint32_t block_count, uint32_t ftype, mm_gguf_keyw *w)
{
    const cJSON *v;
    key_u32v(w, "block_count", block_count, "num_hidden_layers");
    if (!is_none(v = mm_gguf_hp_find(hp, KEYS("max_position_embeddings", "n_ctx", "n_positions", "max_length",
                                              "max_sequence_length", "model_max_length"))))
        mm_gguf_key_u32(w, "context_length", v, "max_position_embeddings");
    if (!is_none(v = mm_gguf_hp_find(hp, KEYS("hidden_size", "n_embd", "dim"))))
        mm_gguf_key_u32(w, "embedding_length", v, "hidden_size");
    if (!is_none(v = mm_gguf_hp_find(hp, KEYS("prefix_dense_intermediate_size", "dense_intermediate_size",
                                              "intermediate_size", "n_inner", "hidden_dim"))))
        mm_gguf_key_count(w, "feed_forward_length", v, "intermediate_size");
    if (!is_none(v = mm_gguf_hp_find(hp, KEYS("num_attention_heads", "n_head", "n_heads"))))
        mm_gguf_key_count(w, "attention.head_count", v, "num_attention_heads");
    if (!is_none(v = mm_gguf_hp_find(hp, KEYS("num_key_value_heads", "n_kv_heads"))))
        mm_gguf_key_count(w, "attention.head_count_kv", v, "num_key_value_heads");
    if (cJSON_IsFalse(mm_gguf_hp_get(hp->root, "is_causal")) && w->rc == 0) {
        char *k = key_name(w, "attention.causal");
        mm_gguf_set_bool(w->kv, k, 0);
        free(k);
    }
    rope_scaling(hp, w);
    if (mm_gguf_hp_get(hp->rope, "mrope_section"))
        fail(w, -ENOTSUP, "config.json: multimodal RoPE sections (mrope_section) are not supported by the GGUF view");
    if (!is_none(v = mm_gguf_hp_get(mm_gguf_hp_rope_main(hp), "rope_theta")))
        mm_gguf_key_f32(w, "rope.freq_base", v, "rope_theta");
    if (!is_none(v = mm_gguf_hp_get(mm_gguf_hp_get(hp->rope, "sliding_attention"), "rope_theta")))
        mm_gguf_key_f32(w, "rope.freq_base_swa", v, "rope_local_base_freq");
    if (!is_none(v = mm_gguf_hp_find(hp, KEYS("rms_norm_eps", "norm_eps"))))
        mm_gguf_key_f32(w, "attention.layer_norm_rms_epsilon", v, "rms_norm_eps");
    if (!is_none(v = mm_gguf_hp_find(hp, KEYS("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"))))
        mm_gguf_key_f32(w, "attention.layer_norm_epsilon", v, "layer_norm_eps");
    if (!is_none(v = mm_gguf_hp_find(hp, KEYS("num_local_experts", "num_experts", "n_routed_experts"))))
        mm_gguf_key_u32(w, "expert_count", v, "num_local_experts");
    if (!is_none(v = mm_gguf_hp_find(hp, KEYS("num_experts_per_tok", "num_experts_per_token", "top_k_experts"))))
        mm_gguf_key_u32(w, "expert_used_count", v, "num_experts_per_tok");
    if (!is_none(v = mm_gguf_hp_get(hp->root, "n_group")))
        mm_gguf_key_u32(w, "expert_group_count", v, "n_group");
    if (!is_none(v = mm_gguf_hp_get(hp->root, "topk_group")))
        mm_gguf_key_u32(w, "expert_group_used_count", v, "topk_group");
    if (!is_none(v = mm_gguf_hp_find(hp, KEYS("score_function", "scoring_func", "score_func", "moe_router_activation",
                                              "moe_router_activation_func", "expert_selection_fn")))) {
        /* ExpertGatingFuncType: SOFTMAX 1, SIGMOID 2, SQRTSOFTPLUS 4 */
        static const struct {
            const char *name;
            unsigned v;
        } funcs[] = {{"sigmoid", 2}, {"softmax", 1}, {"sqrtsoftplus", 4}};
        size_t i = 0;
        while (i < MM_COUNT(funcs) && !(cJSON_IsString(v) && strcmp(v->valuestring, funcs[i].name) == 0))
            i++;
        if (i == MM_COUNT(funcs))
            fail(w, -EINVAL,
                 "config.json: unsupported expert score gating function (llama.cpp's converter refuses it)");
        else if (w->rc == 0) {
            char *k = key_name(w, "expert_gating_func");
            mm_gguf_set_u32(w->kv, k, funcs[i].v);
            free(k);
        }
    }
    if (!is_none(v = mm_gguf_hp_get(hp->root, "head_dim"))) {
        mm_gguf_key_u32(w, "attention.key_length", v, "head_dim");
        mm_gguf_key_u32(w, "attention.value_length", v, "head_dim");
    }
    if (w->rc == 0)
        mm_gguf_set_u32(w->kv, "general.file_type", ftype);
}

/* ---- the families ------------------------------------------------------------------------------- */

static void llama_params(const mm_gguf_hp *hp, uint32_t block_count, uint32_t ftype, mm_gguf_keyw *w)
{
    text_model_params(hp, block_count, ftype, w);
    mm_gguf_key_u32(w, "vocab_size", mm_gguf_hp_get(hp->root, "vocab_size"), "vocab_size");
    /* head_dim, else hidden_size // num_attention_heads */
    const cJSON *hd = mm_gguf_hp_get(hp->root, "head_dim");
    if (!is_none(hd)) {
        mm_gguf_key_u32(w, "rope.dimension_count", hd, "head_dim");
        return;
    }
    int64_t hidden = 0, heads = 0;
    const cJSON *hs = mm_gguf_hp_get(hp->root, "hidden_size"), *nh = mm_gguf_hp_get(hp->root, "num_attention_heads");
    if (w->rc == 0 && (w->rc = mm_gguf_hp_int(hs, "hidden_size", &hidden, w->err)) == 0 &&
        (w->rc = mm_gguf_hp_int(nh, "num_attention_heads", &heads, w->err)) == 0) {
        if (heads <= 0 || hidden < 0)
            {
        fail(w, -EINVAL, "config.json: hidden_size and num_attention_heads must be positive");
        return;
    }
        key_u32v(w, "rope.dimension_count", hidden / heads, "hidden_size // num_attention_heads");
    }
}

/* GemmaModel and Gemma2Model write their own list (no TextModel keys). */
static void gemma_params(const mm_gguf_hp *hp, uint32_t block_count, uint32_t ftype, mm_gguf_keyw *w, int gen2)
{
    const cJSON *r = hp->root;
    mm_gguf_key_u32(w, "context_length", mm_gguf_hp_get(r, "max_position_embeddings"), "max_position_embeddings");
    mm_gguf_key_u32(w, "embedding_length", mm_gguf_hp_get(r, "hidden_size"), "hidden_size");
    key_u32v(w, "block_count", block_count, "num_hidden_layers");
    mm_gguf_key_count(w, "feed_forward_length", mm_gguf_hp_get(r, "intermediate_size"), "intermediate_size");
    mm_gguf_key_count(w, "attention.head_count", mm_gguf_hp_get(r, "num_attention_heads"), "num_attention_heads");
    const cJSON *kv = mm_gguf_hp_get(r, "num_key_value_heads");
    mm_gguf_key_count(w, "attention.head_count_kv", kv ? kv : mm_gguf_hp_get(r, "num_attention_heads"),
                      "num_key_value_heads");
    mm_gguf_key_f32(w, "attention.layer_norm_rms_epsilon", mm_gguf_hp_get(r, "rms_norm_eps"), "rms_norm_eps");
    mm_gguf_key_u32(w, "attention.key_length", mm_gguf_hp_get(r, "head_dim"), "head_dim");
    mm_gguf_key_u32(w, "attention.value_length", mm_gguf_hp_get(r, "head_dim"), "head_dim");
    if (w->rc == 0)
        mm_gguf_set_u32(w->kv, "general.file_type", ftype);
    if (!gen2)
        return;
    mm_gguf_key_f32(w, "attn_logit_softcapping", mm_gguf_hp_get(r, "attn_logit_softcapping"), "attn_logit_softcapping");
    mm_gguf_key_f32(w, "final_logit_softcapping", mm_gguf_hp_get(r, "final_logit_softcapping"),
                    "final_logit_softcapping");
    mm_gguf_key_u32(w, "attention.sliding_window", mm_gguf_hp_get(r, "sliding_window"), "sliding_window");
}

/* Gemma3Model: TextModel's keys, then some rewritten with its own defaults (keeping their place). */
static void gemma3_params(const mm_gguf_hp *hp, uint32_t block_count, uint32_t ftype, mm_gguf_keyw *w)
{
    const cJSON *r = hp->root;
    cJSON tmp;
    text_model_params(hp, block_count, ftype, w);
    mm_gguf_key_u32(w, "context_length", get_or(r, "max_position_embeddings", &tmp, 131072, 0),
                    "max_position_embeddings");
    mm_gguf_key_count(w, "attention.head_count", get_or(r, "num_attention_heads", &tmp, 8, 0), "num_attention_heads");
    mm_gguf_key_f32(w, "attention.layer_norm_rms_epsilon", get_or(r, "rms_norm_eps", &tmp, 1e-6, 1), "rms_norm_eps");
    mm_gguf_key_u32(w, "attention.key_length", get_or(r, "head_dim", &tmp, 256, 0), "head_dim");
    mm_gguf_key_u32(w, "attention.value_length", get_or(r, "head_dim", &tmp, 256, 0), "head_dim");
    mm_gguf_key_f32(w, "rope.freq_base", get_or(mm_gguf_hp_rope_main(hp), "rope_theta", &tmp, 1000000.0, 1),
                    "rope_theta");
    if (!is_none(mm_gguf_hp_get(r, "attn_logit_softcapping")))
        fail(w, -EINVAL,
             "config.json: attn_logit_softcapping is set, which Gemma 3 does not have (llama.cpp's converter "
             "asserts it is null)");
    const cJSON *final = mm_gguf_hp_get(r, "final_logit_softcapping");
    if (mm_gguf_hp_truthy(final))
        mm_gguf_key_f32(w, "final_logit_softcapping", final, "final_logit_softcapping");
    const cJSON *pattern = mm_gguf_hp_get(r, "sliding_window_pattern");
    int pattern_is_one = (cJSON_IsNumber(pattern) && pattern->valuedouble == 1) || cJSON_IsTrue(pattern);
    if (!pattern_is_one)
        mm_gguf_key_u32(w, "attention.sliding_window", mm_gguf_hp_get(r, "sliding_window"), "sliding_window");
    mm_gguf_key_count(w, "attention.head_count_kv", get_or(r, "num_key_value_heads", &tmp, 4, 0),
                      "num_key_value_heads");
}

int mm_gguf_phi3_rope_dims(const mm_gguf_hp *hp, int64_t *out, mm_err *err)
{
    int64_t n_embd, n_head;
    double pct = 1.0;
    const cJSON *prf = mm_gguf_hp_get(hp->rope, "partial_rotary_factor");
    int rc = mm_gguf_hp_int(mm_gguf_hp_find(hp, KEYS("hidden_size", "n_embd")), "hidden_size", &n_embd, err);
    if (rc == 0)
        rc = mm_gguf_hp_int(mm_gguf_hp_find(hp, KEYS("num_attention_heads", "n_head")), "num_attention_heads", &n_head,
                            err);
    if (rc == 0 && prf)
        rc = mm_gguf_hp_num(prf, "partial_rotary_factor", &pct, err);
    if (rc < 0)
        return rc;
    double rot = pct * (double)n_embd; /* int() truncates toward zero, // floors */
    if (n_head == 0 || !isfinite(rot) || fabs(rot) > 9e15)
        return mm_err_set(err, -EINVAL, "config.json: partial_rotary_factor, hidden_size and num_attention_heads "
                          "give no RoPE dimension count");
    int64_t t = (int64_t)trunc(rot), q = t / n_head;
    if ((t % n_head != 0) && ((t < 0) != (n_head < 0)))
        q--;
    *out = q;
    return 0;
}

static void phi3_params(const mm_gguf_hp *hp, uint32_t block_count, uint32_t ftype, mm_gguf_keyw *w)
{
    const cJSON *omp = mm_gguf_hp_get(hp->rope, "original_max_position_embeddings");
    int64_t rope_dims = 0;
    if (w->rc == 0)
        w->rc = mm_gguf_phi3_rope_dims(hp, &rope_dims, w->err);
    mm_gguf_key_u32(w, "context_length", mm_gguf_hp_find(hp, KEYS("n_positions", "max_position_embeddings")),
                    "max_position_embeddings");
    mm_gguf_key_u32(w, "rope.scaling.original_context_length", omp, "original_max_position_embeddings");
    mm_gguf_key_u32(w, "embedding_length", mm_gguf_hp_find(hp, KEYS("hidden_size", "n_embd")), "hidden_size");
    mm_gguf_key_count(w, "feed_forward_length", mm_gguf_hp_get(hp->root, "intermediate_size"), "intermediate_size");
    key_u32v(w, "block_count", block_count, "num_hidden_layers");
    mm_gguf_key_count(w, "attention.head_count", mm_gguf_hp_find(hp, KEYS("num_attention_heads", "n_head")),
                      "num_attention_heads");
    mm_gguf_key_count(w, "attention.head_count_kv", mm_gguf_hp_find(hp, KEYS("num_key_value_heads", "n_head_kv")),
                      "num_key_value_heads");
    mm_gguf_key_f32(w, "attention.layer_norm_rms_epsilon", mm_gguf_hp_get(hp->root, "rms_norm_eps"), "rms_norm_eps");
    key_u32v(w, "rope.dimension_count", rope_dims, "partial_rotary_factor * hidden_size // num_attention_heads");
    mm_gguf_key_f32(w, "rope.freq_base", mm_gguf_hp_get(mm_gguf_hp_rope_main(hp), "rope_theta"), "rope_theta");
    if (w->rc == 0)
        mm_gguf_set_u32(w->kv, "general.file_type", ftype);
    /* zero (no window) tells Phi-4 apart from the Phi-3 models */
    const cJSON *sw = mm_gguf_hp_get(hp->root, "sliding_window");
    if (is_none(sw))
        key_u32v(w, "attention.sliding_window", 0, "sliding_window");
    else
        mm_gguf_key_u32(w, "attention.sliding_window", sw, "sliding_window");
}

int mm_gguf_keys(const mm_gguf_hp *hp, mm_gguf_family fam, uint32_t block_count, uint32_t ftype, mm_gguf_keyw *w)
{
    switch (fam) {
    case MM_FAM_LLAMA:
        llama_params(hp, block_count, ftype, w);
        break;
    case MM_FAM_QWEN2:
        /* Qwen2Model adds a pooling type from a served sentence-transformers modules.json; the plan
         * serves none (checked by the caller) */
        text_model_params(hp, block_count, ftype, w);
        break;
    case MM_FAM_GEMMA:
    case MM_FAM_GEMMA2:
        gemma_params(hp, block_count, ftype, w, fam == MM_FAM_GEMMA2);
        break;
    case MM_FAM_GEMMA3:
        gemma3_params(hp, block_count, ftype, w);
        break;
    case MM_FAM_PHI3:
        phi3_params(hp, block_count, ftype, w);
        break;
    }
    return w->rc;
}
