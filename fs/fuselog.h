/* libfuse's own messages (bad options, mount failures, -d traces) through mergemount's log, so they
 * reach the same sink as ours (stderr, a --log-file or syslog) instead of a daemon's /dev/null. */
#ifndef MM_FS_FUSELOG_H
#define MM_FS_FUSELOG_H

/* Installs the handler with fuse_set_log_func; call once, before the first libfuse call. libfuse
 * writes some lines in pieces ("fuse: unknown option(s): `" then each option): the pieces are joined
 * per thread and logged as one line when its newline arrives. */
void mm_fs_log_through_mm(void);

#endif
