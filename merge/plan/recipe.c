#include "recipe.h"

#include <string.h>

#include "base/sha256.h"

/* Every field is written with its length or at a fixed width, so two different recipes can never
 * serialise to the same byte string. */
static void put_u64(mm_sha256 *s, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    mm_sha256_update(s, b, 8);
}

static void put_str(mm_sha256 *s, const char *str)
{
    size_t n = strlen(str);
    put_u64(s, n);
    mm_sha256_update(s, str, n);
}

static void put_double(mm_sha256 *s, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    put_u64(s, u);
}

static void put_params(mm_sha256 *s, const mm_param_def *defs, size_t n, const double *vals)
{
    put_u64(s, n);
    for (size_t k = 0; k < n; k++) {
        put_str(s, defs[k].name);
        put_double(s, vals[k]);
    }
}

void mm_recipe_hash(const mm_plan *p, const mm_out_tensor *t, unsigned char out[32])
{
    mm_sha256 s;
    mm_sha256_init(&s);
    put_str(&s, MM_ENGINE_VERSION);
    put_str(&s, t->method->name);
    put_u64(&s, (uint64_t)(int64_t)t->comp);
    put_u64(&s, (uint64_t)t->dtype);
    put_u64(&s, (uint64_t)t->ndim);
    for (int d = 0; d < t->ndim; d++)
        put_u64(&s, t->shape[d]);
    /* Random methods key their generator by the seed and the output name (D6); others must depend on
     * neither, so that another seed, or another config yielding the same tensor under another name,
     * shares the cache. */
    put_u64(&s, t->method->random ? p->opt.random_seed : 0);
    put_str(&s, t->method->random ? t->name : "");
    put_u64(&s, (uint64_t)(int64_t)t->base);
    put_params(&s, t->method->gparams, t->method->ngparams, t->gvals);
    put_u64(&s, t->ninputs);
    for (size_t i = 0; i < t->ninputs; i++) {
        const mm_input *in = &t->inputs[i];
        const mm_shard *sh = in->mt->shard;
        const mm_st_tensor *st = in->mt->st;
        const mm_file_id *id = mm_srcfile_id(sh->src);
        put_str(&s, sh->path);
        put_u64(&s, id->size);
        put_u64(&s, (uint64_t)id->mtime_ns);
        /* mtime alone can be set back (touch -r, cp -p, rsync -t, tar x) over other content of the same
         * size; ctime cannot, and a replaced file has another inode. The device number is left out:
         * for network and FUSE filesystems it changes at every mount of the filesystem, which would
         * throw the cache away after a reboot. */
        put_u64(&s, id->ino);
        put_u64(&s, (uint64_t)id->ctime_ns);
        put_u64(&s, sh->hdr.data_start + st->begin);
        put_u64(&s, (uint64_t)st->dtype);
        put_u64(&s, (uint64_t)st->ndim);
        for (int d = 0; d < st->ndim; d++)
            put_u64(&s, st->shape[d]);
        put_u64(&s, in->src_cols);
        put_params(&s, t->method->mparams, t->method->nmparams, in->mvals);
    }
    mm_sha256_final(&s, out);
}
