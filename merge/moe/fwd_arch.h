/* The per-family description of a decoder-only model for the forward pass (merge/moe/forward.h): sizes,
 * norms, activation, RoPE, attention options and tensor names, read from config.json.
 *
 * One description covers every supported family; families differ only in the switches set here, so the
 * layer math (fwd_math.h) and the driver (forward.c) have no per-family code.
 *
 * Supported model_type values (or a text_config's): llama, mistral, qwen2, qwen3, gemma, gemma2,
 * gemma3_text (and gemma3 through its text_config), phi3. */
#ifndef MM_FWD_ARCH_H
#define MM_FWD_ARCH_H

#include <stddef.h>

#include "base/util.h"
#include "merge/plan/model.h"

typedef enum mm_fwd_act { MM_ACT_SILU, MM_ACT_GELU_ERF, MM_ACT_GELU_TANH } mm_fwd_act;

typedef enum mm_rope_type {
    MM_ROPE_DEFAULT, MM_ROPE_LINEAR, MM_ROPE_DYNAMIC, MM_ROPE_LLAMA3, MM_ROPE_YARN, MM_ROPE_LONGROPE
} mm_rope_type;

/* RoPE parameters (transformers' rope_parameters after standardisation). */
typedef struct mm_fwd_rope {
    mm_rope_type type;
    double theta, factor, low_freq_factor, high_freq_factor;
    double original_max_pos; /* llama3, yarn, longrope: original_max_position_embeddings */
    double max_pos;          /* max_position_embeddings (dynamic) */
    size_t rot_dim;          /* the rotated part of a head: head_dim * partial_rotary_factor, even */
    double attention_factor; /* yarn, longrope: cos and sin are scaled by it; < 0 when the config has none */
    double mscale, mscale_all_dim, beta_fast, beta_slow; /* yarn */
    int truncate;            /* yarn: the correction range is rounded outwards */
    double *short_factor, *long_factor; /* longrope: rot_dim / 2 each (heap) */
} mm_fwd_rope;

/* The rotation of one layer for one sequence length: what mm_fwd_rope_freqs computes. */
typedef struct mm_fwd_rot {
    float *inv_freq;         /* dim / 2 inverse frequencies */
    size_t dim;              /* the rotated part of a head */
    float scale;             /* cos and sin are multiplied by it (transformers' attention_scaling) */
} mm_fwd_rot;

typedef struct mm_fwd_arch {
    char family[32];         /* model_type of the text model */
    char prefix[48];         /* tensor names: prefix "embed_tokens.weight", prefix "layers.N. ..." */
    size_t hidden, inter, heads, kv_heads, head_dim, layers, vocab;
    float eps;
    int norm_plus_one;       /* Gemma: RMSNorm scales by (1 + weight) */
    int embed_scale;         /* Gemma: the embedding is multiplied by sqrt(hidden) in the model dtype */
    mm_fwd_act act;
    int qkv_bias, o_bias, mlp_bias;
    int qk_norm;             /* Qwen3, Gemma 3: RMSNorm over each head of q and k before RoPE */
    int fused_qkv;           /* Phi-3: self_attn.qkv_proj = [q; k; v] */
    int fused_gate_up;       /* Phi-3: mlp.gate_up_proj = [gate; up] */
    int sandwich;            /* Gemma 2/3: post-attention, pre- and post-feedforward norms */
    float attn_scale;        /* multiplies q.k: head_dim^-0.5, or query_pre_attn_scalar^-0.5 */
    float softcap;           /* attn_logit_softcapping, 0 for none */
    mm_fwd_rope rope[2];     /* [0] full-attention layers, [1] sliding-window layers */
    size_t *window;          /* [layers]: the sliding window of the layer, 0 for full attention */
} mm_fwd_arch;

/* Reads the description from m's config.json. 0, or -EINVAL with a message (no config.json, an unknown
 * model_type naming the supported list, a missing size, an unsupported rope type or activation). */
int mm_fwd_arch_open(const mm_model *m, mm_fwd_arch *a, mm_err *err);
void mm_fwd_arch_free(mm_fwd_arch *a);

/* The rotation for sequences of `seq` positions (dynamic NTK and longrope depend on it), as transformers'
 * rope init functions compute it (in double, then rounded to float32): fills rot->inv_freq[0 .. rot_dim
 * / 2) (the caller's array) and sets rot->dim and rot->scale. */
void mm_fwd_rope_freqs(const mm_fwd_rope *r, size_t seq, mm_fwd_rot *rot);

#endif
