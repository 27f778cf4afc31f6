"""Merges of tiny models that carry the tensor names, shard files and config.json of real published
checkpoints (tests/fixtures/archs, made by tests/reference/arch_fixture.py), checked against the numpy
reference (tests/reference/config_eval.py) and for config.json (issue 11).

Every family (text: Llama 3, Mistral, Qwen2.5, Qwen3, Gemma, Phi-3, Yi, Mixtral, Granite MoE,
GPT-NeoX; multimodal: Gemma 3 with its vision tower, Qwen2-VL, an InternVL/LLaVA-style model with a
`language_model.` prefix) goes through linear, ties, slerp with a `t` gradient, a frankenmerge
(top-level `slices:` from two models) and task_arithmetic with a conditional filter; each output is
compared with the reference (bit for bit; slerp within 2 ulp) and config.json with the reference's.
One family per method and kind goes through a real mount (MOUNTED), the others through
`mergemount build`.

Multimodal families are merged per module (D18 in docs/merge-contract.md): the reference is given
the family's module table (MODULES, mirroring mergekit's architecture JSONs), never guesses. A
gradient is spread over each module's own layers; a top-level `slices:` applies to the text decoder
and copies the other modules from the donor; `modules:` plans each listed module on its own and
copies the unlisted ones; config.json gets every module's own layer count. Adding a multimodal
family is one MODULES entry.
"""

import json
import os

import pytest

import arch_fixture
import config_eval
import mmtest
import safetensors_io as st
from config_eval import Module

ARCHS = os.path.join(mmtest.REPO, "tests", "fixtures", "archs")
TEXT = ["llama3", "mistral", "qwen2.5", "qwen3", "gemma", "gemma2", "phi3", "yi", "mixtral", "phimoe", "granitemoe",
        "gpt-neox"]

# The modules of each multimodal family (D18): layer-stack prefix, the name prefixes of the module's
# tensors (the longest matching prefix wins), and the config.json path of its layer count.
MODULES = {
    "gemma3-vl": {
        "text_decoder": Module("language_model.model.layers", ("language_model.",), "text_config.num_hidden_layers"),
        "vision_tower": Module("vision_tower.vision_model.encoder.layers", ("vision_tower.",),
                               "vision_config.num_hidden_layers"),
        "multi_modal_projector": Module(None, ("multi_modal_projector.",), None),
    },
    "qwen2-vl": {
        "text_decoder": Module("model.layers", ("model.", "lm_head."), "num_hidden_layers"),
        # vision_config.depth is absent from the fixture's config.json: the vision count has no key
        "vision_tower": Module("visual.blocks", ("visual.",), "vision_config.depth"),
        # visual.merger.mlp.0 / .2 are nn.Sequential indexes, not layers
        "multi_modal_projector": Module(None, ("visual.merger.",), None),
    },
    "internvl-lm": {
        "text_decoder": Module("language_model.model.layers", ("language_model.",), "text_config.num_hidden_layers"),
        "vision_tower": Module("vision_model.encoder.blocks", ("vision_model.",), "vision_config.num_hidden_layers"),
        "multi_modal_projector": Module(None, ("mlp1.",), None),   # mlp1.0/1/3: Sequential indexes
    },
    "llava": {
        # text_config leaves num_hidden_layers to LlamaConfig's default: a frankenmerge writes it
        "text_decoder": Module("language_model.model.layers", ("language_model.",), "text_config.num_hidden_layers"),
        "vision_tower": Module("vision_tower.vision_model.encoder.layers", ("vision_tower.",),
                               "vision_config.num_hidden_layers"),
        "multi_modal_projector": Module(None, ("multi_modal_projector.",), None),
    },
    "qwen3-vl": {   # transformers >= 4.52 names; mergekit's qwen3_vl_dense.json has the same three modules
        "text_decoder": Module("model.language_model.layers", ("model.language_model.", "lm_head."),
                               "text_config.num_hidden_layers"),
        "vision_tower": Module("model.visual.blocks", ("model.visual.",), "vision_config.depth"),
        # the projector has a stack of its own (3 deepstack mergers), no config key
        "multi_modal_projector": Module("model.visual.deepstack_merger_list", ("model.visual.merger.",), None),
    },
}
MULTIMODAL = sorted(MODULES)
FAMILIES = TEXT + MULTIMODAL

# The families whose test of a kind runs through a real mount (the others use `mergemount build`).
MOUNTED = {"linear": ("llama3", "gemma3-vl"), "ties": ("qwen3", "qwen2-vl"), "slerp": ("qwen2.5", "internvl-lm"),
           "frankenmerge": ("gemma", "qwen2-vl"), "task_arithmetic": ("phi3", "internvl-lm"),
           "modules": ("gemma3-vl",)}

TIES_LAYERS = 6
# Tests that check values only (linear, task_arithmetic) cut Mixtral (1739 tensors) and PhiMoE (1957) to their first 8
# layers to keep the sanitizer run short; its frankenmerge and slerp gradient use all 56.
VALUE_LAYERS = {"mixtral": 8, "phimoe": 8}


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


def table(family):
    """The family's module table; the one text_decoder module of a text-only family."""
    return MODULES.get(family, config_eval.TEXT_ONLY)


def counts(folder, family):
    """{module: layer count} of a model folder, as the reference reads them."""
    return config_eval.Model(folder, folder, table(family)).counts


def merge(tmp_path, mount, cfg, via_mount, name="run"):
    """Runs cfg through a real mount or `mergemount build` in tmp_path/name; returns ({name: StTensor},
    config.json)."""
    d = tmp_path / name
    d.mkdir()
    if via_mount:
        return mmtest.run_merge(d, mount, cfg)
    out = mmtest.build(mmtest.write_config(d, cfg), d / "out")
    with open(os.path.join(out, "config.json")) as f:
        return mmtest.read_weights(out), json.load(f)


def check(tmp_path, mount, cfg, family, via_mount, exact=True):
    """Merges cfg, compares every tensor with the reference given the family's modules (bit for bit,
    or within 2 ulp) and config.json with the reference's, exactly (every module's layer count,
    per-layer lists, `dtype` and `torch_dtype` wherever D16 sets them); returns (reference, got,
    config.json)."""
    expected = config_eval.evaluate(cfg, modules=MODULES.get(family))
    got, out_cfg = merge(tmp_path, mount, cfg, via_mount)
    if exact:
        mmtest.assert_bitwise(got, expected.tensors)
    else:
        mmtest.assert_within_ulp(got, expected.tensors, 2)
    assert out_cfg == expected.config, ("config.json differs from the reference's:\n"
                                        + "\n".join(config_diff(out_cfg, expected.config)))
    return expected, got, out_cfg


def config_diff(got, want, path=""):
    """The keys where two config.json dicts differ, one line each."""
    lines = []
    for k in sorted(set(got) | set(want)):
        g, w = got.get(k, "<absent>"), want.get(k, "<absent>")
        if isinstance(g, dict) and isinstance(w, dict):
            lines += config_diff(g, w, f"{path}{k}.")
        elif g != w:
            lines.append(f"{path}{k}: got {str(g)[:120]}, want {str(w)[:120]}")
    return lines


def module_tensors(got, family, module):
    """The names of `got` that belong to `module` of the family."""
    return [n for n in got if config_eval.module_of(table(family), n) == module]


def assert_copied(got, donor, family, modules):
    """Every tensor of these modules is the donor's, byte for byte, under its own name."""
    src = st.read_folder(donor)
    for module in modules:
        want = [n for n in src if config_eval.module_of(table(family), n) == module]
        assert sorted(module_tensors(got, family, module)) == sorted(want), module
        bad = [n for n in want if got[n].raw != src[n].raw]
        assert not bad, f"{module}: {len(bad)} tensors are not the donor's bytes, e.g. {bad[:4]}"


def plan_error(tmp_path, cfg, family):
    """The reference refuses cfg, and so must `mergemount plan`; returns the program's stderr."""
    with pytest.raises(config_eval.ConfigError):
        config_eval.evaluate(cfg, modules=MODULES.get(family))
    r = mmtest.mergemount("plan", mmtest.write_config(tmp_path, cfg))
    assert r.returncode != 0, f"mergemount plan accepted a config it must refuse:\n{r.stdout[:600]}..."
    return r.stderr


# ---- every family ------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_linear(tmp_path, mount, arch_model, family):
    cut = VALUE_LAYERS.get(family)
    cfg = mmtest.method_config("linear", [(arch_model(family, 1, cut), {"weight": 0.6}),
                                          (arch_model(family, 2, cut), {"weight": 0.4})])
    check(tmp_path, mount, cfg, family, family in MOUNTED["linear"])


@pytest.mark.parametrize("family", FAMILIES)
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
    check(tmp_path, mount, cfg, family, family in MOUNTED["ties"])


@pytest.mark.parametrize("family", FAMILIES)
def test_slerp_gradient(tmp_path, mount, arch_model, family):
    base = arch_model(family, 0)
    cfg = mmtest.method_config("slerp", [(base, None), (arch_model(family, 1), None)], base=base,
                               parameters={"t": [0.0, 0.3, 0.7, 1.0]})
    expected, _, _ = check(tmp_path, mount, cfg, family, family in MOUNTED["slerp"], exact=False)
    # the gradient reaches both ends over each module's own layer count; t = 0 outside the layers
    for name, n in counts(base, family).items():
        mp = expected.modules[name]
        ts = {p.t for p in mp.plan if mp.module.split(p.name)}
        assert len(ts) == n and (not n or (min(ts), max(ts)) == (0.0, 1.0)), (name, n, sorted(ts))
        assert {p.t for p in mp.plan if not mp.module.split(p.name)} <= {0.0}, name


@pytest.mark.parametrize("family", FAMILIES)
def test_frankenmerge(tmp_path, mount, arch_model, family):
    a, b = arch_model(family, 1), arch_model(family, 2)
    n = counts(a, family)["text_decoder"]
    # the second slice starts inside the vision tower's index range too (27 or 32 layers), so that
    # a merge that took vision layers for text layers would rename and duplicate them
    first, second = [0, n // 3], [n // 3 - 4, n]
    cfg = {"merge_method": "passthrough",
           "slices": [{"sources": [{"model": a, "layer_range": first}]},
                      {"sources": [{"model": b, "layer_range": second}]}]}
    expected, got, out_cfg = check(tmp_path, mount, cfg, family, family in MOUNTED["frankenmerge"])
    text = table(family)["text_decoder"]
    assert expected.num_layers == n + 4
    holder, key = text.count_holder(out_cfg)
    assert holder[key] == n + 4
    if "layer_types" in holder:   # per-layer lists follow the layers (issue 11, item 4)
        assert len(holder["layer_types"]) == n + 4
    layers = {text.split(name)[1] for name in module_tensors(got, family, "text_decoder") if text.split(name)}
    assert layers == set(range(n + 4))
    # a copy: output layer n//3 is b's layer n//3 - 4, byte for byte
    src = st.read_folder(b)
    for name in module_tensors(got, family, "text_decoder"):
        sp = text.split(name)
        if sp and sp[1] == first[1]:
            assert got[name].raw == src[f"{sp[0]}.{second[0]}.{sp[2]}"].raw, name
    # the other modules: the donor's (the first model), byte for byte, with their own layer counts
    assert_copied(got, a, family, [m for m in table(family) if m != "text_decoder"])
    for name, count in counts(a, family).items():
        h, k = table(family)[name].count_holder(out_cfg)
        assert h is None or h[k] == (n + 4 if name == "text_decoder" else count), (name, h and h[k])
    experts = arch_fixture.expert_indexes(src)
    if experts:
        # expert indexes are never layers: every output layer has all experts under their own numbers
        for layer in range(n + 4):
            for e in experts:
                for w in ("w1", "w2", "w3"):
                    assert f"model.layers.{layer}.block_sparse_moe.experts.{e}.{w}.weight" in got


@pytest.mark.parametrize("family", FAMILIES)
def test_task_arithmetic_filter(tmp_path, mount, arch_model, family):
    cut = VALUE_LAYERS.get(family)
    cfg = mmtest.method_config("task_arithmetic",
                               [(arch_model(family, 1, cut), {"weight": [{"filter": "mlp", "value": 0.8},
                                                                         {"value": 0.3}]}),
                                (arch_model(family, 2, cut), {"weight": 0.5})],
                               base=arch_model(family, 0, cut))
    expected, _, _ = check(tmp_path, mount, cfg, family, family in MOUNTED["task_arithmetic"])
    weights = {p.sources[0].params["weight"] for p in expected.plan}
    assert weights == ({0.8, 0.3} if any("mlp" in p.name for p in expected.plan) else {0.3})


# ---- multimodal families: `modules:` and the per-module rules (D18) ---------------------------------

def modules_config(a, b, n, extra=None):
    """A `modules:` merge: the text decoder a frankenmerge of a[0, n//3] and b[n//3 - 4, n] (66 layers
    of Gemma 3's 62), the vision tower a linear merge of a and b (module weight 0.7, b's own 0.3),
    the projector not listed; `extra` entries are added to `modules:`."""
    modules = {"text_decoder": {"slices": [{"sources": [{"model": a, "layer_range": [0, n // 3]}]},
                                           {"sources": [{"model": b, "layer_range": [n // 3 - 4, n]}]}]},
               "vision_tower": {"models": [{"model": a}, {"model": b, "parameters": {"weight": 0.3}}],
                                "parameters": {"weight": 0.7}}}
    modules.update(extra or {})
    return {"merge_method": "linear", "parameters": {"weight": 1.0}, "modules": modules}


@pytest.mark.parametrize("family", MULTIMODAL)
def test_modules_frankenmerge(tmp_path, mount, arch_model, family):
    a, b = arch_model(family, 1), arch_model(family, 2)
    before = counts(a, family)
    n = before["text_decoder"]
    expected, got, out_cfg = check(tmp_path, mount, modules_config(a, b, n), family, family in MOUNTED["modules"])
    mods = table(family)
    assert expected.num_layers == n + 4 and expected.modules["vision_tower"].num_layers == before["vision_tower"]
    for name, want in (("text_decoder", n + 4), ("vision_tower", before["vision_tower"])):
        h, k = mods[name].count_holder(out_cfg)
        assert h is None or h[k] == want, (name, h and h[k], want)   # Gemma 3: 66 and 27
    text_holder, _ = mods["text_decoder"].count_holder(out_cfg)
    if "layer_types" in text_holder:
        assert len(text_holder["layer_types"]) == n + 4
    # the vision tower is a merge (module-level weight 0.7 for a, b's own 0.3), not a copy
    p = {q.name: q for q in expected.plan}
    vision = module_tensors(got, family, "vision_tower")
    assert [s.params["weight"] for s in p[vision[0]].sources] == [0.7, 0.3]
    # the projector is not listed: the donor's (the first model in the config, a), byte for byte
    assert_copied(got, a, family, ["multi_modal_projector"])


@pytest.mark.parametrize("family", MULTIMODAL)
def test_module_not_listed_is_copied_from_base_model(tmp_path, mount, arch_model, family):
    a, b = arch_model(family, 1), arch_model(family, 2)
    n = counts(a, family)["text_decoder"]
    cfg = {"merge_method": "passthrough", "base_model": b, "modules": {
        "text_decoder": {"slices": [{"sources": [{"model": a, "layer_range": [2, n]}]}]}}}
    _, got, out_cfg = check(tmp_path, mount, cfg, family, False)
    assert_copied(got, b, family, ["vision_tower", "multi_modal_projector"])
    h, k = table(family)["text_decoder"].count_holder(out_cfg)
    assert h[k] == n - 2


def test_qwen2_vl_slice_keeps_the_merger_and_vision_blocks(tmp_path, mount, arch_model):
    # `visual.merger.mlp.2` must not become `visual.merger.mlp.0` (the `.2.` of an nn.Sequential is no
    # layer index), and the vision blocks are not text layers
    a = arch_model("qwen2-vl", 1)
    cfg = {"merge_method": "passthrough", "base_model": a,
           "slices": [{"sources": [{"model": a, "layer_range": [2, 28]}]}]}
    _, got, out_cfg = check(tmp_path, mount, cfg, "qwen2-vl", False)
    src = st.read_folder(a)
    for name in ("visual.merger.mlp.0.weight", "visual.merger.mlp.0.bias", "visual.merger.mlp.2.weight",
                 "visual.merger.mlp.2.bias", *(f"visual.blocks.{i}.attn.qkv.weight" for i in range(32))):
        assert name in got and got[name].raw == src[name].raw, name
    assert out_cfg["num_hidden_layers"] == 26


def test_default_is_the_module_of_a_text_only_model(tmp_path, mount, arch_model):
    a, b = arch_model("llama3", 1), arch_model("llama3", 2)
    slices = [{"sources": [{"model": a, "layer_range": [0, 20]}]}, {"sources": [{"model": b, "layer_range": [16, 32]}]}]
    modular = {"merge_method": "passthrough", "modules": {"default": {"slices": slices}}}
    _, got, out_cfg = check(tmp_path, mount, modular, "llama3", False)
    top, top_cfg = merge(tmp_path, mount, {"merge_method": "passthrough", "slices": slices}, False, name="top")
    assert out_cfg == top_cfg and out_cfg["num_hidden_layers"] == 36
    assert set(got) == set(top) and all(got[n].raw == top[n].raw for n in got)


def test_qwen2_vl_layer_range_past_text_decoder(tmp_path, arch_model):
    a, b = arch_model("qwen2-vl", 1), arch_model("qwen2-vl", 2)
    assert counts(a, "qwen2-vl")["text_decoder"] == 28   # and 32 vision blocks: [20, 30] fits those only
    cfg = {"merge_method": "passthrough",
           "slices": [{"sources": [{"model": a, "layer_range": [0, 20]}]},
                      {"sources": [{"model": b, "layer_range": [20, 30]}]}]}
    err = plan_error(tmp_path, cfg, "qwen2-vl")
    assert "layer_range" in err and "28" in err, err


def module_error_cases(a, n):
    """{case: (a `modules:` config, words its error must contain)} for model a, whose text decoder has
    n layers."""
    both = {"models": [{"model": a}], "slices": [{"sources": [{"model": a, "layer_range": [0, 2]}]}]}
    modular = modules_config(a, a, n)
    return {
        "unknown-module": (modules_config(a, a, n, {"audio_tower": {"models": [{"model": a}]}}),
                           ["audio_tower", "text_decoder", "vision_tower", "multi_modal_projector"]),
        # `default` names the module of a single-module model only
        "default-on-multimodal": (modules_config(a, a, n, {"default": {"models": [{"model": a}]}}), ["default"]),
        "layer-range-outside-module": ({**modular, "modules": {"text_decoder": {"slices": [
            {"sources": [{"model": a, "layer_range": [n // 2, n + 2]}]}]}}}, ["layer_range", str(n)]),
        "slices-and-models": (modules_config(a, a, n, {"vision_tower": both}), ["vision_tower"]),
        "neither-slices-nor-models": (modules_config(a, a, n, {"vision_tower": {"parameters": {"weight": 1}}}),
                                      ["vision_tower"]),
        "modules-and-top-level-models": ({**modular, "models": [{"model": a}]}, ["modules"]),
    }


MODULE_ERRORS = list(module_error_cases("a", 30))


@pytest.mark.parametrize("case", MODULE_ERRORS)
@pytest.mark.parametrize("family", MULTIMODAL)
def test_modules_errors(tmp_path, arch_model, family, case):
    a = arch_model(family, 1)
    cfg, words = module_error_cases(a, counts(a, family)["text_decoder"])[case]
    err = plan_error(tmp_path, cfg, family)
    missing = [w for w in words if w not in err]
    assert not missing, f"{case}: the error does not mention {missing}:\n{err}"
