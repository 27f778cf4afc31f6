"""Tokenizer variants for the GGUF view's tokenizer keys (merge/gguf/gguf_vocab.c): the base byte-level
BPE of tok_fixture with the normalizer, pre-tokenizer and post-processor definitions of real families,
so that the view names their pre-tokenizer as llama.cpp does, and tokenizer_config.json details the
converter reads (add_prefix_space, add_bos_token, a chat template, added tokens).

    apply(folder, kind)     # in place, on a folder that has tok_fixture's base (or chatml) tokenizer

Kinds:
  llama3   Llama 3's definitions (tokenizer.json of meta-llama/Meta-Llama-3-8B): no normalizer;
           Split(Llama 3's pattern, Isolated) then ByteLevel(use_regex false); post-processor ByteLevel
           then TemplateProcessing adding the bos token `<s>`; ignore_merges true
  llama3-config  llama3 with the tokenizer_config.json keys the converter reads besides the special
           tokens: add_prefix_space true, add_bos_token false (over the post-processor's), and named chat
           templates (a list of {name, template}: "default" and "tool_use")
  qwen2    Qwen 2's (Qwen/Qwen2.5-7B-Instruct): NFC; Split(Qwen 2's pattern) then ByteLevel(use_regex
           false, trim_offsets false); post-processor ByteLevel; tokenizer_config.json without bos_token
  phi3     tokenizer_config.json for a sentencepiece folder: tokenizer_class LlamaTokenizer (phi3's
           converter reads it), an added_tokens_decoder (the model's control pieces and two new tokens)
           and added_tokens.json; the new tokens get embedding rows (vocab_size 98, as Phi-3's 32064
           covers its added tokens)

The definitions are tok_fixture's (LLAMA3_REGEX / QWEN2_REGEX, style_llama3, style_qwen2), which its
STYLED kinds use too.

Real vocabularies (for the converter's pre-tokenizer hash, which only a real vocabulary's ids give):

    gpt2_from_gguf(vocab_gguf, folder)        # GPT-2's tokenizer.json and config from llama.cpp's
                                              # models/ggml-vocab-gpt-2.gguf (its tokens and merges)
    qwen2_from_files(vocab_json, merges_txt, tokenizer_config, folder)
                                              # Qwen 2's tokenizer.json from a Qwen 2 repo's slow files

Run as a script: python3 gguf_tok_fixture.py FOLDER KIND
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tok_fixture  # noqa: E402

from tok_fixture import byte_level, write_json  # noqa: E402

KINDS = ("llama3", "llama3-config", "qwen2", "phi3")


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def apply(folder, kind, seed=0):
    tj_path, cfg_path = os.path.join(folder, "tokenizer.json"), os.path.join(folder, "tokenizer_config.json")
    if kind == "phi3":
        cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
               "unk_token": "<unk>", "pad_token": "<pad>", "tokenizer_class": "LlamaTokenizer",
               "legacy": False, "added_tokens_decoder": {}}
        # the fixture's spm-user pieces: <unk> 0, <s> 1, </s> 2, <pad> 3 (control), <|im_start|> 4,
        # <|im_end|> 5 (user-defined); two new tokens at 96 and 97
        for i, (tok, special) in enumerate([("<unk>", True), ("<s>", True), ("</s>", True), ("<pad>", True),
                                           ("<|im_start|>", True), ("<|im_end|>", False)]):
            cfg["added_tokens_decoder"][str(i)] = {"content": tok, "lstrip": False, "normalized": False,
                                                   "rstrip": False, "single_word": False, "special": special}
        cfg["added_tokens_decoder"]["96"] = {"content": "<|end|>", "lstrip": False, "normalized": False,
                                             "rstrip": True, "single_word": False, "special": True}
        cfg["added_tokens_decoder"]["97"] = {"content": "<|user|>", "lstrip": False, "normalized": False,
                                             "rstrip": True, "single_word": False, "special": False}
        cfg["chat_template"] = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        write_json(cfg_path, cfg, sort=True)
        write_json(os.path.join(folder, "added_tokens.json"), {"<|end|>": 96, "<|user|>": 97})
        tok_fixture.rewrite_rows(folder, list(range(96)) + ["<|end|>", "<|user|>"], 98, seed)
        return folder
    tj = _load(tj_path)
    if kind == "llama3-config":
        apply(folder, "llama3", seed)
        cfg = _load(cfg_path)
        cfg.update(add_prefix_space=True, add_bos_token=False,
                   chat_template=[{"name": "default", "template": tok_fixture.CHATML_TEMPLATE},
                                  {"name": "tool_use", "template": "{{ tools }}" + tok_fixture.CHATML_TEMPLATE}])
        write_json(cfg_path, cfg, sort=True)
        return folder
    if kind == "llama3":
        tok_fixture.style_llama3(tj, "<s>", tj["model"]["vocab"]["<s>"], add_prefix_space=False)
    elif kind == "qwen2":
        tok_fixture.style_qwen2(tj)
        cfg = _load(cfg_path)
        cfg["bos_token"] = None
        cfg["add_prefix_space"] = False
        cfg["errors"] = "replace"
        write_json(cfg_path, cfg, sort=True)
    else:
        raise ValueError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    write_json(tj_path, tj)
    return folder


def _set_vocab_size(folder, n):
    path = os.path.join(folder, "config.json")
    cfg = _load(path)
    tok_fixture.set_config_vocab_size(cfg, n, tok_fixture.vocab_key(cfg))
    write_json(path, cfg, sort=True)


def _bpe_model(vocab, merges):
    return {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab, "merges": merges}


def gpt2_from_gguf(vocab_gguf, folder, nfc=False):
    """GPT-2's tokenizer (openai-community/gpt2: ByteLevel with GPT-2's pattern, <|endoftext|> 50256) from
    a vocabulary GGUF. nfc: with an NFC normalizer, which changes no id of the converter's test text."""
    import gguf
    r = gguf.GGUFReader(vocab_gguf)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    bl = byte_level(True, True)
    eot = {"id": len(tokens) - 1, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
           "rstrip": False, "normalized": True, "special": True}
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [eot],
          "normalizer": {"type": "NFC"} if nfc else None, "pre_tokenizer": bl,
          "post_processor": byte_level(False, True), "decoder": bl,
          "model": _bpe_model({t: i for i, t in enumerate(tokens)}, merges)}
    write_json(os.path.join(folder, "tokenizer.json"), tj)
    write_json(os.path.join(folder, "tokenizer_config.json"),
               {"add_prefix_space": False, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>", "model_max_length": 1024, "tokenizer_class": "GPT2Tokenizer"})
    _set_vocab_size(folder, len(tokens))
    return folder


def qwen2_from_files(vocab_json, merges_txt, tokenizer_config, folder):
    """Qwen 2's tokenizer.json (the definitions of apply's qwen2) from vocab.json, merges.txt and the
    tokenizer_config.json of a Qwen 2 repository (its added_tokens_decoder gives the added tokens)."""
    vocab = _load(vocab_json)
    with open(merges_txt, encoding="utf-8") as f:
        merges = [ln for ln in f.read().split("\n")[1:] if ln]
    cfg = _load(tokenizer_config)
    cfg.pop("chat_template", None)
    added = [dict(id=int(i), **v) for i, v in cfg["added_tokens_decoder"].items()]
    # the sections style_qwen2 sets are named here only to hold their places in tokenizers' key order
    tj = tok_fixture.style_qwen2({"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
                                  "normalizer": None, "pre_tokenizer": None, "post_processor": None,
                                  "decoder": byte_level(False, False), "model": _bpe_model(vocab, merges)})
    write_json(os.path.join(folder, "tokenizer.json"), tj)
    write_json(os.path.join(folder, "tokenizer_config.json"), cfg, sort=True)
    _set_vocab_size(folder, max(a["id"] for a in added) + 1)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in KINDS:
        sys.exit(f"usage: gguf_tok_fixture.py FOLDER {{{'|'.join(KINDS)}}}")
    apply(sys.argv[1], sys.argv[2])
