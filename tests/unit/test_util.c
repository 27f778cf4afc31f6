/* merge/util: Python-style float formatting, suggestions, buffers. */
#include <stdlib.h>

#include "check.h"
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
    return mm_check_report();
}
