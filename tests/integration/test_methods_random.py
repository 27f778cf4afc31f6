"""The random methods dare_ties, dare_linear, della, della_linear (docs/merge-contract.md D6) on real mounts.
Their masks come from a counter-based generator, so they match mergekit in distribution only:

  * one model of weight 1 over an all-zero base: the output is the sparsified, rescaled task vector,
    so the mask is visible (output != 0). Then: the keep rate is within 4 sigma of the density (della:
    of the per-rank probability (rho - eps) + 2 eps r_hat, by rank decile, spanning [rho - eps, rho + eps]);
    the L1 norm is preserved by the rescale; and given the observed mask, the output equals the numpy
    reference bit for bit (rescale factor, weights, consensus);
  * the same bytes for different read orders (forward and reverse with O_DIRECT, so every read reaches
    the daemon, without cache), after a remount (computed again, random ranges) and from the cache;
  * another --random-seed gives other masks; a density gradient gives per-layer keep rates.
"""

import mmap
import os
import random

import numpy as np
import pytest

import config_eval
import methods_gta
import mmtest
import safetensors_io as st

cfg_of = mmtest.method_config
run_merge = mmtest.run_merge
weights_of = mmtest.weights_of

# Rows of 256 and 512 for della's per-row ranks; ~720k elements per model.
ROWS = dict(layers=1, hidden=256, intermediate=512, vocab=256, heads=4, kv_heads=2)
# Embeddings of two 1 MiB compute blocks (537,600 bf16 elements), the rest small (read-order tests).
BLOCKS = dict(layers=1, hidden=256, intermediate=256, vocab=2100, heads=4, kv_heads=2)


@pytest.fixture(scope="module")
def rows(make_model, tmp_path_factory):
    """Per dtype: two models and an all-zero base with ROWS sizes."""
    root = tmp_path_factory.mktemp("rows")
    out = {}
    for d in ("bf16", "f32"):
        out[(1, d)] = make_model(1, d, **ROWS)
        out[(2, d)] = make_model(2, d, **ROWS)
        out[("zero", d)] = mmtest.derive_model(make_model(3, d, **ROWS), root / f"zero-{d}",
                                               lambda n, dt, v: np.zeros_like(v))
    return out


def one_model(method, model, zero, density, **per_model):
    return cfg_of(method, [(model, {"weight": 1.0, "density": density, **per_model})], base=zero)


def sigma_bound(p, n):
    """4 sigma of a keep rate over n independent Bernoulli(p) draws (p may be an array of per-element
    probabilities: then the mean and the variance of the sum)."""
    p = np.asarray(p, np.float64)
    var = float((p * (1 - p)).sum()) if p.ndim else float(p * (1 - p) * n)
    return 4 * np.sqrt(var) / n


def check_given_masks(cfg, got):
    """The output equals the reference computed with the masks the output shows (zero base, weight 1)."""
    expected = config_eval.evaluate(cfg, masks=lambda p, k, shape: got[p.name].f32().reshape(shape) != 0)
    problems = []
    for name, (dtype, values) in sorted(expected.tensors.items()):
        t = got[name]
        assert t.dtype == dtype and t.shape == values.shape, name
        if t.raw != st.encode(dtype, values):
            problems.append(mmtest.describe_mismatch(name, dtype, values, t.f32()))
    assert not problems, "given its own mask, the output differs from the reference:\n" + "\n".join(problems)


def l1_ratio(got, X):
    out = sum(float(np.abs(t.f32().astype(np.float64)).sum()) for t in got.values())
    ref = sum(float(np.abs(X[n].astype(np.float64)).sum()) for n in got)
    return out / ref


# L1 of the output over L1 of the task vector: the factor and the two sums are values of the dtype
# (each off by at most 2^-9 relative in bf16) and every product is rounded.
L1_TOL = {"bf16": 0.01, "f32": 1e-5}


# ---- dare (B2.9 random) ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method,dtype,density", [("dare_linear", "bf16", 0.5), ("dare_linear", "f32", 0.5),
                                                  ("dare_ties", "bf16", 0.25), ("dare_ties", "f32", 0.75)])
def test_dare_keep_rate_rescale_and_values(tmp_path, mount, rows, method, dtype, density):
    model = rows[(1, dtype)]
    cfg = one_model(method, model, rows[("zero", dtype)], density)
    got, _ = run_merge(tmp_path, mount, cfg)
    X = weights_of(model)
    kept_all = total = 0
    for n, t in got.items():
        live = X[n] != 0
        kept = (t.f32() != 0) & live
        assert not np.any((t.f32() != 0) & ~live), f"{n}: output where the task vector is 0"
        k, size = int(kept.sum()), int(live.sum())
        kept_all += k
        total += size
        if size >= 1000:
            assert abs(k / size - density) <= sigma_bound(density, size), f"{n}: keep rate {k / size}"
    assert abs(kept_all / total - density) <= sigma_bound(density, total), (kept_all / total, density)
    assert abs(l1_ratio(got, X) - 1) <= L1_TOL[dtype], l1_ratio(got, X)
    check_given_masks(cfg, got)


def test_dare_without_rescale_keeps_values(tmp_path, mount, rows):
    model = rows[(1, "bf16")]
    cfg = one_model("dare_linear", model, rows[("zero", "bf16")], 0.5)
    cfg["parameters"] = {"rescale": False}
    got, _ = run_merge(tmp_path, mount, cfg)
    X = weights_of(model)
    for n, t in got.items():
        out = t.f32()
        assert np.array_equal(out[out != 0], X[n][out != 0]), n
    assert abs(l1_ratio(got, X) - 0.5) < 0.01
    check_given_masks(cfg, got)


def test_dare_density_gradient_per_layer(tmp_path, mount, models):
    model = models[(1, "bf16")]
    zero = mmtest.derive_model(models[(3, "bf16")], tmp_path / "zero", lambda n, dt, v: np.zeros_like(v))
    cfg = one_model("dare_linear", model, zero, [0.25, 0.75])
    got, _ = run_merge(tmp_path, mount, cfg)
    X = weights_of(model)
    for layer, rho in ((0, 0.25), (1, 0.75)):
        names = [n for n in got if config_eval.layer_index(n) == layer]
        k = sum(int(np.count_nonzero(got[n].f32())) for n in names)
        size = sum(int(np.count_nonzero(X[n])) for n in names)
        assert abs(k / size - rho) <= sigma_bound(rho, size), (layer, k / size, rho)
    check_given_masks(cfg, got)


# ---- della (B2.9 della_magprune) -------------------------------------------------------------------------

@pytest.mark.parametrize("method,dtype", [("della", "bf16"), ("della", "f32"), ("della_linear", "bf16")])
def test_della_rank_probabilities(tmp_path, mount, rows, method, dtype):
    rho, eps = 0.5, 0.2
    model = rows[(1, dtype)]
    cfg = one_model(method, model, rows[("zero", dtype)], rho, epsilon=eps)
    got, _ = run_merge(tmp_path, mount, cfg)
    X = weights_of(model)
    probs, kept, decile = [], [], []
    for n, t in got.items():
        p = methods_gta.della_probabilities(X[n], rho, eps).reshape(-1)
        length = X[n].shape[-1]
        r_hat = (methods_gta.della_ranks(X[n]).reshape(-1) - 1) / (length - 1)
        live = X[n].reshape(-1) != 0
        probs.append(p[live])
        kept.append((t.f32().reshape(-1) != 0)[live])
        decile.append(np.minimum((r_hat[live] * 10).astype(int), 9))
    probs, kept, decile = np.concatenate(probs), np.concatenate(kept), np.concatenate(decile)
    rates = []
    for d in range(10):
        sel = decile == d
        want, obs = probs[sel].mean(), kept[sel].mean()
        rates.append(obs)
        assert abs(obs - want) <= sigma_bound(probs[sel], sel.sum()), f"decile {d}: keep rate {obs}, expected {want}"
    # the span: the smallest decile near rho - eps (+ eps/10 for its mean), the largest near rho + eps
    assert rates[0] < rho - eps + 0.04 and rates[9] > rho + eps - 0.04, rates
    assert all(b > a for a, b in zip(rates, rates[1:])), f"keep rates are not increasing with the rank: {rates}"
    assert abs(kept.mean() - probs.mean()) <= sigma_bound(probs, probs.size)
    assert abs(l1_ratio(got, X) - 1) <= L1_TOL[dtype], l1_ratio(got, X)
    check_given_masks(cfg, got)


# ---- seeds -----------------------------------------------------------------------------------------------

def test_random_seed_changes_masks(tmp_path, mount, rows):
    model = rows[(1, "bf16")]
    cfg = one_model("dare_ties", model, rows[("zero", "bf16")], 0.5)
    default, _ = run_merge(tmp_path, mount, cfg, name="default.yml")
    zero, _ = run_merge(tmp_path, mount, cfg, "--random-seed", "0", name="zero.yml")
    seven, _ = run_merge(tmp_path, mount, cfg, "--random-seed", "7", name="seven.yml")
    assert all(default[n].raw == zero[n].raw for n in default), "--random-seed 0 is the default"
    agree = total = 0
    for n in default:
        a, b = default[n].f32() != 0, seven[n].f32() != 0
        assert not np.array_equal(a, b) or a.size < 64, f"{n}: the same mask with another seed"
        agree += int(np.count_nonzero(a == b))
        total += a.size
    # independent masks of density 1/2 agree on half the elements
    assert abs(agree / total - 0.5) <= sigma_bound(0.5, total), agree / total


# ---- read orders, remount, cache (D6) --------------------------------------------------------------------

CHUNK = 1 << 20  # O_DIRECT reads of 1 MiB at multiples of it (without cache each one computes its blocks)


def _direct_pread(fd, off, length, buf):
    n = os.preadv(fd, [memoryview(buf)[:length]], off)
    return bytes(buf[:n])


def read_chunks(path, order):
    """The file read with O_DIRECT (each read reaches the daemon) in CHUNK pieces, in the given order of
    chunk indexes ("forward", "reverse" or "shuffle"); returns its bytes."""
    size = os.path.getsize(path)
    idx = list(range((size + CHUNK - 1) // CHUNK))
    if order == "reverse":
        idx.reverse()
    elif order == "shuffle":
        random.Random(5).shuffle(idx)
    parts = {}
    buf = mmap.mmap(-1, CHUNK)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        for i in idx:
            parts[i] = _direct_pread(fd, i * CHUNK, CHUNK, buf)
    finally:
        os.close(fd)
        buf.close()
    return b"".join(parts[i] for i in range(len(idx)))


def read_ranges(path):
    """Random, unaligned ranges in random order (plain preads on a fresh mount)."""
    size = os.path.getsize(path)
    rng = random.Random(11)
    cuts = sorted({0, size} | {rng.randrange(size) for _ in range(40)})
    pieces = list(zip(cuts, cuts[1:]))
    rng.shuffle(pieces)
    out = bytearray(size)
    fd = os.open(path, os.O_RDONLY)
    try:
        for b, e in pieces:
            out[b:e] = os.pread(fd, e - b, b)
    finally:
        os.close(fd)
    return bytes(out)


def shard_files(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))


@pytest.mark.parametrize("method", ["dare_ties", "della"])
def test_same_bytes_any_read_order_remount_and_cache(tmp_path, mount, make_model, method):
    a, b, c = (make_model(s, "bf16", **BLOCKS) for s in (1, 2, 3))
    cfg = cfg_of(method, [(a, {"weight": 0.6, "density": 0.4}), (b, {"weight": 0.5, "density": 0.6})], base=c,
                 parameters={"epsilon": 0.1} if method.startswith("della") else None)
    config = mmtest.write_config(tmp_path, cfg)
    mmtest.skip_unless_implemented(config, method)
    args = ["--out-shard-size", "1500K"]
    with mount(config, *args, "--no-cache") as m:
        files = shard_files(m.path)
        assert len(files) >= 2
        forward = {f: read_chunks(os.path.join(m.path, f), "forward") for f in files}
        reverse = {f: read_chunks(os.path.join(m.path, f), "reverse") for f in reversed(files)}
    assert reverse == forward, "a reverse read gives other bytes"
    cache = tmp_path / "cache"
    with mount(config, *args, "--cache-dir", cache) as m:  # remounted, computed again, into the cache
        ranges = {f: read_ranges(os.path.join(m.path, f)) for f in reversed(files)}
        tensors = mmtest.read_weights(m.path)
    assert ranges == forward, "random ranges after remount give other bytes"
    with mount(config, *args, "--cache-dir", cache) as m:  # served from the cache
        cached = {f: read_chunks(os.path.join(m.path, f), "shuffle") for f in files}
    assert cached == forward, "the cache changes the bytes"
    # the masks are not trivial: where both models dropped an element, the output is the base
    n = "model.embed_tokens.weight"
    base = mmtest.weights_of(c)[n]
    same = np.count_nonzero(tensors[n].f32() == base) / base.size
    assert 0.1 < same < 0.5, same
