#!/usr/bin/python3
"""Writes the seed corpora of the fuzz harnesses into tests/fuzz/corpus/<harness>/ (run it again after
changing it; files it does not write, such as inputs of fixed findings, are left alone).

Seeds are small valid inputs that look like the real thing (Llama-shaped safetensors headers, index
files of sharded checkpoints, mergekit configs of every method) and edge cases next to every check
(overflowing shapes, offsets that overlap, unsafe shard names, deep nesting, YAML anchors and tags).
Names say what each one is. The configs name the models fuzz_config.c puts in its Hugging Face cache."""

import json
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
        "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def put(harness, name, data):
    folder = os.path.join(CORPUS, harness)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# ---- safetensors files ---------------------------------------------------------------------------------

def st_file(header_text, data_len, pad=True):
    """A whole file: u64 length, the header text (space-padded to 8 as writers do), data_len zero bytes."""
    h = header_text.encode() if isinstance(header_text, str) else header_text
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + bytes(data_len)


def st_layout(tensors, metadata=None):
    """Header text and data length for [(name, dtype, shape)], laid out contiguously in order."""
    header, off = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = SIZE[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    return json.dumps(header, separators=(",", ":")), off


def llama_tensors(layers=2, hidden=8, inter=12, vocab=16, dtype="BF16"):
    t = [("model.embed_tokens.weight", dtype, [vocab, hidden])]
    for i in range(layers):
        p = f"model.layers.{i}."
        t += [(p + "input_layernorm.weight", dtype, [hidden]),
              (p + "mlp.down_proj.weight", dtype, [hidden, inter]),
              (p + "mlp.gate_proj.weight", dtype, [inter, hidden]),
              (p + "mlp.up_proj.weight", dtype, [inter, hidden]),
              (p + "post_attention_layernorm.weight", dtype, [hidden]),
              (p + "self_attn.k_proj.weight", dtype, [hidden // 2, hidden]),
              (p + "self_attn.o_proj.weight", dtype, [hidden, hidden]),
              (p + "self_attn.q_proj.weight", dtype, [hidden, hidden]),
              (p + "self_attn.v_proj.weight", dtype, [hidden // 2, hidden])]
    return t + [("model.norm.weight", dtype, [hidden]), ("lm_head.weight", dtype, [vocab, hidden])]


def one(dtype="F32", shape=(2, 3), name="w"):
    return st_file(*st_layout([(name, dtype, list(shape))]))


def safetensors_seeds():
    s = "safetensors"
    put(s, "valid_llama_bf16", st_file(*st_layout(llama_tensors(), {"format": "pt"})))
    put(s, "valid_llama_f32_1layer", st_file(*st_layout(llama_tensors(1, 4, 6, 8, "F32"))))
    put(s, "valid_every_dtype", st_file(*st_layout([(f"t.{d}", d, [3]) for d in SIZE])))
    put(s, "valid_scalar", one("F64", ()))
    put(s, "valid_zero_size", st_file(*st_layout([("empty", "F16", [0, 5]), ("x", "U8", [1])])))
    put(s, "valid_8_dims", one("I8", (1, 2, 1, 2, 1, 2, 1, 1)))
    put(s, "valid_empty_header", st_file("{}", 0))
    put(s, "valid_unpadded", st_file(*st_layout([("a", "BF16", [3])]), pad=False))
    put(s, "valid_metadata_strings", st_file(*st_layout([("a", "F32", [1])], {"format": "pt", "k": "v\u00e9"})))
    put(s, "valid_unicode_and_escapes", st_file(*st_layout([("\u00e9\u4e2d\U0001f600", "F32", [1]),
                                                             ("tab\there \"q\" \\ \u0001", "F32", [1])])))
    # the same entries in another order in the JSON than in the data
    put(s, "valid_json_order_differs", st_file(
        '{"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}',
        12))
    put(s, "bad_overlap", st_file(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}', 6))
    put(s, "bad_gap", st_file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8))
    put(s, "bad_truncated_data", st_file('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', 10))
    put(s, "bad_extra_data", st_file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 12))
    put(s, "bad_size_mismatch", st_file('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', 4))
    put(s, "bad_numel_overflow", st_file(
        '{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}', 4))
    put(s, "bad_bytes_overflow", st_file(
        '{"a":{"dtype":"F64","shape":[4503599627370496,2048],"data_offsets":[0,8]}}', 8))
    put(s, "bad_offsets_beyond_2p53", st_file('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551615]}}', 1))
    put(s, "bad_negative_shape", st_file('{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', 4))
    put(s, "bad_fraction_shape", st_file('{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,6]}}', 6))
    put(s, "bad_9_dims", one("U8", (1,) * 9))
    put(s, "bad_unknown_dtype", st_file('{"a":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]}}', 1))
    put(s, "bad_duplicate_name", st_file(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8))
    put(s, "bad_entry_not_object", st_file('{"a":[1,2,3]}', 0))
    put(s, "bad_metadata_not_object", st_file('{"__metadata__":"pt"}', 0))
    put(s, "bad_not_object", st_file("[1,2]", 0))
    put(s, "bad_not_json", st_file('{"a": nope', 0))
    put(s, "bad_truncated_escape", st_file('{"a\\', 0, pad=False))
    put(s, "bad_invalid_utf8", st_file(b'{"\xff\xfe":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', 1))
    put(s, "bad_overlong_utf8", st_file(b'{"\xc0\xaf":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', 1))
    put(s, "bad_nul_escape_name", st_file('{"a\\u0000b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', 1))
    put(s, "bad_deep_nesting", st_file('{"__metadata__":' + "[" * 1100 + "]" * 1100 + "}", 0))
    put(s, "bad_header_past_end", struct.pack("<Q", 1000) + b'{"a":1}')
    put(s, "bad_header_over_limit", struct.pack("<Q", 200_000_000) + b"{}")
    put(s, "bad_too_short", b"\x02\x00\x00")


# ---- index files -----------------------------------------------------------------------------------------

def index_text(weight_map, total=0, indent=2):
    return json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=indent, sort_keys=True)


def index_seeds():
    s = "index"
    names = [n for n, _, _ in llama_tensors(4)]
    wm = {n: f"model-{1 + i * 3 // len(names):05d}-of-00003.safetensors" for i, n in enumerate(names)}
    put(s, "valid_llama_3_shards", index_text(wm, 123456))
    put(s, "valid_one_shard_compact", json.dumps({"weight_map": {n: "model.safetensors" for n in names[:5]}},
                                                  separators=(",", ":")))
    put(s, "valid_empty_map", '{"metadata": {}, "weight_map": {}}')
    put(s, "valid_unicode", index_text({"\u00e9\u4e2d": "sh\u00e4rd.safetensors", "x\ty": "a b.safetensors",
                                        "emoji\U0001f600": "\u00e9.safetensors"}))
    put(s, "valid_interleaved_shards", index_text({"a": "2.st", "b": "1.st", "c": "2.st", "d": "3.st", "e": "1.st"}))
    put(s, "valid_duplicate_keys", '{"weight_map": {"a": "x.st", "a": "y.st", "b": "x.st"}}')
    put(s, "valid_extra_keys", '{"metadata": {"total_size": 1, "format": "pt"}, "weight_map": {"a": "x"}, "x": [1, {}]}')
    put(s, "bad_parent_dir", index_text({"a": "../other/model.safetensors"}))
    put(s, "bad_dotdot", index_text({"a": ".."}))
    put(s, "bad_dot", index_text({"a": "."}))
    put(s, "bad_absolute", index_text({"a": "/etc/passwd"}))
    put(s, "bad_subfolder", index_text({"a": "sub/model.safetensors"}))
    put(s, "bad_empty_name", index_text({"a": ""}))
    put(s, "bad_nul_in_name", '{"weight_map": {"a": "x.st\\u0000/../../etc/passwd"}}')
    put(s, "bad_value_not_string", '{"weight_map": {"a": 1, "b": null}}')
    put(s, "bad_map_not_object", '{"weight_map": ["a", "b"]}')
    put(s, "bad_no_map", '{"metadata": {"total_size": 0}}')
    put(s, "bad_not_object", '["weight_map"]')
    put(s, "bad_not_json", '{"weight_map": {"a": "x.st",}')
    put(s, "bad_invalid_utf8", b'{"weight_map": {"\xed\xa0\x80": "x.st"}}')
    put(s, "bad_deep_nesting", '{"metadata": ' + "[" * 1200 + "]" * 1200 + ', "weight_map": {}}')
    put(s, "bad_deep_nesting_1000", '{"metadata": ' + "{\"a\":" * 999 + "1" + "}" * 999 + ', "weight_map": {}}')


# ---- mergekit configs --------------------------------------------------------------------------------------

CONFIGS = {
    "linear": """merge_method: linear
models:
  - model: org/a
    parameters:
      weight: 0.6
  - model: org/b
    parameters:
      weight: 0.4
dtype: bfloat16
""",
    "linear_sharded_f32": """merge_method: linear
models:
  - model: org/a
    parameters: {weight: 1.0}
  - model: org/sharded
    parameters: {weight: [0, 0.5, 1]}
parameters:
  normalize: false
dtype: float32
out_dtype: bfloat16
""",
    "task_arithmetic_filters": """merge_method: task_arithmetic
base_model: org/base
models:
  - model: org/a
    parameters:
      weight:
        - filter: self_attn
          value: [0.1, 0.9]
        - filter: mlp
          value: 0.5
        - value: 1
  - model: org/b
    parameters:
      weight: 0.3
parameters:
  lambda: 0.9
  normalize: true
dtype: float16
""",
    "ties": """merge_method: ties
base_model: org/base
models:
  - model: org/a
    parameters: {density: 0.5, weight: 0.5}
  - model: org/b
    parameters: {density: [1, 0.7, 0.1], weight: [0, 0.3, 0.5, 0.7, 1]}
parameters:
  normalize: true
  int8_mask: true
dtype: bfloat16
""",
    "dare_ties": """merge_method: dare_ties
base_model: org/base
models:
  - model: org/a
    parameters: {density: 0.53, weight: 0.4}
  - model: org/b
    parameters: {density: 0.53, weight: 0.4}
parameters:
  int8_mask: true
  rescale: true
""",
    "dare_linear": """merge_method: dare_linear
base_model: org/base
models:
  - model: org/a
    parameters: {weight: 0.5, density: 0.8}
""",
    "breadcrumbs": """merge_method: breadcrumbs_ties
base_model: org/base
models:
  - model: org/a
    parameters: {weight: 1, density: 0.9, gamma: 0.01}
  - model: org/b
    parameters: {weight: 1, density: 0.9, gamma: 0.05}
""",
    "della": """merge_method: della
base_model: org/base
models:
  - model: org/a
    parameters: {weight: 1, density: 0.7, epsilon: 0.15}
  - model: org/b
    parameters: {weight: 1, density: 0.5, epsilon: 0.1}
parameters:
  lambda: 1.1
""",
    "slerp_gradients": """slices:
  - sources:
      - model: org/a
        layer_range: [0, 2]
      - model: org/base
        layer_range: [0, 2]
merge_method: slerp
base_model: org/base
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
""",
    "nuslerp": """merge_method: nuslerp
models:
  - model: org/a
    parameters: {weight: 0.5}
  - model: org/b
    parameters: {weight: 0.5}
parameters:
  nuslerp_flatten: false
  nuslerp_row_wise: true
""",
    "multislerp": """merge_method: multislerp
models:
  - model: org/a
    parameters: {weight: 1}
  - model: org/b
    parameters: {weight: 2}
  - model: org/base
    parameters: {weight: 1}
parameters: {normalize_weights: true, eps: 1e-8}
""",
    "karcher": """merge_method: karcher
models:
  - model: org/a
  - model: org/b
parameters:
  max_iter: 5
  tol: 1.0e-5
""",
    "model_stock": """merge_method: model_stock
base_model: org/base
models:
  - model: org/a
  - model: org/b
parameters:
  filter_wise: false
""",
    "sce": """merge_method: sce
base_model: org/base
models:
  - model: org/a
  - model: org/b
parameters:
  select_topk: 0.5
""",
    "ram_plus": """merge_method: ramplus_tl
base_model: org/base
models:
  - model: org/a
parameters: {r: 0.1, alpha: 0.2, epsilon: 1e-5}
""",
    "nearswap": """merge_method: nearswap
base_model: org/base
models:
  - model: org/a
parameters:
  t: 0.0001
""",
    "arcee_fusion": """merge_method: arcee_fusion
base_model: org/base
models:
  - model: org/a
""",
    "passthrough_frankenmerge": """slices:
  - sources:
      - model: org/deep
        layer_range: [0, 3]
  - sources:
      - model: org/a
        layer_range: [1, 2]
        parameters:
          scale:
            - filter: o_proj
              value: 0.5
            - value: 1
  - sources:
      - model: org/deep
        layer_range: [2, 4]
merge_method: passthrough
dtype: bfloat16
""",
    "slices_per_slice_base": """slices:
  - sources:
      - model: org/a
        layer_range: [0, 1]
        parameters: {weight: 0.2}
      - model: org/b
        layer_range: [1, 2]
        parameters: {weight: 0.8}
    parameters:
      normalize: false
    residual_weight: 0.1
  - sources:
      - model: {path: org/a, revision: v1}
        layer_range: [1, 2]
        parameters: {weight: 1}
      - model: org/tied
        layer_range: [0, 1]
        parameters: {weight: 1}
merge_method: linear
""",
    "crop_wide_vocab": """merge_method: linear
models:
  - model: org/wide
    parameters: {weight: 0.5}
  - model: org/a
    parameters: {weight: 0.5}
tokenizer_source: org/notok
""",
    "mixed_dtypes": """merge_method: task_arithmetic
base_model: org/f32
models:
  - model: org/f16
    parameters: {weight: 1}
  - model: org/a
    parameters: {weight: 1}
tokenizer_source: base
""",
    "yaml_anchors_merge_keys": """base: &base {weight: 0.5, density: 0.5}
merge_method: ties
base_model: &b org/base
models:
  - model: org/a
    parameters:
      <<: *base
      weight: 0.7
  - model: org/b
    parameters:
      <<: [*base, {gamma: 1}]
  - model: *b
""",
    "yaml_tags_and_typing": """merge_method: !!str linear
models:
  - model: "org/a"
    parameters:
      weight: !!float 1
  - model: 'org/b'
    parameters:
      weight: 0x1
  - model: org/base
    parameters:
      weight: [1_0.0e-1, .5, 1:30, ~]
parameters:
  normalize: Yes
dtype: torch.bfloat16
""",
    "flow_style": '{merge_method: linear, models: [{model: org/a, parameters: {weight: 1}}, '
                  '{model: org/b, parameters: {weight: [1, 2, 3]}}], dtype: float32}\n',
    "unknown_keys_and_typos": """merge_metod: linear
merge_method: linaer
models:
  - model: org/a
    paramters: {weight: 1}
    parameters: {wieght: 1, weight: 1}
normalize: true
""",
    "bad_both_models_and_slices": """merge_method: linear
models:
  - model: org/a
slices:
  - sources:
      - model: org/a
        layer_range: [0, 2]
""",
    "bad_layer_range": """merge_method: passthrough
slices:
  - sources:
      - model: org/a
        layer_range: [0, 99999999999]
""",
    "bad_missing_model": """merge_method: linear
models:
  - model: nobody/nothing@main
    parameters: {weight: 1}
  - model: ./not/here
    parameters: {weight: 1}
""",
    "bad_unsupported": """merge_method: linear
models:
  - model: {model: org/a, lora: org/b}
tokenizer_source: union
chat_template: chatml
""",
    "bad_tab_indent": "merge_method: linear\nmodels:\n\t- model: org/a\n",
    "bad_two_documents": "merge_method: linear\n---\nmerge_method: ties\n",
    "bad_alias_bomb": "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                      "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                      "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                      "g: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n",
    "bad_deep_flow_nesting": "merge_method: linear\nmodels:\n  - model: " + "{model: " * 300 + "org/a" + "}" * 300 + "\n",
    "bad_deep_block_nesting": "merge_method: linear\nparameters:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(300)),
    "bad_recursive_alias": "a: &a [*a]\n",
    "bad_non_utf8": b"merge_method: lin\xffear\nmodels: []\n",
}


def config_seeds():
    for name, text in CONFIGS.items():
        put("config", name + ".yml", text)


# ---- parameter evaluation: structured bytes ----------------------------------------------------------------

def param_seeds():
    rng = random.Random(6)
    for size in (0, 1, 8, 16, 32, 64, 128, 256, 512, 1024):
        put("param", f"random_{size}", bytes(rng.randrange(256) for _ in range(size)))
    # all-awkward numbers, all-raw numbers, all-conditional
    put("param", "low_bytes", bytes(range(64)) * 4)
    put("param", "high_bytes", bytes(range(192, 256)) * 4)
    put("param", "conditional_heavy", bytes([2, 1, 3, 2, 2, 0, 1, 1, 2, 3, 2]) * 20)


# ---- config.json: the JSON reader and the Python-style writer --------------------------------------------

REAL_CONFIGS = os.path.join(HERE, "..", "integration", "data", "configs")
JSON = {
    "numbers_every_kind": '{"a": 10000.0, "b": 10000, "c": 1e-06, "d": 1E+16, "e": -0, "f": -0.0, '
                          '"g": 0.02, "h": 123456789012345678901234567890, "i": 2.5e-320, "j": [1, 1.5, -2e3]}',
    "number_beyond_double": '{"rope_theta": 1e999, "n": -1e999}',
    "digits_in_keys_and_strings": '{"1.5": "2.0e3", "k\\"9.0": [3, "4.0", 5.0], "\\u0031.0": 6}',
    "duplicate_keys": '{"x": 1.0, "x": 2, "a": {"y": 3, "y": 4.5}}',
    "nested_sub_configs": '{"text_config": {"num_hidden_layers": 2, "layer_types": ["a", "b"], '
                          '"torch_dtype": "float32"}, "vision_config": {"dtype": "bfloat16", "eps": 1e-05}}',
    "non_ascii_and_escapes": b'{"name": "caf\xc3\xa9 \\ud83d\\ude00 \\n \\t \\u0000 end", "s": "\xff\xfe"}',
    "deep_nesting_100": "[" * 100 + "1.0" + "]" * 100,
    "trailing_text": '{"a": 1.0} 2.0 3',
    "empty_containers": '{"a": [], "b": {}, "c": [[], {}], "d": null, "e": true, "f": false}',
}


def json_seeds():
    for name in sorted(os.listdir(REAL_CONFIGS)):
        with open(os.path.join(REAL_CONFIGS, name), "rb") as f:
            put("json", "real_" + name, f.read())
    for name, text in JSON.items():
        put("json", name + ".json", text)


# ---- module inference: config.json, a blank line, one tensor name per line --------------------------------

ARCHS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "fixtures", "archs")


def arch_input(config_text, names):
    return config_text.strip() + "\n\n" + "\n".join(names)


def arch_seeds():
    # the real names of the multimodal fixtures and one text family (the largest inputs, a few hundred KB)
    for family in ("gemma3-vl", "qwen2-vl", "qwen3-vl", "internvl-lm", "llava", "llama3"):
        with open(os.path.join(ARCHS, family, "config.json")) as f:
            cfg = f.read()
        with open(os.path.join(ARCHS, family, "model.safetensors.index.json")) as f:
            names = sorted(json.load(f)["weight_map"])
        put("arch", "real_" + family, arch_input(cfg, names))
    put("arch", "no_stack", arch_input("{}", ["a.weight", "b.bias"]))
    put("arch", "sequential_gap", arch_input('{"num_hidden_layers": 2}', ["mlp.0.w", "mlp.2.w", "norm.weight"]))
    put("arch", "two_text_stacks", arch_input('{"num_layers": 2}', ["encoder.block.0.w", "encoder.block.1.w",
                                                                   "encoder.block.2.w", "decoder.block.0.w",
                                                                   "decoder.block.1.w", "shared.weight"]))
    put("arch", "leading_zero_and_big", arch_input("[1, 2]", ["x.01.w", "x.1.w", "x.0.w", "y.99999999.w", "z.0"]))
    put("arch", "no_config", "model.layers.0.w\nmodel.layers.1.w\nvisual.blocks.0.w\nvisual.blocks.1.w\nlm_head.w")


# ---- LoRA adapters: u16 length, adapter_config.json, adapter_model.safetensors ---------------------------

def lora_input(config, tensors, values=0.25):
    """tensors: [(name, dtype, shape)]; the data is `values` repeated (F32) or zeros (other dtypes)."""
    text = json.dumps(config).encode()
    header, n = st_layout(tensors)
    blob = st_file(header, 0)
    data = b""
    for _, dtype, shape in tensors:
        count = shape[0] * shape[1]
        data += struct.pack("<%df" % count, *([values] * count)) if dtype == "F32" else bytes(count * SIZE[dtype])
    assert len(data) == n
    return struct.pack("<H", len(text)) + text + blob + data


def lora_seeds():
    q = "base_model.model.model.layers.0.self_attn.q_proj"
    v = "base_model.model.model.layers.0.self_attn.v_proj"
    e = "base_model.model.model.embed_tokens"
    cfg = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "bias": "none", "target_modules": ["q_proj", "v_proj"]}
    qv = [(q + ".lora_A.weight", "F32", [2, 8]), (q + ".lora_B.weight", "F32", [8, 2]),
          (v + ".lora_A.weight", "F32", [2, 8]), (v + ".lora_B.weight", "F32", [4, 2])]
    put("lora", "valid_q_v", lora_input(cfg, qv))
    put("lora", "valid_bf16_named", lora_input(cfg, [(q + ".lora_A.default.weight", "BF16", [2, 8]),
                                                     (q + ".lora_B.default.weight", "BF16", [8, 2])]))
    put("lora", "valid_embedding", lora_input(cfg, [(e + ".lora_embedding_A", "F32", [2, 16]),
                                                    (e + ".lora_embedding_B", "F32", [8, 2])]))
    put("lora", "valid_rslora_patterns",
        lora_input(dict(cfg, use_rslora=True, rank_pattern={"v_proj": 1}, alpha_pattern={"q_proj": 8}),
                   qv[:2] + [(v + ".lora_A.weight", "F32", [1, 8]), (v + ".lora_B.weight", "F32", [4, 1])]))
    put("lora", "fan_in_fan_out_misfit", lora_input(dict(cfg, fan_in_fan_out=True), qv))
    put("lora", "bad_missing_b", lora_input(cfg, qv[:1]))
    put("lora", "bad_rank", lora_input(dict(cfg, r=3), qv))
    put("lora", "bad_ia3", lora_input(dict(cfg, peft_type="IA3"), qv))
    put("lora", "bad_dora", lora_input(dict(cfg, use_dora=True), qv))
    put("lora", "bad_bias", lora_input(dict(cfg, bias="all"), qv))
    put("lora", "bad_other_tensor", lora_input(cfg, qv + [(q + ".bias", "F32", [8, 1])]))
    put("lora", "bad_shape", lora_input(cfg, [(q + ".lora_A.weight", "F32", [2, 7]), (q + ".lora_B.weight", "F32", [8, 2])]))
    put("lora", "bad_regex_pattern", lora_input(dict(cfg, rank_pattern={"q_.*": 2}), qv))


if __name__ == "__main__":
    lora_seeds()
    arch_seeds()
    safetensors_seeds()
    index_seeds()
    config_seeds()
    json_seeds()
    param_seeds()
