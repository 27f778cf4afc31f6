"""Self-tests of arch_fixture.py, the generator of tiny checkpoints with real models' tensor names
(tests/fixtures/archs): the names and shards are the index's, the shapes follow the scaled config,
layer counts are kept, values are deterministic, and a name without a shape rule is an error.
Run: /usr/bin/python3 -m pytest tests/reference
"""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arch_fixture as af  # noqa: E402
import safetensors_io as st  # noqa: E402

ARCHS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "archs")
FAMILIES = sorted(d for d in os.listdir(ARCHS) if os.path.isdir(os.path.join(ARCHS, d)))


def load(folder, name):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def counts(cfg):
    return [tuple(h.get(k) for k in af.LAYER_COUNT_KEYS)
            for h in (cfg, cfg.get("text_config") or {}, cfg.get("vision_config") or {})]


def test_ten_or_more_families_with_sources():
    assert len(FAMILIES) >= 10
    with open(os.path.join(ARCHS, "SOURCES.md")) as f:
        sources = f.read()
    for fam in FAMILIES:
        assert f"`{fam}`" in sources, f"{fam} is not in SOURCES.md"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("af")
    return {fam: af.make(os.path.join(ARCHS, fam), str(root / fam), seed=1) for fam in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_names_shards_and_layer_counts_are_the_real_ones(made, family):
    real_map = load(os.path.join(ARCHS, family), "model.safetensors.index.json")["weight_map"]
    index = load(made[family], "model.safetensors.index.json")
    assert index["weight_map"] == real_map
    tensors = st.read_folder(made[family])
    assert set(tensors) == set(real_map)
    assert index["metadata"]["total_size"] == sum(len(t.raw) for t in tensors.values())
    assert sorted(f for f in os.listdir(made[family]) if f.endswith(".safetensors")) == sorted(set(real_map.values()))
    assert counts(load(made[family], "config.json")) == counts(load(os.path.join(ARCHS, family), "config.json"))
    assert {t.dtype for t in tensors.values()} == {"BF16"}
    assert sum(len(t.raw) for t in tensors.values()) < 8 << 20


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_follow_the_scaled_config(made, family):
    cfg = load(made[family], "config.json")
    text = cfg.get("text_config") or cfg
    h, vocab = text["hidden_size"], text.get("vocab_size", cfg.get("vocab_size"))
    assert h == af.HIDDEN and vocab == af.VOCAB
    for name, t in st.read_folder(made[family]).items():
        last = name.rsplit(".", 2)[-2]
        if last in ("embed_tokens", "lm_head", "embed_in", "embed_out"):
            assert t.shape == ((vocab, h) if name.endswith("weight") else (vocab,)), name   # PhiMoE: lm_head.bias
        heads = text["num_attention_heads"]
        head_dim = text.get("head_dim") or h // heads
        if last == "q_proj" and name.endswith("weight") and "vision" not in name:
            assert t.shape == (heads * head_dim, h), name
        if last in ("k_proj", "v_proj") and name.endswith("weight") and "vision" not in name:
            kv = text.get("num_key_value_heads") or heads
            assert t.shape == (kv * head_dim, h), name
        if last in ("down_proj",) and "visual" not in name:
            assert t.shape == (h, text["intermediate_size"]), name
        if name.endswith(("router.layer.weight", "block_sparse_moe.gate.weight", "input_linear.weight",
                          "output_linear.weight")):
            assert t.shape[0] == text["num_local_experts"], name     # routers and packed experts


def test_mixtral_keeps_its_eight_named_experts(made):
    cfg = load(made["mixtral"], "config.json")
    assert cfg["num_local_experts"] == 8 and cfg["num_hidden_layers"] == 56
    gate = st.read_folder(made["mixtral"])["model.layers.55.block_sparse_moe.gate.weight"]
    assert gate.shape == (8, af.HIDDEN)


def test_values_are_deterministic_fine_tunes_of_one_base(tmp_path):
    fam = os.path.join(ARCHS, "llama3")
    a = st.read_folder(af.make(fam, str(tmp_path / "a"), seed=1, max_layers=2))
    b = st.read_folder(af.make(fam, str(tmp_path / "b"), seed=1, max_layers=2))
    base = st.read_folder(af.make(fam, str(tmp_path / "base"), seed=0, max_layers=2))
    other = st.read_folder(af.make(fam, str(tmp_path / "c"), seed=2, max_layers=2))
    assert {n: t.raw for n, t in a.items()} == {n: t.raw for n, t in b.items()}
    name = "model.layers.1.self_attn.q_proj.weight"
    assert a[name].raw != other[name].raw
    delta = np.abs(a[name].f32() - base[name].f32()).mean()
    assert 0 < delta < 0.2 * np.abs(base[name].f32()).mean()    # a fine-tune: a small task vector
    assert np.allclose(base["model.norm.weight"].f32(), 1.0, atol=0.3)
    assert max(int(n.split(".")[2]) for n in a if n.startswith("model.layers.")) == 1
    assert load(str(tmp_path / "a"), "config.json")["num_hidden_layers"] == 2


def test_a_name_without_a_rule_is_an_error_naming_it(tmp_path):
    fam = tmp_path / "fam"
    fam.mkdir()
    (fam / "config.json").write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 1}))
    (fam / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"model.layers.0.mystery.weight": "model.safetensors"}}))
    with pytest.raises(af.FixtureError, match=r"model\.layers\.0\.mystery\.weight"):
        af.make(str(fam), str(tmp_path / "out"))
    assert af.main([str(fam), str(tmp_path / "out2")]) == 1
