/* The engine: produces any byte range of an output tensor's data from the matching element ranges of
 * its inputs, computing only what is asked for (plus at most one partial element at each end).
 *
 * Thread-safety: reentrant; no shared mutable state, so any number of threads may call it at once. */
#ifndef MM_ENGINE_H
#define MM_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "merge/plan/plan.h"

/* Fills buf with bytes [off, off + len) of tensor t's data (off relative to the start of its data;
 * off + len must not exceed its byte size). `stats` is the tensor's statistics blob when its method
 * has a pre-pass (merge/engine/blocks.c obtains it), else NULL. Returns 0, or -EIO when an input cannot be
 * read or changed since it was opened (mm_srcfile_verify after the reads; logged once per file), or
 * -ENOMEM. */
int mm_engine_read(const mm_out_tensor *t, const void *stats, uint64_t off, size_t len, void *buf);

/* For pre-passes: calls fn(ctx, chunk) for consecutive chunks covering the whole tensor in order (aligned
 * as the method's kernels are; chunk->out is NULL, chunk->stats NULL). Memory stays bounded whatever
 * the tensor size. Returns 0, the first non-zero value fn returned, or -EIO/-ENOMEM (-EIO also when an
 * input changed while it was read: what fn accumulated must then be thrown away). */
typedef int (*mm_stream_fn)(void *ctx, const mm_kernel_args *chunk);
int mm_engine_stream(const mm_out_tensor *t, mm_stream_fn fn, void *ctx);
/* The same over elements [e0, e1) only, so that threads can share a pass: e0 must be a multiple of
 * the method's alignment (rows, granules) and e1 one too or the tensor's end; chunks start at e0. */
int mm_engine_stream_range(const mm_out_tensor *t, uint64_t e0, uint64_t e1, mm_stream_fn fn, void *ctx);
/* The same loading only the inputs whose bit is set in `load` (bit i: input i; MM_ENGINE_ALL_INPUTS is
 * every one), for passes that look at a few inputs: chunk->in[i] of the others is NULL. Packed experts
 * (t->concat_seg) are read as one input whatever `load` says. */
#define MM_ENGINE_ALL_INPUTS UINT64_MAX
int mm_engine_stream_inputs(const mm_out_tensor *t, uint64_t e0, uint64_t e1, uint64_t load, mm_stream_fn fn,
                            void *ctx);

/* Asks the kernel to start reading, in the background, the source bytes that elements [e0, e1) of t
 * need (posix_fadvise WILLNEED on each input's byte span), so that the disk works on all inputs at once
 * while the caller computes. A hint: never fails, costs one system call per input. */
void mm_engine_prefetch(const mm_out_tensor *t, uint64_t e0, uint64_t e1);

/* Elements per row as kernels see it: the last dimension, or the whole tensor when 1-D. */
uint64_t mm_engine_row_len(const mm_out_tensor *t);

#endif
