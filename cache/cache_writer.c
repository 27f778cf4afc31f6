/* The single writer: a queue of puts, touches and drops that one thread commits in groups, so no
 * reader ever waits on LMDB's write lock or on fsync. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "cache_internal.h"

/* Reserves `size` bytes of the queue bound. A put (`wait`) waits up to MM_CACHE_ROOM_WAIT_NS for the
 * writer to make room; hints give up at once. */
static bool reserve(mm_cache *c, uint64_t size, bool wait)
{
    struct timespec until;
    bool locked = false, ok = false;
    for (;;) {
        if (atomic_fetch_add(&c->q_bytes, size) + size <= MM_CACHE_QUEUE_MAX) {
            ok = true;
            break;
        }
        atomic_fetch_sub(&c->q_bytes, size);
        if (!wait)
            break;
        if (!locked) {
            until = mm_deadline_in(MM_CACHE_ROOM_WAIT_NS);
            pthread_mutex_lock(&c->q_lock);
            locked = true;
            continue; /* the writer may have made room before we held the lock */
        }
        if (pthread_cond_timedwait(&c->q_room, &c->q_lock, &until) == ETIMEDOUT)
            wait = false; /* one last try above */
    }
    if (locked)
        pthread_mutex_unlock(&c->q_lock);
    return ok;
}

void mm_cache_spares_init(mm_cache *c)
{
    pthread_mutex_init(&c->spare_lock, NULL);
    c->spare_n = 0;
}

void mm_cache_spares_destroy(mm_cache *c)
{
    for (size_t i = 0; i < c->spare_n; i++)
        free(c->spare[i]);
    c->spare_n = 0;
    pthread_mutex_destroy(&c->spare_lock);
}

/* Memory for an op of `size` bytes: a spare that fits without wasting more than half of it, else new. */
static mm_cache_op *op_alloc(mm_cache *c, uint64_t size)
{
    mm_cache_op *op = NULL;
    if (size >= MM_CACHE_SPARE_MIN) {
        pthread_mutex_lock(&c->spare_lock);
        for (size_t i = c->spare_n; i-- > 0;)
            if (c->spare[i]->cap >= size && c->spare[i]->cap / 2 <= size) {
                op = c->spare[i];
                c->spare[i] = c->spare[--c->spare_n];
                break;
            }
        pthread_mutex_unlock(&c->spare_lock);
    }
    if (!op) {
        op = malloc(size); /* values are tensor blocks: no abort on out-of-memory here */
        if (!op)
            return NULL;
        op->cap = size;
    }
    op->owner = c;
    return op;
}

void mm_cache_op_free(mm_cache_op *op)
{
    mm_cache *c = op->owner;
    if (op->cap >= MM_CACHE_SPARE_MIN) {
        pthread_mutex_lock(&c->spare_lock);
        if (c->spare_n < MM_CACHE_SPARES) {
            c->spare[c->spare_n++] = op;
            op = NULL;
        }
        pthread_mutex_unlock(&c->spare_lock);
    }
    free(op);
}

static mm_cache_op *op_new(mm_cache *c, mm_cache_op_kind kind, mm_cache_table t, const void *key, size_t val_len)
{
    uint64_t size = sizeof(mm_cache_op) + val_len;
    if (!reserve(c, size, kind == MM_CACHE_OP_PUT))
        return NULL;
    mm_cache_op *op = op_alloc(c, size);
    if (!op) {
        atomic_fetch_sub(&c->q_bytes, size);
        return NULL;
    }
    op->next = op->pnext = NULL;
    atomic_init(&op->refs, 1);
    op->size = size;
    op->kind = kind;
    op->table = t;
    memcpy(op->key, key, mm_cache_key_len(t));
    op->val_len = val_len;
    return op;
}

static void op_push(mm_cache *c, mm_cache_op *op)
{
    pthread_mutex_lock(&c->q_lock);
    op->seq = ++c->q_enq_seq;
    c->q_list_bytes += op->size;
    if (c->q_tail)
        c->q_tail->next = op;
    else
        c->q_head = op;
    c->q_tail = op;
    pthread_cond_signal(&c->q_work);
    pthread_mutex_unlock(&c->q_lock);
}

mm_cache_op *mm_cache_put_new(mm_cache *c, mm_cache_table t, const void *key, size_t len)
{
    mm_cache_op *op = op_new(c, MM_CACHE_OP_PUT, t, key, MM_CACHE_HDR_LEN + len);
    if (!op) {
        atomic_fetch_add(&c->puts_dropped, 1);
        mm_cache_log_once(MM_CACHE_LOG_QUEUE,
                          "the cache writer is behind (%llu MiB queued); some blocks are not stored",
                          (unsigned long long)(MM_CACHE_QUEUE_MAX / MM_MIB));
    }
    return op;
}

void mm_cache_put_push(mm_cache *c, mm_cache_op *op)
{
    /* Sealed here, on the caller's thread, while the bytes are hot in its cache. */
    mm_cache_value_seal(op->val, op->val_len - MM_CACHE_HDR_LEN);
    mm_cache_pending_add(c, op);
    op_push(c, op);
}

void mm_cache_put_cancel(mm_cache *c, mm_cache_op *op)
{
    atomic_fetch_sub(&c->q_bytes, op->size);
    mm_cache_op_free(op);
}

/* Touches and drops are hints: when the queue is full they are simply forgotten. */
void mm_cache_enqueue_touch(mm_cache *c, mm_cache_table t, const void *key)
{
    mm_cache_op *op = op_new(c, MM_CACHE_OP_TOUCH, t, key, 0);
    if (op)
        op_push(c, op);
}

void mm_cache_enqueue_drop(mm_cache *c, mm_cache_table t, const void *key)
{
    mm_cache_op *op = op_new(c, MM_CACHE_OP_DROP, t, key, 0);
    if (op)
        op_push(c, op);
}

typedef struct tally {
    uint64_t stored, existing, stored_bytes;
} tally;

static int apply(mm_cache *c, const mm_cache_op *chunk, tally *t)
{
    mm_cache_wtxn w;
    memset(t, 0, sizeof *t);
    int rc = mm_cache_wtxn_begin(&c->env, &w);
    for (const mm_cache_op *op = chunk; op && !rc; op = op->next) {
        switch (op->kind) {
        case MM_CACHE_OP_PUT:
            rc = mm_cache_store_put(&w, op->table, op->key, op->val, op->val_len);
            if (rc == MDB_KEYEXIST) {
                t->existing++;
                rc = 0;
            } else if (!rc) {
                t->stored++;
            }
            break;
        case MM_CACHE_OP_TOUCH:
            rc = mm_cache_store_touch(&w, op->table, op->key);
            break;
        case MM_CACHE_OP_DROP:
            rc = mm_cache_store_drop_corrupt(&w, op->table, op->key);
            break;
        }
    }
    if (rc) {
        mm_cache_wtxn_abort(&w);
        return rc;
    }
    t->stored_bytes = w.st.stored;
    return mm_cache_wtxn_commit(&w);
}

/* Evicts down to `target`, or, when `room` is non-zero, by max(room, a quarter of what is stored). */
static int evict(mm_cache *c, uint64_t target, uint64_t room)
{
    mm_cache_wtxn w;
    uint64_t n = 0;
    int rc = mm_cache_wtxn_begin(&c->env, &w);
    if (!rc) {
        if (room) {
            uint64_t cut = w.st.stored / 4 > room ? w.st.stored / 4 : room;
            target = w.st.stored > cut ? w.st.stored - cut : 0;
        }
        rc = mm_cache_store_evict(&w, target, &n);
        if (rc)
            mm_cache_wtxn_abort(&w);
        else
            rc = mm_cache_wtxn_commit(&w);
    }
    if (rc)
        mm_cache_log_once(MM_CACHE_LOG_EVICT, "cannot evict from the cache at %s (%s)", c->env.dir,
                          mm_cache_strerror(rc));
    else
        atomic_fetch_add(&c->evictions, n);
    return rc;
}

/* A batch did not fit (map or disk full): free twice its size. LMDB reuses the pages freed by
 * transaction T only from T+2 on (T's snapshot stays the fallback), so one more small commit follows
 * the eviction to make the room usable by the retry. */
static void make_room(mm_cache *c, uint64_t bytes)
{
    if (evict(c, 0, 2 * bytes) != 0)
        return;
    mm_cache_wtxn w;
    if (mm_cache_wtxn_begin(&c->env, &w) == 0)
        (void)mm_cache_wtxn_commit(&w);
}

/* Out of room in the map, on the disk, in the quota or under the file size limit: freeing pages in
 * data.mdb may let the batch fit. */
static bool curable(int rc)
{
    return rc == MDB_MAP_FULL || rc == ENOSPC || rc == EDQUOT || rc == EFBIG || rc == EIO;
}

/* Called after each commit of `bytes`: every MM_CACHE_DROP_STEP, the pages of data.mdb below the end it
 * had at the previous step are waited for (their writeback started at their commit, so this rarely
 * waits) and dropped from the page cache. Pages written since stay (they may still be dirty), as do pages
 * mapped by lookups. Advice only: failures change nothing but memory. */
static void drop_written(mm_cache *c, uint64_t bytes)
{
    c->drop_since += bytes;
    if (c->fd < 0 || c->drop_since < MM_CACHE_DROP_STEP)
        return;
    c->drop_since -= MM_CACHE_DROP_STEP; /* a step per 64 MiB, however commits fall */
    if (c->drop_mark) {
        const unsigned wait = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
        (void)sync_file_range(c->fd, 0, (off_t)c->drop_mark, wait);
        (void)posix_fadvise(c->fd, 0, (off_t)c->drop_mark, POSIX_FADV_DONTNEED);
    }
    MDB_envinfo info;
    if (mdb_env_info(c->env.env, &info) == 0)
        c->drop_mark = ((uint64_t)info.me_last_pgno + 1) * c->psize;
}

static void write_chunk(mm_cache *c, const mm_cache_op *chunk, uint64_t bytes)
{
    tally t;
    int rc = apply(c, chunk, &t);
    if (rc && curable(rc)) {
        make_room(c, bytes);
        rc = apply(c, chunk, &t);
    }
    if (rc) {
        uint64_t puts = 0;
        for (const mm_cache_op *op = chunk; op; op = op->next)
            puts += op->kind == MM_CACHE_OP_PUT;
        atomic_fetch_add(&c->puts_dropped, puts);
        mm_cache_log_once(MM_CACHE_LOG_WRITE, "cannot store blocks in the cache at %s (%s); they are served uncached",
                          c->env.dir, mm_cache_strerror(rc));
        return;
    }
    atomic_fetch_add(&c->puts_stored, t.stored);
    atomic_fetch_add(&c->puts_dropped, t.existing);
    if (t.stored_bytes > c->size_limit)
        (void)evict(c, c->size_limit - c->size_limit / 10, 0);
    /* Commits do not sync, but the disk should not wait for the end to start on them: a first read that
     * also writes its copy (cp -r) otherwise finds both outputs still to be written at its sync. This
     * only starts the writeback of what is dirty (no flush, no wait for it). */
    if (c->fd >= 0)
        (void)sync_file_range(c->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    drop_written(c, bytes);
}

/* Commits the taken list in transactions of at most txn_cap queued bytes (at least one op each). */
static void write_all(mm_cache *c, mm_cache_op *list)
{
    while (list) {
        mm_cache_op *end = list;
        uint64_t bytes = end->size;
        while (end->next && bytes + end->next->size <= c->txn_cap) {
            end = end->next;
            bytes += end->size;
        }
        mm_cache_op *rest = end->next;
        end->next = NULL;
        write_chunk(c, list, bytes);
        mm_cache_pending_remove(c, list);
        while (list) {
            mm_cache_op *next = list->next;
            mm_cache_op_unref(list);
            list = next;
        }
        atomic_fetch_sub(&c->q_bytes, bytes);
        pthread_mutex_lock(&c->q_lock);
        pthread_cond_broadcast(&c->q_room);
        pthread_mutex_unlock(&c->q_lock);
        list = rest;
    }
}

/* Called with q_lock held and the queue non-empty: waits (releasing the lock) until a transaction's
 * worth is queued, MM_CACHE_GATHER_NS have passed, or a flush or stop asks for a commit now. */
static void gather(mm_cache *c)
{
    const struct timespec until = mm_deadline_in(MM_CACHE_GATHER_NS);
    while (!c->q_stop && c->q_list_bytes < c->txn_cap && c->q_flush_seq <= c->q_done_seq)
        if (pthread_cond_timedwait(&c->q_work, &c->q_lock, &until) == ETIMEDOUT)
            break;
}

static void *writer_main(void *arg)
{
    mm_cache *c = arg;
    pthread_mutex_lock(&c->q_lock);
    for (;;) {
        while (!c->q_head && !c->q_stop)
            pthread_cond_wait(&c->q_work, &c->q_lock);
        if (!c->q_head)
            break; /* stopping, and everything is written */
        gather(c);
        mm_cache_op *list = c->q_head;
        uint64_t last = c->q_tail->seq;
        c->q_head = c->q_tail = NULL;
        c->q_list_bytes = 0;
        pthread_mutex_unlock(&c->q_lock);
        write_all(c, list);
        pthread_mutex_lock(&c->q_lock);
        c->q_done_seq = last;
        pthread_cond_broadcast(&c->q_done);
    }
    pthread_mutex_unlock(&c->q_lock);
    return NULL;
}

int mm_cache_writer_start(mm_cache *c, mm_err *err)
{
    pthread_mutex_init(&c->q_lock, NULL);
    /* gather() and reserve() wait with monotonic deadlines. */
    mm_cond_init_monotonic(&c->q_work);
    mm_cond_init_monotonic(&c->q_room);
    pthread_cond_init(&c->q_done, NULL);
    int rc = mm_thread_start_quiet(&c->writer, writer_main, c);
    if (rc) {
        pthread_cond_destroy(&c->q_room);
        pthread_cond_destroy(&c->q_done);
        pthread_cond_destroy(&c->q_work);
        pthread_mutex_destroy(&c->q_lock);
        return mm_err_set(err, -rc, "cannot start the cache writer thread: %s", strerror(rc));
    }
    return 0;
}

void mm_cache_writer_stop(mm_cache *c)
{
    pthread_mutex_lock(&c->q_lock);
    c->q_stop = true;
    pthread_cond_signal(&c->q_work);
    pthread_mutex_unlock(&c->q_lock);
    pthread_join(c->writer, NULL);
    pthread_cond_destroy(&c->q_room);
    pthread_cond_destroy(&c->q_done);
    pthread_cond_destroy(&c->q_work);
    pthread_mutex_destroy(&c->q_lock);
}

void mm_cache_writer_flush(mm_cache *c)
{
    pthread_mutex_lock(&c->q_lock);
    uint64_t target = c->q_enq_seq;
    if (c->q_flush_seq < target) {
        c->q_flush_seq = target;
        pthread_cond_signal(&c->q_work);
    }
    while (c->q_done_seq < target)
        pthread_cond_wait(&c->q_done, &c->q_lock);
    pthread_mutex_unlock(&c->q_lock);
}
