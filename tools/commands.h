/* Subcommands that live outside main.c. Each takes the arguments after `mergemount` (argv[0] is the
 * subcommand's name) and returns the process exit status. */
#ifndef MM_COMMANDS_H
#define MM_COMMANDS_H

/* `mergemount stats MOUNTPOINT [--json]`: the counters of a running mount. */
int mm_cmd_stats(int argc, char **argv);
/* `mergemount cache stats|clear|prune [--cache-dir DIR] [--cache-size N]`. */
int mm_cmd_cache(int argc, char **argv);

#endif
