/* Splitting a loop of the forward pass over a few threads. */
#ifndef MM_FWD_PAR_H
#define MM_FWD_PAR_H

#include <stddef.h>

/* Runs fn(ctx, begin, end) over disjoint ranges covering [0, n), on up to `threads` threads (the caller's
 * among them), and returns when all are done. Ranges are contiguous and in order. When a thread cannot
 * be started its range runs on the caller's thread: the result never depends on the thread count. */
typedef void (*mm_fwd_job)(void *ctx, size_t begin, size_t end);
void mm_fwd_parallel(size_t n, size_t threads, mm_fwd_job fn, void *ctx);

/* The thread count to use: the online CPUs, at least 2 and at most 16 (MM_FWD_THREADS in the
 * environment overrides it, for tests). */
size_t mm_fwd_threads(void);

#endif
