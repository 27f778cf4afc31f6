#include "gguf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "numeric.h"
#include "base/vector.h"

/* ---- key/values ---- */

void mm_gguf_kvs_free(mm_gguf_kvs *k)
{
    for (size_t i = 0; i < k->n; i++) {
        free(k->kv[i].key);
        mm_buf_free(&k->kv[i].value);
    }
    free(k->kv);
    memset(k, 0, sizeof *k);
}

static void put_u32(mm_buf *b, uint32_t v)
{
    mm_buf_append(b, &v, 4); /* the format is little-endian, as this machine is (meson checks nothing
                                else: the project targets little-endian Linux) */
}

static void put_u64(mm_buf *b, uint64_t v)
{
    mm_buf_append(b, &v, 8);
}

static void put_str(mm_buf *b, const char *s, size_t len)
{
    put_u64(b, len);
    mm_buf_append(b, s, len);
}

static ssize_t find(const mm_gguf_kvs *k, const char *key)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->kv[i].key, key) == 0)
            return (ssize_t)i;
    return -1;
}

/* The entry of key, emptied for a new value (same position when it exists). */
static mm_gguf_kv *slot(mm_gguf_kvs *k, const char *key, mm_gguf_vtype type)
{
    ssize_t at = find(k, key);
    mm_gguf_kv *kv;
    if (at >= 0) {
        kv = &k->kv[at];
        mm_buf_free(&kv->value);
    } else {
        if (k->n == k->cap) {
            k->cap = k->cap ? 2 * k->cap : 32;
            k->kv = mm_xrealloc(k->kv, k->cap * sizeof *k->kv);
        }
        kv = &k->kv[k->n++];
        memset(kv, 0, sizeof *kv);
        kv->key = mm_xstrdup(key);
    }
    kv->type = type;
    kv->elem = type;
    kv->count = 0;
    return kv;
}

void mm_gguf_set_strn(mm_gguf_kvs *k, const char *key, const char *val, size_t len)
{
    put_str(&slot(k, key, MM_GGUF_STRING)->value, val, len);
}

void mm_gguf_set_str(mm_gguf_kvs *k, const char *key, const char *val)
{
    mm_gguf_set_strn(k, key, val, strlen(val));
}

static void set_scalar(mm_gguf_kvs *k, const char *key, mm_gguf_vtype type, const void *v, size_t size)
{
    mm_buf_append(&slot(k, key, type)->value, v, size);
}

void mm_gguf_set_u32(mm_gguf_kvs *k, const char *key, uint32_t v)
{
    set_scalar(k, key, MM_GGUF_U32, &v, 4);
}

void mm_gguf_set_i32(mm_gguf_kvs *k, const char *key, int32_t v)
{
    set_scalar(k, key, MM_GGUF_I32, &v, 4);
}

void mm_gguf_set_u64(mm_gguf_kvs *k, const char *key, uint64_t v)
{
    set_scalar(k, key, MM_GGUF_U64, &v, 8);
}

void mm_gguf_set_f32(mm_gguf_kvs *k, const char *key, float v)
{
    set_scalar(k, key, MM_GGUF_F32, &v, 4);
}

void mm_gguf_set_bool(mm_gguf_kvs *k, const char *key, int v)
{
    uint8_t b = v ? 1 : 0;
    set_scalar(k, key, MM_GGUF_BOOL, &b, 1);
}

static mm_gguf_kv *array(mm_gguf_kvs *k, const char *key, mm_gguf_vtype elem, size_t n)
{
    mm_gguf_kv *kv = slot(k, key, MM_GGUF_ARRAY);
    kv->elem = elem;
    kv->count = n;
    return kv;
}

void mm_gguf_set_arr_str(mm_gguf_kvs *k, const char *key, const char *const *s, const size_t *lens, size_t n)
{
    mm_gguf_kv *kv = array(k, key, MM_GGUF_STRING, n);
    for (size_t i = 0; i < n; i++)
        put_str(&kv->value, s[i], lens ? lens[i] : strlen(s[i]));
}

void mm_gguf_set_arr_i32(mm_gguf_kvs *k, const char *key, const int32_t *v, size_t n)
{
    mm_buf_append(&array(k, key, MM_GGUF_I32, n)->value, v, n * 4);
}

void mm_gguf_set_arr_u32(mm_gguf_kvs *k, const char *key, const uint32_t *v, size_t n)
{
    mm_buf_append(&array(k, key, MM_GGUF_U32, n)->value, v, n * 4);
}

void mm_gguf_set_arr_f32(mm_gguf_kvs *k, const char *key, const float *v, size_t n)
{
    mm_buf_append(&array(k, key, MM_GGUF_F32, n)->value, v, n * 4);
}

void mm_gguf_set_arr_bool(mm_gguf_kvs *k, const char *key, const uint8_t *v, size_t n)
{
    mm_buf_append(&array(k, key, MM_GGUF_BOOL, n)->value, v, n);
}

void mm_gguf_set_kv(mm_gguf_kvs *k, const mm_gguf_kv *src)
{
    mm_gguf_kv *kv = slot(k, src->key, src->type);
    kv->elem = src->elem;
    kv->count = src->count;
    mm_buf_append(&kv->value, src->value.data, src->value.len);
}

const mm_gguf_kv *mm_gguf_get(const mm_gguf_kvs *k, const char *key)
{
    ssize_t at = find(k, key);
    return at < 0 ? NULL : &k->kv[at];
}

void mm_gguf_del(mm_gguf_kvs *k, const char *key)
{
    ssize_t at = find(k, key);
    if (at < 0)
        return;
    free(k->kv[at].key);
    mm_buf_free(&k->kv[at].value);
    memmove(&k->kv[at], &k->kv[at + 1], (k->n - (size_t)at - 1) * sizeof *k->kv);
    k->n--;
}

/* ---- header ---- */

const char *mm_gguf_qtype_name(mm_gguf_qtype t)
{
    switch (t) {
    case MM_GGML_F32:
        return "F32";
    case MM_GGML_F16:
        return "F16";
    case MM_GGML_BF16:
        return "BF16";
    case MM_GGML_Q8_0:
        return "Q8_0";
    }
    return "?";
}

uint64_t mm_gguf_row_bytes(mm_gguf_qtype type, uint64_t ne0)
{
    switch (type) {
    case MM_GGML_F32:
        return ne0 * 4;
    case MM_GGML_F16:
    case MM_GGML_BF16:
        return ne0 * 2;
    case MM_GGML_Q8_0:
        return ne0 / MM_Q8_0_BLOCK * MM_Q8_0_BYTES;
    }
    return 0;
}

static uint64_t align_up(uint64_t v)
{
    return (v + MM_GGUF_ALIGN - 1) / MM_GGUF_ALIGN * MM_GGUF_ALIGN;
}

static void pad(mm_buf *b)
{
    static const char zeros[MM_GGUF_ALIGN];
    mm_buf_append(b, zeros, (size_t)(align_up(b->len) - b->len));
}

void mm_gguf_header(const mm_gguf_kvs *k, const mm_gguf_tinfo *t, size_t n, mm_buf *out, uint64_t **data_offsets,
                    uint64_t *file_size)
{
    mm_buf_append(out, "GGUF", 4);
    put_u32(out, 3);
    put_u64(out, n);
    put_u64(out, k->n);
    for (size_t i = 0; i < k->n; i++) {
        const mm_gguf_kv *kv = &k->kv[i];
        put_str(out, kv->key, strlen(kv->key));
        put_u32(out, (uint32_t)kv->type);
        if (kv->type == MM_GGUF_ARRAY) {
            put_u32(out, (uint32_t)kv->elem);
            put_u64(out, kv->count);
        }
        mm_buf_append(out, kv->value.data, kv->value.len);
    }
    uint64_t *rel = mm_xcalloc(n ? n : 1, sizeof *rel);
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t rows = 1;
        for (uint32_t d = 1; d < t[i].ndim; d++)
            rows *= t[i].ne[d];
        rel[i] = at;
        at = align_up(at + rows * mm_gguf_row_bytes(t[i].type, t[i].ne[0]));
        put_str(out, t[i].name, strlen(t[i].name));
        put_u32(out, t[i].ndim);
        for (uint32_t d = 0; d < t[i].ndim; d++)
            put_u64(out, t[i].ne[d]);
        put_u32(out, (uint32_t)t[i].type);
        put_u64(out, rel[i]);
    }
    pad(out);
    for (size_t i = 0; i < n; i++)
        rel[i] += out->len;
    *data_offsets = rel;
    *file_size = out->len + at;
}

/* ---- encodings ---- */

/* One block at a time, each step a whole-array loop over its 32 values, so that the AVX2 copy runs them as
 * vector instructions (floorf is one instruction there; the baseline copy calls the C library). */
MM_VECTOR_LOOP void mm_gguf_to_q8_0(const float *x, size_t n, uint8_t *out)
{
    for (size_t b = 0; b < n / MM_Q8_0_BLOCK; b++, x += MM_Q8_0_BLOCK, out += MM_Q8_0_BYTES) {
        float amax = 0.0f;
        for (int i = 0; i < MM_Q8_0_BLOCK; i++) {
            float a = fabsf(x[i]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = mm_f32_to_f16(d);
        memcpy(out, &dh, 2);
        /* gguf-py's np_roundf, in float32: floor(a) + floor(2 * (a - floor(a))) with a = |v|, signed
         * (not floor(a + 0.5), which rounds 0.49999997 up) */
        int8_t q[MM_Q8_0_BLOCK];
        for (int i = 0; i < MM_Q8_0_BLOCK; i++) {
            float v = x[i] * id, a = fabsf(v), f = floorf(a);
            q[i] = (int8_t)copysignf(f + floorf(2.0f * (a - f)), v);
        }
        memcpy(out + 2, q, MM_Q8_0_BLOCK);
    }
}
