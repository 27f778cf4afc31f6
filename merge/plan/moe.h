/* A mergekit-moe config planned as a mixture-of-experts checkpoint (docs/merge-contract.md D20): the base
 * model's attention, embeddings and norms, every expert's MLP as one expert per layer (byte ranges of
 * its own files, cast to the output dtype, with residual_scale and noise_scale applied on read), and a
 * router weight per layer computed from the gate mode. The output architecture (Mixtral, DeepSeek MoE,
 * Qwen2-MoE, Qwen3-MoE) is chosen as mergekit-moe chooses it; config.json is the base's with that
 * architecture's fields.
 *
 * Thread-safety: planning is single-threaded; mm_router_rows may run on any number of threads (the gate
 * vectors of all layers are computed once, under a lock, and then only read). */
#ifndef MM_MOE_H
#define MM_MOE_H

#include <stddef.h>

#include "base/sha256.h"
#include "plan.h"

typedef struct mm_moe_gates mm_moe_gates;

/* The router weight of one layer: rows [first, first + count) of that layer's gate vectors (the routed
 * experts in config order, then the shared ones), each `hidden` floats. */
typedef struct mm_router {
    mm_moe_gates *gates;
    int layer;
    size_t first, count;
} mm_router;

/* Plans the MoE of p->cfg->moe: opens the models, chooses the output architecture, adds every output
 * tensor and sets p->moe_config (the output's config.json text). Errors name the config place and the
 * fix: an output architecture that cannot take the models (with each candidate's reason), experts whose
 * shapes differ from the base's, a gate mode not available. */
int mm_plan_moe(mm_plan *p, mm_err *err);

/* Frees the plan's MoE state (gate vectors, routers). */
void mm_moe_free(mm_plan *p);

/* The gate vectors of a plan (moe_gates.c): for the layers of the base and the experts that get router
 * rows (the routed ones, then the shared ones when they have prompts or the gate mode is random or
 * uniform_random, as mergekit-moe has it). Checks the gate mode can be computed here; nothing is
 * computed until a router is read. */
int mm_moe_gates_new(mm_plan *p, size_t base, size_t layers, uint64_t hidden, mm_moe_gates **out, mm_err *err);
/* The number of gate rows per layer (routed + gated shared experts). */
size_t mm_moe_gates_rows(const mm_moe_gates *g);

/* out[count * hidden]: the router's rows in float32, computing every layer's gate vectors on first use.
 * 0, or -EIO / -ENOMEM. */
int mm_router_rows(const mm_router *r, float *out);

/* mergekit's noise_and_scale on values of an expert's tensor, in its dtype dt: v + randn * noise (when
 * noise is not NAN; the normal values are our generator's for elements e0.. of `stream`, D6), then
 * * scale (when not NAN; residual_scale of a down_proj). Each operation rounded to dt, as torch does. */
void mm_moe_expert_effects(mm_dtype dt, float *v, size_t n, uint64_t e0, double scale, double noise, uint64_t seed,
                           uint64_t stream);

/* Adds what determines a router's rows to a recipe hash (gate mode, seed, prompts, base files, layer). */
void mm_router_hash(mm_sha256 *s, const mm_router *r);

#endif
