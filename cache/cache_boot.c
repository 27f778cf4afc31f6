/* The record of processes with unsynced commits: boot id, the open lock, markers (cache_boot.h). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "base/util.h"
#include "cache_boot.h"

#define MARKER_PREFIX "unsynced."
#define TMP_SUFFIX ".tmp"
#define LOCK_NAME "open.lock"
#define BOOT_ID_PATH "/proc/sys/kernel/random/boot_id"

/* Reads a small text file at dirfd/name (dirfd AT_FDCWD: a path) into buf, without trailing white
 * space. 0 or -errno. */
static int read_text(int dirfd, const char *name, char buf[MM_CACHE_BOOT_ID_MAX])
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, MM_CACHE_BOOT_ID_MAX - 1);
    int rc = n < 0 ? -errno : 0;
    close(fd);
    if (rc)
        return rc;
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        n--;
    buf[n] = '\0';
    return 0;
}

bool mm_cache_boot_id(char buf[MM_CACHE_BOOT_ID_MAX])
{
    return read_text(AT_FDCWD, BOOT_ID_PATH, buf) == 0 && buf[0] != '\0';
}

int mm_cache_boot_lock(const char *dir)
{
    char *p = mm_path_join(dir, LOCK_NAME);
    int fd = open(p, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    int rc = fd < 0 ? -errno : 0;
    free(p);
    while (!rc && flock(fd, LOCK_EX) != 0)
        rc = errno == EINTR ? 0 : -errno;
    if (rc && fd >= 0)
        close(fd);
    return rc ? rc : fd;
}

void mm_cache_boot_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* releases the flock */
}

/* The pid in a marker's name "unsynced.<pid>", or in a temporary "unsynced.<pid>.tmp" (*tmp set); 0
 * for any other name (data.mdb, the state/ folder, ...), which the scan leaves alone. */
static long marker_pid(const char *name, bool *tmp)
{
    const size_t plen = sizeof MARKER_PREFIX - 1;
    if (strncmp(name, MARKER_PREFIX, plen) != 0 || !isdigit((unsigned char)name[plen]))
        return 0;
    char *end;
    errno = 0;
    long pid = strtol(name + plen, &end, 10);
    if (errno || pid <= 0 || pid > INT_MAX) /* kill(0 or -1, ...) would mean a group */
        return 0;
    *tmp = strcmp(end, TMP_SUFFIX) == 0;
    return *tmp || *end == '\0' ? pid : 0;
}

/* EPERM: it exists, it is just someone else's. Only ESRCH says it is gone. */
static bool alive(long pid)
{
    return kill((pid_t)pid, 0) == 0 || errno != ESRCH;
}

/* A marker of this boot? A marker that cannot be read cannot vouch for its boot: it counts as
 * another's (a needless wipe is cheap, a served torn tree is not). *gone: it vanished meanwhile. */
static bool same_boot(int dirfd, const char *name, const char *boot, bool *gone)
{
    char text[MM_CACHE_BOOT_ID_MAX];
    int rc = read_text(dirfd, name, text);
    *gone = rc == -ENOENT;
    return rc == 0 && strcmp(text, boot) == 0;
}

typedef struct scan {
    const char *dir, *boot;
    mm_cache_markers *m;
    int synced; /* -1: data.mdb not synced yet, else the result of the sync */
} scan;

typedef void (*marker_fn)(scan *s, int dirfd, const char *name, long pid, bool tmp);

static void judge(scan *s, int dirfd, const char *name, long pid, bool tmp)
{
    bool gone;
    if (tmp) {
        /* No commit follows a marker that was never renamed into place. */
        if (pid == getpid() || !alive(pid))
            (void)unlinkat(dirfd, name, 0);
        return;
    }
    if (!same_boot(dirfd, name, s->boot, &gone)) {
        s->m->torn |= !gone;
        return;
    }
    /* Our own pid: an earlier process of this boot that had it (we have not made ours yet). */
    if (pid != getpid() && alive(pid)) {
        s->m->live_pid = pid;
        return;
    }
    /* Known to be gone, so its last write is in the page cache by now: sync, then forget it. */
    if (s->synced < 0)
        s->synced = mm_cache_data_sync(s->dir);
    if (s->synced == 0)
        (void)unlinkat(dirfd, name, 0);
}

static void drop_other_boot(scan *s, int dirfd, const char *name, long pid, bool tmp)
{
    (void)pid;
    bool gone;
    if (!tmp && !same_boot(dirfd, name, s->boot, &gone) && !gone)
        (void)unlinkat(dirfd, name, 0);
}

static void walk(scan *s, marker_fn fn)
{
    DIR *d = opendir(s->dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        bool tmp = false;
        long pid = marker_pid(de->d_name, &tmp);
        if (pid)
            fn(s, dirfd(d), de->d_name, pid, tmp);
    }
    closedir(d);
}

void mm_cache_markers_scan(const char *dir, const char *boot, mm_cache_markers *m)
{
    memset(m, 0, sizeof *m);
    scan s = {dir, boot, m, -1};
    walk(&s, judge);
}

void mm_cache_markers_drop_other_boots(const char *dir, const char *boot)
{
    scan s = {dir, boot, NULL, -1};
    walk(&s, drop_other_boot);
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int rc = fsync(fd) == 0 ? 0 : errno;
    close(fd);
    return rc;
}

/* Writes boot + newline into a new file at path and syncs it. 0 or an errno value. */
static int write_synced(const char *path, const char *boot)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno;
    char line[MM_CACHE_BOOT_ID_MAX + 1];
    int n = snprintf(line, sizeof line, "%s\n", boot);
    ssize_t w = write(fd, line, (size_t)n);
    int rc = w == n ? 0 : w < 0 ? errno : EIO; /* short: only a full disk does that to 37 bytes */
    if (!rc && fsync(fd) != 0)
        rc = errno;
    if (close(fd) != 0 && !rc)
        rc = errno;
    return rc;
}

char *mm_cache_marker_create(const char *dir, const char *boot)
{
    char *name = mm_xasprintf(MARKER_PREFIX "%ld", (long)getpid());
    char *path = mm_path_join(dir, name);
    char *tmp = mm_xasprintf("%s" TMP_SUFFIX, path);
    free(name);
    /* Readers see either no marker or a whole one: an empty or partial file would read as another boot. */
    int rc = write_synced(tmp, boot);
    if (!rc && rename(tmp, path) != 0)
        rc = errno;
    if (!rc)
        rc = sync_dir(dir);
    if (rc) {
        (void)unlink(tmp);
        (void)unlink(path);
        free(path);
        path = NULL;
    }
    free(tmp);
    return path;
}

void mm_cache_marker_remove(const char *dir, const char *path)
{
    if (unlink(path) == 0)
        (void)sync_dir(dir);
}

int mm_cache_data_sync(const char *dir)
{
    char *p = mm_path_join(dir, "data.mdb");
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    free(p);
    if (fd < 0)
        return errno == ENOENT ? 0 : errno;
    int rc = fdatasync(fd) == 0 ? 0 : errno;
    close(fd);
    return rc;
}
