#include "merge/plan/config_out.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

#include "merge/plan/model.h"
#include "base/util.h"

static void set_string(cJSON *obj, const char *key, const char *value)
{
    cJSON *v = cJSON_CreateString(value);
    if (cJSON_HasObjectItem(obj, key))
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v);
    else
        cJSON_AddItemToObject(obj, key, v);
}

static void set_dtype_in(cJSON *obj, const char *name, int always)
{
    if (always || cJSON_HasObjectItem(obj, "dtype") || cJSON_HasObjectItem(obj, "torch_dtype")) {
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

/* The layer count of a config and the object that holds it; 0 and NULL if it has none. */
static int layer_count(const cJSON *cfg, cJSON **obj)
{
    cJSON *key = NULL;
    *obj = mm_config_layer_object((cJSON *)cfg, &key);
    return *obj && key->valuedouble >= 1 && key->valuedouble < 1e6 ? (int)key->valuedouble : 0;
}

/* Entry `layer` of the per-layer list `name` of cfg, or NULL when cfg has no such list. */
static const cJSON *layer_entry(const cJSON *cfg, const char *name, int layer)
{
    cJSON *obj;
    int n = cfg ? layer_count(cfg, &obj) : 0;
    if (n == 0 || layer < 0 || layer >= n)
        return NULL;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsArray(list) && cJSON_GetArraySize(list) == n ? cJSON_GetArrayItem(list, layer) : NULL;
}

void mm_config_slice_layer_lists(cJSON *out, const cJSON *donor, const mm_layer_origin *origin, int n)
{
    cJSON *obj, *donor_obj;
    int donor_n = layer_count(donor, &donor_obj);
    if (donor_n == 0 || !layer_count(out, &obj))
        return;
    cJSON *c = obj->child;
    while (c) {
        cJSON *next = c->next;
        if (cJSON_IsArray(c) && cJSON_GetArraySize(c) == donor_n) {
            cJSON *list = cJSON_CreateArray();
            int ok = 1;
            for (int i = 0; i < n && ok; i++) {
                const cJSON *e = layer_entry(origin[i].config, c->string, origin[i].layer);
                if (!e)
                    e = layer_entry(donor, c->string, origin[i].layer);
                if (e)
                    cJSON_AddItemToArray(list, cJSON_Duplicate(e, 1));
                else
                    ok = 0;
            }
            if (ok) {
                cJSON_ReplaceItemInObjectCaseSensitive(obj, c->string, list);
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
