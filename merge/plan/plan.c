/* Output tensors: which exist, what each is made of, and the parameters each uses (B1.3-B1.5, B4). */
#include "plan.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "merge/plan/rowmap.h"
#include "merge/plan/vocab.h"
#include "plan_internal.h"

void mm_plan_options_default(mm_plan_options *o)
{
    memset(o, 0, sizeof *o);
    o->out_shard_size = 5000000000ull;
    o->copy_tokenizer = 1;
    o->write_model_card = 1;
}

static const char *const embed_names[] = {"embed_tokens", "lm_head", "wte", "word_embeddings", "embed_in", "embed_out"};

int mm_is_embed_name(const char *name)
{
    /* Whole dot-separated components, as mergekit's architecture files name these weights:
     * `embed_tokens_per_layer` (Gemma 3n) is no vocabulary embedding. */
    for (const char *c = name; c; c = strchr(c, '.') ? strchr(c, '.') + 1 : NULL) {
        size_t len = strcspn(c, ".");
        for (size_t i = 0; i < MM_COUNT(embed_names); i++)
            if (strlen(embed_names[i]) == len && strncmp(c, embed_names[i], len) == 0)
                return 1;
    }
    return 0;
}

static int is_lm_head(const char *name)
{
    return strstr(name, "lm_head") || strstr(name, "embed_out");
}

/* Non-layer tensors after the layers: the output head and the final norm (`model.norm`, `ln_f`,
 * `final_layer_norm`). Everything else that is not in a layer comes before them. */
static int is_post(const char *name)
{
    return is_lm_head(name) || strstr(name, "norm") || strstr(name, "ln_f");
}

/* A model without its own lm_head reads its input embedding in its place (tied embeddings, B4.4). */
static const mm_model_tensor *tied_fallback(const mm_model *m, const char *name)
{
    if (!is_lm_head(name))
        return NULL;
    static const char *const inputs[] = {"embed_tokens", "wte", "word_embeddings", "embed_in"};
    for (size_t i = 0; i < m->ntensors; i++)
        if (m->tensors[i].layer < 0)
            for (size_t k = 0; k < MM_COUNT(inputs); k++)
                if (strstr(m->tensors[i].name, inputs[k]))
                    return &m->tensors[i];
    return NULL;
}

int mm_plan_model(mm_plan *p, const mm_modelref *ref, size_t *idx, mm_err *err)
{
    for (size_t i = 0; i < p->nmodels; i++)
        if (mm_model_is(p->models[i], ref->path, ref->lora_path)) {
            *idx = i;
            return 0;
        }
    mm_model *m;
    int rc = mm_model_open(ref->path, ref->lora_path, &m, err);
    if (rc < 0) {
        char pos[512];
        mm_srcpos_format(&ref->pos, pos, sizeof pos);
        mm_err_prefix(err, "%s: model '%s'", pos, ref->ref);
        return rc;
    }
    p->models = mm_xrealloc(p->models, (p->nmodels + 1) * sizeof *p->models);
    p->model_refs = mm_xrealloc(p->model_refs, (p->nmodels + 1) * sizeof *p->model_refs);
    p->models[p->nmodels] = m;
    p->model_refs[p->nmodels] = mm_xstrdup(ref->ref);
    *idx = p->nmodels++;
    return 0;
}

/* ---- parameters ---- */

static int pvalue_to_double(const mm_param_def *d, const mm_psetting *s, const mm_pvalue *v, const char *tensor,
                            double *out, mm_err *err)
{
    char pos[512];
    mm_srcpos_format(&s->pos, pos, sizeof pos);
    if (v->kind == MM_PV_NUM) {
        *out = v->num;
        return 0;
    }
    if (v->kind == MM_PV_BOOL) {
        *out = v->b ? 1.0 : 0.0;
        return 0;
    }
    return mm_err_set(err, -EINVAL, "%s: parameter '%s' must be a %s, got the string '%s' (for tensor '%s')", pos,
                      d->name, d->type == MM_PT_BOOL ? "boolean (true/false)" : "number", v->str ? v->str : "",
                      tensor);
}

/* A parameter's value through the precedence levels (mm_params_eval), else its default: NAN when
 * unset without default. */
static int eval_param(const mm_param_def *d, const mm_params *const *levels, size_t nlevels, const char *tensor,
                      double t, double *out, int *found, mm_err *err)
{
    const mm_psetting *s;
    mm_pvalue v;
    *found = mm_params_eval(levels, nlevels, d->name, tensor, t, &v, &s);
    if (*found)
        return pvalue_to_double(d, s, &v, tensor, out, err);
    *out = d->def;
    return 0;
}

/* Warns once per parameter name the method does not know (mergekit ignores them silently). */
static void warn_unknown_params(const mm_method *m, const mm_params *ps, int per_model_level)
{
    if (!ps)
        return;
    for (size_t i = 0; i < ps->n; i++) {
        const char *name = ps->items[i].name;
        int known = 0;
        for (size_t k = 0; k < m->nmparams; k++)
            known |= strcmp(m->mparams[k].name, name) == 0;
        for (size_t k = 0; k < m->ngparams && !per_model_level; k++)
            known |= strcmp(m->gparams[k].name, name) == 0;
        if (known)
            continue;
        char pos[512];
        mm_srcpos_format(&ps->items[i].pos, pos, sizeof pos);
        int global = 0;
        for (size_t k = 0; k < m->ngparams; k++)
            global |= strcmp(m->gparams[k].name, name) == 0;
        if (global)
            mm_log_warn("%s: parameter '%s' of %s is global; under a model's parameters it is ignored (move it to the "
                        "top-level or slice parameters)",
                        pos, name, m->name);
        else
            mm_log_warn("%s: parameter '%s' is not used by merge_method %s; ignored", pos, name, m->name);
    }
}

/* ---- modules and slices (D18) ---- */

/* What one module of the output is made of: the slices of its recipe, or a copy from the donor. */
typedef struct module_recipe {
    const char *name;           /* the donor's name for the module */
    int module;                 /* index in the donor's arch */
    const mm_slice_def *slices;
    size_t nslices;
    const mm_params *params;    /* module parameters (precedence level 3), or NULL */
    int copy;                   /* copied from the donor: one passthrough slice without parameters */
    mm_slice_def copy_slice;    /* that slice (copy only; borrows the donor's reference) */
    mm_source_def copy_source;
} module_recipe;

typedef struct slice_ctx {
    const mm_slice_def *def;
    const mm_method *method;    /* the config's, or passthrough for a copied module */
    const mm_params *levels[3]; /* slice, module and top-level parameters (NULL entries are skipped) */
    size_t *model_idx;          /* per source */
    int *module;                /* per source: the module's index in that model's arch */
    int *start;                 /* per source */
    int nlayers;
    int base;                   /* source index of the base model, -1 */
} slice_ctx;

/* The part of a message that names a module of a model: "model 'x'" for single-module models. */
static void module_phrase(const mm_model *m, const char *module, const char *ref, char *buf, size_t len)
{
    if (m->arch.n > 1)
        snprintf(buf, len, "the %s of model '%s'", module, ref);
    else
        snprintf(buf, len, "model '%s'", ref);
}

static int prepare_slice(mm_plan *p, const module_recipe *r, const mm_slice_def *d, slice_ctx *c, mm_err *err)
{
    const mm_config *cfg = p->cfg;
    c->def = d;
    c->method = r->copy ? mm_method_find("passthrough") : p->method;
    c->levels[0] = &d->params;
    c->levels[1] = r->params;
    c->levels[2] = r->copy ? NULL : &cfg->params;
    c->model_idx = mm_xcalloc(d->nsources, sizeof *c->model_idx);
    c->module = mm_xcalloc(d->nsources, sizeof *c->module);
    c->start = mm_xcalloc(d->nsources, sizeof *c->start);
    c->nlayers = -1;
    c->base = -1;
    char pos[512], who[600];
    if (d->nsources == 0) {
        mm_srcpos_format(&d->pos, pos, sizeof pos);
        return mm_err_set(err, -EINVAL, "%s: a slice needs at least one source", pos);
    }
    const mm_modelref *base = d->base_model ? d->base_model : cfg->base_model;
    for (size_t j = 0; j < d->nsources; j++) {
        const mm_source_def *src = &d->sources[j];
        int rc = mm_plan_model(p, &src->model, &c->model_idx[j], err);
        if (rc < 0)
            return rc;
        const mm_model *m = p->models[c->model_idx[j]];
        c->module[j] = mm_arch_find(&m->arch, r->name);
        if (c->module[j] < 0) {
            char *names = mm_arch_names(&m->arch);
            mm_srcpos_format(&src->model.pos, pos, sizeof pos);
            rc = mm_err_set(err, -EINVAL,
                            "%s: model '%s' has no module '%s' (its modules: %s); merge models of the same "
                            "architecture",
                            pos, src->model.ref, r->name, names);
            free(names);
            return rc;
        }
        int n = m->arch.mods[c->module[j]].num_layers, a = 0, b = n;
        if (src->has_range) {
            a = src->layer_start;
            b = src->layer_end;
            mm_srcpos_format(&src->range_pos, pos, sizeof pos);
            module_phrase(m, r->name, src->model.ref, who, sizeof who);
            if (a < 0 || b < a || b > n)
                return mm_err_set(err, -EINVAL,
                                  "%s: layer_range [%d, %d] is out of bounds: %s has %d layers (0..%d); use a range "
                                  "within [0, %d]",
                                  pos, a, b, who, n, n - 1, n);
        }
        c->start[j] = a;
        if (c->nlayers < 0) {
            c->nlayers = b - a;
        } else if (b - a != c->nlayers) {
            mm_srcpos_format(src->has_range ? &src->range_pos : &src->model.pos, pos, sizeof pos);
            return mm_err_set(err, -EINVAL,
                              "%s: all sources of a slice must span the same number of layers: '%s' spans %d, "
                              "'%s' spans %d (make the layer ranges the same length)",
                              pos, d->sources[0].model.ref, c->nlayers, src->model.ref, b - a);
        }
        if (base && c->base < 0 && mm_modelref_same(&src->model, base))
            c->base = (int)j;
    }
    if (c->method->needs_base) {
        if (!base) {
            mm_srcpos_format(&cfg->method_pos, pos, sizeof pos);
            return mm_err_set(err, -EINVAL, "%s: merge_method %s needs base_model (add `base_model: <model>`)", pos,
                              cfg->merge_method);
        }
        if (c->base < 0) {
            mm_srcpos_format(&d->pos, pos, sizeof pos);
            return mm_err_set(err, -EINVAL,
                              "%s: the base model '%s' is not among this slice's sources (add it as a source with "
                              "the same layer_range)",
                              pos, base->ref);
        }
    }
    if (c->method->single_input && d->nsources != 1) {
        mm_srcpos_format(&d->pos, pos, sizeof pos);
        return mm_err_set(err, -EINVAL,
                          "%s: merge_method passthrough takes exactly one model per slice, this has %zu (use one "
                          "source per slice, or another method to combine models)",
                          pos, d->nsources);
    }
    return 0;
}

static void free_slice_ctx(slice_ctx *c)
{
    free(c->model_idx);
    free(c->module);
    free(c->start);
}

/* ---- output tensors ---- */

static int shapes_equal(const mm_st_tensor *a, const mm_st_tensor *b)
{
    return a->ndim == b->ndim && memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof a->shape[0]) == 0;
}

static int resolve_shape(mm_plan *p, mm_out_tensor *o, mm_err *err)
{
    const mm_st_tensor *ref = o->inputs[o->base >= 0 ? o->base : 0].mt->st;
    int embed = mm_is_embed_name(o->name);
    o->ndim = ref->ndim;
    memcpy(o->shape, ref->shape, sizeof o->shape);
    for (size_t i = 0; i < o->ninputs; i++) {
        const mm_st_tensor *st = o->inputs[i].mt->st;
        if (shapes_equal(st, ref))
            continue;
        int crop = embed && st->ndim == 2 && ref->ndim == 2 && o->method->crop != MM_CROP_NONE;
        if (crop && o->method->crop == MM_CROP_TO_BASE && (st->shape[0] < ref->shape[0] || st->shape[1] < ref->shape[1]))
            crop = 0;
        if (!crop) {
            char a[128], b[128];
            mm_st_shape_text(ref, a, sizeof a);
            mm_st_shape_text(st, b, sizeof b);
            return mm_err_set(err, -EINVAL,
                              "tensor '%s': shape %s in model '%s' but %s in model '%s' (%s) — the models must "
                              "have the same architecture and size",
                              o->name, a, p->model_refs[o->inputs[o->base >= 0 ? o->base : 0].model_idx], b,
                              p->model_refs[o->inputs[i].model_idx], o->inputs[i].mt->shard->path);
        }
        if (o->method->crop == MM_CROP_COMMON)
            for (int d = 0; d < 2; d++)
                if (st->shape[d] < o->shape[d])
                    o->shape[d] = st->shape[d];
    }
    o->numel = 1;
    for (int d = 0; d < o->ndim; d++)
        o->numel *= o->shape[d];
    for (size_t i = 0; i < o->ninputs; i++) {
        const mm_st_tensor *st = o->inputs[i].mt->st;
        /* Only the column count changes the row stride; extra rows are simply never read. */
        if (o->ndim == 2 && st->shape[1] != o->shape[1])
            o->inputs[i].src_cols = st->shape[1];
        if (st->ndim == 2 && (st->shape[0] != o->shape[0] || st->shape[1] != o->shape[1]))
            mm_log_warn("tensor '%s': using the leading [%llu, %llu] sub-matrix of model '%s'", o->name,
                        (unsigned long long)o->shape[0], (unsigned long long)o->shape[1],
                        p->model_refs[o->inputs[i].model_idx]);
    }
    return 0;
}

/* The dtype in which input i reaches the method: its tensor's, or for remapped embeddings the
 * remapped dtype (D19), which every input then shares. */
static mm_dtype input_dtype(const mm_out_tensor *o, size_t i)
{
    return o->rowmap ? o->rowmap->dtype : o->inputs[i].mt->st->dtype;
}

static int resolve_dtype(mm_plan *p, mm_out_tensor *o, mm_err *err)
{
    const mm_config *cfg = p->cfg;
    mm_dtype comp = cfg->dtype;
    if (comp == MM_DT_NONE) {
        switch (o->method->dtype_rule) {
        case MM_DTR_PROMOTE:
            comp = input_dtype(o, 0);
            for (size_t i = 1; i < o->ninputs; i++)
                comp = mm_dtype_promote(comp, input_dtype(o, i));
            break;
        case MM_DTR_BASE:
            comp = input_dtype(o, (size_t)o->base);
            break;
        case MM_DTR_SOURCE:
            comp = input_dtype(o, 0);
            break;
        }
    }
    for (size_t i = 0; i < o->ninputs; i++) {
        mm_dtype sd = o->inputs[i].mt->st->dtype;
        if (mm_dtype_is_computable(sd))
            continue;
        /* Passthrough copies other dtypes (integer buffers, F64) unchanged when nothing scales them. */
        if (o->method->single_input && isnan(o->inputs[0].mvals[0])) {
            o->comp = MM_DT_NONE;
            o->dtype = sd;
            return 0;
        }
        return mm_err_set(err, -EINVAL,
                          "tensor '%s' of model '%s' has dtype %s; merge_method %s computes only F32, F16 and BF16",
                          o->name, p->model_refs[o->inputs[i].model_idx], mm_dtype_name(sd), o->method->name);
    }
    o->comp = comp;
    o->dtype = cfg->out_dtype != MM_DT_NONE ? cfg->out_dtype : comp;
    return 0;
}

mm_out_tensor *mm_plan_new_tensor(mm_plan *p, const char *name, const mm_method *m, size_t ninputs)
{
    p->tensors = mm_xrealloc(p->tensors, (p->ntensors + 1) * sizeof *p->tensors);
    mm_out_tensor *o = &p->tensors[p->ntensors];
    memset(o, 0, sizeof *o);
    o->name = mm_xstrdup(name);
    o->method = m;
    o->seed = p->opt.random_seed;
    o->base = -1;
    o->ninputs = ninputs;
    o->inputs = mm_xcalloc(ninputs ? ninputs : 1, sizeof *o->inputs);
    for (size_t j = 0; j < ninputs; j++)
        o->inputs[j].mvals = mm_xcalloc(m->nmparams ? m->nmparams : 1, sizeof *o->inputs[j].mvals);
    o->gvals = mm_xcalloc(m->ngparams ? m->ngparams : 1, sizeof *o->gvals);
    p->ntensors++; /* owned by the plan from here on, so errors below free it */
    return o;
}

int mm_plan_finish_tensor(mm_plan *p, mm_out_tensor *o, mm_err *err)
{
    const mm_method *m = o->method;
    /* With a tokenizer option every embedding-like tensor is read remapped to the output vocabulary
     * (D19), which also gives it its shape. */
    int rc = p->vocab && mm_is_embed_name(o->name) ? mm_rowmap_build(p, o, err) : resolve_shape(p, o, err);
    if (rc == 0)
        rc = resolve_dtype(p, o, err);
    if (rc == 0 && m->prepare && o->comp != MM_DT_NONE)
        rc = m->prepare(o, err);
    return rc;
}

/* Adds the output tensor `name` made from input tensor names in_names[j] of the slice's sources. */
static int add_tensor(mm_plan *p, const slice_ctx *sl, const char *name, char *const *in_names, double t, mm_err *err)
{
    const mm_method *m = sl->method;
    const mm_slice_def *d = sl->def;
    mm_out_tensor *o = mm_plan_new_tensor(p, name, m, d->nsources);
    o->t = t;
    o->base = sl->base;
    if (d->nsources > MM_MAX_INPUTS)
        return mm_err_set(err, -E2BIG, "tensor '%s': %zu inputs, at most %d supported", name, d->nsources,
                          MM_MAX_INPUTS);

    for (size_t j = 0; j < d->nsources; j++) {
        mm_input *in = &o->inputs[j];
        in->model_idx = sl->model_idx[j];
        in->is_base = (int)j == sl->base;
        const mm_model *mod = p->models[in->model_idx];
        in->mt = mm_model_find(mod, in_names[j]);
        if (!in->mt)
            in->mt = tied_fallback(mod, in_names[j]);
        if (!in->mt) {
            char pos[512];
            mm_srcpos_format(&d->sources[j].model.pos, pos, sizeof pos);
            return mm_err_set(err, -EINVAL,
                              "%s: tensor '%s' is required by the merge (output '%s') but missing in model '%s' (%s); "
                              "all merged models must have the same tensors",
                              pos, in_names[j], name, d->sources[j].model.ref, mod->path);
        }
        if (!o->group_label || strcmp(in_names[j], o->group_label) > 0) {
            free(o->group_label);
            o->group_label = mm_xstrdup(in_names[j]);
        }
        /* Per-model parameters: this source, the slice, the module, the top level (B1.5 precedence). */
        const mm_params *levels[] = {&d->sources[j].params, sl->levels[0], sl->levels[1], sl->levels[2]};
        for (size_t k = 0; k < m->nmparams; k++) {
            int found;
            int rc = eval_param(&m->mparams[k], levels, MM_COUNT(levels), in_names[j], t, &in->mvals[k], &found, err);
            if (rc < 0)
                return rc;
            if (!found && m->mparams[k].required && !(m->needs_base && in->is_base)) {
                char pos[512];
                mm_srcpos_format(&d->sources[j].model.pos, pos, sizeof pos);
                return mm_err_set(err, -EINVAL,
                                  "%s: model '%s' has no '%s' for tensor '%s'; merge_method %s requires it for every "
                                  "model (add `parameters: {%s: ...}` under the model, or once in the top-level "
                                  "parameters)",
                                  pos, d->sources[j].model.ref, m->mparams[k].name, in_names[j], m->name,
                                  m->mparams[k].name);
            }
        }
    }
    for (size_t k = 0; k < m->ngparams; k++) {
        int found;
        int rc = eval_param(&m->gparams[k], sl->levels, MM_COUNT(sl->levels), name, t, &o->gvals[k], &found, err);
        if (rc < 0)
            return rc;
        if (!found && m->gparams[k].required) {
            char pos[512];
            mm_srcpos_format(&p->cfg->method_pos, pos, sizeof pos);
            return mm_err_set(err, -EINVAL, "%s: merge_method %s requires parameter '%s' (add it under parameters:)",
                              pos, m->name, m->gparams[k].name);
        }
    }
    int rc = mm_plan_finish_tensor(p, o, err);
    if (rc < 0) {
        /* These messages name the tensor and models; add where in the config the slice is. */
        char pos[512];
        mm_srcpos_format(&d->pos, pos, sizeof pos);
        mm_err_prefix(err, "%s", pos);
    }
    return rc;
}

/* Names (or templates) of the kind selected by `pick` across all sources of a slice, deduplicated,
 * in order of first appearance (sources in order, each model's tensors in order). pick returns the
 * string to collect or NULL for a tensor of module `module` of its model. Deduplicated by sorting, not
 * by a scan per name: that made planning quadratic in the tensor count (a model with 100,000 tensors
 * took minutes). */
typedef const char *(*pick_fn)(const mm_model_tensor *t, int module, int layer);

typedef struct picked {
    const char *s;
    size_t seq;
} picked;

static int cmp_picked_name(const void *a, const void *b)
{
    const picked *x = a, *y = b;
    int c = strcmp(x->s, y->s);
    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

static int cmp_picked_seq(const void *a, const void *b)
{
    const picked *x = a, *y = b;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

static size_t collect(mm_plan *p, const slice_ctx *sl, int offset, pick_fn pick, char ***out)
{
    size_t total = 0, n = 0;
    for (size_t j = 0; j < sl->def->nsources; j++)
        total += p->models[sl->model_idx[j]]->ntensors;
    picked *all = mm_xmalloc((total ? total : 1) * sizeof *all);
    for (size_t j = 0; j < sl->def->nsources; j++) {
        const mm_model *m = p->models[sl->model_idx[j]];
        for (size_t i = 0; i < m->ntensors; i++) {
            const char *s = pick(&m->tensors[i], sl->module[j], sl->start[j] + offset);
            if (s) {
                all[n] = (picked){s, n};
                n++;
            }
        }
    }
    /* Equal names end up adjacent, the first appearance first: keep that one. */
    qsort(all, n, sizeof *all, cmp_picked_name);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || strcmp(all[u - 1].s, all[i].s) != 0)
            all[u++] = all[i];
    qsort(all, u, sizeof *all, cmp_picked_seq);
    char **list = mm_xmalloc((u ? u : 1) * sizeof *list);
    for (size_t i = 0; i < u; i++)
        list[i] = mm_xstrdup(all[i].s);
    free(all);
    *out = list;
    return u;
}

static const char *pick_pre(const mm_model_tensor *t, int module, int layer)
{
    (void)layer;
    return t->module == module && t->layer < 0 && !is_post(t->name) ? t->name : NULL;
}

static const char *pick_post(const mm_model_tensor *t, int module, int layer)
{
    (void)layer;
    return t->module == module && t->layer < 0 && is_post(t->name) ? t->name : NULL;
}

static const char *pick_layer(const mm_model_tensor *t, int module, int layer)
{
    return t->module == module && t->layer == layer ? t->template_name : NULL;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

/* Non-layer tensors are planned with t = 0 (B1.5): pre-weights from the first slice, post-weights
 * from the last. */
static int plan_nonlayer(mm_plan *p, const slice_ctx *sl, pick_fn pick, mm_err *err)
{
    char **names;
    size_t n = collect(p, sl, 0, pick, &names);
    char **in = mm_xcalloc(sl->def->nsources, sizeof *in);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        for (size_t j = 0; j < sl->def->nsources; j++)
            in[j] = names[i];
        rc = add_tensor(p, sl, names[i], in, 0.0, err);
    }
    free(in);
    free_list(names, n);
    return rc;
}

/* The source of a slice that output layers take their config.json entries from: the donor when it is
 * one of them (D2), else the first: the model whose config.json describes that layer best. */
static size_t origin_source(const mm_plan *p, const slice_ctx *sl)
{
    for (size_t j = 0; j < sl->def->nsources; j++)
        if (sl->model_idx[j] == p->donor)
            return j;
    return 0;
}

/* Plans the layers of one slice as output layers mod->out_layers onwards, recording their origins. */
static int plan_layers(mm_plan *p, const slice_ctx *sl, mm_plan_module *mod, mm_err *err)
{
    int rc = 0;
    char **in = mm_xcalloc(sl->def->nsources, sizeof *in);
    size_t o = origin_source(p, sl);
    const mm_model *om = p->models[sl->model_idx[o]];
    cJSON *key = NULL;
    const cJSON *holder = mm_arch_count_holder(&om->arch.mods[sl->module[o]], om->config, &key);
    mod->origin = mm_xrealloc(mod->origin, ((size_t)mod->out_layers + (size_t)sl->nlayers + 1) * sizeof *mod->origin);
    for (int j = 0; j < sl->nlayers && rc == 0; j++) {
        mod->origin[mod->out_layers] = (mm_layer_origin){holder, holder ? key->string : NULL, sl->start[o] + j};
        double t = mm_param_layer_t(j, sl->nlayers);
        char **tmpl;
        size_t n = collect(p, sl, j, pick_layer, &tmpl);
        for (size_t i = 0; i < n && rc == 0; i++) {
            for (size_t s = 0; s < sl->def->nsources; s++)
                in[s] = mm_layer_name(tmpl[i], sl->start[s] + j);
            char *name = mm_layer_name(tmpl[i], mod->out_layers);
            rc = add_tensor(p, sl, name, in, t, err);
            free(name);
            for (size_t s = 0; s < sl->def->nsources; s++)
                free(in[s]);
        }
        free_list(tmpl, n);
        mod->out_layers++;
    }
    free(in);
    return rc;
}

/* Plans one module (B4.3 per module): pre-weights from the first slice, the slices' layers renumbered
 * from 0 within the module, post-weights from the last slice. */
static int plan_module(mm_plan *p, const module_recipe *r, mm_plan_module *mod, mm_err *err)
{
    const mm_model *donor = p->models[p->donor];
    mod->module = &donor->arch.mods[r->module];
    mod->name = mm_xstrdup(r->name);
    mod->in_layers = mod->module->num_layers;
    mod->copied = r->copy;
    slice_ctx *sl = mm_xcalloc(r->nslices, sizeof *sl);
    int rc = 0;
    for (size_t s = 0; s < r->nslices && rc == 0; s++)
        rc = prepare_slice(p, r, &r->slices[s], &sl[s], err);
    if (rc == 0)
        rc = plan_nonlayer(p, &sl[0], pick_pre, err);
    for (size_t s = 0; s < r->nslices && rc == 0; s++)
        rc = plan_layers(p, &sl[s], mod, err);
    if (rc == 0)
        rc = plan_nonlayer(p, &sl[r->nslices - 1], pick_post, err);
    for (size_t s = 0; s < r->nslices; s++)
        free_slice_ctx(&sl[s]);
    free(sl);
    return rc;
}

/* The number of recipes in the config (the top-level one, or one per `modules:` entry); with r below
 * it, the slices of recipe r in *slices and *n. */
static size_t config_recipe(const mm_config *cfg, size_t r, const mm_slice_def **slices, size_t *n)
{
    if (r < cfg->nmodules || (r == 0 && !cfg->nmodules)) {
        *slices = cfg->nmodules ? cfg->modules[r].slices : cfg->slices;
        *n = cfg->nmodules ? cfg->modules[r].nslices : cfg->nslices;
    }
    return cfg->nmodules ? cfg->nmodules : 1;
}

/* Opens every model in config order (the order the models are listed in, e.g. on the model card), the
 * donor last if it is not among the sources; sets p->donor. */
static int open_models(mm_plan *p, mm_err *err)
{
    const mm_config *cfg = p->cfg;
    size_t idx;
    int rc = 0;
    const mm_slice_def *sl;
    size_t n;
    for (size_t r = 0; r < config_recipe(cfg, r, &sl, &n) && rc == 0; r++) {
        for (size_t s = 0; s < n && rc == 0; s++)
            for (size_t j = 0; j < sl[s].nsources && rc == 0; j++)
                rc = mm_plan_model(p, &sl[s].sources[j].model, &idx, err);
    }
    if (rc == 0)
        rc = mm_plan_model(p, mm_config_donor(cfg), &p->donor, err);
    return rc;
}

static void recipe_copy(module_recipe *r, const mm_config *cfg)
{
    r->copy = 1;
    r->copy_source.model = *mm_config_donor(cfg);
    r->copy_slice.sources = &r->copy_source;
    r->copy_slice.nsources = 1;
    r->copy_slice.pos = cfg->method_pos;
    r->slices = &r->copy_slice;
    r->nslices = 1;
}

/* Which recipe each of the donor's modules follows (D18): `modules:` entries by name; top-level
 * `models:` for every module; top-level `slices:` for the text decoder. Modules without a recipe are
 * copied from the donor. recipes[i] is for the donor's module i. */
static int assign_recipes(mm_plan *p, module_recipe *recipes, mm_err *err)
{
    const mm_config *cfg = p->cfg;
    const mm_model *donor = p->models[p->donor];
    const mm_arch *a = &donor->arch;
    const char *donor_ref = mm_config_donor(cfg)->ref;
    char pos[512];
    for (size_t i = 0; i < a->n; i++) {
        recipes[i].name = a->mods[i].name;
        recipes[i].module = (int)i;
    }
    for (size_t k = 0; k < cfg->nmodules; k++) {
        const mm_module_def *d = &cfg->modules[k];
        int i = mm_arch_find(a, d->name);
        mm_srcpos_format(&d->pos, pos, sizeof pos);
        if (i < 0) {
            char *names = mm_arch_names(a);
            const char **known = mm_xmalloc(a->n * sizeof *known);
            for (size_t j = 0; j < a->n; j++)
                known[j] = a->mods[j].name;
            const char *near = mm_suggest(d->name, known, a->n);
            int rc = mm_err_set(err, -EINVAL, "%s: '%s' is not a module of model '%s' (its modules: %s%s%s%s)", pos,
                                d->name, donor_ref, names, near ? "; did you mean '" : "", near ? near : "",
                                near ? "'?" : "");
            free(known);
            free(names);
            return rc;
        }
        if (recipes[i].slices)
            return mm_err_set(err, -EINVAL, "%s: module '%s' is given twice ('%s' is another name for %s)", pos,
                              a->mods[i].name, MM_MODULE_DEFAULT, a->mods[i].name);
        recipes[i].slices = d->slices;
        recipes[i].nslices = d->nslices;
        recipes[i].params = &d->params;
    }
    if (!cfg->nmodules) {
        if (a->n > 1 && !cfg->models_syntax && a->text < 0) {
            char *names = mm_arch_names(a);
            mm_srcpos_format(&cfg->slices[0].pos, pos, sizeof pos);
            int rc = mm_err_set(err, -EINVAL,
                                "%s: model '%s' has several modules (%s) and none can be told to be the text decoder "
                                "that top-level slices: apply to; write the recipe of each module under modules:",
                                pos, donor_ref, names);
            free(names);
            return rc;
        }
        for (size_t i = 0; i < a->n; i++)
            if (cfg->models_syntax || (int)i == a->text || a->n == 1) {
                recipes[i].slices = cfg->slices;
                recipes[i].nslices = cfg->nslices;
            }
    }
    for (size_t i = 0; i < a->n; i++)
        if (!recipes[i].slices)
            recipe_copy(&recipes[i], cfg);
    return 0;
}

/* Warns once about each parameter the method does not use, wherever the config sets it. */
static void warn_config_params(const mm_plan *p)
{
    const mm_config *cfg = p->cfg;
    const mm_slice_def *sl;
    size_t n;
    for (size_t r = 0; r < config_recipe(cfg, r, &sl, &n); r++) {
        for (size_t s = 0; s < n; s++) {
            warn_unknown_params(p->method, &sl[s].params, 0);
            for (size_t j = 0; j < sl[s].nsources; j++)
                warn_unknown_params(p->method, &sl[s].sources[j].params, 1);
        }
        if (cfg->nmodules)
            warn_unknown_params(p->method, &cfg->modules[r].params, 0);
    }
    warn_unknown_params(p->method, &cfg->params, 0);
}

int mm_plan_tensors(mm_plan *p, mm_err *err)
{
    int rc = open_models(p, err);
    if (rc == 0)
        rc = mm_plan_tokenizer_setup(p, err);
    if (rc < 0)
        return rc;
    const mm_arch *a = &p->models[p->donor]->arch;
    module_recipe *recipes = mm_xcalloc(a->n, sizeof *recipes);
    rc = assign_recipes(p, recipes, err);
    if (rc == 0)
        warn_config_params(p);
    p->modules = mm_xcalloc(a->n, sizeof *p->modules);
    for (size_t i = 0; i < a->n && rc == 0; i++) {
        rc = plan_module(p, &recipes[i], &p->modules[i], err);
        p->nmodules++;
    }
    free(recipes);
    return rc;
}
