/* Command-line parsing shared by the subcommands: the mergekit-yaml options every command takes, and
 * value parsers with messages that name the option. */
#ifndef MM_CLI_H
#define MM_CLI_H

#include <stdint.h>

#include "../merge/plan.h"

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
    MM_OPT_COMMON_END,
};
#define MM_CLI_COMMON_LONGOPTS                                                                         \
    {"out-shard-size", required_argument, 0, MM_OPT_SHARD_SIZE},                                       \
        {"copy-tokenizer", no_argument, 0, MM_OPT_COPY_TOK},                                           \
        {"no-copy-tokenizer", no_argument, 0, MM_OPT_NO_COPY_TOK},                                     \
        {"write-model-card", no_argument, 0, MM_OPT_CARD},                                             \
        {"no-write-model-card", no_argument, 0, MM_OPT_NO_CARD},                                       \
        {"allow-crimes", no_argument, 0, MM_OPT_CRIMES}, {"random-seed", required_argument, 0, MM_OPT_SEED}, \
        {"verbose", no_argument, 0, 'v'}, {"help", no_argument, 0, 'h'}

/* Applies one shared option to the plan options. Returns 0, or -EINVAL after printing a message. */
int mm_cli_common_option(int opt, const char *arg, mm_plan_options *po);

/* Help text of the shared options. */
extern const char mm_cli_common_help[];

#endif
