#!/usr/bin/python3
"""bench/run's 7B-shaped source model (issue 5, figure 7): a Llama checkpoint folder whose shards hold
valid safetensors headers and nothing else (the data is a hole made by truncate), so it costs no disk.
Writes config.json, model.safetensors.index.json and model-0000k-of-0000N.safetensors (about 5 GB of
bf16 each, mergekit's and transformers' default shard size).
Usage: bench/sparse_model.py OUTDIR [LAYERS HIDDEN INTERMEDIATE VOCAB HEADS KV_HEADS]
(default 32 4096 11008 32000 32 32: Llama-2-7B)"""
import json, os, struct, sys

out = sys.argv[1]
L, H, I, V, NH, KV = (int(x) for x in (sys.argv[2:8] if len(sys.argv) >= 8 else [32, 4096, 11008, 32000, 32, 32]))
hd = H // NH
shapes = [("model.embed_tokens.weight", [V, H])]
for l in range(L):
    p = f"model.layers.{l}."
    shapes += [(p + "input_layernorm.weight", [H]),
               (p + "self_attn.q_proj.weight", [NH * hd, H]), (p + "self_attn.k_proj.weight", [KV * hd, H]),
               (p + "self_attn.v_proj.weight", [KV * hd, H]), (p + "self_attn.o_proj.weight", [H, NH * hd]),
               (p + "post_attention_layernorm.weight", [H]),
               (p + "mlp.gate_proj.weight", [I, H]), (p + "mlp.up_proj.weight", [I, H]),
               (p + "mlp.down_proj.weight", [H, I])]
shapes += [("model.norm.weight", [H]), ("lm_head.weight", [V, H])]

limit = 5_000_000_000
shards, cur, size = [], [], 0
for name, shape in shapes:
    n = 2
    for d in shape:
        n *= d
    if cur and size + n > limit:
        shards.append(cur)
        cur, size = [], 0
    cur.append((name, shape, n))
    size += n
shards.append(cur)

os.makedirs(out, exist_ok=True)
weight_map, total = {}, 0
for k, tensors in enumerate(shards):
    fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, n in tensors:
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + n]}
        off += n
        weight_map[name] = fname
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    path = os.path.join(out, fname)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
    os.truncate(path, 8 + len(h) + off)
    total += off
with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
          "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": NH,
          "num_key_value_heads": KV, "vocab_size": V, "max_position_embeddings": 4096,
          "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
          "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
