/* The compute pool: a fixed set of threads, one per CPU, that run the read requests which must compute
 * (fs/fs.c). Why not compute on libfuse's worker threads, as earlier versions did: libfuse starts up to
 * ten of them, and with as many requests computing at once on two cores the reads took longer and each
 * thread kept its own block-sized buffers (bench/RESULTS.md, issue 15). With the pool, at most one
 * computation per core runs; a worker that hands a read over goes straight back to the kernel for the
 * next request (lookups, cache hits and `.cache/` requests are never queued behind a computation), and
 * the pool thread that finishes a read replies to it.
 *
 * Jobs run in the order they were queued. Thread-safety: mm_pool_submit may be called from any thread;
 * start and stop from one. */
#ifndef MM_POOL_H
#define MM_POOL_H

#include <stddef.h>

#include "base/util.h"

typedef struct mm_pool mm_pool;
typedef void (*mm_pool_fn)(void *arg);

/* Starts `threads` threads (0: one per online CPU). The threads take no process signals. 0 or -errno
 * with a message; a pool that started fewer threads than asked (but at least one) is not an error. */
int mm_pool_start(size_t threads, mm_pool **out, mm_err *err);
/* Queues fn(arg). 0, or -ENOMEM (nothing queued: the caller runs it itself). */
int mm_pool_submit(mm_pool *p, mm_pool_fn fn, void *arg);
/* Runs everything still queued, joins the threads and frees the pool. NULL is ignored. */
void mm_pool_stop(mm_pool *p);

#endif
