"""A small evaluator of mergekit configs, written from mergekit's behaviour and docs/merge-contract.md (D1, D2, D8,
D10, D12, D16), for what the tests need: every merge method over `models:` or `slices:`, with
gradients, conditional filters, parameter precedence, frankenmerge renaming, tied lm_head and
embedding crops.

Random methods (dare_*, della*) cannot be replayed (D6): their tensors are computed only when the
caller passes `masks(planned, k, shape) -> bool array` (the mask of the k-th non-base input, e.g.
recovered from the program's output); otherwise result.tensors[name] is None.

The config is a Python dict shaped like the YAML (the tests build the dict, write it as YAML for the
program, and hand the same dict here). Model references are resolved by `resolve(ref) -> folder`
(default: the reference itself is the folder).

    result = evaluate(cfg)
    result.tensors   # {output tensor name: (dtype, float32 values)}
    result.plan      # [Planned]: per output tensor the method, evaluated params and sources
    result.config    # the expected output config.json (dict)
"""

import json
import os
import re

import methods
import methods_gta
import methods_stats
from safetensors_io import TORCH_NAME, config_dtype, read_folder


class ConfigError(Exception):
    """The config cannot be merged (the program must refuse it too)."""


LAYER_RE = re.compile(r"\.(\d+)\.")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
EMBED_WORDS = ("embed_tokens", "lm_head", "wte", "word_embeddings", "embed_in", "embed_out")
TIED = {"lm_head.weight": "model.embed_tokens.weight"}  # B4.4: lm_head falls back to the embeddings

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
    m = LAYER_RE.search(name)
    return name[:m.start()] + ".{}." + name[m.end():]


def is_embed(name):
    return any(w in name.split(".") for w in EMBED_WORDS)


def is_post(name):
    """Non-layer tensors that come after the layers (final norm, output head): planned from the
    last slice. Everything else that is not in a layer is a pre-weight (first slice)."""
    if name.startswith("lm_head") or "embed_out" in name.split("."):
        return True
    return re.search(r"(^|\.)(norm|ln_f|final_layernorm|final_layer_norm)\.", name) is not None


# ---- models ----------------------------------------------------------------------------------------

class Model:
    def __init__(self, ref, path):
        self.ref = ref
        self.path = path
        with open(os.path.join(path, "config.json")) as f:
            self.config = json.load(f)
        self.tensors = read_folder(path)
        self.num_layers = self._num_layers()

    def _num_layers(self):
        for cfg in (self.config, self.config.get("text_config") or {}):
            for key in LAYER_KEYS:
                if key in cfg:
                    return int(cfg[key])
        indexes = [layer_index(n) for n in self.tensors if layer_index(n) is not None]
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


def normalize_slices(cfg, models):
    """`models:` -> one slice over all layers, base appended last if not listed (B1.3, D1)."""
    has_models, has_slices = "models" in cfg, "slices" in cfg
    if has_models == has_slices:
        raise ConfigError("exactly one of models/slices is needed")
    base = cfg.get("base_model")
    if has_models:
        sources = [{"model": m["model"], "range": (0, models[m["model"]].num_layers),
                    "params": m.get("parameters") or {}} for m in cfg["models"]]
        if base is not None and base not in [s["model"] for s in sources]:
            sources.append({"model": base, "range": (0, models[base].num_layers), "params": {}})
        return [{"sources": sources, "params": {}, "base_model": base}]
    slices = []
    for sl in cfg["slices"]:
        sources = []
        for s in sl["sources"]:
            start, end = s["layer_range"]
            if not (0 <= start <= end <= models[s["model"]].num_layers):
                raise ConfigError(f"layer_range {[start, end]} out of bounds for {s['model']}")
            sources.append({"model": s["model"], "range": (start, end), "params": s.get("parameters") or {}})
        if len({e - b for b, e in (s["range"] for s in sources)}) > 1:
            raise ConfigError("All inputs to a slice must contain the same number of layers")
        slices.append({"sources": sources, "params": sl.get("parameters") or {},
                       "base_model": sl.get("base_model", base)})
    return slices


def referenced(cfg):
    refs = []
    if "models" in cfg:
        refs += [m["model"] for m in cfg["models"]]
    for sl in cfg.get("slices") or []:
        refs += [s["model"] for s in sl["sources"]]
        if sl.get("base_model"):
            refs.append(sl["base_model"])
    if cfg.get("base_model"):
        refs.append(cfg["base_model"])
    out = []
    for r in refs:
        if r not in out:
            out.append(r)
    return out


def donor_ref(cfg):
    """D2: base_model, else the first model in config order."""
    if cfg.get("base_model"):
        return cfg["base_model"]
    if "models" in cfg:
        return cfg["models"][0]["model"]
    return cfg["slices"][0]["sources"][0]["model"]


class Result:
    pass


def evaluate(cfg, resolve=None, masks=None):
    resolve = resolve or (lambda ref: ref)
    method = cfg["merge_method"]
    if method not in METHOD_PARAMS:
        raise ConfigError(f"method {method!r} is not in the reference")
    models = {ref: Model(ref, resolve(ref)) for ref in referenced(cfg)}
    slices = normalize_slices(cfg, models)

    all_names = set()
    for m in models.values():
        all_names |= set(m.tensors)
    templates = sorted({layer_template(n) for n in all_names if layer_index(n) is not None})
    non_layer = sorted(n for n in all_names if layer_index(n) is None)
    pre = [n for n in non_layer if not is_post(n)]
    post = [n for n in non_layer if is_post(n)]

    plan = []
    for name in pre:
        p = _plan_tensor(cfg, models, method, name, lambda s, n=name: n, slices[0], 0.0)
        if p:
            plan.append(p)
    counter = 0
    origins = []  # per output layer: (model ref, layer) whose config.json entries it keeps (D18)
    donor = donor_ref(cfg)
    for sl in slices:
        start0, end0 = sl["sources"][0]["range"]
        length = end0 - start0
        origin = next((s for s in sl["sources"] if models[s["model"]].path == models[donor].path),
                      sl["sources"][0])
        for j in range(length):
            origins.append((origin["model"], origin["range"][0] + j))
            t = j / (length - 1) if length > 1 else 1.0
            for tpl in templates:
                out_name = with_layer(tpl, counter)
                p = _plan_tensor(cfg, models, method, out_name,
                                 lambda s, tpl=tpl, j=j: with_layer(tpl, s["range"][0] + j), sl, t)
                if p:
                    plan.append(p)
            counter += 1
    for name in post:
        p = _plan_tensor(cfg, models, method, name, lambda s, n=name: n, slices[-1], 0.0)
        if p:
            plan.append(p)

    res = Result()
    res.models = models
    res.slices = slices
    res.plan = plan
    res.num_layers = counter
    res.layer_origins = origins
    res.donor = models[donor_ref(cfg)]
    res.tensors = {p.name: compute(cfg, p, masks) for p in plan}
    res.config = expected_config(res) if all(v is not None for v in res.tensors.values()) else None
    return res


def _plan_tensor(cfg, models, method, out_name, input_name_of, sl, t):
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
        tied = TIED.get(out_name)
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
    top = cfg.get("parameters") or {}
    for pname, default in global_defaults.items():
        found, v = lookup(pname, [sl["params"], top], out_name, t)
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
            found, v = lookup(pname, [src.slice_source["params"], sl["params"], top], src.param_name, t)
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


def compute(cfg, p, masks=None):
    """The expected stored tensor (dtype, values) of one planned output tensor (None for a random
    method without masks)."""
    dtype = config_dtype(cfg.get("dtype"))
    out_dtype = config_dtype(cfg.get("out_dtype"))
    inputs = [s.model.tensor(s.tensor) for s in p.sources]
    embed = is_embed(p.name)

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


def _layer_holder(cfg):
    """(object holding the layer-count key, key) of a config, or (None, None)."""
    for holder in (cfg, cfg.get("text_config") or {}):
        for key in LAYER_KEYS:
            if isinstance(holder.get(key), int):
                return holder, key
    return None, None


def _slice_layer_lists(cfg, res):
    """Lists as long as the donor's layer count get one entry per output layer, each from the list of
    the model and layer that output layer comes from (else the donor's list at that index)."""
    holder, key = _layer_holder(cfg)
    if holder is None:
        return
    n = holder[key]

    def entry(config, name, layer):
        h, k = _layer_holder(config or {})
        lst = h.get(name) if h is not None else None
        if isinstance(lst, list) and len(lst) == h[k] and 0 <= layer < len(lst):
            return lst[layer]
        return _MISSING

    for name, value in list(holder.items()):
        if not isinstance(value, list) or len(value) != n or n == 0:
            continue
        new = []
        for ref, layer in res.layer_origins:
            e = entry(res.models[ref].config, name, layer)
            if e is _MISSING:
                e = entry(res.donor.config, name, layer)
            if e is _MISSING:
                break
            new.append(e)
        else:
            holder[name] = new


_MISSING = object()


def expected_config(res):
    """The output config.json (D16, D18): the donor's, with dtype and torch_dtype = the stored dtype,
    per-layer lists following the output layers, and the layer count = the number of output layers."""
    cfg = json.loads(json.dumps(res.donor.config))
    dtypes = {d for d, _ in res.tensors.values()}
    if len(dtypes) == 1:
        _set_dtype(cfg, TORCH_NAME[dtypes.pop()], True)
    _slice_layer_lists(cfg, res)
    holder, key = _layer_holder(cfg)
    if holder is not None:
        holder[key] = res.num_layers
    return cfg
    return cfg
