/* Command-line parsing shared by the subcommands: the mergekit-yaml options every command takes, and
 * value parsers with messages that name the option. */
#ifndef MM_CLI_H
#define MM_CLI_H

#include <getopt.h>
#include <stdint.h>

#include "cache/cache.h"
#include "merge/engine/vfs.h"
#include "merge/plan/plan.h"

/* Parses a byte count with optional decimal K/M/B suffix (1e3/1e6/1e9), as mergekit's parse_kmb. */
int mm_cli_parse_size(const char *s, uint64_t *out);
/* Parses a non-negative integer. */
int mm_cli_parse_u64(const char *s, uint64_t *out);

/* Long options shared by all commands; their `val`s start at MM_OPT_BASE. */
enum {
    MM_OPT_BASE = 1000,
    MM_OPT_SHARD_SIZE = MM_OPT_BASE,
    MM_OPT_COPY_TOK,
    MM_OPT_NO_COPY_TOK,
    MM_OPT_CARD,
    MM_OPT_NO_CARD,
    MM_OPT_CRIMES,
    MM_OPT_SEED,
    MM_OPT_CACHE_DIR,
    MM_OPT_CACHE_SIZE,
    MM_OPT_NO_CACHE,
    MM_OPT_MOE_LAYOUT,
    MM_OPT_MOE_SAME,
    MM_OPT_GGUF,
    MM_OPT_GGUF_ONLY,
    MM_OPT_COMMON_END,
};
#define MM_CLI_COMMON_LONGOPTS                                                                         \
    {"out-shard-size", required_argument, 0, MM_OPT_SHARD_SIZE},                                       \
        {"copy-tokenizer", no_argument, 0, MM_OPT_COPY_TOK},                                           \
        {"no-copy-tokenizer", no_argument, 0, MM_OPT_NO_COPY_TOK},                                     \
        {"write-model-card", no_argument, 0, MM_OPT_CARD},                                             \
        {"no-write-model-card", no_argument, 0, MM_OPT_NO_CARD},                                       \
        {"allow-crimes", no_argument, 0, MM_OPT_CRIMES}, {"random-seed", required_argument, 0, MM_OPT_SEED}, \
        {"cache-dir", required_argument, 0, MM_OPT_CACHE_DIR},                                         \
        {"cache-size", required_argument, 0, MM_OPT_CACHE_SIZE}, {"no-cache", no_argument, 0, MM_OPT_NO_CACHE}, \
        {"moe-layout", required_argument, 0, MM_OPT_MOE_LAYOUT},                                       \
        {"i-understand-this-is-not-useful-without-training", no_argument, 0, MM_OPT_MOE_SAME},         \
        {"gguf", required_argument, 0, MM_OPT_GGUF}, {"gguf-only", no_argument, 0, MM_OPT_GGUF_ONLY},  \
        {"verbose", no_argument, 0, 'v'}, {"help", no_argument, 0, 'h'}

/* `--json`, the one option of `plan` and `stats` besides the shared ones: an extra-option handler
 * (mm_cli_parse) that sets the int ctx points to. Its `val` lies past every command's own options. */
enum { MM_OPT_JSON = MM_OPT_COMMON_END + 100 };
int mm_cli_json_extra(int opt, const char *arg, void *ctx);

/* Block-cache options (--cache-dir, --cache-size, --no-cache). */
typedef struct mm_cli_cache {
    const char *dir;     /* NULL: default location */
    uint64_t size;       /* 0: default */
    int disabled;
} mm_cli_cache;

/* Applies one shared option. Returns 0, or -EINVAL after printing a message. */
int mm_cli_common_option(int opt, const char *arg, mm_plan_options *po, mm_cli_cache *cache);

typedef int (*mm_cli_extra_fn)(int opt, const char *arg, void *ctx);
/* Applies one option as getopt_long returned it (opt = its `val`): a shared one to po/cache, any other
 * through `extra`. Returns 0, -EINVAL after printing a message, or 1 if nothing takes it. mm_cli_parse
 * calls it for every option, and mount for each long option named in -o (tools/mountopts.h). */
int mm_cli_apply(int opt, const char *arg, mm_cli_extra_fn extra, void *ctx, mm_plan_options *po,
                 mm_cli_cache *cache);

/* Parses a subcommand's arguments (argv[0] is the subcommand). Shared options go to po/cache (either
 * may be NULL when the command has none); `extra` handles the command's own options (returns 0 if it
 * took the option, -EINVAL for a bad value, 1 if unknown). Exactly npos positional arguments go to
 * pos[]. Returns 0, or an exit status (2) after printing usage. --help prints `usage`, then the help of
 * the shared options the command takes (merge options when po is given, cache options when cache is),
 * and exits 0. */
int mm_cli_parse(int argc, char **argv, const char *shortopts, const struct option *longopts, const char *usage,
                 mm_cli_extra_fn extra, void *ctx, mm_plan_options *po, mm_cli_cache *cache, char **pos, int npos);

/* Loads the config at path and plans it, and makes its virtual files when vfs is not NULL. On failure
 * prints the error (file:line:column and the fix) to stderr, leaves *cfg and *plan NULL, and returns 1,
 * the exit status. Free with mm_cli_unload. */
int mm_cli_load(const char *path, const mm_plan_options *po, mm_config **cfg, mm_plan **plan, mm_vfs **vfs);
void mm_cli_unload(mm_config *cfg, mm_plan *plan, mm_vfs *vfs);

/* Opens the block cache at dir (absolute) for vfs, as the cache options say: NULL when disabled, and
 * also when it cannot be opened (one warning), since a cache problem means running uncached, never
 * failing. Close with mm_cache_close after the vfs is no longer read. */
mm_cache *mm_cli_attach_cache(mm_vfs *vfs, const mm_cli_cache *co, const char *dir);

#endif
