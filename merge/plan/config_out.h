/* The edits that turn the donor's config.json into the output's (docs/merge-contract.md D16, D18): the
 * stored dtype under both of transformers' names, and per-layer lists sliced along with the layers.
 * Pure: parsed trees in, the output tree changed in place, no I/O. The layer counts themselves are set
 * by the caller. */
#ifndef MM_CONFIG_OUT_H
#define MM_CONFIG_OUT_H

typedef struct cJSON cJSON;

/* Sets "dtype" (transformers >= 5) and "torch_dtype" (older releases) to `name` ("bfloat16", ...) at
 * the top level of cfg and in every object below it that already has either key (text_config,
 * vision_config, ...), so neither name is left stale. */
void mm_config_set_dtype(cJSON *cfg, const char *name);

/* Where an output layer of a module comes from: the object of its model's config.json that holds the
 * module's layer count and that key (NULL if there is none), and its layer index in that model. */
typedef struct mm_layer_origin {
    const cJSON *holder;
    const char *key;
    int layer;
} mm_layer_origin;

/* Makes the per-layer lists of a module follow its n output layers. out_obj is the object of the output
 * config.json that holds the module's layer count, donor_obj the same object of the donor's and donor_n
 * the donor's count: every array in out_obj whose length is donor_n (Gemma 2/3 and Qwen3
 * `layer_types`, Llama 4 `no_rope_layers`, ...) becomes n entries, entry i copied from entry
 * origin[i].layer of the same list in origin[i].holder, else of the donor's list. A list for which some
 * layer has neither is left as it was, with a warning.
 *
 * Arrays of other lengths are left alone. That includes lists of layer *indices*, such as Qwen2/3-MoE
 * `mlp_only_layers` (the layers with a dense MLP, usually []): they would need remapping by name, not
 * by length, and are not remapped yet. */
void mm_config_slice_layer_lists(cJSON *out_obj, const cJSON *donor_obj, int donor_n, const mm_layer_origin *origin,
                                 int n);

/* Writes `layer_types` for a module whose config.json has none but whose model class derives one from
 * the layer's position (transformers: Gemma 2, Gemma 3, Cohere 2, gpt-oss, OLMo 3, Qwen3-Next/3.5:
 * every P-th layer full attention, the others sliding or linear), when layers moved: entry i is the type layer origin[i].layer has in its own model (its holder's
 * model_type and pattern key; the donor's holder when it has none). Without it, transformers would
 * give a layer moved by a frankenmerge the type of its new position. out_obj and donor_obj hold the
 * module's layer count (as for mm_config_slice_layer_lists); donor_n is the donor's count. Does nothing
 * for other model types, and when every output layer i is a layer i (the positions, so the types, are
 * the donor's). */
void mm_config_write_layer_types(cJSON *out_obj, const cJSON *donor_obj, int donor_n, const mm_layer_origin *origin,
                                 int n);

/* The object of config.json that holds the vocabulary size (mergekit's vocab_size_config_key): the top
 * level when it has an integer `vocab_size`, else `text_config` when that has one (vision-language
 * models), else NULL. */
cJSON *mm_config_vocab_holder(const cJSON *cfg);

/* That vocabulary size, or -1 when config.json has none. */
long mm_config_vocab_size(const cJSON *cfg);

/* Sets the vocabulary size to n where mm_config_vocab_holder says, else at the top level. */
void mm_config_set_vocab_size(cJSON *cfg, long n);

#endif
