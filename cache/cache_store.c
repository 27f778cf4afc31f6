/* The table operations of a write transaction. Each keeps the value tables, atime, lru and the stored
 * byte count consistent, which is what lets every process trust the shared state record. */
#include <string.h>

#include "cache_internal.h"

#define LRU_KEY_MAX (MM_CACHE_TICK_LEN + MM_CACHE_KEY_LEN)

static size_t lru_key(unsigned char *out, uint64_t tick, const void *key, size_t klen)
{
    /* Big-endian so that LMDB's memcmp order is tick order. */
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(tick >> (56 - 8 * i));
    memcpy(out + MM_CACHE_TICK_LEN, key, klen);
    return MM_CACHE_TICK_LEN + klen;
}

static int del_ok(int rc)
{
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int mm_cache_wtxn_begin(mm_cache_env *e, mm_cache_wtxn *w)
{
    memset(w, 0, sizeof *w);
    w->e = e;
    int rc = mdb_txn_begin(e->env, NULL, 0, &w->txn);
    if (rc) {
        w->txn = NULL;
        return rc;
    }
    rc = mm_cache_state_read(e, w->txn, &w->st);
    if (!rc)
        rc = mm_cache_entries(e, w->txn, &w->entries);
    if (rc)
        mm_cache_wtxn_abort(w);
    return rc;
}

int mm_cache_wtxn_commit(mm_cache_wtxn *w)
{
    int rc = mm_cache_state_write(w->e, w->txn, &w->st);
    if (rc) {
        mm_cache_wtxn_abort(w);
        return rc;
    }
    rc = mdb_txn_commit(w->txn);
    w->txn = NULL;
    return rc;
}

void mm_cache_wtxn_abort(mm_cache_wtxn *w)
{
    if (w->txn)
        mdb_txn_abort(w->txn);
    w->txn = NULL;
}

/* Gives the key the next tick (its atime row is overwritten; the caller removed any old lru row). */
static int stamp(mm_cache_wtxn *w, const void *key, size_t klen)
{
    uint64_t t = ++w->st.tick;
    MDB_val k = {klen, (void *)key}, v = {sizeof t, &t};
    int rc = mdb_put(w->txn, w->e->atime, &k, &v, 0);
    if (rc)
        return rc;
    unsigned char lk[LRU_KEY_MAX];
    MDB_val l = {lru_key(lk, t, key, klen), lk}, empty = {0, lk};
    return mdb_put(w->txn, w->e->lru, &l, &empty, 0);
}

/* Removes the key's atime and lru rows. */
static int unstamp(mm_cache_wtxn *w, const void *key, size_t klen)
{
    MDB_val k = {klen, (void *)key}, v;
    int rc = mdb_get(w->txn, w->e->atime, &k, &v);
    if (rc)
        return del_ok(rc);
    if (v.mv_size == sizeof(uint64_t)) {
        uint64_t t;
        memcpy(&t, v.mv_data, sizeof t); /* copy before any write moves the page */
        unsigned char lk[LRU_KEY_MAX];
        MDB_val l = {lru_key(lk, t, key, klen), lk};
        rc = del_ok(mdb_del(w->txn, w->e->lru, &l, NULL));
        if (rc)
            return rc;
    }
    return del_ok(mdb_del(w->txn, w->e->atime, &k, NULL));
}

int mm_cache_store_put(mm_cache_wtxn *w, mm_cache_table t, const void *key, const void *val, size_t val_len)
{
    size_t klen = mm_cache_key_len(t);
    MDB_val k = {klen, (void *)key}, v = {val_len, (void *)val};
    int rc = mdb_put(w->txn, mm_cache_table_dbi(w->e, t), &k, &v, MDB_NOOVERWRITE);
    if (rc)
        return rc;
    w->st.stored += val_len;
    w->entries++;
    return stamp(w, key, klen);
}

int mm_cache_store_touch(mm_cache_wtxn *w, mm_cache_table t, const void *key)
{
    size_t klen = mm_cache_key_len(t);
    MDB_val k = {klen, (void *)key}, v;
    int rc = mdb_get(w->txn, w->e->atime, &k, &v);
    if (rc)
        return del_ok(rc); /* evicted since the hit: nothing to touch */
    uint64_t then = 0;
    if (v.mv_size == sizeof then)
        memcpy(&then, v.mv_data, sizeof then);
    /* Several readers may have queued the same touch; only the first moves the key. */
    if (!mm_cache_touch_due(w->st.tick, then, w->entries))
        return 0;
    rc = unstamp(w, key, klen);
    return rc ? rc : stamp(w, key, klen);
}

static int remove_entry(mm_cache_wtxn *w, mm_cache_table t, const void *key, size_t val_len)
{
    size_t klen = mm_cache_key_len(t);
    MDB_val k = {klen, (void *)key};
    int rc = del_ok(mdb_del(w->txn, mm_cache_table_dbi(w->e, t), &k, NULL));
    if (rc)
        return rc;
    w->st.stored -= val_len < w->st.stored ? val_len : w->st.stored;
    if (w->entries)
        w->entries--;
    return unstamp(w, key, klen);
}

int mm_cache_store_drop_corrupt(mm_cache_wtxn *w, mm_cache_table t, const void *key)
{
    MDB_val k = {mm_cache_key_len(t), (void *)key}, v;
    int rc = mdb_get(w->txn, mm_cache_table_dbi(w->e, t), &k, &v);
    if (rc)
        return del_ok(rc);
    /* Re-verified here: another reader's drop or another process may have replaced it already. */
    const void *d;
    size_t l;
    if (mm_cache_value_open(v.mv_data, v.mv_size, &d, &l))
        return 0;
    return remove_entry(w, t, key, v.mv_size);
}

/* Values without an lru row cannot be ranked; since every put writes both in one transaction they can
 * only come from a damaged file. Dropping them keeps the limit enforceable. */
static int drop_unranked(mm_cache_wtxn *w, uint64_t *evicted)
{
    MDB_stat s;
    int rc = mdb_stat(w->txn, w->e->blocks, &s);
    if (!rc) {
        *evicted += s.ms_entries;
        rc = mdb_drop(w->txn, w->e->blocks, 0);
    }
    if (!rc)
        rc = mdb_drop(w->txn, w->e->stats, 0);
    if (!rc)
        rc = mdb_drop(w->txn, w->e->atime, 0);
    w->st.stored = 0;
    w->entries = 0;
    return rc;
}

int mm_cache_store_evict(mm_cache_wtxn *w, uint64_t target, uint64_t *evicted)
{
    MDB_cursor *cur = NULL;
    int rc = mdb_cursor_open(w->txn, w->e->lru, &cur);
    while (!rc && w->st.stored > target) {
        MDB_val k, v;
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        if (rc == MDB_NOTFOUND) {
            rc = drop_unranked(w, evicted);
            break;
        }
        if (rc)
            break;
        size_t klen = k.mv_size > MM_CACHE_TICK_LEN ? k.mv_size - MM_CACHE_TICK_LEN : 0;
        unsigned char key[MM_CACHE_KEY_LEN];
        bool valid = klen == MM_CACHE_KEY_LEN || klen == MM_CACHE_RECIPE_LEN;
        if (valid)
            memcpy(key, (const unsigned char *)k.mv_data + MM_CACHE_TICK_LEN, klen);
        rc = mdb_cursor_del(cur, 0);
        if (rc || !valid)
            continue;
        mm_cache_table t = klen == MM_CACHE_KEY_LEN ? MM_CACHE_BLOCKS : MM_CACHE_STATS;
        MDB_val kk = {klen, key}, vv;
        rc = del_ok(mdb_del(w->txn, w->e->atime, &kk, NULL));
        if (!rc)
            rc = mdb_get(w->txn, mm_cache_table_dbi(w->e, t), &kk, &vv);
        if (rc) {
            rc = del_ok(rc);
            continue;
        }
        size_t size = vv.mv_size;
        rc = mdb_del(w->txn, mm_cache_table_dbi(w->e, t), &kk, NULL);
        if (rc)
            break;
        w->st.stored -= size < w->st.stored ? size : w->st.stored;
        if (w->entries)
            w->entries--;
        *evicted += t == MM_CACHE_BLOCKS;
    }
    if (cur)
        mdb_cursor_close(cur);
    return rc;
}

int mm_cache_store_clear(mm_cache_wtxn *w, uint64_t *blocks)
{
    MDB_stat s;
    int rc = mdb_stat(w->txn, w->e->blocks, &s);
    *blocks = rc ? 0 : s.ms_entries;
    MDB_dbi all[] = {w->e->blocks, w->e->stats, w->e->atime, w->e->lru};
    for (size_t i = 0; i < MM_COUNT(all) && !rc; i++)
        rc = mdb_drop(w->txn, all[i], 0);
    w->st.stored = 0;
    w->entries = 0;
    return rc;
}
