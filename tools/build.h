/* `mergemount build`: writes every file of a vfs to a folder through mm_vfs_read, the same read path as
 * the mount, so a built folder and a mounted one are byte-identical.
 *
 * The output appears all at once or not at all: files are written into OUTDIR.tmp-XXXXXX next to OUTDIR
 * (same filesystem) and the finished folder is renamed into place. On an error or SIGINT/SIGTERM the
 * temporary folder is removed and OUTDIR is left as it was. */
#ifndef MM_BUILD_H
#define MM_BUILD_H

#include "base/util.h"
#include "merge/engine/vfs.h"

typedef struct mm_build_options {
    const char *outdir;
    int force;    /* replace the contents of an existing non-empty OUTDIR */
    int threads;  /* 0 = number of online CPUs */
    int progress; /* -1 auto: only when stderr is a terminal, 0 off, 1 on */
} mm_build_options;

/* Builds the folder. Returns 0, or -errno with a message naming the path and the fix:
 *   -ENOTEMPTY  OUTDIR exists, is not empty, and force is off
 *   -ENOTDIR    OUTDIR exists and is not a directory
 *   -EINTR      interrupted by SIGINT/SIGTERM (the partial output is removed)
 *   other       creating, reading or writing failed
 * With force, OUTDIR may hold only regular files, symlinks (removed, never followed) and directories on
 * the same filesystem; anything else (a device, a socket, a mount point) is refused before any work.
 *
 * Runs worker threads that call mm_vfs_read concurrently (the vfs allows it), and while running it
 * handles SIGINT and SIGTERM itself (a second signal gets the default action); previous handlers are
 * restored before returning. Not reentrant: one build per process at a time. */
int mm_build_run(mm_vfs *vfs, const mm_build_options *o, mm_err *err);

#endif
