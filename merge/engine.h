/* The engine: produces any byte range of an output tensor's data from the matching element ranges of
 * its inputs, computing only what is asked for (plus at most one partial element at each end).
 *
 * Thread-safety: reentrant; no shared mutable state, so any number of threads may call it at once. */
#ifndef MM_ENGINE_H
#define MM_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "plan.h"

/* Fills buf with bytes [off, off + len) of tensor t's data (off relative to the start of its data;
 * off + len must not exceed its byte size). Returns 0, or -EIO when an input cannot be read (logged
 * with the file name), or -ENOMEM. */
int mm_engine_read(const mm_plan *p, const mm_out_tensor *t, uint64_t off, size_t len, void *buf);

#endif
