/* The GGUF view of a plan (docs/gguf.md): one GGUF file whose header (key/values, tensor infos) is
 * built here at mount time and whose tensor data is computed on read (merge/engine/gguf_read.h) from
 * the plan's output tensors — the bytes llama.cpp's convert_hf_to_gguf.py writes for the built folder.
 *
 * Thread-safety: immutable after mm_gguf_plan; readers share it. */
#ifndef MM_GGUF_PLAN_H
#define MM_GGUF_PLAN_H

#include <stdint.h>
#include <stdio.h>

#include "formats/gguf.h"
#include "gguf_arch.h"
#include "merge/plan/plan.h"

/* --gguf TYPE (the converter's --outtype). */
typedef enum mm_gguf_outtype {
    MM_GGUF_OUT_OFF = 0,
    MM_GGUF_OUT_AUTO, /* the converter's rule: the dtype of the first tensor of >= 2 dimensions, in its order:
                     BF16 -> bf16, F16 -> f16, else f16 */
    MM_GGUF_OUT_F32,
    MM_GGUF_OUT_F16,
    MM_GGUF_OUT_BF16,
    MM_GGUF_OUT_Q8_0,
} mm_gguf_outtype;

/* "auto", "f32", "f16", "bf16", "q8_0" (case-insensitive). 0, or -EINVAL. */
int mm_gguf_outtype_parse(const char *s, mm_gguf_outtype *out);
/* The names accepted, for messages and --help: "auto, bf16, f16, f32, q8_0". */
extern const char mm_gguf_outtype_names[];

typedef struct mm_gguf_file {
    char *file_name;        /* "<name>-<size label>-<TYPE>.gguf", as the converter names its output */
    mm_buf header;          /* file bytes [0, header.len) */
    uint64_t size;          /* the whole file */
    uint32_t ftype;         /* general.file_type */
    mm_gguf_arch arch;      /* the tensors and how each is made */
    mm_gguf_qtype *types;   /* per tensor: its type in the file */
    uint64_t *offsets;      /* per tensor: absolute offset of its data (aligned) */
    uint64_t *nbytes;       /* per tensor: its data bytes (padding after it is zeros) */
    uint64_t *row_elems;    /* per tensor: elements per row (the innermost dimension) */
} mm_gguf_file;

/* Builds the GGUF view of p for outtype t (not MM_GGUF_OUT_OFF). `name` names the model (general.name and
 * the file name, where the converter takes the folder's name); NULL: the config file's name without
 * directory and extension, so that a mount and a build of one config give the same bytes wherever they
 * are made. Errors (a family the view does not support, a tokenizer it cannot describe) name the cause
 * and come before anything is mounted. 0 or -errno with a message. */
int mm_gguf_plan(const mm_plan *p, mm_gguf_outtype t, const char *name, mm_gguf_file **out, mm_err *err);
void mm_gguf_file_free(mm_gguf_file *g);

/* For `mergemount plan --gguf`: the file and each tensor (GGUF name, type, dimensions, the output tensor
 * it is made from and how) for people, or as a JSON object {"file", "type", "size", "tensors": count,
 * "file_type", "architecture", "tensor_list": [{"name", "type", "ne", "source", "permute_heads",
 * "add_one"}]}. */
void mm_gguf_print(const mm_gguf_file *g, const mm_plan *p, FILE *f);
cJSON *mm_gguf_json(const mm_gguf_file *g, const mm_plan *p);

#endif
