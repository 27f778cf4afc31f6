"""The GGUF view's tokenizer keys (merge/gguf/gguf_vocab.c) against llama.cpp's converter: for merges of
test models of each supported family, the tokenizer.* key/values the test program gguf_vocab_dump writes
(tests/unit/gguf_vocab_dump.c) must be, byte for byte and in order, those convert_hf_to_gguf.py
--vocab-only writes for the built folder.

Optional, as test_llamacpp_convert.py (the same environment: MM_LLAMACPP_SRC, MM_TRANSFORMERS_SRC,
MM_HF_HUB_SRC, torch, sentencepiece); the converter runs through llamacpp_gguf.convert. The sentencepiece
families run the converter as it is. The BPE path needs transformers' AutoTokenizer, hence the tokenizers
library, which is not installed here: given the pre-tokenizer name the case expects (convert's `pre`), the
runner gives the converter a stand-in with transformers' view of the folder (tokenizer_files.vocab_view:
get_vocab, added_tokens_decoder; encode/decode of an added token give it back, which is what they do for
the printable-ASCII tokens of these fixtures), and that name, since the converter's name comes from a hash
of a real vocabulary's ids (a fixture vocabulary is in no table).

test_real_vocabulary_pre_names needs no converter run: with real vocabularies (MM_GPT2_VOCAB_GGUF: llama.cpp's
models/ggml-vocab-gpt-2.gguf; MM_QWEN2_TOKENIZER_DIR: a Qwen 2 repository's vocab.json, merges.txt and
tokenizer_config.json) the view's hash of the converter's test text must hit the converter's table — its
entries were computed by the real converter. GPT-2's vocabulary with an NFC normalizer checks that the name
comes from the hash: no definition names that pipeline.
"""

import os
import subprocess
import sys

import pytest

import arch_fixture
import gguf_tok_fixture
import llamacpp_gguf
import mmtest
import tok_fixture

ARCHS = os.path.join(mmtest.REPO, "tests", "fixtures", "archs")
BUILD = os.environ.get("MM_BUILD_DIR", os.path.join(mmtest.REPO, "build"))
DUMP = os.path.join(BUILD, "tests", "gguf_vocab_dump")

@pytest.fixture(scope="module")
def gguf():
    src, tf = os.environ.get("MM_LLAMACPP_SRC"), os.environ.get("MM_TRANSFORMERS_SRC")
    if not src or not tf:
        pytest.skip("llama.cpp converter check is optional: see test_llamacpp_convert.py")
    if not os.path.isfile(DUMP):
        pytest.fail(f"{DUMP} is not built", pytrace=False)
    sys.path.insert(0, os.path.join(src, "gguf-py"))
    import gguf as g
    return g


def converter(tmp_path, folder, pre=None):
    path = str(tmp_path / "theirs.gguf")
    rc, err = llamacpp_gguf.convert(folder, path, "f32", tmp_path / "shim", args=("--vocab-only",), pre=pre)
    assert rc == 0, err[-3000:]
    return path


def tokenizer_fields(gguf, path):
    """[(key, the field's bytes in the file)] of the tokenizer.* keys, in file order."""
    r = gguf.GGUFReader(path)
    return [(name, b"".join(bytes(p) for p in f.parts)) for name, f in r.fields.items()
            if name.startswith("tokenizer.")]


def model(tmp_path, family, name, seed, variant, kind=None):
    d = arch_fixture.make(os.path.join(ARCHS, family), str(tmp_path / name), seed=seed, dtype="bf16", max_layers=2)
    tok_fixture.apply_variant(d, variant, seed)
    if kind:
        gguf_tok_fixture.apply(d, kind, seed)
    return d


def check(gguf, tmp_path, cfg, arch, pre=None):
    config = mmtest.write_config(tmp_path, cfg)
    out = mmtest.build(config, tmp_path / "out")
    ours = str(tmp_path / "ours.gguf")
    r = subprocess.run([DUMP, config, arch, ours], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    theirs = tokenizer_fields(gguf, converter(tmp_path, out, pre))
    mine = tokenizer_fields(gguf, ours)
    assert [k for k, _ in mine] == [k for k, _ in theirs]
    for (k, a), (_, b) in zip(mine, theirs):
        assert a == b, k
    return dict(mine)


def linear(*models):
    return {"merge_method": "linear", "dtype": "bfloat16",
            "models": [{"model": m, "parameters": {"weight": 1.0 / len(models)}} for m in models]}


# family folder, GGUF architecture, tok_fixture variant, gguf_tok_fixture kind
SPM = [("mistral", "llama", "spm-bpe", None), ("yi", "llama", "spm-unigram", None),
       ("gemma", "gemma", "spm-unigram", None), ("gemma2", "gemma2", "spm-user", None),
       ("gemma3-vl", "gemma3", "spm-bpe", None), ("phi3", "phi3", "spm-user", "phi3"),
       ("qwen2.5", "qwen2", "spm-unigram", None)]


@pytest.mark.parametrize("family,arch,variant,kind", SPM, ids=[c[0] for c in SPM])
def test_sentencepiece_families(gguf, tmp_path, family, arch, variant, kind):
    a = model(tmp_path, family, "a", 0, variant, kind)
    b = model(tmp_path, family, "b", 1, variant, kind)
    keys = check(gguf, tmp_path, linear(a, b), arch)
    assert "tokenizer.ggml.scores" in keys


def test_union_with_sentencepiece_base_and_chat_template(gguf, tmp_path):
    base = model(tmp_path, "llama3", "base", 0, "spm-bpe")
    chat = model(tmp_path, "llama3", "chat", 1, "chatml")
    cfg = {"merge_method": "linear", "base_model": base, "tokenizer_source": "union", "chat_template": "chatml",
           "dtype": "bfloat16", "models": [{"model": base, "parameters": {"weight": 0.5}},
                                           {"model": chat, "parameters": {"weight": 0.5}}]}
    keys = check(gguf, tmp_path, cfg, "llama")
    assert "tokenizer.chat_template" in keys


BPE = [("llama3", "llama", "base", "llama3", "llama-bpe"), ("qwen2.5", "qwen2", "chatml", "qwen2", "qwen2"),
       ("mistral", "llama", "chatml", None, "gpt-2"), ("llama3", "llama", "padded", "llama3", "llama-bpe"),
       ("llama3", "llama", "base", "llama3-config", "llama-bpe")]


@pytest.mark.parametrize("family,arch,variant,kind,pre", BPE, ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in BPE])
def test_bpe_families(gguf, tmp_path, family, arch, variant, kind, pre):
    a = model(tmp_path, family, "a", 0, variant, kind)
    b = model(tmp_path, family, "b", 1, variant, kind)
    keys = check(gguf, tmp_path, linear(a, b), arch, pre=pre)
    assert "tokenizer.ggml.merges" in keys


def test_bpe_union(gguf, tmp_path):
    base = model(tmp_path, "qwen2.5", "base", 0, "base", "qwen2")
    chat = model(tmp_path, "qwen2.5", "chat", 1, "chatml", "qwen2")
    cfg = {"merge_method": "linear", "base_model": base, "tokenizer_source": "union", "dtype": "bfloat16",
           "models": [{"model": base, "parameters": {"weight": 0.5}}, {"model": chat, "parameters": {"weight": 0.5}}]}
    check(gguf, tmp_path, cfg, "qwen2", pre="qwen2")


def ours_pre(gguf, tmp_path, folder, arch):
    config = mmtest.write_config(tmp_path, linear(folder))
    ours = str(tmp_path / "ours.gguf")
    r = subprocess.run([DUMP, config, arch, ours], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return gguf.GGUFReader(ours).fields["tokenizer.ggml.pre"].contents()


def test_real_vocabulary_pre_names(gguf, tmp_path):
    g2, qdir = os.environ.get("MM_GPT2_VOCAB_GGUF"), os.environ.get("MM_QWEN2_TOKENIZER_DIR")
    if not g2 and not qdir:
        pytest.skip("set MM_GPT2_VOCAB_GGUF and/or MM_QWEN2_TOKENIZER_DIR (see the module docstring)")
    if g2:
        for nfc in (False, True):
            d = arch_fixture.make(os.path.join(ARCHS, "llama3"), str(tmp_path / f"g{nfc}"), max_layers=2)
            gguf_tok_fixture.gpt2_from_gguf(g2, d, nfc=nfc)
            assert ours_pre(gguf, tmp_path, d, "llama") == "gpt-2"
    if qdir:
        d = arch_fixture.make(os.path.join(ARCHS, "qwen2.5"), str(tmp_path / "q"), max_layers=2)
        gguf_tok_fixture.qwen2_from_files(*(os.path.join(qdir, n) for n in
                                            ("vocab.json", "merges.txt", "tokenizer_config.json")), d)
        assert ours_pre(gguf, tmp_path, d, "qwen2") == "qwen2"


def dump_error(tmp_path, folder, arch):
    if not os.path.isfile(DUMP):
        pytest.fail(f"{DUMP} is not built", pytrace=False)
    config = mmtest.write_config(tmp_path, linear(folder))
    r = subprocess.run([DUMP, config, arch, str(tmp_path / "x.gguf")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    return r.stderr


def test_refusals(tmp_path):
    """What the converter would not convert, or what we cannot name, is an error saying what and where
    (no llama.cpp needed)."""
    d = model(tmp_path, "llama3", "a", 0, "base")
    path = os.path.join(d, "tokenizer.json")
    tj = gguf_tok_fixture._load(path)
    tj["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": False}
    tok_fixture.write_json(path, tj)
    err = dump_error(tmp_path, d, "llama")
    assert "tokenizer.json: the pre-tokenizer {\"type\":\"Metaspace\"" in err and "llama-bpe" in err, err
    assert "not \"falcon\"" in dump_error(tmp_path, d, "falcon")
    assert "tokenizer.model: not in the folder" in dump_error(tmp_path, d, "gemma")
