/* Safetensors headers: strict parsing with the reference reader's checks, and the reference writer's
 * byte layout (docs/merge-contract.md D15).
 *
 * File format: u64 little-endian N, then N bytes of JSON header, then the data. Offsets in the header are
 * relative to the start of the data (byte 8 + N). */
#ifndef MM_SAFETENSORS_H
#define MM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "base/util.h"

#define MM_MAX_DIMS 8
/* The reference reader refuses headers over 100 MB. */
#define MM_ST_MAX_HEADER (100u * 1000u * 1000u)

typedef struct mm_st_tensor {
    char *name;
    mm_dtype dtype;
    int ndim;
    uint64_t shape[MM_MAX_DIMS];
    uint64_t begin, end; /* data_offsets, relative to the data start */
} mm_st_tensor;

typedef struct mm_st_header {
    mm_st_tensor *tensors; /* in file data order (ascending begin) after parsing */
    size_t n;
    uint64_t header_len;   /* N */
    uint64_t data_start;   /* 8 + N */
} mm_st_header;

/* Number of elements of a tensor (product of the shape; 1 for a scalar). */
uint64_t mm_st_numel(const mm_st_tensor *t);

/* "[d0, d1, ...]" into buf (truncated to len), for messages. */
void mm_st_shape_text(const mm_st_tensor *t, char *buf, size_t len);

/* Parses and validates the JSON header `json` (json_len bytes, and json[json_len] a readable NUL as
 * mm_json_parse requires) of a file whose total size is file_size. Checks: UTF-8 text (as the reference
 * reader requires); a JSON object nested at most CJSON_NESTING_LIMIT deep; every entry but
 * `__metadata__` has a known dtype, an integer shape whose element count and byte size fit in 64 bits,
 * and data_offsets [begin, end] with end - begin == numel * dtype size; names are unique; entries are
 * contiguous from 0 without overlap or gap; the data ends exactly at the end of the file. Time is
 * O(n log n) in the number of entries. On success fills *out (caller frees with mm_st_header_free).
 * Error messages do not name the file; callers prefix it. */
int mm_st_parse(const char *json, size_t json_len, uint64_t file_size, mm_st_header *out, mm_err *err);

/* Opens `path`, reads and validates its header (length within the file and MM_ST_MAX_HEADER, then
 * mm_st_parse). Messages name the path. */
int mm_st_read_file(const char *path, mm_st_header *out, mm_err *err);

void mm_st_header_free(mm_st_header *h);

/* Writer layout. Sorts t[0..n) into the reference writer's order (dtype descending in mm_dtype order,
 * then name ascending by bytes), assigns begin/end contiguously from 0, and returns in *bytes a heap
 * buffer holding the complete header: the 8-byte length, the compact JSON
 * `{"__metadata__":{"format":"pt"},"name":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},...}`
 * and space padding to a multiple of 8. *size is the total (8 + N). */
int mm_st_layout(mm_st_tensor *t, size_t n, char **bytes, size_t *size);

/* A model.safetensors.index.json as read from a source model folder. */
typedef struct mm_st_index {
    char **files;     /* distinct shard file names, in order of first appearance */
    size_t nfiles;
    char **names;     /* the weight_map keys (tensor names), in file order */
    size_t *file_of;  /* names[i] is stored in files[file_of[i]] */
    size_t n;
} mm_st_index;

/* Parses the text of an index file (json_len bytes, json[json_len] a readable NUL as mm_json_parse
 * requires): UTF-8 JSON whose "weight_map" is an object of tensor name -> shard file name. Shard names
 * come from a file we did not write, so each must be a plain file name inside the model folder: not
 * empty, no '/', not "." or ".." (so no absolute path and no way out of the folder; symbolic links
 * inside the folder are followed by whoever opens the shard, as the Hugging Face cache needs). Whether
 * the shards exist and hold the named tensors is the caller's check. Time is O(n log n) in the number
 * of entries. On success fills *out (caller frees with mm_st_index_free). Error messages do not name
 * the file; callers prefix it. */
int mm_st_index_parse(const char *json, size_t json_len, mm_st_index *out, mm_err *err);
void mm_st_index_free(mm_st_index *ix);

/* The index file text (D15): {"metadata": {"total_size": N}, "weight_map": {name: file}} with indent 2,
 * keys sorted, trailing newline. names[i] is stored in files[i]. Heap result. */
char *mm_st_index_json(const char *const *names, const char *const *files, size_t n, uint64_t total_size);

#endif
