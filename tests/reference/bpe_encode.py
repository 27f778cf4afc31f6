"""An independent reference encoder for tokenizer.json files with a BPE model: the ids
`tokenizer(text, add_special_tokens=False)["input_ids"]` gives, written from the `tokenizers` library's
documented behaviour (docs: "The tokenization pipeline"; pre-tokenizers ByteLevel, Split, Whitespace,
Metaspace; models BPE), to check formats/tokencode.c against (tests/integration/test_tokenize.py).

Differently from the C code: the split patterns are run by Python's `re` (a backtracking engine like
onig, the one the library uses), with \\p{L}, \\p{N}, \\s and \\w replaced by explicit character classes
built from unicodedata (Python's `re` has no \\p{..}, and its \\s and \\w are not Unicode's White_Space
and Rust's \\w); BPE merges by a priority queue of (rank, position) over a linked list of symbols.

Supported: normalizer null / NFC / Sequence of those; pre_tokenizer null, ByteLevel, Split (Isolated),
Whitespace, Metaspace, Sequence; model BPE (byte_fallback, fuse_unk, ignore_merges, unk_token).
Added tokens: tokenizer.json's added_tokens and tokenizer_config.json's added_tokens_decoder, found
leftmost-longest (non-normalized ones in the raw text, normalized ones after the normalizer).

    python3 bpe_encode.py FOLDER TEXT...   prints one JSON list per text
"""

import heapq
import json
import os
import re
import sys
import unicodedata
from functools import lru_cache

WHITE_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
               (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]


@lru_cache(maxsize=None)
def _ranges(kind):
    """Code point ranges of a class, as a `re` class body."""
    if kind == "s":
        rs = WHITE_SPACE
    else:
        def member(c):
            cat = unicodedata.category(c)
            if kind == "L":
                return cat[0] == "L"
            if kind == "N":
                return cat[0] == "N"
            # Rust regex \w: Alphabetic (L, Nl, Other_Alphabetic: marks and a few enclosed letters),
            # M, Nd, Pc, Join_Control
            cp = ord(c)
            return (cat[0] in "LM" or cat in ("Nl", "Nd", "Pc") or cp in (0x200C, 0x200D)
                    or 0x24B6 <= cp <= 0x24E9 or 0x1F130 <= cp <= 0x1F149 or 0x1F150 <= cp <= 0x1F169
                    or 0x1F170 <= cp <= 0x1F189)
        rs, start = [], None
        for cp in range(0x110001):
            inside = cp < 0x110000 and not (0xD800 <= cp <= 0xDFFF) and member(chr(cp))
            if inside and start is None:
                start = cp
            elif not inside and start is not None:
                rs.append((start, cp - 1))
                start = None
    return "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in rs)


def translate(pattern):
    """An onig pattern of tokenizer.json as a Python `re` pattern: \\p{L}, \\p{N}, \\s, \\S, \\w made
    explicit, inside and outside brackets."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and pattern[i + 1] == "p":
            name = pattern[i + 3]
            assert pattern[i + 2] == "{" and pattern[i + 4] == "}", pattern
            body = _ranges(name)
            out.append(body if in_class else "[" + body + "]")
            i += 5
            continue
        if c == "\\" and pattern[i + 1] in "sSw":
            body = _ranges(pattern[i + 1].lower())
            if pattern[i + 1] == "S":
                assert not in_class
                out.append("[^" + body + "]")
            else:
                out.append(body if in_class else "[" + body + "]")
            i += 2
            continue
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return re.compile("".join(out))


GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def byte_alphabet():
    """GPT-2's bytes_to_unicode: printable Latin-1 bytes keep their code point, the others get 256+
    (the same table as the tokenizer fixtures use)."""
    from tok_fixture import byte_chars
    return byte_chars()


BYTES = byte_alphabet()


def split_isolated(regex, text):
    """Split(behavior=Isolated): matches and the text between them, in order."""
    out, last = [], 0
    for m in regex.finditer(text):
        if m.start() == m.end():
            continue
        if m.start() > last:
            out.append(text[last:m.start()])
        out.append(m.group())
        last = m.end()
    if last < len(text):
        out.append(text[last:])
    return out


class Encoder:
    def __init__(self, folder):
        with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        cfg_path = os.path.join(folder, "tokenizer_config.json")
        cfg = {}
        if os.path.exists(cfg_path):
            with open(cfg_path, encoding="utf-8") as f:
                cfg = json.load(f)
        model = tj["model"]
        if model["type"] != "BPE":
            raise ValueError(f"model {model['type']} not supported")
        self.vocab = dict(model["vocab"])
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        self.ranks = {}
        for r, pair in enumerate(merges):
            self.ranks[pair] = r
        self.byte_fallback = bool(model.get("byte_fallback"))
        self.fuse_unk = bool(model.get("fuse_unk"))
        self.ignore_merges = bool(model.get("ignore_merges"))
        self.unk = model.get("unk_token")
        self.added = {}  # content -> (id, flags)
        for a in tj.get("added_tokens", []):
            self.added[a["content"]] = (a["id"], a)
        for i, a in (cfg.get("added_tokens_decoder") or {}).items():
            self.added[a["content"]] = (int(i), a)
        self.nfc = False
        self._normalizer(tj.get("normalizer"))
        self.steps = []
        self._pre(tj.get("pre_tokenizer"))

    def _normalizer(self, n):
        if n is None:
            return
        if n["type"] == "NFC":
            self.nfc = True
        elif n["type"] == "Sequence":
            for s in n["normalizers"]:
                self._normalizer(s)
        else:
            raise ValueError(f"normalizer {n['type']} not supported")

    def _pre(self, p):
        if p is None:
            return
        t = p["type"]
        if t == "Sequence":
            for s in p["pretokenizers"]:
                self._pre(s)
        elif t == "ByteLevel":
            self.steps.append(("bytelevel", p.get("add_prefix_space", True), p.get("use_regex", True)))
        elif t == "Split":
            assert p["behavior"] == "Isolated" and not p.get("invert")
            self.steps.append(("split", translate(p["pattern"]["Regex"])))
        elif t == "Whitespace":
            self.steps.append(("whitespace", translate(r"\w+|[^\w\s]+")))
        elif t == "Metaspace":
            scheme = p.get("prepend_scheme", "always" if p.get("add_prefix_space", True) else "never")
            self.steps.append(("metaspace", p["replacement"], scheme, p.get("split", True)))
        else:
            raise ValueError(f"pre-tokenizer {t} not supported")

    # -- added tokens
    def _split_added(self, text, normalized):
        """[(str, None) | (None, id)]: the added tokens of that kind found leftmost-longest."""
        toks = sorted(((c, v) for c, v in self.added.items() if bool(v[1].get("normalized")) == normalized and c),
                      key=lambda cv: -len(cv[0]))
        out, i, last = [], 0, 0
        while i < len(text):
            hit = next(((c, v) for c, v in toks if text.startswith(c, i)), None)
            if hit is None:
                i += 1
                continue
            c, (tid, flags) = hit
            start, stop = i, i + len(c)

            def wordy(ch):
                return ch == "_" or unicodedata.category(ch)[0] in "LN"
            if flags.get("single_word") and ((start > 0 and wordy(text[start - 1])) or
                                             (stop < len(text) and wordy(text[stop]))):
                i = stop
                continue
            if flags.get("lstrip"):
                while start > last and text[start - 1] in WS:
                    start -= 1
            if flags.get("rstrip"):
                while stop < len(text) and text[stop] in WS:
                    stop += 1
            out.append((text[last:start], None))
            out.append((None, tid))
            last = i = stop
        out.append((text[last:], None))
        return out

    def encode(self, text):
        ids = []
        first_offset = 0
        for raw, tid in self._split_added(text, False):
            if tid is not None:
                ids.append(tid)
                first_offset += 1
                continue
            if self.nfc and unicodedata.normalize("NFC", raw) != raw:
                raise ValueError("text changes under NFC")
            for part, tid2 in self._split_added(raw, True):
                if tid2 is not None:
                    ids.append(tid2)
                    first_offset += 1
                    continue
                if part:
                    for word in self._pretokenize(part, first=text.startswith(part) and first_offset == 0):
                        ids.extend(self._bpe(word))
                    first_offset += len(part)
        return ids

    def _pretokenize(self, text, first):
        words = [text]
        for step in self.steps:
            new = []
            for k, w in enumerate(words):
                if step[0] == "split":
                    new.extend(split_isolated(step[1], w))
                elif step[0] == "whitespace":
                    new.extend(m.group() for m in step[1].finditer(w))
                elif step[0] == "bytelevel":
                    _, prefix, use_regex = step
                    if prefix and not w.startswith(" "):
                        w = " " + w
                    parts = split_isolated(translate(GPT2), w) if use_regex else [w]
                    new.extend("".join(BYTES[b] for b in p.encode("utf-8")) for p in parts)
                else:
                    _, rep, scheme, split = step
                    w = w.replace(" ", rep)
                    if (scheme == "always" or (scheme == "first" and first and k == 0)) and not w.startswith(rep):
                        w = rep + w
                    if split:
                        pieces, cur = [], ""
                        for ch in w:
                            if ch == rep and cur:
                                pieces.append(cur)
                                cur = ""
                            cur += ch
                        if cur:
                            pieces.append(cur)
                        new.extend(pieces)
                    else:
                        new.append(w)
            words = [w for w in new if w]
        return words

    # -- the model
    def _bpe(self, word):
        if self.ignore_merges and word in self.vocab:
            return [self.vocab[word]]
        syms, unk = [], False  # symbols as strings
        for ch in word:
            if ch in self.vocab:
                if unk:
                    syms.append(self.unk)
                    unk = False
                syms.append(ch)
                continue
            if self.byte_fallback:
                bts = ["<0x%02X>" % b for b in ch.encode("utf-8")]
                if all(b in self.vocab for b in bts):
                    syms.extend(bts)
                    continue
            if self.unk is None:
                continue
            if self.unk not in self.vocab:
                raise ValueError("unk_token not in the vocabulary")
            if unk and not self.fuse_unk:
                syms.append(self.unk)
            unk = True
        if unk:
            syms.append(self.unk)
        # a doubly linked list and a heap of (rank, left position); stale entries are skipped
        nxt = list(range(1, len(syms))) + [-1]
        prv = [-1] + list(range(len(syms) - 1))
        alive = [True] * len(syms)
        heap = []

        def push(i):
            j = nxt[i]
            if j >= 0:
                r = self.ranks.get((syms[i], syms[j]))
                if r is not None:
                    heapq.heappush(heap, (r, i, syms[i], syms[j]))
        for i in range(len(syms)):
            push(i)
        while heap:
            r, i, a, b = heapq.heappop(heap)
            j = nxt[i] if alive[i] else -1
            if j < 0 or syms[i] != a or syms[j] != b:
                continue
            syms[i] = a + b
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prv[nxt[j]] = i
            if prv[i] >= 0:
                push(prv[i])
            push(i)
        return [self.vocab[s] for s, ok in zip(syms, alive) if ok]


WS = {chr(c) for a, b in WHITE_SPACE for c in range(a, b + 1)}


def main(argv):
    enc = Encoder(argv[1])
    for t in argv[2:]:
        print(json.dumps(enc.encode(t)))


if __name__ == "__main__":
    main(sys.argv)
