/* What re-validating source files costs on the read path (merge/plan/srcfile.h), next to what a block
 * costs anyway: `mm-srcfile-bench FILE` prints nanoseconds per call of
 *   check      mm_srcfile_check inside its interval (every read, cache hits included, per input file)
 *   verify     mm_srcfile_verify, one fstat (every computed block, per input file)
 *   stat       stat of the path (what check does once per MM_SRCFILE_RECHECK_MS per file)
 *   memcpy     copying 128 KiB and 1 MiB (the least a cache hit of a request or a block costs)
 * Each figure is the best of 5 runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "merge/plan/srcfile.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

typedef struct ctx {
    mm_srcfile *f;
    const char *path;
    char *src, *dst;
    size_t len;
} ctx;

static int op_check(ctx *c)
{
    return mm_srcfile_check(c->f);
}

static int op_verify(ctx *c)
{
    return mm_srcfile_verify(c->f);
}

static int op_stat(ctx *c)
{
    struct stat st;
    return stat(c->path, &st);
}

static int op_memcpy(ctx *c)
{
    memcpy(c->dst, c->src, c->len);
    return c->dst[c->len - 1];
}

/* Best of 5 runs of n calls, in ns per call; any failing call aborts the measurement. */
static double best(ctx *c, int (*op)(ctx *), long n)
{
    double b = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now_ns();
        for (long i = 0; i < n; i++)
            if (op(c) < 0) {
                fprintf(stderr, "mm-srcfile-bench: a call failed (did the file change?)\n");
                exit(1);
            }
        double per = (now_ns() - t0) / (double)n;
        if (per < b)
            b = per;
    }
    return b;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mm-srcfile-bench FILE\n");
        return 2;
    }
    mm_err err;
    ctx c = {.path = argv[1]};
    if (mm_srcfile_open(argv[1], &c.f, &err) < 0) {
        fprintf(stderr, "mm-srcfile-bench: %s\n", err.msg);
        return 1;
    }
    c.src = malloc(1 << 20);
    c.dst = malloc(1 << 20);
    if (!c.src || !c.dst)
        return 1;
    memset(c.src, 1, 1 << 20);
    memset(c.dst, 2, 1 << 20);
    printf("check   %8.1f ns\n", best(&c, op_check, 2000000));
    printf("verify  %8.1f ns\n", best(&c, op_verify, 200000));
    printf("stat    %8.1f ns  (%s)\n", best(&c, op_stat, 200000), argv[1]);
    c.len = 128 << 10;
    printf("memcpy  %8.1f ns  128 KiB\n", best(&c, op_memcpy, 5000));
    c.len = 1 << 20;
    printf("memcpy  %8.1f ns  1 MiB\n", best(&c, op_memcpy, 1000));
    mm_srcfile_close(c.f);
    free(c.src);
    free(c.dst);
    return 0;
}
