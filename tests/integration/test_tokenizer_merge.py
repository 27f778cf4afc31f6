"""Merges of models whose vocabularies differ (issue 12, D19): `tokenizer_source: base | union | <model>`
and the `tokenizer:` block remap every embedding-like tensor (embed_tokens, lm_head, tied or not) to the
output vocabulary before the method, config.json's vocab_size follows, and the served tokenizer files
describe the output vocabulary; `chat_template` picks the template served.

Models are 2-layer Llama 3 checkpoints (tests/fixtures/archs/llama3, real tensor names, 96-row
embeddings) given tokenizers by tests/reference/tok_fixture.py: `base` (a byte-level BPE of 96
tokens), `chatml` (+ <|im_start|>, <|im_end|> with their own rows), `reordered` (one token removed, two
swapped, rows moved along), `padded` (112 rows, 96 tokens), `unused` (added tokens beyond vocab_size) and
sentencepiece-only ones. Every tensor is compared with the numpy reference (tests/reference/
config_eval.py, whose tokenizer half is tokenizer_eval.py written from mergekit's tokenizer/*.py);
the served files with tokenizer_eval.check_served. The first test mounts for real, the others use
`mergemount build` (the same read path without FUSE).
"""

import json
import os

import numpy as np
import pytest

import arch_fixture
import config_eval
import mmtest
import safetensors_io as st
import tok_fixture
import tokenizer_eval as te

LLAMA3 = os.path.join(mmtest.REPO, "tests", "fixtures", "archs", "llama3")
EMBED = "model.embed_tokens.weight"
HEAD = "lm_head.weight"


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """model(kind, seed) -> a 2-layer Llama 3 with tokenizer variant `kind` (tok_fixture.VARIANTS),
    made once per session; seed 0 is the base's weights, others fine-tunes."""
    root = tmp_path_factory.mktemp("tok-models")
    made = {}

    def make(kind="base", seed=1, tied=False, dtype="bf16"):
        key = (kind, seed, tied, dtype)
        if key not in made:
            d = str(root / f"{kind}-s{seed}{'-tied' if tied else ''}-{dtype}")
            arch_fixture.make(LLAMA3, d, seed=seed, dtype=dtype, max_layers=2)
            if tied:
                untie(d)
            made[key] = tok_fixture.apply_variant(d, kind, seed=seed)
        return made[key]
    return make


def untie(folder):
    """Drops lm_head.weight and sets tie_word_embeddings: the model reads embed_tokens in its place."""
    tensors = st.read_folder(folder)
    del tensors[HEAD]
    for f in os.listdir(folder):
        if f.endswith(".safetensors") or f.endswith(".index.json"):
            os.remove(os.path.join(folder, f))
    st.write_safetensors(os.path.join(folder, "model.safetensors"),
                         {n: (t.dtype, list(t.shape), t.raw) for n, t in tensors.items()})
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["tie_word_embeddings"] = True
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def check(tmp_path, mount, cfg, via_mount=False, exact=True, name="run"):
    """Merges cfg and compares every tensor and config.json with the reference, and the served tokenizer
    with the reference's output vocabulary; returns (reference result, tensors, output folder)."""
    expected = config_eval.evaluate(cfg)
    got, out_cfg, folder = mmtest.merge_folder(tmp_path, mount, cfg, via_mount, name)
    if exact:
        mmtest.assert_bitwise(got, expected.tensors)
    else:
        mmtest.assert_within_ulp(got, expected.tensors, 1)
    assert out_cfg == expected.config, f"config.json differs:\n{out_cfg}\n{expected.config}"
    if expected.vocab is not None:
        chat = te.chat_template(cfg, {r: m.path for r, m in expected.models.items()})
        problems = te.check_served(folder, te.expected_served(expected.vocab, chat))
        assert not problems, problems
    return expected, got, folder


def plan_error(tmp_path, cfg):
    """The reference refuses cfg and so must `mergemount plan`, before anything is mounted; returns stderr."""
    with pytest.raises(config_eval.ConfigError):
        config_eval.evaluate(cfg)
    r = mmtest.mergemount("plan", mmtest.write_config(tmp_path, cfg))
    assert r.returncode != 0, f"mergemount plan accepted a config it must refuse:\n{r.stdout[:600]}"
    return r.stderr


def linear(*models, base=None, **top):
    return mmtest.method_config("linear", [(m, {"weight": w}) for m, w in zip(models, (0.6, 0.4, 0.3))],
                                base=base, **top)


# ---- the token rows follow the tokens ----------------------------------------------------------------

def test_union_mounted_rows_follow_tokens(tmp_path, mount, model):
    """union over a base and a ChatML fine-tune, mounted: 98 rows; the ChatML tokens' rows are the
    fine-tune's own (only it has them), every other row the weighted mean of both models' rows of that
    token, computed here directly from the source files."""
    base, chat = model("base", 0), model("chatml", 1)
    cfg = linear(base, chat, base=base, tokenizer_source="union")
    expected, got, folder = check(tmp_path, mount, cfg, via_mount=True)
    assert got[EMBED].shape == (98, 32) and got[HEAD].shape == (98, 32)
    with open(os.path.join(folder, "config.json")) as f:
        assert json.load(f)["vocab_size"] == 98
    view = te.vocab_view(folder)
    src_b, src_c = st.read_folder(base), st.read_folder(chat)
    vb, vc = te.vocab_view(base).vocab, te.vocab_view(chat).vocab
    for tok in ("<|im_start|>", "<|im_end|>", "<s>", "a", "</s>"):
        i = view.vocab[tok]
        for name in (EMBED, HEAD):
            row = got[name].f32()[i]
            if tok not in vb:
                # linear over remapped inputs: the base's row is the fine-tune's own (the only model
                # with the token), so the merge gives that row back (0.6 x + 0.4 x, up to rounding)
                want = src_c[name].f32()[vc[tok]]
                assert np.allclose(row, want, rtol=1e-2, atol=1e-3) and not np.allclose(row, 0), (tok, name)
            else:
                want = st.round_to("BF16", (np.float32(0.6) * src_b[name].f32()[vb[tok]] +
                                            np.float32(0.4) * src_c[name].f32()[vc[tok]]) / np.float32(1.0))
                assert np.allclose(row, want, rtol=1e-2, atol=1e-3), (tok, name)


def test_encoding_with_served_tokenizer_gives_rows_of_same_tokens(tmp_path, mount, model):
    """The issue's acceptance: encoding text with the served tokenizer and looking rows up gives, for
    source=<fine-tune> (passthrough of the base), the base's row of the same token wherever the base
    has it, and the default row elsewhere."""
    base, reo = model("base", 0), model("reordered", 2)
    cfg = {"merge_method": "passthrough", "models": [{"model": base}], "tokenizer_source": reo}
    expected, got, folder = check(tmp_path, mount, cfg)
    out_view, base_view = te.vocab_view(folder), te.vocab_view(base)
    src = st.read_folder(base)
    text = tok_fixture.TEXT[:200]
    ids = encode_words(out_view.vocab, text)
    assert len(ids) > 20
    inv = {i: t for t, i in out_view.vocab.items()}
    for i in ids:
        tok = inv[i]
        assert np.array_equal(got[EMBED].f32()[i], src[EMBED].f32()[base_view.vocab[tok]]), tok


def encode_words(vocab, text):
    """A greedy longest-match encoding of text's byte-level characters (enough to name many tokens)."""
    chars = "".join(tok_fixture.byte_chars()[b] for b in text.encode())
    ids, i = [], 0
    while i < len(chars):
        for j in range(len(chars), i, -1):
            if chars[i:j] in vocab:
                ids.append(vocab[chars[i:j]])
                i = j
                break
        else:
            i += 1
    return ids


@pytest.mark.parametrize("source", ["base", "union", "model"])
def test_sources_three_models(tmp_path, mount, model, source):
    base, chat, reo = model("base", 0), model("chatml", 1), model("reordered", 2)
    src = chat if source == "model" else source
    cfg = linear(base, chat, reo, base=base, tokenizer_source=src)
    check(tmp_path, mount, cfg)


def test_padded_vocabulary_and_pad_to_multiple_of(tmp_path, mount, model):
    """A model with 112 rows for 96 tokens; tokenizer.pad_to_multiple_of 64 makes 128 rows whose
    padding rows are each model's column mean (a statistic over the whole tensor)."""
    base, padded, chat = model("base", 0), model("padded", 3), model("chatml", 1)
    cfg = linear(base, padded, chat, base=base,
                 tokenizer={"source": "union", "pad_to_multiple_of": 64})
    expected, got, _ = check(tmp_path, mount, cfg, exact=False)
    assert got[EMBED].shape == (128, 32)


@pytest.mark.parametrize("dtype", [None, "float32", "float16"])
def test_mixed_input_dtypes(tmp_path, mount, model, dtype):
    """A float16 fine-tune merged with bfloat16 models: remapped rows take the config's dtype, else the
    first input's; averaged default rows add in float32 and round to it each time."""
    base, chat, reo = model("base", 0), model("chatml", 1, dtype="f16"), model("reordered", 2)
    check(tmp_path, mount, linear(base, chat, reo, base=base, tokenizer_source="union", dtype=dtype))


def test_unused_tokens_of_the_base_are_stripped(tmp_path, mount, model):
    base, chat = model("unused", 0), model("chatml", 1)
    expected, got, _ = check(tmp_path, mount, linear(base, chat, base=base, tokenizer_source="base"))
    assert set(expected.vocab.stripped) == set(tok_fixture.UNUSED)
    assert got[EMBED].shape == (96, 32)


def test_tokens_block_sources_and_force(tmp_path, mount, model):
    base, chat, reo = model("base", 0), model("chatml", 1), model("reordered", 2)
    cfg = linear(base, chat, reo, base=base, tokenizer={
        "source": "base",
        "tokens": {
            "<|im_start|>": {"source": chat},
            "<|im_end|>": {"source": {"kind": "model_token", "model": chat, "token_id": 2}},
            "<new>": {"source": {"kind": "zero"}},
            "c": {"source": {"kind": "model_token", "model": reo, "token": "</s>"}, "force": True},
            "a": {"source": reo, "force": True},
        }})
    expected, got, folder = check(tmp_path, mount, cfg)
    vocab = te.vocab_view(folder).vocab
    assert not got[EMBED].f32()[vocab["<new>"]].any()


def test_tied_embeddings_remap_through_embed_tokens(tmp_path, mount, model):
    """A model without lm_head.weight reads embed_tokens in its place; the remap applies to both."""
    base, chat = model("base", 0), model("chatml", 1, tied=True)
    check(tmp_path, mount, linear(base, chat, base=base, tokenizer_source="union"))


@pytest.mark.parametrize("kind", ["spm-unigram", "spm-bpe", "spm-user"])
def test_sentencepiece_donor(tmp_path, mount, model, kind):
    """A base with only tokenizer.model: its file is served as it is, the added tokens of the output in
    tokenizer_config.json's added_tokens_decoder."""
    base, other = model(kind, 0), model("base", 1)
    expected, got, folder = check(tmp_path, mount, linear(base, other, base=base, tokenizer_source="base"))
    assert os.path.exists(os.path.join(folder, "tokenizer.model"))
    assert not os.path.exists(os.path.join(folder, "tokenizer.json"))


# ---- every method family on remapped embeddings ------------------------------------------------------

FAMILY_CASES = {
    "task_arithmetic": ({"weight": 0.5}, {}, True),
    "ties": ({"weight": 0.7, "density": 0.5}, {}, True),
    "slerp": (None, {"parameters": {"t": 0.3}}, False),
    "model_stock": (None, {}, False),
    "karcher": (None, {}, False),
    "nuslerp": ({"weight": 0.5}, {}, False),
    "sce": ({"weight": 1.0}, {"parameters": {"select_topk": 0.5}}, False),
    "breadcrumbs": ({"weight": 0.5, "density": 0.8, "gamma": 0.05}, {}, True),
    "multislerp": ({"weight": 0.5}, {}, False),
    "nearswap": (None, {"parameters": {"t": 0.01}}, True),
    "ram": (None, {}, True),
    "arcee_fusion": (None, {}, False),
    "ramplus_tl": (None, {}, False),
}


@pytest.mark.parametrize("method", sorted(FAMILY_CASES))
def test_methods_on_remapped_embeddings(tmp_path, mount, model, method):
    per_model, top, exact = FAMILY_CASES[method]
    base, chat, reo = model("base", 0), model("chatml", 1), model("reordered", 2)
    others = [chat] if method in ("slerp", "nearswap", "arcee_fusion") else [chat, reo]
    entries = [(base, None)] + [(m, per_model) for m in others]
    if method == "model_stock":
        entries = [(base, None), (chat, None), (reo, None)]
    cfg = mmtest.method_config(method, entries, base=base, tokenizer_source="union", **top)
    check(tmp_path, mount, cfg, exact=exact)


def test_frankenmerge_passthrough_union(tmp_path, mount, model):
    # no base_model: lm_head comes from b alone, and a base that is not among a tensor's inputs is
    # mergekit's KeyError (the tokenizer base is then the first model, a)
    a, b = model("chatml", 1), model("reordered", 2)
    cfg = {"merge_method": "passthrough", "tokenizer_source": "union",
           "slices": [{"sources": [{"model": a, "layer_range": [0, 2]}]},
                      {"sources": [{"model": b, "layer_range": [1, 2]}]}]}
    check(tmp_path, mount, cfg)


# ---- chat templates ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", te.BUILTIN)
def test_builtin_chat_template_served(tmp_path, mount, model, name):
    base, chat = model("base", 0), model("chatml", 1)
    _, _, folder = check(tmp_path, mount, linear(base, chat, base=base, chat_template=name))
    with open(os.path.join(folder, "chat_template.jinja")) as f:
        assert not te.check_builtin_template(f.read(), name)
    with open(os.path.join(folder, "tokenizer_config.json")) as f:
        assert not te.check_builtin_template(json.load(f)["chat_template"], name)


def test_auto_chat_template_with_union(tmp_path, mount, model):
    base, chat, chat2 = model("base", 0), model("chatml", 1), model("chatml", 2)
    _, _, folder = check(tmp_path, mount, linear(base, chat, chat2, base=base, chat_template="auto",
                                                 tokenizer_source="union"))
    assert te.vocab_view(folder).chat_template == tok_fixture.CHATML_TEMPLATE.strip()


def test_inline_chat_template(tmp_path, mount, model):
    base, chat = model("base", 0), model("chatml", 1)
    tpl = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    _, _, folder = check(tmp_path, mount, linear(base, chat, base=base, chat_template=tpl))
    assert te.vocab_view(folder).chat_template == tpl


# ---- bad input: refused before anything is mounted ---------------------------------------------------

def test_error_unknown_model_in_tokens(tmp_path, model):
    base, chat, other = model("base", 0), model("chatml", 1), model("reordered", 2)
    err = plan_error(tmp_path, linear(base, chat, base=base, tokenizer={
        "source": "union", "tokens": {"<|im_end|>": {"source": other}}}))
    assert "not one of the models" in err and "<|im_end|>" in err


def test_error_model_token_id_out_of_range(tmp_path, model):
    base, chat = model("base", 0), model("chatml", 1)
    err = plan_error(tmp_path, linear(base, chat, base=base, tokenizer={
        "source": "union", "tokens": {"<|im_end|>": {"source": {"kind": "model_token", "model": chat,
                                                                "token_id": 500}}}}))
    assert "token_id 500 is out of range" in err


def test_error_tokenizer_json_does_not_parse(tmp_path, model):
    base = tok_fixture.make_variant(model("base", 0), str(tmp_path / "broken"), "base")
    with open(os.path.join(base, "tokenizer.json"), "w") as f:
        f.write('{"model": {"type": "BPE", "vocab": {')
    chat = model("chatml", 1)
    r = mmtest.mergemount("plan", mmtest.write_config(tmp_path, linear(base, chat, base=base,
                                                                        tokenizer_source="union")))
    assert r.returncode != 0 and "tokenizer.json" in r.stderr and "broken" in r.stderr


def test_error_both_tokenizer_keys(tmp_path, model):
    base, chat = model("base", 0), model("chatml", 1)
    err = plan_error(tmp_path, linear(base, chat, base=base, tokenizer_source="union",
                                      tokenizer={"source": "union"}))
    assert "tokenizer_source" in err


def test_error_invalid_inline_chat_template(tmp_path, model):
    base, chat = model("base", 0), model("chatml", 1)
    r = mmtest.mergemount("plan", mmtest.write_config(tmp_path, linear(base, chat, base=base,
                                                                        chat_template="be nice")))
    assert r.returncode != 0 and "chat_template" in r.stderr and "merge.yml" in r.stderr


# ---- what `mergemount plan` says -------------------------------------------------------------------

def test_plan_shows_the_vocabulary(tmp_path, model):
    base, chat = model("unused", 0), model("chatml", 1)
    cfg = linear(base, chat, base=base, tokenizer={"source": "union", "pad_to_multiple_of": 64},
                 chat_template="chatml")
    expected = config_eval.evaluate(cfg)
    path = mmtest.write_config(tmp_path, cfg)
    r = mmtest.mergemount("plan", path, "--json", check=True)
    plan = json.loads(r.stdout)
    n = len(expected.vocab.vocab)
    assert plan["tokenizer"] == {"source": "union", "tokens": n, "rows": te.padded_size(n, 64),
                                 "stripped": list(expected.vocab.stripped)}
    assert not te.check_builtin_template(plan["chat_template"], "chatml")
    remapped = {t["name"] for t in plan["tensors"] if t["remapped"]}
    assert remapped == {EMBED, HEAD}
    text = mmtest.mergemount("plan", path, check=True).stdout
    assert f"tokenizer: union, {n} tokens, {te.padded_size(n, 64)} embedding rows" in text
    assert "rows remapped to the output vocabulary" in text


def test_concurrent_first_reads_of_padded_embeddings(tmp_path, mount, model):
    """Eight readers at once on a cold, uncached mount of a padded union: the first read of a padding
    row computes that input's column mean while others wait for it (the ThreadSanitizer run includes
    this test); every byte equals `mergemount build`'s."""
    base, padded, chat = model("base", 0), model("padded", 3), model("chatml", 1)
    cfg = linear(base, padded, chat, base=base, tokenizer={"source": "union", "pad_to_multiple_of": 64})
    path = mmtest.write_config(tmp_path, cfg)
    mmtest.build(path, tmp_path / "out")
    files = {n: mmtest.read_file(os.path.join(tmp_path, "out", n)) for n in os.listdir(tmp_path / "out")
             if n.endswith(".safetensors")}
    with mount(path, "--no-cache") as m:
        def reader(seed):
            errors = []
            for name, data in files.items():
                step = 1024 + 256 * seed
                offs = list(range(0, len(data), step))
                offs = offs[seed % len(offs):] + offs[:seed % len(offs)]   # start at different places
                with open(os.path.join(m.path, name), "rb") as f:
                    got = {off: os.pread(f.fileno(), step, off) for off in offs}
                if b"".join(got[o] for o in sorted(got)) != data:
                    errors.append(name)
            return errors

        errors = mmtest.in_threads(8, reader)
    assert not errors, errors


def test_readme_example(tmp_path, mount, model):
    """The tokenizer example of README.md, with its two models replaced by the fixtures, merges as the
    reference says."""
    import re
    import yaml
    with open(os.path.join(mmtest.REPO, "README.md")) as f:
        blocks = re.findall(r"```yaml\n(.*?)```", f.read(), re.S)
    text = next(b for b in blocks if "tokenizer:" in b and "chat-finetune" in b)
    base, chat = model("base", 0), model("chatml", 1)
    cfg = yaml.safe_load(text.replace("./chat-finetune", chat).replace("./base", base))
    expected, got, folder = check(tmp_path, mount, cfg, exact=False)
    assert got[EMBED].shape[0] % 64 == 0
    with open(os.path.join(folder, "chat_template.jinja")) as f:
        assert not te.check_builtin_template(f.read(), "chatml")


def test_sentencepiece_encoding_finds_each_tokens_rows(tmp_path, mount, model):
    """The issue's acceptance with a real tokenizer: the union over a sentencepiece base and a byte-level
    BPE fine-tune, text encoded by sentencepiece itself with the served tokenizer.model; each id's merged
    row is the linear merge of the rows that each source model has for that piece (a model without the
    piece contributes the other's row, as D19's only-model rule gives)."""
    import sentencepiece
    base, chat = model("spm-bpe", 0), model("chatml", 1)
    cfg = linear(base, chat, base=base, tokenizer_source="union")
    _, got, folder = check(tmp_path, mount, cfg)
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(folder, "tokenizer.model"))
    ids = sp.encode(tok_fixture.TEXT[:300])
    assert len(set(ids)) > 20
    vb, vc = te.vocab_view(base).vocab, te.vocab_view(chat).vocab
    src_b, src_c = st.read_folder(base), st.read_folder(chat)
    for i in set(ids):
        piece = sp.id_to_piece(i)
        for name in (EMBED, HEAD):
            rb = src_b[name].f32()[vb[piece]] if piece in vb else None
            rc = src_c[name].f32()[vc[piece]] if piece in vc else None
            rb, rc = (rb if rb is not None else rc), (rc if rc is not None else rb)
            want = st.round_to("BF16", np.float32(0.6) * rb + np.float32(0.4) * rc)
            assert np.allclose(got[name].f32()[i], want, rtol=1e-2, atol=1e-3), (i, piece, name)
