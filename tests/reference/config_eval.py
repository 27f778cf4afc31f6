"""A small evaluator of mergekit configs, written from mergekit's behaviour and docs/merge-contract.md (D1, D2, D8,
D10, D12, D16, D18), for what the tests need: every merge method over `models:`, `slices:` or
`modules:`, with gradients, conditional filters, parameter precedence, frankenmerge renaming, tied
lm_head and embedding crops, on text-only and multi-module (vision-language) models.

Random methods (dare_*, della*) cannot be replayed (D6): their tensors are computed only when the
caller passes `masks(planned, k, shape) -> bool array` (the mask of the k-th non-base input, e.g.
recovered from the program's output); otherwise result.tensors[name] is None.

The config is a Python dict shaped like the YAML (the tests build the dict, write it as YAML for the
program, and hand the same dict here). Model references are resolved by `resolve(ref) -> folder`
(default: the reference itself is the folder). A LoRA reference (`BASE+ADAPTER` or
`{model: BASE, lora: ADAPTER}`, lora_eval.py) is one model: resolve is asked for each side, and the
model has the base's config.json and the effective tensors of the pair.

    result = evaluate(cfg)
    result.tensors   # {output tensor name: (dtype, float32 values)}
    result.plan      # [Planned]: per output tensor the method, evaluated params and sources
    result.config    # the expected output config.json (dict)
    result.modules   # {module name: ModulePlan}: per module its slices, output layers, copied or not
    result.vocab     # with tokenizer_source / tokenizer: tokenizer_eval.OutputVocab, else None

With a tokenizer option (issue 12), the inputs of every embedding-like tensor (is_embed) are
remapped to the output vocabulary before the method, as mergekit's PermutedEmbeddings does (only
`is_embed` weights, plan.py); tokenizer_eval.py has the rules. config.json's vocab_size is then the
output vocabulary's size, padded.

Multi-module models (D18): the caller says what the modules of the family are, as a table
{module name: Module(stack, members, count_key)} passed as `evaluate(cfg, modules=TABLE)`, e.g.
for Qwen2-VL

    {"text_decoder": Module("model.layers", ("model.", "lm_head."), "num_hidden_layers"),
     "vision_tower": Module("visual.blocks", ("visual.",), "vision_config.depth"),
     "multi_modal_projector": Module(None, ("visual.merger.",), None)}

The reference never guesses modules from names: the table is the independent truth (it mirrors
mergekit's architecture JSONs). Without a table the model is text-only: one module, TEXT_ONLY.
"""

import copy
import json
import os
import re
from typing import NamedTuple, Optional, Tuple, Union

import lora_eval
import methods
import methods_gta
import methods_stats
import tokenizer_eval
from safetensors_io import TORCH_NAME, config_dtype, read_folder


class ConfigError(Exception):
    """The config cannot be merged (the program must refuse it too)."""


LAYER_RE = re.compile(r"\.(\d+)\.")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
EMBED_WORDS = ("embed_tokens", "lm_head", "wte", "word_embeddings", "embed_in", "embed_out")

REQUIRED = object()
# method -> (global parameters with defaults, per-model parameters with defaults). A default of None
# means "no default, optional" (B2).
METHOD_PARAMS = {
    "linear": ({"normalize": True}, {"weight": REQUIRED}),
    "passthrough": ({}, {"scale": None}),
    "slerp": ({"t": REQUIRED}, {}),
    "nuslerp": ({"nuslerp_flatten": True, "nuslerp_row_wise": False}, {"weight": REQUIRED}),
    "multislerp": ({"normalize_weights": True, "eps": 1e-8}, {"weight": REQUIRED}),
    "karcher": ({"max_iter": 10, "tol": 1e-5}, {}),
    "model_stock": ({"filter_wise": False}, {}),
    "sce": ({"select_topk": 1.0, "int8_mask": False}, {}),
    "ram": ({"epsilon": 1e-5}, {}),
    "ramplus_tl": ({"r": 0.1, "alpha": 0.2, "epsilon": 1e-5}, {}),
    "nearswap": ({"t": REQUIRED}, {}),
    "arcee_fusion": ({}, {}),
}
for _name, (_kind, _cons, _norm, _resc) in methods_gta.FAMILY.items():
    _per_model = {"weight": REQUIRED, "density": 1.0}
    if _kind == "outliers":
        _per_model["gamma"] = 0.01
    if _kind == "della":
        _per_model["epsilon"] = 0.15
    METHOD_PARAMS[_name] = ({"normalize": _norm, "rescale": _resc, "lambda": 1.0, "int8_mask": False}, _per_model)

# Methods in which the base model has its own role (B2): a per-model parameter is not required for it.
BASE_ROLE = set(methods_gta.FAMILY) | {"slerp", "nuslerp", "multislerp", "model_stock", "sce", "ram", "ramplus_tl",
                                       "nearswap", "arcee_fusion"}
# Random methods (D6): tensors need the masks.
RANDOM = {m for m, f in methods_gta.FAMILY.items() if f[0] in methods_gta.RANDOM}


# ---- names (D12) -----------------------------------------------------------------------------------

def layer_index(name):
    """The layer index of a tensor name (first `.<digits>.` component), or None."""
    m = LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def with_layer(template, index):
    """A layer template ("model.layers.{}.mlp.up_proj.weight") with a layer index filled in."""
    return template.format(index)


def layer_template(name):
    """The template of a name at its first `.<digits>.` ("model.layers.{}.mlp.up_proj.weight")."""
    m = LAYER_RE.search(name)
    return name[:m.start()] + ".{}." + name[m.end():]


def is_embed(name):
    return any(w in name.split(".") for w in EMBED_WORDS)


def is_post(name):
    """Non-layer tensors that come after the layers (D12, D18): names that contain `norm`, `ln_f`,
    `lm_head` or `embed_out` (final norms, output heads; `post_layernorm` of a vision tower too).
    They are planned from a module's last slice; every other non-layer tensor is a pre-weight
    (first slice)."""
    return any(w in name for w in ("norm", "ln_f", "lm_head", "embed_out"))


def tied_input(name):
    """B4.4: the tensor a model without its own `lm_head.weight` reads in its place (its input
    embedding, under the same prefix: `language_model.lm_head.weight` ->
    `language_model.model.embed_tokens.weight`), or None."""
    if name == "lm_head.weight" or name.endswith(".lm_head.weight"):
        return name[:-len("lm_head.weight")] + "model.embed_tokens.weight"
    return None


# ---- modules (D18) --------------------------------------------------------------------------------

TEXT = "text_decoder"
FIRST_INDEX = "*"   # Module.stack of a text-only model: the prefix before a name's first `.<digits>.`


class Module(NamedTuple):
    """One module of a model (D18), as the test's table describes it.

    stack: the prefix of the module's layer stack ("language_model.model.layers"): the tensor
        `<stack>.<i>.<rest>` is layer i of the module (the component right after the prefix, so
        `experts.7` or an nn.Sequential index further on is never a layer). FIRST_INDEX: the
        prefix before the name's first `.<digits>.` (a text-only model, D12). None: no layers
        (a projector; its `mlp1.0.weight` is a non-layer tensor).
    members: name prefixes of the module's tensors. A tensor belongs to the module whose
        prefix (the stack prefix counts as one) is the longest one starting its name, so a
        projector's `visual.merger.` wins over a vision tower's `visual.`. "" matches every name.
    count_key: where config.json keeps the module's layer count: a dotted path
        ("text_config.num_hidden_layers"), a tuple of paths (the first that holds an integer), or
        None.
    """
    stack: Optional[str]
    members: Tuple[str, ...] = ()
    count_key: Union[str, Tuple[str, ...], None] = None

    def prefixes(self):
        """The name prefixes that make a tensor this module's."""
        extra = (self.stack + ".",) if self.stack not in (None, FIRST_INDEX) else ()
        return tuple(self.members) + extra

    def split(self, name):
        """(stack prefix, layer index, rest) of a layer tensor of this module, else None."""
        if self.stack is None:
            return None
        if self.stack == FIRST_INDEX:
            m = LAYER_RE.search(name)
            return (name[:m.start()], int(m.group(1)), name[m.end():]) if m else None
        m = re.match(re.escape(self.stack) + r"\.(\d+)\.(.*)$", name)
        return (self.stack, int(m.group(1)), m.group(2)) if m else None

    def count_holder(self, config):
        """(the object of `config` that holds the layer count, its key), or (None, None)."""
        paths = (self.count_key,) if isinstance(self.count_key, str) else self.count_key or ()
        for path in paths:
            *parents, key = path.split(".")
            holder = config
            for p in parents:
                holder = holder.get(p) if isinstance(holder, dict) else None
            if isinstance(holder, dict) and type(holder.get(key)) is int:
                return holder, key
        return None, None


# A model without a table: one module, the text decoder, that holds every tensor (D12).
TEXT_ONLY = {TEXT: Module(FIRST_INDEX, ("",), LAYER_KEYS + tuple("text_config." + k for k in LAYER_KEYS))}
ALIASES = {"default": TEXT}   # mergekit's name of the module of a single-module architecture


def module_of(table, name):
    """The name of the module a tensor belongs to (the longest matching prefix, see Module)."""
    best, best_len = None, -1
    for mod_name, mod in table.items():
        for prefix in mod.prefixes():
            if name.startswith(prefix) and len(prefix) > best_len:
                best, best_len = mod_name, len(prefix)
    if best is None:
        raise ValueError(f"tensor {name!r} belongs to no module of the table {sorted(table)}")
    return best


def module_name(table, key):
    """The table's name of a `modules:` key: the key itself, or `default` for the only module of a
    single-module model. Anything else is a ConfigError that names the key and the model's modules."""
    if key in table:
        return key
    if len(table) == 1 and ALIASES.get(key) in table:
        return ALIASES[key]
    raise ConfigError(f"unknown module {key!r} under modules: (the model's modules are {', '.join(table)})")


# ---- models ----------------------------------------------------------------------------------------

class Model:
    """A model folder: its config.json, its tensors, and per module of the table its tensor names
    (`names[module]`) and layer count (`counts[module]`: the config's count key, else the highest
    layer index + 1, else 0). With an adapter folder (a LoRA reference), the base folder's config.json
    and the effective tensors of BASE+ADAPTER (lora_eval)."""

    def __init__(self, ref, path, table=TEXT_ONLY, adapter=None):
        self.ref = ref
        self.path = path
        self.adapter = adapter
        with open(os.path.join(path, "config.json")) as f:
            self.config = json.load(f)
        self.tensors = read_folder(path)
        if adapter is not None:
            try:
                self.tensors = lora_eval.effective_tensors(self.tensors, lora_eval.read_adapter(adapter))
            except lora_eval.AdapterError as e:
                raise ConfigError(f"model {ref}: {e}") from e
        self.names = {m: [] for m in table}
        for n in sorted(self.tensors):
            self.names[module_of(table, n)].append(n)
        self.counts = {m: self._count(mod, self.names[m]) for m, mod in table.items()}

    def _count(self, module, names):
        holder, key = module.count_holder(self.config)
        if holder is not None:
            return holder[key]
        indexes = [module.split(n)[1] for n in names if module.split(n)]
        return max(indexes) + 1 if indexes else 0

    def has(self, name):
        return name in self.tensors

    def tensor(self, name):
        t = self.tensors[name]
        return t.dtype, t.f32()


# ---- parameter values (B1.5) ---------------------------------------------------------------------------

def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def filter_matches(flt, name):
    return flt is None or flt == "*" or flt in name


def gradient(values, t):
    """A list of numbers interpolated at t in [0, 1], in double precision (B1.5)."""
    n = len(values)
    if n == 0:
        raise ConfigError("empty gradient")
    if not all(is_number(v) for v in values):
        return values[int(t * (n - 1))]
    s = t * (n - 1)
    i0 = int(s)
    i1 = min(n - 1, i0 + 1)
    f = s - i0
    return (1 - f) * values[i0] + f * values[i1]


def evaluate_setting(value, tensor_name, t):
    """Returns (found, value): a scalar as is; a gradient interpolated at t; a conditional list
    scanned in order, the first matching filter wins; no match -> (False, None)."""
    if isinstance(value, list):
        if value and all(isinstance(e, dict) for e in value):
            for entry in value:
                if filter_matches(entry.get("filter"), tensor_name):
                    return evaluate_setting(entry["value"], tensor_name, t)
            return False, None
        return True, gradient(value, t)
    if isinstance(value, dict):
        raise ConfigError("a single {filter, value} mapping is not a valid setting (use a list)")
    return True, value


def lookup(name, levels, tensor_name, t):
    """First level (a parameter dict or None) that yields a value for `name`."""
    for level in levels:
        if level and name in level:
            found, v = evaluate_setting(level[name], tensor_name, t)
            if found:
                return True, v
    return False, None


# ---- planning (B1.3, B4.3, B4.4) ------------------------------------------------------------------

class Source:
    """One input of an output tensor."""

    def __init__(self, ref, model, tensor, param_name):
        self.ref = ref              # as written in the config
        self.model = model          # Model
        self.tensor = tensor        # the input tensor actually read (embed_tokens for a tied lm_head)
        self.param_name = param_name  # the name per-model filters see
        self.params = {}            # evaluated per-model parameters (with defaults)
        self.explicit = set()       # the ones that came from the config


class Planned:
    """One output tensor."""

    def __init__(self, name, t, method, sources, base_ref):
        self.name = name
        self.t = t
        self.method = method
        self.sources = sources
        self.base_ref = base_ref
        self.params = {}
        self.explicit = set()

    def input_label(self):
        """mergekit's save-order key (B5.4): the largest input tensor name."""
        return max(s.param_name for s in self.sources)


def exactly_one(entry, what):
    """The recipe key of `entry` (a config or one `modules:` entry): "models" or "slices"."""
    if not isinstance(entry, dict) or ("models" in entry) == ("slices" in entry):
        raise ConfigError(f"{what}: exactly one of models: and slices: is needed")
    return "models" if "models" in entry else "slices"


def module_recipes(cfg, table):
    """{module name: recipe} (D18): a recipe is a dict with `models:` or `slices:` and, for an entry
    of `modules:`, its `parameters:`; a module without a recipe is copied from the donor.

    - `modules:` (which excludes top-level `models:`/`slices:`): its entries, keys checked with
      module_name();
    - top-level `slices:` on a multi-module model: the text decoder only;
    - otherwise (`models:`, or `slices:` on a single-module model): every module."""
    if "modules" not in cfg:
        key = exactly_one(cfg, "the config")
        if key == "slices" and len(table) > 1:
            if TEXT not in table:
                raise ConfigError("top-level slices: need a text decoder to apply to; this model has "
                                  f"{', '.join(table)}: use modules: to name the module of each slice")
            return {TEXT: {"slices": cfg["slices"]}}
        return {name: {key: cfg[key]} for name in table}
    if "models" in cfg or "slices" in cfg:
        raise ConfigError("modules: excludes top-level models: and slices:")
    if not isinstance(cfg["modules"], dict) or not cfg["modules"]:
        raise ConfigError("modules: must map module names to {slices: ...} or {models: ...}")
    recipes = {}
    for key, entry in cfg["modules"].items():
        name = module_name(table, key)
        if name in recipes:
            raise ConfigError(f"module {name} is given twice under modules:")
        exactly_one(entry, f"modules: {key}")
        recipes[name] = entry
    return recipes


def copy_recipe(donor, module, models):
    """The recipe of a module copied from the donor: one slice over all its layers (D18)."""
    return {"slices": [{"sources": [{"model": donor, "layer_range": [0, models[donor].counts[module]]}]}]}


def normalize_slices(recipe, models, module, base, top):
    """A module's recipe as slices (B1.3, D1, D18): `models:` -> one slice over all of the module's
    layers, base appended last if not listed; `slices:` with every layer_range checked against the
    module's layer count in its model. Each slice carries its parameter levels below the source's:
    [slice, module, top-level] (D18's precedence)."""
    key = exactly_one(recipe, module)
    module_params = recipe.get("parameters") or {}

    def source(ref, start, end, params):
        n = models[ref].counts[module]
        if not (0 <= start <= end <= n):
            raise ConfigError(f"layer_range {[start, end]} of {ref} is outside its {module}, "
                              f"which has {n} layers")
        return {"model": ref, "range": (start, end), "params": params or {}}

    if key == "models":
        entries = [(m["model"], m.get("parameters")) for m in recipe["models"]]
        if base is not None and base not in [ref for ref, _ in entries]:
            entries.append((base, None))
        raw = [{"sources": [source(ref, 0, models[ref].counts[module], params) for ref, params in entries]}]
    else:
        raw = [{"sources": [source(s["model"], *s["layer_range"], s.get("parameters")) for s in sl["sources"]],
                "params": sl.get("parameters"), "base_model": sl.get("base_model", base)}
               for sl in recipe["slices"]]
    slices = []
    for sl in raw:
        if len({e - b for b, e in (s["range"] for s in sl["sources"])}) > 1:
            raise ConfigError("All inputs to a slice must contain the same number of layers")
        slices.append({"sources": sl["sources"], "base_model": sl.get("base_model", base),
                       "levels": [sl.get("params") or {}, module_params, top]})
    return slices


def referenced(cfg):
    """Every model reference of the config, each once, in config order: top-level `models:` and
    `slices:`, then each `modules:` entry's, then base_model."""
    refs = []
    for part in [cfg] + list((cfg.get("modules") or {}).values()):
        refs += [m["model"] for m in part.get("models") or []]
        for sl in part.get("slices") or []:
            refs += [s["model"] for s in sl["sources"]]
            if sl.get("base_model"):
                refs.append(sl["base_model"])
    if cfg.get("base_model"):
        refs.append(cfg["base_model"])
    return list(dict.fromkeys(refs))


def load_model(ref, resolve, table):
    """The Model of a reference: a folder, or BASE+ADAPTER (each side resolved on its own)."""
    if not isinstance(ref, str):
        return Model(ref, resolve(ref), table)
    try:
        base, adapter = lora_eval.split_ref(ref)
    except lora_eval.AdapterError as e:
        raise ConfigError(str(e)) from e
    return Model(ref, resolve(base), table, None if adapter is None else resolve(adapter))


def with_ref_texts(cfg):
    """A copy of cfg with every model reference as text (lora_eval.ref_text): {model: B, lora: A} ->
    "B+A", {path: P, revision: R} -> "P@R", so that a model is one model however it is written."""
    def text(ref):
        return lora_eval.ref_text(ref) if isinstance(ref, dict) else ref

    cfg = copy.deepcopy(cfg)
    for part in [cfg] + list((cfg.get("modules") or {}).values()):
        for m in part.get("models") or []:
            m["model"] = text(m["model"])
        for sl in part.get("slices") or []:
            for s in sl["sources"]:
                s["model"] = text(s["model"])
            if sl.get("base_model"):
                sl["base_model"] = text(sl["base_model"])
    if cfg.get("base_model"):
        cfg["base_model"] = text(cfg["base_model"])
    return cfg


def donor_ref(cfg):
    """D2: base_model, else the first model in config order."""
    return cfg.get("base_model") or referenced(cfg)[0]


class ModulePlan:
    """The plan of one module: its slices, its planned tensors, and per output layer the (model
    ref, layer) it comes from (whose config.json entries it keeps). `copied`: the module is the
    donor's, unchanged (D18)."""

    def __init__(self, name, module, slices, copied):
        self.name = name
        self.module = module
        self.slices = slices
        self.copied = copied
        self.plan = []
        self.layer_origins = []

    @property
    def num_layers(self):
        return len(self.layer_origins)


class Result:
    """What evaluate() returns; `slices`, `num_layers` and `layer_origins` are the text decoder's
    (None for a table without one)."""


def evaluate(cfg, resolve=None, masks=None, modules=None):
    """The expected output of a merge config: see the module docstring. `modules`: the model
    family's module table ({name: Module}, D18); None: a text-only model (TEXT_ONLY). Raises
    ConfigError for a config the program must refuse."""
    resolve = resolve or (lambda ref: ref)
    table = modules or TEXT_ONLY
    method = cfg["merge_method"]
    if method not in METHOD_PARAMS:
        raise ConfigError(f"method {method!r} is not in the reference")
    cfg = with_ref_texts(cfg)
    recipes = module_recipes(cfg, table)
    models = {ref: load_model(ref, resolve, table) for ref in referenced(cfg)}
    donor = donor_ref(cfg)

    res = Result()
    res.models = models
    res.donor = models[donor]
    res.modules = {}
    res.plan = []
    for name, module in table.items():
        copied = name not in recipes   # bytes as stored (cast only by dtype/out_dtype), no parameters
        recipe = copy_recipe(donor, name, models) if copied else recipes[name]
        slices = normalize_slices(recipe, models, name, None if copied else cfg.get("base_model"),
                                  {} if copied else cfg.get("parameters") or {})
        mp = ModulePlan(name, module, slices, copied)
        _plan_module(mp, models, "passthrough" if copied else method, donor)
        holder, _ = module.count_holder(res.donor.config)
        # a text decoder without a count (LLaVA's text_config) gets one written (expected_config)
        if holder is None and mp.num_layers != res.donor.counts[name] and name != TEXT:
            raise ConfigError(f"the output's {name} has {mp.num_layers} layers, not the donor's "
                              f"{res.donor.counts[name]}, and config.json has no layer count for it")
        res.modules[name] = mp
        res.plan += mp.plan

    text = res.modules.get(TEXT)
    res.slices = text.slices if text else None
    res.num_layers = text.num_layers if text else None
    res.layer_origins = text.layer_origins if text else None
    res.vocab = _output_vocab(cfg, models, resolve)
    res.tensors = {p.name: compute(cfg, p, masks, res.vocab) for p in res.plan}
    res.config = expected_config(res) if all(v is not None for v in res.tensors.values()) else None
    return res


def _plan_module(mp, models, method, donor):
    """Plans one module's tensors into mp (D18): pre-weights from the first slice, the layers of
    every slice renumbered from 0 in the module's own stack with t = j/(L-1) within a slice of L
    layers, post-weights from the last slice; non-layer tensors get t = 0."""
    module, slices = mp.module, mp.slices
    names = sorted({n for sl in slices for s in sl["sources"] for n in models[s["model"]].names[mp.name]})
    templates = sorted({(sp[0], sp[2]) for sp in map(module.split, names) if sp})
    non_layer = [n for n in names if not module.split(n)]

    def plan(out_name, input_name_of, sl, t):
        p = _plan_tensor(models, method, out_name, input_name_of, sl, t)
        if p:
            mp.plan.append(p)

    for name in non_layer:
        if not is_post(name):
            plan(name, lambda s, n=name: n, slices[0], 0.0)
    for sl in slices:
        start0, end0 = sl["sources"][0]["range"]
        length = end0 - start0
        origin = next((s for s in sl["sources"] if models[s["model"]].path == models[donor].path),
                      sl["sources"][0])
        for j in range(length):
            counter = mp.num_layers
            mp.layer_origins.append((origin["model"], origin["range"][0] + j))
            t = j / (length - 1) if length > 1 else 1.0
            for prefix, rest in templates:
                plan(f"{prefix}.{counter}.{rest}", lambda s, prefix=prefix, rest=rest, j=j:
                     f"{prefix}.{s['range'][0] + j}.{rest}", sl, t)
    for name in non_layer:
        if is_post(name):
            plan(name, lambda s, n=name: n, slices[-1], 0.0)


def _plan_tensor(models, method, out_name, input_name_of, sl, t):
    sources = []
    for s in sl["sources"]:
        model_ref = s["model"]
        model = models[model_ref]
        in_name = input_name_of(s)
        src = Source(model_ref, model, in_name, in_name)
        src.slice_source = s
        sources.append(src)
    missing = [s for s in sources if not s.model.has(s.tensor)]
    if missing:
        tied = tied_input(out_name)
        if tied and len(missing) == len(sources):
            return None  # optional lm_head that no source has: not written (B4.4)
        for s in missing:
            if tied and s.model.has(tied):
                s.tensor = tied
            else:
                raise ConfigError(f"Tensor {s.tensor} required but not present in model {s.ref}")

    base_ref = sl.get("base_model")
    p = Planned(out_name, t, method, sources, base_ref)
    global_defaults, model_defaults = METHOD_PARAMS[method]
    levels = sl["levels"]
    for pname, default in global_defaults.items():
        found, v = lookup(pname, levels, out_name, t)
        if found:
            p.params[pname] = v
            p.explicit.add(pname)
        elif default is REQUIRED:
            raise ConfigError(f"Missing required parameter {pname} ({out_name})")
        elif default is not None:
            p.params[pname] = default
    for src in sources:
        is_base = base_ref is not None and src.ref == base_ref
        for pname, default in model_defaults.items():
            found, v = lookup(pname, [src.slice_source["params"]] + levels, src.param_name, t)
            if found:
                src.params[pname] = v
                src.explicit.add(pname)
            elif default is REQUIRED:
                needs = not (is_base and method in BASE_ROLE)
                if needs:
                    raise ConfigError(f"Missing required parameter {pname} for {src.ref} ({out_name})")
            elif default is not None:
                src.params[pname] = default
    return p


def _number(p, value, what):
    if not is_number(value):
        raise ConfigError(f"{what} must be a number for {p.name}")
    return float(value)


def _split_base(p, inputs):
    """(base input or None, [(source, input) of the others]) in D1 order."""
    base_i = None
    if p.base_ref is not None:
        found = [i for i, s in enumerate(p.sources) if s.ref == p.base_ref]
        if not found:
            raise ConfigError(f"base model {p.base_ref} is not an input of {p.name}")
        base_i = found[0]
    base = inputs[base_i] if base_i is not None else None
    others = [(s, x) for i, (s, x) in enumerate(zip(p.sources, inputs)) if i != base_i]
    return base, others


def _crop_common(p, inputs):
    """rectify_embed_sizes (B2): embeddings cropped to the common leading sub-matrix; any other shape
    mismatch is an error."""
    shapes = {v.shape for _, v in inputs}
    if len(shapes) <= 1:
        return inputs
    if not is_embed(p.name):
        raise ConfigError(f"shape mismatch for {p.name}: {sorted(shapes)}")
    cropped = methods.crop_common([v for _, v in inputs])
    return [(d, c) for (d, _), c in zip(inputs, cropped)]


def _same_shapes(p, inputs):
    """The decorator methods (multislerp, sce, nearswap, ram, ramplus_tl) do no rectification."""
    shapes = {v.shape for _, v in inputs}
    if len(shapes) > 1:
        raise ConfigError(f"shape mismatch for {p.name}: {sorted(shapes)}")
    return inputs


def _compute_gta(p, inputs, dtype, out_dtype, masks):
    if p.base_ref is None:
        raise ConfigError(f"{p.method} needs base_model")
    base, others = _split_base(p, inputs)
    xs, srcs = [], []
    for s, (d, v) in others:
        if v.shape != base[1].shape:
            if not is_embed(p.name) or any(a < b for a, b in zip(v.shape, base[1].shape)):
                raise ConfigError(f"shape mismatch for {p.name}: {v.shape} vs base {base[1].shape}")
            v = v[tuple(slice(0, n) for n in base[1].shape)]
        xs.append((d, v))
        srcs.append(s)
    kind = methods_gta.FAMILY[p.method][0]
    per = {k: [_number(p, s.params.get(k, dflt), k) for s in srcs]
           for k, dflt in (("weight", None), ("density", 1.0), ("gamma", 0.01), ("epsilon", 0.15))}
    if kind == "magnitude":
        for dens, (_, v) in zip(per["density"], xs):
            if dens < 1 and methods_gta.magnitude_k(dens, v.size) <= 0:
                raise ConfigError(f"{p.name}: density {dens} keeps no element of {v.size}")
    if kind == "della":
        for dens, eps in zip(per["density"], per["epsilon"]):
            try:
                methods_gta.check_della_epsilon(dens, eps)
            except methods_gta.ReferenceError_ as e:
                raise ConfigError(f"{p.name}: {e}")
    mask_list = None
    if kind in methods_gta.RANDOM and any(d < 1 for d in per["density"]):
        if masks is None:
            return None
        mask_list = [masks(p, k, v.shape) for k, (_, v) in enumerate(xs)]
    return methods_gta.gta(p.method, base, xs, per["weight"], per["density"], per["gamma"], per["epsilon"],
                           _number(p, p.params["lambda"], "lambda"), bool(p.params["normalize"]),
                           bool(p.params["rescale"]), dtype, out_dtype, mask_list)


def _need_base(p, base, others, exactly=None, at_least=None):
    if base is None:
        raise ConfigError(f"{p.method} needs base_model")
    if exactly is not None and len(others) != exactly:
        raise ConfigError(f"{p.method} needs the base and exactly {exactly} other model(s) for {p.name}")
    if at_least is not None and len(others) < at_least:
        raise ConfigError(f"{p.method} needs the base and at least {at_least} other models for {p.name}")


def _compute_stats(p, inputs, dtype, out_dtype):
    """The methods of methods_stats.py and the elementwise nearswap / ram."""
    m = p.method
    g = p.params
    if m in ("slerp", "karcher", "model_stock", "arcee_fusion", "nuslerp"):
        inputs = _crop_common(p, inputs)
    else:
        inputs = _same_shapes(p, inputs)
    base, others = _split_base(p, inputs)
    xs = [x for _, x in others]
    if m == "slerp":
        if base is None or len(inputs) != 2:
            raise ConfigError(f"slerp needs exactly two models, one of which is the base ({p.name})")
        return methods_stats.slerp(base, xs[0], _number(p, g["t"], "t"), dtype, out_dtype)
    if m == "nuslerp":
        if len(xs) != 2:
            raise ConfigError(f"nuslerp needs exactly two models besides the base ({p.name})")
        w = [_number(p, s.params.get("weight"), "weight") for s, _ in others]
        return methods_stats.nuslerp(xs, w, base, bool(g["nuslerp_flatten"]), bool(g["nuslerp_row_wise"]),
                                     dtype, out_dtype)
    if m == "multislerp":
        w = [_number(p, s.params.get("weight"), "weight") for s, _ in others]
        return methods_stats.multislerp(xs, w, base, bool(g["normalize_weights"]), _number(p, g["eps"], "eps"),
                                        dtype, out_dtype)
    if m == "karcher":
        return methods_stats.karcher(inputs, _number(p, g["max_iter"], "max_iter"), _number(p, g["tol"], "tol"),
                                     dtype, out_dtype)
    if m == "model_stock":
        _need_base(p, base, xs, at_least=2)
        return methods_stats.model_stock(base, xs, bool(g["filter_wise"]), dtype, out_dtype)
    if m == "sce":
        _need_base(p, base, xs)
        return methods_stats.sce(base, xs, _number(p, g["select_topk"], "select_topk"), dtype, out_dtype)
    if m == "ram":
        _need_base(p, base, xs)
        return methods.ram(base, xs, _number(p, g["epsilon"], "epsilon"), dtype, out_dtype)
    if m == "ramplus_tl":
        _need_base(p, base, xs)
        return methods_stats.ramplus_tl(base, xs, _number(p, g["r"], "r"), _number(p, g["alpha"], "alpha"),
                                        _number(p, g["epsilon"], "epsilon"), dtype, out_dtype)
    if m == "nearswap":
        _need_base(p, base, xs, exactly=1)
        return methods.nearswap(base, xs[0], _number(p, g["t"], "t"), dtype, out_dtype)
    if m == "arcee_fusion":
        _need_base(p, base, xs, exactly=1)
        return methods_stats.arcee_fusion(base, xs[0], dtype, out_dtype)
    raise ConfigError(f"method {m!r} is not in the reference")


def _output_vocab(cfg, models, resolve):
    """The output vocabulary of a config with a tokenizer option (tokenizer_eval.build_vocabulary over
    the referenced models in config order), else None."""
    try:
        settings = tokenizer_eval.tokenizer_settings(cfg)
        if settings is None:
            return None
        return tokenizer_eval.build_vocabulary(cfg, {ref: m.path for ref, m in models.items()},
                                               settings=settings, resolve=resolve)
    except tokenizer_eval.VocabError as e:
        raise ConfigError(str(e))


def remap_embedding_inputs(cfg, p, inputs, vocab):
    """The hook on the inputs of an embedding-like tensor: one remapped [V_out, H] matrix per model
    (a model given twice gets the same one), with the tensor's base, the config's dtype and the
    `tokenizer:` block's tokens and pad_to_multiple_of. A 1-D input (PhiMoE's lm_head.bias) is
    remapped as [V, 1]. Choice: mergekit's inferred architecture does not mark such a bias is_embed
    and merges it unremapped, a bias no longer as long as lm_head; here it follows lm_head's rows."""
    tensors = {}
    flat = {}
    for s, (dt, x) in zip(p.sources, inputs):
        flat[s.ref] = x.ndim == 1
        tensors.setdefault(s.ref, (dt, x[:, None] if x.ndim == 1 else x))
    try:
        out = tokenizer_eval.remap_embedding(tensors, vocab.perms, vocab.vocab, vocab.settings.tokens,
                                             vocab.settings.pad_to_multiple_of, p.base_ref,
                                             original_vocabs=vocab.original_vocabs,
                                             dtype=config_dtype(cfg.get("dtype")))
    except tokenizer_eval.VocabError as e:
        raise ConfigError(f"{p.name}: {e}")
    return [(out[s.ref][0], out[s.ref][1][:, 0] if flat[s.ref] else out[s.ref][1]) for s in p.sources]


def compute(cfg, p, masks=None, vocab=None):
    """The expected stored tensor (dtype, values) of one planned output tensor (None for a random
    method without masks). vocab: the output vocabulary (tokenizer option), whose remap is applied to
    the inputs of embedding-like tensors."""
    dtype = config_dtype(cfg.get("dtype"))
    out_dtype = config_dtype(cfg.get("out_dtype"))
    inputs = [s.model.tensor(s.tensor) for s in p.sources]
    embed = is_embed(p.name)
    if vocab is not None and embed:
        inputs = remap_embedding_inputs(cfg, p, inputs, vocab)

    if p.method == "passthrough":
        if len(inputs) != 1:
            raise ConfigError(f"passthrough needs exactly one input for {p.name}")
        scale = p.sources[0].params.get("scale")
        if scale is not None and not is_number(scale):
            raise ConfigError(f"scale must be a number for {p.name}")
        return methods.passthrough(inputs[0], scale, dtype, out_dtype)

    if p.method == "linear":
        shapes = {v.shape for _, v in inputs}
        if len(shapes) > 1:
            if not embed:
                raise ConfigError(f"shape mismatch for {p.name}: {sorted(shapes)}")
            cropped = methods.crop_common([v for _, v in inputs])
            inputs = [(d, c) for (d, _), c in zip(inputs, cropped)]
        weights = [s.params["weight"] for s in p.sources]
        if not all(is_number(w) for w in weights):
            raise ConfigError(f"weight must be a number for {p.name}")
        normalize = bool(p.params["normalize"])
        if normalize:
            dt = config_dtype(cfg.get("dtype")) or methods.promote(d for d, _ in inputs)
            if float(methods.model_sum(dt, methods.weights_tensor(dt, weights))) == 0.0:
                raise ConfigError(f"weights of {p.name} sum to 0 with normalize")
        return methods.linear(inputs, weights, normalize, dtype, out_dtype)

    if p.method in methods_gta.FAMILY:
        return _compute_gta(p, inputs, dtype, out_dtype, masks)

    try:
        return _compute_stats(p, inputs, dtype, out_dtype)
    except methods_gta.ReferenceError_ as e:
        raise ConfigError(f"{p.name}: {e}")


def _set_dtype(obj, name, top):
    """Both transformers names (`dtype` from 5.0 on, `torch_dtype` before) at the top level and in every
    sub-config that has either."""
    if top or "dtype" in obj or "torch_dtype" in obj:
        obj["dtype"] = obj["torch_dtype"] = name
    for v in obj.values():
        if isinstance(v, dict):
            _set_dtype(v, name, False)


def _slice_layer_lists(holder, mp, res):
    """Per-layer lists of one module (D18): in the object holding its count key, every list as long
    as the donor's count gets one entry per output layer, each from the list of the model and layer
    that output layer comes from (else the donor's list at that index)."""
    n = res.donor.counts[mp.name]

    def entry(model, name, layer):
        h, _ = mp.module.count_holder(model.config)
        lst = h.get(name) if h is not None else None
        if isinstance(lst, list) and len(lst) == model.counts[mp.name] and 0 <= layer < len(lst):
            return lst[layer]
        return _MISSING

    for name, value in list(holder.items()):
        if not isinstance(value, list) or len(value) != n or n == 0:
            continue
        new = []
        for ref, layer in mp.layer_origins:
            e = entry(res.models[ref], name, layer)
            if e is _MISSING:
                e = entry(res.donor, name, layer)
            if e is _MISSING:
                break
            new.append(e)
        else:
            holder[name] = new


_MISSING = object()


def _transformers_layer_type(holder, i):
    """The attention type transformers' config class gives layer i when config.json has no
    layer_types (the formulas of configuration_gemma2/gemma3/cohere2/gpt_oss/vaultgemma/olmo3/
    qwen3_next/qwen3_5*.py), or None for a class whose types do not depend on the position."""
    mt = holder.get("model_type")
    if mt in ("gemma2", "gpt_oss", "vaultgemma"):
        return "sliding_attention" if (i + 1) % 2 else "full_attention"
    if mt in ("gemma3", "gemma3_text"):
        return "sliding_attention" if (i + 1) % holder.get("sliding_window_pattern", 6) else "full_attention"
    if mt == "cohere2":
        return "sliding_attention" if (i + 1) % holder.get("sliding_window_pattern", 4) else "full_attention"
    if mt == "olmo3":
        return "sliding_attention" if (i + 1) % 4 != 0 else "full_attention"
    if mt in ("qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text"):
        return "linear_attention" if (i + 1) % holder.get("full_attention_interval", 4) else "full_attention"
    return None


def _derived_layer_types(holder, mp, res):
    """D18: layers that moved keep the attention type transformers derived for them where they came
    from, written out as layer_types (a config without the list would give them their new
    position's type)."""
    origins = mp.layer_origins
    if "layer_types" in holder or (len(origins) == res.donor.counts[mp.name]
                                   and all(layer == i for i, (_, layer) in enumerate(origins))):
        return
    types = []
    for ref, layer in origins:
        h, _ = mp.module.count_holder(res.models[ref].config)
        t = _transformers_layer_type(h if h is not None else holder, layer)
        if t is None:
            return
        types.append(t)
    holder["layer_types"] = types


def expected_config(res):
    """The output config.json (D16, D18): the donor's, with dtype and torch_dtype = the dtype most of
    the stored bytes are in (D8; with a tie, the first of F16, BF16, F32), and per module with a count
    key: its per-layer lists following its output layers and the count = its number of output layers."""
    cfg = json.loads(json.dumps(res.donor.config))
    size = {"BF16": 2, "F16": 2, "F32": 4}
    nbytes = {}
    for d, v in res.tensors.values():
        if d in size:
            nbytes[d] = nbytes.get(d, 0) + v.size * size[d]
    if nbytes:
        order = ("F16", "BF16", "F32")
        _set_dtype(cfg, TORCH_NAME[max(nbytes, key=lambda d: (nbytes[d], -order.index(d)))], True)
    for mp in res.modules.values():
        holder, key = mp.module.count_holder(cfg)
        if holder is not None:
            _slice_layer_lists(holder, mp, res)
            _derived_layer_types(holder, mp, res)
            holder[key] = mp.num_layers
        elif mp.name == TEXT and mp.num_layers != res.donor.counts[TEXT]:
            # the config left the count to the model class's default: written where that class's
            # config lives (text_config when there is one)
            target = cfg["text_config"] if isinstance(cfg.get("text_config"), dict) else cfg
            target["num_hidden_layers"] = mp.num_layers
    if getattr(res, "vocab", None) is not None:
        tokenizer_eval.set_config_vocab_size(cfg, tokenizer_eval.expected_vocab_size(res.vocab))
    return cfg
