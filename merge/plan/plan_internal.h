/* Shared between the plan's source files; not a public interface. */
#ifndef MM_PLAN_INTERNAL_H
#define MM_PLAN_INTERNAL_H

#include "merge/plan/config_out.h"
#include "plan.h"

/* Opens the models and plans every output tensor, module by module (plan.c; D18): sets p->models,
 * p->donor, p->tensors and p->modules (each module's output layer count and the origin of each of its
 * layers, for config.json). */
int mm_plan_tensors(mm_plan *p, mm_err *err);
/* The output vocabulary (p->vocab) when the config has a tokenizer option, and the chat template
 * (p->chat_template) when it has chat_template (plan_vocab.c; D19). Needs the models open. */
int mm_plan_tokenizer_setup(mm_plan *p, mm_err *err);
/* True for embedding-like tensor names (D12). */
int mm_is_embed_name(const char *name);
/* The README.md model card (card.c). Heap string. */
char *mm_card_text(const mm_plan *p);

#endif
