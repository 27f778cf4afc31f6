/* Per-thread scratch buffers, kept from one call to the next.
 *
 * Why: the read path needs buffers of about a block (1 MiB) per request. Buffers that large are fresh
 * mmap()ed pages for malloc, and on the machines we measure, faulting and zeroing fresh pages on every
 * request cost more than computing the merge (a warm first read of a three-model merge took 2.8x as
 * long). A thread's buffers are therefore kept, grown when a larger one is asked for, and freed when
 * the thread ends.
 *
 * Each slot has one owner (the enum names it). A borrow of a slot that this thread already holds (a
 * nested call) gets a buffer of its own, freed by its return, so nesting is safe, only slower.
 * Borrowed memory is uninitialised. */
#ifndef MM_SCRATCH_H
#define MM_SCRATCH_H

#include <stddef.h>

typedef enum mm_scratch_slot {
    MM_SCRATCH_REPLY,       /* fs/fs.c: a read request's reply */
    MM_SCRATCH_ENGINE_VALS, /* merge/engine/engine.c: the float32 inputs, output and kernel scratch */
    MM_SCRATCH_ENGINE_RAW,  /* merge/engine/engine.c: an input's raw bytes */
    MM_SCRATCH_ENGINE_OUT,  /* merge/engine/engine.c: a range widened to the method's alignment */
    MM_SCRATCH_GGUF_VALUES, /* merge/engine/gguf_read.c */
    MM_SCRATCH_GGUF_ENCODED,
    MM_SCRATCH_GGUF_RAW,
    MM_SCRATCH_GGUF_PERMUTED,
    MM_SCRATCH_CACHE_VALUE, /* cache/cache_read.c: a stored value read to be verified */
    MM_SCRATCH_SLOTS
} mm_scratch_slot;

/* This thread's buffer `slot`, at least n bytes, or NULL when out of memory. Give it back with
 * mm_scratch_return before borrowing the slot again on this thread (a nested borrow is allowed, see
 * above). */
void *mm_scratch_borrow(mm_scratch_slot slot, size_t n);
/* Gives back what mm_scratch_borrow(slot, ...) returned (NULL is ignored). */
void mm_scratch_return(mm_scratch_slot slot, void *p);

#endif
