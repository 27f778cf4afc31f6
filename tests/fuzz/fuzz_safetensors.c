/* Fuzzes the safetensors header reader (formats/safetensors.c): the input is a whole .safetensors file
 * (u64 length, JSON header, data), read through mm_st_read_file as a source shard is.
 *
 * Properties of every accepted header: tensors in data order, contiguous from 0 to the end of the file,
 * each spanning numel * dtype size bytes, names unique; and the writer round trip: laying the same
 * tensors out with mm_st_layout and reading that back gives the same names, dtypes and shapes. */
#include <string.h>

#include "fuzz.h"
#include "formats/safetensors.h"

static void check_header(const mm_st_header *h, size_t file_size)
{
    FUZZ_CHECK(h->data_start == 8 + h->header_len && h->data_start <= file_size);
    uint64_t pos = 0;
    for (size_t i = 0; i < h->n; i++) {
        const mm_st_tensor *t = &h->tensors[i];
        FUZZ_CHECK(t->begin == pos && t->end >= t->begin);
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= MM_MAX_DIMS);
        FUZZ_CHECK(t->end - t->begin == mm_st_numel(t) * mm_dtype_size(t->dtype));
        pos = t->end;
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(h->tensors[j].name, t->name) != 0);
    }
    FUZZ_CHECK(pos == file_size - h->data_start);
}

static void check_round_trip(const mm_st_header *h)
{
    mm_st_tensor *t = calloc(h->n ? h->n : 1, sizeof *t);
    for (size_t i = 0; i < h->n; i++) {
        t[i] = h->tensors[i]; /* names borrowed from h */
        t[i].begin = t[i].end = 0;
    }
    char *bytes;
    size_t hsize;
    FUZZ_CHECK(mm_st_layout(t, h->n, &bytes, &hsize) == 0);
    /* The same tensors in another order: the same number of data bytes, which the input held. */
    uint64_t data = h->n ? t[h->n - 1].end : 0;
    FUZZ_CHECK(data == (h->n ? h->tensors[h->n - 1].end : 0));
    uint8_t *file = calloc(1, hsize + data);
    memcpy(file, bytes, hsize);
    mm_st_header back;
    mm_err err;
    int rc = mm_st_read_file(fuzz_as_file(file, hsize + data), &back, &err);
    if (rc < 0)
        fprintf(stderr, "round trip refused: %s\n", err.msg);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(back.n == h->n && back.header_len % 8 == 0);
    for (size_t i = 0; i < back.n; i++) {
        const mm_st_tensor *a = &t[i], *b = &back.tensors[i];
        FUZZ_CHECK(strcmp(a->name, b->name) == 0 && a->dtype == b->dtype && a->ndim == b->ndim);
        FUZZ_CHECK(memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof a->shape[0]) == 0);
        FUZZ_CHECK(a->begin == b->begin && a->end == b->end);
    }
    mm_st_header_free(&back);
    free(file);
    free(bytes);
    free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_as_file(data, size);
    mm_st_header h;
    mm_err err;
    if (mm_st_read_file(path, &h, &err) < 0) {
        FUZZ_CHECK(strncmp(err.msg, path, strlen(path)) == 0); /* messages name the file */
        return 0;
    }
    check_header(&h, size);
    check_round_trip(&h);
    mm_st_header_free(&h);
    return 0;
}
