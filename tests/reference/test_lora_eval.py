"""Self-tests of the LoRA reference (lora_eval.py) and of the adapter writer (lora_fixture.py) against
values computed by hand, so that the integration tests (tests/integration/test_lora.py) can trust
them. Run: /usr/bin/python3 -m pytest tests/reference/test_lora_eval.py
"""

import json
import math
import os
import sys
from fractions import Fraction

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arch_fixture  # noqa: E402
import config_eval  # noqa: E402
import lora_eval  # noqa: E402
import lora_fixture  # noqa: E402
import safetensors_io as st  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LLAMA3 = os.path.join(REPO, "tests", "fixtures", "archs", "llama3")


# ---- small folders written by hand ---------------------------------------------------------------------

def _encoded(tensors):
    """{name: (dtype, values)} -> {name: (dtype, shape, raw)}."""
    return {n: (d, np.shape(v), st.encode(d, np.asarray(v, np.float32))) for n, (d, v) in tensors.items()}


def write_model(folder, tensors, config=None):
    """A model folder: tensors {name: (dtype, values)} in model.safetensors and a config.json."""
    os.makedirs(folder, exist_ok=True)
    st.write_safetensors(os.path.join(folder, "model.safetensors"), _encoded(tensors))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config or {"model_type": "llama", "num_hidden_layers": 1, "torch_dtype": "float32"}, f)
    return str(folder)


def write_lora(folder, tensors, **config):
    """An adapter folder: tensors {name: (dtype, values)} and adapter_config.json (PEFT defaults for a
    rank-1 adapter, overridden by config; None values are written as null)."""
    os.makedirs(folder, exist_ok=True)
    st.write_safetensors(os.path.join(folder, "adapter_model.safetensors"), _encoded(tensors))
    doc = {"peft_type": "LORA", "r": 1, "lora_alpha": 1, "bias": "none", "modules_to_save": None,
           "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}
    doc.update(config)
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(doc, f)
    return str(folder)


Q = "model.layers.0.self_attn.q_proj"
QA = f"base_model.model.{Q}.lora_A.weight"
QB = f"base_model.model.{Q}.lora_B.weight"


def effective(tmp_path, base, lora, name=Q + ".weight"):
    """The effective (dtype, values) of one tensor of base+lora (folders)."""
    t = lora_eval.load(base, lora)[name]
    return t.dtype, t.f32()


def rank1_2x2(tmp_path, **config):
    """W = [[1, 2], [3, 4]], A = [[0.5, -1]], B = [[2], [0.25]] (rank 1), all F32."""
    base = write_model(tmp_path / "base", {Q + ".weight": ("F32", [[1, 2], [3, 4]])})
    lora = write_lora(tmp_path / "lora", {QA: ("F32", [[0.5, -1]]), QB: ("F32", [[2], [0.25]])}, **config)
    return base, lora


# ---- values by hand ------------------------------------------------------------------------------------

def test_rank1_2x2_by_hand(tmp_path):
    # B @ A = [[1, -2], [0.125, -0.25]]; scaling 2 / 1 = 2; W + 2 BA = [[3, -2], [3.25, 3.5]]
    base, lora = rank1_2x2(tmp_path, r=1, lora_alpha=2)
    dtype, w = effective(tmp_path, base, lora)
    assert dtype == "F32"
    assert w.tolist() == [[3, -2], [3.25, 3.5]]


def test_scaling_alpha_over_r_and_rslora(tmp_path):
    base, lora = rank1_2x2(tmp_path, r=1, lora_alpha=0.5)
    assert effective(tmp_path, base, lora)[1].tolist() == [[1.5, 1], [3.0625, 3.875]]
    ad = lora_eval.read_adapter(lora)
    assert ad.scaling(Q) == 0.5
    # rank 4: alpha / r = 8 / 4 = 2, with rslora alpha / sqrt(r) = 8 / 2 = 4
    a = [[1, 0], [0, 1], [0, 0], [0, 0]]
    b = [[1, 0, 0, 0], [0, 0.5, 0, 0]]               # B @ A = [[1, 0], [0, 0.5]]
    base = write_model(tmp_path / "b4", {Q + ".weight": ("F32", [[0, 0], [0, 0]])})
    plain = write_lora(tmp_path / "l4", {QA: ("F32", a), QB: ("F32", b)}, r=4, lora_alpha=8)
    rs = write_lora(tmp_path / "l4rs", {QA: ("F32", a), QB: ("F32", b)}, r=4, lora_alpha=8, use_rslora=True)
    assert effective(tmp_path, base, plain)[1].tolist() == [[2, 0], [0, 1]]
    assert effective(tmp_path, base, rs)[1].tolist() == [[4, 0], [0, 2]]
    assert lora_eval.read_adapter(rs).scaling(Q) == 4.0


def test_scaling_used_as_float32_after_the_product(tmp_path):
    # alpha 16, r 12 (inexact scaling 4/3): delta = float32(B @ A) * float32(4/3), not B @ (A * 4/3)
    r = 12
    a = np.zeros((r, 2), np.float32)
    a[:, 0] = 1
    b = np.zeros((1, r), np.float32)
    b[0, :] = 0.1
    base = write_model(tmp_path / "b", {Q + ".weight": ("F32", [[0, 0]])})
    lora = write_lora(tmp_path / "l", {QA: ("F32", a), QB: ("F32", b)}, r=r, lora_alpha=16)
    acc = np.float32(0)
    for _ in range(r):
        acc = np.float32(acc + np.float32(0.1))
    want = np.float32(acc * np.float32(16 / 12))
    got = effective(tmp_path, base, lora)[1]
    assert got[0, 0] == want and got[0, 1] == 0
    # rslora with an irrational scaling: alpha / sqrt(3) as a float32 number
    lora3 = write_lora(tmp_path / "l3", {QA: ("F32", a[:3]), QB: ("F32", b[:, :3])}, r=3, lora_alpha=2,
                       use_rslora=True)
    acc3 = np.float32(np.float32(np.float32(0.1) + np.float32(0.1)) + np.float32(0.1))
    assert effective(tmp_path, base, lora3)[1][0, 0] == np.float32(acc3 * np.float32(2 / math.sqrt(3)))


def test_product_sums_k_ascending_without_fma():
    # k ascending: (1 + 2^-24) + 2^-24 rounds to 1 twice; the other order would give 1 + 2^-23
    b = np.float32([[1, 2 ** -24, 2 ** -24]])
    a = np.float32([[1], [1], [1]])
    assert lora_eval.lora_product(b, a)[0, 0] == 1.0
    assert lora_eval.lora_product(b[:, ::-1], a)[0, 0] == 1 + 2 ** -23
    # each product rounded before the sum: (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 rounds to 1 + 2^-11, which
    # cancels the first term exactly (a fused multiply-add would leave 2^-24)
    b = np.float32([[1, 1 + 2 ** -12]])
    a = np.float32([[-(1 + 2 ** -11)], [1 + 2 ** -12]])
    assert lora_eval.lora_product(b, a)[0, 0] == 0.0


def test_fan_in_fan_out_transposes_the_delta(tmp_path):
    # a Conv1D base stored [in, out] = [3, 2]; A [r, in] = [1, 3], B [out, r] = [2, 1]
    m = "transformer.h.0.attn.c_attn"
    w = [[1, 0], [0, 1], [1, 1]]
    base = write_model(tmp_path / "b", {m + ".weight": ("F32", w)})
    tensors = {f"base_model.model.{m}.lora_A.weight": ("F32", [[1, 2, 3]]),
               f"base_model.model.{m}.lora_B.weight": ("F32", [[1], [-1]])}
    lora = write_lora(tmp_path / "l", tensors, fan_in_fan_out=True)
    # B @ A = [[1, 2, 3], [-1, -2, -3]]; transposed [[1, -1], [2, -2], [3, -3]]
    assert effective(tmp_path, base, lora, m + ".weight")[1].tolist() == [[2, -1], [2, -1], [4, -2]]
    # without fan_in_fan_out the adapter makes a [2, 3] tensor, which the [3, 2] base is not
    lora2 = write_lora(tmp_path / "l2", tensors, fan_in_fan_out=False)
    with pytest.raises(lora_eval.AdapterError, match=r"\[2, 3\].*\[3, 2\]"):
        lora_eval.load(base, lora2)


def test_embedding_delta_is_transposed(tmp_path):
    # base [num_embeddings, dim] = [3, 2]; lora_embedding_A [r, 3], lora_embedding_B [dim, r] = [2, 1]
    m = "model.embed_tokens"
    base = write_model(tmp_path / "b", {m + ".weight": ("F32", [[0, 0], [0, 0], [0, 0]])})
    tensors = {f"base_model.model.{m}.lora_embedding_A": ("F32", [[1, 2, 3]]),
               f"base_model.model.{m}.lora_embedding_B": ("F32", [[1], [0.5]])}
    lora = write_lora(tmp_path / "l", tensors, r=1, lora_alpha=2, target_modules=["embed_tokens"])
    # (B @ A)^T * 2 = [[1, 2, 3], [0.5, 1, 1.5]]^T * 2
    assert effective(tmp_path, base, lora, m + ".weight")[1].tolist() == [[2, 1], [4, 2], [6, 3]]
    # fan_in_fan_out does not transpose an embedding twice
    lora2 = write_lora(tmp_path / "l2", tensors, r=1, lora_alpha=2, fan_in_fan_out=True)
    assert effective(tmp_path, base, lora2, m + ".weight")[1].tolist() == [[2, 1], [4, 2], [6, 3]]


@pytest.mark.parametrize("dtype,ulp_bits", [("BF16", 7), ("F16", 10)])
def test_single_rounding(tmp_path, dtype, ulp_bits):
    # W = 1 with ulp 2^-u; delta = 2^-(u+1) + 2^-(u+13), just above half an ulp: W + delta rounds once
    # to 1 + 2^-u. Rounding the delta to the dtype first would lose 2^-(u+13) and leave a tie that
    # rounds to even, 1.
    u = ulp_bits
    base = write_model(tmp_path / "b", {Q + ".weight": (dtype, [[1.0]])})
    lora = write_lora(tmp_path / "l", {QA: ("F32", [[1 + 2 ** -12]]), QB: ("F32", [[2.0 ** -(u + 1)]])})
    got_dtype, got = effective(tmp_path, base, lora)
    assert got_dtype == dtype
    assert got[0, 0] == 1 + 2 ** -u
    d = np.float32(2.0 ** -(u + 1)) * np.float32(1 + 2 ** -12)
    assert d == 2.0 ** -(u + 1) + 2.0 ** -(u + 13)                       # the delta, exact in float32
    assert st.round_to(dtype, np.float32(1) + st.round_to(dtype, d))[()] == 1.0   # twice: different
    # the stored bytes are the dtype's
    t = lora_eval.load(base, lora)[Q + ".weight"]
    assert t.raw == st.encode(dtype, np.float32([[1 + 2 ** -u]]))


def test_sum_is_float32_then_rounded(tmp_path):
    # W + delta is a float32 add (as torch's bf16 += f32 computes it), then rounded to the dtype: with
    # W = 1 and delta = 2^-8 + 2^-31 the float32 sum is 1 + 2^-8 (2^-31 is below half a float32 ulp), a
    # tie that rounds to 1 in bfloat16; the exact sum rounded directly would be 1 + 2^-7
    base = write_model(tmp_path / "b", {Q + ".weight": ("BF16", [[1.0]])})
    lora = write_lora(tmp_path / "l", {QA: ("F32", [[1 + 2 ** -23]]), QB: ("F32", [[2.0 ** -8]])})
    assert effective(tmp_path, base, lora)[1][0, 0] == 1.0
    assert float(rne_exact_bf16(Fraction(1) + Fraction(2) ** -8 + Fraction(2) ** -31)) == 1 + 2 ** -7


def rne_exact_bf16(x):
    """A positive rational in [1, 2) rounded to bfloat16 (8 significant bits), ties to even."""
    q, rem = divmod(x * 2 ** 7, 1)
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and q % 2):
        q += 1
    return Fraction(q, 2 ** 7)


def test_adapter_dtypes_are_read_exactly(tmp_path):
    # BF16 / F16 A and B are converted to float32 exactly (PEFT upcasts them)
    base = write_model(tmp_path / "b", {Q + ".weight": ("F32", [[0.0]])})
    for dt in ("BF16", "F16"):
        lora = write_lora(tmp_path / dt, {QA: (dt, [[1 + 2 ** -7]]), QB: (dt, [[1 + 2 ** -7]])})
        assert effective(tmp_path, base, lora)[1][0, 0] == np.float32((1 + 2 ** -7) ** 2)


def test_adapter_name_in_tensor_names(tmp_path):
    base, lora = rank1_2x2(tmp_path, r=1, lora_alpha=2)
    named = write_lora(tmp_path / "named",
                       {f"base_model.model.{Q}.lora_A.default.weight": ("F32", [[0.5, -1]]),
                        f"base_model.model.{Q}.lora_B.default.weight": ("F32", [[2], [0.25]])}, r=1, lora_alpha=2)
    assert effective(tmp_path, base, named)[1].tolist() == effective(tmp_path, base, lora)[1].tolist()
    m = "model.embed_tokens"
    ebase = write_model(tmp_path / "eb", {m + ".weight": ("F32", [[0, 0], [0, 0]])})
    emb = write_lora(tmp_path / "emb", {f"base_model.model.{m}.lora_embedding_A.default": ("F32", [[1, 2]]),
                                        f"base_model.model.{m}.lora_embedding_B.default": ("F32", [[1], [0]])})
    assert effective(tmp_path, ebase, emb, m + ".weight")[1].tolist() == [[1, 0], [2, 0]]


def test_untargeted_tensors_are_the_base(tmp_path):
    base = write_model(tmp_path / "b", {Q + ".weight": ("BF16", [[1, 2], [3, 4]]),
                                        "model.norm.weight": ("BF16", [1, 1])})
    lora = write_lora(tmp_path / "l", {QA: ("F32", [[0.5, -1]]), QB: ("F32", [[2], [0.25]])})
    eff = lora_eval.load(base, lora)
    assert eff["model.norm.weight"].raw == st.read_folder(base)["model.norm.weight"].raw
    assert set(eff) == {Q + ".weight", "model.norm.weight"}


# ---- rank_pattern / alpha_pattern ------------------------------------------------------------------

@pytest.mark.parametrize("patterns,module,want", [
    ({"q_proj": 2}, "model.layers.0.self_attn.q_proj", "q_proj"),
    ({"self_attn.q_proj": 2}, "model.layers.0.self_attn.q_proj", "self_attn.q_proj"),
    ({"model.layers.0.self_attn.q_proj": 2}, "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.q_proj"),
    ({"proj": 2}, "model.layers.0.self_attn.q_proj", None),             # a whole component, not a suffix
    ({"layers.0.self_attn.q_proj": 2}, "model.layers.10.self_attn.q_proj", None),
    ({"layers.1.self_attn.q_proj": 2}, "model.layers.11.self_attn.q_proj", None),
    ({"q_proj": 4, "layers.1.self_attn.q_proj": 8}, "model.layers.1.self_attn.q_proj", "q_proj"),   # first wins
    ({"layers.1.self_attn.q_proj": 8, "q_proj": 4}, "model.layers.1.self_attn.q_proj", "layers.1.self_attn.q_proj"),
    ({"v_proj": 2}, "model.layers.0.self_attn.q_proj", None),
    ({}, "model.layers.0.self_attn.q_proj", None),
])
def test_pattern_key(patterns, module, want):
    assert lora_eval.pattern_key(patterns, module) == want
    # the fixture's lookup (PEFT's regex, re.escape'd keys) agrees
    assert lora_fixture.pattern_value(patterns, module, None) == (patterns[want] if want else None)


def test_patterns_set_rank_and_alpha_per_module(tmp_path):
    v = "model.layers.0.self_attn.v_proj"
    base = write_model(tmp_path / "b", {Q + ".weight": ("F32", [[0.0]]), v + ".weight": ("F32", [[0.0]])})
    tensors = {QA: ("F32", [[1]] * 2), QB: ("F32", [[1] * 2]),          # rank 2 (rank_pattern)
               f"base_model.model.{v}.lora_A.weight": ("F32", [[1]] * 4),
               f"base_model.model.{v}.lora_B.weight": ("F32", [[1] * 4])}  # rank 4 (r)
    lora = write_lora(tmp_path / "l", tensors, r=4, lora_alpha=8, rank_pattern={"q_proj": 2},
                      alpha_pattern={"v_proj": 2})
    ad = lora_eval.read_adapter(lora)
    assert (ad.rank(Q), ad.module_alpha(Q), ad.scaling(Q)) == (2, 8, 4.0)
    assert (ad.rank(v), ad.module_alpha(v), ad.scaling(v)) == (4, 2, 0.5)
    eff = lora_eval.effective_tensors(st.read_folder(base), ad)
    assert eff[Q + ".weight"].f32()[0, 0] == 2 * 4.0 and eff[v + ".weight"].f32()[0, 0] == 4 * 0.5
    # with rslora: 8 / sqrt(2) for q, 2 / sqrt(4) = 1 for v
    rs = lora_eval.read_adapter(write_lora(tmp_path / "rs", tensors, r=4, lora_alpha=8, use_rslora=True,
                                           rank_pattern={"q_proj": 2}, alpha_pattern={"v_proj": 2}))
    assert rs.scaling(Q) == 8 / math.sqrt(2) and rs.scaling(v) == 1.0


# ---- references ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("ref,want", [
    ("a", ("a", None)),
    ("a+b", ("a", "b")),
    ("org/base@main+org/lora@v1", ("org/base@main", "org/lora@v1")),
    ({"model": "a", "lora": "b"}, ("a", "b")),
    ({"model": {"path": "a", "revision": "r1"}, "lora": {"path": "b"}}, ("a@r1", "b")),
    ({"model": "a"}, ("a", None)),
    ({"path": "a", "revision": "main"}, ("a@main", None)),
    ({"model": "a", "lora": None}, ("a", None)),
])
def test_split_ref(ref, want):
    assert lora_eval.split_ref(ref) == want


@pytest.mark.parametrize("ref", ["a+b+c", "+b", "a+", {"model": "a+b", "lora": "c"}])
def test_split_ref_refuses(ref):
    with pytest.raises(lora_eval.AdapterError):
        lora_eval.split_ref(ref)


# ---- refused adapters --------------------------------------------------------------------------------

def _refused(tmp_path, match, tensors=None, base_tensors=None, remove=(), **config):
    base = write_model(tmp_path / "b", base_tensors or {Q + ".weight": ("F32", [[1, 2], [3, 4]])})
    tensors = tensors if tensors is not None else {QA: ("F32", [[0.5, -1]]), QB: ("F32", [[2], [0.25]])}
    lora = write_lora(tmp_path / "l", tensors, **config)
    for fname in remove:
        os.remove(os.path.join(lora, fname))
    with pytest.raises(lora_eval.AdapterError, match=match):
        lora_eval.load(base, lora)


@pytest.mark.parametrize("config,match", [
    ({"peft_type": "IA3"}, "IA3"),
    ({"peft_type": "ADALORA"}, "ADALORA"),
    ({"peft_type": "LOHA"}, "LOHA"),
    ({"peft_type": None}, "peft_type"),
    ({"use_dora": True}, "DoRA"),
    ({"bias": "all"}, "bias"),
    ({"bias": "lora_only"}, "bias"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"r": 0}, "r must be"),
    ({"r": True}, "r must be"),
    ({"r": "1"}, "r must be"),
    ({"lora_alpha": "16"}, "lora_alpha"),
    ({"use_rslora": "yes"}, "use_rslora"),
    ({"rank_pattern": {"layers\\.0\\..*q_proj": 1}}, "not supported yet"),
    ({"alpha_pattern": {"q_proj|v_proj": 1}}, "not supported yet"),
    ({"rank_pattern": {"q_proj": 0}}, "rank_pattern"),
])
def test_refused_configs(tmp_path, config, match):
    _refused(tmp_path, match, **config)


def test_accepted_config_variants(tmp_path):
    # empty / null modules_to_save, bias null, use_dora false, unknown keys, PEFT's default r
    base, lora = rank1_2x2(tmp_path, r=1, lora_alpha=2, modules_to_save=[], use_dora=False, bias=None,
                           layer_replication=None, some_future_key={"x": 1})
    assert effective(tmp_path, base, lora)[1].tolist() == [[3, -2], [3.25, 3.5]]


def test_refused_files(tmp_path):
    with pytest.raises(lora_eval.AdapterError, match="not found"):
        lora_eval.read_adapter(str(tmp_path / "nowhere"))
    _refused(tmp_path / "1", "has no adapter_model.safetensors", remove=["adapter_model.safetensors"])
    _refused(tmp_path / "2", "has no adapter_config.json", remove=["adapter_config.json"])
    d = tmp_path / "3"
    base, lora = rank1_2x2(d)
    os.rename(os.path.join(lora, "adapter_model.safetensors"), os.path.join(lora, "adapter_model.bin"))
    with pytest.raises(lora_eval.AdapterError, match="adapter_model.bin.*convert"):
        lora_eval.load(base, lora)


@pytest.mark.parametrize("tensors,match", [
    ({QA: ("F32", [[0.5, -1]])}, r"lora_A\.weight has no lora_B"),
    ({QB: ("F32", [[2], [0.25]])}, r"lora_B\.weight has no lora_A"),
    ({f"base_model.model.{Q}.lora_embedding_A": ("F32", [[1, 1]])}, "has no lora_embedding_B"),
    ({QA: ("F32", [[0.5, -1]]), f"base_model.model.{Q}.lora_embedding_B": ("F32", [[1]])}, "both"),
    ({QA: ("F32", [[0.5, -1]]), QB: ("F32", [[2], [0.25]]),
      f"base_model.model.{Q}.lora_A.default.weight": ("F32", [[0.5, -1]])}, "two lora_A"),
    ({QA: ("F32", [[0.5, -1]] * 2), QB: ("F32", [[2, 1], [0.25, 1]])}, "rank 2 but .* rank 1"),
    ({QA: ("F32", [[0.5, -1]]), QB: ("F32", [[2, 1], [0.25, 1]])}, "disagree on the rank"),
    ({QA: ("F32", [[0.5, -1]]), QB: ("F32", [[2], [0.25]]),
      "base_model.model.lm_head.weight": ("F32", [[1, 1]])}, r"lm_head\.weight is not a LoRA"),
    ({QA: ("F32", [[0.5, -1]]), QB: ("F32", [[2], [0.25]]),
      f"base_model.model.{Q}.lora_magnitude_vector": ("F32", [1, 1])}, "lora_magnitude_vector"),
    ({QA: ("F32", [[0.5, -1]]), QB: ("F32", [[2], [0.25]]),
      f"base_model.model.{Q}.lora_B.bias": ("F32", [1, 1])}, r"lora_B\.bias"),
    ({f"base_model.model.{Q}.lora_A.x.weight": ("F32", [[0.5, -1]]),
      f"base_model.model.{Q}.lora_B.x.weight": ("F32", [[2], [0.25]]),
      "base_model.model.model.layers.0.self_attn.v_proj.lora_A.y.weight": ("F32", [[0.5, -1]]),
      "base_model.model.model.layers.0.self_attn.v_proj.lora_B.y.weight": ("F32", [[2], [0.25]])},
     "more than one adapter"),
    ({QA: ("F32", [0.5, -1]), QB: ("F32", [[2], [0.25]])}, "2-D"),
    ({f"{Q}.lora_A.weight": ("F32", [[0.5, -1]]), f"{Q}.lora_B.weight": ("F32", [[2], [0.25]])}, "not a LoRA"),
])
def test_refused_tensors(tmp_path, tensors, match):
    _refused(tmp_path, match, tensors)


def test_refused_against_the_base(tmp_path):
    # a module the base does not have
    _refused(tmp_path / "1", r"targets model\.layers\.0\.self_attn\.q_proj .* no tensor",
             base_tensors={"model.layers.0.self_attn.k_proj.weight": ("F32", [[1, 2], [3, 4]])})
    # a shape that does not fit: the adapter makes [2, 2], the base is [3, 2] (both named)
    _refused(tmp_path / "2", r"make \[2, 2\].*is \[3, 2\]",
             base_tensors={Q + ".weight": ("F32", [[1, 2], [3, 4], [5, 6]])})


def test_int_adapter_tensor_refused(tmp_path):
    base = write_model(tmp_path / "b", {Q + ".weight": ("F32", [[1, 2], [3, 4]])})
    lora = write_lora(tmp_path / "l", {QB: ("F32", [[2], [0.25]])})
    raw = np.int32([[1, 2]]).tobytes()
    tensors, _ = st.read_safetensors(os.path.join(lora, "adapter_model.safetensors"))
    st.write_safetensors(os.path.join(lora, "adapter_model.safetensors"),
                         {QA: ("I32", (1, 2), raw), QB: ("F32", (2, 1), tensors[QB].raw)})
    with pytest.raises(lora_eval.AdapterError, match="I32"):
        lora_eval.load(base, lora)


# ---- config_eval integration --------------------------------------------------------------------------

def test_config_eval_lora_model(tmp_path):
    base, lora = rank1_2x2(tmp_path, r=1, lora_alpha=2)
    for ref in (f"{base}+{lora}", {"model": base, "lora": lora}, {"model": {"path": base}, "lora": {"path": lora}}):
        res = config_eval.evaluate({"merge_method": "passthrough", "models": [{"model": ref}]})
        assert res.tensors[Q + ".weight"][0] == "F32"
        assert res.tensors[Q + ".weight"][1].tolist() == [[3, -2], [3.25, 3.5]]
        with open(os.path.join(base, "config.json")) as f:
            want = json.load(f)
        want["dtype"] = want["torch_dtype"] = "float32"
        assert res.config == want
    # the base alone is another model of the same recipe; the string and mapping forms are one model
    cfg = {"merge_method": "linear", "base_model": {"model": base, "lora": lora},
           "models": [{"model": base, "parameters": {"weight": 1}},
                      {"model": f"{base}+{lora}", "parameters": {"weight": 1}}]}
    res = config_eval.evaluate(cfg)
    assert sorted(res.models) == sorted([base, f"{base}+{lora}"])
    assert res.tensors[Q + ".weight"][1].tolist() == [[2, 0], [3.125, 3.75]]     # (W + W') / 2


def test_config_eval_resolves_each_side(tmp_path):
    base, lora = rank1_2x2(tmp_path, r=1, lora_alpha=2)
    asked = []

    def resolve(ref):
        asked.append(ref)
        return {"org/base": base, "org/lora@v1": lora}[ref]
    res = config_eval.evaluate({"merge_method": "passthrough", "models": [{"model": "org/base+org/lora@v1"}]},
                               resolve=resolve)
    assert asked == ["org/base", "org/lora@v1"]
    assert res.tensors[Q + ".weight"][1].tolist() == [[3, -2], [3.25, 3.5]]


@pytest.mark.parametrize("ref", ["{b}+{l}+{l}", "{b}+{tmp}/missing"])
def test_config_eval_refusals_are_config_errors(tmp_path, ref):
    base, lora = rank1_2x2(tmp_path)
    with pytest.raises(config_eval.ConfigError):
        config_eval.evaluate({"merge_method": "passthrough",
                              "models": [{"model": ref.format(b=base, l=lora, tmp=tmp_path)}]})


# ---- the fixture ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return arch_fixture.make(LLAMA3, str(tmp_path_factory.mktemp("llama") / "m"), max_layers=2)


def _exact_product(b, a):
    """B @ A by exact rational arithmetic."""
    return [[sum(Fraction(float(b[i, k])) * Fraction(float(a[k, j])) for k in range(a.shape[0]))
             for j in range(a.shape[1])] for i in range(b.shape[0])]


def test_fixture_layout_and_config(tmp_path, llama):
    out = lora_fixture.write_adapter(llama, str(tmp_path / "a"), ["q_proj", "v_proj", "embed_tokens"], r=4, alpha=8)
    with open(os.path.join(out, "adapter_config.json")) as f:
        cfg = json.load(f)
    for key, want in {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": False, "bias": "none",
                      "modules_to_save": None, "fan_in_fan_out": False, "base_model_name_or_path": llama,
                      "task_type": "CAUSAL_LM", "target_modules": ["q_proj", "v_proj", "embed_tokens"],
                      "rank_pattern": {}, "alpha_pattern": {}}.items():
        assert cfg[key] == want, key
    tensors, _ = st.read_safetensors(os.path.join(out, "adapter_model.safetensors"))
    shapes = {n: t.shape for n, t in tensors.items()}
    assert shapes == {
        "base_model.model.model.embed_tokens.lora_embedding_A": (4, 96),
        "base_model.model.model.embed_tokens.lora_embedding_B": (32, 4),
        **{f"base_model.model.model.layers.{i}.self_attn.{p}_proj.lora_{ab}.weight": s
           for i in (0, 1) for p, ab, s in (("q", "A", (4, 32)), ("q", "B", (32, 4)),
                                            ("v", "A", (4, 32)), ("v", "B", (16, 4)))}}
    # deterministic by seed
    again = lora_fixture.write_adapter(llama, str(tmp_path / "b"), ["q_proj", "v_proj", "embed_tokens"], r=4, alpha=8)
    other = lora_fixture.write_adapter(llama, str(tmp_path / "c"), ["q_proj", "v_proj", "embed_tokens"], r=4, alpha=8,
                                       seed=1)
    read = [st.read_safetensors(os.path.join(d, "adapter_model.safetensors"))[0] for d in (again, other)]
    assert all(read[0][n].raw == t.raw for n, t in tensors.items())
    assert any(read[1][n].raw != t.raw for n, t in tensors.items())


@pytest.mark.parametrize("adapter_dtype", ["F32", "BF16", "F16"])
def test_fixture_exact_values(tmp_path, llama, adapter_dtype):
    """Exact mode: the float32 product equals the exact rational product, so every summation order
    agrees; and the deltas need more bits than the base's bfloat16, so a program that rounded them to
    bfloat16 before adding would differ from the reference somewhere."""
    out = lora_fixture.write_adapter(llama, str(tmp_path / "a"), ["q_proj", "o_proj"], r=8, alpha=16,
                                     dtype=adapter_dtype)
    ad = lora_eval.read_adapter(out)
    base = st.read_folder(llama)
    eff = lora_eval.effective_tensors(base, ad)
    double_rounding_differs = 0
    for module, (kind, a, b) in ad.modules.items():
        av, bv = a.f32(), b.f32()
        assert np.all(av * 64 == np.round(av * 64)) and np.abs(av).max() <= 0.25
        prod = lora_eval.lora_product(bv, av)
        exact = _exact_product(bv, av)
        assert all(Fraction(float(prod[i, j])) == exact[i][j] for i in range(prod.shape[0])
                   for j in range(prod.shape[1]))
        assert np.array_equal(prod, (bv.astype(np.float64) @ av.astype(np.float64)).astype(np.float32))
        w = base[module + ".weight"]
        d = lora_eval.delta(kind, av, bv, ad.scaling(module), False)
        assert np.abs(d).max() > 0
        once = eff[module + ".weight"].f32()
        assert np.array_equal(once, st.round_to(w.dtype, w.f32() + d))
        twice = st.round_to(w.dtype, w.f32() + st.round_to(w.dtype, d))
        double_rounding_differs += int(np.sum(once != twice))
    assert double_rounding_differs > 0


def test_fixture_refuses_inexact_requests(tmp_path, llama):
    with pytest.raises(lora_fixture.FixtureError, match="power-of-two"):
        lora_fixture.write_adapter(llama, str(tmp_path / "a"), ["q_proj"], r=4, alpha=6)
    with pytest.raises(lora_fixture.FixtureError, match="r <= 8"):
        lora_fixture.write_adapter(llama, str(tmp_path / "b"), ["q_proj"], r=16, alpha=16)
    with pytest.raises(lora_fixture.FixtureError, match="matches no"):
        lora_fixture.write_adapter(llama, str(tmp_path / "c"), ["nope_proj"])
    # the inexact mode takes any r and alpha
    out = lora_fixture.write_adapter(llama, str(tmp_path / "d"), ["q_proj"], r=12, alpha=16, exact=False)
    assert lora_eval.read_adapter(out).scaling("model.layers.0.self_attn.q_proj") == 16 / 12


def test_fixture_patterns_layers_and_names(tmp_path, llama):
    out = lora_fixture.write_adapter(llama, str(tmp_path / "a"), ["q_proj", "v_proj"], r=4, alpha=8,
                                     rank_pattern={"v_proj": 2, "layers.1.self_attn.q_proj": 8},
                                     alpha_pattern={"layers.1.self_attn.q_proj": 4}, layers=[1],
                                     adapter_name="default")
    tensors, _ = st.read_safetensors(os.path.join(out, "adapter_model.safetensors"))
    assert {n: t.shape for n, t in tensors.items()} == {
        "base_model.model.model.layers.1.self_attn.q_proj.lora_A.default.weight": (8, 32),
        "base_model.model.model.layers.1.self_attn.q_proj.lora_B.default.weight": (32, 8),
        "base_model.model.model.layers.1.self_attn.v_proj.lora_A.default.weight": (2, 32),
        "base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight": (16, 2)}
    with open(os.path.join(out, "adapter_config.json")) as f:
        assert json.load(f)["layers_to_transform"] == [1]
    ad = lora_eval.read_adapter(out)
    assert ad.scaling("model.layers.1.self_attn.q_proj") == 0.5
    assert ad.scaling("model.layers.1.self_attn.v_proj") == 4.0
    # the pattern order is the file's
    out = lora_fixture.write_adapter(llama, str(tmp_path / "b"), ["q_proj"], r=4, alpha=8,
                                     rank_pattern={"q_proj": 2, "layers.1.self_attn.q_proj": 8})
    with open(os.path.join(out, "adapter_config.json")) as f:
        assert list(json.load(f)["rank_pattern"]) == ["q_proj", "layers.1.self_attn.q_proj"]
    assert lora_eval.read_adapter(out).rank("model.layers.1.self_attn.q_proj") == 2


def test_fixture_gpt2_conv1d(tmp_path):
    base = lora_fixture.make_gpt2(str(tmp_path / "gpt2"), dtype="BF16")
    tensors = st.read_folder(base)
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)        # Conv1D: [in, out]
    assert tensors["transformer.h.1.mlp.c_proj.weight"].shape == (128, 32)
    out = lora_fixture.write_adapter(base, str(tmp_path / "a"), ["c_attn", "c_proj", "c_fc"], r=4, alpha=8,
                                     fan_in_fan_out=True)
    ad = lora_eval.read_adapter(out)
    assert ad.modules["transformer.h.0.attn.c_attn"][1].shape == (4, 32)           # A [r, in]
    assert ad.modules["transformer.h.0.attn.c_attn"][2].shape == (96, 4)           # B [out, r]
    eff = lora_eval.effective_tensors(tensors, ad)
    assert eff["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)
    assert eff["transformer.h.0.attn.c_attn.weight"].raw != tensors["transformer.h.0.attn.c_attn.weight"].raw
    # the same tensors read without fan_in_fan_out do not fit the base
    lora_fixture.edit_config(out, fan_in_fan_out=False)
    with pytest.raises(lora_eval.AdapterError, match="c_attn"):
        lora_eval.effective_tensors(tensors, lora_eval.read_adapter(out))
