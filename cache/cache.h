/* The persistent block cache (docs/design.md "The block cache").
 *
 * An LMDB environment in a directory (default $XDG_CACHE_HOME/mergemount, else ~/.cache/mergemount)
 * holding finished blocks of output tensors, keyed by a 40-byte key: the 32-byte recipe hash of the
 * tensor followed by the block index (u64 big-endian). A value is a small header (magic, length,
 * checksum of the bytes) followed by the bytes. Per-tensor statistics of methods with a pre-pass live in
 * their own table under the 32-byte recipe hash (same get/put interface, `table` MM_CACHE_STATS).
 *
 * Rules it keeps:
 * - Never writes on the caller's thread: mm_cache_put copies the bytes into a queue that one writer
 *   thread commits in groups (group commit). When the queue is over its memory bound, puts are dropped.
 * - Hits are read from the mapped value inside a read transaction; the caller copies them out and
 *   releases (never holds a read transaction while computing). A value whose put is still queued is
 *   served from the queue, so it is visible to every thread from the moment mm_cache_put returns.
 * - Size bound: approximate LRU. Access times are updated lazily (a hit whose recorded access is old is
 *   queued as a "touch" for the writer). When the stored bytes pass the limit, the writer evicts the
 *   least recently used blocks down to a low watermark (90% of the limit). MDB_MAP_FULL or ENOSPC on
 *   commit: evict a batch and retry once, else drop the batch. LMDB's MVCC keeps a value a reader is
 *   copying valid until it releases, so eviction never pulls data from under a reader.
 * - Crash safety: LMDB commits are atomic, and they are not synced to disk (MDB_NOSYNC: a commit does not
 *   wait for the disk); a process syncs the environment when it closes it. A process that dies loses only
 *   what was still queued: the kernel holds its commits, and the next open syncs them. A system that
 *   stops (OS crash, power loss) can leave a torn file, so each process records itself with the boot's id
 *   in the directory (unsynced.<pid>) before its first commit and removes that record after the sync at
 *   close; an open that finds a record of another boot drops the whole environment, as it does one that
 *   cannot be opened or read (corrupt file, version mismatch). A checksum mismatch on a hit drops the
 *   entry. Either is logged once and the caller recomputes. Without a boot id (no /proc) commits sync.
 *   A cache problem never becomes an error for the caller: get answers "miss" and put silently drops.
 * - Several processes of one pid namespace (the records are judged by pid) may share one directory
 *   (LMDB's lock file); a block put by two of them is stored once (MDB_NOOVERWRITE).
 * - Open it after fork() (after fuse_daemonize): LMDB handles must not cross fork.
 *
 * Thread-safety: every function may be called from any thread at once, except mm_cache_close. */
#ifndef MM_CACHE_H
#define MM_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

#define MM_CACHE_KEY_LEN 40
#define MM_CACHE_RECIPE_LEN 32
/* Default size limit (documented in the README): 20 GB. */
#define MM_CACHE_DEFAULT_SIZE 20000000000ull

typedef struct mm_cache mm_cache;

typedef enum { MM_CACHE_BLOCKS = 0, MM_CACHE_STATS = 1 } mm_cache_table;

typedef struct mm_cache_options {
    const char *dir;      /* NULL: the default location */
    uint64_t size_limit;  /* bytes of stored values; 0: MM_CACHE_DEFAULT_SIZE */
} mm_cache_options;

/* Counters of the cache itself (the block layer above counts hits/misses/computations). */
typedef struct mm_cache_counters {
    uint64_t evictions;     /* blocks evicted (statistics entries share the LRU but are not counted) */
    uint64_t puts_stored;   /* values committed */
    uint64_t puts_dropped;  /* values not stored (queue full, map full, disk full, already present) */
    uint64_t corrupt;       /* checksum mismatches and unreadable entries dropped */
    uint64_t resets;        /* environments wiped because they could not be opened or read, or may be torn */
    uint64_t file_reads;    /* hits copied with pread from data.mdb (mm_cache_read), not through the map */
} mm_cache_counters;

/* What the environment holds (for `mergemount cache stats`). */
typedef struct mm_cache_info {
    char *dir;              /* heap; the resolved directory */
    uint64_t blocks;        /* entries in the blocks table */
    uint64_t stats_entries; /* entries in the statistics table */
    uint64_t stored_bytes;  /* bytes of values (headers included) */
    uint64_t size_limit;
    uint64_t file_bytes;    /* size of data.mdb on disk */
} mm_cache_info;

/* The directory the cache uses (heap string): `dir` made absolute when given (non-NULL, non-empty), else
 * $XDG_CACHE_HOME/mergemount, else $HOME/.cache/mergemount. Always absolute. */
char *mm_cache_default_dir(const char *dir);

/* Opens (creating the directory if needed) and starts the writer thread. On an environment that cannot
 * be opened because it is corrupt or of another LMDB version, or that may be torn (the record of another
 * boot, see "Crash safety"), logs once, removes data.mdb/lock.mdb and creates a new one (counted in
 * resets), unless a live process of this boot has it open. Returns 0, or -errno with a message when no
 * cache can be had at all (e.g. the directory cannot be created; -EBUSY for that live process); callers
 * then run without a cache. */
int mm_cache_open(const mm_cache_options *opt, mm_cache **out, mm_err *err);

/* Flushes the queue (commits what is pending), stops the writer thread and closes the environment. */
void mm_cache_close(mm_cache *c);

/* A hit: data/len point into the map (or the queue), valid until mm_cache_release; data is not
 * necessarily aligned. */
typedef struct mm_cache_hit {
    const void *data;
    size_t len;
    void *txn; /* private */
} mm_cache_hit;

/* Looks a key up (key_len = MM_CACHE_KEY_LEN for blocks, MM_CACHE_RECIPE_LEN for stats). Returns 1 and
 * fills *hit on a hit whose checksum verifies (the caller must mm_cache_release it), 0 on a miss (also
 * for any cache problem, which is logged once and counted). */
int mm_cache_get(mm_cache *c, mm_cache_table table, const void *key, size_t key_len, mm_cache_hit *hit);
void mm_cache_release(mm_cache *c, mm_cache_hit *hit);

/* mm_cache_get limited to values still in the writer's queue (in memory: a hit costs no I/O). */
int mm_cache_get_queued(mm_cache *c, mm_cache_table table, const void *key, size_t key_len, mm_cache_hit *hit);
/* Whether key has a value, queued or stored, without reading or verifying it (1 or 0). */
int mm_cache_has(mm_cache *c, mm_cache_table table, const void *key, size_t key_len);

/* A hit copied into dst: bytes [from, from + n) of the value of key, if it is stored (or queued) with
 * exactly want_len bytes and verifies. Stored blocks are read with pread from the environment's file,
 * not through the map (faulting a block's pages into the process one by one costs more than the copy,
 * and they would count in its resident size). Returns 1 on a hit, 0 as mm_cache_get does (miss, other
 * length, any cache problem). */
int mm_cache_read(mm_cache *c, mm_cache_table table, const void *key, size_t key_len, size_t want_len, uint64_t from,
                  void *dst, size_t n);

/* Asks the kernel to start reading the value of `key` from disk, if stored (sequential readers call it
 * for the block after the one they read). Cheap on a miss; never blocks on I/O. */
void mm_cache_prefetch(mm_cache *c, mm_cache_table table, const void *key, size_t key_len);

/* Queues a value for storing (copies data). Never blocks on I/O. A value larger than the size limit is
 * dropped (counted). */
void mm_cache_put(mm_cache *c, mm_cache_table table, const void *key, size_t key_len, const void *data, size_t len);

/* A put written in place, for values computed straight into the queue (no copy): mm_cache_reserve
 * returns 1 with r->data pointing at r->len = len writable bytes (not necessarily aligned), or 0 when the
 * value will not be stored (no cache, larger than the size limit, already queued, queue full after the
 * wait mm_cache_put also does, out of memory; counted as dropped like a put). The caller fills the bytes
 * and ends the reservation with mm_cache_publish (queued as a put: gets see it from then on; when hit is
 * non-NULL it also receives a hit on the value, to release with mm_cache_release) or mm_cache_abandon
 * (nothing stored). */
typedef struct mm_cache_reservation {
    void *data;
    size_t len;
    void *op; /* private */
} mm_cache_reservation;
int mm_cache_reserve(mm_cache *c, mm_cache_table table, const void *key, size_t key_len, size_t len,
                     mm_cache_reservation *r);
void mm_cache_publish(mm_cache *c, mm_cache_reservation *r, mm_cache_hit *hit);
void mm_cache_abandon(mm_cache *c, mm_cache_reservation *r);

/* Waits until everything queued so far is committed (tests and `build` use it before exiting). */
void mm_cache_flush(mm_cache *c);

void mm_cache_counters_get(mm_cache *c, mm_cache_counters *out);

/* Offline management (`mergemount cache ...`), safe while mounts in other processes use the same
 * directory (not while this process has it open: LMDB's file locks are per process). A directory without
 * a cache is reported as empty and is not created. An unreadable or possibly torn cache is an error for
 * info_get and prune (they leave data.mdb as it is: the directory may not even be ours) and is started
 * anew by clear. */
int mm_cache_info_get(const mm_cache_options *opt, mm_cache_info *out, mm_err *err);
void mm_cache_info_free(mm_cache_info *i);
/* Removes every entry; *removed gets the number of blocks removed. */
int mm_cache_clear(const mm_cache_options *opt, uint64_t *removed, mm_err *err);
/* Evicts least recently used entries until the stored bytes are within opt->size_limit (0: the
 * default); *removed gets the number of blocks evicted. */
int mm_cache_prune(const mm_cache_options *opt, uint64_t *removed, mm_err *err);

/* A 64-bit checksum of bytes (fast, word-wise; for detecting corruption, not adversaries). */
uint64_t mm_checksum64(const void *data, size_t len);
/* The same checksum of the bytes of pieces[0..n) one after the other, as if they were one buffer. */
struct iovec;
uint64_t mm_checksum64_pieces(const struct iovec *pieces, size_t n);

#endif
