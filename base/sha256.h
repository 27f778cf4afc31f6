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

#endif
