#include "fwd_par.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct part {
    mm_fwd_job fn;
    void *ctx;
    size_t begin, end;
    pthread_t tid;
    int started;
} part;

static void *run_part(void *arg)
{
    part *p = arg;
    p->fn(p->ctx, p->begin, p->end);
    return NULL;
}

void mm_fwd_parallel(size_t n, size_t threads, mm_fwd_job fn, void *ctx)
{
    if (threads > n)
        threads = n;
    if (threads <= 1) {
        if (n)
            fn(ctx, 0, n);
        return;
    }
    part parts[16];
    if (threads > 16)
        threads = 16;
    for (size_t i = 0; i < threads; i++) {
        parts[i] = (part){ fn, ctx, n * i / threads, n * (i + 1) / threads, 0, 0 };
        if (i > 0)
            parts[i].started = pthread_create(&parts[i].tid, NULL, run_part, &parts[i]) == 0;
    }
    run_part(&parts[0]);
    for (size_t i = 1; i < threads; i++) {
        if (parts[i].started)
            pthread_join(parts[i].tid, NULL);
        else
            run_part(&parts[i]);
    }
}

size_t mm_fwd_threads(void)
{
    const char *env = getenv("MM_FWD_THREADS");
    long n = env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    if (env && n >= 1)
        return n > 16 ? 16 : (size_t)n;
    return n < 2 ? 2 : n > 16 ? 16 : (size_t)n;
}
