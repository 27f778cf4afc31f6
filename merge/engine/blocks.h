/* The block layer between the virtual files and the engine: with a cache, a tensor's data is served in
 * fixed blocks (mm_out_tensor.block_elems elements, about 1 MiB) that are computed once — single-flight
 * within the process, so N readers of one cold block cause one computation — and stored in the LMDB
 * cache, so every later read (this mount, a later one, another process, another config with the same
 * recipe) is a cache hit. Without a cache, exactly the requested range is computed.
 *
 * Counters (all atomic) describe what happened; mm_blocks_stats_json renders them for the
 * user.mergemount.stats extended attribute.
 *
 * Thread-safety: mm_blocks_read may run on any number of threads at once. mm_blocks_set_cache must be
 * called before the first read (the mount opens the cache after daemonising). */
#ifndef MM_BLOCKS_H
#define MM_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

#include "cache/cache.h"
#include "merge/plan/plan.h"
#include "base/util.h"

typedef struct mm_blocks mm_blocks;

mm_blocks *mm_blocks_new(const mm_plan *p);
/* Frees the layer; does not close the cache. */
void mm_blocks_free(mm_blocks *b);
/* Uses `c` (may be NULL: no cache) from now on; `dir` is shown in the statistics. */
void mm_blocks_set_cache(mm_blocks *b, mm_cache *c, const char *dir);

/* Bytes [off, off + len) of tensor t's data (see mm_engine_read). 0 or -EIO/-ENOMEM; cache problems
 * are never errors here. -EIO also, cache hits included, once a source of t was seen changed
 * (mm_srcfile_check_tensor). */
int mm_blocks_read(mm_blocks *b, const mm_out_tensor *t, uint64_t off, size_t len, void *buf);
/* The same when every block the range touches is cached (queued or stored): 0 with the bytes in buf, 1
 * when one is not (nothing is computed or counted; buf holds garbage), or -EIO as mm_blocks_read. */
int mm_blocks_read_cached(mm_blocks *b, const mm_out_tensor *t, uint64_t off, size_t len, void *buf);

/* Zero-copy reads: with a cache, a reply can point into the cache's memory (a stored block, or one just
 * computed into the writer's queue) instead of a copy of it. A hold keeps the memory of the pieces it
 * was filled for valid until mm_blocks_hold_release. */
#define MM_BLOCKS_HOLD_MAX 32
struct flight;
typedef struct mm_blocks_hold {
    size_t n, nflights;
    mm_cache_hit hits[MM_BLOCKS_HOLD_MAX];
    struct flight *flights[MM_BLOCKS_HOLD_MAX]; /* blocks computed for this read (n + nflights <= MAX) */
} mm_blocks_hold;

/* Appends bytes [off, off + len) of t as pieces to iov[*niov..max), holding each piece's memory in h
 * (which must start empty or hold earlier pieces of the same read): blocks in the cache writer's queue,
 * and blocks not cached at all, which are computed (once, as mm_blocks_read does) straight into the
 * queue. Returns 0; 1 when there is no cache, a block is stored (mm_blocks_read copies it out more
 * cheaply than it could be mapped), or iov or h is full (the caller reads with mm_blocks_read instead:
 * blocks computed so far are cached by then, and hits are not counted); or a negative errno (-EIO: a
 * source was seen changed or could not be read; -ENOMEM). After 1 or an error, h must still be
 * released. On 0, counts hits and starts prefetches as mm_blocks_read does. */
struct iovec;
int mm_blocks_peek(mm_blocks *b, const mm_out_tensor *t, uint64_t off, size_t len, struct iovec *iov, size_t *niov,
                   size_t max, mm_blocks_hold *h);
/* Releases everything h holds (the pieces' memory may go away); h is empty afterwards. */
void mm_blocks_hold_release(mm_blocks *b, mm_blocks_hold *h);

/* Adds to the bytes-served counter (the vfs counts every file it serves). */
void mm_blocks_count_served(mm_blocks *b, uint64_t n);

/* The counters as one JSON object:
 * {"blocks_computed", "cache_hits", "cache_misses", "singleflight_waits", "bytes_served",
 *  "bytes_computed", "evictions", "prepasses_run", "cache_puts_stored", "cache_puts_dropped",
 *  "cache_corrupt", "cache_resets", "cache_enabled", "cache_dir"} */
void mm_blocks_stats_json(mm_blocks *b, mm_buf *out);

#endif
