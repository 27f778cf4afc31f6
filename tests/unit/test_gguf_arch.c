/* merge/gguf/gguf_arch: the model side of the GGUF view — the families' keys (names, order, value
 * types, transformers' defaults), the tensor list (names, reading order, dropped tensors, transforms,
 * F32 rule), the generated RoPE tensors and the refusals. The expected values are llama.cpp's
 * converter's (convert_hf_to_gguf.py with transformers 5.3) on the same configs; tests/integration
 * compares whole files with it. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "config/config.h"
#include "merge/gguf/gguf_arch.h"
#include "model_fixture.h"

static char root[PATH_MAX];

typedef struct tdef {
    const char *name;
    int ndim;
    uint64_t shape[2];
} tdef;

/* A model folder root/name: the tensors (bf16, zero) in one model.safetensors, and config.json. */
static char *model(const char *name, const char *config, const tdef *defs, size_t n)
{
    char *dir = mm_xasprintf("%s/%s", root, name);
    mkdir(dir, 0755);
    mm_st_tensor t[32];
    for (size_t i = 0; i < n; i++)
        t[i] = (mm_st_tensor){.name = mm_xstrdup(defs[i].name), .dtype = MM_DT_BF16, .ndim = defs[i].ndim,
                              .shape = {defs[i].shape[0], defs[i].shape[1]}};
    check_write_safetensors(dir, t, n, 0);
    char *path = mm_xasprintf("%s/config.json", dir);
    check_write_file(path, config, strlen(config));
    free(path);
    return dir;
}

typedef struct built {
    mm_config *cfg;
    mm_plan *plan;
    mm_gguf_arch arch;
    mm_gguf_kvs kv;
    mm_err err;
    int rc;
} built;

/* The model side of the GGUF view of a one-model merge of dir. */
static void build(const char *dir, built *b)
{
    memset(b, 0, sizeof *b);
    char *yaml = mm_xasprintf("models:\n  - model: %s\nmerge_method: linear\nparameters:\n  weight: 1\n", dir);
    char *path = mm_xasprintf("%s/merge.yml", root);
    check_write_file(path, yaml, strlen(yaml));
    mm_plan_options o;
    mm_plan_options_default(&o);
    b->rc = mm_config_load(path, &b->cfg, &b->err);
    if (b->rc == 0)
        b->rc = mm_plan_build(b->cfg, &o, &b->plan, &b->err);
    if (b->rc == 0)
        b->rc = mm_gguf_arch_build(b->plan, MM_GGUF_FTYPE_MOSTLY_BF16, &b->kv, &b->arch, &b->err);
    free(yaml);
    free(path);
}

static void unbuild(built *b)
{
    mm_gguf_arch_free(&b->arch);
    mm_gguf_kvs_free(&b->kv);
    mm_plan_free(b->plan);
    mm_config_free(b->cfg);
}

/* The key at position i is `key` of scalar type t. */
static int key_is(const mm_gguf_kvs *kv, size_t i, const char *key, mm_gguf_vtype t)
{
    if (i >= kv->n || strcmp(kv->kv[i].key, key) != 0 || kv->kv[i].type != t) {
        fprintf(stderr, "key %zu: got %s (type %d), want %s (type %d)\n", i, i < kv->n ? kv->kv[i].key : "(none)",
                i < kv->n ? (int)kv->kv[i].type : -1, key, (int)t);
        return 0;
    }
    return 1;
}

static uint32_t u32_at(const mm_gguf_kvs *kv, size_t i)
{
    uint32_t v = 0;
    if (i < kv->n && kv->kv[i].value.len >= 4)
        memcpy(&v, kv->kv[i].value.data, 4);
    return v;
}

static float f32_at(const mm_gguf_kvs *kv, size_t i)
{
    float v = NAN;
    if (i < kv->n && kv->kv[i].value.len >= 4)
        memcpy(&v, kv->kv[i].value.data, 4);
    return v;
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static const mm_gguf_tensor *tensor(const built *b, const char *name, size_t *pos)
{
    for (size_t i = 0; i < b->arch.ntensors; i++)
        if (strcmp(b->arch.tensors[i].name, name) == 0) {
            if (pos)
                *pos = i;
            return &b->arch.tensors[i];
        }
    return NULL;
}

/* Llama 3: transformers' defaults fill head_dim and rope_theta's place, the llama3 RoPE gives rope_freqs
 * first, Q/K are permuted over heads and KV heads, the rotary inv_freq is dropped, names read sorted. */
static void test_llama3(void)
{
    static const tdef t[] = {
        {"model.norm.weight", 1, {16}},
        {"model.layers.0.self_attn.q_proj.weight", 2, {16, 16}},
        {"model.layers.0.self_attn.k_proj.weight", 2, {8, 16}},
        {"model.layers.0.self_attn.rotary_emb.inv_freq", 1, {2}},
        {"model.layers.0.input_layernorm.weight", 1, {16}},
        {"model.embed_tokens.weight", 2, {64, 16}},
        {"lm_head.weight", 2, {64, 16}},
    };
    char *dir = model("llama3",
                      "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 16, "
                      "\"intermediate_size\": 32, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                      "\"num_hidden_layers\": 1, \"max_position_embeddings\": 131072, \"rms_norm_eps\": 1e-05, "
                      "\"rope_theta\": 500000.0, \"rope_scaling\": {\"factor\": 8.0, \"high_freq_factor\": 4.0, "
                      "\"low_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192, \"rope_type\": "
                      "\"llama3\"}, \"vocab_size\": 64}",
                      t, MM_COUNT(t));
    built b;
    build(dir, &b);
    CHECK(b.rc == 0);
    if (b.rc == 0) {
        CHECK_STR_EQ(b.arch.arch, "llama");
        CHECK(b.arch.early.n == 0);
        static const struct {
            const char *key;
            mm_gguf_vtype t;
        } keys[] = {
            {"llama.block_count", MM_GGUF_U32},
            {"llama.context_length", MM_GGUF_U32},
            {"llama.embedding_length", MM_GGUF_U32},
            {"llama.feed_forward_length", MM_GGUF_U32},
            {"llama.attention.head_count", MM_GGUF_U32},
            {"llama.attention.head_count_kv", MM_GGUF_U32},
            {"llama.rope.freq_base", MM_GGUF_F32},
            {"llama.attention.layer_norm_rms_epsilon", MM_GGUF_F32},
            {"llama.attention.key_length", MM_GGUF_U32},
            {"llama.attention.value_length", MM_GGUF_U32},
            {"general.file_type", MM_GGUF_U32},
            {"llama.vocab_size", MM_GGUF_U32},
            {"llama.rope.dimension_count", MM_GGUF_U32},
        };
        CHECK(b.kv.n == MM_COUNT(keys));
        for (size_t i = 0; i < MM_COUNT(keys); i++)
            CHECK(key_is(&b.kv, i, keys[i].key, keys[i].t));
        CHECK(u32_at(&b.kv, 1) == 131072);
        CHECK(f32_at(&b.kv, 6) == 500000.0f);
        CHECK(f32_at(&b.kv, 7) == 1e-05f);
        CHECK(u32_at(&b.kv, 8) == 4);   /* head_dim = 16 / 4, LlamaConfig's default */
        CHECK(u32_at(&b.kv, 10) == MM_GGUF_FTYPE_MOSTLY_BF16);
        CHECK(u32_at(&b.kv, 12) == 4);

        static const char *const order[] = {"rope_freqs.weight", "output.weight", "token_embd.weight",
                                            "blk.0.attn_norm.weight", "blk.0.attn_k.weight", "blk.0.attn_q.weight",
                                            "output_norm.weight"};
        CHECK(b.arch.ntensors == MM_COUNT(order));
        for (size_t i = 0; i < MM_COUNT(order) && i < b.arch.ntensors; i++)
            CHECK_STR_EQ(b.arch.tensors[i].name, order[i]);
        const mm_gguf_tensor *rf = tensor(&b, "rope_freqs.weight", NULL);
        CHECK(rf && rf->src == MM_GGUF_GENERATED && rf->ndim == 1 && rf->shape[0] == 2 && rf->keep_f32);
        if (rf && rf->gen) { /* the converter's float32 values */
            CHECK(bits(rf->gen[0]) == 0x3f800000);
            CHECK(bits(rf->gen[1]) == 0x402c732e);
        }
        const mm_gguf_tensor *q = tensor(&b, "blk.0.attn_q.weight", NULL), *k = tensor(&b, "blk.0.attn_k.weight", NULL);
        CHECK(q && q->permute_heads == 4 && !q->keep_f32);
        CHECK(k && k->permute_heads == 2 && k->shape[0] == 8 && k->shape[1] == 16);
        const mm_gguf_tensor *n = tensor(&b, "blk.0.attn_norm.weight", NULL);
        CHECK(n && n->keep_f32 && !n->add_one && !n->permute_heads);
        CHECK(tensor(&b, "output.weight", NULL) && !tensor(&b, "output.weight", NULL)->keep_f32);
    }
    unbuild(&b);
    free(dir);
}

/* Gemma: its own key list (no RoPE keys), the tied lm_head dropped, every *norm.weight + 1. */
static void test_gemma(void)
{
    static const tdef t[] = {
        {"model.embed_tokens.weight", 2, {64, 16}},
        {"lm_head.weight", 2, {64, 16}},
        {"model.layers.0.post_attention_layernorm.weight", 1, {16}},
        {"model.layers.0.self_attn.q_proj.weight", 2, {16, 16}},
        {"model.norm.weight", 1, {16}},
    };
    char *dir = model("gemma",
                      "{\"architectures\": [\"GemmaForCausalLM\"], \"model_type\": \"gemma\", \"hidden_size\": 16, "
                      "\"intermediate_size\": 32, \"num_attention_heads\": 4, \"num_key_value_heads\": 1, "
                      "\"head_dim\": 4, \"num_hidden_layers\": 1, \"vocab_size\": 64}",
                      t, MM_COUNT(t));
    built b;
    build(dir, &b);
    CHECK(b.rc == 0);
    if (b.rc == 0) {
        static const char *const keys[] = {"gemma.context_length", "gemma.embedding_length", "gemma.block_count",
                                           "gemma.feed_forward_length", "gemma.attention.head_count",
                                           "gemma.attention.head_count_kv", "gemma.attention.layer_norm_rms_epsilon",
                                           "gemma.attention.key_length", "gemma.attention.value_length",
                                           "general.file_type"};
        CHECK(b.kv.n == MM_COUNT(keys));
        for (size_t i = 0; i < MM_COUNT(keys); i++)
            CHECK(key_is(&b.kv, i, keys[i], i == 6 ? MM_GGUF_F32 : MM_GGUF_U32));
        CHECK(u32_at(&b.kv, 0) == 8192);     /* GemmaConfig's max_position_embeddings */
        CHECK(f32_at(&b.kv, 6) == 1e-6f);    /* and rms_norm_eps */
        CHECK(tensor(&b, "output.weight", NULL) == NULL);
        const mm_gguf_tensor *n = tensor(&b, "blk.0.ffn_norm.weight", NULL);
        CHECK(n && n->add_one && n->keep_f32);
        CHECK(tensor(&b, "output_norm.weight", NULL) && tensor(&b, "output_norm.weight", NULL)->add_one);
        const mm_gguf_tensor *q = tensor(&b, "blk.0.attn_q.weight", NULL);
        CHECK(q && !q->add_one && !q->permute_heads);
    }
    unbuild(&b);
    free(dir);
}

/* Phi-3 with long-context factors: the attention factor key written while the tensors are prepared,
 * the two factor tensors first. */
static void test_phi3_longrope(void)
{
    static const tdef t[] = {
        {"model.embed_tokens.weight", 2, {64, 16}},
        {"model.layers.0.self_attn.qkv_proj.weight", 2, {48, 16}},
        {"model.layers.0.mlp.gate_up_proj.weight", 2, {64, 16}},
        {"model.norm.weight", 1, {16}},
    };
    char *dir = model("phi3",
                      "{\"architectures\": [\"Phi3ForCausalLM\"], \"model_type\": \"phi3\", \"hidden_size\": 16, "
                      "\"intermediate_size\": 32, \"num_attention_heads\": 4, \"num_hidden_layers\": 1, "
                      "\"max_position_embeddings\": 131072, \"original_max_position_embeddings\": 4096, "
                      "\"rope_scaling\": {\"type\": \"su\", \"long_factor\": [1.5, 2.25], "
                      "\"short_factor\": [1.0, 1.1]}, \"vocab_size\": 64}",
                      t, MM_COUNT(t));
    built b;
    build(dir, &b);
    CHECK(b.rc == 0);
    if (b.rc == 0) {
        CHECK(key_is(&b.arch.early, 0, "phi3.rope.scaling.attn_factor", MM_GGUF_F32));
        CHECK(bits(f32_at(&b.arch.early, 0)) == 0x3f9859b9); /* sqrt(1 + ln 32 / ln 4096) */
        CHECK(key_is(&b.kv, 0, "phi3.context_length", MM_GGUF_U32));
        CHECK(key_is(&b.kv, 1, "phi3.rope.scaling.original_context_length", MM_GGUF_U32));
        CHECK(key_is(&b.kv, b.kv.n - 1, "phi3.attention.sliding_window", MM_GGUF_U32));
        CHECK(u32_at(&b.kv, b.kv.n - 1) == 0);
        size_t pos = 99;
        const mm_gguf_tensor *l = tensor(&b, "rope_factors_long.weight", &pos);
        CHECK(l && pos == 0 && l->gen && l->gen[1] == 2.25f);
        CHECK(tensor(&b, "rope_factors_short.weight", &pos) && pos == 1);
        CHECK(tensor(&b, "blk.0.attn_qkv.weight", NULL) && tensor(&b, "blk.0.ffn_up.weight", NULL));
    }
    unbuild(&b);
    free(dir);
}

static void test_refusals(void)
{
    static const tdef t[] = {{"model.embed_tokens.weight", 2, {64, 16}}};
    char *dir = model("falcon", "{\"architectures\": [\"FalconForCausalLM\"], \"model_type\": \"falcon\"}", t, 1);
    built b;
    build(dir, &b);
    CHECK(b.rc == -ENOTSUP);
    CHECK_STR_CONTAINS(b.err.msg, "['FalconForCausalLM']");
    CHECK_STR_CONTAINS(b.err.msg, "supports llama");
    unbuild(&b);
    free(dir);

    dir = model("notype", "{\"architectures\": [\"LlamaForCausalLM\"], \"num_hidden_layers\": 1}", t, 1);
    build(dir, &b);
    CHECK(b.rc == -ENOTSUP);
    CHECK_STR_CONTAINS(b.err.msg, "model_type");
    unbuild(&b);
    free(dir);

    /* a tensor outside the architecture's names */
    static const tdef odd[] = {{"model.embed_tokens.weight", 2, {64, 16}}, {"model.layers.0.odd.weight", 1, {16}}};
    dir = model("odd",
                "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"num_hidden_layers\": 1}",
                odd, 2);
    build(dir, &b);
    CHECK(b.rc == -ENOTSUP);
    CHECK_STR_CONTAINS(b.err.msg, "model.layers.0.odd.weight");
    unbuild(&b);
    free(dir);
}

int main(void)
{
    char *old_cwd = NULL;
    if (check_enter_tmpdir(root, "mm-gguf-arch", &old_cwd) < 0)
        return 1;
    test_llama3();
    test_gemma();
    test_phi3_longrope();
    test_refusals();
    check_leave_tmpdir(root, old_cwd);
    return mm_check_report();
}
