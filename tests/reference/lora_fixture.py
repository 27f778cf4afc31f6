"""PEFT LoRA adapter folders for a tiny base model folder (arch_fixture.py, mm-mkmodel, or make_gpt2
below), for the tests of LoRA references (/work/notes/lora.md). numpy only.

    write_adapter(base_folder, out_dir, ["q_proj", "v_proj"], r=4, alpha=8)

writes out_dir/adapter_config.json with PEFT's keys (peft_type LORA, r, lora_alpha, use_rslora,
target_modules, rank_pattern, alpha_pattern, fan_in_fan_out, bias "none", modules_to_save null,
base_model_name_or_path, task_type CAUSAL_LM, ...) and out_dir/adapter_model.safetensors with, per
targeted module M (every 2-D base tensor `<M>.weight` whose module name is a target or ends with
"." + a target):

    Linear:    base_model.model.<M>.lora_A.weight [r, in], base_model.model.<M>.lora_B.weight [out, r]
               (base [out, in]; with fan_in_fan_out the base is [in, out])
    Embedding: base_model.model.<M>.lora_embedding_A [r, num_embeddings],
               base_model.model.<M>.lora_embedding_B [dim, r]   (base [num_embeddings, dim])

r and alpha per module follow rank_pattern / alpha_pattern (PEFT's rule, written here on its own: the
first key k in dict order with re.match(rf"(.*\\.)?({re.escape(k)})$", M)).

Values, deterministic from (seed, tensor name):
  * exact=True (default): multiples of 1/64 in [-1/4, 1/4], r <= 8, and a scaling that is a power of
    two (checked). Every product of B @ A is a multiple of 2^-12 below 2^-4 in magnitude and every
    partial sum of at most 8 of them is below 2^-1: all exact in float32 whatever the order of the
    sum, so the program and the reference must agree bit for bit. The deltas need up to 12
    significant bits (more than bfloat16's 8, float16's 11) and are about as large as the base's
    weights, so a program that rounded the delta to the base dtype before adding would differ.
    (The values are exactly representable in BF16 and F16 adapters too.)
  * exact=False: normal values (standard deviation 0.1), stored in `dtype`: the order of the float32
    sums matters, so comparisons allow 1 ulp of the stored dtype.

Run as a script: python3 lora_fixture.py BASE_DIR OUT_DIR TARGET... [--r N] [--alpha A] [--rslora]
[--fan-in-fan-out] [--dtype F32|BF16|F16] [--seed N] [--inexact].
"""

import argparse
import json
import math
import os
import re
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import safetensors_io as st  # noqa: E402

EMBEDDINGS = ("embed_tokens", "wte", "wpe", "word_embeddings", "embed_in", "embed_positions")
EXACT_STEP = 64        # values are integers / 64
EXACT_MAX = 16         # ... in [-16, 16]: [-1/4, 1/4]
EXACT_MAX_RANK = 8
INEXACT_STD = 0.1
DELETE = object()      # a `config=` value that removes the key


class FixtureError(Exception):
    pass


def _rng(seed, name):
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def pattern_value(patterns, module, default):
    """PEFT's lookup (peft.utils.other.get_pattern_key) for a plain key: the value of the first key k,
    in dict order, with re.match(rf"(.*\\.)?({k})$", module), else default."""
    for k, v in (patterns or {}).items():
        if re.match(rf"(.*\.)?({re.escape(k)})$", module):
            return v
    return default


def _is_power_of_two(x):
    return x > 0 and math.frexp(x)[0] == 0.5


def _layer(module):
    m = re.search(r"\.(\d+)(\.|$)", module)
    return int(m.group(1)) if m else None


def targeted_modules(base_tensors, targets, layers=None):
    """{module: base StTensor} of the 2-D `<M>.weight` tensors named by targets (M is a target or ends
    with "." + target); with layers, only modules of those layer indexes. Every target must match."""
    out = {}
    for target in targets:
        hit = False
        for name in sorted(base_tensors):
            if not name.endswith(".weight"):
                continue
            module = name[:-len(".weight")]
            if not (module == target or module.endswith("." + target)):
                continue
            if len(base_tensors[name].shape) != 2:
                continue
            if layers is not None and _layer(module) not in layers:
                continue
            out[module] = base_tensors[name]
            hit = True
        if not hit:
            raise FixtureError(f"target {target!r} matches no 2-D tensor of the base model")
    return out


def _values(seed, name, shape, exact, dtype):
    rng = _rng(seed, name)
    if exact:
        v = rng.integers(-EXACT_MAX, EXACT_MAX + 1, size=shape).astype(np.float32) / np.float32(EXACT_STEP)
    else:
        v = rng.standard_normal(shape, dtype=np.float32) * np.float32(INEXACT_STD)
    return st.round_to(dtype, v)


def adapter_tensor_names(module, kind, adapter_name=None):
    """(A name, B name) of a module in PEFT's saved layout."""
    tail = f".{adapter_name}" if adapter_name else ""
    if kind == "embedding":
        return (f"base_model.model.{module}.lora_embedding_A{tail}",
                f"base_model.model.{module}.lora_embedding_B{tail}")
    return (f"base_model.model.{module}.lora_A{tail}.weight", f"base_model.model.{module}.lora_B{tail}.weight")


def write_adapter(base, out_dir, targets, r=4, alpha=8, rslora=False, rank_pattern=None, alpha_pattern=None,
                  fan_in_fan_out=False, dtype="F32", seed=0, exact=True, layers=None, adapter_name=None,
                  embeddings=EMBEDDINGS, config=None, any_scaling=False):
    """Writes an adapter folder for the base model folder `base` (see the module docstring); returns
    out_dir. config: keys that replace or add to adapter_config.json (DELETE removes one), for bad
    cases. embeddings: the module names (last component) that are nn.Embedding. any_scaling: exact
    values with a scaling that need not be a power of two (B @ A stays exact; the delta is then the
    one float32 rounding of B @ A times float32(scaling))."""
    if dtype not in st.FLOAT_DTYPES:
        raise FixtureError(f"adapter dtype {dtype!r}: F32, BF16 or F16")
    base_tensors = st.read_folder(base)
    modules = targeted_modules(base_tensors, targets, layers)
    tensors = {}
    for module, w in sorted(modules.items()):
        kind = "embedding" if module.split(".")[-1] in embeddings else "linear"
        rank = pattern_value(rank_pattern, module, r)
        a_alpha = pattern_value(alpha_pattern, module, alpha)
        if exact:
            scaling = a_alpha / math.sqrt(rank) if rslora else a_alpha / rank
            if rank > EXACT_MAX_RANK or not (any_scaling or _is_power_of_two(scaling)):
                raise FixtureError(f"{module}: exact values need r <= {EXACT_MAX_RANK} and a power-of-two scaling "
                                   f"(r {rank}, alpha {a_alpha}, rslora {rslora}: scaling {scaling})")
        rows, cols = w.shape
        if kind == "embedding":            # base [num_embeddings, dim]
            a_shape, b_shape = (rank, rows), (cols, rank)
        elif fan_in_fan_out:                # Conv1D base [in, out]
            a_shape, b_shape = (rank, rows), (cols, rank)
        else:                               # Linear base [out, in]
            a_shape, b_shape = (rank, cols), (rows, rank)
        a_name, b_name = adapter_tensor_names(module, kind, adapter_name)
        for name, shape in ((a_name, a_shape), (b_name, b_shape)):
            tensors[name] = (dtype, shape, st.encode(dtype, _values(seed, name, shape, exact, dtype)))
    os.makedirs(out_dir, exist_ok=True)
    st.write_safetensors(os.path.join(out_dir, "adapter_model.safetensors"), tensors)
    doc = {
        "alpha_pattern": dict(alpha_pattern or {}),
        "auto_mapping": None,
        "base_model_name_or_path": str(base),
        "bias": "none",
        "fan_in_fan_out": bool(fan_in_fan_out),
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": list(layers) if layers is not None else None,
        "lora_alpha": alpha,
        "lora_dropout": 0.05,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": r,
        "rank_pattern": dict(rank_pattern or {}),
        "revision": None,
        "target_modules": list(targets),
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": bool(rslora),
    }
    edit_config(out_dir, doc=doc, **(config or {}))
    return str(out_dir)


def edit_config(adapter_dir, doc=None, **changes):
    """Rewrites adapter_config.json (or writes `doc`) with keys replaced or added (DELETE removes one).
    Keys are written in the order of the dict (patterns keep their order)."""
    path = os.path.join(adapter_dir, "adapter_config.json")
    if doc is None:
        with open(path) as f:
            doc = json.load(f)
    for k, v in changes.items():
        if v is DELETE:
            doc.pop(k, None)
        else:
            doc[k] = v
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def read_adapter_tensors(adapter_dir):
    """{name: (dtype, shape, raw)} of adapter_model.safetensors."""
    tensors, _ = st.read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    return {n: (t.dtype, t.shape, t.raw) for n, t in tensors.items()}


def edit_tensors(adapter_dir, fn):
    """Rewrites adapter_model.safetensors with fn({name: (dtype, shape, raw)}) -> the new dict."""
    new = fn(read_adapter_tensors(adapter_dir))
    st.write_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"), new)


# ---- a GPT-2-style base (Conv1D weights stored [in, out]) -----------------------------------------------

GPT2_EMBD = 32
GPT2_HEADS = 4
GPT2_VOCAB = 96
GPT2_POSITIONS = 64


def gpt2_config(layers):
    """openai-community/gpt2's config.json with its sizes scaled down."""
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 50256 % GPT2_VOCAB,
        "embd_pdrop": 0.1,
        "eos_token_id": 50256 % GPT2_VOCAB,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": GPT2_POSITIONS,
        "n_embd": GPT2_EMBD,
        "n_head": GPT2_HEADS,
        "n_layer": layers,
        "n_positions": GPT2_POSITIONS,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": GPT2_VOCAB,
    }


def gpt2_shapes(layers):
    """{name: shape} of GPT2LMHeadModel's saved tensors (lm_head tied to wte, not saved); Conv1D weights
    are [in, out]."""
    e = GPT2_EMBD
    shapes = {"transformer.wte.weight": (GPT2_VOCAB, e), "transformer.wpe.weight": (GPT2_POSITIONS, e),
              "transformer.ln_f.weight": (e,), "transformer.ln_f.bias": (e,)}
    for i in range(layers):
        p = f"transformer.h.{i}."
        shapes.update({p + "ln_1.weight": (e,), p + "ln_1.bias": (e,), p + "ln_2.weight": (e,), p + "ln_2.bias": (e,),
                       p + "attn.c_attn.weight": (e, 3 * e), p + "attn.c_attn.bias": (3 * e,),
                       p + "attn.c_proj.weight": (e, e), p + "attn.c_proj.bias": (e,),
                       p + "mlp.c_fc.weight": (e, 4 * e), p + "mlp.c_fc.bias": (4 * e,),
                       p + "mlp.c_proj.weight": (4 * e, e), p + "mlp.c_proj.bias": (e,)})
    return shapes


def make_gpt2(out_dir, seed=0, dtype="F32", layers=2):
    """A tiny GPT-2 model folder (config.json, model.safetensors); returns out_dir."""
    tensors = {}
    for name, shape in gpt2_shapes(layers).items():
        v = _rng(seed + 7, name).standard_normal(shape, dtype=np.float32) * np.float32(0.05)
        if re.search(r"ln_(1|2|f)\.weight$", name):
            v = v + np.float32(1.0)
        tensors[name] = (dtype, shape, st.encode(dtype, v))
    os.makedirs(out_dir, exist_ok=True)
    st.write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    cfg = gpt2_config(layers)
    cfg["torch_dtype"] = st.TORCH_NAME[dtype]
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    return str(out_dir)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base")
    ap.add_argument("out_dir")
    ap.add_argument("targets", nargs="+")
    ap.add_argument("--r", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=8)
    ap.add_argument("--rslora", action="store_true")
    ap.add_argument("--fan-in-fan-out", action="store_true")
    ap.add_argument("--dtype", choices=st.FLOAT_DTYPES, default="F32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inexact", action="store_true")
    a = ap.parse_args(argv)
    try:
        write_adapter(a.base, a.out_dir, a.targets, a.r, a.alpha, a.rslora, fan_in_fan_out=a.fan_in_fan_out,
                      dtype=a.dtype, seed=a.seed, exact=not a.inexact)
    except FixtureError as e:
        print(f"lora_fixture: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
