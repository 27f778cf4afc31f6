#include "srcfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "merge/plan/lora.h"
#include "plan.h"

enum { LOGGED_CHANGE = 1, LOGGED_READ = 2 };
/* Room for "changed size (N -> M bytes)" and "can no longer be checked (stat: <strerror>)". */
#define HOW_LEN 128

struct mm_srcfile {
    char *path;
    int fd;
    mm_file_id id;
    /* Coarse monotonic milliseconds before which the path need not be looked at again. */
    _Atomic int64_t recheck_at;
    /* Final once set: the file was seen different from `id` (or its path unusable). */
    atomic_bool changed;
    atomic_uint logged;
};

static int64_t ts_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static void id_of(const struct stat *st, mm_file_id *id)
{
    id->dev = (uint64_t)st->st_dev;
    id->ino = (uint64_t)st->st_ino;
    id->size = (uint64_t)st->st_size;
    id->mtime_ns = ts_ns(&st->st_mtim);
    id->ctime_ns = ts_ns(&st->st_ctim);
}

/* The clock only paces path checks: a tick of a few milliseconds is plenty, and the coarse clock is
 * read from the vDSO without a system call. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int mm_srcfile_open(const char *path, mm_srcfile **out, mm_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return mm_err_set(err, -e, "%s: cannot open: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mm_err_set(err, -EINVAL, "%s: not a regular file", path);
    }
    mm_srcfile *f = mm_xcalloc(1, sizeof *f);
    f->path = mm_xstrdup(path);
    f->fd = fd;
    id_of(&st, &f->id);
    atomic_init(&f->recheck_at, now_ms() + MM_SRCFILE_RECHECK_MS);
    atomic_init(&f->changed, false);
    atomic_init(&f->logged, 0);
    *out = f;
    return 0;
}

void mm_srcfile_close(mm_srcfile *f)
{
    if (!f)
        return;
    close(f->fd);
    free(f->path);
    free(f);
}

const char *mm_srcfile_path(const mm_srcfile *f)
{
    return f->path;
}

int mm_srcfile_fd(const mm_srcfile *f)
{
    return f->fd;
}

const mm_file_id *mm_srcfile_id(const mm_srcfile *f)
{
    return &f->id;
}

static bool log_first(mm_srcfile *f, unsigned kind)
{
    return !(atomic_fetch_or(&f->logged, kind) & kind);
}

/* Makes the change final and reports it once, saying what differs: the user has to find out what
 * touched the file. */
static int mark_changed(mm_srcfile *f, const char *how)
{
    atomic_store(&f->changed, true);
    if (log_first(f, LOGGED_CHANGE))
        mm_log_error("%s %s after mergemount opened it; reads that need it fail (EIO) until the config is "
                     "mounted again",
                     f->path, how);
    return -EIO;
}

/* What differs between the identity at opening and `now`, or NULL when nothing does. */
static const char *difference(const mm_file_id *was, const struct stat *st, char *buf, size_t len)
{
    mm_file_id now;
    id_of(st, &now);
    if (now.dev != was->dev || now.ino != was->ino)
        return "was replaced by another file";
    /* Unlinking (a deletion, or a rename over the name) moves ctime too; say which it was. */
    if (st->st_nlink == 0)
        return "was deleted or replaced by another file";
    if (now.size != was->size) {
        snprintf(buf, len, "changed size (%llu -> %llu bytes)", (unsigned long long)was->size,
                 (unsigned long long)now.size);
        return buf;
    }
    if (now.mtime_ns != was->mtime_ns || now.ctime_ns != was->ctime_ns)
        return "was modified";
    return NULL;
}

/* How the file behind our descriptor changed (race-free for the bytes we read), or NULL. */
static const char *probe_fd(const mm_srcfile *f, char *buf, size_t len)
{
    struct stat st;
    if (fstat(f->fd, &st) < 0) {
        snprintf(buf, len, "can no longer be checked (fstat: %s)", strerror(errno));
        return buf;
    }
    return difference(&f->id, &st, buf, len);
}

/* How the file at the path differs, or NULL: the only way to see a rename over the name or a
 * deletion, since our descriptor keeps the old inode readable. */
static const char *probe_path(const mm_srcfile *f, char *buf, size_t len)
{
    struct stat st;
    if (stat(f->path, &st) < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return "was deleted";
        snprintf(buf, len, "can no longer be checked (stat: %s)", strerror(errno));
        return buf;
    }
    return difference(&f->id, &st, buf, len);
}

int mm_srcfile_check(mm_srcfile *f)
{
    if (atomic_load_explicit(&f->changed, memory_order_relaxed))
        return -EIO;
    int64_t now = now_ms();
    if (now < atomic_load_explicit(&f->recheck_at, memory_order_relaxed))
        return 0;
    /* Threads that find the interval over at the same moment may all look: harmless, and no lock. */
    char buf[HOW_LEN];
    const char *how = probe_path(f, buf, sizeof buf);
    if (how)
        return mark_changed(f, how);
    atomic_store_explicit(&f->recheck_at, now + MM_SRCFILE_RECHECK_MS, memory_order_relaxed);
    return 0;
}

int mm_srcfile_verify(mm_srcfile *f)
{
    if (atomic_load_explicit(&f->changed, memory_order_relaxed))
        return -EIO;
    char buf[HOW_LEN];
    const char *how = probe_fd(f, buf, sizeof buf);
    return how ? mark_changed(f, how) : 0;
}

bool mm_srcfile_unchanged(const mm_srcfile *f)
{
    char buf[HOW_LEN];
    return !atomic_load(&f->changed) && !probe_fd(f, buf, sizeof buf) && !probe_path(f, buf, sizeof buf);
}

int mm_srcfile_failed(mm_srcfile *f, int rc)
{
    if (atomic_load(&f->changed))
        return -EIO;
    char buf[HOW_LEN];
    const char *how = probe_fd(f, buf, sizeof buf);
    if (!how)
        how = probe_path(f, buf, sizeof buf);
    if (how)
        return mark_changed(f, how);
    if (log_first(f, LOGGED_READ))
        mm_log_error("cannot read %s: %s (further read errors of this file are not shown)", f->path,
                     strerror(-rc));
    return -EIO;
}

int mm_srcfile_pread(mm_srcfile *f, void *buf, size_t len, uint64_t off)
{
    int rc = mm_srcfile_check(f);
    if (rc < 0)
        return rc;
    rc = mm_pread_full(f->fd, buf, len, off);
    if (rc < 0)
        return mm_srcfile_failed(f, rc);
    return mm_srcfile_verify(f);
}

/* Every file an output tensor reads: its inputs' shards and the adapter files that change them. */
static int each_input(const mm_out_tensor *t, int (*fn)(mm_srcfile *))
{
    for (size_t i = 0; i < t->ninputs; i++) {
        const mm_model_tensor *mt = t->inputs[i].mt;
        int rc = fn(mt->shard->src);
        if (rc == 0 && mt->lora)
            rc = fn(mt->lora->owner->file.src);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int mm_srcfile_check_tensor(const mm_out_tensor *t)
{
    return each_input(t, mm_srcfile_check);
}

int mm_srcfile_verify_tensor(const mm_out_tensor *t)
{
    return each_input(t, mm_srcfile_verify);
}
