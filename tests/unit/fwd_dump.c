/* A test-only program (not installed): runs the forward pass (merge/moe/forward.h) for
 * tests/integration/test_forward.py to compare with tests/reference/forward_eval.py.
 *
 *   fwd_dump [--lora ADAPTER_FOLDER] MODEL_FOLDER IDS_JSON [OUT.f32]
 *
 * IDS_JSON: a file {"ids": [[id, ...], ...], "mask": [[0 or 1, ...], ...] (optional)}, every row of one
 * length. Prints {"layers", "batch", "seq", "hidden_size"} and, with OUT.f32, writes the hidden states
 * there as raw little-endian float32 [layers][batch][seq][hidden_size]; without it, adds them as "hidden"
 * (flat, in that order).
 * Errors: the message on stderr, exit 1. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "merge/moe/forward.h"

static int fail(const char *msg)
{
    fprintf(stderr, "%s\n", msg);
    return 1;
}

/* rows x cols integers of a JSON array of arrays into dst (int32 or uint8 by `bytes`) */
static int read_matrix(const cJSON *a, size_t rows, size_t cols, void *dst, int bytes)
{
    if (!cJSON_IsArray(a) || (size_t)cJSON_GetArraySize(a) != rows)
        return -1;
    for (size_t r = 0; r < rows; r++) {
        const cJSON *row = cJSON_GetArrayItem(a, (int)r);
        if (!cJSON_IsArray(row) || (size_t)cJSON_GetArraySize(row) != cols)
            return -1;
        for (size_t c = 0; c < cols; c++) {
            const cJSON *v = cJSON_GetArrayItem(row, (int)c);
            if (!cJSON_IsNumber(v))
                return -1;
            if (bytes == 4)
                ((int32_t *)dst)[r * cols + c] = (int32_t)v->valuedouble;
            else
                ((uint8_t *)dst)[r * cols + c] = v->valuedouble != 0;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *lora = NULL;
    if (argc > 2 && strcmp(argv[1], "--lora") == 0) {
        lora = argv[2];
        argc -= 2, argv += 2;
    }
    if (argc != 3 && argc != 4)
        return fail("usage: fwd_dump [--lora ADAPTER_FOLDER] MODEL_FOLDER IDS_JSON [OUT.f32]");
    mm_err err = { 0 };
    char *text;
    size_t len;
    if (mm_file_read_all(argv[2], 1 << 26, &text, &len, &err) < 0)
        return fail(err.msg);
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *ids_j = cJSON_GetObjectItem(j, "ids"), *mask_j = cJSON_GetObjectItem(j, "mask");
    if (!cJSON_IsArray(ids_j) || cJSON_GetArraySize(ids_j) < 1)
        return fail("IDS_JSON: no \"ids\" rows");
    const size_t batch = (size_t)cJSON_GetArraySize(ids_j),
                 seq = (size_t)cJSON_GetArraySize(cJSON_GetArrayItem(ids_j, 0));
    int32_t *ids = malloc(batch * seq * sizeof *ids + 1);
    uint8_t *mask = mask_j ? malloc(batch * seq + 1) : NULL;
    int bad = read_matrix(ids_j, batch, seq, ids, 4) < 0 || (mask_j && read_matrix(mask_j, batch, seq, mask, 1) < 0);
    cJSON_Delete(j);
    if (bad) {
        free(ids);
        free(mask);
        return fail("IDS_JSON: \"ids\" and \"mask\" must be arrays of equal-length arrays of numbers");
    }

    mm_model *m = NULL;
    size_t layers, hidden;
    float *out = NULL;
    int rc = mm_model_open(argv[1], lora, &m, &err);
    if (rc == 0 && (rc = mm_forward_dims(m, &layers, &hidden, &err)) == 0) {
        const size_t n = layers * batch * seq * hidden;
        out = malloc(n * sizeof *out);
        rc = out ? mm_forward_hidden(m, ids, mask, batch, seq, out, &err) : mm_err_set(&err, -1, "out of memory");
    }
    free(ids);
    free(mask);
    if (rc < 0) {
        free(out);
        mm_model_free(m);
        return fail(err.msg);
    }
    const size_t n = layers * batch * seq * hidden;
    if (argc == 4) {
        FILE *f = fopen(argv[3], "wb");
        if (!f || fwrite(out, sizeof *out, n, f) != n || fclose(f) != 0)
            return fail("cannot write OUT.f32");
        printf("{\"layers\": %zu, \"batch\": %zu, \"seq\": %zu, \"hidden_size\": %zu}\n", layers, batch, seq,
               hidden);
    } else {
        printf("{\"layers\": %zu, \"batch\": %zu, \"seq\": %zu, \"hidden_size\": %zu, \"hidden\": [", layers, batch,
               seq, hidden);
        for (size_t i = 0; i < n; i++)
            printf("%s%.9g", i ? ", " : "", (double)out[i]);
        printf("]}\n");
    }
    free(out);
    mm_model_free(m);
    return 0;
}
