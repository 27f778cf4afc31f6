/* Shared between the plan's source files; not a public interface. */
#ifndef MM_PLAN_INTERNAL_H
#define MM_PLAN_INTERNAL_H

#include "plan.h"

/* Plans every output tensor (plan.c). *total_layers receives the output layer count. */
int mm_plan_tensors(mm_plan *p, int *total_layers, mm_err *err);
/* True for embedding-like tensor names (D12). */
int mm_is_embed_name(const char *name);
/* The README.md model card (card.c). Heap string. */
char *mm_card_text(const mm_plan *p);

#endif
