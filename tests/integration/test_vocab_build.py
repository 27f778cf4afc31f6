"""merge/plan/vocab.c and vocab_files.c (the output vocabulary of a tokenizer option, each model's
permutation, the served tokenizer files) against the Python reference tests/reference/tokenizer_eval.py.

Models are llama3 fixtures (arch_fixture.make) with each tokenizer variant of tok_fixture.py (base,
chatml, reordered, padded, unused, spm-unigram, spm-bpe, spm-user), plus small hand-made folders for the
error cases. The test-only program vocab_dump (tests/unit/vocab_dump.c) builds the vocabulary and writes
the served files; every expected value comes from the reference:
- the vocabulary by id, the added tokens with their flags, the stripped tokens and each model's
  permutation (no entry in the reference = -2, MM_VOCAB_BEYOND) equal build_vocabulary's, for source
  base, union and a model (inside and outside the merge), with and without `tokens:`;
- the served folder passes tokenizer_eval.check_served(expected_served(out)), and our own reader
  (tok_dump) reads it back as the same vocabulary and added tokens;
- what mergekit refuses is refused with a message naming the model: a tokenizer.json that does not parse,
  a sentencepiece base that would need stripping, a kept merge whose product is stripped, a base without
  tokenizer, an output vocabulary with holes; and a Unigram sentencepiece donor given new added tokens
  (transformers 5 does not load that with an added_tokens_decoder, the reference's vocab_view neither).
"""

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("sentencepiece", reason="python3-sentencepiece is not installed")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))

import arch_fixture as af  # noqa: E402
import tok_fixture as tf  # noqa: E402
import tokenizer_eval as te  # noqa: E402

BUILD = os.environ.get("MM_BUILD_DIR", os.path.join(REPO, "build"))
VOCAB_DUMP = os.path.join(BUILD, "tests", "vocab_dump")
TOK_DUMP = os.path.join(BUILD, "tests", "tok_dump")
LLAMA = os.path.join(REPO, "tests", "fixtures", "archs", "llama3")
# a command to run vocab_dump under, e.g. valgrind as tests/run gives the unit programs (it must exit
# non-zero when it finds a problem)
WRAPPER = shlex.split(os.environ.get("MM_UNIT_WRAPPER", ""))


@pytest.fixture(scope="module")
def m(tmp_path_factory):
    assert os.path.exists(VOCAB_DUMP), f"{VOCAB_DUMP} not built (ninja -C {BUILD})"
    root = tmp_path_factory.mktemp("vocab")
    out = {}
    for i, kind in enumerate(tf.VARIANTS):
        d = os.path.join(str(root), kind)
        af.make(LLAMA, d, seed=i, dtype="bf16", max_layers=1)
        tf.apply_variant(d, kind, seed=i)
        out[kind] = d
    return out


def vocab_size(folder):
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return te.config_vocab_size(json.load(f))


def run(tmp_path, folders, base, source, tokens=(), name="out", chat=None):
    """vocab_dump over models {ref: folder} (config order): (returncode, JSON or None, stderr, outdir)."""
    refs = list(folders)
    if source in ("base", "union"):
        src = source
    else:
        ref = source if isinstance(source, str) else source[0]
        folder = folders[ref] if ref in folders else source[1]
        src = {"ref": ref, "folder": folder, "model": refs.index(ref) if ref in folders else -1}
    spec = {"models": [{"ref": r, "folder": folders[r], "vocab_size": vocab_size(folders[r])} for r in refs],
            "base": refs.index(base), "source": src, "tokens": list(tokens)}
    if chat is not None:
        spec["chat_template"] = chat
    outdir = os.path.join(str(tmp_path), name)
    os.makedirs(outdir)
    spec_path = outdir + ".json"
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    r = subprocess.run(WRAPPER + [VOCAB_DUMP, spec_path, outdir], capture_output=True, timeout=300)
    got = json.loads(r.stdout) if r.returncode == 0 else None
    return r.returncode, got, r.stderr.decode(errors="replace"), outdir


def reference(folders, base, source, tokens=()):
    cfg = {"base_model": base, "tokenizer": {"source": source if isinstance(source, str) else source[0],
                                             "tokens": {t: {"source": base} for t in tokens}}}
    resolve = (lambda ref: source[1] if ref == source[0] else ref) if isinstance(source, tuple) else None
    return te.build_vocabulary(cfg, folders, resolve=resolve)


def tok_dump(folder):
    r = subprocess.run([TOK_DUMP, folder], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return json.loads(r.stdout)


def check(tmp_path, folders, base, source, tokens=(), chat=None):
    """vocab_dump against build_vocabulary, and the served files read back. Returns (ours, reference)."""
    rc, got, err, outdir = run(tmp_path, folders, base, source, tokens, chat=chat)
    assert rc == 0, err
    out = reference(folders, base, source, tokens)
    assert list(out.vocab.values()) == list(range(len(out.vocab)))
    assert got["vocab"] == list(out.vocab)
    assert got["added"] == [dict(id=i, **t.state()) for i, t in out.added.items()]
    assert got["stripped"] == list(out.stripped)
    for ref in folders:
        assert got["perms"][ref] == [out.perms[ref].get(i, -2) for i in range(len(out.vocab))], ref
    if "files_error" in got:
        return got, out
    assert "tokenizer_config.json" in got["files"] or out.donor_view.source == "tokenizer.model"
    template = None
    if chat is not None:
        template = te.ChatTemplate("inline", chat)
    assert te.check_served(outdir, te.expected_served(out, template)) == []
    mine = tok_dump(outdir)
    assert mine["tokens"] == list(out.vocab)
    assert mine["added"] == [{"id": i, "content": t.content, "special": t.special, "single_word": t.single_word,
                              "lstrip": t.lstrip, "rstrip": t.rstrip, "normalized": t.normalized}
                             for i, t in out.added.items()]
    return got, out


def pick(m, *kinds):
    return {m[k]: m[k] for k in kinds}


TOKENS = ("zq", "the", "<|im_start|>", "<new tok>")

CASES = {
    # (models in config order, base, source)
    "base-alone": (("base",), "base", "base"),
    "base-stripped": (("unused", "chatml", "base"), "unused", "base"),
    "base-reordered": (("reordered", "base", "padded"), "reordered", "base"),
    "union-bpe": (("base", "chatml", "reordered", "padded", "unused"), "base", "union"),
    "union-stripped-base": (("chatml", "unused", "reordered"), "unused", "union"),
    "union-padded-base": (("padded", "chatml"), "padded", "union"),
    "union-with-spm": (("base", "spm-user", "spm-bpe", "spm-unigram"), "base", "union"),
    "union-spm-bpe-base": (("spm-bpe", "chatml", "spm-user"), "spm-bpe", "union"),
    "model-chatml": (("base", "chatml", "unused"), "base", "chatml"),
    "model-is-stripped-base": (("unused", "base"), "unused", "unused"),
    "model-spm-bpe": (("base", "spm-bpe"), "base", "spm-bpe"),
    "model-spm-user": (("base", "spm-user"), "base", "spm-user"),
    "model-spm-unigram": (("base", "spm-unigram"), "base", "spm-unigram"),
    "base-spm-unigram": (("spm-unigram", "base"), "spm-unigram", "base"),
}


@pytest.mark.parametrize("tokens", [(), TOKENS], ids=["plain", "tokens"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_vocabulary_permutations_and_served_files_match_the_reference(m, tmp_path, case, tokens):
    kinds, base, source = CASES[case]
    got, out = check(tmp_path, pick(m, *kinds), m[base], source if source in ("base", "union") else m[source], tokens)
    unigram_donor = out.donor_view.source == "tokenizer.model" and out.donor_view.backend.spm.model_type == 1
    if unigram_donor and (tokens or source == "union"):
        assert "Unigram sentencepiece" in got["files_error"]
    else:
        assert "files_error" not in got, got.get("files_error")


def test_source_outside_the_merge(m, tmp_path):
    got, out = check(tmp_path, pick(m, "base", "padded"), m["base"], ("elsewhere", m["chatml"]), TOKENS)
    assert got["donor"] == -1 and got["donor_folder"] == m["chatml"]
    assert list(out.vocab)[96:98] == list(tf.CHATML)


def test_chat_template_is_served(m, tmp_path):
    chat = "{% for x in messages %}{{ x['content'] }}{% endfor %} served"
    got, _ = check(tmp_path, pick(m, "chatml", "base"), m["chatml"], "union", chat=chat)
    assert "chat_template.jinja" in got["files"]


def test_model_without_tokenizer_uses_the_base_vocabulary(m, tmp_path):
    bare = os.path.join(str(tmp_path), "bare")
    os.makedirs(bare)
    with open(os.path.join(bare, "config.json"), "w") as f:
        json.dump({"vocab_size": 90}, f)
    got, out = check(tmp_path, {m["chatml"]: m["chatml"], bare: bare, m["reordered"]: m["reordered"]}, m["chatml"],
                     "union")
    assert got["perms"][bare][:90] == list(range(90)) and -2 in got["perms"][bare]


# ---- errors ----------------------------------------------------------------------------------------------

def tok_folder(root, name, vocab, merges=(), vocab_size=None, added=()):
    folder = os.path.join(str(root), name)
    os.makedirs(folder)
    tj = {"version": "1.0", "added_tokens": [dict(tf.special_token(t), id=i) for i, t in added],
          "model": {"type": "BPE", "vocab": vocab, "merges": [list(x) for x in merges]}}
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(tj, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"vocab_size": vocab_size} if vocab_size is not None else {}, f)
    return folder


def refused(tmp_path, folders, base, source, name="out"):
    """vocab_dump must fail where the reference raises VocabError; returns the message."""
    with pytest.raises(te.VocabError):
        out = reference(folders, base, source)
        if out is not None and max(out.vocab.values()) >= len(out.vocab):
            # build_vocabulary leaves holes to remap_embedding (mergekit: IndexError)
            raise te.VocabError("holes")
    rc, _, err, _ = run(tmp_path, folders, base, source, name=name)
    assert rc == 1 and err
    return err


def test_base_whose_tokenizer_json_does_not_parse(m, tmp_path):
    bad = os.path.join(str(tmp_path), "bad")
    shutil.copytree(m["base"], bad)
    with open(os.path.join(bad, "tokenizer.json"), "w") as f:
        f.write('{"version": "1.0", "model": ')
    err = refused(tmp_path, {bad: bad, m["chatml"]: m["chatml"]}, bad, "union")
    assert f"tokenizer of model {bad}" in err and "tokenizer.json" in err


def test_sentencepiece_base_that_needs_stripping(m, tmp_path):
    spm = os.path.join(str(tmp_path), "spm")
    shutil.copytree(m["spm-bpe"], spm)
    with open(os.path.join(spm, "config.json")) as f:
        cfg = json.load(f)
    cfg["vocab_size"] = 90
    with open(os.path.join(spm, "config.json"), "w") as f:
        json.dump(cfg, f)
    err = refused(tmp_path, {spm: spm, m["base"]: m["base"]}, spm, "base")
    assert f"base model {spm}" in err and "BPE tokenizer.json" in err and "vocab_size 90" in err


def test_kept_merge_whose_product_is_stripped(tmp_path):
    base = tok_folder(tmp_path, "base", {"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")], vocab_size=2)
    err = refused(tmp_path, {base: base}, base, "base")
    assert "'ab'" in err and "merge 'a' 'b'" in err


def test_stripping_drops_merges_with_a_stripped_part(tmp_path):
    vocab = {"<s>": 0, "a": 1, "b": 2, "ab": 3, "ad": 4, "d": 5}
    base = tok_folder(tmp_path, "base", vocab, merges=[("a", "b"), ("a", "d")], vocab_size=5,
                      added=[(0, "<s>"), (6, "<x>")])
    other = tok_folder(tmp_path, "other", {"<s>": 0, "d": 1}, vocab_size=2, added=[(0, "<s>")])
    got, out = check(tmp_path, {base: base, other: other}, base, "union", ("zz",))
    assert got["stripped"] == ["d", "<x>"]
    rc, _, err, outdir = run(tmp_path, {base: base, other: other}, base, "base", name="served")
    with open(os.path.join(outdir, "tokenizer.json")) as f:
        assert json.load(f)["model"]["merges"] == [["a", "b"]]


def test_base_without_tokenizer(m, tmp_path):
    bare = os.path.join(str(tmp_path), "bare")
    os.makedirs(bare)
    err = refused(tmp_path, {bare: bare, m["base"]: m["base"]}, bare, "union")
    assert f"base model {bare}" in err and "no tokenizer" in err


def test_union_whose_ids_have_holes(tmp_path):
    # the base's ids skip 1; its vocab_size 3 strips nothing, and no model adds a token to fill the hole
    base = tok_folder(tmp_path, "base", {"a": 0, "c": 2}, vocab_size=3)
    other = tok_folder(tmp_path, "other", {"c": 0, "a": 1}, vocab_size=2)
    err = refused(tmp_path, {base: base, other: other}, base, "union")
    assert "none at id 1" in err and "IndexError" in err
