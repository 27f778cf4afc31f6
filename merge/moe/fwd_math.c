#include "fwd_math.h"

#include <math.h>
#include <string.h>

void mm_fwd_rmsnorm(const float *x, size_t n, const float *w, float eps, int plus_one, float *out)
{
    float ss = mm_fwd_dot(x, x, n);
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (size_t i = 0; i < n; i++)
        out[i] = x[i] * r * (plus_one ? 1.0f + w[i] : w[i]);
}

float mm_fwd_dot(const float *a, const float *b, size_t n)
{
    /* eight independent sums: without -ffast-math the compiler may only vectorise a reduction this way */
    float s[8] = { 0 };
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t k = 0; k < 8; k++)
            s[k] += a[i + k] * b[i + k];
    for (; i < n; i++)
        s[0] += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

void mm_fwd_linear(const float *x, size_t rows, size_t in, const float *w, const float *bias, size_t j0, size_t j1,
                   float *y, size_t y_stride)
{
    /* a weight row is read once for every input row: the weights are the big operand */
    for (size_t j = j0; j < j1; j++) {
        const float *wj = w + j * in;
        const float b = bias ? bias[j] : 0.0f;
        for (size_t r = 0; r < rows; r++)
            y[r * y_stride + j] = mm_fwd_dot(x + r * in, wj, in) + b;
    }
}

void mm_fwd_apply_rope(float *x, const mm_fwd_rot *rot, size_t pos)
{
    const size_t h = rot->dim / 2;
    for (size_t i = 0; i < h; i++) {
        /* transformers: the angle is float32 position times float32 frequency */
        float ang = (float)pos * rot->inv_freq[i];
        float c = cosf(ang) * rot->scale, s = sinf(ang) * rot->scale;
        float a = x[i], b = x[i + h];
        x[i] = a * c - b * s;
        x[i + h] = b * c + a * s;
    }
}

void mm_fwd_attend(const float *q, const float *k, const float *v, size_t q_stride, size_t kv_stride, size_t head_dim,
                   size_t seq,
                   const uint8_t *mask, size_t window, float scale, float softcap, float *scores, float *out)
{
    for (size_t i = 0; i < seq; i++) {
        float *o = out + i * q_stride;
        size_t j0 = window && i + 1 > window ? i + 1 - window : 0;
        float mx = -INFINITY;
        for (size_t j = j0; j <= i; j++) {
            if (mask && !mask[j])
                continue;
            float s = mm_fwd_dot(q + i * q_stride, k + j * kv_stride, head_dim) * scale;
            if (softcap > 0)
                s = softcap * tanhf(s / softcap);
            scores[j] = s;
            if (s > mx)
                mx = s;
        }
        memset(o, 0, head_dim * sizeof *o);
        if (mx == -INFINITY)
            continue; /* nothing to attend: zeros, as sdpa gives */
        float sum = 0;
        for (size_t j = j0; j <= i; j++) {
            if (mask && !mask[j])
                continue;
            scores[j] = expf(scores[j] - mx);
            sum += scores[j];
        }
        for (size_t j = j0; j <= i; j++) {
            if (mask && !mask[j])
                continue;
            const float p = scores[j] / sum, *vj = v + j * kv_stride;
            for (size_t d = 0; d < head_dim; d++)
                o[d] += p * vj[d];
        }
    }
}

void mm_fwd_gate(mm_fwd_act act, float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float x = g[i], a;
        if (act == MM_ACT_SILU)
            a = x / (1.0f + expf(-x));
        else if (act == MM_ACT_GELU_ERF)
            a = 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
        else /* tanh approximation (gelu_pytorch_tanh, gelu_new) */
            a = 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
        g[i] = a * u[i];
    }
}
