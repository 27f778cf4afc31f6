/* Hits copied out with pread instead of through LMDB's map (cache.h, mm_cache_read).
 *
 * Why: reading a stored block through the map faults its 256 pages into this process one by one; on the
 * machines we measure that ran at about 1 GB/s, against 3-4 GB/s for pread of the same page-cache pages
 * into a buffer kept per thread (issue 15), and every faulted page also counted in the daemon's resident
 * size. A block is a value of LMDB overflow pages, contiguous in data.mdb: its file offset is its page
 * number (from the first page's header, LMDB's on-disk format) times the page size. The value cannot
 * move or be reused while our read transaction is open, so the file holds exactly the mapped bytes. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/uio.h>

#include "base/scratch.h"
#include "cache_internal.h"

/* LMDB's page header (16 bytes): page number (8), padding (2), flags (2), page count (4); an overflow
 * value starts right after it. */
#define PAGE_HDR 16u
#define P_OVERFLOW 0x04u

/* The file offset of the value at data (val_len bytes) when it is a value of overflow pages; -1 otherwise
 * (a small value inside a leaf page: read it through the map). Once the map's start is confirmed (a
 * value read at the offset it gave passed its checksum) this is arithmetic; before that the offset is
 * taken from the value's first page header through the map (*derived), which maps that page and, with
 * the kernel's large page-cache folios, up to a few MiB around it: so it is done until confirmed only. */
static int64_t value_offset(mm_cache *c, const void *data, size_t val_len, bool *derived)
{
    *derived = false;
    if (c->fd < 0 || c->psize == 0 || val_len < c->psize)
        return -1;
    if (atomic_load_explicit(&c->map_base_ok, memory_order_acquire)) {
        uintptr_t base = atomic_load_explicit(&c->map_base, memory_order_relaxed);
        return (int64_t)((uintptr_t)data - base);
    }
    const unsigned char *page = (const unsigned char *)data - PAGE_HDR;
    uint64_t pgno;
    uint16_t flags;
    uint32_t pages;
    memcpy(&pgno, page, sizeof pgno);
    memcpy(&flags, page + 10, sizeof flags);
    memcpy(&pages, page + 12, sizeof pages);
    if (!(flags & P_OVERFLOW) || (uint64_t)pages * c->psize < val_len + PAGE_HDR)
        return -1;
    atomic_store_explicit(&c->map_base, (uintptr_t)page - (uintptr_t)(pgno * c->psize), memory_order_relaxed);
    *derived = true;
    return (int64_t)(pgno * c->psize + PAGE_HDR);
}

/* Copies [from, from + n) of the stored value v (its header already parsed: byte count len, checksum sum)
 * into dst, reading the file at off. The whole value is read and checked when the memo does not hold it
 * yet. 0; 1 when the bytes at off do not verify (the caller decides through the map whether the value is
 * corrupt); -EIO (a short read) or -ENOMEM. */
static int copy_value(mm_cache *c, const void *v, int64_t off, uint64_t len, uint64_t sum, uint64_t from, void *dst,
                      size_t n, bool derived)
{
    _Atomic uint64_t *memo = &c->verified[((uintptr_t)v >> 12) % MM_CACHE_VERIFIED_SLOTS];
    if (mm_cache_memo_holds(memo, v, sum)) {
        if (mm_pread_full(c->fd, dst, n, (uint64_t)off + MM_CACHE_HDR_LEN + from) < 0)
            return -EIO;
        atomic_fetch_add(&c->file_reads, 1);
        return 0;
    }
    /* The whole value in one call, the part asked for straight into dst and the rest around it into
     * scratch, and the checksum over the three pieces in order: no copy of the part afterwards. */
    unsigned char *all = mm_scratch_borrow(MM_SCRATCH_CACHE_VALUE, (size_t)len);
    const struct iovec piece[3] = {{all, (size_t)from}, {dst, n}, {all + from + n, (size_t)(len - from - n)}};
    int rc = all ? 0 : -ENOMEM;
    if (rc == 0 && mm_preadv_full(c->fd, piece, 3, (uint64_t)off + MM_CACHE_HDR_LEN) < 0)
        rc = -EIO;
    if (rc == 0 && mm_checksum64_pieces(piece, 3) != sum)
        rc = 1;
    if (rc == 0) {
        atomic_fetch_add(&c->file_reads, 1);
        if (derived)
            atomic_store_explicit(&c->map_base_ok, true, memory_order_release);
        mm_cache_memo_set(memo, v, sum);
    }
    mm_scratch_return(MM_SCRATCH_CACHE_VALUE, all);
    return rc;
}

/* Through the map: the value verified (memo) and [from, from + n) of it copied; false when it fails. */
static bool copy_mapped(mm_cache *c, const MDB_val *v, uint64_t from, void *dst, size_t n)
{
    const void *data;
    size_t l;
    _Atomic uint64_t *memo = &c->verified[((uintptr_t)v->mv_data >> 12) % MM_CACHE_VERIFIED_SLOTS];
    if (!mm_cache_value_open_checked(v->mv_data, v->mv_size, &data, &l, memo))
        return false;
    memcpy(dst, (const unsigned char *)data + from, n);
    return true;
}

int mm_cache_read(mm_cache *c, mm_cache_table table, const void *key, size_t key_len, size_t want_len, uint64_t from,
                  void *dst, size_t n)
{
    if (!c || !key || key_len != mm_cache_key_len(table) || from > want_len || n > want_len - from)
        return 0;
    mm_cache_op *op = mm_cache_pending_find(c, table, key);
    if (op) {
        int ok = op->val_len - MM_CACHE_HDR_LEN == want_len;
        if (ok)
            memcpy(dst, op->val + MM_CACHE_HDR_LEN + from, n);
        mm_cache_op_unref(op);
        return ok;
    }
    MDB_txn *txn;
    MDB_val k = {key_len, (void *)key}, v;
    if (!mm_cache_lookup(c, table, &k, &txn, &v))
        return 0;
    int rc;
    /* The header: 24 bytes at the value's start, read with the rest unless the offset is not known. */
    bool derived, corrupt = false;
    int64_t off = value_offset(c, v.mv_data, v.mv_size, &derived);
    unsigned char hdr[MM_CACHE_HDR_LEN];
    uint64_t len = 0, sum = 0;
    if (off >= 0 && mm_pread_full(c->fd, hdr, sizeof hdr, (uint64_t)off) < 0)
        off = -1;
    if (off < 0)
        memcpy(hdr, v.mv_data, v.mv_size < sizeof hdr ? v.mv_size : sizeof hdr);
    if (!mm_cache_value_header(hdr, v.mv_size, &len, &sum)) {
        /* a wrong offset reads another header: judge the value through the map */
        corrupt = !copy_mapped(c, &v, from, dst, n);
    } else if (len != want_len) {
        mm_cache_rtxn_release(c, txn);
        return 0; /* another length: the caller computes it again */
    } else if (off >= 0) {
        rc = copy_value(c, v.mv_data, off, len, sum, from, dst, n, derived);
        if (rc == 1)
            corrupt = !copy_mapped(c, &v, from, dst, n);
        else if (rc < 0) {
            mm_cache_log_once(MM_CACHE_LOG_READ, "cannot read the cache at %s (%s); computing instead",
                              c->env.dir, strerror(-rc));
            mm_cache_rtxn_release(c, txn);
            return 0;
        }
    } else {
        corrupt = !copy_mapped(c, &v, from, dst, n);
    }
    if (!mm_cache_hit_checked(c, table, txn, &k, !corrupt))
        return 0;
    mm_cache_rtxn_release(c, txn);
    /* The lookup mapped the tree's pages on the way (and the kernel maps whole large folios around
     * them): those are dropped from the process like the pages of hits read through the map. */
    mm_cache_sweep_map(c, v.mv_data, n);
    return 1;
}

int mm_cache_prefetch_offset(mm_cache *c, const void *data, size_t len)
{
    if (c->fd < 0 || !atomic_load_explicit(&c->map_base_ok, memory_order_acquire))
        return -1;
    uintptr_t base = atomic_load_explicit(&c->map_base, memory_order_relaxed);
    if ((uintptr_t)data < base)
        return -1;
    (void)posix_fadvise(c->fd, (off_t)((uintptr_t)data - base), (off_t)len, POSIX_FADV_WILLNEED);
    return 0;
}
