"""Runs llama.cpp's real converter (convert_hf_to_gguf.py) on a model folder, in a child process, for
comparing its GGUF with ours. The one runner of the converter: test_gguf.py, test_gguf_vocab.py and
test_llamacpp_convert.py call convert(), bench/gguf_bench.sh runs this file by hand:
`python3 llamacpp_gguf.py FOLDER OUT.gguf OUTTYPE`.

Needs MM_LLAMACPP_SRC (a llama.cpp checkout: convert_hf_to_gguf.py, conversion/, gguf-py/) and
MM_TRANSFORMERS_SRC (a transformers src/ tree; MM_HF_HUB_SRC a huggingface_hub src/ tree when it is not
installed), with torch, numpy and sentencepiece importable. The child sets up transformers as
test_transformers_config.import_transformers does and gives Debian 12's torch 1.13 placeholder attributes
for the float8 and unsigned dtypes the converter names in a lookup table (never used for a bf16
model). Two more stand-ins, only on the byte-level BPE (tokenizer.json) path, and only where the
machine lacks what the converter would use or the caller names the pre-tokenizer (convert's `pre`):

  * transformers' AutoTokenizer needs the `tokenizers` package (Rust) for a tokenizer.json. Without it,
    AutoTokenizer.from_pretrained returns a stand-in built by tests/reference/tokenizer_files.vocab_view
    (transformers 5's view of the folder: get_vocab() with the added tokens, added_tokens_decoder,
    get_added_vocab()); its encode/decode handle only an added token's own text (all the converter's
    get_vocab_base asks of them, for added tokens that are not normalized);
  * the converter names the pre-tokenizer (tokenizer.ggml.pre) by hashing the ids the real tokenizer
    gives a fixed text, which only the published vocabulary reproduces: with the stand-in,
    get_vocab_base_pre answers from tokenizer.json's pre_tokenizer instead — "llama-bpe" for Llama 3's
    Split pattern, "qwen2" for Qwen2's, "gpt-2" for GPT-2's ByteLevel (the names the hash gives the
    published Llama 3, Qwen2 / Qwen2.5 and GPT-2 tokenizers) — and refuses any other, as the converter
    refuses an unknown hash. convert(pre=NAME) makes it answer NAME instead (and uses the stand-in
    tokenizer even where `tokenizers` is installed, since no fixture vocabulary is in the hash table):
    for a caller whose cases state the name they expect.
Everything else — tensor names, permutations, norms, quantization, hyperparameters, the sentencepiece
path, the token list, token types, merges, special ids, chat template — is the converter's own code.
"""

import os
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(os.path.dirname(HERE), "reference")

CHILD = textwrap.dedent(r"""
    import importlib.util, json, os, runpy, sys
    sys.path[:0] = [os.environ["MM_TESTS_INTEGRATION"], os.environ["MM_TESTS_REFERENCE"]]
    import test_transformers_config as ttc
    PRE = os.environ.get("MM_GGUF_PRE")
    STAND_IN = bool(PRE) or importlib.util.find_spec("tokenizers") is None
    ttc.import_transformers(os.environ["MM_TRANSFORMERS_SRC"], sys.argv[1])
    import torch
    for name in ("float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64"):
        if not hasattr(torch, name):
            setattr(torch, name, object())
    src = os.environ["MM_LLAMACPP_SRC"]
    sys.path[:0] = [src, os.path.join(src, "gguf-py")]

    if STAND_IN:
        import transformers
        import tokenizer_files as tfiles
        import tok_fixture

        class StandInTokenizer:
            is_fast = True

            def __init__(self, folder):
                view = tfiles.vocab_view(str(folder))
                self.vocab = dict(view.vocab)
                self.added_tokens_decoder = dict(view.added)

            def get_vocab(self):
                return dict(self.vocab)

            def get_added_vocab(self):
                return {t.content: i for i, t in sorted(self.added_tokens_decoder.items())}

            def encode(self, text, add_special_tokens=True):
                for i, t in self.added_tokens_decoder.items():
                    if t.content == text:
                        return [i]
                raise NotImplementedError("the stand-in tokenizer encodes an added token's own text only")

            def decode(self, ids, **kw):
                return "".join(self.added_tokens_decoder[i].content for i in ids)

        class StandInAuto:
            @staticmethod
            def from_pretrained(path, *a, **kw):
                return StandInTokenizer(path)

        transformers.AutoTokenizer = StandInAuto
        import conversion.base as cb

        def get_vocab_base_pre(self, tokenizer):
            if PRE:
                return PRE
            with open(os.path.join(self.dir_model, "tokenizer.json"), encoding="utf-8") as f:
                pre = json.load(f).get("pre_tokenizer") or {}
            if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", True):
                return "gpt-2"
            pats = [p.get("pattern", {}).get("Regex") for p in pre.get("pretokenizers", []) if p.get("type") == "Split"]
            if pats == [tok_fixture.LLAMA3_REGEX]:
                return "llama-bpe"
            if pats == [tok_fixture.QWEN2_REGEX]:
                return "qwen2"
            raise NotImplementedError("BPE pre-tokenizer was not recognized - update get_vocab_base_pre()")

        cb.TextModel.get_vocab_base_pre = get_vocab_base_pre

    sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[2:]
    runpy.run_path(os.path.join(src, "convert_hf_to_gguf.py"), run_name="__main__")
""")


def available():
    """None when the converter can run here, else the reason it cannot."""
    import importlib.util
    src, tf = os.environ.get("MM_LLAMACPP_SRC") or os.environ.get("MM_LLAMA_CPP"), os.environ.get("MM_TRANSFORMERS_SRC")
    if not src or not tf:
        return ("set MM_LLAMACPP_SRC (or MM_LLAMA_CPP) to a llama.cpp checkout and MM_TRANSFORMERS_SRC to a "
                "transformers src/ tree (MM_HF_HUB_SRC for huggingface_hub), with torch and sentencepiece installed")
    if not os.path.isfile(os.path.join(src, "convert_hf_to_gguf.py")):
        return f"{src} holds no convert_hf_to_gguf.py"
    for module in ("torch", "sentencepiece"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return None


def convert(folder, outfile, outtype, shim_dir, timeout=600, args=(), pre=None):
    """Runs the converter: `convert_hf_to_gguf.py FOLDER --outfile OUTFILE --outtype OUTTYPE ARGS...`
    (args: more options, e.g. ("--vocab-only",)); pre: the pre-tokenizer name the BPE path gets (module
    docstring). Returns (returncode, stderr text)."""
    env = dict(os.environ, MM_TESTS_INTEGRATION=HERE, MM_TESTS_REFERENCE=REFERENCE)
    env.setdefault("MM_LLAMACPP_SRC", os.environ.get("MM_LLAMA_CPP", ""))
    # Only the caller's pre counts: one left in the environment must not name every folder's.
    env.pop("MM_GGUF_PRE", None)
    if pre:
        env["MM_GGUF_PRE"] = pre
    r = subprocess.run([sys.executable, "-c", CHILD, str(shim_dir), str(folder), "--outfile", str(outfile),
                        "--outtype", outtype, *args], env=env, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stderr


if __name__ == "__main__":
    import tempfile
    rc, err = convert(sys.argv[1], sys.argv[2], sys.argv[3], tempfile.mkdtemp())
    sys.stderr.write(err[-5000:])
    sys.exit(rc)
