/* Tensor element types as safetensors names them, and their properties.
 * The enum order is the safetensors library's own Dtype order: shard writers sort tensors by dtype
 * descending (widest last in this list first), so the order is part of the output format. */
#ifndef MM_DTYPE_H
#define MM_DTYPE_H

#include <stddef.h>

typedef enum mm_dtype {
    MM_DT_BOOL,
    MM_DT_U8,
    MM_DT_I8,
    MM_DT_F8_E5M2,
    MM_DT_F8_E4M3,
    MM_DT_I16,
    MM_DT_U16,
    MM_DT_F16,
    MM_DT_BF16,
    MM_DT_I32,
    MM_DT_U32,
    MM_DT_F32,
    MM_DT_F64,
    MM_DT_I64,
    MM_DT_U64,
    MM_DT_COUNT,
    MM_DT_NONE = -1 /* "not set" in configs and plans */
} mm_dtype;

/* Bytes per element. */
size_t mm_dtype_size(mm_dtype t);
/* Safetensors name ("BF16"). */
const char *mm_dtype_name(mm_dtype t);
/* torch name for config.json `torch_dtype` ("bfloat16"); NULL for types torch has no name for here. */
const char *mm_dtype_torch_name(mm_dtype t);
/* Parses a safetensors name; MM_DT_NONE if unknown. */
mm_dtype mm_dtype_from_st_name(const char *s);
/* Parses a mergekit config dtype ("bfloat16", "float16", "float32", optional "torch." prefix; also the
 * aliases "bf16", "fp16", "fp32", "half", "float"). MM_DT_NONE if not accepted. */
mm_dtype mm_dtype_from_config_name(const char *s);
/* True for the types the merge arithmetic computes in: F32, F16, BF16. */
int mm_dtype_is_computable(mm_dtype t);
/* torch type promotion between two computable types (bf16 + f16 -> f32). */
mm_dtype mm_dtype_promote(mm_dtype a, mm_dtype b);

#endif
