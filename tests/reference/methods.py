"""Reference merge methods in numpy, written from mergekit's behaviour and docs/merge-contract.md (D3, D8):
the elementwise methods and the per-op rounding primitives. The methods with whole-tensor statistics
are in methods_gta.py (task-arithmetic family with sparsifiers) and methods_stats.py (norm- and
Gram-based methods, sce, ramplus_tl, arcee_fusion).

Arithmetic model (D3), emulating torch's CPU eager kernels:
  * a tensor of the computation dtype is a float32 array holding values of that dtype;
  * every elementwise op is computed in float32 and rounded (nearest even) to the dtype;
  * a Python number multiplies/divides as float32 (not rounded to the dtype first), but is rounded
    to the dtype before an add/subtract;
  * parameters that mergekit turns into tensors of the computation dtype (linear and task-arithmetic
    weights) are rounded to that dtype;
  * sums across models accumulate sequentially in float32, in model order, and round once.

Inputs everywhere are (dtype, values) pairs: dtype is "BF16", "F16" or "F32", values a float32 array.
"""

import numpy as np

from safetensors_io import round_scalar, round_to


# ---- the per-op rounding primitives ---------------------------------------------------------------

def _ignore():
    return np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")


def add(dt, a, b):
    with _ignore():
        return round_to(dt, np.asarray(a, np.float32) + np.asarray(b, np.float32))


def sub(dt, a, b):
    with _ignore():
        return round_to(dt, np.asarray(a, np.float32) - np.asarray(b, np.float32))


def mul(dt, a, b):
    with _ignore():
        return round_to(dt, np.asarray(a, np.float32) * np.asarray(b, np.float32))


def div(dt, a, b):
    with _ignore():
        return round_to(dt, np.asarray(a, np.float32) / np.asarray(b, np.float32))


def mul_number(dt, x, number):
    """tensor * Python number: the number is used as float32, un-rounded (torch >= 2.1 mul kernel)."""
    return mul(dt, x, np.float32(number))


def div_number(dt, x, number):
    return div(dt, x, np.float32(number))


def add_number(dt, x, number):
    """tensor + Python number: the number is rounded to the tensor dtype first."""
    return add(dt, x, round_scalar(dt, number))


def rsub_number(dt, number, x):
    """Python number - tensor (torch's rsub): the number rounded to the tensor dtype first."""
    return sub(dt, round_scalar(dt, number), x)


def rdiv_number(dt, number, x):
    """Python number / tensor: torch's Tensor.__rtruediv__ is `x.reciprocal() * number`, i.e. a rounded
    reciprocal, then a multiply that uses the number as float32."""
    return mul_number(dt, div(dt, np.float32(1.0), x), number)


def clamp_min_number(dt, x, number):
    """x.clamp(min=number): the bound is a value of the tensor dtype."""
    return np.maximum(np.asarray(x, np.float32), round_scalar(dt, number))


def gt_number(dt, x, number):
    """x > number with a Python number: compared as a value of the tensor dtype."""
    return np.asarray(x, np.float32) > round_scalar(dt, number)


def model_sum(dt, terms):
    """Sum over the model axis: sequential float32 accumulation from +0 in model order, one rounding."""
    acc = np.float32(0.0)
    with _ignore():
        for t in terms:
            acc = acc + np.asarray(t, np.float32)
    return round_to(dt, np.asarray(acc, np.float32))


def weights_tensor(dt, weights):
    """torch.tensor(weights, dtype=dt): each Python number -> float32 -> dt."""
    return [round_scalar(dt, w) for w in weights]


# ---- dtype rules (B3.1, B3.2, D8) ----------------------------------------------------------------

def promote(dtypes):
    """torch type promotion among bf16/f16/f32: equal types stay, anything mixed becomes F32."""
    dtypes = set(dtypes)
    return dtypes.pop() if len(dtypes) == 1 else "F32"


def cast(to, dtype_values):
    """(dtype, values) cast to dtype `to` (RNE through float32, as torch's .to() does)."""
    dt, v = dtype_values
    if dt == to:
        return v
    return round_to(to, v)


def finish(dt, values, out_dtype):
    """The stored tensor: cast to out_dtype if set (D8). Returns (dtype, values)."""
    if out_dtype and out_dtype != dt:
        return out_dtype, round_to(out_dtype, values)
    return dt, values


# ---- methods -------------------------------------------------------------------------------------

def linear(inputs, weights, normalize=True, dtype=None, out_dtype=None):
    """B2.1. inputs: list of (dtype, values) in model order; weights: Python numbers.
    out = round(sum_i round(W_i * x_i)), then if normalize round(out / round(sum_i W_i))."""
    if len(inputs) != len(weights):
        raise ValueError("one weight per input")
    dt = dtype or promote(d for d, _ in inputs)
    xs = [cast(dt, i) for i in inputs]
    w = weights_tensor(dt, weights)
    out = model_sum(dt, [mul(dt, wi, xi) for wi, xi in zip(w, xs)])
    if normalize:
        out = div(dt, out, model_sum(dt, [np.float32(wi) for wi in w]))
    return finish(dt, out, out_dtype)


def passthrough(inp, scale=None, dtype=None, out_dtype=None):
    """B2.2: a copy, or x * scale (the scale used as float32)."""
    dt = dtype or inp[0]
    x = cast(dt, inp)
    if scale is not None:
        x = mul_number(dt, x, scale)
    return finish(dt, x, out_dtype)


def task_arithmetic(base, inputs, weights, lam=1.0, normalize=False, dtype=None, out_dtype=None):
    """B2.8 without sparsification and without sign consensus.
    tau_i = round(x_i - b); delta_i = round(W_i * tau_i); mixed = round(sum delta_i);
    divisor = round(sum W_i) (1 if |divisor| < 1e-8); normalize: mixed = round(mixed / divisor);
    lambda != 1: mixed = round(mixed * float32(lambda)); out = round(b + mixed).
    Without `dtype`, every input is cast to the base's dtype."""
    if len(inputs) != len(weights):
        raise ValueError("one weight per non-base input")
    dt = dtype or base[0]
    b = cast(dt, base)
    if not inputs:
        return finish(dt, b, out_dtype)
    taus = [sub(dt, cast(dt, x), b) for x in inputs]
    w = weights_tensor(dt, weights)
    mixed = model_sum(dt, [mul(dt, wi, ti) for wi, ti in zip(w, taus)])
    divisor = model_sum(dt, [np.float32(wi) for wi in w])
    if abs(float(divisor)) < 1e-8:
        divisor = np.float32(1.0)
    if normalize:
        mixed = div(dt, mixed, divisor)
    if lam != 1:
        mixed = mul_number(dt, mixed, lam)
    return finish(dt, add(dt, b, mixed), out_dtype)


def nearswap(base, other, t, dtype=None, out_dtype=None):
    """B2.12, op by op as torch runs it (D3): d = |B - X|; w = clamp(t / d.clamp(min=1e-6), 0, 1) where
    `t / tensor` is reciprocal-then-multiply; out = w*X + (1 - w)*B."""
    dt = dtype or promote([base[0], other[0]])
    a, b = cast(dt, base), cast(dt, other)
    absdiff = np.abs(sub(dt, a, b))
    w = rdiv_number(dt, t, clamp_min_number(dt, absdiff, 1e-6))
    w = np.clip(w, np.float32(0), np.float32(1))
    out = add(dt, mul(dt, w, b), mul(dt, rsub_number(dt, 1, w), a))
    return finish(dt, out, out_dtype)


def times_mask(values, mask):
    """values * mask with the mask as float32 0/1 (torch's `tensor * mask`): a product, not a select, so a
    dropped infinity or NaN gives NaN (0 * inf), and a dropped negative value -0.0."""
    with np.errstate(invalid="ignore"):
        return (np.asarray(values, np.float32) * np.asarray(mask, np.float32)).astype(np.float32)

def ram_parts(dt, base, inputs, epsilon):
    """What ram and ramplus_tl share (B2.11): task vectors, their active masks |tau| > eps, the
    per-element count of active models, and the overlap terms round(tau * a / count) (count > 1)."""
    b = cast(dt, base)
    taus = [sub(dt, cast(dt, x), b) for x in inputs]
    active = [gt_number(dt, np.abs(t), epsilon) for t in taus]
    count = np.zeros(b.shape, np.int64)
    for a in active:
        count += a
    zs = [times_mask(t, a) for t, a in zip(taus, active)]
    overlap = [div(dt, times_mask(z, count > 1), np.maximum(count, 1).astype(np.float32)) for z in zs]
    return b, zs, active, count, overlap


def ram(base, inputs, epsilon=1e-5, dtype=None, out_dtype=None):
    """B2.11 ram: per model the term is tau (count 1), round(tau / count) (count > 1) or 0 (inactive);
    the terms are summed over models (float32, one rounding) and added to the base."""
    dt = dtype or promote([base[0]] + [d for d, _ in inputs])
    if not inputs:
        return finish(dt, cast(dt, base), out_dtype)
    b, zs, _, count, overlap = ram_parts(dt, base, inputs, epsilon)
    terms = [add(dt, times_mask(z, count == 1), o) for z, o in zip(zs, overlap)]  # mergekit adds both
    return finish(dt, add(dt, b, model_sum(dt, terms)), out_dtype)


# ---- helpers for embeddings (B2, B4.5) -------------------------------------------------------------

def crop_common(arrays):
    """Crops 2-D arrays to their common leading sub-matrix [:min_rows, :min_cols]."""
    rows = min(a.shape[0] for a in arrays)
    if arrays[0].ndim == 1:
        return [a[:rows] for a in arrays]
    cols = min(a.shape[1] for a in arrays)
    return [a[:rows, :cols] for a in arrays]
