/* The tensor list of the GGUF view as llama.cpp's converter makes it (prepare_tensors):
 *
 *   - first the tensors the family generates (generate_extra_tensors): Llama 3's rope_freqs, Phi-3's
 *     long-context rope_factors_long/short;
 *   - then the folder's tensors in the converter's reading order: the shard files sorted by name, and
 *     within one, the tensor names sorted (gguf-py's SafetensorsLocal sorts them as the safetensors
 *     library does), each name through the class's filter_tensors (multimodal parts dropped,
 *     "language_model." removed, Gemma's lm_head dropped) — a name that comes twice after renaming
 *     keeps its first place and takes the later tensor, as a dict assignment does;
 *   - names ending in .attention.masked_bias, .attention.bias or .rotary_emb.inv_freq are skipped;
 *   - modify_tensors: the family's transform (Llama's Q/K head permutation, Gemma's norm + 1, Gemma 3's
 *     embedding cut to the vocabulary) and the GGUF name (gguf-py's TensorNameMap for the architecture);
 *   - F32 is kept for 1-D tensors, names ending in _norm.weight and names not ending in .weight.
 *
 * The HF -> GGUF names are those of gguf-py's tensor_mapping.py that these families' transformers
 * checkpoints use; a name outside them is refused (the converter's map holds more alternatives, from
 * other model families, which no checkpoint of these architectures has). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/jsonpy.h"
#include "formats/spm.h"
#include "gguf_arch_int.h"

#define BIT(f) (1u << (f))
#define ALL                                                                                                       \
    (BIT(MM_FAM_LLAMA) | BIT(MM_FAM_QWEN2) | BIT(MM_FAM_GEMMA) | BIT(MM_FAM_GEMMA2) | BIT(MM_FAM_GEMMA3) |          \
     BIT(MM_FAM_PHI3))
#define G23 (BIT(MM_FAM_GEMMA2) | BIT(MM_FAM_GEMMA3))

typedef struct name_rule {
    const char *hf;   /* without .weight/.bias; block rules: after "model.layers.{bid}." */
    const char *gguf; /* block rules: after "blk.{bid}." */
    unsigned fams;    /* the architectures whose MODEL_TENSORS hold the GGUF tensor */
} name_rule;

static const name_rule top_rules[] = {
    {"model.embed_tokens", "token_embd", ALL},
    {"model.norm", "output_norm", ALL},
    /* gemma and gemma2 have no output tensor (their lm_head.weight is filtered out before) */
    {"lm_head", "output", BIT(MM_FAM_LLAMA) | BIT(MM_FAM_QWEN2) | BIT(MM_FAM_GEMMA3) | BIT(MM_FAM_PHI3)},
};

static const name_rule block_rules[] = {
    {"input_layernorm", "attn_norm", ALL},
    {"self_attn.q_proj", "attn_q", ALL},
    {"self_attn.k_proj", "attn_k", ALL},
    {"self_attn.v_proj", "attn_v", ALL},
    {"self_attn.o_proj", "attn_output", ALL},
    {"self_attn.qkv_proj", "attn_qkv", BIT(MM_FAM_PHI3)},
    {"self_attn.q_norm", "attn_q_norm", BIT(MM_FAM_GEMMA3)},
    {"self_attn.k_norm", "attn_k_norm", BIT(MM_FAM_GEMMA3)},
    {"mlp.gate_proj", "ffn_gate", ALL & ~BIT(MM_FAM_PHI3)},
    {"mlp.up_proj", "ffn_up", ALL},
    {"mlp.gate_up_proj", "ffn_up", ALL},
    {"mlp.down_proj", "ffn_down", ALL},
    /* gemma2 and gemma3 norm around both halves; the others' post-attention norm is the FFN's input norm */
    {"post_attention_layernorm", "ffn_norm", ALL & ~G23},
    {"post_attention_layernorm", "post_attention_norm", G23},
    {"pre_feedforward_layernorm", "ffn_norm", G23},
    {"post_feedforward_layernorm", "post_ffw_norm", G23},
};

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Python's str.replace(from, to): every occurrence, left to right. */
static char *replace_all(const char *s, const char *from, const char *to)
{
    mm_buf b = {0};
    size_t m = strlen(from);
    const char *hit;
    while ((hit = strstr(s, from))) {
        mm_buf_append(&b, s, (size_t)(hit - s));
        mm_buf_puts(&b, to);
        s = hit + m;
    }
    mm_buf_puts(&b, s);
    return b.data;
}

/* TextModel.filter_tensors: the parts of multimodal checkpoints the text model leaves out. */
static int multimodal_part(const char *name)
{
    static const char *const prefixes[] = {"mlp", "vit.", "vpm.", "siglip2.", "conformer.", "merger.",
                                           "resampler.", "sound_encoder.", "sound_projection.",
                                           "speech_embeddings."};
    static const char *const parts[] = {"visual.", "vision.", "audio.", "talker.", "vision_", "audio_",
                                        "token2wav.", "code2wav.", "projector.", "pre_mm_projector_norm",
                                        "image_newline", "view_seperator", "patch_embed", "patch_embedding",
                                        "patch_merger.", "patch_merge_mlp.", "model.connector."};
    for (size_t i = 0; i < MM_COUNT(prefixes); i++)
        if (starts_with(name, prefixes[i]))
            return 1;
    for (size_t i = 0; i < MM_COUNT(parts); i++)
        if (strstr(name, parts[i]))
            return 1;
    return 0;
}

/* The class chain's filter_tensors: NULL to leave the tensor out, else its name for the converter. */
static char *filter_name(mm_gguf_family fam, const char *raw)
{
    if ((fam == MM_FAM_GEMMA || fam == MM_FAM_GEMMA2) && strcmp(raw, "lm_head.weight") == 0)
        return NULL; /* GemmaModel/Gemma2Model: the tied head llama.cpp does not use */
    char *name = fam == MM_FAM_LLAMA ? replace_all(raw, "text_model.", "") : mm_xstrdup(raw);
    if (multimodal_part(name)) {
        free(name);
        return NULL;
    }
    char *a = replace_all(name, "e_score_correction_bias", "e_score_correction.bias");
    char *b = replace_all(a, "language_model.", "");
    free(name);
    free(a);
    return b;
}

/* The GGUF name of an HF name without its .weight/.bias, or NULL. */
static char *map_base(mm_gguf_family fam, uint32_t block_count, const char *base)
{
    for (size_t i = 0; i < MM_COUNT(top_rules); i++)
        if ((top_rules[i].fams & BIT(fam)) && strcmp(base, top_rules[i].hf) == 0)
            return mm_xstrdup(top_rules[i].gguf);
    static const char layers[] = "model.layers.";
    if (!starts_with(base, layers))
        return NULL;
    const char *d = base + strlen(layers), *e = d;
    uint64_t bid = 0;
    while (*e >= '0' && *e <= '9' && e - d < 10)
        bid = bid * 10 + (uint64_t)(*e++ - '0');
    /* the map holds "model.layers.{bid}..." for bid < block_count, written without leading zeros */
    if (e == d || *e != '.' || (*d == '0' && e - d > 1) || bid >= block_count)
        return NULL;
    for (size_t i = 0; i < MM_COUNT(block_rules); i++)
        if ((block_rules[i].fams & BIT(fam)) && strcmp(e + 1, block_rules[i].hf) == 0)
            return mm_xasprintf("blk.%llu.%s", (unsigned long long)bid, block_rules[i].gguf);
    return NULL;
}

/* TensorNameMap.get_name(name, try_suffixes=(".weight", ".bias")). */
static char *map_name(mm_gguf_family fam, uint32_t block_count, const char *name)
{
    char *g = map_base(fam, block_count, name);
    if (g)
        return g;
    static const char *const suffixes[] = {".weight", ".bias"};
    for (size_t i = 0; i < MM_COUNT(suffixes); i++)
        if (ends_with(name, suffixes[i])) {
            char *base = mm_xstrndup(name, strlen(name) - strlen(suffixes[i]));
            g = map_base(fam, block_count, base);
            free(base);
            if (g) {
                char *full = mm_xasprintf("%s%s", g, suffixes[i]);
                free(g);
                return full;
            }
        }
    return NULL;
}

/* ---- the list ----------------------------------------------------------------------------------- */

static mm_gguf_tensor *add_tensor(mm_gguf_arch *out, size_t *cap, char *name)
{
    if (out->ntensors == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        out->tensors = mm_xrealloc(out->tensors, *cap * sizeof *out->tensors);
    }
    mm_gguf_tensor *t = &out->tensors[out->ntensors++];
    memset(t, 0, sizeof *t);
    t->name = name;
    return t;
}

static void add_generated(mm_gguf_arch *out, size_t *cap, const char *name, float *vals, size_t n)
{
    mm_gguf_tensor *t = add_tensor(out, cap, mm_xstrdup(name));
    t->src = MM_GGUF_GENERATED;
    t->gen = vals;
    t->ndim = 1;
    t->shape[0] = n;
    t->keep_f32 = 1;
}

/* ---- generate_extra_tensors --------------------------------------------------------------------- */

static int is_none(const cJSON *v)
{
    return !v || cJSON_IsNull(v);
}

/* rope_params.get(key, dflt) as a number (a present null is an error, as Python's arithmetic fails). */
static int num_or(const cJSON *obj, const char *key, double dflt, double *out, mm_err *err)
{
    const cJSON *v = mm_gguf_hp_get(obj, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    return mm_gguf_hp_num(v, key, out, err);
}

/* LlamaModel: Llama 3's frequency factors (rope_type llama3), computed in float32 step by step as
 * torch does it: the frequencies 1 / base^(2i/dim), each wavelength 2*pi/freq (torch's scalar / tensor
 * is reciprocal(tensor) * scalar), 1 below the high-frequency wavelength, `factor` above the low one,
 * and between them 1 / ((1 - s) / factor + s) with s = (old_context / wavelength - low) / (high - low).
 * The comparisons take the Python-side wavelengths rounded to float32, as torch compares.
 *
 * torch's float32 pow runs SLEEF's vectorized powf over 16-element chunks on AVX2 and the C library's
 * powf on the rest; here powf is used throughout. The two differ by an ulp for some (base, dim) pairs
 * (none of Llama 3's: base 500000, dim 64 or 128), which shows only when such a frequency falls between
 * the two wavelengths. */
static int llama3_rope_freqs(const mm_gguf_hp *hp, float **vals, size_t *n, mm_err *err)
{
    const cJSON *rp = mm_gguf_hp_rope_main(hp);
    double base, factor, low, high, old;
    int64_t dim, hidden, heads;
    int rc = num_or(rp, "rope_theta", 10000.0, &base, err);
    if (rc == 0)
        rc = num_or(rp, "factor", 8.0, &factor, err);
    if (rc == 0)
        rc = num_or(rp, "low_freq_factor", 1.0, &low, err);
    if (rc == 0)
        rc = num_or(rp, "high_freq_factor", 4.0, &high, err);
    if (rc == 0)
        rc = num_or(rp, "original_max_position_embeddings", 8192, &old, err);
    const cJSON *hd = mm_gguf_hp_get(hp->root, "head_dim");
    if (rc == 0 && !is_none(hd))
        rc = mm_gguf_hp_int(hd, "head_dim", &dim, err);
    else if (rc == 0) {
        rc = mm_gguf_hp_int(mm_gguf_hp_get(hp->root, "hidden_size"), "hidden_size", &hidden, err);
        if (rc == 0)
            rc = mm_gguf_hp_int(mm_gguf_hp_get(hp->root, "num_attention_heads"), "num_attention_heads", &heads, err);
        if (rc == 0 && heads <= 0)
            rc = mm_err_set(err, -EINVAL, "config.json: num_attention_heads must be positive");
        dim = rc == 0 ? hidden / heads : 0;
    }
    if (rc < 0)
        return rc;
    if (dim <= 0 || dim > (1 << 20) || low == 0 || high == 0)
        return mm_err_set(err, -EINVAL,
                          "config.json: the llama3 RoPE parameters (head dimension %lld, low_freq_factor %g, "
                          "high_freq_factor %g) give no frequency factors",
                          (long long)dim, low, high);
    size_t count = (size_t)(dim + 1) / 2;
    float *f = mm_xcalloc(count, sizeof *f);
    const float b = (float)base, fdim = (float)dim, two_pi = (float)(2 * M_PI);
    const float low_wavelen = (float)(old / low), high_wavelen = (float)(old / high);
    const float oldf = (float)old, lowf = (float)low, span = (float)(high - low), factorf = (float)factor;
    for (size_t i = 0; i < count; i++) {
        float freq = 1.0f / powf(b, (float)(2 * i) / fdim);
        float wavelen = (1.0f / freq) * two_pi;
        if (wavelen < high_wavelen)
            f[i] = 1.0f;
        else if (wavelen > low_wavelen)
            f[i] = factorf;
        else {
            float smooth = ((1.0f / wavelen) * oldf - lowf) / span;
            f[i] = 1.0f / ((1.0f - smooth) / factorf + smooth);
        }
    }
    *vals = f;
    *n = count;
    return 0;
}

/* A list of numbers as float32 (torch.tensor(list, dtype=float32)). */
static int float_list(const cJSON *list, const char *what, float **vals, size_t *n, mm_err *err)
{
    size_t count = (size_t)cJSON_GetArraySize(list), i = 0;
    float *f = mm_xcalloc(count ? count : 1, sizeof *f);
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        double d;
        int rc = mm_gguf_hp_num(e, what, &d, err);
        if (rc < 0) {
            free(f);
            return rc;
        }
        f[i++] = (float)d;
    }
    *vals = f;
    *n = count;
    return 0;
}

/* Phi3MiniModel: the long and short factors of a long-context (longrope) model, and the attention factor
 * key it writes on the way. */
static int phi3_rope_factors(const mm_gguf_hp *hp, mm_gguf_arch *out, size_t *cap, mm_gguf_keyw *early, mm_err *err)
{
    const cJSON *rp = hp->rope;
    const cJSON *lf = mm_gguf_hp_get(rp, "long_factor"), *sf = mm_gguf_hp_get(rp, "short_factor");
    int64_t rope_dims, max_pos, omp;
    int rc = mm_gguf_phi3_rope_dims(hp, &rope_dims, err);
    static const char *const pos_keys[] = {"n_positions", "max_position_embeddings", NULL};
    if (rc == 0)
        rc = mm_gguf_hp_int(mm_gguf_hp_find(hp, pos_keys), "max_position_embeddings", &max_pos, err);
    if (rc == 0)
        rc = mm_gguf_hp_int(mm_gguf_hp_get(rp, "original_max_position_embeddings"), "original_max_position_embeddings",
                            &omp, err);
    if (rc < 0 || !mm_gguf_hp_truthy(lf))
        return rc;
    if (omp == 0)
        return mm_err_set(err, -EINVAL, "config.json: original_max_position_embeddings is 0");
    double scale = (double)max_pos / (double)omp, attn;
    const cJSON *type = mm_gguf_hp_get(rp, "rope_type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "";
    if (strcasecmp(t, "su") == 0 || strcasecmp(t, "longrope") == 0)
        attn = scale > 1.0 ? sqrt(1 + log(scale) / log((double)omp)) : 1.0;
    else if (strcasecmp(t, "yarn") == 0)
        attn = scale > 1.0 ? 0.1 * log(scale) + 1.0 : 1.0;
    else
        return mm_err_set(err, -EINVAL,
                          "config.json: rope_scaling has long_factor but its type '%s' is none of su, longrope, yarn "
                          "(llama.cpp's converter refuses it)",
                          t);
    mm_gguf_key_f32v(early, "rope.scaling.attn_factor", attn);
    if (!cJSON_IsArray(lf) || !cJSON_IsArray(sf) || cJSON_GetArraySize(lf) != cJSON_GetArraySize(sf) ||
        2 * (int64_t)cJSON_GetArraySize(lf) != rope_dims)
        return mm_err_set(err, -EINVAL,
                          "config.json: rope_scaling's long_factor and short_factor must be lists of %lld / 2 numbers",
                          (long long)rope_dims);
    float *vals = NULL;
    size_t n = 0;
    if ((rc = float_list(lf, "rope_scaling.long_factor", &vals, &n, err)) < 0)
        return rc;
    add_generated(out, cap, "rope_factors_long.weight", vals, n);
    if ((rc = float_list(sf, "rope_scaling.short_factor", &vals, &n, err)) < 0)
        return rc;
    add_generated(out, cap, "rope_factors_short.weight", vals, n);
    return 0;
}

/* ---- modify_tensors ----------------------------------------------------------------------------- */

/* Gemma3Model: how many embedding rows stay — the sentencepiece vocabulary the converter builds
 * (vocab_size of the config, or the model's piece count without one) when tokenizer.model is served,
 * else tokenizer.json's vocabulary plus its added tokens. */
static int gemma3_vocab_rows(const mm_plan *p, const mm_gguf_hp *hp, uint64_t *rows, mm_err *err)
{
    char *data = NULL;
    size_t len = 0;
    int rc = mm_plan_file_bytes(p, "tokenizer.model", &data, &len, err);
    if (rc == 0) {
        static const char *const keys[] = {"vocab_size_per_layer_input", "vocab_size", NULL};
        const cJSON *vs = mm_gguf_hp_find(hp, keys);
        int64_t v;
        if (mm_gguf_hp_truthy(vs)) {
            free(data);
            if ((rc = mm_gguf_hp_int(vs, "vocab_size", &v, err)) < 0)
                return rc;
            *rows = v > 0 ? (uint64_t)v : 0;
            return 0;
        }
        mm_spm_model *m = NULL;
        rc = mm_spm_parse(data, len, &m, err);
        free(data);
        if (rc < 0) {
            mm_err_prefix(err, "tokenizer.model");
            return rc;
        }
        *rows = m->npieces;
        mm_spm_free(m);
        return 0;
    }
    if (rc != -ENOENT)
        return rc;
    rc = mm_plan_file_bytes(p, "tokenizer.json", &data, &len, err);
    if (rc == -ENOENT)
        return mm_err_set(err, rc,
                          "a Gemma 3 GGUF needs the output's tokenizer.model or tokenizer.json (llama.cpp's converter "
                          "cuts the embedding to its vocabulary), and this merge serves neither");
    if (rc < 0)
        return rc;
    cJSON *tok = NULL;
    rc = mm_json_parse(data, len, &tok, err);
    free(data);
    if (rc < 0) {
        mm_err_prefix(err, "tokenizer.json");
        return rc;
    }
    const cJSON *vocab = mm_gguf_hp_get(mm_gguf_hp_get(tok, "model"), "vocab");
    const cJSON *added = mm_gguf_hp_get(tok, "added_tokens");
    if (!vocab || !cJSON_IsArray(added))
        rc = mm_err_set(err, -EINVAL, "tokenizer.json: no model.vocab or added_tokens list");
    else
        *rows = (uint64_t)cJSON_GetArraySize(vocab) + (uint64_t)cJSON_GetArraySize(added);
    cJSON_Delete(tok);
    return rc;
}

/* The family's modify_tensors for one tensor: fills name, transforms and shape. */
static int modify(const mm_plan *p, const mm_gguf_hp *hp, mm_gguf_family fam, uint32_t block_count,
                  const uint32_t heads[2], uint64_t *vocab_rows, const char *name, mm_gguf_tensor *t, mm_err *err)
{
    const mm_out_tensor *src = &p->tensors[t->src];
    if (src->dtype != MM_DT_F32 && src->dtype != MM_DT_F16 && src->dtype != MM_DT_BF16)
        return mm_err_set(err, -ENOTSUP, "tensor '%s' is %s; the GGUF view converts F32, F16 and BF16 tensors only",
                          src->name, mm_dtype_name(src->dtype));
    if (src->ndim < 1 || src->ndim > 4)
        return mm_err_set(err, -ENOTSUP, "tensor '%s' has %d dimensions; a GGUF tensor has 1 to 4", src->name,
                          src->ndim);
    t->ndim = src->ndim;
    memcpy(t->shape, src->shape, sizeof t->shape);
    if (fam == MM_FAM_LLAMA) {
        /* undo_permute: HF's rotary half-split back to interleaved pairs, per head */
        uint32_t h = 0;
        if (ends_with(name, "q_proj.weight") || ends_with(name, "q_proj.bias"))
            h = heads[0];
        if (ends_with(name, "k_proj.weight") || ends_with(name, "k_proj.bias"))
            h = heads[1];
        if (h && (t->shape[0] % (2ull * h) != 0))
            return mm_err_set(err, -EINVAL,
                              "tensor '%s' has %llu rows, which do not split into %u heads of two halves (the "
                              "converter's Q/K permutation)",
                              src->name, (unsigned long long)t->shape[0], h);
        t->permute_heads = h;
    }
    if ((fam == MM_FAM_GEMMA || fam == MM_FAM_GEMMA2 || fam == MM_FAM_GEMMA3) && ends_with(name, "norm.weight"))
        t->add_one = 1; /* Gemma's RMSNorm scales by (1 + weight) */
    if (fam == MM_FAM_GEMMA3 && strstr(name, "embed_tokens.weight")) {
        if (*vocab_rows == UINT64_MAX) {
            int rc = gemma3_vocab_rows(p, hp, vocab_rows, err);
            if (rc < 0)
                return rc;
        }
        if (t->shape[0] > *vocab_rows) /* data_torch[:n_vocab] */
            t->shape[0] = *vocab_rows;
    }
    t->name = map_name(fam, block_count, name);
    if (!t->name)
        return mm_err_set(err, -ENOTSUP,
                          "tensor '%s' has no GGUF name in the view's table for this architecture (llama.cpp's "
                          "converter cannot map it either, or it belongs to a variant the view does not support)",
                          name);
    t->keep_f32 = t->ndim <= 1 || ends_with(t->name, "_norm.weight") || !ends_with(t->name, ".weight");
    return 0;
}

/* ---- order -------------------------------------------------------------------------------------- */

typedef struct entry {
    char *name; /* after filter_tensors */
    size_t src;
    size_t pos; /* reading order */
    int dup;    /* a later tensor of the same name replaced it (its src moved to the first) */
} entry;

static const mm_plan *sort_plan;

static int by_src_name(const void *a, const void *b)
{
    return strcmp(sort_plan->tensors[*(const size_t *)a].name, sort_plan->tensors[*(const size_t *)b].name);
}

static int by_name_pos(const void *a, const void *b)
{
    const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

/* The converter's model_tensors dict: (name, plan tensor) in reading order, names unique. */
static int read_order(const mm_plan *p, mm_gguf_family fam, entry **out, size_t *nout, mm_err *err)
{
    entry *e = NULL;
    size_t n = 0, cap = 0;
    for (size_t f = 0; f < p->nfiles; f++) {
        const mm_out_file *file = &p->files[f];
        if (file->kind != MM_FILE_SHARD)
            continue;
        /* index_tensors reads the parts named model*.safetensors (or those the index names) */
        if (!starts_with(file->name, "model") || !ends_with(file->name, ".safetensors")) {
            free(e);
            return mm_err_set(err, -ENOTSUP,
                              "shard '%s' is not named model*.safetensors, which llama.cpp's converter reads",
                              file->name);
        }
        size_t *idx = mm_xcalloc(file->ntensors ? file->ntensors : 1, sizeof *idx);
        memcpy(idx, file->tensors, file->ntensors * sizeof *idx);
        sort_plan = p;
        qsort(idx, file->ntensors, sizeof *idx, by_src_name);
        for (size_t i = 0; i < file->ntensors; i++) {
            char *name = filter_name(fam, p->tensors[idx[i]].name);
            if (!name)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                e = mm_xrealloc(e, cap * sizeof *e);
            }
            e[n] = (entry){name, idx[i], n, 0};
            n++;
        }
        free(idx);
    }
    /* a renamed name seen before: the first entry takes the later tensor, the later entry goes */
    entry **by = mm_xcalloc(n ? n : 1, sizeof *by);
    for (size_t i = 0; i < n; i++)
        by[i] = &e[i];
    qsort(by, n, sizeof *by, by_name_pos);
    for (size_t i = 1; i < n; i++)
        if (strcmp(by[i]->name, by[i - 1]->name) == 0) {
            size_t first = i - 1;
            while (first > 0 && by[first]->dup)
                first--;
            by[first]->src = by[i]->src;
            by[i]->dup = 1;
        }
    free(by);
    *out = e;
    *nout = n;
    return 0;
}

int mm_gguf_tensors(const mm_plan *p, const mm_gguf_hp *hp, mm_gguf_family fam, uint32_t block_count,
                    mm_gguf_arch *out, mm_gguf_keyw *early)
{
    mm_err *err = early->err;
    size_t cap = 0;
    int rc = 0;
    /* generate_extra_tensors */
    if (fam == MM_FAM_LLAMA) {
        const cJSON *rp = mm_gguf_hp_rope_main(hp), *type = mm_gguf_hp_get(rp, "rope_type");
        if (mm_gguf_hp_truthy(rp) && cJSON_IsString(type) && strcasecmp(type->valuestring, "llama3") == 0) {
            float *vals = NULL;
            size_t n = 0;
            if ((rc = llama3_rope_freqs(hp, &vals, &n, err)) < 0)
                return rc;
            add_generated(out, &cap, "rope_freqs.weight", vals, n);
        }
    } else if (fam == MM_FAM_PHI3) {
        if ((rc = phi3_rope_factors(hp, out, &cap, early, err)) < 0 || (rc = early->rc) < 0)
            return rc;
    }
    /* LlamaModel.modify_tensors: n_head and n_head_kv, read for every tensor */
    uint32_t heads[2] = {0, 0};
    if (fam == MM_FAM_LLAMA) {
        static const char *const hk[] = {"n_heads", "num_attention_heads", NULL};
        static const char *const kk[] = {"n_kv_heads", "num_key_value_heads", NULL};
        const cJSON *kv = mm_gguf_hp_find(hp, kk);
        if ((rc = mm_gguf_hp_u32(mm_gguf_hp_find(hp, hk), "num_attention_heads", &heads[0], err)) < 0)
            return rc;
        if (!kv)
            return mm_err_set(err, -EINVAL, "config.json: num_key_value_heads is missing (llama.cpp's converter "
                              "needs it to permute the K projection)");
        heads[1] = heads[0];
        if (!cJSON_IsNull(kv) && (rc = mm_gguf_hp_u32(kv, "num_key_value_heads", &heads[1], err)) < 0)
            return rc;
    }
    entry *e = NULL;
    size_t n = 0;
    if ((rc = read_order(p, fam, &e, &n, err)) < 0)
        return rc;
    uint64_t vocab_rows = UINT64_MAX;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (e[i].dup || ends_with(e[i].name, ".attention.masked_bias") || ends_with(e[i].name, ".attention.bias") ||
            ends_with(e[i].name, ".rotary_emb.inv_freq"))
            continue;
        mm_gguf_tensor *t = add_tensor(out, &cap, NULL);
        t->src = e[i].src;
        rc = modify(p, hp, fam, block_count, heads, &vocab_rows, e[i].name, t, err);
    }
    for (size_t i = 0; i < n; i++)
        free(e[i].name);
    free(e);
    return rc;
}
