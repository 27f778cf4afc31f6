/* The virtual checkpoint folder: a flat list of files, each with an exact, immutable size, and the one
 * read path every consumer uses (FUSE, `build`, tests). A file is STATIC bytes (config.json, index,
 * model card), a SOURCE file served as it is (tokenizer files of the donor), a SHARD whose bytes
 * are a safetensors header followed by tensor data computed on demand, or the GGUF view of the merge
 * (merge/gguf/gguf_plan.h: a GGUF header and tensor data computed from the shards' tensors).
 *
 * Thread-safety: after creation the vfs is immutable; mm_vfs_read may be called from any number of
 * threads at once (no global lock on the read path). */
#ifndef MM_VFS_H
#define MM_VFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "blocks.h"
#include "base/util.h"

typedef struct mm_vfs mm_vfs;

/* Building a vfs (the planner does this; tests use it for small fixtures). Names are copied. */
mm_vfs *mm_vfs_new(void);
/* A file whose bytes are `data` (copied). */
void mm_vfs_add_static(mm_vfs *v, const char *name, const void *data, size_t len);
/* A regular file served from `path` as it is; size taken now (fstat); its reads fail once it changes
 * (merge/plan/srcfile.h). Returns 0 or -errno. */
int mm_vfs_add_source(mm_vfs *v, const char *name, const char *path);
/* The vfs of a plan: its files in name order, then the GGUF file when p->opt.gguf asks for one (named
 * after the config file: merge/gguf/gguf_plan.h), alone with p->opt.gguf_only. The plan must outlive the
 * vfs. Errors (the GGUF view's: an unsupported family or tokenizer) come with a message. */
struct mm_plan;
int mm_vfs_from_plan(const struct mm_plan *p, mm_vfs **out, mm_err *err);
/* Serves shard blocks through the block cache `c` from now on (NULL: compute every read). Call before
 * the first read; `dir` is reported in the statistics. */
struct mm_cache;
void mm_vfs_set_cache(mm_vfs *v, struct mm_cache *c, const char *dir);
/* The read counters (see merge/engine/blocks.h) as a JSON object. */
void mm_vfs_stats_json(mm_vfs *v, mm_buf *out);

/* Frees the vfs and everything it owns. No read may be running. */
void mm_vfs_free(mm_vfs *v);

/* Number of files; indexes 0..count-1 are stable for the life of the vfs. */
size_t mm_vfs_count(const mm_vfs *v);
/* Name (no '/') and exact size of file idx. */
const char *mm_vfs_name(const mm_vfs *v, size_t idx);
uint64_t mm_vfs_size(const mm_vfs *v, size_t idx);
/* Finds a file by name: 0 and *idx, or -ENOENT. */
int mm_vfs_lookup(const mm_vfs *v, const char *name, size_t *idx);
/* Latest mtime of the inputs (config file and sources), in nanoseconds since the epoch, for stat. It
 * depends on nothing else (not the time of mounting): clients that keep state about the files, such as
 * huggingface_hub's upload metadata, trust it only while a file looks no newer than their record. */
int64_t mm_vfs_mtime(const mm_vfs *v);
/* The identity of what the vfs serves, as 64 hex digits: SHA-256 over every file's name, kind and size
 * and what determines its bytes — a shard's header and the recipe hash of each of its tensors
 * (merge/plan/recipe.h), a static file's bytes, a served-as-is file's path and identity. The same
 * config over unchanged sources gives the same id at every mount and in every process; a change to
 * any served byte that recipes see (a weight, a parameter, the shard size, a donor file) gives another.
 * Mounts key the state clients keep beside the files by it (fs/state.h). Cost: one pass over the
 * static bytes and the tensor list. */
void mm_vfs_id(const mm_vfs *v, char hex[65]);

/* Reads up to len bytes at off of file idx into buf. Returns the number of bytes produced (short only at
 * end of file; 0 at or past EOF) or a negative errno: -EIO when a source file it needs cannot be read or
 * changed since it was opened (merge/plan/srcfile.h; a message naming the file is logged once). */
ssize_t mm_vfs_read(mm_vfs *v, size_t idx, uint64_t off, size_t len, void *buf);

/* The same bytes as mm_vfs_read when nothing must be computed or read from a source: headers, small
 * files and cached blocks (stored ones copied out of the cache's file). -EAGAIN when something must
 * (buf then holds garbage; nothing was counted). For answering at once what is cheap. */
ssize_t mm_vfs_read_cached(mm_vfs *v, size_t idx, uint64_t off, size_t len, void *buf);

/* Zero-copy reads. The same bytes as mm_vfs_read, as pieces pointing into the vfs's own memory (headers,
 * small files) and the block cache's writer queue (a shard's blocks; missing ones are computed first
 * into the queue, see mm_blocks_peek): returns the byte count, with iov[0..*niov) filled (at most `max`
 * pieces) and the memory held by h until mm_vfs_hold_release. -EAGAIN: read this range with mm_vfs_read
 * (no cache, a block already stored, a file served from its source or the GGUF view, or too many
 * pieces; h holds nothing). Other negative errno: the error mm_vfs_read would return. */
struct iovec;
typedef struct mm_vfs_hold {
    mm_blocks_hold blocks;
} mm_vfs_hold;
ssize_t mm_vfs_read_zc(mm_vfs *v, size_t idx, uint64_t off, size_t len, struct iovec *iov, size_t *niov, size_t max,
                       mm_vfs_hold *h);
void mm_vfs_hold_release(mm_vfs *v, mm_vfs_hold *h);

#endif
