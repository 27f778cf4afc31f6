/* Private to cache/: the on-disk format, the environment handle shared by the mount and the offline
 * commands, the table operations of the writer, and the state of an open cache.
 *
 * On-disk format (MM_CACHE_FORMAT below), one LMDB environment (data.mdb + lock.mdb) with five named tables:
 *   blocks  40-byte key (recipe hash + block index BE) -> value
 *   stats   32-byte recipe hash                       -> value
 *   atime   key (40 or 32 bytes; the length tells the table) -> u64 access tick (native endian)
 *   lru     u64 tick big-endian + key                  -> empty (memcmp order = oldest first)
 *   meta    "state" -> {u32 magic, u32 format, u64 stored bytes, u64 tick} (native endian)
 * A value is a 24-byte header {u32 magic, u32 flags (0), u64 length, u64 mm_checksum64(bytes)}
 * followed by the bytes. Headers and records are read with memcpy: LMDB only aligns values to 2 bytes.
 * Every put, touch and eviction updates blocks/stats, atime, lru and meta in one transaction, so
 * processes sharing the directory always agree on the stored bytes and the LRU order.
 * Statistics entries take part in the LRU like blocks (they are small and cheap to keep recent: the
 * engine reads them whenever it computes a block of the tensor). */
#ifndef MM_CACHE_INTERNAL_H
#define MM_CACHE_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "cache.h"

#define MM_CACHE_VALUE_MAGIC 0x4256434du /* "MCVB" */
#define MM_CACHE_META_MAGIC 0x4d56434du  /* "MCVM" */
#define MM_CACHE_FORMAT 2u /* 2: vectorised checksum */
#define MM_CACHE_HDR_LEN 24u
#define MM_CACHE_META_LEN 24u
#define MM_CACHE_TICK_LEN 8u

#define MM_MIB (1024ull * 1024ull)
/* The smallest map: room for a few batches of 1 MiB blocks whatever the limit. */
#define MM_CACHE_MIN_MAP (8ull * MM_MIB)
/* Our own "this is not a cache of this format" result, outside LMDB's and errno's ranges. */
#define MM_CACHE_BADFORMAT (-30500)

/* Fills the 24-byte header in front of `len` bytes already at hdr + MM_CACHE_HDR_LEN. */
void mm_cache_value_seal(unsigned char *hdr, size_t len);
/* Checks a stored value; on success points data and len at its bytes. */
bool mm_cache_value_open(const void *val, size_t val_len, const void **data, size_t *len);
/* The same, skipping the checksum when *verified (a memo slot for this value's address) says this
 * exact value was verified already; updates the slot. */
bool mm_cache_value_open_checked(const void *val, size_t val_len, const void **data, size_t *len,
                                 _Atomic uint64_t *verified);
/* The header of a stored value of val_len bytes (the first MM_CACHE_HDR_LEN at val): its byte count and
 * checksum, or false when it is not a value of ours or of another length. */
bool mm_cache_value_header(const void *val, size_t val_len, uint64_t *len, uint64_t *sum);
/* The verified-value memo: whether the slot says the value at address val with checksum sum was
 * verified, and recording that it was. */
bool mm_cache_memo_holds(_Atomic uint64_t *verified, const void *val, uint64_t sum);
void mm_cache_memo_set(_Atomic uint64_t *verified, const void *val, uint64_t sum);
/* Slots of the verified-value memo (direct-mapped by value address). */
#define MM_CACHE_VERIFIED_SLOTS 4096

static inline size_t mm_cache_key_len(mm_cache_table t)
{
    return t == MM_CACHE_STATS ? MM_CACHE_RECIPE_LEN : MM_CACHE_KEY_LEN;
}

/* A hit deserves a touch when its access tick lags the newest by more than 1/16 of the entries: it
 * then sits outside the most recent sixteenth of the LRU order, the only part an eviction round (which
 * removes at least the oldest 10%) is sure to spare. Hotter keys are not rewritten on every read. */
static inline bool mm_cache_touch_due(uint64_t now, uint64_t then, uint64_t entries)
{
    return then > now || now - then > entries / 16;
}

/* --- log once (the only process-wide mutable state of the cache) --- */
typedef enum {
    MM_CACHE_LOG_CORRUPT,
    MM_CACHE_LOG_READ,
    MM_CACHE_LOG_WRITE,
    MM_CACHE_LOG_EVICT,
    MM_CACHE_LOG_QUEUE,
    MM_CACHE_LOG_KINDS
} mm_cache_log_kind;
void mm_cache_log_once(mm_cache_log_kind kind, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Text for an LMDB or errno result (also MM_CACHE_BADFORMAT). */
const char *mm_cache_strerror(int rc);

/* --- directory --- */
/* mkdir -p with mode 0755; -errno with a message naming the directory. */
int mm_cache_dir_create(const char *dir, mm_err *err);

/* --- environment (cache_env.c) --- */
typedef struct mm_cache_env {
    MDB_env *env;
    MDB_dbi blocks, stats, atime, lru, meta;
    char *dir;    /* heap, owned */
    char *marker; /* heap, owned: this process's record of unsynced commits (cache_boot.h); NULL when
                   * commits sync (no boot id to record, or the record could not be made) */
} mm_cache_env;

/* Opens the environment in `dir` (taking ownership of the heap string) with a map of at least
 * map_min bytes (an existing environment keeps its larger map so sharing processes agree), creates the
 * tables and reads them once. Commits do not sync (MDB_NOSYNC): before the first one the process
 * records itself in the directory (cache_boot.h), and the judging of the records left by others, the
 * record and any wipe happen under the directory's open lock. An environment that cannot be served —
 * unreadable (corrupt, other LMDB version, not our format), or possibly torn (a record of another boot:
 * the system stopped while it had unsynced commits) — is, when may_reset, logged, wiped and created
 * anew, and *reset is set; otherwise it is an error that says how to start a new one (commands that
 * only look, or prune, must not delete data.mdb). It is never wiped while a live process of this boot
 * has it open (an error, -EBUSY, instead). Returns 0 or -errno with a message; on failure `dir` is
 * freed and *e is zeroed. */
int mm_cache_env_open(mm_cache_env *e, char *dir, uint64_t map_min, bool may_reset, bool *reset, mm_err *err);
/* Syncs data.mdb, then removes the record of unsynced commits, and closes. */
void mm_cache_env_close(mm_cache_env *e);
/* The map size for a size limit: 1.5x, at least MM_CACHE_MIN_MAP. */
uint64_t mm_cache_map_size(uint64_t size_limit);

typedef struct mm_cache_state {
    uint64_t stored; /* bytes of values, headers included */
    uint64_t tick;   /* last access tick handed out */
} mm_cache_state;
/* Reads the meta record (a missing record reads as zeros). Returns 0 or an LMDB/errno code. */
int mm_cache_state_read(const mm_cache_env *e, MDB_txn *txn, mm_cache_state *st);
int mm_cache_state_write(const mm_cache_env *e, MDB_txn *txn, const mm_cache_state *st);
/* Entries in the blocks and stats tables together. */
int mm_cache_entries(const mm_cache_env *e, MDB_txn *txn, uint64_t *n);
MDB_dbi mm_cache_table_dbi(const mm_cache_env *e, mm_cache_table t);

/* --- table operations inside one write transaction (cache_store.c) --- */
typedef struct mm_cache_wtxn {
    mm_cache_env *e;
    MDB_txn *txn;
    mm_cache_state st; /* written back by mm_cache_wtxn_commit */
    uint64_t entries;  /* at begin; only steers touch laziness */
} mm_cache_wtxn;

int mm_cache_wtxn_begin(mm_cache_env *e, mm_cache_wtxn *w);
/* Writes the state back and commits; the transaction is gone afterwards whatever the result. */
int mm_cache_wtxn_commit(mm_cache_wtxn *w);
void mm_cache_wtxn_abort(mm_cache_wtxn *w);
/* Stores a sealed value (MDB_NOOVERWRITE): 0, MDB_KEYEXIST, or an LMDB/errno code. */
int mm_cache_store_put(mm_cache_wtxn *w, mm_cache_table t, const void *key, const void *val, size_t val_len);
/* Moves a present key to the recent end of the LRU if its tick is old. */
int mm_cache_store_touch(mm_cache_wtxn *w, mm_cache_table t, const void *key);
/* Deletes the entry if its value (still) fails verification. */
int mm_cache_store_drop_corrupt(mm_cache_wtxn *w, mm_cache_table t, const void *key);
/* Deletes least recently used entries until the stored bytes are <= target; counts the blocks among
 * them (statistics entries leave silently, so block counts before and after stay comparable). */
int mm_cache_store_evict(mm_cache_wtxn *w, uint64_t target, uint64_t *evicted);
/* Empties every table; *blocks gets how many blocks there were. */
int mm_cache_store_clear(mm_cache_wtxn *w, uint64_t *blocks);

/* --- an open cache (cache.c, cache_writer.c, cache_pending.c) --- */
typedef enum { MM_CACHE_OP_PUT, MM_CACHE_OP_TOUCH, MM_CACHE_OP_DROP } mm_cache_op_kind;

/* A queued request. Puts are also reachable from the pending index until the writer has committed (or
 * dropped) them; `refs` counts the queue's reference and those of hits served from the op. */
typedef struct mm_cache_op {
    struct mm_cache_op *next;  /* queue order */
    struct mm_cache_op *pnext; /* pending index chain */
    struct mm_cache *owner;    /* whose spares the memory returns to */
    atomic_uint refs;
    uint64_t seq;
    uint64_t size; /* reserved in q_bytes */
    uint64_t cap;  /* bytes allocated (>= size) */
    mm_cache_op_kind kind;
    mm_cache_table table;
    unsigned char key[MM_CACHE_KEY_LEN];
    size_t val_len;
    unsigned char val[]; /* puts: sealed value (header + bytes) */
} mm_cache_op;

#define MM_CACHE_PEND_BUCKETS 1024
/* Freed puts of block size kept for the next ones (cache_writer.c): a fresh 1 MiB allocation is new
 * pages that fault in as the engine writes the block, which on the machines we measure cost as much as
 * computing it. MM_CACHE_SPARES of them stay around (about that many MiB). */
#define MM_CACHE_SPARES 16
#define MM_CACHE_SPARE_MIN (64u * 1024u)

#define MM_CACHE_RTXN_POOL 64

struct mm_cache {
    mm_cache_env env;
    uint64_t size_limit;
    uint64_t txn_cap; /* bytes of queued ops per write transaction (soft: at least one op) */

    _Atomic uint64_t evictions, puts_stored, puts_dropped, corrupt, resets, file_reads;
    _Atomic uint64_t verified[MM_CACHE_VERIFIED_SLOTS];
    _Atomic uint64_t swept_bytes; /* hit bytes since the map was last dropped from the process */
    _Atomic uintptr_t touched_lo, touched_hi; /* the span of the map hits have read */
    /* Hits read with pread (cache_read.c): data.mdb's descriptor, LMDB's page size, and where the map
     * starts (learnt from a value's page header; trusted once a value read at the offset it gave passed
     * its checksum). LMDB maps the file once: we never change the map size after opening. */
    int fd;
    size_t psize;
    _Atomic uintptr_t map_base;
    atomic_bool map_base_ok;

    /* Reset read transactions kept for renewal: they keep their reader slot. */
    pthread_mutex_t pool_lock;
    MDB_txn *pool[MM_CACHE_RTXN_POOL];
    size_t pool_n;

    /* The writer's queue. q_bytes is reserved before an op is built and released after it is
     * committed or dropped, so the bound covers what the writer holds too. */
    _Atomic uint64_t q_bytes;
    pthread_mutex_t q_lock;
    pthread_cond_t q_work, q_done, q_room;
    mm_cache_op *q_head, *q_tail;
    uint64_t q_list_bytes;  /* sizes of the ops in the list (not yet taken by the writer) */
    uint64_t q_enq_seq, q_done_seq;
    uint64_t q_flush_seq;   /* a flush waits for this op: commit without gathering more */
    bool q_stop;
    pthread_t writer;
    /* The writer's own (no lock): bytes committed since data.mdb's written pages were last dropped from
     * the page cache, and the end of the file then (see MM_CACHE_DROP_STEP). */
    uint64_t drop_since, drop_mark;

    pthread_mutex_t spare_lock;
    mm_cache_op *spare[MM_CACHE_SPARES];
    size_t spare_n;

    /* Queued puts by key, so that a get sees a value from the moment its put returns. */
    pthread_mutex_t pend_lock;
    atomic_uint_fast64_t pend_n;
    mm_cache_op *pend[MM_CACHE_PEND_BUCKETS];
};

/* Bound on queued memory (see MM_CACHE_ROOM_WAIT_NS for what a put does when it is reached). Several
 * write transactions' worth (txn_cap is at most 8 MiB): one being committed while the next fills. It
 * is most of the daemon's memory during a first read, so it is kept small. */
#define MM_CACHE_QUEUE_MAX (64ull * MM_MIB)
/* Every this many committed bytes the writer drops data.mdb's pages written before the previous drop
 * from the page cache, once they are on disk. A block is stored because a reader asked for it, so its
 * bytes are also in the page cache of the file that was read (or of the built file): keeping data.mdb's
 * copy doubled a first read's page cache, pushed out the sources, and on virtual machines whose freed
 * memory goes back to the host (free page reporting), each fresh page cost several times what a reused
 * one does (a first read after the page cache was emptied: 3.9-4.5 s -> 2.65 s). Later reads served
 * from the cache read data.mdb from the disk or from whatever the page cache kept. */
#define MM_CACHE_DROP_STEP (64ull * MM_MIB)
/* How long the writer gathers puts before committing a transaction smaller than txn_cap. Commits do not
 * sync (MDB_NOSYNC, cache_boot.h), but each still rewrites the tables' upper pages and the meta page:
 * gathering keeps that per transaction, not per block. Gathered values are served from the pending
 * index meanwhile, so readers never wait for a commit. */
#define MM_CACHE_GATHER_NS (50ull * 1000 * 1000)
/* How long a put waits for room in a full queue before it is dropped. Dropping at once let readers run
 * ahead of the writer only to lose half the blocks of a first read (and compute again the blocks two
 * requests share); a short wait holds readers to the speed of the cache's disk, while a stalled disk
 * still costs a reader at most this per block. */
#define MM_CACHE_ROOM_WAIT_NS (100ull * 1000 * 1000)

/* The pending index (cache_pending.c). Entries are added before the put is queued and removed only
 * after the writer committed or dropped it: a get that finds no pending entry and then reads LMDB can
 * therefore not miss a value whose put returned before the get began. */
void mm_cache_pending_init(mm_cache *c);
void mm_cache_pending_destroy(mm_cache *c);
void mm_cache_pending_add(mm_cache *c, mm_cache_op *op);
/* A pending put of the key with a reference taken, or NULL. */
mm_cache_op *mm_cache_pending_find(mm_cache *c, mm_cache_table t, const void *key);
/* Removes the puts of a processed list from the index. */
void mm_cache_pending_remove(mm_cache *c, mm_cache_op *list);
/* Drops a reference; the last one frees the op (or keeps its memory as a spare). */
void mm_cache_op_unref(mm_cache_op *op);
/* The spares (cache_writer.c): init before the writer starts, destroy after it stopped. */
void mm_cache_spares_init(mm_cache *c);
void mm_cache_spares_destroy(mm_cache *c);
void mm_cache_op_free(mm_cache_op *op);

/* Asks the kernel to read the stored value at data (len bytes) from data.mdb (cache_read.c): 0, or -1
 * when its place in the file is not known yet (the caller advises the map instead). */
int mm_cache_prefetch_offset(mm_cache *c, const void *data, size_t len);

/* Read transactions from the pool (cache.c): 0 or an LMDB code; released ones are reset and kept. */
int mm_cache_rtxn_acquire(mm_cache *c, MDB_txn **out);
void mm_cache_rtxn_release(mm_cache *c, MDB_txn *txn);
/* Accounts a hit of hit_len bytes whose value is at data in the map; every MM_CACHE_SWEEP bytes of hits,
 * drops the span of the map that hits touched from the process (cache.c). */
void mm_cache_sweep_map(mm_cache *c, const void *data, size_t hit_len);
/* Looks k up in a pooled read transaction: 1 with *txn held (release it with mm_cache_rtxn_release) and
 * v pointing into the map; 0 on a miss or a read problem (logged once; nothing held). */
int mm_cache_lookup(mm_cache *c, mm_cache_table table, MDB_val *k, MDB_txn **txn, MDB_val *v);
/* The end of a lookup that found k's value: when it did not verify, releases txn, counts and logs the
 * corruption, queues the entry's drop and returns 0; else queues a touch if due and returns 1 (txn still
 * held). */
int mm_cache_hit_checked(mm_cache *c, mm_cache_table table, MDB_txn *txn, MDB_val *k, bool verified);
/* Whether a hit on key k (read in txn) should queue a touch (mm_cache_touch_due). */
bool mm_cache_touch_wanted(mm_cache *c, MDB_txn *txn, MDB_val *k);

int mm_cache_writer_start(mm_cache *c, mm_err *err);
/* Commits everything queued, then joins the writer. */
void mm_cache_writer_stop(mm_cache *c);
void mm_cache_writer_flush(mm_cache *c);
/* A put in two steps, so the caller can write the value in place: mm_cache_put_new reserves queue room
 * (waiting as MM_CACHE_ROOM_WAIT_NS says) and returns an op whose value bytes start at
 * op->val + MM_CACHE_HDR_LEN, or NULL (counted as dropped, logged once); mm_cache_put_push seals and
 * queues it (visible to gets from then on); mm_cache_put_cancel gives back an op never pushed. */
mm_cache_op *mm_cache_put_new(mm_cache *c, mm_cache_table t, const void *key, size_t len);
void mm_cache_put_push(mm_cache *c, mm_cache_op *op);
void mm_cache_put_cancel(mm_cache *c, mm_cache_op *op);
void mm_cache_enqueue_touch(mm_cache *c, mm_cache_table t, const void *key);
void mm_cache_enqueue_drop(mm_cache *c, mm_cache_table t, const void *key);

#endif
