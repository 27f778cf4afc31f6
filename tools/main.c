/* The `mergemount` command: mount, build, plan, version. No merge logic here: each subcommand parses
 * its arguments, loads the config, builds the plan and hands the vfs to the FUSE adapter or the
 * builder. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "fs/fs.h"
#include "merge/plan/plan.h"
#include "merge/engine/vfs.h"
#include "build.h"
#include "cli.h"
#include "commands.h"
#include "cache/cache.h"

static const char usage_main[] =
    "usage: mergemount <command> [options]\n"
    "\n"
    "Mounts a mergekit merge recipe as a read-only Hugging Face checkpoint folder whose shards are\n"
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
    "Run `mergemount <command> --help` for the options of a command.\n";

static const char usage_mount[] =
    "usage: mergemount mount CONFIG MOUNTPOINT [-f] [-d] [-o FUSE-OPTIONS] [merge options]\n"
    "\n"
    "  -f, --foreground          stay in the foreground; Ctrl-C or SIGTERM unmounts\n"
    "  -d, --debug               libfuse debug output (implies -f)\n"
    "  -o OPT[,OPT...]           FUSE mount options, e.g. allow_other (may be repeated)\n"
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

enum { OPT_FORCE = MM_OPT_COMMON_END, OPT_PROGRESS, OPT_NO_PROGRESS, OPT_JSON, OPT_READAHEAD, OPT_STATE_DIR };

/* ---- mount ---- */

typedef struct mount_args {
    mm_fs_options fo;
    mm_buf opts;
    mm_cli_cache cache_opt;
    char *cache_dir;  /* absolute, resolved before daemonising (the daemon runs in /) */
    const char *state_dir_arg; /* --state-dir as given */
    char *state_dir;  /* absolute, as cache_dir */
    mm_vfs *vfs;
    mm_cache *cache;
} mount_args;

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

/* LMDB handles must not cross fork(): the cache is opened in the serving process. */
static int mount_after_daemonize(void *arg)
{
    mount_args *m = arg;
    m->cache = attach_cache(m->vfs, &m->cache_opt, m->cache_dir);
    return 0;
}

static int mount_extra(int opt, const char *arg, void *ctx)
{
    mount_args *m = ctx;
    switch (opt) {
    case 'f': m->fo.foreground = 1; return 0;
    case 'd': m->fo.debug = 1; m->fo.foreground = 1; return 0;
    case 'o':
        mm_buf_printf(&m->opts, "%s%s", m->opts.len ? "," : "", arg);
        return 0;
    case OPT_READAHEAD: {
        uint64_t v;
        if (mm_cli_parse_u64(arg, &v) < 0 || v > 65536) {
            fprintf(stderr, "mergemount: error: --readahead: '%s' is not a size in KiB (0..65536)\n", arg);
            return -EINVAL;
        }
        m->fo.readahead_kb = (unsigned)v;
        return 0;
    }
    case OPT_STATE_DIR: m->state_dir_arg = arg; return 0;
    default: return 1;
    }
}

static int cmd_mount(int argc, char **argv)
{
    static const struct option lo[] = {{"foreground", no_argument, 0, 'f'}, {"debug", no_argument, 0, 'd'},
                                       {"readahead", required_argument, 0, OPT_READAHEAD},
                                       {"state-dir", required_argument, 0, OPT_STATE_DIR},
                                       MM_CLI_COMMON_LONGOPTS, {0, 0, 0, 0}};
    mm_plan_options po;
    mm_plan_options_default(&po);
    mount_args m = {.fo.readahead_kb = 1024};
    char *pos[2];
    int rc = mm_cli_parse(argc, argv, "fdo:vh", lo, usage_mount, mount_extra, &m, &po, &m.cache_opt, pos, 2);
    if (rc) {
        mm_buf_free(&m.opts);
        return rc;
    }
    mm_err err = {{0}};
    if (mm_fs_check_mountpoint(pos[1], &err) < 0) {
        fprintf(stderr, "mergemount: error: %s\n", err.msg);
        mm_buf_free(&m.opts);
        return 1;
    }
    mm_config *cfg = NULL;
    mm_plan *plan = NULL;
    mm_vfs *vfs = NULL;
    if (load(pos[0], &po, &cfg, &plan, &vfs)) {
        mm_buf_free(&m.opts);
        return 1;
    }
    m.fo.mountpoint = pos[1];
    m.fo.fuse_opts = m.opts.data;
    m.fo.fsname = cfg->path;
    m.fo.after_daemonize = mount_after_daemonize;
    m.fo.arg = &m;
    m.vfs = vfs;
    m.cache_dir = mm_cache_default_dir(m.cache_opt.dir);
    /* Beside the block cache by default, but not part of it: --no-cache keeps it there too. */
    m.state_dir = m.state_dir_arg ? mm_path_absolute(m.state_dir_arg) : mm_path_join(m.cache_dir, "state");
    m.fo.state_dir = m.state_dir;
    rc = mm_fs_run(vfs, &m.fo, &err);
    if (rc < 0)
        fprintf(stderr, "mergemount: error: %s\n", err.msg);
    mm_cache_close(m.cache); /* commits what is still queued */
    unload(cfg, plan, vfs);
    free(m.cache_dir);
    free(m.state_dir);
    mm_buf_free(&m.opts);
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
        printf("mergemount %s\n", MM_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
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
    fprintf(stderr, "mergemount: error: unknown command '%s'\n%s", cmd, usage_main);
    return 2;
}
