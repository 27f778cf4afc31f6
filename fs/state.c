/* The writable subtree (fs/state.h): opening the state directory, names (lookup, create, mkdir,
 * unlink, rmdir, rename, link) and attributes; open files and directories are in state_files.c. */
#include "state_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

mm_state *mm_state_new(const char *dir, fuse_ino_t root_ino, fuse_ino_t first_ino)
{
    /* Every inode of the subtree the kernel holds keeps a descriptor open here (state_nodes.h), and the
     * usual soft limit of 1024 would cap them; the hard limit is what the process may have anyway. */
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    mm_state *s = mm_xcalloc(1, sizeof *s);
    s->dir = mm_xstrdup(dir);
    s->root_ino = root_ino;
    s->first_ino = first_ino;
    s->chown_new = geteuid() == 0;
    atomic_init(&s->warned, 0);
    mm_snodes_init(&s->nodes, first_ino);
    return s;
}

void mm_state_close(mm_state *s)
{
    if (!s)
        return;
    mm_snodes_destroy(&s->nodes);
    free(s->dir);
    free(s);
}

int mm_state_owns(const mm_state *s, fuse_ino_t ino)
{
    return s && ino >= s->first_ino;
}

mm_snode *mm_state_node(mm_state *s, fuse_ino_t ino)
{
    return mm_state_owns(s, ino) ? mm_snodes_find(&s->nodes, ino) : NULL;
}

const char *mm_state_proc_path(char buf[32], int fd)
{
    snprintf(buf, 32, "/proc/self/fd/%d", fd);
    return buf;
}

void mm_state_forget(mm_state *s, fuse_ino_t ino, uint64_t nlookup)
{
    if (mm_state_owns(s, ino))
        mm_snodes_forget(&s->nodes, ino, nlookup);
}

/* Inodes of the model files and the root are fixed for the life of the mount and need no count. */
static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    mm_state_forget(mm_fs_state(req), ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    mm_state *s = mm_fs_state(req);
    for (size_t i = 0; i < count; i++)
        mm_state_forget(s, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

/* The kernel sends single path components and resolves "." and ".." itself; anything else would be a
 * way out of the directory, so it is refused rather than trusted. */
static int valid_name(const char *name)
{
    return name[0] && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 && !strchr(name, '/');
}

/* The state directory as it is now (O_PATH), looked up by its path every time: it is made only when a
 * client first makes `.cache` (make: mkdir -p, 0700, as what clients keep there is theirs alone), so a
 * mount that is only read leaves nothing on disk, and one that was removed while mounted is made again.
 * A state directory that cannot be made is logged once; the request gets the error. */
static int open_state_dir(mm_state *s, int make, int *fd)
{
    if (make) {
        int rc = mm_mkdir_p(s->dir, 0700);
        if (rc < 0) {
            if (!atomic_exchange(&s->warned, 1))
                mm_log_warn("cannot create the state directory %s: %s; `.cache/` cannot be made in this mount",
                            s->dir, strerror(-rc));
            return rc;
        }
    }
    *fd = open(s->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    return *fd < 0 ? -errno : 0;
}

/* The directory a request on a name works in: a node's descriptor, or one of the state directory that
 * done_at closes. */
typedef struct at_dir {
    int fd, owned;
} at_dir;

static void done_at(at_dir *d)
{
    if (d->owned)
        close(d->fd);
    d->owned = 0;
}

/* What a request may do with `.cache` in the root. */
enum { ROOT_NONE, ROOT_LOOK, ROOT_MAKE };

/* The backing directory a request on `name` in `parent` works in: the parent's node, or for the mount
 * root the state directory, where only `.cache` itself exists for the mount (`root`: what the request
 * may do there). 0 and *d, or -errno: EROFS for a write outside the subtree (the model files, the rest
 * of the root, a mount without state). */
static int dir_at(mm_state *s, fuse_ino_t parent, const char *name, int write, int root, at_dir *d)
{
    d->owned = 0;
    if (!s)
        return write ? -EROFS : -ENOENT;
    if (parent == s->root_ino) {
        if (root == ROOT_NONE || strcmp(name, MM_STATE_NAME) != 0)
            return write ? -EROFS : -ENOENT;
        int rc = open_state_dir(s, root == ROOT_MAKE, &d->fd);
        d->owned = rc == 0;
        /* A state directory that is not there (or not reachable) only means there is no `.cache` yet. */
        return rc < 0 && root == ROOT_LOOK ? -ENOENT : rc;
    }
    if (!mm_state_owns(s, parent))
        return write ? -EROFS : -ENOTDIR;
    mm_snode *n = mm_state_node(s, parent);
    if (!n)
        return -ESTALE;
    if (n->type != S_IFDIR)
        return -ENOTDIR;
    if (!valid_name(name))
        return -EINVAL;
    d->fd = n->fd;
    return 0;
}

/* Makes the entry of the object behind pathfd (O_PATH, taken over), counted as a lookup. In the root
 * only a directory is `.cache`. */
static int entry_of(mm_state *s, int pathfd, int must_be_dir, struct fuse_entry_param *e)
{
    struct stat st;
    int rc = fstatat(pathfd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
    if (rc == 0 && must_be_dir && !S_ISDIR(st.st_mode))
        rc = -ENOENT;
    if (rc < 0) {
        close(pathfd);
        return rc;
    }
    mm_snode *n = mm_snodes_get(&s->nodes, pathfd, &st);
    memset(e, 0, sizeof *e);
    e->ino = n->ino;
    e->attr = st;
    e->attr_timeout = MM_STATE_TIMEOUT;
    e->entry_timeout = MM_STATE_TIMEOUT;
    return 0;
}

int mm_state_lookup_at(mm_state *s, int dfd, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
    int fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    return entry_of(s, fd, parent == s->root_ino, e);
}

int mm_state_root_entry(mm_state *s, int count, struct fuse_entry_param *e)
{
    at_dir d;
    int rc = dir_at(s, s ? s->root_ino : 0, MM_STATE_NAME, 0, ROOT_LOOK, &d);
    if (rc == 0 && count) {
        rc = mm_state_lookup_at(s, d.fd, s->root_ino, MM_STATE_NAME, e);
    } else if (rc == 0) {
        memset(e, 0, sizeof *e);
        if (fstatat(d.fd, MM_STATE_NAME, &e->attr, AT_SYMLINK_NOFOLLOW) < 0)
            rc = -errno;
        else if (!S_ISDIR(e->attr.st_mode))
            rc = -ENOENT;
    }
    done_at(&d);
    return rc;
}

static void reply_entry_or_err(fuse_req_t req, int rc, const struct fuse_entry_param *e)
{
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_entry(req, e);
}

void mm_state_lookup(mm_state *s, fuse_req_t req, fuse_ino_t parent, const char *name)
{
    at_dir d;
    struct fuse_entry_param e;
    int rc = dir_at(s, parent, name, 0, ROOT_LOOK, &d);
    if (rc == 0)
        rc = mm_state_lookup_at(s, d.fd, parent, name, &e);
    done_at(&d);
    reply_entry_or_err(req, rc, &e);
}

static int stat_node(const mm_snode *n, struct stat *st)
{
    return fstatat(n->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static void reply_attr_of(fuse_req_t req, const mm_snode *n)
{
    struct stat st;
    int rc = n ? stat_node(n, &st) : -ESTALE;
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, MM_STATE_TIMEOUT);
}

void mm_state_getattr(mm_state *s, fuse_req_t req, fuse_ino_t ino)
{
    reply_attr_of(req, mm_state_node(s, ino));
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    mm_snode *n = mm_state_node(mm_fs_state(req), ino);
    char buf[4096];
    ssize_t len = n && n->type == S_IFLNK ? readlinkat(n->fd, "", buf, sizeof buf - 1) : -1;
    if (len < 0) {
        fuse_reply_err(req, n ? (n->type == S_IFLNK ? errno : EINVAL) : ESTALE);
        return;
    }
    buf[len] = 0;
    fuse_reply_readlink(req, buf);
}

void mm_state_statfs(mm_state *s, fuse_req_t req, fuse_ino_t ino)
{
    mm_snode *n = mm_state_node(s, ino);
    struct statvfs sv;
    if (!n)
        fuse_reply_err(req, ESTALE);
    else if (fstatvfs(n->fd, &sv) < 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_statfs(req, &sv);
}

/* ---- attributes ---- */

/* Only files and directories are acted on, and through their own descriptor: a symlink's attributes
 * would be changed through /proc by following it. */
static int plain_node(mm_state *s, fuse_ino_t ino, mm_snode **n)
{
    if (!mm_state_owns(s, ino))
        return -EROFS;
    *n = mm_state_node(s, ino);
    if (!*n)
        return -ESTALE;
    return (*n)->type == S_IFREG || (*n)->type == S_IFDIR ? 0 : -EPERM;
}

static int set_times(const char *proc, int fd, const struct stat *attr, int to_set)
{
    struct timespec tv[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};
    if (to_set & FUSE_SET_ATTR_ATIME_NOW)
        tv[0].tv_nsec = UTIME_NOW;
    else if (to_set & FUSE_SET_ATTR_ATIME)
        tv[0] = attr->st_atim;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW)
        tv[1].tv_nsec = UTIME_NOW;
    else if (to_set & FUSE_SET_ATTR_MTIME)
        tv[1] = attr->st_mtim;
    return (fd >= 0 ? futimens(fd, tv) : utimensat(AT_FDCWD, proc, tv, 0)) < 0 ? -errno : 0;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
    mm_snode *n;
    int rc = plain_node(mm_fs_state(req), ino, &n);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    char proc[32];
    mm_state_proc_path(proc, n->fd);
    /* An open file's own descriptor when there is one (ftruncate of a file opened for writing whose
     * mode no longer allows opening it again). */
    int fd = fi && n->type == S_IFREG ? (int)fi->fh : -1;
    if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
        uid_t uid = to_set & FUSE_SET_ATTR_UID ? attr->st_uid : (uid_t)-1;
        gid_t gid = to_set & FUSE_SET_ATTR_GID ? attr->st_gid : (gid_t)-1;
        if (fchownat(n->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
            rc = -errno;
    }
    if (rc == 0 && (to_set & FUSE_SET_ATTR_MODE) &&
        (fd >= 0 ? fchmod(fd, attr->st_mode) : chmod(proc, attr->st_mode)) < 0)
        rc = -errno;
    if (rc == 0 && (to_set & FUSE_SET_ATTR_SIZE) &&
        (fd >= 0 ? ftruncate(fd, attr->st_size) : truncate(proc, attr->st_size)) < 0)
        rc = -errno;
    if (rc == 0 && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
                              FUSE_SET_ATTR_MTIME_NOW)))
        rc = set_times(proc, fd, attr, to_set);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        reply_attr_of(req, n);
}

/* Extended attributes of files and directories, through /proc (the O_PATH descriptor cannot carry
 * them). The model files and the root have none and take none (fs.c answers for them). */

/* getxattr (name) or listxattr (NULL) with the size protocol: size 0 asks for the length. */
static void reply_xattr_call(fuse_req_t req, const mm_snode *n, const char *name, size_t size)
{
    char proc[32], *buf = NULL;
    if (size && !(buf = malloc(size))) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    mm_state_proc_path(proc, n->fd);
    ssize_t len = name ? getxattr(proc, name, buf, size) : listxattr(proc, buf, size);
    if (len < 0)
        fuse_reply_err(req, errno);
    else if (size == 0)
        fuse_reply_xattr(req, (size_t)len);
    else
        fuse_reply_buf(req, buf, (size_t)len);
    free(buf);
}

void mm_state_getxattr(mm_state *s, fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    mm_snode *n;
    if (plain_node(s, ino, &n) < 0)
        fuse_reply_err(req, ENODATA);
    else
        reply_xattr_call(req, n, name, size);
}

void mm_state_listxattr(mm_state *s, fuse_req_t req, fuse_ino_t ino, size_t size)
{
    mm_snode *n;
    if (plain_node(s, ino, &n) == 0)
        reply_xattr_call(req, n, NULL, size);
    else if (size == 0)
        fuse_reply_xattr(req, 0);
    else
        fuse_reply_buf(req, NULL, 0);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
    mm_snode *n;
    char proc[32];
    int rc = plain_node(mm_fs_state(req), ino, &n);
    if (rc == 0 && setxattr(mm_state_proc_path(proc, n->fd), name, value, size, flags) < 0)
        rc = -errno;
    fuse_reply_err(req, -rc);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    mm_snode *n;
    char proc[32];
    int rc = plain_node(mm_fs_state(req), ino, &n);
    if (rc == 0 && removexattr(mm_state_proc_path(proc, n->fd), name) < 0)
        rc = -errno;
    fuse_reply_err(req, -rc);
}

/* ---- names ---- */

/* A file or directory just made by a caller, as it would be on a local disk: owned by the caller when
 * the daemon is root (otherwise the daemon's user is the only one who can reach the mount's files
 * anyway), and with the mode asked for. The kernel has already applied the caller's umask; the backing
 * mkdir/open applied the daemon's as well, which must not take more away. Failures leave the object as
 * it was made: it exists either way, and the caller sees its real attributes. */
static void settle_new(mm_state *s, fuse_req_t req, int pathfd, mode_t mode)
{
    if (s->chown_new) {
        const struct fuse_ctx *c = fuse_req_ctx(req);
        if (fchownat(pathfd, "", c->uid, c->gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
            mm_log_debug("state: chown of a new object to %u:%u: %s", (unsigned)c->uid, (unsigned)c->gid,
                         strerror(errno));
    }
    struct stat st;
    char proc[32];
    if (fstatat(pathfd, "", &st, AT_EMPTY_PATH) == 0 && (st.st_mode & 0777) != (mode & 0777) &&
        chmod(mm_state_proc_path(proc, pathfd), (st.st_mode & 07000) | (mode & 0777)) < 0)
        mm_log_debug("state: chmod of a new object: %s", strerror(errno));
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    mm_state *s = mm_fs_state(req);
    at_dir d;
    int fd = -1;
    struct fuse_entry_param e;
    int rc = dir_at(s, parent, name, 1, ROOT_MAKE, &d);
    if (rc == 0 && mkdirat(d.fd, name, mode) < 0)
        rc = -errno;
    if (rc == 0 && (fd = openat(d.fd, name, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC)) < 0)
        rc = -errno;
    done_at(&d);
    if (rc == 0) {
        settle_new(s, req, fd, mode);
        rc = entry_of(s, fd, 1, &e);
    }
    reply_entry_or_err(req, rc, &e);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
    mm_state *s = mm_fs_state(req);
    at_dir d;
    int fd = -1, pathfd = -1;
    struct fuse_entry_param e;
    int rc = dir_at(s, parent, name, 1, ROOT_NONE, &d);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    const int dfd = d.fd; /* a node's: ROOT_NONE opens nothing to close */
    /* O_NOFOLLOW: a symlink of that name is never followed. O_DIRECT is the kernel's business: the
     * backing file is written in whatever pieces arrive. Made with O_EXCL first, to know whether this
     * call made it (and so settles its owner and mode). */
    int flags = (fi->flags & ~(O_DIRECT | O_CREAT | O_EXCL)) | O_NOFOLLOW | O_CLOEXEC;
    int made = 1;
    fd = openat(dfd, name, flags | O_CREAT | O_EXCL, mode);
    if (fd < 0 && errno == EEXIST && !(fi->flags & O_EXCL)) {
        made = 0;
        fd = openat(dfd, name, flags, mode);
    }
    char proc[32];
    if (fd < 0 || (pathfd = open(mm_state_proc_path(proc, fd), O_PATH | O_CLOEXEC)) < 0) {
        rc = -errno;
        if (fd >= 0)
            close(fd);
        fuse_reply_err(req, -rc);
        return;
    }
    if (made)
        settle_new(s, req, pathfd, mode);
    rc = entry_of(s, pathfd, 0, &e);
    if (rc < 0) {
        close(fd);
        fuse_reply_err(req, -rc);
        return;
    }
    fi->fh = (uint64_t)fd;
    fi->direct_io = 0; /* the page cache, so that mmap works */
    fi->keep_cache = 0;
    fuse_reply_create(req, &e, fi);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    (void)mode, (void)rdev;
    at_dir d;
    int rc = dir_at(mm_fs_state(req), parent, name, 1, ROOT_NONE, &d);
    /* Regular files arrive as create; devices, FIFOs and sockets are not made here. */
    fuse_reply_err(req, rc < 0 ? -rc : EPERM);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    (void)link;
    at_dir d;
    int rc = dir_at(mm_fs_state(req), parent, name, 1, ROOT_NONE, &d);
    /* A link stored here could point anywhere; readers following it would leave the subtree. */
    fuse_reply_err(req, rc < 0 ? -rc : EPERM);
}

static void remove_name(fuse_req_t req, fuse_ino_t parent, const char *name, int flags)
{
    at_dir d;
    int rc = dir_at(mm_fs_state(req), parent, name, 1, flags == AT_REMOVEDIR ? ROOT_LOOK : ROOT_NONE, &d);
    if (rc == 0 && unlinkat(d.fd, name, flags) < 0)
        rc = -errno;
    done_at(&d);
    fuse_reply_err(req, -rc);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_name(req, parent, name, 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_name(req, parent, name, AT_REMOVEDIR);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    mm_state *s = mm_fs_state(req);
    at_dir d, nd;
    /* Both ends inside (`.cache` itself stays where it is); RENAME_WHITEOUT is for overlay filesystems. */
    int rc = dir_at(s, parent, name, 1, ROOT_NONE, &d);
    if (rc == 0)
        rc = dir_at(s, newparent, newname, 1, ROOT_NONE, &nd);
    if (rc == 0 && (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)))
        rc = -EINVAL;
    if (rc == 0 && renameat2(d.fd, name, nd.fd, newname, flags) < 0)
        rc = -errno;
    fuse_reply_err(req, -rc);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    mm_state *s = mm_fs_state(req);
    at_dir nd;
    mm_snode *n = NULL;
    struct fuse_entry_param e;
    int rc = dir_at(s, newparent, newname, 1, ROOT_NONE, &nd);
    /* A model file has no backing file to link: as between two filesystems. */
    if (rc == 0 && !mm_state_owns(s, ino))
        rc = -EXDEV;
    if (rc == 0)
        rc = plain_node(s, ino, &n);
    if (rc == 0 && n->type != S_IFREG)
        rc = -EPERM;
    char proc[32];
    /* linkat through /proc follows the descriptor to the file itself, wherever it is now. */
    if (rc == 0 && linkat(AT_FDCWD, mm_state_proc_path(proc, n->fd), nd.fd, newname, AT_SYMLINK_FOLLOW) < 0)
        rc = -errno;
    if (rc == 0)
        rc = mm_state_lookup_at(s, nd.fd, newparent, newname, &e);
    reply_entry_or_err(req, rc, &e);
}

void mm_state_add_ops(struct fuse_lowlevel_ops *ops)
{
    ops->forget = op_forget;
    ops->forget_multi = op_forget_multi;
    ops->setattr = op_setattr;
    ops->readlink = op_readlink;
    ops->mknod = op_mknod;
    ops->mkdir = op_mkdir;
    ops->unlink = op_unlink;
    ops->rmdir = op_rmdir;
    ops->symlink = op_symlink;
    ops->rename = op_rename;
    ops->link = op_link;
    ops->create = op_create;
    ops->setxattr = op_setxattr;
    ops->removexattr = op_removexattr;
    ops->write = mm_state_op_write;
    ops->fallocate = mm_state_op_fallocate;
    ops->flush = mm_state_op_flush;
    ops->release = mm_state_op_release;
    ops->fsync = mm_state_op_fsync;
    ops->releasedir = mm_state_op_releasedir;
    ops->fsyncdir = mm_state_op_fsyncdir;
}
