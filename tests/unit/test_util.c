/* base/util: Python-style float formatting, suggestions, buffers, UTF-8 validation. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "check.h"
#include "base/philox.h"
#include "base/sha256.h"
#include "base/util.h"

static void fmt(double v, const char *want)
{
    char buf[64];
    mm_format_double(v, buf, sizeof buf);
    if (strcmp(buf, want) != 0)
        fprintf(stderr, "format(%.17g) = %s, want %s\n", v, buf, want);
    CHECK(strcmp(buf, want) == 0);
}

/* preadv that fills every piece, zero-length ones included, in order; the limit on pieces; EOF. */
static void test_preadv_full(void)
{
    char path[] = "/tmp/mm-test-preadv-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    enum { N = 300000 };
    unsigned char *data = malloc(N), *got = malloc(N);
    for (size_t i = 0; i < N; i++)
        data[i] = (unsigned char)(i * 131 + (i >> 9));
    CHECK(write(fd, data, N) == N);
    const size_t cuts[][3] = {{0, 0, 0}, {0, 5, 5}, {1, 4096, 200000}, {65535, 65536, 299990}, {7, 7, 8}};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        const size_t a = cuts[c][0], b = cuts[c][1], z = cuts[c][2];
        memset(got, 0xee, N);
        /* the pieces are [a, b), [b, z), and the rest from z up to N - 10, starting at file offset 10 */
        const size_t end = N - 10;
        struct iovec iov[4] = {{got, a}, {got + a, b - a}, {got + b, z - b}, {got + z, end - z}};
        CHECK(mm_preadv_full(fd, iov, 4, 10) == 0);
        CHECK(memcmp(got, data + 10, end) == 0);
    }
    struct iovec past = {got, 100};
    CHECK(mm_preadv_full(fd, &past, 1, N - 50) == -EIO);
    struct iovec many[MM_PREADV_MAX + 1];
    for (size_t i = 0; i <= MM_PREADV_MAX; i++)
        many[i] = (struct iovec){got + i, 1};
    CHECK(mm_preadv_full(fd, many, MM_PREADV_MAX + 1, 0) == -EINVAL);
    CHECK(mm_pread_full(fd, got, 1000, 123) == 0 && memcmp(got, data + 123, 1000) == 0);
    close(fd);
    unlink(path);
    free(data);
    free(got);
}

/* The file sink: the time, the usual prefix, the context, the message, one line per call; a context
 * longer than a line is cut, not overrun. Last: it changes where this program's log goes. */
static void test_log_to_file(void)
{
    char path[] = "/tmp/mm-test-log-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(fcntl(fd, F_SETFL, O_APPEND) == 0);
    mm_log_to_file(fd, "/mnt/merged");
    mm_log_error("boom %d", 7);
    mm_log_warn("careful");
    mm_log_at(MM_LOG_DEBUG, "libfuse says %s", "hi");
    mm_log_debug("not shown at verbosity %d", mm_log_verbose);
    char *data = NULL;
    size_t len = 0;
    CHECK(mm_file_read_all(path, 1 << 20, &data, &len, NULL) == 0);
    regex_t re;
    CHECK(regcomp(&re,
                  "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}[+-][0-9]{4} mergemount: error: "
                  "/mnt/merged: boom 7\n"
                  "[0-9T:.+-]+ mergemount: warning: /mnt/merged: careful\n"
                  "[0-9T:.+-]+ mergemount: debug: /mnt/merged: libfuse says hi\n$",
                  REG_EXTENDED) == 0);
    CHECK(data && regexec(&re, data, 0, NULL, 0) == 0);
    if (data && regexec(&re, data, 0, NULL, 0) != 0)
        fprintf(stderr, "log file holds:\n%s", data);
    regfree(&re);
    free(data);

    char *long_context = mm_xmalloc(6001);
    memset(long_context, 'x', 6000);
    long_context[6000] = 0;
    CHECK(ftruncate(fd, 0) == 0);
    mm_log_to_file(fd, long_context);
    mm_log_error("after a long context");
    CHECK(mm_file_read_all(path, 1 << 20, &data, &len, NULL) == 0);
    CHECK(len == 4095 && data[len - 1] == '\n' && !strstr(data, "after"));
    free(data);
    free(long_context);
    unlink(path);
}

int main(void)
{
    test_preadv_full();
    /* Expected strings are Python's repr() of the same doubles. */
    fmt(0.5, "0.5");
    fmt(1e-05, "1e-05");
    fmt(0.0001, "0.0001");
    fmt(10000.0, "10000.0");
    fmt(1e16, "1e+16");
    fmt(123456789012345678.0, "1.2345678901234568e+17");
    fmt(0.1, "0.1");
    fmt(-2.5, "-2.5");
    fmt(0.30078125, "0.30078125");
    fmt(1.0 / 3.0, "0.3333333333333333");
    fmt(0.0, "0.0");

    const char *names[] = {"linear", "slerp", "task_arithmetic", "ties"};
    CHECK(mm_suggest("linaer", names, 4) && strcmp(mm_suggest("linaer", names, 4), "linear") == 0);
    CHECK(mm_suggest("task_arithmetc", names, 4) && strcmp(mm_suggest("task_arithmetc", names, 4), "task_arithmetic") == 0);
    CHECK(mm_suggest("completely_different", names, 4) == NULL);
    CHECK(mm_edit_distance("abc", "abd") == 1);

    mm_buf b = {0};
    for (int i = 0; i < 1000; i++)
        mm_buf_printf(&b, "%d,", i);
    CHECK(b.len == strlen(b.data));
    CHECK(strncmp(b.data, "0,1,2,", 6) == 0);
    mm_buf_free(&b);

    mm_err e;
    CHECK(mm_err_set(&e, -22, "inner %d", 1) == -22);
    mm_err_prefix(&e, "outer");
    CHECK(strcmp(e.msg, "outer: inner 1") == 0);
    /* names from files quoted for messages: escapes, whole UTF-8 characters, cut to fit */
    char q[32];
    CHECK(strcmp(mm_quote(q, sizeof q, "a'b\n\x01\xc3\xa9\xff", 8), "'a\\'b\\n\\x01\xc3\xa9\\xff'") == 0);
    CHECK(strcmp(mm_quote(q, 16, "abcdefghijklmnopqrstuvwxyz", 26), "'abcdefghij...'") == 0);
    CHECK(strcmp(mm_quote(q, 16, "\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5", 12), "'\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5...'") == 0);
    CHECK(strcmp(mm_quote(q, sizeof q, "", 0), "''") == 0);
    char *j = mm_path_join("/a/b/", "c");
    CHECK(strcmp(j, "/a/b/c") == 0);
    free(j);
    /* UTF-8 as RFC 3629 has it (what Rust's str::from_utf8, the reference safetensors reader, accepts). */
    static const struct {
        const char *s;
        size_t valid; /* length of the valid prefix */
    } u[] = {
        {"plain ascii", 11},
        {"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80", 9}, /* é 中 😀 */
        {"\xed\x9f\xbf", 3},                        /* U+D7FF, just below the surrogates */
        {"\xf4\x8f\xbf\xbf", 4},                    /* U+10FFFF */
        {"ab\xff", 2},
        {"a\xc0\xaf", 1},                            /* overlong '/' */
        {"\xe0\x80\xaf", 0},                         /* overlong, 3 bytes */
        {"\xf0\x80\x80\xaf", 0},                     /* overlong, 4 bytes */
        {"\xed\xa0\x80", 0},                         /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 0},                     /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 0},
        {"x\xc3", 1},                                /* truncated sequence */
        {"x\xe4\xb8", 1},
        {"\x80", 0},                                 /* lone continuation byte */
        {"\xc3\x28", 0},                             /* continuation byte missing */
    };
    for (size_t i = 0; i < MM_COUNT(u); i++) {
        size_t got = mm_utf8_valid_len(u[i].s, strlen(u[i].s));
        if (got != u[i].valid)
            fprintf(stderr, "utf8 case %zu: valid prefix %zu, want %zu\n", i, got, u[i].valid);
        CHECK(got == u[i].valid);
    }
    CHECK(mm_utf8_valid_len("a\0b", 3) == 3); /* NUL is a character; lengths are explicit */
    /* SHA-256 test vectors of FIPS 180-2 appendix B. */
    static const struct {
        const char *msg;
        const char *hex;
    } v[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < 3; i++) {
        mm_sha256 s;
        unsigned char out[32];
        char hex[65];
        mm_sha256_init(&s);
        /* Feed in odd pieces so the buffering is exercised. */
        for (const char *p = v[i].msg; *p; p++)
            mm_sha256_update(&s, p, 1);
        mm_sha256_final(&s, out);
        mm_sha256_hex(out, hex);
        CHECK(strcmp(hex, v[i].hex) == 0);
    }
    {
        mm_sha256 s;
        unsigned char out[32];
        char hex[65], chunk[1000];
        memset(chunk, 'a', sizeof chunk);
        mm_sha256_init(&s);
        for (int i = 0; i < 1000; i++)
            mm_sha256_update(&s, chunk, sizeof chunk);
        mm_sha256_final(&s, out);
        mm_sha256_hex(out, hex);
        CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
    }
    /* Philox4x32-10 known-answer vectors (Random123 tests/kat_vectors). */
    {
        static const uint32_t kat[3][10] = {
            {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
            {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e,
             0xa20bc7c6, 0x6d5451fd},
            {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb,
             0x5001e420, 0x24126ea1},
        };
        for (int i = 0; i < 3; i++) {
            uint32_t out[4];
            mm_philox4x32_10(kat[i], kat[i] + 4, out);
            CHECK(memcmp(out, kat[i] + 6, sizeof out) == 0);
        }
        /* Uniforms are in [0,1), depend on every key part, and average about 1/2. */
        double sum = 0;
        int in_range = 1;
        for (uint64_t k = 0; k < 100000; k++) {
            float u = mm_rng_uniform(7, 42, k);
            in_range &= u >= 0.0f && u < 1.0f;
            sum += u;
        }
        CHECK(in_range);
        CHECK(fabs(sum / 100000 - 0.5) < 0.01);
        CHECK(mm_rng_uniform(7, 42, 5) != mm_rng_uniform(8, 42, 5));
        CHECK(mm_rng_uniform(7, 42, 5) != mm_rng_uniform(7, 43, 5));
        CHECK(mm_rng_stream("a.weight", 0) != mm_rng_stream("a.weight", 1));
        CHECK(mm_rng_stream("a.weight", 0) != mm_rng_stream("b.weight", 0));
    }
    test_log_to_file();
    return mm_check_report();
}
