/* The data of the GGUF view (merge/gguf/gguf_plan.h): any byte range of the file, computed from the
 * output tensors' bytes through the block layer (so the block cache serves the GGUF and the safetensors
 * view alike). A tensor's bytes are made a whole row at a time — every row of every type we write is
 * independent of the others: the source rows (for a permuted Q/K, the two runs of each head they come
 * from) are read, turned into float32 as the converter does, transformed (permutation, gemma's +1) and encoded (F32, F16, BF16,
 * Q8_0), and the asked-for part copied out. Padding between tensors is zeros.
 *
 * Thread-safety: reentrant, like mm_blocks_read. Memory: scratch proportional to the rows one call
 * touches (bounded per step: a quarter million values). */
#ifndef MM_GGUF_READ_H
#define MM_GGUF_READ_H

#include <stddef.h>
#include <stdint.h>

#include "blocks.h"
#include "merge/gguf/gguf_plan.h"

/* Bytes [off, off + len) of the file (off + len <= g->size). 0, or -EIO/-ENOMEM as mm_blocks_read. */
int mm_gguf_read(const mm_gguf_file *g, const mm_plan *p, mm_blocks *b, uint64_t off, size_t len, char *buf);

#endif
