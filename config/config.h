/* The merge configuration: a mergekit-style YAML file parsed, validated and with its model references
 * resolved to local folders (docs/merge-contract.md D1, D2, D10, D11, D14, D17).
 *
 * Ownership: everything hangs off one mm_config and is freed by mm_config_free. Strings are owned.
 * Thread-safety: immutable after mm_config_load; any number of threads may read it. */
#ifndef MM_CONFIG_H
#define MM_CONFIG_H

#include <stddef.h>

#include "formats/dtype.h"
#include "base/util.h"

/* A place in the YAML file, for messages: "<file>:<line>:<col>: ...". line and col are 1-based. */
typedef struct mm_srcpos {
    const char *file; /* points at mm_config.path */
    int line, col;
} mm_srcpos;

/* A parameter value as written: number, boolean or string. */
typedef enum { MM_PV_UNSET = 0, MM_PV_NUM, MM_PV_BOOL, MM_PV_STR } mm_pvalue_kind;
typedef struct mm_pvalue {
    mm_pvalue_kind kind;
    double num; /* MM_PV_NUM */
    int b;      /* MM_PV_BOOL */
    char *str;  /* MM_PV_STR (owned by the config) */
} mm_pvalue;

/* A parameter setting (B1.5): a scalar, a gradient (a list of scalars), or a conditional list of
 * {filter, value} entries whose values are scalars or gradients. */
typedef enum { MM_PS_SCALAR, MM_PS_GRADIENT, MM_PS_CONDITIONAL } mm_psetting_kind;
typedef struct mm_psetting mm_psetting;
typedef struct mm_pcond {
    char *filter;        /* NULL when missing/null; "*" matches everything; otherwise a plain substring */
    mm_psetting *value;  /* MM_PS_SCALAR or MM_PS_GRADIENT */
    mm_srcpos pos;
} mm_pcond;
struct mm_psetting {
    mm_psetting_kind kind;
    mm_srcpos pos;
    mm_pvalue scalar;    /* MM_PS_SCALAR */
    mm_pvalue *grad;     /* MM_PS_GRADIENT: ngrad >= 1 entries, all numbers or all non-numbers */
    size_t ngrad;
    mm_pcond *conds;     /* MM_PS_CONDITIONAL */
    size_t nconds;
};

/* Evaluates a setting for a tensor name at layer position t in [0,1] (B1.5): gradients of numbers are
 * interpolated in double, gradients of non-numbers indexed stepwise, conditional lists scanned in order
 * (first match wins). Returns 1 and fills *out when the setting yields a value, 0 when no condition
 * matched ("unset": the caller falls through to the next precedence level). */
int mm_psetting_eval(const mm_psetting *s, const char *tensor_name, double t, mm_pvalue *out);

typedef struct mm_param {
    char *name;
    mm_psetting *setting;
    mm_srcpos pos; /* position of the key */
} mm_param;

typedef struct mm_params {
    mm_param *items;
    size_t n;
} mm_params;

/* Frees what a parameter map owns (names, settings, the item array); not p itself. */
void mm_params_free(mm_params *p);

/* The setting named `name` in a parameter map, or NULL. */
const mm_psetting *mm_params_find(const mm_params *p, const char *name);

/* Looks parameter `name` up through the precedence levels (B1.5): levels[0..nlevels) most specific
 * first, NULL entries skipped; the first level holding a setting that yields a value for tensor_name at
 * t (mm_psetting_eval) wins. Returns 1 with *out filled and *from (if non-NULL) set to that setting, for
 * messages; 0 and an MM_PV_UNSET *out when no level yields a value. */
int mm_params_eval(const mm_params *const *levels, size_t nlevels, const char *name, const char *tensor_name,
                   double t, mm_pvalue *out, const mm_psetting **from);

/* The gradient position t of layer j (0-based) of a slice of nlayers layers (B1.5): j / (nlayers - 1),
 * and 1 for a one-layer slice. */
double mm_param_layer_t(int j, int nlayers);

/* A model reference (D14), resolved. With a LoRA adapter (`base+adapter`, or {model: ..., lora: ...})
 * it is one model: the base with the adapter applied (D19). */
typedef struct mm_modelref {
    char *ref;       /* as written in the YAML, e.g. "org/name@v1" or "./models/a"; "base+adapter" for the
                      * mapping form too */
    char *path;      /* resolved local folder (absolute, symlinks not resolved) */
    char *lora_path; /* the adapter's folder, or NULL */
    mm_srcpos pos;   /* position of the reference's value */
} mm_modelref;

/* Whether two references name the same model: the same folder and the same adapter (or none). */
int mm_modelref_same(const mm_modelref *a, const mm_modelref *b);

/* One source of an output slice. With `models:` syntax the layer range is filled in by the planner
 * (has_range = 0 here). */
typedef struct mm_source_def {
    mm_modelref model;
    int has_range;
    int layer_start, layer_end; /* half-open */
    mm_srcpos range_pos;
    mm_params params;           /* per-source parameters (precedence level 1) */
    int is_base_appended;       /* 1 for the base model appended by the planner rule of D1/B1.3 */
} mm_source_def;

typedef struct mm_slice_def {
    mm_source_def *sources;  /* config order; for `models:` the base model is appended last when not listed */
    size_t nsources;
    mm_modelref *base_model; /* per-slice override, or NULL to use mm_config.base_model */
    mm_params params;        /* slice parameters (precedence level 2) */
    mm_srcpos pos;
} mm_slice_def;

/* One entry of `modules:` (D18): the recipe of one module (text decoder, vision tower, ...) of a
 * multi-module model. Whether `name` is a module of the models is checked by the planner. */
typedef struct mm_module_def {
    char *name;
    mm_srcpos pos;           /* position of the key */
    int models_syntax;       /* as in mm_config */
    mm_slice_def *slices;
    size_t nslices;
    mm_params params;        /* module parameters (precedence level 3) */
} mm_module_def;

/* The tokenizer option (D19): none (the donor's files are served as they are), or an output vocabulary
 * built from `tokenizer_source:` or the `tokenizer:` block (merge/plan/vocab.h). */
typedef enum {
    MM_TOK_DONOR = 0, /* no tokenizer option: copy the donor's files (D2) */
    MM_TOK_BASE,      /* source base */
    MM_TOK_UNION,     /* source union */
    MM_TOK_MODEL,     /* source <model ref> */
} mm_tok_source;

/* Where an entry of `tokenizer: tokens:` takes its embedding row from. */
typedef enum {
    MM_TSRC_MODEL,       /* source: <model>: that model's row of the token */
    MM_TSRC_ZERO,        /* source: {kind: zero} */
    MM_TSRC_MODEL_TOKEN, /* source: {kind: model_token, model, token_id | token} */
} mm_tok_src_kind;

typedef struct mm_tok_entry {
    char *token;          /* the key: the token's text */
    mm_srcpos pos;        /* position of the key */
    mm_tok_src_kind kind;
    mm_modelref model;    /* MM_TSRC_MODEL, MM_TSRC_MODEL_TOKEN (resolved; need not hold weights here:
                             the planner checks that it is one of the merged models) */
    long long token_id;   /* MM_TSRC_MODEL_TOKEN by id (>= 0), else -1 */
    char *token_text;     /* MM_TSRC_MODEL_TOKEN by token text, else NULL */
    int force;            /* force: true: the row replaces every model's own row */
} mm_tok_entry;

/* One expert of a mergekit-moe config (D20): a dense model whose MLP becomes an expert. */
typedef struct mm_moe_expert {
    mm_modelref model;       /* source_model */
    char **positive;         /* positive_prompts, in file order */
    size_t npositive;
    char **negative;         /* negative_prompts */
    size_t nnegative;
    double noise_scale;      /* NAN when not set */
    double residual_scale;   /* NAN when not set */
    mm_srcpos pos;           /* of the entry */
} mm_moe_expert;

/* A mergekit-moe config (a file with `experts:`, D20): mergekit's MoEMergeConfig. */
typedef struct mm_moe_def {
    mm_moe_expert *experts;
    size_t nexperts;
    mm_moe_expert *shared;   /* shared_experts */
    size_t nshared;
    char *gate_mode;         /* hidden (default), hidden_avg, hidden_last, cheap_embed, random, uniform_random */
    mm_srcpos gate_pos;
    long experts_per_token;  /* default 2 */
    mm_srcpos experts_per_token_pos;
    char *architecture;      /* as written (mixtral, deepseek, qwen, qwen3, ...), NULL when not set */
    mm_srcpos architecture_pos;
    mm_srcpos pos;           /* of the experts: key */
} mm_moe_def;

typedef struct mm_config {
    char *path;              /* the config file as given on the command line */
    char *text;              /* the file's bytes verbatim (served as mergekit_config.yml) */
    size_t text_len;

    char *merge_method;
    mm_srcpos method_pos;

    /* The top-level recipe, or none (nslices 0) when `modules:` is given. */
    int models_syntax;       /* 1: `models:` (exactly one slice, sources without ranges); 0: `slices:` */
    mm_slice_def *slices;
    size_t nslices;
    mm_module_def *modules;  /* `modules:` in file order (D18); NULL when not given */
    size_t nmodules;

    mm_modelref *base_model; /* NULL when not set */
    mm_params params;        /* top-level parameters (precedence level 4) */

    mm_dtype dtype;          /* MM_DT_NONE when not set */
    mm_dtype out_dtype;      /* MM_DT_NONE when not set */
    mm_srcpos dtype_pos, out_dtype_pos;

    mm_tok_source tokenizer_source;
    mm_modelref *tokenizer_model; /* MM_TOK_MODEL only */
    mm_srcpos tokenizer_pos;      /* of the tokenizer_source or tokenizer key */
    mm_tok_entry *tokens;         /* `tokenizer: tokens:` in file order */
    size_t ntokens;
    long pad_to_multiple_of;      /* `tokenizer: pad_to_multiple_of:`, 0 when not set */
    char *chat_template;          /* the `chat_template:` value as written, NULL when not set (checked by
                                     the planner: merge/plan/chat.h) */
    mm_srcpos chat_template_pos;

    /* A mergekit-moe config (D20) instead of a merge: then merge_method, the recipe and the tokenizer
     * options are NULL/empty, base_model and dtype are its own. */
    mm_moe_def *moe;
} mm_config;

/* Reads, parses and validates `path`, resolves every model reference, and returns a config.
 * Errors (syntax, not a mapping, wrong types, not exactly one of models/slices/modules, bad dtype, missing
 * model, unsupported features of D17, `model+lora`, empty gradient, ...) return -EINVAL/-ENOENT with
 * "<path>:<line>:<col>: <what> (<fix>)" in err. Unknown keys print a warning (D11) and are ignored.
 * Method names and method parameters are NOT checked here (the planner knows the methods). */
int mm_config_load(const char *path, mm_config **out, mm_err *err);
void mm_config_free(mm_config *c);

/* The donor of config.json and the tokenizer (D2): base_model, else the first model in config order. */
const mm_modelref *mm_config_donor(const mm_config *c);

/* Resolves a model reference (D14): an existing local folder as is; otherwise `org/name[@revision]` in
 * the local Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub):
 * models--org--name/refs/<rev> holds a snapshot hash (rev defaults to "main"), or <rev> is itself a
 * snapshot hash. `base+adapter` (LoRA, D19) resolves both sides that way; *lora_path is the adapter's
 * folder, else NULL. On success the paths are heap strings. Not found: -ENOENT and a message naming
 * where it looked and the `hf download org/name` command; two '+': -EINVAL. */
int mm_modelref_resolve(const char *ref, char **path, char **lora_path, mm_err *err);

/* Formats a position as "file:line:col" into buf. */
void mm_srcpos_format(const mm_srcpos *p, char *buf, size_t len);

#endif
