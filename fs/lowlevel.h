/* The libfuse API this adapter is written against; every file of fs/ that speaks FUSE includes this
 * instead of <fuse_lowlevel.h>, so they all see the same version of the structs. */
#ifndef MM_FS_LOWLEVEL_H
#define MM_FS_LOWLEVEL_H

/* 35 (not 312) keeps the plain struct fuse_loop_config, which builds against every libfuse >= 3.10 that
 * meson accepts. 312 would add only fuse_loop_cfg_set_max_threads; libfuse >= 3.12 applies its default
 * of 10 workers either way. */
#define FUSE_USE_VERSION 35

#include <fuse_lowlevel.h>

#endif
