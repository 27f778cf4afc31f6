"""config.json written true (docs/merge-contract.md D16, D18): the donor's numbers keep their kind (a
float written `10000.0` or `1e-06` stays a float), `dtype` and `torch_dtype` both name the stored dtype,
and per-layer lists follow the layers of a frankenmerge.

The donor configs are real published ones, in data/configs/, each written exactly as
json.dumps(indent=2, sort_keys=True) gives it, as save_pretrained does:

- qwen3-0.6b.json: Qwen/Qwen3-0.6B's config.json (huggingface.co/Qwen/Qwen3-0.6B, transformers 4.51.0;
  `torch_dtype` only, no `layer_types`).
- qwen3-0.6b.transformers5.json: the same config as transformers 5.7.0 saves it (`dtype` instead of
  `torch_dtype`, `layer_types`, `rope_parameters`), quoted with the original in a public model report
  (found with the code search of this project's reference corpus).
- embeddinggemma-300m.json: google/embeddinggemma-300m's Gemma3TextConfig as transformers 4.56.0
  writes it (`dtype`, `layer_types` with a full-attention layer every sixth, float rope frequencies),
  quoted in a source comment of smtmRadu/DeepUnity (its Gemma 3 port).

The tensors come from mm-mkmodel (Llama names); only the layer count has to agree with the config, and
the models are made with the config's own count (28 and 24 layers), so no config is cut."""

import json
import os
import shutil

import mmtest

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "configs")
TINY = dict(hidden=16, intermediate=16, vocab=32, heads=2, kv_heads=1)


def real_config(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def with_config(make_model, tmp_path, seed, config_text, name, layers, edit=None):
    """A copy of an mm-mkmodel model of `layers` layers whose config.json is config_text (edited by
    edit(dict) when given)."""
    dest = tmp_path / name
    shutil.copytree(make_model(seed, layers=layers, **TINY), dest)
    if edit:
        obj = json.loads(config_text)
        edit(obj)
        config_text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    with open(dest / "config.json", "w") as f:
        f.write(config_text)
    return str(dest)


def build_config_json(tmp_path, cfg):
    out = mmtest.build(mmtest.write_config(tmp_path, cfg), tmp_path / "out")
    with open(os.path.join(out, "config.json")) as f:
        return f.read()


def python_text(obj):
    """What transformers' save_pretrained writes for obj."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def test_floats_stay_floats(tmp_path, make_model):
    text = real_config("qwen3-0.6b.json")
    a = with_config(make_model, tmp_path, 1, text, "a", 28)
    b = with_config(make_model, tmp_path, 2, text, "b", 28)
    got = build_config_json(tmp_path, {"merge_method": "linear", "base_model": a,
                                       "models": [{"model": a, "parameters": {"weight": 0.5}},
                                                  {"model": b, "parameters": {"weight": 0.5}}]})
    out = json.loads(got)
    for key in ("attention_dropout", "initializer_range", "rms_norm_eps"):
        assert type(out[key]) is float, (key, out[key])
    for key in ("rope_theta", "hidden_size", "num_hidden_layers", "vocab_size"):
        assert type(out[key]) is int, (key, out[key])
    want = json.loads(text)
    want["torch_dtype"] = want["dtype"] = "bfloat16"
    assert got == python_text(want)
    assert '"attention_dropout": 0.0,' in got and '"rms_norm_eps": 1e-06,' in got


def test_dtype_and_torch_dtype_both_set(tmp_path, make_model):
    """A transformers 5 config has only `dtype`: with out_dtype both names say what is stored."""
    text = real_config("qwen3-0.6b.transformers5.json")
    a = with_config(make_model, tmp_path, 1, text, "a", 28)
    b = with_config(make_model, tmp_path, 2, text, "b", 28)
    got = build_config_json(tmp_path, {"merge_method": "linear", "out_dtype": "float16",
                                       "models": [{"model": a, "parameters": {"weight": 0.5}},
                                                  {"model": b, "parameters": {"weight": 0.5}}]})
    out = json.loads(got)
    assert out["dtype"] == "float16" and out["torch_dtype"] == "float16"
    want = json.loads(text)
    want["torch_dtype"] = want["dtype"] = "float16"
    assert got == python_text(want)


def test_frankenmerge_slices_layer_lists(tmp_path, mount, make_model):
    """Gemma 3: A's layers [0, 12) then B's [6, 24): 30 layers, and each entry of layer_types comes
    from the layer it copies, in the config of the model it comes from (B's is marked to tell them
    apart). Checked through a real mount."""
    text = real_config("embeddinggemma-300m.json")

    def mark_b(obj):
        obj["layer_types"] = [t.replace("_attention", "_attention_b") for t in obj["layer_types"]]

    a = with_config(make_model, tmp_path, 1, text, "a", 24)
    b = with_config(make_model, tmp_path, 2, text, "b", 24, edit=mark_b)
    cfg = {"merge_method": "passthrough", "base_model": a,
           "slices": [{"sources": [{"model": a, "layer_range": [0, 12]}]},
                      {"sources": [{"model": b, "layer_range": [6, 24]}]}]}
    with mount(mmtest.write_config(tmp_path, cfg)) as m:
        with open(os.path.join(m.path, "config.json")) as f:
            got = f.read()
    out = json.loads(got)
    lt_a = json.loads(text)["layer_types"]
    lt_b = [t.replace("_attention", "_attention_b") for t in lt_a]
    assert out["num_hidden_layers"] == 30
    assert out["layer_types"] == lt_a[0:12] + lt_b[6:24]
    assert len(out["layer_types"]) == out["num_hidden_layers"]
    want = json.loads(text)
    want.update(num_hidden_layers=30, layer_types=lt_a[0:12] + lt_b[6:24], dtype="bfloat16",
                torch_dtype="bfloat16")
    assert got == python_text(want)
    assert type(out["rope_local_base_freq"]) is float and type(out["rope_theta"]) is float


def test_frankenmerge_repeats_layers_transformers5(tmp_path, make_model):
    """Qwen3 saved by transformers 5: a self-stack [0, 20) + [8, 28) keeps layer_types as long as the
    layer count (transformers' config validation rejects any other length)."""
    text = real_config("qwen3-0.6b.transformers5.json")
    a = with_config(make_model, tmp_path, 1, text, "a", 28)
    got = build_config_json(tmp_path, {"merge_method": "passthrough",
                                       "slices": [{"sources": [{"model": a, "layer_range": [0, 20]}]},
                                                  {"sources": [{"model": a, "layer_range": [8, 28]}]}]})
    out = json.loads(got)
    assert out["num_hidden_layers"] == 40
    assert out["layer_types"] == ["full_attention"] * 40
    assert out["dtype"] == out["torch_dtype"] == "bfloat16"
    assert type(out["attention_dropout"]) is float and type(out["rope_parameters"]["rope_theta"]) is int
