"""`mergemount plan --json`: the files of the output folder with their sizes, and per output tensor
its dtype, shape, file, method, evaluated global parameters and sources (model as written, resolved
folder, input tensor, dtype, shape, evaluated per-model parameters). Compared with the reference's
own evaluation of the config (B1.5, B4.3, B4.4) and with the folder `build` writes."""

import json
import math
import os

import config_eval
import mmtest


def same(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def check_params(where, got, ref_params, explicit):
    """Parameters set in the config must be reported with their evaluated value; defaults may be
    reported and must then be right."""
    for name in explicit:
        assert name in got, f"{where}: parameter {name!r} missing from {got}"
    for name, value in got.items():
        if name in ref_params:
            assert same(value, ref_params[name]), f"{where}: {name} = {value!r}, want {ref_params[name]!r}"


def run_plan(config, *args):
    r = mmtest.mergemount("plan", config, "--json", *args, check=True)
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"plan --json printed no JSON object ({e}):\n{r.stdout[:2000]}")


def check_plan(tmp_path, cfg, *args):
    config = mmtest.write_config(tmp_path, cfg)
    plan = run_plan(config, *args)
    res = config_eval.evaluate(cfg)
    assert set(plan) >= {"files", "tensors"}

    # files: exactly the folder `build` writes, with the same sizes
    out = mmtest.build(config, tmp_path / "out", *args)
    files = {f["name"]: f["size"] for f in plan["files"]}
    assert sorted(files) == mmtest.files_of(out)
    for name, size in files.items():
        assert os.path.getsize(os.path.join(out, name)) == size, name
    weights = mmtest.read_weights(out)

    tensors = {t["name"]: t for t in plan["tensors"]}
    assert len(tensors) == len(plan["tensors"]), "a tensor is listed twice"
    assert set(tensors) == {p.name for p in res.plan}
    for p in res.plan:
        t = tensors[p.name]
        dtype, values = res.tensors[p.name]
        assert t["dtype"] == dtype and list(t["shape"]) == list(values.shape), p.name
        assert t["method"] == cfg["merge_method"]
        assert t["file"] in files and t["file"].endswith(".safetensors")
        assert weights[p.name].dtype == dtype
        check_params(p.name, t.get("params") or {}, p.params, p.explicit)
        assert len(t["sources"]) == len(p.sources), f"{p.name}: {len(t['sources'])} sources, want {len(p.sources)}"
        for i, (gs, rs) in enumerate(zip(t["sources"], p.sources)):
            where = f"{p.name} source {i}"
            assert gs["model"] == rs.ref, where
            assert os.path.normpath(gs["path"]) == os.path.normpath(os.path.abspath(rs.model.path)), where
            assert gs["tensor"] == rs.tensor, where
            src_t = rs.model.tensors[rs.tensor]
            assert gs["dtype"] == src_t.dtype and list(gs["shape"]) == list(src_t.shape), where
            check_params(where, gs.get("params") or {}, rs.params, rs.explicit)
    # the tensor -> file mapping is the folder's
    for name, t in tensors.items():
        in_file = [f for f in files if f.endswith(".safetensors") and
                   name in mmtest.st.read_safetensors(os.path.join(out, f))[0]]
        assert in_file == [t["file"]], name
    return plan, res


def test_plan_gradients_and_filters(tmp_path, models):
    a, b, c = models[(1, "bf16")], models[(2, "bf16", "sharded")], models[(3, "bf16")]
    cfg = {"merge_method": "linear",
           "models": [{"model": a, "parameters": {"weight": [0, 0.3, 1]}},
                      {"model": b, "parameters": {"weight": [{"filter": "mlp", "value": [1, 0.5]},
                                                             {"filter": "lm_head", "value": 3}]}},
                      {"model": c}],
           "parameters": {"weight": 0.125, "normalize": [{"filter": "norm", "value": False}, {"value": True}]}}
    plan, res = check_plan(tmp_path, cfg)
    t = {x["name"]: x for x in plan["tensors"]}
    assert same(t["model.layers.1.mlp.up_proj.weight"]["sources"][0]["params"]["weight"], 1)
    assert same(t["model.layers.1.mlp.up_proj.weight"]["sources"][1]["params"]["weight"], 0.5)
    assert same(t["model.layers.0.mlp.up_proj.weight"]["sources"][2]["params"]["weight"], 0.125)
    assert same(t["lm_head.weight"]["sources"][1]["params"]["weight"], 3)
    assert not t["model.norm.weight"]["params"]["normalize"]


def test_plan_frankenmerge(tmp_path, make_model):
    a = make_model(1, "bf16", layers=4)
    b = make_model(2, "bf16", layers=4)
    cfg = {"merge_method": "linear",
           "slices": [{"sources": [{"model": a, "layer_range": [0, 3], "parameters": {"weight": [1, 0]}},
                                   {"model": b, "layer_range": [1, 4], "parameters": {"weight": [0, 1]}}]},
                      {"sources": [{"model": b, "layer_range": [2, 4]}, {"model": a, "layer_range": [0, 2]}],
                       "parameters": {"weight": 0.5, "normalize": False}}]}
    plan, res = check_plan(tmp_path, cfg, "--out-shard-size", "30K")
    t = {x["name"]: x for x in plan["tensors"]}
    src = t["model.layers.4.self_attn.q_proj.weight"]["sources"]
    assert [s["tensor"] for s in src] == ["model.layers.3.self_attn.q_proj.weight",
                                          "model.layers.1.self_attn.q_proj.weight"]
    assert same(t["model.layers.1.mlp.down_proj.weight"]["sources"][0]["params"]["weight"], 0.5)
    assert len(plan["files"]) > 3


def test_plan_task_arithmetic_tied(tmp_path, models):
    base = models[(3, "bf16", "tied")]
    cfg = {"merge_method": "task_arithmetic", "base_model": base,
           "models": [{"model": models[(1, "bf16")], "parameters": {"weight": 0.5}},
                      {"model": models[(2, "f16")], "parameters": {"weight": [0.1, 0.9]}}],
           "parameters": {"lambda": 0.75, "normalize": True}, "out_dtype": "float32"}
    plan, res = check_plan(tmp_path, cfg)
    t = {x["name"]: x for x in plan["tensors"]}
    lm = t["lm_head.weight"]["sources"]
    assert [s["tensor"] for s in lm] == ["lm_head.weight", "lm_head.weight", "model.embed_tokens.weight"]
    assert lm[2]["model"] == base


def test_plan_passthrough_scale(tmp_path, models):
    cfg = {"merge_method": "passthrough",
           "models": [{"model": models[(1, "f32")],
                       "parameters": {"scale": [{"filter": "o_proj", "value": 0}, {"value": 1}]}}],
           "dtype": "bfloat16"}
    plan, _ = check_plan(tmp_path, cfg)
    for t in plan["tensors"]:
        assert same(t["sources"][0]["params"]["scale"], 0 if "o_proj" in t["name"] else 1), t["name"]

