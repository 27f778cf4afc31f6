/* A model's architecture as the planner needs it: its modules (text decoder, vision tower, audio
 * tower, projector, ...), each with its own layer stack, layer count and config.json key, inferred
 * from the tensor names and config.json (docs/merge-contract.md D18).
 *
 * Ownership: an mm_arch owns its modules' strings. Thread-safety: immutable after mm_arch_infer. */
#ifndef MM_ARCH_H
#define MM_ARCH_H

#include <stddef.h>

#include "base/util.h"

typedef struct cJSON cJSON;
typedef struct mm_model_tensor mm_model_tensor;

typedef enum { MM_MOD_TEXT, MM_MOD_VISION, MM_MOD_AUDIO, MM_MOD_PROJECTOR, MM_MOD_OTHER } mm_module_kind;

#define MM_MODULE_TEXT "text_decoder"
#define MM_MODULE_VISION "vision_tower"
#define MM_MODULE_AUDIO "audio_tower"
#define MM_MODULE_PROJECTOR "multi_modal_projector"
/* mergekit's name for the one module of a single-module architecture. */
#define MM_MODULE_DEFAULT "default"

typedef struct mm_module {
    char *name;          /* one of the MM_MODULE_* names, or its layer stack's prefix when that is ambiguous */
    mm_module_kind kind;
    char *stack;         /* prefix of its layers ("language_model.model.layers"); NULL: a module without layers */
    int num_layers;      /* layers in the stack (0 without one) */
    char *count_holder;  /* the config.json object that holds its layer count: "" (top level), "text_config", ...;
                          * NULL when config.json has no count for it */
    char *count_key;     /* the key in that object: "num_hidden_layers", "depth", ... */
} mm_module;

typedef struct mm_arch {
    mm_module *mods;
    size_t n;
    int text;            /* index of the text decoder, -1 when no stack can be told to be it */
} mm_arch;

/* Infers the modules of a model from its tensors and config.json (cfg may be NULL) and sets every
 * tensor's module, layer and template_name (tensors must have their names set, the rest zero).
 *
 * Layer stacks: a tensor name's first all-digit dotted component is a layer index of the stack named
 * by the text before it when that stack's indices run 0..n-1 without a gap (nn.Sequential indices
 * such as `visual.merger.mlp.0/.2` have gaps and are not layers) and the stack is not a projector's.
 * Each stack is a module, named by words in its prefix (vision/visual/vit/image/img: vision tower,
 * audio/speech/whisper: audio tower, else the text decoder; several text stacks are told apart by
 * config.json's layer count). Other tensors belong to the module whose distinguishing prefix they
 * start with, to `multi_modal_projector` when a component names a projector, else to the text
 * decoder. A model with one stack (or none) is one module, the text decoder, holding every tensor. */
void mm_arch_infer(mm_arch *a, mm_model_tensor *tensors, size_t n, const cJSON *cfg);
void mm_arch_free(mm_arch *a);

/* The module called `name`, or -1. "default" (mergekit's name for the module of a single-module
 * architecture) names the only module of a single-module model. */
int mm_arch_find(const mm_arch *a, const char *name);

/* The object holding module m's layer count in cfg (a config.json of the same architecture), with
 * the key's item in *key; NULL when there is none. */
cJSON *mm_arch_count_holder(const mm_module *m, const cJSON *cfg, cJSON **key);

/* "text_decoder, vision_tower, ..." for messages. Heap string. */
char *mm_arch_names(const mm_arch *a);

#endif
