"""The forward pass of mergekit-moe's hidden-state gates (merge/moe/forward.h) against the numpy reference
tests/reference/forward_eval.py: hidden_states[:-1] of tiny checkpoints with the real tensor names and
configs of each family (tests/fixtures/archs via arch_fixture) and of mm-mkmodel Llamas, for a full batch,
a right-padded and a left-padded one, and one longer sequence.

The C side computes in float32, the reference in float64 from the same stored weights: per hidden state,
max |C - ref| must stay under 1e-4 of max |ref|. The fixtures' weights are small (std 0.05), which makes
attention almost uniform; q and k projections are scaled up here so that attention logits are O(1) and
RoPE, the masks and the softmax really shape the result.
"""

import json
import os
import subprocess

import numpy as np
import pytest

import arch_fixture
import forward_eval
import lora_eval
import lora_fixture
import mmtest
import safetensors_io as st

ARCHS = os.path.join(mmtest.REPO, "tests", "fixtures", "archs")
FWD_DUMP = os.path.join(os.environ.get("MM_BUILD_DIR", os.path.join(mmtest.REPO, "build")), "tests", "fwd_dump")
TOL = 1e-4
SHARPEN = 6.0   # q/k weights times this: attention logits of order 1

# (ids, mask) batches: every row one length, padding id 0
FULL = ([[5, 17, 3, 90, 44, 2, 61, 8]], None)
PADDED_RIGHT = ([[5, 17, 3, 90, 44, 2, 61, 8], [7, 8, 9, 0, 0, 0, 0, 0]],
                [[1] * 8, [1, 1, 1, 0, 0, 0, 0, 0]])
PADDED_LEFT = ([[5, 17, 3, 90, 44, 2, 61, 8], [0, 0, 0, 0, 11, 12, 13, 14]],
               [[1] * 8, [0, 0, 0, 0, 1, 1, 1, 1]])
LONG = ([[(i * 37 + 11) % 90 for i in range(48)]], None)
BATCHES = {"full": FULL, "right": PADDED_RIGHT, "left": PADDED_LEFT, "long": LONG}


def sharpen(folder, factor=SHARPEN):
    """Scales every attention q/k projection (Phi-3's fused qkv too) of a checkpoint folder in place."""
    for fname in st.weight_files(folder):
        path = os.path.join(folder, fname)
        tensors, _ = st.read_safetensors(path)
        out = {}
        for name, t in tensors.items():
            raw = t.raw
            if any(name.endswith(s) for s in ("q_proj.weight", "k_proj.weight", "qkv_proj.weight")):
                raw = st.encode(t.dtype, t.f32() * np.float32(factor))
            out[name] = (t.dtype, t.shape, raw)
        st.write_safetensors(path, out)
    return folder


def fwd_dump(folder, ids, mask, tmp_path, env=None, lora=None):
    spec = tmp_path / "ids.json"
    spec.write_text(json.dumps({"ids": ids, **({"mask": mask} if mask is not None else {})}))
    out = tmp_path / "out.f32"
    r = subprocess.run([FWD_DUMP, *(["--lora", lora] if lora else []), folder, str(spec), str(out)],
                       capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=120)
    assert r.returncode == 0, r.stderr
    dims = json.loads(r.stdout)
    return np.fromfile(out, dtype="<f4").reshape(dims["layers"], dims["batch"], dims["seq"], dims["hidden_size"])


def assert_close(folder, ids, mask, tmp_path):
    got = fwd_dump(folder, ids, mask, tmp_path)
    ref = forward_eval.hidden_states(folder, ids, mask)
    assert got.shape == ref.shape
    for layer in range(ref.shape[0]):
        scale = np.abs(ref[layer]).max()
        err = np.abs(got[layer] - ref[layer]).max() / scale
        assert err < TOL, f"hidden_states[{layer}]: max relative error {err:.3g}"
    return got, ref


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """family(name, dtype="bf16") -> a 3-layer sharpened checkpoint of tests/fixtures/archs/<name>."""
    made = {}

    def make(name, dtype="bf16"):
        if (name, dtype) not in made:
            out = str(tmp_path_factory.mktemp("fwd") / f"{name}-{dtype}")
            arch_fixture.make(os.path.join(ARCHS, name), out, seed=1, dtype=dtype, max_layers=3)
            made[(name, dtype)] = sharpen(out)
        return made[(name, dtype)]
    return make


@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("name", ["llama3", "mistral", "qwen2.5", "qwen3", "gemma", "gemma2", "phi3"])
def test_family_matches_reference(tmp_path, family, name, batch):
    ids, mask = BATCHES[batch]
    assert_close(family(name), ids, mask, tmp_path)


def edited(tmp_path, name, edit, max_layers=3):
    """A sharpened checkpoint of family `name` whose (text) config is changed by edit(dict)."""
    out = str(tmp_path / f"{name}-edited")
    arch_fixture.make(os.path.join(ARCHS, name), out, seed=1, max_layers=max_layers)
    path = os.path.join(out, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    edit(cfg.get("text_config") or cfg)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return sharpen(out)


# Settings the fixtures' real configs leave idle at these lengths: sliding windows shorter than the
# sequences, RoPE scalings whose every branch is taken, a partial rotary dimension.
VARIANTS = {
    "mistral-window": ("mistral", lambda c: c.update(sliding_window=3)),
    "qwen2-window-from-layer-1": ("qwen2.5", lambda c: c.update(use_sliding_window=True, sliding_window=3,
                                                                max_window_layers=1)),
    "gemma2-window-even-layers": ("gemma2", lambda c: c.update(sliding_window=3)),
    "gemma3-text-7-layers": ("gemma3-vl", lambda c: c.update(sliding_window=3)),
    "llama3-short-original": ("llama3", lambda c: c["rope_scaling"].update(original_max_position_embeddings=64)),
    "llama-linear": ("llama3", lambda c: c.update(rope_scaling={"type": "linear", "factor": 4.0})),
    "llama-dynamic-active": ("llama3", lambda c: c.update(rope_scaling={"rope_type": "dynamic", "factor": 4.0},
                                                          max_position_embeddings=16)),
    "llama-rope-parameters": ("llama3", lambda c: c.update(rope_scaling=None, rope_parameters={
        "rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0})),
    "qwen3-theta-100": ("qwen3", lambda c: c.update(rope_theta=100.0)),
    "gemma3-rope-parameters-by-layer-type": ("gemma3-vl", lambda c: c.update(
        sliding_window=3, rope_scaling=None, rope_local_base_freq=None, rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}})),
    # a window key the family's attention has no use for (Llama), or that Qwen's config drops
    "llama-ignores-window": ("llama3", lambda c: c.update(sliding_window=3)),
    "qwen3-window-without-use": ("qwen3", lambda c: c.update(sliding_window=3, max_window_layers=0,
                                                             layer_types=["sliding_attention"] * 3)),
    "qwen3-window-by-layer-types": ("qwen3", lambda c: c.update(sliding_window=3, use_sliding_window=True,
                                                                layer_types=["full_attention", "sliding_attention",
                                                                             "full_attention"])),
    "phi3-partial-rotary": ("phi3", lambda c: c.update(partial_rotary_factor=0.5)),
    # longrope (Phi-3 128k, Phi-3.5): short factors up to original_max_position_embeddings, long beyond
    "phi3-longrope": ("phi3", lambda c: c.update(original_max_position_embeddings=16, max_position_embeddings=64,
                                                 rope_scaling={"type": "longrope", "short_factor": [1.0, 1.5, 2.0, 3.0],
                                                               "long_factor": [1.0, 2.0, 6.0, 20.0]})),
    "qwen2-yarn": ("qwen2.5", lambda c: c.update(rope_scaling={"type": "yarn", "factor": 4.0,
                                                               "original_max_position_embeddings": 32})),
    "qwen3-yarn-mscale": ("qwen3", lambda c: c.update(rope_theta=500.0, rope_scaling={
        "rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64, "mscale": 1.0,
        "mscale_all_dim": 0.5, "beta_fast": 16, "truncate": False})),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_config_variants(tmp_path, variant):
    name, edit = VARIANTS[variant]
    folder = edited(tmp_path, name, edit, max_layers=7 if name.startswith("gemma3") else 3)
    for batch in ("left", "long"):
        assert_close(folder, *BATCHES[batch], tmp_path)


def add_tensors(folder, new):
    """Adds {name: float32 array} to a checkpoint folder: into the shard holding the same layer's
    q_proj (or the first shard), with the index updated."""
    index_path = os.path.join(folder, "model.safetensors.index.json")
    with open(index_path) as f:
        index = json.load(f)
    wm = index["weight_map"]
    by_shard = {}
    for name, v in new.items():
        layer = name.split(".mlp.")[0].split(".self_attn.")[0]
        shard = wm.get(layer + ".self_attn.q_proj.weight") or sorted(set(wm.values()))[0]
        by_shard.setdefault(shard, {})[name] = v
        wm[name] = shard
    for shard, tensors in by_shard.items():
        path = os.path.join(folder, shard)
        old, _ = st.read_safetensors(path)
        out = {n: (t.dtype, t.shape, t.raw) for n, t in old.items()}
        for n, v in tensors.items():
            out[n] = ("BF16", v.shape, st.encode("BF16", v))
        st.write_safetensors(path, out)
    with open(index_path, "w") as f:
        json.dump(index, f)


def test_llama_biases(tmp_path):
    """attention_bias (q/k/v/o) and mlp_bias (gate/up/down) of a Llama config."""
    folder = edited(tmp_path, "llama3", lambda c: c.update(attention_bias=True, mlp_bias=True))
    rng = np.random.default_rng(7)
    sizes = {"self_attn.q_proj": 32, "self_attn.k_proj": 16, "self_attn.v_proj": 16, "self_attn.o_proj": 32,
             "mlp.gate_proj": 48, "mlp.up_proj": 48, "mlp.down_proj": 32}
    add_tensors(folder, {f"model.layers.{i}.{m}.bias": rng.standard_normal(n).astype(np.float32) * np.float32(0.3)
                         for i in range(3) for m, n in sizes.items()})
    for batch in ("right", "left"):
        assert_close(folder, *BATCHES[batch], tmp_path)


def test_bias_keys_of_families_without_biases_are_ignored(tmp_path):
    """Mistral's and Phi-3's projections have no bias whatever attention_bias and mlp_bias say."""
    for name in ("mistral", "phi3"):
        folder = edited(tmp_path, name, lambda c: c.update(attention_bias=True, mlp_bias=True))
        assert_close(folder, *PADDED_LEFT, tmp_path)


def test_missing_layer_is_named(tmp_path):
    """The last layer's output is no hidden state asked for, so its weights are never read; a missing
    earlier layer fails, read ahead while the one before it runs."""
    spec = tmp_path / "ids.json"
    spec.write_text(json.dumps({"ids": [[1, 2]]}))
    folder = edited(tmp_path, "llama3", lambda c: c.update(num_hidden_layers=4))   # files: layers 0..2
    r = subprocess.run([FWD_DUMP, folder, str(spec)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["layers"] == 4, r.stderr
    (tmp_path / "b").mkdir()
    folder = edited(tmp_path / "b", "llama3", lambda c: c.update(num_hidden_layers=5))
    r = subprocess.run([FWD_DUMP, folder, str(spec)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no tensor model.layers.3.input_layernorm.weight" in r.stderr, r.stderr


def test_missing_bias_is_named(tmp_path):
    folder = edited(tmp_path, "llama3", lambda c: c.update(mlp_bias=True))
    spec = tmp_path / "ids.json"
    spec.write_text(json.dumps({"ids": [[1, 2]]}))
    r = subprocess.run([FWD_DUMP, folder, str(spec)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no tensor model.layers.0.mlp.gate_proj.bias" in r.stderr, r.stderr


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_other_dtypes(tmp_path, family, dtype):
    assert_close(family("llama3", dtype), *PADDED_LEFT, tmp_path)


@pytest.mark.parametrize("args", [["--kv-heads", "2"], ["--kv-heads", "4", "--layers", "4", "--hidden", "64"],
                                  ["--kv-heads", "1", "--dtype", "f32"]])
def test_mkmodel_llama(tmp_path, args):
    out = str(tmp_path / "model")
    mmtest.run([mmtest.MKMODEL, out, "--layers", "3", "--hidden", "32", "--scale", "0.3", *args], check=True)
    for batch in BATCHES.values():
        ids = [[t % 64 for t in row] for row in batch[0]]
        assert_close(out, ids, batch[1], tmp_path)


def test_lora_adapter_applied_on_read(tmp_path, family):
    """A model opened with a LoRA adapter runs on its effective weights (lora_eval's W'), embedding
    rows included."""
    base = family("llama3")
    ad = lora_fixture.write_adapter(base, str(tmp_path / "adapter"),
                                    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "embed_tokens"],
                                    r=4, alpha=8, exact=False)
    merged = tmp_path / "merged"
    merged.mkdir()
    eff = lora_eval.load(base, ad)
    st.write_safetensors(str(merged / "model.safetensors"), {n: (t.dtype, t.shape, t.raw) for n, t in eff.items()})
    with open(os.path.join(base, "config.json")) as f:
        (merged / "config.json").write_text(f.read())
    got = fwd_dump(base, *PADDED_LEFT, tmp_path, lora=ad)
    ref = forward_eval.hidden_states(str(merged), *PADDED_LEFT)
    plain = forward_eval.hidden_states(base, *PADDED_LEFT)
    for layer in range(ref.shape[0]):
        err = np.abs(got[layer] - ref[layer]).max() / np.abs(ref[layer]).max()
        assert err < TOL, f"hidden_states[{layer}]: max relative error {err:.3g}"
        assert np.abs(plain[layer] - ref[layer]).max() > 100 * TOL * np.abs(ref[layer]).max()


def test_right_padding_leaves_real_tokens_alone(tmp_path, family):
    """Right padding changes nothing at the real positions: they are the unpadded sequence's states."""
    folder = family("llama3")
    padded = fwd_dump(folder, *PADDED_RIGHT, tmp_path)
    alone = fwd_dump(folder, [[7, 8, 9]], None, tmp_path)
    np.testing.assert_allclose(padded[:, 1, :3], alone[:, 0], rtol=0, atol=1e-6)


def test_thread_count_does_not_change_bits(tmp_path, family):
    folder = family("qwen3")
    one = fwd_dump(folder, *PADDED_LEFT, tmp_path, env={"MM_FWD_THREADS": "1"})
    three = fwd_dump(folder, *PADDED_LEFT, tmp_path, env={"MM_FWD_THREADS": "3"})
    assert one.tobytes() == three.tobytes()


def test_unknown_family_is_named(tmp_path):
    out = str(tmp_path / "neox")
    arch_fixture.make(os.path.join(ARCHS, "gpt-neox"), out, max_layers=2)
    spec = tmp_path / "ids.json"
    spec.write_text(json.dumps({"ids": [[1, 2]]}))
    r = subprocess.run([FWD_DUMP, out, str(spec)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "model_type gpt_neox_reward_model is not supported" in r.stderr and "llama" in r.stderr and "phi3" in r.stderr, r.stderr


def test_id_out_of_range(tmp_path, family):
    spec = tmp_path / "ids.json"
    spec.write_text(json.dumps({"ids": [[1, 5000]]}))
    r = subprocess.run([FWD_DUMP, family("llama3"), str(spec)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "token id 5000 is outside the vocabulary" in r.stderr, r.stderr
