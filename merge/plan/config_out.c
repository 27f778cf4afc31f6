#include "merge/plan/config_out.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "formats/jsonpy.h"

static void set_string(cJSON *obj, const char *key, const char *value)
{
    cJSON *v = cJSON_CreateString(value);
    if (mm_json_has(obj, key))
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v);
    else
        cJSON_AddItemToObject(obj, key, v);
}

static void set_dtype_in(cJSON *obj, const char *name, int always)
{
    if (always || mm_json_has(obj, "dtype") || mm_json_has(obj, "torch_dtype")) {
        set_string(obj, "dtype", name);
        set_string(obj, "torch_dtype", name);
    }
    cJSON *c;
    cJSON_ArrayForEach(c, obj)
    {
        if (cJSON_IsObject(c))
            set_dtype_in(c, name, 0);
    }
}

void mm_config_set_dtype(cJSON *cfg, const char *name)
{
    if (cJSON_IsObject(cfg))
        set_dtype_in(cfg, name, 1);
}

/* Entry `layer` of the per-layer list `name` in a holder of a module's layer count `key`, or NULL when
 * it has no such list. */
static const cJSON *layer_entry(const cJSON *holder, const char *key, const char *name, int layer)
{
    const cJSON *k = holder ? cJSON_GetObjectItemCaseSensitive(holder, key) : NULL;
    const cJSON *list = holder ? cJSON_GetObjectItemCaseSensitive(holder, name) : NULL;
    if (!cJSON_IsNumber(k) || !cJSON_IsArray(list) || cJSON_GetArraySize(list) != k->valuedouble || layer < 0 ||
        layer >= cJSON_GetArraySize(list))
        return NULL;
    return cJSON_GetArrayItem(list, layer);
}

void mm_config_slice_layer_lists(cJSON *out_obj, const cJSON *donor_obj, int donor_n, const mm_layer_origin *origin,
                                 int n)
{
    if (donor_n <= 0)
        return;
    cJSON *c = out_obj->child;
    while (c) {
        cJSON *next = c->next;
        if (cJSON_IsArray(c) && cJSON_GetArraySize(c) == donor_n) {
            cJSON *list = cJSON_CreateArray();
            int ok = 1;
            for (int i = 0; i < n && ok; i++) {
                const cJSON *e = layer_entry(origin[i].holder, origin[i].key, c->string, origin[i].layer);
                if (!e) {
                    const cJSON *d = cJSON_GetObjectItemCaseSensitive(donor_obj, c->string);
                    e = cJSON_IsArray(d) && origin[i].layer >= 0 && origin[i].layer < cJSON_GetArraySize(d)
                            ? cJSON_GetArrayItem(d, origin[i].layer)
                            : NULL;
                }
                if (e)
                    cJSON_AddItemToArray(list, cJSON_Duplicate(e, 1));
                else
                    ok = 0;
            }
            if (ok) {
                cJSON_ReplaceItemInObjectCaseSensitive(out_obj, c->string, list);
            } else {
                mm_log_warn("config.json: '%s' has one entry per layer, but an output layer comes from a layer "
                            "that neither its model's config.json nor the donor's describes; left as the donor has it",
                            c->string);
                cJSON_Delete(list);
            }
        }
        c = next;
    }
}

/* The families whose config class derives layer_types from the position when config.json has none:
 * layer i is full attention when (i + 1) is a multiple of the pattern, else `other`. */
static const struct {
    const char *model_type, *pattern_key, *other;
    int pattern;
} derived_types[] = {
    {"gemma2", NULL, "sliding_attention", 2},
    {"gemma3", "sliding_window_pattern", "sliding_attention", 6},
    {"gemma3_text", "sliding_window_pattern", "sliding_attention", 6},
    {"cohere2", "sliding_window_pattern", "sliding_attention", 4},
    {"gpt_oss", NULL, "sliding_attention", 2},
    {"vaultgemma", NULL, "sliding_attention", 2},
    {"olmo3", NULL, "sliding_attention", 4},
    {"qwen3_next", "full_attention_interval", "linear_attention", 4},
    {"qwen3_5", "full_attention_interval", "linear_attention", 4},
    {"qwen3_5_text", "full_attention_interval", "linear_attention", 4},
    {"qwen3_5_moe", "full_attention_interval", "linear_attention", 4},
    {"qwen3_5_moe_text", "full_attention_interval", "linear_attention", 4},
};

/* The type transformers gives layer `layer` of the config object `holder`, or NULL when its class
 * derives none from the position. */
static const char *derived_type(const cJSON *holder, int layer)
{
    const cJSON *mt = holder ? cJSON_GetObjectItemCaseSensitive(holder, "model_type") : NULL;
    if (!cJSON_IsString(mt))
        return NULL;
    for (size_t i = 0; i < MM_COUNT(derived_types); i++) {
        if (strcmp(mt->valuestring, derived_types[i].model_type) != 0)
            continue;
        int p = derived_types[i].pattern;
        const cJSON *k = derived_types[i].pattern_key
                             ? cJSON_GetObjectItemCaseSensitive(holder, derived_types[i].pattern_key)
                             : NULL;
        if (cJSON_IsNumber(k) && k->valuedouble >= 1 && k->valuedouble < 1e6)
            p = (int)k->valuedouble;
        return (layer + 1) % p ? derived_types[i].other : "full_attention";
    }
    return NULL;
}

void mm_config_write_layer_types(cJSON *out_obj, const cJSON *donor_obj, int donor_n, const mm_layer_origin *origin,
                                 int n)
{
    if (mm_json_has(out_obj, "layer_types"))
        return;
    int moved = n != donor_n;
    for (int i = 0; i < n && !moved; i++)
        moved = origin[i].layer != i;
    if (!moved)
        return;
    cJSON *list = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        const char *t = derived_type(origin[i].holder ? origin[i].holder : donor_obj, origin[i].layer);
        if (!t) {
            cJSON_Delete(list);
            return;
        }
        cJSON_AddItemToArray(list, cJSON_CreateString(t));
    }
    cJSON_AddItemToObject(out_obj, "layer_types", list);
}

static int int_item(const cJSON *v)
{
    return cJSON_IsNumber(v) && !mm_json_is_float(v) && v->valuedouble == (double)(long)v->valuedouble;
}

cJSON *mm_config_vocab_holder(const cJSON *cfg)
{
    if (int_item(cJSON_GetObjectItemCaseSensitive(cfg, "vocab_size")))
        return (cJSON *)cfg;
    cJSON *text = cJSON_GetObjectItemCaseSensitive(cfg, "text_config");
    return cJSON_IsObject(text) && int_item(cJSON_GetObjectItemCaseSensitive(text, "vocab_size")) ? text : NULL;
}

long mm_config_vocab_size(const cJSON *cfg)
{
    const cJSON *h = cfg ? mm_config_vocab_holder(cfg) : NULL;
    return h ? (long)cJSON_GetObjectItemCaseSensitive(h, "vocab_size")->valuedouble : -1;
}

void mm_config_set_vocab_size(cJSON *cfg, long n)
{
    cJSON *h = mm_config_vocab_holder(cfg);
    if (!h)
        h = cfg;
    cJSON *old = cJSON_GetObjectItemCaseSensitive(h, "vocab_size");
    if (old)
        cJSON_SetNumberValue(old, (double)n);
    else
        cJSON_AddNumberToObject(h, "vocab_size", (double)n);
}
