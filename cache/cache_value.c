/* Stored values: the 24-byte header and the checksum that guards the bytes after an OS crash or a bad
 * disk (LMDB itself protects structure, not contents). */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "cache_internal.h"

#define K1 0x9e3779b185ebca87ull
#define K2 0xc2b2ae3d27d4eb4full
#define K3 0x165667b19e3779f9ull

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof w); /* unaligned-safe; compiles to one load */
    return w;
}

/* For a fixed state the word goes through bijections only (odd multiply, xor, rotate, odd multiply),
 * and for a fixed word so does the state: two inputs that differ in one word, in particular in one bit,
 * therefore always end in different states. */
static inline uint64_t mix(uint64_t h, uint64_t w)
{
    return rotl64(h ^ (w * K2), 31) * K1;
}

uint64_t mm_checksum64(const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t n = len;
    uint64_t h = K3;
    if (n >= 32) {
        /* Four independent lanes keep the multiplier busy instead of waiting on one chain. */
        uint64_t a = K1 + K2, b = K2, c = 0, d = 0 - K1;
        do {
            a = mix(a, load64(p));
            b = mix(b, load64(p + 8));
            c = mix(c, load64(p + 16));
            d = mix(d, load64(p + 24));
            p += 32;
            n -= 32;
        } while (n >= 32);
        /* A sum of per-lane bijections: still injective in each lane with the others fixed. */
        h = rotl64(a, 1) + rotl64(b, 7) + rotl64(c, 12) + rotl64(d, 18);
    }
    for (; n >= 8; p += 8, n -= 8)
        h = mix(h, load64(p));
    if (n) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        h = mix(h, w);
    }
    h = mix(h, (uint64_t)len);
    h ^= h >> 33;
    h *= K2;
    h ^= h >> 29;
    h *= K3;
    h ^= h >> 32;
    return h;
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

bool mm_cache_value_open_checked(const void *val, size_t val_len, const void **data, size_t *len,
                                 _Atomic uint64_t *verified)
{
    const unsigned char *v = val;
    uint32_t magic, flags;
    uint64_t l, sum;
    if (val_len < MM_CACHE_HDR_LEN)
        return false;
    memcpy(&magic, v, 4);
    memcpy(&flags, v + 4, 4);
    memcpy(&l, v + 8, 8);
    memcpy(&sum, v + 16, 8);
    if (magic != MM_CACHE_VALUE_MAGIC || flags != 0 || l != val_len - MM_CACHE_HDR_LEN)
        return false;
    /* The memo remembers the last value verified at this address with this checksum: a block read in
     * several FUSE requests is checksummed once, and a value rewritten at the same address (another
     * checksum) is checked again. */
    uint64_t tag = ((uint64_t)(uintptr_t)v * K1) ^ sum;
    if (!verified || atomic_load_explicit(verified, memory_order_relaxed) != tag) {
        if (mm_checksum64(v + MM_CACHE_HDR_LEN, (size_t)l) != sum)
            return false;
        if (verified)
            atomic_store_explicit(verified, tag, memory_order_relaxed);
    }
    *data = v + MM_CACHE_HDR_LEN;
    *len = (size_t)l;
    return true;
}
