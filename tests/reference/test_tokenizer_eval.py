"""Self-tests of the tokenizer-merging reference (tokenizer_eval.py) and of the tokenizer fixtures
(tok_fixture.py), on small cases worked out by hand: each rule of transformers' view of a tokenizer
folder, of mergekit's vocabulary construction, of PermutedEmbeddings (with torch's rounding), of the
output config and tokenizer files and of chat templates has a case that fails when the rule is done
differently. Run: /usr/bin/python3 -m pytest tests/reference
"""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arch_fixture as af  # noqa: E402
import config_eval as ce  # noqa: E402
import safetensors_io as st  # noqa: E402
import tok_fixture as tf  # noqa: E402
import tokenizer_eval as te  # noqa: E402
from tokenizer_eval import AddedToken, TokenCfg, VocabError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA = os.path.join(HERE, "..", "fixtures", "archs", "llama3")
MERGEKIT = "/work/.mirror/arcee-ai+mergekit/repo"

try:
    import sentencepiece as spm
except ImportError:  # the Debian package python3-sentencepiece (tools/deps.sh)
    spm = None
try:
    import jinja2  # noqa: F401
except ImportError:  # the Debian package python3-jinja2 (tools/deps.sh)
    jinja2 = None
needs_spm = pytest.mark.skipif(spm is None, reason="python3-sentencepiece is not installed (apt-get install "
                                                     "python3-sentencepiece)")
needs_jinja = pytest.mark.skipif(jinja2 is None, reason="python3-jinja2 is not installed (apt-get install "
                                                         "python3-jinja2)")


def special(content, **kw):
    return dict({"content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
                 "special": True}, **kw)


def tok_folder(root, name, vocab, added=(), merges=(), vocab_size=None, tc=None, files=None, config=None):
    """A model folder with a BPE tokenizer.json: vocab {token: id}; added [(id, content or flags dict)];
    config.json {"vocab_size": n} (or `config`); tokenizer_config.json = tc when given."""
    folder = os.path.join(str(root), name)
    os.makedirs(folder)
    entries = [dict(id=i, **(special(t) if isinstance(t, str) else t)) for i, t in added]
    tj = {"version": "1.0", "added_tokens": entries,
          "model": {"type": "BPE", "vocab": vocab, "merges": [list(m) for m in merges]}}
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(tj, f)
    cfg = config if config is not None else ({"vocab_size": vocab_size} if vocab_size is not None else {})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    if tc is not None:
        with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
            json.dump(tc, f)
    for fname, content in (files or {}).items():
        with open(os.path.join(folder, fname), "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
    return folder


def contents(added):
    return {i: t.content for i, t in added.items()}


# ---- transformers' view: tokenizer.json ------------------------------------------------------------

def test_added_tokens_take_ids_in_file_order_not_their_stored_ids(tmp_path):
    # from_file re-adds the list in order: <x> is new (-> model size 3), b is a model token (keeps 1),
    # <y> is new (-> 4); the stored ids 9, 5, 4 only warn
    d = tok_folder(tmp_path, "m", {"a": 0, "b": 1, "c": 2}, added=[(9, "<x>"), (5, "b"), (4, "<y>")])
    v = te.vocab_view(d)
    assert v.vocab == {"a": 0, "b": 1, "c": 2, "<x>": 3, "<y>": 4}
    assert contents(v.added) == {1: "b", 3: "<x>", 4: "<y>"}
    assert v.vocab_size == 3 and len(v) == 5
    assert list(v.vocab) == ["a", "b", "c", "<x>", "<y>"]   # id order


def test_new_id_is_the_model_size_even_over_a_hole(tmp_path):
    # BPE's get_vocab_size is the number of entries (2), not max id + 1: <x> gets 2 although c has 2;
    # then max added id 2 >= model size 2 -> <y> gets 3. len = 2 + 2 added - 0 in the model = 4
    d = tok_folder(tmp_path, "m", {"a": 0, "c": 2}, added=[(2, "<x>"), (3, "<y>")])
    v = te.vocab_view(d)
    assert v.backend.token_to_id("<x>") == 2 and v.backend.model_vocab["c"] == 2
    assert v.vocab == {"a": 0, "c": 2, "<x>": 2, "<y>": 3}
    assert len(v) == 4 and v.vocab_size == 2
    # next_id is computed once per add_tokens call: in one call (a file's list) "c" keeps 2 and <x>
    # gets 2 too; in two calls (mergekit's union adds one token per call) the max added id 2 >= the
    # model size gives <x> 3, where len(tokenizer) would say 2
    d = tok_folder(tmp_path, "m2", {"a": 0, "c": 2}, added=[(2, "c"), (3, "<x>")])
    assert te.vocab_view(d).vocab == {"a": 0, "c": 2, "<x>": 2}
    b = te.Backend({"a": 0, "c": 2})
    b.add_tokens([AddedToken.py("c")])
    assert len(b) == 2
    b.add_tokens([AddedToken.py("<x>")])
    assert b.get_vocab() == {"a": 0, "c": 2, "<x>": 3}


def test_add_tokens_skips_identical_and_replaces_flags_in_place():
    b = te.Backend({"a": 0, "b": 1})
    t = AddedToken("<x>", normalized=False, special=True)
    assert b.add_tokens([t]) == 1 and b.token_to_id("<x>") == 2
    assert b.add_tokens([t]) == 0                                   # identical: skipped
    t2 = AddedToken("<x>", lstrip=True, normalized=False, special=True)
    assert b.add_tokens([t2]) == 1 and b.token_to_id("<x>") == 2    # same id, new flags
    assert b.added_r[2] == t2
    assert b.add_tokens([AddedToken.py("a")]) == 1                  # a model token keeps its id
    assert b.added_r[0] == AddedToken("a", normalized=True, special=False)
    assert len(b) == 3 and b.add_tokens([AddedToken("")]) == 0
    assert AddedToken.py("s", special=True).normalized is False     # normalized defaults to not special


def test_tokenizer_config_adds_decoder_entries_then_special_tokens(tmp_path):
    # tokenizer.json has <s> (3). The config's added_tokens_decoder also names <z> (stored at 50): it is
    # queued and gets the next id 4. Then the named special tokens in SPECIAL_TOKENS_ATTRIBUTES order
    # (bos <s> is already added; pad "b" is a model token -> added at 1, special; mask <mask> -> 5),
    # then model-specific *_token keys (image_token <img> -> 6, though listed first), then
    # extra_special_tokens (<e1> -> 7). A str becomes AddedToken(special=True, normalized=False).
    tc = {"image_token": "<img>", "added_tokens_decoder": {"3": special("<s>"), "50": special("<z>")},
          "bos_token": "<s>", "pad_token": "b", "mask_token": "<mask>", "extra_special_tokens": ["<e1>"],
          "tokenizer_class": "PreTrainedTokenizerFast"}
    d = tok_folder(tmp_path, "m", {"a": 0, "b": 1, "c": 2}, added=[(3, "<s>")], tc=tc)
    v = te.vocab_view(d)
    assert v.vocab == {"a": 0, "b": 1, "c": 2, "<s>": 3, "<z>": 4, "<mask>": 5, "<img>": 6, "<e1>": 7}
    assert contents(v.added) == {1: "b", 3: "<s>", 4: "<z>", 5: "<mask>", 6: "<img>", 7: "<e1>"}
    assert v.added[1] == AddedToken("b", normalized=False, special=True)
    assert len(v) == 8 and v.vocab_size == 3
    assert v.special["pad_token"] == "b" and v.special["image_token"] == "<img>"


def test_special_token_as_added_token_dict_keeps_its_flags(tmp_path):
    tc = {"added_tokens_decoder": {}, "eos_token": {"__type": "AddedToken", "content": "<e>", "lstrip": True,
                                                    "normalized": False, "rstrip": False, "single_word": False,
                                                    "special": True}}
    d = tok_folder(tmp_path, "m", {"a": 0}, tc=tc)
    v = te.vocab_view(d)
    assert v.added == {1: AddedToken("<e>", lstrip=True, normalized=False, special=True)}


def test_named_added_token_that_is_not_special_is_made_special(tmp_path):
    # added_tokens_decoder has <n> with special=False. Named as eos_token, the queued token is made
    # special before add_tokens; not named, it stays as it is.
    flags = special("<n>", special=False)
    d = tok_folder(tmp_path, "m", {"a": 0}, tc={"added_tokens_decoder": {"1": flags}, "eos_token": "<n>"})
    assert te.vocab_view(d).added[1] == AddedToken("<n>", normalized=False, special=True)
    d = tok_folder(tmp_path, "m2", {"a": 0}, tc={"added_tokens_decoder": {"1": flags}})
    assert te.vocab_view(d).added[1] == AddedToken("<n>", normalized=False, special=False)
    # an extra special token saved as {"__type": "AddedToken", ...} keeps its flags
    d = tok_folder(tmp_path, "m3", {"a": 0}, tc={"added_tokens_decoder": {},
                                                  "extra_special_tokens": [dict(flags, __type="AddedToken")]})
    assert te.vocab_view(d).added[1] == AddedToken("<n>", normalized=False, special=False)


def test_legacy_special_tokens_map_and_added_tokens_json(tmp_path):
    # no added_tokens_decoder in the config: special_tokens_map.json gives bos (a dict -> special) and
    # eos "c"; added_tokens.json adds <new> (3, not special: normalized) and <bos> (4, special: a named
    # token); then eos "c" is added at its model id 2, special
    files = {"special_tokens_map.json": {"bos_token": {"content": "<bos>", "lstrip": False, "normalized": False,
                                                       "rstrip": False, "single_word": False},
                                         "eos_token": "c"},
             "added_tokens.json": {"<new>": 3, "<bos>": 4}}
    d = tok_folder(tmp_path, "m", {"a": 0, "b": 1, "c": 2}, tc={"model_max_length": 8}, files=files)
    v = te.vocab_view(d)
    assert v.vocab == {"a": 0, "b": 1, "c": 2, "<new>": 3, "<bos>": 4}
    assert v.added[3] == AddedToken("<new>", normalized=True, special=False)
    assert v.added[4] == AddedToken("<bos>", normalized=False, special=True)
    assert v.added[2] == AddedToken("c", normalized=False, special=True)


def test_chat_template_files_override_the_config(tmp_path):
    d = tok_folder(tmp_path, "a", {"a": 0}, tc={"chat_template": "config {{ x }}"})
    assert te.vocab_view(d).chat_template == "config {{ x }}"
    d = tok_folder(tmp_path, "b", {"a": 0}, tc={"chat_template": "config"},
                   files={"chat_template.jinja": "file {{ x }}"})
    assert te.vocab_view(d).chat_template == "file {{ x }}"
    d = tok_folder(tmp_path, "c", {"a": 0}, tc={"chat_template": [{"name": "default", "template": "D"},
                                                                    {"name": "tool", "template": "T"}]})
    assert te.vocab_view(d).chat_template == {"default": "D", "tool": "T"}
    d = tok_folder(tmp_path, "d", {"a": 0}, files={"chat_template.jinja": "F"})
    os.makedirs(os.path.join(d, "chat_templates"))
    with open(os.path.join(d, "chat_templates", "rag.jinja"), "w") as f:
        f.write("R")
    assert te.vocab_view(d).chat_template == {"default": "F", "rag": "R"}


def test_unigram_vocab_is_indexed_and_strict_parsing(tmp_path):
    d = os.path.join(str(tmp_path), "u")
    os.makedirs(d)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump({"added_tokens": [dict(id=0, **special("<unk>"))],
                   "model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["▁a", -1.0], ["b", -2.0]]}}, f)
    v = te.vocab_view(d)
    assert v.vocab == {"<unk>": 0, "▁a": 1, "b": 2} and len(v) == 3
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump({"added_tokens": [{"id": 3, "content": "<x>", "special": True}],
                   "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}, f)
    with pytest.raises(VocabError, match="lacks boolean single_word, lstrip, rstrip, normalized"):
        te.vocab_view(d)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(VocabError, match="not readable as JSON"):
        te.vocab_view(d)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump({"model": {"type": "Sparkle", "vocab": {}}}, f)
    with pytest.raises(VocabError, match="unknown model type"):
        te.vocab_view(d)
    os.remove(os.path.join(d, "tokenizer.json"))
    assert te.vocab_view(d) is None


# ---- transformers' view: tokenizer.model -----------------------------------------------------------

def _pb_varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _pb_field(num, wire, payload):
    key = _pb_varint(num << 3 | wire)
    if wire == 0:
        return key + _pb_varint(payload & ((1 << 64) - 1))
    if wire == 5:
        return key + struct.pack("<f", payload)
    return key + _pb_varint(len(payload)) + payload


def spm_bytes(pieces, spec):
    """A ModelProto by hand: pieces [(piece, score, type)] (field 1: piece 1, score 2, type 3 unless
    NORMAL), trainer_spec {field number: int} (field 2)."""
    body = b""
    for piece, score, typ in pieces:
        p = _pb_field(1, 2, piece.encode("utf-8")) + _pb_field(2, 5, score)
        if typ != te.SPM_NORMAL:
            p += _pb_field(3, 0, typ)
        body += _pb_field(1, 2, p)
    ts = b"".join(_pb_field(n, 0, v) for n, v in sorted(spec.items()))
    return body + _pb_field(2, 2, ts)


def test_spm_view_from_a_hand_made_model(tmp_path):
    # unk 0 (UNKNOWN), <s> 1 and <c> 4 (CONTROL: special), <u> 3 (USER_DEFINED: not special), the
    # rest NORMAL / BYTE. bos/eos/unk_token default to the proto's pieces, eos_id -1: no eos token.
    # trainer_spec: model_type (3) = 1 unigram, unk_id (40) = 0, bos_id (41) = 1, eos_id (42) = -1
    pieces = [("<unk>", 0.0, te.SPM_UNKNOWN), ("<s>", 0.0, te.SPM_CONTROL), ("▁a", -1.5, te.SPM_NORMAL),
              ("<u>", 0.0, te.SPM_USER_DEFINED), ("<c>", 0.0, te.SPM_CONTROL), ("<0x41>", 0.0, te.SPM_BYTE)]
    raw = spm_bytes(pieces, {3: 1, 40: 0, 41: 1, 42: -1})
    d = os.path.join(str(tmp_path), "spm")
    os.makedirs(d)
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        f.write(raw)
    m = te.read_spm(os.path.join(d, "tokenizer.model"))
    assert m.pieces == pieces
    assert (m.model_type, m.unk_id, m.bos_id, m.eos_id, m.pad_id, m.bos_piece) == (1, 0, 1, -1, -1, "<s>")
    v = te.vocab_view(d)
    assert v.vocab == {p: i for i, (p, _, _) in enumerate(pieces)} and v.vocab_size == 6 and len(v) == 6
    assert v.added == {0: AddedToken("<unk>", normalized=False, special=True),
                       1: AddedToken("<s>", normalized=False, special=True),
                       3: AddedToken("<u>", normalized=False, special=False),
                       4: AddedToken("<c>", normalized=False, special=True)}
    assert v.special == {"bos_token": "<s>", "unk_token": "<unk>"}
    # a bos piece the model lacks: the bos_token gets a new id (len)
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        f.write(spm_bytes(pieces, {42: 2}))      # eos_id 2 -> eos_token "</s>", not a piece: id 6
    v = te.vocab_view(d)
    assert v.vocab["</s>"] == 6 and len(v) == 7 and v.vocab_size == 6
    # a config added_tokens_decoder entry renames the piece at its id (a BPE model; a Unigram one does
    # not load in transformers)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"added_tokens_decoder": {"2": special("<|im_start|>")}}, f)
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        f.write(spm_bytes(pieces, {3: 2}))
    v = te.vocab_view(d)
    assert v.vocab["<|im_start|>"] == 2 and "▁a" not in v.vocab
    assert len(v) == 7 and v.vocab["</s>"] == 6    # eos_id defaults to 2 in the proto: eos_token </s>, new
    assert v.added[2] == AddedToken("<|im_start|>", normalized=False, special=True)
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        f.write(spm_bytes(pieces, {3: 1}))
    with pytest.raises(VocabError, match="Unigram"):
        te.vocab_view(d)
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        f.write(spm_bytes(pieces, {3: 1})[:-3])
    with pytest.raises(VocabError):
        te.vocab_view(d)


@needs_spm
@pytest.mark.parametrize("kind", ["spm-unigram", "spm-bpe", "spm-user"])
def test_spm_reader_agrees_with_sentencepiece(tmp_path, kind):
    model_type = "bpe" if kind == "spm-bpe" else "unigram"
    user, control = (tf.CHATML, ("<pad>",)) if kind == "spm-user" else ((), ())
    raw = tf.train_spm(model_type, user, control)
    assert raw == tf.train_spm(model_type, user, control)           # deterministic
    path = os.path.join(str(tmp_path), "tokenizer.model")
    with open(path, "wb") as f:
        f.write(raw)
    sp = spm.SentencePieceProcessor(model_file=path)
    m = te.read_spm(path)
    assert len(m.pieces) == sp.get_piece_size() == tf.VOCAB
    assert m.model_type == (2 if model_type == "bpe" else 1)
    # (the processor's pad_id() is the id of a CONTROL piece named <pad>; transformers reads the proto)
    assert (m.unk_id, m.bos_id, m.eos_id, m.pad_id) == (sp.unk_id(), sp.bos_id(), sp.eos_id(), -1)
    for i, (piece, score, typ) in enumerate(m.pieces):
        assert piece == sp.id_to_piece(i) and np.float32(score) == np.float32(sp.get_score(i))
        assert (typ == te.SPM_CONTROL) == sp.is_control(i)
        assert (typ == te.SPM_UNKNOWN) == sp.is_unknown(i)
        assert (typ == te.SPM_BYTE) == sp.is_byte(i)
        assert (typ == te.SPM_USER_DEFINED) == (piece in user)
    v = te.vocab_view(str(tmp_path))
    assert v.vocab == {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    want = {sp.unk_id(), sp.bos_id(), sp.eos_id()} | {i for i in range(sp.get_piece_size()) if sp.is_control(i)}
    want |= {sp.piece_to_id(p) for p in user}
    assert set(v.added) == want
    assert all(v.added[sp.piece_to_id(p)].special is False for p in user)


# ---- vocab_size key ----------------------------------------------------------------------------------

def test_vocab_size_key():
    assert te.config_vocab_size({"vocab_size": 7}) == 7
    gemma3 = {"text_config": {"vocab_size": 9}, "vision_config": {}}
    assert te.vocab_key(gemma3) == "text_config.vocab_size" and te.config_vocab_size(gemma3) == 9
    assert te.config_vocab_size({"vocab_size": 7, "text_config": {"vocab_size": 9}}, "text_config.vocab_size") == 9
    assert te.config_vocab_size({}) is None
    te.set_config_vocab_size(gemma3, 16)
    assert gemma3["text_config"]["vocab_size"] == 16 and "vocab_size" not in gemma3
    cfg = {}
    te.set_config_vocab_size(cfg, 5)
    assert cfg == {"vocab_size": 5}


# ---- settings ----------------------------------------------------------------------------------------

def test_settings():
    assert te.tokenizer_settings({}) is None
    assert te.tokenizer_settings({"tokenizer_source": "base"}) == te.Settings("base", {}, None)
    s = te.tokenizer_settings({"tokenizer": {"tokens": {"<x>": {"source": "m", "force": True},
                                                        "<z>": {"source": {"kind": "zero"}},
                                                        "<t>": {"source": {"kind": "model_token", "model": "m",
                                                                           "token": "a"}}},
                                             "pad_to_multiple_of": 8}})
    assert s.source == "union" and s.pad_to_multiple_of == 8
    assert s.tokens == {"<x>": TokenCfg("m", True), "<z>": TokenCfg(te.ZERO),
                        "<t>": TokenCfg(te.ModelTokenSource("m", None, "a"))}
    bad = [({"tokenizer_source": "base", "tokenizer": {}}, "both"),
           ({"tokenizer": {"tokens": {"<x>": {"force": True}}}}, "needs a source"),
           ({"tokenizer": {"tokens": {"<x>": {"source": {"kind": "model_token", "model": "m", "token": "a",
                                                         "token_id": 1}}}}}, "exactly one"),
           ({"tokenizer": {"tokens": {"<x>": {"source": {"kind": "model_token", "model": "m"}}}}}, "exactly one"),
           ({"tokenizer": {"tokens": {"<x>": {"source": {"kind": "nope"}}}}}, "source must be"),
           ({"tokenizer": {"pad_to_multiple_of": 0}}, "positive"),
           ({"tokenizer": {"sauce": "union"}}, "unknown keys")]
    for cfg, msg in bad:
        with pytest.raises(VocabError, match=msg):
            te.tokenizer_settings(cfg)


# ---- build_vocabulary --------------------------------------------------------------------------------

def test_base_is_stripped_of_ids_at_or_above_vocab_size(tmp_path):
    # vocab_size 5: the model token d (5) and the added <x> (6) go; the merge a+d goes with d; the
    # product ad stays (its merge is gone, it is unreachable but kept, as mergekit keeps it)
    vocab = {"<s>": 0, "a": 1, "b": 2, "ab": 3, "ad": 4, "d": 5}
    base = tok_folder(tmp_path, "base", vocab, added=[(0, "<s>"), (6, "<x>")], merges=[("a", "b"), ("a", "d")],
                      vocab_size=5)
    other = tok_folder(tmp_path, "other", {"<s>": 0, "d": 1}, added=[(0, "<s>")], vocab_size=2)
    out = te.build_vocabulary({"base_model": base, "tokenizer_source": "base"}, {base: base, other: other})
    assert out.vocab == {"<s>": 0, "a": 1, "b": 2, "ab": 3, "ad": 4}
    assert sorted(out.stripped) == ["<x>", "d"]
    assert out.backend.model_json["merges"] == [["a", "b"]]
    assert contents(out.added) == {0: "<s>"}
    assert out.perms[other] == {0: 0, 1: -1, 2: -1, 3: -1, 4: -1}
    assert te.expected_vocab_size(out) == 5
    # without a vocab_size in config.json the fallback is len(get_vocab()): nothing to strip
    base2 = tok_folder(tmp_path, "base2", vocab, added=[(0, "<s>"), (6, "<x>")], merges=[("a", "b")])
    out = te.build_vocabulary({"base_model": base2, "tokenizer_source": "base"}, {base2: base2})
    assert len(out.vocab) == 7 and out.stripped == []


def test_stripping_refuses_what_mergekit_cannot_strip(tmp_path):
    # the product ab of a kept merge is stripped: from_str fails in mergekit
    base = tok_folder(tmp_path, "base", {"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")], vocab_size=2)
    with pytest.raises(VocabError, match="without its product"):
        te.build_vocabulary({"tokenizer_source": "base"}, {base: base})
    d = os.path.join(str(tmp_path), "uni")
    os.makedirs(d)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump({"added_tokens": [], "model": {"type": "Unigram", "vocab": [["a", 0.0], ["b", 0.0]]}}, f)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"vocab_size": 1}, f)
    with pytest.raises(VocabError, match="strips only BPE"):
        te.build_vocabulary({"tokenizer_source": "union"}, {d: d})


def union_models(tmp_path):
    """base: <s> a b (vocab_size 3). m2: <s> e c b f, <t> added at 5; vocab_size 4 (f and <t> out).
    m3: <s> g e, e an added token (lstrip) and <u> added at 3; no vocab_size in config.json, so the
    union uses the tokenizer's vocab_size 3 (without added tokens) and <u> is out."""
    base = tok_folder(tmp_path, "base", {"<s>": 0, "a": 1, "b": 2}, added=[(0, "<s>")], vocab_size=3)
    m2 = tok_folder(tmp_path, "m2", {"<s>": 0, "e": 1, "c": 2, "b": 3, "f": 4}, added=[(0, "<s>"), (5, "<t>")],
                    vocab_size=4)
    m3 = tok_folder(tmp_path, "m3", {"<s>": 0, "g": 1, "e": 2},
                    added=[(0, "<s>"), (2, special("e", lstrip=True)), (3, "<u>")])
    return base, m2, m3


def test_union_order_and_first_definition_wins(tmp_path):
    base, m2, m3 = union_models(tmp_path)
    cfg = {"base_model": base, "tokenizer_source": "union"}
    out = te.build_vocabulary(cfg, {m2: m2, base: base, m3: m3})
    # normal tokens: base's, then m2's in id order (e, c; b known), then m3's (g); e is an added token
    # (m3), so it waits for the second pass: c 3, g 4, then e 5 with m3's flags
    assert out.vocab == {"<s>": 0, "a": 1, "b": 2, "c": 3, "g": 4, "e": 5}
    assert out.added[3] == AddedToken("c", normalized=True, special=False)
    assert out.added[5] == AddedToken("e", lstrip=True, normalized=False, special=True)
    assert contents(out.added) == {0: "<s>", 3: "c", 4: "g", 5: "e"}
    assert out.perms[base] == {0: 0, 1: 1, 2: 2, 3: -1, 4: -1, 5: -1}
    assert out.perms[m2] == {0: 0, 1: -1, 2: 3, 3: 2, 4: -1, 5: 1}
    # m3's permutation uses len(get_vocab()) = 4 when config.json has no vocab_size: <u> would be kept
    assert out.perms[m3] == {0: 0, 1: -1, 2: -1, 3: -1, 4: 1, 5: 2}
    assert out.donor == base and te.expected_vocab_size(out) == 6


def test_union_first_definition_of_an_added_token_wins(tmp_path):
    base = tok_folder(tmp_path, "base", {"a": 0}, vocab_size=1)
    m2 = tok_folder(tmp_path, "m2", {"a": 0}, added=[(1, special("<x>", rstrip=True))], vocab_size=2)
    m3 = tok_folder(tmp_path, "m3", {"a": 0}, added=[(1, special("<x>"))], vocab_size=2)
    for order, flags in (((m2, m3), {"rstrip": True}), ((m3, m2), {})):
        out = te.build_vocabulary({"base_model": base, "tokenizer_source": "union"},
                                  {r: r for r in (base,) + order})
        assert out.added[1] == AddedToken("<x>", normalized=False, special=True, **flags)
    # the base comes first wherever it is listed: its <x> (single_word) wins over m2's
    base = tok_folder(tmp_path, "base2", {"a": 0}, added=[(1, special("<x>", single_word=True))], vocab_size=2)
    out = te.build_vocabulary({"base_model": base, "tokenizer_source": "union"}, {m2: m2, base: base})
    assert out.added[1] == AddedToken("<x>", single_word=True, normalized=False, special=True)


def test_tokens_entries_are_added_after_the_source(tmp_path):
    base, m2, m3 = union_models(tmp_path)
    cfg = {"base_model": base, "tokenizer": {"source": "base", "tokens": {"zz": {"source": base},
                                                                        "a": {"source": m2}}}}
    out = te.build_vocabulary(cfg, {base: base, m2: m2})
    assert out.vocab == {"<s>": 0, "a": 1, "b": 2, "zz": 3}
    assert out.added[3] == AddedToken("zz") and out.added[1] == AddedToken("a")   # add_tokens(str)
    assert out.perms[m2] == {0: 0, 1: -1, 2: 3, 3: -1}


def test_source_model_is_not_stripped_and_may_be_outside_the_merge(tmp_path):
    base, m2, m3 = union_models(tmp_path)
    out = te.build_vocabulary({"base_model": base, "tokenizer_source": m2}, {base: base, m3: m3})
    assert out.vocab == {"<s>": 0, "e": 1, "c": 2, "b": 3, "f": 4, "<t>": 5} and out.donor == m2
    assert out.perms[base] == {0: 0, 1: -1, 2: -1, 3: 2, 4: -1, 5: -1}
    out = te.build_vocabulary({"base_model": base, "tokenizer_source": "elsewhere"}, {base: base},
                              resolve=lambda ref: m2 if ref == "elsewhere" else ref)
    assert len(out.vocab) == 6


def test_permutation_entries_missing_above_a_models_vocab_size(tmp_path):
    base, m2, m3 = union_models(tmp_path)
    # source m2 keeps f (4) and <t> (5); m2's own vocab_size is 4: no entries for them in its
    # permutation (mergekit: `continue`), a KeyError once PermutedEmbeddings looks them up
    out = te.build_vocabulary({"base_model": base, "tokenizer_source": m2}, {base: base, m2: m2})
    assert 4 not in out.perms[m2] and 5 not in out.perms[m2] and out.perms[m2][1] == 1
    rows = {base: ("F32", np.zeros((3, 2), np.float32)), m2: ("F32", np.ones((4, 2), np.float32))}
    with pytest.raises(VocabError, match="at an id >= its vocab_size"):
        te.remap_embedding(rows, out.perms, out.vocab, base_model=base)


def test_model_without_tokenizer_uses_the_base_vocabulary(tmp_path):
    base, m2, _ = union_models(tmp_path)
    bare = os.path.join(str(tmp_path), "bare")
    os.makedirs(bare)
    with open(os.path.join(bare, "config.json"), "w") as f:
        json.dump({"vocab_size": 2}, f)
    out = te.build_vocabulary({"base_model": base, "tokenizer_source": "union"}, {base: base, bare: bare, m2: m2})
    assert bare not in out.original_vocabs
    # the base's ids; b (2) >= its vocab_size 2: no entry; e, c (3, 4, from m2): absent
    assert out.vocab == {"<s>": 0, "a": 1, "b": 2, "e": 3, "c": 4}
    assert out.perms[bare] == {0: 0, 1: 1, 3: -1, 4: -1}
    with pytest.raises(VocabError, match="has no tokenizer"):
        te.build_vocabulary({"base_model": bare, "tokenizer_source": "union"}, {bare: bare, base: base})


def test_gemma3_style_vocab_key(tmp_path):
    base = tok_folder(tmp_path, "base", {"a": 0, "b": 1, "c": 2}, config={"text_config": {"vocab_size": 2}})
    out = te.build_vocabulary({"tokenizer_source": "base"}, {base: base})
    assert out.vocab == {"a": 0, "b": 1}
    assert te.expected_config(out, {"text_config": {"vocab_size": 2}}) == {"text_config": {"vocab_size": 2}}


# ---- remap_embedding ---------------------------------------------------------------------------------

X, Y, Z = "x", "y", "z"
# Output tokens t0..t5. X (the base) has t0, t1, t5; Y has t0, t2, t3; Z has t0, t1, t2.
PERMS = {X: {0: 0, 1: 1, 2: -1, 3: -1, 4: -1, 5: 2},
         Y: {0: 1, 1: -1, 2: 0, 3: 2, 4: -1, 5: -1},
         Z: {0: 2, 1: 0, 2: 1, 3: -1, 4: -1, 5: -1}}
VOCAB6 = {f"t{i}": i for i in range(6)}


def rows3():
    return {X: ("F32", np.array([[1, 2], [3, 4], [5, 6]], np.float32)),
            Y: ("F32", np.array([[10, 20], [30, 40], [50, 60]], np.float32)),
            Z: ("F32", np.array([[100, 200], [300, 400], [500, 600]], np.float32))}


def test_remap_sources_with_a_base():
    out = te.remap_embedding(rows3(), PERMS, VOCAB6, base_model=X)
    x, y, z = out[X][1], out[Y][1], out[Z][1]
    assert out[X][0] == "F32" and x.shape == (6, 2)
    # own rows
    assert x[0].tolist() == [1, 2] and y[0].tolist() == [30, 40] and z[0].tolist() == [500, 600]
    # t1: X and Z have it, the base X does: Y takes X's row
    assert y[1].tolist() == [3, 4] and z[1].tolist() == [100, 200]
    # t2: Y and Z have it, the base does not: X takes their mean, (10+300)/2, (20+400)/2
    assert x[2].tolist() == [155, 210]
    # t3: only Y: everybody takes Y's row. t4: nobody: zeros. t5: only X.
    assert x[3].tolist() == z[3].tolist() == [50, 60]
    assert x[4].tolist() == y[4].tolist() == z[4].tolist() == [0, 0]
    assert y[5].tolist() == z[5].tolist() == [5, 6]


def test_remap_without_a_base_averages():
    out = te.remap_embedding(rows3(), PERMS, VOCAB6)
    # t1: X and Z have it, no base: Y gets (3+100)/2, (4+200)/2
    assert out[Y][1][1].tolist() == [51.5, 102]


def test_remap_mean_rounds_at_every_step_in_model_order():
    # t1 is in all three models and there is no base: the mean, torch's way in bf16, in model order:
    # acc = round(0 + 1) = 1; round(1 + 2^-8) = 1 (a tie, to even); round(1 + 2^-8) = 1; 1 / 3 ->
    # 0.333984375. One rounding at the end would give round(1.0078125 / 3) = 0.3359375; the order
    # Z, Y, X gives round(2^-8 + 2^-8) = 2^-7, round(2^-7 + 1) = 1.0078125, / 3 -> 0.3359375.
    # t0 is only in Y: every model takes Y's row.
    e = 2.0 ** -8
    perms = {X: {0: -1, 1: 0}, Y: {0: 1, 1: 0}, Z: {0: -1, 1: 0}}
    rows = {X: ("BF16", np.array([[1.0]], np.float32)), Y: ("BF16", np.array([[e], [0.5]], np.float32)),
            Z: ("BF16", np.array([[e]], np.float32))}
    vocab = {"t0": 0, "t1": 1}
    out = te.remap_embedding(rows, perms, vocab)
    assert out[X][0] == "BF16"
    assert out[X][1][0][0] == out[Z][1][0][0] == 0.5
    # own rows win over the mean
    assert (out[X][1][1][0], out[Y][1][1][0], out[Z][1][1][0]) == (1.0, e, e)
    # two models: round(1 + 2^-8) = 1, / 2 = 0.5
    one_lacks = {X: {0: -1, 1: 0}, Y: {0: 1, 1: -1}, Z: {0: -1, 1: 0}}
    assert te.remap_embedding(rows, one_lacks, vocab)[Y][1][1][0] == 0.5
    W = "w"
    four = dict(rows, **{W: ("BF16", np.array([[0.0]], np.float32))})
    perms4 = dict(perms, **{W: {0: -1, 1: -1}})
    assert te.remap_embedding(four, perms4, vocab)[W][1][1][0] == np.float32(0.333984375)
    reordered = {m: four[m] for m in (W, Z, Y, X)}
    assert te.remap_embedding(reordered, perms4, vocab)[W][1][1][0] == np.float32(0.3359375)


def test_remap_explicit_sources_and_force():
    # t0: all have it; `tokens:` source Z (not forced): only models lacking it would use Z's row -> own rows
    # t1: forced from Y's model_token row 2 ([50, 60]): every model, even those that have t1
    # t2: forced zero; t3: model_token by string "w" in Z's original vocabulary (row 1)
    cfg = {"t0": TokenCfg(Z), "t1": TokenCfg(te.ModelTokenSource(Y, 2), True), "t2": TokenCfg(te.ZERO, True),
           "t3": TokenCfg(te.ModelTokenSource(Z, None, "w"))}
    out = te.remap_embedding(rows3(), PERMS, VOCAB6, cfg, base_model=X, original_vocabs={Z: {"w": 1}})
    assert out[X][1][0].tolist() == [1, 2] and out[Y][1][0].tolist() == [30, 40]
    assert out[X][1][1].tolist() == out[Z][1][1].tolist() == [50, 60]
    assert out[Y][1][2].tolist() == out[Z][1][2].tolist() == [0, 0]
    assert out[X][1][3].tolist() == [300, 400] and out[Y][1][3].tolist() == [50, 60]   # Y has t3 (row 2)
    # a `tokens:` source model without the token, a model outside the merge, ids out of range
    for c, msg in (({"t4": TokenCfg(X)}, "not found in model"), ({"t0": TokenCfg("w")}, "not part of merge"),
                   ({"t0": TokenCfg(te.ModelTokenSource(Y, 3))}, "out of range"),
                   ({"t0": TokenCfg(te.ModelTokenSource(Y, -1))}, "out of range"),
                   ({"t0": TokenCfg(te.ModelTokenSource(Y, None, "zzz"))}, "not found in model")):
        with pytest.raises(VocabError, match=msg):
            te.remap_embedding(rows3(), PERMS, VOCAB6, c, base_model=X, original_vocabs={Y: {"a": 0}})


def test_remap_dtype_and_errors():
    rows = rows3()
    rows[Y] = ("BF16", rows[Y][1])                                      # bf16-exact values
    out = te.remap_embedding(rows, PERMS, VOCAB6, base_model=X)
    assert out[Y][0] == "F32" and out[Y][1][0].tolist() == [30, 40]     # D = the first input's (X: F32)
    rows[Y] = ("F32", np.array([[10, 20], [1.00390625, 0], [50, 60]], np.float32))
    out = te.remap_embedding(rows, PERMS, VOCAB6, base_model=X, dtype="BF16")
    assert out[Y][0] == "BF16" and out[Y][1][0][0] == 1.0              # converted on load (tie to even)
    # with `dtype:` the inputs are converted on load, before the mean: round(2^-8 + 2^-17) = 2^-8,
    # round(1 + 2^-8) = 1 (a tie), / 2 = 0.5; unconverted, round(1 + 2^-8 + 2^-17) = 1.0078125 -> 0.50390625
    f32 = {X: ("F32", np.array([[1.0]], np.float32)), Y: ("F32", np.array([[2.0 ** -8 + 2.0 ** -17]], np.float32)),
           Z: ("F32", np.array([[0.0]], np.float32))}
    avg = {X: {0: 0, 1: 0}, Y: {0: 0, 1: 0}, Z: {0: 0, 1: -1}}
    out = te.remap_embedding(f32, avg, {"a": 0, "b": 1}, dtype="BF16")
    assert out[Z][0] == "BF16" and out[Z][1][1][0] == 0.5
    with pytest.raises(VocabError, match="not an input"):
        te.remap_embedding(rows3(), PERMS, VOCAB6, base_model="w")
    bad = rows3()
    bad[Z] = ("F32", np.zeros((3, 3), np.float32))
    with pytest.raises(VocabError, match="Embedding sizes must match"):
        te.remap_embedding(bad, PERMS, VOCAB6, base_model=X)
    with pytest.raises(VocabError, match="holes"):
        te.remap_embedding(rows3(), {m: {0: 0, 7: -1} for m in (X, Y, Z)}, {"t0": 0, "t7": 7})


def test_padding_rows_are_the_mean_of_the_real_rows():
    # bf16 rows 1, 2^-8, 0.25: float32 sum 1.25390625, / 3 = 0.41796875 (bf16-exact). Rounding the sum
    # to bf16 first (1.25, a tie to even) would give round(0.41666) = 0.416015625.
    rows = {X: ("BF16", np.array([[1.0], [2.0 ** -8], [0.25]], np.float32))}
    out = te.remap_embedding(rows, {X: {0: 0, 1: 1, 2: 2}}, {"a": 0, "b": 1, "c": 2}, pad_to_multiple_of=4)
    assert out[X][1].shape == (4, 1) and out[X][1][3][0] == np.float32(0.41796875)
    out = te.remap_embedding(rows, {X: {0: 0, 1: 1, 2: 2}}, {"a": 0, "b": 1, "c": 2}, pad_to_multiple_of=3)
    assert out[X][1].shape == (3, 1)
    assert te.padded_size(66, 16) == 80 and te.padded_size(64, 16) == 64 and te.padded_size(5, None) == 5


def test_torch_sum_order():
    # one column (H < 8): scalar row_sum, rows interleaved four ways: lane 0 = 1e8 + -1e8 = 0, lanes
    # 1-3 = 1 each -> 3. A sequential float32 sum loses every 1 next to 1e8 -> 0.
    col = np.array([1e8, 1, 1, 1, -1e8, 0, 0, 0], np.float32)[:, None]
    assert te.torch_sum_rows(col)[0] == 3
    # 32 columns (4 vectors of 8): multi_row_sum, rows in order -> 0. 8 columns: row_sum -> 3.
    # 33 columns: the last one by the scalar row_sum -> 3.
    assert (te.torch_sum_rows(np.repeat(col, 32, axis=1)) == 0).all()
    assert (te.torch_sum_rows(np.repeat(col, 8, axis=1)) == 3).all()
    s = te.torch_sum_rows(np.repeat(col, 33, axis=1))
    assert (s[:32] == 0).all() and s[32] == 3
    assert (te.torch_sum_rows(np.repeat(col, 32, axis=1), vec=16) == 3).all()   # AVX512: 2 x row_sum
    # cascade levels: 21 rows, 1e8 then 15 zeros (chunk 1: acc1 = 1e8), then five 1s: acc0 = 5, and
    # acc0 + acc1 = 100000005 -> 100000008 in float32 (ulp 8). In order: 1e8 + 1 + ... = 1e8.
    col = np.array([1e8] + [0] * 15 + [1] * 5, np.float32)[:, None]
    assert te.torch_sum_rows(np.repeat(col, 32, axis=1))[0] == np.float32(100000008)
    # chunks are 16 rows (not 8): five 1s in rows 8-12 are added to 1e8 one by one -> 1e8
    col = np.array([1e8] + [0] * 7 + [1] * 5 + [0] * 8, np.float32)[:, None]
    assert te.torch_sum_rows(np.repeat(col, 32, axis=1))[0] == np.float32(1e8)
    assert te._ceil_log2(2) == 1 and te._ceil_log2(16) == 4 and te._ceil_log2(17) == 5
    # mean: float32 sum, one division, one rounding; the double order agrees here
    x = np.array([[1.0], [2.0 ** -8], [0.25]], np.float32)
    assert te.torch_mean_rows("BF16", x) == te.torch_mean_rows("BF16", x, order="double") == np.float32(0.41796875)


# ---- config_eval integration -------------------------------------------------------------------------

def fixture_models(tmp_path, kinds, dtype="bf16"):
    out = {}
    for i, kind in enumerate(kinds):
        d = os.path.join(str(tmp_path), kind)
        af.make(LLAMA, d, seed=i, dtype=dtype, max_layers=1)
        tf.apply_variant(d, kind, seed=i)
        out[kind] = d
    return out


def test_evaluate_remaps_embeddings_before_the_method(tmp_path):
    m = fixture_models(tmp_path, ["base", "chatml"], dtype="f32")
    cfg = {"merge_method": "linear", "base_model": m["base"], "dtype": "float32",
           "models": [{"model": m["base"], "parameters": {"weight": 0.5}},
                      {"model": m["chatml"], "parameters": {"weight": 0.5}}],
           "tokenizer": {"source": "union", "pad_to_multiple_of": 64}}
    res = ce.evaluate(cfg)
    assert len(res.vocab.vocab) == 98 and res.config["vocab_size"] == 128
    chat = st.read_folder(m["chatml"])
    base = st.read_folder(m["base"])
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        dt, v = res.tensors[name]
        assert v.shape == (128, 32)
        # <|im_start|>, <|im_end|> (96, 97) are chatml's only: 0.5 x + 0.5 x = x exactly in float32
        assert (v[96:98] == chat[name].f32()[96:98]).all()
        # a shared token is the average of both rows
        want = np.float32(0.5) * base[name].f32()[40] + np.float32(0.5) * chat[name].f32()[40]
        assert (v[40] == want).all()
        # padding rows: the mean of each input's 98 real rows (float32 sums in torch's order), merged
        pads = [te.torch_mean_rows("F32", r) for r in
                (np.concatenate([base[name].f32(), chat[name].f32()[96:98]]), chat[name].f32())]
        assert (v[100] == np.float32(0.5) * pads[0] + np.float32(0.5) * pads[1]).all()
    # other tensors are not remapped
    assert res.tensors["model.norm.weight"][1].shape == (32,)
    # without a tokenizer option, embeddings are cropped to the common rows as before
    cfg.pop("tokenizer")
    assert ce.evaluate(cfg).tensors["lm_head.weight"][1].shape == (96, 32)
    assert ce.evaluate(cfg).vocab is None


def test_evaluate_remaps_a_vocabulary_sized_bias(tmp_path):
    # PhiMoE's lm_head.bias has one entry per token: remapped like lm_head's rows (a [V, 1] matrix)
    m = {}
    for seed, kind in enumerate(("base", "chatml")):
        m[kind] = os.path.join(str(tmp_path), kind)
        af.make(os.path.join(HERE, "..", "fixtures", "archs", "phimoe"), m[kind], seed=seed, max_layers=1)
        tf.apply_variant(m[kind], kind, seed=seed)
    cfg = {"merge_method": "linear", "base_model": m["base"], "dtype": "float32", "tokenizer_source": "union",
           "models": [{"model": m[k], "parameters": {"weight": 0.5}} for k in ("base", "chatml")]}
    res = ce.evaluate(cfg)
    bias = res.tensors["lm_head.bias"][1]
    chat = st.read_folder(m["chatml"])["lm_head.bias"].f32()
    assert bias.shape == (98,) and (bias[96:] == chat[96:]).all()


def test_evaluate_errors_are_config_errors(tmp_path):
    m = fixture_models(tmp_path, ["base", "unused"])
    cfg = {"merge_method": "linear", "base_model": m["base"],
           "models": [{"model": m["base"], "parameters": {"weight": 1.0}},
                      {"model": m["unused"], "parameters": {"weight": 1.0}}],
           "tokenizer_source": m["unused"]}
    with pytest.raises(ce.ConfigError, match="vocab_size"):
        ce.evaluate(cfg)
    cfg["tokenizer_source"] = "union"
    res = ce.evaluate(cfg)
    assert len(res.vocab.vocab) == 96        # <UNUSED_i> (ids >= 96 in `unused`) are left out
    cfg["tokenizer"] = {"source": "union"}
    with pytest.raises(ce.ConfigError, match="both"):
        ce.evaluate(cfg)


@pytest.mark.parametrize("method,params,glob", [
    ("linear", {"weight": 1.0}, {}), ("task_arithmetic", {"weight": 0.5}, {}),
    ("ties", {"weight": 0.5, "density": 0.5}, {}), ("slerp", {}, {"t": 0.3}),
    ("model_stock", {}, {}), ("nearswap", {}, {"t": 0.001}), ("sce", {}, {"select_topk": 0.5}),
    ("breadcrumbs", {"weight": 0.5, "density": 0.9, "gamma": 0.01}, {}), ("multislerp", {"weight": 0.5}, {}),
    ("karcher", {}, {}), ("arcee_fusion", {}, {}), ("ram", {}, {}), ("nuslerp", {"weight": 0.5}, {})])
def test_every_method_family_on_remapped_embeddings(tmp_path, method, params, glob):
    # the methods that take the base and one other model get chatml; the others chatml and reordered
    kinds = ["base", "chatml"] if method in ("slerp", "nearswap", "arcee_fusion") else ["base", "chatml", "reordered"]
    m = fixture_models(tmp_path, kinds)
    models = [{"model": m[k], "parameters": dict(params)} for k in kinds[1:]]
    if method != "nuslerp":    # nuslerp takes exactly two models besides the base (appended unlisted)
        models.insert(0, {"model": m["base"], "parameters": dict(params)})
    cfg = {"merge_method": method, "base_model": m["base"], "models": models, "parameters": glob,
           "tokenizer_source": "union", "dtype": "bfloat16"}
    res = ce.evaluate(cfg)
    assert len(res.vocab.vocab) == 98
    dt, v = res.tensors["model.embed_tokens.weight"]
    assert v.shape == (98, 32) and np.isfinite(v).all()
    if method == "linear":
        # chatml tokens: every input carries chatml's row; linear normalize: round(3x)/3
        x = st.read_folder(m["chatml"])["model.embed_tokens.weight"].f32()[96]
        want = st.round_to("BF16", st.round_to("BF16", np.float32(3) * x) / np.float32(3))
        assert (v[96] == want).all()


@needs_spm
def test_union_of_bpe_and_sentencepiece_models(tmp_path):
    m = fixture_models(tmp_path, ["base", "spm-user"])
    cfg = {"merge_method": "linear", "base_model": m["base"],
           "models": [{"model": m["base"], "parameters": {"weight": 1.0}},
                      {"model": m["spm-user"], "parameters": {"weight": 1.0}}], "tokenizer_source": "union"}
    res = ce.evaluate(cfg)
    sp_view = te.vocab_view(m["spm-user"])
    # the spm pieces that are not base tokens follow the base's 96, in piece order, normal ones first;
    # the added ones (<pad>, <|im_start|>, <|im_end|>; <unk>, <s>, </s> are the base's) come last
    new_normal = [p for p in sp_view.vocab if p not in res.vocab.views[m["base"]].vocab
                  and sp_view.vocab[p] not in sp_view.added]
    assert [t for t, i in res.vocab.vocab.items() if 96 <= i < 96 + len(new_normal)] == new_normal
    assert list(res.vocab.vocab)[-3:] == ["<pad>", "<|im_start|>", "<|im_end|>"]
    assert res.config["vocab_size"] == len(res.vocab.vocab)


# ---- fixtures ----------------------------------------------------------------------------------------

def test_fixture_variants_keep_each_tokens_row(tmp_path):
    kinds = ["base", "chatml", "reordered", "padded", "unused"]
    m = {}
    for kind in kinds:          # one base model (seed 0) with each tokenizer variant
        d = os.path.join(str(tmp_path), kind)
        af.make(LLAMA, d, seed=0, max_layers=1)
        tf.apply_variant(d, kind, seed=5)
        m[kind] = d
    base_view = te.vocab_view(m["base"])
    base_rows = st.read_folder(m["base"])["lm_head.weight"].f32()
    sizes = {"base": (96, 96), "chatml": (98, 98), "reordered": (95, 95), "padded": (96, 112), "unused": (100, 96)}
    for kind in kinds:
        view = te.vocab_view(m[kind])
        with open(os.path.join(m[kind], "config.json")) as f:
            n = te.config_vocab_size(json.load(f))
        assert (len(view), n) == sizes[kind], kind
        rows = st.read_folder(m[kind])["lm_head.weight"].f32()
        assert rows.shape[0] == n
        for tok, i in view.vocab.items():
            if tok in base_view.vocab and i < n:
                assert (rows[i] == base_rows[base_view.vocab[tok]]).all(), (kind, tok)
    r = te.vocab_view(m["reordered"])
    assert sorted(set(base_view.vocab) - set(r.vocab)) != [] and len(set(r.vocab) - set(base_view.vocab)) == 0
    moved = [t for t in r.vocab if r.vocab[t] != base_view.vocab[t]]
    assert len(moved) > 2
    with open(os.path.join(m["chatml"], "tokenizer_config.json")) as f:
        assert json.load(f)["eos_token"] == "<|im_end|>"
    assert te.vocab_view(m["chatml"]).added[97] == AddedToken("<|im_end|>", normalized=False, special=True)


def test_fixtures_are_deterministic_and_merges_are_valid(tmp_path):
    def digest(d):
        out = {}
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                out[name] = f.read()
        return out

    for kind in ("chatml", "reordered"):
        a, b = os.path.join(str(tmp_path), kind + "a"), os.path.join(str(tmp_path), kind + "b")
        for d in (a, b):
            af.make(LLAMA, d, seed=1, max_layers=1)
            tf.apply_variant(d, kind, seed=1)
        assert digest(a) == digest(b)
    for kind in ("base", "reordered"):
        with open(os.path.join(str(tmp_path), ("chatml" if kind == "base" else kind) + "a", "tokenizer.json")) as f:
            model = json.load(f)["model"]
        for x, y in model["merges"]:      # tokenizers' BpeBuilder: parts and product in the vocabulary
            assert x in model["vocab"] and y in model["vocab"] and x + y in model["vocab"]
        assert sorted(model["vocab"].values()) == list(range(len(model["vocab"])))
    vocab, merges = tf.train_bpe(tf.TEXT, 96)
    alphabet = set("".join(tf.pre_tokens(tf.TEXT)))
    assert len(vocab) == 96 and len(merges) == 96 - len(tf.SPECIALS) - len(alphabet)
    assert merges[:3] == [["Ġ", "t"], ["h", "e"], ["Ġt", "he"]] and "Ġthe" in vocab


# ---- served files ------------------------------------------------------------------------------------

def write_served(folder, out, chat=None, break_id=False):
    """A served tokenizer as the program could write it: tokenizer.json (the expected model and
    added tokens), tokenizer_config.json (added_tokens_decoder, the donor's special tokens)."""
    exp = te.expected_served(out, chat)
    os.makedirs(folder)
    added = exp["tokenizer.json"]["added_tokens"]
    if break_id:
        added = list(reversed(added))
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump({"version": "1.0", "added_tokens": added, "model": exp["tokenizer.json"]["model"]}, f)
    tc = dict(exp["special_tokens_map.json"], added_tokens_decoder=exp["tokenizer_config.json"]["added_tokens_decoder"])
    if chat is not None:
        tc["chat_template"] = chat.text if chat.text is not None else tf.CHATML_TEMPLATE
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f)
    return exp


@needs_jinja
def test_check_served(tmp_path):
    m = fixture_models(tmp_path, ["base", "chatml", "unused"])
    out = te.build_vocabulary({"base_model": m["unused"], "tokenizer": {"source": "union", "tokens": {"zq": {
        "source": m["base"]}}}}, {m["unused"]: m["unused"], m["chatml"]: m["chatml"], m["base"]: m["base"]})
    assert out.stripped == list(tf.UNUSED)
    assert list(out.vocab)[-3:] == ["<|im_start|>", "<|im_end|>", "zq"]
    chat = te.chat_template({"chat_template": "chatml"}, {})
    good = os.path.join(str(tmp_path), "good")
    exp = write_served(good, out, chat)
    assert te.check_served(good, exp) == []
    bad = os.path.join(str(tmp_path), "bad")
    write_served(bad, out, chat, break_id=True)     # added tokens listed in reverse: new ids swap
    problems = te.check_served(bad, exp)
    assert any("vocabulary differs" in p for p in problems)
    with open(os.path.join(good, "tokenizer_config.json")) as f:
        tc = json.load(f)
    tc["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with open(os.path.join(good, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f)
    assert any("chatml" in p for p in te.check_served(good, exp))


# ---- chat templates ----------------------------------------------------------------------------------

def test_chat_template_selection():
    A, B, C = "a", "b", "c"
    ta, tb = "{{ one }} template xxxxx", "{{ two }} template xxxxx"
    models = {A: None, B: None, C: None}
    auto = {"chat_template": "auto", "base_model": C}
    assert te.chat_template(auto, models, {A: ta, B: tb, C: tb + "\n"}).text == tb        # most common, stripped
    # a tie: first in order, the base first (C) -> tb; without a base: config order (A) -> ta
    assert te.chat_template(auto, models, {A: ta, C: "  " + tb}).text == tb
    assert te.chat_template({"chat_template": "auto"}, models, {A: ta, C: tb}).text == ta
    assert te.chat_template(auto, models, {A: {"default": ta, "tool": tb}, B: {"tool": tb}}).text == ta
    assert te.chat_template(auto, models, {}) is None
    assert te.chat_template({}, models) is None
    assert te.chat_template({"chat_template": "llama3"}, models) == te.ChatTemplate("builtin", None, "llama3")
    ok = "{" + "x" * 19
    assert te.chat_template({"chat_template": ok}, models).text == ok                       # 20 chars with {
    for bad in ("{" + "x" * 18, "x" * 40, "chatml2"):
        with pytest.raises(VocabError, match="Invalid chat template"):
            te.chat_template({"chat_template": bad}, models)


def test_chat_template_auto_reads_the_folders(tmp_path):
    a = tok_folder(tmp_path, "a", {"a": 0}, tc={"chat_template": "{{ a }} from the config"})
    b = tok_folder(tmp_path, "b", {"a": 0}, files={"chat_template.jinja": "{{ a }} from the config\n"})
    c = tok_folder(tmp_path, "c", {"a": 0}, tc={"chat_template": "{{ c }} another template"})
    assert te.chat_template({"chat_template": "auto", "base_model": c}, {a: a, b: b, c: c}).text == \
        "{{ a }} from the config"


def test_builtin_renderings_by_hand():
    conv = [{"role": "system", "content": " S "}, {"role": "user", "content": " hi "},
            {"role": "assistant", "content": "yo"}]
    assert te.render_builtin("chatml", conv[1:], True) == \
        "<|im_start|>user\n hi <|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>assistant\n"
    assert te.render_builtin("llama3", conv[1:], False, bos_token="<B>") == \
        "<B><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>\n" \
        "<|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>\n"
    assert te.render_builtin("mistral", conv, False, "<B>", "<E>") == "<B> [INST]  S \n\n hi  [/INST] yo<E>"
    assert te.render_builtin("alpaca", conv, True) == "S\n\n### Instruction:\nhi\n\n### Response:\nyo"
    assert te.render_builtin("alpaca", conv[:2], True) == "S\n\n### Instruction:\nhi### Response:\n"
    assert te.render_builtin("exaone", conv[1:2], True) == \
        "        [|system|][|endofturn|]\n\n    [|user|] hi \n        \n\n    [|assistant|]\n"
    with pytest.raises(te.TemplateRefused):
        te.render_builtin("mistral", [{"role": "assistant", "content": "x"}])


@needs_jinja
def test_builtin_renderings_match_our_chatml_file():
    assert te.check_builtin_template(tf.CHATML_TEMPLATE, "chatml") == []
    assert te.check_builtin_template(tf.CHATML_TEMPLATE, "llama3") != []


@needs_jinja
@pytest.mark.skipif(not os.path.isdir(MERGEKIT), reason=f"no mergekit checkout at {MERGEKIT}")
@pytest.mark.parametrize("name", te.BUILTIN)
def test_builtin_renderings_match_mergekits_files(name):
    r = subprocess.run(["git", "-C", MERGEKIT, "show", f"HEAD:mergekit/_data/chat_templates/{name}.jinja"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mergekit's {name}.jinja is not in {MERGEKIT}")
    assert te.check_builtin_template(r.stdout, name) == []
