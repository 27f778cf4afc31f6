/* SHA-256 (FIPS 180-4), for recipe hashes: a collision would serve wrong bytes from the cache, so the
 * key hash must be cryptographic, not merely fast. */
#ifndef MM_SHA256_H
#define MM_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct mm_sha256 {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t nbuf;
} mm_sha256;

void mm_sha256_init(mm_sha256 *s);
void mm_sha256_update(mm_sha256 *s, const void *data, size_t len);
void mm_sha256_final(mm_sha256 *s, unsigned char out[32]);

/* Fields of a hashed record, each at a fixed width or with its length, so two different records can
 * never serialise to the same byte string: a little-endian u64, and a string preceded by its length. */
void mm_sha256_u64(mm_sha256 *s, uint64_t v);
void mm_sha256_str(mm_sha256 *s, const char *str);
/* 64 lowercase hex digits and a NUL. */
void mm_sha256_hex(const unsigned char digest[32], char hex[65]);

#endif
