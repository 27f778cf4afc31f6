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
/* The index in p->models of the model `ref` names, opening it (and adding it) the first time. Errors name
 * the reference's place in the config. */
int mm_plan_model(mm_plan *p, const mm_modelref *ref, size_t *idx, mm_err *err);
/* A new output tensor of method m with ninputs inputs (their mvals allocated, NAN-free zeros: the caller
 * sets every input's model_idx, mt, mvals and is_base), base -1, the plan's seed; owned by the plan. */
mm_out_tensor *mm_plan_new_tensor(mm_plan *p, const char *name, const mm_method *m, size_t ninputs);
/* Shape (or the embedding remap), dtypes and the method's prepare, once the inputs are set. */
int mm_plan_finish_tensor(mm_plan *p, mm_out_tensor *o, mm_err *err);
/* True for embedding-like tensor names (D12). */
int mm_is_embed_name(const char *name);
/* The README.md model card (card.c). Heap string. */
char *mm_card_text(const mm_plan *p);

#endif
