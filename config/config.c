/* mergekit YAML → mm_config (docs/merge-contract.md D1, D2, D10, D11, D13, D14, D17). The schema is walked by
 * hand so that every message can name the place and the fix; method names and method parameters are
 * left to the planner, which knows the methods. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config_internal.h"
#include "ytree.h"

/* Real configs are a few kilobytes (a 100-slice frankenmerge is ~50 KB); a bigger file is almost
 * certainly the wrong file, and the key checks are quadratic in a mapping's size. */
#define MAX_CONFIG_SIZE ((size_t)1 << 20)


typedef mm_cfg_ctx ctx;

mm_srcpos mm_cfg_pos(const ctx *x, const mm_ynode *n)
{
    return (mm_srcpos){x->c->path, n ? n->line : 1, n ? n->col : 1};
}

int mm_cfg_fail(const ctx *x, const mm_ynode *n, int code, const char *fmt, ...)
{
    char msg[sizeof x->err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mm_srcpos p = mm_cfg_pos(x, n);
    return mm_err_set(x->err, code, "%s:%d:%d: %.1900s", p.file, p.line, p.col, msg);
}

int mm_cfg_given(const mm_ynode *n)
{
    return n && !mm_ynode_is_null(n);
}

const char *mm_cfg_shown(const mm_ynode *n, char *buf, size_t len)
{
    if (!mm_cfg_given(n) || n->kind != MM_YN_SCALAR)
        return mm_ynode_describe(n);
    snprintf(buf, len, "'%.200s'", n->text);
    return buf;
}

/* ---- unknown keys (D11) ---- */

typedef mm_cfg_level level;

static const char *const top_keys[] = {"merge_method", "models", "slices", "base_model", "parameters", "dtype",
                                       "out_dtype", "tokenizer_source", "tokenizer", "chat_template", "modules"};
static const char *const model_keys[] = {"model", "parameters"};
static const char *const module_keys[] = {"models", "slices", "parameters"};
static const char *const slice_keys[] = {"sources", "base_model", "parameters", "residual_weight"};
static const char *const source_keys[] = {"model", "layer_range", "parameters"};
static const char *const cond_keys[] = {"filter", "value"};
static const char *const ref_keys[] = {"model", "path", "revision", "lora", "override_architecture"};

static const level L_TOP = {"at the top level", top_keys, MM_COUNT(top_keys)};
static const level L_MODEL = {"in an entry of models:", model_keys, MM_COUNT(model_keys)};
static const level L_MODULE = {"in an entry of modules:", module_keys, MM_COUNT(module_keys)};
static const level L_SLICE = {"in an entry of slices:", slice_keys, MM_COUNT(slice_keys)};
static const level L_SOURCE = {"in a source of a slice", source_keys, MM_COUNT(source_keys)};
static const level L_COND = {"in a {filter, value} entry", cond_keys, MM_COUNT(cond_keys)};
static const level L_REF = {"in a model reference", ref_keys, MM_COUNT(ref_keys)};

/* Where each key mergekit knows lives, to tell people who put one at the wrong level. Method
 * parameter names are included because a top-level `normalize:` (ignored by mergekit) is the classic. */
static const struct {
    const char *key, *home;
} key_homes[] = {
    {"merge_method", "at the top level"},
    {"models", "at the top level or in an entry of modules:"},
    {"slices", "at the top level or in an entry of modules:"},
    {"dtype", "at the top level"},
    {"out_dtype", "at the top level"},
    {"tokenizer_source", "at the top level"},
    {"tokenizer", "at the top level"},
    {"chat_template", "at the top level"},
    {"modules", "at the top level"},
    {"base_model", "at the top level or in an entry of slices:"},
    {"parameters", "at the top level, in an entry of models:, slices: or modules:, or in a source"},
    {"sources", "in an entry of slices:"},
    {"residual_weight", "in an entry of slices:"},
    {"layer_range", "in a source of a slice (models: always takes every layer)"},
    {"model", "in an entry of models: or in a source of a slice"},
    {"filter", "in an entry of a conditional parameter list"},
    {"value", "in an entry of a conditional parameter list"},
    {"path", "in a model reference mapping"},
    {"revision", "in a model reference mapping"},
    {"weight", "under parameters:"},
    {"density", "under parameters:"},
    {"t", "under parameters:"},
    {"normalize", "under parameters:"},
    {"lambda", "under parameters:"},
    {"epsilon", "under parameters:"},
    {"int8_mask", "under parameters:"},
    {"rescale", "under parameters:"},
    {"gamma", "under parameters:"},
    {"select_topk", "under parameters:"},
    {"filter_wise", "under parameters:"},
    {"nuslerp_flatten", "under parameters:"},
    {"nuslerp_row_wise", "under parameters:"},
    {"normalize_weights", "under parameters:"},
    {"eps", "under parameters:"},
    {"max_iter", "under parameters:"},
    {"tol", "under parameters:"},
    {"scale", "under parameters:"},
    {"alpha", "under parameters:"},
};

static const char *home_of(const char *key)
{
    for (size_t i = 0; i < MM_COUNT(key_homes); i++)
        if (strcmp(key_homes[i].key, key) == 0)
            return key_homes[i].home;
    return NULL;
}

static const char *suggest_known_key(const char *key)
{
    const char *names[MM_COUNT(key_homes)];
    for (size_t i = 0; i < MM_COUNT(key_homes); i++)
        names[i] = key_homes[i].key;
    return mm_suggest(key, names, MM_COUNT(names));
}

static void warn_unknown(const ctx *x, const mm_ynode *key, const level *lv)
{
    char hint[512];
    const char *home = home_of(key->text), *near;
    if (home)
        snprintf(hint, sizeof hint, "it belongs %s", home);
    else if ((near = mm_suggest(key->text, lv->keys, lv->nkeys)))
        snprintf(hint, sizeof hint, "did you mean '%s'?", near);
    else if ((near = suggest_known_key(key->text)))
        snprintf(hint, sizeof hint, "did you mean '%s'? it belongs %s", near, home_of(near));
    else
        snprintf(hint, sizeof hint, "mergekit ignores it too; remove it");
    mm_log_warn("%s:%d:%d: unknown key '%s' %s is ignored (%s)", x->c->path, key->line, key->col, key->text,
                lv->where, hint);
}

void mm_cfg_check_keys(const ctx *x, const mm_ynode *map, const level *lv)
{
    for (size_t i = 0; i < map->npairs; i++) {
        const mm_ynode *key = map->pairs[i].key;
        size_t k = 0;
        while (k < lv->nkeys && strcmp(lv->keys[k], key->text) != 0)
            k++;
        if (k == lv->nkeys)
            warn_unknown(x, key, lv);
    }
}

/* ---- parameters (B1.5) ---- */

static int parse_setting(const ctx *x, const char *name, const mm_ynode *n, int allow_cond, mm_psetting **out);

static int scalar_param(const ctx *x, const char *name, const mm_ynode *n, mm_pvalue *v)
{
    switch (n->type) {
    case MM_YS_NULL:
        return mm_cfg_fail(x, n, -EINVAL, "parameter '%s' has no value (give one, e.g. '%s: 0.5', or remove the key)", name,
                    name);
    case MM_YS_BOOL:
        *v = (mm_pvalue){.kind = MM_PV_BOOL, .b = n->b};
        return 0;
    case MM_YS_INT:
    case MM_YS_FLOAT:
        *v = (mm_pvalue){.kind = MM_PV_NUM, .num = n->num};
        return 0;
    default:
        *v = (mm_pvalue){.kind = MM_PV_STR, .str = mm_xstrdup(n->text)};
        return 0;
    }
}

static int mixed_list(const ctx *x, const char *name, const mm_ynode *item)
{
    return mm_cfg_fail(x, item, -EINVAL,
                "parameter '%s' mixes kinds of entries in one list, found %s here (a list holds either plain values "
                "(a gradient such as [0, 0.5, 1]) or '- filter: ... value: ...' entries, not both)",
                name, mm_ynode_describe(item));
}

static int gradient_param(const ctx *x, const char *name, const mm_ynode *n, mm_psetting *s)
{
    s->kind = MM_PS_GRADIENT;
    s->grad = mm_xcalloc(n->nitems, sizeof *s->grad);
    for (size_t i = 0; i < n->nitems; i++) {
        const mm_ynode *item = n->items[i];
        if (item->kind != MM_YN_SCALAR)
            return mixed_list(x, name, item);
        s->ngrad++;
        int rc = scalar_param(x, name, item, &s->grad[i]);
        if (rc < 0)
            return rc;
        if ((s->grad[i].kind == MM_PV_NUM) != (s->grad[0].kind == MM_PV_NUM))
            return mm_cfg_fail(x, item, -EINVAL,
                        "parameter '%s' mixes numbers and non-numbers in one list (a gradient is a list of "
                        "numbers, e.g. [0, 0.5, 1])",
                        name);
    }
    return 0;
}

static int cond_entry(const ctx *x, const char *name, const mm_ynode *e, mm_pcond *c)
{
    mm_cfg_check_keys(x, e, &L_COND);
    c->pos = mm_cfg_pos(x, e);
    const mm_ynode *f = mm_ymap_get(e, "filter", NULL), *v = mm_ymap_get(e, "value", NULL);
    if (mm_cfg_given(f)) {
        if (!mm_ynode_is_str(f))
            return mm_cfg_fail(x, f, -EINVAL, "filter must be text (part of a tensor name), found %s (put it in quotes)",
                        mm_ynode_describe(f));
        c->filter = mm_xstrdup(f->text);
    }
    if (!v)
        return mm_cfg_fail(x, e, -EINVAL, "this {filter, value} entry of parameter '%s' has no value: (add e.g. 'value: 0.5')",
                    name);
    return parse_setting(x, name, v, 0, &c->value);
}

static int cond_param(const ctx *x, const char *name, const mm_ynode *n, mm_psetting *s)
{
    s->kind = MM_PS_CONDITIONAL;
    s->conds = mm_xcalloc(n->nitems, sizeof *s->conds);
    for (size_t i = 0; i < n->nitems; i++) {
        if (n->items[i]->kind != MM_YN_MAP)
            return mixed_list(x, name, n->items[i]);
        int rc = cond_entry(x, name, n->items[i], &s->conds[s->nconds++]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* allow_cond is 0 for the value inside a condition: conditions do not nest. */
static int parse_setting(const ctx *x, const char *name, const mm_ynode *n, int allow_cond, mm_psetting **out)
{
    mm_psetting *s = *out = mm_xcalloc(1, sizeof *s);
    s->pos = mm_cfg_pos(x, n);
    if (n->kind == MM_YN_SCALAR) {
        s->kind = MM_PS_SCALAR;
        return scalar_param(x, name, n, &s->scalar);
    }
    if (n->kind == MM_YN_SEQ && n->nitems == 0)
        return mm_cfg_fail(x, n, -EINVAL, "parameter '%s' is an empty list (give a value, or a list of values for a gradient)",
                    name);
    int conditional = n->kind == MM_YN_MAP || n->items[0]->kind == MM_YN_MAP;
    if (conditional && !allow_cond)
        return mm_cfg_fail(x, n, -EINVAL,
                    "the value of a {filter, value} entry of parameter '%s' must be a number, a boolean, text or a "
                    "list of numbers, found %s (conditions do not nest)",
                    name, mm_ynode_describe(n));
    if (n->kind == MM_YN_SEQ)
        return conditional ? cond_param(x, name, n, s) : gradient_param(x, name, n, s);
    if (mm_ymap_get(n, "filter", NULL) || mm_ymap_get(n, "value", NULL))
        return mm_cfg_fail(x, n, -EINVAL,
                    "parameter '%s' is a single {filter, value} mapping, which mergekit cannot evaluate (wrap it in a "
                    "list: write '- filter: ...' with 'value: ...' below it)",
                    name);
    return mm_cfg_fail(x, n, -EINVAL,
                "parameter '%s' must be a number, a boolean, text, a list of numbers or a list of {filter, value} "
                "entries, found a mapping (write e.g. '%s: 0.5')",
                name, name);
}

static int load_params(const ctx *x, const mm_ynode *n, mm_params *p)
{
    if (!mm_cfg_given(n))
        return 0;
    if (n->kind != MM_YN_MAP)
        return mm_cfg_fail(x, n, -EINVAL,
                    "parameters must be a mapping of name: value, found %s (write 'parameters:' with lines such as "
                    "'  weight: 0.5' below it)",
                    mm_ynode_describe(n));
    p->items = mm_xcalloc(n->npairs, sizeof *p->items);
    for (size_t i = 0; i < n->npairs; i++) {
        mm_param *it = &p->items[p->n++];
        it->name = mm_xstrdup(n->pairs[i].key->text);
        it->pos = mm_cfg_pos(x, n->pairs[i].key);
        int rc = parse_setting(x, it->name, n->pairs[i].value, 1, &it->setting);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- model references (D13, D14) ---- */

/* The reference as text: a string, or mergekit's mapping forms {model: ..., lora: ...} and
 * {path, revision} (written back as "path@revision"). */
static int ref_text(const ctx *x, const mm_ynode *n, const char *key, char **out)
{
    if (mm_ynode_is_str(n)) {
        *out = mm_xstrdup(n->text);
        return 0;
    }
    if (n->kind != MM_YN_MAP)
        return mm_cfg_fail(x, n, -EINVAL,
                    "%s must be a model folder or org/name, found %s (write e.g. '%s: org/name', in quotes if it "
                    "looks like a number)",
                    key, mm_ynode_describe(n), key);
    mm_cfg_check_keys(x, n, &L_REF);
    const mm_ynode *k, *v;
    if (mm_cfg_given(v = mm_ymap_get(n, "override_architecture", &k)))
        return mm_cfg_fail(x, k, -ENOTSUP, "override_architecture: is not supported yet (remove it; the architecture is "
                    "inferred from the tensor names)");
    if ((v = mm_ymap_get(n, "model", NULL))) {
        /* {model: base, lora: adapter} is mergekit's mapping form of "base+adapter" (D19). */
        const mm_ynode *lora = mm_ymap_get(n, "lora", NULL);
        int rc = ref_text(x, v, "model", out);
        if (rc < 0 || !mm_cfg_given(lora))
            return rc;
        char *adapter;
        if ((rc = ref_text(x, lora, "lora", &adapter)) < 0)
            return rc;
        char *both = mm_xasprintf("%s+%s", *out, adapter);
        free(*out);
        free(adapter);
        *out = both;
        return 0;
    }
    if (mm_cfg_given(v = mm_ymap_get(n, "lora", &k)))
        return mm_cfg_fail(x, k, -EINVAL, "lora: needs model: beside it (write '{model: base, lora: adapter}')");
    const mm_ynode *path = mm_ymap_get(n, "path", NULL), *rev = mm_ymap_get(n, "revision", NULL);
    if (!path || !mm_ynode_is_str(path))
        return mm_cfg_fail(x, path ? path : n, -EINVAL,
                    "a model reference written as a mapping needs path: with a folder or org/name (write e.g. "
                    "'{path: org/name, revision: main}')");
    /* A commit hash such as 1234567 reads as a number; its text is what counts. */
    if (mm_cfg_given(rev) && rev->kind == MM_YN_SCALAR)
        *out = mm_xasprintf("%s@%s", path->text, rev->text);
    else if (mm_cfg_given(rev))
        return mm_cfg_fail(x, rev, -EINVAL, "revision must be a branch, tag or commit hash, found %s (write e.g. "
                    "'revision: main')", mm_ynode_describe(rev));
    else
        *out = mm_xstrdup(path->text);
    return 0;
}

static int has_file(const char *dir, const char *name)
{
    char *p = mm_path_join(dir, name);
    struct stat st;
    int ok = stat(p, &st) == 0 && !S_ISDIR(st.st_mode);
    free(p);
    return ok;
}

/* The same files mergekit looks for (B1.4); shard validity is checked when the model is opened. */
static int check_weights(const ctx *x, const mm_ynode *n, const char *dir)
{
    if (has_file(dir, "model.safetensors") || has_file(dir, "model.safetensors.index.json"))
        return 0;
    if (has_file(dir, "pytorch_model.bin") || has_file(dir, "pytorch_model.bin.index.json"))
        return mm_cfg_fail(x, n, -EINVAL,
                    "model folder %s has only PyTorch pickle weights (pytorch_model.bin), which mergemount does not "
                    "read (convert them to safetensors first, e.g. load the model with transformers and call "
                    "save_pretrained(folder, safe_serialization=True))",
                    dir);
    return mm_cfg_fail(x, n, -ENOENT,
                "model folder %s has no weights: no model.safetensors and no model.safetensors.index.json (give "
                "the folder that holds the model's safetensors files)",
                dir);
}

/* need_weights is 0 for a tokenizer donor, which only lends its tokenizer files. */
int mm_cfg_load_ref(const ctx *x, const mm_ynode *n, const char *key, int need_weights, mm_modelref *r)
{
    int rc = ref_text(x, n, key, &r->ref);
    if (rc < 0)
        return rc;
    r->pos = mm_cfg_pos(x, n);
    rc = mm_modelref_resolve(r->ref, &r->path, &r->lora_path, x->err);
    if (rc < 0) {
        mm_err_prefix(x->err, "%s:%d:%d", r->pos.file, r->pos.line, r->pos.col);
        return rc;
    }
    return need_weights ? check_weights(x, n, r->path) : 0;
}

static int load_optional_ref(const ctx *x, const mm_ynode *map, const char *key, mm_modelref **out)
{
    const mm_ynode *n = mm_ymap_get(map, key, NULL);
    if (!mm_cfg_given(n))
        return 0;
    *out = mm_xcalloc(1, sizeof **out);
    return mm_cfg_load_ref(x, n, key, 1, *out);
}

static void copy_ref(mm_modelref *to, const mm_modelref *from)
{
    to->ref = mm_xstrdup(from->ref);
    to->path = mm_xstrdup(from->path);
    to->lora_path = from->lora_path ? mm_xstrdup(from->lora_path) : NULL;
    to->pos = from->pos;
}

/* ---- sources and slices ---- */

static int check_list(const ctx *x, const mm_ynode *n, const char *key, const char *fix)
{
    if (mm_ynode_is_null(n) || (n->kind == MM_YN_SEQ && n->nitems == 0))
        return mm_cfg_fail(x, n, -EINVAL, "%s: is empty (%s)", key, fix);
    if (n->kind != MM_YN_SEQ)
        return mm_cfg_fail(x, n, -EINVAL, "%s: must be a list, found %s (%s)", key, mm_ynode_describe(n), fix);
    return 0;
}

static int load_range(const ctx *x, const mm_ynode *r, mm_source_def *s)
{
    static const char fix[] = "write layer_range: [start, end] with whole numbers 0 <= start <= end; end is excluded";
    s->range_pos = mm_cfg_pos(x, r);
    if (r->kind != MM_YN_SEQ || r->nitems != 2) {
        char found[64];
        if (r->kind == MM_YN_SEQ)
            snprintf(found, sizeof found, "a list of %zu value%s", r->nitems, r->nitems == 1 ? "" : "s");
        else
            snprintf(found, sizeof found, "%s", mm_ynode_describe(r));
        return mm_cfg_fail(x, r, -EINVAL, "layer_range must be a list of two layer numbers, found %s (%s)", found, fix);
    }
    int v[2];
    for (int i = 0; i < 2; i++) {
        const mm_ynode *e = r->items[i];
        char buf[256];
        if (e->kind != MM_YN_SCALAR || e->type != MM_YS_INT || !e->ival_ok || e->ival < 0 || e->ival > INT_MAX)
            return mm_cfg_fail(x, e, -EINVAL, "layer_range %s must be a whole number >= 0, found %s (%s)",
                        i ? "end" : "start", mm_cfg_shown(e, buf, sizeof buf), fix);
        v[i] = (int)e->ival;
    }
    if (v[0] > v[1])
        return mm_cfg_fail(x, r, -EINVAL, "layer_range [%d, %d] starts after it ends (%s)", v[0], v[1], fix);
    s->has_range = 1;
    s->layer_start = v[0];
    s->layer_end = v[1];
    return 0;
}

/* One entry of `models:` (in_slice 0) or of a slice's `sources:` (in_slice 1, with its layer_range). */
static int load_source(const ctx *x, const mm_ynode *n, int in_slice, mm_source_def *s)
{
    const char *list = in_slice ? "sources:" : "models:";
    if (n->kind != MM_YN_MAP)
        return mm_cfg_fail(x, n, -EINVAL, "each entry of %s must be a mapping with model:, found %s (write '- model: %s')",
                    list, mm_ynode_describe(n), n->kind == MM_YN_SCALAR ? n->text : "org/name");
    mm_cfg_check_keys(x, n, in_slice ? &L_SOURCE : &L_MODEL);
    const mm_ynode *m = mm_ymap_get(n, "model", NULL);
    if (!mm_cfg_given(m))
        return mm_cfg_fail(x, n, -EINVAL, "this entry of %s has no model: (add 'model: <folder or org/name>')", list);
    int rc = mm_cfg_load_ref(x, m, "model", 1, &s->model);
    if (rc < 0)
        return rc;
    if (in_slice) {
        const mm_ynode *r = mm_ymap_get(n, "layer_range", NULL);
        if (!r)
            return mm_cfg_fail(x, n, -EINVAL, "this source has no layer_range: (add e.g. 'layer_range: [0, 32]'; the "
                        "end is excluded)");
        if ((rc = load_range(x, r, s)) < 0)
            return rc;
    }
    return load_params(x, mm_ymap_get(n, "parameters", NULL), &s->params);
}

/* D1/B1.3: with `models:` the base model takes part in every merge, appended last unless listed. */
static void append_base(mm_slice_def *sl, const mm_modelref *base)
{
    if (!base)
        return;
    for (size_t i = 0; i < sl->nsources; i++)
        if (mm_modelref_same(&sl->sources[i].model, base))
            return;
    mm_source_def *s = &sl->sources[sl->nsources++];
    copy_ref(&s->model, base);
    s->is_base_appended = 1;
}

/* `models:` (at the top level or in a module): one slice whose sources take every layer. */
static int load_models(const ctx *x, const mm_ynode *list, mm_slice_def **slices, size_t *nslices)
{
    int rc = check_list(x, list, "models", "list the models to merge as '- model: org/name' entries");
    if (rc < 0)
        return rc;
    mm_slice_def *sl = *slices = mm_xcalloc(1, sizeof *sl);
    *nslices = 1;
    sl->pos = mm_cfg_pos(x, list);
    sl->sources = mm_xcalloc(list->nitems + 1, sizeof *sl->sources);
    for (size_t i = 0; i < list->nitems; i++)
        if ((rc = load_source(x, list->items[i], 0, &sl->sources[sl->nsources++])) < 0)
            return rc;
    append_base(sl, x->c->base_model);
    return 0;
}

static int load_slice(const ctx *x, const mm_ynode *n, mm_slice_def *sl)
{
    if (n->kind != MM_YN_MAP)
        return mm_cfg_fail(x, n, -EINVAL, "each entry of slices: must be a mapping with sources:, found %s (write "
                    "'- sources:' followed by that slice's '- model: ...' entries)", mm_ynode_describe(n));
    mm_cfg_check_keys(x, n, &L_SLICE);
    sl->pos = mm_cfg_pos(x, n);
    const mm_ynode *src = mm_ymap_get(n, "sources", NULL);
    if (!src)
        return mm_cfg_fail(x, n, -EINVAL, "this slice has no sources: (add 'sources:' with '- model: ...' and "
                    "'layer_range: [start, end]' entries)");
    int rc = check_list(x, src, "sources", "list the slice's inputs as '- model: ...' with 'layer_range: [a, b]'");
    if (rc < 0)
        return rc;
    sl->sources = mm_xcalloc(src->nitems, sizeof *sl->sources);
    for (size_t i = 0; i < src->nitems; i++)
        if ((rc = load_source(x, src->items[i], 1, &sl->sources[sl->nsources++])) < 0)
            return rc;
    if ((rc = load_optional_ref(x, n, "base_model", &sl->base_model)) < 0)
        return rc;
    const mm_ynode *rw = mm_ymap_get(n, "residual_weight", NULL);
    if (mm_cfg_given(rw) && !(rw->kind == MM_YN_SCALAR && (rw->type == MM_YS_INT || rw->type == MM_YS_FLOAT)))
        return mm_cfg_fail(x, rw, -EINVAL, "residual_weight must be a number, found %s (mergekit ignores it anyway; remove "
                    "it)", mm_ynode_describe(rw));
    return load_params(x, mm_ymap_get(n, "parameters", NULL), &sl->params);
}

static int load_slices(const ctx *x, const mm_ynode *list, mm_slice_def **slices, size_t *nslices)
{
    int rc = check_list(x, list, "slices", "list the output slices as '- sources:' entries");
    if (rc < 0)
        return rc;
    *slices = mm_xcalloc(list->nitems, sizeof **slices);
    for (size_t i = 0; i < list->nitems; i++)
        if ((rc = load_slice(x, list->items[i], &(*slices)[(*nslices)++])) < 0)
            return rc;
    return 0;
}

/* Exactly one of models:/slices: in `map` (the top level or an entry of modules:); `where` and `also`
 * complete the messages. Checked before any model folder is looked at, so the structural mistake is the
 * one reported. */
static int check_one_recipe(const ctx *x, const mm_ynode *map, const char *where, const char *also)
{
    const mm_ynode *sk, *models = mm_ymap_get(map, "models", NULL), *slices = mm_ymap_get(map, "slices", &sk);
    if (mm_cfg_given(models) && mm_cfg_given(slices))
        return mm_cfg_fail(x, sk, -EINVAL, "both models: and slices: are given%s (use models: to merge whole models or "
                    "slices: to assemble layer ranges, not both)", where);
    if (mm_cfg_given(models) || mm_cfg_given(slices))
        return 0;
    if (models || slices) /* `models:` written with nothing under it */
        return check_list(x, models ? models : slices, models ? "models" : "slices",
                          "list the models to merge, or the slices to assemble");
    return mm_cfg_fail(x, map, -EINVAL, "neither models: nor slices: is given%s (list the models to merge under models:, "
                "or layer ranges under slices:%s)", where, also);
}

/* The recipe in `map`: its models: or slices: (check_one_recipe has run). */
static int load_recipe(const ctx *x, const mm_ynode *map, int *models_syntax, mm_slice_def **slices, size_t *nslices)
{
    const mm_ynode *models = mm_ymap_get(map, "models", NULL);
    *models_syntax = mm_cfg_given(models);
    return *models_syntax ? load_models(x, models, slices, nslices)
                          : load_slices(x, mm_ymap_get(map, "slices", NULL), slices, nslices);
}

/* `modules:` (D18): module name -> {models: | slices:, parameters:}. Whether each name is a module of
 * the models is the planner's to check (it knows the architecture). */
static int load_modules(const ctx *x, const mm_ynode *map)
{
    static const char fix[] = "write e.g. 'modules:' with 'text_decoder: {slices: [...]}' and 'vision_tower: "
                              "{models: [...]}' below it";
    if (map->kind != MM_YN_MAP || map->npairs == 0)
        return mm_cfg_fail(x, map, -EINVAL, "modules: must be a mapping of module names to recipes, found %s (%s)",
                    map->kind == MM_YN_MAP ? "an empty mapping" : mm_ynode_describe(map), fix);
    mm_config *c = x->c;
    c->modules = mm_xcalloc(map->npairs, sizeof *c->modules);
    for (size_t i = 0; i < map->npairs; i++) {
        const mm_ynode *key = map->pairs[i].key, *v = map->pairs[i].value;
        mm_module_def *m = &c->modules[c->nmodules++];
        m->name = mm_xstrdup(key->text);
        m->pos = mm_cfg_pos(x, key);
        if (v->kind != MM_YN_MAP)
            return mm_cfg_fail(x, v, -EINVAL, "module '%s' must be a mapping with models: or slices:, found %s (%s)",
                        key->text, mm_ynode_describe(v), fix);
        mm_cfg_check_keys(x, v, &L_MODULE);
        char where[300];
        snprintf(where, sizeof where, " for module '%.200s'", key->text);
        int rc = check_one_recipe(x, v, where, "");
        if (rc == 0)
            rc = load_recipe(x, v, &m->models_syntax, &m->slices, &m->nslices);
        if (rc == 0)
            rc = load_params(x, mm_ymap_get(v, "parameters", NULL), &m->params);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- top level ---- */

static int refuse_unsupported(const ctx *x, const mm_ynode *root)
{
    static const struct {
        const char *key, *fix;
    } keys[] = {
        /* mergekit-evolve's search space is not a merge; its best genome, written out by mergekit-evolve as a
         * mergekit-yaml config, is. */
        {"genome", "this is a mergekit-evolve configuration; mount the merge config that mergekit-evolve wrote "
                   "for the genome it found"},
    };
    for (size_t i = 0; i < MM_COUNT(keys); i++) {
        const mm_ynode *k, *v = mm_ymap_get(root, keys[i].key, &k);
        if (mm_cfg_given(v))
            return mm_cfg_fail(x, k, -ENOTSUP, "%s: is not supported yet (%s)", keys[i].key, keys[i].fix);
    }
    return 0;
}

static int load_method(const ctx *x, const mm_ynode *root)
{
    const mm_ynode *v = mm_ymap_get(root, "merge_method", NULL);
    if (!v)
        return mm_cfg_fail(x, root, -EINVAL, "merge_method is missing (add e.g. 'merge_method: linear' at the top level)");
    if (!mm_ynode_is_str(v) || !v->text[0])
        return mm_cfg_fail(x, v, -EINVAL, "merge_method must be a method name, found %s (write e.g. 'merge_method: linear')",
                    mm_ynode_describe(v));
    x->c->merge_method = mm_xstrdup(v->text);
    x->c->method_pos = mm_cfg_pos(x, v);
    return 0;
}

int mm_cfg_load_dtype(const ctx *x, const mm_ynode *root, const char *key, mm_dtype *out, mm_srcpos *pos)
{
    const mm_ynode *v = mm_ymap_get(root, key, NULL);
    if (!mm_cfg_given(v))
        return 0;
    *pos = mm_cfg_pos(x, v);
    if (mm_ynode_is_str(v))
        *out = mm_dtype_from_config_name(v->text);
    char buf[256];
    if (*out == MM_DT_NONE)
        return mm_cfg_fail(x, v, -EINVAL,
                    "%s: %s is not a supported type (use bfloat16, float16 or float32; bf16, fp16, fp32, half, "
                    "float and a torch. prefix are accepted too)",
                    key, mm_cfg_shown(v, buf, sizeof buf));
    return 0;
}

/* base, union or a model reference: the tokenizer the output's starts from. */
static int load_tok_source(const ctx *x, const mm_ynode *v, const char *key)
{
    mm_config *c = x->c;
    if (mm_ynode_is_str(v) && strcmp(v->text, "base") == 0) {
        c->tokenizer_source = MM_TOK_BASE;
        return 0;
    }
    if (mm_ynode_is_str(v) && strcmp(v->text, "union") == 0) {
        c->tokenizer_source = MM_TOK_UNION;
        return 0;
    }
    c->tokenizer_source = MM_TOK_MODEL;
    c->tokenizer_model = mm_xcalloc(1, sizeof *c->tokenizer_model);
    return mm_cfg_load_ref(x, v, key, 0, c->tokenizer_model);
}

static const char *const token_src_fix =
    "write source: a model, {kind: zero}, or {kind: model_token, model: <model>, token_id: <id>} (or token: <text> "
    "in place of token_id)";

/* The source of one `tokens:` entry (mergekit's tokenizer/config.py: a model reference, ZeroEmbedding or
 * ModelTokenEmbedding). */
static int load_token_source(const ctx *x, const mm_ynode *v, mm_tok_entry *e)
{
    char buf[256];
    if (!mm_cfg_given(v))
        return mm_cfg_fail(x, v, -EINVAL, "tokenizer.tokens['%.200s'] has no source (%s)", e->token, token_src_fix);
    if (v->kind != MM_YN_MAP) {
        e->kind = MM_TSRC_MODEL;
        return mm_cfg_load_ref(x, v, "source", 0, &e->model);
    }
    const mm_ynode *kind = mm_ymap_get(v, "kind", NULL);
    if (!kind)
        return mm_cfg_fail(x, v, -EINVAL, "tokenizer.tokens['%.200s'].source: a mapping needs kind: zero or model_token (%s)",
                    e->token, token_src_fix);
    if (!mm_ynode_is_str(kind) || (strcmp(kind->text, "zero") && strcmp(kind->text, "model_token")))
        return mm_cfg_fail(x, kind, -EINVAL, "tokenizer.tokens['%.200s'].source: kind must be zero or model_token, found %s "
                    "(%s)", e->token, mm_cfg_shown(kind, buf, sizeof buf), token_src_fix);
    for (size_t i = 0; i < v->npairs; i++) {
        const char *k = v->pairs[i].key->text;
        int ok = !strcmp(k, "kind") || (kind->text[0] == 'm' && (!strcmp(k, "model") || !strcmp(k, "token_id") ||
                                                                 !strcmp(k, "token")));
        if (!ok)
            return mm_cfg_fail(x, v->pairs[i].key, -EINVAL, "tokenizer.tokens['%.200s'].source: a %s source has no key "
                        "'%.100s' (%s)", e->token, kind->text, k, token_src_fix);
    }
    if (kind->text[0] == 'z') {
        e->kind = MM_TSRC_ZERO;
        return 0;
    }
    e->kind = MM_TSRC_MODEL_TOKEN;
    const mm_ynode *model = mm_ymap_get(v, "model", NULL), *id = mm_ymap_get(v, "token_id", NULL),
                   *tok = mm_ymap_get(v, "token", NULL);
    if (!mm_cfg_given(model))
        return mm_cfg_fail(x, v, -EINVAL, "tokenizer.tokens['%.200s'].source: model_token needs model: (%s)", e->token,
                    token_src_fix);
    if (mm_cfg_given(id) == mm_cfg_given(tok))
        return mm_cfg_fail(x, v, -EINVAL, "tokenizer.tokens['%.200s'].source: model_token needs exactly one of token_id "
                    "and token (%s)", e->token, token_src_fix);
    e->token_id = -1;
    if (mm_cfg_given(id)) {
        if (id->kind != MM_YN_SCALAR || id->type != MM_YS_INT || !id->ival_ok || id->ival < 0)
            return mm_cfg_fail(x, id, -EINVAL, "tokenizer.tokens['%.200s'].source.token_id must be a row number (an "
                        "integer >= 0), found %s", e->token, mm_cfg_shown(id, buf, sizeof buf));
        e->token_id = id->ival;
    } else {
        if (!mm_ynode_is_str(tok))
            return mm_cfg_fail(x, tok, -EINVAL, "tokenizer.tokens['%.200s'].source.token must be a token's text, found %s "
                        "(quote it)", e->token, mm_ynode_describe(tok));
        e->token_text = mm_xstrdup(tok->text);
    }
    return mm_cfg_load_ref(x, model, "model", 0, &e->model);
}

static int load_token_entry(const ctx *x, const mm_ypair *pr, mm_tok_entry *e)
{
    e->token = mm_xstrdup(pr->key->text);
    e->pos = mm_cfg_pos(x, pr->key);
    const mm_ynode *v = pr->value;
    if (!mm_cfg_given(v) || v->kind != MM_YN_MAP)
        return mm_cfg_fail(x, pr->key, -EINVAL, "tokenizer.tokens['%.200s'] must be a mapping with source: and optionally "
                    "force: (%s)", e->token, token_src_fix);
    for (size_t i = 0; i < v->npairs; i++)
        if (strcmp(v->pairs[i].key->text, "source") && strcmp(v->pairs[i].key->text, "force"))
            return mm_cfg_fail(x, v->pairs[i].key, -EINVAL, "tokenizer.tokens['%.200s'] has no key '%.100s' (its keys "
                        "are source and force)", e->token, v->pairs[i].key->text);
    const mm_ynode *force = mm_ymap_get(v, "force", NULL);
    if (mm_cfg_given(force)) {
        if (force->kind != MM_YN_SCALAR || force->type != MM_YS_BOOL)
            return mm_cfg_fail(x, force, -EINVAL, "tokenizer.tokens['%.200s'].force must be true or false, found %s",
                        e->token, mm_ynode_describe(force));
        e->force = force->b;
    }
    return load_token_source(x, mm_ymap_get(v, "source", NULL), e);
}

/* The `tokenizer:` block (mergekit's TokenizerConfig): source (default union), tokens, pad_to_multiple_of. */
static int load_tokenizer_block(const ctx *x, const mm_ynode *v)
{
    mm_config *c = x->c;
    if (v->kind != MM_YN_MAP)
        return mm_cfg_fail(x, v, -EINVAL, "tokenizer: must be a mapping with source:, tokens: and pad_to_multiple_of:, "
                    "found %s (write e.g. 'tokenizer: {source: union}')", mm_ynode_describe(v));
    for (size_t i = 0; i < v->npairs; i++) {
        const char *k = v->pairs[i].key->text;
        if (strcmp(k, "source") && strcmp(k, "tokens") && strcmp(k, "pad_to_multiple_of"))
            return mm_cfg_fail(x, v->pairs[i].key, -EINVAL, "tokenizer: has no key '%.100s' (its keys are source, tokens "
                        "and pad_to_multiple_of)", k);
    }
    const mm_ynode *src = mm_ymap_get(v, "source", NULL), *toks = mm_ymap_get(v, "tokens", NULL),
                   *pad = mm_ymap_get(v, "pad_to_multiple_of", NULL);
    int rc = 0;
    if (mm_cfg_given(src))
        rc = load_tok_source(x, src, "tokenizer.source");
    else
        c->tokenizer_source = MM_TOK_UNION;
    if (rc < 0)
        return rc;
    if (mm_cfg_given(pad)) {
        if (pad->kind != MM_YN_SCALAR || pad->type != MM_YS_INT || !pad->ival_ok || pad->ival <= 0 ||
            pad->ival > (1 << 20))
            return mm_cfg_fail(x, pad, -EINVAL, "tokenizer.pad_to_multiple_of must be a positive integer (at most 1048576), "
                        "found %s (e.g. 64)", mm_ynode_describe(pad));
        c->pad_to_multiple_of = (long)pad->ival;
    }
    if (!mm_cfg_given(toks))
        return 0;
    if (toks->kind != MM_YN_MAP)
        return mm_cfg_fail(x, toks, -EINVAL, "tokenizer.tokens must map tokens to {source, force}, found %s (write e.g. "
                    "'tokens: {\"<|im_end|>\": {source: org/chat-model}}')", mm_ynode_describe(toks));
    c->tokens = mm_xcalloc(toks->npairs ? toks->npairs : 1, sizeof *c->tokens);
    for (size_t i = 0; i < toks->npairs; i++) {
        c->ntokens = i + 1;
        if ((rc = load_token_entry(x, &toks->pairs[i], &c->tokens[i])) < 0)
            return rc;
    }
    return 0;
}

static int load_tokenizer(const ctx *x, const mm_ynode *root)
{
    mm_config *c = x->c;
    const mm_ynode *ks, *kb, *kc;
    const mm_ynode *ts = mm_ymap_get(root, "tokenizer_source", &ks), *tb = mm_ymap_get(root, "tokenizer", &kb);
    const mm_ynode *ct = mm_ymap_get(root, "chat_template", &kc);
    if (mm_cfg_given(ct)) {
        if (!mm_ynode_is_str(ct))
            return mm_cfg_fail(x, ct, -EINVAL, "chat_template must be text: auto, a built-in name (alpaca, chatml, exaone, "
                        "llama3, mistral) or a Jinja template, found %s", mm_ynode_describe(ct));
        c->chat_template = mm_xstrdup(ct->text);
        c->chat_template_pos = mm_cfg_pos(x, ct);
    }
    if (mm_cfg_given(ts) && mm_cfg_given(tb))
        return mm_cfg_fail(x, kb, -EINVAL, "tokenizer: and tokenizer_source: are both given (keep one: tokenizer_source: X "
                    "is tokenizer: {source: X})");
    if (mm_cfg_given(ts)) {
        c->tokenizer_pos = mm_cfg_pos(x, ks);
        return load_tok_source(x, ts, "tokenizer_source");
    }
    if (mm_cfg_given(tb)) {
        c->tokenizer_pos = mm_cfg_pos(x, kb);
        return load_tokenizer_block(x, tb);
    }
    return 0;
}

/* mergekit wants exactly one of models:, slices: and modules:. */
static int check_inputs(const ctx *x, const mm_ynode *root)
{
    const mm_ynode *mk, *modules = mm_ymap_get(root, "modules", &mk);
    if (!mm_cfg_given(modules))
        return check_one_recipe(x, root, "", ", or one recipe per module under modules:");
    if (mm_cfg_given(mm_ymap_get(root, "models", NULL)) || mm_cfg_given(mm_ymap_get(root, "slices", NULL)))
        return mm_cfg_fail(x, mk, -EINVAL, "modules: is given together with top-level %s (put the recipe of each module "
                    "under modules:, or use models:/slices: alone)",
                    mm_cfg_given(mm_ymap_get(root, "models", NULL)) ? "models:" : "slices:");
    return 0;
}

static int load_root(const ctx *x, const mm_ynode *root)
{
    if (!mm_cfg_given(root))
        return mm_cfg_fail(x, root, -EINVAL, "the configuration is empty (write at least merge_method: and models: or "
                    "slices:)");
    if (root->kind != MM_YN_MAP)
        return mm_cfg_fail(x, root, -EINVAL, "the configuration must be a mapping of keys such as merge_method: and "
                    "models:, found %s (write 'key: value' lines starting at the beginning of the line)",
                    mm_ynode_describe(root));
    /* A file of another kind (mergekit-evolve) gets its one message, not warnings about its keys first. */
    int rc = refuse_unsupported(x, root);
    if (rc < 0)
        return rc;
    /* mergekit-moe's configs are told apart by their experts: list (mergekit has two commands; we one). */
    if (mm_cfg_given(mm_ymap_get(root, "experts", NULL)) && !mm_cfg_given(mm_ymap_get(root, "merge_method", NULL)))
        return mm_cfg_load_moe(x, root);
    mm_cfg_check_keys(x, root, &L_TOP);
    mm_config *c = x->c;
    const mm_ynode *modules = mm_ymap_get(root, "modules", NULL);
    if ((rc = load_method(x, root)) < 0 ||
        (rc = check_inputs(x, root)) < 0 || (rc = mm_cfg_load_dtype(x, root, "dtype", &c->dtype, &c->dtype_pos)) < 0 ||
        (rc = mm_cfg_load_dtype(x, root, "out_dtype", &c->out_dtype, &c->out_dtype_pos)) < 0 ||
        (rc = load_params(x, mm_ymap_get(root, "parameters", NULL), &c->params)) < 0 ||
        (rc = load_optional_ref(x, root, "base_model", &c->base_model)) < 0)
        return rc;
    rc = mm_cfg_given(modules) ? load_modules(x, modules) : load_recipe(x, root, &c->models_syntax, &c->slices, &c->nslices);
    return rc < 0 ? rc : load_tokenizer(x, root);
}

int mm_config_load(const char *path, mm_config **out, mm_err *err)
{
    *out = NULL;
    mm_config *c = mm_xcalloc(1, sizeof *c);
    c->path = mm_xstrdup(path);
    c->dtype = c->out_dtype = MM_DT_NONE;
    mm_ydoc *doc = NULL;
    int rc = mm_file_read_all(path, MAX_CONFIG_SIZE, &c->text, &c->text_len, err);
    if (rc == 0)
        rc = mm_yaml_parse(c->path, c->text, c->text_len, &doc, err);
    if (rc == 0) {
        ctx x = {c, err};
        rc = load_root(&x, mm_ydoc_root(doc));
    }
    mm_ydoc_free(doc);
    if (rc < 0) {
        mm_config_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* ---- freeing ---- */

static void free_pvalue(mm_pvalue *v)
{
    if (v->kind == MM_PV_STR)
        free(v->str);
}

static void free_setting(mm_psetting *s)
{
    if (!s)
        return;
    free_pvalue(&s->scalar);
    for (size_t i = 0; i < s->ngrad; i++)
        free_pvalue(&s->grad[i]);
    free(s->grad);
    for (size_t i = 0; i < s->nconds; i++) {
        free(s->conds[i].filter);
        free_setting(s->conds[i].value);
    }
    free(s->conds);
    free(s);
}

void mm_params_free(mm_params *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->items[i].name);
        free_setting(p->items[i].setting);
    }
    free(p->items);
}

void mm_cfg_free_ref(mm_modelref *r)
{
    if (!r)
        return;
    free(r->ref);
    free(r->path);
    free(r->lora_path);
}

static void free_slices(mm_slice_def *slices, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mm_slice_def *sl = &slices[i];
        for (size_t j = 0; j < sl->nsources; j++) {
            mm_cfg_free_ref(&sl->sources[j].model);
            mm_params_free(&sl->sources[j].params);
        }
        free(sl->sources);
        mm_cfg_free_ref(sl->base_model);
        free(sl->base_model);
        mm_params_free(&sl->params);
    }
    free(slices);
}

void mm_config_free(mm_config *c)
{
    if (!c)
        return;
    free_slices(c->slices, c->nslices);
    for (size_t i = 0; i < c->nmodules; i++) {
        free_slices(c->modules[i].slices, c->modules[i].nslices);
        mm_params_free(&c->modules[i].params);
        free(c->modules[i].name);
    }
    free(c->modules);
    mm_cfg_free_ref(c->base_model);
    free(c->base_model);
    mm_cfg_free_ref(c->tokenizer_model);
    free(c->tokenizer_model);
    for (size_t i = 0; i < c->ntokens; i++) {
        free(c->tokens[i].token);
        free(c->tokens[i].token_text);
        mm_cfg_free_ref(&c->tokens[i].model);
    }
    free(c->tokens);
    free(c->chat_template);
    mm_params_free(&c->params);
    mm_cfg_free_moe(c->moe);
    free(c->merge_method);
    free(c->text);
    free(c->path);
    free(c);
}

const mm_modelref *mm_config_donor(const mm_config *c)
{
    if (c->base_model)
        return c->base_model;
    const mm_slice_def *first = c->nmodules ? &c->modules[0].slices[0] : &c->slices[0];
    return &first->sources[0].model;
}
