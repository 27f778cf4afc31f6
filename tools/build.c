#include "build.h"

#include "progress.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Large enough that per-chunk overhead vanishes, small enough that one big shard spreads over all
 * threads and the buffers (one per thread) stay modest. */
static const size_t k_chunk = (size_t)8 << 20;

/* ---- signals: a flag the workers poll between chunks ---- */

/* Atomic, not volatile sig_atomic_t: worker threads read it, and lock-free atomics are also safe to
 * store from a signal handler. */
static atomic_int g_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&g_interrupted, 1);
}

typedef struct signal_guard {
    struct sigaction old_int, old_term;
} signal_guard;

static void signals_catch(signal_guard *g)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* SA_RESETHAND: a second Ctrl-C kills at once, for a user who will not wait for the cleanup.
     * SA_RESTART: the read path below us need not handle EINTR. */
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    atomic_store(&g_interrupted, 0);
    sigaction(SIGINT, &sa, &g->old_int);
    sigaction(SIGTERM, &sa, &g->old_term);
}

static void signals_restore(const signal_guard *g)
{
    sigaction(SIGINT, &g->old_int, NULL);
    sigaction(SIGTERM, &g->old_term, NULL);
}

/* ---- folder trees: checking and removing without following links or crossing mounts ---- */

static int walk_tree(int dirfd, const char *path, dev_t dev, int remove, mm_err *err);

static int walk_entry(int dfd, const char *name, const char *path, dev_t dev, int remove, mm_err *err)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return mm_err_set(err, -errno, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        if (st.st_dev != dev)
            return mm_err_set(err, -EXDEV, "%s is a mount point; refusing to delete it (unmount it first)", path);
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return mm_err_set(err, -errno, "%s: %s", path, strerror(errno));
        int rc = walk_tree(fd, path, dev, remove, err);
        if (rc == 0 && remove && unlinkat(dfd, name, AT_REMOVEDIR) < 0)
            rc = mm_err_set(err, -errno, "cannot remove %s: %s", path, strerror(errno));
        return rc;
    }
    if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
        return mm_err_set(err, -EPERM,
                          "%s is not a regular file, symlink or folder; refusing to delete it (remove it yourself)",
                          path);
    if (remove && unlinkat(dfd, name, 0) < 0)
        return mm_err_set(err, -errno, "cannot remove %s: %s", path, strerror(errno));
    return 0;
}

/* Walks the folder open at dirfd (and takes ownership of the fd); `path` names it in messages. With
 * `remove` deletes its contents, otherwise only checks that everything in it may be deleted. */
static int walk_tree(int dirfd, const char *path, dev_t dev, int remove, mm_err *err)
{
    DIR *d = fdopendir(dirfd);
    if (!d) {
        int e = errno;
        close(dirfd);
        return mm_err_set(err, -e, "%s: %s", path, strerror(e));
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (errno = 0, de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char *sub = mm_path_join(path, de->d_name);
        rc = walk_entry(dirfd, de->d_name, sub, dev, remove, err);
        free(sub);
    }
    if (rc == 0 && errno != 0)
        rc = mm_err_set(err, -errno, "%s: %s", path, strerror(errno));
    closedir(d);
    return rc;
}

static int tree_walk_path(const char *path, int remove, mm_err *err)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return mm_err_set(err, -errno, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return mm_err_set(err, -e, "%s: %s", path, strerror(e));
    }
    int rc = walk_tree(fd, path, st.st_dev, remove, err);
    if (rc == 0 && remove && rmdir(path) < 0)
        rc = mm_err_set(err, -errno, "cannot remove %s: %s", path, strerror(errno));
    return rc;
}

static int remove_tree(const char *path, mm_err *err)
{
    return tree_walk_path(path, 1, err);
}

/* 1 if empty, 0 if not, or -errno. */
static int dir_is_empty(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    int empty = 1;
    struct dirent *de;
    while (empty && (de = readdir(d)) != NULL)
        empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
    closedir(d);
    return empty;
}

/* ---- the output folder ---- */

/* The path the finished folder is renamed to. An existing one is canonicalised so the temporary folder
 * lands in the same parent (rename must not cross filesystems) even for "out/", "." or a symlink. */
static char *resolve_outdir(const char *outdir)
{
    char *canon = realpath(outdir, NULL);
    if (canon)
        return canon;
    char *p = mm_xstrdup(outdir);
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = 0;
    return p;
}

/* "No mode to keep": the new folder gets the mode mkdir would give it. */
#define MODE_NONE ((mode_t)-1)

/* Checks OUTDIR before any work. *mode is the permission bits to give the new folder: those of an
 * existing OUTDIR (its contents are replaced, the folder itself stays as the user made it), else
 * MODE_NONE. */
static int check_outdir(const char *final, const char *shown, int force, mode_t *mode, mm_err *err)
{
    *mode = MODE_NONE;
    if (strcmp(final, "/") == 0)
        return mm_err_set(err, -EINVAL, "refusing to build into / (give a folder of its own)");
    struct stat st;
    if (stat(final, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        return mm_err_set(err, -errno, "%s: %s", shown, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode))
        return mm_err_set(err, -ENOTDIR, "%s exists and is not a directory (remove it or choose another output folder)",
                          shown);
    *mode = st.st_mode & 07777;
    int empty = dir_is_empty(final);
    if (empty < 0)
        return mm_err_set(err, empty, "%s: %s", shown, strerror(-empty));
    if (empty)
        return 0;
    if (!force)
        return mm_err_set(err, -ENOTEMPTY, "%s is not empty (use --force to replace its contents)", shown);
    /* Refuse now, not after hours of computing, if the old contents could not be deleted. */
    return tree_walk_path(final, 0, err);
}

/* Moves the finished folder into place. */
static int install(const char *tmp, const char *final, const char *shown, int force, mm_err *err)
{
    /* rename(2) replaces a missing or empty folder atomically. */
    if (rename(tmp, final) == 0)
        return 0;
    int e = errno;
    if (e != ENOTEMPTY && e != EEXIST)
        return mm_err_set(err, -e, "cannot move %s to %s: %s", tmp, shown, strerror(e));
    if (!force)
        return mm_err_set(err, -ENOTEMPTY, "%s is not empty (use --force to replace its contents)", shown);
    /* Swapping keeps OUTDIR whole at every instant; the old contents end up at tmp, then go. */
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
        mm_err rm;
        if (remove_tree(tmp, &rm) < 0)
            mm_log_warn("built %s, but its previous contents could not be removed and are left in %s: %s", shown,
                        tmp, rm.msg);
        return 0;
    }
    e = errno;
    if (e != EINVAL && e != ENOSYS && e != EOPNOTSUPP)
        return mm_err_set(err, -e, "cannot replace %s with %s: %s", shown, tmp, strerror(e));
    /* Filesystems without RENAME_EXCHANGE: delete, then move. */
    int rc = remove_tree(final, err);
    if (rc < 0) {
        mm_err_prefix(err, "cannot remove the previous contents of %s", shown);
        return rc;
    }
    if (rename(tmp, final) < 0)
        return mm_err_set(err, -errno, "cannot move %s to %s: %s", tmp, shown, strerror(errno));
    return 0;
}

/* ---- writing the files: a chunk-level work queue over all files ---- */

typedef struct build_job {
    mm_vfs *vfs;
    const char *shown; /* OUTDIR as the user wrote it, for messages */
    size_t nfiles;
    int *fds;
    uint64_t *first_chunk; /* nfiles + 1 entries: chunks of file i are [first_chunk[i], first_chunk[i+1]) */
    uint64_t nchunks;
    atomic_uint_fast64_t next;
    atomic_int stop;
    mm_progress *progress;
    pthread_mutex_t err_lock;
    int rc; /* first error, under err_lock */
    mm_err err;
} build_job;

/* Records the first failure and stops every worker. Returns `code`. */
__attribute__((format(printf, 3, 4))) static int job_fail(build_job *job, int code, const char *fmt, ...)
{
    pthread_mutex_lock(&job->err_lock);
    if (job->rc == 0) {
        job->rc = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(job->err.msg, sizeof job->err.msg, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&job->err_lock);
    atomic_store(&job->stop, 1);
    return code;
}

/* The file holding chunk c: the last file whose first chunk is <= c (skips empty files). */
static size_t file_of_chunk(const build_job *job, uint64_t c)
{
    size_t lo = 0, hi = job->nfiles;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (job->first_chunk[mid] <= c)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Writes bypass the page cache (O_DIRECT) where the filesystem allows it: writing through the page
 * cache is the slowest part of a build on some machines (measured here: 0.4-0.5 GB/s buffered vs
 * 1.9 GB/s direct for the same 2 GB file), and a multi-gigabyte output would only push the sources
 * out of the cache. Direct writes need offsets, lengths and the buffer aligned to the device's block:
 * chunks start at multiples of k_chunk, the short last chunk of a file is written padded with zeros
 * and the file cut to its size afterwards. Where O_DIRECT is refused (tmpfs, some network
 * filesystems: EINVAL), the file falls back to ordinary writes. */
#define DIRECT_ALIGN 4096

/* Drops O_DIRECT from fd (the filesystem refused an aligned direct write). */
static int direct_off(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl & ~O_DIRECT) < 0 ? -errno : 0;
}

static int pwrite_full(int fd, const char *p, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int copy_chunk(build_job *job, uint64_t c, char *buf)
{
    size_t f = file_of_chunk(job, c);
    const char *name = mm_vfs_name(job->vfs, f);
    uint64_t off = (c - job->first_chunk[f]) * k_chunk;
    uint64_t left = mm_vfs_size(job->vfs, f) - off;
    size_t len = left < k_chunk ? (size_t)left : k_chunk;
    ssize_t n = mm_vfs_read(job->vfs, f, off, len, buf);
    if (n < 0)
        return job_fail(job, (int)n, "%s/%s: reading bytes %llu..%llu of the merged file failed: %s", job->shown,
                        name, (unsigned long long)off, (unsigned long long)(off + len), strerror((int)-n));
    if ((size_t)n != len)
        return job_fail(job, -EIO, "%s/%s: the merge produced %zd bytes at offset %llu where %zu were expected",
                        job->shown, name, n, (unsigned long long)off, len);
    /* The short last chunk of a file, padded to the direct-I/O alignment (the file is cut to its size
     * in close_files); buf has room for the padding. */
    size_t wlen = len;
    if (len % DIRECT_ALIGN) {
        wlen = len + (DIRECT_ALIGN - len % DIRECT_ALIGN);
        memset(buf + len, 0, wlen - len);
    }
    int rc = pwrite_full(job->fds[f], buf, wlen, off);
    if (rc == -EINVAL && (rc = direct_off(job->fds[f])) == 0)
        rc = pwrite_full(job->fds[f], buf, wlen, off);
    if (rc < 0)
        return job_fail(job, rc, "%s/%s: write failed: %s%s", job->shown, name, strerror(-rc),
                        rc == -ENOSPC || rc == -EDQUOT ? " (free some space or build elsewhere)" : "");
    mm_progress_add(job->progress, len);
    return 0;
}

static void *worker(void *arg)
{
    build_job *job = arg;
    char *buf = NULL;
    if (posix_memalign((void **)&buf, DIRECT_ALIGN, k_chunk + DIRECT_ALIGN) != 0)
        buf = NULL;
    if (!buf) {
        job_fail(job, -ENOMEM, "out of memory for a %zu-byte write buffer", k_chunk);
        return NULL;
    }
    while (!atomic_load(&job->stop) && !atomic_load(&g_interrupted)) {
        uint64_t c = atomic_fetch_add(&job->next, 1);
        if (c >= job->nchunks || copy_chunk(job, c, buf) < 0)
            break;
    }
    free(buf);
    return NULL;
}

static void run_workers(build_job *job, size_t threads)
{
    pthread_t *tids = mm_xcalloc(threads, sizeof *tids);
    size_t started = 0;
    while (started < threads && pthread_create(&tids[started], NULL, worker, job) == 0)
        started++;
    /* No thread at all (resource limits): the work still gets done, on this one. */
    if (started == 0)
        worker(job);
    for (size_t i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    free(tids);
}

static size_t thread_count(const mm_build_options *o, uint64_t nchunks)
{
    long n = o->threads > 0 ? o->threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return (uint64_t)n < nchunks ? (size_t)n : (size_t)nchunks;
}

/* The vfs guarantees plain names, but a path separator here would write outside the folder. */
static int valid_name(const char *name)
{
    return *name && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static int open_files(build_job *job, int dirfd, mm_err *err)
{
    for (size_t i = 0; i < job->nfiles; i++) {
        const char *name = mm_vfs_name(job->vfs, i);
        if (!valid_name(name))
            return mm_err_set(err, -EINVAL, "the merge produced an invalid file name '%s'", name);
        job->fds[i] = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_DIRECT, 0666);
        if (job->fds[i] < 0 && errno == EINVAL) /* no direct I/O here: the file was not created */
            job->fds[i] = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (job->fds[i] < 0)
            return mm_err_set(err, -errno, "%s/%s: cannot create: %s", job->shown, name, strerror(errno));
    }
    return 0;
}

/* Closes every open file; a close error (delayed write-back failure on NFS, say) fails the build. */
static int close_files(build_job *job, int rc, mm_err *err)
{
    for (size_t i = 0; i < job->nfiles; i++) {
        if (job->fds[i] < 0)
            continue;
        /* Cuts the zero padding of the last direct write (see copy_chunk). */
        if (rc == 0 && ftruncate(job->fds[i], (off_t)mm_vfs_size(job->vfs, i)) < 0)
            rc = mm_err_set(err, -errno, "%s/%s: write failed: %s", job->shown, mm_vfs_name(job->vfs, i),
                            strerror(errno));
        if (close(job->fds[i]) < 0 && rc == 0)
            rc = mm_err_set(err, -errno, "%s/%s: write failed: %s", job->shown, mm_vfs_name(job->vfs, i),
                            strerror(errno));
        job->fds[i] = -1;
    }
    return rc;
}

static int write_files(mm_vfs *vfs, const mm_build_options *o, int dirfd, mm_err *err)
{
    build_job job;
    memset(&job, 0, sizeof job);
    job.vfs = vfs;
    job.shown = o->outdir;
    job.nfiles = mm_vfs_count(vfs);
    atomic_init(&job.next, 0);
    atomic_init(&job.stop, 0);
    pthread_mutex_init(&job.err_lock, NULL);
    job.fds = mm_xmalloc((job.nfiles ? job.nfiles : 1) * sizeof *job.fds);
    job.first_chunk = mm_xmalloc((job.nfiles + 1) * sizeof *job.first_chunk);
    uint64_t total = 0;
    for (size_t i = 0; i < job.nfiles; i++) {
        uint64_t size = mm_vfs_size(vfs, i);
        job.fds[i] = -1;
        job.first_chunk[i] = job.nchunks;
        job.nchunks += (size + k_chunk - 1) / k_chunk;
        total += size;
    }
    job.first_chunk[job.nfiles] = job.nchunks;

    int rc = open_files(&job, dirfd, err);
    if (rc == 0) {
        job.progress = mm_progress_new(total, o->progress);
        run_workers(&job, thread_count(o, job.nchunks));
        rc = job.rc;
        if (rc < 0 && err)
            *err = job.err;
        mm_progress_finish(job.progress, rc == 0 && !atomic_load(&g_interrupted));
        mm_progress_free(job.progress);
    }
    rc = close_files(&job, rc, err);
    pthread_mutex_destroy(&job.err_lock);
    free(job.fds);
    free(job.first_chunk);
    return rc;
}

/* Writes everything into the temporary folder and gives it its final mode. */
static int fill_tmpdir(mm_vfs *vfs, const mm_build_options *o, const char *tmp, mode_t mode, mm_err *err)
{
    int dirfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return mm_err_set(err, -errno, "%s: %s", tmp, strerror(errno));
    int rc = write_files(vfs, o, dirfd, err);
    /* mkdtemp makes the folder 0700. The umask can only be read by setting it; nothing else in this
     * process creates files meanwhile. */
    if (mode == MODE_NONE) {
        mode_t mask = umask(0);
        umask(mask);
        mode = 0777 & ~mask;
    }
    if (rc == 0 && fchmod(dirfd, mode) < 0)
        rc = mm_err_set(err, -errno, "%s: %s", tmp, strerror(errno));
    close(dirfd);
    return rc;
}

static int tmpdir_error(const char *final, int code, mm_err *err)
{
    char *parent = mm_xstrdup(final);
    char *slash = strrchr(parent, '/');
    if (!slash)
        strcpy(parent, ".");
    else if (slash == parent)
        parent[1] = 0;
    else
        *slash = 0;
    if (code == -ENOENT)
        mm_err_set(err, code, "cannot create the output folder %s: its parent folder does not exist (create it with "
                   "mkdir -p %s)", final, parent);
    else
        mm_err_set(err, code, "cannot create a temporary folder in %s: %s (the output is written next to %s, then "
                   "renamed into place; check that %s is writable)", parent, strerror(-code), final, parent);
    free(parent);
    return code;
}

int mm_build_run(mm_vfs *vfs, const mm_build_options *o, mm_err *err)
{
    if (!o->outdir || !*o->outdir)
        return mm_err_set(err, -EINVAL, "no output folder given");
    char *final = resolve_outdir(o->outdir);
    mode_t mode;
    int rc = check_outdir(final, o->outdir, o->force, &mode, err);
    if (rc < 0) {
        free(final);
        return rc;
    }

    signal_guard sg;
    signals_catch(&sg);
    char *tmp = mm_xasprintf("%s.tmp-XXXXXX", final);
    if (!mkdtemp(tmp)) {
        rc = tmpdir_error(final, -errno, err);
        goto out;
    }
    rc = fill_tmpdir(vfs, o, tmp, mode, err);
    if (atomic_load(&g_interrupted))
        rc = mm_err_set(err, -EINTR, "build of %s interrupted; the partial output was removed", o->outdir);
    if (rc == 0)
        rc = install(tmp, final, o->outdir, o->force, err);
    if (rc < 0) {
        mm_err rm;
        if (remove_tree(tmp, &rm) < 0)
            mm_log_warn("could not remove the temporary folder %s: %s", tmp, rm.msg);
    }
out:
    signals_restore(&sg);
    free(tmp);
    free(final);
    return rc;
}
