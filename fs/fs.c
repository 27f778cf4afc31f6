/* The FUSE adapter (fs.h): the model files and the root are made here from the vfs; `.cache/`, the one
 * writable subtree, is fs/state.c's, and every request on it or that would write is passed there. */
#include "fs.h"
#include "base/scratch.h"
#include "lowlevel.h"
#include "pool.h"
#include "readahead.h"
#include "state.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

enum { ROOT_INO = 1, FIRST_FILE_INO = 2 };

/* The merged view never changes while mounted, so the kernel may keep names and attributes for a day
 * instead of asking again on every stat. */
static const double k_cache_timeout = 86400.0;
/* cp, Python's io and others size their read buffers from st_blksize; 1 MiB is the largest request
 * the kernel sends, so bigger gains nothing and the 4 KiB default costs syscalls. */
static const blksize_t k_blksize = 1 << 20;
/* The kernel default of 12 outstanding background (readahead) requests starves parallel readers;
 * 64 is what mountpoint-s3 settled on. */
static const unsigned k_max_background = 64;
/* Pieces of one zero-copy reply: a 1 MiB request over 1 MiB blocks needs two or three; many more means
 * many small tensors, which are read into one buffer instead. */
enum { k_reply_pieces = 16 };
static const int k_max_idle_threads = 10;

typedef struct fs_state {
    mm_vfs *vfs;
    mm_state *state;          /* `.cache/`; NULL when the mount has none */
    mm_pool *pool;            /* where reads that compute run; NULL: on the worker (fs/pool.h) */
    /* The kernel resets the mount's readahead when it processes our INIT reply, so the raised value
     * is written by the first request after that (a request handler is the first code that runs
     * once INIT is complete). Non-NULL until applied. */
    _Atomic(const char *) readahead_mountpoint;
    unsigned readahead_kb;
    size_t count;
    uint64_t total_bytes;
    uid_t uid;
    gid_t gid;
    struct timespec mtime;
} fs_state;

static void apply_readahead(fs_state *fs)
{
    const char *mp = atomic_exchange(&fs->readahead_mountpoint, NULL);
    if (!mp)
        return;
    mm_err err;
    if (mm_fs_set_readahead(mp, fs->readahead_kb, &err) < 0)
        mm_log_warn("%s", err.msg);
}

static fs_state *fs_of(fuse_req_t req)
{
    fs_state *fs = fuse_req_userdata(req);
    if (atomic_load_explicit(&fs->readahead_mountpoint, memory_order_relaxed))
        apply_readahead(fs);
    return fs;
}

static int file_index(const fs_state *fs, fuse_ino_t ino, size_t *idx)
{
    if (ino < FIRST_FILE_INO || ino - FIRST_FILE_INO >= fs->count)
        return -ENOENT;
    *idx = (size_t)(ino - FIRST_FILE_INO);
    return 0;
}

/* The one place attributes are made: lookup, getattr and readdirplus must agree on the size, or the
 * kernel truncates its page cache under mmap readers (SIGBUS). */
static int fill_stat(const fs_state *fs, fuse_ino_t ino, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_atim = st->st_mtim = st->st_ctim = fs->mtime;
    st->st_blksize = k_blksize;
    if (ino == ROOT_INO) {
        /* Writable by its owner only so that the kernel lets `mkdir .cache` through (default_permissions);
         * anything else made or removed in it is refused with EROFS (fs/state.h). */
        st->st_mode = S_IFDIR | (fs->state ? 0755 : 0555);
        struct fuse_entry_param cache;
        st->st_nlink = 2 + (mm_state_root_entry(fs->state, 0, &cache) == 0);
        return 0;
    }
    size_t idx;
    if (file_index(fs, ino, &idx) < 0)
        return -ENOENT;
    uint64_t size = mm_vfs_size(fs->vfs, idx);
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = (off_t)size;
    /* As if fully allocated, so `du` reports what a copy of the folder will take. */
    st->st_blocks = (blkcnt_t)((size + 511) / 512);
    return 0;
}

static void fill_entry(const fs_state *fs, fuse_ino_t ino, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    e->ino = ino;
    e->attr_timeout = k_cache_timeout;
    e->entry_timeout = k_cache_timeout;
    fill_stat(fs, ino, &e->attr);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    conn->max_background = k_max_background;
    conn->congestion_threshold = k_max_background * 3 / 4;
}

static int is_state_name(const fs_state *fs, fuse_ino_t parent, const char *name)
{
    return fs->state && parent == ROOT_INO && strcmp(name, MM_STATE_NAME) == 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    fs_state *fs = fs_of(req);
    if (mm_state_owns(fs->state, parent) || is_state_name(fs, parent, name)) {
        mm_state_lookup(fs->state, req, parent, name);
        return;
    }
    if (parent != ROOT_INO) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    struct fuse_entry_param e;
    size_t idx;
    if (mm_vfs_lookup(fs->vfs, name, &idx) < 0) {
        /* Inode 0 with a timeout is a negative entry the kernel may cache: a missing name stays
         * missing for the life of the mount, and loaders probe many optional files. */
        memset(&e, 0, sizeof e);
        e.entry_timeout = k_cache_timeout;
        fuse_reply_entry(req, &e);
        return;
    }
    fill_entry(fs, FIRST_FILE_INO + idx, &e);
    fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    fs_state *fs = fs_of(req);
    if (mm_state_owns(fs->state, ino)) {
        mm_state_getattr(fs->state, req, ino);
        return;
    }
    struct stat st;
    if (fill_stat(fs, ino, &st) < 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    fuse_reply_attr(req, &st, k_cache_timeout);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fs_state *fs = fs_of(req);
    if (mm_state_owns(fs->state, ino)) {
        mm_state_opendir(fs->state, req, ino, fi);
        return;
    }
    if (ino != ROOT_INO) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    /* The files never change: let the kernel cache the listing, across opens too unless `.cache` can
     * come and go (made or removed through this mount, the kernel drops the cache itself; made by
     * another mount of the same recipe, it would not know). */
    fi->cache_readdir = 1;
    fi->keep_cache = !fs->state;
    fuse_reply_open(req, fi);
}

/* Adds the root's `.cache` entry when it exists and fits (else the next call starts with it). */
static void add_state_entry(fuse_req_t req, fs_state *fs, char *buf, size_t room, size_t *used, off_t next, int plus)
{
    struct fuse_entry_param e;
    if (mm_state_root_entry(fs->state, plus, &e) < 0)
        return;
    size_t need = plus ? fuse_add_direntry_plus(req, buf, room, MM_STATE_NAME, &e, next)
                       : fuse_add_direntry(req, buf, room, MM_STATE_NAME, &e.attr, next);
    if (need <= room)
        *used += need;
    else if (plus)
        mm_state_forget(fs->state, e.ino, 1);
}

/* Directory offsets: entry k of ".", "..", file 0, file 1, ..., `.cache` carries offset k + 1 (the
 * offset of the entry after it), and a file's entry index equals its inode number. */
static void reply_dir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi, int plus)
{
    fs_state *fs = fs_of(req);
    if (mm_state_owns(fs->state, ino)) {
        mm_state_readdir(fs->state, req, ino, size, off, fi, plus);
        return;
    }
    if (ino != ROOT_INO) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0, k;
    for (k = off > 0 ? (size_t)off : 0; k < fs->count + FIRST_FILE_INO; k++) {
        const char *name = k == 0 ? "." : k == 1 ? ".." : mm_vfs_name(fs->vfs, k - FIRST_FILE_INO);
        fuse_ino_t eino = k < FIRST_FILE_INO ? ROOT_INO : (fuse_ino_t)k;
        struct fuse_entry_param e;
        fill_entry(fs, eino, &e);
        size_t need = plus ? fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)k + 1)
                           : fuse_add_direntry(req, buf + used, size - used, name, &e.attr, (off_t)k + 1);
        if (need > size - used)
            break;
        used += need;
    }
    if (k == fs->count + FIRST_FILE_INO)
        add_state_entry(req, fs, buf + used, size - used, &used, (off_t)k + 1, plus);
    fuse_reply_buf(req, buf, used);
    free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    reply_dir(req, ino, size, off, fi, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    reply_dir(req, ino, size, off, fi, 1);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fs_state *fs = fs_of(req);
    size_t idx;
    if (mm_state_owns(fs->state, ino)) {
        mm_state_open_file(fs->state, req, ino, fi);
        return;
    }
    if (ino == ROOT_INO) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if (file_index(fs, ino, &idx) < 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    /* The files' 0444 makes the kernel refuse writers other than root (EACCES); root gets here. */
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    /* Never direct_io: it breaks MAP_SHARED mmap, which every loader uses. keep_cache keeps pages across
     * opens (the bytes never change); noflush spares a round trip on every close. */
    fi->direct_io = 0;
    fi->keep_cache = 1;
    fi->noflush = 1;
    fuse_reply_open(req, fi);
}

/* A read of a model file that may compute, as the compute pool runs it (or the worker, without one). */
typedef struct read_job {
    fs_state *fs;
    fuse_req_t req;
    size_t idx, size;
    uint64_t off;
} read_job;

/* Replies with pieces pointing into memory held for the reply (headers, blocks in the cache writer's
 * queue, computed now if missing), or returns -EAGAIN when the range must be copied into a buffer. */
static int reply_zc(fs_state *fs, fuse_req_t req, size_t idx, uint64_t off, size_t size)
{
    struct iovec iov[k_reply_pieces];
    size_t niov = 0;
    mm_vfs_hold hold;
    ssize_t zn = mm_vfs_read_zc(fs->vfs, idx, off, size, iov, &niov, k_reply_pieces, &hold);
    if (zn == -EAGAIN)
        return -EAGAIN;
    if (zn >= 0) {
        fuse_reply_iov(req, iov, (int)niov);
        mm_vfs_hold_release(fs->vfs, &hold);
    } else {
        fuse_reply_err(req, (int)-zn);
    }
    return 0;
}

/* Replies with the range copied into this thread's buffer: everything (`compute`), or only what needs
 * no computing or source read (else -EAGAIN, nothing sent). */
static int reply_copy(fs_state *fs, fuse_req_t req, size_t idx, uint64_t off, size_t size, int compute)
{
    void *buf = mm_scratch_borrow(MM_SCRATCH_REPLY, size);
    ssize_t n = !buf ? -ENOMEM : compute ? mm_vfs_read(fs->vfs, idx, off, size, buf)
                                         : mm_vfs_read_cached(fs->vfs, idx, off, size, buf);
    if (n >= 0)
        fuse_reply_buf(req, buf, (size_t)n);
    else if (n != -EAGAIN)
        fuse_reply_err(req, (int)-n);
    mm_scratch_return(MM_SCRATCH_REPLY, buf);
    return n == -EAGAIN ? -EAGAIN : 0;
}

static void run_read(void *arg)
{
    read_job *j = arg;
    /* With a cache, missing blocks are computed straight into the cache's queue and sent from there. */
    if (reply_zc(j->fs, j->req, j->idx, j->off, j->size) == -EAGAIN)
        (void)reply_copy(j->fs, j->req, j->idx, j->off, j->size, 1);
    free(j);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    fs_state *fs = fs_of(req);
    if (mm_state_owns(fs->state, ino)) {
        mm_state_read(fs->state, req, size, off, fi);
        return;
    }
    size_t idx;
    if (file_index(fs, ino, &idx) < 0) {
        fuse_reply_err(req, ino == ROOT_INO ? EISDIR : ENOENT);
        return;
    }
    uint64_t fsize = mm_vfs_size(fs->vfs, idx);
    if (off < 0 || (uint64_t)off >= fsize || size == 0) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if (size > fsize - (uint64_t)off)
        size = (size_t)(fsize - (uint64_t)off);
    /* What needs no computing (headers, cached blocks) is sent from here at once; anything to compute or
     * read from a source goes to the compute pool. */
    if (reply_copy(fs, req, idx, (uint64_t)off, size, 0) == 0)
        return;
    read_job *j = malloc(sizeof *j);
    if (!j) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    *j = (read_job){.fs = fs, .req = req, .idx = idx, .size = size, .off = (uint64_t)off};
    if (!fs->pool || mm_pool_submit(fs->pool, run_read, j) < 0)
        run_read(j);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    fs_state *fs = fs_of(req);
    /* Inside `.cache`, the filesystem that holds it: what is free there is what a client can write. */
    if (mm_state_owns(fs->state, ino)) {
        mm_state_statfs(fs->state, req, ino);
        return;
    }
    struct statvfs sv;
    memset(&sv, 0, sizeof sv);
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    /* Size = what the files add up to, free = 0: `df` then shows what a copy will need. */
    sv.f_blocks = (fsblkcnt_t)((fs->total_bytes + sv.f_frsize - 1) / sv.f_frsize);
    sv.f_files = (fsfilcnt_t)(fs->count + 1);
    sv.f_namemax = 255;
    fuse_reply_statfs(req, &sv);
}

/* Extended attributes of the mount root, rendered when asked: this is where diagnostics
 * (user.mergemount.*) are exposed, because a hidden file in the tree would be uploaded by `hf upload`.
 * To add one, add a renderer and a row. Files carry no attributes. */
typedef struct root_xattr {
    const char *name;
    void (*render)(const fs_state *fs, mm_buf *out);
} root_xattr;

static void render_stats(const fs_state *fs, mm_buf *out)
{
    mm_vfs_stats_json(fs->vfs, out);
}

static const root_xattr k_root_xattrs[] = {
    {"user.mergemount.stats", render_stats},
    {NULL, NULL},
};

static const root_xattr *find_root_xattr(const char *name)
{
    for (const root_xattr *x = k_root_xattrs; x->name; x++)
        if (strcmp(x->name, name) == 0)
            return x;
    return NULL;
}

/* getxattr/listxattr protocol: size 0 asks for the length, a too-small buffer is ERANGE. */
static void reply_xattr_bytes(fuse_req_t req, size_t size, const void *data, size_t len)
{
    if (size == 0)
        fuse_reply_xattr(req, len);
    else if (len > size)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, data, len);
}

static int known_ino(const fs_state *fs, fuse_ino_t ino)
{
    size_t idx;
    return ino == ROOT_INO || file_index(fs, ino, &idx) == 0;
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    fs_state *fs = fs_of(req);
    if (mm_state_owns(fs->state, ino)) {
        mm_state_getxattr(fs->state, req, ino, name, size);
        return;
    }
    if (!known_ino(fs, ino)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    const root_xattr *x = ino == ROOT_INO ? find_root_xattr(name) : NULL;
    if (!x) {
        fuse_reply_err(req, ENODATA);
        return;
    }
    mm_buf value = {0};
    x->render(fs, &value);
    reply_xattr_bytes(req, size, value.data, value.len);
    mm_buf_free(&value);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    fs_state *fs = fs_of(req);
    if (mm_state_owns(fs->state, ino)) {
        mm_state_listxattr(fs->state, req, ino, size);
        return;
    }
    if (!known_ino(fs, ino)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    mm_buf names = {0};
    if (ino == ROOT_INO)
        for (const root_xattr *x = k_root_xattrs; x->name; x++)
            mm_buf_append(&names, x->name, strlen(x->name) + 1);
    reply_xattr_bytes(req, size, names.data, names.len);
    mm_buf_free(&names);
}

mm_state *mm_fs_state(fuse_req_t req)
{
    return fs_of(req)->state;
}

/* The requests the model files and `.cache` share; mm_state_add_ops adds the rest. No flock, getlk or
 * setlk: the kernel keeps flock and fcntl locks itself (fs/state.h says why). */
static const struct fuse_lowlevel_ops k_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .open = op_open,
    .read = op_read,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .statfs = op_statfs,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
};

/* /proc/self/mountinfo escapes space, tab, newline and backslash in paths as \ooo. */
static void unescape_octal(char *s)
{
    char *out = s;
    for (const char *in = s; *in; out++) {
        if (in[0] == '\\' && in[1] >= '0' && in[1] <= '3' && in[2] >= '0' && in[2] <= '7' && in[3] >= '0' &&
            in[3] <= '7') {
            *out = (char)((in[1] - '0') * 64 + (in[2] - '0') * 8 + (in[3] - '0'));
            in += 4;
        } else {
            *out = *in++;
        }
    }
    *out = 0;
}

/* 1 if the canonical path is a mount point, 0 if not, -1 if mountinfo is unreadable. The table catches
 * bind mounts of a folder of the same filesystem, which a device comparison misses. */
static int listed_in_mountinfo(const char *canon)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    int found = 0;
    while (!found && getline(&line, &cap, f) > 0) {
        /* Fields: id parent major:minor root mountpoint ... */
        char *save = NULL, *field = strtok_r(line, " ", &save);
        for (int i = 0; field && i < 4; i++)
            field = strtok_r(NULL, " ", &save);
        if (!field)
            continue;
        unescape_octal(field);
        found = strcmp(field, canon) == 0;
    }
    free(line);
    fclose(f);
    return found;
}

static int is_mount_point(const char *path, const struct stat *st)
{
    char *canon = realpath(path, NULL);
    int listed = canon ? listed_in_mountinfo(canon) : -1;
    free(canon);
    if (listed >= 0)
        return listed;
    char *parent = mm_path_join(path, "..");
    struct stat pst;
    int r = stat(parent, &pst) == 0 && (pst.st_dev != st->st_dev || pst.st_ino == st->st_ino);
    free(parent);
    return r;
}

/* A non-empty mountpoint is allowed (FUSE 3 dropped the `nonempty` check): mounting over a folder only
 * hides its files until unmount, and users may want the merged view where an earlier copy lives. */
int mm_fs_check_mountpoint(const char *path, mm_err *err)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        int e = errno;
        if (e == ENOENT)
            return mm_err_set(err, -ENOENT, "mountpoint %s does not exist (create it with mkdir -p %s)", path,
                              path);
        if (e == ENOTCONN)
            return mm_err_set(err, -ENOTCONN,
                              "mountpoint %s is a FUSE mount whose daemon has died (unmount it with "
                              "fusermount3 -u %s)",
                              path, path);
        return mm_err_set(err, -e, "mountpoint %s: %s (check that it exists and you may enter it)", path,
                          strerror(e));
    }
    if (!S_ISDIR(st.st_mode))
        return mm_err_set(err, -ENOTDIR, "mountpoint %s is not a directory (mount on a directory)", path);
    if (is_mount_point(path, &st))
        return mm_err_set(err, -EBUSY, "%s is already a mount point (unmount it with fusermount3 -u %s)", path,
                          path);
    return 0;
}

/* libfuse splits -o on commas unless they are escaped with a backslash. */
static void append_escaped(mm_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == ',' || *s == '\\')
            mm_buf_puts(b, "\\");
        mm_buf_append(b, s, 1);
    }
}

/* User options first, ours last: later options win, and `default_permissions` (the kernel checks modes:
 * the model files are 0444) is not negotiable. The mount is not `ro`, so that `.cache/` can be written;
 * a user's `-o ro` makes all of it read-only, `.cache/` included. */
static int make_args(const mm_fs_options *opt, struct fuse_args *args)
{
    mm_buf o = {0};
    if (opt->fuse_opts && *opt->fuse_opts)
        mm_buf_printf(&o, "%s,", opt->fuse_opts);
    mm_buf_puts(&o, "default_permissions,subtype=mergemount,fsname=");
    append_escaped(&o, opt->fsname && *opt->fsname ? opt->fsname : "mergemount");
    int rc = fuse_opt_add_arg(args, "mergemount") || fuse_opt_add_arg(args, "-o") ||
             fuse_opt_add_arg(args, o.data) || (opt->debug && fuse_opt_add_arg(args, "-d"));
    mm_buf_free(&o);
    return rc ? -ENOMEM : 0;
}

static void init_state(fs_state *fs, mm_vfs *vfs)
{
    memset(fs, 0, sizeof *fs);
    fs->vfs = vfs;
    fs->count = mm_vfs_count(vfs);
    for (size_t i = 0; i < fs->count; i++)
        fs->total_bytes += mm_vfs_size(vfs, i);
    fs->uid = getuid();
    fs->gid = getgid();
    int64_t ns = mm_vfs_mtime(vfs);
    if (ns < 0)
        ns = 0;
    fs->mtime.tv_sec = (time_t)(ns / 1000000000);
    fs->mtime.tv_nsec = (long)(ns % 1000000000);
}

/* libfuse 3.14's multi-threaded loop can miss SIGINT/SIGTERM/SIGHUP: its handler only sets the exit
 * flag, and the main thread (waiting for the workers) notices only when the signal interrupts it or a
 * worker blocked in read(). A signal that lands on a worker between its flag check and its next read()
 * is lost until the next request arrives, which may be never (libfuse issue 997, fixed in 3.18; seen
 * here as a test that waited 20 s for the daemon to exit under heavy load). This thread re-sends the
 * signal to the main thread every 50 ms once the flag is set, until the loop has returned. */
typedef struct exit_nudge {
    struct fuse_session *se;
    pthread_t main;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
} exit_nudge;

static void *nudge_main(void *arg)
{
    exit_nudge *n = arg;
    pthread_mutex_lock(&n->lock);
    while (!n->done) {
        const struct timespec until = mm_deadline_in(50ull * 1000 * 1000);
        pthread_cond_timedwait(&n->cond, &n->lock, &until);
        /* Under the lock: `done` is set before the handlers are removed, so no signal follows it. */
        if (!n->done && fuse_session_exited(n->se))
            pthread_kill(n->main, SIGINT);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

/* Runs the session loop until unmount or a signal. A signal (positive return) is a clean stop. */
static int serve(struct fuse_session *se, fs_state *fs, const char *mountpoint, mm_err *err)
{
    struct fuse_loop_config cfg;
    memset(&cfg, 0, sizeof cfg);
    /* One shared /dev/fuse fd: clone_fd gains little at this request size and costs an fd per thread. */
    cfg.clone_fd = 0;
    cfg.max_idle_threads = k_max_idle_threads;
    exit_nudge nudge = {.se = se, .main = pthread_self()};
    pthread_mutex_init(&nudge.lock, NULL);
    mm_cond_init_monotonic(&nudge.cond);
    pthread_t nudger;
    int started = mm_thread_start_quiet(&nudger, nudge_main, &nudge) == 0;
    /* Reads still queued in the pool are answered before the session goes away. */
    mm_err perr;
    if (mm_pool_start(0, &fs->pool, &perr) < 0)
        mm_log_warn("%s; reads compute on libfuse's threads", perr.msg);
    int rc = fuse_session_loop_mt(se, &cfg);
    mm_pool_stop(fs->pool);
    fs->pool = NULL;
    if (started) {
        pthread_mutex_lock(&nudge.lock);
        nudge.done = 1;
        pthread_cond_signal(&nudge.cond);
        pthread_mutex_unlock(&nudge.lock);
        pthread_join(nudger, NULL);
    }
    pthread_cond_destroy(&nudge.cond);
    pthread_mutex_destroy(&nudge.lock);
    /* The kernel shuts the connection when the last user of an unmounted folder lets go. A libfuse
     * thread that was taking a request off /dev/fuse at that instant reads ECONNABORTED instead of
     * ENODEV (libfuse then prints "fuse: reading device: Software caused connection abort"). libfuse
     * does not ask for FUSE_ABORT_ERROR, so that race is the only source of the error: an unmount. */
    if (rc == -ECONNABORTED) {
        mm_log_debug("the kernel closed the connection to %s while a request was being read", mountpoint);
        rc = 0;
    }
    if (rc < 0)
        return mm_err_set(err, rc, "serving %s failed: %s", mountpoint, strerror(-rc));
    return 0;
}

/* The state of this vfs's mount, kept in <state_dir>/<id>. */
static mm_state *new_state(mm_vfs *vfs, const char *state_dir)
{
    if (!state_dir)
        return NULL;
    char id[65];
    mm_vfs_id(vfs, id);
    char *dir = mm_path_join(state_dir, id);
    mm_log_debug("state of this mount (.cache/): %s/%s", dir, MM_STATE_NAME);
    mm_state *s = mm_state_new(dir, ROOT_INO, FIRST_FILE_INO + mm_vfs_count(vfs));
    free(dir);
    return s;
}

int mm_fs_run(mm_vfs *vfs, const mm_fs_options *opt, mm_err *err)
{
    int rc = mm_fs_check_mountpoint(opt->mountpoint, err);
    if (rc < 0)
        return rc;
    /* fuse_daemonize changes directory to /, and unmounting needs the path afterwards. */
    char *mountpoint = realpath(opt->mountpoint, NULL);
    if (!mountpoint)
        return mm_err_set(err, -errno, "mountpoint %s: %s", opt->mountpoint, strerror(errno));

    fs_state fs;
    init_state(&fs, vfs);
    fs.state = new_state(vfs, opt->state_dir);
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    struct fuse_session *se = NULL;
    int mounted = 0, handlers = 0;
    rc = make_args(opt, &args);
    if (rc < 0) {
        mm_err_set(err, rc, "out of memory");
        goto out;
    }
    struct fuse_lowlevel_ops ops = k_ops;
    mm_state_add_ops(&ops);
    se = fuse_session_new(&args, &ops, sizeof ops, &fs);
    if (!se) {
        rc = mm_err_set(err, -EINVAL,
                        "invalid FUSE mount options '%s' (libfuse's message is above; see man 8 mount.fuse3)",
                        opt->fuse_opts ? opt->fuse_opts : "");
        goto out;
    }
    if (fuse_set_signal_handlers(se) != 0) {
        rc = mm_err_set(err, -EIO, "cannot install signal handlers for %s", mountpoint);
        goto out;
    }
    handlers = 1;
    if (fuse_session_mount(se, mountpoint) != 0) {
        rc = mm_err_set(err, -EIO,
                        "cannot mount on %s (libfuse's message is above; check that /dev/fuse exists and "
                        "fusermount3 is installed)",
                        mountpoint);
        goto out;
    }
    mounted = 1;
    if (opt->readahead_kb > 0 && geteuid() == 0) {
        fs.readahead_kb = opt->readahead_kb;
        atomic_store(&fs.readahead_mountpoint, mountpoint);
    }
    /* In the background the parent leaves through _exit(0) inside fuse_daemonize, and the child's
     * stdio goes to /dev/null: anything still buffered would be lost in both. */
    fflush(NULL);
    if (fuse_daemonize(opt->foreground || opt->debug) != 0) {
        rc = mm_err_set(err, -EAGAIN, "cannot go to the background to serve %s (run in the foreground with -f)",
                        mountpoint);
        goto out;
    }
    if (opt->after_daemonize) {
        int r = opt->after_daemonize(opt->arg);
        if (r != 0) {
            rc = mm_err_set(err, r < 0 ? r : -EIO, "mount of %s aborted: start-up after daemonising failed",
                            mountpoint);
            goto out;
        }
    }
    rc = serve(se, &fs, mountpoint, err);
out:
    if (mounted)
        fuse_session_unmount(se);
    if (handlers)
        fuse_remove_signal_handlers(se);
    if (se)
        fuse_session_destroy(se);
    fuse_opt_free_args(&args);
    mm_state_close(fs.state);
    free(mountpoint);
    return rc;
}
