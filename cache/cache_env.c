/* Opening the LMDB environment: flags, map size, tables, the format record, the record of unsynced
 * commits (cache_boot.h), and starting over when what is on disk cannot be read or may be torn. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache_boot.h"
#include "cache_internal.h"

/* NOTLS: read transactions are pooled and renewed on any thread. NOSYNC: a commit does not wait for
 * the disk (an fdatasync per group commit held a first read to the disk's flush rate); the record of
 * unsynced commits (cache_boot.h) makes that safe, and without it (no boot id to record: no /proc) the
 * environment falls back to SYNCED_FLAGS, where NOMETASYNC lets an OS crash undo the last commit but never
 * tear the tree. No WRITEMAP: a full disk must surface as ENOSPC from a commit, not as SIGBUS inside the
 * daemon. Kernel readahead stays on (no MDB_NORDAHEAD): blocks are read whole and mostly in the order
 * they were written, so reading around a fault pays off (measured: a cold full read from the cache took
 * ~35% longer with NORDAHEAD, even with MADV_WILLNEED). */
#define NOSYNC_FLAGS (MDB_NOTLS | MDB_NOSYNC)
#define SYNCED_FLAGS (MDB_NOTLS | MDB_NOMETASYNC)
/* Reader slots are per read transaction (pooled per process), shared by all processes on the directory. */
#define MAX_READERS 512
#define MAX_DBS 8
/* Keeps a huge limit from asking for more address space than x86-64 user space has. */
#define MAX_MAP (1ull << 46)

static const MDB_val state_key = {5, (void *)"state"};

uint64_t mm_cache_map_size(uint64_t size_limit)
{
    uint64_t m = size_limit > MAX_MAP ? MAX_MAP : size_limit + size_limit / 2;
    if (m > MAX_MAP)
        m = MAX_MAP;
    if (m < MM_CACHE_MIN_MAP)
        m = MM_CACHE_MIN_MAP;
    return (m + MM_MIB - 1) / MM_MIB * MM_MIB;
}

MDB_dbi mm_cache_table_dbi(const mm_cache_env *e, mm_cache_table t)
{
    return t == MM_CACHE_STATS ? e->stats : e->blocks;
}

int mm_cache_state_read(const mm_cache_env *e, MDB_txn *txn, mm_cache_state *st)
{
    MDB_val k = state_key, v;
    memset(st, 0, sizeof *st);
    int rc = mdb_get(txn, e->meta, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    uint32_t magic, format;
    if (v.mv_size != MM_CACHE_META_LEN)
        return MM_CACHE_BADFORMAT;
    const unsigned char *p = v.mv_data;
    memcpy(&magic, p, 4);
    memcpy(&format, p + 4, 4);
    if (magic != MM_CACHE_META_MAGIC || format != MM_CACHE_FORMAT)
        return MM_CACHE_BADFORMAT;
    memcpy(&st->stored, p + 8, 8);
    memcpy(&st->tick, p + 16, 8);
    return 0;
}

int mm_cache_state_write(const mm_cache_env *e, MDB_txn *txn, const mm_cache_state *st)
{
    unsigned char rec[MM_CACHE_META_LEN];
    uint32_t magic = MM_CACHE_META_MAGIC, format = MM_CACHE_FORMAT;
    memcpy(rec, &magic, 4);
    memcpy(rec + 4, &format, 4);
    memcpy(rec + 8, &st->stored, 8);
    memcpy(rec + 16, &st->tick, 8);
    MDB_val k = state_key, v = {sizeof rec, rec};
    return mdb_put(txn, e->meta, &k, &v, 0);
}

int mm_cache_entries(const mm_cache_env *e, MDB_txn *txn, uint64_t *n)
{
    MDB_stat a, b;
    int rc = mdb_stat(txn, e->blocks, &a);
    if (!rc)
        rc = mdb_stat(txn, e->stats, &b);
    *n = rc ? 0 : (uint64_t)a.ms_entries + b.ms_entries;
    return rc;
}

/* Our result for "a record of another boot": the system stopped while the environment had unsynced
 * commits, so it may be torn. Outside LMDB's and errno's ranges, next to MM_CACHE_BADFORMAT. */
#define TORN (-30501)

/* What a wipe-and-restart can cure; anything else (EACCES, ENOSPC, ...) would fail again. */
static bool unusable(int rc)
{
    return rc == TORN || rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_VERSION_MISMATCH ||
           rc == MDB_PANIC || rc == MDB_PAGE_NOTFOUND || rc == MDB_INCOMPATIBLE || rc == MDB_BAD_DBI ||
           rc == MM_CACHE_BADFORMAT;
}

static int setup_tables(mm_cache_env *e)
{
    struct {
        const char *name;
        MDB_dbi *dbi;
    } t[] = {{"blocks", &e->blocks}, {"stats", &e->stats}, {"atime", &e->atime}, {"lru", &e->lru}, {"meta", &e->meta}};
    MDB_txn *txn;
    int rc = mdb_txn_begin(e->env, NULL, 0, &txn);
    if (rc)
        return rc;
    for (size_t i = 0; i < MM_COUNT(t) && !rc; i++)
        rc = mdb_dbi_open(txn, t[i].name, MDB_CREATE, t[i].dbi);
    MDB_val k = state_key, v;
    if (!rc)
        rc = mdb_get(txn, e->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        /* A new environment; tables with entries but no state record are someone else's. */
        uint64_t n;
        rc = mm_cache_entries(e, txn, &n);
        if (!rc && n)
            rc = MM_CACHE_BADFORMAT;
        if (!rc)
            rc = mm_cache_state_write(e, txn, &(mm_cache_state){0, 0});
    } else if (!rc) {
        mm_cache_state st;
        rc = mm_cache_state_read(e, txn, &st);
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

/* Walks to both ends of every table: a torn tree shows up here (as MDB_CORRUPTED or
 * MDB_PAGE_NOTFOUND) instead of on the read path of the mount. */
static int sanity_read(mm_cache_env *e)
{
    MDB_dbi all[] = {e->blocks, e->stats, e->atime, e->lru, e->meta};
    MDB_txn *txn;
    int rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return rc;
    for (size_t i = 0; i < MM_COUNT(all) && !rc; i++) {
        MDB_cursor *cur;
        rc = mdb_cursor_open(txn, all[i], &cur);
        if (rc)
            break;
        MDB_val k, v;
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        if (!rc)
            rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        if (!rc && all[i] == e->lru && k.mv_size != MM_CACHE_TICK_LEN + MM_CACHE_KEY_LEN &&
            k.mv_size != MM_CACHE_TICK_LEN + MM_CACHE_RECIPE_LEN)
            rc = MM_CACHE_BADFORMAT;
        if (rc == MDB_NOTFOUND)
            rc = 0;
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    return rc;
}

static int try_open(mm_cache_env *e, uint64_t map_min)
{
    int rc = mdb_env_create(&e->env);
    if (rc) {
        e->env = NULL;
        return rc;
    }
    if ((rc = mdb_env_set_maxreaders(e->env, MAX_READERS)) == 0 && (rc = mdb_env_set_maxdbs(e->env, MAX_DBS)) == 0 &&
        (rc = mdb_env_open(e->env, e->dir, e->marker ? NOSYNC_FLAGS : SYNCED_FLAGS, 0644)) == 0) {
        /* Slots of processes that died holding a read transaction would pin pages forever. */
        int dead = 0;
        (void)mdb_reader_check(e->env, &dead);
        /* The map size was left unset so LMDB adopted the one recorded in the file (what other
         * processes use); grow it to ours if ours is larger, never shrink it under them. */
        MDB_envinfo info;
        rc = mdb_env_info(e->env, &info);
        if (!rc && info.me_mapsize < map_min)
            rc = mdb_env_set_mapsize(e->env, (size_t)map_min);
        if (!rc)
            rc = setup_tables(e);
        if (!rc)
            rc = sanity_read(e);
    }
    if (rc) {
        mdb_env_close(e->env);
        e->env = NULL;
    }
    return rc;
}

static int wipe(const char *dir)
{
    const char *names[] = {"data.mdb", "lock.mdb"};
    for (size_t i = 0; i < 2; i++) {
        char *p = mm_path_join(dir, names[i]);
        int rc = unlink(p) == 0 || errno == ENOENT ? 0 : errno;
        free(p);
        if (rc)
            return rc;
    }
    return 0;
}

/* "is unreadable (why)" or "cannot be trusted (why)", for the messages about an unusable environment. */
static const char *describe(int rc, char *buf, size_t size)
{
    if (rc == TORN)
        snprintf(buf, size, "cannot be trusted (it had unsynced commits when the system stopped)");
    else
        snprintf(buf, size, "is unreadable (%s)", mm_cache_strerror(rc));
    return buf;
}

/* The error for a failed open; our record goes too (after a sync: setup_tables may have committed). */
static int open_failed(mm_cache_env *e, int rc, bool may_reset, long live_pid, mm_err *err)
{
    char what[256];
    int code;
    if (unusable(rc) && live_pid)
        code = mm_err_set(err, -EBUSY,
                          "the cache at %s %s, but process %ld still has it open; nothing was changed (the "
                          "next mount after it ends starts a new one)",
                          e->dir, describe(rc, what, sizeof what), live_pid);
    else if (unusable(rc) && !may_reset)
        code = mm_err_set(err, -EIO,
                          "the cache at %s %s; nothing was changed (mergemount cache clear --cache-dir %s "
                          "starts a new one, and so does the next mount)",
                          e->dir, describe(rc, what, sizeof what), e->dir);
    else
        code = mm_err_set(err, rc > 0 ? -rc : -EIO, "cannot open the cache at %s: %s", e->dir,
                          mm_cache_strerror(rc));
    if (e->marker && mm_cache_data_sync(e->dir) == 0)
        mm_cache_marker_remove(e->dir, e->marker);
    free(e->marker);
    free(e->dir);
    memset(e, 0, sizeof *e);
    return code;
}

/* Opens under the open lock (held by the caller): judges the records of others, makes ours, opens, and
 * wipes an unusable environment when allowed. */
static int open_locked(mm_cache_env *e, uint64_t map_min, bool may_reset, bool *reset, long *live_pid)
{
    char boot[MM_CACHE_BOOT_ID_MAX];
    /* Without a boot id (no /proc) a record could not tell a crashed process from a stopped system: no
     * record, no judging of others' (they cannot be told apart either), commits sync as before. */
    bool recorded = mm_cache_boot_id(boot);
    mm_cache_markers m = {0};
    if (recorded)
        mm_cache_markers_scan(e->dir, boot, &m);
    *live_pid = m.live_pid;
    int rc = m.torn ? TORN : 0;
    if (recorded && (!rc || may_reset))
        e->marker = mm_cache_marker_create(e->dir, boot);
    if (!rc)
        rc = try_open(e, map_min);
    if (rc && unusable(rc) && may_reset && !m.live_pid) {
        char what[256];
        mm_log_warn("cache at %s %s; starting a new one", e->dir, describe(rc, what, sizeof what));
        rc = wipe(e->dir);
        if (!rc) {
            *reset = true;
            rc = try_open(e, map_min);
        }
        if (!rc && m.torn)
            mm_cache_markers_drop_other_boots(e->dir, boot);
    }
    return rc;
}

int mm_cache_env_open(mm_cache_env *e, char *dir, uint64_t map_min, bool may_reset, bool *reset, mm_err *err)
{
    memset(e, 0, sizeof *e);
    e->dir = dir;
    *reset = false;
    long live_pid = 0;
    /* A directory where open.lock cannot be made is one where LMDB could not make lock.mdb either
     * (read-only, not ours); opening without the lock could let two processes wipe at once. */
    int lock = mm_cache_boot_lock(dir);
    int rc = lock < 0 ? -lock : open_locked(e, map_min, may_reset, reset, &live_pid);
    mm_cache_boot_unlock(lock);
    return rc ? open_failed(e, rc, may_reset, live_pid, err) : 0;
}

void mm_cache_env_close(mm_cache_env *e)
{
    if (e->env) {
        /* Commits were not synced (NOSYNC), or the last meta page was not (NOMETASYNC). Only once all of
         * it is on disk may the record of unsynced commits go; if the sync fails it stays, and a later
         * boot starts anew rather than trust the file. */
        int rc = mdb_env_sync(e->env, 1);
        mdb_env_close(e->env);
        if (e->marker && rc == 0)
            mm_cache_marker_remove(e->dir, e->marker);
    }
    free(e->marker);
    free(e->dir);
    memset(e, 0, sizeof *e);
}
