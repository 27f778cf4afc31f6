/* Inside the model side of the GGUF view: the families and the two halves of mm_gguf_arch_build —
 * the hyperparameter keys (gguf_keys.c, the converter's set_gguf_parameters) and the tensor list
 * (gguf_tensors.c, its prepare_tensors with filter_tensors, modify_tensors and generate_extra_tensors). */
#ifndef MM_GGUF_ARCH_INT_H
#define MM_GGUF_ARCH_INT_H

#include "gguf_arch.h"
#include "gguf_hparams.h"

/* The converter's model classes we follow, one per family. */
typedef enum mm_gguf_family {
    MM_FAM_LLAMA,  /* LlamaModel: LlamaForCausalLM, MistralForCausalLM */
    MM_FAM_QWEN2,  /* Qwen2Model: Qwen2ForCausalLM */
    MM_FAM_GEMMA,  /* GemmaModel: GemmaForCausalLM */
    MM_FAM_GEMMA2, /* Gemma2Model: Gemma2ForCausalLM */
    MM_FAM_GEMMA3, /* Gemma3Model: Gemma3ForCausalLM, Gemma3ForConditionalGeneration (text part) */
    MM_FAM_PHI3,   /* Phi3MiniModel: Phi3ForCausalLM */
} mm_gguf_family;

/* A context for appending keys: the architecture prefix, and the first failure (later calls do
 * nothing once rc < 0, so a family's keys read as the converter's list of add_* calls). */
typedef struct mm_gguf_keyw {
    mm_gguf_kvs *kv;
    const char *arch;
    mm_err *err;
    int rc;
} mm_gguf_keyw;

/* "{arch}.<suffix>" = v as u32 (or, for an int list, an i32 array, as the writer's add_head_count and
 * add_feed_forward_length do). `what` names the config key for messages. */
void mm_gguf_key_count(mm_gguf_keyw *w, const char *suffix, const cJSON *v, const char *what);
void mm_gguf_key_u32(mm_gguf_keyw *w, const char *suffix, const cJSON *v, const char *what);
void mm_gguf_key_f32(mm_gguf_keyw *w, const char *suffix, const cJSON *v, const char *what);
void mm_gguf_key_f32v(mm_gguf_keyw *w, const char *suffix, double v);

/* Phi-3's RoPE dimension count: int(partial_rotary_factor * hidden_size) // num_attention_heads. */
int mm_gguf_phi3_rope_dims(const mm_gguf_hp *hp, int64_t *out, mm_err *err);

/* The family's set_gguf_parameters keys, in order (general.file_type = ftype among them). */
int mm_gguf_keys(const mm_gguf_hp *hp, mm_gguf_family fam, uint32_t block_count, uint32_t ftype, mm_gguf_keyw *w);

/* The tensors in the converter's order: its generated ones, then the plan's tensors filtered, renamed
 * and transformed. Keys that generate_extra_tensors writes go to `early` (see mm_gguf_arch.early). */
int mm_gguf_tensors(const mm_plan *p, const mm_gguf_hp *hp, mm_gguf_family fam, uint32_t block_count,
                    mm_gguf_arch *out, mm_gguf_keyw *early);

#endif
