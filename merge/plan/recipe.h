/* Recipe hash of an output tensor: SHA-256 over everything that determines its bytes — engine version,
 * method, evaluated parameters, computation and output dtype, shape, random seed, and the identity of
 * each input tensor (file path, size, mtime, inode, ctime, offset, dtype, shape, crop). Same recipe => same bytes, so
 * the block cache can serve any mount of any config that yields the same tensor, and editing one
 * weight invalidates only the tensors it changes. The output name is part of it only for random
 * methods, whose generator is keyed by it. */
#ifndef MM_RECIPE_H
#define MM_RECIPE_H

#include "base/sha256.h"
#include "plan.h"
#include "srcfile.h"

/* Bumped whenever the engine's arithmetic changes, so old cache entries are never served. */
#define MM_ENGINE_VERSION "mergemount-engine-2"

void mm_recipe_hash(const mm_plan *p, const mm_out_tensor *t, unsigned char out[32]);

/* Adds a source file's identity as recipes see it (path, size, mtime, inode, ctime) to a hash: the
 * recipe of every tensor read from it, and the id of a vfs that serves it as it is (merge/engine/vfs.h). */
void mm_recipe_put_file(mm_sha256 *s, const char *path, const mm_file_id *id);

#endif
