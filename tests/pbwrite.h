/* Protocol Buffers wire format, write side, for tests: the few encodings that build a sentencepiece
 * ModelProto byte by byte (tests/unit/test_tokenizer.c) or write one back (tests/fuzz/fuzz_spm.c). */
#ifndef MM_TESTS_PBWRITE_H
#define MM_TESTS_PBWRITE_H

#include <stdint.h>
#include <string.h>

#include "base/util.h"
#include "formats/pbwire.h"

static inline void pb_varint(mm_buf *b, uint64_t v)
{
    do {
        unsigned char c = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v)
            c |= 0x80;
        mm_buf_append(b, &c, 1);
    } while (v);
}

static inline void pb_key(mm_buf *b, unsigned field, int wtype)
{
    pb_varint(b, ((uint64_t)field << 3) | (unsigned)wtype);
}

static inline void pb_len(mm_buf *b, unsigned field, const void *data, size_t len)
{
    pb_key(b, field, MM_PB_LEN);
    pb_varint(b, len);
    mm_buf_append(b, data, len);
}

static inline void pb_str(mm_buf *b, unsigned field, const char *s)
{
    pb_len(b, field, s, strlen(s));
}

static inline void pb_int(mm_buf *b, unsigned field, int64_t v)
{
    pb_key(b, field, MM_PB_VARINT);
    pb_varint(b, (uint64_t)v); /* negatives as their 64-bit sign extension, as protobuf writes int32 */
}

/* A fixed32 field holding the bits of *f (copied as bytes: a NaN's payload stays as it is). */
static inline void pb_float(mm_buf *b, unsigned field, const float *f)
{
    uint32_t u;
    memcpy(&u, f, 4);
    unsigned char le[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                           (unsigned char)(u >> 24)};
    pb_key(b, field, MM_PB_FIXED32);
    mm_buf_append(b, le, 4);
}

#endif
