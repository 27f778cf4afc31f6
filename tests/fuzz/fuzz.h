/* Shared by the libFuzzer harnesses of tests/fuzz: a failed property check, and an in-memory file for
 * parsers that take a path.
 *
 * A harness checks properties of what a parser accepts (FUZZ_CHECK) besides what the sanitizers see;
 * a failed check is reported through the sanitizer's report channel (tests/fuzz/run closes the
 * harness's own stderr with -close_fd_mask=2 to keep the parsers' warnings out of the log) and aborts,
 * which libFuzzer records as a crash with the input that caused it. */
#ifndef MM_FUZZ_H
#define MM_FUZZ_H

#include <sanitizer/common_interface_defs.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

#endif
