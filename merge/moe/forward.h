/* The forward pass mergekit-moe's gate modes need: the hidden states of a base model for a batch of
 * prompts, computed in float32 from the stored weights.
 *
 * What it matches: transformers' `model(input_ids, attention_mask=mask, output_hidden_states=True)
 * .hidden_states[:-1]` with the model in float32 (every stored weight converted to float32), the default
 * (sdpa) attention and no position_ids given, i.e. hidden_states[0] is the embedding output (scaled by
 * sqrt(hidden_size) for the Gemma families) and hidden_states[l] the input of decoder layer l.
 * Gemma's normalizer sqrt(hidden_size) is rounded to the embedding's stored dtype first: transformers
 * makes it a tensor of the model's dtype, and mergekit-moe loads models in bfloat16, the dtype of the
 * usual checkpoint.
 *
 * Padding (transformers 5's behaviour): positions are 0..seq-1 in every row whatever the padding, a key
 * whose mask is 0 is never attended, attention is causal (and windowed on sliding-window layers). A
 * query that can attend to no key at all (a left-padding position: every key at or before it is
 * padding) gets an all-zero attention output, as torch >= 2.5's scaled_dot_product_attention gives for
 * a fully masked row; its hidden states are still computed and written (mergekit averages over every
 * position, padding included).
 *
 * Gemma 2's attn_logit_softcapping is applied (the architecture's definition and transformers' eager
 * attention); transformers 5's default sdpa attention silently drops it, so a Gemma 2 run there differs.
 *
 * Memory: weights are streamed one decoder layer at a time (loaded, run over every row, freed), the next
 * layer being read on a thread of its own while one runs, so at most two layers are in memory; only the
 * embedding rows of the ids are read. The layer's work is split over a few threads (mm_fwd_threads).
 *
 * Families (config.json model_type, or its text_config's): see mm_fwd_arch_open (merge/moe/fwd_arch.h). */
#ifndef MM_FORWARD_H
#define MM_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "base/util.h"
#include "merge/plan/model.h"
#include "merge/plan/plan.h"

/* Hidden states of `m` for `batch` sequences of `seq` token ids each.
 *   ids:  [batch][seq] token ids, each in [0, vocab) (also at padding positions: they are embedded).
 *   mask: [batch][seq] attention mask, 1 for a real token and 0 for padding; NULL means all 1.
 *   out:  [num_hidden_layers][batch][seq][hidden_size] float32, caller-allocated
 *         (mm_forward_dims gives the sizes); out[l] is hidden_states[l].
 * Returns 0, or -errno with a message: -EINVAL for a model without config.json, an unknown model_type
 * (the message names it and the supported ones), an unsupported setting (a rope type, an activation),
 * a missing or misshapen tensor, an id out of range; -ENOTSUP for a weight dtype that is not
 * BF16/F16/F32; -EIO when a source file cannot be read or changed; -ENOMEM.
 * Thread-safety: any number of calls may run at once on one model. */
int mm_forward_hidden(const mm_model *m, const int32_t *ids, const uint8_t *mask, size_t batch, size_t seq,
                      float *out, mm_err *err);

/* The model's num_hidden_layers and hidden_size as the forward pass reads them: out of mm_forward_hidden
 * holds layers * batch * seq * hidden floats. 0, or mm_forward_hidden's errors about the config. */
int mm_forward_dims(const mm_model *m, size_t *layers, size_t *hidden, mm_err *err);

/* Hands this forward pass to the planner for mergekit-moe's hidden gate modes (o->moe_hidden, moe_dims). */
void mm_forward_plug(mm_plan_options *o);

#endif
