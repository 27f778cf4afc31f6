/* Fuzzes module inference (mm_arch_infer, merge/plan/arch.c): the input is a config.json text, a blank
 * line, then one tensor name per line (a name may hold any byte but '\n').
 *
 * Properties of every result: module names are distinct and each finds itself; the text decoder is a
 * module or -1; every tensor is in a module; a layer tensor's module has a stack, its layer is below that
 * stack's count and its template with the layer filled in gives back its name; a non-layer tensor has
 * no template; a count key, when set, resolves in the config to a number. */
#include <cjson/cJSON.h>
#include <string.h>

#include "fuzz.h"
#include "formats/jsonpy.h"
#include "merge/plan/model.h"

static void check(const mm_arch *a, const mm_model_tensor *t, size_t n, const cJSON *cfg)
{
    FUZZ_CHECK(a->n >= 1 && a->text >= -1 && a->text < (int)a->n);
    for (size_t i = 0; i < a->n; i++) {
        FUZZ_CHECK(mm_arch_find(a, a->mods[i].name) == (int)i);
        FUZZ_CHECK((a->mods[i].stack != NULL) == (a->mods[i].num_layers > 0));
        cJSON *key;
        if (a->mods[i].count_holder)
            FUZZ_CHECK(mm_arch_count_holder(&a->mods[i], cfg, &key) && cJSON_IsNumber(key));
    }
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(t[i].module >= 0 && (size_t)t[i].module < a->n);
        const mm_module *m = &a->mods[t[i].module];
        if (t[i].layer < 0) {
            FUZZ_CHECK(t[i].template_name == NULL);
            continue;
        }
        FUZZ_CHECK(m->stack && t[i].layer < m->num_layers && t[i].template_name);
        FUZZ_CHECK(strncmp(t[i].template_name, m->stack, strlen(m->stack)) == 0);
        char *back = mm_layer_name(t[i].template_name, t[i].layer);
        /* the template keeps the digits' text apart from leading zeros, which the index drops */
        FUZZ_CHECK(strcmp(back, t[i].name) == 0 || strlen(back) < strlen(t[i].name));
        free(back);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    char *sep = strstr(text, "\n\n");
    char *names_text = sep ? sep + 2 : text + size;
    cJSON *cfg = NULL;
    if (sep) {
        mm_err err;
        if (mm_json_parse(text, (size_t)(sep - text), &cfg, &err) < 0)
            cfg = NULL;
    }
    size_t n = 0, cap = 16;
    mm_model_tensor *t = calloc(cap, sizeof *t);
    for (char *p = names_text; *p;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        if (n == cap)
            t = realloc(t, (cap *= 2) * sizeof *t);
        memset(&t[n], 0, sizeof t[n]);
        t[n++].name = p;
        p = nl ? nl + 1 : p + strlen(p);
    }
    mm_arch a;
    mm_arch_infer(&a, t, n, cfg);
    check(&a, t, n, cfg);
    for (size_t i = 0; i < n; i++)
        free(t[i].template_name);
    mm_arch_free(&a);
    free(t);
    cJSON_Delete(cfg);
    free(text);
    return 0;
}
