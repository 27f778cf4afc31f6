/* `mergemount plan`: the plan for people, or as JSON for scripts and tests. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "merge/plan/lora.h"
#include "merge/plan/rowmap.h"
#include "merge/plan/vocab.h"
#include "plan.h"

static void print_value(FILE *f, const mm_param_def *d, double v)
{
    if (isnan(v))
        fprintf(f, "unset");
    else if (d->type == MM_PT_BOOL)
        fprintf(f, v != 0 ? "true" : "false");
    else {
        char tmp[64];
        mm_format_double(v, tmp, sizeof tmp);
        fprintf(f, "%s", tmp);
    }
}

static void print_params(FILE *f, const mm_param_def *defs, size_t n, const double *vals)
{
    for (size_t k = 0; k < n; k++) {
        if (isnan(vals[k]))
            continue;
        fprintf(f, " %s=", defs[k].name);
        print_value(f, &defs[k], vals[k]);
    }
}

static void print_shape(FILE *f, int ndim, const uint64_t *shape)
{
    fprintf(f, "[");
    for (int d = 0; d < ndim; d++)
        fprintf(f, "%s%llu", d ? ", " : "", (unsigned long long)shape[d]);
    fprintf(f, "]");
}

static void add_params(cJSON *obj, const mm_param_def *defs, size_t n, const double *vals)
{
    for (size_t k = 0; k < n; k++) {
        if (isnan(vals[k]))
            continue;
        if (defs[k].type == MM_PT_BOOL)
            cJSON_AddBoolToObject(obj, defs[k].name, vals[k] != 0);
        else
            cJSON_AddNumberToObject(obj, defs[k].name, vals[k]);
    }
}

static cJSON *shape_json(int ndim, const uint64_t *shape)
{
    cJSON *a = cJSON_CreateArray();
    for (int d = 0; d < ndim; d++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)shape[d]));
    return a;
}

/* Where config.json records module mod's layer count ("text_config.num_hidden_layers"), or NULL. Heap. */
static char *count_path(const mm_plan_module *mod)
{
    const mm_module *m = mod->module;
    if (!m->count_holder)
        return NULL;
    return mm_xasprintf("%s%s%s", m->count_holder, m->count_holder[0] ? "." : "", m->count_key);
}

static void print_modules(const mm_plan *p, FILE *f)
{
    if (!p->nmodules)
        return;
    fprintf(f, "modules:\n");
    for (size_t i = 0; i < p->nmodules; i++) {
        const mm_plan_module *mod = &p->modules[i];
        char *key = count_path(mod);
        fprintf(f, "  %-24s %4d -> %4d layers  %s%s", mod->name, mod->in_layers, mod->out_layers,
                mod->copied ? "copied from " : "merged", mod->copied ? p->model_refs[p->donor] : "");
        if (key)
            fprintf(f, "  (config.json %s)", key);
        fprintf(f, "\n");
        free(key);
    }
    fprintf(f, "\n");
}

/* The tokenizer option as a word: "union", "base", the source model's reference, or NULL (none). */
static const char *vocab_source(const mm_plan *p)
{
    switch (p->cfg->tokenizer_source) {
    case MM_TOK_BASE: return "base";
    case MM_TOK_UNION: return "union";
    case MM_TOK_MODEL: return p->cfg->tokenizer_model->ref;
    default: return NULL;
    }
}

static void print_moe(const mm_plan *p, FILE *f)
{
    const mm_moe_def *m = p->cfg->moe;
    if (m)
        fprintf(f, "mixture of experts (mergekit-moe config): %s output, %zu experts, %ld per token, %zu shared, "
                   "gate_mode %s\n\n",
                p->moe_arch, m->nexperts, m->experts_per_token, m->nshared, m->gate_mode);
}

static void moe_json(const mm_plan *p, cJSON *root)
{
    const mm_moe_def *m = p->cfg->moe;
    if (!m) {
        cJSON_AddNullToObject(root, "moe");
        return;
    }
    cJSON *o = cJSON_AddObjectToObject(root, "moe");
    cJSON_AddStringToObject(o, "architecture", p->moe_arch);
    cJSON_AddNumberToObject(o, "experts", (double)m->nexperts);
    cJSON_AddNumberToObject(o, "experts_per_token", (double)m->experts_per_token);
    cJSON_AddNumberToObject(o, "shared_experts", (double)m->nshared);
    cJSON_AddStringToObject(o, "gate_mode", m->gate_mode);
}

static void print_vocab(const mm_plan *p, FILE *f)
{
    if (p->vocab)
        fprintf(f, "tokenizer: %s, %zu tokens, %llu embedding rows (config.json vocab_size); embeddings remapped to "
                   "it, %zu tokens stripped from the base\n",
                vocab_source(p), p->vocab->n_tokens, (unsigned long long)mm_rowmap_rows(p), p->vocab->nstripped);
    if (p->chat_template)
        fprintf(f, "chat template: %s (%zu characters)\n", p->cfg->chat_template, strlen(p->chat_template));
    if (p->vocab || p->chat_template)
        fprintf(f, "\n");
}

static void vocab_json(const mm_plan *p, cJSON *root)
{
    if (!p->vocab) {
        cJSON_AddNullToObject(root, "tokenizer");
        return;
    }
    cJSON *o = cJSON_AddObjectToObject(root, "tokenizer");
    cJSON_AddStringToObject(o, "source", vocab_source(p));
    cJSON_AddNumberToObject(o, "tokens", (double)p->vocab->n_tokens);
    cJSON_AddNumberToObject(o, "rows", (double)mm_rowmap_rows(p));
    cJSON *st = cJSON_AddArrayToObject(o, "stripped");
    for (size_t i = 0; i < p->vocab->nstripped; i++)
        cJSON_AddItemToArray(st, cJSON_CreateString(p->vocab->stripped[i]));
}

cJSON *mm_plan_json(const mm_plan *p)
{
    cJSON *root = cJSON_CreateObject();
    moe_json(p, root);
    vocab_json(p, root);
    if (p->chat_template)
        cJSON_AddStringToObject(root, "chat_template", p->chat_template);
    else
        cJSON_AddNullToObject(root, "chat_template");
    cJSON *mods = cJSON_AddArrayToObject(root, "modules");
    for (size_t i = 0; i < p->nmodules; i++) {
        const mm_plan_module *mod = &p->modules[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", mod->name);
        cJSON_AddNumberToObject(o, "layers_in", mod->in_layers);
        cJSON_AddNumberToObject(o, "layers_out", mod->out_layers);
        if (mod->copied)
            cJSON_AddStringToObject(o, "copied_from", p->model_refs[p->donor]);
        else
            cJSON_AddNullToObject(o, "copied_from");
        char *key = count_path(mod);
        if (key)
            cJSON_AddStringToObject(o, "config_key", key);
        else
            cJSON_AddNullToObject(o, "config_key");
        free(key);
        cJSON_AddItemToArray(mods, o);
    }
    cJSON *files = cJSON_AddArrayToObject(root, "files");
    for (size_t i = 0; i < p->nfiles; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", p->files[i].name);
        cJSON_AddNumberToObject(o, "size", (double)p->files[i].size);
        cJSON_AddItemToArray(files, o);
    }
    cJSON *tensors = cJSON_AddArrayToObject(root, "tensors");
    for (size_t i = 0; i < p->nfiles; i++)
        for (size_t k = 0; k < p->files[i].ntensors; k++) {
            const mm_out_tensor *t = &p->tensors[p->files[i].tensors[k]];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", t->name);
            cJSON_AddStringToObject(o, "dtype", mm_dtype_name(t->dtype));
            cJSON_AddItemToObject(o, "shape", shape_json(t->ndim, t->shape));
            cJSON_AddStringToObject(o, "file", p->files[i].name);
            cJSON_AddNumberToObject(o, "offset", (double)t->file_offset);
            cJSON_AddStringToObject(o, "method", t->method->name);
            cJSON_AddStringToObject(o, "compute_dtype", t->comp == MM_DT_NONE ? "copy" : mm_dtype_name(t->comp));
            cJSON_AddBoolToObject(o, "remapped", t->rowmap != NULL);
            add_params(cJSON_AddObjectToObject(o, "params"), t->method->gparams, t->method->ngparams, t->gvals);
            cJSON *srcs = cJSON_AddArrayToObject(o, "sources");
            for (size_t j = 0; j < t->ninputs; j++) {
                const mm_input *in = &t->inputs[j];
                cJSON *s = cJSON_CreateObject();
                cJSON_AddStringToObject(s, "model", p->model_refs[in->model_idx]);
                cJSON_AddStringToObject(s, "path", p->models[in->model_idx]->path);
                cJSON_AddStringToObject(s, "tensor", in->mt->name);
                cJSON_AddStringToObject(s, "dtype", mm_dtype_name(in->mt->st->dtype));
                cJSON_AddItemToObject(s, "shape", shape_json(in->mt->st->ndim, in->mt->st->shape));
                cJSON_AddBoolToObject(s, "base", in->is_base);
                if (in->mt->lora)
                    cJSON_AddStringToObject(s, "lora", in->mt->lora->owner->folder);
                else
                    cJSON_AddNullToObject(s, "lora");
                add_params(cJSON_AddObjectToObject(s, "params"), t->method->mparams, t->method->nmparams, in->mvals);
                cJSON_AddItemToArray(srcs, s);
            }
            cJSON_AddItemToArray(tensors, o);
        }
    return root;
}

void mm_plan_print(const mm_plan *p, FILE *f, int json)
{
    if (json) {
        cJSON *root = mm_plan_json(p);
        char *text = cJSON_Print(root);
        fprintf(f, "%s\n", text);
        cJSON_free(text);
        cJSON_Delete(root);
        return;
    }
    uint64_t total = 0;
    print_moe(p, f);
    print_modules(p, f);
    print_vocab(p, f);
    fprintf(f, "files:\n");
    for (size_t i = 0; i < p->nfiles; i++) {
        fprintf(f, "  %-40s %15llu bytes\n", p->files[i].name, (unsigned long long)p->files[i].size);
        total += p->files[i].size;
    }
    fprintf(f, "  %-40s %15llu bytes\n\ntensors (%zu):\n", "total", (unsigned long long)total, p->ntensors);
    for (size_t i = 0; i < p->nfiles; i++)
        for (size_t k = 0; k < p->files[i].ntensors; k++) {
            const mm_out_tensor *t = &p->tensors[p->files[i].tensors[k]];
            fprintf(f, "  %s %s ", t->name, mm_dtype_name(t->dtype));
            print_shape(f, t->ndim, t->shape);
            fprintf(f, " in %s\n    = %s", p->files[i].name, t->method->name);
            if (t->comp == MM_DT_NONE)
                fprintf(f, " (bytes copied)");
            else
                fprintf(f, " in %s", mm_dtype_name(t->comp));
            print_params(f, t->method->gparams, t->method->ngparams, t->gvals);
            fprintf(f, "  (t=%g)%s\n", t->t, t->rowmap ? "  rows remapped to the output vocabulary" : "");
            for (size_t j = 0; j < t->ninputs; j++) {
                const mm_input *in = &t->inputs[j];
                fprintf(f, "    <- %s%s: %s%s %s ", p->model_refs[in->model_idx], in->is_base ? " (base)" : "",
                        in->mt->name, in->mt->lora ? " + LoRA" : "", mm_dtype_name(in->mt->st->dtype));
                print_shape(f, in->mt->st->ndim, in->mt->st->shape);
                print_params(f, t->method->mparams, t->method->nmparams, in->mvals);
                fprintf(f, "\n");
            }
        }
}
