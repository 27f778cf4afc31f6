/* A PEFT LoRA adapter applied to its base model on read (docs/merge-contract.md D19): for every module
 * M the adapter targets, the base tensor `M.weight` is read as
 *     W' = round_to(dtype(W), float32(W) + scaling · (B · A))
 * (transposed for fan_in_fan_out bases and for embeddings), which is what PEFT's merge_and_unload
 * computes on the CPU when mergekit merges an adapter, rounded once into the base's dtype. Nothing is
 * written: a block of W' needs the rows of B (or columns of A) for its rows and the adapter's other
 * factor whole, loaded once per tensor.
 *
 * Ownership: an mm_lora belongs to the model it is attached to (mm_model_open). Thread-safety: after
 * mm_lora_attach, mm_lora_apply may run on any number of threads (the factors are loaded once under a
 * lock). */
#ifndef MM_LORA_H
#define MM_LORA_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "merge/plan/model.h"

/* The change one targeted base tensor of `rows` x `cols` gets: element (i, j) adds
 * scaling · Σ_k L[i][k] · R[k][j], with L = B and R = A for a Linear weight, and L = Aᵀ, R = Bᵀ when
 * the product is transposed (fan_in_fan_out, embeddings). */
struct mm_lora_delta {
    mm_lora *owner;
    char *module;             /* M, the base tensor is M.weight */
    const mm_st_tensor *a, *b; /* lora_A / lora_B (or lora_embedding_A / _B) in the adapter file */
    int rank;
    float scaling;
    int embedding;            /* lora_embedding_A/_B: the product is transposed */
    int transposed;
    uint64_t rows, cols;      /* the base tensor's shape */
    float *l, *r;             /* [rows][rank] and [rank][cols], float32, loaded on first use */
};

struct mm_lora {
    char *folder;
    mm_shard file;            /* adapter_model.safetensors */
    mm_lora_delta *deltas;
    size_t n;
    pthread_mutex_t lock;     /* guards loading the factors */
};

/* Opens the adapter folder: adapter_config.json (PEFT's LoraConfig: peft_type LORA, r, lora_alpha,
 * use_rslora, rank_pattern, alpha_pattern, fan_in_fan_out; DoRA, other PEFT types, bias other than
 * "none" and modules_to_save are refused as not supported) and adapter_model.safetensors, whose
 * tensors must all be LoRA factors, each A with its B. Messages name the file and the fix. */
int mm_lora_open(const char *folder, mm_lora **out, mm_err *err);
void mm_lora_free(mm_lora *l);

/* Ties every delta to its base tensor in m (the base model) and sets that tensor's `lora`. Errors: a
 * module the base does not have, a base tensor that is not F32/F16/BF16 or whose shape does not fit
 * the factors. (A rank other than the configured one is an error of mm_lora_open.) */
int mm_lora_attach(mm_lora *l, mm_model *m, mm_err *err);

/* Adds the delta to vals[0..n), the float32 values of the base tensor's elements at (row, col) =
 * (e + i) / out_cols, (e + i) % out_cols for i < n (out_cols: the row length of the output, which may
 * crop the base's). Loads the factors on first use. 0, or -EIO when the adapter file changed or cannot
 * be read (logged once), -ENOMEM. */
int mm_lora_apply(mm_lora_delta *d, uint64_t e, size_t n, uint64_t out_cols, float *vals);

#endif
