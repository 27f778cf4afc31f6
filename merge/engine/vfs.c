#include "vfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/sha256.h"
#include "blocks.h"
#include "gguf_read.h"
#include "merge/plan/plan.h"
#include "merge/plan/recipe.h"
#include "merge/plan/srcfile.h"
#include "base/util.h"

typedef enum { VF_STATIC, VF_SOURCE, VF_SHARD, VF_GGUF } vf_kind;

typedef struct vfile {
    char *name;
    vf_kind kind;
    uint64_t size;
    char *data;               /* STATIC bytes; SHARD header bytes */
    size_t data_len;
    mm_srcfile *src;          /* SOURCE */
    const mm_out_file *shard; /* SHARD */
    mm_gguf_file *gguf;       /* GGUF (owned) */
} vfile;

struct mm_vfs {
    vfile *files;
    size_t n;
    const mm_plan *plan;
    mm_blocks *blocks;        /* NULL for a vfs built by hand (no shards) */
    int64_t mtime_ns;
};

mm_vfs *mm_vfs_new(void)
{
    return mm_xcalloc(1, sizeof(mm_vfs));
}

static vfile *add(mm_vfs *v, const char *name, vf_kind kind)
{
    v->files = mm_xrealloc(v->files, (v->n + 1) * sizeof *v->files);
    vfile *f = &v->files[v->n++];
    memset(f, 0, sizeof *f);
    f->name = mm_xstrdup(name);
    f->kind = kind;
    return f;
}

void mm_vfs_add_static(mm_vfs *v, const char *name, const void *data, size_t len)
{
    vfile *f = add(v, name, VF_STATIC);
    f->data = mm_xmalloc(len ? len : 1);
    memcpy(f->data, data, len);
    f->data_len = len;
    f->size = len;
}

int mm_vfs_add_source(mm_vfs *v, const char *name, const char *path)
{
    mm_srcfile *src;
    int rc = mm_srcfile_open(path, &src, NULL);
    if (rc < 0)
        return rc;
    vfile *f = add(v, name, VF_SOURCE);
    f->src = src;
    f->size = mm_srcfile_id(src)->size;
    return 0;
}

static int add_gguf(mm_vfs *v, const mm_plan *p, mm_err *err)
{
    mm_gguf_file *g;
    int rc = mm_gguf_plan(p, (mm_gguf_outtype)p->opt.gguf, NULL, &g, err);
    if (rc < 0)
        return rc;
    vfile *f = add(v, g->file_name, VF_GGUF);
    f->gguf = g;
    f->data = g->header.data;
    f->data_len = g->header.len;
    f->size = g->size;
    return 0;
}

int mm_vfs_from_plan(const mm_plan *p, mm_vfs **out, mm_err *err)
{
    mm_vfs *v = mm_vfs_new();
    v->plan = p;
    v->blocks = mm_blocks_new(p);
    v->mtime_ns = p->mtime_ns;
    for (size_t i = 0; i < p->nfiles && !p->opt.gguf_only; i++) {
        const mm_out_file *of = &p->files[i];
        if (of->kind == MM_FILE_STATIC) {
            mm_vfs_add_static(v, of->name, of->data, of->data_len);
        } else if (of->kind == MM_FILE_SOURCE) {
            int rc = mm_vfs_add_source(v, of->name, of->source_path);
            if (rc < 0) {
                mm_vfs_free(v);
                return mm_err_set(err, rc, "%s: cannot open: %s", of->source_path, strerror(-rc));
            }
        } else {
            vfile *f = add(v, of->name, VF_SHARD);
            f->shard = of;
            f->data = of->data;
            f->data_len = of->data_len;
            f->size = of->size;
        }
    }
    if (p->opt.gguf) {
        int rc = add_gguf(v, p, err);
        if (rc < 0) {
            mm_vfs_free(v);
            return rc;
        }
    }
    *out = v;
    return 0;
}

void mm_vfs_free(mm_vfs *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++) {
        vfile *f = &v->files[i];
        if (f->kind != VF_SHARD && f->kind != VF_GGUF)
            free(f->data);
        mm_gguf_file_free(f->gguf);
        mm_srcfile_close(f->src);
        free(f->name);
    }
    free(v->files);
    mm_blocks_free(v->blocks);
    free(v);
}

void mm_vfs_set_cache(mm_vfs *v, struct mm_cache *c, const char *dir)
{
    if (v->blocks)
        mm_blocks_set_cache(v->blocks, c, dir);
}

void mm_vfs_stats_json(mm_vfs *v, mm_buf *out)
{
    if (v->blocks)
        mm_blocks_stats_json(v->blocks, out);
    else
        mm_buf_puts(out, "{}");
}

size_t mm_vfs_count(const mm_vfs *v)
{
    return v->n;
}

const char *mm_vfs_name(const mm_vfs *v, size_t idx)
{
    return idx < v->n ? v->files[idx].name : NULL;
}

uint64_t mm_vfs_size(const mm_vfs *v, size_t idx)
{
    return idx < v->n ? v->files[idx].size : 0;
}

int mm_vfs_lookup(const mm_vfs *v, const char *name, size_t *idx)
{
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->files[i].name, name) == 0) {
            *idx = i;
            return 0;
        }
    return -ENOENT;
}

int64_t mm_vfs_mtime(const mm_vfs *v)
{
    return v->mtime_ns;
}

/* What determines a GGUF file's data beyond its header: each tensor's source recipe and transforms, or
 * its generated values. */
static void gguf_id(mm_sha256 *s, const mm_plan *p, const mm_gguf_file *g)
{
    for (size_t k = 0; k < g->arch.ntensors; k++) {
        const mm_gguf_tensor *t = &g->arch.tensors[k];
        if (t->src == MM_GGUF_GENERATED) {
            mm_sha256_update(s, t->gen, (size_t)(g->nbytes[k] / mm_gguf_row_bytes(g->types[k], g->row_elems[k]) *
                                                 g->row_elems[k] * sizeof *t->gen));
            continue;
        }
        mm_sha256_update(s, p->tensors[t->src].recipe, 32);
        mm_sha256_u64(s, t->permute_heads);
        mm_sha256_u64(s, (uint64_t)t->add_one);
    }
}

void mm_vfs_id(const mm_vfs *v, char hex[65])
{
    mm_sha256 s;
    mm_sha256_init(&s);
    mm_sha256_u64(&s, v->n);
    for (size_t i = 0; i < v->n; i++) {
        const vfile *f = &v->files[i];
        mm_sha256_str(&s, f->name);
        mm_sha256_u64(&s, (uint64_t)f->kind);
        mm_sha256_u64(&s, f->size);
        if (f->kind == VF_SOURCE) {
            mm_recipe_put_file(&s, mm_srcfile_path(f->src), mm_srcfile_id(f->src));
            continue;
        }
        /* A static file's bytes, or a shard's header (tensor names, dtypes, shapes, offsets). */
        mm_sha256_u64(&s, f->data_len);
        mm_sha256_update(&s, f->data, f->data_len);
        if (f->kind == VF_SHARD)
            for (size_t k = 0; k < f->shard->ntensors; k++)
                mm_sha256_update(&s, v->plan->tensors[f->shard->tensors[k]].recipe, 32);
        if (f->kind == VF_GGUF)
            gguf_id(&s, v->plan, f->gguf);
    }
    unsigned char digest[32];
    mm_sha256_final(&s, digest);
    mm_sha256_hex(digest, hex);
}

/* First tensor of a shard whose data ends after off (tensors are in data order). */
static size_t first_tensor_after(const mm_vfs *v, const mm_out_file *of, uint64_t off)
{
    size_t lo = 0, hi = of->ntensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const mm_out_tensor *t = &v->plan->tensors[of->tensors[mid]];
        uint64_t tend = t->file_offset + t->numel * mm_dtype_size(t->dtype);
        if (tend <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Calls fn for each tensor's part of shard bytes [off, end) in file order: the tensor, the offset in its
 * data, the length, and where the part starts in the read. Stops at the first non-zero return. */
typedef int (*piece_fn)(void *ctx, const mm_out_tensor *t, uint64_t toff, size_t n, size_t at);

static int each_tensor_piece(const mm_vfs *v, const vfile *f, uint64_t off, uint64_t end, piece_fn fn, void *ctx)
{
    const mm_out_file *of = f->shard;
    for (size_t k = first_tensor_after(v, of, off); k < of->ntensors; k++) {
        const mm_out_tensor *t = &v->plan->tensors[of->tensors[k]];
        uint64_t ts = t->file_offset, te = ts + t->numel * mm_dtype_size(t->dtype);
        if (ts >= end)
            break;
        uint64_t a = off > ts ? off : ts, b = end < te ? end : te;
        if (a >= b)
            continue;
        int rc = fn(ctx, t, a - ts, (size_t)(b - a), (size_t)(a - off));
        if (rc != 0)
            return rc;
    }
    return 0;
}

typedef struct copy_ctx {
    mm_blocks *blocks;
    char *buf;
    int compute;
} copy_ctx;

static int copy_piece(void *vctx, const mm_out_tensor *t, uint64_t toff, size_t n, size_t at)
{
    copy_ctx *c = vctx;
    return c->compute ? mm_blocks_read(c->blocks, t, toff, n, c->buf + at)
                      : mm_blocks_read_cached(c->blocks, t, toff, n, c->buf + at);
}

/* Shard data: header bytes, then each tensor's bytes from the engine (or, without `compute`, only from
 * the cache: 1 when a block is not there). */
static int read_shard(const mm_vfs *v, const vfile *f, uint64_t off, size_t len, char *buf, int compute)
{
    uint64_t end = off + len;
    if (off < f->data_len) {
        size_t n = (size_t)((end < f->data_len ? end : f->data_len) - off);
        memcpy(buf, f->data + off, n);
    }
    copy_ctx c = {v->blocks, buf, compute};
    return each_tensor_piece(v, f, off, end, copy_piece, &c);
}

/* The file of a read and the length actually readable at off: 1 (*f, *len cut at the end of the file),
 * 0 at or past the end, -ENOENT for an unknown file. */
static int clamp_read(const mm_vfs *v, size_t idx, uint64_t off, size_t *len, const vfile **f)
{
    if (idx >= v->n)
        return -ENOENT;
    *f = &v->files[idx];
    if (off >= (*f)->size)
        return 0;
    if (*len > (*f)->size - off)
        *len = (size_t)((*f)->size - off);
    return 1;
}

/* The header part of a shard or a static file: one piece pointing at f->data. */
static int zc_static(const vfile *f, uint64_t off, uint64_t end, struct iovec *iov, size_t *niov, size_t max)
{
    if (off >= f->data_len)
        return 0;
    if (*niov >= max)
        return 1;
    iov[*niov].iov_base = (char *)(uintptr_t)f->data + off;
    iov[*niov].iov_len = (size_t)((end < f->data_len ? end : f->data_len) - off);
    (*niov)++;
    return 0;
}

typedef struct peek_ctx {
    mm_blocks *blocks;
    struct iovec *iov;
    size_t *niov, max;
    mm_blocks_hold *hold;
} peek_ctx;

static int peek_piece(void *vctx, const mm_out_tensor *t, uint64_t toff, size_t n, size_t at)
{
    (void)at; /* pieces are appended in file order */
    peek_ctx *c = vctx;
    return mm_blocks_peek(c->blocks, t, toff, n, c->iov, c->niov, c->max, c->hold);
}

ssize_t mm_vfs_read_zc(mm_vfs *v, size_t idx, uint64_t off, size_t len, struct iovec *iov, size_t *niov, size_t max,
                       mm_vfs_hold *h)
{
    h->blocks.n = h->blocks.nflights = 0;
    *niov = 0;
    const vfile *f;
    int at = clamp_read(v, idx, off, &len, &f);
    if (at <= 0)
        return at;
    const uint64_t end = off + len;
    int rc = 0;
    if (f->kind == VF_STATIC) {
        rc = zc_static(f, off, end, iov, niov, max);
    } else if (f->kind == VF_SHARD && v->blocks) {
        rc = zc_static(f, off, end, iov, niov, max);
        peek_ctx c = {v->blocks, iov, niov, max, &h->blocks};
        if (rc == 0)
            rc = each_tensor_piece(v, f, off, end, peek_piece, &c);
    } else {
        rc = 1; /* a donor file (read through its descriptor) or the GGUF view (computed) */
    }
    if (rc != 0) {
        mm_vfs_hold_release(v, h);
        *niov = 0;
        return rc < 0 ? rc : -EAGAIN;
    }
    if (v->blocks)
        mm_blocks_count_served(v->blocks, len);
    return (ssize_t)len;
}

void mm_vfs_hold_release(mm_vfs *v, mm_vfs_hold *h)
{
    if (v->blocks)
        mm_blocks_hold_release(v->blocks, &h->blocks);
    h->blocks.n = h->blocks.nflights = 0;
}

/* mm_vfs_read, or without `compute` mm_vfs_read_cached. */
static ssize_t read_file(mm_vfs *v, size_t idx, uint64_t off, size_t len, void *buf, int compute)
{
    const vfile *f;
    int at = clamp_read(v, idx, off, &len, &f);
    if (at <= 0)
        return at;
    int rc = 0;
    switch (f->kind) {
    case VF_STATIC:
        memcpy(buf, f->data + off, len);
        break;
    case VF_SOURCE:
        rc = compute ? mm_srcfile_pread(f->src, buf, len, off) : 1;
        break;
    case VF_SHARD:
        rc = read_shard(v, f, off, len, buf, compute);
        break;
    case VF_GGUF:
        rc = compute ? mm_gguf_read(f->gguf, v->plan, v->blocks, off, len, buf) : 1;
        break;
    }
    if (rc > 0)
        return -EAGAIN;
    if (rc < 0)
        return rc;
    if (v->blocks)
        mm_blocks_count_served(v->blocks, len);
    return (ssize_t)len;
}

ssize_t mm_vfs_read(mm_vfs *v, size_t idx, uint64_t off, size_t len, void *buf)
{
    return read_file(v, idx, off, len, buf, 1);
}

ssize_t mm_vfs_read_cached(mm_vfs *v, size_t idx, uint64_t off, size_t len, void *buf)
{
    return read_file(v, idx, off, len, buf, 0);
}
