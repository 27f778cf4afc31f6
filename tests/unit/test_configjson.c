/* The output config.json: numbers keep the kind their text gave them (formats/jsonpy), both dtype names
 * are set, and per-layer lists follow the output layers (merge/plan/config_out). */
#include <cjson/cJSON.h>
#include <stdlib.h>

#include "check.h"
#include "formats/jsonpy.h"
#include "merge/plan/config_out.h"

static cJSON *parse(const char *text)
{
    cJSON *v = NULL;
    mm_err err = {0};
    CHECK(mm_json_parse(text, strlen(text), &v, &err) == 0);
    return v;
}

/* Writes v and compares with what Python's json.dumps(json.loads(text), indent=2, sort_keys=True) gives. */
static void check_written(const cJSON *v, const char *want)
{
    mm_buf b = {0};
    mm_json_write_py(v, &b);
    if (strcmp(b.data, want) != 0)
        fprintf(stderr, "written:\n%s\nwanted:\n%s\n", b.data, want);
    CHECK(strcmp(b.data, want) == 0);
    mm_buf_free(&b);
}

/* A fraction or an exponent makes a float, whatever the value; digits in keys and strings are no
 * numbers and do not shift the pairing of tokens with items. */
static void test_float_marks(void)
{
    cJSON *v = parse("{\"rope_theta\": 10000.0, \"n\": 10000, \"eps\": 1e-06, \"k1.5\": \"2.5e3 \\\" 7.0\","
                     " \"l\": [0.0, 1, -2.5E3, {\"x\": 3e2, \"y\": -0}], \"z\": 0.02, \"big\": 1E16}");
    CHECK(mm_json_is_float(cJSON_GetObjectItem(v, "rope_theta")));
    CHECK(!mm_json_is_float(cJSON_GetObjectItem(v, "n")));
    CHECK(mm_json_is_float(cJSON_GetObjectItem(v, "eps")));
    CHECK(!mm_json_is_float(cJSON_GetObjectItem(v, "k1.5")));
    const cJSON *l = cJSON_GetObjectItem(v, "l");
    CHECK(mm_json_is_float(cJSON_GetArrayItem(l, 0)));
    CHECK(!mm_json_is_float(cJSON_GetArrayItem(l, 1)));
    CHECK(mm_json_is_float(cJSON_GetArrayItem(l, 2)));
    CHECK(mm_json_is_float(cJSON_GetObjectItem(cJSON_GetArrayItem(l, 3), "x")));
    CHECK(!mm_json_is_float(cJSON_GetObjectItem(cJSON_GetArrayItem(l, 3), "y")));
    check_written(v, "{\n"
                     "  \"big\": 1e+16,\n"
                     "  \"eps\": 1e-06,\n"
                     "  \"k1.5\": \"2.5e3 \\\" 7.0\",\n"
                     "  \"l\": [\n"
                     "    0.0,\n"
                     "    1,\n"
                     "    -2500.0,\n"
                     "    {\n"
                     "      \"x\": 300.0,\n"
                     "      \"y\": 0\n"
                     "    }\n"
                     "  ],\n"
                     "  \"n\": 10000,\n"
                     "  \"rope_theta\": 10000.0,\n"
                     "  \"z\": 0.02\n"
                     "}");
    /* The plan edits a copy of the donor's config: the marks must come along, and a number changed in
     * place keeps its kind. */
    cJSON *d = cJSON_Duplicate(v, 1);
    CHECK(mm_json_is_float(cJSON_GetObjectItem(d, "rope_theta")));
    CHECK(!mm_json_is_float(cJSON_GetObjectItem(d, "n")));
    cJSON_SetNumberValue(cJSON_GetObjectItem(d, "n"), 12);
    CHECK(!mm_json_is_float(cJSON_GetObjectItem(d, "n")));
    CHECK(cJSON_IsNumber(cJSON_GetObjectItem(d, "rope_theta")));
    cJSON_Delete(d);
    cJSON_Delete(v);
    /* Ints stay ints at any size (the writer once switched to 1e+16 there); equal keys keep their
     * order, so a file with a duplicated key is written the same way every time. */
    v = parse("{\"k\": 2, \"big\": 10000000000000000, \"k\": 1, \"a\": 0}");
    check_written(v, "{\n  \"a\": 0,\n  \"big\": 10000000000000000,\n  \"k\": 2,\n  \"k\": 1\n}");
    cJSON_Delete(v);
    /* A number made by cJSON is an int when integral, as before. */
    cJSON *n = cJSON_CreateNumber(32);
    CHECK(!mm_json_is_float(n));
    check_written(n, "32");
    mm_json_set_float(n, 1);
    check_written(n, "32.0");
    cJSON_Delete(n);
}

/* Both names, at the top level always and below it wherever one of them was. */
static void test_set_dtype(void)
{
    cJSON *v = parse("{\"dtype\": \"float32\", \"text_config\": {\"torch_dtype\": \"float32\", \"n\": 1},"
                     " \"vision_config\": {\"dtype\": \"float16\", \"deep\": {\"torch_dtype\": null}},"
                     " \"quantization_config\": {\"bits\": 4}}");
    mm_config_set_dtype(v, "bfloat16");
    check_written(v, "{\n"
                     "  \"dtype\": \"bfloat16\",\n"
                     "  \"quantization_config\": {\n"
                     "    \"bits\": 4\n"
                     "  },\n"
                     "  \"text_config\": {\n"
                     "    \"dtype\": \"bfloat16\",\n"
                     "    \"n\": 1,\n"
                     "    \"torch_dtype\": \"bfloat16\"\n"
                     "  },\n"
                     "  \"torch_dtype\": \"bfloat16\",\n"
                     "  \"vision_config\": {\n"
                     "    \"deep\": {\n"
                     "      \"dtype\": \"bfloat16\",\n"
                     "      \"torch_dtype\": \"bfloat16\"\n"
                     "    },\n"
                     "    \"dtype\": \"bfloat16\",\n"
                     "    \"torch_dtype\": \"bfloat16\"\n"
                     "  }\n"
                     "}");
    cJSON_Delete(v);
}

static char *list_text(const cJSON *obj, const char *key)
{
    return cJSON_PrintUnformatted(cJSON_GetObjectItem(obj, key));
}

static void check_list(const cJSON *obj, const char *key, const char *want)
{
    char *s = list_text(obj, key);
    if (!s || strcmp(s, want) != 0)
        fprintf(stderr, "%s = %s, want %s\n", key, s ? s : "(none)", want);
    CHECK(s && strcmp(s, want) == 0);
    free(s);
}

/* A frankenmerge of 4-layer models into 6 layers: [0, 4) of the donor, then layers 2-3 of another
 * model. Lists as long as the layer count follow; other lists and other objects do not. */
static void test_slice_layer_lists(void)
{
    const char *text = "{\"num_hidden_layers\": 4, \"layer_types\": [\"s\", \"s\", \"s\", \"f\"],"
                       " \"no_rope_layers\": [1, 1, 0.5, 0], \"mlp_only_layers\": [1], \"pair\": [1, 2],"
                       " \"sub\": {\"also\": [1, 2, 3, 4]}}";
    cJSON *donor = parse(text), *out = cJSON_Duplicate(donor, 1);
    cJSON *other = parse("{\"num_hidden_layers\": 4, \"layer_types\": [\"A\", \"B\", \"C\", \"D\"]}");
    const char *k = "num_hidden_layers";
    mm_layer_origin o[6] = {{donor, k, 0}, {donor, k, 1}, {donor, k, 2}, {donor, k, 3}, {other, k, 2}, {other, k, 3}};
    mm_config_slice_layer_lists(out, donor, 4, o, 6);
    check_list(out, "layer_types", "[\"s\",\"s\",\"s\",\"f\",\"C\",\"D\"]");
    /* `other` has no no_rope_layers: the donor's entries for those layer indices stand in. */
    check_list(out, "no_rope_layers", "[1,1,0.5,0,0.5,0]");
    CHECK(mm_json_is_float(cJSON_GetArrayItem(cJSON_GetObjectItem(out, "no_rope_layers"), 4)));
    check_list(out, "mlp_only_layers", "[1]");
    check_list(out, "pair", "[1,2]");
    check_list(cJSON_GetObjectItem(out, "sub"), "also", "[1,2,3,4]");
    cJSON_Delete(out);

    /* A layer past the donor's list, from a model without the list: left as the donor has it. */
    out = cJSON_Duplicate(donor, 1);
    cJSON *deep = parse("{\"num_hidden_layers\": 8}");
    mm_layer_origin o2[2] = {{donor, k, 0}, {deep, k, 7}};
    mm_config_slice_layer_lists(out, donor, 4, o2, 2);
    check_list(out, "layer_types", "[\"s\",\"s\",\"s\",\"f\"]");
    cJSON_Delete(out);
    cJSON_Delete(deep);
    cJSON_Delete(other);
    cJSON_Delete(donor);

    /* The lists of a multimodal config sit beside a module's layer count (text_config here); a holder
     * whose count disagrees with the list's length does not lend entries. */
    donor = parse("{\"layer_types\": [1, 2], \"text_config\": {\"num_hidden_layers\": 2, \"layer_types\": [\"a\", \"b\"]}}");
    cJSON *odd = parse("{\"num_hidden_layers\": 3, \"layer_types\": [\"x\", \"y\"]}");
    out = cJSON_Duplicate(donor, 1);
    cJSON *tc = cJSON_GetObjectItem(donor, "text_config");
    mm_layer_origin o3[3] = {{tc, k, 1}, {tc, k, 0}, {odd, k, 1}};
    mm_config_slice_layer_lists(cJSON_GetObjectItem(out, "text_config"), tc, 2, o3, 3);
    check_list(cJSON_GetObjectItem(out, "text_config"), "layer_types", "[\"b\",\"a\",\"b\"]");
    check_list(out, "layer_types", "[1,2]");
    cJSON_Delete(odd);
    cJSON_Delete(out);
    cJSON_Delete(donor);
}

/* layer_types written from the position rule of the model class when layers move (Gemma 3's every
 * sixth layer full attention, unless sliding_window_pattern says otherwise). */
static void test_write_layer_types(void)
{
    cJSON *donor = parse("{\"model_type\": \"gemma3_text\", \"num_hidden_layers\": 8}");
    cJSON *other = parse("{\"model_type\": \"gemma3_text\", \"num_hidden_layers\": 8, \"sliding_window_pattern\": 2}");
    const char *k = "num_hidden_layers";
    cJSON *out = cJSON_Duplicate(donor, 1);
    /* donor layers 4, 5 (5 is full), then layer 1 of a model with pattern 2 (full) and its layer 2 */
    mm_layer_origin o[4] = {{donor, k, 4}, {donor, k, 5}, {other, k, 1}, {NULL, NULL, 2}};
    mm_config_write_layer_types(out, donor, 8, o, 4);
    check_list(out, "layer_types", "[\"sliding_attention\",\"full_attention\",\"full_attention\",\"sliding_attention\"]");
    cJSON_Delete(out);
    /* the donor's layers in order: nothing to write; nor for a class without a position rule, nor over
     * an explicit list */
    out = cJSON_Duplicate(donor, 1);
    mm_layer_origin same[8];
    for (int i = 0; i < 8; i++)
        same[i] = (mm_layer_origin){donor, k, i};
    mm_config_write_layer_types(out, donor, 8, same, 8);
    CHECK(!cJSON_HasObjectItem(out, "layer_types"));
    cJSON_Delete(out);
    cJSON *llama = parse("{\"model_type\": \"llama\", \"num_hidden_layers\": 8}");
    out = cJSON_Duplicate(llama, 1);
    mm_layer_origin lo[2] = {{llama, k, 4}, {llama, k, 5}};
    mm_config_write_layer_types(out, llama, 8, lo, 2);
    CHECK(!cJSON_HasObjectItem(out, "layer_types"));
    cJSON_Delete(out);
    out = parse("{\"model_type\": \"gemma2\", \"layer_types\": [\"x\"]}");
    mm_config_write_layer_types(out, donor, 8, o, 2);
    check_list(out, "layer_types", "[\"x\"]");
    cJSON_Delete(out);
    cJSON_Delete(llama);
    cJSON_Delete(other);
    cJSON_Delete(donor);
}

int main(void)
{
    test_float_marks();
    test_set_dtype();
    test_slice_layer_lists();
    test_write_layer_types();
    return mm_check_report();
}
