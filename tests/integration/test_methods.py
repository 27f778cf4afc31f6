"""Every merge method of mergekit on real mounts of tiny models, against the numpy reference
(tests/reference, written from the spec) and the acceptance properties of B9.3:

  * ram, nearswap: bit-identical to the reference (D3);
  * ties, breadcrumbs, breadcrumbs_ties: exactly floor(rho N) elements kept per model (observed with
    one model of weight 1 over an all-zero base, where the output is the kept task vector), and the
    whole output bit-identical to the reference under D5's tie rule (lower flat index first);
  * slerp, nuslerp, multislerp, karcher, model_stock, sce, ramplus_tl, arcee_fusion: every element
    within 2 ulp (of the output dtype) of the reference;
  * dare_*, della*: statistics only (D6) - the keep rate within 4 sigma of the density (della: of the
    per-rank probability, by rank decile), the L1 norm preserved by rescale, and the exact output given
    the observed mask; identical bytes for other read orders, after remount, with and without the cache;
    another --random-seed gives other masks (those tests are in test_methods_random.py);
  * gradients and conditional filters on method parameters change exactly the tensors they should.

A method the binary does not implement yet makes its tests skip ("not implemented yet")."""

import os

import numpy as np
import pytest

import config_eval
import methods_gta
import mmtest
import safetensors_io as st

DT = {"bf16": "BF16", "f16": "F16", "f32": "F32"}
# Tensors above one selection granule (4096 elements), not multiples of it, with many bf16 ties.
MEDIUM = dict(hidden=64, intermediate=176, vocab=160, heads=4, kv_heads=2)


# ---- helpers -------------------------------------------------------------------------------------------

cfg_of = mmtest.method_config
run_merge = mmtest.run_merge
weights_of = mmtest.weights_of


def inputs_context(expected):
    """A context function for assert_within_ulp: the input values of the worst elements."""
    def ctx(name, idx):
        p = next(p for p in expected.plan if p.name == name)
        lines = []
        for s in p.sources:
            v = s.model.tensor(s.tensor)[1].reshape(-1)
            if v.size >= max(idx) + 1:
                lines.append(f"input {os.path.basename(s.model.path)}: " +
                             ", ".join(f"[{i}] {v[i]!r}" for i in idx))
        return lines
    return ctx


def check(tmp_path, mount, cfg, *args, exact=True, max_ulp=2, nan_bits=True):
    """Mounts cfg, compares every tensor with the reference (bit for bit, or within max_ulp) and
    config.json with the expected one. Returns (reference result, tensors). nan_bits: see
    mmtest.assert_bitwise."""
    expected = config_eval.evaluate(cfg)
    got, out_config = run_merge(tmp_path, mount, cfg, *args)
    if exact:
        mmtest.assert_bitwise(got, expected.tensors, nan_bits)
    else:
        mmtest.assert_within_ulp(got, expected.tensors, max_ulp, inputs_context(expected))
    assert out_config == expected.config, "config.json differs (torch_dtype must be the stored dtype)"
    return expected, got


@pytest.fixture(scope="module")
def medium(make_model):
    """Seeds 1, 2, 3 with MEDIUM sizes, per dtype."""
    return {(s, d): make_model(s, d, **MEDIUM) for s in (1, 2, 3) for d in ("bf16", "f32")}


def zeros_like_model(src, dest):
    return mmtest.derive_model(src, dest, lambda n, dt, v: np.zeros_like(v))


@pytest.fixture(scope="module")
def zero_base(models, medium, tmp_path_factory):
    """All-zero models per dtype with the standard and the MEDIUM names and shapes: over such a base a
    task vector is the model itself, and the output of one model with weight 1 is its sparsified task
    vector."""
    root = tmp_path_factory.mktemp("zero")
    out = {d: zeros_like_model(models[(3, d)], root / d) for d in ("bf16", "f32")}
    out.update({(d, "medium"): zeros_like_model(medium[(3, d)], root / f"{d}-medium") for d in ("bf16", "f32")})
    return out


# ---- nearswap, ram: bit-identical (B2.11, B2.12, D3) -----------------------------------------------------

@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
@pytest.mark.parametrize("t", [0.01, 0.0005])
def test_nearswap_exact(tmp_path, mount, models, dtype, t):
    cfg = cfg_of("nearswap", [(models[(1, dtype)], None)], base=models[(2, dtype)], parameters={"t": t})
    _, got = check(tmp_path, mount, cfg)
    # w = 1 where |B - X| <= t: some elements take X, some stay near B
    B, X = weights_of(models[(2, dtype)]), weights_of(models[(1, dtype)])
    n = "model.layers.0.mlp.down_proj.weight"
    out = got[n].f32()
    assert np.array_equal(out[np.abs(B[n] - X[n]) <= t * 0.99], X[n][np.abs(B[n] - X[n]) <= t * 0.99])


@pytest.mark.parametrize("dtype,out_dtype", [("bf16", "float32"), ("f32", "bfloat16")])
def test_nearswap_dtypes(tmp_path, mount, models, dtype, out_dtype):
    cfg = cfg_of("nearswap", [(models[(1, dtype, "sharded")], None)], base=models[(3, dtype)],
                 parameters={"t": 0.02}, out_dtype=out_dtype, dtype="float16" if dtype == "bf16" else None)
    check(tmp_path, mount, cfg)


@pytest.fixture(scope="module")
def ram_models(models, make_model, tmp_path_factory):
    """A base and three models whose task vectors are active on patterns that cover every count 0..3:
    model i keeps its own value where bit i of (flat index % 8) is set and equals the base elsewhere."""
    root = tmp_path_factory.mktemp("ram")
    out = {}
    for d in ("bf16", "f32"):
        base = models[(3, d)]
        B = weights_of(base)
        for i, seed in enumerate((1, 2, 4)):
            def fn(name, dt, v, i=i):
                idx = np.arange(v.size).reshape(v.shape)
                return np.where((idx % 8) >> i & 1, v, B[name])
            out[(i, d)] = mmtest.derive_model(make_model(seed, d), root / f"m{i}-{d}", fn)
        out[("base", d)] = base
    return out


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("nmodels", [2, 3])
def test_ram_exact(tmp_path, mount, ram_models, dtype, nmodels):
    cfg = cfg_of("ram", [(ram_models[(i, dtype)], None) for i in range(nmodels)], base=ram_models[("base", dtype)])
    check(tmp_path, mount, cfg)


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
def test_ram_random_models_and_epsilon(tmp_path, mount, models, dtype):
    # eps = 2^-6 (exact in every dtype) makes a share of each random task vector inactive
    cfg = cfg_of("ram", [(models[(1, dtype)], None), (models[(2, dtype)], None)], base=models[(3, dtype)],
                 parameters={"epsilon": 0.015625})
    check(tmp_path, mount, cfg)


# ---- ties, breadcrumbs, breadcrumbs_ties: exact counts and bits (B2.8, B2.9, D5, D9) -------------------

@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("density", [0.3, 0.85])
def test_ties_keeps_floor_rho_n(tmp_path, mount, models, zero_base, dtype, density):
    model = models[(1, dtype)]
    cfg = cfg_of("ties", [(model, {"weight": 1.0, "density": density})], base=zero_base[dtype],
                 parameters={"normalize": False})
    _, got = check(tmp_path, mount, cfg)
    X = weights_of(model)
    for n, t in got.items():
        out = t.f32()
        kept = out != 0
        assert kept.sum() == int(density * out.size), f"{n}: kept {kept.sum()}, want floor({density} * {out.size})"
        assert np.array_equal(out[kept], X[n][kept]), n                 # kept elements are the task vector
        assert np.abs(X[n][~kept]).max() <= np.abs(X[n][kept]).min(), n  # ... with the largest magnitudes
        assert np.array_equal(kept, methods_gta.magnitude_mask(X[n], density)), f"{n}: not D5's kept set"


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
def test_ties_consensus_three_models(tmp_path, mount, medium, dtype):
    cfg = cfg_of("ties", [(medium[(1, dtype)], {"weight": 0.7, "density": 0.45}),
                          (medium[(2, dtype)], {"weight": -0.4, "density": 0.6})],
                 base=medium[(3, dtype)], parameters={"lambda": 0.8})
    check(tmp_path, mount, cfg)


@pytest.mark.parametrize("normalize,rescale", [(False, True), (True, True)])
def test_ties_rescale_bf16(tmp_path, mount, medium, normalize, rescale):
    cfg = cfg_of("ties", [(medium[(1, "bf16")], {"weight": 0.5, "density": 0.3}),
                          (medium[(2, "bf16")], {"weight": 0.9, "density": 0.5})],
                 base=medium[(3, "bf16")], parameters={"normalize": normalize, "rescale": rescale})
    check(tmp_path, mount, cfg)


def test_ties_dtype_f32_out_bf16(tmp_path, mount, models):
    cfg = cfg_of("ties", [(models[(1, "bf16")], {"weight": 1.0, "density": 0.5}),
                          (models[(2, "f16")], {"weight": 0.5, "density": 0.7})],
                 base=models[(3, "bf16")], dtype="float32", out_dtype="bfloat16")
    check(tmp_path, mount, cfg)


# Values every sign, zero and rounding rule of the kernel meets: signed zeros (x - b = -0 when x = -0
# and b = +0; deltas that cancel in the consensus sum), infinities, NaN, bf16 subnormals and the
# largest finite values (a weighted sum overflows). The specials land on about one element in eight,
# at places that differ per model, so they meet each other and ordinary values in every combination.
SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 2.0 ** -130, -(2.0 ** -130), 2.0 ** -133,
                     3.3895e38, -3.3895e38, 1.0, -1.0], np.float32)


@pytest.fixture(scope="module")
def special(medium, tmp_path_factory):
    """The MEDIUM models of seeds 1, 2, 3 with SPECIALS written over one element in eight."""
    root = tmp_path_factory.mktemp("special")

    def inject(seed):
        def fn(name, dt, v):
            v = v.reshape(-1).copy()
            i = np.arange(v.size)
            at = (i * 7 + seed * 3) % 61 < 8
            v[at] = SPECIALS[(i[at] // 61 + seed) % SPECIALS.size]
            return v
        return fn
    return {(s, d): mmtest.derive_model(medium[(s, d)], root / f"{s}-{d}", inject(s))
            for s in (1, 2, 3) for d in ("bf16", "f32")}


# (method, global parameters, per-model parameters, bit-exact): per-model None means models without
# parameters (one where the method takes one model, two otherwise); the methods of whole-tensor norms are
# checked within 2 ulp, as everywhere else (NaN matches NaN).
SPECIAL_CASES = [
    ("ties", {"normalize": True}, {"density": 0.6}, True), ("ties", {"normalize": False}, {"density": 0.6}, True),
    ("ties", {"rescale": True}, {"density": 0.6}, True),
    ("task_arithmetic", {}, {}, True), ("task_arithmetic", {"normalize": True}, {}, True),
    ("breadcrumbs_ties", {}, {"density": 0.6}, True), ("breadcrumbs", {"normalize": True}, {"density": 0.6}, True),
    ("breadcrumbs_ties", {"rescale": True}, {"density": 0.6}, True),
    ("sce", {"select_topk": 0.5}, None, True), ("linear", {}, {}, True), ("nearswap", {"t": 0.02}, None, True),
    ("ram", {}, None, True), ("ramplus_tl", {}, None, True),
    ("slerp", {"t": 0.3}, None, False), ("nuslerp", {}, {"weight": 0.6}, False),
    ("multislerp", {}, {"weight": 0.6}, False), ("karcher", {}, {"weight": 0.6}, False),
    ("model_stock", {}, None, False), ("arcee_fusion", {}, None, False),
]
ONE_MODEL = {"nearswap", "slerp", "arcee_fusion"}
NO_BASE = {"linear", "nuslerp", "multislerp", "karcher"}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow/invalid warnings: wanted here
@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("method,parameters,per,exact", SPECIAL_CASES)
def test_special_values(tmp_path, mount, special, dtype, method, parameters, per, exact):
    """The reference's values where signs, zeros, infinities and NaN meet (D3, D4, D5, B2): bit for bit
    where the method is exact, and which NaN comes out of two NaN is not defined, so NaN matches NaN."""
    models = [special[(1, dtype)]] if method in ONE_MODEL else [special[(1, dtype)], special[(2, dtype)]]
    if per is None:
        entries = [(m, None) for m in models]
    else:
        entries = [(m, {"weight": w, **per}) for m, w in zip(models, (0.7, -0.4))]
    base = None if method in NO_BASE else special[(3, dtype)]
    check(tmp_path, mount, cfg_of(method, entries, base=base, parameters=parameters), exact=exact, nan_bits=False)


def test_ties_big_tensors_span_blocks(tmp_path, mount, make_model):
    """Embeddings of two 1 MiB blocks: per-granule tie counts must add up across blocks."""
    blocks = dict(layers=1, hidden=256, intermediate=256, vocab=2100, heads=4, kv_heads=2)
    a, b, c = (make_model(s, "bf16", **blocks) for s in (1, 2, 3))
    cfg = cfg_of("ties", [(a, {"weight": 1.0, "density": 0.35}), (b, {"weight": 0.6, "density": 0.55})], base=c)
    check(tmp_path, mount, cfg)


# ---- the threshold-equal elements per task: counted in the selection pass, or by a locate pass -------------
# The pre-pass guesses each threshold from SAMPLE_SPOTS runs of SAMPLE_RUN elements starting at
# j * (N // SAMPLE_SPOTS) (merge/methods/sparsify.c), and counts per task of 2^18 elements the elements of
# the bins around the guess while it selects. A "fooled" model has only small magnitudes where the sample
# looks and mostly large ones elsewhere, so its guess is far from its threshold (bf16), or no sampled
# element falls in the bucket pass 2 searches (f32): its cuts need the locate pass. An "even" model has
# one distribution everywhere: its counts come from the selection pass. Both must give the reference's
# bytes, and the -v log says which path each took (if the sampling changes, this test must follow it).
SAMPLE_SPOTS, SAMPLE_RUN = 64, 512
WINDOW_SIZES = dict(layers=1, hidden=256, intermediate=256, vocab=4096, heads=4, kv_heads=2)  # 4 tasks
WINDOW_TENSOR = "model.embed_tokens.weight"


def with_ties(dtype, v):
    """f32 values rounded to float16 precision (many ties, and pass 2 decides); others as they are."""
    return v.astype(np.float16).astype(np.float32) if dtype == "F32" else v


def fooled_values(v):
    n = v.size
    rng = np.random.default_rng(11)
    sampled = np.arange(n) % (n // SAMPLE_SPOTS) < SAMPLE_RUN
    large = ~sampled & (rng.random(n) < 0.6)
    mag = (1 + rng.random(n)) * np.where(large, 1.0, 2.0 ** -12)
    return (np.where(rng.random(n) < 0.5, -mag, mag)).astype(np.float32).reshape(v.shape)


@pytest.fixture(scope="module")
def window_models(make_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("window")
    out = {}
    for d in ("bf16", "f32"):
        src = make_model(1, d, **WINDOW_SIZES)
        out[("zero", d)] = zeros_like_model(src, root / f"zero-{d}")
        out[("even", d)] = mmtest.derive_model(src, root / f"even-{d}", lambda n, dt, v: with_ties(dt, v))
        out[("fooled", d)] = mmtest.derive_model(
            src, root / f"fooled-{d}",
            lambda n, dt, v: with_ties(dt, fooled_values(v) if n == WINDOW_TENSOR else v))
    return out


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("method,extra,bounds,parameters", [
    ("ties", {}, 1, None),
    ("ties", {}, 1, {"rescale": True}),  # a locate pass for the L1 sums in any case; counts as above
    ("breadcrumbs_ties", {"gamma": 0.05}, 2, None)])
def test_ties_cut_counts_window_and_locate(tmp_path, mount, window_models, dtype, method, extra, bounds,
                                           parameters):
    cfg = cfg_of(method, [(window_models[("fooled", dtype)], {"weight": 1.0, "density": 0.3, **extra}),
                          (window_models[("even", dtype)], {"weight": 0.5, "density": 0.45, **extra})],
                 base=window_models[("zero", dtype)], parameters=parameters)
    expected = config_eval.evaluate(cfg)
    config = mmtest.write_config(tmp_path, cfg)
    with mount(config, "-v") as m:
        got = mmtest.read_weights(m.path)
        log = m.stderr()
    mmtest.assert_bitwise(got, expected.tensors)

    def cuts(name):
        lines = [ln for ln in log.splitlines() if f"pre-pass of '{name}'" in ln]
        assert len(lines) == 1, f"{name}: {lines}"
        return lines[0]
    # the fooled model's cuts by the locate pass, the even one's from the selection pass
    assert f"cuts counted in the selection pass {bounds}, by a locate pass {bounds}" in cuts(WINDOW_TENSOR)
    assert f"cuts counted in the selection pass {2 * bounds}, by a locate pass 0" in cuts("lm_head.weight")


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("density,gamma", [(0.9, 0.01), (0.5, 0.1), (0.7, 0.0)])
def test_breadcrumbs_keeps_band(tmp_path, mount, medium, zero_base, dtype, density, gamma):
    model = medium[(1, dtype)]
    cfg = cfg_of("breadcrumbs", [(model, {"weight": 1.0, "density": density, "gamma": gamma})],
                 base=zero_base[(dtype, "medium")])
    _, got = check(tmp_path, mount, cfg)
    X = weights_of(model)
    for n, t in got.items():
        out = t.f32()
        kept = out != 0
        size = out.size
        n_bot, n_top = methods_gta.outlier_counts(density, gamma, size)
        assert kept.sum() == size - n_bot - n_top == int(density * size), n
        mag = np.abs(X[n]).reshape(-1)
        order = np.sort(mag)
        if n_top:  # the n_top largest magnitudes are gone; D9: n_top = 0 removes nothing at the top
            assert np.abs(out).max() <= order[size - n_top - 1], n
        else:
            assert np.abs(out).max() == order[-1], n
        assert np.abs(X[n][kept]).min() >= order[n_bot], n


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("method", ["breadcrumbs", "breadcrumbs_ties"])
def test_breadcrumbs_three_models(tmp_path, mount, medium, dtype, method):
    cfg = cfg_of(method, [(medium[(1, dtype)], {"weight": 0.8, "density": 0.6, "gamma": 0.05}),
                          (medium[(2, dtype)], {"weight": 0.5, "density": 0.9})],
                 base=medium[(3, dtype)], parameters={"lambda": 1.5})
    check(tmp_path, mount, cfg)


# ---- slerp (B2.3, B9.3 case 11) ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("t", [0.35, 0.8])
def test_slerp(tmp_path, mount, models, dtype, t):
    cfg = cfg_of("slerp", [(models[(1, dtype)], None), (models[(2, dtype)], None)], base=models[(1, dtype)],
                 parameters={"t": t})
    check(tmp_path, mount, cfg, exact=False)


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
def test_slerp_t0_base_t1_other(tmp_path, mount, models, dtype):
    a, b = models[(1, dtype)], models[(2, dtype)]
    A, B = weights_of(a), weights_of(b)
    for t, want in ((0.0, A), (1.0, B)):
        got, _ = run_merge(tmp_path, mount, cfg_of("slerp", [(b, None)], base=a, parameters={"t": t}),
                           name=f"t{t}.yml")
        for n, x in got.items():
            d = mmtest.ulp_distance(DT[dtype], x.f32(), want[n])
            # B2.3: within 1 ulp before the final cast; bf16 values come back exactly
            assert d.max() <= (0 if dtype == "bf16" else 1), f"t={t} {n}: {d.max()} ulp"


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
def test_slerp_colinear_takes_lerp(tmp_path, mount, models, dtype):
    a = models[(1, dtype)]
    b = mmtest.derive_model(a, tmp_path / "twice", lambda n, dt, v: 2 * v)  # exact in every dtype
    cfg = cfg_of("slerp", [(b, None)], base=a, parameters={"t": 0.35})
    expected, got = check(tmp_path, mount, cfg, exact=False)
    A = weights_of(a)
    for n, t in got.items():
        lerp = st.round_to(DT[dtype], np.float32(0.65) * A[n] + np.float32(0.35) * (2 * A[n]))
        assert np.isfinite(t.f32()).all()
        assert mmtest.ulp_distance(DT[dtype], t.f32(), lerp).max() <= 1, n


def test_slerp_t_filter_and_gradient(tmp_path, mount, models):
    a, b = models[(1, "bf16")], models[(2, "bf16")]
    A, B = st.read_folder(a), st.read_folder(b)
    cfg = cfg_of("slerp", [(b, None)], base=a,
                 parameters={"t": [{"filter": "self_attn", "value": 0}, {"filter": "mlp", "value": [0, 1]},
                                   {"value": 1}]})
    _, got = check(tmp_path, mount, cfg, exact=False)
    for n, t in got.items():
        if "self_attn" in n or (".mlp." in n and ".0." in n):
            assert t.raw == A[n].raw, n
        else:  # mlp of layer 1 (t = 1) and everything else (t = 1)
            assert t.raw == B[n].raw, n


# ---- nuslerp (B2.4, B9.3 case 12) ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("flatten,row_wise", [(True, False), (False, False), (False, True)])
@pytest.mark.parametrize("with_base", [True, False])
def test_nuslerp(tmp_path, mount, models, dtype, flatten, row_wise, with_base):
    cfg = cfg_of("nuslerp", [(models[(1, dtype)], {"weight": 0.3}), (models[(2, dtype)], {"weight": 0.5})],
                 base=models[(3, dtype)] if with_base else None,
                 parameters={"nuslerp_flatten": flatten, "nuslerp_row_wise": row_wise})
    check(tmp_path, mount, cfg, exact=False)


def test_nuslerp_opposite_weights_are_t_half(tmp_path, mount, models):
    a, b, c = models[(1, "bf16")], models[(2, "bf16")], models[(3, "bf16")]
    half, _ = run_merge(tmp_path, mount, cfg_of("nuslerp", [(a, {"weight": -0.5}), (b, {"weight": 0.5})], base=c),
                        name="opposite.yml")
    equal, _ = run_merge(tmp_path, mount, cfg_of("nuslerp", [(a, {"weight": 2.0}), (b, {"weight": 2.0})], base=c),
                         name="equal.yml")
    assert all(half[n].raw == equal[n].raw for n in half)


# ---- multislerp, karcher (B2.5, B2.6) -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("with_base", [True, False])
def test_multislerp(tmp_path, mount, models, dtype, with_base):
    entries = [(models[(1, dtype)], {"weight": 0.5}), (models[(2, dtype)], {"weight": 0.3})]
    if not with_base:
        entries.append((models[(3, dtype)], {"weight": 0.2}))
    cfg = cfg_of("multislerp", entries, base=models[(3, dtype)] if with_base else None)
    check(tmp_path, mount, cfg, exact=False)


def test_multislerp_unnormalized_weights(tmp_path, mount, medium):
    cfg = cfg_of("multislerp", [(medium[(1, "f32")], {"weight": 1.5}), (medium[(2, "f32")], {"weight": 0.7})],
                 base=medium[(3, "f32")], parameters={"normalize_weights": False})
    check(tmp_path, mount, cfg, exact=False)


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("n", [2, 3])
def test_karcher(tmp_path, mount, models, dtype, n):
    cfg = cfg_of("karcher", [(models[(s, dtype)], None) for s in (1, 2, 3)[:n]])
    check(tmp_path, mount, cfg, exact=False)


def test_karcher_base_is_an_ordinary_input_and_params(tmp_path, mount, models):
    cfg = cfg_of("karcher", [(models[(1, "f32")], None), (models[(2, "f32")], None)], base=models[(3, "f32")],
                 parameters={"max_iter": 3, "tol": 1e-4})
    expected, _ = check(tmp_path, mount, cfg, exact=False)
    assert len(expected.plan[0].sources) == 3


# ---- model_stock (B2.7, B9.3 case 13) ----------------------------------------------------------------

@pytest.fixture(scope="module")
def finetunes(models, make_model, tmp_path_factory):
    """A base and three 'fine-tunes' base + 0.1 * common + 0.05 * own noise: their offsets share a
    direction, so the pairwise cosines are well inside (0, 1)."""
    root = tmp_path_factory.mktemp("finetunes")
    out = {}
    for d in ("bf16", "f32"):
        base = models[(3, d)]
        B, common = weights_of(base), weights_of(models[(1, d)])
        for i, seed in enumerate((4, 5, 6)):
            noise = weights_of(make_model(seed, d))

            def fn(name, dt, v, noise=noise):
                return st.round_to(dt, B[name] + np.float32(0.1) * common[name] + np.float32(0.05) * noise[name])
            out[(i, d)] = mmtest.derive_model(base, root / f"ft{i}-{d}", fn)
        out[("base", d)] = base
    return out


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("filter_wise", [False, True])
@pytest.mark.parametrize("n", [2, 3])
def test_model_stock(tmp_path, mount, finetunes, dtype, filter_wise, n):
    cfg = cfg_of("model_stock", [(finetunes[(i, dtype)], None) for i in range(n)], base=finetunes[("base", dtype)],
                 parameters={"filter_wise": filter_wise})
    expected, got = check(tmp_path, mount, cfg, exact=False)
    if n == 2 and not filter_wise and dtype == "f32":
        # B9.3 case 13: t = 2c/(1+c), out = t * mean + (1 - t) * base, checked on one tensor in double
        name = "model.layers.1.mlp.up_proj.weight"
        w0 = weights_of(finetunes[("base", dtype)])[name].astype(np.float64)
        w1, w2 = (weights_of(finetunes[(i, dtype)])[name].astype(np.float64) for i in range(2))
        o1, o2 = (w1 - w0).reshape(-1), (w2 - w0).reshape(-1)
        c = o1 @ o2 / (np.linalg.norm(o1) * np.linalg.norm(o2))
        t = 2 * c / (1 + c)
        want = t * (w1 + w2) / 2 + (1 - t) * w0
        assert np.max(np.abs(got[name].f32() - want)) < 1e-5 * np.max(np.abs(want))


# ---- sce (B2.10) ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("topk", [1.0, 0.5, 0.15])
def test_sce(tmp_path, mount, medium, dtype, topk):
    cfg = cfg_of("sce", [(medium[(1, dtype)], None), (medium[(2, dtype)], None)], base=medium[(3, dtype)],
                 parameters={"select_topk": topk})
    check(tmp_path, mount, cfg, exact=False)


def test_sce_three_models_weights_ignored(tmp_path, mount, models):
    cfg = cfg_of("sce", [(models[(1, "bf16")], {"weight": 5.0}), (models[(2, "bf16")], None),
                         (models[(3, "bf16")], None)], base=models[(1, "f16")], dtype="bfloat16",
                 parameters={"select_topk": 0.7})
    check(tmp_path, mount, cfg, exact=False)


# ---- ramplus_tl (B2.11, D8) ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("params", [{}, {"r": 0.5, "alpha": 5.0}])
def test_ramplus_tl(tmp_path, mount, ram_models, dtype, params):
    cfg = cfg_of("ramplus_tl", [(ram_models[(i, dtype)], None) for i in range(3)], base=ram_models[("base", dtype)],
                 parameters=params or None)
    _, got = check(tmp_path, mount, cfg, exact=False)
    assert {t.dtype for t in got.values()} == {DT[dtype]}  # D8: not float32


def test_ramplus_tl_out_dtype_float32(tmp_path, mount, ram_models):
    cfg = cfg_of("ramplus_tl", [(ram_models[(i, "bf16")], None) for i in range(2)], base=ram_models[("base", "bf16")],
                 parameters={"r": 0.3}, out_dtype="float32")
    _, got = check(tmp_path, mount, cfg, exact=False)
    assert {t.dtype for t in got.values()} == {"F32"}


# ---- arcee_fusion (B2.13, D7, D8) ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("scale", [None, 1.0])
def test_arcee_fusion(tmp_path, mount, models, make_model, dtype, scale):
    a, b = ((models[(s, dtype)] for s in (1, 2)) if scale is None else
            (make_model(s, dtype, scale=scale) for s in (1, 2)))
    cfg = cfg_of("arcee_fusion", [(b, None)], base=a)
    expected, got = check(tmp_path, mount, cfg, exact=False)
    assert {t.dtype for t in got.values()} == {DT[dtype]}  # D8: the input dtype, not float32
    # the output takes the other model only where the importance reaches the threshold
    A = weights_of(a)
    fused = sum(int(np.count_nonzero(t.f32() != A[n])) for n, t in got.items())
    assert 0 < fused < sum(t.f32().size for t in got.values())


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
@pytest.mark.parametrize("seeds", [(1, 2), (3, 1)])
def test_arcee_fusion_medium(tmp_path, mount, medium, dtype, seeds):
    """Rows of 64: the KL sums cancel strongly, so in float32 the mask depends on torch's softmax kernel
    exactly (exp(x - max) as float32, their sum, p = e * (1/sum) with a float32 reciprocal)."""
    a, b = (medium[(s, dtype)] for s in seeds)
    check(tmp_path, mount, cfg_of("arcee_fusion", [(b, None)], base=a), exact=False)


def test_arcee_fusion_out_dtype(tmp_path, mount, models):
    cfg = cfg_of("arcee_fusion", [(models[(2, "bf16")], None)], base=models[(1, "bf16")], out_dtype="float32")
    _, got = check(tmp_path, mount, cfg, exact=False)
    assert {t.dtype for t in got.values()} == {"F32"}


# ---- gradients and conditional filters on method parameters (B1.5) ----------------------------------------

def test_ties_density_gradient_over_layers(tmp_path, mount, models, zero_base):
    model = models[(1, "bf16")]
    cfg = cfg_of("ties", [(model, {"weight": 1.0, "density": [0.2, 0.8]})], base=zero_base["bf16"],
                 parameters={"normalize": False})
    expected, got = check(tmp_path, mount, cfg)
    for n, t in got.items():
        layer = config_eval.layer_index(n)
        rho = 0.8 if layer == 1 else 0.2  # layer 0 and the non-layer tensors (t = 0) get 0.2
        assert np.count_nonzero(t.f32()) == int(rho * t.f32().size), n


# One parameter of each method given as a gradient or a conditional filter list; the reference evaluates
# it per tensor (B1.5), so the comparison checks the right value reached every tensor.
PARAM_CASES = {
    "ties_weight_filter": ("ties", True, lambda m: cfg_of(
        "ties", [(m[1], {"weight": [{"filter": "mlp", "value": 0.2}, {"value": 0.9}], "density": 0.5}),
                 (m[2], {"weight": 0.5, "density": [0.3, 0.9]})], base=m[3], parameters={"lambda": [1.0, 0.5]})),
    "breadcrumbs_gamma_filter": ("breadcrumbs", True, lambda m: cfg_of(
        "breadcrumbs", [(m[1], {"weight": 1.0, "density": 0.8, "gamma": [{"filter": "o_proj", "value": 0.1},
                                                                         {"value": 0.02}]})], base=m[3])),
    "breadcrumbs_ties_normalize_filter": ("breadcrumbs_ties", True, lambda m: cfg_of(
        "breadcrumbs_ties", [(m[1], {"weight": 0.6, "density": 0.7}), (m[2], {"weight": 0.6, "density": 0.8})],
        base=m[3], parameters={"normalize": [{"filter": "mlp", "value": True}, {"value": False}]})),
    "nearswap_t_gradient": ("nearswap", True, lambda m: cfg_of(
        "nearswap", [(m[1], None)], base=m[3], parameters={"t": [0.001, 0.02]})),
    "ram_epsilon_filter": ("ram", True, lambda m: cfg_of(
        "ram", [(m[1], None), (m[2], None)], base=m[3],
        parameters={"epsilon": [{"filter": "self_attn", "value": 0.015625}, {"value": 0.0}]})),
    "ramplus_tl_r_gradient": ("ramplus_tl", False, lambda m: cfg_of(
        "ramplus_tl", [(m[1], None), (m[2], None)], base=m[3],
        parameters={"r": [0.1, 0.9], "alpha": 10.0, "epsilon": 0.015625})),
    "slerp_t_gradient": ("slerp", False, lambda m: cfg_of(
        "slerp", [(m[2], None)], base=m[1], parameters={"t": [0.2, 0.9]})),
    "nuslerp_weight_gradient_flatten_filter": ("nuslerp", False, lambda m: cfg_of(
        "nuslerp", [(m[1], {"weight": [0.1, 0.9]}), (m[2], {"weight": 0.5})], base=m[3],
        parameters={"nuslerp_flatten": [{"filter": "mlp", "value": False}, {"value": True}]})),
    "multislerp_weight_filter": ("multislerp", False, lambda m: cfg_of(
        "multislerp", [(m[1], {"weight": [{"filter": "self_attn", "value": 0.9}, {"value": 0.2}]}),
                       (m[2], {"weight": 0.5})], base=m[3])),
    "karcher_max_iter_filter": ("karcher", False, lambda m: cfg_of(
        "karcher", [(m[1], None), (m[2], None)], parameters={"max_iter": [{"filter": "mlp", "value": 1},
                                                                          {"value": 10}]})),
    "model_stock_filter_wise_filter": ("model_stock", False, lambda m: cfg_of(
        "model_stock", [(m[1], None), (m[2], None)], base=m[3],
        parameters={"filter_wise": [{"filter": "o_proj", "value": True}, {"value": False}]})),
    "sce_select_topk_gradient": ("sce", False, lambda m: cfg_of(
        "sce", [(m[1], None), (m[2], None)], base=m[3], parameters={"select_topk": [0.2, 0.9]})),
}


@pytest.mark.parametrize("case", sorted(PARAM_CASES))
def test_method_parameter_gradients_and_filters(tmp_path, mount, models, case):
    _, exact, make = PARAM_CASES[case]
    cfg = make({s: models[(s, "bf16")] for s in (1, 2, 3)})
    check(tmp_path, mount, cfg, exact=exact)
