/* merge/util: Python-style float formatting, suggestions, buffers. */
#include <stdlib.h>

#include "check.h"
#include "merge/sha256.h"
#include "merge/util.h"

static void fmt(double v, const char *want)
{
    char buf[64];
    mm_format_double(v, buf, sizeof buf);
    if (strcmp(buf, want) != 0)
        fprintf(stderr, "format(%.17g) = %s, want %s\n", v, buf, want);
    CHECK(strcmp(buf, want) == 0);
}

int main(void)
{
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
    char *j = mm_path_join("/a/b/", "c");
    CHECK(strcmp(j, "/a/b/c") == 0);
    free(j);
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
        for (int k = 0; k < 32; k++)
            snprintf(hex + 2 * k, 3, "%02x", out[k]);
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
        for (int k = 0; k < 32; k++)
            snprintf(hex + 2 * k, 3, "%02x", out[k]);
        CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
    }
    return mm_check_report();
}
