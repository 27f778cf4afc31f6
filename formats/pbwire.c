#include "pbwire.h"

#include <errno.h>

mm_pb mm_pb_init(const void *data, size_t len)
{
    const uint8_t *p = data;
    return (mm_pb){p, p + len, p};
}

size_t mm_pb_offset(const mm_pb *r)
{
    return (size_t)(r->p - r->base);
}

int mm_pb_varint(mm_pb *r, uint64_t *v, mm_err *err)
{
    size_t at = mm_pb_offset(r);
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end)
            return mm_err_set(err, -EINVAL, "byte %zu: varint runs past the end of its message (truncated file?)", at);
        uint8_t b = *r->p++;
        /* The tenth byte holds bit 63 only: anything more does not fit 64 bits. */
        if (i == 9 && b > 1)
            return mm_err_set(err, -EINVAL, "byte %zu: varint does not fit in 64 bits", at);
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return mm_err_set(err, -EINVAL, "byte %zu: varint longer than 10 bytes", at);
}

int mm_pb_next(mm_pb *r, uint32_t *field, int *wtype, mm_err *err)
{
    if (r->p >= r->end)
        return 0;
    size_t at = mm_pb_offset(r);
    uint64_t key;
    int rc = mm_pb_varint(r, &key, err);
    if (rc < 0)
        return rc;
    uint64_t f = key >> 3;
    int w = (int)(key & 7);
    if (f == 0 || f > 0x1fffffff)
        return mm_err_set(err, -EINVAL, "byte %zu: field number %llu is not valid (1 to 2^29 - 1)", at,
                          (unsigned long long)f);
    if (w == 3 || w == 4)
        return mm_err_set(err, -EINVAL,
                          "byte %zu: field %llu is a group (wire type %d), which this reader does not "
                          "accept (deprecated; no sentencepiece version writes one)",
                          at, (unsigned long long)f, w);
    if (w > 5)
        return mm_err_set(err, -EINVAL, "byte %zu: field %llu has wire type %d, which does not exist", at,
                          (unsigned long long)f, w);
    *field = (uint32_t)f;
    *wtype = w;
    return 1;
}

static int fixed(mm_pb *r, size_t n, uint64_t *v, mm_err *err)
{
    if ((size_t)(r->end - r->p) < n)
        return mm_err_set(err, -EINVAL, "byte %zu: %zu-byte value runs past the end of its message (truncated file?)",
                          mm_pb_offset(r), n);
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x |= (uint64_t)r->p[i] << (8 * i); /* little-endian, whatever the host */
    r->p += n;
    *v = x;
    return 0;
}

int mm_pb_fixed32(mm_pb *r, uint32_t *v, mm_err *err)
{
    uint64_t x = 0;
    int rc = fixed(r, 4, &x, err);
    if (rc == 0)
        *v = (uint32_t)x;
    return rc;
}

int mm_pb_bytes(mm_pb *r, const uint8_t **data, size_t *len, mm_err *err)
{
    size_t at = mm_pb_offset(r);
    uint64_t n;
    int rc = mm_pb_varint(r, &n, err);
    if (rc < 0)
        return rc;
    size_t left = (size_t)(r->end - r->p);
    if (n > left)
        return mm_err_set(err, -EINVAL,
                          "byte %zu: length-delimited value of %llu bytes, but its message has %zu left "
                          "(truncated file?)",
                          at, (unsigned long long)n, left);
    *data = r->p;
    *len = (size_t)n;
    r->p += n;
    return 0;
}

int mm_pb_sub(mm_pb *r, mm_pb *sub, mm_err *err)
{
    const uint8_t *data;
    size_t len;
    int rc = mm_pb_bytes(r, &data, &len, err);
    if (rc == 0)
        *sub = (mm_pb){data, data + len, r->base};
    return rc;
}

int mm_pb_skip(mm_pb *r, int wtype, mm_err *err)
{
    uint64_t v;
    const uint8_t *d;
    size_t n;
    switch (wtype) {
    case MM_PB_VARINT: return mm_pb_varint(r, &v, err);
    case MM_PB_FIXED64: return fixed(r, 8, &v, err);
    case MM_PB_LEN: return mm_pb_bytes(r, &d, &n, err);
    case MM_PB_FIXED32: return fixed(r, 4, &v, err);
    default: return mm_err_set(err, -EINVAL, "byte %zu: wire type %d cannot be skipped", mm_pb_offset(r), wtype);
    }
}

const char *mm_pb_wtype_name(int wtype)
{
    switch (wtype) {
    case MM_PB_VARINT: return "varint";
    case MM_PB_FIXED64: return "fixed64";
    case MM_PB_LEN: return "length-delimited";
    case MM_PB_FIXED32: return "fixed32";
    default: return "unknown";
    }
}
