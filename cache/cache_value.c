/* Stored values: the 24-byte header and the checksum that guards the bytes after an OS crash or a bad
 * disk (LMDB itself protects structure, not contents). */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#include "cache_internal.h"

#define K1 0x9e3779b185ebca87ull
#define K2 0xc2b2ae3d27d4eb4full
#define K3 0x165667b19e3779f9ull

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof w); /* unaligned-safe; compiles to one load */
    return w;
}

/* Eight independent 64-bit sums, one per word position modulo 8: the loop is plain vector additions
 * and runs at memory speed, which matters because every cache hit is verified once.
 * Why any single flipped bit is caught: flipping bit k of a word changes that word, and so its lane's
 * sum, by +-2^k (mod 2^64), which is never 0. The lanes are combined with distinct odd multipliers, so
 * the combined sum changes by odd * 2^k != 0 (mod 2^64); the final mix is a bijection. */
#define LANES 8

static inline uint64_t fmix(uint64_t h)
{
    h ^= h >> 33;
    h *= K2;
    h ^= h >> 29;
    h *= K3;
    h ^= h >> 32;
    return h;
}

/* Adds 64-byte chunks p[0..n) (n a multiple of 64) to the lane sums. */
static void add_chunks(uint64_t lane[LANES], const unsigned char *p, size_t n)
{
    for (; n >= 8 * LANES; p += 8 * LANES, n -= 8 * LANES)
        for (int j = 0; j < LANES; j++)
            lane[j] += load64(p + 8 * j);
}

uint64_t mm_checksum64_pieces(const struct iovec *piece, size_t npieces)
{
    uint64_t lane[LANES] = {0};
    /* A chunk split between pieces is gathered here; so every chunk starts at a multiple of 64 bytes of
     * the whole, as in one buffer. */
    unsigned char carry[8 * LANES];
    size_t held = 0, len = 0;
    for (size_t i = 0; i < npieces; i++) {
        const unsigned char *p = piece[i].iov_base;
        size_t n = piece[i].iov_len;
        len += n;
        if (held) {
            const size_t take = n < sizeof carry - held ? n : sizeof carry - held;
            if (take)
                memcpy(carry + held, p, take);
            held += take;
            p += take;
            n -= take;
            if (held < sizeof carry)
                continue;
            add_chunks(lane, carry, sizeof carry);
            held = 0;
        }
        const size_t whole = n - n % sizeof carry;
        add_chunks(lane, p, whole);
        if (n > whole)
            memcpy(carry, p + whole, n - whole);
        held = n - whole;
    }
    uint64_t h = K3 ^ (uint64_t)len;
    for (int j = 0; j < LANES; j++)
        h += lane[j] * (K1 + 2 * (uint64_t)j); /* K1 is odd, so every multiplier is odd */
    /* The tail: fewer than 64 bytes, each word with its own odd multiplier. */
    const unsigned char *p = carry;
    size_t n = held;
    for (uint64_t j = 0; n >= 8; p += 8, n -= 8, j++)
        h += load64(p) * (K2 + 2 * j);
    if (n) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        h += w * K3;
    }
    return fmix(h);
}

uint64_t mm_checksum64(const void *data, size_t len)
{
    const struct iovec one = {(void *)(uintptr_t)data, len};
    return mm_checksum64_pieces(&one, 1);
}

void mm_cache_value_seal(unsigned char *hdr, size_t len)
{
    uint32_t magic = MM_CACHE_VALUE_MAGIC, flags = 0;
    uint64_t l = len, sum = mm_checksum64(hdr + MM_CACHE_HDR_LEN, len);
    memcpy(hdr, &magic, 4);
    memcpy(hdr + 4, &flags, 4);
    memcpy(hdr + 8, &l, 8);
    memcpy(hdr + 16, &sum, 8);
}

bool mm_cache_value_open(const void *val, size_t val_len, const void **data, size_t *len)
{
    return mm_cache_value_open_checked(val, val_len, data, len, NULL);
}

bool mm_cache_value_header(const void *val, size_t val_len, uint64_t *len, uint64_t *sum)
{
    const unsigned char *v = val;
    uint32_t magic, flags;
    uint64_t l;
    if (val_len < MM_CACHE_HDR_LEN)
        return false;
    memcpy(&magic, v, 4);
    memcpy(&flags, v + 4, 4);
    memcpy(&l, v + 8, 8);
    memcpy(sum, v + 16, 8);
    if (magic != MM_CACHE_VALUE_MAGIC || flags != 0 || l != val_len - MM_CACHE_HDR_LEN)
        return false;
    *len = l;
    return true;
}

/* The memo remembers the last value verified at this address with this checksum: a block read in several
 * FUSE requests is checksummed once, and a value rewritten at the same address (another checksum) is
 * checked again. */
static uint64_t memo_tag(const void *val, uint64_t sum)
{
    return ((uint64_t)(uintptr_t)val * K1) ^ sum;
}

bool mm_cache_memo_holds(_Atomic uint64_t *verified, const void *val, uint64_t sum)
{
    return verified && atomic_load_explicit(verified, memory_order_relaxed) == memo_tag(val, sum);
}

void mm_cache_memo_set(_Atomic uint64_t *verified, const void *val, uint64_t sum)
{
    if (verified)
        atomic_store_explicit(verified, memo_tag(val, sum), memory_order_relaxed);
}

bool mm_cache_value_open_checked(const void *val, size_t val_len, const void **data, size_t *len,
                                 _Atomic uint64_t *verified)
{
    const unsigned char *v = val;
    uint64_t l, sum;
    if (!mm_cache_value_header(v, val_len, &l, &sum))
        return false;
    if (!mm_cache_memo_holds(verified, v, sum)) {
        if (mm_checksum64(v + MM_CACHE_HDR_LEN, (size_t)l) != sum)
            return false;
        mm_cache_memo_set(verified, v, sum);
    }
    *data = v + MM_CACHE_HDR_LEN;
    *len = (size_t)l;
    return true;
}
