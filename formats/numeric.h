/* All merge numerics live here (and nowhere else).
 *
 * The model (docs/merge-contract.md D3): every elementwise op is computed in float32 and rounded, round-to-nearest-even,
 * to the computation dtype after each op, exactly like torch's CPU eager kernels. Values of the
 * computation dtype are carried in float32 variables holding an exactly representable value, so
 * "round to dtype" is a float -> float function. The file is compiled with -ffp-contract=off: a fused
 * multiply-add would skip a rounding torch performs. */
#ifndef MM_NUMERIC_H
#define MM_NUMERIC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dtype.h"
#include "base/vector.h"

/* bf16 <-> f32. f32 -> bf16 rounds to nearest even; NaN stays a quiet NaN. */
static inline float mm_bf16_to_f32(uint16_t h)
{
    union { uint32_t u; float f; } v = { .u = (uint32_t)h << 16 };
    return v.f;
}
static inline uint16_t mm_f32_to_bf16(float f)
{
    union { float f; uint32_t u; } v = { .f = f };
    if ((v.u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((v.u >> 16) | 0x0040u); /* quiet NaN, keep sign and payload top bits */
    uint32_t lsb = (v.u >> 16) & 1u;
    return (uint16_t)((v.u + 0x7fffu + lsb) >> 16);
}

/* IEEE binary16 <-> f32, round to nearest even, overflow to +-inf, subnormals exact. */
float mm_f16_to_f32(uint16_t h);
uint16_t mm_f32_to_f16(float f);

/* Rounds a float32 value to the nearest value of `dt` (F32: identity; BF16/F16: RNE), returned as float.
 * Inline: it runs once per op per element in every kernel. */
static inline float mm_round_to(mm_dtype dt, float x)
{
    if (dt == MM_DT_BF16)
        return mm_bf16_to_f32(mm_f32_to_bf16(x));
    if (dt == MM_DT_F16)
        return mm_f16_to_f32(mm_f32_to_f16(x));
    return x;
}

/* mm_round_to(MM_DT_BF16, x) without branches, so loops calling it vectorise. */
static inline float mm_round_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    const uint32_t rne = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    const uint32_t qnan = (u | 0x00400000u) & 0xffff0000u;
    u = (u & 0x7fffffffu) > 0x7f800000u ? qnan : rne;
    memcpy(&x, &u, 4);
    return x;
}

/* dst[k] = round_dt(EXPR) for k < n, EXPR an expression of k (it may read dst[k]). For bf16 the rounding
 * is inside the loop, which vectorises: one pass over the arrays instead of an op's pass and then
 * mm_vround's. Other dtypes take the two passes. */
#define MM_ROUNDED_LOOP(dt, dst, n, k, expr)                                                           \
    do {                                                                                               \
        if ((dt) == MM_DT_BF16) {                                                                      \
            for (size_t k = 0; k < (n); k++)                                                           \
                (dst)[k] = mm_round_bf16(expr);                                                        \
        } else {                                                                                       \
            for (size_t k = 0; k < (n); k++)                                                           \
                (dst)[k] = (expr);                                                                     \
            mm_vround((dt), (dst), (n));                                                               \
        }                                                                                              \
    } while (0)

/* Rounds x[0..n) in place to `dt`, exactly as mm_round_to does element by element. Written without
 * branches for bf16 so the compiler vectorises it: kernels are sequences of whole-array ops, each
 * followed by one mm_vround, which is torch's per-op rounding. */
void mm_vround(mm_dtype dt, float *x, size_t n);
/* acc[k] += round_dt(w * x[k]) for k < n: one weighted term of a sum of rounded products (torch's
 * `(weights * tensors).sum(0)` before the final rounding of the sum), in one pass. */
void mm_vaxpy_round(mm_dtype dt, float *restrict acc, const float *restrict x, float w, size_t n);

/* Converts n elements of a computable dtype to float32 / from float32 (with RNE rounding). */
void mm_load_f32(mm_dtype dt, const void *src, float *dst, size_t n);
void mm_store_f32(mm_dtype dt, const float *src, void *dst, size_t n);

#endif
