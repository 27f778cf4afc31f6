/* The family of the output (the converter picks its model class by config.json's first architecture)
 * and the checks that keep the view to what it reproduces; the keys are gguf_keys.c's, the tensors
 * gguf_tensors.c's, the hyperparameters gguf_hparams.c's. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_arch_int.h"

static const struct {
    const char *hf_arch;
    mm_gguf_family fam;
    const char *arch;
} families[] = {
    {"LlamaForCausalLM", MM_FAM_LLAMA, "llama"},
    {"MistralForCausalLM", MM_FAM_LLAMA, "llama"},
    {"Qwen2ForCausalLM", MM_FAM_QWEN2, "qwen2"},
    {"GemmaForCausalLM", MM_FAM_GEMMA, "gemma"},
    {"Gemma2ForCausalLM", MM_FAM_GEMMA2, "gemma2"},
    {"Gemma3ForCausalLM", MM_FAM_GEMMA3, "gemma3"},
    {"Gemma3ForConditionalGeneration", MM_FAM_GEMMA3, "gemma3"},
    {"Phi3ForCausalLM", MM_FAM_PHI3, "phi3"},
};

/* The config's architectures as Python prints the list (['A', 'B']), for messages. */
static char *arch_list(const mm_gguf_hp *hp)
{
    mm_buf b = {0};
    const cJSON *a = mm_gguf_hp_get(hp->root, "architectures"), *e;
    if (!cJSON_IsArray(a))
        return mm_xstrdup(a ? "not a list" : "nothing");
    mm_buf_puts(&b, "[");
    cJSON_ArrayForEach(e, a) mm_buf_printf(&b, "%s'%s'", e == a->child ? "" : ", ",
                                           cJSON_IsString(e) ? e->valuestring : "?");
    mm_buf_puts(&b, "]");
    return b.data;
}

/* What the converter does beyond the families' plain path, which the view refuses rather than differ. */
static int check_plain(const mm_plan *p, const mm_gguf_hp *hp, mm_gguf_family fam, mm_err *err)
{
    if (mm_gguf_hp_truthy(mm_gguf_hp_get(hp->root, "quantization_config")))
        return mm_err_set(err, -ENOTSUP,
                          "config.json has a quantization_config, with which llama.cpp's converter dequantizes or "
                          "repacks tensors; the GGUF view supports unquantized models only (fix: drop the key from "
                          "the donor's config.json if the merged weights are not quantized)");
    if (fam == MM_FAM_LLAMA && mm_gguf_hp_get(hp->root, "draft_vocab_size")) {
        static const char *const layer_keys[] = {"num_hidden_layers", NULL};
        const cJSON *layers = mm_gguf_hp_find(hp, layer_keys);
        if (cJSON_IsNumber(layers) && layers->valuedouble == 1)
            return mm_err_set(err, -ENOTSUP,
                              "config.json describes an EAGLE-3 draft model (draft_vocab_size, one layer), which the "
                              "GGUF view does not support");
    }
    if (fam == MM_FAM_QWEN2) {
        char *data = NULL;
        size_t len = 0;
        int rc = mm_plan_file_bytes(p, "modules.json", &data, &len, NULL);
        free(data);
        if (rc != -ENOENT)
            return mm_err_set(err, -ENOTSUP,
                              "the output serves a sentence-transformers modules.json, from which llama.cpp's "
                              "converter takes a pooling type; the GGUF view does not support it");
    }
    return 0;
}

int mm_gguf_arch_build(const mm_plan *p, uint32_t ftype, mm_gguf_kvs *kv, mm_gguf_arch *out, mm_err *err)
{
    memset(out, 0, sizeof *out);
    mm_gguf_hp hp;
    int rc = mm_gguf_hp_load(p, &hp, err);
    if (rc < 0) {
        mm_gguf_hp_free(&hp);
        return rc;
    }
    size_t f = 0;
    while (f < MM_COUNT(families) && strcmp(families[f].hf_arch, hp.hf_arch) != 0)
        f++;
    if (f == MM_COUNT(families)) {
        char *list = arch_list(&hp);
        rc = mm_err_set(err, -ENOTSUP,
                        "the GGUF view supports llama (LlamaForCausalLM, MistralForCausalLM), qwen2 "
                        "(Qwen2ForCausalLM), gemma (GemmaForCausalLM), gemma2 (Gemma2ForCausalLM), gemma3 "
                        "(Gemma3ForCausalLM, Gemma3ForConditionalGeneration) and phi3 (Phi3ForCausalLM) models; "
                        "this merge's config.json says architectures %s",
                        list);
        free(list);
        mm_gguf_hp_free(&hp);
        return rc;
    }
    mm_gguf_family fam = families[f].fam;
    out->arch = mm_xstrdup(families[f].arch);
    rc = mm_gguf_hp_prepare(&hp, err);
    if (rc == 0)
        rc = check_plain(p, &hp, fam, err);
    /* TextModel.__init__: the block count every family uses */
    static const char *const block_keys[] = {"n_layers", "num_hidden_layers", "n_layer", "num_layers", NULL};
    uint32_t blocks = 0;
    if (rc == 0)
        rc = mm_gguf_hp_u32(mm_gguf_hp_find(&hp, block_keys), "num_hidden_layers", &blocks, err);
    /* the converter prepares the tensors first (write: prepare_tensors, then prepare_metadata) */
    mm_gguf_keyw early = {&out->early, out->arch, err, 0};
    if (rc == 0)
        rc = mm_gguf_tensors(p, &hp, fam, blocks, out, &early);
    mm_gguf_keyw w = {kv, out->arch, err, 0};
    if (rc == 0)
        rc = mm_gguf_keys(&hp, fam, blocks, ftype, &w);
    mm_gguf_hp_free(&hp);
    if (rc < 0)
        mm_gguf_arch_free(out);
    return rc;
}

void mm_gguf_arch_free(mm_gguf_arch *a)
{
    for (size_t i = 0; i < a->ntensors; i++) {
        free(a->tensors[i].name);
        free(a->tensors[i].gen);
    }
    free(a->tensors);
    free(a->arch);
    mm_gguf_kvs_free(&a->early);
    memset(a, 0, sizeof *a);
}
