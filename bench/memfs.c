/* mm-memfs: the FUSE transport ceiling for bench/run (issue 5). A read-only mount holding one file,
 * `data`, of a given size, whose reads are answered from a static buffer: no computation, no disk, so
 * reading it measures what the kernel and libfuse cost per byte. It is set up like mergemount's own
 * session (fs/fs.c): low-level API, multi-threaded loop with the same worker settings, max_background
 * 64, keep_cache and noflush on open, day-long entry/attr timeouts, and (as root) the mount's readahead
 * raised through fs/readahead.c by the first request after INIT.
 *
 * Usage: mm-memfs MOUNTPOINT SIZE [--readahead KB]   (always in the foreground; SIGINT/SIGTERM or
 * fusermount3 -u end it). SIZE in bytes, or with a K/M/G suffix (powers of 1024). */
#define FUSE_USE_VERSION 35

#include "tools/cli.h"
#include "fs/readahead.h"

#include <fuse_lowlevel.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { ROOT_INO = 1, FILE_INO = 2 };
static const char k_name[] = "data";
static const double k_timeout = 86400.0;
static const unsigned k_max_background = 64;

/* Larger than any single request the kernel sends (1 MiB with 256 pages). */
#define BUF_SIZE (8u << 20)
static char g_buf[BUF_SIZE];

static uint64_t g_size;
static unsigned g_readahead_kb = 1024;
static _Atomic(const char *) g_readahead_mp;

static void apply_readahead(void)
{
    const char *mp = atomic_exchange(&g_readahead_mp, NULL);
    if (!mp)
        return;
    mm_err err;
    if (mm_fs_set_readahead(mp, g_readahead_kb, &err) < 0)
        fprintf(stderr, "mm-memfs: %s\n", err.msg);
}

static void on_request(void)
{
    if (atomic_load_explicit(&g_readahead_mp, memory_order_relaxed))
        apply_readahead();
}

static void fill_stat(fuse_ino_t ino, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_uid = getuid();
    st->st_gid = getgid();
    st->st_blksize = 1 << 20;
    if (ino == ROOT_INO) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = (off_t)g_size;
        st->st_blocks = (blkcnt_t)((g_size + 511) / 512);
    }
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    conn->max_background = k_max_background;
    conn->congestion_threshold = k_max_background * 3 / 4;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    on_request();
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.entry_timeout = k_timeout;
    if (parent == ROOT_INO && strcmp(name, k_name) == 0) {
        e.ino = FILE_INO;
        e.attr_timeout = k_timeout;
        fill_stat(FILE_INO, &e.attr);
    }
    fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    on_request();
    if (ino != ROOT_INO && ino != FILE_INO) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st;
    fill_stat(ino, &st);
    fuse_reply_attr(req, &st, k_timeout);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)fi;
    on_request();
    if (ino != ROOT_INO) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    char buf[512];
    size_t used = 0;
    const char *names[] = {".", "..", k_name};
    const fuse_ino_t inos[] = {ROOT_INO, ROOT_INO, FILE_INO};
    for (off_t i = off; i < 3; i++) {
        struct stat st;
        fill_stat(inos[i], &st);
        size_t n = fuse_add_direntry(req, buf + used, sizeof buf - used, names[i], &st, i + 1);
        if (used + n > size || used + n > sizeof buf)
            break;
        used += n;
    }
    fuse_reply_buf(req, buf, used);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    on_request();
    if (ino != FILE_INO) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if ((fi->flags & O_ACCMODE) != O_RDONLY) {
        fuse_reply_err(req, EROFS);
        return;
    }
    fi->keep_cache = 1;
    fi->noflush = 1;
    fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    on_request();
    if (off < 0 || (uint64_t)off >= g_size) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    uint64_t left = g_size - (uint64_t)off;
    size_t n = size < left ? size : (size_t)left;
    if (n > BUF_SIZE)
        n = BUF_SIZE;
    fuse_reply_buf(req, g_buf, n);
}

static const struct fuse_lowlevel_ops k_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .readdir = op_readdir,
    .open = op_open,
    .read = op_read,
};

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 5 && strcmp(argv[3], "--readahead") == 0)) {
        fprintf(stderr, "usage: mm-memfs MOUNTPOINT SIZE [--readahead KB]\n");
        return 2;
    }
    if (mm_cli_parse_size(argv[2], &g_size) < 0) {
        fprintf(stderr, "mm-memfs: bad size '%s'\n", argv[2]);
        return 2;
    }
    if (argc == 5)
        g_readahead_kb = (unsigned)strtoul(argv[4], NULL, 10);
    for (size_t i = 0; i < BUF_SIZE; i++)
        g_buf[i] = (char)(i * 2654435761u >> 24);
    char *mountpoint = realpath(argv[1], NULL);
    if (!mountpoint) {
        fprintf(stderr, "mm-memfs: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    char *fargv[] = {argv[0], "-o", "ro,default_permissions,subtype=memfs,fsname=mm-memfs", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
    struct fuse_session *se = fuse_session_new(&args, &k_ops, sizeof k_ops, NULL);
    int rc = 1;
    if (!se)
        goto out;
    if (fuse_set_signal_handlers(se) != 0)
        goto destroy;
    if (fuse_session_mount(se, mountpoint) != 0)
        goto handlers;
    if (g_readahead_kb > 0 && geteuid() == 0)
        atomic_store(&g_readahead_mp, mountpoint);
    struct fuse_loop_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.clone_fd = 0;
    cfg.max_idle_threads = 10;
    rc = fuse_session_loop_mt(se, &cfg) < 0;
    fuse_session_unmount(se);
handlers:
    fuse_remove_signal_handlers(se);
destroy:
    fuse_session_destroy(se);
out:
    free(mountpoint);
    return rc;
}
