/* mount's -o options, as mount(8), fstab and mount.fuse3 give them ("-o ro,cache_dir=/x,allow_other").
 * One rule, no second table: an option is a long option of the command with '_' for '-'
 * (`cache_dir=DIR` is `--cache-dir DIR`, `no_cache` is `--no-cache`), looked up in the command's own
 * getopt table, so every long option, present or future, works in fstab too. Otherwise it is one of the
 * options libfuse's fuse_session_new accepts (allow_other, ro, fsname=, ...: passed on to libfuse), or a
 * generic mount(8) option that means nothing to a FUSE daemon (nofail, _netdev, x-*, ...: dropped).
 * Anything else is an error that names it. */
#ifndef MM_TOOLS_MOUNTOPTS_H
#define MM_TOOLS_MOUNTOPTS_H

#include <getopt.h>
#include <stddef.h>

#include "base/util.h"

/* A -o option that names a long option: what getopt_long would have returned for it. */
typedef struct mm_mountopt {
    int val;    /* the long option's `val` */
    char *arg;  /* its argument, unescaped (heap), or NULL when it has none */
} mm_mountopt;

/* Zero-initialise; several -o arguments accumulate in one. */
typedef struct mm_mountopts {
    mm_mountopt *opts; /* the long options, in the order given */
    size_t n, cap;
    mm_buf fuse;       /* options for libfuse, comma-separated, escapes as given (libfuse undoes them) */
} mm_mountopts;

/* Splits one -o argument at commas (a comma or backslash inside a value is escaped with a backslash,
 * as libfuse's fuse_opt reads it; "\ooo" is an octal byte) and sorts each option as above. `longopts`
 * is the command's getopt_long table; its "help" entry is never matched. Returns 0, or -EINVAL with a
 * message naming the option (unknown: with the nearest known name when one is close; a long option
 * without the value it needs, or with a value it does not take). On error `out` keeps what was added
 * before; free it either way. */
int mm_mountopts_parse(const char *arg, const struct option *longopts, mm_mountopts *out, mm_err *err);
void mm_mountopts_free(mm_mountopts *o);

#endif
