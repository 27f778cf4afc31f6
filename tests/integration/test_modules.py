"""Module rules (docs/merge-contract.md D18) at their corners, with small models made here: a model whose
text decoder cannot be told (two text-like stacks, no layer count in config.json), modules named by
their prefix, a module whose count would change without a config key, and what `plan` says about
modules. The published families are in test_archs.py."""

import json
import os

import numpy as np
import pytest

import arch_fixture
import mmtest
import safetensors_io as st

ARCHS = os.path.join(mmtest.REPO, "tests", "fixtures", "archs")


def two_stack_model(folder, seed, config=None):
    """An encoder-decoder-like model: encoder.block.0-2, decoder.block.0-1 and a shared embedding, F32,
    every tensor of its own random values."""
    rng = np.random.default_rng(seed)
    names = [f"encoder.block.{i}.w" for i in range(3)] + [f"decoder.block.{i}.w" for i in range(2)]
    names += ["shared.weight", "decoder.final_norm.weight"]
    tensors = {n: ("F32", (4, 4), rng.standard_normal((4, 4)).astype("<f4").tobytes()) for n in names}
    os.makedirs(folder, exist_ok=True)
    st.write_safetensors(os.path.join(folder, "model.safetensors"), tensors)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config if config is not None else {"model_type": "made-up"}, f)
    return str(folder)


def test_slices_on_a_model_without_a_telling_text_decoder_ask_for_modules(tmp_path):
    a = two_stack_model(tmp_path / "a", 1)
    cfg = {"merge_method": "passthrough", "slices": [{"sources": [{"model": a, "layer_range": [0, 2]}]}]}
    path = mmtest.write_config(tmp_path, cfg)
    r = mmtest.mergemount("plan", path)
    assert r.returncode != 0
    assert "modules:" in r.stderr and "encoder.block" in r.stderr and "decoder.block" in r.stderr, r.stderr
    # the same error from mount, before anything is mounted
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = mmtest.mergemount("mount", path, str(mnt))
    assert r.returncode != 0 and "modules:" in r.stderr, r.stderr
    assert not os.path.ismount(str(mnt)) and os.listdir(str(mnt)) == []


def test_modules_named_by_prefix(tmp_path):
    """Without a text decoder the stacks are modules named by their prefixes (as mergekit names the
    modules it infers); a `modules:` recipe can name them, and what it leaves out (the encoder, the
    other tensors, here in the module `default`) comes from the donor."""
    a, b = two_stack_model(tmp_path / "a", 1), two_stack_model(tmp_path / "b", 2)
    cfg = {"merge_method": "passthrough", "base_model": a,
           "modules": {"decoder.block": {"slices": [{"sources": [{"model": a, "layer_range": [1, 2]}]},
                                                    {"sources": [{"model": b, "layer_range": [0, 1]}]}]}}}
    path = mmtest.write_config(tmp_path, cfg)
    plan = json.loads(mmtest.mergemount("plan", path, "--json", check=True).stdout)
    mods = {m["name"]: m for m in plan["modules"]}
    assert set(mods) == {"encoder.block", "decoder.block", "default"}
    # the count stays 2: config.json records none for this stack, so a new count would be an error
    assert (mods["decoder.block"]["layers_in"], mods["decoder.block"]["layers_out"]) == (2, 2)
    assert mods["decoder.block"]["copied_from"] is None and mods["encoder.block"]["copied_from"] == a
    out = mmtest.build(path, tmp_path / "out")
    got, ta, tb = st.read_folder(out), st.read_folder(a), st.read_folder(b)
    want = {"decoder.block.0.w": ta["decoder.block.1.w"], "decoder.block.1.w": tb["decoder.block.0.w"]}
    want.update({n: ta[n] for n in ta if not n.startswith("decoder.")})
    # decoder.final_norm is outside the stack but under its distinguishing prefix `decoder.`: the
    # decoder's, a weight after the layers, so from the last slice (b); shared.weight is under no
    # stack's prefix: `default`'s, copied from the donor (a)
    want["decoder.final_norm.weight"] = tb["decoder.final_norm.weight"]
    assert set(got) == set(want)
    assert all(got[n].raw == want[n].raw for n in want), [n for n in want if got[n].raw != want[n].raw]
    # config.json has no count for either stack: it stays the donor's, apart from the dtype
    with open(os.path.join(out, "config.json")) as f:
        assert {k: v for k, v in json.load(f).items() if k not in ("dtype", "torch_dtype")} == {"model_type": "made-up"}


def test_layer_count_change_without_a_config_key_is_an_error(tmp_path):
    """Qwen2-VL's config.json (this checkpoint's) records no vision depth: a recipe that changes the
    vision tower's layer count cannot be described to transformers."""
    a = arch_fixture.make(os.path.join(ARCHS, "qwen2-vl"), str(tmp_path / "a"), seed=1)
    cfg = {"merge_method": "passthrough",
           "modules": {"vision_tower": {"slices": [{"sources": [{"model": a, "layer_range": [0, 20]}]},
                                                   {"sources": [{"model": a, "layer_range": [10, 32]}]}]}}}
    r = mmtest.mergemount("plan", mmtest.write_config(tmp_path, cfg))
    assert r.returncode != 0
    assert "vision_tower" in r.stderr and "42" in r.stderr and "32" in r.stderr, r.stderr
    # the same recipe keeping the count is fine
    cfg["modules"]["vision_tower"]["slices"][1]["sources"][0]["layer_range"] = [20, 32]
    assert mmtest.mergemount("plan", mmtest.write_config(tmp_path, cfg, name="ok.yml")).returncode == 0


def test_plan_lists_modules(tmp_path):
    a = arch_fixture.make(os.path.join(ARCHS, "gemma3-vl"), str(tmp_path / "a"), seed=1, max_layers=4)
    cfg = {"merge_method": "passthrough", "base_model": a,
           "slices": [{"sources": [{"model": a, "layer_range": [0, 3]}]},
                      {"sources": [{"model": a, "layer_range": [1, 4]}]}]}
    path = mmtest.write_config(tmp_path, cfg)
    plan = json.loads(mmtest.mergemount("plan", path, "--json", check=True).stdout)
    assert plan["modules"] == [
        {"name": "text_decoder", "layers_in": 4, "layers_out": 6, "copied_from": None,
         "config_key": "text_config.num_hidden_layers"},
        {"name": "vision_tower", "layers_in": 4, "layers_out": 4, "copied_from": a,
         "config_key": "vision_config.num_hidden_layers"},
        {"name": "multi_modal_projector", "layers_in": 0, "layers_out": 0, "copied_from": a, "config_key": None},
    ]
    text = mmtest.mergemount("plan", path, check=True).stdout
    head = text.split("\n\n")[0].splitlines()
    assert head[0] == "modules:"
    assert head[1].split()[:5] == ["text_decoder", "4", "->", "6", "layers"], head
    assert "copied from" in head[2] and "vision_config.num_hidden_layers" in head[2], head
