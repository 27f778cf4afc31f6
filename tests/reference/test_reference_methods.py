"""Self-tests of the reference methods with statistics (methods_gta.py, methods_stats.py) and of the
elementwise nearswap / ram, against hand-computed values, exact rationals, and straightforward
vector-space double-precision implementations (mergekit's behaviour and docs/merge-contract.md D3, D4, D5, D7, D9).
Run: /usr/bin/python3 -m pytest tests/reference
"""

import math
import os
import sys
from fractions import Fraction

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import config_eval  # noqa: E402
import methods  # noqa: E402
import methods_gta as gta  # noqa: E402
import methods_stats as ms  # noqa: E402
import safetensors_io as st  # noqa: E402
from test_reference import make_model, rne  # noqa: E402

R = {d: (lambda x, d=d: st.round_to(d, np.asarray(x, np.float32))) for d in ("BF16", "F16", "F32")}


def rand(seed, shape, dt="F32", scale=1.0):
    return R[dt](np.random.default_rng(seed).normal(0, scale, shape).astype(np.float32))


# ---- nearswap (B2.12, B9.3 case 14) ---------------------------------------------------------------------

def test_nearswap_by_hand_bf16():
    # |B - X| = 2^-7: reciprocal 128 (exact), times float32(0.001) = 0.128000006 -> bf16 0.1279296875
    b, x = np.float32([1.0]), np.float32([1.0078125])
    w = rne(rne(Fraction(128) * Fraction(float(np.float32(0.001))), "F32"), "BF16")
    assert w == Fraction(0.1279296875)
    bx = rne(rne(w * Fraction(1.0078125), "F32"), "BF16")
    one_minus = rne(1 - w, "BF16")
    want = rne(rne(bx + rne(rne(one_minus * 1, "F32"), "BF16"), "F32"), "BF16")
    dt, v = methods.nearswap(("BF16", b), ("BF16", x), 0.001)
    assert dt == "BF16" and Fraction(float(v[0])) == want


def test_nearswap_reciprocal_then_multiply():
    # t / d is torch's reciprocal(d) * t: differs from a direct division in the last bit here
    d = np.float32(7.0)
    t = 0.3
    recip = np.float32(np.float32(1) / d) * np.float32(t)
    direct = np.float32(t) / d
    assert recip != direct
    dt, v = methods.nearswap(("F32", np.float32([0.0])), ("F32", np.float32([7.0])), t)
    w = recip
    assert float(v[0]) == float(np.float32(w * np.float32(7.0)) + np.float32(np.float32(1 - w) * np.float32(0)))


@pytest.mark.parametrize("dt", ["BF16", "F32"])
def test_nearswap_small_t_is_base_except_close_elements(dt):
    b = rand(1, (64, 8), dt)
    x = R[dt](b + rand(2, (64, 8), dt, 0.05))
    x[0, :4] = b[0, :4]                                    # identical: w = t / 1e-6 -> 1 -> X (= B)
    x[1, :4] = R[dt](b[1, :4] + np.float32(2 ** -14))      # |d| below t: w = 1 -> X exactly
    t = 1e-3
    _, out = methods.nearswap((dt, b), (dt, x), t)
    close = np.abs(b.astype(np.float64) - x) <= t * 0.99
    assert np.array_equal(out[close], x[close])
    far = np.abs(b.astype(np.float64) - x) > 0.02
    # w <= t / 0.02 = 0.05: out moves from B by at most w |X - B|, plus the bf16 roundings of 1 - w,
    # (1 - w) B and the sum (a few ulp of B)
    assert np.all(np.abs(out[far] - b[far]) <= np.abs(x[far] - b[far]) * 0.051 + np.abs(b[far]) * 2.0 ** -6)


# ---- ram / ramplus_tl (B2.11, B9.3 case 15) -------------------------------------------------------------

def ram_case():
    """Base 0; three models. Positions: 0 unique to m1; 1 shared by m1, m2; 2 shared by all; 3 all
    inactive (|tau| <= eps); 4 unique to m3 (m1, m2 inactive but nonzero)."""
    base = np.float32([1.0, 1.0, 1.0, 1.0, 1.0])
    m1 = np.float32([1.5, 1.25, 2.0, 1.0, 1.0 + 2 ** -9])
    m2 = np.float32([1.0, 0.5, 0.25, 1.0, 1.0 - 2 ** -9])
    m3 = np.float32([1.0, 1.0, 1.75, 1.0 + 2 ** -10, 3.0])
    return base, [m1, m2, m3]


def test_ram_by_hand():
    base, xs = ram_case()
    eps = 2 ** -7  # exact in every dtype: no rounding question about the comparison
    dt, v = methods.ram(("F32", base), [("F32", x) for x in xs], epsilon=eps)
    # 0: tau1 = .5 unique; 1: (.25 - .5)/2 = -.125; 2: (1 - .75 + .75)/3; 3: inactive; 4: m3 unique
    third = [np.float32(np.float32(1.0) / np.float32(3)), np.float32(np.float32(-0.75) / np.float32(3)),
             np.float32(np.float32(0.75) / np.float32(3))]
    want2 = np.float32(np.float32(np.float32(third[0] + third[1]) + third[2]) + np.float32(1))
    assert v.tolist() == [1.5, 0.875, float(want2), 1.0, 3.0]


def test_ram_bf16_rounds_each_term_and_the_sum():
    base = np.float32([0.0])
    xs = [np.float32([1.0]), np.float32([2 ** -8 + 1.0]), np.float32([0.5])]
    dt, v = methods.ram(("BF16", base), [("BF16", R["BF16"](x)) for x in xs], epsilon=2 ** -7)
    terms = [rne(Fraction(float(R["BF16"](x)[0])) / 3, "BF16") for x in xs]
    assert Fraction(float(v[0])) == rne(rne(sum(terms), "F32"), "BF16")


def test_ramplus_tl_lambdas_and_float32_sum():
    base, xs = ram_case()
    eps = 2 ** -7
    b, zs, active, count, _ = methods.ram_parts("F32", ("F32", base), [("F32", x) for x in xs], eps)
    lams = ms.ramplus_lambdas(active, count, r=0.1, alpha=0.2, epsilon=eps)
    # m1: shared at 1, 2 (S=2), unique at 0 (U=1) -> rho 2 -> clamp .2; m2: S=2, U=0 -> 2/eps -> .2;
    # m3: S=1 (pos 2), U=1 (pos 4) -> rho 1 -> .2
    assert [float(x) for x in lams] == [float(np.float32(1) + np.float32(np.float32(0.1) * np.float32(0.2)))] * 3
    dt, v = ms.ramplus_tl(("BF16", R["BF16"](base)), [("BF16", R["BF16"](x)) for x in xs], epsilon=eps)
    assert dt == "BF16"  # D8: the base dtype, not float32
    dt, v32 = ms.ramplus_tl(("BF16", R["BF16"](base)), [("BF16", R["BF16"](x)) for x in xs], epsilon=eps,
                            out_dtype="F32")
    lam = lams[0]
    assert float(v32[0]) == float(np.float32(1) + np.float32(np.float32(0.5) * lam))
    assert float(v32[4]) == float(np.float32(1) + np.float32(np.float32(2.0) * lam))
    assert np.array_equal(v, R["BF16"](v32))


def test_ramplus_tl_rho_below_alpha():
    base = np.zeros(10, np.float32)
    m1 = np.float32([1] * 10)
    m2 = np.float32([1] + [0] * 9)
    b, zs, active, count, _ = methods.ram_parts("F32", ("F32", base), [("F32", m1), ("F32", m2)], 1e-5)
    lams = ms.ramplus_lambdas(active, count, r=0.5, alpha=0.3, epsilon=1e-5)
    rho = np.float32(np.float32(1) / np.float32(9))  # m1: S=1, U=9
    assert float(lams[0]) == float(np.float32(1) + np.float32(np.float32(0.5) * rho))


# ---- selection (D5, D9) -------------------------------------------------------------------------------

def test_top_k_ties_lower_index_first():
    v = np.float32([1, 3, 2, 3, 2, 2, 0])
    assert gta.top_k_mask(v, 3).tolist() == [0, 1, 1, 1, 0, 0, 0]
    assert gta.top_k_mask(v, 4).tolist() == [0, 1, 1, 1, 1, 0, 0]
    assert gta.top_k_mask(v, 0).sum() == 0


def test_band_ties_at_both_thresholds_and_d9():
    v = np.float32([5, 1, 5, 2, 1, 9, 2, 5])  # ascending: 1 1 2 2 5 5 5 9
    # n_bot 1, n_top 2: keep ranks [1, 6) = 1 2 2 5 5: of the 1s keep index 1; of the 5s keep 0, 2
    assert gta.band_mask(v, 1, 2).tolist() == [1, 1, 1, 1, 0, 0, 1, 0]
    # n_top 0 (D9): ranks [3, 8): 2 5 5 5 9 -> of the 2s keep index 3
    assert gta.band_mask(v, 3, 0).tolist() == [1, 0, 1, 1, 0, 1, 0, 1]
    # one value spans both thresholds: keep the lowest indexes of it
    w = np.float32([4, 4, 4, 4, 4, 4])
    assert gta.band_mask(w, 2, 1).tolist() == [1, 1, 1, 0, 0, 0]


def test_breadcrumbs_case9_counts():
    tau = rand(3, (40, 25), "BF16")  # bf16: many ties
    n = tau.size
    kept = gta.outlier_mask(tau, 0.9, 0.01)
    assert kept.sum() == int(0.9 * n)
    mag = np.abs(tau).reshape(-1)
    top = np.sort(mag)[::-1][:int(0.01 * n)]
    removed = mag[~kept.reshape(-1)]
    # the largest floor(0.01 N) magnitudes are among the removed ones (as a multiset)
    assert sorted(np.intersect1d(top, removed).tolist()) == sorted(set(top.tolist()))
    assert mag[kept.reshape(-1)].max() <= top.min()
    # D9: gamma 0 keeps the floor(0.9 N) largest, not nothing
    kept0 = gta.outlier_mask(tau, 0.9, 0.0)
    assert kept0.sum() == int(0.9 * n) and np.array_equal(kept0, gta.magnitude_mask(tau, 0.9))
    # N < 1/gamma: n_top = 0 too
    small = rand(4, (50,), "F32")
    assert gta.outlier_mask(small, 0.5, 0.01).sum() == 25


def test_outlier_counts():
    assert gta.outlier_counts(0.9, 0.01, 1000) == (90, 10)
    assert gta.outlier_counts(0.995, 0.01, 1000) == (0, 5)  # n_bot < 0 -> n_top reduced
    assert gta.outlier_counts(0.9, 0.0, 1000) == (100, 0)


# ---- ties and the GTA family (B2.8, B9.3 case 8) ------------------------------------------------------

def test_task_arithmetic_equals_gta_family_member():
    b = rand(1, (6, 7), "BF16")
    xs = [("BF16", rand(s, (6, 7), "BF16")) for s in (2, 3)]
    for normalize in (False, True):
        want = methods.task_arithmetic(("BF16", b), xs, [0.3, 0.9], 0.7, normalize)
        got = gta.gta("task_arithmetic", ("BF16", b), xs, [0.3, 0.9], lam=0.7, normalize=normalize)
        assert want[0] == got[0] and np.array_equal(want[1], got[1])


def test_ties_case8_consensus_by_hand():
    # base 0, so tau = x. density 1 (no pruning) to isolate consensus and divisor.
    base = np.zeros(6, np.float32)
    x1 = np.float32([1, -1, 0, 2, -0.5, 1])
    x2 = np.float32([1, 2, 0, -1, -0.5, -1])
    x3 = np.float32([-4, 2, 0, -1, 1, 0])
    w = [1.0, 0.5, -1.0]
    # weighted deltas: d1 = x1, d2 = .5 x2, d3 = -x3
    d = [x1, np.float32(0.5) * x2, -x3]
    s = d[0] + d[1] + d[2]
    sign = np.where(s >= 0, 1, -1)
    sel = [np.sign(di) == sign for di in d]
    num = sum(np.where(si, di, 0) for si, di in zip(sel, d))
    den = sum(np.where(si, wi, 0) for si, wi in zip(sel, w))
    den = np.where(den == 0, 1, den)
    want = (num / den).astype(np.float32)
    # element 2: all zero -> never selected, divisor 1; element 4: d = (-.5, -.25, -1): sum < 0, all selected,
    # divisor 1 + .5 - 1 = .5 (a negative weight flips the sign of its delta and subtracts from the divisor)
    assert want[2] == 0 and want[4] == np.float32(-1.75 / 0.5)
    dt, v = gta.gta("ties", ("F32", base), [("F32", x) for x in (x1, x2, x3)], w, [1, 1, 1])
    assert np.array_equal(v, want)
    # element 5: sum = 1 - .5 + 0 = .5 >= 0 -> only d1; element 0: 1 + .5 + 4 > 0: d1, d2, d3 agree
    assert v[5] == 1 and v[0] == np.float32((1 + 0.5 + 4) / (1 + 0.5 - 1))


def test_ties_keeps_floor_rho_n_per_model():
    b = rand(1, (30, 31), "BF16")
    xs = [rand(s, (30, 31), "BF16") for s in (2, 3)]
    for dens in (0.3, 0.55):
        k = int(dens * b.size)
        taus = [R["BF16"](x - b) for x in xs]
        for t in taus:
            assert gta.magnitude_mask(t, dens).sum() == k
        # a single model with weight 1, normalize false: out - base reveals the kept tau (base 0)
        _, v = gta.gta("ties", ("BF16", np.zeros_like(b)), [("BF16", taus[0])], [1.0], [dens], normalize=False)
        assert np.count_nonzero(v) == k
        kept = v != 0
        assert np.array_equal(v[kept], taus[0][kept])
        assert np.abs(taus[0][~kept]).max() <= np.abs(taus[0][kept]).min()


def test_ties_density_zero_is_an_error():
    with pytest.raises(gta.ReferenceError_):
        gta.gta("ties", ("F32", np.zeros(10, np.float32)), [("F32", np.ones(10, np.float32))], [1], [0.0])
    with pytest.raises(gta.ReferenceError_):  # k = int(0.05 * 10) = 0
        gta.gta("ties", ("F32", np.zeros(10, np.float32)), [("F32", np.ones(10, np.float32))], [1], [0.05])


def test_rescale_l1_bf16_factor_is_a_bf16_number():
    tau = rand(5, (20, 20), "BF16")
    mask = gta.magnitude_mask(tau, 0.3)
    out = gta.rescaled("BF16", tau, mask, True)
    before = R["BF16"](np.float32(np.abs(tau.astype(np.float64)).sum()))
    after = R["BF16"](np.float32(np.abs(np.where(mask, tau, 0).astype(np.float64)).sum()))
    ratio = R["BF16"](before / after)
    assert np.array_equal(out, R["BF16"](np.where(mask, tau, 0) * ratio))
    # L1 preserved up to the bf16 rounding of the sums, the ratio and the products
    assert abs(np.abs(out.astype(np.float64)).sum() / np.abs(tau.astype(np.float64)).sum() - 1) < 0.02


def test_dare_with_given_mask():
    b = rand(1, (12, 16), "F32")
    x = rand(2, (12, 16), "F32")
    mask = np.random.default_rng(9).random((12, 16)) < 0.5
    _, v = gta.gta("dare_linear", ("F32", b), [("F32", x)], [1.0], [0.5], masks=[mask])
    tau = (x - b).astype(np.float32)
    ratio = np.float32(np.float32(np.abs(tau.astype(np.float64)).sum()) /
                       np.float32(np.abs(tau[mask].astype(np.float64)).sum()))
    want = (b + np.where(mask, tau * ratio, 0).astype(np.float32)).astype(np.float32)
    assert np.array_equal(v, want)


def test_della_probabilities_span():
    tau = rand(6, (4, 101), "F32")
    p = gta.della_probabilities(tau, 0.5, 0.2)
    assert np.allclose(p.min(axis=1), 0.3) and np.allclose(p.max(axis=1), 0.7)
    ranks = gta.della_ranks(tau)
    assert np.array_equal(np.sort(ranks, axis=1), np.tile(np.arange(1, 102), (4, 1)))
    assert np.all(np.argmax(p, axis=1) == np.argmax(np.abs(tau), axis=1))
    with pytest.raises(gta.ReferenceError_):
        gta.check_della_epsilon(0.5, 0.5)
    with pytest.raises(gta.ReferenceError_):
        gta.check_della_epsilon(0.7, 1.35)
    gta.check_della_epsilon(0.5, 0.4)


# ---- slerp (B2.3, B9.3 case 11) ------------------------------------------------------------------------

def slerp_double(a, b, t):
    a, b = a.astype(np.float64).reshape(-1), b.astype(np.float64).reshape(-1)
    d = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    if abs(d) > 0.9995:
        return (1 - t) * a + t * b
    th = math.acos(d)
    return (math.sin((1 - t) * th) * a + math.sin(t * th) * b) / math.sin(th)


@pytest.mark.parametrize("dt", ["BF16", "F32"])
def test_slerp_t0_t1(dt):
    a, b = rand(1, (16, 9), dt), rand(2, (16, 9), dt)
    d0, v0 = ms.slerp((dt, a), (dt, b), 0.0)
    d1, v1 = ms.slerp((dt, a), (dt, b), 1.0)
    assert d0 == dt == d1
    if dt == "BF16":
        assert np.array_equal(v0, a) and np.array_equal(v1, b)
    else:
        assert np.all(np.abs(v0 - a) <= np.spacing(np.abs(a))) and np.all(np.abs(v1 - b) <= np.spacing(np.abs(b)))


def test_slerp_colinear_takes_lerp():
    a = rand(1, (10, 10), "F32")
    b = (2 * a).astype(np.float32)
    lerp, s0, s1 = ms.slerp_coefficients(a, b, 0.35)
    assert lerp and (s0, s1) == (0.65, 0.35)
    _, v = ms.slerp(("F32", a), ("F32", b), 0.35)
    assert np.array_equal(v, np.float32(0.65) * a + np.float32(0.35) * b)


def test_slerp_against_double():
    a, b = rand(1, (40, 30), "F32"), rand(2, (40, 30), "F32")
    _, v = ms.slerp(("F32", a), ("F32", b), 0.35)
    want = slerp_double(a, b, 0.35).reshape(a.shape)
    assert np.max(np.abs(v - want)) < 1e-5 * np.max(np.abs(want))
    # bf16 output: the double result rounded, within 1 ulp
    _, vb = ms.slerp(("BF16", R["BF16"](a)), ("BF16", R["BF16"](b)), 0.35)
    wb = slerp_double(R["BF16"](a), R["BF16"](b), 0.35).reshape(a.shape)
    assert np.all(np.abs(vb - wb) <= 2.0 ** (np.floor(np.log2(np.abs(wb) + 1e-30)) - 7))


def test_slerp_float32_output_of_bf16_base_is_bf16():
    a, b = rand(1, (4, 4), "BF16"), rand(2, (4, 4), "F32")
    dt, v = ms.slerp(("BF16", a), ("F32", b), 0.5)
    assert dt == "BF16" and np.array_equal(v, R["BF16"](v))


# ---- nuslerp (B2.4, B9.3 case 12) ----------------------------------------------------------------------

def test_nuslerp_t_and_opposite_weights():
    assert ms.nuslerp_t(1.0, 3.0) == 0.75
    assert ms.nuslerp_t(-0.5, 0.5) == 0.5
    x1, x2 = rand(1, (8, 6), "F32"), rand(2, (8, 6), "F32")
    a = ms.nuslerp([("F32", x1), ("F32", x2)], [-0.5, 0.5])[1]
    b = ms.nuslerp([("F32", x1), ("F32", x2)], [1.0, 1.0])[1]
    assert np.array_equal(a, b)


def nuslerp_double(v1, v2, t):
    n1, n2 = np.linalg.norm(v1), np.linalg.norm(v2)
    c = np.clip(v1 @ v2 / (n1 * n2), -1, 1)
    th = math.acos(c)
    if abs(math.sin(th)) < 1e-8:
        return (1 - t) * v1 + t * v2
    return (math.sin((1 - t) * th) * v1 + math.sin(t * th) * v2) / math.sin(th)


@pytest.mark.parametrize("flatten,row_wise", [(True, False), (False, False), (False, True)])
def test_nuslerp_modes_against_double(flatten, row_wise):
    b = rand(3, (12, 10), "F32")
    x1, x2 = rand(1, (12, 10), "F32"), rand(2, (12, 10), "F32")
    _, v = ms.nuslerp([("F32", x1), ("F32", x2)], [0.3, 0.5], ("F32", b), flatten, row_wise)
    t = 0.5 / 0.8
    v1, v2 = (x1 - b).astype(np.float64), (x2 - b).astype(np.float64)
    if flatten:
        want = nuslerp_double(v1.reshape(-1), v2.reshape(-1), t).reshape(b.shape)
    elif row_wise:  # vectors run along the first axis: columns
        want = np.stack([nuslerp_double(v1[:, j], v2[:, j], t) for j in range(b.shape[1])], axis=1)
    else:
        want = np.stack([nuslerp_double(v1[i], v2[i], t) for i in range(b.shape[0])])
    want = want + b
    assert np.max(np.abs(v - want)) < 1e-5
    if not flatten:  # and the three modes really differ
        _, flat = ms.nuslerp([("F32", x1), ("F32", x2)], [0.3, 0.5], ("F32", b), True, False)
        assert not np.array_equal(flat, v)


def test_nuslerp_bf16_scalars_are_bf16():
    # with bf16 the norm, the cosine, theta and the sines are bf16 values: the result differs from the
    # float32 computation rounded to bf16 on some elements
    x1, x2 = rand(1, (64, 64), "BF16"), rand(2, (64, 64), "BF16")
    _, vb = ms.nuslerp([("BF16", x1), ("BF16", x2)], [0.3, 0.5])
    _, vf = ms.nuslerp([("F32", x1), ("F32", x2)], [0.3, 0.5])
    assert not np.array_equal(vb, R["BF16"](vf))
    assert np.max(np.abs(vb - vf)) < 0.05 * np.max(np.abs(vf))


def test_nuslerp_colinear_rows_lerp():
    # rounded unit vectors rarely give a cosine of exactly 1, so the slerp formula usually runs with a
    # tiny angle; it then equals the lerp up to rounding
    x1 = rand(1, (4, 8), "F32")
    x2 = (x1 * 2).astype(np.float32)
    _, v = ms.nuslerp([("F32", x1), ("F32", x2)], [1.0, 1.0], None, False, False)
    lerp = (np.float32(0.5) * x1 + np.float32(0.5) * x2).astype(np.float32)
    assert np.all(np.abs(v - lerp) <= 4 * np.spacing(np.abs(lerp)))
    # an exactly colinear case (cosine rounds to 1 in bf16): the lerp branch itself
    xb = R["BF16"](np.float32([[1, 2, 3, 4]]))
    _, vb = ms.nuslerp([("BF16", xb), ("BF16", R["BF16"](2 * xb))], [1.0, 3.0], None, False, False)
    assert np.array_equal(vb, R["BF16"](R["BF16"](np.float32(0.25) * xb) + R["BF16"](np.float32(0.75) * 2 * xb)))


# ---- multislerp (B2.5) ---------------------------------------------------------------------------------

def multislerp_double(ts, w, eps=1e-8):
    """B2.5 on flat double vectors, no rounding."""
    ts = [t.astype(np.float64).reshape(-1) for t in ts]
    w = np.asarray(w, np.float64) / np.sum(w)
    n = [np.linalg.norm(t) for t in ts]
    u = [t / (ni + eps) for t, ni in zip(ts, n)]
    m = sum(wi * ui for wi, ui in zip(w, u))
    mh = m / np.linalg.norm(m)
    d = [ui @ mh for ui in u]
    r = sum(wi * (ui - di * mh) for wi, ui, di in zip(w, u, d))
    tau = np.linalg.norm(r) + eps
    y = mh * math.cos(tau) + r * (math.sin(tau) / tau)
    return sum(wi * ni for wi, ni in zip(w, n)) * y


def test_multislerp_against_double():
    b = rand(4, (20, 12), "F32")
    xs = [rand(s, (20, 12), "F32") for s in (1, 2, 3)]
    w = [0.5, 0.25, 1.0]
    _, v = ms.multislerp([("F32", x) for x in xs], w, ("F32", b))
    want = multislerp_double([x - b for x in xs], w).reshape(b.shape) + b
    assert np.max(np.abs(v - want)) < 2e-6 * np.max(np.abs(want))


def test_multislerp_two_models_is_slerp_on_task_vectors():
    # with two unit-norm-equal task vectors and equal weights, the result is their normalised mean
    # direction times the mean norm (the geodesic midpoint)
    u = rand(1, (50,), "F32")
    v = rand(2, (50,), "F32")
    u = (u / np.linalg.norm(u)).astype(np.float32)
    v = (v / np.linalg.norm(v)).astype(np.float32)
    _, out = ms.multislerp([("F32", u), ("F32", v)], [1.0, 1.0])
    mid = (u.astype(np.float64) + v) / np.linalg.norm(u.astype(np.float64) + v)
    assert np.max(np.abs(out - mid)) < 1e-5


# ---- karcher (B2.6) ------------------------------------------------------------------------------------

def karcher_double(xs, max_iter=10, tol=1e-5):
    """B2.6 on flat double vectors (the formulas of the spec, no rounding, no coefficient trick)."""
    xs = [x.astype(np.float64).reshape(-1) for x in xs]
    k = len(xs)
    n = [np.linalg.norm(x) for x in xs]
    units = [x / ni for x, ni in zip(xs, n)]
    u = sum(ui for ui in units) / k
    u = u / np.linalg.norm(u)
    for _ in range(max_iter):
        T = np.zeros_like(u)
        for ui in units:
            c = np.clip(u @ ui, -1, 1)
            th = math.acos(c)
            if th < tol:
                continue
            T += (1 / k) * (th / math.sin(th)) * (ui - c * u)
        nt = np.linalg.norm(T)
        if nt < tol:
            break
        u = math.cos(nt) * u + math.sin(nt) * T / nt
        u = u / np.linalg.norm(u)
    return sum(n) / k * u


@pytest.mark.parametrize("k", [2, 3, 4])
def test_karcher_coefficients_equal_vector_iteration(k):
    xs = [rand(s, (30, 7), "F32") for s in range(1, k + 1)]
    _, v = ms.karcher([("F32", x) for x in xs])
    want = karcher_double(xs).reshape(xs[0].shape)
    assert np.max(np.abs(v - want)) < 1e-6 * np.max(np.abs(want))


def test_karcher_two_models_is_the_midpoint():
    a, b = rand(1, (40,), "F32"), rand(2, (40,), "F32")
    _, v = ms.karcher([("F32", a), ("F32", b)], max_iter=50, tol=1e-9)
    ua, ub = a / np.linalg.norm(a), b / np.linalg.norm(b)
    mid = (ua + ub) / np.linalg.norm(ua + ub) * (np.linalg.norm(a) + np.linalg.norm(b)) / 2
    assert np.max(np.abs(v - mid)) < 1e-5


# ---- model_stock (B2.7, B9.3 case 13) ----------------------------------------------------------------

@pytest.mark.parametrize("filter_wise", [False, True])
def test_model_stock_two_finetunes(filter_wise):
    w0 = rand(1, (16, 12), "F32")
    # two fine-tunes with correlated offsets
    common = rand(2, (16, 12), "F32", 0.1)
    w1 = (w0 + common + rand(3, (16, 12), "F32", 0.05)).astype(np.float32)
    w2 = (w0 + common + rand(4, (16, 12), "F32", 0.05)).astype(np.float32)
    c, t = ms.model_stock_t(("F32", w0), [("F32", w1), ("F32", w2)], filter_wise)
    o1, o2 = (w1 - w0).astype(np.float64), (w2 - w0).astype(np.float64)
    if filter_wise:
        cd = (o1 * o2).sum(1) / (np.linalg.norm(o1, axis=1) * np.linalg.norm(o2, axis=1))
    else:
        cd = np.array([(o1 * o2).sum() / (np.linalg.norm(o1) * np.linalg.norm(o2))])
    assert np.allclose(c, cd, rtol=1e-5) and np.allclose(t, 2 * cd / (1 + cd), rtol=1e-5)
    _, v = ms.model_stock(("F32", w0), [("F32", w1), ("F32", w2)], filter_wise)
    td = (2 * cd / (1 + cd))[:, None] if filter_wise else 2 * cd / (1 + cd)
    want = td * (w1.astype(np.float64) + w2) / 2 + (1 - td) * w0
    assert np.max(np.abs(v - want)) < 1e-5


def test_model_stock_needs_two_others():
    with pytest.raises(gta.ReferenceError_):
        ms.model_stock(("F32", np.zeros(4, np.float32)), [("F32", np.ones(4, np.float32))])


# ---- sce (B2.10) ---------------------------------------------------------------------------------------

def test_sce_by_hand_no_topk():
    base = np.zeros(4, np.float32)
    x1 = np.float32([1, -1, 0.5, 0])
    x2 = np.float32([1, 0.5, -0.5, 0])
    # omega_i = mean(tau_i^2): (1+1+.25)/4 = .5625, (1+.25+.25)/4 = .375; normalised by .9375
    om = [np.float32(np.float32(0.5625) / np.float32(0.9375)), np.float32(np.float32(0.375) / np.float32(0.9375))]
    assert [float(x) for x in ms.sce_weights("F32", [x1, x2])] == [float(x) for x in om]
    _, v = ms.sce(("F32", base), [("F32", x1), ("F32", x2)])
    # element 1: sum -0.5 < 0 -> only x1 agrees -> -1; element 2: sum 0 -> + -> only x2 (-.5 is not +)...
    # x1 = .5 agrees -> .5; element 3: all zero -> 0 / clamp(0, 1e-6) = 0
    assert v.tolist() == [1.0, -1.0, 0.5, 0.0]


def test_sce_topk_selection_count_and_ties():
    base = np.zeros((8, 16), np.float32)
    xs = [rand(s, (8, 16), "BF16") for s in (1, 2, 3)]
    taus = [R["BF16"](x - base) for x in xs]
    mask = ms.sce_mask("BF16", taus, 0.4)
    v = ms.sce_variance("BF16", taus)
    assert mask.sum() == ms.sce_k(np.count_nonzero(v), 0.4) == int(128 * 0.4)
    assert v[mask].min() >= v[~mask].max()
    _, out = ms.sce(("BF16", base), [("BF16", x) for x in xs], 0.4)
    assert np.all(out[~mask] == 0) and np.count_nonzero(out[mask]) > 0
    assert ms.sce_k(2048, 0.7) == 1433


# ---- arcee_fusion (B2.13, D7, D8) --------------------------------------------------------------------

def arcee_double(a, m):
    """B2.13 in double, exact quantiles, no rounding."""
    a64, m64 = a.astype(np.float64), m.astype(np.float64)

    def sm(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True) + 1e-8
    p, q = sm(m64), sm(a64)
    kl = (p * np.log(p / q)).sum(axis=-1, keepdims=True)
    imp = np.abs(m64 - a64) * kl
    s = np.sort(imp.reshape(-1))
    n = s.size
    thr = s[int(0.5 * (n - 1))] + 1.5 * (s[int(0.75 * (n - 1))] - s[int(0.25 * (n - 1))])
    return imp, imp >= thr


def test_arcee_fusion_f32_matches_double_mask():
    a, m = rand(1, (32, 24), "F32", 2.0), rand(2, (32, 24), "F32", 2.0)
    imp, mask_d = arcee_double(a, m)
    mask = ms.arcee_fusion_mask(("F32", a), ("F32", m))
    # float32 rounding of the softmax/log/importance can move elements sitting at the threshold only
    assert np.count_nonzero(mask != mask_d) <= 2
    dt, v = ms.arcee_fusion(("F32", a), ("F32", m))
    assert dt == "F32"
    assert np.array_equal(v[mask], (a + (m - a))[mask]) and np.array_equal(v[~mask], a[~mask])
    assert 0 < mask.sum() < mask.size


def test_arcee_fusion_bf16_keeps_dtype_and_rounds_importance():
    a, m = rand(1, (32, 24), "BF16", 2.0), rand(2, (32, 24), "BF16", 2.0)
    dt, v = ms.arcee_fusion(("BF16", a), ("BF16", m))
    assert dt == "BF16"  # D8
    dt32, v32 = ms.arcee_fusion(("BF16", a), ("BF16", m), out_dtype="F32")
    assert dt32 == "F32" and np.array_equal(v, R["BF16"](v32))
    imp = ms.arcee_importance("BF16", a, m)
    assert np.array_equal(imp, R["BF16"](imp))
    fused = v != a
    assert np.all(v[fused] == R["BF16"](a + R["BF16"](m - a))[fused])
    assert np.all(v32[fused] == (a + R["BF16"](m - a))[fused])  # float32 result, not rounded to bf16


def test_arcee_threshold_indices():
    imp = np.arange(11, dtype=np.float32)  # Q(.25) = s[2], Q(.5) = s[5], Q(.75) = s[7]
    assert float(ms.arcee_threshold("F32", imp)) == 5 + 1.5 * (7 - 2)


# ---- configs of every method (config_eval) --------------------------------------------------------

@pytest.fixture
def abc(tmp_path):
    return [make_model(tmp_path / n, s) for n, s in (("a", 1), ("b", 2), ("c", 3))]


def cfg_of(method, base, models, **params):
    c = {"merge_method": method, "models": [{"model": m, "parameters": p} if p else {"model": m} for m, p in models]}
    if base:
        c["base_model"] = base
    if params:
        c["parameters"] = params
    return c


@pytest.mark.parametrize("method", sorted(config_eval.METHOD_PARAMS))
def test_every_method_evaluates(abc, method):
    a, b, c = abc
    w = {"weight": 0.6, "density": 0.5}
    configs = {
        "linear": cfg_of(method, None, [(a, {"weight": 1}), (b, {"weight": 1})]),
        "passthrough": cfg_of(method, None, [(a, None)]),
        "slerp": cfg_of(method, a, [(b, None)], t=0.3),
        "nuslerp": cfg_of(method, c, [(a, {"weight": 0.3}), (b, {"weight": 0.7})]),
        "multislerp": cfg_of(method, c, [(a, {"weight": 0.3}), (b, {"weight": 0.7})]),
        "karcher": cfg_of(method, None, [(a, None), (b, None), (c, None)]),
        "model_stock": cfg_of(method, c, [(a, None), (b, None)]),
        "sce": cfg_of(method, c, [(a, None), (b, None)], select_topk=0.5),
        "ram": cfg_of(method, c, [(a, None), (b, None)]),
        "ramplus_tl": cfg_of(method, c, [(a, None), (b, None)]),
        "nearswap": cfg_of(method, c, [(a, None)], t=0.1),
        "arcee_fusion": cfg_of(method, c, [(a, None)]),
    }
    cfg = configs.get(method) or cfg_of(method, c, [(a, w), (b, w)], epsilon=0.2)
    res = config_eval.evaluate(cfg)
    if method in config_eval.RANDOM:
        assert all(v is None for v in res.tensors.values())
        res = config_eval.evaluate(cfg, masks=lambda p, k, shape: np.ones(shape, bool))
        # all-ones masks with rescale: the ratio is 1, so the result is task arithmetic (+ consensus)
    assert all(v is not None and v[0] in ("BF16", "F16", "F32") for v in res.tensors.values())


def test_config_errors(abc):
    a, b, c = abc
    bad = [
        cfg_of("slerp", a, [(b, None), (c, None)], t=0.5),             # three models
        cfg_of("slerp", None, [(a, None), (b, None)], t=0.5),          # no base
        cfg_of("slerp", a, [(b, None)]),                               # t missing
        cfg_of("nuslerp", a, [(a, {"weight": 1}), (b, {"weight": 1})]),  # base among the two
        cfg_of("model_stock", None, [(a, None), (b, None)]),
        cfg_of("model_stock", a, [(b, None)]),
        cfg_of("ties", c, [(a, {"weight": 1, "density": 0})]),
        cfg_of("della", c, [(a, {"weight": 1, "density": 0.5, "epsilon": 0.6})]),
        cfg_of("della", c, [(a, {"weight": 1, "density": 0.7, "epsilon": 1.35})]),
        cfg_of("nearswap", c, [(a, None), (b, None)], t=0.1),
        cfg_of("nearswap", c, [(a, None)]),
    ]
    for cfg in bad:
        with pytest.raises(config_eval.ConfigError):
            config_eval.evaluate(cfg)


def test_shape_mismatch_errors_for_decorator_methods(tmp_path):
    a = make_model(tmp_path / "a", 1, vocab=6)
    b = make_model(tmp_path / "b", 2, vocab=9)
    c = make_model(tmp_path / "c", 3, vocab=6)
    for method in ("sce", "ram", "ramplus_tl", "multislerp"):
        p = {"weight": 1} if method == "multislerp" else None
        with pytest.raises(config_eval.ConfigError):
            config_eval.evaluate(cfg_of(method, c, [(a, p), (b, p)]))
    with pytest.raises(config_eval.ConfigError):
        config_eval.evaluate(cfg_of("nearswap", c, [(b, None)], t=0.1))
    # the methods with rectify_embed_sizes crop instead
    res = config_eval.evaluate(cfg_of("slerp", a, [(b, None)], t=0.5))
    assert res.tensors["model.embed_tokens.weight"][1].shape == (6, 4)


def test_gradient_of_a_method_parameter(tmp_path):
    a, b, c = [make_model(tmp_path / n, s, dtype="BF16") for n, s in (("a", 1), ("b", 2), ("c", 3))]
    cfg = cfg_of("ties", c, [(a, {"weight": 1, "density": [0.25, 0.75]})], normalize=False)
    res = config_eval.evaluate(cfg)
    dens = {p.name: p.sources[0].params["density"] for p in res.plan}
    assert dens["model.layers.0.mlp.up_proj.weight"] == 0.25 and dens["model.layers.1.mlp.up_proj.weight"] == 0.75
    cfg = cfg_of("slerp", a, [(b, None)], t=[{"filter": "mlp", "value": 0}, {"value": 1}])
    res = config_eval.evaluate(cfg)
    A, B = st.read_folder(a), st.read_folder(b)
    for name, (dt, v) in res.tensors.items():
        assert np.array_equal(v, (A if "mlp" in name else B)[name].f32()), name
