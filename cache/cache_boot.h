/* Private to cache/: the record of processes whose commits are not synced yet (cache_boot.c).
 *
 * Commits do not sync (MDB_NOSYNC). A process that crashes loses nothing: its writes are in the kernel's
 * page cache. A system that stops (OS crash, power loss) can leave data.mdb with a meta page that points
 * at pages which never reached the disk, and since values are content-addressed such a torn tree could
 * even pair a key with another block's (valid-checksum) value: that environment must never be served.
 * So every process that opens the environment first leaves a durable marker DIR/unsynced.<pid> holding
 * the boot id, and removes it only after syncing data.mdb at a clean close. At the next open, under the
 * directory's open lock:
 *   marker of another boot              the system stopped while it had unsynced commits: the
 *                                       environment may be torn and is started anew
 *   marker of this boot, process gone   it crashed, the kernel still holds its writes: sync data.mdb,
 *                                       remove the marker
 *   marker of this boot, process alive  it is using the environment: left alone
 * Markers are judged by pid, so processes sharing a directory must share a pid namespace. */
#ifndef MM_CACHE_BOOT_H
#define MM_CACHE_BOOT_H

#include <stdbool.h>
#include <stddef.h>

/* Room for the text of /proc/sys/kernel/random/boot_id (36 characters). */
#define MM_CACHE_BOOT_ID_MAX 64

/* This boot's id, trimmed, into buf. False when it cannot be read (no /proc). */
bool mm_cache_boot_id(char buf[MM_CACHE_BOOT_ID_MAX]);

/* Takes the directory's open lock (an flock on DIR/open.lock, waiting for it), which serialises the
 * judging of markers, the creation of one's own and any wipe among the processes opening the directory.
 * Returns the descriptor to pass to mm_cache_boot_unlock, or -errno (e.g. a read-only directory). */
int mm_cache_boot_lock(const char *dir);
void mm_cache_boot_unlock(int fd);

typedef struct mm_cache_markers {
    bool torn;     /* a marker of another boot: the environment may be torn */
    long live_pid; /* a running process of this boot that has the environment open (0: none seen) */
} mm_cache_markers;

/* Judges the markers in dir (under the open lock). Those of this boot whose process is gone are dealt
 * with at once: data.mdb is synced, then they are removed (kept if the sync fails). Temporary files of
 * processes that died while creating their marker are removed. */
void mm_cache_markers_scan(const char *dir, const char *boot, mm_cache_markers *m);
/* Removes the markers of other boots: only once the environment they condemned has been wiped and a
 * new one exists, so that a stop in between wipes again rather than serving the old file. */
void mm_cache_markers_drop_other_boots(const char *dir, const char *boot);

/* Creates this process's marker durably (temporary name, fsync, rename, fsync of the directory) before
 * its first unsynced commit. Returns its path (heap), or NULL when it cannot be made (the caller then
 * commits with sync). */
char *mm_cache_marker_create(const char *dir, const char *boot);
/* Removes the marker at path, durably, so that a clean close followed by a power loss does not make the
 * next boot wipe a cache that was synced. Call only after data.mdb was synced. */
void mm_cache_marker_remove(const char *dir, const char *path);

/* fdatasync of DIR/data.mdb: for a file without WRITEMAP this is what mdb_env_sync(env, 1) does, and it
 * flushes the pages every process wrote through the shared page cache. 0 (also when there is no
 * data.mdb) or an errno value. */
int mm_cache_data_sync(const char *dir);

#endif
