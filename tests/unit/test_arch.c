/* Module inference (merge/plan/arch, D18) on the tensor names and config.json of published checkpoints
 * (tests/fixtures/archs) and on small made-up name sets for the rules' corners. */
#include <cjson/cJSON.h>
#include <stdlib.h>

#include "check.h"
#include "formats/jsonpy.h"
#include "formats/safetensors.h"
#include "merge/plan/model.h"

typedef struct arch_case {
    mm_arch arch;
    mm_model_tensor *t;
    size_t n;
    cJSON *cfg;
} arch_case;

static void infer(arch_case *c, const char *const *names, size_t n, const char *cfg_text)
{
    c->n = n;
    c->t = mm_xcalloc(n ? n : 1, sizeof *c->t);
    for (size_t i = 0; i < n; i++)
        c->t[i].name = names[i];
    c->cfg = NULL;
    mm_err err = {0};
    if (cfg_text)
        CHECK(mm_json_parse(cfg_text, strlen(cfg_text), &c->cfg, &err) == 0);
    mm_arch_infer(&c->arch, c->t, n, c->cfg);
}

static void done(arch_case *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->t[i].template_name);
    free(c->t);
    cJSON_Delete(c->cfg);
    mm_arch_free(&c->arch);
}

/* Module `name` has this stack, layer count and config.json place ("text_config.num_hidden_layers",
 * or NULL for none). */
static void expect_module(const arch_case *c, const char *name, const char *stack, int layers, const char *key)
{
    int i = mm_arch_find(&c->arch, name);
    CHECK(i >= 0);
    if (i < 0) {
        char *names = mm_arch_names(&c->arch);
        fprintf(stderr, "  no module %s (modules: %s)\n", name, names);
        free(names);
        return;
    }
    const mm_module *m = &c->arch.mods[i];
    CHECK((stack == NULL) == (m->stack == NULL));
    if (stack && m->stack)
        CHECK_STR_EQ(m->stack, stack);
    CHECK(m->num_layers == layers);
    if (m->num_layers != layers)
        fprintf(stderr, "  %s: %d layers, want %d\n", name, m->num_layers, layers);
    char *got = m->count_holder ? mm_xasprintf("%s%s%s", m->count_holder, m->count_holder[0] ? "." : "",
                                               m->count_key)
                                : NULL;
    CHECK((key == NULL) == (got == NULL));
    if (key && got)
        CHECK_STR_EQ(got, key);
    free(got);
}

/* Tensor `name` belongs to module `module` at `layer` (-1: outside the layer stack). */
static void expect_tensor(const arch_case *c, const char *name, const char *module, int layer)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->t[i].name, name) != 0)
            continue;
        CHECK_STR_EQ(c->arch.mods[c->t[i].module].name, module);
        CHECK(c->t[i].layer == layer);
        CHECK((layer < 0) == (c->t[i].template_name == NULL));
        if (c->t[i].layer != layer)
            fprintf(stderr, "  %s: layer %d, want %d\n", name, c->t[i].layer, layer);
        return;
    }
    CHECK(!"tensor not in the fixture");
    fprintf(stderr, "  %s is not in the fixture\n", name);
}

/* Reads a fixture's weight_map names and config.json. */
static void load_fixture(arch_case *c, const char *family, mm_st_index *ix)
{
    char *dir = mm_xasprintf("../fixtures/archs/%s", family), *text, *cfg;
    char *ip = mm_path_join(dir, "model.safetensors.index.json"), *cp = mm_path_join(dir, "config.json");
    size_t len, clen;
    mm_err err = {0};
    CHECK(mm_file_read_all(ip, 64u << 20, &text, &len, &err) == 0);
    CHECK(mm_st_index_parse(text, len, ix, &err) == 0);
    CHECK(mm_file_read_all(cp, 1u << 20, &cfg, &clen, &err) == 0);
    infer(c, (const char *const *)ix->names, ix->n, cfg);
    free(text);
    free(cfg);
    free(ip);
    free(cp);
    free(dir);
}

static void test_text_families(void)
{
    static const struct {
        const char *family, *stack;
        int layers;
        const char *key, *sample;
        int sample_layer;
    } fam[] = {
        {"llama3", "model.layers", 32, "num_hidden_layers", "lm_head.weight", -1},
        {"mistral", "model.layers", 40, "num_hidden_layers", "model.layers.39.mlp.up_proj.weight", 39},
        {"qwen3", "model.layers", 28, "num_hidden_layers", "model.layers.0.self_attn.q_norm.weight", 0},
        {"phi3", "model.layers", 32, "num_hidden_layers", "model.layers.5.mlp.gate_up_proj.weight", 5},
        {"mixtral", "model.layers", 56, "num_hidden_layers", "model.layers.3.block_sparse_moe.experts.7.w1.weight", 3},
        {"granitemoe", "model.layers", 24, "num_hidden_layers", "model.norm.weight", -1},
        {"gpt-neox", "gpt_neox.layers", 24, "num_hidden_layers", "gpt_neox.embed_in.weight", -1},
        {"gemma2", "model.layers", 42, "num_hidden_layers", "model.layers.41.post_feedforward_layernorm.weight", 41},
        {"phimoe", "model.layers", 32, "num_hidden_layers", "lm_head.bias", -1},
    };
    for (size_t i = 0; i < MM_COUNT(fam); i++) {
        arch_case c;
        mm_st_index ix;
        load_fixture(&c, fam[i].family, &ix);
        CHECK(c.arch.n == 1 && c.arch.text == 0);
        expect_module(&c, "text_decoder", fam[i].stack, fam[i].layers, fam[i].key);
        expect_tensor(&c, fam[i].sample, "text_decoder", fam[i].sample_layer);
        /* mergekit calls the only module of a single-module architecture "default" */
        CHECK(mm_arch_find(&c.arch, "default") == 0);
        done(&c);
        mm_st_index_free(&ix);
    }
    /* an expert index is part of the template, never the layer */
    arch_case c;
    mm_st_index ix;
    load_fixture(&c, "mixtral", &ix);
    for (size_t i = 0; i < c.n; i++)
        if (strcmp(c.t[i].name, "model.layers.3.block_sparse_moe.experts.7.w1.weight") == 0)
            CHECK_STR_EQ(c.t[i].template_name, "model.layers.{}.block_sparse_moe.experts.7.w1.weight");
    done(&c);
    mm_st_index_free(&ix);
}

static void test_gemma3(void)
{
    arch_case c;
    mm_st_index ix;
    load_fixture(&c, "gemma3-vl", &ix);
    CHECK(c.arch.n == 3);
    expect_module(&c, "text_decoder", "language_model.model.layers", 62, "text_config.num_hidden_layers");
    expect_module(&c, "vision_tower", "vision_tower.vision_model.encoder.layers", 27, "vision_config.num_hidden_layers");
    expect_module(&c, "multi_modal_projector", NULL, 0, NULL);
    expect_tensor(&c, "language_model.model.embed_tokens.weight", "text_decoder", -1);
    expect_tensor(&c, "language_model.model.norm.weight", "text_decoder", -1);
    expect_tensor(&c, "language_model.model.layers.61.mlp.down_proj.weight", "text_decoder", 61);
    expect_tensor(&c, "vision_tower.vision_model.encoder.layers.26.mlp.fc2.bias", "vision_tower", 26);
    expect_tensor(&c, "vision_tower.vision_model.post_layernorm.weight", "vision_tower", -1);
    expect_tensor(&c, "vision_tower.vision_model.embeddings.patch_embedding.weight", "vision_tower", -1);
    expect_tensor(&c, "multi_modal_projector.mm_input_projection_weight", "multi_modal_projector", -1);
    expect_tensor(&c, "multi_modal_projector.mm_soft_emb_norm.weight", "multi_modal_projector", -1);
    done(&c);
    mm_st_index_free(&ix);
}

static void test_qwen2_vl(void)
{
    arch_case c;
    mm_st_index ix;
    load_fixture(&c, "qwen2-vl", &ix);
    CHECK(c.arch.n == 3);
    expect_module(&c, "text_decoder", "model.layers", 28, "num_hidden_layers");
    /* its config.json has no vision_config.depth: no key to update */
    expect_module(&c, "vision_tower", "visual.blocks", 32, NULL);
    expect_module(&c, "multi_modal_projector", NULL, 0, NULL);
    expect_tensor(&c, "lm_head.weight", "text_decoder", -1);
    expect_tensor(&c, "model.embed_tokens.weight", "text_decoder", -1);
    expect_tensor(&c, "visual.blocks.31.attn.qkv.weight", "vision_tower", 31);
    expect_tensor(&c, "visual.patch_embed.proj.weight", "vision_tower", -1);
    /* nn.Sequential indices (0 and 2: a gap) are no layers */
    expect_tensor(&c, "visual.merger.mlp.0.weight", "multi_modal_projector", -1);
    expect_tensor(&c, "visual.merger.mlp.2.bias", "multi_modal_projector", -1);
    expect_tensor(&c, "visual.merger.ln_q.weight", "multi_modal_projector", -1);
    done(&c);
    mm_st_index_free(&ix);
}

static void test_internvl(void)
{
    arch_case c;
    mm_st_index ix;
    load_fixture(&c, "internvl-lm", &ix);
    CHECK(c.arch.n == 3);
    expect_module(&c, "text_decoder", "language_model.model.layers", 36, "text_config.num_hidden_layers");
    expect_module(&c, "vision_tower", "vision_model.encoder.blocks", 27, "vision_config.num_hidden_layers");
    expect_tensor(&c, "language_model.lm_head.weight", "text_decoder", -1);
    expect_tensor(&c, "mlp1.0.weight", "multi_modal_projector", -1);
    expect_tensor(&c, "mlp1.3.bias", "multi_modal_projector", -1);
    done(&c);
    mm_st_index_free(&ix);
}

static void test_llava(void)
{
    arch_case c;
    mm_st_index ix;
    load_fixture(&c, "llava", &ix);
    CHECK(c.arch.n == 3);
    /* its text_config leaves num_hidden_layers to LlamaConfig's default */
    expect_module(&c, "text_decoder", "language_model.model.layers", 32, NULL);
    expect_module(&c, "vision_tower", "vision_tower.vision_model.encoder.layers", 24, "vision_config.num_hidden_layers");
    expect_tensor(&c, "language_model.lm_head.weight", "text_decoder", -1);
    expect_tensor(&c, "vision_tower.vision_model.pre_layrnorm.weight", "vision_tower", -1);
    expect_tensor(&c, "multi_modal_projector.linear_2.bias", "multi_modal_projector", -1);
    done(&c);
    mm_st_index_free(&ix);
}

/* transformers >= 4.52 names: everything under model., the projector nested in the vision tower with a
 * layer stack of its own (mergekit's qwen3_vl_dense.json gives it 3 layers too). */
static void test_qwen3_vl(void)
{
    arch_case c;
    mm_st_index ix;
    load_fixture(&c, "qwen3-vl", &ix);
    CHECK(c.arch.n == 3);
    expect_module(&c, "text_decoder", "model.language_model.layers", 36, "text_config.num_hidden_layers");
    expect_module(&c, "vision_tower", "model.visual.blocks", 27, "vision_config.depth");
    expect_module(&c, "multi_modal_projector", "model.visual.deepstack_merger_list", 3, NULL);
    expect_tensor(&c, "lm_head.weight", "text_decoder", -1);
    expect_tensor(&c, "model.language_model.embed_tokens.weight", "text_decoder", -1);
    expect_tensor(&c, "model.visual.pos_embed.weight", "vision_tower", -1);
    expect_tensor(&c, "model.visual.patch_embed.proj.bias", "vision_tower", -1);
    expect_tensor(&c, "model.visual.merger.linear_fc1.weight", "multi_modal_projector", -1);
    expect_tensor(&c, "model.visual.deepstack_merger_list.2.norm.weight", "multi_modal_projector", 2);
    done(&c);
    mm_st_index_free(&ix);
}

static void test_corners(void)
{
    arch_case c;
    /* no layer stack at all: one module without layers */
    static const char *const flat[] = {"a.weight", "b.bias"};
    infer(&c, flat, MM_COUNT(flat), NULL);
    CHECK(c.arch.n == 1);
    expect_module(&c, "text_decoder", NULL, 0, NULL);
    done(&c);

    /* a gap in the only candidate: no stack, and the index stays part of the name */
    static const char *const gap[] = {"mlp.0.weight", "mlp.2.weight", "norm.weight"};
    infer(&c, gap, MM_COUNT(gap), "{\"num_hidden_layers\": 3}");
    expect_module(&c, "text_decoder", NULL, 0, NULL);
    expect_tensor(&c, "mlp.2.weight", "text_decoder", -1);
    done(&c);

    /* a text model whose config disagrees with its tensors: the first count key is still the one updated */
    static const char *const one[] = {"model.layers.0.w", "model.layers.1.w", "model.norm.weight"};
    infer(&c, one, MM_COUNT(one), "{\"text_config\": {\"num_hidden_layers\": 5}}");
    expect_module(&c, "text_decoder", "model.layers", 2, "text_config.num_hidden_layers");
    done(&c);

    /* two text-like stacks: config.json's count tells the decoder; the other keeps its prefix as name */
    static const char *const two[] = {"encoder.block.0.w", "encoder.block.1.w", "encoder.block.2.w",
                                      "decoder.block.0.w", "decoder.block.1.w", "shared.weight"};
    infer(&c, two, MM_COUNT(two), "{\"num_layers\": 2}");
    expect_module(&c, "text_decoder", "decoder.block", 2, "num_layers");
    expect_module(&c, "encoder.block", "encoder.block", 3, NULL);
    expect_tensor(&c, "shared.weight", "text_decoder", -1);
    done(&c);
    /* ... and without a count that tells them apart, there is no text decoder: other tensors go to
     * "default", which is then a module of its own */
    infer(&c, two, MM_COUNT(two), "{}");
    CHECK(c.arch.text == -1);
    expect_module(&c, "decoder.block", "decoder.block", 2, NULL);
    expect_tensor(&c, "shared.weight", "default", -1);
    done(&c);

    /* roots: the shortest prefix that tells a stack from the others (transformers 5 names) */
    static const char *const v5[] = {"model.language_model.layers.0.w", "model.language_model.layers.1.w",
                                     "model.visual.blocks.0.w", "model.visual.blocks.1.w", "model.visual.pos.weight",
                                     "model.language_model.norm.weight", "lm_head.weight"};
    infer(&c, v5, MM_COUNT(v5), NULL);
    expect_module(&c, "text_decoder", "model.language_model.layers", 2, NULL);
    expect_module(&c, "vision_tower", "model.visual.blocks", 2, NULL);
    expect_tensor(&c, "model.visual.pos.weight", "vision_tower", -1);
    expect_tensor(&c, "model.language_model.norm.weight", "text_decoder", -1);
    expect_tensor(&c, "lm_head.weight", "text_decoder", -1);
    done(&c);
}

int main(void)
{
    test_text_families();
    test_gemma3();
    test_qwen2_vl();
    test_internvl();
    test_llava();
    test_qwen3_vl();
    test_corners();
    return mm_check_report();
}
