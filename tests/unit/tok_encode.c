/* A test-only program (not installed): encodes texts with a folder's tokenizer (formats/tokencode.h),
 * for tests/integration/test_tokenize.py to compare with sentencepiece and tests/reference/bpe_encode.py.
 *
 *   tok_encode FOLDER TEXT...
 *
 * Prints one JSON list of ids per TEXT, one per line. On error: the message on stderr, exit 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/tokencode.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tok_encode FOLDER TEXT...\n");
        return 2;
    }
    mm_err err = {{0}};
    mm_tokenizer *t;
    mm_tok_encoder *e;
    if (mm_tokenizer_load(argv[1], &t, &err) < 0) {
        fprintf(stderr, "tok_encode: %s\n", err.msg);
        return 1;
    }
    if (mm_tok_encoder_new(t, &e, &err) < 0) {
        fprintf(stderr, "tok_encode: %s\n", err.msg);
        mm_tokenizer_free(t);
        return 1;
    }
    int status = 0;
    for (int i = 2; i < argc && status == 0; i++) {
        int32_t *ids;
        size_t n;
        if (mm_tok_encoder_encode(e, argv[i], strlen(argv[i]), &ids, &n, &err) < 0) {
            fprintf(stderr, "tok_encode: %s\n", err.msg);
            status = 1;
            break;
        }
        putchar('[');
        for (size_t k = 0; k < n; k++)
            printf("%s%d", k ? ", " : "", ids[k]);
        puts("]");
        free(ids);
    }
    mm_tok_encoder_free(e);
    mm_tokenizer_free(t);
    return status;
}
