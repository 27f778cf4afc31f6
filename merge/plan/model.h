/* A source model folder opened for reading: its safetensors shards (validated headers, open file
 * descriptors) and its config.json (D12, D13).
 *
 * Ownership: an mm_model owns its shards, descriptors and parsed config. Thread-safety: immutable after
 * mm_model_open (but for the change state inside each shard's mm_srcfile, which is thread-safe); reads go
 * through pread on the shard descriptors, so any number of threads may read at once. */
#ifndef MM_MODEL_H
#define MM_MODEL_H

#include <stdint.h>

#include "formats/safetensors.h"
#include "merge/plan/arch.h"
#include "srcfile.h"
#include "base/util.h"

typedef struct cJSON cJSON;
typedef struct mm_lora mm_lora;
typedef struct mm_lora_delta mm_lora_delta;

typedef struct mm_shard {
    mm_srcfile *src;  /* the open file, its identity at opening and whether it is still that file */
    const char *path; /* absolute path of the shard file (src's) */
    int fd;           /* src's descriptor, for the read path */
    mm_st_header hdr;
} mm_shard;

/* One tensor of a model. module indexes mm_model.arch.mods; layer is its index in that module's layer
 * stack (-1 for tensors outside the stack); template_name is the name with the layer index replaced by
 * "{}" (NULL when layer < 0). */
typedef struct mm_model_tensor {
    const char *name;
    const mm_st_tensor *st;
    const mm_shard *shard;
    int module;
    int layer;
    char *template_name;
    mm_lora_delta *lora;      /* the adapter's change to this tensor, or NULL (merge/plan/lora.h) */
} mm_model_tensor;

typedef struct mm_model {
    char *path;
    mm_lora *lora;            /* the adapter applied on read, or NULL (D19) */
    mm_shard *shards;
    size_t nshards;
    mm_model_tensor *tensors; /* sorted by name */
    size_t ntensors;
    cJSON *config;            /* parsed config.json, or NULL when the folder has none */
    mm_arch arch;             /* its modules (D18) */
} mm_model;

/* Opens the model folder `path`: model.safetensors, or model.safetensors.index.json and the shards it
 * names (names must be plain file names inside the folder), and config.json when there is one; infers
 * its modules (mm_arch_infer). With lora_path (else NULL), the adapter in that folder is applied to it
 * on read (mm_lora_open, mm_lora_attach). Every header is validated (mm_st_read_file). A folder with only pytorch_model.bin gets an error saying to convert it.
 * Messages name the file. */
int mm_model_open(const char *path, const char *lora_path, mm_model **out, mm_err *err);
void mm_model_free(mm_model *m);

/* Whether m is the model a reference names (its folder and adapter). */
int mm_model_is(const mm_model *m, const char *path, const char *lora_path);

/* Opens a safetensors file and reads its header; the file's identity is taken before the header is
 * read and checked after, so a file replaced in between is an error (-EAGAIN, try again). */
int mm_shard_open(mm_shard *s, const char *path, mm_err *err);
void mm_shard_close(mm_shard *s);

/* The tensor called `name`, or NULL. */
const mm_model_tensor *mm_model_find(const mm_model *m, const char *name);

/* Splits a tensor name at its first all-digit dot-separated component: returns the layer index and
 * fills *template_name (heap, "{}" in place of the digits); -1 and NULL when there is none, or when the
 * name itself contains "{}" (its template would be ambiguous). */
int mm_layer_of(const char *name, char **template_name);

/* Fills `name` from a template by putting `layer` in place of "{}". Heap result. */
char *mm_layer_name(const char *template_name, int layer);


#endif
