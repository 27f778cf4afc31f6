"""What llama.cpp's converter (convert_hf_to_gguf.py --outtype TYPE) writes for a model folder, computed
in numpy (sentencepiece for tokenizer.model): the reference of the GGUF view.

    exp = gguf_ref.expected(folder, outtype)        # outtype: auto, f32, f16, bf16, q8_0
    exp.arch, exp.ftype, exp.type_name              # "llama", 32, "BF16"
    exp.kv        {key: gguf_read.Value} in the converter's order (the keys below that are modelled)
    exp.tensors   [Tensor(name, type, shape, raw)] in the converter's order (shape outermost first)
    exp.n_params  total elements of the GGUF tensors; exp.size_label "1.2M" (gguf-py's notation)
    gguf_ref.file_name(stem, exp)                    # "<stem>-<size label>-<TYPE>.gguf"

Written from reading the converter (llama.cpp: convert_hf_to_gguf.py, conversion/base.py, llama.py,
qwen.py, gemma.py, phi.py; gguf-py: constants.py, tensor_mapping.py, gguf_writer.py, vocab.py, quants.py,
utility.py) and checked against its output (tests/integration/llamacpp_gguf.py runs it); no code of it
is used here. The rules:

Families (config.json `architectures[0]`): LlamaForCausalLM / MistralForCausalLM -> llama,
Qwen2ForCausalLM -> qwen2, GemmaForCausalLM -> gemma, Gemma2ForCausalLM -> gemma2, Gemma3ForCausalLM ->
gemma3, Phi3ForCausalLM -> phi3. Anything else raises Unsupported.

The hyperparameters the converter reads are transformers' `AutoConfig.from_pretrained(...).to_dict()`,
not config.json as is: `hparams()` applies what transformers 5 does for these families' keys that matter
(rope_theta and rope_scaling folded into `rope_parameters` with rope_type "default" and the family's
default theta when absent; Llama/Mistral's head_dim = hidden_size // num_attention_heads and
num_key_value_heads = num_attention_heads when absent; Gemma 3's rope per layer type).

Tensors, in order: the family's generated tensors first (Llama 3 `rope_freqs.weight` from rope_type
llama3; Phi-3 `rope_factors_long/short.weight` from longrope factors), then the model's: shard files in
name order (the index's files, else files `model*.safetensors`), tensors by name within a file. Skipped:
multimodal names, `*.rotary_emb.inv_freq`, `*.attention.bias`, `*.attention.masked_bias`, Gemma 1/2's
`lm_head.weight`. BF16 (any dtype but F16/F32) becomes float32 first; F16 stays F16 through the
family's changes:
  * llama: q_proj (heads = num_attention_heads) and k_proj (heads = num_key_value_heads) weights and
    biases permuted: output row h*hd + 2i + j = input row h*hd + j*hd/2 + i;
  * gemma, gemma2, gemma3: +1 on every tensor whose name ends in `norm.weight` (q_norm/k_norm too), in
    float32 (or float16 for F16 sources, rounded as numpy/torch round a half-precision sum);
  * gemma3: token_embd keeps its first n rows, n = the sentencepiece vocabulary size (the config's
    vocab_size) or len(tokenizer.json vocab) + len(added_tokens).
Names map to GGUF names by the arch's table (TENSOR_MAP); an unmappable name raises.
The type of each tensor: F32 if it has <= 1 dimension, its GGUF name ends in `_norm.weight`, or it does
not end in `.weight` (biases); else the outtype's (f32 F32, f16 F16, bf16 BF16, q8_0 Q8_0; auto: the
dtype of the first tensor of >= 2 dimensions in the order above before any change: BF16 -> BF16, F16 ->
F16, else F16). Q8_0 of a tensor whose rows are not a multiple of 32 falls back to F16. Encodings as
gguf-py: F16 numpy astype (round to nearest even); BF16 round to nearest even with NaN made quiet
((bits & 0xffff0000) | 0x400000); Q8_0 blocks of 32: d = max|x| / 127 (float32), id = 1/d (0 when d is
0), q = round-half-away-from-zero(x * id) computed as gguf-py's np_roundf, d stored as float16, q as int8.

Key/values, in the converter's order: general.architecture, general.type "model", (naming keys), the
family's set_gguf_parameters, general.quantization_version 2, then set_vocab's tokenizer keys. A key set
twice keeps its first position (gguf-py overwrites in place); a value is typed as gguf-py types it
(add_uint32 / add_float32 / add_bool / add_string; arrays by their first element: str -> string, int ->
INT32, float -> FLOAT32).
  * hyperparameters: TextModel's generic set (block_count, context_length, embedding_length,
    feed_forward_length, head_count, head_count_kv, rope scaling type/factor for linear and yarn, rope
    freq_base, freq_base_swa, rms epsilon, layer norm epsilon, key_length/value_length from head_dim,
    file_type) with Llama's vocab_size and rope.dimension_count, Gemma's and Gemma 2's own lists (softcaps,
    sliding_window), Gemma 3's overrides, Phi-3's list (rope.scaling.original_context_length, rope
    dimension count from partial_rotary_factor, sliding_window or 0, rope.scaling.attn_factor with
    longrope factors);
  * tokenizer.model (sentencepiece; Llama, Gemma 1/2/3, Qwen2 when present, Phi-3): model "llama", pre
    "default", every piece with its score and type (NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4,
    UNUSED 5, BYTE 6), ids up to vocab_size padded with "[PAD{i}]" (score -10000, UNUSED); added_tokens.json
    and tokenizer_config.json's added_tokens_decoder override ids (score -1000; CONTROL when special or
    when the text looks special, else USER_DEFINED with U+2581 as space; Phi-3's own variant: USER_DEFINED
    unless special, then tokenizer.json's added_tokens the same way);
  * tokenizer.json byte-level BPE (Llama 3 style, Qwen2): model "gpt2", pre "llama-bpe" / "qwen2" from
    the pre_tokenizer's Split pattern (the converter hashes a real tokenizer's ids; see PRE_NAMES), tokens
    by id (or "gpt-2" for GPT-2's own pre-tokenizer: ByteLevel with its regex and no prefix space) from
    transformers' view of the folder (tokenizer_files.vocab_view), "[PAD{i}]" UNUSED for
    missing ids below vocab_size, added tokens CONTROL (special or looks special) or USER_DEFINED, the
    others NORMAL; merges "a b" (a space inside a part written as U+0120);
  * the special vocabulary (gguf-py's SpecialVocab): bos/eos/unk/sep/pad/mask ids from
    tokenizer_config.json's *_token looked up in tokenizer.json's added_tokens, then config.json's
    *_token_id (ints only; below the vocabulary size on the sentencepiece path), add_bos/add_eos/add_sep
    from tokenizer.json's TemplateProcessing and tokenizer_config.json's add_*_token, the chat template
    (tokenizer_config.json, else chat_template.jinja / chat_template.json); Gemma's eot id 107 (and the
    ids 67-70 it sets that have no GGUF key); add_space_prefix (False for Gemma 1/2/3 sentencepiece; a
    Llama's tokenizer_config add_prefix_space).

Not modelled (never compared; the tests treat them as naming keys): general.name, general.basename,
general.finetune, general.version, general.size_label, general.organization, general.description,
general.license*, general.tags, general.languages, general.base_model.*, general.dataset*,
general.quantized_by, general.url, general.repo_url and the other model-card keys of gguf-py's
Metadata. Not modelled because no supported family's fixture reaches them (their keys are not written
for these models): MoE keys, pooling, mrope sections, yarn's extra factors, codellama/granite vocab
special cases, merges.txt / vocab.json ("slow") tokenizers, tokenizer.json Metaspace (Llama 2 HF) vocab,
the Mistral tekken format, RobertaProcessing beyond what SpecialVocab sets.
"""

import json
import math
import os
import re
import struct
import sys
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import safetensors_io as st  # noqa: E402
from gguf_read import Value  # noqa: E402

ARCHS = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
         "GemmaForCausalLM": "gemma", "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3",
         "Gemma3ForConditionalGeneration": "gemma3",
         "Phi3ForCausalLM": "phi3"}
FTYPES = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}
FTYPE_TYPE = {0: "F32", 1: "F16", 7: "Q8_0", 32: "BF16"}
OUTTYPES = ("auto", "bf16", "f16", "f32", "q8_0")
QUANT_VERSION = 2

# token types (gguf-py TokenType / SentencePieceTokenTypes)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Pre-tokenizer names by the Split pattern of tokenizer.json (the name the converter's hash gives the
# published tokenizer with that pre-tokenizer).
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
PRE_NAMES = {LLAMA3_REGEX: "llama-bpe", QWEN2_REGEX: "qwen2"}


class Unsupported(Exception):
    """The converter (or the GGUF view) refuses this folder."""


class Tensor(NamedTuple):
    name: str
    type: str        # F32, F16, BF16, Q8_0
    shape: tuple     # outermost first (ne reversed)
    raw: bytes


class Expected(NamedTuple):
    arch: str
    ftype: int
    type_name: str   # "BF16", "F16", "F32", "Q8_0": the file name's part
    kv: OrderedDict
    tensors: list
    n_params: int
    size_label: str


# ---- GGUF names --------------------------------------------------------------------------------------

_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "post_attention_layernorm": "ffn_norm",
}
TENSOR_MAP = {
    "llama": dict(_LAYER),
    "qwen2": dict(_LAYER),
    "gemma": dict(_LAYER),
    "gemma2": dict(_LAYER, post_attention_layernorm="post_attention_norm", pre_feedforward_layernorm="ffn_norm",
                   post_feedforward_layernorm="post_ffw_norm"),
    "gemma3": dict(_LAYER, post_attention_layernorm="post_attention_norm", pre_feedforward_layernorm="ffn_norm",
                   post_feedforward_layernorm="post_ffw_norm", **{"self_attn.q_norm": "attn_q_norm",
                                                                  "self_attn.k_norm": "attn_k_norm"}),
    "phi3": {k: v for k, v in _LAYER.items() if k != "mlp.gate_proj"} | {"self_attn.qkv_proj": "attn_qkv",
                                                                         "mlp.gate_up_proj": "ffn_up"},
}
_TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_NO_OUTPUT = ("gemma", "gemma2")   # archs without an output tensor (their lm_head is dropped before)


def gguf_name(arch, name):
    for suffix in (".weight", ".bias"):
        if name.endswith(suffix):
            base = name[:-len(suffix)]
            break
    else:
        raise Unsupported(f"Can not map tensor {name!r}")
    if base in _TOP and not (base == "lm_head" and arch in _NO_OUTPUT):
        return _TOP[base] + suffix
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", base)
    if m and m.group(2) in TENSOR_MAP[arch]:
        return f"blk.{m.group(1)}.{TENSOR_MAP[arch][m.group(2)]}{suffix}"
    raise Unsupported(f"Can not map tensor {name!r}")


# ---- hyperparameters ---------------------------------------------------------------------------------

DEFAULT_THETA = {"llama": 10000.0, "qwen2": 10000.0, "gemma": 10000.0, "gemma2": 10000.0, "gemma3": 1000000.0,
                 "phi3": 10000.0}


def read_config(folder):
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def family(config):
    archs = config.get("architectures") or []
    arch = archs[0] if archs else None
    if arch not in ARCHS:
        raise Unsupported(f"architecture {arch!r} is not one of the GGUF view's families "
                          "(llama, qwen2, gemma, gemma2, gemma3, phi3)")
    return ARCHS[arch]


def hparams(config):
    """The converter's self.hparams and self.rope_parameters for a config.json (see the docstring)."""
    arch = family(config)
    h = dict(config)
    if isinstance(h.get("text_config"), dict):
        h.update(h["text_config"])
    if arch == "llama":
        if h.get("head_dim") is None:
            h["head_dim"] = h["hidden_size"] // h["num_attention_heads"]
        if h.get("num_key_value_heads") is None:
            h["num_key_value_heads"] = h["num_attention_heads"]
    rope = dict(h.get("rope_parameters") or h.get("rope_scaling") or {})
    if "type" in rope and "rope_type" not in rope:
        rope["rope_type"] = rope.pop("type")
    theta = h.pop("rope_theta", None)
    if arch == "gemma3":
        local = h.pop("rope_local_base_freq", None)
        full = dict(rope)
        full.setdefault("rope_type", "default")
        full["rope_theta"] = theta if theta is not None else DEFAULT_THETA[arch]
        rope = {"full_attention": full,
                "sliding_attention": {"rope_type": "default", "rope_theta": local if local is not None else 10000.0}}
    else:
        rope.setdefault("rope_theta", theta if theta is not None else DEFAULT_THETA[arch])
        rope.setdefault("rope_type", "default")
        if h.get("partial_rotary_factor") is not None:
            rope.setdefault("partial_rotary_factor", h["partial_rotary_factor"])
        if h.get("original_max_position_embeddings") is not None:
            rope.setdefault("original_max_position_embeddings", h["original_max_position_embeddings"])
    h.pop("rope_scaling", None)
    h["rope_parameters"] = rope
    return arch, h, rope


def _find(h, keys, optional=False):
    for k in keys:
        if k in h:
            return h[k]
    if optional:
        return None
    raise Unsupported(f"could not find any of: {keys}")


class KV:
    """gguf-py's key/value list: a key set again keeps its first position; empty strings and arrays
    are not added."""

    def __init__(self):
        self.d = OrderedDict()

    def set(self, key, typ, value, elem=None):
        if typ == "str" and not value:
            return
        if typ == "arr" and len(value) == 0:
            return
        self.d[key] = Value(typ, value, elem)

    def u32(self, k, v):
        self.set(k, "u32", int(v))

    def f32(self, k, v):
        self.set(k, "f32", struct.unpack("<f", struct.pack("<f", float(v)))[0])

    def bool(self, k, v):
        self.set(k, "bool", bool(v))

    def str(self, k, v):
        self.set(k, "str", v)

    def arr(self, k, values, elem=None):
        values = list(values)
        if not values:
            return
        if elem is None:
            first = values[0]
            elem = ("str" if isinstance(first, (str, bytes)) else "f32" if isinstance(first, float)
                    else "bool" if isinstance(first, bool) else "i32")
        if elem == "f32":
            values = [struct.unpack("<f", struct.pack("<f", float(v)))[0] for v in values]
        elif elem == "str":
            values = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
        self.set(k, "arr", values, elem)

    def remove(self, k):
        self.d.pop(k, None)


def _generic_params(kv, a, h, rope, block_count, ftype):
    """TextModel.set_gguf_parameters."""
    kv.u32(f"{a}.block_count", block_count)
    n_ctx = _find(h, ["max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length",
                      "model_max_length"], True)
    if n_ctx is not None:
        kv.u32(f"{a}.context_length", n_ctx)
    for key, names in ((f"{a}.embedding_length", ["hidden_size", "n_embd", "dim"]),
                       (f"{a}.feed_forward_length", ["prefix_dense_intermediate_size", "dense_intermediate_size",
                                                    "intermediate_size", "n_inner", "hidden_dim"]),
                       (f"{a}.attention.head_count", ["num_attention_heads", "n_head", "n_heads"]),
                       (f"{a}.attention.head_count_kv", ["num_key_value_heads", "n_kv_heads"])):
        v = _find(h, names, True)
        if v is not None:
            kv.u32(key, v)
    if h.get("is_causal") is False:
        kv.bool(f"{a}.attention.causal", False)
    rp = rope.get("full_attention", rope)
    rope_type = rp.get("rope_type")
    if rope_type is not None:
        factor = rp.get("factor")
        if rope_type == "linear" and factor is not None:
            kv.str(f"{a}.rope.scaling.type", "linear")
            kv.f32(f"{a}.rope.scaling.factor", factor)
        elif rope_type == "yarn" and factor is not None:
            kv.str(f"{a}.rope.scaling.type", "yarn")
            kv.f32(f"{a}.rope.scaling.factor", factor)
            kv.u32(f"{a}.rope.scaling.original_context_length", rp["original_max_position_embeddings"])
            for key, names in (("yarn_ext_factor", ["extrapolation_factor"]),
                               ("yarn_attn_factor", ["attention_factor", "attn_factor"]),
                               ("yarn_beta_fast", ["beta_fast"]), ("yarn_beta_slow", ["beta_slow"])):
                v = _find(rp, names, True)
                if v is not None:
                    kv.f32(f"{a}.rope.scaling.{key}", v)
        elif rope_type in ("su", "longrope"):
            kv.str(f"{a}.rope.scaling.type", "longrope")
    if rp.get("rope_theta") is not None:
        kv.f32(f"{a}.rope.freq_base", rp["rope_theta"])
    swa = rope.get("sliding_attention", {}).get("rope_theta")
    if swa is not None:
        kv.f32(f"{a}.rope.freq_base_swa", swa)
    eps = _find(h, ["rms_norm_eps", "norm_eps"], True)
    if eps is not None:
        kv.f32(f"{a}.attention.layer_norm_rms_epsilon", eps)
    eps = _find(h, ["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"], True)
    if eps is not None:
        kv.f32(f"{a}.attention.layer_norm_epsilon", eps)
    if h.get("head_dim") is not None:
        kv.u32(f"{a}.attention.key_length", h["head_dim"])
        kv.u32(f"{a}.attention.value_length", h["head_dim"])
    kv.u32("general.file_type", ftype)


def set_parameters(kv, arch, h, rope, ftype):
    block_count = _find(h, ["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
    a = arch
    if arch in ("llama", "qwen2"):
        _generic_params(kv, a, h, rope, block_count, ftype)
        if arch == "llama":
            kv.u32(f"{a}.vocab_size", h["vocab_size"])
            rope_dim = h.get("head_dim")
            if rope_dim is None:
                rope_dim = h["hidden_size"] // h["num_attention_heads"]
            kv.u32(f"{a}.rope.dimension_count", rope_dim)
    elif arch in ("gemma", "gemma2"):
        kv.u32(f"{a}.context_length", h["max_position_embeddings"])
        kv.u32(f"{a}.embedding_length", h["hidden_size"])
        kv.u32(f"{a}.block_count", block_count)
        kv.u32(f"{a}.feed_forward_length", h["intermediate_size"])
        kv.u32(f"{a}.attention.head_count", h["num_attention_heads"])
        kv.u32(f"{a}.attention.head_count_kv", h.get("num_key_value_heads", h["num_attention_heads"]))
        kv.f32(f"{a}.attention.layer_norm_rms_epsilon", h["rms_norm_eps"])
        kv.u32(f"{a}.attention.key_length", h["head_dim"])
        kv.u32(f"{a}.attention.value_length", h["head_dim"])
        kv.u32("general.file_type", ftype)
        if arch == "gemma2":
            kv.f32(f"{a}.attn_logit_softcapping", h["attn_logit_softcapping"])
            kv.f32(f"{a}.final_logit_softcapping", h["final_logit_softcapping"])
            kv.u32(f"{a}.attention.sliding_window", h["sliding_window"])
    elif arch == "gemma3":
        _generic_params(kv, a, h, rope, block_count, ftype)
        kv.u32(f"{a}.context_length", h.get("max_position_embeddings", 131072))
        kv.u32(f"{a}.attention.head_count", h.get("num_attention_heads", 8))
        kv.f32(f"{a}.attention.layer_norm_rms_epsilon", h.get("rms_norm_eps", 1e-6))
        kv.u32(f"{a}.attention.key_length", h.get("head_dim", 256))
        kv.u32(f"{a}.attention.value_length", h.get("head_dim", 256))
        kv.f32(f"{a}.rope.freq_base", rope.get("full_attention", rope).get("rope_theta", 1000000.0))
        if h.get("attn_logit_softcapping") is not None:
            raise Unsupported("Gemma 3 with attn_logit_softcapping")
        if h.get("final_logit_softcapping"):
            kv.f32(f"{a}.final_logit_softcapping", h["final_logit_softcapping"])
        if h.get("sliding_window_pattern") != 1:
            kv.u32(f"{a}.attention.sliding_window", h["sliding_window"])
        kv.u32(f"{a}.attention.head_count_kv", h.get("num_key_value_heads", 4))
    elif arch == "phi3":
        n_embd = _find(h, ["hidden_size", "n_embd"])
        n_head = _find(h, ["num_attention_heads", "n_head"])
        kv.u32(f"{a}.context_length", _find(h, ["n_positions", "max_position_embeddings"]))
        kv.u32(f"{a}.rope.scaling.original_context_length", rope["original_max_position_embeddings"])
        kv.u32(f"{a}.embedding_length", n_embd)
        kv.u32(f"{a}.feed_forward_length", _find(h, ["intermediate_size"]))
        kv.u32(f"{a}.block_count", block_count)
        kv.u32(f"{a}.attention.head_count", n_head)
        kv.u32(f"{a}.attention.head_count_kv", _find(h, ["num_key_value_heads", "n_head_kv"]))
        kv.f32(f"{a}.attention.layer_norm_rms_epsilon", _find(h, ["rms_norm_eps"]))
        kv.u32(f"{a}.rope.dimension_count", phi3_rope_dims(h, rope))
        kv.f32(f"{a}.rope.freq_base", rope.get("full_attention", rope)["rope_theta"])
        kv.u32("general.file_type", ftype)
        sw = h.get("sliding_window")
        kv.u32(f"{a}.attention.sliding_window", 0 if sw is None else sw)


def phi3_rope_dims(h, rope):
    n_embd = _find(h, ["hidden_size", "n_embd"])
    n_head = _find(h, ["num_attention_heads", "n_head"])
    return int(rope.get("partial_rotary_factor", 1.0) * n_embd) // n_head


# ---- generated tensors --------------------------------------------------------------------------------

def generated(arch, h, rope, kv):
    """[(gguf name, float32 values)]; may set keys (Phi-3's attn_factor)."""
    out = []
    rp = rope.get("full_attention", rope)
    if arch == "llama" and (rp.get("rope_type") or "").lower() == "llama3":
        base = rp.get("rope_theta", 10000.0)
        dim = h.get("head_dim") or h["hidden_size"] // h["num_attention_heads"]
        # torch: 1.0 / (base ** (arange(0, dim, 2, float32) / dim)), in float32
        expo = (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)).astype(np.float32)
        freqs = (np.float32(1.0) / np.power(np.float32(base), expo, dtype=np.float32)).astype(np.float32)
        factor = rp.get("factor", 8.0)
        low = rp.get("low_freq_factor", 1.0)
        high = rp.get("high_freq_factor", 4.0)
        old = rp.get("original_max_position_embeddings", 8192)
        low_wl, high_wl = old / low, old / high
        factors = []
        for f in freqs:
            wl = 2 * math.pi / float(f)
            if wl < high_wl:
                factors.append(1)
            elif wl > low_wl:
                factors.append(factor)
            else:
                smooth = (old / wl - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        out.append(("rope_freqs.weight", np.array(factors, dtype=np.float32)))
    if arch == "phi3":
        longf, shortf = rope.get("long_factor"), rope.get("short_factor")
        if longf:
            maxpos = _find(h, ["n_positions", "max_position_embeddings"])
            orig = rope["original_max_position_embeddings"]
            scale = maxpos / orig
            kind = (rope.get("rope_type") or "").lower()
            if kind in ("su", "longrope"):
                attn = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
            elif kind == "yarn":
                attn = 0.1 * math.log(scale) + 1.0 if scale > 1.0 else 1.0
            else:
                raise Unsupported(f"The rope scaling type {kind} is not supported yet")
            kv.f32("phi3.rope.scaling.attn_factor", attn)
            dims = phi3_rope_dims(h, rope)
            if shortf is None or len(longf) != len(shortf) or len(longf) != dims / 2:
                raise Unsupported("The length of rope long and short factors must be rope_dims / 2")
            out.append(("rope_factors_long.weight", np.array(longf, dtype=np.float32)))
            out.append(("rope_factors_short.weight", np.array(shortf, dtype=np.float32)))
    return out


# ---- model tensors -------------------------------------------------------------------------------------

MULTIMODAL_PREFIXES = ("mlp", "vit.", "vpm.", "siglip2.", "conformer.", "merger.", "resampler.", "sound_encoder.",
                       "sound_projection.", "speech_embeddings.")
MULTIMODAL_PARTS = ("visual.", "vision.", "audio.", "talker.", "vision_", "audio_", "token2wav.", "code2wav.",
                    "projector.", "pre_mm_projector_norm", "image_newline", "view_seperator", "patch_embed",
                    "patch_embedding", "patch_merger.", "patch_merge_mlp.", "model.connector.")


def part_files(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    return sorted(f for f in os.listdir(folder) if f.startswith("model") and f.endswith(".safetensors"))


def source_tensors(folder, arch):
    """[(name, StTensor)] in the converter's order, after its filters."""
    out = []
    for fname in part_files(folder):
        tensors, _ = st.read_safetensors(os.path.join(folder, fname))
        for name in sorted(tensors):
            n = name
            if n.startswith(MULTIMODAL_PREFIXES) or any(p in n for p in MULTIMODAL_PARTS):
                continue
            if arch == "llama":
                n = n.replace("text_model.", "")
            if n.endswith("e_score_correction_bias"):
                n = n.replace("e_score_correction_bias", "e_score_correction.bias")
            n = n.replace("language_model.", "")
            if arch in ("gemma", "gemma2") and n == "lm_head.weight":
                continue
            out.append((n, tensors[name]))
    return out


def _values(t):
    """The tensor as the converter holds it: float16 stays float16, anything else float32."""
    if t.dtype == "F16":
        return np.frombuffer(t.raw, "<f2").reshape(t.shape).astype(np.float16)
    return t.f32().reshape(t.shape)


def permute(w, n_head, n_head_kv=None):
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    shape = w.shape
    return w.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def gemma3_vocab_rows(folder, h):
    if os.path.exists(os.path.join(folder, "tokenizer.model")):
        return len(spm_vocab(folder, h)[0])
    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    return len(tj["model"]["vocab"]) + len(tj["added_tokens"])


def modify(arch, name, data, h, folder):
    """The family's modify_tensors: (gguf name, values)."""
    if arch == "llama":
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute(data, h["num_attention_heads"], h["num_attention_heads"])
        if name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute(data, h["num_attention_heads"], h["num_key_value_heads"])
    elif arch in ("gemma", "gemma2"):
        if name.endswith("norm.weight"):
            data = data + data.dtype.type(1)
    elif arch == "gemma3":
        if "embed_tokens.weight" in name:
            data = data[:gemma3_vocab_rows(folder, h)]
        if name.endswith("norm.weight"):
            data = data + data.dtype.type(1)
    return gguf_name(arch, name), data


# ---- encodings ---------------------------------------------------------------------------------------

def np_roundf(n):
    a = np.abs(n)
    floored = np.floor(a)
    b = floored + np.floor(2 * (a - floored))
    return np.sign(n) * b


def to_q8_0(x):
    blocks = np.asarray(x, np.float32).reshape(-1, 32)
    d = (np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = np_roundf((blocks * inv).astype(np.float32))
    out = np.concatenate([d.astype(np.float16).view(np.uint8), q.astype(np.int8).view(np.uint8)], axis=1)
    return out.tobytes()


def to_bf16(x):
    n = np.ascontiguousarray(np.asarray(x, np.float32)).view(np.uint32).reshape(-1)
    n = np.where((n & 0x7FFFFFFF) > 0x7F800000, (n & np.uint32(0xFFFF0000)) | np.uint32(64 << 16), n)
    n = (n.astype(np.uint64) + (0x7FFF + ((n >> 16) & 1))) >> 16
    return n.astype(np.uint16).astype("<u2").tobytes()


def encode(values, typ):
    if typ == "F32":
        return np.asarray(values).astype("<f4").tobytes()
    if typ == "F16":
        return np.asarray(values).astype("<f2").tobytes()
    if typ == "BF16":
        return to_bf16(np.asarray(values).astype(np.float32))
    return to_q8_0(np.asarray(values).astype(np.float32))


def tensor_type(new_name, data, ftype):
    if data.ndim <= 1 or new_name.endswith("_norm.weight") or new_name[-7:] not in (".weight", ".lora_a", ".lora_b"):
        return "F32"
    typ = FTYPE_TYPE[ftype]
    if typ == "Q8_0" and data.shape[-1] % 32:
        return "F16"
    return typ


def auto_ftype(tensors):
    for _, t in tensors:
        if len(t.shape) < 2:
            continue
        if t.dtype == "BF16":
            return FTYPES["bf16"]
        if t.dtype == "F16":
            return FTYPES["f16"]
    return FTYPES["f16"]


# ---- tokenizer -----------------------------------------------------------------------------------------

def looks_special(text):
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
            or (text.startswith("<unused") and text.endswith(">")))


def _json(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def spm_vocab(folder, h):
    """_create_vocab_sentencepiece: (tokens (bytes), scores, types)."""
    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor()
    sp.LoadFromFile(os.path.join(folder, "tokenizer.model"))
    n = h.get("vocab_size") or sp.vocab_size()
    tokens = [f"[PAD{i}]".encode() for i in range(n)]
    scores = [-10000.0] * n
    types = [UNUSED] * n
    for i in range(sp.vocab_size()):
        if i >= n:
            break
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        types[i] = (UNKNOWN if sp.IsUnknown(i) else CONTROL if sp.IsControl(i) else UNUSED if sp.IsUnused(i)
                    else BYTE if sp.IsByte(i) else NORMAL)
    added = _json(os.path.join(folder, "added_tokens.json"))
    for key, i in (added or {}).items():
        if i >= n:
            continue
        tokens[i], scores[i], types[i] = key.encode("utf-8"), -1000.0, USER_DEFINED
    cfg = _json(os.path.join(folder, "tokenizer_config.json"))
    for sid, data in ((cfg or {}).get("added_tokens_decoder") or {}).items():
        i = int(sid)
        if i >= n:
            continue
        text = data["content"]
        if data.get("special") or looks_special(text):
            types[i] = CONTROL
        else:
            text = text.replace("\u2581", " ")
            types[i] = USER_DEFINED
        scores[i] = -1000.0
        tokens[i] = text.encode("utf-8")
    return tokens, scores, types


def phi3_spm_vocab(folder, h):
    """Phi3MiniModel.set_vocab's own reading (no range checks on added ids, no look-special rule)."""
    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor()
    sp.LoadFromFile(os.path.join(folder, "tokenizer.model"))
    n = h.get("vocab_size", sp.vocab_size())
    tokens = [f"[PAD{i}]".encode() for i in range(n)]
    scores = [-10000.0] * n
    types = [UNUSED] * n
    for i in range(sp.vocab_size()):
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        types[i] = (UNKNOWN if sp.IsUnknown(i) else CONTROL if sp.IsControl(i) else UNUSED if sp.IsUnused(i)
                    else BYTE if sp.IsByte(i) else NORMAL)
    for key, i in (_json(os.path.join(folder, "added_tokens.json")) or {}).items():
        if i >= n:
            continue
        tokens[i], scores[i], types[i] = key.encode("utf-8"), -1000.0, USER_DEFINED
    cfg = _json(os.path.join(folder, "tokenizer_config.json")) or {}
    entries = [(int(k), v) for k, v in (cfg.get("added_tokens_decoder") or {}).items()]
    tj = _json(os.path.join(folder, "tokenizer.json")) or {}
    entries += [(int(v["id"]), v) for v in tj.get("added_tokens", [])]
    for i, data in entries:
        tokens[i] = data["content"].encode("utf-8")
        scores[i] = -1000.0
        types[i] = CONTROL if data.get("special") else USER_DEFINED
    return tokens, scores, types


def bpe_vocab(folder, h):
    """get_vocab_base: (tokens, types, pre name)."""
    import tokenizer_files as tfiles
    view = tfiles.vocab_view(folder)
    vocab = view.vocab
    n = h.get("vocab_size", len(vocab))
    if max(vocab.values()) >= n:
        raise Unsupported(f"a token id ({max(vocab.values())}) is >= vocab_size {n}")
    pre = pre_name(folder)
    rev = {i: t for t, i in vocab.items()}
    added = {t.content: i for i, t in sorted(view.added.items())}
    tokens, types = [], []
    for i in range(n):
        if i not in rev:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        tok = rev[i]
        if tok in added:
            if view.added[i].special or looks_special(tok):
                types.append(CONTROL)
            else:
                tok = tok.replace("\u2581", " ")
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(tok)
    return tokens, types, pre


def pre_name(folder):
    tj = _json(os.path.join(folder, "tokenizer.json")) or {}
    pre = tj.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", True):
        return "gpt-2"   # GPT-2's own: ByteLevel with its built-in regex, no prefix space
    pats = [p.get("pattern", {}).get("Regex") for p in pre.get("pretokenizers", []) if p.get("type") == "Split"]
    if len(pats) == 1 and pats[0] in PRE_NAMES:
        return PRE_NAMES[pats[0]]
    raise Unsupported("BPE pre-tokenizer was not recognized (not GPT-2's, Llama 3's nor Qwen2's)")


SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
ID_KEYS = {"bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
           "unk": "tokenizer.ggml.unknown_token_id", "sep": "tokenizer.ggml.seperator_token_id",
           "pad": "tokenizer.ggml.padding_token_id", "mask": "tokenizer.ggml.mask_token_id",
           "eot": "tokenizer.ggml.eot_token_id", "eom": "tokenizer.ggml.eom_token_id"}
ADD_KEYS = {"bos": "tokenizer.ggml.add_bos_token", "eos": "tokenizer.ggml.add_eos_token",
            "sep": "tokenizer.ggml.add_sep_token"}


class SpecialVocab:
    """gguf-py's SpecialVocab for the cases above."""

    def __init__(self, folder, load_merges=False, types=None, n_vocab=None):
        self.ids = OrderedDict()
        self.add = OrderedDict()
        self.n_vocab = n_vocab
        self.load_merges = load_merges
        self.merges = []
        self.chat_template = None
        self.types = tuple(types) if types is not None else SPECIAL_TYPES
        self._from_tokenizer_json(folder)
        self._from_config_json(folder)
        if load_merges and not self.merges:
            self._merges_txt(folder)

    def set_id(self, typ, tid):
        if not isinstance(tid, int) or isinstance(tid, bool):
            return
        if tid < 0:
            raise Unsupported(f"invalid value for special token type {typ}: {tid}")
        if self.n_vocab is None or tid < self.n_vocab:
            if typ not in self.ids:
                self.ids[typ] = tid

    def _merges_txt(self, folder):
        path = os.path.join(folder, "merges.txt")
        if not os.path.isfile(path):
            return
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        if lines and lines[0].strip().startswith("#"):
            lines = lines[1:]
        for ln in lines:
            parts = ln.strip().split(None, 3)
            if len(parts) == 2:
                self.merges.append(f"{parts[0]} {parts[1]}")

    def _from_tokenizer_json(self, folder):
        tj = _json(os.path.join(folder, "tokenizer.json"))
        added = []
        if tj is not None:
            if self.load_merges:
                merges = (tj.get("model") or {}).get("merges")
                if isinstance(merges, list) and merges:
                    if isinstance(merges[0], str):
                        self.merges = list(merges)
                    else:
                        self.merges = [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part)
                                                for part in pair) for pair in merges]
            added = tj.get("added_tokens", [])
        cfg = _json(os.path.join(folder, "tokenizer_config.json"))
        if tj:
            c = cfg or {}
            bos, cls, eos, sep = c.get("bos_token"), c.get("cls_token"), c.get("eos_token"), c.get("sep_token")
            if not bos and cls and cfg:
                cfg["bos_token"] = bos = cls
            if not eos and sep and cfg:
                cfg["eos_token"] = eos = sep
            post = tj.get("post_processor")
            if post:
                for proc in post.get("processors", [post]):
                    if proc.get("type") == "RobertaProcessing":
                        self.add["bos"] = self.add["eos"] = self.add["sep"] = True
                        if not cls and cfg:
                            cls = proc.get("cls", [bos])[0]
                            cfg["cls_token"] = cls
                        if not sep and cfg:
                            sep = proc.get("sep", [eos])[0]
                            cfg["sep_token"] = sep
                        continue
                    if proc.get("type") != "TemplateProcessing":
                        continue
                    single, pair = proc.get("single", []), proc.get("pair", [])
                    first = last = None
                    if len(single) > 1:
                        first = single[0].get("SpecialToken", {}).get("id")
                        if first:
                            if not cfg:
                                bos = first
                            elif first not in (bos, cls):
                                if not bos:
                                    cfg["bos_token"] = bos = first
                                if not cls:
                                    cfg["cls_token"] = cls = first
                            self.add["bos"] = first in (bos, cls)
                        last = single[-1].get("SpecialToken", {}).get("id")
                        if last:
                            if not cfg:
                                eos = last
                            elif last != eos:
                                if "eot" not in self.types:
                                    self.types = self.types + ("eot",)
                                    cfg["eot_token"] = eos
                                elif "eom" not in self.types:
                                    self.types = self.types + ("eom",)
                                    cfg["eom_token"] = eos
                                cfg["eos_token"] = eos = last
                            self.add["eos"] = last == eos
                    if pair:
                        start = 1 if first and pair[0].get("SpecialToken", {}).get("id") == first else 0
                        stop = -1 if last and pair[-1].get("SpecialToken", {}).get("id") == last else None
                        pair = pair[slice(start, stop)]
                        if pair:
                            a = pair[0].get("Sequence", {}).get("id")
                            b = pair[-1].get("Sequence", {}).get("id")
                            if a == "A" and b == "B" and (mid := pair[1:-1]):
                                add_sep = False
                                entry = mid[0].get("SpecialToken", {}).get("id")
                                if entry and entry in (sep, eos) and not last:
                                    add_sep = True
                                if len(mid) == 2:
                                    entry = mid[1].get("SpecialToken", {}).get("id")
                                    if entry and entry in (sep, eos):
                                        add_sep = True
                                self.add["sep"] = add_sep
                                if add_sep and not sep and cfg:
                                    cfg["sep_token"] = eos
        if not cfg:
            return
        alt = None
        jinja = os.path.join(folder, "chat_template.jinja")
        if os.path.isfile(jinja):
            with open(jinja, encoding="utf-8") as f:
                alt = f.read()
            extra_dir = os.path.join(folder, "additional_chat_templates")
            extra = sorted(p for p in os.listdir(extra_dir) if p.endswith(".jinja")) if os.path.isdir(extra_dir) else []
            if extra:
                alt = [{"name": "default", "template": alt}]
                for p in extra:
                    with open(os.path.join(extra_dir, p), encoding="utf-8") as f:
                        alt.append({"name": p[:-len(".jinja")], "template": f.read()})
        elif os.path.isfile(os.path.join(folder, "chat_template.json")):
            alt = (_json(os.path.join(folder, "chat_template.json")) or {}).get("chat_template")
        tmpl = cfg.get("chat_template", alt)
        if tmpl is None or isinstance(tmpl, (str, list)):
            self.chat_template = tmpl
        for typ in self.types:
            entry = cfg.get(f"add_{typ}_token")
            if isinstance(entry, bool):
                self.add[typ] = entry
            entry = cfg.get(f"{typ}_token")
            if isinstance(entry, dict):
                entry = entry.get("content")
            if not isinstance(entry, str):
                continue
            tid = next((a.get("id") for a in added if a.get("content") == entry), None)
            self.set_id(typ, tid)

    def _from_config_json(self, folder):
        cfg = _json(os.path.join(folder, "config.json"))
        if cfg is None:
            return
        for typ in self.types:
            tid = cfg.get(f"{typ}_token_id")
            if tid is None and "text_config" in cfg:
                tid = cfg["text_config"].get(f"{typ}_token_id")
            self.set_id(typ, tid)

    def add_to(self, kv):
        if self.merges:
            kv.arr("tokenizer.ggml.merges", self.merges, "str")
        for typ, tid in self.ids.items():
            if typ in ID_KEYS:
                kv.u32(ID_KEYS[typ], tid)
        for typ, v in self.add.items():
            if typ in ADD_KEYS:
                kv.bool(ADD_KEYS[typ], v)
        if self.chat_template is not None:
            add_chat_template(kv, self.chat_template)


def add_chat_template(kv, value):
    if value is None:
        kv.remove("tokenizer.chat_template")
        return
    if not isinstance(value, str):
        default, names = None, []
        for choice in value:
            name = "".join(c if c.isascii() and c.isalnum() else "_" for c in choice.get("name", ""))
            tmpl = choice.get("template")
            if name and tmpl is not None:
                if name == "default":
                    default = tmpl
                else:
                    if name not in names:
                        names.append(name)
                    kv.str(f"tokenizer.chat_template.{name}", tmpl)
        if names:
            kv.arr("tokenizer.chat_templates", names, "str")
        if default is None:
            return
        value = default
    kv.str("tokenizer.chat_template", value)


def _set_vocab_spm(kv, folder, h, vocab=spm_vocab):
    """_set_vocab_sentencepiece's keys. vocab: what makes the token list; phi3's set_vocab passes
    phi3_spm_vocab (its own reading of the added tokens) and writes the same keys."""
    tokens, scores, types = vocab(folder, h)
    kv.str("tokenizer.ggml.model", "llama")
    kv.str("tokenizer.ggml.pre", "default")
    kv.arr("tokenizer.ggml.tokens", tokens, "str")
    kv.arr("tokenizer.ggml.scores", scores, "f32")
    kv.arr("tokenizer.ggml.token_type", types, "i32")
    SpecialVocab(folder, n_vocab=len(tokens)).add_to(kv)


def _set_vocab_gpt2(kv, folder, h):
    tokens, types, pre = bpe_vocab(folder, h)
    kv.str("tokenizer.ggml.model", "gpt2")
    kv.str("tokenizer.ggml.pre", pre)
    kv.arr("tokenizer.ggml.tokens", tokens, "str")
    kv.arr("tokenizer.ggml.token_type", types, "i32")
    SpecialVocab(folder, load_merges=True).add_to(kv)


def set_vocab(kv, arch, folder, h):
    has_spm = os.path.isfile(os.path.join(folder, "tokenizer.model"))
    has_json = os.path.isfile(os.path.join(folder, "tokenizer.json"))
    if arch == "llama":
        cfg = _json(os.path.join(folder, "tokenizer_config.json"))
        if cfg is not None and cfg.get("add_prefix_space") is not None:
            kv.bool("tokenizer.ggml.add_space_prefix", cfg["add_prefix_space"])
        if has_spm:
            _set_vocab_spm(kv, folder, h)
        elif has_json:
            tj = _json(os.path.join(folder, "tokenizer.json"))
            model = tj["model"]
            if not (model["type"] == "BPE" and model.get("ignore_merges", False)
                    and not model.get("byte_fallback", True)) and model["type"] == "BPE" \
                    and model.get("byte_fallback", False) and (tj.get("decoder") or {}).get("type") == "Sequence":
                raise Unsupported("a Llama-2 style tokenizer.json (Metaspace, byte fallback) without tokenizer.model")
            _set_vocab_gpt2(kv, folder, h)
        else:
            raise Unsupported("no tokenizer.model nor tokenizer.json")
        if h.get("vocab_size", 32000) in (32016, 49152):
            raise Unsupported("CodeLlama / Granite vocabulary sizes are not modelled")
    elif arch == "qwen2":
        if has_spm:
            _set_vocab_spm(kv, folder, h)
        else:
            _set_vocab_gpt2(kv, folder, h)
    elif arch in ("gemma", "gemma2"):
        _set_vocab_spm(kv, folder, h)
        if arch == "gemma":
            sv = SpecialVocab(folder, types=("prefix", "suffix", "middle", "fsep", "eot"))
            for typ, tid in (("prefix", 67), ("suffix", 69), ("middle", 68), ("fsep", 70), ("eot", 107)):
                sv.set_id(typ, tid)
            sv.chat_template = None
            sv.add_to(kv)
        kv.bool("tokenizer.ggml.add_space_prefix", False)
    elif arch == "gemma3":
        if has_spm:
            _set_vocab_spm(kv, folder, h)
            kv.bool("tokenizer.ggml.add_space_prefix", False)
        else:
            _set_vocab_gpt2(kv, folder, h)
    elif arch == "phi3":
        cfg = _json(os.path.join(folder, "tokenizer_config.json"))
        if cfg is not None and cfg["tokenizer_class"] == "GPT2Tokenizer":
            _set_vocab_gpt2(kv, folder, h)
            return
        if not has_spm:
            raise Unsupported("Phi-3 without tokenizer.model")
        _set_vocab_spm(kv, folder, h, phi3_spm_vocab)


# ---- the whole file ------------------------------------------------------------------------------------

def weight_count_notation(n, min_digits=2):
    """gguf-py's model_weight_count_rounded_notation."""
    if n > 1e12:
        scaled, suffix = n * 1e-12, "T"
    elif n > 1e9:
        scaled, suffix = n * 1e-9, "B"
    elif n > 1e6:
        scaled, suffix = n * 1e-6, "M"
    else:
        scaled, suffix = n * 1e-3, "K"
    fix = max(min_digits - len(str(round(scaled)).lstrip("0")), 0)
    return f"{scaled:.{fix}f}{suffix}"


def expected(folder, outtype):
    """The converter's output for `folder` with --outtype `outtype` (see the module docstring)."""
    outtype = outtype.lower()
    if outtype not in OUTTYPES:
        raise ValueError(f"outtype {outtype!r} (one of {', '.join(OUTTYPES)})")
    config = read_config(folder)
    arch, h, rope = hparams(config)
    src = source_tensors(folder, arch)
    ftype = auto_ftype(src) if outtype == "auto" else FTYPES[outtype]
    kv = KV()
    kv.str("general.architecture", arch)
    tensors = []
    todo = [(name, values, True) for name, values in generated(arch, h, rope, kv)]
    todo += [(name, t, False) for name, t in src]
    for name, t, is_generated in todo:
        if is_generated:
            new_name, data = name, t
        else:
            if name.endswith((".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")):
                continue
            new_name, data = modify(arch, name, _values(t), h, folder)
        typ = tensor_type(new_name, data, ftype)
        tensors.append(Tensor(new_name, typ, tuple(data.shape), encode(data, typ)))
    n_params = sum(int(np.prod(t.shape)) for t in tensors)
    kv.str("general.type", "model")
    set_parameters(kv, arch, h, rope, ftype)
    kv.u32("general.quantization_version", QUANT_VERSION)
    set_vocab(kv, arch, folder, h)
    return Expected(arch, ftype, FTYPE_TYPE[ftype], kv.d, tensors, n_params, weight_count_notation(n_params))


def file_name(stem, exp):
    return f"{stem}-{exp.size_label}-{exp.type_name}.gguf"


# Keys that may differ from the converter's (the model card and naming), never compared.
NAMING_PREFIXES = ("general.base_model.", "general.dataset.", "general.datasets")
NAMING_KEYS = {"general.name", "general.basename", "general.finetune", "general.version", "general.size_label",
               "general.organization", "general.description", "general.author", "general.quantized_by",
               "general.url", "general.doi", "general.uuid", "general.repo_url", "general.source.url",
               "general.source.doi", "general.source.uuid", "general.source.repo_url",
               "general.source.huggingface.repository", "general.license", "general.license.name",
               "general.license.link", "general.tags", "general.languages", "general.base_model.count",
               "general.dataset.count"}


def is_naming_key(key):
    return key in NAMING_KEYS or key.startswith(NAMING_PREFIXES) or key.startswith("general.source.")
