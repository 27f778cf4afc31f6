"""Reference of the methods with whole-tensor (or row/column) statistics that are not in the
task-arithmetic family (mergekit's behaviour and docs/merge-contract.md D3, D4, D5, D7, D8):
slerp, nuslerp, multislerp, karcher, model_stock, sce, ramplus_tl, arcee_fusion.

Numerics:
  * elementwise ops follow D3 (methods.py primitives: float32 op, rounding to the dtype);
  * reductions (norms, dot products, sums, means, variances) accumulate in double over values that
    were first computed and rounded as D3 says (D4); where mergekit gets a 0-d tensor of the dtype, the
    result is rounded to the dtype (through float32) before it is used;
  * scalar functions (acos, sin, cos, sqrt) are evaluated in double and rounded to float32, then to the
    dtype where mergekit's value is a tensor of that dtype;
  * multislerp replays mergekit's chain of tensor ops (every intermediate vector rounded, D4);
  * karcher is evaluated as the spec describes its block-wise form (B2.6: mergekit rounds every
    iterate, which is not reproduced): Gram matrix -> coefficient iteration in double -> one linear
    combination of the inputs, evaluated in double and rounded once.
"""

import math

import numpy as np

from methods import (add, cast, div, div_number, finish, model_sum, mul, mul_number, promote,
                     ram_parts, round_scalar, rsub_number, sub, times_mask, weights_tensor)
from methods_gta import ReferenceError_, reduce_to, top_k_mask
from safetensors_io import round_to


# ---- helpers -------------------------------------------------------------------------------------------

def f64(x):
    return np.asarray(x, np.float64)


def scalar(dt, x):
    """A double value as a value of dtype dt (via float32, as torch computes scalar ops in float)."""
    return np.float32(round_to(dt, np.float32([x]))[0])


def rows_of(x):
    """A tensor as a 2-D [rows, last axis] array (1-D: one row)."""
    return x.reshape(-1, x.shape[-1]) if x.ndim >= 1 else x.reshape(1, 1)


def norm_rows(dt, x):
    """torch.norm(x, dim=-1) of a dt tensor: sqrt of the double sum of squares, rounded to dt."""
    return round_to(dt, np.sqrt((f64(x) ** 2).sum(axis=-1)).astype(np.float32))


def dot_rows(dt, a, b):
    """(a * b).sum(-1): products rounded to dt (D3), summed in double, result rounded to dt."""
    return round_to(dt, f64(mul(dt, a, b)).sum(axis=-1).astype(np.float32))


def fn_dt(dt, fn, x):
    """A unary function of a dt tensor (acos, sin, ...): double evaluation, rounded to float32 then dt."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return round_to(dt, fn(f64(x)).astype(np.float32))


def common_dtype(dtype, inputs):
    return dtype or promote(d for d, _ in inputs)


# ---- slerp (B2.3) --------------------------------------------------------------------------------------

def slerp_coefficients(a, b, t):
    """(lerp, s0, s1) from the three statistics of B2.3 in double; d, theta and sin(theta) are float32
    as in mergekit, t*theta and s0, s1 double (NumPy 1.x), used as float32 by the array multiply."""
    a64, b64 = f64(a).reshape(-1), f64(b).reshape(-1)
    na, nb = math.sqrt(float(a64 @ a64)), math.sqrt(float(b64 @ b64))
    ka = na if na > 1e-8 else 1.0
    kb = nb if nb > 1e-8 else 1.0
    d = np.float32(float(a64 @ b64) / (ka * kb))
    if abs(float(d)) > 0.9995:
        return True, 1 - t, t
    theta = np.float32(math.acos(float(d)))  # |d| <= 0.9995 here, or NaN (then every coefficient is NaN)
    sin_theta = np.float32(math.sin(float(theta)))
    theta_t = float(theta) * t
    s0 = math.sin(float(theta) - theta_t) / float(sin_theta)
    s1 = math.sin(theta_t) / float(sin_theta)
    return False, s0, s1


def slerp(base, other, t, dtype=None, out_dtype=None):
    """B2.3: both tensors as float32 arrays (after the load cast to `dtype`), out = s0*a + s1*b in
    float32 (or the lerp (1-t)*a + t*b when |d| > 0.9995), cast to the base dtype."""
    dt = dtype or base[0]
    a = cast(dtype, base) if dtype else base[1]
    b = cast(dtype, other) if dtype else other[1]
    _, s0, s1 = slerp_coefficients(a, b, t)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.float32(s0) * a.astype(np.float32) + np.float32(s1) * b.astype(np.float32)
    return finish(dt, round_to(dt, out), out_dtype)


# ---- nuslerp (B2.4) ------------------------------------------------------------------------------------

def nuslerp_t(w1, w2):
    s = w1 + w2
    return 0.5 if abs(s) < 1e-6 else w2 / s


def _nuslerp_vectors(dt, t, v1, v2):
    """Rows of v1, v2 (2-D arrays of dt values) interpolated, every op in dt (B2.4)."""
    eps = round_scalar(dt, 1e-7)
    n1, n2 = np.maximum(norm_rows(dt, v1), eps), np.maximum(norm_rows(dt, v2), eps)
    u1, u2 = div(dt, v1, n1[:, None]), div(dt, v2, n2[:, None])
    c = np.clip(dot_rows(dt, u1, u2), np.float32(-1), np.float32(1))
    theta = fn_dt(dt, np.arccos, c)
    sin_theta = fn_dt(dt, np.sin, theta)
    a0 = fn_dt(dt, np.sin, mul_number(dt, theta, 1 - t))
    a1 = fn_dt(dt, np.sin, mul_number(dt, theta, t))
    res = div(dt, add(dt, mul(dt, a0[:, None], v1), mul(dt, a1[:, None], v2)), sin_theta[:, None])
    lerp = add(dt, mul_number(dt, v1, 1 - t), mul_number(dt, v2, t))
    colinear = np.abs(sin_theta) < 1e-8
    return np.where(colinear[:, None], lerp, res)


def nuslerp_layout(x, flatten, row_wise):
    """(vectors as rows, function back to the tensor's shape) for the three modes of B2.4."""
    shape = x.shape
    if flatten or x.ndim < 2:
        return x.reshape(1, -1), lambda r: r.reshape(shape)
    if row_wise:
        xt = np.swapaxes(x, 0, -1)
        tshape = xt.shape
        return xt.reshape(-1, tshape[-1]), lambda r: np.swapaxes(r.reshape(tshape), 0, -1)
    return x.reshape(-1, shape[-1]), lambda r: r.reshape(shape)


def nuslerp(inputs, weights, base=None, flatten=True, row_wise=False, dtype=None, out_dtype=None):
    """inputs: the two non-base models in config order (model 1, model 2); t = w2/(w1+w2)."""
    if len(inputs) != 2:
        raise ReferenceError_("nuslerp needs exactly two models besides the base")
    dt = common_dtype(dtype, inputs + ([base] if base is not None else []))
    t = nuslerp_t(float(weights[0]), float(weights[1]))
    vs = [cast(dt, x) for x in inputs]
    if base is not None:
        b = cast(dt, base)
        vs = [sub(dt, v, b) for v in vs]
    r1, back = nuslerp_layout(vs[0], flatten, row_wise)
    r2, _ = nuslerp_layout(vs[1], flatten, row_wise)
    out = back(_nuslerp_vectors(dt, t, r1, r2))
    if base is not None:
        out = add(dt, out, b)
    return finish(dt, out, out_dtype)


# ---- Gram-based combination helpers ------------------------------------------------------------------

def gram(vectors):
    """G_ij = <v_i, v_j> in double."""
    m = np.stack([f64(v).reshape(-1) for v in vectors])
    return m @ m.T


def combine(dt, coefs, vectors, base=None):
    """round(sum_i c_i v_i) computed in double and rounded once (through float32); plus the base with
    D3 rounding."""
    acc = np.zeros(vectors[0].shape, np.float64)
    for c, v in zip(coefs, vectors):
        acc += float(c) * f64(v)
    out = round_to(dt, acc.astype(np.float32))
    return add(dt, out, base) if base is not None else out


# ---- multislerp (B2.5) ---------------------------------------------------------------------------------

def norm_all(dt, x):
    """torch.norm of a whole dt tensor: a 0-d tensor of dt."""
    return np.float32(norm_rows(dt, np.asarray(x).reshape(1, -1))[0])


def dot_all(dt, a, b):
    return np.float32(dot_rows(dt, np.asarray(a).reshape(1, -1), np.asarray(b).reshape(1, -1))[0])


def multislerp(inputs, weights, base=None, normalize_weights=True, eps=1e-8, dtype=None, out_dtype=None):
    """B2.5 as mergekit runs it (D4): every intermediate vector (U_i, M, M_hat, V_i, R, the result) is a
    tensor of dt with D3 rounding, every reduction (norms, dots) sums those rounded values in double and
    is rounded to dt, sums over the model axis are float32 with one rounding."""
    dt = common_dtype(dtype, inputs + ([base] if base is not None else []))
    if len(inputs) == 1:
        return finish(dt, cast(dt, inputs[0]), out_dtype)
    b = cast(dt, base) if base is not None else None
    ts = [cast(dt, x) for x in inputs]
    if b is not None:
        ts = [sub(dt, x, b) for x in ts]
    w = weights_tensor(dt, weights)
    if normalize_weights:
        total = model_sum(dt, [np.float32(v) for v in w])
        w = [np.float32(div(dt, wi, total)) for wi in w]
    eps_dt = round_scalar(dt, eps)
    norms = [norm_all(dt, x) for x in ts]
    units = [div(dt, x, add(dt, n, eps_dt)) for x, n in zip(ts, norms)]
    mean = model_sum(dt, [mul(dt, u, wi) for u, wi in zip(units, w)])
    mean_norm = norm_all(dt, mean)
    if mean_norm < eps_dt:
        if len(ts) != 2:
            raise ReferenceError_("multislerp: the weighted mean of the unit vectors is zero")
        out = add(dt, mul(dt, ts[0], w[0]), mul(dt, ts[1], w[1]))
    else:
        mean = div(dt, mean, mean_norm)
        dots = [dot_all(dt, u, mean) for u in units]
        tangents = [sub(dt, u, mul(dt, d, mean)) for u, d in zip(units, dots)]
        r = model_sum(dt, [mul(dt, v, wi) for v, wi in zip(tangents, w)])
        tau = add(dt, norm_all(dt, r), eps_dt)
        sinc = div(dt, fn_dt(dt, np.sin, tau), tau)
        out = add(dt, mul(dt, mean, fn_dt(dt, np.cos, tau)), mul(dt, r, sinc))
        out = mul(dt, out, model_sum(dt, [mul(dt, n, wi) for n, wi in zip(norms, w)]))
    if b is not None:
        out = add(dt, out, b)
    return finish(dt, out, out_dtype)


# ---- karcher (B2.6) ------------------------------------------------------------------------------------

def karcher_coefficients(G, norms, max_iter=10, tol=1e-5):
    """The Karcher mean iteration of B2.6 run on coefficients over the inputs x_j (u = sum_j a_j x_j),
    in double. norms: the float32 norms n_i. Returns the coefficients c_j of out = sum_j c_j x_j."""
    k = len(norms)
    alpha = 1.0 / k
    valid = [i for i in range(k) if norms[i] > tol]
    if not valid:
        return np.zeros(k)
    abar = 1.0 / len(valid)  # alpha_i / sum over valid of alpha

    def unit(i):
        v = np.zeros(k)
        v[i] = 1.0 / norms[i]
        return v

    def norm(c):
        return math.sqrt(max(float(c @ G @ c), 0.0))

    u = sum(abar * unit(i) for i in valid)
    nu = norm(u)
    u = unit(valid[0]) if nu < tol else u / nu
    for _ in range(max_iter):
        T = np.zeros(k)
        for i in valid:
            ui = unit(i)
            c = max(-1.0, min(1.0, float(u @ G @ ui)))
            theta = math.acos(c)
            if theta < tol:
                continue
            T += abar * (theta / math.sin(theta)) * (ui - c * u)
        nt = norm(T)
        if nt < tol:
            break
        u = math.cos(nt) * u + math.sin(nt) * (T / nt)
        nu = norm(u)
        if nu > tol:
            u = u / nu
    s = sum(alpha * n for n in norms)
    return s * u


def karcher(inputs, max_iter=10, tol=1e-5, dtype=None, out_dtype=None):
    dt = common_dtype(dtype, inputs)
    xs = [cast(dt, x) for x in inputs]
    if len(xs) == 1:
        return finish(dt, xs[0], out_dtype)
    G = gram(xs)
    norms = [float(np.float32(math.sqrt(G[i, i]))) for i in range(len(xs))]
    coefs = karcher_coefficients(G, norms, int(max_iter), float(tol))
    return finish(dt, combine(dt, coefs, xs), out_dtype)


# ---- model_stock (B2.7) --------------------------------------------------------------------------------

def _model_stock_parts(dt, base, inputs, filter_wise):
    """(w0 as rows, the others as rows, t per row as a [rows, 1] array of dt values)."""
    if len(inputs) < 2:
        raise ReferenceError_("model_stock needs a base model and at least two other models")
    as_rows = rows_of if filter_wise else (lambda x: x.reshape(1, -1))
    r0 = as_rows(cast(dt, base))
    rs = [as_rows(cast(dt, x)) for x in inputs]
    offsets = [sub(dt, w, r0) for w in rs]
    norms = [norm_rows(dt, o) for o in offsets]
    cos = []
    for i in range(len(offsets)):
        for j in range(i + 1, len(offsets)):
            prod = np.maximum(mul(dt, norms[i], norms[j]), round_scalar(dt, 1e-6))
            cos.append(np.clip(div(dt, dot_rows(dt, offsets[i], offsets[j]), prod), np.float32(-1), np.float32(1)))
    # torch.stack(cos).mean(0) on CPU (torch >= 2.1): float32 sum in pair order, float32 division by
    # the count, one rounding to dt
    c = round_to(dt, (model_sum("F32", cos) / np.float32(len(cos))).astype(np.float32))[:, None]
    n = len(rs)
    t = div(dt, mul_number(dt, c, n), add(dt, round_scalar(dt, 1), mul_number(dt, c, n - 1)))
    return r0, rs, c, t


def model_stock(base, inputs, filter_wise=False, dtype=None, out_dtype=None):
    """Every op as mergekit runs it in dtype dt (D3/D4): offsets, norms, pairwise cosines, their mean,
    t = N c / (1 + (N-1) c), out = t * mean(w_i) + (1 - t) * w0 with mean(w_i) = Python sum / N."""
    dt = common_dtype(dtype, [base] + list(inputs))
    r0, rs, _, t = _model_stock_parts(dt, base, inputs, filter_wise)
    avg = rs[0]
    for w in rs[1:]:
        avg = add(dt, avg, w)
    avg = div_number(dt, avg, len(rs))
    out = add(dt, mul(dt, t, avg), mul(dt, rsub_number(dt, 1, t), r0))
    return finish(dt, out.reshape(base[1].shape), out_dtype)


def model_stock_t(base, inputs, filter_wise=False, dtype=None):
    """(mean cosine c, t) per row (one row unless filter_wise), as dt values, for property tests."""
    dt = common_dtype(dtype, [base] + list(inputs))
    _, _, c, t = _model_stock_parts(dt, base, inputs, filter_wise)
    return c[:, 0], t[:, 0]


# ---- sce (B2.10) ---------------------------------------------------------------------------------------

def sce_k(nonzero, select_topk):
    """k = int(count_nonzero(v) * select_topk): an int64 0-d tensor times a Python number is a float32
    tensor in torch."""
    return int(np.float32(nonzero) * np.float32(select_topk))


def sce_variance(dt, taus):
    """Population variance across models per element, from dt values, in double, rounded to dt."""
    stack = f64(np.stack(taus))
    with np.errstate(over="ignore", invalid="ignore"):  # infinities and NaN give inf and NaN, as in torch
        return round_to(dt, stack.var(axis=0).astype(np.float32))


def sce_mask(dt, taus, select_topk):
    if select_topk >= 1:
        return None
    if select_topk <= 0:
        return np.zeros(taus[0].shape, bool)
    v = sce_variance(dt, taus)
    k = sce_k(np.count_nonzero(v), select_topk)
    return top_k_mask(np.abs(v), k) if k > 0 else np.zeros(v.shape, bool)


def sce_weights(dt, taus):
    """omega_i = mean(tau_i^2) (squares rounded to dt, mean in double rounded to dt), divided by their
    sum (rounded to dt, used as a float32 number), or 1/k each when that sum is < 1e-6."""
    om = [reduce_to(dt, float(f64(mul(dt, t, t)).mean())) for t in taus]
    total = float(model_sum(dt, om))
    if abs(total) < 1e-6:
        return [np.float32(round_to(dt, np.float32([1.0 / len(taus)]))[0])] * len(taus)
    return [np.float32(div_number(dt, np.float32([o]), total)[0]) for o in om]


def sce(base, inputs, select_topk=1.0, dtype=None, out_dtype=None):
    dt = common_dtype(dtype, [base] + list(inputs))
    b = cast(dt, base)
    if not inputs:
        return finish(dt, b, out_dtype)
    taus = [sub(dt, cast(dt, x), b) for x in inputs]
    mask = sce_mask(dt, taus, select_topk)
    if mask is not None:
        taus = [times_mask(t, mask) for t in taus]
    majority = np.where(model_sum(dt, taus) >= 0, np.float32(1), np.float32(-1))
    erase = [np.sign(t) == majority for t in taus]
    om = sce_weights(dt, taus)
    ew = [times_mask(np.full(e.shape, w, np.float32), e) for e, w in zip(erase, om)]
    merged = model_sum(dt, [mul(dt, t, w) for t, w in zip(taus, ew)])
    den = np.maximum(model_sum(dt, ew), round_scalar(dt, 1e-6))
    return finish(dt, add(dt, b, div(dt, merged, den)), out_dtype)


# ---- ramplus_tl (B2.11) --------------------------------------------------------------------------------

def ramplus_lambdas(active, count, r=0.1, alpha=0.2, epsilon=1e-5):
    """lambda_i = 1 + r * clamp(S_i / max(U_i, eps), 0, alpha), all in float32 (torch promotion)."""
    out = []
    for a in active:
        s = np.float32(np.count_nonzero(a & (count > 1)))
        u = np.float32(max(float(np.count_nonzero(a & (count == 1))), float(np.float32(epsilon))))
        rho = np.float32(s / u)
        rho = np.float32(min(max(rho, np.float32(0)), np.float32(alpha)))
        out.append(np.float32(np.float32(1) + np.float32(np.float32(r) * rho)))
    return out


def ramplus_tl(base, inputs, r=0.1, alpha=0.2, epsilon=1e-5, dtype=None, out_dtype=None):
    """Unique contributions times lambda_i are float32 (lambda is float32), overlap terms are dt values;
    their sum over models and the base add are float32; the result is stored as out_dtype, else in the
    base dtype (D8)."""
    dt = common_dtype(dtype, [base] + list(inputs))
    if not inputs:
        return finish(dt, cast(dt, base), out_dtype)
    b, zs, active, count, overlap = ram_parts(dt, base, inputs, epsilon)
    lams = ramplus_lambdas(active, count, r, alpha, epsilon)
    with np.errstate(invalid="ignore", over="ignore"):  # mergekit adds both terms: a dropped inf gives NaN
        terms = [(times_mask(z, count == 1) * lam).astype(np.float32) + o for z, lam, o in zip(zs, lams, overlap)]
    merged = model_sum("F32", terms)
    # mergekit's result is float32; it is stored as out_dtype, else in the base dtype (D8)
    return finish("F32", add("F32", b, merged), out_dtype or dt)


# ---- arcee_fusion (B2.13) ------------------------------------------------------------------------------

def softmax_rows(dt, x):
    """F.softmax along the last axis as torch's CPU kernel computes it (D3): in float32, e = exp(x - max)
    (an elementwise value, so rounded to float32 before the sum, D4), S = sum(e) (in double, D4, as a
    float32), p = e * (1/S) with the reciprocal a float32, then p rounded to dt; plus 1e-8 (rounded to
    dt first)."""
    r = rows_of(x).astype(np.float32)
    e = fn_dt("F32", np.exp, (r - r.max(axis=1, keepdims=True)).astype(np.float32))
    recip = (np.float32(1) / f64(e).sum(axis=1, keepdims=True).astype(np.float32)).astype(np.float32)
    p = round_to(dt, (e * recip).astype(np.float32))
    return add(dt, p, round_scalar(dt, 1e-8))


def arcee_importance(dt, a, m):
    """I = |M - A| * KL_row with every elementwise value rounded to dt (D4)."""
    diff = np.abs(rows_of(sub(dt, m, a)))
    p, q = softmax_rows(dt, m), softmax_rows(dt, a)
    logr = fn_dt(dt, np.log, div(dt, p, q))
    kl = round_to(dt, f64(mul(dt, p, logr)).sum(axis=1).astype(np.float32))
    return mul(dt, diff, kl[:, None]).reshape(a.shape)


def arcee_threshold(dt, importance):
    """Q(.5) + 1.5 (Q(.75) - Q(.25)), Q(q) = sorted[floor(q (N-1))] over the whole tensor (D7)."""
    s = np.sort(importance.reshape(-1))
    n = s.size

    def q(x):
        return np.float32(s[int(np.float32(x) * np.float32(n - 1))])
    spread = mul_number(dt, sub(dt, q(0.75), q(0.25)), 1.5)
    return np.float32(add(dt, q(0.5), spread))


def arcee_fusion(base, other, dtype=None, out_dtype=None):
    dt = common_dtype(dtype, [base, other])
    a, m = cast(dt, base), cast(dt, other)
    imp = arcee_importance(dt, a, m)
    fused = imp >= arcee_threshold(dt, imp)
    # (M - A) * mask is float32 (the mask is), so A + it is a float32 result; stored as out_dtype, else
    # in the input dtype (D8)
    out = add("F32", a, times_mask(sub(dt, m, a), fused))  # a product: 0 * inf is NaN, -0 + 0 is +0
    return finish("F32", out, out_dtype or dt)


def arcee_fusion_mask(base, other, dtype=None):
    dt = common_dtype(dtype, [base, other])
    a, m = cast(dt, base), cast(dt, other)
    imp = arcee_importance(dt, a, m)
    return imp >= arcee_threshold(dt, imp)
