/* Fuzzes the model.safetensors.index.json reader (mm_st_index_parse, formats/safetensors.c): the input is
 * the file's text.
 *
 * Properties of every accepted index: shard names are plain file names inside the model folder (no '/',
 * not empty, "." or "..") and distinct, numbered in order of first appearance; every entry points at one
 * of them; and the writer round trip: mm_st_index_json of the same map reads back to the same
 * (tensor, shard) pairs. */
#include <string.h>

#include "fuzz.h"
#include "formats/safetensors.h"

typedef struct pair {
    const char *name, *file;
} pair;

static int cmp_pair(const void *a, const void *b)
{
    const pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->file, y->file);
}

/* The (tensor, shard) pairs of an index, sorted, so two readings can be compared. */
static pair *pairs_of(const mm_st_index *ix)
{
    pair *p = calloc(ix->n ? ix->n : 1, sizeof *p);
    for (size_t i = 0; i < ix->n; i++)
        p[i] = (pair){ix->names[i], ix->files[ix->file_of[i]]};
    qsort(p, ix->n, sizeof *p, cmp_pair);
    return p;
}

static void check_index(const mm_st_index *ix)
{
    FUZZ_CHECK(ix->nfiles <= ix->n);
    for (size_t f = 0; f < ix->nfiles; f++) {
        const char *s = ix->files[f];
        FUZZ_CHECK(*s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0);
        for (size_t g = 0; g < f; g++)
            FUZZ_CHECK(strcmp(ix->files[g], s) != 0);
    }
    size_t seen = 0; /* files numbered in order of first appearance */
    for (size_t i = 0; i < ix->n; i++) {
        FUZZ_CHECK(ix->file_of[i] < ix->nfiles && ix->file_of[i] <= seen);
        if (ix->file_of[i] == seen)
            seen++;
    }
    FUZZ_CHECK(seen == ix->nfiles);
}

static void check_round_trip(const mm_st_index *ix)
{
    const char **names = calloc(ix->n ? ix->n : 1, sizeof *names), **files = calloc(ix->n ? ix->n : 1, sizeof *files);
    for (size_t i = 0; i < ix->n; i++) {
        names[i] = ix->names[i];
        files[i] = ix->files[ix->file_of[i]];
    }
    char *text = mm_st_index_json(names, files, ix->n, 0);
    mm_st_index back;
    mm_err err;
    int rc = mm_st_index_parse(text, strlen(text), &back, &err);
    if (rc < 0)
        fprintf(stderr, "round trip refused: %s\n", err.msg);
    FUZZ_CHECK(rc == 0 && back.n == ix->n && back.nfiles == ix->nfiles);
    pair *a = pairs_of(ix), *b = pairs_of(&back);
    for (size_t i = 0; i < ix->n; i++)
        FUZZ_CHECK(cmp_pair(&a[i], &b[i]) == 0);
    free(a);
    free(b);
    mm_st_index_free(&back);
    free(text);
    free(names);
    free(files);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The parser's contract wants a NUL after the text, as mm_file_read_all leaves one. */
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    mm_st_index ix;
    mm_err err;
    if (mm_st_index_parse(text, size, &ix, &err) == 0) {
        check_index(&ix);
        check_round_trip(&ix);
        mm_st_index_free(&ix);
    } else {
        FUZZ_CHECK(err.msg[0] != 0);
    }
    free(text);
    return 0;
}
