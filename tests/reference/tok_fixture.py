"""Tokenizer files for the test models, and models whose vocabularies differ (issue 12).

The models come from the existing generators (arch_fixture.make: real tensor names, 96-row
embeddings; mmtest.derive_model: fine-tunes). This module gives such a model folder a tokenizer and,
where the vocabulary changes, rewrites its embedding rows (every 2-D tensor config_eval.is_embed
names whose row count is the config's vocab_size: input embeddings, lm_head and a vocabulary-sized
lm_head.bias) and config.json's
vocab_size, so that a token keeps its row wherever its id moved:

    write_base_tokenizer(folder)            # the base tokenizer files, nothing else touched
    apply_variant(folder, kind, seed=0)     # in place: tokenizer files + embedding rows + vocab_size
    make_variant(src, dest, kind, seed=0)   # a copy of src with the variant applied
    apply_styled(folder, kind)              # a STYLED kind's tokenizer files (vocab_size 96 checked)
    write_styled_tokenizer(folder, kind)    # the same into any folder with vocab_size >= 96

Kinds (VARIANTS):
  base        a byte-level BPE tokenizer.json of 96 tokens (3 special tokens, the byte alphabet of
              TEXT, merges learned from TEXT by train_bpe) + tokenizer_config.json
  chatml      base + `<|im_start|>` (96) and `<|im_end|>` (97) as special added tokens, eos
              `<|im_end|>`, a chat template; 2 new embedding rows; vocab_size 98
  reordered   base with one merged token removed (its merge too; the ids above it move down one)
              and two alphabet tokens swapped; rows permuted to follow; vocab_size 95
  padded      base tokenizer, vocab_size 112 > len(tokenizer) = 96; 16 new rows nobody uses
  unused      base + `<UNUSED_0..3>` added at ids 96..99 >= vocab_size 96 (mergekit's model_padded:
              tokens the model has no rows for; stripped when it is the base)
  spm-unigram, spm-bpe   tokenizer.model only (sentencepiece trainer on TEXT, 96 pieces)
  spm-user    unigram tokenizer.model with a control piece `<pad>` and user-defined pieces
              `<|im_start|>`, `<|im_end|>` (96 pieces)

Kinds for the GGUF view (STYLED, not in VARIANTS): a byte-level BPE laid out the way a published
model's tokenizer.json is, so that llama.cpp's converter names its pre-tokenizer (tokenizer.ggml.pre):
  llama3-bpe  Llama 3's: pre_tokenizer Sequence[Split(Llama 3 regex, Isolated), ByteLevel(no prefix
              space, trim_offsets, no regex)], no normalizer, post_processor Sequence[ByteLevel,
              TemplateProcessing <|begin_of_text|> $A], model ignore_merges and no unk token; 93 BPE
              tokens (train_bpe on TEXT, no specials) then <|begin_of_text|> (93), <|end_of_text|>
              (94), <|eot_id|> (95) as added special tokens only (not in the model's vocab), bos
              <|begin_of_text|>, eos <|eot_id|>, a Llama 3 style chat template -> "llama-bpe"
  qwen2-bpe   Qwen2's: normalizer NFC, pre_tokenizer Sequence[Split(Qwen2 regex: digits one at a time),
              ByteLevel(trim_offsets false)], post_processor ByteLevel; 93 BPE tokens then
              <|endoftext|> (93), <|im_start|> (94), <|im_end|> (95); no bos, eos <|im_end|>, pad
              <|endoftext|>, ChatML template -> "qwen2"
The embedding rows and vocab_size (96) are unchanged. Their sections (split_byte_level, bos_post_processor,
style_llama3, style_qwen2) are also gguf_tok_fixture's.

New rows are drawn from (seed, tensor name, token) and rounded to the tensor's dtype. Everything is
deterministic: the same call writes the same bytes (the sentencepiece models are trained with one
thread; their bytes can differ between sentencepiece versions, not between runs).

Run as a script: python3 tok_fixture.py FOLDER KIND [--seed N]
"""

import argparse
import io
import json
import os
import re
import shutil
import sys
import zlib
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import safetensors_io as st  # noqa: E402
from config_eval import is_embed  # noqa: E402
from tokenizer_eval import config_vocab_size, set_config_vocab_size, vocab_key  # noqa: E402

VOCAB = 96
SPECIALS = ("<unk>", "<s>", "</s>")
CHATML = ("<|im_start|>", "<|im_end|>")
UNUSED = tuple(f"<UNUSED_{i}>" for i in range(4))
PADDED_VOCAB = 112
VARIANTS = ("base", "chatml", "reordered", "padded", "unused", "spm-unigram", "spm-bpe", "spm-user")
STYLED = ("llama3-bpe", "qwen2-bpe")

# The Split patterns of Llama 3's and Qwen2's tokenizer.json (the same but for \p{N}{1,3} / \p{N}); the
# tokenizers library's files hold them (convert_slow_tokenizer.py writes Llama 3's, tokenization_qwen2.py
# Qwen 2's).
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>")
QWEN2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# A Llama 3 style template of our own wording.
LLAMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' "
                   "+ m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
                   "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja")

# Training text, written for these fixtures.
TEXT = """the river runs past the old mill, and the miller counts the sacks of grain.
when the water is low the wheel turns slowly and the stones grind fine flour.
in spring the snow melts on the hills and the river rises over its banks.
the children of the village watch the boats carry wood down to the sea.
a merchant buys the flour and sells it in the town beyond the forest.
merging two models is like joining two rivers: the water of both runs in one bed.
a small model learns a few words; a large model learns many words and their order.
each token of a vocabulary has a row in the embedding table, and the rows are vectors.
when two tokenizers differ, a word may sit at another place in each table.
the union of two vocabularies keeps every word once and gives new words new places.
a padded table has more rows than words, so the last rows belong to nobody.
the baker wakes before the sun, lights the oven, and shapes the dough by hand.
bread, cakes and pies cool on the window while the street is still quiet.
old maps show roads that no longer exist and towns that changed their names.
the keeper of the lighthouse writes the weather in a book every evening.
wind from the north brings rain; wind from the west brings warm, dry days.
numbers like 7, 12 and 2048 appear in tables, dates and measurements.
quiet questions often get the most honest answers, just as zebras jump over fences.
"""

# A ChatML template of our own wording (same rendering as the usual one).
CHATML_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                   "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


# ---- a byte-level BPE --------------------------------------------------------------------------------

def byte_chars():
    """The byte-level alphabet (GPT-2's): printable bytes map to themselves, the other 68 bytes to
    the code points 256.. in byte order."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


PRE_TOKEN = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+")


def pre_tokens(text):
    """GPT-2's split (approximated with `re`), each piece spelled in the byte alphabet."""
    table = byte_chars()
    return ["".join(table[b] for b in piece.encode("utf-8")) for piece in PRE_TOKEN.findall(text)]


def train_bpe(text, size, specials=SPECIALS):
    """A deterministic BPE: the special tokens, the sorted alphabet of the text, then merges of the
    most frequent adjacent pair (ties: the smallest pair) until `size` tokens.
    Returns (vocab {token: id}, merges [[a, b]])."""
    words = Counter(tuple(w) for w in pre_tokens(text))
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in sorted({c for w in words for c in w}):
        vocab[ch] = len(vocab)
    merges = []
    while len(vocab) < size:
        pairs = Counter()
        for w, n in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += n
        if not pairs:
            raise ValueError("the text has too few pairs for this vocabulary size")
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merged = best[0] + best[1]
        merges.append(list(best))
        if merged not in vocab:
            vocab[merged] = len(vocab)
        new_words = Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += n
        words = new_words
    return vocab, merges


def special_token(content):
    return {"content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
            "special": True}


def byte_level(trim_offsets, use_regex, add_prefix_space=False):
    """A ByteLevel section (pre-tokenizer, post-processor or decoder), in tokenizers' key order."""
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets,
            "use_regex": use_regex}


def tokenizer_json(vocab, merges, added):
    """A tokenizer.json in tokenizers' own key order. added: [(id, flags dict)]."""
    bl = byte_level(True, True)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [dict(id=i, **flags) for i, flags in added],
        "normalizer": None,
        "pre_tokenizer": bl,
        "post_processor": byte_level(False, True),
        "decoder": bl,
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": dict(sorted(vocab.items(), key=lambda kv: kv[1])), "merges": merges},
    }


def tokenizer_config(added, eos="</s>", chat_template=None):
    cfg = {"added_tokens_decoder": {str(i): flags for i, flags in added}, "bos_token": "<s>",
           "clean_up_tokenization_spaces": False, "eos_token": eos, "model_max_length": 4096,
           "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>"}
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    return cfg


def base_tokenizer():
    """(vocab, merges, added) of the base tokenizer."""
    vocab, merges = train_bpe(TEXT, VOCAB)
    added = [(vocab[t], special_token(t)) for t in SPECIALS]
    return vocab, merges, added


def write_json(path, obj, sort=False):
    """The fixtures' JSON layout: indent 2, UTF-8 text, a final newline; keys sorted when `sort` (as
    tokenizer_config.json and config.json are written)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=sort) + "\n")


def _clear_tokenizer(folder):
    for name in TOKENIZER_FILES:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            os.remove(path)


def write_tokenizer(folder, vocab, merges, added, eos="</s>", chat_template=None):
    _write_tokenizer_files(folder, tokenizer_json(vocab, merges, added), tokenizer_config(added, eos, chat_template))


def _write_tokenizer_files(folder, tj, cfg):
    """tokenizer.json and tokenizer_config.json in place of the folder's tokenizer files."""
    _clear_tokenizer(folder)
    write_json(os.path.join(folder, "tokenizer.json"), tj)
    write_json(os.path.join(folder, "tokenizer_config.json"), cfg, sort=True)


def write_base_tokenizer(folder):
    """The base tokenizer files into a model folder (its weights and config untouched)."""
    vocab, merges, added = base_tokenizer()
    write_tokenizer(folder, vocab, merges, added)


# ---- sentencepiece ---------------------------------------------------------------------------------

def train_spm(model_type, user_defined=(), control=()):
    """A sentencepiece model (bytes) of VOCAB pieces trained on TEXT: unk 0, bos 1, eos 2, no pad
    id, identity normalization (no precompiled charsmap), one thread. Needs the sentencepiece module."""
    import sentencepiece as spm
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([ln for ln in TEXT.split("\n") if ln]), model_writer=out, vocab_size=VOCAB,
        model_type=model_type, character_coverage=1.0, num_threads=1, minloglevel=2,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        user_defined_symbols=list(user_defined), control_symbols=list(control))
    return out.getvalue()


# ---- rewriting a model folder --------------------------------------------------------------------------

def _new_row(seed, name, key, h, dtype):
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8")), zlib.crc32(key.encode("utf-8"))])
    return st.round_to(dtype, rng.standard_normal(h, dtype=np.float32) * np.float32(0.05))


def rewrite_rows(folder, rows_of, new_vocab_size, seed):
    """Rewrites every embedding-like tensor of the folder (is_embed, 1-D or 2-D, as many rows as
    config.json's vocab_size): output row r = input row rows_of[r] when that is an int, else a new row drawn from
    (seed, name, rows_of[r]) (a str key). Sets config.json's vocab_size. Shard files keep their names
    and members; the index's total_size follows."""
    cfg_path = os.path.join(folder, "config.json")
    with open(cfg_path) as f:
        config = json.load(f)
    old = config_vocab_size(config)
    if old is None:
        raise ValueError(f"{cfg_path}: no vocab_size")
    files = st.weight_files(folder)
    total, weight_map, changed = 0, {}, 0
    for fname in files:
        path = os.path.join(folder, fname)
        tensors, _ = st.read_safetensors(path)
        out = {}
        for name, t in tensors.items():
            if is_embed(name) and len(t.shape) in (1, 2) and t.shape[0] == old:
                v = t.f32().reshape(old, -1)
                new = np.stack([v[r] if isinstance(r, int) else _new_row(seed, name, r, v.shape[1], t.dtype)
                                for r in rows_of]).reshape((len(rows_of),) + tuple(t.shape[1:]))
                out[name] = (t.dtype, new.shape, st.encode(t.dtype, new))
                changed += 1
            else:
                out[name] = (t.dtype, t.shape, t.raw)
            total += len(out[name][2])
            weight_map[name] = fname
        st.write_safetensors(path, out)
    if not changed:
        raise ValueError(f"{folder}: no embedding tensor with {old} rows")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, "w") as f:
            f.write(st.index_json_text(weight_map, total))
    set_config_vocab_size(config, new_vocab_size, vocab_key(config))
    with open(cfg_path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def _vocab_size(folder):
    """config.json's vocab_size, or None."""
    with open(os.path.join(folder, "config.json")) as f:
        return config_vocab_size(json.load(f))


def _check_vocab(folder):
    n = _vocab_size(folder)
    if n != VOCAB:
        raise ValueError(f"{folder}: the variants start from a model with vocab_size {VOCAB}, not {n} "
                         "(arch_fixture models have it)")


def apply_variant(folder, kind, seed=0):
    """Gives a model folder (vocab_size 96, e.g. from arch_fixture.make) the tokenizer `kind` and the
    matching embedding rows and vocab_size (module docstring). Returns the folder."""
    if kind not in VARIANTS:
        raise ValueError(f"unknown variant {kind!r} (one of {', '.join(VARIANTS)})")
    _check_vocab(folder)
    vocab, merges, added = base_tokenizer()
    if kind == "base":
        write_tokenizer(folder, vocab, merges, added)
    elif kind == "chatml":
        added = added + [(VOCAB + i, special_token(t)) for i, t in enumerate(CHATML)]
        write_tokenizer(folder, vocab, merges, added, eos="<|im_end|>", chat_template=CHATML_TEMPLATE)
        rewrite_rows(folder, list(range(VOCAB)) + list(CHATML), VOCAB + len(CHATML), seed)
    elif kind == "reordered":
        new_vocab, new_merges, old_of_new = reordered(vocab, merges)
        write_tokenizer(folder, new_vocab, new_merges, [(new_vocab[t], special_token(t)) for t in SPECIALS])
        rewrite_rows(folder, old_of_new, len(new_vocab), seed)
    elif kind == "padded":
        write_tokenizer(folder, vocab, merges, added)
        rewrite_rows(folder, list(range(VOCAB)) + [f"<pad row {i}>" for i in range(VOCAB, PADDED_VOCAB)],
                     PADDED_VOCAB, seed)
    elif kind == "unused":
        added = added + [(VOCAB + i, special_token(t)) for i, t in enumerate(UNUSED)]
        write_tokenizer(folder, vocab, merges, added)
    else:
        model_type = "bpe" if kind == "spm-bpe" else "unigram"
        user, control = (CHATML, ("<pad>",)) if kind == "spm-user" else ((), ())
        _clear_tokenizer(folder)
        with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
            f.write(train_spm(model_type, user, control))
    return folder


# ---- published families' sections ---------------------------------------------------------------------

def split_byte_level(regex, trim_offsets):
    """Llama 3's and Qwen2's pre_tokenizer: Split(regex, Isolated), then ByteLevel without its own regex."""
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        byte_level(trim_offsets, False)]}


def bos_post_processor(bos, bos_id, add_prefix_space=True):
    """Llama 3's post_processor: ByteLevel, then TemplateProcessing putting `bos` (id bos_id) before each
    sequence. add_prefix_space: the ByteLevel's (true in the published file; gguf_tok_fixture's llama3
    kind has false, kept so that its files stay as they were)."""
    return {"type": "Sequence", "processors": [
        byte_level(False, True, add_prefix_space),
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}]}


def style_llama3(tj, bos, bos_id, add_prefix_space=True):
    """Gives a tokenizer.json dict Llama 3's definitions: no normalizer, split_byte_level(LLAMA3_REGEX)
    with trim_offsets, bos_post_processor, the model's ignore_merges. In place; returns tj."""
    tj["normalizer"] = None
    tj["pre_tokenizer"] = split_byte_level(LLAMA3_REGEX, True)
    tj["post_processor"] = bos_post_processor(bos, bos_id, add_prefix_space)
    tj["model"]["ignore_merges"] = True
    return tj


def style_qwen2(tj):
    """Gives a tokenizer.json dict Qwen2's definitions: NFC, split_byte_level(QWEN2_REGEX) without
    trim_offsets, a ByteLevel post_processor. In place; returns tj."""
    tj["normalizer"] = {"type": "NFC"}
    tj["pre_tokenizer"] = split_byte_level(QWEN2_REGEX, False)
    tj["post_processor"] = byte_level(False, False)
    return tj


def _check_styled(kind):
    if kind not in STYLED:
        raise ValueError(f"unknown styled tokenizer {kind!r} (one of {', '.join(STYLED)})")


def styled_tokenizer(kind):
    """(tokenizer.json dict, tokenizer_config.json dict) of a STYLED kind (module docstring)."""
    specials = LLAMA3_SPECIALS if kind == "llama3-bpe" else QWEN2_SPECIALS
    vocab, merges = train_bpe(TEXT, VOCAB - len(specials), specials=())
    added = [(len(vocab) + i, special_token(t)) for i, t in enumerate(specials)]
    tj = tokenizer_json(vocab, merges, added)
    tj["model"]["unk_token"] = None
    if kind == "llama3-bpe":
        bos = specials[0]
        style_llama3(tj, bos, len(vocab))
        cfg = {"added_tokens_decoder": {str(i): flags for i, flags in added}, "bos_token": bos,
               "chat_template": LLAMA3_TEMPLATE, "clean_up_tokenization_spaces": True, "eos_token": specials[2],
               "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 131072,
               "tokenizer_class": "PreTrainedTokenizerFast"}
    else:
        style_qwen2(tj)
        cfg = {"add_prefix_space": False, "added_tokens_decoder": {str(i): flags for i, flags in added},
               "bos_token": None, "chat_template": CHATML_TEMPLATE, "clean_up_tokenization_spaces": False,
               "eos_token": specials[2], "errors": "replace", "model_max_length": 131072, "pad_token": specials[0],
               "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None}
    return tj, cfg


def apply_styled(folder, kind):
    """Gives a model folder (vocab_size 96) the tokenizer files of a STYLED kind; weights untouched."""
    _check_styled(kind)
    _check_vocab(folder)
    return write_styled_tokenizer(folder, kind)


def write_styled_tokenizer(folder, kind):
    """Writes a STYLED kind's tokenizer.json and tokenizer_config.json into an existing model folder in
    place of its tokenizer files; its weights and config.json are left alone. Unlike apply_styled, any
    vocab_size of at least VOCAB will do (bench/gguf_bench.sh gives it 32,000-row models): the rows past
    the tokenizer's 96 ids are ones no token uses, as in a padded vocabulary. Returns the folder."""
    _check_styled(kind)
    n = _vocab_size(folder)
    if n is None or n < VOCAB:
        raise ValueError(f"{folder}: vocab_size {n}: the styled tokenizers have {VOCAB} ids, each needs a row")
    tj, cfg = styled_tokenizer(kind)
    _write_tokenizer_files(folder, tj, cfg)
    return folder


def reordered(vocab, merges):
    """The `reordered` vocabulary: the first merged token that no later merge uses is removed with its
    merge (the ids above it move down one), and the first two alphabet letters swap ids.
    Returns (vocab, merges, [old id of each new id])."""
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    used = Counter(p for m in merges for p in m)
    products = [a + b for a, b in merges]
    victim = next(t for t in products[:-1] if used[t] == 0 and vocab[t] >= len(SPECIALS))
    kept_merges = [m for m in merges if m[0] + m[1] != victim]
    order = [t for t in tokens if t != victim]
    letters = [t for t in order if len(t) == 1 and t.isalpha()]
    i, j = order.index(letters[0]), order.index(letters[1])
    order[i], order[j] = order[j], order[i]
    new_vocab = {t: k for k, t in enumerate(order)}
    return new_vocab, kept_merges, [vocab[t] for t in order]


def make_variant(src, dest, kind, seed=0):
    """A copy of model folder src at dest with apply_variant(kind)."""
    shutil.copytree(src, dest)
    return apply_variant(dest, kind, seed)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("kind", choices=VARIANTS + STYLED)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        if a.kind in STYLED:
            apply_styled(a.folder, a.kind)
        else:
            apply_variant(a.folder, a.kind, a.seed)
    except (ValueError, OSError) as e:
        print(f"tok_fixture: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
