/* The edits that turn the donor's config.json into the output's (docs/merge-contract.md D16, D18): the
 * stored dtype under both of transformers' names, and per-layer lists sliced along with the layers.
 * Pure: parsed trees in, the output tree changed in place, no I/O. The layer count itself is set by the
 * caller (mm_config_layer_key). */
#ifndef MM_CONFIG_OUT_H
#define MM_CONFIG_OUT_H

typedef struct cJSON cJSON;

/* Sets "dtype" (transformers >= 5) and "torch_dtype" (older releases) to `name` ("bfloat16", ...) at
 * the top level of cfg and in every object below it that already has either key (text_config,
 * vision_config, ...), so neither name is left stale. */
void mm_config_set_dtype(cJSON *cfg, const char *name);

/* Where output layer i comes from: the parsed config.json of its model (NULL if it has none) and its
 * layer index in that model. */
typedef struct mm_layer_origin {
    const cJSON *config;
    int layer;
} mm_layer_origin;

/* Makes the per-layer lists of `out` (a copy of `donor`) follow the n output layers: every array in the
 * object that holds the layer-count key whose length equals the donor's layer count (Gemma 2/3 and
 * Qwen3 `layer_types`, Llama 4 `no_rope_layers`, ...) becomes n entries, entry i copied from entry
 * origin[i].layer of the same list in origin[i].config, else of the donor's list. A list for which
 * some layer has neither is left as it was, with a warning. Call before the layer count is changed.
 *
 * Arrays of other lengths are left alone. That includes lists of layer *indices*, such as Qwen2/3-MoE
 * `mlp_only_layers` (the layers with a dense MLP, usually []): they would need remapping by name, not
 * by length, and are not remapped yet. */
void mm_config_slice_layer_lists(cJSON *out, const cJSON *donor, const mm_layer_origin *origin, int n);

#endif
