/* `mergemount mount CONFIG MOUNTPOINT` and mount(8)'s `mergemount CONFIG MOUNTPOINT -o OPTIONS`: parses
 * the options (the command line's and -o's, tools/mountopts.h), settles what the caller must hear
 * about before anything is mounted (the mountpoint, the log file), loads the plan and hands the vfs to
 * the FUSE adapter. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "merge/moe/forward.h"
#include "cache/cache.h"
#include "fs/fs.h"
#include "fs/fuselog.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/mountopts.h"

enum { OPT_READAHEAD = MM_OPT_COMMON_END, OPT_LOG_FILE, OPT_STATE_DIR };

static const char usage_mount[] =
    "usage: mergemount mount CONFIG MOUNTPOINT [-f] [-d] [-o OPTIONS] [--log-file FILE] [merge options]\n"
    "       mergemount CONFIG MOUNTPOINT [-o OPTIONS]             (how mount.fuse3 runs it)\n"
    "       mount -t fuse.mergemount CONFIG MOUNTPOINT [-o OPTIONS]\n"
    "       fstab: /path/merge.yml /mnt/merged fuse.mergemount ro,nofail,cache_dir=/var/cache/mergemount 0 0\n"
    "\n"
    "  -f, --foreground          stay in the foreground; Ctrl-C or SIGTERM unmounts\n"
    "  -d, --debug               libfuse debug output (implies -f)\n"
    "  -o OPT[,OPT...]           mount options (may be repeated). Each long option below is one, with '_'\n"
    "                            for '-': -o cache_dir=DIR,no_cache is --cache-dir DIR --no-cache.\n"
    "                            FUSE options (allow_other, allow_root, auto_unmount, default_permissions,\n"
    "                            ro, nosuid, fsname=, ...) go to libfuse; mount(8)'s generic ones\n"
    "                            (defaults, nofail, _netdev, noauto, user, x-*, comment=, ...) are\n"
    "                            ignored; anything else is an error. A comma in a value is written \\,\n"
    "  --log-file FILE           once mounted, append messages to FILE (opened before mounting);\n"
    "                            otherwise they go to stderr with -f, else to syslog (ident mergemount,\n"
    "                            facility daemon; the journal), each line naming the mountpoint\n"
    "  --readahead KB            the mount's readahead when run as root (default 1024; 0 keeps the\n"
    "                            kernel's 128): larger requests, fewer round trips\n"
    "  --state-dir DIR           where the mount's writable .cache/ is kept, in DIR/<recipe id>/\n"
    "                            (default: CACHE-DIR/state, also with --no-cache)\n";

typedef struct mount_args {
    mm_fs_options fo;
    mm_mountopts mo;    /* every -o: its long options (applied as read) and the rest, for libfuse */
    mm_plan_options *po;
    mm_cli_cache cache_opt;
    const char *log_path; /* --log-file */
    int log_fd;           /* opened before daemonising, so that a bad path fails the mount; -1: none */
    char *mountpoint;     /* absolute: named in every line of a background log */
    char *fsname;         /* the config's absolute path: the source column of /proc/mounts and mount(8) */
    char *cache_dir;      /* absolute, resolved before daemonising (the daemon runs in /) */
    const char *state_dir_arg; /* --state-dir as given */
    char *state_dir;      /* absolute, as cache_dir */
    int logging_away;     /* messages go to the log file or syslog: say when the mount starts and ends */
    mm_vfs *vfs;
    mm_cache *cache;
} mount_args;

/* mount's long options, and so also its -o options (tools/mountopts.h). */
static const struct option k_mount_longopts[] = {{"foreground", no_argument, 0, 'f'},
                                                 {"debug", no_argument, 0, 'd'},
                                                 {"readahead", required_argument, 0, OPT_READAHEAD},
                                                 {"log-file", required_argument, 0, OPT_LOG_FILE},
                                                 {"state-dir", required_argument, 0, OPT_STATE_DIR},
                                                 MM_CLI_COMMON_LONGOPTS,
                                                 {0, 0, 0, 0}};

/* Until the mount is up, messages go to stderr: the terminal of whoever mounted, through mount(8) too.
 * From here on a background daemon's stderr is /dev/null, so they go to the log file or syslog. */
static int background_log(const mount_args *m)
{
    if (m->log_fd >= 0)
        mm_log_to_file(m->log_fd, m->mountpoint);
    else if (!m->fo.foreground)
        mm_log_to_syslog(m->mountpoint);
    else
        return 0;
    return 1;
}

/* Runs in the serving process. LMDB handles must not cross fork(): the cache is opened here. */
static int mount_after_daemonize(void *arg)
{
    mount_args *m = arg;
    m->logging_away = background_log(m);
    if (m->logging_away) {
        m->log_fd = -1; /* the log owns it now */
        mm_log_info("mounted %s (pid %ld)", m->fo.fsname, (long)getpid());
    }
    m->cache = mm_cli_attach_cache(m->vfs, &m->cache_opt, m->cache_dir);
    return 0;
}

static int mount_extra(int opt, const char *arg, void *ctx);

/* -o: the options that name long options are applied here, in order, as if given as such. */
static int mount_dash_o(mount_args *m, const char *arg)
{
    mm_err err = {{0}};
    size_t first = m->mo.n;
    if (mm_mountopts_parse(arg, k_mount_longopts, &m->mo, &err) < 0) {
        fprintf(stderr, "mergemount: error: %s\n", err.msg);
        return -EINVAL;
    }
    for (size_t i = first; i < m->mo.n; i++) {
        int rc = mm_cli_apply(m->mo.opts[i].val, m->mo.opts[i].arg, mount_extra, m, m->po, &m->cache_opt);
        if (rc != 0)
            return -EINVAL;
    }
    return 0;
}

static int mount_extra(int opt, const char *arg, void *ctx)
{
    mount_args *m = ctx;
    switch (opt) {
    case 'f': m->fo.foreground = 1; return 0;
    case 'd': m->fo.debug = 1; m->fo.foreground = 1; return 0;
    case 'o': return mount_dash_o(m, arg);
    case OPT_LOG_FILE: m->log_path = arg; return 0;
    case OPT_STATE_DIR: m->state_dir_arg = arg; return 0;
    case OPT_READAHEAD: {
        uint64_t v;
        if (mm_cli_parse_u64(arg, &v) < 0 || v > 65536) {
            fprintf(stderr, "mergemount: error: --readahead: '%s' is not a size in KiB (0..65536)\n", arg);
            return -EINVAL;
        }
        m->fo.readahead_kb = (unsigned)v;
        return 0;
    }
    default: return 1;
    }
}

/* What must be settled while the caller is still there to hear about it: the mountpoint, and the log
 * file (a path relative to the caller's directory; the daemon runs in /). */
static int mount_prepare(mount_args *m, const char *mountpoint)
{
    mm_err err = {{0}};
    if (strncmp(mountpoint, "/dev/fd/", 8) == 0) {
        /* mount.fuse3 mounts by itself for drop_privileges and passes the open /dev/fuse this way; that
         * mount has no daemon now, and only an unmount ends it. */
        fprintf(stderr, "mergemount: error: mountpoint %s: mount.fuse3's drop_privileges option is not "
                "supported (leave it out; setuid=USER runs mergemount as USER); unmount what it mounted with "
                "umount\n", mountpoint);
        return 1;
    }
    if (mm_fs_check_mountpoint(mountpoint, &err) < 0) {
        fprintf(stderr, "mergemount: error: %s\n", err.msg);
        return 1;
    }
    m->mountpoint = realpath(mountpoint, NULL);
    if (!m->mountpoint) {
        fprintf(stderr, "mergemount: error: mountpoint %s: %s\n", mountpoint, strerror(errno));
        return 1;
    }
    if (m->log_path) {
        m->log_fd = open(m->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0644);
        if (m->log_fd < 0) {
            fprintf(stderr, "mergemount: error: --log-file %s: cannot open for appending: %s\n", m->log_path,
                    strerror(errno));
            return 1;
        }
    }
    return 0;
}

static void mount_args_free(mount_args *m)
{
    mm_mountopts_free(&m->mo);
    if (m->log_fd >= 0)
        close(m->log_fd);
    free(m->mountpoint);
    free(m->cache_dir);
    free(m->state_dir);
    free(m->fsname);
}

int mm_cmd_mount(int argc, char **argv)
{
    mm_plan_options po;
    mm_plan_options_default(&po);
    mm_forward_plug(&po); /* the hidden gate modes of mergekit-moe configs */
    mount_args m = {.fo.readahead_kb = 1024, .po = &po, .log_fd = -1};
    mm_fs_log_through_mm();
    char *pos[2];
    int rc = mm_cli_parse(argc, argv, "fdo:vh", k_mount_longopts, usage_mount, mount_extra, &m, &po, &m.cache_opt,
                          pos, 2);
    if (rc == 0)
        rc = mount_prepare(&m, pos[1]);
    mm_config *cfg = NULL;
    mm_plan *plan = NULL;
    mm_vfs *vfs = NULL;
    if (rc == 0)
        rc = mm_cli_load(pos[0], &po, &cfg, &plan, &vfs);
    if (rc) {
        mount_args_free(&m);
        return rc;
    }
    m.fo.mountpoint = pos[1];
    m.fo.fuse_opts = m.mo.fuse.data;
    /* The config as mount(8) would name it, so `umount`, findmnt and fstab comparisons see one path. */
    m.fsname = mm_path_absolute(cfg->path);
    m.fo.fsname = m.fsname;
    m.fo.after_daemonize = mount_after_daemonize;
    m.fo.arg = &m;
    m.vfs = vfs;
    m.cache_dir = mm_cache_default_dir(m.cache_opt.dir);
    /* Beside the block cache by default, but not part of it: --no-cache keeps it there too. */
    m.state_dir = m.state_dir_arg ? mm_path_absolute(m.state_dir_arg) : mm_path_join(m.cache_dir, "state");
    m.fo.state_dir = m.state_dir;
    mm_err err = {{0}};
    rc = mm_fs_run(vfs, &m.fo, &err);
    /* Through the log: after daemonising, stderr is /dev/null. */
    if (rc < 0)
        mm_log_error("%s", err.msg);
    mm_cache_close(m.cache); /* commits what is still queued */
    if (rc == 0 && m.logging_away)
        mm_log_info("unmounted");
    mm_cli_unload(cfg, plan, vfs);
    mount_args_free(&m);
    return rc < 0 ? 1 : 0;
}
