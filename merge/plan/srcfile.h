/* A source file a mount reads — a shard of a source model, or a donor file served as it is — and the
 * answer to "is it still the file that was opened?".
 *
 * Why: a mount serves the merge of its sources as they were when it was mounted; the recipe hash, and
 * so every block cache key, is made of their identity at that moment. A source that is afterwards
 * truncated, rewritten in place, replaced (a rename over its name) or deleted must not feed reads any
 * more: reads that need it fail with EIO, one log line names it, and nothing computed from other
 * content is served, stored in the block cache or kept in memory. Once a file is seen changed this is
 * final until the config is mounted again, even if its old content comes back: the identity can never
 * match again (ctime only moves forward), and "the mount-time bytes or EIO" is a rule readers can use.
 *
 * Identity: device, inode, size, mtime and ctime (ns). The kernel updates mtime and ctime before it
 * changes the data of a write or truncate (file_modified() precedes the copy), so when fstat of the
 * descriptor still shows the opening identity after a read, nothing had been written to the file
 * before or during that read. Limit: on a filesystem with coarse timestamps that does not refine them
 * after a stat (multigrain timestamps, Linux >= 6.13 on ext4, xfs, btrfs, tmpfs), a rewrite of equal
 * size within the same clock tick as the file's previous change leaves no trace; so does a writer
 * that keeps the file mapped writable from before the mount.
 *
 * Two checks, by cost:
 * - mm_srcfile_verify, after every read of the descriptor that produced served bytes: one fstat (no
 *   path walk). It is what makes "never bytes of other content" hold without any time window.
 * - mm_srcfile_check, before serving anything derived from the file, cache hits included: stats the
 *   path (a replaced or deleted file keeps its old inode readable through our descriptor, so only the
 *   path shows it) at most once per MM_SRCFILE_RECHECK_MS per file; in between it costs two atomic
 *   loads and a coarse clock read. A change is therefore reported within that interval to readers that
 *   only hit the cache or read a replaced/deleted file; until then they get the mount-time bytes, which
 *   is what the mount promised — never bytes of the new content.
 * A failed or short read re-checks at once (mm_srcfile_failed), so a truncation is reported by the
 * first read that meets it.
 *
 * Thread-safety: after mm_srcfile_open every function may run on any number of threads at once,
 * except mm_srcfile_close. */
#ifndef MM_SRCFILE_H
#define MM_SRCFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

/* How stale the path check of a file may be when a read is served (see above). */
#define MM_SRCFILE_RECHECK_MS 100

typedef struct mm_file_id {
    uint64_t dev, ino, size;
    int64_t mtime_ns, ctime_ns;
} mm_file_id;

typedef struct mm_srcfile mm_srcfile;

/* Opens `path` (a regular file) read-only and records its identity. 0 or -errno with a message naming
 * the path. */
int mm_srcfile_open(const char *path, mm_srcfile **out, mm_err *err);
void mm_srcfile_close(mm_srcfile *f);

/* The path as opened, the descriptor to pread from, and the identity at opening; valid until close. */
const char *mm_srcfile_path(const mm_srcfile *f);
int mm_srcfile_fd(const mm_srcfile *f);
const mm_file_id *mm_srcfile_id(const mm_srcfile *f);

/* 0 if the file may still feed reads, -EIO if it was seen changed (logged once per file). Stats the
 * path when the last look is older than MM_SRCFILE_RECHECK_MS. */
int mm_srcfile_check(mm_srcfile *f);
/* After reading: 0 if the descriptor's file is unchanged since opening (fstat), else -EIO (logged once)
 * and the bytes just read must be thrown away. */
int mm_srcfile_verify(mm_srcfile *f);
/* Whether the file (behind the descriptor and at the path) is still the one opened; no side effects.
 * For the opener, to check that what it read at opening came from that file. */
bool mm_srcfile_unchanged(const mm_srcfile *f);
/* A read of f failed with `rc` (a negative errno; -EIO for a short read): looks at the file at once,
 * logs once per file either how it changed or the read error, and returns -EIO. A read error of an
 * unchanged file is not final: later reads try again. */
int mm_srcfile_failed(mm_srcfile *f, int rc);
/* The whole range [off, off + len) into buf, checked before and verified after: 0 or -EIO. For files
 * served as they are; the engine reads in many small pieces and verifies once per block instead. */
int mm_srcfile_pread(mm_srcfile *f, void *buf, size_t len, uint64_t off);

/* mm_srcfile_check and mm_srcfile_verify over every source file an output tensor reads. */
struct mm_out_tensor;
int mm_srcfile_check_tensor(const struct mm_out_tensor *t);
int mm_srcfile_verify_tensor(const struct mm_out_tensor *t);

#endif
