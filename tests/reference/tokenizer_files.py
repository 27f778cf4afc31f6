"""transformers 5's view of a model folder's tokenizer (tokenizer.json, tokenizer_config.json,
special_tokens_map.json, added_tokens.json, tokenizer.model, chat templates): what get_vocab(),
added_tokens_decoder, vocab_size, len(tokenizer) and add_tokens() give. Part of the tokenizer-merging
reference (tokenizer_eval.py re-exports everything here). Pure Python, written from reading:

  * transformers 5.3: tokenization_utils_base.py (_from_pretrained, PreTrainedTokenizerBase.__init__),
    tokenization_utils_tokenizers.py (TokenizersBackend: convert_to_native_format, __init__,
    get_vocab, vocab_size, __len__, added_tokens_decoder, _add_tokens), convert_slow_tokenizer.py
    (SentencePieceExtractor), models/auto/tokenization_auto.py (which class loads a folder);
  * huggingface/tokenizers (Rust, 0.23): tokenizer/added_vocabulary.rs (AddedVocabulary::add_tokens),
    tokenizer/mod.rs (get_vocab, get_vocab_size), tokenizer/serialization.rs (added_tokens of
    tokenizer.json are re-added in file order; their "id" is only checked), bindings/python/src/
    tokenizer.rs (a str passed to add_tokens is AddedToken(normalized=True, special=False);
    get_added_tokens_decoder is sorted by id; get_vocab is a hash map, unordered);
  * sentencepiece_model.proto (the fields of tokenizer.model).
"""

import json
import os
import struct
from typing import NamedTuple


class VocabError(Exception):
    """mergekit refuses (or crashes on) this tokenizer setting; the program must refuse it too."""


# ---- added tokens ----------------------------------------------------------------------------------

FLAG_KEYS = ("single_word", "lstrip", "rstrip", "normalized", "special")


class AddedToken(NamedTuple):
    """tokenizers' AddedToken. Equality compares every field (bindings: __richcmp__ compares the whole
    token), so the same content with other flags is a different token."""
    content: str
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = True
    special: bool = False

    @classmethod
    def py(cls, content, special=False, normalized=None, single_word=False, lstrip=False, rstrip=False, **_):
        """Python's `AddedToken(content, **kwargs)`: `normalized` defaults to `not special` (bindings
        PyAddedToken::get_token -> tk::AddedToken::from(content, special)); unknown keys are ignored."""
        return cls(content, bool(single_word), bool(lstrip), bool(rstrip),
                   (not special) if normalized is None else bool(normalized), bool(special))

    def state(self):
        """The dict tokenizers and transformers write (`__getstate__` / serde field order)."""
        return {"content": self.content, "single_word": self.single_word, "lstrip": self.lstrip,
                "rstrip": self.rstrip, "normalized": self.normalized, "special": self.special}


def _token_from_state(d, where):
    """An AddedToken from a JSON dict with every field (tokenizers' serde has no defaults)."""
    if not isinstance(d, dict) or not isinstance(d.get("content"), str):
        raise VocabError(f"{where}: an added token needs a string `content`")
    missing = [k for k in FLAG_KEYS if not isinstance(d.get(k), bool)]
    if missing:
        raise VocabError(f"{where}: added token {d['content']!r} lacks boolean {', '.join(missing)}")
    return AddedToken(d["content"], *(d[k] for k in FLAG_KEYS))


# ---- the Rust tokenizer: model vocabulary + AddedVocabulary ---------------------------------------

class Backend:
    """tokenizers' TokenizerImpl as far as vocabularies go: the model's vocabulary plus the
    AddedVocabulary (added_vocabulary.rs)."""

    def __init__(self, model_vocab, model_json=None):
        self.model_vocab = dict(model_vocab)    # token -> id (BPE/WordPiece/WordLevel dict, Unigram index)
        self.model_json = model_json            # the tokenizer.json "model" object, if read from one
        self.added_map = {}                     # content -> id
        self.added_r = {}                       # id -> AddedToken
        self.special_set = set()

    def model_size(self):
        """Model::get_vocab_size: the number of entries of the model's vocabulary (BPE: vocab.len())."""
        return len(self.model_vocab)

    def token_to_id(self, content):
        """AddedVocabulary::token_to_id: added tokens first, then the model."""
        if content in self.added_map:
            return self.added_map[content]
        return self.model_vocab.get(content)

    def add_tokens(self, tokens):
        """AddedVocabulary::add_tokens (also add_special_tokens, which only forwards here):
          * next_id = max(added ids) + 1 if that max >= model size (or the model is empty), else the
            model size; computed once per call and incremented per new token;
          * an empty content is skipped; a content already added with identical flags is skipped;
          * otherwise the id is token_to_id(content) (an added or model token keeps its id: an
            AddedToken already in the vocabulary gets no new id) or next_id; the token (with its new
            flags) replaces whatever was stored at that id.
        Returns the number of tokens not skipped."""
        size = self.model_size()
        if self.added_r:
            top = max(self.added_r)
            next_id = top + 1 if (top >= size or size == 0) else size
        else:
            next_id = size
        done = 0
        for tok in tokens:
            if not tok.content:
                continue
            if tok.content in self.added_map and self.added_r.get(self.added_map[tok.content]) == tok:
                continue
            new_id = self.token_to_id(tok.content)
            if new_id is None:
                new_id, next_id = next_id, next_id + 1
            self.added_map[tok.content] = new_id
            if tok.special:
                self.special_set.add(tok.content)
            self.added_r[new_id] = tok
            done += 1
        return done

    def get_vocab(self):
        """TokenizerImpl::get_vocab(with_added_tokens=True): the model's, overwritten by the added map."""
        v = dict(self.model_vocab)
        v.update(self.added_map)
        return v

    def __len__(self):
        """TokenizerImpl::get_vocab_size(true): model size + added - added contents the model has."""
        overlap = sum(1 for t in self.added_map if t in self.model_vocab)
        return self.model_size() + len(self.added_map) - overlap

    def added_tokens_decoder(self):
        """get_added_tokens_decoder, sorted by id (bindings return a BTreeMap)."""
        return {i: self.added_r[i] for i in sorted(self.added_r)}

    def copy(self):
        b = Backend(self.model_vocab, self.model_json)
        b.added_map, b.added_r, b.special_set = dict(self.added_map), dict(self.added_r), set(self.special_set)
        return b


def _load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VocabError(f"{path}: not readable as JSON: {e}")


def _model_vocab(model, where):
    """The model section's vocabulary as {token: id}: a dict for BPE/WordPiece/WordLevel, a list of
    [piece, score] for Unigram (id = index). The type is `model.type`, else inferred as tokenizers'
    untagged deserializer does (merges -> BPE, a list -> Unigram)."""
    if not isinstance(model, dict):
        raise VocabError(f"{where}: `model` must be an object")
    kind = model.get("type")
    vocab = model.get("vocab")
    if kind is None:
        kind = "BPE" if "merges" in model else "Unigram" if isinstance(vocab, list) else "WordPiece"
    if kind == "Unigram":
        if not isinstance(vocab, list) or not all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                                  for e in vocab):
            raise VocabError(f"{where}: a Unigram vocab must be a list of [piece, score]")
        out = {}
        for i, (piece, _) in enumerate(vocab):
            out.setdefault(piece, i)
        return kind, out
    if kind in ("BPE", "WordPiece", "WordLevel"):
        if not isinstance(vocab, dict) or not all(type(i) is int and i >= 0 for i in vocab.values()):
            raise VocabError(f"{where}: a {kind} vocab must map tokens to non-negative integer ids")
        return kind, dict(vocab)
    raise VocabError(f"{where}: unknown model type {kind!r}")


def read_tokenizer_json(path):
    """Tokenizer::from_file: the model, then the file's added_tokens re-added in file order with
    add_tokens (serialization.rs: the stored "id" only triggers a warning when it differs)."""
    tj = _load_json(path)
    if not isinstance(tj, dict) or "model" not in tj:
        raise VocabError(f"{path}: no `model` object")
    kind, vocab = _model_vocab(tj["model"], path)
    b = Backend(vocab, tj["model"])
    b.kind = kind
    b.json = tj
    added = tj.get("added_tokens") or []
    if not isinstance(added, list):
        raise VocabError(f"{path}: `added_tokens` must be a list")
    for e in added:
        if not isinstance(e, dict) or type(e.get("id")) is not int:
            raise VocabError(f"{path}: every added token needs an integer `id`")
    b.add_tokens([_token_from_state(e, path) for e in added])
    return b


# ---- sentencepiece tokenizer.model ---------------------------------------------------------------

SPM_NORMAL, SPM_UNKNOWN, SPM_CONTROL, SPM_USER_DEFINED, SPM_UNUSED, SPM_BYTE = 1, 2, 3, 4, 5, 6


class SpmModel(NamedTuple):
    pieces: list          # [(piece, score, type)], id = index
    model_type: int       # TrainerSpec.model_type: 1 unigram, 2 bpe, 3 word, 4 char
    unk_id: int
    bos_id: int
    eos_id: int
    pad_id: int
    unk_piece: str
    bos_piece: str
    eos_piece: str
    pad_piece: str
    byte_fallback: bool


def _varint(buf, pos):
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise VocabError("tokenizer.model: truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise VocabError("tokenizer.model: varint longer than 10 bytes")


def _fields(buf):
    """(field number, wire type, value) of one protobuf message; value: int for varints and fixed
    sizes (raw little-endian for fixed32), bytes for length-delimited fields."""
    pos, out = 0, []
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _varint(buf, pos)
        elif wt == 1:
            v, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            v, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            v, pos = buf[pos:pos + 4], pos + 4
        else:
            raise VocabError(f"tokenizer.model: unsupported wire type {wt}")
        if pos > len(buf):
            raise VocabError("tokenizer.model: a field runs past the end")
        out.append((num, wt, v))
    return out


def _int32(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def read_spm(path):
    """The sentencepiece ModelProto fields transformers uses (sentencepiece_model.proto: ModelProto.pieces
    = 1 {piece = 1, score = 2, type = 3 (default NORMAL)}, trainer_spec = 2 {model_type = 3,
    byte_fallback = 35, unk_id = 40, bos_id = 41, eos_id = 42, pad_id = 43, unk_piece = 45, bos_piece
    = 46, eos_piece = 47, pad_piece = 48}). Read here with a small protobuf walker because the
    sentencepiece module (0.1.97, Debian 12) does not expose the USER_DEFINED type; the tests check
    this reader against SentencePieceProcessor."""
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise VocabError(f"{path}: {e}")
    pieces = []
    ts = {3: 1, 35: 0, 40: 0, 41: 1, 42: 2, 43: -1, 45: "<unk>", 46: "<s>", 47: "</s>", 48: "<pad>"}
    for num, wt, v in _fields(buf):
        if num == 1 and wt == 2:
            piece, score, typ = None, 0.0, SPM_NORMAL
            for n2, w2, v2 in _fields(v):
                if n2 == 1 and w2 == 2:
                    piece = v2.decode("utf-8")
                elif n2 == 2 and w2 == 5:
                    score = struct.unpack("<f", v2)[0]
                elif n2 == 3 and w2 == 0:
                    typ = v2
            if piece is None:
                raise VocabError(f"{path}: a piece without text")
            pieces.append((piece, score, typ))
        elif num == 2 and wt == 2:
            for n2, w2, v2 in _fields(v):
                if n2 in (3, 35, 40, 41, 42, 43) and w2 == 0:
                    ts[n2] = _int32(v2)
                elif n2 in (45, 46, 47, 48) and w2 == 2:
                    ts[n2] = v2.decode("utf-8")
    if not pieces:
        raise VocabError(f"{path}: no pieces (not a sentencepiece model)")
    return SpmModel(pieces, ts[3], ts[40], ts[41], ts[42], ts[43], ts[45], ts[46], ts[47], ts[48], bool(ts[35]))


# ---- transformers' view of a folder -----------------------------------------------------------------

# PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES (transformers 5)
SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class VocabView:
    """What transformers 5 returns for a tokenizer folder loaded with AutoTokenizer:
      vocab          get_vocab(): {token: id}, here in id order (transformers returns a hash map)
      added          added_tokens_decoder: {id: AddedToken}, sorted by id
      vocab_size     vocab_size: the model's vocabulary without added tokens
      len(view)      len(tokenizer): every distinct token, added ones included
      special        the named special tokens {attr: AddedToken or str} (bos_token, ..., model-specific)
      extra_special  extra_special_tokens (additional_special_tokens before v5)
      chat_template  str, {name: str}, or None
      config         tokenizer_config.json as read ({} without one)
      source         "tokenizer.json" or "tokenizer.model"
    """

    def __init__(self, backend, special, extra, chat_template, config, source, folder):
        self.backend = backend
        self.vocab = dict(sorted(backend.get_vocab().items(), key=lambda kv: (kv[1], kv[0])))
        self.added = backend.added_tokens_decoder()
        self.vocab_size = backend.model_size()
        self.special = special
        self.extra_special = extra
        self.chat_template = chat_template
        self.config = config
        self.source = source
        self.folder = folder

    def __len__(self):
        return len(self.backend)


def _chat_templates(folder, config):
    """_from_pretrained: chat_template.jinja and chat_templates/*.jinja override the config's entry; one
    default file -> a str, several -> {name: text}; a list in the config -> {name: template}
    (PreTrainedTokenizerBase.__init__)."""
    found = {}
    path = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            found["default"] = f.read()
    tdir = os.path.join(folder, "chat_templates")
    if os.path.isdir(tdir):
        for name in sorted(os.listdir(tdir)):
            if name.endswith(".jinja"):
                with open(os.path.join(tdir, name), encoding="utf-8") as f:
                    found[name[:-len(".jinja")]] = f.read()
    if len(found) == 1 and "default" in found:
        return found["default"]
    if found:
        return found
    t = config.get("chat_template")
    if isinstance(t, (list, tuple)):
        return {e["name"]: e["template"] for e in t}
    return t


def _content(value):
    return value.content if isinstance(value, AddedToken) else str(value)


def _as_token(value):
    """convert_added_tokens: a {"__type": "AddedToken", ...} dict (or any dict with content) becomes an
    AddedToken; a str stays a str."""
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        d = {k: v for k, v in value.items() if k != "__type"}
        return AddedToken.py(**d)
    return value


def vocab_view(folder):
    """transformers 5's AutoTokenizer view of a model folder (see VocabView), or None when the folder
    has neither tokenizer.json nor tokenizer.model (mergekit then assumes the base's tokenizer).

    The class: AutoTokenizer.from_pretrained uses TokenizersBackend (the generic fast tokenizer) for
    `tokenizer_class: PreTrainedTokenizerFast` / `TokenizersBackend`, for a class that differs from the
    model type's mapped class, and for model types with no mapping (llama in transformers 5.3). That
    generic class is what this mirrors; model-specific classes with their own __init__ (e.g. a config
    naming LlamaTokenizer) rebuild the backend from the vocab/merges and add their own default special
    tokens, which is not modelled (the fixtures use PreTrainedTokenizerFast).

    Rules, in load order:
      1. tokenizer.json: Tokenizer::from_file (read_tokenizer_json). Without it, tokenizer.model:
         convert_to_native_format's SentencePiece path: every piece at its index (Unigram for a
         unigram model, BPE otherwise; the ids are the same), bos/eos/unk_token default to the
         proto's pieces when their ids are >= 0, and the CONTROL (special) and USER_DEFINED (not
         special) pieces become additional_special_tokens AddedToken(normalized=False).
      2. tokenizer_config.json (init kwargs): `additional_special_tokens` -> `extra_special_tokens`;
         `*_token` keys other than SPECIAL_ATTRS are model-specific named special tokens.
      3. added_tokens_decoder: from the config's `added_tokens_decoder`; without that key (legacy),
         special_tokens_map.json's entries fill unset kwargs, added_tokens.json adds
         AddedToken(normalized=not special), and tokenizer.json's added_tokens are read too.
         Named special tokens whose content matches one of these become that AddedToken.
      4. TokenizersBackend.__init__: tokens_to_add = every added_tokens_decoder token (by id; its
         filter meant to skip those already loaded compares with the dict's int keys and skips
         none), then every named special token (SPECIAL_ATTRS order, then model-specific ones) and
         extra special token whose content is not yet an added token nor queued (an equal value
         already queued is skipped too); a str becomes AddedToken(special=True) (normalized=False),
         a named AddedToken is made special; then one add_tokens call (Backend.add_tokens: identical
         tokens are skipped, a content the model already has keeps its id).
    A tokenizer.model with a Unigram model and an added_tokens_decoder in tokenizer_config.json is
    refused: transformers' placeholder renaming calls .items() on the Unigram piece list there.
    """
    tj = os.path.join(folder, "tokenizer.json")
    tm = os.path.join(folder, "tokenizer.model")
    tc = os.path.join(folder, "tokenizer_config.json")
    config = _load_json(tc) if os.path.isfile(tc) else {}
    if not isinstance(config, dict):
        raise VocabError(f"{tc}: must be a JSON object")
    init = {k: v for k, v in config.items() if k not in ("tokenizer_class", "init_inputs")}
    if "additional_special_tokens" in init:
        init.setdefault("extra_special_tokens", init.pop("additional_special_tokens"))
        init.pop("additional_special_tokens", None)

    if os.path.isfile(tj):
        backend, source = read_tokenizer_json(tj), "tokenizer.json"
        spm_extra = None
    elif os.path.isfile(tm):
        spm = read_spm(tm)
        vocab = {}
        for i, (piece, _, _) in enumerate(spm.pieces):
            vocab.setdefault(piece, i)
        backend, source = Backend(vocab), "tokenizer.model"
        backend.spm = spm
        spm_extra = [AddedToken(p, normalized=False, special=(t == SPM_CONTROL))
                     for p, _, t in spm.pieces if t in (SPM_CONTROL, SPM_USER_DEFINED)]
    else:
        return None

    # 3. added_tokens_decoder
    decoder, by_content = {}, {}
    if "added_tokens_decoder" in init:
        raw = init["added_tokens_decoder"]
        if not isinstance(raw, dict):
            raise VocabError(f"{tc}: added_tokens_decoder must be an object")
        for idx, tok in raw.items():
            if not isinstance(tok, dict) or not isinstance(tok.get("content"), str) or not idx.isdigit():
                raise VocabError(f"{tc}: added_tokens_decoder[{idx}] must be an object with a string content, "
                                 "under an integer id")
            t = AddedToken.py(**{k: v for k, v in tok.items() if k != "__type"})
            decoder[int(idx)] = t
            by_content[t.content] = t
    else:
        sm = os.path.join(folder, "special_tokens_map.json")
        if os.path.isfile(sm):
            for key, value in _load_json(sm).items():
                if isinstance(value, dict) and key != "extra_special_tokens":
                    value = AddedToken.py(**{k: v for k, v in value.items() if k != "special"}, special=True)
                elif key in ("extra_special_tokens", "additional_special_tokens") and isinstance(value, list):
                    existing = list(init.get("extra_special_tokens") or [])
                    for tok in value:
                        tok = AddedToken.py(**tok, special=True) if isinstance(tok, dict) else tok
                        if tok not in existing:
                            existing.append(tok)
                    key, value = "extra_special_tokens", existing
                init[key] = value
        at = os.path.join(folder, "added_tokens.json")
        if os.path.isfile(at):
            specials = {_content(_as_token(init[k])) for k in SPECIAL_ATTRS if init.get(k)}
            specials.update(_content(_as_token(t)) for t in init.get("extra_special_tokens") or [])
            for s, idx in _load_json(at).items():
                sp = s in specials
                decoder[int(idx)] = by_content[s] = AddedToken(s, normalized=not sp, special=sp)
        if source == "tokenizer.json":
            for e in backend.json.get("added_tokens") or []:
                t = _token_from_state(e, tj)
                decoder[e["id"]] = by_content[t.content] = t

    # 2. named and extra special tokens (_from_pretrained, PreTrainedTokenizerBase.__init__)
    attrs = list(SPECIAL_ATTRS)
    special = {}
    for key, value in init.items():
        value = _as_token(value)
        if key in SPECIAL_ATTRS:
            if value is not None:
                if not isinstance(value, (str, AddedToken)):
                    raise VocabError(f"{tc}: {key} must be a string or an AddedToken")
                special[key] = value
        elif key.endswith("_token") and isinstance(value, (str, AddedToken)):
            attrs.append(key)
            special[key] = value
    extra_raw = init.get("extra_special_tokens")
    extra = []
    if isinstance(extra_raw, dict):
        for key, value in extra_raw.items():
            attrs.append(key)
            special[key] = _as_token(value)
    elif isinstance(extra_raw, (list, tuple)):
        # convert_added_tokens: {"__type": "AddedToken", ...} -> AddedToken(**flags). (A dict without
        # __type stays a dict and makes transformers fail in add_tokens; taken as an AddedToken here.)
        extra = [_as_token(t) for t in extra_raw]
    # the seven standard attributes named in added_tokens_decoder take that AddedToken
    for key in SPECIAL_ATTRS:
        v = special.get(key)
        if v is not None and by_content:
            special[key] = by_content.get(_content(v), v)
    if spm_extra is not None:
        # convert_to_native_format: bos/eos/unk from the proto when unset; the pieces as
        # additional_special_tokens, which the base __init__ takes only when the config gave no
        # extra_special_tokens; a config added_tokens_decoder entry renames the piece at its id.
        spm = backend.spm
        for attr, pid, piece, dflt in (("bos_token", spm.bos_id, spm.bos_piece, "<s>"),
                                       ("eos_token", spm.eos_id, spm.eos_piece, "</s>"),
                                       ("unk_token", spm.unk_id, spm.unk_piece, "<unk>")):
            if pid >= 0:
                special.setdefault(attr, piece or dflt)
        if "extra_special_tokens" not in init:
            extra = spm_extra
        if decoder and spm.model_type == 1:
            raise VocabError(f"{tm}: a Unigram sentencepiece model with an added_tokens_decoder in "
                             "tokenizer_config.json does not load in transformers 5.3")
        if decoder:
            id_to_tok = {i: t for t, i in backend.model_vocab.items()}
            for idx, new in decoder.items():
                cur = id_to_tok.get(idx)
                if cur and cur != new.content and new.content not in backend.model_vocab:
                    backend.model_vocab[new.content] = backend.model_vocab.pop(cur)
                    id_to_tok[idx] = new.content

    # 4. TokenizersBackend.__init__. Its filter `hash(repr(token)) not in {hash(repr(k)) for k in
    # self.added_tokens_decoder}` compares against the dict's int keys, so every added_tokens_decoder
    # entry is queued (add_tokens then skips the identical ones).
    queue = [t for _, t in sorted(decoder.items())]
    encoder = [backend.added_r[i].content for i in sorted(backend.added_r)] + [t.content for t in queue]
    named = [_content(v) for v in special.values() if v]
    for value in [special[k] for k in attrs if special.get(k) is not None] + list(extra):
        if _content(value) not in encoder and value not in queue:
            queue.append(value)
    tokens = []
    for t in queue:
        if isinstance(t, str):
            t = AddedToken.py(t, special=True)
        elif not t.special and t.content in named:
            t = t._replace(special=True)
        tokens.append(t)
    backend.add_tokens(tokens)
    return VocabView(backend, special, extra, _chat_templates(folder, config), config, source, folder)
