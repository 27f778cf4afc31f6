/* Offline management (`mergemount cache ...`). Each call opens the environment on its own, with the map
 * size recorded in the file, so it can run while mounts in other processes use the same directory. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cache_internal.h"

static uint64_t limit_of(const mm_cache_options *opt)
{
    return opt && opt->size_limit ? opt->size_limit : MM_CACHE_DEFAULT_SIZE;
}

/* Opens an existing environment; a directory without one is reported as absent (*present = false)
 * rather than created: looking at the cache should not make one. An unreadable or possibly torn one is
 * replaced only when may_reset (clear, whose result is an empty cache either way). Like a mount, the
 * command records itself while it has the environment open (mm_cache_env_open), since it commits too. */
static int admin_open(const mm_cache_options *opt, bool may_reset, mm_cache_env *e, bool *present, mm_err *err)
{
    memset(e, 0, sizeof *e);
    char *dir = mm_cache_default_dir(opt ? opt->dir : NULL);
    char *data = mm_path_join(dir, "data.mdb");
    struct stat st;
    int serr = stat(data, &st) == 0 ? 0 : errno;
    free(data);
    *present = serr == 0;
    if (serr == ENOENT || serr == ENOTDIR) {
        e->dir = dir;
        return 0;
    }
    if (serr) {
        int code = mm_err_set(err, -serr, "cannot read the cache at %s: %s", dir, strerror(serr));
        free(dir);
        return code;
    }
    bool reset;
    return mm_cache_env_open(e, dir, MM_CACHE_MIN_MAP, may_reset, &reset, err);
}

int mm_cache_info_get(const mm_cache_options *opt, mm_cache_info *out, mm_err *err)
{
    memset(out, 0, sizeof *out);
    mm_cache_env e;
    bool present;
    int rc = admin_open(opt, false, &e, &present, err);
    if (rc)
        return rc;
    out->dir = mm_xstrdup(e.dir);
    out->size_limit = limit_of(opt);
    if (present) {
        MDB_txn *txn;
        MDB_stat sb, ss;
        mm_cache_state state;
        rc = mdb_txn_begin(e.env, NULL, MDB_RDONLY, &txn);
        if (!rc) {
            if ((rc = mdb_stat(txn, e.blocks, &sb)) == 0 && (rc = mdb_stat(txn, e.stats, &ss)) == 0 &&
                (rc = mm_cache_state_read(&e, txn, &state)) == 0) {
                out->blocks = sb.ms_entries;
                out->stats_entries = ss.ms_entries;
                out->stored_bytes = state.stored;
            }
            mdb_txn_abort(txn);
        }
        char *data = mm_path_join(e.dir, "data.mdb");
        struct stat st;
        if (stat(data, &st) == 0)
            out->file_bytes = (uint64_t)st.st_size;
        free(data);
    }
    if (rc) {
        int code = rc > 0 ? -rc : -EIO;
        mm_err_set(err, code, "cannot read the cache at %s: %s", e.dir, mm_cache_strerror(rc));
        mm_cache_env_close(&e);
        mm_cache_info_free(out);
        return code;
    }
    mm_cache_env_close(&e);
    return 0;
}

void mm_cache_info_free(mm_cache_info *i)
{
    if (!i)
        return;
    free(i->dir);
    memset(i, 0, sizeof *i);
}

typedef int (*admin_op)(mm_cache_wtxn *w, uint64_t limit, uint64_t *removed);

static int op_clear(mm_cache_wtxn *w, uint64_t limit, uint64_t *removed)
{
    (void)limit;
    return mm_cache_store_clear(w, removed);
}

static int op_prune(mm_cache_wtxn *w, uint64_t limit, uint64_t *removed)
{
    return mm_cache_store_evict(w, limit, removed);
}

static int admin_write(const mm_cache_options *opt, admin_op op, bool may_reset, const char *what, uint64_t *removed,
                       mm_err *err)
{
    uint64_t n = 0;
    if (removed)
        *removed = 0;
    mm_cache_env e;
    bool present;
    int rc = admin_open(opt, may_reset, &e, &present, err);
    if (rc)
        return rc;
    if (present) {
        mm_cache_wtxn w;
        rc = mm_cache_wtxn_begin(&e, &w);
        if (!rc) {
            rc = op(&w, limit_of(opt), &n);
            if (rc)
                mm_cache_wtxn_abort(&w);
            else
                rc = mm_cache_wtxn_commit(&w);
        }
    }
    if (rc) {
        int code = rc > 0 ? -rc : -EIO;
        mm_err_set(err, code, "cannot %s the cache at %s: %s", what, e.dir, mm_cache_strerror(rc));
        mm_cache_env_close(&e);
        return code;
    }
    if (removed)
        *removed = n;
    mm_cache_env_close(&e);
    return 0;
}

int mm_cache_clear(const mm_cache_options *opt, uint64_t *removed, mm_err *err)
{
    return admin_write(opt, op_clear, true, "clear", removed, err);
}

int mm_cache_prune(const mm_cache_options *opt, uint64_t *removed, mm_err *err)
{
    return admin_write(opt, op_prune, false, "prune", removed, err);
}
