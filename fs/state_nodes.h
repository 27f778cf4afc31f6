/* The inode table of a mount's writable subtree (fs/state.h): one node per backing file or directory
 * the kernel knows, found by the kernel's node id or by the backing object's identity, and freed when
 * the kernel forgets its last lookup.
 *
 * A node holds an O_PATH descriptor of its backing object, and every operation reaches the object
 * through it (an *at() call relative to it, or a reopen of /proc/self/fd/N), never through a path: a
 * rename above it cannot redirect it, and no name is ever resolved outside the backing directory.
 *
 * Node ids are handed out in increasing order from the first one given and never reused, so the kernel
 * never sees one id stand for two objects (the generation number can stay 0). Two names of one object
 * (hard links) share its node, as the kernel expects.
 *
 * Thread-safety: every function may run on any thread; the table has one lock. A node returned by
 * mm_snodes_get or mm_snodes_find stays valid until the forget that takes its count to zero, which the
 * kernel sends only when no request on that inode is in flight. */
#ifndef MM_FS_STATE_NODES_H
#define MM_FS_STATE_NODES_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

typedef struct mm_snode {
    uint64_t ino;     /* the kernel's node id */
    int fd;           /* O_PATH | O_NOFOLLOW of the backing object */
    mode_t type;      /* S_IFMT bits: an inode's type never changes */
    dev_t dev;        /* identity of the backing object */
    ino_t bino;
    uint64_t nlookup; /* lookups the kernel holds; under the table lock */
    struct mm_snode *next_ino, *next_id;
} mm_snode;

typedef struct mm_snodes {
    pthread_mutex_t lock;
    mm_snode **by_ino, **by_id; /* chained hash tables over the same nodes */
    size_t nbuckets, count;
    uint64_t next_ino;
} mm_snodes;

/* An empty table whose first node id will be first_ino. */
void mm_snodes_init(mm_snodes *t, uint64_t first_ino);
/* Closes every node's descriptor and frees the table (at unmount: the kernel has no inodes left). */
void mm_snodes_destroy(mm_snodes *t);

/* The node of the object behind `fd` (an O_PATH descriptor, taken over: kept by a new node, closed when
 * the object has one already), whose fstat is *st, with one more lookup counted. */
mm_snode *mm_snodes_get(mm_snodes *t, int fd, const struct stat *st);
/* The node with id ino, or NULL. */
mm_snode *mm_snodes_find(mm_snodes *t, uint64_t ino);
/* The kernel forgets n lookups of ino; the node is freed (its descriptor closed) at zero. */
void mm_snodes_forget(mm_snodes *t, uint64_t ino, uint64_t n);

#endif
