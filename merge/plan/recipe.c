#include "recipe.h"

#include <string.h>

#include "base/sha256.h"
#include "merge/plan/lora.h"
#include "merge/plan/moe.h"
#include "merge/plan/rowmap.h"

/* Every field goes through mm_sha256_u64/_str (fixed width or length first), so two different recipes
 * can never serialise to the same byte string. */
static void put_double(mm_sha256 *s, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    mm_sha256_u64(s, u);
}

static void put_params(mm_sha256 *s, const mm_param_def *defs, size_t n, const double *vals)
{
    mm_sha256_u64(s, n);
    for (size_t k = 0; k < n; k++) {
        mm_sha256_str(s, defs[k].name);
        put_double(s, vals[k]);
    }
}

void mm_recipe_put_file(mm_sha256 *s, const char *path, const mm_file_id *id)
{
    mm_sha256_str(s, path);
    mm_sha256_u64(s, id->size);
    mm_sha256_u64(s, (uint64_t)id->mtime_ns);
    /* mtime alone can be set back (touch -r, cp -p, rsync -t, tar x) over other content of the same
     * size; ctime cannot, and a replaced file has another inode. The device number is left out: for
     * network and FUSE filesystems it changes at every mount of the filesystem, which would throw the
     * cache away after a reboot. */
    mm_sha256_u64(s, id->ino);
    mm_sha256_u64(s, (uint64_t)id->ctime_ns);
}

void mm_recipe_hash(const mm_plan *p, const mm_out_tensor *t, unsigned char out[32])
{
    mm_sha256 s;
    mm_sha256_init(&s);
    mm_sha256_str(&s, MM_ENGINE_VERSION);
    mm_sha256_str(&s, t->method->name);
    mm_sha256_u64(&s, (uint64_t)(int64_t)t->comp);
    mm_sha256_u64(&s, (uint64_t)t->dtype);
    mm_sha256_u64(&s, (uint64_t)t->ndim);
    for (int d = 0; d < t->ndim; d++)
        mm_sha256_u64(&s, t->shape[d]);
    /* Random methods key their generator by the seed and the output name (D6); others must depend on
     * neither, so that another seed, or another config yielding the same tensor under another name,
     * shares the cache. */
    mm_sha256_u64(&s, t->method->random ? p->opt.random_seed : 0);
    mm_sha256_str(&s, t->method->random ? t->name : "");
    mm_sha256_u64(&s, (uint64_t)(int64_t)t->base);
    put_params(&s, t->method->gparams, t->method->ngparams, t->gvals);
    mm_sha256_u64(&s, t->ninputs);
    for (size_t i = 0; i < t->ninputs; i++) {
        const mm_input *in = &t->inputs[i];
        const mm_shard *sh = in->mt->shard;
        const mm_st_tensor *st = in->mt->st;
        mm_recipe_put_file(&s, sh->path, mm_srcfile_id(sh->src));
        mm_sha256_u64(&s, sh->hdr.data_start + st->begin);
        mm_sha256_u64(&s, (uint64_t)st->dtype);
        mm_sha256_u64(&s, (uint64_t)st->ndim);
        for (int d = 0; d < st->ndim; d++)
            mm_sha256_u64(&s, st->shape[d]);
        mm_sha256_u64(&s, in->src_cols);
        /* An adapter's change (D19): its file, where the factors are, and how they are combined. */
        const mm_lora_delta *d = in->mt->lora;
        mm_sha256_u64(&s, d != NULL);
        if (d) {
            const mm_shard *af = &d->owner->file;
            mm_recipe_put_file(&s, af->path, mm_srcfile_id(af->src));
            const mm_st_tensor *f[2] = {d->a, d->b};
            for (int k = 0; k < 2; k++) {
                mm_sha256_u64(&s, af->hdr.data_start + f[k]->begin);
                mm_sha256_u64(&s, (uint64_t)f[k]->dtype);
                mm_sha256_u64(&s, f[k]->shape[0]);
                mm_sha256_u64(&s, f[k]->shape[1]);
            }
            put_double(&s, d->scaling);
            mm_sha256_u64(&s, (uint64_t)d->transposed);
        }
        put_params(&s, t->method->mparams, t->method->nmparams, in->mvals);
        mm_sha256_u64(&s, in->stream);
    }
    mm_sha256_u64(&s, t->concat_seg);
    mm_sha256_u64(&s, t->rowmap != NULL);
    if (t->rowmap)
        mm_rowmap_hash(&s, t->rowmap);
    mm_sha256_u64(&s, t->router != NULL);
    if (t->router)
        mm_router_hash(&s, t->router);
    mm_sha256_final(&s, out);
}
