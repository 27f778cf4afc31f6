"""Reference of the generalised task-arithmetic family (mergekit's behaviour and docs/merge-contract.md D3, D4, D5, D9):
ties, dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, della, della_linear (and task_arithmetic,
which is the family without sparsifier and consensus).

Selection (D5): the kept count is exactly mergekit's k, and among elements whose magnitude equals a
threshold the lower flat index is kept first. Breadcrumbs with n_top = 0 keeps ranks [n_bot, N) (D9).

Random sparsifiers (dare: Bernoulli(rho); della: rank-based Bernoulli) cannot be replayed (D6): the
caller passes the masks, e.g. recovered from the program's output, and the reference computes
everything else (rescale factors, weights, consensus, divisor) from them. `della_probabilities` gives
the keep probability of every element for statistical tests.

Statistics (D4): L1 sums are accumulated in double from values of the work dtype and rounded to that
dtype (through float32), as torch returns them as 0-d tensors of that dtype.
"""

import numpy as np

from methods import add, cast, div, finish, model_sum, mul, mul_number, sub, times_mask, weights_tensor
from safetensors_io import round_to


class ReferenceError_(ValueError):
    """The method refuses the input (mergekit raises): the program must refuse it too."""


# name -> (sparsifier, consensus, default normalize, default rescale)   (B2.8 table)
FAMILY = {
    "task_arithmetic": (None, False, False, False),
    "ties": ("magnitude", True, True, False),
    "dare_ties": ("random", True, False, True),
    "dare_linear": ("random", False, False, True),
    "breadcrumbs": ("outliers", False, False, False),
    "breadcrumbs_ties": ("outliers", True, False, False),
    "della": ("della", True, True, True),
    "della_linear": ("della", False, False, True),
}
RANDOM = ("random", "della")


# ---- statistics helpers (D4) ---------------------------------------------------------------------------

def reduce_to(dt, total):
    """A double-precision reduction result returned as torch returns it: a value of dtype dt."""
    return np.float32(round_to(dt, np.float32([total]))[0])


def l1(dt, x):
    return reduce_to(dt, float(np.abs(np.asarray(x, np.float64)).sum()))


def work_dtype(dt):
    """torch.bernoulli on CPU: bf16 and f32 stay, f16 is upcast to f32 (B2.9)."""
    return "F32" if dt == "F16" else dt


# ---- selection (D5) ------------------------------------------------------------------------------------

def order_keys(values):
    """int64 keys (flat) in the order selections use (D5): the order of the values, -0 equal to +0, and
    every NaN one value above +inf (torch sorts NaN after every number)."""
    flat = np.asarray(values, np.float64).reshape(-1) + 0.0  # -0.0 + 0.0 is +0.0
    flat[np.isnan(flat)] = np.nan                              # one NaN: sign and payload dropped
    bits = flat.view(np.int64)
    return np.where(bits < 0, bits ^ np.int64(0x7FFFFFFFFFFFFFFF), bits)


def top_k_mask(values, k):
    """The k largest of `values` (flat), ties at the threshold broken by lower flat index first."""
    keys = order_keys(values)
    mask = np.zeros(keys.size, bool)
    if k > 0:
        order = np.lexsort((np.arange(keys.size), -keys))  # the last key decides first
        mask[order[:k]] = True
    return mask.reshape(np.shape(values))


def band_mask(values, n_bot, n_top):
    """Ranks [n_bot, N - n_top) of `values` in ascending order (breadcrumbs). Elements equal to the
    lower threshold are kept lower index first, as are those equal to the upper threshold; when both
    thresholds are the same value, the lowest indexes of that value are kept."""
    flat = order_keys(values)
    n = flat.size
    keep_n = n - n_bot - n_top
    mask = np.zeros(n, bool)
    if keep_n <= 0:
        return mask.reshape(np.shape(values))
    asc = np.sort(flat, kind="stable")
    lo, hi = asc[n_bot], asc[n - n_top - 1]
    band = asc[n_bot:n - n_top]
    if lo == hi:
        mask[np.nonzero(flat == lo)[0][:keep_n]] = True
    else:
        mask[(flat > lo) & (flat < hi)] = True
        mask[np.nonzero(flat == lo)[0][:int(np.count_nonzero(band == lo))]] = True
        mask[np.nonzero(flat == hi)[0][:int(np.count_nonzero(band == hi))]] = True
    return mask.reshape(np.shape(values))


def magnitude_k(density, n):
    """ties: k = int(rho * N) in double; k = 0 is mergekit's AssertionError."""
    return int(density * n)


def outlier_counts(density, gamma, n):
    """breadcrumbs: (n_bot, n_top) of B2.9."""
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = n - target - n_top
    if n_bot < 0:
        n_top += n_bot
        n_bot = 0
    return n_bot, n_top


def magnitude_mask(tau, density):
    k = magnitude_k(density, tau.size)
    if k <= 0:
        raise ReferenceError_(f"ties: density {density} keeps no element of {tau.size}")
    return top_k_mask(np.abs(tau), k)


def outlier_mask(tau, density, gamma):
    n_bot, n_top = outlier_counts(density, gamma, tau.size)
    return band_mask(np.abs(tau), n_bot, n_top)


def della_ranks(tau):
    """Ranks 1..L of |tau| along the last axis in ascending order (1-D: one row); ties by index."""
    rows = np.abs(np.asarray(tau, np.float64)).reshape(-1, tau.shape[-1] if tau.ndim else 1)
    order = np.argsort(rows, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, rows.shape[1] + 1)[None, :].repeat(rows.shape[0], 0), axis=1)
    return ranks.reshape(tau.shape)


def della_probabilities(tau, density, epsilon):
    """Keep probability of every element (B2.9 della_magprune): (rho - eps) + 2 eps r_hat with
    r_hat = (r - 1)/(L - 1) the normalised rank in its row, in double."""
    ranks = della_ranks(tau).astype(np.float64)
    length = tau.shape[-1] if tau.ndim else 1
    r_hat = (ranks - 1) / (length - 1) if length > 1 else np.zeros_like(ranks)
    return (density - epsilon) + 2 * epsilon * np.clip(r_hat, 0, 1)


def check_della_epsilon(density, epsilon):
    if 0 < density < 1 and (density + epsilon >= 1 or density - epsilon <= 0):
        raise ReferenceError_("della: epsilon must be chosen such that density +/- epsilon is in (0, 1)")


# ---- sparsification (B2.9) ---------------------------------------------------------------------------


def rescaled(wd, tau, mask, rescale):
    """tau * mask, rescaled by the whole-tensor L1 ratio when asked (sums and ratio in dtype wd)."""
    masked = times_mask(tau, mask)
    if not rescale:
        return masked
    before, after = l1(wd, tau), l1(wd, masked)
    if before < 1e-7 or after < 1e-7:
        return masked
    return mul(wd, masked, div(wd, before, after))


def sparsify(dt, kind, tau, density, gamma=0.01, epsilon=0.15, rescale=False, mask=None):
    """One task vector (values of dtype dt) sparsified; `mask` is required for the random kinds."""
    if kind is None or density >= 1:
        return tau
    if kind == "magnitude":
        return rescaled(dt, tau, magnitude_mask(tau, density), rescale)
    if kind == "outliers":
        return rescaled(dt, tau, outlier_mask(tau, density, gamma), rescale)
    if kind == "della":
        check_della_epsilon(density, epsilon)
        if density <= 0:
            return np.zeros_like(tau)
    if mask is None:
        raise ValueError(f"{kind}: the random mask must be given")
    wd = work_dtype(dt)
    return round_to(dt, rescaled(wd, tau, np.asarray(mask, bool).reshape(tau.shape), rescale))


# ---- the method (B2.8) ---------------------------------------------------------------------------------

def gta(method, base, inputs, weights, densities=None, gammas=None, epsilons=None, lam=1.0, normalize=None,
        rescale=None, dtype=None, out_dtype=None, masks=None):
    """base, inputs: (dtype, values) (inputs already cropped to the base shape); weights, densities,
    gammas, epsilons: per input. masks: per input a bool array (random kinds only). Returns (dtype, values)."""
    kind, consensus, def_norm, def_rescale = FAMILY[method]
    normalize = def_norm if normalize is None else bool(normalize)
    rescale = def_rescale if rescale is None else bool(rescale)
    k = len(inputs)
    densities = densities if densities is not None else [1.0] * k
    gammas = gammas if gammas is not None else [0.01] * k
    epsilons = epsilons if epsilons is not None else [0.15] * k
    dt = dtype or base[0]
    b = cast(dt, base)
    if not inputs:
        return finish(dt, b, out_dtype)
    taus = [sub(dt, cast(dt, x), b) for x in inputs]
    taus = [sparsify(dt, kind, t, densities[i], gammas[i], epsilons[i], rescale,
                     None if masks is None else masks[i]) for i, t in enumerate(taus)]
    w = weights_tensor(dt, weights)
    deltas = [mul(dt, wi, t) for wi, t in zip(w, taus)]
    if consensus:
        majority = np.where(model_sum(dt, deltas) >= 0, np.float32(1), np.float32(-1))
        sel = [np.sign(d) == majority for d in deltas]
        mixed = model_sum(dt, [times_mask(d, s) for s, d in zip(sel, deltas)])
        divisor = model_sum(dt, [times_mask(wi, s) for s, wi in zip(sel, w)])
        divisor = np.where(divisor == 0, np.float32(1), divisor)
    else:
        mixed = model_sum(dt, deltas)
        divisor = model_sum(dt, [np.float32(wi) for wi in w])
        if abs(float(divisor)) < 1e-8:
            divisor = np.float32(1)
    if normalize:
        mixed = div(dt, mixed, divisor)
    if lam != 1:
        mixed = mul_number(dt, mixed, lam)
    return finish(dt, add(dt, b, mixed), out_dtype)
