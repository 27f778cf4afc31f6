/* Shared by the files of the writable subtree (fs/state.h): the state, and the helpers that find a
 * request's node and make entries. */
#ifndef MM_FS_STATE_INTERNAL_H
#define MM_FS_STATE_INTERNAL_H

#include <stdatomic.h>

#include "fs/state.h"
#include "fs/state_nodes.h"

struct mm_state {
    char *dir;                /* the state directory: the mount root's side, holding `.cache` */
    fuse_ino_t root_ino;      /* the mount root */
    fuse_ino_t first_ino;     /* inodes of the subtree are numbered from here */
    int chown_new;            /* the daemon runs as root: what a caller makes becomes the caller's */
    atomic_int warned;        /* the state directory could not be made, and the log said so */
    mm_snodes nodes;
};

/* How long the kernel may keep names and attributes of the subtree: the backing directory can change
 * beside the mount (another mount of the same recipe shares it), so not a day as for the model files. */
#define MM_STATE_TIMEOUT 1.0

/* The node of an inode of the subtree, or NULL (not ours, or already forgotten). */
mm_snode *mm_state_node(mm_state *s, fuse_ino_t ino);
/* "/proc/self/fd/N" of fd in buf: reopening it reaches the very object fd refers to (no path walk). */
const char *mm_state_proc_path(char buf[32], int fd);
/* The entry of `name` in the directory dfd (the subtree's parent `parent`), counted as a lookup. 0 or
 * -errno. */
int mm_state_lookup_at(mm_state *s, int dfd, fuse_ino_t parent, const char *name, struct fuse_entry_param *e);

/* Handlers of open files and directories (state_files.c) that mm_state_add_ops installs. */
void mm_state_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                       struct fuse_file_info *fi);
void mm_state_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, struct fuse_file_info *fi);
void mm_state_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mm_state_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mm_state_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void mm_state_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mm_state_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);

#endif
