/* The `mergemount` command: mount, build, plan, version. No merge logic here: each subcommand parses
 * its arguments, loads the config, builds the plan and hands the vfs to the FUSE adapter or the
 * builder. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../config/config.h"
#include "../fs/fs.h"
#include "../merge/plan.h"
#include "../merge/vfs.h"
#include "build.h"
#include "cli.h"

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
    "  version                   print the version (also --version)\n"
    "\n"
    "Run `mergemount <command> --help` for the options of a command.\n";

static const char usage_mount[] =
    "usage: mergemount mount CONFIG MOUNTPOINT [-f] [-d] [-o FUSE-OPTIONS] [merge options]\n"
    "\n"
    "  -f, --foreground          stay in the foreground; Ctrl-C or SIGTERM unmounts\n"
    "  -d, --debug               libfuse debug output (implies -f)\n"
    "  -o OPT[,OPT...]           FUSE mount options, e.g. allow_other (may be repeated)\n";

static const char usage_build[] =
    "usage: mergemount build CONFIG OUTDIR [--force] [-j N] [--progress|--no-progress] [merge options]\n"
    "\n"
    "  --force                   replace a non-empty OUTDIR\n"
    "  -j, --jobs N              worker threads (default: all cores)\n"
    "  --progress, --no-progress progress bar (default: when stderr is a terminal)\n";

static const char usage_plan[] = "usage: mergemount plan CONFIG [--json] [merge options]\n"
                                 "\n"
                                 "  --json                    machine-readable output\n";

static void print_help(const char *usage)
{
    printf("%s\n%s", usage, mm_cli_common_help);
}

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

enum { OPT_FORCE = MM_OPT_COMMON_END, OPT_PROGRESS, OPT_NO_PROGRESS, OPT_JSON };

/* Parses the options of one subcommand. `extra` handles the command's own options (returns 0 if it
 * took the option, -EINVAL for a bad value, 1 if unknown). Positional arguments go to pos[]. */
typedef int (*extra_fn)(int opt, const char *arg, void *ctx);

static int parse(int argc, char **argv, const char *shortopts, const struct option *longopts, const char *usage,
                 extra_fn extra, void *ctx, mm_plan_options *po, char **pos, int npos)
{
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        if (opt == 'h') {
            print_help(usage);
            exit(0);
        }
        if (opt == '?') {
            fprintf(stderr, "%s", usage);
            return 2;
        }
        if ((opt >= MM_OPT_BASE && opt < MM_OPT_COMMON_END) || opt == 'v') {
            if (mm_cli_common_option(opt, optarg, po) < 0)
                return 2;
            continue;
        }
        int rc = extra ? extra(opt, optarg, ctx) : 1;
        if (rc < 0)
            return 2;
        if (rc > 0) {
            fprintf(stderr, "%s", usage);
            return 2;
        }
    }
    if (argc - optind != npos) {
        fprintf(stderr, "mergemount: error: expected %d argument%s, got %d\n%s", npos, npos == 1 ? "" : "s",
                argc - optind, usage);
        return 2;
    }
    for (int i = 0; i < npos; i++)
        pos[i] = argv[optind + i];
    return 0;
}

/* ---- mount ---- */

typedef struct mount_args {
    mm_fs_options fo;
    mm_buf opts;
} mount_args;

static int mount_extra(int opt, const char *arg, void *ctx)
{
    mount_args *m = ctx;
    switch (opt) {
    case 'f': m->fo.foreground = 1; return 0;
    case 'd': m->fo.debug = 1; m->fo.foreground = 1; return 0;
    case 'o':
        mm_buf_printf(&m->opts, "%s%s", m->opts.len ? "," : "", arg);
        return 0;
    default: return 1;
    }
}

static int cmd_mount(int argc, char **argv)
{
    static const struct option lo[] = {{"foreground", no_argument, 0, 'f'}, {"debug", no_argument, 0, 'd'},
                                       MM_CLI_COMMON_LONGOPTS, {0, 0, 0, 0}};
    mm_plan_options po;
    mm_plan_options_default(&po);
    mount_args m = {0};
    char *pos[2];
    int rc = parse(argc, argv, "fdo:vh", lo, usage_mount, mount_extra, &m, &po, pos, 2);
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
    rc = mm_fs_run(vfs, &m.fo, &err);
    if (rc < 0)
        fprintf(stderr, "mergemount: error: %s\n", err.msg);
    unload(cfg, plan, vfs);
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
    char *pos[2];
    int rc = parse(argc, argv, "j:vh", lo, usage_build, build_extra, &bo, &po, pos, 2);
    if (rc)
        return rc;
    bo.outdir = pos[1];
    mm_config *cfg = NULL;
    mm_plan *plan = NULL;
    mm_vfs *vfs = NULL;
    if (load(pos[0], &po, &cfg, &plan, &vfs))
        return 1;
    mm_err err = {{0}};
    rc = mm_build_run(vfs, &bo, &err);
    if (rc < 0)
        fprintf(stderr, "mergemount: error: %s\n", err.msg);
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
    int rc = parse(argc, argv, "vh", lo, usage_plan, plan_extra, &json, &po, pos, 1);
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
    fprintf(stderr, "mergemount: error: unknown command '%s'\n%s", cmd, usage_main);
    return 2;
}
