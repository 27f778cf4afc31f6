"""Merges of tiny models that carry the tensor names, shard files and config.json of real published
checkpoints (tests/fixtures/archs, made by tests/reference/arch_fixture.py), checked against the numpy
reference and for config.json (issue 11).

Text families (Llama 3, Mistral, Qwen2.5, Qwen3, Gemma, Phi-3, Yi, Mixtral, Granite MoE, GPT-NeoX):
linear, ties, slerp with a `t` gradient, a frankenmerge (`slices:` from two models) and task_arithmetic
with a conditional filter, each compared with tests/reference/config_eval.py, plus config.json
(the donor's with the stored dtype and the output layer count). One family per method goes through a
real mount, the others through `mergemount build`.

Multimodal families (Gemma 3 with its vision tower, Qwen2-VL, an InternVL/LLaVA-style model with a
`language_model.` prefix): the expected behaviour of issue 11, computed here per module (mergekit
spreads a gradient over the layers of the module a tensor belongs to; a top-level `slices:` applies
to the text decoder and copies the other modules from the base; config.json keeps every module's own
layer count). The cases the program gets wrong today are marked xfail(strict=True) with the reason.
"""

import json
import os
import re

import pytest

import arch_fixture
import config_eval
import methods
import methods_stats
import mmtest
import safetensors_io as st

ARCHS = os.path.join(mmtest.REPO, "tests", "fixtures", "archs")
TEXT = ["llama3", "mistral", "qwen2.5", "qwen3", "gemma", "phi3", "yi", "mixtral", "granitemoe", "gpt-neox"]
MULTIMODAL = ["gemma3-vl", "qwen2-vl", "internvl-lm"]
# The family that each method's test runs through a real mount (the others use `mergemount build`).
MOUNTED = {"linear": "llama3", "ties": "qwen3", "slerp": "qwen2.5", "frankenmerge": "gemma",
           "task_arithmetic": "phi3"}

TIES_LAYERS = 6
# Tests that check values only (linear, task_arithmetic) cut Mixtral (1739 tensors) to its first 8
# layers to keep the sanitizer run short; its frankenmerge and slerp gradient use all 56.
VALUE_LAYERS = {"mixtral": 8}

XFAIL_MODULES = pytest.mark.xfail(strict=True, reason="issue 11: modules not implemented")


@pytest.fixture(scope="session")
def arch_model(tmp_path_factory):
    """arch_model(family, seed, max_layers=None) -> a tiny checkpoint folder of that family (seed 0:
    the base; 1, 2: fine-tunes of it; max_layers: only the first layers of every stack), made once
    per session."""
    root = tmp_path_factory.mktemp("archs")
    made = {}

    def make(family, seed, max_layers=None):
        key = (family, seed, max_layers)
        if key not in made:
            name = f"{family}-s{seed}" + (f"-l{max_layers}" if max_layers else "")
            made[key] = arch_fixture.make(os.path.join(ARCHS, family), str(root / name), seed=seed,
                                          max_layers=max_layers)
        return made[key]
    return make


def text_layers(folder):
    """The text decoder's layer count from a model folder's config.json."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    for holder in (cfg, cfg.get("text_config") or {}):
        for key in config_eval.LAYER_KEYS:
            if key in holder:
                return int(holder[key])
    raise AssertionError(f"no layer count in {folder}/config.json")


def merge(tmp_path, mount, cfg, via_mount):
    """Runs cfg through a real mount or `mergemount build`; returns ({name: StTensor}, config.json)."""
    if via_mount:
        return mmtest.run_merge(tmp_path, mount, cfg)
    path = mmtest.write_config(tmp_path, cfg)
    out = mmtest.build(path, tmp_path / "out")
    with open(os.path.join(out, "config.json")) as f:
        return mmtest.read_weights(out), json.load(f)


DTYPE_KEYS = ("torch_dtype", "dtype")


def without_dtype(cfg):
    cfg = json.loads(json.dumps(cfg))
    for holder in [cfg] + [v for v in cfg.values() if isinstance(v, dict)]:
        for k in DTYPE_KEYS:
            holder.pop(k, None)
    return cfg


def check_config(got, want, stored):
    """config.json: the expected one (the donor's with the layer count set); the dtype keys, where
    present, name the stored dtype (`dtype` is what transformers >= 5 writes; another change sets it)."""
    assert without_dtype(got) == without_dtype(want), "config.json differs from the expected one"
    assert got.get("torch_dtype") == st.TORCH_NAME[stored], got.get("torch_dtype")
    if "dtype" in got:
        assert got["dtype"] == st.TORCH_NAME[stored], got["dtype"]


def check(tmp_path, mount, cfg, via_mount, exact=True):
    """Merges cfg, compares every tensor with the reference and config.json; returns (reference, got,
    config.json)."""
    expected = config_eval.evaluate(cfg)
    got, out_cfg = merge(tmp_path, mount, cfg, via_mount)
    if exact:
        mmtest.assert_bitwise(got, expected.tensors)
    else:
        mmtest.assert_within_ulp(got, expected.tensors, 2)
    stored = {t.dtype for t in got.values()}
    assert len(stored) == 1, stored
    check_config(out_cfg, expected.config, stored.pop())
    return expected, got, out_cfg


# ---- text families -------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", TEXT)
def test_linear(tmp_path, mount, arch_model, family):
    cut = VALUE_LAYERS.get(family)
    cfg = mmtest.method_config("linear", [(arch_model(family, 1, cut), {"weight": 0.6}),
                                          (arch_model(family, 2, cut), {"weight": 0.4})])
    check(tmp_path, mount, cfg, MOUNTED["linear"] == family)


@pytest.mark.parametrize("family", TEXT)
def test_ties(tmp_path, mount, arch_model, family):
    # GPT-NeoX's reward head has a one-element bias, which no density below 1 can keep an element
    # of (mergekit refuses it too): density 1 there
    def density(d):
        return [{"filter": "out_proj.bias", "value": 1.0}, {"value": d}]
    # ties checks values, not layer indexing: the first 6 layers of every stack are enough, and keep
    # the sanitizer run short (a pre-pass per tensor; Mixtral has 1739 tensors)
    cfg = mmtest.method_config("ties", [(arch_model(family, 1, TIES_LAYERS), {"weight": 0.7, "density": density(0.5)}),
                                        (arch_model(family, 2, TIES_LAYERS), {"weight": 0.5, "density": density(0.4)})],
                               base=arch_model(family, 0, TIES_LAYERS))
    check(tmp_path, mount, cfg, MOUNTED["ties"] == family)


@pytest.mark.parametrize("family", TEXT)
def test_slerp_gradient(tmp_path, mount, arch_model, family):
    base = arch_model(family, 0)
    cfg = mmtest.method_config("slerp", [(base, None), (arch_model(family, 1), None)], base=base,
                               parameters={"t": [0.0, 0.3, 0.7, 1.0]})
    expected, _, _ = check(tmp_path, mount, cfg, MOUNTED["slerp"] == family, exact=False)
    # the gradient reaches both ends over the real layer count
    n = text_layers(base)
    ts = {p.t for p in expected.plan if config_eval.layer_index(p.name) is not None}
    assert min(ts) == 0.0 and max(ts) == 1.0 and len(ts) == n


@pytest.mark.parametrize("family", TEXT)
def test_frankenmerge(tmp_path, mount, arch_model, family):
    a, b = arch_model(family, 1), arch_model(family, 2)
    n = text_layers(a)
    first, second = [0, n // 2 + 2], [n // 2 - 2, n]
    cfg = {"merge_method": "passthrough",
           "slices": [{"sources": [{"model": a, "layer_range": first}]},
                      {"sources": [{"model": b, "layer_range": second}]}]}
    expected, got, out_cfg = check(tmp_path, mount, cfg, MOUNTED["frankenmerge"] == family)
    assert expected.num_layers == n + 4
    assert out_cfg["num_hidden_layers"] == n + 4
    layers = {config_eval.layer_index(name) for name in got} - {None}
    assert layers == set(range(n + 4))
    # a copy: output layer n//2 + 2 is b's layer n//2 - 2, byte for byte
    src = st.read_folder(b)
    for name in got:
        if config_eval.layer_index(name) == n // 2 + 2:
            src_name = config_eval.with_layer(config_eval.layer_template(name), n // 2 - 2)
            assert got[name].raw == src[src_name].raw, name
    experts = arch_fixture.expert_indexes(src)
    if experts:
        # expert indexes are never layers: every output layer has all experts under their own numbers
        for layer in range(n + 4):
            for e in experts:
                for w in ("w1", "w2", "w3"):
                    assert f"model.layers.{layer}.block_sparse_moe.experts.{e}.{w}.weight" in got


@pytest.mark.parametrize("family", TEXT)
def test_task_arithmetic_filter(tmp_path, mount, arch_model, family):
    cut = VALUE_LAYERS.get(family)
    cfg = mmtest.method_config("task_arithmetic",
                               [(arch_model(family, 1, cut), {"weight": [{"filter": "mlp", "value": 0.8},
                                                                         {"value": 0.3}]}),
                                (arch_model(family, 2, cut), {"weight": 0.5})],
                               base=arch_model(family, 0, cut))
    expected, _, _ = check(tmp_path, mount, cfg, MOUNTED["task_arithmetic"] == family)
    weights = {p.sources[0].params["weight"] for p in expected.plan}
    assert weights == ({0.8, 0.3} if any("mlp" in p.name for p in expected.plan) else {0.3})


# ---- multimodal families: per-module expectations (issue 11) -------------------------------------------

# Where each module's layers are, per family: (text decoder layer prefix, the text decoder's other
# tensors' prefixes, vision tower layer prefix).
MODULES = {
    "gemma3-vl": ("language_model.model.layers", ("language_model.",), "vision_tower.vision_model.encoder.layers"),
    "qwen2-vl": ("model.layers", ("model.", "lm_head."), "visual.blocks"),
    "internvl-lm": ("language_model.model.layers", ("language_model.",), "vision_model.encoder.blocks"),
}


def split_layer(name, prefix):
    """(index, rest) when name is `prefix.<index>.rest`, else None."""
    m = re.match(re.escape(prefix) + r"\.(\d+)\.(.*)$", name)
    return (int(m.group(1)), m.group(2)) if m else None


def module_t(family, names, name):
    """mergekit's t of a tensor in a `models:` merge: its index over its own module's layers; 0 for
    tensors outside the layers."""
    text_prefix, _, vision_prefix = MODULES[family]
    for prefix in (text_prefix, vision_prefix):
        hit = split_layer(name, prefix)
        if hit:
            count = len({split_layer(n, prefix)[0] for n in names if split_layer(n, prefix)})
            return hit[0] / (count - 1)
    return 0.0


def ambiguous_index(family, name):
    """A `.<digits>.` outside both layer stacks, such as the index of an nn.Sequential in a projector
    (`visual.merger.mlp.2.weight`, `mlp1.3.weight`): whether mergekit gives such a tensor t = 0 (as a
    module's non-layer weight) or treats the index as a layer of a stack of its own depends on its
    architecture definition, so the per-module gradient test leaves these tensors out."""
    text_prefix, _, vision_prefix = MODULES[family]
    if split_layer(name, text_prefix) or split_layer(name, vision_prefix):
        return False
    return config_eval.layer_index(name) is not None or re.match(r"^[^.]+\.\d+\.", name) is not None


def read(folder):
    return st.read_folder(folder)


def module_config_counts(cfg, family):
    """(text layer count, vision layer count or None) from a config.json dict."""
    text = cfg.get("text_config") or cfg
    vision = cfg.get("vision_config") or {}
    return text["num_hidden_layers"], vision.get("num_hidden_layers", vision.get("depth"))


@pytest.mark.parametrize("family", [
    "gemma3-vl",
    pytest.param("qwen2-vl", marks=XFAIL_MODULES),   # config.json gets num_hidden_layers 32 (vision blocks)
    "internvl-lm",
])
def test_multimodal_linear(tmp_path, mount, arch_model, family):
    a, b = arch_model(family, 1), arch_model(family, 2)
    cfg = mmtest.method_config("linear", [(a, {"weight": 0.6}), (b, {"weight": 0.4})])
    got, out_cfg = merge(tmp_path, mount, cfg, via_mount=False)
    ta, tb = read(a), read(b)
    expected = {n: methods.linear([(ta[n].dtype, ta[n].f32()), (tb[n].dtype, tb[n].f32())], [0.6, 0.4])
                for n in ta}
    mmtest.assert_bitwise(got, expected)
    with open(os.path.join(a, "config.json")) as f:
        donor = json.load(f)
    assert module_config_counts(out_cfg, family) == module_config_counts(donor, family)
    assert without_dtype(out_cfg) == without_dtype(donor)


@XFAIL_MODULES   # the gradient is spread over the text layer count (or the highest index) for every module
@pytest.mark.parametrize("family", MULTIMODAL)
def test_multimodal_slerp_gradient_per_module(tmp_path, mount, arch_model, family):
    base, other = arch_model(family, 0), arch_model(family, 1)
    grad = [0.0, 0.3, 0.7, 1.0]
    cfg = mmtest.method_config("slerp", [(base, None), (other, None)], base=base, parameters={"t": grad})
    got, _ = merge(tmp_path, mount, cfg, via_mount=False)
    tb, to = read(base), read(other)
    assert set(got) == set(tb)
    expected = {}
    for n in tb:
        if ambiguous_index(family, n):
            continue
        t = config_eval.gradient(grad, module_t(family, tb, n))
        expected[n] = methods_stats.slerp((tb[n].dtype, tb[n].f32()), (to[n].dtype, to[n].f32()), t)
    mmtest.assert_within_ulp({n: got[n] for n in expected}, expected, 2)


def franken_expected(family, a, b, first, second):
    """Names -> expected StTensor of a passthrough frankenmerge over the text decoder, slices
    a[first] + b[second], base a: text layers renamed in order, the text decoder's embeddings from
    the first slice and its final norm / head from the last, every other module copied from the base."""
    text_prefix, text_roots, _ = MODULES[family]
    ta, tb = read(a), read(b)
    out = {}
    counter = 0
    for src, (start, end) in ((ta, first), (tb, second)):
        for j in range(end - start):
            for n, t in src.items():
                hit = split_layer(n, text_prefix)
                if hit and hit[0] == start + j:
                    out[f"{text_prefix}.{counter}.{hit[1]}"] = t
            counter += 1
    for n, t in ta.items():
        if split_layer(n, text_prefix):
            continue
        in_text = n.startswith(text_roots)
        out[n] = tb[n] if in_text and config_eval.is_post(n) else t
    return out, counter


@XFAIL_MODULES   # vision layers are renamed as if they were text layers
@pytest.mark.parametrize("family", MULTIMODAL)
def test_multimodal_frankenmerge_text_decoder(tmp_path, mount, arch_model, family):
    a, b = arch_model(family, 1), arch_model(family, 2)
    n = text_layers(a)
    # the second slice starts inside the vision tower's index range too (27 or 32 layers), so that
    # a merge that took vision layers for text layers would rename and duplicate them
    first, second = [0, n // 3], [n // 3 - 4, n]
    cfg = {"merge_method": "passthrough", "base_model": a,
           "slices": [{"sources": [{"model": a, "layer_range": first}]},
                      {"sources": [{"model": b, "layer_range": second}]}]}
    want, count = franken_expected(family, a, b, first, second)
    assert count == n + 4
    got, out_cfg = merge(tmp_path, mount, cfg, via_mount=False)
    assert set(got) == set(want), (f"missing {sorted(set(want) - set(got))[:8]}, "
                                   f"extra {sorted(set(got) - set(want))[:8]}")
    bad = [name for name in want if got[name].raw != want[name].raw]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:8]}"
    with open(os.path.join(a, "config.json")) as f:
        donor = json.load(f)
    text_n, vision_n = module_config_counts(out_cfg, family)
    assert (text_n, vision_n) == (n + 4, module_config_counts(donor, family)[1])
    text_cfg = out_cfg.get("text_config") or out_cfg
    if "layer_types" in text_cfg:   # per-layer lists follow the layers (issue 11, item 4)
        assert len(text_cfg["layer_types"]) == n + 4


@XFAIL_MODULES   # accepted today: the layer count is taken over the vision blocks (32) too
def test_qwen2_vl_layer_range_past_text_decoder(tmp_path, arch_model):
    a, b = arch_model("qwen2-vl", 1), arch_model("qwen2-vl", 2)
    assert text_layers(a) == 28
    cfg = {"merge_method": "passthrough",
           "slices": [{"sources": [{"model": a, "layer_range": [0, 20]}]},
                      {"sources": [{"model": b, "layer_range": [20, 30]}]}]}
    path = mmtest.write_config(tmp_path, cfg)
    r = mmtest.mergemount("plan", path)
    assert r.returncode != 0, "a layer_range past the text decoder's 28 layers must be refused"
    assert "layer_range" in r.stderr and "28" in r.stderr, r.stderr


# ---- mergekit's `modules:` syntax (issue 11, item 3) ------------------------------------------------------

def gemma3_modules_config(a, b, text_range_end=62, extra=None):
    modules = {"text_decoder": {"slices": [{"sources": [{"model": a, "layer_range": [0, 20]}]},
                                           {"sources": [{"model": b, "layer_range": [16, text_range_end]}]}]},
               "vision_tower": {"models": [{"model": a}]}}
    modules.update(extra or {})
    return {"merge_method": "passthrough", "base_model": a, "modules": modules}


@XFAIL_MODULES   # `modules:` is refused today (D17)
def test_gemma3_modules_frankenmerge(tmp_path, mount, arch_model):
    a, b = arch_model("gemma3-vl", 1), arch_model("gemma3-vl", 2)
    assert text_layers(a) == 62
    cfg = gemma3_modules_config(a, b)
    want, count = franken_expected("gemma3-vl", a, b, [0, 20], [16, 62])
    assert count == 66
    got, out_cfg = merge(tmp_path, mount, cfg, via_mount=True)
    assert set(got) == set(want), (f"missing {sorted(set(want) - set(got))[:8]}, "
                                   f"extra {sorted(set(got) - set(want))[:8]}")
    bad = [name for name in want if got[name].raw != want[name].raw]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:8]}"
    assert module_config_counts(out_cfg, "gemma3-vl") == (66, 27)
    assert len(out_cfg["text_config"]["layer_types"]) == 66


@XFAIL_MODULES   # today's error is that `modules:` is not supported, without the module's name
def test_gemma3_unknown_module_is_an_error_naming_it(tmp_path, arch_model):
    a, b = arch_model("gemma3-vl", 1), arch_model("gemma3-vl", 2)
    cfg = gemma3_modules_config(a, b, extra={"audio_tower": {"models": [{"model": a}]}})
    r = mmtest.mergemount("plan", mmtest.write_config(tmp_path, cfg))
    assert r.returncode != 0
    assert "audio_tower" in r.stderr, r.stderr


@XFAIL_MODULES   # today's error is that `modules:` is not supported, not the range
def test_gemma3_layer_range_outside_its_module_is_an_error(tmp_path, arch_model):
    a, b = arch_model("gemma3-vl", 1), arch_model("gemma3-vl", 2)
    cfg = gemma3_modules_config(a, b, text_range_end=64)
    r = mmtest.mergemount("plan", mmtest.write_config(tmp_path, cfg))
    assert r.returncode != 0
    assert "layer_range" in r.stderr and "62" in r.stderr, r.stderr


@XFAIL_MODULES   # today `visual.merger.mlp.2` becomes `visual.merger.mlp.0` (the `.2.` of an nn.Sequential
#                  is taken for a layer index) and the real mlp.0 and vision blocks 0-1 are dropped
def test_qwen2_vl_slice_keeps_the_merger_and_vision_blocks(tmp_path, mount, arch_model):
    a = arch_model("qwen2-vl", 1)
    cfg = {"merge_method": "passthrough", "base_model": a,
           "slices": [{"sources": [{"model": a, "layer_range": [2, 28]}]}]}
    got, out_cfg = merge(tmp_path, mount, cfg, via_mount=False)
    src = read(a)
    for name in ("visual.merger.mlp.0.weight", "visual.merger.mlp.0.bias", "visual.merger.mlp.2.weight",
                 "visual.merger.mlp.2.bias", "visual.blocks.0.attn.qkv.weight", "visual.blocks.31.attn.qkv.weight"):
        assert name in got and got[name].raw == src[name].raw, name
    assert out_cfg["num_hidden_layers"] == 26
