#include "blocks.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "engine.h"
#include "formats/jsonpy.h"

/* In-flight blocks are kept in a table split into stripes, each with its own lock, so readers of
 * different blocks never wait on one another (no global lock on the read path). */
#define STRIPES 64
/* How far a sequential reader's cache hits look ahead (blocks of about 1 MiB). */
#define PREFETCH_BLOCKS 8

typedef struct flight {
    struct flight *next;
    const mm_out_tensor *t;
    uint64_t block;
    int refs;
    int done;
    int rc;
    unsigned char *data;
    size_t len;
    /* With a cache, data is the block's queued cache value (computed in place) and this holds it;
     * otherwise (no room in the queue) data is our own allocation. */
    mm_cache_hit hold;
    pthread_cond_t cond;
} flight;

typedef struct stripe {
    pthread_mutex_t lock;
    flight *head;
} stripe;

struct mm_blocks {
    const mm_plan *plan;
    mm_cache *cache;
    char *cache_dir;
    stripe stripes[STRIPES];
    /* Per tensor: its statistics once known, and a lock held while its pre-pass runs (single-flight
     * per tensor, so pre-passes of different tensors run in parallel). */
    _Atomic(void *) *stats;
    pthread_mutex_t *stats_lock;
    atomic_uint_fast64_t computed, hits, misses, waits, served, bytes_computed, prepasses;
};

mm_blocks *mm_blocks_new(const mm_plan *p)
{
    mm_blocks *b = mm_xcalloc(1, sizeof *b);
    b->plan = p;
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&b->stripes[i].lock, NULL);
    size_t n = p->ntensors ? p->ntensors : 1;
    b->stats = mm_xcalloc(n, sizeof *b->stats);
    b->stats_lock = mm_xcalloc(n, sizeof *b->stats_lock);
    for (size_t i = 0; i < p->ntensors; i++)
        pthread_mutex_init(&b->stats_lock[i], NULL);
    return b;
}

void mm_blocks_free(mm_blocks *b)
{
    if (!b)
        return;
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&b->stripes[i].lock);
    for (size_t i = 0; i < b->plan->ntensors; i++) {
        free(atomic_load(&b->stats[i]));
        pthread_mutex_destroy(&b->stats_lock[i]);
    }
    free(b->stats);
    free(b->stats_lock);
    free(b->cache_dir);
    free(b);
}

void mm_blocks_set_cache(mm_blocks *b, mm_cache *c, const char *dir)
{
    b->cache = c;
    free(b->cache_dir);
    b->cache_dir = dir ? mm_xstrdup(dir) : NULL;
}

void mm_blocks_count_served(mm_blocks *b, uint64_t n)
{
    atomic_fetch_add(&b->served, n);
}

/* The statistics of t's pre-pass: from memory, else from the cache, else computed (once: readers of
 * the same tensor wait for the first). *out is NULL for methods without a pre-pass. */
static int stats_get(mm_blocks *b, const mm_out_tensor *t, const void **out)
{
    const mm_method *m = t->method;
    size_t size = m->stats_size && m->prepass ? m->stats_size(t) : 0;
    *out = NULL;
    if (!size)
        return 0;
    size_t idx = (size_t)(t - b->plan->tensors);
    void *s = atomic_load(&b->stats[idx]);
    if (s) {
        *out = s;
        return 0;
    }
    if (pthread_mutex_trylock(&b->stats_lock[idx]) != 0) {
        atomic_fetch_add(&b->waits, 1);
        pthread_mutex_lock(&b->stats_lock[idx]);
    }
    int rc = 0;
    s = atomic_load(&b->stats[idx]);
    if (!s) {
        s = malloc(size);
        mm_cache_hit hit;
        if (!s) {
            rc = -ENOMEM;
        } else if (mm_cache_get(b->cache, MM_CACHE_STATS, t->recipe, MM_CACHE_RECIPE_LEN, &hit)) {
            int ok = hit.len == size;
            if (ok)
                memcpy(s, hit.data, size);
            mm_cache_release(b->cache, &hit);
            if (!ok)
                rc = 1; /* stale size: compute below */
        } else {
            rc = 1;
        }
        if (rc == 1) {
            rc = m->prepass(t, s);
            if (rc == 0) {
                atomic_fetch_add(&b->prepasses, 1);
                mm_cache_put(b->cache, MM_CACHE_STATS, t->recipe, MM_CACHE_RECIPE_LEN, s, size);
            }
        }
        if (rc == 0)
            atomic_store(&b->stats[idx], s);
        else
            free(s);
    }
    pthread_mutex_unlock(&b->stats_lock[idx]);
    if (rc == 0)
        *out = atomic_load(&b->stats[idx]);
    return rc;
}

static void block_key(const mm_out_tensor *t, uint64_t block, unsigned char key[MM_CACHE_KEY_LEN])
{
    memcpy(key, t->recipe, 32);
    for (int i = 0; i < 8; i++)
        key[32 + i] = (unsigned char)(block >> (56 - 8 * i));
}

static stripe *stripe_of(mm_blocks *b, const mm_out_tensor *t, uint64_t block)
{
    uint64_t h = (uint64_t)(uintptr_t)t * 0x9e3779b97f4a7c15ull ^ block * 0xbf58476d1ce4e5b9ull;
    return &b->stripes[(h >> 32) % STRIPES];
}

/* The block of `key` (block_len bytes) from the writer's queue: 1 and *hit (to release), or 0 (not
 * queued, or a value of another length, which is then computed again). */
static int queued_block(mm_blocks *b, const unsigned char *key, uint64_t block_len, mm_cache_hit *hit)
{
    if (!mm_cache_get_queued(b->cache, MM_CACHE_BLOCKS, key, MM_CACHE_KEY_LEN, hit))
        return 0;
    if (hit->len == block_len)
        return 1;
    mm_cache_release(b->cache, hit);
    return 0;
}

/* Computes block `block` of t (bytes [block_off, block_off + block_len) of its data) into *out, or waits
 * for the thread already computing it. The leader computes straight into a reserved cache value, which
 * it publishes before anyone sees the block, so later readers find it in the cache. Returns 0 with a
 * reference to the flight (the bytes are (*out)->data until flight_put), or the computation's error;
 * without `wait`, FLIGHT_BUSY (and *out = NULL) when another thread is computing the block. */
#define FLIGHT_BUSY 2 /* not 1: peek_block returns 1 for a stored block */
static int flight_get(mm_blocks *b, const mm_out_tensor *t, const void *stats, uint64_t block, uint64_t block_off,
                      size_t block_len, int wait, flight **out)
{
    stripe *s = stripe_of(b, t, block);
    pthread_mutex_lock(&s->lock);
    flight *f = s->head;
    while (f && !(f->t == t && f->block == block))
        f = f->next;
    if (f && !wait) {
        pthread_mutex_unlock(&s->lock);
        *out = NULL;
        return FLIGHT_BUSY;
    }
    if (f) {
        f->refs++;
        atomic_fetch_add(&b->waits, 1);
        while (!f->done)
            pthread_cond_wait(&f->cond, &s->lock);
    } else {
        unsigned char key[MM_CACHE_KEY_LEN];
        block_key(t, block, key);
        mm_cache_hit queued;
        f = mm_xcalloc(1, sizeof *f);
        f->t = t;
        f->block = block;
        f->refs = 1;
        pthread_cond_init(&f->cond, NULL);
        /* The thread that computed the block may have published it and retired its flight since the
         * caller looked in the cache (publishing comes first, so the queue has it): then the flight is
         * that queued value, done, and shared with no one. */
        if (queued_block(b, key, block_len, &queued)) {
            pthread_mutex_unlock(&s->lock);
            f->hold = queued;
            f->data = (unsigned char *)(uintptr_t)queued.data;
            f->len = block_len;
            f->done = 1;
            *out = f;
            return 0;
        }
        f->next = s->head;
        s->head = f;
        pthread_mutex_unlock(&s->lock);

        mm_cache_reservation r;
        if (mm_cache_reserve(b->cache, MM_CACHE_BLOCKS, key, sizeof key, block_len, &r))
            f->data = r.data;
        else
            f->data = malloc(block_len ? block_len : 1);
        f->len = block_len;
        f->rc = f->data ? mm_engine_read(t, stats, block_off, block_len, f->data) : -ENOMEM;
        if (f->rc == 0) {
            atomic_fetch_add(&b->computed, 1);
            atomic_fetch_add(&b->bytes_computed, block_len);
        }
        if (r.op && f->rc == 0) {
            mm_cache_publish(b->cache, &r, &f->hold);
        } else if (r.op) {
            mm_cache_abandon(b->cache, &r);
            f->data = NULL;
        }

        pthread_mutex_lock(&s->lock);
        f->done = 1;
        /* Later readers find the block in the cache (or compute it again if it could not be queued). */
        for (flight **pp = &s->head; *pp; pp = &(*pp)->next)
            if (*pp == f) {
                *pp = f->next;
                break;
            }
        pthread_cond_broadcast(&f->cond);
    }
    int rc = f->rc;
    pthread_mutex_unlock(&s->lock);
    *out = f;
    return rc;
}

static void flight_put(mm_blocks *b, flight *f)
{
    stripe *s = stripe_of(b, f->t, f->block);
    pthread_mutex_lock(&s->lock);
    int last = --f->refs == 0;
    pthread_mutex_unlock(&s->lock);
    if (!last)
        return;
    pthread_cond_destroy(&f->cond);
    if (f->hold.txn)
        mm_cache_release(b->cache, &f->hold);
    else
        free(f->data);
    free(f);
}

/* Block `block` computed (or, with `wait`, waited for), then [from, from + len) of it copied into dst.
 * 0, FLIGHT_BUSY (without `wait`: another thread is computing it; nothing copied) or a negative errno. */
static int compute_shared(mm_blocks *b, const mm_out_tensor *t, const void *stats, uint64_t block, uint64_t block_off,
                          size_t block_len, uint64_t from, size_t len, unsigned char *dst, int wait)
{
    flight *f;
    int rc = flight_get(b, t, stats, block, block_off, block_len, wait, &f);
    if (rc == FLIGHT_BUSY)
        return rc;
    /* Our reference keeps f->data alive; copy without holding the stripe. */
    if (rc == 0)
        memcpy(dst, f->data + from, len);
    flight_put(b, f);
    return rc;
}

/* Bytes [from, from + n) of block blk of t (block_len bytes) copied from the cache into dst: 1, or 0
 * when it is not cached (or stored with another length). */
static int copy_block(mm_blocks *b, const mm_out_tensor *t, uint64_t blk, uint64_t block_len, uint64_t from, size_t n,
                      unsigned char *dst)
{
    unsigned char key[MM_CACHE_KEY_LEN];
    block_key(t, blk, key);
    return mm_cache_read(b->cache, MM_CACHE_BLOCKS, key, sizeof key, (size_t)block_len, from, dst, n);
}

/* Counts a hit on block blk of t. A read that reaches the end of a block (`to_end`) is most likely
 * sequential: keep the disk busy on the next blocks' values while this one is sent, so reading the
 * cache and the FUSE round trips overlap. */
static void count_hit(mm_blocks *b, const mm_out_tensor *t, uint64_t blk, int to_end)
{
    atomic_fetch_add(&b->hits, 1);
    if (!to_end)
        return;
    const uint64_t bs = t->block_elems * mm_dtype_size(t->dtype), total = t->numel * mm_dtype_size(t->dtype);
    unsigned char key[MM_CACHE_KEY_LEN];
    /* In the steady state only the farthest block is new; the first block of a tensor starts the whole
     * window. */
    uint64_t first = blk == 0 ? 1 : blk + PREFETCH_BLOCKS;
    for (uint64_t nb = first; nb <= blk + PREFETCH_BLOCKS && nb * bs < total; nb++) {
        block_key(t, nb, key);
        mm_cache_prefetch(b->cache, MM_CACHE_BLOCKS, key, sizeof key);
    }
}

/* The part of block blk of t that a read of bytes [off, end) of its data covers: the block is bytes
 * [b0, b1), the read covers [a, z) of it. */
typedef struct span {
    uint64_t b0, b1, a, z;
} span;

static span block_span(const mm_out_tensor *t, uint64_t blk, uint64_t off, uint64_t end)
{
    const size_t es = mm_dtype_size(t->dtype);
    const uint64_t bs = t->block_elems * es, total = t->numel * es;
    span s = {.b0 = blk * bs};
    s.b1 = s.b0 + bs < total ? s.b0 + bs : total;
    s.a = off > s.b0 ? off : s.b0;
    s.z = end < s.b1 ? end : s.b1;
    return s;
}

/* Statistics of t, fetched at most once per read (*known): only a read that computes needs them. */
static int stats_once(mm_blocks *b, const mm_out_tensor *t, const void **stats, int *known)
{
    if (*known)
        return 0;
    int rc = stats_get(b, t, stats);
    *known = rc == 0;
    return rc;
}

/* One block of a peek: its bytes from the writer's queue (a hit, held in h) or computed now (a flight,
 * held in h). 0 with *bytes; 1 when the block is stored (the caller copies instead); FLIGHT_BUSY when
 * !wait and another thread is computing it; or a negative errno. */
static int peek_block(mm_blocks *b, const mm_out_tensor *t, uint64_t blk, const span *s, int wait, const void **stats,
                      int *stats_known, mm_blocks_hold *h, const unsigned char **bytes, int *hit)
{
    unsigned char key[MM_CACHE_KEY_LEN];
    block_key(t, blk, key);
    *hit = 0;
    if (queued_block(b, key, s->b1 - s->b0, &h->hits[h->n])) {
        *bytes = h->hits[h->n++].data;
        *hit = 1;
        return 0;
    }
    if (mm_cache_has(b->cache, MM_CACHE_BLOCKS, key, sizeof key))
        return 1; /* stored: copied out by mm_blocks_read, cheaper than mapping it */
    int rc = stats_once(b, t, stats, stats_known);
    if (rc < 0)
        return rc;
    flight *f;
    rc = flight_get(b, t, *stats, blk, s->b0, (size_t)(s->b1 - s->b0), wait, &f);
    if (rc == FLIGHT_BUSY)
        return rc;
    if (rc < 0) {
        flight_put(b, f);
        return rc;
    }
    h->flights[h->nflights++] = f;
    *bytes = f->data;
    return 0;
}

int mm_blocks_peek(mm_blocks *b, const mm_out_tensor *t, uint64_t off, size_t len, struct iovec *iov, size_t *niov,
                   size_t max, mm_blocks_hold *h)
{
    if (!b->cache)
        return 1; /* nothing to point at: the caller reads (and checks the sources) */
    if (mm_srcfile_check_tensor(t) < 0)
        return -EIO;
    const uint64_t bs = t->block_elems * mm_dtype_size(t->dtype), end = off + len;
    const void *stats = NULL;
    int stats_known = 0;
    uint64_t hit_mask = 0;  /* which of this call's blocks were hits (at most MM_BLOCKS_HOLD_MAX < 64) */
    uint64_t busy_mask = 0; /* which were being computed by another thread when first met */
    const size_t first_iov = *niov;
    /* Blocks another thread is computing are waited for last: a sequential reader's requests straddle
     * blocks, so the next request usually needs the block the previous one is computing; computing its
     * other block meanwhile keeps both cores busy instead of one waiting on the other. */
    for (int pass = 0; pass < 2 && (pass == 0 || busy_mask); pass++) {
        for (uint64_t blk = off / bs, k = 0; blk * bs < end; blk++, k++) {
            if (pass == 1 && !(busy_mask >> k & 1))
                continue;
            const span s = block_span(t, blk, off, end);
            const size_t slot = first_iov + k;
            if (pass == 0) {
                if (slot >= max || h->n + h->nflights + (size_t)__builtin_popcountll(busy_mask) >= MM_BLOCKS_HOLD_MAX)
                    return 1; /* (each busy block takes a hold in the second pass) */
                *niov = slot + 1;
            }
            const unsigned char *bytes;
            int hit;
            int rc = peek_block(b, t, blk, &s, pass == 1, &stats, &stats_known, h, &bytes, &hit);
            if (rc == FLIGHT_BUSY) {
                busy_mask |= 1ull << k;
                atomic_fetch_add(&b->misses, 1);
                continue;
            }
            if (rc != 0)
                return rc;
            /* a block met busy was a miss, whatever it is by now */
            if (pass == 0 && hit)
                hit_mask |= 1ull << k;
            else if (pass == 0)
                atomic_fetch_add(&b->misses, 1);
            iov[slot].iov_base = (unsigned char *)(uintptr_t)bytes + (s.a - s.b0);
            iov[slot].iov_len = (size_t)(s.z - s.a);
        }
    }
    /* Counted only now: after a 1 the caller reads the same blocks again with mm_blocks_read. */
    for (uint64_t blk = off / bs, k = 0; blk * bs < end; blk++, k++) {
        const span s = block_span(t, blk, off, end);
        if (hit_mask >> k & 1)
            count_hit(b, t, blk, s.z == s.b1);
    }
    return 0;
}

void mm_blocks_hold_release(mm_blocks *b, mm_blocks_hold *h)
{
    for (size_t i = 0; i < h->n; i++)
        mm_cache_release(b->cache, &h->hits[i]);
    for (size_t i = 0; i < h->nflights; i++)
        flight_put(b, h->flights[i]);
    h->n = h->nflights = 0;
}

/* mm_blocks_read, or with !compute mm_blocks_read_cached. */
static int read_range(mm_blocks *b, const mm_out_tensor *t, uint64_t off, size_t len, void *buf, int compute)
{
    /* Cache hits and the statistics memo included: nothing derived from a source that was seen changed
     * is served (merge/plan/srcfile.h). */
    if (mm_srcfile_check_tensor(t) < 0)
        return -EIO;
    const void *stats = NULL;
    if (!b->cache) {
        if (!compute)
            return 1;
        int rc = stats_get(b, t, &stats);
        if (rc < 0)
            return rc;
        atomic_fetch_add(&b->bytes_computed, len);
        return mm_engine_read(t, stats, off, len, buf);
    }
    int stats_known = 0;
    const uint64_t bs = t->block_elems * mm_dtype_size(t->dtype), end = off + len;
    unsigned char *dst = buf;
    /* As in mm_blocks_peek, blocks another thread is computing are waited for last (the first 64 of the
     * range; any further ones are waited for in order). */
    uint64_t busy = 0;
    for (int pass = 0; pass < 2 && (pass == 0 || busy); pass++) {
        for (uint64_t blk = off / bs, k = 0; blk * bs < end; blk++, k++) {
            if (pass == 1 && !(k < 64 && (busy >> k & 1)))
                continue;
            const span sp = block_span(t, blk, off, end);
            const uint64_t b0 = sp.b0, b1 = sp.b1, a = sp.a, z = sp.z;
            if (copy_block(b, t, blk, b1 - b0, a - b0, (size_t)(z - a), dst + (a - off))) {
                if (compute && pass == 0)
                    count_hit(b, t, blk, z == b1);
                continue; /* (in the second pass: computed meanwhile by the thread it was waiting for) */
            }
            if (!compute)
                return 1;
            if (pass == 0)
                atomic_fetch_add(&b->misses, 1);
            /* Statistics only when something must be computed: a fully cached tensor needs no pre-pass. */
            int rc = stats_once(b, t, &stats, &stats_known);
            if (rc < 0)
                return rc;
            rc = compute_shared(b, t, stats, blk, b0, (size_t)(b1 - b0), a - b0, (size_t)(z - a), dst + (a - off),
                                pass == 1 || k >= 64);
            if (rc == FLIGHT_BUSY) {
                busy |= 1ull << k;
                continue;
            }
            if (rc < 0)
                return rc;
        }
    }
    /* A read that only copies counts its hits once it is known to be served. */
    if (!compute)
        for (uint64_t blk = off / bs; blk * bs < end; blk++) {
            const span sp = block_span(t, blk, off, end);
            count_hit(b, t, blk, sp.z == sp.b1);
        }
    return 0;
}

int mm_blocks_read(mm_blocks *b, const mm_out_tensor *t, uint64_t off, size_t len, void *buf)
{
    return read_range(b, t, off, len, buf, 1);
}

int mm_blocks_read_cached(mm_blocks *b, const mm_out_tensor *t, uint64_t off, size_t len, void *buf)
{
    return read_range(b, t, off, len, buf, 0);
}

void mm_blocks_stats_json(mm_blocks *b, mm_buf *out)
{
    mm_cache_counters cc = {0};
    if (b->cache)
        mm_cache_counters_get(b->cache, &cc);
    mm_buf_printf(out,
                  "{\"blocks_computed\": %llu, \"cache_hits\": %llu, \"cache_misses\": %llu, "
                  "\"singleflight_waits\": %llu, \"bytes_served\": %llu, \"bytes_computed\": %llu, "
                  "\"evictions\": %llu, \"prepasses_run\": %llu, \"cache_puts_stored\": %llu, "
                  "\"cache_puts_dropped\": %llu, \"cache_corrupt\": %llu, \"cache_resets\": %llu, "
                  "\"cache_enabled\": %s, \"cache_dir\": ",
                  (unsigned long long)atomic_load(&b->computed), (unsigned long long)atomic_load(&b->hits),
                  (unsigned long long)atomic_load(&b->misses), (unsigned long long)atomic_load(&b->waits),
                  (unsigned long long)atomic_load(&b->served), (unsigned long long)atomic_load(&b->bytes_computed),
                  (unsigned long long)cc.evictions, (unsigned long long)atomic_load(&b->prepasses),
                  (unsigned long long)cc.puts_stored, (unsigned long long)cc.puts_dropped,
                  (unsigned long long)cc.corrupt, (unsigned long long)cc.resets, b->cache ? "true" : "false");
    if (b->cache_dir)
        mm_json_string_py(b->cache_dir, out);
    else
        mm_buf_puts(out, "null");
    mm_buf_puts(out, "}");
}
