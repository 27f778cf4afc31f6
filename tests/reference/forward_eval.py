"""Reference hidden states of a decoder-only model, in numpy (float64), for tests/integration/test_forward.py.

Written from the architectures' definitions (transformers' modeling_{llama,mistral,qwen2,qwen3,gemma,
gemma2,gemma3,phi3}.py and modeling_rope_utils.py), not from mergemount's C code. What it computes is
`model(ids, attention_mask=mask, output_hidden_states=True).hidden_states[:-1]` of the model in float32
precision or better, with transformers 5's defaults:

  * positions are 0..seq-1 in every row, whatever the padding (no position_ids given);
  * the attention mask is causal AND the padding mask (a key with mask 0 is never attended), AND the
    sliding window (kv > q - window) on sliding layers;
  * sdpa attention (torch >= 2.5): a query row with no key it may attend gets a zero attention output;
  * Gemma's embedding normalizer sqrt(hidden) is a tensor of the model (stored) dtype.

API: hidden_states(folder, ids, mask=None) -> array [layers, batch, seq, hidden] (float64).
     hidden_states_bf16(folder, ids, mask=None): the same with every intermediate result rounded to
     bfloat16 where transformers' bfloat16 run stores one (projections, norms, RoPE, attention
     probabilities and output, activations, residual sums), an approximation of mergekit-moe's
     torch_dtype=bfloat16 run for checking how far float32 router rows are from it.
"""

import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import safetensors_io as st  # noqa: E402

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")


class ForwardError(Exception):
    pass


# ---- configuration -----------------------------------------------------------------------------------

def _text_config(cfg):
    t = cfg.get("text_config")
    if isinstance(t, dict):
        t = dict(t)
        t.setdefault("model_type", cfg.get("model_type"))
        if t["model_type"] == "gemma3":
            t["model_type"] = "gemma3_text"
        return t
    return cfg


def _rope_dict(cfg, params, default_theta):
    """transformers' standardised rope parameters of one layer type."""
    p = dict(params or {})
    p.setdefault("rope_type", p.get("type", "default"))
    p.setdefault("rope_theta", default_theta)
    prf = cfg.get("partial_rotary_factor")
    if prf is not None:
        p["partial_rotary_factor"] = prf
    if p["rope_type"] in ("llama3", "yarn", "longrope"):
        if cfg.get("original_max_position_embeddings") is not None:
            p["original_max_position_embeddings"] = cfg["original_max_position_embeddings"]
        p.setdefault("original_max_position_embeddings", cfg.get("max_position_embeddings"))
    return p


def inv_freq(p, head_dim, seq, max_pos):
    """(RoPE inverse frequencies, cos/sin scale) (modeling_rope_utils), for sequences of `seq` positions."""
    dim = int(head_dim * p.get("partial_rotary_factor", 1.0))
    base = float(p["rope_theta"])
    kind = p["rope_type"]
    if kind == "dynamic" and seq > max_pos:
        f = p["factor"]
        base = base * ((f * seq / max_pos) - (f - 1)) ** (dim / (dim - 2))
    inv = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if kind == "linear":
        inv = inv / p["factor"]
    elif kind == "llama3":
        f, lo, hi = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
        old = p["original_max_position_embeddings"]
        low_wl, high_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        scaled = np.where(wl > low_wl, inv / f, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / f + smooth * scaled
        medium = ~(wl < high_wl) & ~(wl > low_wl)
        inv = np.where(medium, smoothed, scaled)
    elif kind in ("yarn", "longrope"):
        old = p["original_max_position_embeddings"]
        f = p.get("factor") or max_pos / old
        att = p.get("attention_factor")
        if kind == "longrope":
            if att is None:
                att = math.sqrt(1 + math.log(f) / math.log(old)) if f > 1 else 1.0
            ext = np.asarray(p["long_factor"] if seq > old else p["short_factor"], dtype=np.float64)
            return inv / ext, att

        def mscale(scale, m=1.0):
            return 0.1 * m * math.log(scale) + 1.0 if scale > 1 else 1.0
        if att is None:
            if p.get("mscale") and p.get("mscale_all_dim"):
                att = mscale(f, p["mscale"]) / mscale(f, p["mscale_all_dim"])
            else:
                att = mscale(f)

        def corr(rot):   # the dimension making `rot` turns over the original length
            return dim * math.log(old / (rot * 2 * math.pi)) / (2 * math.log(base))
        lo, hi = corr(p.get("beta_fast") or 32), corr(p.get("beta_slow") or 1)
        if p.get("truncate", True):
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, dim - 1)
        if lo == hi:
            hi += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - lo) / (hi - lo), 0, 1)
        keep = 1 - ramp   # extrapolation weight
        return (inv / f) * (1 - keep) + inv * keep, att
    elif kind not in ("default", "dynamic"):
        raise ForwardError(f"rope type {kind}")
    return inv, 1.0


def describe(cfg):
    """The facts of the model's family as a dict."""
    c = _text_config(cfg)
    mt = c.get("model_type")
    if mt not in SUPPORTED:
        raise ForwardError(f"model_type {mt} is not supported")
    H, nh = c["hidden_size"], c["num_attention_heads"]
    d = {
        "type": mt, "H": H, "I": c["intermediate_size"], "nh": nh, "L": c["num_hidden_layers"],
        "nkv": c.get("num_key_value_heads") or nh, "hd": c.get("head_dim") or H // nh,
        "eps": c.get("rms_norm_eps", 1e-6), "max_pos": c.get("max_position_embeddings", 2048),
    }
    gemma = mt.startswith("gemma")
    sandwich = mt in ("gemma2", "gemma3_text")
    d["gemma"], d["sandwich"] = gemma, sandwich
    d["qk_norm"] = mt in ("qwen3", "gemma3_text")
    # Linear biases: which projections have one, per family (the modeling files' bias= arguments)
    d["o_bias"] = mt in ("llama", "qwen3") + tuple(t for t in SUPPORTED if t.startswith("gemma")) and \
        bool(c.get("attention_bias"))
    d["qkv_bias"] = mt == "qwen2" or d["o_bias"]
    d["mlp_bias"] = mt == "llama" and bool(c.get("mlp_bias"))
    act = c.get("hidden_activation" if sandwich else "hidden_act") or ("gelu_pytorch_tanh" if gemma else "silu")
    d["act"] = act
    d["scaling"] = (c.get("query_pre_attn_scalar") or d["hd"]) ** -0.5 if sandwich else d["hd"] ** -0.5
    d["softcap"] = c.get("attn_logit_softcapping") if sandwich else None
    # which layers slide
    default_win = {"mistral": 4096, "qwen2": 4096, "qwen3": 4096, "gemma2": 4096, "gemma3_text": 4096}
    win = c["sliding_window"] if "sliding_window" in c else default_win.get(mt)
    if mt in ("llama", "gemma") or (mt in ("qwen2", "qwen3") and not c.get("use_sliding_window")):
        win = None    # LlamaAttention, GemmaAttention have no window; Qwen's config drops it
    types = c.get("layer_types")
    if types is None:
        if mt in ("qwen2", "qwen3"):
            types = ["sliding_attention" if i >= c.get("max_window_layers", 0) else "full_attention"
                     for i in range(d["L"])]
        elif mt == "gemma2":
            types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(d["L"])]
        elif mt == "gemma3_text":
            pat = c.get("sliding_window_pattern", 6)
            types = ["sliding_attention" if (i + 1) % pat else "full_attention" for i in range(d["L"])]
        else:
            types = ["sliding_attention"] * d["L"]
    d["window"] = [win if (win and t == "sliding_attention") else None for t in types[:d["L"]]]
    # rope per layer type
    rp = c.get("rope_parameters") or c.get("rope_scaling")
    theta = c["rope_theta"] if c.get("rope_theta") is not None else (1e6 if mt == "gemma3_text" else 1e4)
    local = c.get("rope_local_base_freq", 1e4)
    if isinstance(rp, dict) and ("full_attention" in rp or "sliding_attention" in rp):
        d["rope"] = {"full": _rope_dict(c, rp.get("full_attention"), theta),
                     "sliding": _rope_dict(c, rp.get("sliding_attention"), local)}
    elif mt == "gemma3_text":
        d["rope"] = {"full": _rope_dict(c, rp, theta), "sliding": _rope_dict(c, None, local)}
    else:
        p = _rope_dict(c, rp, theta)
        d["rope"] = {"full": p, "sliding": p}
    return d


# ---- layers ------------------------------------------------------------------------------------------

def _keep(x):
    return x


R = _keep   # rounding of stored intermediates: identity, or bfloat16 (hidden_states_bf16)


def _bf16(x):
    return st.round_to("BF16", np.asarray(x, np.float32)).astype(np.float64)


def rms_norm(x, w, eps, gemma):
    var = np.mean(x * x, axis=-1, keepdims=True)
    y = x / np.sqrt(var + eps)
    return R(y * (1.0 + w) if gemma else y * w)


def activation(name, x):
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    if name == "gelu":
        return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    raise ForwardError(f"activation {name}")


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x, rope, seq):
    """x: [B, heads, S, hd]; rope: (inv_freq, scale); the first 2 * len(inv) features rotate
    (cat(freqs, freqs) layout), cos and sin times the scale."""
    inv, scale = rope
    pos = np.arange(seq, dtype=np.float64)
    freqs = np.outer(pos, inv)
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb) * scale, np.sin(emb) * scale
    rd = emb.shape[-1]
    rot, rest = x[..., :rd], x[..., rd:]
    return R(np.concatenate([rot * cos + rotate_half(rot) * sin, rest], axis=-1))


def allowed(mask, seq, window):
    """[B, 1, S, S] booleans: query q may attend key k."""
    q = np.arange(seq)[:, None]
    k = np.arange(seq)[None, :]
    ok = k <= q
    if window:
        ok = ok & (k > q - window)
    return ok[None, None, :, :] & (mask[:, None, None, :] != 0)


def linear(x, w, b=None):
    y = x @ w.T
    return R(y + b if b is not None else y)


class Weights:
    def __init__(self, folder):
        self.t = st.read_folder(folder)
        names = list(self.t)
        for p in ("model.", "model.language_model.", "language_model.model.", ""):
            if p + "embed_tokens.weight" in self.t:
                self.prefix = p
                break
        else:
            raise ForwardError(f"no embed_tokens among {names[:5]}")

    def get(self, name):
        return self.t[self.prefix + name].f32().astype(np.float64)

    def dtype(self, name):
        return self.t[self.prefix + name].dtype


def layer(d, w, i, x, mask, invs):
    B, S, _ = x.shape
    nh, nkv, hd = d["nh"], d["nkv"], d["hd"]
    g = lambda n: w.get(f"layers.{i}.{n}")  # noqa: E731
    gb = lambda n, on: g(n) if on else None  # noqa: E731

    h = rms_norm(x, g("input_layernorm.weight"), d["eps"], d["gemma"])
    if d["type"] == "phi3":
        qkv = linear(h, g("self_attn.qkv_proj.weight"))
        q, k, v = np.split(qkv, [nh * hd, nh * hd + nkv * hd], axis=-1)
    else:
        q = linear(h, g("self_attn.q_proj.weight"), gb("self_attn.q_proj.bias", d["qkv_bias"]))
        k = linear(h, g("self_attn.k_proj.weight"), gb("self_attn.k_proj.bias", d["qkv_bias"]))
        v = linear(h, g("self_attn.v_proj.weight"), gb("self_attn.v_proj.bias", d["qkv_bias"]))
    q = q.reshape(B, S, nh, hd).transpose(0, 2, 1, 3)
    k = k.reshape(B, S, nkv, hd).transpose(0, 2, 1, 3)
    v = v.reshape(B, S, nkv, hd).transpose(0, 2, 1, 3)
    if d["qk_norm"]:
        q = rms_norm(q, g("self_attn.q_norm.weight"), d["eps"], d["gemma"])
        k = rms_norm(k, g("self_attn.k_norm.weight"), d["eps"], d["gemma"])
    rope = invs["sliding" if d["window"][i] else "full"]
    q, k = apply_rope(q, rope, S), apply_rope(k, rope, S)
    k = np.repeat(k, nh // nkv, axis=1)   # repeat_kv
    v = np.repeat(v, nh // nkv, axis=1)
    scores = np.einsum("bhqd,bhkd->bhqk", q, k) * d["scaling"]
    if d["softcap"]:
        scores = np.tanh(scores / d["softcap"]) * d["softcap"]
    ok = allowed(mask, S, d["window"][i])
    scores = np.where(ok, scores, -np.inf)
    top = np.max(scores, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(ok, np.exp(scores - top), 0.0)
    tot = e.sum(axis=-1, keepdims=True)
    p = R(np.divide(e, tot, out=np.zeros_like(e), where=tot > 0))   # a fully masked row: zeros
    att = R(np.einsum("bhqk,bhkd->bhqd", p, v)).transpose(0, 2, 1, 3).reshape(B, S, nh * hd)
    o = linear(att, g("self_attn.o_proj.weight"), gb("self_attn.o_proj.bias", d["o_bias"]))
    if d["sandwich"]:
        o = rms_norm(o, g("post_attention_layernorm.weight"), d["eps"], True)
        x = R(x + o)
        h = rms_norm(x, g("pre_feedforward_layernorm.weight"), d["eps"], True)
    else:
        x = R(x + o)
        h = rms_norm(x, g("post_attention_layernorm.weight"), d["eps"], d["gemma"])
    if d["type"] == "phi3":
        gate, up = np.split(linear(h, g("mlp.gate_up_proj.weight")), 2, axis=-1)
    else:
        gate = linear(h, g("mlp.gate_proj.weight"), gb("mlp.gate_proj.bias", d["mlp_bias"]))
        up = linear(h, g("mlp.up_proj.weight"), gb("mlp.up_proj.bias", d["mlp_bias"]))
    m = linear(R(R(activation(d["act"], gate)) * up), g("mlp.down_proj.weight"),
               gb("mlp.down_proj.bias", d["mlp_bias"]))
    if d["sandwich"]:
        m = rms_norm(m, g("post_feedforward_layernorm.weight"), d["eps"], True)
    return R(x + m)


def hidden_states(folder, ids, mask=None):
    with open(os.path.join(folder, "config.json")) as f:
        d = describe(json.load(f))
    ids = np.asarray(ids, dtype=np.int64)
    mask = np.ones_like(ids) if mask is None else np.asarray(mask, dtype=np.int64)
    w = Weights(folder)
    x = w.get("embed_tokens.weight")[ids]
    if d["gemma"]:
        # torch.tensor(hidden ** 0.5, dtype=model dtype): the normalizer rounded to the stored dtype
        x = x * float(st.round_scalar(w.dtype("embed_tokens.weight"), math.sqrt(d["H"])))
    S = ids.shape[1]
    invs = {k: inv_freq(p, d["hd"], S, d["max_pos"]) for k, p in d["rope"].items()}
    out = [x]
    for i in range(d["L"] - 1):
        x = layer(d, w, i, x, mask, invs)
        out.append(x)
    return np.stack(out)


def hidden_states_bf16(folder, ids, mask=None):
    """hidden_states with bfloat16 intermediates (see the module docstring)."""
    global R
    R = _bf16
    try:
        return hidden_states(folder, ids, mask)
    finally:
        R = _keep
