/* The writable subtree (fs/state.h): open files and directories. A file handle is the descriptor of
 * the backing file; a directory handle is its stream with the position the kernel last asked for. */
#include "state_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fd_of(const struct fuse_file_info *fi)
{
    return (int)fi->fh;
}

void mm_state_open_file(mm_state *s, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    mm_snode *n = mm_state_node(s, ino);
    if (!n) {
        fuse_reply_err(req, ESTALE);
        return;
    }
    /* Only regular files are opened by the daemon: a FIFO would block a worker, and a device node put
     * into the backing directory would be opened with the daemon's rights. */
    if (n->type != S_IFREG) {
        fuse_reply_err(req, n->type == S_IFDIR ? EISDIR : EPERM);
        return;
    }
    char proc[32];
    int fd = open(mm_state_proc_path(proc, n->fd),
                  (fi->flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW | O_DIRECT)) | O_CLOEXEC);
    if (fd < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    fi->fh = (uint64_t)fd;
    fi->direct_io = 0; /* the page cache, so that mmap works */
    fi->keep_cache = 0;
    fuse_reply_open(req, fi);
}

void mm_state_read(mm_state *s, fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)s;
    struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
    buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    buf.buf[0].fd = fd_of(fi);
    buf.buf[0].pos = off;
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void mm_state_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    if (!mm_state_owns(mm_fs_state(req), ino)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    ssize_t n = pwrite(fd_of(fi), buf, size, off);
    if (n < 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_write(req, (size_t)n);
}

void mm_state_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
    int rc = !mm_state_owns(mm_fs_state(req), ino) ? EROFS : fallocate(fd_of(fi), mode, off, len) < 0 ? errno : 0;
    fuse_reply_err(req, rc);
}

/* Handles of the model files and the root carry nothing: flush, release and fsync have nothing to do
 * for them. */

void mm_state_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    /* close() of a duplicate: where a filesystem reports errors of writes it deferred (NFS), as the
     * caller's close() would have. */
    int rc = 0, fd;
    if (mm_state_owns(mm_fs_state(req), ino) && ((fd = dup(fd_of(fi))) < 0 || close(fd) < 0))
        rc = errno;
    fuse_reply_err(req, rc);
}

void mm_state_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (mm_state_owns(mm_fs_state(req), ino))
        close(fd_of(fi));
    fuse_reply_err(req, 0);
}

static int sync_fd(int fd, int datasync)
{
    return (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? errno : 0;
}

void mm_state_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    fuse_reply_err(req, mm_state_owns(mm_fs_state(req), ino) ? sync_fd(fd_of(fi), datasync) : 0);
}

/* ---- directories ---- */

typedef struct state_dir {
    DIR *dp;
    off_t offset;         /* where dp stands: the offset the next entry read from it has */
    struct dirent *entry; /* read from dp but not sent yet (it did not fit) */
} state_dir;

static state_dir *dir_of(const struct fuse_file_info *fi)
{
    return (state_dir *)(uintptr_t)fi->fh;
}

void mm_state_opendir(mm_state *s, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    mm_snode *n = mm_state_node(s, ino);
    if (!n || n->type != S_IFDIR) {
        fuse_reply_err(req, n ? ENOTDIR : ESTALE);
        return;
    }
    int fd = openat(n->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dp = fd < 0 ? NULL : fdopendir(fd);
    if (!dp) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        fuse_reply_err(req, e);
        return;
    }
    state_dir *d = mm_xcalloc(1, sizeof *d);
    d->dp = dp;
    fi->fh = (uint64_t)(uintptr_t)d;
    fuse_reply_open(req, fi);
}

static int is_dot(const char *name)
{
    return strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
}

/* Entries from the stream, each with the offset of the one after it (what seekdir takes). With plus,
 * every entry but "." and ".." is a lookup the kernel will forget, undone for the one that does not fit.
 * An entry removed between reading and looking up is left out. An error after some entries are in the
 * buffer ends the reply there (their lookups are counted already); the next call meets it again. */
void mm_state_readdir(mm_state *s, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      struct fuse_file_info *fi, int plus)
{
    state_dir *d = dir_of(fi);
    mm_snode *n = mm_state_node(s, ino);
    char *buf = malloc(size ? size : 1);
    if (!n || !buf) {
        free(buf);
        fuse_reply_err(req, n ? ENOMEM : ESTALE);
        return;
    }
    if (off != d->offset) {
        seekdir(d->dp, off);
        d->entry = NULL;
        d->offset = off;
    }
    size_t used = 0;
    int err = 0;
    for (;;) {
        if (!d->entry) {
            errno = 0;
            d->entry = readdir(d->dp);
            if (!d->entry) {
                err = errno;
                break;
            }
        }
        const struct dirent *de = d->entry;
        struct fuse_entry_param e;
        memset(&e, 0, sizeof e);
        e.attr.st_ino = de->d_ino;
        e.attr.st_mode = DTTOIF(de->d_type);
        int counted = plus && !is_dot(de->d_name);
        if (counted) {
            int rc = mm_state_lookup_at(s, n->fd, ino, de->d_name, &e);
            if (rc == -ENOENT) {
                d->entry = NULL;
                d->offset = de->d_off;
                continue;
            }
            if (rc < 0) {
                err = -rc;
                break;
            }
        }
        size_t need = plus ? fuse_add_direntry_plus(req, buf + used, size - used, de->d_name, &e, de->d_off)
                           : fuse_add_direntry(req, buf + used, size - used, de->d_name, &e.attr, de->d_off);
        if (need > size - used) {
            if (counted)
                mm_state_forget(s, e.ino, 1);
            break;
        }
        used += need;
        d->offset = de->d_off;
        d->entry = NULL;
    }
    if (err && used == 0)
        fuse_reply_err(req, err);
    else
        fuse_reply_buf(req, buf, used);
    free(buf);
}

void mm_state_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (mm_state_owns(mm_fs_state(req), ino)) {
        state_dir *d = dir_of(fi);
        closedir(d->dp);
        free(d);
    }
    fuse_reply_err(req, 0);
}

void mm_state_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    fuse_reply_err(req, mm_state_owns(mm_fs_state(req), ino) ? sync_fd(dirfd(dir_of(fi)->dp), datasync) : 0);
}
