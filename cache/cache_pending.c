/* Puts waiting for the writer, indexed by key: between a put and its commit (a group commit plus an
 * fsync) the value is served from the queue, so nobody computes a block again just because its put
 * is still on the way to disk. */
#include <stdlib.h>
#include <string.h>

#include "cache_internal.h"

static size_t bucket(mm_cache_table t, const unsigned char *key)
{
    /* Keys start with a recipe hash (uniform bytes); blocks of one tensor differ in the index. */
    uint64_t a, b = 0;
    memcpy(&a, key, sizeof a);
    if (t == MM_CACHE_BLOCKS)
        memcpy(&b, key + MM_CACHE_RECIPE_LEN, sizeof b);
    uint64_t h = (a ^ (b * 0x9e3779b97f4a7c15ull) ^ (uint64_t)t) * 0xbf58476d1ce4e5b9ull;
    return (size_t)(h >> 40) % MM_CACHE_PEND_BUCKETS;
}

void mm_cache_pending_init(mm_cache *c)
{
    pthread_mutex_init(&c->pend_lock, NULL);
    atomic_init(&c->pend_n, 0);
    memset(c->pend, 0, sizeof c->pend);
}

void mm_cache_pending_destroy(mm_cache *c)
{
    pthread_mutex_destroy(&c->pend_lock);
}

void mm_cache_pending_add(mm_cache *c, mm_cache_op *op)
{
    size_t i = bucket(op->table, op->key);
    pthread_mutex_lock(&c->pend_lock);
    op->pnext = c->pend[i];
    c->pend[i] = op;
    atomic_fetch_add(&c->pend_n, 1);
    pthread_mutex_unlock(&c->pend_lock);
}

mm_cache_op *mm_cache_pending_find(mm_cache *c, mm_cache_table t, const void *key)
{
    /* The common case of a warm cache: nothing queued, no lock. */
    if (atomic_load(&c->pend_n) == 0)
        return NULL;
    size_t klen = mm_cache_key_len(t);
    pthread_mutex_lock(&c->pend_lock);
    mm_cache_op *op = c->pend[bucket(t, key)];
    while (op && !(op->table == t && memcmp(op->key, key, klen) == 0))
        op = op->pnext;
    if (op)
        atomic_fetch_add(&op->refs, 1);
    pthread_mutex_unlock(&c->pend_lock);
    return op;
}

void mm_cache_pending_remove(mm_cache *c, mm_cache_op *list)
{
    pthread_mutex_lock(&c->pend_lock);
    for (mm_cache_op *op = list; op; op = op->next) {
        if (op->kind != MM_CACHE_OP_PUT)
            continue;
        for (mm_cache_op **pp = &c->pend[bucket(op->table, op->key)]; *pp; pp = &(*pp)->pnext)
            if (*pp == op) {
                *pp = op->pnext;
                atomic_fetch_sub(&c->pend_n, 1);
                break;
            }
    }
    pthread_mutex_unlock(&c->pend_lock);
}

void mm_cache_op_unref(mm_cache_op *op)
{
    if (atomic_fetch_sub(&op->refs, 1) == 1)
        mm_cache_op_free(op);
}
