/* formats/gguf: the key/value list, the header layout and the Q8_0 and BF16 encodings, checked against
 * bytes and values derived by hand from the GGUF v3 layout and gguf-py's formulas. */
#include <math.h>
#include <stdint.h>

#include "check.h"
#include "formats/gguf.h"
#include "formats/numeric.h"

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint64_t u64_at(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint32_t u32_at(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void test_kv_and_header(void)
{
    mm_gguf_kvs k = {0};
    mm_gguf_set_u32(&k, "a", 1);
    mm_gguf_set_str(&k, "bc", "xyz");
    mm_gguf_set_u32(&k, "a", 2); /* overwritten in place: "a" stays first */
    int32_t arr[2] = {-1, 7};
    mm_gguf_set_arr_i32(&k, "d", arr, 2);
    CHECK(k.n == 3 && strcmp(k.kv[0].key, "a") == 0 && strcmp(k.kv[2].key, "d") == 0);
    mm_gguf_del(&k, "bc");
    CHECK(k.n == 2 && mm_gguf_get(&k, "bc") == NULL && mm_gguf_get(&k, "d") != NULL);
    mm_gguf_set_str(&k, "bc", "xyz");

    mm_gguf_tinfo t[2] = {{.name = "v", .ndim = 1, .ne = {3}, .type = MM_GGML_F32},
                          {.name = "w", .ndim = 2, .ne = {64, 2}, .type = MM_GGML_Q8_0}};
    mm_buf h = {0};
    uint64_t *offs, size;
    mm_gguf_header(&k, t, 2, &h, &offs, &size);
    const char *p = h.data;
    CHECK(memcmp(p, "GGUF", 4) == 0 && u32_at(p + 4) == 3 && u64_at(p + 8) == 2 && u64_at(p + 16) == 3);
    p += 24;
    /* "a": u64 len 1, 'a', u32 type 4 (U32), u32 value 2 */
    CHECK(u64_at(p) == 1 && p[8] == 'a' && u32_at(p + 9) == MM_GGUF_U32 && u32_at(p + 13) == 2);
    p += 17;
    /* "d": array of 2 int32 */
    CHECK(u64_at(p) == 1 && p[8] == 'd' && u32_at(p + 9) == MM_GGUF_ARRAY && u32_at(p + 13) == MM_GGUF_I32 &&
          u64_at(p + 17) == 2 && (int32_t)u32_at(p + 25) == -1 && u32_at(p + 29) == 7);
    p += 33;
    /* "bc": string "xyz" */
    CHECK(u64_at(p) == 2 && memcmp(p + 8, "bc", 2) == 0 && u32_at(p + 10) == MM_GGUF_STRING && u64_at(p + 14) == 3 &&
          memcmp(p + 22, "xyz", 3) == 0);
    p += 25;
    /* tensor "v": name, n_dims 1, ne 3, type F32, offset 0 */
    CHECK(u64_at(p) == 1 && p[8] == 'v' && u32_at(p + 9) == 1 && u64_at(p + 13) == 3 && u32_at(p + 21) == 0 &&
          u64_at(p + 25) == 0);
    p += 33;
    /* tensor "w": 2 dims 64, 2, Q8_0, offset 32 (12 bytes of "v" padded to 32) */
    CHECK(u64_at(p) == 1 && p[8] == 'w' && u32_at(p + 9) == 2 && u64_at(p + 13) == 64 && u64_at(p + 21) == 2 &&
          u32_at(p + 29) == MM_GGML_Q8_0 && u64_at(p + 33) == 32);
    p += 41;
    size_t used = (size_t)(p - h.data);
    CHECK(h.len == (used + 31) / 32 * 32);
    for (size_t i = used; i < h.len; i++)
        CHECK(h.data[i] == 0);
    /* data: "v" at h.len, "w" 32 later, 2 rows x 2 blocks x 34 bytes = 136, padded to 160 */
    CHECK(offs[0] == h.len && offs[1] == h.len + 32 && size == h.len + 32 + 160);
    CHECK(mm_gguf_row_bytes(MM_GGML_Q8_0, 64) == 68 && mm_gguf_row_bytes(MM_GGML_BF16, 5) == 10);
    free(offs);
    mm_buf_free(&h);
    mm_gguf_kvs_free(&k);
}

static void test_q8_0(void)
{
    /* max |x| = 127 makes d exactly 1 and 1/d exactly 1: q is x rounded half away from zero, and
     * 0.49999997 (the float below 0.5) goes to 0, where floor(x + 0.5) in float32 would give 1. */
    float x[32] = {127.0f, -0.5f, 0.5f, 1.5f, 2.5f, -2.5f, from_bits(0x3effffffu), -126.4f, 3.49f};
    uint8_t out[34];
    mm_gguf_to_q8_0(x, 32, out);
    uint16_t d;
    memcpy(&d, out, 2);
    CHECK(d == 0x3c00); /* 1.0 as f16 */
    const int8_t *q = (const int8_t *)(out + 2);
    CHECK(q[0] == 127 && q[1] == -1 && q[2] == 1 && q[3] == 2 && q[4] == 3 && q[5] == -3 && q[6] == 0 &&
          q[7] == -126 && q[8] == 3 && q[31] == 0);
    /* an all-zero block: d = 0, id = 0, every q 0 */
    float z[32] = {0};
    mm_gguf_to_q8_0(z, 32, out);
    for (int i = 0; i < 34; i++)
        CHECK(out[i] == 0);
    /* d = 254/127 = 2: q = x / 2 */
    float y[32] = {-254.0f, 3.0f, -5.0f};
    mm_gguf_to_q8_0(y, 32, out);
    memcpy(&d, out, 2);
    q = (const int8_t *)(out + 2);
    CHECK(d == 0x4000 && q[0] == -127 && q[1] == 2 && q[2] == -3);
}

static void test_bf16_as_gguf_py(void)
{
    /* gguf-py keeps a NaN's sign and top mantissa bits and sets the quiet bit */
    float in[4] = {from_bits(0x7f800001u), from_bits(0xffa12345u), from_bits(0x3f808000u), from_bits(0x3f818000u)};
    uint16_t out[4];
    mm_store_f32(MM_DT_BF16, in, out, 4);
    CHECK(out[0] == 0x7fc0 && out[1] == 0xffe1 && out[2] == 0x3f80 && out[3] == 0x3f82);
}

int main(void)
{
    test_kv_and_header();
    test_q8_0();
    test_bf16_as_gguf_py();
    return mm_check_report();
}
