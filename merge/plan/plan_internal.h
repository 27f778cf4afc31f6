/* Shared between the plan's source files; not a public interface. */
#ifndef MM_PLAN_INTERNAL_H
#define MM_PLAN_INTERNAL_H

#include "merge/plan/config_out.h"
#include "plan.h"

/* Plans every output tensor (plan.c). *total_layers receives the output layer count and *layers (heap,
 * caller frees) the origin of each output layer: the config.json and layer index of the model it is
 * copied or merged from. For a slice with several sources that is the donor of config.json when it is
 * one of them (D2; donor_path is its folder), else the first source: the model whose config.json
 * describes that layer best. */
int mm_plan_tensors(mm_plan *p, const char *donor_path, mm_layer_origin **layers, int *total_layers, mm_err *err);
/* True for embedding-like tensor names (D12). */
int mm_is_embed_name(const char *name);
/* The README.md model card (card.c). Heap string. */
char *mm_card_text(const mm_plan *p);

#endif
