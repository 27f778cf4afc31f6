"""Merged tensor values: every tensor of the mounted output equals the numpy reference bit for bit
(docs/merge-contract.md D3, D8; cases of mergekit's tests)."""

import json
import os

import numpy as np
import pytest

import config_eval
import mmtest
import safetensors_io as st

DTYPES = ["bf16", "f16", "f32"]


def check(tmp_path, mount, cfg, *args):
    """Mounts cfg and compares every tensor with the reference; returns (reference result, tensors)."""
    expected = config_eval.evaluate(cfg)
    path = mmtest.write_config(tmp_path, cfg)
    with mount(path, *args) as m:
        got = mmtest.assert_matches_reference(m.path, expected.tensors)
        with open(os.path.join(m.path, "config.json")) as f:
            out_config = json.load(f)
    assert out_config == expected.config, "config.json differs from the donor's with torch_dtype/layers"
    return expected, got


def models_cfg(method, entries, **top):
    cfg = {"merge_method": method, "models": [{"model": m, "parameters": p} if p else {"model": m}
                                              for m, p in entries]}
    cfg.update(top)
    return cfg


# ---- linear (B2.1, B9.3 case 4) ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalize", [True, False])
def test_linear_two_models(tmp_path, mount, models, dtype, normalize):
    cfg = models_cfg("linear", [(models[(1, dtype)], {"weight": 0.6}), (models[(2, dtype)], {"weight": 0.4})],
                     parameters={"normalize": normalize})
    check(tmp_path, mount, cfg)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalize", [True, False])
def test_linear_three_models_sharded_sources(tmp_path, mount, models, dtype, normalize):
    cfg = models_cfg("linear", [(models[(1, dtype, "sharded")], {"weight": 0.5}),
                                (models[(2, dtype)], {"weight": 0.3}),
                                (models[(3, dtype, "sharded")], {"weight": 0.7})],
                     parameters={"normalize": normalize})
    check(tmp_path, mount, cfg)


def test_linear_negative_and_integer_weights(tmp_path, mount, models):
    cfg = models_cfg("linear", [(models[(1, "bf16")], {"weight": 2}), (models[(2, "bf16")], {"weight": -0.75}),
                                (models[(3, "bf16")], {"weight": 1.1})])
    check(tmp_path, mount, cfg)


def test_linear_top_level_weight_and_base_model(tmp_path, mount, models):
    # base_model is appended last as an ordinary input (B1.3) and takes the top-level weight
    cfg = models_cfg("linear", [(models[(1, "bf16")], {"weight": 0.2}), (models[(2, "bf16")], None)],
                     base_model=models[(3, "bf16")], parameters={"weight": 0.45})
    expected, _ = check(tmp_path, mount, cfg)
    assert [s.ref for s in expected.plan[0].sources][-1] == models[(3, "bf16")]


# ---- dtype / out_dtype (B3, D8) ------------------------------------------------------------------------

@pytest.mark.parametrize("src,dtype,out_dtype", [
    ("bf16", "float32", "bfloat16"),
    ("bf16", "float32", None),
    ("f32", "bfloat16", None),
    ("f32", "float16", "float32"),
    ("f16", "bfloat16", "float16"),
    ("bf16", None, "float16"),
    ("f32", None, "bfloat16"),
])
def test_linear_dtype_out_dtype(tmp_path, mount, models, src, dtype, out_dtype):
    cfg = models_cfg("linear", [(models[(1, src)], {"weight": 0.3}), (models[(2, src, "sharded")], {"weight": 0.6})])
    if dtype:
        cfg["dtype"] = dtype
    if out_dtype:
        cfg["out_dtype"] = out_dtype
    expected, got = check(tmp_path, mount, cfg)
    want = st.config_dtype(out_dtype or dtype) or {"bf16": "BF16", "f16": "F16", "f32": "F32"}[src]
    assert {t.dtype for t in got.values()} == {want}


def test_linear_mixed_source_dtypes_promote_to_f32(tmp_path, mount, models):
    cfg = models_cfg("linear", [(models[(1, "bf16")], {"weight": 0.5}), (models[(2, "f16")], {"weight": 0.5})])
    _, got = check(tmp_path, mount, cfg)
    assert {t.dtype for t in got.values()} == {"F32"}


def test_dtype_torch_prefix(tmp_path, mount, models):
    cfg = models_cfg("linear", [(models[(1, "f32")], {"weight": 1}), (models[(2, "f32")], {"weight": 1})],
                     dtype="torch.bfloat16")
    _, got = check(tmp_path, mount, cfg)
    assert {t.dtype for t in got.values()} == {"BF16"}


# ---- passthrough (B2.2, B9.3 cases 1 and 3) -------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_passthrough_copy(tmp_path, mount, models, dtype):
    src = models[(1, dtype, "sharded")]
    cfg = models_cfg("passthrough", [(src, None)])
    expected, got = check(tmp_path, mount, cfg)
    # a copy is the source's bytes
    source = st.read_folder(src)
    assert set(got) == set(source)
    assert all(got[n].raw == source[n].raw for n in got)


def test_passthrough_case1_dtype_bfloat16(tmp_path, mount, models):
    src = models[(2, "f32")]
    cfg = models_cfg("passthrough", [(src, None)], dtype="bfloat16")
    _, got = check(tmp_path, mount, cfg)
    source = st.read_folder(src)
    for n, t in got.items():
        assert t.dtype == "BF16" and np.array_equal(t.f32(), st.round_to("BF16", source[n].f32()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_passthrough_case3_scale_filter(tmp_path, mount, models, dtype):
    src = models[(3, dtype)]
    cfg = models_cfg("passthrough", [(src, {"scale": [{"filter": "o_proj", "value": 0}, {"value": 1}]})])
    _, got = check(tmp_path, mount, cfg)
    source = st.read_folder(src)
    for n, t in got.items():
        if "o_proj" in n:
            assert not t.f32().any(), n
        else:
            assert t.raw == source[n].raw, n
    assert got["lm_head.weight"].f32().any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_passthrough_scale_number(tmp_path, mount, models, dtype):
    # the scale multiplies as a float32 number (D3): not rounded to the dtype first
    cfg = models_cfg("passthrough", [(models[(1, dtype)], {"scale": 0.3})])
    check(tmp_path, mount, cfg)


def test_passthrough_scale_gradient_and_out_dtype(tmp_path, mount, models):
    cfg = models_cfg("passthrough", [(models[(1, "bf16")], {"scale": [0.5, 1.7]})], out_dtype="float32")
    check(tmp_path, mount, cfg)


# ---- task_arithmetic (B2.8, B9.3 case 7) ----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalize", [True, False])
def test_task_arithmetic(tmp_path, mount, models, dtype, normalize):
    cfg = models_cfg("task_arithmetic", [(models[(1, dtype)], {"weight": 0.7}), (models[(2, dtype)], {"weight": 0.4})],
                     base_model=models[(3, dtype)], parameters={"lambda": 0.5, "normalize": normalize})
    check(tmp_path, mount, cfg)


def test_task_arithmetic_case7_formula(tmp_path, mount, models):
    # B9.3 case 7 in f32: B + 0.5 * sum w_i tau_i, one rounding per op (checked against plain numpy)
    a, b, base = models[(1, "f32")], models[(2, "f32")], models[(3, "f32")]
    cfg = models_cfg("task_arithmetic", [(a, {"weight": 1.0}), (b, {"weight": 0.5})], base_model=base,
                     parameters={"lambda": 0.5})
    _, got = check(tmp_path, mount, cfg)
    A, B, C = st.read_folder(a), st.read_folder(b), st.read_folder(base)
    for n, t in got.items():
        x1, x2, c = A[n].f32(), B[n].f32(), C[n].f32()
        want = c + np.float32(0.5) * ((x1 - c) + np.float32(0.5) * (x2 - c))
        assert np.array_equal(t.f32(), want.astype(np.float32)), n


@pytest.mark.parametrize("dtype,out_dtype", [("float32", "bfloat16"), ("bfloat16", None), (None, "float32")])
def test_task_arithmetic_dtypes(tmp_path, mount, models, dtype, out_dtype):
    cfg = models_cfg("task_arithmetic", [(models[(1, "f16")], {"weight": 0.3}),
                                         (models[(2, "bf16", "sharded")], {"weight": 0.9})],
                     base_model=models[(3, "bf16")], parameters={"lambda": 1.3, "normalize": True})
    if dtype:
        cfg["dtype"] = dtype
    if out_dtype:
        cfg["out_dtype"] = out_dtype
    check(tmp_path, mount, cfg)


def test_task_arithmetic_mixed_dtypes_cast_to_base(tmp_path, mount, models):
    cfg = models_cfg("task_arithmetic", [(models[(1, "f32")], {"weight": 0.5}), (models[(2, "f16")], {"weight": 0.5})],
                     base_model=models[(3, "bf16")])
    _, got = check(tmp_path, mount, cfg)
    assert {t.dtype for t in got.values()} == {"BF16"}


def test_task_arithmetic_base_listed_with_models(tmp_path, mount, models):
    base = models[(3, "bf16")]
    cfg = models_cfg("task_arithmetic", [(base, None), (models[(1, "bf16")], {"weight": 0.8}),
                                         (models[(2, "bf16")], {"weight": 0.6})],
                     base_model=base, parameters={"lambda": 0.5})
    check(tmp_path, mount, cfg)


# ---- slices: frankenmerges (B4.3, B9.3 case 2) ----------------------------------------------------------

def test_frankenmerge_repeats_layers_case2(tmp_path, mount, models):
    src = models[(1, "bf16")]
    cfg = {"merge_method": "passthrough", "dtype": "bfloat16",
           "slices": [{"sources": [{"model": src, "layer_range": [0, 2]}]},
                      {"sources": [{"model": src, "layer_range": [0, 2]}]}]}
    expected, got = check(tmp_path, mount, cfg)
    assert expected.config["num_hidden_layers"] == 4
    source = st.read_folder(src)
    for n, t in source.items():
        i = config_eval.layer_index(n)
        if i is None:
            assert got[n].raw == t.raw
            continue
        tpl = config_eval.layer_template(n)
        assert got[tpl.format(i)].raw == t.raw == got[tpl.format(i + 2)].raw


def test_frankenmerge_two_models_out_of_order(tmp_path, mount, models):
    a, b = models[(1, "bf16", "sharded")], models[(2, "bf16")]
    cfg = {"merge_method": "passthrough",
           "slices": [{"sources": [{"model": a, "layer_range": [1, 2]}]},
                      {"sources": [{"model": b, "layer_range": [0, 2]}]},
                      {"sources": [{"model": a, "layer_range": [0, 1]}]}]}
    expected, got = check(tmp_path, mount, cfg)
    assert expected.config["num_hidden_layers"] == 4
    A = st.read_folder(a)
    assert got["model.layers.0.mlp.up_proj.weight"].raw == A["model.layers.1.mlp.up_proj.weight"].raw
    assert got["model.layers.3.mlp.up_proj.weight"].raw == A["model.layers.0.mlp.up_proj.weight"].raw
    assert got["model.embed_tokens.weight"].raw == A["model.embed_tokens.weight"].raw  # first slice
    assert got["lm_head.weight"].raw == A["lm_head.weight"].raw  # last slice


def test_slices_linear_with_layer_offsets_and_slice_params(tmp_path, mount, make_model):
    a = make_model(1, "bf16", layers=4)
    b = make_model(2, "bf16", layers=4)
    cfg = {"merge_method": "linear",
           "slices": [{"sources": [{"model": a, "layer_range": [0, 3], "parameters": {"weight": [1, 0.2]}},
                                   {"model": b, "layer_range": [1, 4]}],
                       "parameters": {"weight": 0.5}},
                      {"sources": [{"model": a, "layer_range": [3, 4]},
                                   {"model": b, "layer_range": [0, 1], "parameters": {"weight": 2}}],
                       "parameters": {"normalize": False}}],
           "parameters": {"weight": 0.25}}
    expected, _ = check(tmp_path, mount, cfg)
    assert expected.num_layers == 4
    by_name = {p.name: p for p in expected.plan}
    assert by_name["model.layers.3.mlp.up_proj.weight"].t == 1.0  # a one-layer slice has t = 1
    assert by_name["model.layers.1.mlp.up_proj.weight"].t == 0.5


# ---- gradients and filters (B1.5, B9.3 cases 5 and 6) -------------------------------------------------

def test_gradient_case5(tmp_path, mount, models):
    a, b = models[(1, "bf16")], models[(2, "bf16")]
    cfg = models_cfg("linear", [(a, {"weight": [0, 1]}), (b, {"weight": 1})], parameters={"normalize": True})
    _, got = check(tmp_path, mount, cfg)
    B = st.read_folder(b)
    for n, t in got.items():
        if config_eval.layer_index(n) != 1:  # layer 0 (t=0) and the embeddings, norm, lm_head (t=0) are B
            assert t.raw == B[n].raw, n


def test_gradient_three_points_five_layers(tmp_path, mount, make_model):
    a = make_model(1, "f32", layers=5)
    b = make_model(2, "f32", layers=5)
    cfg = models_cfg("linear", [(a, {"weight": [0, 0.5, 1]}), (b, {"weight": [1, 0]})],
                     parameters={"normalize": False}, dtype="bfloat16")
    expected, _ = check(tmp_path, mount, cfg)
    w = {p.name: p.sources[0].params["weight"] for p in expected.plan}
    assert [w[f"model.layers.{i}.mlp.up_proj.weight"] for i in range(5)] == [0, 0.25, 0.5, 0.75, 1]


def test_conditional_filters_case6(tmp_path, mount, models):
    a, b, c = models[(1, "bf16")], models[(2, "bf16")], models[(3, "bf16")]
    cfg = models_cfg("linear", [(a, {"weight": [{"filter": "mlp", "value": 0.9}, {"value": 0.1}]}),
                                (b, {"weight": [{"filter": "self_attn", "value": [0.2, 0.8]}]}),
                                (c, None)],
                     parameters={"weight": 0.5,
                                 "normalize": [{"filter": "layernorm", "value": False}, {"value": True}]})
    expected, _ = check(tmp_path, mount, cfg)
    p = {p.name: p for p in expected.plan}
    assert p["model.layers.0.mlp.up_proj.weight"].sources[0].params["weight"] == 0.9
    assert p["model.layers.0.mlp.up_proj.weight"].sources[1].params["weight"] == 0.5  # falls through
    assert p["model.layers.1.self_attn.q_proj.weight"].sources[1].params["weight"] == 0.8
    assert p["model.layers.1.input_layernorm.weight"].params["normalize"] is False


def test_filter_star_and_literal_glob(tmp_path, mount, models):
    # "*" matches everything; "*.mlp" is a plain substring and matches nothing (B1.5)
    cfg = models_cfg("linear", [(models[(1, "f16")], {"weight": [{"filter": "*.mlp", "value": 5}, {"filter": "*", "value": 0.25}]}),
                                (models[(2, "f16")], {"weight": 0.75})])
    check(tmp_path, mount, cfg)


# ---- tied lm_head (B4.4) and embedding crop (B4.5) -----------------------------------------------------

def test_tied_and_untied(tmp_path, mount, models):
    a, b = models[(1, "bf16", "tied")], models[(2, "bf16")]
    cfg = models_cfg("linear", [(a, {"weight": 0.5}), (b, {"weight": 0.5})])
    expected, got = check(tmp_path, mount, cfg)
    assert "lm_head.weight" in got
    lm = [p for p in expected.plan if p.name == "lm_head.weight"][0]
    assert lm.sources[0].tensor == "model.embed_tokens.weight"


def test_all_tied_has_no_lm_head(tmp_path, mount, models):
    cfg = models_cfg("linear", [(models[(1, "bf16", "tied")], {"weight": 0.5}),
                                (models[(2, "bf16", "tied")], {"weight": 0.5})])
    _, got = check(tmp_path, mount, cfg)
    assert "lm_head.weight" not in got


def test_task_arithmetic_tied_base(tmp_path, mount, models):
    cfg = models_cfg("task_arithmetic", [(models[(1, "bf16")], {"weight": 0.5})],
                     base_model=models[(3, "bf16", "tied")])
    check(tmp_path, mount, cfg)


def test_linear_embedding_crop(tmp_path, mount, make_model):
    a = make_model(1, "bf16")
    b = make_model(2, "bf16", vocab=72)
    cfg = models_cfg("linear", [(a, {"weight": 0.5}), (b, {"weight": 0.5})])
    _, got = check(tmp_path, mount, cfg)
    assert got["model.embed_tokens.weight"].shape == (64, 32)
    assert got["lm_head.weight"].shape == (64, 32)
