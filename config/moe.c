/* A mergekit-moe config (mergekit/moe/config.py MoEMergeConfig, docs/merge-contract.md D20) → mm_config.moe.
 * The checks mergekit makes before building (is_bad_config) are made here too, so that a bad file is
 * refused before anything is mounted; the checks that need the models (their architectures, which
 * output architecture takes them) are the planner's. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"

static const char *const moe_keys[] = {"base_model", "experts", "gate_mode", "dtype", "experts_per_token",
                                       "shared_experts", "architecture"};
static const char *const expert_keys[] = {"source_model", "positive_prompts", "negative_prompts", "noise_scale",
                                          "residual_scale"};
static const mm_cfg_level L_MOE = {"in a mergekit-moe config", moe_keys, MM_COUNT(moe_keys)};
static const mm_cfg_level L_EXPERT = {"in an expert", expert_keys, MM_COUNT(expert_keys)};

static const char *const gate_modes[] = {"hidden", "hidden_avg", "hidden_last", "cheap_embed", "random",
                                         "uniform_random"};

static int load_prompts(const mm_cfg_ctx *x, const mm_ynode *n, const char *what, char ***out, size_t *nout)
{
    if (!mm_cfg_given(n))
        return 0;
    if (n->kind != MM_YN_SEQ)
        return mm_cfg_fail(x, n, -EINVAL, "%s must be a list of prompts, found %s (write e.g. %s: [\"tell me a "
                           "story\"])", what, mm_ynode_describe(n), what);
    *out = mm_xcalloc(n->nitems ? n->nitems : 1, sizeof **out);
    for (size_t i = 0; i < n->nitems; i++) {
        const mm_ynode *p = n->items[i];
        if (p->kind != MM_YN_SCALAR || mm_ynode_is_null(p))
            return mm_cfg_fail(x, p, -EINVAL, "%s[%zu] must be text, found %s (quote it)", what, i,
                               mm_ynode_describe(p));
        (*out)[(*nout)++] = mm_xstrdup(p->text);
    }
    return 0;
}

static int load_scale(const mm_cfg_ctx *x, const mm_ynode *e, const char *key, double *out)
{
    const mm_ynode *v = mm_ymap_get(e, key, NULL);
    *out = NAN;
    if (!mm_cfg_given(v))
        return 0;
    if (v->kind != MM_YN_SCALAR || (v->type != MM_YS_INT && v->type != MM_YS_FLOAT) || !isfinite(v->num))
        return mm_cfg_fail(x, v, -EINVAL, "%s must be a number, found %s", key, mm_ynode_describe(v));
    *out = v->num;
    return 0;
}

static int load_expert(const mm_cfg_ctx *x, const mm_ynode *e, const char *list, size_t i, mm_moe_expert *out)
{
    out->pos = mm_cfg_pos(x, e);
    out->noise_scale = out->residual_scale = NAN;
    if (e->kind != MM_YN_MAP)
        return mm_cfg_fail(x, e, -EINVAL, "%s[%zu] must be a mapping with source_model: and positive_prompts:, "
                           "found %s", list, i, mm_ynode_describe(e));
    mm_cfg_check_keys(x, e, &L_EXPERT);
    const mm_ynode *src = mm_ymap_get(e, "source_model", NULL);
    if (!mm_cfg_given(src))
        return mm_cfg_fail(x, e, -EINVAL, "%s[%zu] has no source_model (write source_model: org/name or a "
                           "folder)", list, i);
    int rc = mm_cfg_load_ref(x, src, "source_model", 1, &out->model);
    if (rc == 0)
        rc = load_prompts(x, mm_ymap_get(e, "positive_prompts", NULL), "positive_prompts", &out->positive,
                          &out->npositive);
    if (rc == 0)
        rc = load_prompts(x, mm_ymap_get(e, "negative_prompts", NULL), "negative_prompts", &out->negative,
                          &out->nnegative);
    if (rc == 0)
        rc = load_scale(x, e, "noise_scale", &out->noise_scale);
    if (rc == 0)
        rc = load_scale(x, e, "residual_scale", &out->residual_scale);
    return rc;
}

static int load_experts(const mm_cfg_ctx *x, const mm_ynode *n, const char *key, mm_moe_expert **out, size_t *nout)
{
    if (n->kind != MM_YN_SEQ)
        return mm_cfg_fail(x, n, -EINVAL, "%s must be a list of {source_model, positive_prompts, ...}, found %s",
                           key, mm_ynode_describe(n));
    *out = mm_xcalloc(n->nitems ? n->nitems : 1, sizeof **out);
    for (size_t i = 0; i < n->nitems; i++) {
        *nout = i + 1;
        int rc = load_expert(x, n->items[i], key, i, &(*out)[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int same_strings(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return 0;
    return 1;
}

/* mergekit's is_bad_config: what makes mergekit-moe stop before it loads anything. */
static int check_moe(const mm_cfg_ctx *x, const mm_ynode *root, const mm_moe_def *m)
{
    const mm_ynode *ek = NULL;
    mm_ymap_get(root, "experts", &ek);
    if (m->experts_per_token < 1)
        return mm_cfg_fail(x, mm_ymap_get(root, "experts_per_token", NULL), -EINVAL,
                           "experts_per_token must be at least 1, found %ld", m->experts_per_token);
    if ((long)m->nexperts < m->experts_per_token)
        return mm_cfg_fail(x, ek, -EINVAL, "%zu experts but experts_per_token %ld: there must be at least as many "
                           "experts as experts_per_token (add experts or lower experts_per_token)",
                           m->nexperts, m->experts_per_token);
    if (strcmp(m->gate_mode, "random") == 0)
        return 0;
    for (size_t i = 0; i < m->nexperts; i++)
        if (m->experts[i].npositive == 0) {
            char pos[512];
            mm_srcpos_format(&m->experts[i].pos, pos, sizeof pos);
            return mm_err_set(x->err, -EINVAL, "%s: expert %zu (%s) has no positive_prompts; gate_mode %s computes "
                              "its router weights from them (add positive_prompts: [...], or use gate_mode: "
                              "random)", pos, i, m->experts[i].model.ref, m->gate_mode);
        }
    int all_same = 1;
    for (size_t i = 1; i < m->nexperts && all_same; i++)
        all_same = same_strings(m->experts[i].positive, m->experts[i].npositive, m->experts[0].positive,
                                m->experts[0].npositive) &&
                   same_strings(m->experts[i].negative, m->experts[i].nnegative, m->experts[0].negative,
                                m->experts[0].nnegative);
    if (all_same && m->nexperts > 1)
        return mm_cfg_fail(x, ek, -EINVAL, "every expert has the same positive and negative prompts, so the router "
                           "cannot tell them apart (give each expert prompts that reflect what should be routed "
                           "to it)");
    return 0;
}

int mm_cfg_load_moe(const mm_cfg_ctx *x, const mm_ynode *root)
{
    mm_config *c = x->c;
    mm_moe_def *m = c->moe = mm_xcalloc(1, sizeof *m);
    char buf[256];
    mm_cfg_check_keys(x, root, &L_MOE);
    const mm_ynode *ek, *experts = mm_ymap_get(root, "experts", &ek);
    m->pos = mm_cfg_pos(x, ek);
    const mm_ynode *base = mm_ymap_get(root, "base_model", NULL);
    if (!mm_cfg_given(base))
        return mm_cfg_fail(x, root, -EINVAL, "a mergekit-moe config (it has experts:) needs base_model: the model "
                           "whose attention, embeddings and norms the MoE keeps (add base_model: org/name)");
    c->base_model = mm_xcalloc(1, sizeof *c->base_model);
    int rc = mm_cfg_load_ref(x, base, "base_model", 1, c->base_model);
    if (rc == 0)
        rc = mm_cfg_load_dtype(x, root, "dtype", &c->dtype, &c->dtype_pos);
    if (rc < 0)
        return rc;
    const mm_ynode *gk, *gate = mm_ymap_get(root, "gate_mode", &gk);
    m->gate_mode = mm_xstrdup("hidden");
    if (mm_cfg_given(gate)) {
        size_t i = 0;
        while (i < MM_COUNT(gate_modes) && !(mm_ynode_is_str(gate) && strcmp(gate->text, gate_modes[i]) == 0))
            i++;
        if (i == MM_COUNT(gate_modes))
            return mm_cfg_fail(x, gate, -EINVAL, "gate_mode %s is not one of hidden, hidden_avg, hidden_last, "
                               "cheap_embed, random, uniform_random", mm_cfg_shown(gate, buf, sizeof buf));
        free(m->gate_mode);
        m->gate_mode = mm_xstrdup(gate->text);
        m->gate_pos = mm_cfg_pos(x, gate);
    }
    const mm_ynode *ept = mm_ymap_get(root, "experts_per_token", NULL);
    m->experts_per_token = 2;
    if (mm_cfg_given(ept)) {
        if (ept->kind != MM_YN_SCALAR || ept->type != MM_YS_INT || !ept->ival_ok || ept->ival > INT32_MAX ||
            ept->ival < INT32_MIN)
            return mm_cfg_fail(x, ept, -EINVAL, "experts_per_token must be an integer, found %s",
                               mm_cfg_shown(ept, buf, sizeof buf));
        m->experts_per_token = (long)ept->ival;
        m->experts_per_token_pos = mm_cfg_pos(x, ept);
    }
    const mm_ynode *arch = mm_ymap_get(root, "architecture", NULL);
    if (mm_cfg_given(arch)) {
        if (!mm_ynode_is_str(arch))
            return mm_cfg_fail(x, arch, -EINVAL, "architecture must be mixtral, deepseek, qwen or qwen3, found %s",
                               mm_ynode_describe(arch));
        m->architecture = mm_xstrdup(arch->text);
        m->architecture_pos = mm_cfg_pos(x, arch);
    }
    if ((rc = load_experts(x, experts, "experts", &m->experts, &m->nexperts)) < 0)
        return rc;
    const mm_ynode *shared = mm_ymap_get(root, "shared_experts", NULL);
    if (mm_cfg_given(shared) && (rc = load_experts(x, shared, "shared_experts", &m->shared, &m->nshared)) < 0)
        return rc;
    return check_moe(x, root, m);
}

static void free_experts(mm_moe_expert *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mm_cfg_free_ref(&e[i].model);
        for (size_t k = 0; k < e[i].npositive; k++)
            free(e[i].positive[k]);
        for (size_t k = 0; k < e[i].nnegative; k++)
            free(e[i].negative[k]);
        free(e[i].positive);
        free(e[i].negative);
    }
    free(e);
}

void mm_cfg_free_moe(mm_moe_def *m)
{
    if (!m)
        return;
    free_experts(m->experts, m->nexperts);
    free_experts(m->shared, m->nshared);
    free(m->gate_mode);
    free(m->architecture);
    free(m);
}
