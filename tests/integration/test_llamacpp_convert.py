"""llama.cpp's converter (convert_hf_to_gguf.py) accepts a Mixtral made from a mergekit-moe config
(issue 13), and a merged folder whose vocabulary is a union (issue 12): a Llama whose tokenizer is a sentencepiece `tokenizer.model` merged with a fine-tune that
added ChatML tokens in its tokenizer.json. The GGUF it writes must list, at every id, the token our
served tokenizer has there (the union's new tokens included, read by llama.cpp from
tokenizer_config.json's added_tokens_decoder), hold our embedding rows, and carry the chat template.

Optional: runs when MM_LLAMACPP_SRC names a llama.cpp checkout (convert_hf_to_gguf.py, conversion/,
gguf-py/) and MM_TRANSFORMERS_SRC a transformers src/ tree (the converter imports AutoConfig; the
stand-ins of test_transformers_config.import_transformers apply), with torch and sentencepiece
importable; skipped with the reason otherwise. The converter runs in a child process started by
llamacpp_gguf.convert (which also gives Debian 12's torch 1.13 placeholders for the float8 and unsigned
dtypes the converter names in a lookup table; its tokenizer stand-ins do not apply to these folders,
which have a sentencepiece tokenizer.model). For example:
  apt-get install python3-torch python3-sentencepiece
  MM_LLAMACPP_SRC=/tmp/llama.cpp MM_TRANSFORMERS_SRC=/tmp/tf/src MM_HF_HUB_SRC=/tmp/hfhub/src \\
      pytest tests/integration/test_llamacpp_convert.py
"""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

import arch_fixture
import llamacpp_gguf
import mmtest
import safetensors_io as st
import tok_fixture
import tokenizer_eval as te

LLAMA3 = os.path.join(mmtest.REPO, "tests", "fixtures", "archs", "llama3")
HOW = ("set MM_LLAMACPP_SRC to a llama.cpp checkout and MM_TRANSFORMERS_SRC (and MM_HF_HUB_SRC) as for "
       "test_transformers_config.py, with torch and sentencepiece installed")

def convert(tmp_path, folder):
    """Runs the converter on folder (float32 output); returns the GGUF's path."""
    gguf_path = str(tmp_path / "out.gguf")
    rc, err = llamacpp_gguf.convert(folder, gguf_path, "f32", tmp_path / "shim")
    assert rc == 0, err[-3000:]
    return gguf_path


@pytest.fixture(scope="module")
def llamacpp():
    src, tf = os.environ.get("MM_LLAMACPP_SRC"), os.environ.get("MM_TRANSFORMERS_SRC")
    if not src or not tf:
        pytest.skip("llama.cpp converter check is optional: " + HOW)
    if not os.path.isfile(os.path.join(src, "convert_hf_to_gguf.py")):
        pytest.fail(f"MM_LLAMACPP_SRC={src} holds no convert_hf_to_gguf.py", pytrace=False)
    for module in ("torch", "sentencepiece"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: " + HOW)
    sys.path.insert(0, os.path.join(src, "gguf-py"))
    import gguf
    return src, gguf


def test_union_with_sentencepiece_base_converts(tmp_path, llamacpp):
    src, gguf = llamacpp
    base = arch_fixture.make(LLAMA3, str(tmp_path / "base"), seed=0, dtype="bf16", max_layers=2)
    tok_fixture.apply_variant(base, "spm-bpe", 0)
    chat = arch_fixture.make(LLAMA3, str(tmp_path / "chat"), seed=1, dtype="bf16", max_layers=2)
    tok_fixture.apply_variant(chat, "chatml", 1)
    cfg = {"merge_method": "linear", "base_model": base, "tokenizer_source": "union", "chat_template": "chatml",
           "models": [{"model": base, "parameters": {"weight": 0.5}},
                      {"model": chat, "parameters": {"weight": 0.5}}]}
    out = mmtest.build(mmtest.write_config(tmp_path, cfg), tmp_path / "out")
    reader = gguf.GGUFReader(convert(tmp_path, out))
    field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]).decode() for i in field.data]
    view = te.vocab_view(out)
    with open(os.path.join(out, "config.json")) as f:
        assert len(tokens) == json.load(f)["vocab_size"] == len(view.vocab)
    for tok, i in view.vocab.items():
        assert tokens[i] in (tok, tok.replace("\u2581", " ")), (i, tok, tokens[i])
    assert {"<|im_start|>", "<|im_end|>"} <= set(tokens)
    emb = next(t for t in reader.tensors if t.name == "token_embd.weight")
    want = st.read_folder(out)["model.embed_tokens.weight"].f32()
    assert np.array_equal(np.array(emb.data).reshape(want.shape), want)
    tpl = reader.fields["tokenizer.chat_template"]
    assert not te.check_builtin_template(bytes(tpl.parts[tpl.data[0]]).decode(), "chatml")


def test_mixtral_moe_converts(tmp_path, llamacpp):
    """A mergekit-moe config (four Llama 3 experts on a Llama 3 base with a sentencepiece tokenizer) is
    converted by llama.cpp's converter as Mixtral: expert_count 4, experts_per_token 2, each layer's
    experts stacked in ffn_{gate,up,down}_exps in expert order and the router as ffn_gate_inp, with our
    tensors' values."""
    src, gguf = llamacpp
    base = arch_fixture.make(LLAMA3, str(tmp_path / "base"), seed=0, dtype="bf16", max_layers=2)
    tok_fixture.apply_variant(base, "spm-bpe", 0)
    experts = [arch_fixture.make(LLAMA3, str(tmp_path / f"e{i}"), seed=i, dtype="bf16", max_layers=2)
               for i in (1, 2, 3, 4)]
    cfg = {"base_model": base, "gate_mode": "uniform_random", "experts_per_token": 2,
           "experts": [{"source_model": m, "positive_prompts": [f"p{i}"]} for i, m in enumerate(experts)]}
    out = mmtest.build(mmtest.write_config(tmp_path, cfg), tmp_path / "out")
    reader = gguf.GGUFReader(convert(tmp_path, out))

    def field(name):
        f = reader.fields[name]
        return f.parts[f.data[0]][0]
    assert field("llama.expert_count") == 4 and field("llama.expert_used_count") == 2
    ours = st.read_folder(out)
    tensors = {t.name: t for t in reader.tensors}
    for layer in range(2):
        gate = np.array(tensors[f"blk.{layer}.ffn_gate_exps.weight"].data)
        for e in range(4):
            want = ours[f"model.layers.{layer}.block_sparse_moe.experts.{e}.w1.weight"].f32()
            assert np.array_equal(gate[e], want), (layer, e)
        router = np.array(tensors[f"blk.{layer}.ffn_gate_inp.weight"].data)
        assert np.array_equal(router, ours[f"model.layers.{layer}.block_sparse_moe.gate.weight"].f32())
