/* merge/plan: output tensors, parameters per tensor, shard planning, output files, and the plan-time
 * errors. Models are written here with the project's safetensors writer. */
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "model_fixture.h"
#include "config/config.h"
#include "merge/plan/plan.h"

static char root[] = "/tmp/mm-plan-XXXXXX";

static void put(const char *path, const char *text)
{
    check_write_file(path, text, strlen(text));
}

static int plan_text(const char *yaml, uint64_t shard_size, mm_plan **plan, mm_config **cfg, mm_err *err)
{
    char *path = mm_xasprintf("%s/merge.yml", root);
    put(path, yaml);
    *plan = NULL;
    int rc = mm_config_load(path, cfg, err);
    free(path);
    if (rc < 0)
        return rc;
    mm_plan_options o;
    mm_plan_options_default(&o);
    o.out_shard_size = shard_size;
    rc = mm_plan_build(*cfg, &o, plan, err);
    if (rc < 0) {
        mm_config_free(*cfg);
        *cfg = NULL;
    }
    return rc;
}

static const mm_out_tensor *find(const mm_plan *p, const char *name)
{
    for (size_t i = 0; i < p->ntensors; i++)
        if (strcmp(p->tensors[i].name, name) == 0)
            return &p->tensors[i];
    return NULL;
}

static const mm_out_file *file(const mm_plan *p, const char *name)
{
    for (size_t i = 0; i < p->nfiles; i++)
        if (strcmp(p->files[i].name, name) == 0)
            return &p->files[i];
    return NULL;
}

static void expect_error(const char *yaml, const char *needle)
{
    mm_plan *p;
    mm_config *c;
    mm_err err = {{0}};
    int rc = plan_text(yaml, 0, &p, &c, &err);
    CHECK(rc < 0);
    CHECK_STR_CONTAINS(err.msg, needle);
    if (rc == 0) {
        mm_plan_free(p);
        mm_config_free(c);
    }
}

int main(void)
{
    CHECK(mkdtemp(root) != NULL);
    char *a = check_make_model(root, "a", 3, 4, 10, 1, 0);
    char *b = check_make_model(root, "b", 3, 4, 12, 0, 0);
    char *c = check_make_model(root, "c", 3, 4, 10, 1, 1);
    char *d = check_make_model(root, "d", 2, 4, 10, 1, 0);
    char *e = check_make_model(root, "e", 3, 8, 10, 1, 0);
    (void)c, (void)d, (void)e;

    /* linear with a gradient and a filter; b is tied (no lm_head) and has a bigger vocab. */
    char *y = mm_xasprintf("models:\n"
                           "  - model: %s\n    parameters:\n      weight: [0, 0.5, 1]\n"
                           "  - model: %s\n    parameters:\n      weight:\n        - filter: mlp\n          value: 2\n"
                           "        - value: 1\n"
                           "merge_method: linear\ndtype: float32\nout_dtype: bfloat16\n",
                           a, b);
    mm_plan *p;
    mm_config *cfg;
    mm_err err = {{0}};
    int rc = plan_text(y, 0, &p, &cfg, &err);
    if (rc < 0)
        fprintf(stderr, "%s\n", err.msg);
    CHECK(rc == 0);
    if (rc == 0) {
        /* 1 embed + 3*2 layer tensors + norm + lm_head */
        CHECK(p->ntensors == 9);
        const mm_out_tensor *q1 = find(p, "model.layers.1.self_attn.q_proj.weight");
        CHECK(q1 && q1->t == 0.5 && q1->inputs[0].mvals[0] == 0.5 && q1->inputs[1].mvals[0] == 1.0);
        const mm_out_tensor *m2 = find(p, "model.layers.2.mlp.down_proj.weight");
        CHECK(m2 && m2->inputs[0].mvals[0] == 1.0 && m2->inputs[1].mvals[0] == 2.0);
        const mm_out_tensor *emb = find(p, "model.embed_tokens.weight");
        CHECK(emb && emb->shape[0] == 10 && emb->shape[1] == 4 && emb->inputs[0].mvals[0] == 0.0);
        const mm_out_tensor *lm = find(p, "lm_head.weight");
        CHECK(lm && strcmp(lm->inputs[1].mt->name, "model.embed_tokens.weight") == 0);
        CHECK(emb && emb->comp == MM_DT_F32 && emb->dtype == MM_DT_BF16);
        CHECK(file(p, "model.safetensors") && !file(p, "model.safetensors.index.json"));
        CHECK(file(p, "config.json") && strstr(file(p, "config.json")->data, "\"torch_dtype\": \"bfloat16\""));
        CHECK(strstr(file(p, "config.json")->data, "\"rms_norm_eps\": 1e-05"));
        CHECK(file(p, "tokenizer.json") && file(p, "README.md") && file(p, "mergekit_config.yml"));
        CHECK(file(p, "mergekit_config.yml")->size == strlen(y));
        /* Files are listed by name. */
        for (size_t i = 1; i < p->nfiles; i++)
            CHECK(strcmp(p->files[i - 1].name, p->files[i].name) < 0);
        mm_plan_free(p);
        mm_config_free(cfg);
    }

    /* Sharding: every tensor is 32 or 64 bytes (bf16 4x4, 4x8) or 80 (10x4 embed); a 100-byte limit
     * gives several shards, greedy in name order, and an index. */
    rc = plan_text(y, 100, &p, &cfg, &err);
    CHECK(rc == 0);
    if (rc == 0) {
        const mm_out_file *idx = file(p, "model.safetensors.index.json");
        CHECK(idx != NULL);
        size_t nshards = 0;
        uint64_t total = 0;
        for (size_t i = 0; i < p->nfiles; i++)
            if (p->files[i].kind == MM_FILE_SHARD) {
                nshards++;
                uint64_t data = 0;
                for (size_t k = 0; k < p->files[i].ntensors; k++) {
                    const mm_out_tensor *t = &p->tensors[p->files[i].tensors[k]];
                    data += t->numel * 2;
                }
                CHECK(data <= 100 || p->files[i].ntensors == 1);
                CHECK(p->files[i].size == p->files[i].data_len + data);
                total += data;
            }
        CHECK(nshards > 1);
        char want[64];
        snprintf(want, sizeof want, "model-00001-of-%05zu.safetensors", nshards);
        CHECK(file(p, want) != NULL);
        char tot[64];
        snprintf(tot, sizeof tot, "\"total_size\": %llu", (unsigned long long)total);
        CHECK(idx && strstr(idx->data, tot));
        /* lm_head sorts first by name (B5.4), so it opens the first shard. */
        const mm_out_file *f1 = file(p, want);
        int has_lm = 0;
        for (size_t k = 0; f1 && k < f1->ntensors; k++)
            has_lm |= strcmp(p->tensors[f1->tensors[k]].name, "lm_head.weight") == 0;
        CHECK(has_lm);
        mm_plan_free(p);
        mm_config_free(cfg);
    }
    free(y);

    /* Frankenmerge with passthrough: a[0,3) + a[1,3) -> 5 layers. */
    y = mm_xasprintf("slices:\n  - sources:\n      - model: %s\n        layer_range: [0, 3]\n"
                     "  - sources:\n      - model: %s\n        layer_range: [1, 3]\n"
                     "merge_method: passthrough\n",
                     a, a);
    rc = plan_text(y, 0, &p, &cfg, &err);
    CHECK(rc == 0);
    if (rc == 0) {
        const mm_out_tensor *l4 = find(p, "model.layers.4.mlp.down_proj.weight");
        CHECK(l4 && strcmp(l4->inputs[0].mt->name, "model.layers.2.mlp.down_proj.weight") == 0);
        CHECK(find(p, "model.layers.5.mlp.down_proj.weight") == NULL);
        CHECK(strstr(file(p, "config.json")->data, "\"num_hidden_layers\": 5"));
        CHECK(l4 && l4->comp == MM_DT_BF16);
        mm_plan_free(p);
        mm_config_free(cfg);
    }
    free(y);

    /* Errors */
    y = mm_xasprintf("models:\n  - model: %s\n  - model: %s\nmerge_method: linaer\nparameters:\n  weight: 1\n", a, d);
    expect_error(y, "did you mean 'linear'");
    free(y);
    y = mm_xasprintf("models:\n  - model: %s\n  - model: %s\nmerge_method: something_else\nparameters:\n  weight: 1\n",
                     a, d);
    expect_error(y, "known methods:");
    free(y);
    y = mm_xasprintf("models:\n  - model: %s\n  - model: %s\nmerge_method: linear\nparameters:\n  weight: 1\n", a, c);
    expect_error(y, "model.layers.1.mlp.down_proj.weight' is required");
    free(y);
    y = mm_xasprintf("models:\n  - model: %s\n  - model: %s\nmerge_method: linear\nparameters:\n  weight: 1\n", a, e);
    expect_error(y, "shape [4, 8] in model");
    free(y);
    y = mm_xasprintf("models:\n  - model: %s\n  - model: %s\nmerge_method: linear\nparameters:\n  weight: 1\n", a, d);
    expect_error(y, "same number of layers");
    free(y);
    y = mm_xasprintf("slices:\n  - sources:\n      - model: %s\n        layer_range: [0, 4]\nmerge_method: passthrough\n",
                     a);
    expect_error(y, "out of bounds");
    free(y);
    y = mm_xasprintf("models:\n  - model: %s\n  - model: %s\nmerge_method: linear\n", a, b);
    expect_error(y, "has no 'weight'");
    free(y);
    y = mm_xasprintf("models:\n  - model: %s\n    parameters: {weight: 1}\n  - model: %s\n    parameters: {weight: -1}\n"
                     "merge_method: linear\n",
                     a, b);
    expect_error(y, "sum to 0");
    free(y);
    y = mm_xasprintf("models:\n  - model: %s\n  - model: %s\nmerge_method: linear\nparameters:\n  weight: abc\n", a, b);
    expect_error(y, "must be a number");
    free(y);
    y = mm_xasprintf("models:\n  - model: %s\n  - model: %s\nmerge_method: task_arithmetic\nparameters:\n  weight: 1\n", a,
                     b);
    expect_error(y, "needs base_model");
    free(y);
    y = mm_xasprintf("models:\n  - model: %s\n  - model: %s\nmerge_method: passthrough\n", a, b);
    expect_error(y, "exactly one model");
    free(y);

    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
    char *cmd = mm_xasprintf("rm -rf %s", root);
    CHECK(system(cmd) == 0);
    free(cmd);
    return mm_check_report();
}
