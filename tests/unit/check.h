/* A minimal unit-test harness: CHECK records a failure and goes on; each test binary prints one line
 * per failure and a final "N passed, N failed" line, and exits non-zero if anything failed. */
#ifndef MM_CHECK_H
#define MM_CHECK_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

#define CHECK_STR_EQ(got, want)                                                                    \
    do {                                                                                           \
        const char *g_ = (got), *w_ = (want);                                                      \
        if (g_ && strcmp(g_, w_) == 0) {                                                           \
            mm_check_pass++;                                                                       \
        } else {                                                                                   \
            mm_check_fail++;                                                                       \
            fprintf(stderr, "%s:%d: got \"%s\", want \"%s\"\n", __FILE__, __LINE__, g_ ? g_ : "(null)", w_); \
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

/* Creates a fresh folder $TMPDIR/<prefix>-XXXXXX (or under /tmp) in dir (PATH_MAX bytes), resolved
 * without symlinks because getcwd() reports it that way, and makes it the working directory; the
 * previous one goes to *old_cwd (heap). 0, or -1 after printing why. */
static inline int check_enter_tmpdir(char *dir, const char *prefix, char **old_cwd)
{
    char real[PATH_MAX];
    snprintf(dir, PATH_MAX, "%s/%s-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", prefix);
    if (!mkdtemp(dir) || !realpath(dir, real)) {
        perror("mkdtemp");
        return -1;
    }
    memcpy(dir, real, PATH_MAX);
    *old_cwd = getcwd(NULL, 0);
    if (chdir(dir) != 0) {
        perror("chdir");
        return -1;
    }
    return 0;
}

/* Goes back to old_cwd (freed) and, once out of it, removes the folder check_enter_tmpdir made with all
 * it holds; a failure to remove is said but fails no test. */
static inline void check_leave_tmpdir(const char *dir, char *old_cwd)
{
    if (chdir(old_cwd) == 0) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    }
    free(old_cwd);
}

static inline int mm_check_report(void)
{
    printf("%d passed, %d failed\n", mm_check_pass, mm_check_fail);
    return mm_check_fail ? 1 : 0;
}

#endif
