"""formats/spm.c and formats/tokenizer.c against sentencepiece itself (issue 12: reading tokenizers in C).

Tiny sentencepiece models are trained here with sentencepiece's own trainer (unigram, bpe, char and
word; with user-defined and control symbols, byte fallback, a pad piece, identity and NFKC normalizers)
and read with the test-only program tok_dump (tests/unit/tok_dump.c, built beside the unit tests), whose
JSON is compared with sentencepiece's view:

- every piece, its score (as float32) and its type (sentencepiece's is_unknown / is_control / is_unused
  / is_byte, and the ModelProto for USER_DEFINED and NORMAL), the piece count;
- trainer_spec (model type, vocab_size, byte_fallback, the unk/bos/eos/pad ids and pieces) and
  normalizer_spec (name, the three flags, the charsmap's size) as sentencepiece's protobuf module reads
  them, and the ids the processor reports (unk_id, bos_id, eos_id, pad_id);
- the folder view (a folder holding only tokenizer.model): get_vocab is the pieces by index,
  vocab_size is their number, and the added tokens are transformers 5's for such a folder: the
  CONTROL and USER_DEFINED pieces and the unk piece, CONTROL and unk special, none normalized;
- edited models (through sentencepiece's protobuf module): whether sentencepiece loads a model agrees
  with whether formats/spm.c accepts it (empty, duplicate and byte pieces, the UNKNOWN piece, truncated
  files); a text both a normal and a control piece is one sentencepiece accepts and the folder view
  refuses (get_vocab cannot hold it twice).

Skipped, saying so, when sentencepiece (python3-sentencepiece) is not importable."""

import io
import json
import os
import random
import struct
import subprocess

import pytest

spm = pytest.importorskip("sentencepiece", reason="python3-sentencepiece is not installed")
try:
    from sentencepiece import sentencepiece_model_pb2 as pb
except Exception as e:  # an old sentencepiece or a protobuf it was not generated for
    pytest.skip(f"sentencepiece's protobuf module does not load: {e}", allow_module_level=True)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("MM_BUILD_DIR", os.path.join(REPO, "build"))
TOK_DUMP = os.path.join(BUILD, "tests", "tok_dump")

WORDS = ["hello", "world", "merge", "mount", "token", "vocab", "the", "quick", "brown", "fox", "jumps", "over",
         "lazy", "dog", "über", "naïve", "日本", "語", "😀", "tab\there"]


def corpus(seed=1, n=1500):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(n)]


def train(model_type, **kw):
    """A serialized ModelProto trained by sentencepiece."""
    w = io.BytesIO()
    args = dict(sentence_iterator=iter(corpus()), model_writer=w, model_type=model_type, minloglevel=2,
                vocab_size=320, hard_vocab_limit=False)
    args.update(kw)
    spm.SentencePieceTrainer.train(**args)
    return w.getvalue()


MODELS = {
    "unigram_bytes_user_control": dict(model_type="unigram", user_defined_symbols=["<|im_start|>", "<|im_end|>"],
                                       control_symbols=["<ctl>"], byte_fallback=True, pad_id=3),
    "bpe_bytes_user": dict(model_type="bpe", user_defined_symbols=["<tool>"], byte_fallback=True,
                           normalization_rule_name="identity"),
    "bpe_no_bos_eos": dict(model_type="bpe", bos_id=-1, eos_id=-1, unk_id=0, vocab_size=200,
                           add_dummy_prefix=False, remove_extra_whitespaces=False),
    "unigram_unk_last": dict(model_type="unigram", unk_id=3, bos_id=0, eos_id=1, pad_id=2, unk_piece="[UNK]",
                             bos_piece="[BOS]", eos_piece="[EOS]", pad_piece="[PAD]", vocab_size=250,
                             normalization_rule_name="nmt_nfkc_cf"),
    "char": dict(model_type="char", vocab_size=400, control_symbols=["<a>", "<b>"]),
    "word": dict(model_type="word", vocab_size=200, user_defined_symbols=["<u>"]),
}


def dump(*args):
    r = subprocess.run([TOK_DUMP, *args], capture_output=True, timeout=60)
    return r.returncode, (json.loads(r.stdout) if r.returncode == 0 else None), r.stderr.decode(errors="replace")


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


TYPE_NAMES = {1: "NORMAL", 2: "UNKNOWN", 3: "CONTROL", 4: "USER_DEFINED", 5: "UNUSED", 6: "BYTE"}
MODEL_TYPES = {1: "UNIGRAM", 2: "BPE", 3: "WORD", 4: "CHAR"}


@pytest.fixture(scope="module")
def models():
    assert os.path.exists(TOK_DUMP), f"{TOK_DUMP} not built (ninja -C {BUILD})"
    return {name: train(**kw) for name, kw in MODELS.items()}


def processor(data):
    """sentencepiece's processor with the model loaded."""
    sp = spm.SentencePieceProcessor()
    assert sp.LoadFromSerializedProto(data)
    return sp


def parsed(data):
    """The ModelProto as protobuf reads it."""
    proto = pb.ModelProto()
    proto.ParseFromString(data)
    return proto


def write_model(tmp_path, data, name="m"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(data)
    return folder


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pieces_and_specs_as_sentencepiece_reads_them(models, tmp_path, name):
    data = models[name]
    folder = write_model(tmp_path, data)
    rc, got, err = dump("--spm", str(folder / "tokenizer.model"))
    assert rc == 0, err
    sp, proto = processor(data), parsed(data)
    n = sp.get_piece_size()
    assert len(got["pieces"]) == n == len(proto.pieces)
    for i, (piece, score, typ) in enumerate(got["pieces"]):
        assert piece == sp.id_to_piece(i), i
        assert score == f32(sp.get_score(i)), i
        assert typ == TYPE_NAMES[proto.pieces[i].type], i
        assert (typ == "UNKNOWN") == sp.is_unknown(i)
        assert (typ == "CONTROL") == sp.is_control(i)
        assert (typ == "UNUSED") == sp.is_unused(i)
        assert (typ == "BYTE") == sp.is_byte(i)
    ts, ns = proto.trainer_spec, proto.normalizer_spec
    assert got["model_type"] == MODEL_TYPES[ts.model_type]
    assert got["vocab_size"] == ts.vocab_size
    assert got["byte_fallback"] == ts.byte_fallback
    for k in ("unk", "bos", "eos", "pad"):
        assert got[k + "_id"] == getattr(ts, k + "_id")
        assert got[k + "_piece"] == getattr(ts, k + "_piece")
    # the processor's ids: unk is the UNKNOWN piece; bos/eos/pad the pieces named, when control pieces
    assert sp.unk_id() == got["unk_id"]
    for k in ("bos", "eos", "pad"):
        assert getattr(sp, k + "_id")() == got[k + "_id"]
    assert got["normalizer_name"] == ns.name
    assert got["add_dummy_prefix"] == ns.add_dummy_prefix
    assert got["remove_extra_whitespaces"] == ns.remove_extra_whitespaces
    assert got["escape_whitespaces"] == ns.escape_whitespaces
    assert got["precompiled_charsmap_len"] == len(ns.precompiled_charsmap)
    assert got["raw_len"] == len(data)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_folder_view_is_transformers_view_of_the_pieces(models, tmp_path, name):
    data = models[name]
    folder = write_model(tmp_path, data)
    rc, got, err = dump(str(folder))
    assert rc == 0, err
    sp, proto = processor(data), parsed(data)
    n = sp.get_piece_size()
    assert got["kind"] == "spm"
    assert got["model_type"] == ("Unigram" if proto.trainer_spec.model_type == 1 else "BPE")
    assert got["tokens"] == [sp.id_to_piece(i) for i in range(n)]
    assert got["base_size"] == got["n_ids"] == got["id_end"] == n
    ts = proto.trainer_spec
    want = {}
    for i, p in enumerate(proto.pieces):
        if p.type in (3, 4):  # CONTROL, USER_DEFINED: SentencePieceExtractor's additional_special_tokens
            want[i] = dict(content=p.piece, special=p.type == 3, normalized=False)
    for k in ("bos", "eos", "unk"):  # the named tokens set from trainer_spec, added as special
        i = getattr(ts, k + "_id")
        if i >= 0:
            want[i] = dict(content=getattr(ts, k + "_piece"), special=True, normalized=False)
    assert [a["id"] for a in got["added"]] == sorted(want)
    for a in got["added"]:
        w = want[a["id"]]
        assert (a["content"], a["special"], a["normalized"]) == (w["content"], w["special"], w["normalized"])
        assert not (a["lstrip"] or a["rstrip"] or a["single_word"])


def loads(data):
    sp = spm.SentencePieceProcessor()
    try:
        return bool(sp.LoadFromSerializedProto(data))
    except Exception:
        return False


def edited(data, edit):
    proto = parsed(data)
    edit(proto)
    return proto.SerializeToString()


def set_piece(i, **kw):
    def edit(p):
        for k, v in kw.items():
            setattr(p.pieces[i], k, v)
    return edit


def add_piece(piece, typ, score=0.0):
    def edit(p):
        x = p.pieces.add()
        x.piece, x.type, x.score = piece, typ, score
    return edit


EDITS = {
    # sentencepiece refuses each of these (ModelInterface::InitializePieces)
    "empty_piece": set_piece(20, piece=""),
    "duplicate_normal": lambda p: setattr(p.pieces[21], "piece", p.pieces[20].piece),
    "two_unknown": set_piece(5, type=2),
    "no_unknown": set_piece(0, type=1),
    "byte_without_fallback": lambda p: setattr(p.trainer_spec, "byte_fallback", False),
    "byte_piece_lower_hex": lambda p: setattr(p.pieces[next(i for i, x in enumerate(p.pieces)
                                                             if x.piece == "<0x0A>")], "piece", "<0x0a>"),
    "byte_piece_missing": lambda p: setattr(p.pieces[next(i for i, x in enumerate(p.pieces) if x.type == 6)],
                                            "type", 1),
    # and accepts these
    "unused_piece": set_piece(30, type=5),
    "normal_and_control_same_text": add_piece("<ctl>", 1),
    "extra_user_defined": add_piece("<new>", 4, -1.5),
    "scores_changed": set_piece(40, score=-123.25),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_edited_models_accepted_exactly_when_sentencepiece_loads_them(models, tmp_path, edit):
    data = edited(models["unigram_bytes_user_control"], EDITS[edit])
    folder = write_model(tmp_path, data)
    rc, got, err = dump("--spm", str(folder / "tokenizer.model"))
    assert (rc == 0) == loads(data), err
    if rc == 0:
        sp = processor(data)
        assert [p[0] for p in got["pieces"]] == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    else:
        assert err.startswith(str(folder / "tokenizer.model") + ": ")
    if edit == "normal_and_control_same_text":  # sentencepiece keeps both; get_vocab() cannot
        rc, _, err = dump(str(folder))
        assert rc != 0 and "'<ctl>' appears twice" in err


def test_truncated_models_refused_as_sentencepiece_refuses_them(models, tmp_path):
    data = models["bpe_bytes_user"]
    rng = random.Random(3)
    cuts = sorted({1, 2, 3, len(data) - 1, len(data) - 2} | {rng.randrange(1, len(data)) for _ in range(40)})
    for i, cut in enumerate(cuts):
        folder = write_model(tmp_path, data[:cut], f"cut{i}")
        rc, got, err = dump("--spm", str(folder / "tokenizer.model"))
        assert (rc == 0) == loads(data[:cut]), (cut, err)


def test_tiktoken_text_is_refused_with_a_hint(tmp_path):
    folder = tmp_path / "tk"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(b"IQ== 0\nIg== 1\nIw== 2\n")
    rc, _, err = dump(str(folder))
    assert rc != 0 and "tiktoken" in err
