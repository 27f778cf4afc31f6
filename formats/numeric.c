#include "numeric.h"

#include <math.h>
#include <string.h>

float mm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {
            /* Subnormal: value = man * 2^-24, exact in float32. */
            float f = (float)man * 0x1p-24f;
            union { float f; uint32_t u; } v = { .f = f };
            bits = sign | v.u;
        }
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    union { uint32_t u; float f; } v = { .u = bits };
    return v.f;
}

uint16_t mm_f32_to_f16(float f)
{
    union { float f; uint32_t u; } v = { .f = f };
    uint32_t u = v.u;
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* rounds to >= 65520: overflow to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) {
        /* Result is subnormal or zero: scale so the f16 subnormal unit (2^-24) is 1 and let the
         * float32 add round to nearest even for us. */
        float m = fabsf(f) * 0x1p24f;
        /* m < 2^10 here; adding 2^23 pushes the fraction bits out with RNE. */
        float r = (m + 0x1p23f) - 0x1p23f;
        return (uint16_t)(sign | (uint16_t)r);
    }
    uint32_t lsb = (a >> 13) & 1u;
    a += 0xfffu + lsb;
    return (uint16_t)(sign | (uint16_t)(((a >> 13) - (112u << 10)) & 0xffffu));
}

MM_VECTOR_LOOP void mm_vround(mm_dtype dt, float *x, size_t n)
{
    if (dt == MM_DT_BF16) {
        for (size_t k = 0; k < n; k++)
            x[k] = mm_round_bf16(x[k]);
    } else if (dt == MM_DT_F16) {
        for (size_t k = 0; k < n; k++)
            x[k] = mm_f16_to_f32(mm_f32_to_f16(x[k]));
    }
}

MM_VECTOR_LOOP void mm_vaxpy_round(mm_dtype dt, float *restrict acc, const float *restrict x, float w, size_t n)
{
    /* One loop per dtype: the dtype test stays out of the loop body. */
    if (dt == MM_DT_BF16) {
        for (size_t k = 0; k < n; k++)
            acc[k] += mm_round_bf16(w * x[k]);
    } else if (dt == MM_DT_F16) {
        for (size_t k = 0; k < n; k++)
            acc[k] += mm_f16_to_f32(mm_f32_to_f16(w * x[k]));
    } else {
        for (size_t k = 0; k < n; k++)
            acc[k] += w * x[k];
    }
}

MM_VECTOR_LOOP void mm_load_f32(mm_dtype dt, const void *src, float *dst, size_t n)
{
    const uint16_t *h = src;
    switch (dt) {
    case MM_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t x;
            memcpy(&x, h + i, 2);
            dst[i] = mm_bf16_to_f32(x);
        }
        break;
    case MM_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t x;
            memcpy(&x, h + i, 2);
            dst[i] = mm_f16_to_f32(x);
        }
        break;
    case MM_DT_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    default:
        memset(dst, 0, n * sizeof(float));
        break;
    }
}

MM_VECTOR_LOOP void mm_store_f32(mm_dtype dt, const float *src, void *dst, size_t n)
{
    uint16_t *h = dst;
    switch (dt) {
    case MM_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t x = mm_f32_to_bf16(src[i]);
            memcpy(h + i, &x, 2);
        }
        break;
    case MM_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t x = mm_f32_to_f16(src[i]);
            memcpy(h + i, &x, 2);
        }
        break;
    case MM_DT_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    default:
        break;
    }
}
