#include <cjson/cJSON.h>

#include "gguf_plan.h"

static const char *source_name(const mm_gguf_file *g, const mm_plan *p, size_t i)
{
    size_t src = g->arch.tensors[i].src;
    return src == MM_GGUF_GENERATED ? NULL : p->tensors[src].name;
}

void mm_gguf_print(const mm_gguf_file *g, const mm_plan *p, FILE *f)
{
    fprintf(f, "\ngguf: %s  %llu bytes, %s, architecture %s, %zu tensors\n", g->file_name,
            (unsigned long long)g->size, g->type_name, g->arch.arch, g->arch.ntensors);
    for (size_t i = 0; i < g->arch.ntensors; i++) {
        const mm_gguf_tensor *t = &g->arch.tensors[i];
        fprintf(f, "  %s %s [", t->name, mm_gguf_qtype_name(g->types[i]));
        for (int d = t->ndim - 1; d >= 0; d--)
            fprintf(f, "%llu%s", (unsigned long long)t->shape[d], d ? ", " : "");
        const char *src = source_name(g, p, i);
        fprintf(f, "] <- %s", src ? src : "(generated from config.json)");
        if (t->permute_heads)
            fprintf(f, "  rows permuted over %u heads", t->permute_heads);
        if (t->add_one)
            fprintf(f, "  + 1");
        fprintf(f, "\n");
    }
}

cJSON *mm_gguf_json(const mm_gguf_file *g, const mm_plan *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", g->file_name);
    cJSON_AddStringToObject(o, "type", g->type_name);
    cJSON_AddStringToObject(o, "architecture", g->arch.arch);
    cJSON_AddNumberToObject(o, "size", (double)g->size);
    cJSON_AddNumberToObject(o, "file_type", g->ftype);
    cJSON_AddNumberToObject(o, "tensors", (double)g->arch.ntensors);
    cJSON *list = cJSON_AddArrayToObject(o, "tensor_list");
    for (size_t i = 0; i < g->arch.ntensors; i++) {
        const mm_gguf_tensor *t = &g->arch.tensors[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", t->name);
        cJSON_AddStringToObject(e, "type", mm_gguf_qtype_name(g->types[i]));
        cJSON *ne = cJSON_AddArrayToObject(e, "ne");
        for (int d = t->ndim - 1; d >= 0; d--)
            cJSON_AddItemToArray(ne, cJSON_CreateNumber((double)t->shape[d]));
        const char *src = source_name(g, p, i);
        if (src)
            cJSON_AddStringToObject(e, "source", src);
        else
            cJSON_AddNullToObject(e, "source");
        cJSON_AddNumberToObject(e, "permute_heads", t->permute_heads);
        cJSON_AddBoolToObject(e, "add_one", t->add_one);
        cJSON_AddItemToArray(list, e);
    }
    return o;
}
