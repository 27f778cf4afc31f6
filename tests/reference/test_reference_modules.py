"""Self-tests of the reference's multi-module support (config_eval.py, D18) on a toy vision-language
model written with the reference writer, against results worked out by hand: which module a tensor
is in, per-module layer renumbering and gradients, modules copied from the donor, parameter
precedence, config.json, and the errors. Run: /usr/bin/python3 -m pytest tests/reference
"""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import config_eval as ce  # noqa: E402
import safetensors_io as st  # noqa: E402
from config_eval import ConfigError, Module  # noqa: E402

# The toy family: a text decoder under `lm.`, a vision tower under `vis.` and a projector inside the
# vision tower's prefix (like Qwen2-VL's `visual.merger.`), whose `mlp.0` / `mlp.2` are not layers.
TABLE = {
    "text_decoder": Module("lm.model.layers", ("lm.",), "text_config.num_hidden_layers"),
    "vision_tower": Module("vis.blocks", ("vis.",), "vision_config.depth"),
    "multi_modal_projector": Module(None, ("vis.merger.",), None),
}
PROJECTOR = ("vis.merger.mlp.0.weight", "vis.merger.mlp.2.weight")


def make_vl(folder, tag, text=3, vision=4, vision_key=True, dtype="F32"):
    """A toy model: `text` decoder layers, `vision` vision blocks; config.json has per-layer lists
    whose entries name the model (`tag`) and layer, so that where an entry came from shows."""
    rng = np.random.default_rng(sum(map(ord, tag)))
    names = {"lm.model.embed_tokens.weight": (6, 2), "lm.model.norm.weight": (2,), "lm.lm_head.weight": (6, 2),
             "vis.patch.weight": (2, 2), "vis.post_layernorm.weight": (2,), "vis.merger.ln_q.weight": (2,)}
    names.update({n: (2, 2) for n in PROJECTOR})
    for i in range(text):
        names[f"lm.model.layers.{i}.mlp.weight"] = (2, 2)
        names[f"lm.model.layers.{i}.input_layernorm.weight"] = (2,)
    for i in range(vision):
        names[f"vis.blocks.{i}.fc.weight"] = (2, 2)
    tensors = {}
    for name, shape in names.items():
        v = st.round_to(dtype, rng.normal(0, 1, shape).astype(np.float32))
        tensors[name] = (dtype, shape, st.encode(dtype, v))
    os.makedirs(folder, exist_ok=True)
    st.write_safetensors(os.path.join(folder, "model.safetensors"), tensors)
    vision_cfg = {"kinds": [f"{tag}v{i}" for i in range(vision)], "hidden_size": 2}
    if vision_key:
        vision_cfg["depth"] = vision
    config = {"model_type": "toy_vl", "torch_dtype": st.TORCH_NAME[dtype], "vision_config": vision_cfg,
              "text_config": {"num_hidden_layers": text, "layer_types": [f"{tag}t{i}" for i in range(text)],
                              "torch_dtype": st.TORCH_NAME[dtype]}}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return str(folder)


def vals(folder, name):
    return st.read_folder(folder)[name].f32()


def raw(folder, name):
    return st.read_folder(folder)[name].raw


def planned(res):
    return {p.name: p for p in res.plan}


def origin(res, name):
    """(model ref, input tensor) of a single-source output tensor."""
    (src,) = planned(res)[name].sources
    return src.ref, src.tensor


@pytest.fixture
def ab(tmp_path):
    return make_vl(tmp_path / "a", "a"), make_vl(tmp_path / "b", "b")


# ---- the table --------------------------------------------------------------------------------------

def test_module_of_longest_prefix_wins():
    assert ce.module_of(TABLE, "lm.model.layers.2.mlp.weight") == "text_decoder"
    assert ce.module_of(TABLE, "lm.lm_head.weight") == "text_decoder"
    assert ce.module_of(TABLE, "vis.blocks.0.fc.weight") == "vision_tower"
    assert ce.module_of(TABLE, "vis.post_layernorm.weight") == "vision_tower"
    assert ce.module_of(TABLE, "vis.merger.mlp.2.weight") == "multi_modal_projector"
    with pytest.raises(ValueError, match="other.weight"):
        ce.module_of(TABLE, "other.weight")
    # the stack prefix counts as one of the module's prefixes
    assert ce.module_of({"a": Module("x.layers", (), None), "b": Module(None, ("",), None)},
                        "x.layers.0.w") == "a"


def test_split_layer_of_a_module():
    text, vision, proj = TABLE.values()
    assert text.split("lm.model.layers.12.mlp.experts.7.weight") == ("lm.model.layers", 12, "mlp.experts.7.weight")
    assert text.split("lm.model.norm.weight") is None
    assert vision.split("vis.blocks.3.fc.weight") == ("vis.blocks", 3, "fc.weight")
    assert proj.split("vis.merger.mlp.2.weight") is None
    only = ce.TEXT_ONLY["text_decoder"]
    assert only.split("gpt_neox.layers.5.attention.dense.weight") == ("gpt_neox.layers", 5, "attention.dense.weight")
    assert only.split("model.norm.weight") is None


def test_count_holder_paths():
    cfg = {"num_layers": 7, "text_config": {"num_hidden_layers": 5}, "vision_config": {"depth": True}}
    holder, key = Module(None, (), "text_config.num_hidden_layers").count_holder(cfg)
    assert holder is cfg["text_config"] and key == "num_hidden_layers"
    assert Module(None, (), "vision_config.depth").count_holder(cfg) == (None, None)  # not an integer
    assert Module(None, (), "missing.depth").count_holder(cfg) == (None, None)
    assert Module(None, (), None).count_holder(cfg) == (None, None)
    holder, key = ce.TEXT_ONLY["text_decoder"].count_holder(cfg)   # top level first (D12)
    assert holder is cfg and key == "num_layers"


def test_tied_input_keeps_the_prefix():
    assert ce.tied_input("lm_head.weight") == "model.embed_tokens.weight"
    assert ce.tied_input("language_model.lm_head.weight") == "language_model.model.embed_tokens.weight"
    assert ce.tied_input("model.norm.weight") is None


def test_post_weights_by_substring():
    for name in ("model.norm.weight", "vision_tower.vision_model.post_layernorm.bias", "transformer.ln_f.weight",
                 "language_model.lm_head.weight", "gpt_neox.final_layer_norm.weight", "embed_out.weight",
                 "multi_modal_projector.mm_soft_emb_norm.weight"):
        assert ce.is_post(name), name
    for name in ("model.embed_tokens.weight", "visual.merger.ln_q.weight", "visual.patch_embed.proj.weight",
                 "multi_modal_projector.mm_input_projection_weight", "out_proj.weight"):
        assert not ce.is_post(name), name


def test_model_counts_per_module(ab, tmp_path):
    a, _ = ab
    m = ce.Model(a, a, TABLE)
    assert m.counts == {"text_decoder": 3, "vision_tower": 4, "multi_modal_projector": 0}
    assert set(m.names["multi_modal_projector"]) == {"vis.merger.ln_q.weight", *PROJECTOR}
    # without a count key the count is the highest layer index + 1
    c = make_vl(tmp_path / "c", "c", vision=5, vision_key=False)
    assert ce.Model(c, c, TABLE).counts["vision_tower"] == 5


# ---- models: one slice per module, gradients per module ---------------------------------------------

def test_models_gradient_is_spread_per_module(tmp_path):
    a = make_vl(tmp_path / "a", "a", text=3, vision=2)
    b = make_vl(tmp_path / "b", "b", text=3, vision=2)
    cfg = {"merge_method": "linear", "models": [{"model": a, "parameters": {"weight": [0, 1]}},
                                                {"model": b, "parameters": {"weight": 1}}]}
    res = ce.evaluate(cfg, modules=TABLE)
    p = planned(res)
    t = {n: q.t for n, q in p.items()}
    w = {n: q.sources[0].params["weight"] for n, q in p.items()}
    # text: 3 layers -> t = 0, 1/2, 1; vision: 2 layers -> t = 0, 1 (not 1/2: its own layer count)
    assert [t[f"lm.model.layers.{i}.mlp.weight"] for i in range(3)] == [0, 0.5, 1]
    assert [t[f"vis.blocks.{i}.fc.weight"] for i in range(2)] == [0, 1]
    assert [w[f"vis.blocks.{i}.fc.weight"] for i in range(2)] == [0, 1]
    for n in ("lm.model.embed_tokens.weight", "lm.lm_head.weight", "vis.patch.weight", *PROJECTOR):
        assert t[n] == 0 and w[n] == 0, n
    # every module merged, every name kept (the projector's .0./.2. are not layers)
    assert set(res.tensors) == set(st.read_folder(a))
    assert not any(mp.copied for mp in res.modules.values())
    assert [s.ref for s in p["vis.merger.mlp.2.weight"].sources] == [a, b]
    assert [s.tensor for s in p["vis.merger.mlp.2.weight"].sources] == ["vis.merger.mlp.2.weight"] * 2
    # values: weight 0 for A gives B exactly; weight 1 and 1 gives (A + B) / 2
    for n in ("vis.blocks.0.fc.weight", "lm.model.layers.0.mlp.weight", "vis.merger.mlp.0.weight"):
        assert np.array_equal(res.tensors[n][1], vals(b, n)), n
    for n in ("vis.blocks.1.fc.weight", "lm.model.layers.2.mlp.weight"):
        want = ((vals(a, n) + vals(b, n)) / np.float32(2)).astype(np.float32)
        assert np.array_equal(res.tensors[n][1], want), n
    assert res.config["text_config"]["num_hidden_layers"] == 3 and res.config["vision_config"]["depth"] == 2
    assert res.num_layers == 3 and res.modules["vision_tower"].num_layers == 2


def test_models_base_appended_per_module(ab, tmp_path):
    a, b = ab
    c = make_vl(tmp_path / "c", "c")
    cfg = {"merge_method": "task_arithmetic", "base_model": c,
           "models": [{"model": a, "parameters": {"weight": 1}}, {"model": b, "parameters": {"weight": 1}}]}
    res = ce.evaluate(cfg, modules=TABLE)
    for n in ("lm.model.layers.2.mlp.weight", "vis.blocks.3.fc.weight", "vis.merger.mlp.2.weight"):
        assert [s.ref for s in planned(res)[n].sources] == [a, b, c], n
    assert res.donor.ref == c


# ---- top-level slices: the text decoder; the other modules copied from the donor --------------------

def test_top_level_slices_apply_to_the_text_decoder(ab):
    a, b = ab
    cfg = {"merge_method": "passthrough",
           "slices": [{"sources": [{"model": a, "layer_range": [0, 2]}]},
                      {"sources": [{"model": b, "layer_range": [1, 3]}]}]}
    res = ce.evaluate(cfg, modules=TABLE)
    assert res.num_layers == 4
    assert origin(res, "lm.model.layers.1.mlp.weight") == (a, "lm.model.layers.1.mlp.weight")
    assert origin(res, "lm.model.layers.2.mlp.weight") == (b, "lm.model.layers.1.mlp.weight")
    assert origin(res, "lm.model.layers.3.input_layernorm.weight") == (b, "lm.model.layers.2.input_layernorm.weight")
    assert [planned(res)[f"lm.model.layers.{i}.mlp.weight"].t for i in range(4)] == [0, 1, 0, 1]
    assert origin(res, "lm.model.embed_tokens.weight")[0] == a                   # pre: first slice
    assert origin(res, "lm.model.norm.weight")[0] == b                           # post: last slice
    assert origin(res, "lm.lm_head.weight")[0] == b
    # vision tower and projector: the donor's (the first model, a), byte for byte, names unchanged
    assert res.modules["vision_tower"].copied and res.modules["multi_modal_projector"].copied
    assert not res.modules["text_decoder"].copied
    src = st.read_folder(a)
    for n, t in src.items():
        if not n.startswith("lm."):
            assert origin(res, n) == (a, n) and planned(res)[n].method == "passthrough", n
            assert st.encode(*res.tensors[n]) == t.raw, n
    assert sum(n.startswith("vis.blocks.") for n in res.tensors) == 4
    # config.json: the text count and its list follow the slices; the vision tower's are the donor's
    assert res.config["text_config"]["num_hidden_layers"] == 4
    assert res.config["text_config"]["layer_types"] == ["at0", "at1", "bt1", "bt2"]
    assert res.config["vision_config"] == {"depth": 4, "kinds": ["av0", "av1", "av2", "av3"], "hidden_size": 2}


def test_top_level_slices_copy_from_base_model(ab):
    a, b = ab
    cfg = {"merge_method": "passthrough", "base_model": b,
           "slices": [{"sources": [{"model": a, "layer_range": [0, 3]}]}]}
    res = ce.evaluate(cfg, modules=TABLE)
    assert origin(res, "vis.blocks.2.fc.weight") == (b, "vis.blocks.2.fc.weight")
    assert origin(res, "vis.merger.mlp.0.weight") == (b, "vis.merger.mlp.0.weight")
    assert origin(res, "lm.model.layers.2.mlp.weight") == (a, "lm.model.layers.2.mlp.weight")
    assert res.config["vision_config"]["kinds"] == ["bv0", "bv1", "bv2", "bv3"]
    assert res.config["text_config"]["layer_types"] == ["at0", "at1", "at2"]   # from the model each layer is of


def test_copied_module_ignores_parameters_and_is_cast_by_dtype(ab):
    a, b = ab
    cfg = {"merge_method": "passthrough", "dtype": "bfloat16", "parameters": {"scale": 2.0},
           "slices": [{"sources": [{"model": a, "layer_range": [0, 3]}]}]}
    res = ce.evaluate(cfg, modules=TABLE)
    n = "vis.blocks.1.fc.weight"
    assert res.tensors[n][0] == "BF16"
    assert np.array_equal(res.tensors[n][1], st.round_to("BF16", vals(a, n)))     # no scale
    n = "lm.model.layers.1.mlp.weight"
    assert np.array_equal(res.tensors[n][1], st.round_to("BF16", np.float32(2.0) * st.round_to("BF16", vals(a, n))))
    # dtype keys: top level and the sub-configs that have one (text_config), not vision_config
    assert res.config["dtype"] == res.config["torch_dtype"] == "bfloat16"
    assert res.config["text_config"]["dtype"] == res.config["text_config"]["torch_dtype"] == "bfloat16"
    assert "dtype" not in res.config["vision_config"] and "torch_dtype" not in res.config["vision_config"]


def test_layer_range_checked_against_the_text_decoder(ab):
    a, b = ab   # 3 text layers, 4 vision blocks: [0, 4] fits the vision tower only
    cfg = {"merge_method": "passthrough", "slices": [{"sources": [{"model": a, "layer_range": [0, 4]}]}]}
    with pytest.raises(ConfigError, match=r"layer_range.*\b3 layers"):
        ce.evaluate(cfg, modules=TABLE)


def test_top_level_slices_without_a_text_decoder(ab):
    a, _ = ab
    table = {"decoder": TABLE["text_decoder"], "vision_tower": TABLE["vision_tower"],
             "multi_modal_projector": TABLE["multi_modal_projector"]}
    cfg = {"merge_method": "passthrough", "slices": [{"sources": [{"model": a, "layer_range": [0, 3]}]}]}
    with pytest.raises(ConfigError, match="modules:"):
        ce.evaluate(cfg, modules=table)


# ---- modules: -----------------------------------------------------------------------------------------

def test_modules_frankenmerge_and_copied_module(ab):
    a, b = ab
    cfg = {"merge_method": "passthrough", "base_model": b, "modules": {
        "text_decoder": {"slices": [{"sources": [{"model": a, "layer_range": [0, 2]}]},
                                    {"sources": [{"model": b, "layer_range": [0, 3]}]}]},
        "vision_tower": {"slices": [{"sources": [{"model": a, "layer_range": [0, 3]}]},
                                    {"sources": [{"model": b, "layer_range": [2, 4]}]}]}}}
    res = ce.evaluate(cfg, modules=TABLE)
    # each module renumbered from 0 in its own stack
    assert res.modules["text_decoder"].num_layers == 5 and res.modules["vision_tower"].num_layers == 5
    assert sorted(ce.layer_index(n) for n in res.tensors if n.startswith("vis.blocks.")) == list(range(5))
    assert origin(res, "vis.blocks.3.fc.weight") == (b, "vis.blocks.2.fc.weight")
    assert origin(res, "vis.blocks.4.fc.weight") == (b, "vis.blocks.3.fc.weight")
    assert origin(res, "lm.model.layers.2.mlp.weight") == (b, "lm.model.layers.0.mlp.weight")
    assert [planned(res)[f"vis.blocks.{i}.fc.weight"].t for i in range(5)] == [0, 0.5, 1, 0, 1]
    # pre / post per module: the first / last slice of that module
    assert origin(res, "vis.patch.weight")[0] == a and origin(res, "vis.post_layernorm.weight")[0] == b
    assert origin(res, "lm.model.embed_tokens.weight")[0] == a and origin(res, "lm.lm_head.weight")[0] == b
    # the projector is not listed: the donor's (base_model b), byte for byte
    assert res.modules["multi_modal_projector"].copied
    for n in ("vis.merger.ln_q.weight", *PROJECTOR):
        assert origin(res, n) == (b, n) and st.encode(*res.tensors[n]) == raw(b, n)
    assert res.config["text_config"]["num_hidden_layers"] == 5
    assert res.config["text_config"]["layer_types"] == ["at0", "at1", "bt0", "bt1", "bt2"]
    assert res.config["vision_config"]["depth"] == 5
    assert res.config["vision_config"]["kinds"] == ["av0", "av1", "av2", "bv2", "bv3"]


def test_modules_parameter_precedence(ab):
    a, b = ab
    cfg = {"merge_method": "linear", "parameters": {"weight": 100, "normalize": False}, "modules": {
        "text_decoder": {"slices": [{"sources": [{"model": a, "layer_range": [0, 3], "parameters": {"weight": 5}},
                                                 {"model": b, "layer_range": [0, 3]}],
                                     "parameters": {"weight": 2}}],
                         "parameters": {"weight": 3}},
        "vision_tower": {"models": [{"model": a}, {"model": b, "parameters": {"weight": 4}}],
                         "parameters": {"weight": 3, "normalize": True}}}}
    res = ce.evaluate(cfg, modules=TABLE)
    p = planned(res)
    for n in ("lm.model.layers.1.mlp.weight", "lm.model.norm.weight"):
        assert [s.params["weight"] for s in p[n].sources] == [5, 2], n      # source > slice > module
        assert p[n].params["normalize"] is False, n                          # top level
    for n in ("vis.blocks.1.fc.weight", "vis.patch.weight"):
        assert [s.params["weight"] for s in p[n].sources] == [3, 4], n      # module > top level
        assert p[n].params["normalize"] is True, n                           # module > top level
    # the projector is copied from the donor (a, the first model): no parameters at all
    q = p["vis.merger.mlp.2.weight"]
    assert q.method == "passthrough" and [s.ref for s in q.sources] == [a] and q.sources[0].params == {}
    n = "vis.blocks.2.fc.weight"
    want = ((np.float32(3) * vals(a, n) + np.float32(4) * vals(b, n)) / np.float32(7)).astype(np.float32)
    assert np.array_equal(res.tensors[n][1], want)


def test_modules_count_change_without_count_key_is_an_error(tmp_path):
    a = make_vl(tmp_path / "a", "a", vision_key=False)
    same = {"merge_method": "passthrough", "modules": {
        "vision_tower": {"slices": [{"sources": [{"model": a, "layer_range": [0, 2]}]},
                                    {"sources": [{"model": a, "layer_range": [2, 4]}]}]}}}
    res = ce.evaluate(same, modules=TABLE)   # 4 blocks out of 4: nothing to write
    assert "depth" not in res.config["vision_config"]
    assert res.config["vision_config"]["kinds"] == ["av0", "av1", "av2", "av3"]
    changed = {"merge_method": "passthrough", "modules": {
        "vision_tower": {"slices": [{"sources": [{"model": a, "layer_range": [0, 3]}]}]}}}
    with pytest.raises(ConfigError, match="vision_tower"):
        ce.evaluate(changed, modules=TABLE)


@pytest.mark.parametrize("modules, words", [
    ({"audio_tower": {"models": []}}, ["audio_tower", "text_decoder", "vision_tower", "multi_modal_projector"]),
    ({"default": {"models": []}}, ["default"]),          # `default` names only a single module
    ({"vision_tower": {}}, ["vision_tower", "exactly one"]),
    ({"vision_tower": {"models": [], "slices": []}}, ["vision_tower", "exactly one"]),
    ({"vision_tower": {"slices": [{"sources": [{"model": "A", "layer_range": [0, 5]}]}]}},
     ["layer_range", "4 layers"]),
])
def test_modules_errors(ab, modules, words):
    a, _ = ab
    modules = json.loads(json.dumps(modules).replace('"A"', json.dumps(a)))
    with pytest.raises(ConfigError) as e:
        ce.evaluate({"merge_method": "passthrough", "base_model": a, "modules": modules}, modules=TABLE)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_modules_excludes_top_level_models_and_slices(ab):
    a, _ = ab
    mods = {"text_decoder": {"models": [{"model": a}]}}
    for key, value in (("models", [{"model": a}]), ("slices", [{"sources": [{"model": a, "layer_range": [0, 3]}]}])):
        with pytest.raises(ConfigError, match="modules:"):
            ce.evaluate({"merge_method": "passthrough", "modules": mods, key: value}, modules=TABLE)


# ---- text-only models: one module, `default` ----------------------------------------------------------

def make_text(folder, tag, layers=4):
    rng = np.random.default_rng(sum(map(ord, tag)))
    names = {"model.embed_tokens.weight": (6, 2), "model.norm.weight": (2,), "lm_head.weight": (6, 2)}
    names.update({f"model.layers.{i}.mlp.up_proj.weight": (2, 2) for i in range(layers)})
    os.makedirs(folder)
    st.write_safetensors(os.path.join(folder, "model.safetensors"),
                         {n: ("F32", s, st.encode("F32", rng.normal(0, 1, s).astype(np.float32)))
                          for n, s in names.items()})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"num_hidden_layers": layers, "layer_types": [f"{tag}{i}" for i in range(layers)]}, f)
    return str(folder)


@pytest.mark.parametrize("name", ["default", "text_decoder"])
def test_text_only_module_equals_top_level_slices(tmp_path, name):
    a, b = make_text(tmp_path / "a", "a"), make_text(tmp_path / "b", "b")
    slices = [{"sources": [{"model": a, "layer_range": [0, 3]}]}, {"sources": [{"model": b, "layer_range": [2, 4]}]}]
    top = ce.evaluate({"merge_method": "passthrough", "slices": slices})
    mod = ce.evaluate({"merge_method": "passthrough", "modules": {name: {"slices": slices}}})
    assert top.num_layers == mod.num_layers == 5
    assert set(top.tensors) == set(mod.tensors)
    for n, (dt, v) in top.tensors.items():
        assert mod.tensors[n][0] == dt and np.array_equal(mod.tensors[n][1], v), n
    assert top.config == mod.config
    assert mod.config["layer_types"] == ["a0", "a1", "a2", "b2", "b3"]


def test_text_only_module_named_twice_or_unknown(tmp_path):
    a = make_text(tmp_path / "a", "a")
    entry = {"models": [{"model": a}]}
    with pytest.raises(ConfigError, match="twice"):
        ce.evaluate({"merge_method": "passthrough", "modules": {"default": entry, "text_decoder": entry}})
    with pytest.raises(ConfigError, match="vision_tower.*text_decoder"):
        ce.evaluate({"merge_method": "passthrough", "modules": {"vision_tower": entry}})
