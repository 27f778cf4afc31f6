/* The one writable place of a mount: `.cache/` at its root, where clients keep their own state beside
 * the files they read (huggingface_hub's upload-large-folder keeps its resume records in
 * .cache/huggingface/). It passes through to a real directory: the mount's `.cache` is <dir>/.cache,
 * where <dir> is <state-dir>/<id of the vfs> (mm_vfs_id), so a remount of the same recipe finds the
 * state again, and another recipe starts from nothing. Nothing is made on disk until a client makes
 * `.cache` (mkdir): a mount that is only read leaves no trace.
 *
 * Inside, every file operation is forwarded to the backing object and behaves as it does there: lookup,
 * create, open (O_TRUNC, O_APPEND, ...), read, write, truncate, fallocate, fsync, stat, chmod, chown,
 * utimens, mkdir, readdir, rename, hard links, unlink, rmdir, statfs, extended attributes. Only regular
 * files and directories are made: symlink and mknod answer EPERM, and an object of another type found
 * in the backing directory is listed but never opened or acted on through a link. flock and fcntl
 * locks are not implemented here on purpose: the kernel then keeps them itself, with the exact
 * semantics of a local filesystem (owners, blocking waits, interruption, release on close) and no
 * daemon thread held by a waiting lock; the cost is that they are not seen by another mount of the same
 * recipe or by processes using the backing directory directly.
 *
 * Confinement: names are single components (the kernel resolves "." and ".." itself; they are refused
 * here too), every call is relative to the parent's descriptor with O_NOFOLLOW/AT_SYMLINK_NOFOLLOW, and
 * renames and links must stay inside: nothing done through the mount reaches outside <dir>/.cache.
 *
 * Everything else of the mount is read-only, and the write-side handlers here are where that is said:
 * for the root and the model files they answer EROFS (rename or link across the border too), and in the
 * root only `.cache` itself may be made (mkdir) or removed (rmdir, when empty).
 *
 * Handlers have the meaning, arguments and valid replies of the fuse_lowlevel_ops member of the same
 * name, and reply exactly once. The state may be NULL (a mount without one: every write answers EROFS).
 * Attributes of backing objects are theirs (owner, mode, times, inode number), with the kernel told to
 * ask again after a second: the backing directory may change beside the mount.
 *
 * Thread-safety: handlers run on any libfuse worker at once; see fs/state_nodes.h. */
#ifndef MM_FS_STATE_H
#define MM_FS_STATE_H

#include "base/util.h"
#include "fs/lowlevel.h"

typedef struct mm_state mm_state;

/* The name of the subtree in the mount root. */
#define MM_STATE_NAME ".cache"

/* The state of a mount whose state directory is `dir` (absolute; made, mkdir -p with mode 0700, only
 * when a client first makes `.cache`); the mount's root inode is root_ino, and inodes of the subtree are
 * numbered from first_ino up (above every other inode of the mount). Call before any thread starts (it
 * raises the process's descriptor limit). */
mm_state *mm_state_new(const char *dir, fuse_ino_t root_ino, fuse_ino_t first_ino);
/* Closes everything (after the session ended). NULL is ignored. */
void mm_state_close(mm_state *s);

/* Whether ino is an inode of the subtree (0 for a NULL state). Cheap: no lock. */
int mm_state_owns(const mm_state *s, fuse_ino_t ino);
/* For the root's attributes and listing: 0 when `.cache` exists (a directory), with its entry in *e;
 * count != 0 makes it a lookup the kernel will forget (readdirplus), which mm_state_forget undoes when
 * the entry does not fit. -ENOENT when it does not exist. */
int mm_state_root_entry(mm_state *s, int count, struct fuse_entry_param *e);
void mm_state_forget(mm_state *s, fuse_ino_t ino, uint64_t nlookup);

/* Requests that both the model files and the subtree have, which fs.c passes here for inodes of the
 * subtree (mm_state_owns), and lookup also for MM_STATE_NAME in the root. readdir is both readdir and
 * readdirplus (plus != 0). */
void mm_state_lookup(mm_state *s, fuse_req_t req, fuse_ino_t parent, const char *name);
void mm_state_getattr(mm_state *s, fuse_req_t req, fuse_ino_t ino);
void mm_state_open_file(mm_state *s, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mm_state_read(mm_state *s, fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi);
void mm_state_opendir(mm_state *s, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mm_state_readdir(mm_state *s, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      struct fuse_file_info *fi, int plus);
void mm_state_statfs(mm_state *s, fuse_req_t req, fuse_ino_t ino);
void mm_state_getxattr(mm_state *s, fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void mm_state_listxattr(mm_state *s, fuse_req_t req, fuse_ino_t ino, size_t size);

/* Sets every other handler of ops: those that write (setattr, mknod, mkdir, unlink, rmdir, symlink,
 * rename, link, create, write, fallocate, setxattr, removexattr), which answer EROFS outside the
 * subtree, and those that only the subtree needs (forget, readlink, flush, release, fsync, releasedir,
 * fsyncdir), which answer 0 for the model files and the root (an ENOSYS would turn fsync off for the
 * whole mount). They find the state of the request's mount with mm_fs_state. */
void mm_state_add_ops(struct fuse_lowlevel_ops *ops);

/* The state of the mount a request is for (NULL if none). Provided by the adapter, fs.c. */
mm_state *mm_fs_state(fuse_req_t req);

#endif
