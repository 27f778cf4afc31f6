/* A minimal unit-test harness: CHECK records a failure and goes on; each test binary prints one line
 * per failure and a final "N passed, N failed" line, and exits non-zero if anything failed. */
#ifndef MM_CHECK_H
#define MM_CHECK_H

#include <stdio.h>
#include <string.h>

static int mm_check_pass, mm_check_fail;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            mm_check_pass++;                                                                       \
        } else {                                                                                   \
            mm_check_fail++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                                            \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (h_ && strstr(h_, n_)) {                                                                \
            mm_check_pass++;                                                                       \
        } else {                                                                                   \
            mm_check_fail++;                                                                       \
            fprintf(stderr, "%s:%d: expected \"%s\" to contain \"%s\"\n", __FILE__, __LINE__,      \
                    h_ ? h_ : "(null)", n_);                                                       \
        }                                                                                          \
    } while (0)

/* Writes a test fixture file (whole, or fails the test). */
static inline void check_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        CHECK(fwrite(data, 1, len, f) == len);
        fclose(f);
    }
}

static inline int mm_check_report(void)
{
    printf("%d passed, %d failed\n", mm_check_pass, mm_check_fail);
    return mm_check_fail ? 1 : 0;
}

#endif
