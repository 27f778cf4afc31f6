/* Planning a mergekit-moe config (merge/plan/moe.h; mergekit/moe/{mixtral,deepseek,qwen,qwen3}.py and
 * scripts/moe.py are what this reproduces, rule by rule). */
#include "moe.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/philox.h"
#include "formats/jsonpy.h"
#include "merge/plan/config_out.h"
#include "plan_internal.h"

/* ---- output architectures (mergekit's ALL_OUTPUT_ARCHITECTURES, in its order) -------------------------- */

typedef enum { ARCH_MIXTRAL, ARCH_DEEPSEEK, ARCH_QWEN, ARCH_QWEN3, NARCH } arch_id;

static const struct {
    const char *name;        /* mergekit's name(): `architecture:` matches a prefix of it, lower case */
    const char *class_name;  /* config.json architectures[0] */
    const char *model_type;
    const char *prefix;      /* of the MoE block of a layer: "model.layers.N.<prefix>" */
    const char *expert[3];   /* expert parameter names for gate_proj, up_proj, down_proj */
    const char *shared;      /* the shared expert's block, or NULL */
} ARCHS[NARCH] = {
    [ARCH_MIXTRAL] = {"mixtral", "MixtralForCausalLM", "mixtral", "block_sparse_moe", {"w1", "w3", "w2"}, NULL},
    [ARCH_DEEPSEEK] = {"deepseek moe", "DeepseekForCausalLM", "deepseek", "mlp",
                       {"gate_proj", "up_proj", "down_proj"}, "shared_experts"},
    [ARCH_QWEN] = {"qwen moe", "Qwen2MoeForCausalLM", "qwen2_moe", "mlp", {"gate_proj", "up_proj", "down_proj"},
                   "shared_expert"},
    [ARCH_QWEN3] = {"qwen3 moe", "Qwen3MoeForCausalLM", "qwen3_moe", "mlp", {"gate_proj", "up_proj", "down_proj"},
                    NULL},
};
static const char *const MLP[3] = {"gate_proj", "up_proj", "down_proj"};

static const char *model_type(const mm_model *m)
{
    const cJSON *t = m->config ? cJSON_GetObjectItemCaseSensitive(m->config, "model_type") : NULL;
    return cJSON_IsString(t) ? t->valuestring : "";
}

static int any_prompts(const mm_moe_expert *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (e[i].npositive || e[i].nnegative)
            return 1;
    return 0;
}

/* Whether arch `a` takes the config and models (mergekit's supports_config); why not in `why`. */
static int supports(arch_id a, const mm_moe_def *m, const char *const *types, size_t n, char *why, size_t len)
{
    int same = 1;
    for (size_t i = 1; i < n; i++)
        same &= strcmp(types[i], types[0]) == 0;
    const char *t = types[0];
    switch (a) {
    case ARCH_MIXTRAL:
        if (m->nshared)
            return snprintf(why, len, "it has no shared experts"), 0;
        if (!same || (strcmp(t, "llama") && strcmp(t, "mistral")))
            return snprintf(why, len, "it takes Llama or Mistral models, all of one type"), 0;
        return 1;
    case ARCH_DEEPSEEK:
        if (m->nshared > 1)
            return snprintf(why, len, "it takes at most one shared expert"), 0;
        if (m->nshared && any_prompts(m->shared, m->nshared))
            return snprintf(why, len, "its shared expert has no router, so it takes no prompts"), 0;
        if (!same || (strcmp(t, "llama") && strcmp(t, "mistral")))
            return snprintf(why, len, "it takes Llama or Mistral models, all of one type"), 0;
        return 1;
    case ARCH_QWEN:
        if (m->nshared != 1)
            return snprintf(why, len, "it needs exactly one shared expert"), 0;
        if (strcmp(m->gate_mode, "random") && !m->shared[0].npositive)
            return snprintf(why, len, "its shared expert needs positive_prompts for its router"), 0;
        if (!same || (strcmp(t, "llama") && strcmp(t, "mistral") && strcmp(t, "qwen2")))
            return snprintf(why, len, "it takes Qwen2, Llama or Mistral models, all of one type"), 0;
        return 1;
    case ARCH_QWEN3:
        if (m->nshared)
            return snprintf(why, len, "it has no shared experts"), 0;
        for (size_t i = 0; i < n; i++)
            if (strcmp(types[i], "qwen3"))
                return snprintf(why, len, "it takes Qwen3 models only"), 0;
        return 1;
    default:
        return 0;
    }
}

static int lower_prefix(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (!*s || (*s | 0x20) != (*prefix | 0x20))
            return 0;
    return 1;
}

/* mergekit's select_output_arch: the candidates `architecture:` names (a prefix of the name), those
 * that support the config; Mixtral when it is one of them, else the first. */
static int choose_arch(const mm_plan *p, const char *const *types, size_t n, arch_id *out, mm_err *err)
{
    const mm_moe_def *m = p->cfg->moe;
    mm_buf why = {0};
    int found = -1, named = 0;
    for (int a = 0; a < NARCH; a++) {
        if (m->architecture && !lower_prefix(ARCHS[a].name, m->architecture))
            continue;
        named++;
        char reason[160];
        if (supports((arch_id)a, m, types, n, reason, sizeof reason)) {
            if (found < 0) /* Mixtral comes first: "Mixtral if it can, else the first" is the first */
                found = a;
        } else {
            mm_buf_printf(&why, "%s%s: %s", why.len ? "; " : "", ARCHS[a].name, reason);
        }
    }
    char pos[512];
    mm_srcpos_format(m->architecture ? &m->architecture_pos : &m->pos, pos, sizeof pos);
    int rc = 0;
    if (!named)
        rc = mm_err_set(err, -EINVAL, "%s: architecture '%s' is none of the MoE outputs (mixtral, deepseek, qwen, "
                        "qwen3)", pos, m->architecture);
    else if (found < 0)
        rc = mm_err_set(err, -EINVAL, "%s: no MoE output architecture takes these models (base '%s' is %s): %s",
                        pos, p->cfg->base_model->ref, types[0][0] ? types[0] : "of no model_type",
                        why.data ? why.data : "");
    else
        *out = (arch_id)found;
    mm_buf_free(&why);
    return rc;
}

/* ---- tensors ------------------------------------------------------------------------------------------ */

typedef struct moe_ctx {
    mm_plan *p;
    const mm_moe_def *m;
    arch_id arch;
    size_t base;           /* model index of the base */
    size_t *expert_idx;    /* model index per expert (routed, then shared) */
    mm_dtype dtype;        /* the output's (select_dtype) */
    int layers;
    uint64_t hidden, inter;
    int packed;            /* --moe-layout packed (DeepSeek's remote code has no packed layout: per expert) */
} moe_ctx;

/* Input `in` of tensor o: model's tensor mt with the expert's residual_scale (down_proj only) and, when
 * o's method has that parameter, noise_scale, its noise keyed by the per-expert output name (the same
 * values in either layout). */
static void set_expert_input(const mm_out_tensor *o, mm_input *in, size_t model, const mm_model_tensor *mt,
                             const mm_moe_expert *e, int residual, const char *name)
{
    in->model_idx = model;
    in->mt = mt;
    in->mvals[0] = e && residual ? e->residual_scale : NAN;
    if (o->method->nmparams > 1) {
        in->mvals[1] = e ? e->noise_scale : NAN;
        in->stream = mm_rng_stream(name, 0);
    }
}

/* A copy of model `model`'s tensor `in_name` as `out_name`, cast to the output dtype, with the expert's
 * residual_scale (down_proj only) and noise_scale when `e` is given. */
static int add_copy(moe_ctx *c, const char *out_name, size_t model, const char *in_name, const mm_moe_expert *e,
                    int residual, mm_err *err)
{
    const mm_model_tensor *mt = mm_model_find(c->p->models[model], in_name);
    if (!mt)
        return mm_err_set(err, -EINVAL, "model '%s' (%s) has no tensor '%s', which the MoE's '%s' is made of",
                          c->p->model_refs[model], c->p->models[model]->path, in_name, out_name);
    int noisy = e && !isnan(e->noise_scale);
    mm_out_tensor *o = mm_plan_new_tensor(c->p, out_name, noisy ? &mm_method_moe_expert : mm_method_find("passthrough"),
                                          1);
    set_expert_input(o, &o->inputs[0], model, mt, e, residual, out_name);
    o->group_label = mm_xstrdup(out_name);
    int rc = mm_plan_finish_tensor(c->p, o, err);
    /* mergekit applies noise and residual_scale in the source's dtype and then casts every tensor to the
     * output dtype (select_dtype); other dtypes stay as they are */
    if (rc == 0 && o->comp != MM_DT_NONE) {
        o->comp = mt->st->dtype;
        o->dtype = c->dtype;
    }
    return rc;
}

/* A tensor of zeros (Qwen2-MoE's attention biases, which a Llama base does not have). */
static void add_zeros(moe_ctx *c, const char *name, uint64_t n)
{
    mm_out_tensor *o = mm_plan_new_tensor(c->p, name, &mm_method_moe_router, 0);
    o->ndim = 1;
    o->shape[0] = o->numel = n;
    o->comp = o->dtype = c->dtype;
    o->group_label = mm_xstrdup(name);
}

static void add_router(moe_ctx *c, const char *name, const mm_router *r)
{
    mm_out_tensor *o = mm_plan_new_tensor(c->p, name, &mm_method_moe_router, 0);
    o->ndim = 2;
    o->shape[0] = r->count;
    o->shape[1] = c->hidden;
    o->numel = r->count * c->hidden;
    o->comp = o->dtype = c->dtype;
    o->router = r;
    o->group_label = mm_xstrdup(name);
}

/* The three MLP weights of every expert at every layer must have the base's shapes. */
static int check_shapes(moe_ctx *c, mm_err *err)
{
    const mm_model *b = c->p->models[c->base];
    size_t n = c->m->nexperts + c->m->nshared;
    for (int l = 0; l < c->layers; l++)
        for (int k = 0; k < 3; k++) {
            char name[256];
            snprintf(name, sizeof name, "model.layers.%d.mlp.%s.weight", l, MLP[k]);
            const mm_model_tensor *bt = mm_model_find(b, name);
            for (size_t e = 0; e < n && bt; e++) {
                const mm_model_tensor *et = mm_model_find(c->p->models[c->expert_idx[e]], name);
                if (et && (et->st->ndim != bt->st->ndim ||
                           memcmp(et->st->shape, bt->st->shape, sizeof bt->st->shape[0] * (size_t)bt->st->ndim))) {
                    char a[128], s[128];
                    mm_st_shape_text(bt->st, a, sizeof a);
                    mm_st_shape_text(et->st, s, sizeof s);
                    return mm_err_set(err, -EINVAL, "expert '%s': '%s' is %s but %s in the base '%s': experts must "
                                      "have the base's architecture and sizes",
                                      c->p->model_refs[c->expert_idx[e]], name, s, a, c->p->model_refs[c->base]);
                }
            }
        }
    return 0;
}

/* The name of expert e's part k (0 gate, 1 up, 2 down) at layer l in the per-expert layout. */
static void expert_name(const moe_ctx *c, int l, size_t e, int k, char *out, size_t len)
{
    snprintf(out, len, "model.layers.%d.%s.experts.%zu.%s.weight", l, ARCHS[c->arch].prefix, e,
             ARCHS[c->arch].expert[k]);
}

/* transformers 5's packed experts of layer l (its checkpoint conversion: per expert gate then up rows
 * in experts.gate_up_proj [E, 2I, H], down_proj stacked in experts.down_proj [E, H, I]): one tensor read
 * from the experts' own tensors laid end to end. */
static int add_packed(moe_ctx *c, int l, int down, mm_err *err)
{
    const mm_moe_def *m = c->m;
    size_t n = down ? m->nexperts : 2 * m->nexperts;
    char name[320], in[256], pe[320];
    snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%s", l, down ? "down_proj" : "gate_up_proj");
    mm_out_tensor *o = mm_plan_new_tensor(c->p, name, &mm_method_moe_packed, n);
    o->group_label = mm_xstrdup(name);
    for (size_t j = 0; j < n; j++) {
        size_t e = down ? j : j / 2;
        int k = down ? 2 : (int)(j % 2);
        snprintf(in, sizeof in, "model.layers.%d.mlp.%s.weight", l, MLP[k]);
        const mm_model_tensor *mt = mm_model_find(c->p->models[c->expert_idx[e]], in);
        if (!mt)
            return mm_err_set(err, -EINVAL, "model '%s' has no tensor '%s', which the MoE's '%s' is made of",
                              c->p->model_refs[c->expert_idx[e]], in, name);
        expert_name(c, l, e, k, pe, sizeof pe);
        set_expert_input(o, &o->inputs[j], c->expert_idx[e], mt, &m->experts[e], k == 2, pe);
    }
    const mm_st_tensor *st = o->inputs[0].mt->st; /* [I, H] or [H, I], the same for all (check_shapes) */
    o->ndim = 3;
    o->shape[0] = m->nexperts;
    o->shape[1] = down ? st->shape[0] : 2 * st->shape[0];
    o->shape[2] = st->shape[1];
    o->concat_seg = st->shape[0] * st->shape[1];
    o->numel = o->concat_seg * n;
    o->comp = o->dtype = c->dtype;
    return 0;
}

static int plan_layers(moe_ctx *c, mm_err *err)
{
    const mm_moe_def *m = c->m;
    int rc = 0;
    char in[256], out[320];
    size_t nshared_gates = mm_moe_gates_rows(c->p->moe_gates) - m->nexperts;
    c->p->routers = mm_xcalloc((size_t)c->layers * 2, sizeof *c->p->routers);
    for (int l = 0; l < c->layers && rc == 0; l++) {
        if (c->packed)
            for (int down = 0; down < 2 && rc == 0; down++)
                rc = add_packed(c, l, down, err);
        for (size_t e = c->packed ? m->nexperts : 0; e < m->nexperts + m->nshared && rc == 0; e++) {
            const mm_moe_expert *ex = e < m->nexperts ? &m->experts[e] : &m->shared[e - m->nexperts];
            for (int k = 0; k < 3 && rc == 0; k++) {
                snprintf(in, sizeof in, "model.layers.%d.mlp.%s.weight", l, MLP[k]);
                if (e < m->nexperts)
                    expert_name(c, l, e, k, out, sizeof out);
                else
                    snprintf(out, sizeof out, "model.layers.%d.mlp.%s.%s.weight", l, ARCHS[c->arch].shared, MLP[k]);
                rc = add_copy(c, out, c->expert_idx[e], in, ex, k == 2, err);
            }
        }
        mm_router *r = &c->p->routers[c->p->nrouters++];
        *r = (mm_router){c->p->moe_gates, l, 0, m->nexperts};
        snprintf(out, sizeof out, "model.layers.%d.%s.gate.weight", l, c->packed ? "mlp" : ARCHS[c->arch].prefix);
        add_router(c, out, r);
        if (c->arch == ARCH_QWEN && nshared_gates) {
            r = &c->p->routers[c->p->nrouters++];
            *r = (mm_router){c->p->moe_gates, l, m->nexperts, 1};
            snprintf(out, sizeof out, "model.layers.%d.mlp.shared_expert_gate.weight", l);
            add_router(c, out, r);
        }
    }
    return rc;
}

/* The base's tensors outside the MLPs; for Qwen2-MoE, zero q/k/v biases where a Llama base has none. */
static int plan_base(moe_ctx *c, mm_err *err)
{
    const mm_model *b = c->p->models[c->base];
    int rc = 0;
    for (size_t i = 0; i < b->ntensors && rc == 0; i++) {
        const char *name = b->tensors[i].name;
        if (strstr(name, ".mlp.")) {
            int known = 0;
            for (int k = 0; k < 3; k++) {
                char want[64];
                snprintf(want, sizeof want, ".mlp.%s.weight", MLP[k]);
                size_t nl = strlen(name), wl = strlen(want);
                known |= nl > wl && strcmp(name + nl - wl, want) == 0;
            }
            if (!known)
                return mm_err_set(err, -EINVAL, "base model '%s' has MLP tensor '%s', which a %s MoE has no place "
                                  "for (only gate_proj, up_proj and down_proj weights become experts)",
                                  c->p->model_refs[c->base], name, ARCHS[c->arch].name);
            continue;
        }
        rc = add_copy(c, name, c->base, name, NULL, 0, err);
    }
    if (c->arch != ARCH_QWEN)
        return rc;
    const cJSON *cfg = b->config;
    const cJSON *heads = cJSON_GetObjectItemCaseSensitive(cfg, "num_attention_heads"),
                *kv = cJSON_GetObjectItemCaseSensitive(cfg, "num_key_value_heads");
    uint64_t nh = cJSON_IsNumber(heads) ? (uint64_t)heads->valuedouble : 0;
    uint64_t nkv = cJSON_IsNumber(kv) ? (uint64_t)kv->valuedouble : nh;
    uint64_t hd = nh ? c->hidden / nh : 0;
    static const char *const proj[3] = {"q_proj", "k_proj", "v_proj"};
    for (int l = 0; l < c->layers && rc == 0; l++)
        for (int k = 0; k < 3; k++) {
            char name[256];
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.bias", l, proj[k]);
            if (!mm_model_find(b, name))
                add_zeros(c, name, (k ? nkv : nh) * hd);
        }
    return rc;
}

/* ---- config.json -------------------------------------------------------------------------------------- */

static void set_num(cJSON *o, const char *key, double v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, key);
    cJSON_AddNumberToObject(o, key, v);
}

static void set_bool(cJSON *o, const char *key, int v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, key);
    cJSON_AddBoolToObject(o, key, v);
}

static void set_null(cJSON *o, const char *key)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, key);
    cJSON_AddNullToObject(o, key);
}

static void set_str(cJSON *o, const char *key, const char *v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, key);
    cJSON_AddStringToObject(o, key, v);
}

/* The base's config.json with the fields each of mergekit's _generate_config sets. */
static char *config_text(const moe_ctx *c)
{
    const mm_moe_def *m = c->m;
    cJSON *cfg = cJSON_Duplicate(c->p->models[c->base]->config, 1);
    cJSON *arch = cJSON_CreateArray();
    cJSON_AddItemToArray(arch, cJSON_CreateString(ARCHS[c->arch].class_name));
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "architectures");
    cJSON_AddItemToObject(cfg, "architectures", arch);
    set_str(cfg, "model_type", ARCHS[c->arch].model_type);
    double k = (double)m->experts_per_token;
    switch (c->arch) {
    case ARCH_MIXTRAL:
        set_num(cfg, "num_local_experts", (double)m->nexperts);
        set_num(cfg, "num_experts_per_tok", k);
        set_null(cfg, "sliding_window");
        break;
    case ARCH_DEEPSEEK:
        set_num(cfg, "n_routed_experts", (double)m->nexperts);
        if (m->nshared)
            set_num(cfg, "n_shared_experts", (double)m->nshared);
        else
            set_null(cfg, "n_shared_experts");
        set_num(cfg, "num_experts_per_tok", k);
        set_num(cfg, "first_k_dense_replace", 0);
        set_num(cfg, "moe_layer_freq", 1);
        set_str(cfg, "scoring_func", "softmax");
        set_bool(cfg, "norm_topk_prob", 1);
        set_num(cfg, "moe_intermediate_size", (double)c->inter);
        break;
    case ARCH_QWEN:
    case ARCH_QWEN3:
        set_num(cfg, "num_experts", (double)m->nexperts);
        set_num(cfg, "num_experts_per_tok", k);
        set_num(cfg, "decoder_sparse_step", 1);
        set_bool(cfg, "norm_topk_prob", 1);
        set_num(cfg, "moe_intermediate_size", (double)c->inter);
        if (c->arch == ARCH_QWEN) {
            set_null(cfg, "sliding_window");
            set_bool(cfg, "use_sliding_window", 0);
            set_num(cfg, "shared_expert_intermediate_size", (double)c->inter);
        }
        break;
    default:
        break;
    }
    mm_config_set_dtype(cfg, mm_dtype_torch_name(c->dtype));
    mm_buf b = {0};
    mm_json_write_py(cfg, &b);
    mm_buf_puts(&b, "\n");
    cJSON_Delete(cfg);
    return b.data;
}

/* ---- the whole plan ----------------------------------------------------------------------------------- */

static long config_int(const mm_model *m, const char *key)
{
    const cJSON *v = m->config ? cJSON_GetObjectItemCaseSensitive(m->config, key) : NULL;
    return cJSON_IsNumber(v) ? (long)v->valuedouble : -1;
}

/* select_dtype: `dtype:`, else the base's config.json dtype (torch_dtype), else bfloat16. */
static mm_dtype output_dtype(const mm_plan *p, size_t base)
{
    if (p->cfg->dtype != MM_DT_NONE)
        return p->cfg->dtype;
    const cJSON *cfg = p->models[base]->config;
    static const char *const keys[] = {"torch_dtype", "dtype"};
    for (size_t i = 0; i < MM_COUNT(keys); i++) {
        const cJSON *v = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, keys[i]) : NULL;
        mm_dtype d = cJSON_IsString(v) ? mm_dtype_from_config_name(v->valuestring) : MM_DT_NONE;
        if (d != MM_DT_NONE)
            return d;
    }
    return MM_DT_BF16;
}

int mm_plan_moe(mm_plan *p, mm_err *err)
{
    const mm_moe_def *m = p->cfg->moe;
    moe_ctx c = {.p = p, .m = m};
    size_t n = m->nexperts + m->nshared;
    c.expert_idx = mm_xcalloc(n, sizeof *c.expert_idx);
    const char **types = mm_xcalloc(n + 1, sizeof *types);
    int rc = mm_plan_model(p, p->cfg->base_model, &c.base, err);
    p->donor = c.base;
    for (size_t e = 0; e < n && rc == 0; e++)
        rc = mm_plan_model(p, e < m->nexperts ? &m->experts[e].model : &m->shared[e - m->nexperts].model,
                           &c.expert_idx[e], err);
    if (rc == 0) {
        types[0] = model_type(p->models[c.base]);
        for (size_t e = 0; e < n; e++)
            types[e + 1] = model_type(p->models[c.expert_idx[e]]);
        rc = choose_arch(p, types, n + 1, &c.arch, err);
    }
    if (rc == 0) {
        const mm_model *b = p->models[c.base];
        c.layers = (int)config_int(b, "num_hidden_layers");
        c.hidden = (uint64_t)config_int(b, "hidden_size");
        c.inter = (uint64_t)config_int(b, "intermediate_size");
        if (c.layers <= 0 || (long)c.hidden <= 0 || (long)c.inter <= 0)
            rc = mm_err_set(err, -EINVAL, "base model '%s': config.json needs num_hidden_layers, hidden_size and "
                            "intermediate_size for a MoE", p->cfg->base_model->ref);
    }
    if (rc == 0 && !p->opt.moe_allow_same && m->nexperts > 1) {
        size_t same = 1;
        for (size_t e = 1; e < m->nexperts; e++)
            same += c.expert_idx[e] == c.expert_idx[0];
        if (same == m->nexperts) {
            char pos[512];
            mm_srcpos_format(&m->pos, pos, sizeof pos);
            rc = mm_err_set(err, -EINVAL, "%s: every expert is the model '%s': the output would cost more and answer "
                            "exactly as that model (pass --i-understand-this-is-not-useful-without-training if you "
                            "mean to train it further)", pos, p->model_refs[c.expert_idx[0]]);
        }
    }
    if (rc == 0)
        rc = check_shapes(&c, err);
    c.packed = p->opt.moe_packed && c.arch != ARCH_DEEPSEEK;
    if (rc == 0) {
        c.dtype = output_dtype(p, c.base);
        rc = mm_moe_gates_new(p, c.base, (size_t)c.layers, c.hidden, &p->moe_gates, err);
    }
    if (rc == 0)
        rc = plan_base(&c, err);
    if (rc == 0)
        rc = plan_layers(&c, err);
    if (rc == 0) {
        p->moe_arch = mm_xstrdup(ARCHS[c.arch].name);
        p->moe_config = config_text(&c);
    }
    free(types);
    free(c.expert_idx);
    return rc;
}
