/* `mergemount build CONFIG OUTDIR`: the command's options; the builder itself is tools/build.c. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "merge/moe/forward.h"
#include "cache/cache.h"
#include "tools/build.h"
#include "tools/cli.h"
#include "tools/commands.h"

enum { OPT_FORCE = MM_OPT_COMMON_END, OPT_PROGRESS, OPT_NO_PROGRESS };

static const char usage_build[] =
    "usage: mergemount build CONFIG OUTDIR [--force] [-j N] [--progress|--no-progress] [merge options]\n"
    "\n"
    "  --force                   replace a non-empty OUTDIR\n"
    "  -j, --jobs N              worker threads (default: all cores)\n"
    "  --progress, --no-progress progress bar (default: when stderr is a terminal)\n";

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

int mm_cmd_build(int argc, char **argv)
{
    static const struct option lo[] = {{"force", no_argument, 0, OPT_FORCE},
                                       {"progress", no_argument, 0, OPT_PROGRESS},
                                       {"no-progress", no_argument, 0, OPT_NO_PROGRESS},
                                       {"jobs", required_argument, 0, 'j'},
                                       MM_CLI_COMMON_LONGOPTS,
                                       {0, 0, 0, 0}};
    mm_plan_options po;
    mm_plan_options_default(&po);
    mm_forward_plug(&po); /* the hidden gate modes of mergekit-moe configs */
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
    if (mm_cli_load(pos[0], &po, &cfg, &plan, &vfs))
        return 1;
    char *dir = mm_cache_default_dir(co.dir);
    mm_cache *cache = mm_cli_attach_cache(vfs, &co, dir);
    mm_err err = {{0}};
    rc = mm_build_run(vfs, &bo, &err);
    if (rc < 0)
        fprintf(stderr, "mergemount: error: %s\n", err.msg);
    mm_cache_close(cache);
    free(dir);
    mm_cli_unload(cfg, plan, vfs);
    return rc < 0 ? 1 : 0;
}
