/* merge/numeric: round-to-nearest-even conversions, checked against hand-derived bit patterns. */
#include <math.h>

#include "check.h"
#include "formats/numeric.h"

static __attribute__((unused)) uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int main(void)
{
    /* bf16: 0.3 -> 0.30078125 (spec B2.1). */
    CHECK(mm_round_to(MM_DT_BF16, 0.3f) == 0.30078125f);
    /* Ties to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7; even mantissa is 1.0. */
    CHECK(mm_f32_to_bf16(from_bits(0x3f808000u)) == 0x3f80);
    /* 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even): rounds up. */
    CHECK(mm_f32_to_bf16(from_bits(0x3f818000u)) == 0x3f82);
    CHECK(mm_f32_to_bf16(from_bits(0x3f808001u)) == 0x3f81);
    CHECK(mm_f32_to_bf16(INFINITY) == 0x7f80);
    CHECK(isnan(mm_bf16_to_f32(mm_f32_to_bf16(NAN))));
    /* Largest finite float rounds to bf16 infinity. */
    CHECK(mm_f32_to_bf16(from_bits(0x7f7fffffu)) == 0x7f80);
    CHECK(mm_bf16_to_f32(0xc040) == -3.0f);

    /* f16 */
    CHECK(mm_f32_to_f16(1.0f) == 0x3c00);
    CHECK(mm_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(mm_f32_to_f16(65520.0f) == 0x7c00); /* halfway to the next binade: overflows to inf */
    CHECK(mm_f32_to_f16(65519.0f) == 0x7bff);
    CHECK(mm_f32_to_f16(-0.0f) == 0x8000);
    CHECK(mm_f32_to_f16(0x1p-24f) == 0x0001);   /* smallest subnormal */
    CHECK(mm_f32_to_f16(0x1p-25f) == 0x0000);   /* halfway to 0: even is 0 */
    CHECK(mm_f32_to_f16(0x1.8p-24f) == 0x0002); /* 1.5 units: rounds to even 2 */
    CHECK(mm_f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(mm_f16_to_f32(0x3555) == 0.333251953125f);
    CHECK(mm_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);              /* tie to even */
    CHECK(mm_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01);
    CHECK(isnan(mm_f16_to_f32(mm_f32_to_f16(NAN))));
    /* Every f16 value converts to f32 and back unchanged. */
    int roundtrip = 1;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = mm_f16_to_f32((uint16_t)h);
        if (!isnan(f) && mm_f32_to_f16(f) != h)
            roundtrip = 0;
    }
    CHECK(roundtrip);

    /* Buffer conversions */
    float in[4] = {0.3f, -1.5f, 1e-3f, 65536.0f}, out[4];
    uint16_t h[4];
    mm_store_f32(MM_DT_BF16, in, h, 4);
    mm_load_f32(MM_DT_BF16, h, out, 4);
    for (int i = 0; i < 4; i++)
        CHECK(out[i] == mm_round_to(MM_DT_BF16, in[i]));
    mm_store_f32(MM_DT_F16, in, h, 4);
    mm_load_f32(MM_DT_F16, h, out, 4);
    CHECK(isinf(out[3]));
    CHECK(out[1] == -1.5f);
    return mm_check_report();
}
