/* The open cache: lifetime, the read path (pooled read transactions) and the public put/flush. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cache_internal.h"

/* Small enough that a group commit never approaches LMDB's dirty-page limit (LMDB holds a transaction's
 * new pages in memory until the commit writes them, so this is also the writer's share of the daemon's
 * memory), large enough to amortise the commit's work on the tables; a sixteenth of small limits so that
 * a batch always fits the map's headroom. 8 MiB rather than more because the commit's write copies the
 * pages LMDB has just filled: while a transaction's pages still fit the processor's cache that copy is
 * cheap; at 16 MiB the writer's CPU time doubled (bench/RESULTS.md, issue 15). */
static uint64_t txn_cap_for(uint64_t limit)
{
    uint64_t cap = limit / 16;
    if (cap < MM_MIB)
        cap = MM_MIB;
    if (cap > 8 * MM_MIB)
        cap = 8 * MM_MIB;
    return cap;
}

int mm_cache_open(const mm_cache_options *opt, mm_cache **out, mm_err *err)
{
    *out = NULL;
    char *dir = mm_cache_default_dir(opt ? opt->dir : NULL);
    int rc = mm_cache_dir_create(dir, err);
    if (rc) {
        free(dir);
        return rc;
    }
    mm_cache *c = mm_xcalloc(1, sizeof *c);
    c->size_limit = opt && opt->size_limit ? opt->size_limit : MM_CACHE_DEFAULT_SIZE;
    c->txn_cap = txn_cap_for(c->size_limit);
    atomic_init(&c->evictions, 0);
    atomic_init(&c->puts_stored, 0);
    atomic_init(&c->puts_dropped, 0);
    atomic_init(&c->corrupt, 0);
    atomic_init(&c->resets, 0);
    atomic_init(&c->file_reads, 0);
    atomic_init(&c->q_bytes, 0);
    bool reset;
    rc = mm_cache_env_open(&c->env, dir, mm_cache_map_size(c->size_limit), true, &reset, err);
    if (rc) {
        free(c);
        return rc;
    }
    atomic_store(&c->resets, reset ? 1 : 0);
    mdb_filehandle_t fd;
    MDB_stat mst;
    c->fd = mdb_env_get_fd(c->env.env, &fd) == 0 ? fd : -1;
    c->psize = mdb_env_stat(c->env.env, &mst) == 0 ? mst.ms_psize : 0;
    atomic_init(&c->map_base, 0);
    atomic_init(&c->map_base_ok, false);
    pthread_mutex_init(&c->pool_lock, NULL);
    mm_cache_pending_init(c);
    mm_cache_spares_init(c);
    rc = mm_cache_writer_start(c, err);
    if (rc) {
        mm_cache_spares_destroy(c);
        mm_cache_pending_destroy(c);
        pthread_mutex_destroy(&c->pool_lock);
        mm_cache_env_close(&c->env);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void mm_cache_close(mm_cache *c)
{
    if (!c)
        return;
    mm_cache_writer_stop(c);
    for (size_t i = 0; i < c->pool_n; i++)
        mdb_txn_abort(c->pool[i]);
    pthread_mutex_destroy(&c->pool_lock);
    mm_cache_pending_destroy(c);
    mm_cache_spares_destroy(c);
    mm_cache_env_close(&c->env);
    free(c);
}

/* hit->txn is either an LMDB read transaction or, with the low bit set, a pending op (both come from
 * allocators that align to at least 8 bytes). */
static void *tag_op(mm_cache_op *op)
{
    return (void *)((uintptr_t)op | 1u);
}

static mm_cache_op *tagged_op(void *p)
{
    return ((uintptr_t)p & 1u) ? (mm_cache_op *)((uintptr_t)p & ~(uintptr_t)1u) : NULL;
}

/* A reset transaction keeps its reader slot; renewing it skips the process-shared reader-table lock
 * that a fresh mdb_txn_begin takes. */
int mm_cache_rtxn_acquire(mm_cache *c, MDB_txn **out)
{
    MDB_txn *txn = NULL;
    pthread_mutex_lock(&c->pool_lock);
    if (c->pool_n)
        txn = c->pool[--c->pool_n];
    pthread_mutex_unlock(&c->pool_lock);
    if (txn) {
        if (mdb_txn_renew(txn) == 0) {
            *out = txn;
            return 0;
        }
        mdb_txn_abort(txn);
    }
    return mdb_txn_begin(c->env.env, NULL, MDB_RDONLY, out);
}

void mm_cache_rtxn_release(mm_cache *c, MDB_txn *txn)
{
    mdb_txn_reset(txn);
    pthread_mutex_lock(&c->pool_lock);
    if (c->pool_n < MM_CACHE_RTXN_POOL) {
        c->pool[c->pool_n++] = txn;
        txn = NULL;
    }
    pthread_mutex_unlock(&c->pool_lock);
    if (txn)
        mdb_txn_abort(txn);
}

bool mm_cache_touch_wanted(mm_cache *c, MDB_txn *txn, MDB_val *k)
{
    MDB_val v;
    uint64_t then, entries;
    mm_cache_state st;
    if (mdb_get(txn, c->env.atime, k, &v) != 0 || v.mv_size != sizeof then)
        return false;
    memcpy(&then, v.mv_data, sizeof then);
    if (mm_cache_state_read(&c->env, txn, &st) != 0 || mm_cache_entries(&c->env, txn, &entries) != 0)
        return false;
    return mm_cache_touch_due(st.tick, then, entries);
}

/* A value is read whole right after the lookup: ask for all of its pages at once instead of faulting
 * them in as the copy walks them (a block is ~1 MiB, well past the kernel's fault-around). */
static void prefetch(const void *data, size_t len)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)data & ~(page - 1), z = (uintptr_t)data + len;
    if (len >= 2 * page)
        (void)madvise((void *)a, z - a, MADV_WILLNEED);
}

int mm_cache_lookup(mm_cache *c, mm_cache_table table, MDB_val *k, MDB_txn **txn, MDB_val *v)
{
    int rc = mm_cache_rtxn_acquire(c, txn);
    if (rc) {
        mm_cache_log_once(MM_CACHE_LOG_READ, "cannot read the cache at %s (%s); computing instead", c->env.dir,
                          mm_cache_strerror(rc));
        return 0;
    }
    rc = mdb_get(*txn, mm_cache_table_dbi(&c->env, table), k, v);
    if (rc) {
        if (rc != MDB_NOTFOUND)
            mm_cache_log_once(MM_CACHE_LOG_READ, "cannot read the cache at %s (%s); computing instead", c->env.dir,
                              mm_cache_strerror(rc));
        mm_cache_rtxn_release(c, *txn);
        return 0;
    }
    return 1;
}

int mm_cache_hit_checked(mm_cache *c, mm_cache_table table, MDB_txn *txn, MDB_val *k, bool verified)
{
    if (!verified) {
        mm_cache_rtxn_release(c, txn);
        atomic_fetch_add(&c->corrupt, 1);
        mm_cache_log_once(MM_CACHE_LOG_CORRUPT, "a cache entry in %s failed its checksum; it is dropped and recomputed",
                          c->env.dir);
        mm_cache_enqueue_drop(c, table, k->mv_data);
        return 0;
    }
    if (mm_cache_touch_wanted(c, txn, k))
        mm_cache_enqueue_touch(c, table, k->mv_data);
    return 1;
}

int mm_cache_get(mm_cache *c, mm_cache_table table, const void *key, size_t key_len, mm_cache_hit *hit)
{
    memset(hit, 0, sizeof *hit);
    if (!c || !key || key_len != mm_cache_key_len(table))
        return 0;
    /* The queue first: its entries leave only after their commit, so a miss here followed by a miss in
     * a read transaction begun afterwards is a true miss. */
    if (mm_cache_get_queued(c, table, key, key_len, hit))
        return 1;
    MDB_txn *txn;
    MDB_val k = {key_len, (void *)key}, v;
    if (!mm_cache_lookup(c, table, &k, &txn, &v))
        return 0;
    prefetch(v.mv_data, v.mv_size);
    const void *data;
    size_t len;
    _Atomic uint64_t *memo = &c->verified[((uintptr_t)v.mv_data >> 12) % MM_CACHE_VERIFIED_SLOTS];
    if (!mm_cache_hit_checked(c, table, txn, &k, mm_cache_value_open_checked(v.mv_data, v.mv_size, &data, &len, memo)))
        return 0;
    hit->data = data;
    hit->len = len;
    hit->txn = txn;
    return 1;
}

int mm_cache_get_queued(mm_cache *c, mm_cache_table table, const void *key, size_t key_len, mm_cache_hit *hit)
{
    memset(hit, 0, sizeof *hit);
    if (!c || !key || key_len != mm_cache_key_len(table))
        return 0;
    mm_cache_op *op = mm_cache_pending_find(c, table, key);
    if (!op)
        return 0;
    hit->data = op->val + MM_CACHE_HDR_LEN;
    hit->len = op->val_len - MM_CACHE_HDR_LEN;
    hit->txn = tag_op(op);
    return 1;
}

int mm_cache_has(mm_cache *c, mm_cache_table table, const void *key, size_t key_len)
{
    if (!c || !key || key_len != mm_cache_key_len(table))
        return 0;
    mm_cache_op *op = mm_cache_pending_find(c, table, key);
    if (op) {
        mm_cache_op_unref(op);
        return 1;
    }
    MDB_txn *txn;
    MDB_val k = {key_len, (void *)key}, v;
    if (!mm_cache_lookup(c, table, &k, &txn, &v))
        return 0;
    mm_cache_rtxn_release(c, txn);
    return 1;
}

void mm_cache_prefetch(mm_cache *c, mm_cache_table table, const void *key, size_t key_len)
{
    if (!c || !key || key_len != mm_cache_key_len(table))
        return;
    MDB_txn *txn;
    if (mm_cache_rtxn_acquire(c, &txn))
        return;
    MDB_val k = {key_len, (void *)key}, v;
    if (mdb_get(txn, mm_cache_table_dbi(&c->env, table), &k, &v) == 0 &&
        mm_cache_prefetch_offset(c, v.mv_data, v.mv_size) < 0)
        prefetch(v.mv_data, v.mv_size);
    mm_cache_rtxn_release(c, txn);
}

/* Pages of the map that hits touched stay mapped in this process and count in its resident size, which
 * would then grow with the amount of data read (bench/run figure 6). After every MM_CACHE_SWEEP bytes of
 * hits the whole map leaves the process (MADV_DONTNEED on a read-only shared file mapping: the pages stay
 * in the page cache, and a reader copying at that moment simply faults them back in), so the mapped part
 * stays bounded whatever the model size. */
#define MM_CACHE_SWEEP (128ull << 20)

void mm_cache_sweep_map(mm_cache *c, const void *data, size_t hit_len)
{
    /* The span of the map that hits have touched (LMDB does not tell where its map is unless it is
     * fixed): widen it to cover this value. */
    uintptr_t a = (uintptr_t)data, z = a + hit_len;
    uintptr_t lo = atomic_load(&c->touched_lo), hi = atomic_load(&c->touched_hi);
    while ((lo == 0 || a < lo) && !atomic_compare_exchange_weak(&c->touched_lo, &lo, a))
        ;
    while (z > hi && !atomic_compare_exchange_weak(&c->touched_hi, &hi, z))
        ;
    if (atomic_fetch_add(&c->swept_bytes, hit_len) + hit_len < MM_CACHE_SWEEP)
        return;
    atomic_store(&c->swept_bytes, 0);
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    lo = atomic_load(&c->touched_lo) & ~(page - 1);
    hi = atomic_load(&c->touched_hi);
    /* The span can only lie inside the one map this environment keeps for its lifetime (it is never
     * resized while open); check anyway, since dropping pages outside it would lose memory contents. */
    MDB_envinfo info;
    if (hi > lo && mdb_env_info(c->env.env, &info) == 0 && hi - lo <= info.me_mapsize)
        (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

void mm_cache_release(mm_cache *c, mm_cache_hit *hit)
{
    if (c && hit && hit->txn) {
        mm_cache_op *op = tagged_op(hit->txn);
        if (op) {
            mm_cache_op_unref(op);
        } else {
            const void *data = hit->data;
            size_t len = hit->len;
            mm_cache_rtxn_release(c, hit->txn);
            mm_cache_sweep_map(c, data, len);
        }
    }
    if (hit)
        memset(hit, 0, sizeof *hit);
}

int mm_cache_reserve(mm_cache *c, mm_cache_table table, const void *key, size_t key_len, size_t len,
                     mm_cache_reservation *r)
{
    memset(r, 0, sizeof *r);
    if (!c || !key || key_len != mm_cache_key_len(table))
        return 0;
    /* It would only push everything else out and then be evicted itself. */
    if (c->size_limit < MM_CACHE_HDR_LEN || len > c->size_limit - MM_CACHE_HDR_LEN) {
        atomic_fetch_add(&c->puts_dropped, 1);
        return 0;
    }
    /* Already on its way (another thread computed the same block): it would only meet MDB_KEYEXIST. */
    mm_cache_op *pending = mm_cache_pending_find(c, table, key);
    if (pending) {
        mm_cache_op_unref(pending);
        atomic_fetch_add(&c->puts_dropped, 1);
        return 0;
    }
    mm_cache_op *op = mm_cache_put_new(c, table, key, len);
    if (!op)
        return 0;
    r->data = op->val + MM_CACHE_HDR_LEN;
    r->len = len;
    r->op = op;
    return 1;
}

void mm_cache_publish(mm_cache *c, mm_cache_reservation *r, mm_cache_hit *hit)
{
    mm_cache_op *op = r->op;
    if (hit)
        memset(hit, 0, sizeof *hit);
    if (!op)
        return;
    if (hit) {
        /* Taken before the push: the writer may commit and drop the queue's reference at once. */
        atomic_fetch_add(&op->refs, 1);
        hit->data = r->data;
        hit->len = r->len;
        hit->txn = tag_op(op);
    }
    mm_cache_put_push(c, op);
    memset(r, 0, sizeof *r);
}

void mm_cache_abandon(mm_cache *c, mm_cache_reservation *r)
{
    if (r->op)
        mm_cache_put_cancel(c, r->op);
    memset(r, 0, sizeof *r);
}

void mm_cache_put(mm_cache *c, mm_cache_table table, const void *key, size_t key_len, const void *data, size_t len)
{
    mm_cache_reservation r;
    if ((len && !data) || !mm_cache_reserve(c, table, key, key_len, len, &r))
        return;
    if (len)
        memcpy(r.data, data, len);
    mm_cache_publish(c, &r, NULL);
}

void mm_cache_flush(mm_cache *c)
{
    if (c)
        mm_cache_writer_flush(c);
}

void mm_cache_counters_get(mm_cache *c, mm_cache_counters *out)
{
    memset(out, 0, sizeof *out);
    if (!c)
        return;
    out->evictions = atomic_load(&c->evictions);
    out->puts_stored = atomic_load(&c->puts_stored);
    out->puts_dropped = atomic_load(&c->puts_dropped);
    out->corrupt = atomic_load(&c->corrupt);
    out->resets = atomic_load(&c->resets);
    out->file_reads = atomic_load(&c->file_reads);
}
