/* The float32 math of one decoder layer (merge/moe/forward.h): norms, projections, RoPE, attention and
 * the gated MLP's activation, over plain row-major arrays. No allocation, no I/O, no threads: callers
 * split the work (ranges of outputs, of (sequence, head) pairs) and call these on each part. */
#ifndef MM_FWD_MATH_H
#define MM_FWD_MATH_H

#include <stddef.h>
#include <stdint.h>

#include "fwd_arch.h"

/* out[0..n) = x * rsqrt(mean(x^2) + eps) * w (or * (1 + w) with plus_one, Gemma). out may be x. */
void mm_fwd_rmsnorm(const float *x, size_t n, const float *w, float eps, int plus_one, float *out);

/* The dot product of a[0..n) and b[0..n) in float32 (several partial sums, so it vectorises). */
float mm_fwd_dot(const float *a, const float *b, size_t n);

/* Columns [j0, j1) of y = x W^T + bias for `rows` rows: x [rows][in], W [out][in] (a Linear's weight),
 * bias [out] or NULL, y [rows][y_stride] (columns j0..j1 written). */
void mm_fwd_linear(const float *x, size_t rows, size_t in, const float *w, const float *bias, size_t j0, size_t j1,
                   float *y, size_t y_stride);

/* RoPE on one head vector at position pos (transformers' rotate_half layout: element i pairs with
 * i + rot->dim / 2 for i < rot->dim / 2; elements from rot->dim on are left as they are). */
void mm_fwd_apply_rope(float *x, const mm_fwd_rot *rot, size_t pos);

/* Attention of one head of one sequence: out[i] = sum_j p_ij v[j] for i < seq, where p_i is the softmax
 * over the keys j that query i may attend (j <= i, mask[j] != 0, and i - j < window when window > 0) of
 * scale * q[i].k[j] (softcapped: cap * tanh(s / cap) when softcap > 0). A query with no such key gets
 * zeros (torch's scaled_dot_product_attention for a fully masked row). q and out: rows of head_dim floats
 * q_stride apart; k, v: kv_stride apart. scores: seq floats of scratch. */
void mm_fwd_attend(const float *q, const float *k, const float *v, size_t q_stride, size_t kv_stride, size_t head_dim,
                   size_t seq,
                   const uint8_t *mask, size_t window, float scale, float softcap, float *scores, float *out);

/* g[i] = act(g[i]) * u[i] for i < n: the gated MLP's product (SwiGLU, GeGLU). */
void mm_fwd_gate(mm_fwd_act act, float *g, const float *u, size_t n);

#endif
