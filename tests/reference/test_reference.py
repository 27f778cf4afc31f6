"""Self-tests of the numpy reference against values computed by hand or with exact rational
arithmetic, so that the integration tests can trust it. Run: /usr/bin/python3 -m pytest tests/reference
"""

import json
import math
import os
import struct
import sys
from fractions import Fraction

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import config_eval  # noqa: E402
import methods  # noqa: E402
import safetensors_io as st  # noqa: E402


# ---- an independent rounding oracle: exact rationals -------------------------------------------------

FORMATS = {"BF16": (8, -126), "F16": (11, -14), "F32": (24, -126)}  # significand bits, min normal exponent
MAX_FINITE = {"BF16": Fraction(0x7F7F << 16), "F16": Fraction(65504), "F32": None}


def rne(value, dtype):
    """Rounds a rational to the nearest `dtype` value, ties to even, by exact arithmetic.
    Returns a Fraction, or +-inf as a float."""
    if value == 0:
        return Fraction(0)
    bits, emin = FORMATS[dtype]
    sign = -1 if value < 0 else 1
    a = abs(value)
    e = math.floor(math.log2(a))
    # fix floating log2 misestimates
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    e = max(e, emin)
    ulp = Fraction(2) ** (e - bits + 1)
    q, r = divmod(a, ulp)
    half = ulp / 2
    rem = a - q * ulp
    if rem > half or (rem == half and q % 2 == 1):
        q += 1
    result = q * ulp
    top = {"BF16": (2 - Fraction(1, 2 ** 7)) * Fraction(2) ** 127,
           "F16": Fraction(65504),
           "F32": (2 - Fraction(1, 2 ** 23)) * Fraction(2) ** 127}[dtype]
    if result > top:
        return math.copysign(math.inf, sign)
    return sign * result


def exact(x):
    return Fraction(float(x))


# ---- rounding ------------------------------------------------------------------------------------------

def test_bf16_of_0_3():
    assert float(st.round_scalar("BF16", 0.3)) == 0.30078125
    assert st.f32_to_bf16_bits(np.float32([0.3]))[0] == 0x3E9A


def test_bf16_ties_to_even():
    one_plus_half_ulp = np.float32(1 + 2 ** -8)        # halfway between 1 and 1 + 2^-7
    three_halves_ulp = np.float32(1 + 3 * 2 ** -8)     # halfway between 1 + 2^-7 (odd) and 1 + 2^-6
    assert float(st.round_to("BF16", one_plus_half_ulp)) == 1.0
    assert float(st.round_to("BF16", three_halves_ulp)) == 1 + 2 ** -6
    assert float(st.round_to("BF16", np.float32(-(1 + 2 ** -8)))) == -1.0
    assert float(st.round_to("BF16", np.float32(1 + 2 ** -8 + 2 ** -20))) == 1 + 2 ** -7


def test_f16_ties_to_even_and_overflow():
    assert float(st.round_to("F16", np.float32(1 + 2 ** -11))) == 1.0
    assert float(st.round_to("F16", np.float32(1 + 3 * 2 ** -11))) == 1 + 2 ** -9
    assert float(st.round_to("F16", np.float32(70000.0))) == math.inf
    assert float(st.round_to("F16", np.float32(65519.0))) == 65504.0
    assert float(st.round_to("F16", np.float32(65520.0))) == math.inf
    # subnormal: the smallest f16 subnormal is 2^-24; half of it rounds to 0 (tie to even)
    assert float(st.round_to("F16", np.float32(2 ** -25))) == 0.0
    assert float(st.round_to("F16", np.float32(3 * 2 ** -25))) == 2 ** -23


def test_bf16_nan_inf():
    v = st.round_to("BF16", np.float32([np.nan, np.inf, -np.inf, 3.4e38]))
    assert np.isnan(v[0]) and v[1] == np.inf and v[2] == -np.inf and v[3] == np.inf


def test_bf16_all_patterns_round_trip():
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    f = st.bf16_bits_to_f32(bits)
    back = st.f32_to_bf16_bits(f)
    finite = ~np.isnan(f)
    assert np.array_equal(back[finite], bits[finite])
    assert np.all(np.isnan(st.bf16_bits_to_f32(back[~finite])))


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_round_to_matches_exact_rationals(dtype):
    rng = np.random.default_rng(7)
    # random float32 bit patterns over a wide exponent range, plus exact halfway points
    vals = np.concatenate([
        rng.normal(0, 1, 3000).astype(np.float32),
        (rng.normal(0, 1, 1000) * 2.0 ** rng.integers(-30, 20, 1000)).astype(np.float32),
    ])
    halfway = []
    for v in st.round_to(dtype, vals[:500]):
        if v != 0 and np.isfinite(v):
            bits, emin = FORMATS[dtype]
            e = max(math.frexp(float(v))[1] - 1, emin)
            halfway.append(np.float32(float(v) + 2.0 ** (e - bits)))  # exactly half an ulp above
    vals = np.concatenate([vals, np.array(halfway, dtype=np.float32)])
    got = st.round_to(dtype, vals)
    for x, g in zip(vals, got):
        want = rne(exact(x), dtype)
        if isinstance(want, float):
            assert g == want, (x, g, want)
        else:
            assert Fraction(float(g)) == want, (x, g, want)


# ---- per-op arithmetic (D3) -------------------------------------------------------------------------

def test_mul_number_uses_float32_scalar():
    # bf16 3.0 * 0.3: float32(0.3)*3 = 0.90000004 -> bf16 0.8984375;
    # rounding 0.3 to bf16 first (torch 1.13) would give 0.30078125*3 = 0.90234375.
    dt, v = methods.passthrough(("BF16", np.float32([3.0])), scale=0.3)
    assert dt == "BF16" and float(v[0]) == 0.8984375


def test_add_number_rounds_scalar_first():
    # bf16 256 + 1.003: the number rounds to 1.0 in bf16 first, 257 is a tie -> 256.
    # (Adding 1.003 as float32 would give 257.003 -> 258.)
    v = methods.add_number("BF16", np.float32([256.0]), 1.003)
    assert float(v[0]) == 256.0


def test_model_sum_is_sequential_float32():
    v = methods.model_sum("F32", [np.float32([1e8]), np.float32([1.0]), np.float32([-1e8])])
    assert float(v[0]) == 0.0  # (1e8 + 1) rounds back to 1e8 in float32
    v = methods.model_sum("F32", [np.float32([1e8]), np.float32([-1e8]), np.float32([1.0])])
    assert float(v[0]) == 1.0


def test_model_sum_rounds_once():
    # bf16 values 1 + 2^-7 three times: the float32 sum 3 + 3*2^-7 is exact, rounded once to bf16
    x = np.float32([1 + 2 ** -7])
    v = methods.model_sum("BF16", [x, x, x])
    assert Fraction(float(v[0])) == rne(3 * Fraction(1 + 2 ** -7), "BF16")
    assert float(v[0]) == 3.03125  # 3 + 3*2^-7 is a tie between 3.015625 and 3.03125 -> even


# ---- methods: B9.3 cases 4 and 7 -------------------------------------------------------------------

def test_linear_case4_by_hand():
    # bf16 weights: 0.6 -> 0.6015625, 0.4 -> 0.400390625. x_a = 1, x_b = 0.5:
    # products 0.6015625 and 0.2001953125, float32 sum 0.8017578125 -> bf16 0.80078125;
    # weight sum 1.001953125 -> bf16 1.0; quotient 0.80078125.
    dt, v = methods.linear([("BF16", np.float32([1.0])), ("BF16", np.float32([0.5]))], [0.6, 0.4])
    assert dt == "BF16" and float(v[0]) == 0.80078125


@pytest.mark.parametrize("dtype", ["BF16", "F16", "F32"])
def test_linear_case4_exact_rationals(dtype):
    rng = np.random.default_rng(3)
    a = st.round_to(dtype, rng.normal(0, 0.02, 400).astype(np.float32))
    b = st.round_to(dtype, rng.normal(0, 0.02, 400).astype(np.float32))
    for normalize in (True, False):
        dt, v = methods.linear([(dtype, a), (dtype, b)], [0.6, 0.4], normalize=normalize)
        wa = rne(Fraction(float(np.float32(0.6))), dtype)
        wb = rne(Fraction(float(np.float32(0.4))), dtype)
        den = rne(wa + wb, dtype)
        for x, y, g in zip(a, b, v):
            pa = rne(wa * exact(x), dtype)
            pb = rne(wb * exact(y), dtype)
            # float32 accumulation of two dtype values: round to f32 once, then to dtype
            s = rne(rne(pa + pb, "F32"), dtype)
            want = rne(rne(s / den, "F32"), dtype) if normalize else s
            assert Fraction(float(g)) == want


def test_linear_promotes_mixed_dtypes():
    dt, v = methods.linear([("BF16", np.float32([0.30078125])), ("F16", np.float32([0.5]))], [1, 1],
                           normalize=False)
    assert dt == "F32" and float(v[0]) == float(np.float32(0.30078125) + np.float32(0.5))


def test_linear_dtype_and_out_dtype():
    x = np.float32([1 + 2 ** -9])  # exact in f16, not in bf16
    dt, v = methods.linear([("F16", x), ("F16", x)], [1, 1], normalize=True, dtype="F32",
                           out_dtype="BF16")
    assert dt == "BF16" and float(v[0]) == 1.0  # f32 result 1 + 2^-9 -> bf16 (a quarter ulp) -> 1.0


@pytest.mark.parametrize("dtype", ["BF16", "F32"])
def test_task_arithmetic_case7(dtype):
    # B9.3 case 7: lambda 0.5, normalize false -> B + 0.5 * sum w_i tau_i, elementwise.
    # Dyadic values keep every step exact, so the result must equal the exact formula.
    base = np.float32([1.0, -0.5, 0.25, 2.0])
    x1 = np.float32([1.5, -0.25, 0.25, 1.0])
    x2 = np.float32([0.5, -1.0, 0.75, 4.0])
    dt, v = methods.task_arithmetic((dtype, base), [(dtype, x1), (dtype, x2)], [0.5, 1.0], lam=0.5)
    want = base + 0.5 * (0.5 * (x1 - base) + 1.0 * (x2 - base))
    assert dt == dtype and np.array_equal(v, want.astype(np.float32))


def test_task_arithmetic_rounding_by_hand():
    # bf16: base 1.0, x 1.3 (-> bf16 1.296875), w 0.3 (-> 0.30078125), lambda 0.7, normalize
    b = np.float32([1.0])
    x = st.round_to("BF16", np.float32([1.3]))
    assert float(x[0]) == 1.296875
    tau = 0.296875                                            # exact
    delta = rne(Fraction(0.30078125) * Fraction(tau), "BF16")   # product exact in f32, one rounding
    mixed = rne(rne(delta / Fraction(0.30078125), "F32"), "BF16")  # divisor = bf16(0.3)
    mixed = rne(rne(mixed * Fraction(float(np.float32(0.7))), "F32"), "BF16")
    want = rne(rne(1 + mixed, "F32"), "BF16")
    dt, v = methods.task_arithmetic(("BF16", b), [("BF16", x)], [0.3], lam=0.7, normalize=True)
    assert Fraction(float(v[0])) == want


def test_task_arithmetic_casts_to_base_dtype():
    x = np.float32([1 + 2 ** -9])  # an f16 value; bf16 rounds it to 1.0
    dt, v = methods.task_arithmetic(("BF16", np.float32([1.0])), [("F16", x)], [1.0])
    assert dt == "BF16" and float(v[0]) == 1.0


def test_task_arithmetic_zero_divisor_is_one():
    b = np.float32([1.0])
    dt, v = methods.task_arithmetic(("F32", b), [("F32", np.float32([2.0])), ("F32", np.float32([3.0]))],
                                    [1.0, -1.0], normalize=True)
    assert float(v[0]) == 1.0 + (1.0 - 2.0)


# ---- safetensors writer (D15) -------------------------------------------------------------------------

def test_header_bytes_by_hand():
    head, placed = st.header_bytes([("b", "BF16", (3,)), ("a", "F32", (2,)), ("c", "BF16", (1, 1))])
    text = ('{"__metadata__":{"format":"pt"},'
            '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
            '"b":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]},'
            '"c":{"dtype":"BF16","shape":[1,1],"data_offsets":[14,16]}}').encode()
    padded = text + b" " * ((8 - len(text) % 8) % 8)
    assert len(padded) % 8 == 0
    assert head == struct.pack("<Q", len(padded)) + padded
    assert [p[0] for p in placed] == ["a", "b", "c"]


def test_layout_order_dtype_descending_then_bytes():
    order = st.layout_order([("z", "F16", (1,)), ("a", "F16", (1,)), ("m", "F32", (1,)),
                             ("B", "BF16", (1,)), ("a.10", "BF16", (1,)), ("a.2", "BF16", (1,))])
    assert [e[0] for e in order] == ["m", "B", "a.10", "a.2", "a", "z"]


def test_write_read_round_trip(tmp_path):
    vals = st.round_to("BF16", np.float32([[0.1, -2.5], [3.0, 1e-3]]))
    t = {"w": ("BF16", (2, 2), st.encode("BF16", vals)), "n": ("F32", (3,), st.encode("F32", np.float32([1, 2, 3])))}
    p = tmp_path / "x.safetensors"
    st.write_safetensors(p, t)
    data = p.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0 and data[8:8 + n].rstrip(b" ").endswith(b"}")
    got, meta = st.read_safetensors(p)
    assert meta == {"format": "pt"}
    assert np.array_equal(got["w"].f32(), vals) and got["w"].shape == (2, 2)
    assert np.array_equal(got["n"].f32(), np.float32([1, 2, 3]))


def test_index_json_text():
    text = st.index_json_text({"b": "f2", "a": "f1"}, 10)
    assert text == ('{\n  "metadata": {\n    "total_size": 10\n  },\n  "weight_map": {\n'
                    '    "a": "f1",\n    "b": "f2"\n  }\n}\n')


# ---- config evaluation (B1.5, B4.3, B4.4, B4.5; B9.3 cases 5 and 6) ---------------------------------

H = 4


def make_model(folder, seed, layers=2, vocab=6, dtype="F32", tied=False):
    """A tiny Llama-like model written with the reference writer (names as mm-mkmodel makes them)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    names = {"model.embed_tokens.weight": (vocab, H), "model.norm.weight": (H,)}
    if not tied:
        names["lm_head.weight"] = (vocab, H)
    for i in range(layers):
        names[f"model.layers.{i}.mlp.up_proj.weight"] = (3, H)
        names[f"model.layers.{i}.self_attn.o_proj.weight"] = (H, H)
        names[f"model.layers.{i}.input_layernorm.weight"] = (H,)
    tensors = {}
    for name, shape in names.items():
        v = st.round_to(dtype, rng.normal(0, 1, shape).astype(np.float32))
        tensors[name] = (dtype, shape, st.encode(dtype, v))
    st.write_safetensors(os.path.join(folder, "model.safetensors"), tensors)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": layers,
                   "hidden_size": H, "vocab_size": vocab, "tie_word_embeddings": tied,
                   "torch_dtype": st.TORCH_NAME[dtype]}, f)
    return str(folder)


def vals(folder, name):
    return st.read_folder(folder)[name].f32()


@pytest.fixture
def abc(tmp_path):
    return [make_model(tmp_path / n, s) for n, s in (("a", 1), ("b", 2), ("c", 3))]


def test_gradient_formula():
    assert config_eval.gradient([0, 1], 0.0) == 0 and config_eval.gradient([0, 1], 1.0) == 1
    got = [config_eval.gradient([0, 0.5, 1], j / 4) for j in range(5)]
    assert got == [0, 0.25, 0.5, 0.75, 1]
    assert config_eval.gradient([1, 3, 2], 0.75) == 2.5
    assert config_eval.gradient(["x", "y", "z"], 0.9) == "y"  # non-numbers: stepwise, no interpolation
    with pytest.raises(config_eval.ConfigError):
        config_eval.gradient([], 0.5)


def test_case5_gradient_linear(abc):
    a, b, _ = abc
    cfg = {"merge_method": "linear",
           "models": [{"model": a, "parameters": {"weight": [0, 1]}}, {"model": b, "parameters": {"weight": 1}}],
           "parameters": {"normalize": True}}
    res = config_eval.evaluate(cfg)
    out = res.tensors
    for n in ("model.layers.0.mlp.up_proj.weight", "model.embed_tokens.weight", "model.norm.weight",
              "lm_head.weight"):
        assert np.array_equal(out[n][1], vals(b, n)), n           # t = 0: weight of A is 0
    n = "model.layers.1.mlp.up_proj.weight"
    want = ((vals(a, n) + vals(b, n)) / np.float32(2)).astype(np.float32)  # f32: (A+B)/2, one rounding each
    assert np.array_equal(out[n][1], want)
    t_of = {p.name: p.t for p in res.plan}
    assert t_of["model.layers.0.mlp.up_proj.weight"] == 0.0 and t_of["model.layers.1.mlp.up_proj.weight"] == 1.0
    assert t_of["model.embed_tokens.weight"] == 0.0 and t_of["lm_head.weight"] == 0.0


def test_case5_three_point_gradient_over_five_layers(tmp_path):
    a = make_model(tmp_path / "a", 1, layers=5)
    b = make_model(tmp_path / "b", 2, layers=5)
    cfg = {"merge_method": "linear", "models": [{"model": a, "parameters": {"weight": [0, 0.5, 1]}},
                                                {"model": b, "parameters": {"weight": 1}}]}
    res = config_eval.evaluate(cfg)
    w = {p.name: p.sources[0].params["weight"] for p in res.plan}
    assert [w[f"model.layers.{i}.mlp.up_proj.weight"] for i in range(5)] == [0, 0.25, 0.5, 0.75, 1]


def test_case6_filters_and_precedence(abc):
    a, b, _ = abc
    cfg = {"merge_method": "linear",
           "models": [{"model": a, "parameters": {"weight": [{"filter": "mlp", "value": 0.25}, {"value": 0.75}]}},
                      {"model": b}],
           "parameters": {"weight": 0.5, "normalize": False}}
    res = config_eval.evaluate(cfg)
    for p in res.plan:
        wa, wb = p.sources[0].params["weight"], p.sources[1].params["weight"]
        assert wa == (0.25 if "mlp" in p.name else 0.75)
        assert wb == 0.5  # B has no weight: the top-level value
    # a filter list with no match falls through to the next level
    cfg["models"][0]["parameters"]["weight"] = [{"filter": "self_attn", "value": 2}]
    res = config_eval.evaluate(cfg)
    for p in res.plan:
        assert p.sources[0].params["weight"] == (2 if "self_attn" in p.name else 0.5)
    # globals are not read from a model's parameters; slice params beat top-level
    cfg = {"merge_method": "linear", "slices": [{"sources": [
        {"model": a, "layer_range": [0, 2], "parameters": {"weight": 1, "normalize": False}},
        {"model": b, "layer_range": [0, 2], "parameters": {"weight": 1}}],
        "parameters": {"weight": 7}}], "parameters": {"normalize": False}}
    res = config_eval.evaluate(cfg)
    assert all(p.params["normalize"] is False for p in res.plan)
    assert all(p.sources[0].params["weight"] == 1 for p in res.plan)
    cfg["parameters"] = {}
    res = config_eval.evaluate(cfg)
    assert all(p.params["normalize"] is True for p in res.plan)


def test_filter_is_plain_substring(abc):
    a, b, _ = abc
    cfg = {"merge_method": "passthrough", "models": [{"model": a, "parameters": {
        "scale": [{"filter": "*.mlp", "value": 0}, {"filter": "o_proj", "value": 0}, {"value": 1}]}}]}
    res = config_eval.evaluate(cfg)
    for name, (dt, v) in res.tensors.items():
        if "o_proj" in name:
            assert not v.any()
        else:
            assert np.array_equal(v, vals(a, name)), name  # "*.mlp" matches nothing


def test_missing_required_weight(abc):
    a, b, _ = abc
    with pytest.raises(config_eval.ConfigError):
        config_eval.evaluate({"merge_method": "linear", "models": [{"model": a}, {"model": b}]})
    # base_model is appended as an ordinary input for linear and needs a weight too
    with pytest.raises(config_eval.ConfigError):
        config_eval.evaluate({"merge_method": "linear", "base_model": a,
                              "models": [{"model": b, "parameters": {"weight": 1}}]})


def test_frankenmerge_case2(abc):
    a, _, _ = abc
    cfg = {"merge_method": "passthrough", "slices": [{"sources": [{"model": a, "layer_range": [0, 2]}]},
                                                     {"sources": [{"model": a, "layer_range": [0, 2]}]}]}
    res = config_eval.evaluate(cfg)
    assert res.num_layers == 4 and res.config["num_hidden_layers"] == 4
    for i in range(2):
        for part in ("mlp.up_proj.weight", "self_attn.o_proj.weight", "input_layernorm.weight"):
            x = vals(a, f"model.layers.{i}.{part}")
            assert np.array_equal(res.tensors[f"model.layers.{i}.{part}"][1], x)
            assert np.array_equal(res.tensors[f"model.layers.{i + 2}.{part}"][1], x)


def test_frankenmerge_renaming_and_pre_post(abc):
    a, b, _ = abc
    cfg = {"merge_method": "passthrough",
           "slices": [{"sources": [{"model": a, "layer_range": [1, 2]}]},
                      {"sources": [{"model": b, "layer_range": [0, 2]}]}]}
    res = config_eval.evaluate(cfg)
    src = {p.name: (p.sources[0].ref, p.sources[0].tensor, p.t) for p in res.plan}
    assert src["model.layers.0.mlp.up_proj.weight"] == (a, "model.layers.1.mlp.up_proj.weight", 1.0)
    assert src["model.layers.1.mlp.up_proj.weight"] == (b, "model.layers.0.mlp.up_proj.weight", 0.0)
    assert src["model.layers.2.mlp.up_proj.weight"] == (b, "model.layers.1.mlp.up_proj.weight", 1.0)
    assert src["model.embed_tokens.weight"][0] == a  # pre: first slice
    assert src["model.norm.weight"][0] == b and src["lm_head.weight"][0] == b  # post: last slice
    assert res.num_layers == 3


def test_tied_lm_head(tmp_path):
    a = make_model(tmp_path / "a", 1, tied=True)
    b = make_model(tmp_path / "b", 2)
    c = make_model(tmp_path / "c", 3, tied=True)
    cfg = {"merge_method": "linear", "models": [{"model": a, "parameters": {"weight": 1}},
                                                {"model": b, "parameters": {"weight": 1}}]}
    res = config_eval.evaluate(cfg)
    p = [p for p in res.plan if p.name == "lm_head.weight"][0]
    assert [s.tensor for s in p.sources] == ["model.embed_tokens.weight", "lm_head.weight"]
    want = ((vals(a, "model.embed_tokens.weight") + vals(b, "lm_head.weight")) / np.float32(2)).astype(np.float32)
    assert np.array_equal(res.tensors["lm_head.weight"][1], want)
    cfg["models"][1]["model"] = c
    res = config_eval.evaluate(cfg)
    assert "lm_head.weight" not in res.tensors


def test_embedding_crop(tmp_path):
    a = make_model(tmp_path / "a", 1, vocab=6)
    b = make_model(tmp_path / "b", 2, vocab=9)
    cfg = {"merge_method": "linear", "models": [{"model": a, "parameters": {"weight": 1}},
                                                {"model": b, "parameters": {"weight": 1}}]}
    res = config_eval.evaluate(cfg)
    e = res.tensors["model.embed_tokens.weight"][1]
    assert e.shape == (6, H)
    want = ((vals(a, "model.embed_tokens.weight") + vals(b, "model.embed_tokens.weight")[:6]) / np.float32(2))
    assert np.array_equal(e, want.astype(np.float32))
    assert res.config["vocab_size"] == 6  # the donor's (first model's) value, not adjusted


def test_slices_with_different_lengths_rejected(abc):
    a, b, _ = abc
    with pytest.raises(config_eval.ConfigError):
        config_eval.evaluate({"merge_method": "linear", "parameters": {"weight": 1}, "slices": [
            {"sources": [{"model": a, "layer_range": [0, 2]}, {"model": b, "layer_range": [0, 1]}]}]})
    with pytest.raises(config_eval.ConfigError):
        config_eval.evaluate({"merge_method": "passthrough", "slices": [
            {"sources": [{"model": a, "layer_range": [0, 3]}]}]})


def test_task_arithmetic_config(abc):
    a, b, c = abc
    cfg = {"merge_method": "task_arithmetic", "base_model": c,
           "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.25}}],
           "parameters": {"lambda": 0.5}, "dtype": "bfloat16"}
    res = config_eval.evaluate(cfg)
    p = res.plan[0]
    assert [s.ref for s in p.sources] == [a, b, c]  # base appended last (D1)
    n = "model.layers.1.self_attn.o_proj.weight"
    r = lambda x: st.round_to("BF16", x)  # noqa: E731
    xa, xb, xc = (r(vals(m, n)) for m in (a, b, c))
    wa, wb = np.float32(0.5), np.float32(0.25)
    mixed = r(r(wa * r(xa - xc)) + r(wb * r(xb - xc)))
    want = r(xc + r(mixed * np.float32(0.5)))
    assert res.tensors[n][0] == "BF16" and np.array_equal(res.tensors[n][1], want)
    assert res.config["torch_dtype"] == "bfloat16"
