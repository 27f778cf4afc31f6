/* Shared between the plan's source files; not a public interface. */
#ifndef MM_PLAN_INTERNAL_H
#define MM_PLAN_INTERNAL_H

#include "plan.h"

/* Where an output layer is copied or merged from: one model of the plan (mm_plan.models) and its layer
 * index there. For a slice with several sources that is the donor of config.json when it is one of
 * them (D2), else the first source: the model whose config.json describes that layer best. */
typedef struct mm_layer_src {
    size_t model_idx;
    int layer;
} mm_layer_src;

/* Plans every output tensor (plan.c). *total_layers receives the output layer count and *layers (heap,
 * caller frees) the origin of each output layer. donor_path is the donor model's folder. */
int mm_plan_tensors(mm_plan *p, const char *donor_path, mm_layer_src **layers, int *total_layers, mm_err *err);
/* True for embedding-like tensor names (D12). */
int mm_is_embed_name(const char *name);
/* The README.md model card (card.c). Heap string. */
char *mm_card_text(const mm_plan *p);

#endif
