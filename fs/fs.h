/* The FUSE adapter: serves an mm_vfs as a flat directory with the libfuse low-level API. No merge logic
 * here: every request on a model file becomes an mm_vfs call.
 *
 * The files are read-only (0444; any write, truncate, chmod, rename or unlink of them, or a new name in
 * the root, answers EROFS, or EACCES from the kernel where the modes already forbid it), with sizes and
 * an mtime fixed by the vfs, so they look the same at every mount of the same recipe. The one writable
 * place is `.cache/` in the root, kept in a state directory (fs/state.h), absent from the listing until
 * something makes it (mkdir). */
#ifndef MM_FS_H
#define MM_FS_H

#include "base/util.h"
#include "merge/engine/vfs.h"

typedef struct mm_fs_options {
    const char *mountpoint;
    int foreground;          /* -f: stay in the foreground (SIGINT/SIGTERM unmount cleanly) */
    const char *fuse_opts;   /* comma-separated -o options passed to libfuse (may be NULL) */
    int debug;               /* -d: libfuse debug output, implies foreground */
    const char *fsname;      /* shown in /proc/mounts (e.g. the config path) */
    unsigned readahead_kb;   /* when root: the mount's readahead in KiB (0: kernel default) */
    /* Absolute directory where mounts keep their state: `.cache/` of this mount is
     * <state_dir>/<mm_vfs_id>/.cache. NULL: no `.cache/` (the root is read-only too). */
    const char *state_dir;
    /* Called once in the process that serves requests, after daemonising and before the first request
     * (LMDB environments must be opened here, not before fork). May be NULL. Non-zero aborts the mount. */
    int (*after_daemonize)(void *arg);
    void *arg;
} mm_fs_options;

/* Checks a mountpoint before anything else is done: it must exist, be a directory and not be a mount
 * point already. Returns 0 or -errno with a message naming the path and the fix. */
int mm_fs_check_mountpoint(const char *path, mm_err *err);

/* Mounts and serves until unmounted (fusermount3 -u) or, in the foreground, SIGINT/SIGTERM.
 * Returns 0 after a clean unmount, or -errno with a message (mount failure). In the background the
 * parent returns only after the mount is up (fuse_daemonize semantics), so `mergemount mount` exits
 * 0 with the folder ready. */
int mm_fs_run(mm_vfs *vfs, const mm_fs_options *opt, mm_err *err);

#endif
