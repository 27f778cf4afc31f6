/* The model side of the GGUF view (docs/gguf.md): for an output folder of a family llama.cpp's
 * converter (convert_hf_to_gguf.py) knows and we support — llama (Llama 2/3, Mistral, Yi), qwen2,
 * gemma, gemma2, gemma3 (text), phi3 — the GGUF architecture name, the hyperparameter key/values the
 * converter's set_gguf_parameters writes, and the list of GGUF tensors: each one's GGUF name, which
 * output tensor of the plan it is made from and how (the converter's modify_tensors), in the converter's
 * order. Any other family is refused with an error naming it.
 *
 * Everything is derived from what a client of the output folder sees: the plan's served config.json
 * (mm_plan_file_bytes) and its output tensors (names, shapes, dtypes, shard order), so the GGUF equals
 * what the converter writes for the built folder. The parts: gguf_hparams.c (config.json as the converter
 * sees it through transformers' AutoConfig), gguf_keys.c (set_gguf_parameters), gguf_tensors.c
 * (prepare_tensors: order, filter_tensors, modify_tensors, generate_extra_tensors), gguf_arch.c (the
 * family and what is refused). Architectures the converter also handles with these classes
 * (MixtralForCausalLM, LlavaForConditionalGeneration, ...) are refused like any other. */
#ifndef MM_GGUF_ARCH_H
#define MM_GGUF_ARCH_H

#include <stddef.h>
#include <stdint.h>

#include "formats/gguf.h"
#include "merge/plan/plan.h"

#define MM_GGUF_GENERATED ((size_t)-1)

/* One tensor of the GGUF file. Its values: the plan tensor `src` (F32, F16 or BF16) as the converter
 * holds it — BF16 converted to float32 before modify_tensors, F16 and F32 kept — then the transforms
 * below in that dtype, then encoded in the file's type (F32 where keep_f32, else the outtype;
 * gguf_plan.c). */
typedef struct mm_gguf_tensor {
    char *name;             /* GGUF name ("blk.0.attn_q.weight") */
    size_t src;             /* index into p->tensors, or MM_GGUF_GENERATED */
    float *gen;             /* MM_GGUF_GENERATED: the values (numel of shape), owned; else NULL */
    int ndim;
    uint64_t shape[MM_MAX_DIMS]; /* outermost first, as safetensors has it (the GGUF ne[] is its reverse).
                               shape[0] may be less than the source's rows: the tensor is then its leading
                               rows (Gemma 3's embedding cut to the vocabulary, data_torch[:n]) */
    uint32_t permute_heads; /* >0: llama's Q/K row permutation over this many heads: with hd = rows / heads,
                               output row h*hd + 2i + j is input row h*hd + j*(hd/2) + i (i < hd/2, j < 2);
                               also for 1-D biases (q_proj.bias, k_proj.bias), each element a row */
    int add_one;            /* 1 is added to every value (Gemma's norms: every name ending in norm.weight,
                               for gemma, gemma2 and gemma3 alike), in float32 for F32 and BF16 sources (BF16
                               is float32 by then), in half precision for F16 ones (rounded to f16, as torch
                               adds half tensors) */
    int keep_f32;           /* stored as F32 whatever the outtype: 1-D, *_norm.weight, or not ending in
                               .weight (biases); the families here add no rule of their own */
} mm_gguf_tensor;

typedef struct mm_gguf_arch {
    char *arch;             /* GGUF architecture name: "llama", "qwen2", "gemma", "gemma2", "gemma3", "phi3" */
    mm_gguf_tensor *tensors;
    size_t ntensors;
    /* Keys the converter writes while it prepares the tensors (generate_extra_tensors), which runs before
     * the metadata: they come right after general.architecture, before general.type. Phi-3 with
     * long-context RoPE factors: phi3.rope.scaling.attn_factor. */
    mm_gguf_kvs early;
} mm_gguf_arch;

/* Fills *out (tensors, and out->early) and appends to kv the keys of the converter's set_gguf_parameters
 * for the family, in its order ({arch}.context_length, .embedding_length, .feed_forward_length,
 * .block_count, .attention.*, .rope.*, general.file_type = ftype, ...); general.architecture,
 * general.type, the naming keys, general.quantization_version and the tokenizer keys are the caller's.
 * On failure *out is left empty (mm_gguf_arch_free on it is harmless). Returns 0, or -EINVAL/-ENOTSUP with a
 * message ("the GGUF view supports llama, qwen2, gemma, gemma2, gemma3 and phi3 models; this merge's
 * config.json says architectures ['FalconForCausalLM']") — before anything is mounted. */
int mm_gguf_arch_build(const mm_plan *p, uint32_t ftype, mm_gguf_kvs *kv, mm_gguf_arch *out, mm_err *err);
void mm_gguf_arch_free(mm_gguf_arch *a);

#endif
