"""Tiny checkpoints with the tensor names, shard files and config.json of real published models.

A family folder (tests/fixtures/archs/<family>/) holds a real `config.json` and
`model.safetensors.index.json`, copied from a published checkpoint (SOURCES.md there says from
where). `make(family_dir, out_dir, seed)` writes a model folder that has:

  * config.json: the real one with every size scaled down (hidden, intermediate, heads, head_dim,
    vocabulary, vision sizes, packed expert counts), the same way at the top level and in every
    sub-config (text_config, vision_config, llm_config). Layer counts are kept: the names keep their
    real layer indexes (`max_layers` cuts every layer stack to its first n layers and the layer-count
    keys with it). Counts that are visible in the names (per-expert tensors like Mixtral's
    `experts.7.w3`) are kept too;
  * exactly the tensor names of the index, in the same shard files, with a
    model.safetensors.index.json, written with safetensors_io (the reference writer);
  * shapes derived from the scaled config by name patterns (RULES below). A name that matches no
    rule is an error that names it, so a new family cannot get shapes made up silently.

Values are deterministic: a "base" drawn from (base_seed, tensor name), plus, for seed != 0, a
small "fine-tune" delta drawn from (seed, tensor name). Several seeds over one base_seed are then
several fine-tunes of one base model (task vectors are small next to the weights, as they are in
real fine-tunes); seed 0 is the base itself. Norm weights are near 1, everything else near 0.

Run as a script: python3 arch_fixture.py FAMILY_DIR OUT_DIR [--seed N] [--dtype bf16|f16|f32]
[--max-layers N]. numpy only.
"""

import argparse
import json
import os
import re
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import safetensors_io as st  # noqa: E402

# ---- scaled sizes ------------------------------------------------------------------------------------

HIDDEN = 32          # text hidden size
HEADS = 4            # text attention heads
HEAD_DIM = 8         # HIDDEN / HEADS
INTERMEDIATE = 48
VOCAB = 96
PACKED_EXPERTS = 4   # experts stacked in one tensor (names do not show the count)
V_HIDDEN = 24        # vision tower width
V_HEADS = 4
V_INTERMEDIATE = 40
V_PATCH = 2
V_IMAGE = 8          # image side: (8 / 2)^2 = 16 patches
V_MLP_RATIO = 2

DTYPES = {"bf16": "BF16", "f16": "F16", "f32": "F32"}
TORCH = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
LAYER_RE = re.compile(r"\.(\d+)\.")
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "depth")


class FixtureError(Exception):
    pass


def _scaled_kv(heads, kv):
    """Keeps the kind of attention: multi-head (kv == heads), multi-query (1), grouped (2)."""
    if kv is None:
        return None
    if kv == heads:
        return HEADS
    if kv == 1:
        return 1
    return 2


def expert_indexes(names):
    """The distinct expert indexes visible in names (`experts.<e>.`)."""
    out = set()
    for n in names:
        m = re.search(r"\.experts\.(\d+)\.", n)
        if m:
            out.add(int(m.group(1)))
    return out


def scale_config(cfg, names, max_layers=None):
    """The real config with sizes scaled (a new dict); see the module docstring."""
    cfg = json.loads(json.dumps(cfg))
    named_experts = len(expert_indexes(names))

    def scale_text(c):
        heads = c.get("num_attention_heads")
        if "hidden_size" in c:
            c["hidden_size"] = HIDDEN
        for k in ("intermediate_size", "moe_intermediate_size", "shared_intermediate_size"):
            if k in c and c[k]:
                c[k] = INTERMEDIATE
        if "num_key_value_heads" in c:
            c["num_key_value_heads"] = _scaled_kv(heads, c["num_key_value_heads"])
        if "num_attention_heads" in c:
            c["num_attention_heads"] = HEADS
        if "head_dim" in c and c["head_dim"]:
            c["head_dim"] = HEAD_DIM
        if "vocab_size" in c:
            c["vocab_size"] = VOCAB
        for k in ("num_local_experts", "num_experts"):
            if k in c and c[k]:
                c[k] = named_experts or PACKED_EXPERTS
        if "num_experts_per_tok" in c and c["num_experts_per_tok"]:
            c["num_experts_per_tok"] = min(2, named_experts or PACKED_EXPERTS)

    def scale_vision(c, text_hidden):
        if c.get("model_type") in ("qwen2_vl", "qwen2_5_vl"):
            # Qwen2-VL's vision config leaves most sizes to transformers' defaults (embed_dim 1280,
            # num_heads 16, mlp_ratio 4, spatial_merge_size 2, temporal_patch_size 2): write them
            # scaled so that the shapes below follow from the file.
            c["embed_dim"] = V_HIDDEN
            c["num_heads"] = V_HEADS
            c["mlp_ratio"] = V_MLP_RATIO
            c["hidden_size"] = text_hidden   # the merger's output width
            c.setdefault("spatial_merge_size", 2)
            c.setdefault("temporal_patch_size", 2)
            c.setdefault("in_chans", 3)
            for k in ("patch_size", "spatial_patch_size"):
                if k in c:
                    c[k] = V_PATCH
            if "patch_size" not in c and "spatial_patch_size" not in c:
                c["patch_size"] = V_PATCH
            return
        if c.get("model_type") == "qwen3_vl":
            # Qwen3-VL: hidden_size is the tower's width, out_hidden_size the mergers' output width
            # (the text hidden size), pos_embed a square grid of num_position_embeddings
            if "out_hidden_size" in c:
                c["out_hidden_size"] = text_hidden
            if "num_heads" in c:
                c["num_heads"] = V_HEADS
            if "num_position_embeddings" in c:
                c["num_position_embeddings"] = (V_IMAGE // V_PATCH) ** 2
        if "hidden_size" in c:
            c["hidden_size"] = V_HIDDEN
        if "intermediate_size" in c:
            c["intermediate_size"] = V_INTERMEDIATE
        if "num_attention_heads" in c:
            c["num_attention_heads"] = V_HEADS
        if "patch_size" in c:
            c["patch_size"] = V_PATCH
        if "image_size" in c:
            c["image_size"] = V_IMAGE
        for k in ("init_pos_emb_height", "init_pos_emb_width"):
            if k in c:
                c[k] = V_IMAGE // V_PATCH

    text = cfg.get("text_config") or cfg.get("llm_config")
    scale_text(cfg)
    if isinstance(text, dict):
        scale_text(text)
        # A text sub-config may leave its sizes to transformers' defaults (LLaVA 1.5's text_config
        # names only vocab_size: hidden 4096, 32 heads, intermediate 11008 are LlamaConfig's
        # defaults): write them scaled so that the shapes below follow from the file. Layer counts
        # are not written (the default is the real count; max_layers writes it, below).
        text.setdefault("hidden_size", HIDDEN)
        text.setdefault("num_attention_heads", HEADS)
        text.setdefault("intermediate_size", INTERMEDIATE)
    if isinstance(cfg.get("vision_config"), dict):
        scale_vision(cfg["vision_config"], HIDDEN)
    if "mm_tokens_per_image" in cfg:
        cfg["mm_tokens_per_image"] = (V_IMAGE // V_PATCH // 2) ** 2
    if max_layers is not None:
        for holder in (cfg, cfg.get("text_config"), cfg.get("llm_config"), cfg.get("vision_config")):
            if isinstance(holder, dict):
                for k in LAYER_COUNT_KEYS:
                    if isinstance(holder.get(k), int):
                        holder[k] = min(holder[k], max_layers)
        if isinstance(text, dict) and not any(isinstance(text.get(k), int) for k in LAYER_COUNT_KEYS):
            # the count was a default: the cut text stack's count is written
            kept = [len(v) for k, v in layer_stacks(names).items() if _is_text_stack(k)]
            if kept:
                text["num_hidden_layers"] = max(kept)
        v = cfg.get("vision_config")
        if isinstance(v, dict) and isinstance(v.get("deepstack_visual_indexes"), list):
            # Qwen3-VL: one deepstack merger per listed vision layer, each index below the depth
            n = len([x for x in names if re.search(r"deepstack_merger_list\.\d+\.linear_fc1\.weight$", x)])
            v["deepstack_visual_indexes"] = list(range(n))
    return cfg


def _is_text_stack(prefix):
    return prefix.endswith("layers") and not re.search(r"vision|visual", prefix)


class Dims:
    """The sizes that shapes are made of, read from the scaled config."""

    def __init__(self, cfg, names):
        text = cfg.get("text_config") or cfg.get("llm_config") or cfg
        self.H = text.get("hidden_size", HIDDEN)
        self.I = text.get("intermediate_size") or INTERMEDIATE
        self.nh = text.get("num_attention_heads", HEADS)
        self.nkv = text.get("num_key_value_heads") or self.nh
        self.hd = text.get("head_dim") or self.H // self.nh
        self.V = text.get("vocab_size") or cfg.get("vocab_size") or VOCAB
        self.E = (text.get("num_local_experts") or text.get("num_experts") or len(expert_indexes(names))
                  or PACKED_EXPERTS)
        v = cfg.get("vision_config") or {}
        self.VH = v.get("embed_dim") or v.get("hidden_size") or V_HIDDEN
        self.VI = v.get("intermediate_size") or self.VH * v.get("mlp_ratio", V_MLP_RATIO)
        self.VP = v.get("patch_size") or v.get("spatial_patch_size") or V_PATCH
        self.VC = v.get("num_channels") or v.get("in_chans") or v.get("in_channels") or 3
        self.VT = v.get("temporal_patch_size", 2)
        self.VM = v.get("spatial_merge_size", 2)
        self.Vpatches = (v.get("image_size", V_IMAGE) // self.VP) ** 2
        if any(n.endswith("embeddings.class_embedding") for n in names):
            self.Vpatches += 1            # CLIP: a class token's position too
        self.Vnpos = v.get("num_position_embeddings") or (V_IMAGE // V_PATCH) ** 2
        self.Vout = v.get("out_hidden_size") or self.H   # Qwen-VL mergers' output width
        layer = cfg.get("vision_feature_layer")
        self.Vfeat = len(layer) if isinstance(layer, list) else 1   # LLaVA: concatenated layers
        self.Vpos = v.get("init_pos_emb_height", V_IMAGE // V_PATCH)
        self.Vmerge = 1
        for k in v.get("merge_kernel_size") or [2, 2]:
            self.Vmerge *= k


# ---- shape rules -------------------------------------------------------------------------------------
# (pattern searched in the name, shape of Dims). The first match wins: specific rules first. Layer
# indexes are matched as digits; `$` anchors the end of the name.

def _r(pattern, shape):
    return re.compile(pattern), shape


RULES = [
    # -- vision towers --
    # SigLIP (Gemma 3 vision_tower) and CLIP-style encoders
    _r(r"vision_model\.embeddings\.patch_embedding\.weight$", lambda d: (d.VH, d.VC, d.VP, d.VP)),
    _r(r"vision_model\.embeddings\.patch_embedding\.bias$", lambda d: (d.VH,)),
    _r(r"vision_model\.embeddings\.position_embedding\.weight$", lambda d: (d.Vpatches, d.VH)),
    _r(r"vision_model\.encoder\.layers\.\d+\.self_attn\.(q|k|v|out)_proj\.weight$", lambda d: (d.VH, d.VH)),
    _r(r"vision_model\.encoder\.layers\.\d+\.self_attn\.(q|k|v|out)_proj\.bias$", lambda d: (d.VH,)),
    _r(r"vision_model\.encoder\.layers\.\d+\.mlp\.fc1\.weight$", lambda d: (d.VI, d.VH)),
    _r(r"vision_model\.encoder\.layers\.\d+\.mlp\.fc1\.bias$", lambda d: (d.VI,)),
    _r(r"vision_model\.encoder\.layers\.\d+\.mlp\.fc2\.weight$", lambda d: (d.VH, d.VI)),
    _r(r"vision_model\.encoder\.layers\.\d+\.mlp\.fc2\.bias$", lambda d: (d.VH,)),
    _r(r"vision_model\.encoder\.layers\.\d+\.layer_norm[12]\.(weight|bias)$", lambda d: (d.VH,)),
    _r(r"vision_model\.post_layernorm\.(weight|bias)$", lambda d: (d.VH,)),
    # CLIP (LLaVA's vision_tower): a class token and a norm before the encoder (spelt pre_layrnorm)
    _r(r"vision_model\.embeddings\.class_embedding$", lambda d: (d.VH,)),
    _r(r"vision_model\.pre_layrnorm\.(weight|bias)$", lambda d: (d.VH,)),
    # LLaVA projector: Linear(vision hidden x feature layers, text hidden), GELU, Linear(text hidden)
    _r(r"^multi_modal_projector\.linear_1\.weight$", lambda d: (d.H, d.VH * d.Vfeat)),
    _r(r"^multi_modal_projector\.linear_[12]\.bias$", lambda d: (d.H,)),
    _r(r"^multi_modal_projector\.linear_2\.weight$", lambda d: (d.H, d.H)),
    # Gemma 3 projector: [vision hidden, text hidden] and an RMS norm over the vision width
    _r(r"multi_modal_projector\.mm_input_projection_weight$", lambda d: (d.VH, d.H)),
    _r(r"multi_modal_projector\.mm_soft_emb_norm\.weight$", lambda d: (d.VH,)),
    # MoonViT (vision_model.encoder.blocks) and its projector mlp1 (LayerNorm, Linear, GELU, Linear)
    _r(r"vision_model\.patch_embed\.proj\.weight$", lambda d: (d.VH, d.VC, d.VP, d.VP)),
    _r(r"vision_model\.patch_embed\.proj\.bias$", lambda d: (d.VH,)),
    _r(r"vision_model\.patch_embed\.pos_emb\.weight$", lambda d: (d.Vpos, d.Vpos, d.VH)),
    _r(r"vision_model\.encoder\.blocks\.\d+\.wqkv\.weight$", lambda d: (3 * d.VH, d.VH)),
    _r(r"vision_model\.encoder\.blocks\.\d+\.wqkv\.bias$", lambda d: (3 * d.VH,)),
    _r(r"vision_model\.encoder\.blocks\.\d+\.wo\.weight$", lambda d: (d.VH, d.VH)),
    _r(r"vision_model\.encoder\.blocks\.\d+\.wo\.bias$", lambda d: (d.VH,)),
    _r(r"vision_model\.encoder\.blocks\.\d+\.mlp\.fc0\.weight$", lambda d: (d.VI, d.VH)),
    _r(r"vision_model\.encoder\.blocks\.\d+\.mlp\.fc0\.bias$", lambda d: (d.VI,)),
    _r(r"vision_model\.encoder\.blocks\.\d+\.mlp\.fc1\.weight$", lambda d: (d.VH, d.VI)),
    _r(r"vision_model\.encoder\.blocks\.\d+\.mlp\.fc1\.bias$", lambda d: (d.VH,)),
    _r(r"vision_model\.encoder\.blocks\.\d+\.norm[01]\.(weight|bias)$", lambda d: (d.VH,)),
    _r(r"vision_model\.encoder\.final_layernorm\.(weight|bias)$", lambda d: (d.VH,)),
    _r(r"^mlp1\.0\.(weight|bias)$", lambda d: (d.VH * d.Vmerge,)),
    _r(r"^mlp1\.1\.weight$", lambda d: (d.H, d.VH * d.Vmerge)),
    _r(r"^mlp1\.1\.bias$", lambda d: (d.H,)),
    _r(r"^mlp1\.3\.weight$", lambda d: (d.H, d.H)),
    _r(r"^mlp1\.3\.bias$", lambda d: (d.H,)),
    # Qwen2-VL `visual.` (Qwen3-VL: `model.visual.`): Conv3d patch embedding, blocks, patch merger
    # (LayerNorm, Linear, GELU, Linear)
    _r(r"^(model\.)?visual\.patch_embed\.proj\.weight$", lambda d: (d.VH, d.VC, d.VT, d.VP, d.VP)),
    _r(r"^model\.visual\.patch_embed\.proj\.bias$", lambda d: (d.VH,)),
    _r(r"^(model\.)?visual\.blocks\.\d+\.norm[12]\.(weight|bias)$", lambda d: (d.VH,)),
    _r(r"^(model\.)?visual\.blocks\.\d+\.attn\.qkv\.weight$", lambda d: (3 * d.VH, d.VH)),
    _r(r"^(model\.)?visual\.blocks\.\d+\.attn\.qkv\.bias$", lambda d: (3 * d.VH,)),
    _r(r"^(model\.)?visual\.blocks\.\d+\.attn\.proj\.weight$", lambda d: (d.VH, d.VH)),
    _r(r"^(model\.)?visual\.blocks\.\d+\.attn\.proj\.bias$", lambda d: (d.VH,)),
    # Qwen3-VL: a learned square grid of positions, blocks' MLP as linear_fc1/linear_fc2, the merger
    # normed before the spatial merge and the deepstack mergers after it
    _r(r"^model\.visual\.pos_embed\.weight$", lambda d: (d.Vnpos, d.VH)),
    _r(r"^model\.visual\.blocks\.\d+\.mlp\.linear_fc1\.weight$", lambda d: (d.VI, d.VH)),
    _r(r"^model\.visual\.blocks\.\d+\.mlp\.linear_fc1\.bias$", lambda d: (d.VI,)),
    _r(r"^model\.visual\.blocks\.\d+\.mlp\.linear_fc2\.weight$", lambda d: (d.VH, d.VI)),
    _r(r"^model\.visual\.blocks\.\d+\.mlp\.linear_fc2\.bias$", lambda d: (d.VH,)),
    _r(r"^model\.visual\.merger\.norm\.(weight|bias)$", lambda d: (d.VH,)),
    _r(r"^model\.visual\.deepstack_merger_list\.\d+\.norm\.(weight|bias)$", lambda d: (d.VH * d.VM ** 2,)),
    _r(r"^model\.visual\.(merger|deepstack_merger_list\.\d+)\.linear_fc1\.weight$",
       lambda d: (d.VH * d.VM ** 2, d.VH * d.VM ** 2)),
    _r(r"^model\.visual\.(merger|deepstack_merger_list\.\d+)\.linear_fc1\.bias$", lambda d: (d.VH * d.VM ** 2,)),
    _r(r"^model\.visual\.(merger|deepstack_merger_list\.\d+)\.linear_fc2\.weight$",
       lambda d: (d.Vout, d.VH * d.VM ** 2)),
    _r(r"^model\.visual\.(merger|deepstack_merger_list\.\d+)\.linear_fc2\.bias$", lambda d: (d.Vout,)),
    _r(r"^visual\.blocks\.\d+\.mlp\.fc1\.weight$", lambda d: (d.VI, d.VH)),
    _r(r"^visual\.blocks\.\d+\.mlp\.fc1\.bias$", lambda d: (d.VI,)),
    _r(r"^visual\.blocks\.\d+\.mlp\.fc2\.weight$", lambda d: (d.VH, d.VI)),
    _r(r"^visual\.blocks\.\d+\.mlp\.fc2\.bias$", lambda d: (d.VH,)),
    _r(r"^visual\.merger\.ln_q\.(weight|bias)$", lambda d: (d.VH,)),
    _r(r"^visual\.merger\.mlp\.0\.weight$", lambda d: (d.VH * d.VM ** 2, d.VH * d.VM ** 2)),
    _r(r"^visual\.merger\.mlp\.0\.bias$", lambda d: (d.VH * d.VM ** 2,)),
    _r(r"^visual\.merger\.mlp\.2\.weight$", lambda d: (d.H, d.VH * d.VM ** 2)),
    _r(r"^visual\.merger\.mlp\.2\.bias$", lambda d: (d.H,)),

    # -- text decoders --
    # embeddings and heads: [vocab, hidden]
    _r(r"(embed_tokens|wte|word_embeddings|embed_in)\.weight$", lambda d: (d.V, d.H)),
    _r(r"(^|\.)(lm_head|embed_out)\.weight$", lambda d: (d.V, d.H)),
    _r(r"(^|\.)lm_head\.bias$", lambda d: (d.V,)),                                      # PhiMoE
    # a sequence-classification / reward head (GPTNeoXRewardModel): one output
    _r(r"^out_proj\.weight$", lambda d: (1, d.H)),
    _r(r"^out_proj\.bias$", lambda d: (1,)),
    # attention (Llama-style names)
    _r(r"self_attn\.q_proj\.weight$", lambda d: (d.nh * d.hd, d.H)),
    _r(r"self_attn\.q_proj\.bias$", lambda d: (d.nh * d.hd,)),
    _r(r"self_attn\.(k|v)_proj\.weight$", lambda d: (d.nkv * d.hd, d.H)),
    _r(r"self_attn\.(k|v)_proj\.bias$", lambda d: (d.nkv * d.hd,)),
    _r(r"self_attn\.o_proj\.weight$", lambda d: (d.H, d.nh * d.hd)),
    _r(r"self_attn\.o_proj\.bias$", lambda d: (d.H,)),
    _r(r"self_attn\.qkv_proj\.weight$", lambda d: ((d.nh + 2 * d.nkv) * d.hd, d.H)),   # Phi-3
    _r(r"self_attn\.(q|k)_norm\.weight$", lambda d: (d.hd,)),                           # Qwen3, Gemma 3
    _r(r"self_attn\.rotary_emb\.inv_freq$", lambda d: (d.hd // 2,)),                     # Llama 2 era buffers
    # GPT-NeoX attention and MLP
    _r(r"attention\.query_key_value\.weight$", lambda d: (3 * d.H, d.H)),
    _r(r"attention\.query_key_value\.bias$", lambda d: (3 * d.H,)),
    _r(r"attention\.dense\.weight$", lambda d: (d.H, d.H)),
    _r(r"attention\.dense\.bias$", lambda d: (d.H,)),
    _r(r"mlp\.dense_h_to_4h\.weight$", lambda d: (d.I, d.H)),
    _r(r"mlp\.dense_h_to_4h\.bias$", lambda d: (d.I,)),
    _r(r"mlp\.dense_4h_to_h\.weight$", lambda d: (d.H, d.I)),
    _r(r"mlp\.dense_4h_to_h\.bias$", lambda d: (d.H,)),
    # gated MLPs
    _r(r"mlp\.(gate|up)_proj\.weight$", lambda d: (d.I, d.H)),
    _r(r"mlp\.down_proj\.weight$", lambda d: (d.H, d.I)),
    _r(r"mlp\.gate_up_proj\.weight$", lambda d: (2 * d.I, d.H)),                          # Phi-3
    # Mixtral-style experts (one tensor per expert) and router
    _r(r"block_sparse_moe\.experts\.\d+\.w[13]\.weight$", lambda d: (d.I, d.H)),
    _r(r"block_sparse_moe\.experts\.\d+\.w2\.weight$", lambda d: (d.H, d.I)),
    _r(r"block_sparse_moe\.gate\.weight$", lambda d: (d.E, d.H)),
    # Granite MoE: experts stacked in one tensor, gate and up fused
    _r(r"block_sparse_moe\.input_linear\.weight$", lambda d: (d.E, 2 * d.I, d.H)),
    _r(r"block_sparse_moe\.output_linear\.weight$", lambda d: (d.E, d.H, d.I)),
    _r(r"block_sparse_moe\.router\.layer\.weight$", lambda d: (d.E, d.H)),
    # norms over the hidden size (RMSNorm weights, LayerNorm weights and biases)
    _r(r"(^|\.)(input_layernorm|post_attention_layernorm|pre_feedforward_layernorm|post_feedforward_layernorm|"
       r"norm|final_layernorm|final_layer_norm|ln_f)\.(weight|bias)$", lambda d: (d.H,)),
]


def shape_of(name, dims):
    for pattern, shape in RULES:
        if pattern.search(name):
            return tuple(int(x) for x in shape(dims))
    raise FixtureError(f"no shape rule for tensor {name!r}: add one to RULES in arch_fixture.py")


def is_norm(name):
    return re.search(r"(norm|ln_q|ln_f|layernorm)[0-9]*\.weight$", name) is not None


# ---- values ------------------------------------------------------------------------------------------

def _rng(seed, name):
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def values(name, shape, seed, base_seed=0):
    """float32 values of one tensor: the base's (base_seed) plus, for seed != 0, a fine-tune delta."""
    v = _rng(base_seed + 1_000_003, name).standard_normal(shape, dtype=np.float32) * np.float32(0.05)
    if is_norm(name):
        v = v + np.float32(1.0)
    if seed:
        v = v + _rng(seed, name).standard_normal(shape, dtype=np.float32) * np.float32(0.005)
    return v.astype(np.float32)


# ---- writing -----------------------------------------------------------------------------------------

def read_family(family_dir):
    with open(os.path.join(family_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(family_dir, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    return cfg, weight_map


def layer_stacks(names):
    """{prefix before the first layer index: sorted indexes} (e.g. 'model.layers' -> [0..31])."""
    stacks = {}
    for n in names:
        m = LAYER_RE.search(n)
        if m:
            stacks.setdefault(n[:m.start()], set()).add(int(m.group(1)))
    return {k: sorted(v) for k, v in stacks.items()}


def make(family_dir, out_dir, seed=0, dtype="bf16", base_seed=0, max_layers=None):
    """Writes the tiny checkpoint of a family folder into out_dir (created); returns out_dir."""
    dt = DTYPES[dtype]
    cfg, weight_map = read_family(family_dir)
    names = sorted(weight_map)
    if max_layers is not None:
        names = [n for n in names
                 if not (LAYER_RE.search(n) and int(LAYER_RE.search(n).group(1)) >= max_layers)]
    scaled = scale_config(cfg, names, max_layers)
    for holder in (scaled, scaled.get("text_config"), scaled.get("vision_config")):
        if isinstance(holder, dict):
            for k in ("torch_dtype", "dtype"):
                if k in holder:
                    holder[k] = TORCH[dt]
    dims = Dims(scaled, names)
    shapes = {n: shape_of(n, dims) for n in names}   # every name first: an unknown one fails early
    os.makedirs(out_dir, exist_ok=True)
    shards = {}
    for n in names:
        shards.setdefault(weight_map[n], []).append(n)
    total = 0
    for fname, members in sorted(shards.items()):
        tensors = {}
        for n in members:
            raw = st.encode(dt, values(n, shapes[n], seed, base_seed))
            tensors[n] = (dt, shapes[n], raw)
            total += len(raw)
        st.write_safetensors(os.path.join(out_dir, fname), tensors)
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        f.write(st.index_json_text({n: weight_map[n] for n in names}, total))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(scaled, f, indent=2, sort_keys=True)
        f.write("\n")
    return out_dir


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("family_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0, help="0: the base; N: fine-tune N of the base")
    ap.add_argument("--base-seed", type=int, default=0)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--max-layers", type=int, default=None, help="keep only the first N layers of every stack")
    a = ap.parse_args(argv)
    try:
        make(a.family_dir, a.out_dir, a.seed, a.dtype, a.base_seed, a.max_layers)
    except FixtureError as e:
        print(f"arch_fixture: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
