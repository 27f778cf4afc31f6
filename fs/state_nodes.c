#include "state_nodes.h"

#include <stdlib.h>
#include <unistd.h>

#include "base/util.h"

enum { k_first_buckets = 64 };

static size_t ino_bucket(const mm_snodes *t, uint64_t ino)
{
    return (size_t)(ino % t->nbuckets); /* ids are consecutive: already spread */
}

static size_t id_bucket(const mm_snodes *t, dev_t dev, ino_t bino)
{
    uint64_t h = ((uint64_t)dev * 0x9e3779b97f4a7c15ull) ^ (uint64_t)bino;
    h ^= h >> 29;
    return (size_t)(h % t->nbuckets);
}

static void link_node(mm_snodes *t, mm_snode *n)
{
    size_t a = ino_bucket(t, n->ino), b = id_bucket(t, n->dev, n->bino);
    n->next_ino = t->by_ino[a];
    t->by_ino[a] = n;
    n->next_id = t->by_id[b];
    t->by_id[b] = n;
}

static void alloc_buckets(mm_snodes *t, size_t n)
{
    t->nbuckets = n;
    t->by_ino = mm_xcalloc(n, sizeof *t->by_ino);
    t->by_id = mm_xcalloc(n, sizeof *t->by_id);
}

/* Doubles the buckets once there are more nodes than buckets, so chains stay short. */
static void grow(mm_snodes *t)
{
    mm_snode **old = t->by_ino;
    size_t oldn = t->nbuckets;
    free(t->by_id);
    alloc_buckets(t, oldn * 2);
    for (size_t i = 0; i < oldn; i++)
        for (mm_snode *n = old[i], *next; n; n = next) {
            next = n->next_ino;
            link_node(t, n);
        }
    free(old);
}

void mm_snodes_init(mm_snodes *t, uint64_t first_ino)
{
    pthread_mutex_init(&t->lock, NULL);
    alloc_buckets(t, k_first_buckets);
    t->count = 0;
    t->next_ino = first_ino;
}

void mm_snodes_destroy(mm_snodes *t)
{
    for (size_t i = 0; i < t->nbuckets; i++)
        for (mm_snode *n = t->by_ino[i], *next; n; n = next) {
            next = n->next_ino;
            close(n->fd);
            free(n);
        }
    free(t->by_ino);
    free(t->by_id);
    pthread_mutex_destroy(&t->lock);
}

mm_snode *mm_snodes_get(mm_snodes *t, int fd, const struct stat *st)
{
    pthread_mutex_lock(&t->lock);
    mm_snode *n = t->by_id[id_bucket(t, st->st_dev, st->st_ino)];
    while (n && !(n->dev == st->st_dev && n->bino == st->st_ino))
        n = n->next_id;
    if (n) {
        close(fd);
    } else {
        n = mm_xcalloc(1, sizeof *n);
        n->ino = t->next_ino++;
        n->fd = fd;
        n->type = st->st_mode & S_IFMT;
        n->dev = st->st_dev;
        n->bino = st->st_ino;
        if (++t->count > t->nbuckets)
            grow(t);
        link_node(t, n);
    }
    n->nlookup++;
    pthread_mutex_unlock(&t->lock);
    return n;
}

static mm_snode *find_locked(mm_snodes *t, uint64_t ino)
{
    mm_snode *n = t->by_ino[ino_bucket(t, ino)];
    while (n && n->ino != ino)
        n = n->next_ino;
    return n;
}

mm_snode *mm_snodes_find(mm_snodes *t, uint64_t ino)
{
    pthread_mutex_lock(&t->lock);
    mm_snode *n = find_locked(t, ino);
    pthread_mutex_unlock(&t->lock);
    return n;
}

static void unlink_from(mm_snode **head, mm_snode *n, int by_ino)
{
    for (mm_snode **p = head; *p; p = by_ino ? &(*p)->next_ino : &(*p)->next_id)
        if (*p == n) {
            *p = by_ino ? n->next_ino : n->next_id;
            return;
        }
}

void mm_snodes_forget(mm_snodes *t, uint64_t ino, uint64_t n)
{
    pthread_mutex_lock(&t->lock);
    mm_snode *node = find_locked(t, ino);
    if (!node || node->nlookup > n) {
        if (node)
            node->nlookup -= n;
        pthread_mutex_unlock(&t->lock);
        return;
    }
    unlink_from(&t->by_ino[ino_bucket(t, ino)], node, 1);
    unlink_from(&t->by_id[id_bucket(t, node->dev, node->bino)], node, 0);
    t->count--;
    pthread_mutex_unlock(&t->lock);
    close(node->fd);
    free(node);
}
