/* Raising a FUSE mount's readahead (docs/design.md, FUSE rules): buffered and mmap reads
 * reach the daemon in readahead-sized requests, 128 KiB by default; with 1 MiB each request covers a
 * whole cache block. Only root may write the mount's BDI setting. */
#ifndef MM_FS_READAHEAD_H
#define MM_FS_READAHEAD_H

#include "base/util.h"

/* Sets read_ahead_kb of the FUSE mount at `mountpoint` (an absolute, resolved path) via
 * /sys/class/bdi/<major>:<minor>/read_ahead_kb, finding major:minor in /proc/self/mountinfo (never by
 * stat()ing the mountpoint from the daemon: that would wait on the daemon itself). Returns 0 or -errno
 * with a message. */
int mm_fs_set_readahead(const char *mountpoint, unsigned kb, mm_err *err);

#endif
