/* The plan: everything about the output folder that can be known without computing a tensor —
 * output tensors with dtype, shape, inputs and evaluated parameters; the shard layout and headers;
 * config.json, index, model card. Built once at mount time from a config (docs/merge-contract.md D8,
 * D12, D15, D16).
 *
 * Ownership: the plan owns the models it opened and everything below. Thread-safety: immutable after
 * mm_plan_build; the engine reads it from many threads. */
#ifndef MM_PLAN_H
#define MM_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "method.h"
#include "model.h"
#include "formats/safetensors.h"

#define MM_MAX_INPUTS 64

/* The forward pass of the hidden-state gate modes of mergekit-moe configs (merge/moe/forward.h), handed
 * to the planner by the commands (mm_forward_plug): the plan sits below merge/moe and cannot call it
 * by name. */
typedef int (*mm_hidden_fn)(const mm_model *m, const int32_t *ids, const uint8_t *mask, size_t batch, size_t seq,
                            float *out, mm_err *err);
typedef int (*mm_hidden_dims_fn)(const mm_model *m, size_t *layers, size_t *hidden, mm_err *err);

typedef struct mm_plan_options {
    uint64_t out_shard_size;  /* bytes; 0 disables splitting */
    int copy_tokenizer;
    int write_model_card;
    int allow_crimes;
    uint64_t random_seed;
    int moe_packed;           /* mergekit-moe outputs in transformers 5's packed expert layout (D20) */
    int moe_allow_same;       /* --i-understand-this-is-not-useful-without-training: experts may all be one model */
    mm_hidden_fn moe_hidden;  /* NULL: the hidden gate modes are refused */
    mm_hidden_dims_fn moe_dims;
    int gguf;                 /* the GGUF view's type (merge/gguf/gguf_plan.h mm_gguf_outtype), 0: none; made by
                                 mm_vfs_from_plan, not the planner */
    int gguf_only;            /* serve the GGUF file alone */
} mm_plan_options;

/* Defaults as mergekit-yaml has them: 5B shards, tokenizer copied, model card written. */
void mm_plan_options_default(mm_plan_options *o);

/* One input of an output tensor. The output element (r, c) of a 2-D [rows, cols] output reads input
 * element r * src_cols + c, which crops embeddings to a common leading sub-matrix (B4.5). */
typedef struct mm_input {
    size_t model_idx;             /* into mm_plan.models */
    const mm_model_tensor *mt;    /* the source tensor */
    uint64_t src_cols;            /* row stride of the source in elements (last dim), or 0 if not cropped */
    double *mvals;                /* evaluated per-model parameters, indexed like method->mparams (NAN unset) */
    int is_base;
    uint64_t stream;              /* MoE experts: the noise stream (the per-expert tensor's name, D20) */
} mm_input;

typedef struct mm_out_tensor {
    char *name;
    mm_dtype dtype;        /* storage dtype */
    mm_dtype comp;         /* computation dtype (MM_DT_NONE: bytes copied unchanged) */
    int ndim;
    uint64_t shape[MM_MAX_DIMS];
    uint64_t numel;
    const mm_method *method;
    double *gvals;         /* evaluated global parameters, indexed like method->gparams */
    mm_input *inputs;      /* D1 order */
    size_t ninputs;
    int base;              /* index into inputs of the base model, -1 if none */
    double t;              /* layer position used for gradients */
    uint64_t seed;         /* --random-seed, for the counter-based generator of random methods (D6) */
    char *group_label;     /* shard-order key: greatest input tensor name (B5.4) */
    /* Per-tensor constants prepared by the method (e.g. rounded weights and their sum). */
    float kc[MM_MAX_INPUTS + 4];
    unsigned char recipe[32]; /* what determines the bytes (merge/plan/recipe.h); the block cache key */
    uint64_t block_elems;  /* elements per cache block (about 1 MiB of output) */
    size_t file_idx;       /* into mm_plan.files */
    uint64_t file_offset;  /* absolute byte offset of the data in its shard */
    struct mm_rowmap *rowmap; /* embedding rows remapped to the output vocabulary (merge/plan/rowmap.h),
                                 or NULL */
    const struct mm_router *router; /* a MoE router weight (merge/plan/moe.h), or NULL */
    uint64_t concat_seg;   /* >0: the inputs laid end to end, each this many elements, read as one (MoE
                              packed experts, D20; inputs' mvals are the moe_expert method's) */
} mm_out_tensor;

typedef enum { MM_FILE_STATIC, MM_FILE_SOURCE, MM_FILE_SHARD } mm_file_kind;

typedef struct mm_out_file {
    char *name;
    mm_file_kind kind;
    uint64_t size;
    char *data;            /* STATIC: the bytes; SHARD: the header bytes (8 + N) */
    size_t data_len;
    char *source_path;     /* SOURCE */
    size_t *tensors;       /* SHARD: indexes into mm_plan.tensors, in data order */
    size_t ntensors;
} mm_out_file;

/* One module of the output (D18): how many layers it has and where each comes from. */
typedef struct mm_plan_module {
    const mm_module *module;        /* the donor's (mm_plan.models[donor]->arch) */
    char *name;
    int in_layers;                  /* the donor's layer count for it */
    int out_layers;
    int copied;                     /* 1: copied from the donor (no recipe named it), 0: merged */
    struct mm_layer_origin *origin; /* out_layers entries (merge/plan/config_out.h) */
} mm_plan_module;

typedef struct mm_plan {
    const mm_config *cfg;
    const mm_method *method;
    mm_plan_options opt;
    mm_model **models;     /* distinct model folders */
    char **model_refs;     /* the reference as first written for each */
    size_t nmodels;
    size_t donor;          /* index into models of the donor of config.json (D2) */
    mm_plan_module *modules; /* the donor's modules, in its order */
    size_t nmodules;
    mm_out_tensor *tensors;
    size_t ntensors;
    mm_out_file *files;    /* sorted by name */
    size_t nfiles;
    int64_t mtime_ns;      /* latest mtime of the config and the sources */
    struct mm_vocab *vocab; /* the output vocabulary with a tokenizer option (merge/plan/vocab.h), else NULL */
    char *chat_template;   /* the chat template the chat_template option chose (merge/plan/chat.h), or NULL */
    char *moe_arch;        /* a mergekit-moe config (D20): the output architecture's name, else NULL */
    char *moe_config;      /* its config.json text */
    struct mm_moe_gates *moe_gates;
    struct mm_router *routers;
    size_t nrouters;
} mm_plan;

/* Builds the plan. Every problem with the config or the models (unknown or unimplemented method,
 * missing or mistyped parameter, missing tensor, shape mismatch, layer range out of bounds, ...) is an
 * error here, before anything is mounted or written, with a message naming the file and place. */
int mm_plan_build(const mm_config *cfg, const mm_plan_options *opt, mm_plan **out, mm_err *err);
void mm_plan_free(mm_plan *p);

/* The served file `name` of the plan: its bytes (a static file's, or a donor file read now) into a heap
 * buffer, NUL-terminated. 0, -ENOENT when the plan serves no such file (no message), -EISDIR for a
 * shard (not materialised), or -errno of the read with a message naming the path. For readers of the
 * output folder as a client sees it (the GGUF view reads config.json and the tokenizer files so). */
int mm_plan_file_bytes(const mm_plan *p, const char *name, char **data, size_t *len, mm_err *err);

/* Prints the plan for people (`mergemount plan`) or as JSON (`plan --json`). */
void mm_plan_print(const mm_plan *p, FILE *f, int json);
/* The JSON of `plan --json` as an object, for a caller that adds to it (the GGUF view). */
typedef struct cJSON cJSON;
cJSON *mm_plan_json(const mm_plan *p);

#endif
