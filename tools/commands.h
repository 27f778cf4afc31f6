/* The subcommands. Each takes the arguments after `mergemount` (argv[0] is the subcommand's name, or
 * for mount(8)'s form the program name) and returns the process exit status: 0, 1 when the work failed
 * (the message is printed), 2 for a bad command line. */
#ifndef MM_COMMANDS_H
#define MM_COMMANDS_H

/* `mergemount mount CONFIG MOUNTPOINT [options]`, and `mergemount CONFIG MOUNTPOINT -o OPTIONS`. */
int mm_cmd_mount(int argc, char **argv);
/* `mergemount build CONFIG OUTDIR [options]`. */
int mm_cmd_build(int argc, char **argv);
/* `mergemount plan CONFIG [--json] [options]`. */
int mm_cmd_plan(int argc, char **argv);
/* `mergemount stats MOUNTPOINT [--json]`: the counters of a running mount. */
int mm_cmd_stats(int argc, char **argv);
/* `mergemount cache stats|clear|prune [--cache-dir DIR] [--cache-size N]`. */
int mm_cmd_cache(int argc, char **argv);

#endif
