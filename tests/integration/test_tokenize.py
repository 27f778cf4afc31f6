"""formats/tokencode.c (text to ids, issue 13: mergekit-moe's router prompts) against references that
are not our program: run through the test-only program tok_encode (tests/unit/tok_encode.c).

- sentencepiece-only folders (tok_fixture's spm-unigram, spm-bpe, spm-user): sentencepiece itself
  encodes each text, set up as transformers 5's generic pipeline for a bare tokenizer.model has it
  (SpmConverter.build_tokenizer_from_spm_proto: spaces replaced by ▁, no dummy prefix, no whitespace
  removal), with the folder's added tokens (trainer_spec's unk/bos/eos pieces, the CONTROL and
  USER_DEFINED pieces) split out of the text first, as the tokenizers library's AddedVocabulary does.
- tokenizer.json with a BPE model: tests/reference/bpe_encode.py, an independent Python encoder, on the
  byte-level fixtures (tok_fixture base and chatml; the same vocabulary with Llama 3's and Qwen 2's
  Split patterns and ignore_merges, with add_prefix_space, with the whole byte alphabet), added tokens
  with lstrip, rstrip, single_word and normalized set, a Metaspace + byte_fallback tokenizer (Llama 2 /
  Mistral style) and mm-mkmodel's tokenizer.json (Whitespace).
- refusals: a pattern the encoder does not know, a pre-tokenizer and a normalizer it does not support,
  text NFC would change (NFC is checked, not applied), text not UTF-8.
"""

import json
import os
import random
import subprocess
import sys

import pytest

spm = pytest.importorskip("sentencepiece", reason="python3-sentencepiece is not installed")
from sentencepiece import sentencepiece_model_pb2 as pb  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
import bpe_encode  # noqa: E402
from spm_encode import SpmReference  # noqa: E402
import tok_fixture as tf  # noqa: E402

BUILD = os.environ.get("MM_BUILD_DIR", os.path.join(REPO, "build"))
TOK_ENCODE = os.path.join(BUILD, "tests", "tok_encode")
MKMODEL = os.environ.get("MM_MKMODEL_BIN", os.path.join(BUILD, "tools", "mm-mkmodel"))

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")

FIXED = [tf.TEXT, "the river runs", " hello  world ", "  leading and trailing  ", "numbers 7, 12 and 2048 1234567",
         "über naïve café 日本語 😀 ½ ٣٤٥", "a\tb\nc\r\nd\n\n\ne   \n  f", "Hello World's THE'S it'll don't I'M",
         "!!!??  ...\r\n\r\nz", "x  y", " ", "", "'s's 'S 'ſ", "tab\there", "<s>the</s> river",
         "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n", "a<s>b <s> c</s></s>",
         "<unk> <pad> <|im_end|><|im_start|>", "the river, rivers  river_x   <|im_start|>  x <|im_end|>  y", "\u00a0nbsp\u2003em space\u3000ideographic"]
POOL = list("abcdefghijklmnopqrstuvwxyz     ABCXYZ0123456789'.,;:!?-_()\n\t\r") + \
    ["é", "ß", "ü", "日", "本", "😀", "½", "٣", "\u00a0", "\u2003", "ǅ", "'s", "'LL", "<s>", "</s>", "<|im_start|>"]


def random_texts(seed, n=60):
    rng = random.Random(seed)
    return ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 40))) for _ in range(n)]


TEXTS = FIXED + random_texts(1)


def encode(folder, texts):
    r = subprocess.run([TOK_ENCODE, str(folder), *texts], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    lines = r.stdout.decode().splitlines()
    assert len(lines) == len(texts)
    return [json.loads(x) for x in lines]


def encode_fails(folder, texts):
    r = subprocess.run([TOK_ENCODE, str(folder), *texts], capture_output=True, timeout=60)
    assert r.returncode == 1
    return r.stderr.decode(errors="replace")


@pytest.fixture(scope="module", autouse=True)
def built():
    assert os.path.exists(TOK_ENCODE), f"{TOK_ENCODE} not built (ninja -C {BUILD})"


# ---- sentencepiece --------------------------------------------------------------------------------

SPM_KINDS = {"spm-unigram": ("unigram", (), ()), "spm-bpe": ("bpe", (), ()),
             "spm-user": ("unigram", tf.CHATML, ("<pad>",))}


@pytest.fixture(scope="module")
def spm_folders(tmp_path_factory):
    out = {}
    for kind, (model_type, user, control) in SPM_KINDS.items():
        folder = tmp_path_factory.mktemp(kind)
        data = tf.train_spm(model_type, user, control)
        (folder / "tokenizer.model").write_bytes(data)
        out[kind] = (folder, SpmReference(data))
    return out


@pytest.mark.parametrize("kind", sorted(SPM_KINDS))
def test_sentencepiece_folders_encode_as_sentencepiece(spm_folders, kind):
    folder, ref = spm_folders[kind]
    texts = TEXTS + random_texts(2)
    got = encode(folder, texts)
    for text, ids in zip(texts, got):
        assert ids == ref.encode(text), repr(text)


def test_sentencepiece_byte_fallback(tmp_path):
    """A unigram and a BPE model with byte_fallback: characters no piece covers become <0xNN> pieces."""
    for model_type in ("unigram", "bpe"):
        import io
        w = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter([ln for ln in tf.TEXT.split("\n") if ln]), model_writer=w, vocab_size=400,
            model_type=model_type, character_coverage=1.0, num_threads=1, minloglevel=2, byte_fallback=True,
            normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "tokenizer.model").write_bytes(w.getvalue())
        ref = SpmReference(w.getvalue())
        got = encode(folder, TEXTS)
        for text, ids in zip(TEXTS, got):
            assert ids == ref.encode(text), (model_type, text)


def test_sentencepiece_charsmap_refused(tmp_path):
    import io
    w = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter([ln for ln in tf.TEXT.split("\n") if ln]), model_writer=w,
                                   vocab_size=96, num_threads=1, minloglevel=2)  # nmt_nfkc by default
    (tmp_path / "tokenizer.model").write_bytes(w.getvalue())
    assert "precompiled_charsmap" in encode_fails(tmp_path, ["x"])


# ---- tokenizer.json, BPE --------------------------------------------------------------------------

def _write(folder, vocab, merges, added, mutate=None):
    tf.write_tokenizer(str(folder), vocab, merges, added)
    if mutate:
        path = folder / "tokenizer.json"
        j = json.loads(path.read_text(encoding="utf-8"))
        mutate(j)
        path.write_text(json.dumps(j, ensure_ascii=False), encoding="utf-8")
    return folder


def _split(pattern, ignore_merges):
    def mutate(j):
        j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
        j["model"]["ignore_merges"] = ignore_merges
    return mutate


def _full_alphabet(vocab):
    """The vocabulary with every byte character (unknown characters would hide where words split)."""
    vocab = dict(vocab)
    for ch in bpe_encode.BYTES.values():
        vocab.setdefault(ch, len(vocab))
    return vocab


def _metaspace(j):
    """A Llama 2 style tokenizer.json: Metaspace + BPE with byte fallback over ▁-words."""
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    j["normalizer"] = None
    model = j["model"]
    vocab = {t: i for i, t in enumerate(tf.SPECIALS)}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    words = [w for w in tf.TEXT.replace("\n", " ").split(" ") if w]
    for ch in sorted({c for w in words for c in "▁" + w}):
        vocab.setdefault(ch, len(vocab))
    merges = []
    for w in sorted(set(words)):  # each word merged left to right: ▁w, ▁wo, ...
        cur = "▁"
        for ch in w:
            if (cur + ch) not in vocab:
                vocab[cur + ch] = len(vocab)
                merges.append([cur, ch])
            cur += ch
    model.update(vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=True)


@pytest.fixture(scope="module")
def bpe_folders(tmp_path_factory):
    vocab, merges, added = tf.base_tokenizer()
    chat = added + [(tf.VOCAB + i, tf.special_token(t)) for i, t in enumerate(tf.CHATML)]
    full = _full_alphabet(vocab)
    full_chat = added + [(len(full) + i, tf.special_token(t)) for i, t in enumerate(tf.CHATML)]
    flagged = added + [
        (len(full), dict(tf.special_token("<|im_start|>"), lstrip=True)),
        (len(full) + 1, dict(tf.special_token("<|im_end|>"), rstrip=True)),
        (len(full) + 2, dict(tf.special_token("river"), single_word=True, normalized=True, special=False)),
        (len(full) + 3, dict(tf.special_token(" the"), normalized=True, special=False))]
    specs = {
        "base": (vocab, added, None),
        "chatml": (vocab, chat, None),
        "prefix-space": (vocab, added, lambda j: j["pre_tokenizer"].update(add_prefix_space=True)),
        "full-gpt2": (full, full_chat, None),
        "full-llama3": (full, full_chat, _split(LLAMA3, True)),
        "full-qwen2": (full, full_chat, _split(QWEN2, False)),
        "metaspace": (vocab, added, _metaspace),
        "added-flags": (full, flagged, None),
    }
    out = {}
    for name, (v, a, mutate) in specs.items():
        out[name] = _write(tmp_path_factory.mktemp(name), v, merges, a, mutate)
    mk = tmp_path_factory.mktemp("mkmodel") / "m"
    subprocess.run([MKMODEL, str(mk), "--vocab", "80"], check=True, capture_output=True)
    out["mkmodel"] = mk
    return out


@pytest.mark.parametrize("name", ["base", "chatml", "prefix-space", "full-gpt2", "full-llama3", "full-qwen2",
                                  "metaspace", "added-flags", "mkmodel"])
def test_bpe_folders_encode_as_the_reference(bpe_folders, name):
    folder = bpe_folders[name]
    texts = TEXTS + random_texts(3)
    ref = bpe_encode.Encoder(str(folder))
    got = encode(folder, texts)
    for text, ids in zip(texts, got):
        assert ids == ref.encode(text), repr(text)


def test_refusals(tmp_path):
    vocab, merges, added = tf.base_tokenizer()
    unknown = tmp_path / "re"
    unknown.mkdir()
    _write(unknown, vocab, merges, added, _split(r"\w+", False))
    assert "pre_tokenizer.pretokenizers[0].pattern.Regex" in encode_fails(unknown, ["x"])
    bert = tmp_path / "bert"
    bert.mkdir()
    _write(bert, vocab, merges, added, lambda j: j.update(pre_tokenizer={"type": "BertPreTokenizer"}))
    assert 'pre_tokenizer.type: "BertPreTokenizer"' in encode_fails(bert, ["x"])
    lower = tmp_path / "lower"
    lower.mkdir()
    _write(lower, vocab, merges, added, lambda j: j.update(normalizer={"type": "Lowercase"}))
    assert 'normalizer.type: "Lowercase"' in encode_fails(lower, ["x"])
    nfc = tmp_path / "nfc"
    nfc.mkdir()
    _write(nfc, vocab, merges, added, lambda j: j.update(normalizer={"type": "NFC"}))
    assert "may change under NFC" in encode_fails(nfc, ["cafe\u0301"])
    assert encode(nfc, ["caf\u00e9"]) == [bpe_encode.Encoder(str(nfc)).encode("caf\u00e9")]
    base = tmp_path / "base"
    base.mkdir()
    _write(base, vocab, merges, added)
    r = subprocess.run([TOK_ENCODE, str(base), b"ab\xffcd"], capture_output=True, timeout=60)
    assert r.returncode == 1 and b"byte 2: not UTF-8" in r.stderr
