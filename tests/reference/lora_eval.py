"""LoRA references, written from /work/notes/lora.md (the semantics mergemount implements) and PEFT's
LoraConfig / merge_and_unload on CPU, with json and numpy only.

A model reference `BASE+ADAPTER` (or `{model: BASE, lora: ADAPTER}`) is one model: the base's
config.json and tensors, with every tensor `<M>.weight` that the adapter targets replaced by

    W' = round_to(dtype(W), float32(W) + scaling * (B @ A))

  * B @ A in float32 (A and B converted to float32 first), the sum over the rank k ascending, each
    product and partial sum rounded to float32 (`lora_product`);
  * times scaling as a float32 number: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora, r and
    alpha per module from rank_pattern / alpha_pattern (`Adapter.scaling`);
  * transposed for fan_in_fan_out (GPT-2 Conv1D, base stored [in, out]) and for embeddings
    (`lora_embedding_A` [r, num_embeddings], `lora_embedding_B` [dim, r]);
  * the float32 sum W + delta rounded once to the base tensor's stored dtype (the delta itself is never
    rounded to the base's dtype).

Anything the spec refuses raises AdapterError (config_eval turns it into its ConfigError).

    base, adapter = split_ref(ref)          # ("/m/base", "/m/lora") or ("/m/base", None)
    adapter = read_adapter(folder)          # checks adapter_config.json and the tensor names
    tensors = effective_tensors(read_folder(base_folder), adapter)   # {name: StTensor}
    tensors = load(base_folder, adapter_folder)                      # the two above
"""

import json
import math
import os
import re

import numpy as np

from safetensors_io import FLOAT_DTYPES, StTensor, encode, read_safetensors, round_to


class AdapterError(Exception):
    """A LoRA reference or adapter folder that the program must refuse."""


PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
# PEFT's defaults (LoraConfig) for keys a config leaves out.
DEFAULT_R = 8
DEFAULT_ALPHA = 8
# Regex metacharacters of a rank_pattern / alpha_pattern key. "." is not one of them here: the common
# plain keys are dotted module names ("model.layers.0.self_attn.q_proj"), matched literally.
REGEX_META = set("^$*+?{}[]\\|()")

LINEAR_RE = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_A|lora_B)"
                       r"(?:\.(?P<adapter>[^.]+))?\.weight$")
EMBEDDING_RE = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_embedding_A|lora_embedding_B)"
                          r"(?:\.(?P<adapter>[^.]+))?$")


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---- references ---------------------------------------------------------------------------------------

def ref_text(ref):
    """A model reference as text: a string as is; {model: BASE, lora: ADAPTER} -> "BASE+ADAPTER";
    {model: X} -> X; {path: P, revision: R} -> "P@R" (each side may itself be a mapping)."""
    if isinstance(ref, str):
        return ref
    if not isinstance(ref, dict):
        raise AdapterError(f"a model reference must be a string or a mapping, not {ref!r}")
    if ref.get("lora") is not None:
        return f"{ref_text(ref['model'])}+{ref_text(ref['lora'])}"
    if "model" in ref:
        return ref_text(ref["model"])
    if not isinstance(ref.get("path"), str):
        raise AdapterError(f"a model reference written as a mapping needs path: ({ref!r})")
    rev = ref.get("revision")
    return ref["path"] if rev is None else f"{ref['path']}@{rev}"


def split_ref(ref):
    """(base, adapter or None) of a model reference (text or mapping). More than one '+' or an empty side
    is an AdapterError."""
    text = ref_text(ref)
    parts = text.split("+")
    if len(parts) == 1:
        return text, None
    if len(parts) > 2:
        raise AdapterError(f"model {text!r} has more than one '+' (write BASE+ADAPTER with one adapter)")
    base, adapter = parts
    if not base or not adapter:
        raise AdapterError(f"model {text!r}: empty {'base' if not base else 'adapter'} around '+' "
                           "(write BASE+ADAPTER)")
    return base, adapter


# ---- adapter_config.json ----------------------------------------------------------------------------

def pattern_key(patterns, module):
    """The first key of `patterns` (dict order) that names `module`: the module name is the key, or ends
    with "." + key (PEFT's re.match(rf"(.*\\.)?({key})$", module) for a key without metacharacters);
    None if no key does."""
    for key in patterns or {}:
        if module == key or module.endswith("." + key):
            return key
    return None


class Adapter:
    """One adapter folder: its checked config and, per targeted module M, its (kind, A, B) where kind
    is "linear" or "embedding" and A, B are StTensors."""

    def __init__(self, folder, config, modules):
        self.folder = folder
        self.config = config
        self.r = config.get("r", DEFAULT_R)
        self.alpha = config.get("lora_alpha", DEFAULT_ALPHA)
        self.rslora = bool(config.get("use_rslora") or False)
        self.fan_in_fan_out = bool(config.get("fan_in_fan_out") or False)
        self.rank_pattern = config.get("rank_pattern") or {}
        self.alpha_pattern = config.get("alpha_pattern") or {}
        self.modules = modules

    def rank(self, module):
        key = pattern_key(self.rank_pattern, module)
        return self.r if key is None else self.rank_pattern[key]

    def module_alpha(self, module):
        key = pattern_key(self.alpha_pattern, module)
        return self.alpha if key is None else self.alpha_pattern[key]

    def scaling(self, module):
        """lora_alpha / r, or lora_alpha / sqrt(r) with rslora (a Python float, as PEFT keeps it)."""
        r = self.rank(module)
        alpha = self.module_alpha(module)
        return alpha / math.sqrt(r) if self.rslora else alpha / r


def check_config(config, folder):
    """Raises AdapterError for a config the spec refuses."""
    where = os.path.join(folder, CONFIG_FILE)
    if not isinstance(config, dict):
        raise AdapterError(f"{where}: not a JSON object")
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise AdapterError(f"{where}: peft_type {peft_type!r} is not supported (only LORA adapters; "
                           "IA3, ADALORA, LOHA, LOKR, ... are not)")
    if config.get("use_dora") not in (None, False):
        raise AdapterError(f"{where}: use_dora: DoRA adapters are not supported")
    r = config.get("r", DEFAULT_R)
    if type(r) is not int or r <= 0:
        raise AdapterError(f"{where}: r must be an integer > 0, found {r!r}")
    if not is_number(config.get("lora_alpha", DEFAULT_ALPHA)):
        raise AdapterError(f"{where}: lora_alpha must be a number, found {config.get('lora_alpha')!r}")
    for key in ("use_rslora", "fan_in_fan_out"):
        if config.get(key) not in (None, True, False):
            raise AdapterError(f"{where}: {key} must be true or false, found {config.get(key)!r}")
    if config.get("bias", "none") not in (None, "none"):
        raise AdapterError(f"{where}: bias: {config.get('bias')!r} is not supported yet (only \"none\")")
    if config.get("modules_to_save"):
        raise AdapterError(f"{where}: modules_to_save: {config.get('modules_to_save')!r} is not supported yet")
    for key, valid, what in (("rank_pattern", lambda v: type(v) is int and v > 0, "an integer > 0"),
                             ("alpha_pattern", is_number, "a number")):
        patterns = config.get(key)
        if patterns is None:
            continue
        if not isinstance(patterns, dict):
            raise AdapterError(f"{where}: {key} must be a mapping of module name: value")
        for k, v in patterns.items():
            if any(c in REGEX_META for c in k):
                raise AdapterError(f"{where}: {key} key {k!r} is a regular expression, which is not supported "
                                   "yet (use module names)")
            if not valid(v):
                raise AdapterError(f"{where}: {key} value of {k!r} must be {what}, found {v!r}")


# ---- adapter_model.safetensors ---------------------------------------------------------------------

def parse_name(name):
    """(module, kind, part "A"/"B", adapter name or None) of an adapter tensor name, or None."""
    m = LINEAR_RE.match(name)
    if m:
        return m.group("module"), "linear", m.group("part")[-1], m.group("adapter")
    m = EMBEDDING_RE.match(name)
    if m:
        return m.group("module"), "embedding", m.group("part")[-1], m.group("adapter")
    return None


def check_tensors(tensors, adapter):
    """{module: (kind, A, B)} from the adapter file's tensors, every check of the names, pairs and
    ranks done (the base model is not needed for these)."""
    found = {}
    adapter_names = set()
    for name in sorted(tensors):
        parsed = parse_name(name)
        if parsed is None:
            raise AdapterError(f"{adapter.folder}: tensor {name} is not a LoRA A/B matrix "
                               "(modules_to_save / bias tensors are not supported)")
        module, kind, part, adapter_name = parsed
        adapter_names.add(adapter_name or "")
        entry = found.setdefault(module, {"kind": kind})
        if entry["kind"] != kind:
            raise AdapterError(f"{adapter.folder}: module {module} has both lora_A/lora_B and "
                               "lora_embedding_A/lora_embedding_B tensors")
        if part in entry:
            raise AdapterError(f"{adapter.folder}: module {module} has two lora_{part} tensors "
                               f"({entry[part].name} and {name})")
        entry[part] = tensors[name]
    if len(adapter_names) > 1:
        raise AdapterError(f"{adapter.folder}: the file holds more than one adapter "
                           f"({', '.join(sorted(n or '(unnamed)' for n in adapter_names))})")
    modules = {}
    for module, entry in sorted(found.items()):
        for part, other in (("A", "B"), ("B", "A")):
            if other not in entry:
                missing = ("lora_embedding_" if entry["kind"] == "embedding" else "lora_") + other
                raise AdapterError(f"{adapter.folder}: {entry[part].name} has no {missing} (every A matrix "
                                   "needs its B and every B its A)")
        a, b = entry["A"], entry["B"]
        for t in (a, b):
            if t.dtype not in FLOAT_DTYPES:
                raise AdapterError(f"{adapter.folder}: tensor {t.name} is {t.dtype}; LoRA matrices must be "
                                   "F32, BF16 or F16")
            if len(t.shape) != 2:
                raise AdapterError(f"{adapter.folder}: tensor {t.name} has shape {list(t.shape)}; LoRA "
                                   "matrices are 2-D")
        want = adapter.rank(module)
        if a.shape[0] != b.shape[1]:
            raise AdapterError(f"{adapter.folder}: {a.name} {list(a.shape)} and {b.name} {list(b.shape)} "
                               "disagree on the rank (A rows must equal B columns)")
        if a.shape[0] != want:
            raise AdapterError(f"{adapter.folder}: {a.name} {list(a.shape)} has rank {a.shape[0]} but "
                               f"adapter_config.json gives module {module} rank {want} (r / rank_pattern)")
        modules[module] = (entry["kind"], a, b)
    return modules


def read_adapter(folder):
    """The checked Adapter of a folder (adapter_config.json + adapter_model.safetensors)."""
    if not os.path.isdir(folder):
        raise AdapterError(f"adapter folder {folder} not found")
    config_path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise AdapterError(f"adapter folder {folder} has no {CONFIG_FILE}")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except ValueError as e:
        raise AdapterError(f"{config_path}: not valid JSON ({e})")
    check_config(config, folder)
    weights = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        if os.path.isfile(os.path.join(folder, PICKLE_FILE)):
            raise AdapterError(f"adapter folder {folder} has only {PICKLE_FILE} (a pickle): convert it to "
                               f"{WEIGHTS_FILE}")
        raise AdapterError(f"adapter folder {folder} has no {WEIGHTS_FILE}")
    tensors, _ = read_safetensors(weights)
    adapter = Adapter(folder, config, {})
    adapter.modules = check_tensors(tensors, adapter)
    return adapter


# ---- values --------------------------------------------------------------------------------------------

def lora_product(b, a):
    """B @ A in float32: acc = 0, then for k ascending acc += B[:, k] A[k, :], each product and each sum
    rounded to float32 (no fused multiply-add)."""
    b = np.asarray(b, np.float32)
    a = np.asarray(a, np.float32)
    acc = np.zeros((b.shape[0], a.shape[1]), np.float32)
    for k in range(a.shape[0]):
        acc = acc + np.multiply.outer(b[:, k], a[k, :]).astype(np.float32)
    return acc


def delta(kind, a, b, scaling, fan_in_fan_out):
    """float32 delta in the base tensor's layout: (B @ A) * float32(scaling), transposed for an
    embedding ([num_embeddings, dim]) or a fan_in_fan_out Linear ([in, out])."""
    d = lora_product(b, a) * np.float32(scaling)
    if kind == "embedding" or fan_in_fan_out:
        d = np.ascontiguousarray(d.T)
    return d.astype(np.float32)


def base_shape(kind, a_shape, b_shape, fan_in_fan_out):
    """The shape the base tensor must have for these A and B."""
    if kind == "embedding" or fan_in_fan_out:
        return (a_shape[1], b_shape[0])
    return (b_shape[0], a_shape[1])


def apply(dtype, w, d):
    """W' = round_to(dtype, float32(W) + delta): one float32 add, one rounding to the stored dtype."""
    with np.errstate(over="ignore", invalid="ignore"):
        return round_to(dtype, np.asarray(w, np.float32) + np.asarray(d, np.float32))


def effective_tensors(base_tensors, adapter):
    """{name: StTensor} of BASE+ADAPTER: the base's tensors, every targeted `<M>.weight` replaced by W'
    (same dtype and shape)."""
    out = dict(base_tensors)
    for module, (kind, a, b) in sorted(adapter.modules.items()):
        name = module + ".weight"
        w = base_tensors.get(name)
        if w is None:
            raise AdapterError(f"{adapter.folder}: the adapter targets {module} but the base model has no "
                               f"tensor {name}")
        if w.dtype not in FLOAT_DTYPES:
            raise AdapterError(f"{adapter.folder}: base tensor {name} is {w.dtype}, not a float type")
        want = base_shape(kind, a.shape, b.shape, adapter.fan_in_fan_out)
        if tuple(w.shape) != want:
            layout = ("[A cols, B rows]" if kind == "embedding" or adapter.fan_in_fan_out
                      else "[B rows, A cols]")
            raise AdapterError(f"{adapter.folder}: {a.name} {list(a.shape)} and {b.name} {list(b.shape)} make "
                               f"{list(want)} ({layout}) but the base tensor {name} is {list(w.shape)}")
        d = delta(kind, a.f32(), b.f32(), adapter.scaling(module), adapter.fan_in_fan_out)
        values = apply(w.dtype, w.f32(), d)
        out[name] = StTensor(name, w.dtype, w.shape, encode(w.dtype, values))
    return out


def load(base_tensors_or_folder, adapter_folder):
    """The effective tensors of BASE+ADAPTER; the base as {name: StTensor} or a model folder."""
    from safetensors_io import read_folder
    base = (read_folder(base_tensors_or_folder) if isinstance(base_tensors_or_folder, str)
            else base_tensors_or_folder)
    return effective_tensors(base, read_adapter(adapter_folder))
