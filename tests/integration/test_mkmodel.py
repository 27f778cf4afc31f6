"""mm-mkmodel, the generator of every test model: deterministic, Llama-shaped, valid safetensors
(headers equal to the independent writer's), balanced shards, tokenizer files, clear usage errors."""

import json
import os

import numpy as np
import pytest

import mmtest
import safetensors_io as st


def mk(tmp_path, name, *args):
    out = str(tmp_path / name)
    mmtest.run([mmtest.MKMODEL, out, *map(str, args)], check=True)
    return out


def test_llama_shapes_and_config(binaries, tmp_path):
    out = mk(tmp_path, "m", "--seed", 5, "--layers", 3, "--hidden", 64, "--intermediate", 80, "--vocab", 100,
             "--heads", 8, "--kv-heads", 2, "--dtype", "f16")
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"],
            cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (64, 80, 3, 100, 8, 2)
    assert cfg["torch_dtype"] == "float16" and cfg["tie_word_embeddings"] is False
    assert cfg["rms_norm_eps"] == 1e-05 and cfg["rope_theta"] == 10000.0
    t = st.read_folder(out)
    kv = 2 * (64 // 8)
    want = {"model.embed_tokens.weight": (100, 64), "model.norm.weight": (64,), "lm_head.weight": (100, 64)}
    for i in range(3):
        p = f"model.layers.{i}."
        want.update({p + "input_layernorm.weight": (64,), p + "post_attention_layernorm.weight": (64,),
                     p + "self_attn.q_proj.weight": (64, 64), p + "self_attn.k_proj.weight": (kv, 64),
                     p + "self_attn.v_proj.weight": (kv, 64), p + "self_attn.o_proj.weight": (64, 64),
                     p + "mlp.gate_proj.weight": (80, 64), p + "mlp.up_proj.weight": (80, 64),
                     p + "mlp.down_proj.weight": (64, 80)})
    assert {n: x.shape for n, x in t.items()} == want
    assert all(x.dtype == "F16" for x in t.values())
    norm = t["model.norm.weight"].f32()
    assert abs(norm.mean() - 1) < 0.05 and norm.std() > 0
    w = t["model.layers.1.mlp.up_proj.weight"].f32()
    assert abs(w.mean()) < 0.005 and 0.015 < w.std() < 0.025  # normal(0, 0.02)


def test_deterministic_and_dtype_independent(binaries, tmp_path):
    a = mk(tmp_path, "a", "--seed", 9, "--dtype", "f32")
    b = mk(tmp_path, "b", "--seed", 9, "--dtype", "f32")
    c = mk(tmp_path, "c", "--seed", 9, "--dtype", "bf16", "--shards", 3)
    d = mk(tmp_path, "d", "--seed", 10, "--dtype", "f32")
    for f in os.listdir(a):
        assert mmtest.read_file(os.path.join(a, f)) == mmtest.read_file(os.path.join(b, f)), f
    ta, tc, td = st.read_folder(a), st.read_folder(c), st.read_folder(d)
    for n in ta:
        assert np.array_equal(st.round_to("BF16", ta[n].f32()), tc[n].f32()), n  # same values, rounded RNE
        assert not np.array_equal(ta[n].f32(), td[n].f32()), n


def test_tied_and_no_tokenizer(binaries, tmp_path):
    out = mk(tmp_path, "t", "--tie-embeddings", "--no-tokenizer")
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["tie_word_embeddings"] is True
    assert "lm_head.weight" not in st.read_folder(out)


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_shards_headers_and_index(binaries, tmp_path, shards):
    out = mk(tmp_path, "s", "--shards", shards, "--seed", 2)
    files = st.weight_files(out)
    if shards == 1:
        assert files == ["model.safetensors"]
        assert not os.path.exists(os.path.join(out, "model.safetensors.index.json"))
    else:
        assert files == [f"model-{k:05d}-of-{shards:05d}.safetensors" for k in range(1, shards + 1)]
        text = mmtest.read_file(os.path.join(out, "model.safetensors.index.json")).decode()
        index = json.loads(text)
        total = sum(mmtest.tensor_bytes(t) for t in st.read_folder(out).values())
        assert text == st.index_json_text(index["weight_map"], total)
    sizes = []
    for f in files:
        data = mmtest.read_file(os.path.join(out, f))
        header, start = st.read_header(data)
        assert header.pop("__metadata__") == {"format": "pt"}
        head, placed = st.header_bytes([(n, i["dtype"], i["shape"]) for n, i in header.items()])
        assert data[:start] == head, f
        assert len(data) == start + placed[-1][4]
        sizes.append(len(data) - start)
    assert min(sizes) > 0
    if shards > 1:
        assert max(sizes) < 2.5 * sum(sizes) / shards  # split roughly evenly by bytes
    # re-running into the same folder with another shard count leaves no stale weight files
    mmtest.run([mmtest.MKMODEL, out, "--shards", "1" if shards > 1 else "2", "--seed", "2"], check=True)
    assert sorted(f for f in os.listdir(out) if "safetensors" in f) == (
        ["model.safetensors"] if shards > 1 else
        ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"])
    assert not [f for f in os.listdir(out) if f.startswith(".")]


def test_tokenizer_files(binaries, tmp_path):
    out = mk(tmp_path, "tok", "--vocab", 100)
    with open(os.path.join(out, "tokenizer.json")) as f:
        tok = json.load(f)
    model = tok["model"]
    assert model["type"] == "BPE" and len(model["vocab"]) == 100
    assert sorted(model["vocab"].values()) == list(range(100))
    for merge in model["merges"]:
        left, right = merge.split(" ")
        assert left in model["vocab"] and right in model["vocab"] and left + right in model["vocab"]
    assert [t["content"] for t in tok["added_tokens"]] == ["<unk>", "<s>", "</s>"]
    for f in ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        with open(os.path.join(out, f)) as fh:
            json.load(fh)


@pytest.mark.parametrize("args", [[], ["--dtype", "f64"], ["--hidden", "30"], ["--heads", "4", "--kv-heads", "3"],
                                  ["--layers", "0"], ["--bogus"], ["--seed"], ["--shards", "500"],
                                  ["--scale", "-1"]])
def test_usage_errors(binaries, tmp_path, args):
    out = str(tmp_path / "x")
    argv = [mmtest.MKMODEL, *([out] if args != [] else []), *args]
    r = mmtest.run(argv)
    assert r.returncode != 0 and "mm-mkmodel" in r.stderr, r.stderr
    assert not os.path.exists(out)


def test_help(binaries):
    r = mmtest.run([mmtest.MKMODEL, "--help"], check=True)
    assert "Usage" in r.stdout and "--seed" in r.stdout
