/* Config loading (docs/merge-contract.md D1, D11, D13, D14, D17): both syntaxes with every key, YAML typing,
 * every error with its place and wording, and the unknown-key warnings. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "config/config.h"

static char tmp[PATH_MAX];

static char *at(const char *rel)
{
    return mm_path_join(tmp, rel);
}

static void write_file(const char *rel, const char *text)
{
    char *p = at(rel);
    check_write_file(p, text, strlen(text));
    free(p);
}

/* A model folder holding only `weights` (an empty file: shards are not read when loading a config). */
static void make_model(const char *name, const char *weights)
{
    char *p = at(name);
    CHECK(mkdir(p, 0755) == 0);
    free(p);
    if (weights) {
        char rel[256];
        snprintf(rel, sizeof rel, "%s/%s", name, weights);
        write_file(rel, "");
    }
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static int load(const char *yaml, mm_config **c, mm_err *err)
{
    write_file("cfg.yml", yaml);
    *c = NULL;
    err->msg[0] = 0;
    return mm_config_load("cfg.yml", c, err);
}

/* stderr into a file while a config loads, to check the warnings. */
static int saved_stderr = -1;
static void capture_begin(void)
{
    char *p = at("stderr.txt");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    free(p);
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

static char *capture_end(void)
{
    dup2(saved_stderr, 2);
    close(saved_stderr);
    char *p = at("stderr.txt"), *data = NULL;
    CHECK(mm_file_read_all(p, 1 << 20, &data, NULL, NULL) == 0);
    free(p);
    return data;
}

static void expect_err(int line, const char *yaml, int code, const char *msg)
{
    mm_config *c;
    mm_err err;
    int rc = load(yaml, &c, &err);
    CHECK(rc == code);
    CHECK(c == NULL);
    CHECK_STR_CONTAINS(err.msg, msg);
    if (rc != code || !strstr(err.msg, msg))
        fprintf(stderr, "  (case at line %d: rc %d, message: %s)\n", line, rc, err.msg);
    mm_config_free(c);
}
#define EXPECT_ERR(yaml, code, msg) expect_err(__LINE__, yaml, code, msg)

static const mm_pvalue *scalar_of(const mm_params *p, const char *name)
{
    const mm_psetting *s = mm_params_find(p, name);
    return s && s->kind == MM_PS_SCALAR ? &s->scalar : NULL;
}

static double num_of(const mm_params *p, const char *name)
{
    const mm_pvalue *v = scalar_of(p, name);
    return v && v->kind == MM_PV_NUM ? v->num : NAN;
}

static int path_is(const char *path, const char *rel)
{
    char *want = at(rel);
    int ok = path && strcmp(path, want) == 0;
    if (!ok)
        fprintf(stderr, "  path %s, expected %s\n", path ? path : "(null)", want);
    free(want);
    return ok;
}

static void test_models_syntax(void)
{
    const char *yaml = "merge_method: ties\n"
                       "base_model: base\n"
                       "models:\n"
                       "  - model: a\n"
                       "    parameters:\n"
                       "      weight: [0, 0.5, 1]\n"
                       "      density: 0.5\n"
                       "  - model: ./b/\n"
                       "    parameters:\n"
                       "      weight:\n"
                       "        - filter: self_attn\n"
                       "          value: 0.3\n"
                       "        - value: [0.1, 0.2]\n"
                       "parameters:\n"
                       "  normalize: true\n"
                       "  int8_mask: yes\n"
                       "  lambda: 1e-5\n"
                       "  epsilon: .5\n"
                       "  gamma: -.25\n"
                       "  scale: 1_000\n"
                       "  r: .inf\n"
                       "  label: '0.5'\n"
                       "dtype: bfloat16\n"
                       "out_dtype: torch.float16\n"
                       "tokenizer_source: base\n";
    mm_config *c;
    mm_err err;
    int rc = load(yaml, &c, &err);
    CHECK(rc == 0);
    if (rc != 0) {
        fprintf(stderr, "  %s\n", err.msg);
        return;
    }
    CHECK(strcmp(c->path, "cfg.yml") == 0);
    CHECK(c->text_len == strlen(yaml) && memcmp(c->text, yaml, c->text_len) == 0);
    CHECK(strcmp(c->merge_method, "ties") == 0);
    CHECK(c->method_pos.line == 1 && c->method_pos.col == 15 && c->method_pos.file == c->path);
    CHECK(c->models_syntax == 1 && c->nslices == 1);
    CHECK(c->base_model && path_is(c->base_model->path, "base") && strcmp(c->base_model->ref, "base") == 0);
    CHECK(c->base_model->pos.line == 2 && c->base_model->pos.col == 13);
    CHECK(c->dtype == MM_DT_BF16 && c->out_dtype == MM_DT_F16);
    CHECK(c->dtype_pos.line == 23 && c->out_dtype_pos.line == 24);
    CHECK(c->tokenizer_source == MM_TOK_BASE && c->tokenizer_model == NULL);

    const mm_slice_def *sl = &c->slices[0];
    CHECK(sl->nsources == 3 && sl->base_model == NULL && sl->params.n == 0);
    CHECK(path_is(sl->sources[0].model.path, "a") && !sl->sources[0].has_range && !sl->sources[0].is_base_appended);
    CHECK(sl->sources[0].model.pos.line == 4 && sl->sources[0].model.pos.col == 12);
    CHECK(path_is(sl->sources[1].model.path, "b") && strcmp(sl->sources[1].model.ref, "./b/") == 0);
    CHECK(path_is(sl->sources[2].model.path, "base") && sl->sources[2].is_base_appended == 1);
    CHECK(sl->sources[2].params.n == 0);

    const mm_psetting *w0 = mm_params_find(&sl->sources[0].params, "weight");
    CHECK(w0 && w0->kind == MM_PS_GRADIENT && w0->ngrad == 3 && w0->grad[1].num == 0.5);
    CHECK(w0 && w0->pos.line == 6 && w0->pos.col == 15);
    CHECK(num_of(&sl->sources[0].params, "density") == 0.5);
    CHECK(sl->sources[0].params.items[1].pos.line == 7 && sl->sources[0].params.items[1].pos.col == 7);

    const mm_psetting *w1 = mm_params_find(&sl->sources[1].params, "weight");
    CHECK(w1 && w1->kind == MM_PS_CONDITIONAL && w1->nconds == 2);
    if (w1 && w1->nconds == 2) {
        CHECK(strcmp(w1->conds[0].filter, "self_attn") == 0 && w1->conds[0].value->scalar.num == 0.3);
        CHECK(w1->conds[1].filter == NULL && w1->conds[1].value->kind == MM_PS_GRADIENT);
        CHECK(w1->conds[0].pos.line == 11);
        mm_pvalue v;
        CHECK(mm_psetting_eval(w1, "model.layers.0.mlp.up_proj.weight", 1.0, &v) == 1 && v.num == 0.2);
    }

    const mm_params *top = &c->params;
    CHECK(top->n == 8);
    const mm_pvalue *b = scalar_of(top, "normalize");
    CHECK(b && b->kind == MM_PV_BOOL && b->b == 1);
    b = scalar_of(top, "int8_mask");
    CHECK(b && b->kind == MM_PV_BOOL && b->b == 1);
    CHECK(num_of(top, "lambda") == 1e-5);
    CHECK(num_of(top, "epsilon") == 0.5);
    CHECK(num_of(top, "gamma") == -0.25);
    CHECK(num_of(top, "scale") == 1000);
    CHECK(isinf(num_of(top, "r")));
    const mm_pvalue *s = scalar_of(top, "label");
    CHECK(s && s->kind == MM_PV_STR && strcmp(s->str, "0.5") == 0);
    mm_config_free(c);
}

static void test_base_listed(void)
{
    /* The base listed under another spelling is still the same folder: not appended twice. */
    mm_config *c;
    mm_err err;
    int rc = load("merge_method: task_arithmetic\n"
                  "base_model: ./base\n"
                  "models:\n"
                  "  - model: a\n"
                  "    parameters: {weight: 1}\n"
                  "  - model: base\n",
                  &c, &err);
    CHECK(rc == 0);
    if (rc == 0) {
        CHECK(c->slices[0].nsources == 2);
        CHECK(!c->slices[0].sources[1].is_base_appended && path_is(c->slices[0].sources[1].model.path, "base"));
    }
    mm_config_free(c);

    /* Without base_model nothing is appended; the same model twice stays twice (D10). */
    rc = load("merge_method: linear\nmodels:\n  - model: a\n  - model: a\n", &c, &err);
    CHECK(rc == 0 && c->slices[0].nsources == 2 && c->base_model == NULL);
    mm_config_free(c);
}

static void test_slices_syntax(void)
{
    const char *yaml = "slices:\n"
                       "  - sources:\n"
                       "      - model: a\n"
                       "        layer_range: [0, 4]\n"
                       "      - model: b\n"
                       "        layer_range: [0, 4]\n"
                       "        parameters: {weight: 0.7}\n"
                       "    base_model: a\n"
                       "    parameters:\n"
                       "      t: [0, 1]\n"
                       "    residual_weight: 0.1\n"
                       "  - sources:\n"
                       "      - model: {path: c}\n"
                       "        layer_range: [4, 8]\n"
                       "      - model: {model: {path: b, revision: null}}\n"
                       "        layer_range: [2, 2]\n"
                       "merge_method: slerp\n"
                       "base_model: base\n"
                       "tokenizer_source: b\n";
    mm_config *c;
    mm_err err;
    int rc = load(yaml, &c, &err);
    CHECK(rc == 0);
    if (rc != 0) {
        fprintf(stderr, "  %s\n", err.msg);
        return;
    }
    CHECK(c->models_syntax == 0 && c->nslices == 2);
    const mm_slice_def *s0 = &c->slices[0], *s1 = &c->slices[1];
    CHECK(s0->nsources == 2 && s1->nsources == 2); /* no base appended with slices: */
    CHECK(s0->pos.line == 2 && s0->pos.col == 5);
    CHECK(s0->sources[0].has_range && s0->sources[0].layer_start == 0 && s0->sources[0].layer_end == 4);
    CHECK(s0->sources[0].range_pos.line == 4 && s0->sources[0].range_pos.col == 22);
    CHECK(num_of(&s0->sources[1].params, "weight") == 0.7);
    CHECK(s0->base_model && path_is(s0->base_model->path, "a"));
    const mm_psetting *t = mm_params_find(&s0->params, "t");
    CHECK(t && t->kind == MM_PS_GRADIENT && t->ngrad == 2);
    CHECK(s1->base_model == NULL && s1->params.n == 0);
    CHECK(path_is(s1->sources[0].model.path, "c") && strcmp(s1->sources[0].model.ref, "c") == 0);
    CHECK(s1->sources[0].layer_start == 4 && s1->sources[0].layer_end == 8);
    CHECK(path_is(s1->sources[1].model.path, "b") && s1->sources[1].layer_start == 2 && s1->sources[1].layer_end == 2);
    CHECK(c->base_model && path_is(c->base_model->path, "base"));
    CHECK(c->tokenizer_source == MM_TOK_MODEL && c->tokenizer_model && path_is(c->tokenizer_model->path, "b"));
    CHECK(c->dtype == MM_DT_NONE && c->out_dtype == MM_DT_NONE);
    mm_config_free(c);
}

static void test_hub_ref(void)
{
    /* A hub reference with a revision, written in mergekit's mapping form. */
    char *snap = at("hub/models--org--m/snapshots/h1"), *refs = at("hub/models--org--m/refs");
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' '%s'", snap, refs);
    CHECK(system(cmd) == 0);
    write_file("hub/models--org--m/refs/v1", "h1\n");
    write_file("hub/models--org--m/snapshots/h1/model.safetensors.index.json", "{}");
    mm_config *c;
    mm_err err;
    int rc = load("merge_method: linear\nmodels:\n  - model: {path: org/m, revision: v1}\n  - model: org/m@v1\n", &c,
                  &err);
    CHECK(rc == 0);
    if (rc == 0) {
        CHECK(strcmp(c->slices[0].sources[0].model.ref, "org/m@v1") == 0);
        CHECK(strcmp(c->slices[0].sources[0].model.path, snap) == 0);
        CHECK(strcmp(c->slices[0].sources[1].model.path, snap) == 0);
    }
    mm_config_free(c);
    free(snap);
    free(refs);
}

static void test_yaml_features(void)
{
    /* Anchors, aliases and merge keys as PyYAML reads them; stepwise string gradients. */
    const char *yaml = "x-defaults: &p {weight: 0.5, density: 0.2}\n"
                       "merge_method: dare_ties\n"
                       "base_model: base\n"
                       "models:\n"
                       "  - model: a\n"
                       "    parameters: *p\n"
                       "  - model: b\n"
                       "    parameters:\n"
                       "      <<: *p\n"
                       "      weight: 0.9\n"
                       "      mode: [x, 'y', \"z\"]\n"
                       "      flag: [on, off, No]\n"
                       "      octal: 010\n"
                       "      hex: 0x1f\n"
                       "      sexa: 1:30\n"
                       "      word: 08\n"
                       "      tagged: !!str 1.5\n"
                       "      forced: !!float 2\n";
    mm_config *c;
    mm_err err;
    capture_begin();
    int rc = load(yaml, &c, &err);
    char *warnings = capture_end();
    CHECK(rc == 0);
    if (rc != 0) {
        fprintf(stderr, "  %s\n", err.msg);
        free(warnings);
        return;
    }
    CHECK_STR_CONTAINS(warnings, "cfg.yml:1:1: unknown key 'x-defaults' at the top level is ignored");
    free(warnings);
    const mm_params *p0 = &c->slices[0].sources[0].params, *p1 = &c->slices[0].sources[1].params;
    CHECK(num_of(p0, "weight") == 0.5 && num_of(p0, "density") == 0.2);
    CHECK(num_of(p1, "weight") == 0.9 && num_of(p1, "density") == 0.2);
    const mm_psetting *mode = mm_params_find(p1, "mode");
    CHECK(mode && mode->kind == MM_PS_GRADIENT && mode->ngrad == 3 && mode->grad[0].kind == MM_PV_STR);
    mm_pvalue v;
    CHECK(mode && mm_psetting_eval(mode, "w", 0.5, &v) == 1 && v.kind == MM_PV_STR && strcmp(v.str, "y") == 0);
    const mm_psetting *flag = mm_params_find(p1, "flag");
    CHECK(flag && flag->grad[0].kind == MM_PV_BOOL && flag->grad[0].b == 1 && flag->grad[1].b == 0 &&
          flag->grad[2].b == 0);
    CHECK(num_of(p1, "octal") == 8);
    CHECK(num_of(p1, "hex") == 31);
    CHECK(num_of(p1, "sexa") == 90);
    const mm_pvalue *w = scalar_of(p1, "word");
    CHECK(w && w->kind == MM_PV_STR && strcmp(w->str, "08") == 0); /* not an int in YAML 1.1 */
    w = scalar_of(p1, "tagged");
    CHECK(w && w->kind == MM_PV_STR && strcmp(w->str, "1.5") == 0);
    CHECK(num_of(p1, "forced") == 2);
    mm_config_free(c);
}

static void test_warnings(void)
{
    mm_config *c;
    mm_err err;
    capture_begin();
    int rc = load("merge_method: linear\n"
                  "models:\n"
                  "  - model: a\n"
                  "    weight: 0.5\n"
                  "    parameters: {weight: 1, weight: 2}\n"
                  "normalize: true\n"
                  "base_modle: a\n"
                  "density: 0.5\n"
                  "whatever: 1\n"
                  "slices: null\n",
                  &c, &err);
    char *w = capture_end();
    CHECK(rc == 0);
    CHECK_STR_CONTAINS(w, "cfg.yml:4:5: unknown key 'weight' in an entry of models: is ignored (it belongs under "
                          "parameters:)");
    CHECK_STR_CONTAINS(w, "cfg.yml:5:29: key 'weight' appears more than once in this mapping; the last value is used");
    CHECK_STR_CONTAINS(w, "cfg.yml:6:1: unknown key 'normalize' at the top level is ignored (it belongs under "
                          "parameters:)");
    CHECK_STR_CONTAINS(w, "cfg.yml:7:1: unknown key 'base_modle' at the top level is ignored (did you mean "
                          "'base_model'?)");
    CHECK_STR_CONTAINS(w, "cfg.yml:8:1: unknown key 'density'");
    CHECK_STR_CONTAINS(w, "cfg.yml:9:1: unknown key 'whatever' at the top level is ignored (mergekit ignores it too");
    CHECK_STR_CONTAINS(w, "warning: ");
    if (rc == 0)
        CHECK(num_of(&c->slices[0].sources[0].params, "weight") == 2);
    free(w);
    mm_config_free(c);
}

static void test_errors(void)
{
    /* YAML */
    EXPECT_ERR("merge_method: linear\nmodels: a: b\n", -EINVAL,
               "cfg.yml:2:10: YAML syntax error: mapping values are not allowed in this context (");
    EXPECT_ERR("merge_method: linear\nmodels:\n\t- model: a\n", -EINVAL,
               "cfg.yml:3:1: YAML syntax error: found character that cannot start any token (indent with spaces");
    EXPECT_ERR("merge_method: linear\nmodels: [a, b\n", -EINVAL, "cfg.yml:3:1: YAML syntax error: ");
    EXPECT_ERR("merge_method: linear\n---\nmodels: []\n", -EINVAL, "cfg.yml:2:1: a second YAML document starts here");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: a\n    parameters: *nope\n", -EINVAL,
               "cfg.yml:4:17: alias '*nope' refers to no complete anchor");
    EXPECT_ERR("merge_method: !!python/name:os.system linear\n", -EINVAL, "unsupported YAML tag");
    EXPECT_ERR("merge_method: linear\n[a]: 1\n", -EINVAL, "cfg.yml:2:1: a mapping key must be text");
    /* Nesting: a limit with the place, before anything walks the tree (some walks recurse). */
    {
        mm_buf deep = {0};
        mm_buf_puts(&deep, "merge_method: linear\nmodels:\n  - model: ");
        for (int i = 0; i < 100000; i++)
            mm_buf_puts(&deep, "{model: ");
        EXPECT_ERR(deep.data, -EINVAL,
                   "cfg.yml:3:2036: lists and mappings nested more than 256 levels deep (a merge config needs only");
        mm_buf_free(&deep);
        mm_buf_puts(&deep, "merge_method: linear\nparameters:\n");
        for (int i = 0; i < 300; i++)
            mm_buf_printf(&deep, "%*sk:\n", i + 1, "");
        EXPECT_ERR(deep.data, -EINVAL, "nested more than 256 levels deep");
        mm_buf_free(&deep);
        /* 250 levels are fine as YAML (the schema then refuses them as a model reference). */
        mm_buf_puts(&deep, "merge_method: linear\nmodels:\n  - model: ");
        for (int i = 0; i < 248; i++)
            mm_buf_puts(&deep, "{model: ");
        mm_buf_puts(&deep, "12");
        for (int i = 0; i < 248; i++)
            mm_buf_puts(&deep, "}");
        EXPECT_ERR(deep.data, -EINVAL, "model must be a model folder or org/name, found a number");
        mm_buf_free(&deep);
    }

    /* top level */
    EXPECT_ERR("", -EINVAL, "cfg.yml:1:1: the configuration is empty (write at least merge_method:");
    EXPECT_ERR("# only a comment\n", -EINVAL, "cfg.yml:1:1: the configuration is empty");
    EXPECT_ERR("- merge_method: linear\n", -EINVAL,
               "cfg.yml:1:1: the configuration must be a mapping of keys such as merge_method: and models:, found a "
               "list (");
    EXPECT_ERR("linear\n", -EINVAL, "cfg.yml:1:1: the configuration must be a mapping");
    EXPECT_ERR("models:\n  - model: a\n", -EINVAL,
               "cfg.yml:1:1: merge_method is missing (add e.g. 'merge_method: linear' at the top level)");
    EXPECT_ERR("merge_method: ''\nmodels:\n  - model: a\n", -EINVAL,
               "cfg.yml:1:15: merge_method must be a method name, found empty text (");
    EXPECT_ERR("merge_method: linear\ndtype: [bf16]\nmodels:\n  - model: a\n", -EINVAL,
               "cfg.yml:2:8: dtype: a list is not a supported type (");
    EXPECT_ERR("merge_method: [linear]\nmodels:\n  - model: a\n", -EINVAL,
               "cfg.yml:1:15: merge_method must be a method name, found a list");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: a\nslices:\n  - sources: []\n", -EINVAL,
               "cfg.yml:4:1: both models: and slices: are given (");
    EXPECT_ERR("merge_method: linear\nbase_model: a\n", -EINVAL, "cfg.yml:1:1: neither models: nor slices: is given (");
    EXPECT_ERR("merge_method: linear\nmodels:\n", -EINVAL, "cfg.yml:2:8: models: is empty (");
    EXPECT_ERR("merge_method: linear\nmodels: []\n", -EINVAL, "cfg.yml:2:9: models: is empty (");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - a\n", -EINVAL,
               "cfg.yml:3:5: each entry of models: must be a mapping with model:, found text (write '- model: a')");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - parameters: {weight: 1}\n", -EINVAL,
               "cfg.yml:3:5: this entry of models: has no model: (");

    /* models */
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: nope/missing\n", -ENOENT,
               "cfg.yml:3:12: model 'nope/missing' not found: not a local folder (");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: nope/missing\n", -ENOENT,
               "download it with `hf download nope/missing` or give a local path");
    EXPECT_ERR("merge_method: linear\nbase_model: ./nothere\nmodels:\n  - model: a\n", -ENOENT,
               "cfg.yml:2:13: model './nothere' not found: no folder ");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: noweights\n", -ENOENT,
               "cfg.yml:3:12: model folder ");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: noweights\n", -ENOENT,
               "/noweights has no weights: no model.safetensors and no model.safetensors.index.json (");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: a\n  - model: pickle\n", -EINVAL,
               "/pickle has only PyTorch pickle weights (pytorch_model.bin), which mergemount does not read "
               "(convert them to safetensors");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: a\n  - model: pickle\n", -EINVAL,
               "cfg.yml:4:12: model folder");
    /* LoRA references (D19): both forms resolve both sides; the adapter folder is read by the planner */
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: a+lora\n", -ENOENT,
               "cfg.yml:3:12: the adapter of 'a+lora': model 'lora' not found");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: {model: a, lora: l}\n", -ENOENT,
               "cfg.yml:3:12: the adapter of 'a+l': model 'l' not found");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: {lora: b}\n", -EINVAL,
               "cfg.yml:3:13: lora: needs model: beside it (");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: a+b+c\n", -EINVAL, "more than one '+'");
    {
        mm_config *c;
        mm_err err;
        int rc = load("merge_method: linear\nbase_model: a+b\nmodels:\n  - model: {model: a, lora: b}\n  - model: a\n",
                      &c, &err);
        CHECK(rc == 0);
        if (rc == 0) {
            const mm_slice_def *sl = &c->slices[0];
            /* a+b is one model, a another: the base is not appended again, a is no duplicate of it */
            CHECK(sl->nsources == 2 && strcmp(sl->sources[0].model.ref, "a+b") == 0);
            CHECK(path_is(sl->sources[0].model.lora_path, "b") && sl->sources[1].model.lora_path == NULL);
            CHECK(mm_modelref_same(&sl->sources[0].model, c->base_model));
            CHECK(!mm_modelref_same(&sl->sources[1].model, c->base_model));
            mm_config_free(c);
        }
    }
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: org/x@@1\n", -EINVAL,
               "cfg.yml:3:12: model 'org/x@@1' has more than one '@'");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: 12\n", -EINVAL,
               "cfg.yml:3:12: model must be a model folder or org/name, found a number (");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: {revision: x}\n", -EINVAL,
               "cfg.yml:3:12: a model reference written as a mapping needs path:");

    /* dtype */
    EXPECT_ERR("merge_method: linear\ndtype: float64\nmodels:\n  - model: a\n", -EINVAL,
               "cfg.yml:2:8: dtype: 'float64' is not a supported type (use bfloat16, float16 or float32;");
    EXPECT_ERR("merge_method: linear\nout_dtype: 16\nmodels:\n  - model: a\n", -EINVAL,
               "cfg.yml:2:12: out_dtype: '16' is not a supported type (");

    /* layer_range */
    const char *head = "merge_method: passthrough\nslices:\n  - sources:\n      - model: a\n";
    static const struct {
        const char *range, *msg;
    } ranges[] = {
        {"[0]", "cfg.yml:5:22: layer_range must be a list of two layer numbers, found a list of 1 value ("},
        {"[0, 4, 8]", "cfg.yml:5:22: layer_range must be a list of two layer numbers, found a list of 3 values ("},
        {"8", "cfg.yml:5:22: layer_range must be a list of two layer numbers, found a number ("},
        {"[4, 2]", "cfg.yml:5:22: layer_range [4, 2] starts after it ends (write layer_range: [start, end]"},
        {"[-1, 2]", "cfg.yml:5:23: layer_range start must be a whole number >= 0, found '-1' ("},
        /* a YAML 1.1 sexagesimal integer far beyond long long (once an undefined conversion) */
        {"[0, 1:0:0:0:0:0:0:0:0:0:0:0:0]", "cfg.yml:5:26: layer_range end must be a whole number >= 0, found "
                                          "'1:0:0:0:0:0:0:0:0:0:0:0:0' ("},
        {"[0, 2.5]", "cfg.yml:5:26: layer_range end must be a whole number >= 0, found '2.5' ("},
        {"[a, 2]", "cfg.yml:5:23: layer_range start must be a whole number >= 0, found 'a' ("},
    };
    for (size_t i = 0; i < MM_COUNT(ranges); i++) {
        char yaml[512];
        snprintf(yaml, sizeof yaml, "%s        layer_range: %s\n", head, ranges[i].range);
        EXPECT_ERR(yaml, -EINVAL, ranges[i].msg);
    }
    EXPECT_ERR(head, -EINVAL, "cfg.yml:4:9: this source has no layer_range: (");
    EXPECT_ERR("merge_method: passthrough\nslices:\n  - base_model: a\n", -EINVAL, "cfg.yml:3:5: this slice has no "
                                                                                   "sources: (");
    EXPECT_ERR("merge_method: passthrough\nslices:\n  - sources: []\n", -EINVAL, "cfg.yml:3:14: sources: is empty (");
    EXPECT_ERR("merge_method: passthrough\nslices: {sources: []}\n", -EINVAL, "cfg.yml:2:9: slices: must be a list, "
                                                                            "found a mapping (");
    EXPECT_ERR("merge_method: passthrough\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 1]\n"
               "    residual_weight: lots\n",
               -EINVAL, "cfg.yml:6:22: residual_weight must be a number");

    /* parameters */
    const char *m = "merge_method: linear\nmodels:\n  - model: a\n    parameters:\n";
    static const struct {
        const char *param, *msg;
    } params[] = {
        {"      weight: []\n", "cfg.yml:5:15: parameter 'weight' is an empty list (give a value, or a list of values "
                               "for a gradient)"},
        {"      weight: {filter: mlp, value: 0.5}\n",
         "cfg.yml:5:15: parameter 'weight' is a single {filter, value} mapping, which mergekit cannot evaluate (wrap "
         "it in a list"},
        {"      weight: {a: 1}\n", "cfg.yml:5:15: parameter 'weight' must be a number, a boolean, text, a list of "
                                   "numbers or a list of {filter, value} entries, found a mapping ("},
        {"      weight: [0.5, abc]\n", "cfg.yml:5:21: parameter 'weight' mixes numbers and non-numbers in one list ("},
        {"      weight: [0.5, [1]]\n", "cfg.yml:5:21: parameter 'weight' mixes kinds of entries in one list, found a "
                                       "list here ("},
        {"      weight: [{value: 1}, 0.5]\n", "cfg.yml:5:28: parameter 'weight' mixes kinds of entries"},
        {"      weight:\n", "cfg.yml:5:14: parameter 'weight' has no value ("},
        {"      weight: [0.5, null]\n", "cfg.yml:5:21: parameter 'weight' has no value ("},
        {"      weight:\n        - filter: 3\n          value: 1\n", "cfg.yml:6:19: filter must be text"},
        {"      weight:\n        - filter: mlp\n", "cfg.yml:6:11: this {filter, value} entry of parameter 'weight' "
                                                    "has no value: ("},
        {"      weight:\n        - value: [{value: 1}]\n",
         "cfg.yml:6:18: the value of a {filter, value} entry of parameter 'weight' must be a number"},
        {"      weight:\n        - value: []\n", "cfg.yml:6:18: parameter 'weight' is an empty list"},
    };
    for (size_t i = 0; i < MM_COUNT(params); i++) {
        char yaml[512];
        snprintf(yaml, sizeof yaml, "%s%s", m, params[i].param);
        EXPECT_ERR(yaml, -EINVAL, params[i].msg);
    }
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: a\nparameters: [1, 2]\n", -EINVAL,
               "cfg.yml:4:13: parameters must be a mapping of name: value, found a list (");
    EXPECT_ERR("merge_method: linear\nmodels:\n  - model: a\n    parameters: 0.5\n", -EINVAL,
               "cfg.yml:4:17: parameters must be a mapping of name: value, found a number (");

    /* the tokenizer option (D19) */
#define TOK_HEAD "merge_method: linear\nmodels:\n  - model: a\n"
    EXPECT_ERR(TOK_HEAD "tokenizer_source: union\ntokenizer: {source: base}\n", -EINVAL,
               "cfg.yml:5:1: tokenizer: and tokenizer_source: are both given (");
    EXPECT_ERR(TOK_HEAD "tokenizer: union\n", -EINVAL, "cfg.yml:4:12: tokenizer: must be a mapping with source:");
    EXPECT_ERR(TOK_HEAD "tokenizer: {sauce: union}\n", -EINVAL, "cfg.yml:4:13: tokenizer: has no key 'sauce' (");
    EXPECT_ERR(TOK_HEAD "tokenizer: {pad_to_multiple_of: 0}\n", -EINVAL,
               "cfg.yml:4:33: tokenizer.pad_to_multiple_of must be a positive integer");
    EXPECT_ERR(TOK_HEAD "tokenizer: {pad_to_multiple_of: 1.5}\n", -EINVAL,
               "tokenizer.pad_to_multiple_of must be a positive integer");
    EXPECT_ERR(TOK_HEAD "tokenizer: {tokens: [x]}\n", -EINVAL, "cfg.yml:4:21: tokenizer.tokens must map tokens to");
    EXPECT_ERR(TOK_HEAD "tokenizer:\n  tokens:\n    x: b\n", -EINVAL,
               "cfg.yml:6:5: tokenizer.tokens['x'] must be a mapping with source: and optionally force:");
    EXPECT_ERR(TOK_HEAD "tokenizer:\n  tokens:\n    x: {force: true}\n", -EINVAL,
               "tokenizer.tokens['x'] has no source (");
    EXPECT_ERR(TOK_HEAD "tokenizer:\n  tokens:\n    x: {source: b, force: 1}\n", -EINVAL,
               "tokenizer.tokens['x'].force must be true or false");
    EXPECT_ERR(TOK_HEAD "tokenizer:\n  tokens:\n    x: {source: b, weight: 1}\n", -EINVAL,
               "tokenizer.tokens['x'] has no key 'weight' (its keys are source and force)");
    EXPECT_ERR(TOK_HEAD "tokenizer:\n  tokens:\n    x: {source: {kind: one}}\n", -EINVAL,
               "tokenizer.tokens['x'].source: kind must be zero or model_token, found 'one'");
    EXPECT_ERR(TOK_HEAD "tokenizer:\n  tokens:\n    x: {source: {model: a, token_id: 1}}\n", -EINVAL,
               "cfg.yml:6:17: tokenizer.tokens['x'].source: a mapping needs kind: zero or model_token (");
    EXPECT_ERR(TOK_HEAD "tokenizer:\n  tokens:\n    x: {source: {kind: zero, model: a}}\n", -EINVAL,
               "tokenizer.tokens['x'].source: a zero source has no key 'model'");
    EXPECT_ERR(TOK_HEAD "tokenizer:\n  tokens:\n    x: {source: {kind: model_token, token_id: 1}}\n", -EINVAL,
               "model_token needs model:");
    EXPECT_ERR(TOK_HEAD "tokenizer:\n  tokens:\n    x: {source: {kind: model_token, model: a}}\n", -EINVAL,
               "model_token needs exactly one of token_id and token");
    EXPECT_ERR(TOK_HEAD "tokenizer:\n  tokens:\n    x: {source: {kind: model_token, model: a, token_id: 1, token: y}}\n",
               -EINVAL, "model_token needs exactly one of token_id and token");
    EXPECT_ERR(TOK_HEAD "tokenizer:\n  tokens:\n    x: {source: {kind: model_token, model: a, token_id: -1}}\n",
               -EINVAL, "tokenizer.tokens['x'].source.token_id must be a row number (an integer >= 0), found '-1'");
    EXPECT_ERR(TOK_HEAD "tokenizer:\n  tokens:\n    x: {source: {kind: model_token, model: a, token: [y]}}\n",
               -EINVAL, "tokenizer.tokens['x'].source.token must be a token's text, found a list");
    EXPECT_ERR(TOK_HEAD "tokenizer:\n  tokens:\n    x: {source: {kind: model_token, model: nowhere, token: y}}\n",
               -ENOENT, "nowhere");
    EXPECT_ERR(TOK_HEAD "chat_template: [chatml]\n", -EINVAL, "cfg.yml:4:16: chat_template must be text: auto, a built-in");
    /* not supported yet (D17) */
    EXPECT_ERR("genome:\n  models: [a, b]\n  merge_method: ties\ntasks:\n  - name: x\n", -ENOTSUP,
               "cfg.yml:1:1: genome: is not supported yet (this is a mergekit-evolve configuration");
    EXPECT_ERR("name: stage1\nmerge_method: linear\nmodels: [{model: a}]\n---\nname: final\nmerge_method: linear\n",
               -EINVAL, "cfg.yml:4:1: a second YAML document starts here: several documents make a mergekit-multi");

    /* the file itself */
    mm_config *c = (mm_config *)1;
    mm_err err;
    CHECK(mm_config_load("no-such-file.yml", &c, &err) == -ENOENT && c == NULL);
    CHECK_STR_CONTAINS(err.msg, "no-such-file.yml");
}

/* `modules:` (D18): a recipe per module, each with models: or slices: and its own parameters; the
 * module names are the planner's to check. */
static void test_modules_syntax(void)
{
    mm_config *c;
    mm_err err;
    int rc = load("merge_method: linear\nbase_model: c\nparameters: {weight: 1}\nmodules:\n"
                  "  text_decoder:\n    slices:\n      - sources:\n          - model: a\n            layer_range: [0, 2]\n"
                  "      - sources:\n          - model: b\n            layer_range: [1, 3]\n"
                  "    parameters: {weight: 0.5}\n"
                  "  vision_tower:\n    models:\n      - model: b\n",
                  &c, &err);
    CHECK(rc == 0);
    if (rc < 0) {
        fprintf(stderr, "  %s\n", err.msg);
        return;
    }
    CHECK(c->nslices == 0 && c->slices == NULL && c->nmodules == 2);
    const mm_module_def *t = &c->modules[0], *v = &c->modules[1];
    CHECK(strcmp(t->name, "text_decoder") == 0 && !t->models_syntax && t->nslices == 2);
    CHECK(t->slices[1].sources[0].layer_start == 1 && path_is(t->slices[1].sources[0].model.path, "b"));
    CHECK(num_of(&t->params, "weight") == 0.5 && t->pos.line == 5 && t->pos.col == 3);
    /* models: inside a module appends the base like the top-level models: does (B1.3) */
    CHECK(strcmp(v->name, "vision_tower") == 0 && v->models_syntax && v->nslices == 1 && v->params.n == 0);
    CHECK(v->slices[0].nsources == 2 && path_is(v->slices[0].sources[1].model.path, "c") &&
          v->slices[0].sources[1].is_base_appended);
    /* the donor: base_model, else the first model in file order */
    CHECK(path_is(mm_config_donor(c)->path, "c"));
    mm_config_free(c);
    rc = load("merge_method: passthrough\nmodules:\n  vision_tower:\n    models: [{model: b}]\n"
              "  text_decoder:\n    models: [{model: a}]\n", &c, &err);
    CHECK(rc == 0 && path_is(mm_config_donor(c)->path, "b"));
    mm_config_free(c);

    const char *m = "merge_method: linear\nmodels:\n  - model: a\n";
    char yaml[512];
    snprintf(yaml, sizeof yaml, "%smodules:\n  text_decoder:\n    models: [{model: a}]\n", m);
    EXPECT_ERR(yaml, -EINVAL, "cfg.yml:4:1: modules: is given together with top-level models: (");
    EXPECT_ERR("merge_method: linear\nmodules: [a]\n", -EINVAL,
               "cfg.yml:2:10: modules: must be a mapping of module names to recipes, found a list (");
    EXPECT_ERR("merge_method: linear\nmodules: {}\n", -EINVAL,
               "cfg.yml:2:10: modules: must be a mapping of module names to recipes, found an empty mapping (");
    EXPECT_ERR("merge_method: linear\nmodules:\n  text_decoder: [a]\n", -EINVAL,
               "cfg.yml:3:17: module 'text_decoder' must be a mapping with models: or slices:, found a list (");
    EXPECT_ERR("merge_method: linear\nmodules:\n  text_decoder:\n    parameters: {weight: 1}\n", -EINVAL,
               "cfg.yml:4:5: neither models: nor slices: is given for module 'text_decoder' (");
    EXPECT_ERR("merge_method: linear\nmodules:\n  text_decoder:\n    models: [{model: a}]\n    slices:\n"
               "      - sources: [{model: a, layer_range: [0, 1]}]\n",
               -EINVAL, "cfg.yml:5:5: both models: and slices: are given for module 'text_decoder' (");
    EXPECT_ERR("merge_method: linear\nmodules:\n  text_decoder:\n    slices:\n      - sources: [{model: a}]\n",
               -EINVAL, "this source has no layer_range: (");
}

static void test_null_options(void)
{
    /* Keys written with no value mean "not set", as for pydantic's Optional fields. */
    mm_config *c;
    mm_err err;
    int rc = load("merge_method: linear\nmodels:\n  - model: a\n    parameters:\nbase_model:\ndtype: ~\n"
                  "tokenizer_source: null\nchat_template:\nparameters: {}\n",
                  &c, &err);
    CHECK(rc == 0);
    if (rc == 0)
        CHECK(c->base_model == NULL && c->dtype == MM_DT_NONE && c->tokenizer_source == MM_TOK_DONOR &&
              c->params.n == 0 && c->slices[0].nsources == 1);
    else
        fprintf(stderr, "  %s\n", err.msg);
    mm_config_free(c);
}

/* The tokenizer: block and chat_template as the planner receives them (D19). */
static void test_tokenizer_block(void)
{
    const char *yaml = "merge_method: linear\n"
                       "models:\n"
                       "  - model: a\n"
                       "  - model: b\n"
                       "tokenizer:\n"
                       "  pad_to_multiple_of: 64\n"
                       "  tokens:\n"
                       "    \"<|im_end|>\": {source: b}\n"
                       "    \"<x>\": {source: {kind: zero}, force: true}\n"
                       "    \"<y>\": {source: {kind: model_token, model: a, token_id: 7}}\n"
                       "    \"<z>\":\n"
                       "      source: {kind: model_token, model: {path: b}, token: \"<s>\"}\n"
                       "chat_template: \"{% for m in messages %}{{ m.content }}{% endfor %}\"\n";
    mm_config *c;
    mm_err err;
    int rc = load(yaml, &c, &err);
    CHECK(rc == 0);
    if (rc != 0) {
        fprintf(stderr, "  %s\n", err.msg);
        return;
    }
    CHECK(c->tokenizer_source == MM_TOK_UNION && c->tokenizer_model == NULL); /* source defaults to union */
    CHECK(c->tokenizer_pos.line == 5 && c->tokenizer_pos.col == 1);
    CHECK(c->pad_to_multiple_of == 64 && c->ntokens == 4);
    const mm_tok_entry *t = c->tokens;
    CHECK(strcmp(t[0].token, "<|im_end|>") == 0 && t[0].kind == MM_TSRC_MODEL && path_is(t[0].model.path, "b") &&
          !t[0].force && t[0].pos.line == 8 && t[0].pos.col == 5);
    CHECK(strcmp(t[1].token, "<x>") == 0 && t[1].kind == MM_TSRC_ZERO && t[1].force);
    CHECK(t[2].kind == MM_TSRC_MODEL_TOKEN && path_is(t[2].model.path, "a") && t[2].token_id == 7 && !t[2].token_text);
    CHECK(t[3].kind == MM_TSRC_MODEL_TOKEN && path_is(t[3].model.path, "b") && t[3].token_id == -1 &&
          t[3].token_text && strcmp(t[3].token_text, "<s>") == 0);
    CHECK(c->chat_template && strcmp(c->chat_template, "{% for m in messages %}{{ m.content }}{% endfor %}") == 0);
    CHECK(c->chat_template_pos.line == 13);
    mm_config_free(c);

    rc = load("merge_method: linear\nmodels:\n  - model: a\ntokenizer: {source: base}\nchat_template: auto\n", &c,
              &err);
    CHECK(rc == 0 && c->tokenizer_source == MM_TOK_BASE && c->ntokens == 0 && c->pad_to_multiple_of == 0);
    CHECK(rc == 0 && strcmp(c->chat_template, "auto") == 0);
    mm_config_free(rc == 0 ? c : NULL);
    rc = load("merge_method: linear\nmodels:\n  - model: a\ntokenizer_source: union\n", &c, &err);
    CHECK(rc == 0 && c->tokenizer_source == MM_TOK_UNION && c->tokenizer_pos.line == 4);
    mm_config_free(rc == 0 ? c : NULL);
    rc = load("merge_method: linear\nmodels:\n  - model: a\ntokenizer: {source: c}\n", &c, &err);
    CHECK(rc == 0 && c->tokenizer_source == MM_TOK_MODEL && path_is(c->tokenizer_model->path, "c"));
    mm_config_free(rc == 0 ? c : NULL);
}

int main(void)
{
    char *old_cwd;
    if (check_enter_tmpdir(tmp, "mm-config", &old_cwd) < 0)
        return 1;
    char *hub = at("hub");
    mkdir(hub, 0755);
    setenv("HF_HUB_CACHE", hub, 1); /* an empty cache: nothing outside the test folder is found */
    free(hub);
    make_model("a", "model.safetensors");
    make_model("b", "model.safetensors.index.json");
    make_model("c", "model.safetensors");
    make_model("base", "model.safetensors");
    make_model("noweights", "config.json");
    make_model("pickle", "pytorch_model.bin");

    test_models_syntax();
    test_modules_syntax();
    test_base_listed();
    test_slices_syntax();
    test_hub_ref();
    test_yaml_features();
    test_warnings();
    test_errors();
    test_null_options();
    test_tokenizer_block();

    if (chdir(old_cwd) != 0)
        perror("chdir");
    free(old_cwd);
    nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return mm_check_report();
}
