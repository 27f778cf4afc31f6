/* GGUF (llama.cpp's model file, version 3, little-endian): the metadata key/value list, the header of a
 * file (magic, counts, key/values, tensor infos, padding to the data), and the element encodings we
 * write computed the way llama.cpp's gguf-py computes them.
 *
 * Layout of a file: "GGUF", u32 version 3, u64 tensor count, u64 key/value count, the key/values, the
 * tensor infos (name, u32 n_dims, u64 ne[n_dims] innermost first, u32 ggml type, u64 offset of its data
 * relative to the data section), zero padding to MM_GGUF_ALIGN, then each tensor's data at its offset
 * (each padded to MM_GGUF_ALIGN). Strings are u64 length + bytes, no NUL.
 *
 * Thread-safety: none needed; a key/value list is built by one thread at mount time. The conversions
 * are pure functions. */
#ifndef MM_GGUF_H
#define MM_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

#define MM_GGUF_ALIGN 32 /* gguf-py's default; it writes no general.alignment key */

/* Value types of the format (gguf-py's GGUFValueType). */
typedef enum mm_gguf_vtype {
    MM_GGUF_U8 = 0,
    MM_GGUF_I8 = 1,
    MM_GGUF_U16 = 2,
    MM_GGUF_I16 = 3,
    MM_GGUF_U32 = 4,
    MM_GGUF_I32 = 5,
    MM_GGUF_F32 = 6,
    MM_GGUF_BOOL = 7,
    MM_GGUF_STRING = 8,
    MM_GGUF_ARRAY = 9,
    MM_GGUF_U64 = 10,
    MM_GGUF_I64 = 11,
    MM_GGUF_F64 = 12,
} mm_gguf_vtype;

/* Tensor element types we write (ggml's numbering). */
typedef enum mm_gguf_qtype {
    MM_GGML_F32 = 0,
    MM_GGML_F16 = 1,
    MM_GGML_Q8_0 = 8,
    MM_GGML_BF16 = 30,
} mm_gguf_qtype;

/* The type's name as llama.cpp spells it ("F32", "F16", "BF16", "Q8_0"). */
const char *mm_gguf_qtype_name(mm_gguf_qtype t);

/* llama.cpp's file types (general.file_type, gguf-py's LlamaFileType) for the outtypes we offer. */
#define MM_GGUF_FTYPE_ALL_F32 0
#define MM_GGUF_FTYPE_MOSTLY_F16 1
#define MM_GGUF_FTYPE_MOSTLY_Q8_0 7
#define MM_GGUF_FTYPE_MOSTLY_BF16 32
#define MM_GGUF_QUANT_VERSION 2 /* general.quantization_version */

/* Q8_0: blocks of 32 elements, each an f16 scale and 32 int8 values (34 bytes). */
#define MM_Q8_0_BLOCK 32
#define MM_Q8_0_BYTES 34

/* An ordered key/value list. Setting a key that is already there replaces its value in place (gguf-py
 * warns and overwrites, keeping the key's first position). Keys and values are copied. Zero-initialise
 * to start; free with mm_gguf_kvs_free. */
typedef struct mm_gguf_kv {
    char *key;
    mm_gguf_vtype type;      /* MM_GGUF_ARRAY for arrays */
    mm_gguf_vtype elem;      /* arrays: the element type */
    uint64_t count;          /* arrays: the element count */
    mm_buf value;            /* the value's encoded bytes as they go to the file (after the type fields) */
} mm_gguf_kv;

typedef struct mm_gguf_kvs {
    mm_gguf_kv *kv;
    size_t n, cap;
} mm_gguf_kvs;

void mm_gguf_kvs_free(mm_gguf_kvs *k);
void mm_gguf_set_str(mm_gguf_kvs *k, const char *key, const char *val);
void mm_gguf_set_strn(mm_gguf_kvs *k, const char *key, const char *val, size_t len);
void mm_gguf_set_u32(mm_gguf_kvs *k, const char *key, uint32_t v);
void mm_gguf_set_i32(mm_gguf_kvs *k, const char *key, int32_t v);
void mm_gguf_set_u64(mm_gguf_kvs *k, const char *key, uint64_t v);
void mm_gguf_set_f32(mm_gguf_kvs *k, const char *key, float v);
void mm_gguf_set_bool(mm_gguf_kvs *k, const char *key, int v);
/* Arrays. Strings: n entries of (s[i], lens[i]) bytes (lens NULL: NUL-terminated). */
void mm_gguf_set_arr_str(mm_gguf_kvs *k, const char *key, const char *const *s, const size_t *lens, size_t n);
void mm_gguf_set_arr_i32(mm_gguf_kvs *k, const char *key, const int32_t *v, size_t n);
void mm_gguf_set_arr_u32(mm_gguf_kvs *k, const char *key, const uint32_t *v, size_t n);
void mm_gguf_set_arr_f32(mm_gguf_kvs *k, const char *key, const float *v, size_t n);
void mm_gguf_set_arr_bool(mm_gguf_kvs *k, const char *key, const uint8_t *v, size_t n);
/* Sets src's key to a copy of src's value (a key from another list). */
void mm_gguf_set_kv(mm_gguf_kvs *k, const mm_gguf_kv *src);
/* The entry of key, or NULL. */
const mm_gguf_kv *mm_gguf_get(const mm_gguf_kvs *k, const char *key);
/* Removes key if present (order of the others kept). */
void mm_gguf_del(mm_gguf_kvs *k, const char *key);

/* A tensor's entry in the header. ne: dimensions innermost first (the reverse of a safetensors shape). */
typedef struct mm_gguf_tinfo {
    const char *name;
    uint32_t ndim;
    uint64_t ne[4];
    mm_gguf_qtype type;
} mm_gguf_tinfo;

/* Bytes of a tensor of `type` with ne[0] elements per row and `rows` rows (Q8_0: ne[0] a multiple of 32). */
uint64_t mm_gguf_row_bytes(mm_gguf_qtype type, uint64_t ne0);

/* The whole header: magic, counts, the key/values, the tensor infos with offsets assigned in order
 * (each tensor's data aligned to MM_GGUF_ALIGN), padding to the data section. *data_offsets receives
 * each tensor's absolute offset in the file (heap, n entries) and *file_size the file's total size
 * (data of the last tensor padded too, as gguf-py pads it). */
void mm_gguf_header(const mm_gguf_kvs *k, const mm_gguf_tinfo *t, size_t n, mm_buf *out, uint64_t **data_offsets,
                    uint64_t *file_size);

/* Element encodings, from float32 values (gguf-py's quants.quantize). F16 and BF16 are numeric.h's
 * mm_store_f32 (round to nearest even; a NaN keeps its sign and top mantissa bits and is made quiet,
 * as gguf-py's BF16 does — torch would differ there). */
/* n values (a multiple of 32) to n/32 Q8_0 blocks: d = max|x| / 127 in f32, q = x * (1/d) (id 0 when d
 * is 0) rounded half away from zero the way gguf-py's np_roundf computes it, d stored as f16. */
void mm_gguf_to_q8_0(const float *x, size_t n, uint8_t *out);

#endif
