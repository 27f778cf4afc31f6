/* The hyperparameters as llama.cpp's converter sees them (its self.hparams and self.rope_parameters),
 * made from the plan's served config.json the way the converter makes them:
 *
 *   1. transformers' AutoConfig.from_pretrained(folder).to_dict() (transformers 5.x): the config class of
 *      config.json's model_type fills in its __init__ defaults and derived values (num_key_value_heads
 *      from num_attention_heads, head_dim from hidden_size / heads, ...), moves rope_scaling and
 *      rope_theta into rope_parameters (with rope_type, rope_theta and original_max_position_embeddings
 *      filled in) and keeps every other key as it is; a multimodal config's text_config goes through
 *      its own text class;
 *   2. TextModel.__init__: text_config merged over the top level ({**hparams, **text_config}), and the
 *      RoPE keys still at the top level mirrored into rope_parameters.
 *
 * Only the model types of the supported families are known (llama, mistral, qwen2, gemma, gemma2,
 * gemma3, gemma3_text, phi3); any other is refused, since the defaults the converter would see are
 * unknown. Keys are looked up with the converter's find_hparam: the first of a list that is present
 * (a JSON null counts as present, as a Python None in the dict does). */
#ifndef MM_GGUF_HPARAMS_H
#define MM_GGUF_HPARAMS_H

#include <stdint.h>

#include "base/util.h"
#include "merge/plan/plan.h"

typedef struct cJSON cJSON;

typedef struct mm_gguf_hp {
    cJSON *root;          /* self.hparams after the merge (owned) */
    const cJSON *rope;    /* self.rope_parameters: an object inside root, or `empty` */
    cJSON *empty;         /* an empty object for a model without RoPE parameters (owned) */
    char *hf_arch;        /* the architecture the converter picks its class by (text_config's first) */
} mm_gguf_hp;

/* Reads the served config.json: root as written, hf_arch set (to pick the family first). 0, or
 * -EINVAL/-ENOENT with a message naming config.json. Free with mm_gguf_hp_free even on failure. */
int mm_gguf_hp_load(const mm_plan *p, mm_gguf_hp *hp, mm_err *err);
/* Makes root the converter's self.hparams and sets rope (steps 1 and 2 above). 0 or -ENOTSUP for a
 * model_type whose transformers defaults are not known here. */
int mm_gguf_hp_prepare(mm_gguf_hp *hp, mm_err *err);
void mm_gguf_hp_free(mm_gguf_hp *hp);

/* find_hparam: the item of the first key of the NULL-terminated list that root has, else NULL. */
const cJSON *mm_gguf_hp_find(const mm_gguf_hp *hp, const char *const *keys);
/* The same for one key of any object (NULL for no object). */
const cJSON *mm_gguf_hp_get(const cJSON *obj, const char *key);
/* rope_parameters["full_attention"] when there is one, else rope_parameters (what the converter's
 * set_gguf_parameters and generate_extra_tensors read). */
const cJSON *mm_gguf_hp_rope_main(const mm_gguf_hp *hp);

/* Values as the GGUF writer packs them (Python's struct): an unsigned 32-bit key takes an int (a bool
 * counts, a float does not), a float key any number. `what` names the key for the message; a missing
 * item (NULL) or a null is an error as the converter fails there too. */
int mm_gguf_hp_u32(const cJSON *v, const char *what, uint32_t *out, mm_err *err);
int mm_gguf_hp_int(const cJSON *v, const char *what, int64_t *out, mm_err *err);
int mm_gguf_hp_num(const cJSON *v, const char *what, double *out, mm_err *err);
/* Python truthiness of a value (None, 0, 0.0, "", [], {} are false; NULL item: false). */
int mm_gguf_hp_truthy(const cJSON *v);

#endif
