/* Shared by the libFuzzer harnesses of tests/fuzz: a failed property check, and an in-memory file for
 * parsers that take a path.
 *
 * A harness checks properties of what a parser accepts (FUZZ_CHECK) besides what the sanitizers see;
 * a failed check is reported through the sanitizer's report channel (tests/fuzz/run closes the
 * harness's own stderr with -close_fd_mask=2 to keep the parsers' warnings out of the log) and aborts,
 * which libFuzzer records as a crash with the input that caused it. */
#ifndef MM_FUZZ_H
#define MM_FUZZ_H

#include <errno.h>
#include <sanitizer/common_interface_defs.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_CHECK(cond)                                                                                 \
    do {                                                                                                 \
        if (!(cond)) {                                                                                   \
            char msg_[512];                                                                              \
            snprintf(msg_, sizeof msg_, "%s:%d: property failed: %s", __FILE__, __LINE__, #cond);        \
            __sanitizer_report_error_summary(msg_);                                                      \
            abort();                                                                                     \
        }                                                                                                \
    } while (0)

/* Makes `data` the whole content of one in-memory file (a memfd, created on the first call) and returns
 * a path that opens it ("/proc/self/fd/N"). The next call replaces the content. No disk I/O, so the
 * fuzzer's speed is the parser's. */
static inline const char *fuzz_as_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("mm-fuzz-input", MFD_CLOEXEC);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) {
        perror("writing the fuzz input");
        abort();
    }
    return path;
}

/* Runs a shell command made from fmt for a harness's one-time setup; a failure ends the process. */
static inline void fuzz_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void fuzz_sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0) {
        fprintf(stderr, "fuzz setup failed: %s\n", cmd);
        exit(1);
    }
}

/* The mm-mkmodel to make source models with: $MM_MKMODEL_BIN, else the one of this build. */
static inline const char *fuzz_mkmodel(void)
{
    const char *m = getenv("MM_MKMODEL_BIN");
    return m && *m ? m : MM_FUZZ_MKMODEL;
}

/* A new folder $TMPDIR/mm-fuzz-<tag>-XXXXXX (tests/fuzz/run points TMPDIR at a folder it removes
 * afterwards) into dir; a failure ends the process. */
static inline void fuzz_tempdir(const char *tag, char *dir, size_t len)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, len, "%s/mm-fuzz-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
}

/* Writes dir/name with data (present), or removes it (!present); a failure ends the process. For
 * harnesses whose input is several files of a folder. */
static inline void fuzz_put_file(const char *dir, const char *name, const uint8_t *data, size_t len, int present)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!present) {
        if (unlink(path) != 0 && errno != ENOENT)
            abort();
        return;
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
        abort();
}

/* Splits [p, end) at lines "=====" and writes the first n parts as the files names[0..n) of dir (an empty
 * or missing part: the file is absent). With spm_first, a first part starting "SPM:" is a tokenizer.model
 * (the bytes after the prefix) written instead of names[0]. Returns where the part after them starts. */
static inline const uint8_t *fuzz_put_parts(const char *dir, const uint8_t *p, const uint8_t *end,
                                            const char *const *names, int n, int spm_first)
{
    static const char sep[] = "\n=====\n";
    for (int f = 0; f < n; f++) {
        const uint8_t *next = p < end ? memmem(p, (size_t)(end - p), sep, sizeof sep - 1) : NULL;
        const uint8_t *stop = next ? next : end;
        size_t len = p < end ? (size_t)(stop - p) : 0;
        int spm = spm_first && f == 0 && len >= 4 && memcmp(p, "SPM:", 4) == 0;
        if (spm_first && f == 0)
            fuzz_put_file(dir, "tokenizer.model", p + 4, spm ? len - 4 : 0, spm);
        fuzz_put_file(dir, names[f], p, len, len > 0 && !spm);
        p = next ? next + sizeof sep - 1 : end;
    }
    return p;
}

#endif
