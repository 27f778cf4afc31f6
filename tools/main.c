/* The `mergemount` command: mount, build, plan, version. No merge logic here: each subcommand parses
 * its arguments, loads the config, builds the plan and hands the vfs to the FUSE adapter or the
 * builder. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "config/config.h"
#include "fs/fs.h"
#include "fs/fuselog.h"
#include "merge/plan/plan.h"
#include "merge/engine/vfs.h"
#include "build.h"
#include "cli.h"
#include "commands.h"
#include "cache/cache.h"
#include "tools/mountopts.h"

static const char usage_main[] =
    "usage: mergemount <command> [options]\n"
    "\n"
    "Mounts a mergekit merge recipe as a Hugging Face checkpoint folder whose shards are\n"
    "computed on read.\n"
    "\n"
    "commands:\n"
    "  mount CONFIG MOUNTPOINT   mount the merged model (unmount with: fusermount3 -u MOUNTPOINT)\n"
    "  build CONFIG OUTDIR       write the same files to OUTDIR without FUSE\n"
    "  plan CONFIG               print output files and tensors with their sources; computes nothing\n"
    "  stats MOUNTPOINT          read counters of a mount (blocks computed, cache hits, ...)\n"
    "  cache stats|clear|prune   inspect or manage the block cache without a mount\n"
    "  version                   print the version (also --version)\n"
    "\n"
    "`mergemount CONFIG MOUNTPOINT [-o OPTIONS]` is `mergemount mount`: the form mount(8) runs for\n"
    "fuse.mergemount in fstab (a CONFIG named like a command is given with its folder: ./mount).\n"
    "\n"
    "Run `mergemount <command> --help` for the options of a command.\n";

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

static const char usage_build[] =
    "usage: mergemount build CONFIG OUTDIR [--force] [-j N] [--progress|--no-progress] [merge options]\n"
    "\n"
    "  --force                   replace a non-empty OUTDIR\n"
    "  -j, --jobs N              worker threads (default: all cores)\n"
    "  --progress, --no-progress progress bar (default: when stderr is a terminal)\n";

static const char usage_plan[] = "usage: mergemount plan CONFIG [--json] [merge options]\n"
                                 "\n"
                                 "  --json                    machine-readable output\n";

/* Loads the config and plans it; prints the error and returns non-zero on failure. */
static int load(const char *path, const mm_plan_options *po, mm_config **cfg, mm_plan **plan, mm_vfs **vfs)
{
    mm_err err = {{0}};
    int rc = mm_config_load(path, cfg, &err);
    if (rc == 0)
        rc = mm_plan_build(*cfg, po, plan, &err);
    if (rc == 0 && vfs)
        rc = mm_vfs_from_plan(*plan, vfs, &err);
    if (rc < 0) {
        fprintf(stderr, "mergemount: error: %s\n", err.msg);
        mm_plan_free(*plan);
        mm_config_free(*cfg);
        *plan = NULL;
        *cfg = NULL;
        return 1;
    }
    return 0;
}

static void unload(mm_config *cfg, mm_plan *plan, mm_vfs *vfs)
{
    mm_vfs_free(vfs);
    mm_plan_free(plan);
    mm_config_free(cfg);
}

enum { OPT_FORCE = MM_OPT_COMMON_END, OPT_PROGRESS, OPT_NO_PROGRESS, OPT_JSON, OPT_READAHEAD, OPT_LOG_FILE, OPT_STATE_DIR };

/* ---- mount ---- */

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

/* Opens the cache for a vfs; a cache that cannot be opened means running uncached, never failing. */
static mm_cache *attach_cache(mm_vfs *vfs, const mm_cli_cache *co, const char *dir)
{
    if (co->disabled)
        return NULL;
    mm_cache_options o = {.dir = dir, .size_limit = co->size};
    mm_cache *c = NULL;
    mm_err err = {{0}};
    if (mm_cache_open(&o, &c, &err) < 0) {
        mm_log_warn("%s; running without the block cache", err.msg);
        return NULL;
    }
    mm_vfs_set_cache(vfs, c, dir);
    return c;
}

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
    m->cache = attach_cache(m->vfs, &m->cache_opt, m->cache_dir);
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

static int cmd_mount(int argc, char **argv)
{
    mm_plan_options po;
    mm_plan_options_default(&po);
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
        rc = load(pos[0], &po, &cfg, &plan, &vfs);
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
    unload(cfg, plan, vfs);
    mount_args_free(&m);
    return rc < 0 ? 1 : 0;
}

/* ---- build ---- */

static int build_extra(int opt, const char *arg, void *ctx)
{
    mm_build_options *b = ctx;
    uint64_t v;
    switch (opt) {
    case OPT_FORCE: b->force = 1; return 0;
    case OPT_PROGRESS: b->progress = 1; return 0;
    case OPT_NO_PROGRESS: b->progress = 0; return 0;
    case 'j':
        if (mm_cli_parse_u64(arg, &v) < 0 || v == 0 || v > 1024) {
            fprintf(stderr, "mergemount: error: --jobs: '%s' is not a thread count (1..1024)\n", arg);
            return -EINVAL;
        }
        b->threads = (int)v;
        return 0;
    default: return 1;
    }
}

static int cmd_build(int argc, char **argv)
{
    static const struct option lo[] = {{"force", no_argument, 0, OPT_FORCE},
                                       {"progress", no_argument, 0, OPT_PROGRESS},
                                       {"no-progress", no_argument, 0, OPT_NO_PROGRESS},
                                       {"jobs", required_argument, 0, 'j'},
                                       MM_CLI_COMMON_LONGOPTS,
                                       {0, 0, 0, 0}};
    mm_plan_options po;
    mm_plan_options_default(&po);
    mm_build_options bo = {.progress = -1};
    mm_cli_cache co = {0};
    char *pos[2];
    int rc = mm_cli_parse(argc, argv, "j:vh", lo, usage_build, build_extra, &bo, &po, &co, pos, 2);
    if (rc)
        return rc;
    bo.outdir = pos[1];
    mm_config *cfg = NULL;
    mm_plan *plan = NULL;
    mm_vfs *vfs = NULL;
    if (load(pos[0], &po, &cfg, &plan, &vfs))
        return 1;
    char *dir = mm_cache_default_dir(co.dir);
    mm_cache *cache = attach_cache(vfs, &co, dir);
    mm_err err = {{0}};
    rc = mm_build_run(vfs, &bo, &err);
    if (rc < 0)
        fprintf(stderr, "mergemount: error: %s\n", err.msg);
    mm_cache_close(cache);
    free(dir);
    unload(cfg, plan, vfs);
    return rc < 0 ? 1 : 0;
}

/* ---- plan ---- */

static int plan_extra(int opt, const char *arg, void *ctx)
{
    (void)arg;
    if (opt != OPT_JSON)
        return 1;
    *(int *)ctx = 1;
    return 0;
}

static int cmd_plan(int argc, char **argv)
{
    static const struct option lo[] = {{"json", no_argument, 0, OPT_JSON}, MM_CLI_COMMON_LONGOPTS, {0, 0, 0, 0}};
    mm_plan_options po;
    mm_plan_options_default(&po);
    int json = 0;
    char *pos[1];
    int rc = mm_cli_parse(argc, argv, "vh", lo, usage_plan, plan_extra, &json, &po, NULL, pos, 1);
    if (rc)
        return rc;
    mm_config *cfg = NULL;
    mm_plan *plan = NULL;
    if (load(pos[0], &po, &cfg, &plan, NULL))
        return 1;
    mm_plan_print(plan, stdout, json);
    unload(cfg, plan, NULL);
    return 0;
}

/* The commands, which a first argument names before it could name a config file. */
static const char *const k_commands[] = {"mount", "build", "plan", "stats", "cache", "version", "help"};

/* `mergemount CONFIG MOUNTPOINT -o OPTIONS` is how mount.fuse3 runs us for `mount -t fuse.mergemount`
 * and fstab. A first argument that names a command is the command: mount(8) passes an existing source
 * as an absolute path, so a config named like a command is only mistaken for one when given without a
 * folder and not found, and then the command refuses mount.fuse3's arguments (version and help take
 * none), so nothing is mounted by mistake. A first argument that is not an existing path and is a typo
 * of a command is reported as an unknown command rather than mounted. */
static int is_mount_form(int argc, char **argv)
{
    const char *first = argv[1];
    if (argc < 3 || first[0] == '-' || !first[0])
        return 0;
    return access(first, F_OK) == 0 || !mm_suggest(first, k_commands, sizeof k_commands / sizeof k_commands[0]);
}

/* version and help ignore options (`version --help`), but refuse the MOUNTPOINT of mount.fuse3's form. */
static int no_arguments(int argc, char **argv)
{
    int i = 2;
    while (i < argc && argv[i][0] == '-')
        i++;
    if (i == argc)
        return 0;
    if (argv[1][0] == '-')
        fprintf(stderr, "mergemount: error: %s takes no arguments\n", argv[1]);
    else
        fprintf(stderr, "mergemount: error: %s takes no arguments (to mount a config file named '%s', give "
                "its folder: ./%s)\n", argv[1], argv[1], argv[1]);
    return 2;
}

int main(int argc, char **argv)
{
    /* Every FUSE worker allocates 1 MiB reply and block buffers. With glibc's default of up to 8 arenas
     * per core, each thread's arena keeps its freed buffers, and the daemon's memory grows with the
     * number of threads that ever served a read; two arenas bound that (the allocations are few and
     * large, so arena contention does not matter). */
    mallopt(M_ARENA_MAX, 2);
    if (argc < 2) {
        fprintf(stderr, "%s", usage_main);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        if (no_arguments(argc, argv))
            return 2;
        printf("mergemount %s\n", MM_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        if (no_arguments(argc, argv))
            return 2;
        printf("%s", usage_main);
        return 0;
    }
    if (!strcmp(cmd, "mount"))
        return cmd_mount(argc - 1, argv + 1);
    if (!strcmp(cmd, "build"))
        return cmd_build(argc - 1, argv + 1);
    if (!strcmp(cmd, "plan"))
        return cmd_plan(argc - 1, argv + 1);
    if (!strcmp(cmd, "stats"))
        return mm_cmd_stats(argc - 1, argv + 1);
    if (!strcmp(cmd, "cache"))
        return mm_cmd_cache(argc - 1, argv + 1);
    if (is_mount_form(argc, argv))
        return cmd_mount(argc, argv); /* argv[0] stands where the command name would be */
    const char *near = cmd[0] == '-' ? NULL : mm_suggest(cmd, k_commands, sizeof k_commands / sizeof k_commands[0]);
    if (near)
        fprintf(stderr, "mergemount: error: unknown command '%s' (did you mean '%s'?)\n%s", cmd, near, usage_main);
    else
        fprintf(stderr, "mergemount: error: unknown command '%s'\n%s", cmd, usage_main);
    return 2;
}
