#!/usr/bin/python3
"""Writes the seed corpora of the fuzz harnesses into tests/fuzz/corpus/<harness>/ (run it again after
changing it; files it does not write, such as inputs of fixed findings, are left alone).

Seeds are small valid inputs that look like the real thing (Llama-shaped safetensors headers, index
files of sharded checkpoints, mergekit configs of every method) and edge cases next to every check
(overflowing shapes, offsets that overlap, unsafe shard names, deep nesting, YAML anchors and tags).
Names say what each one is. The configs name the models fuzz_config.c puts in its Hugging Face cache.
The sentencepiece seeds are trained by sentencepiece itself when it is importable (python3-sentencepiece),
besides the ones built field by field here."""

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
    "tokenizer_block": """merge_method: linear
base_model: org/a
models:
  - model: org/a
    parameters: {weight: 0.5}
  - model: org/b
    parameters: {weight: 0.5}
tokenizer:
  source: union
  pad_to_multiple_of: 8
  tokens:
    "<|im_end|>": {source: org/b}
    "<x>": {source: {kind: zero}}
    "<y>": {source: {kind: model_token, model: org/a, token_id: 3}, force: true}
    "<z>": {source: {kind: model_token, model: org/b, token: "<s>"}}
chat_template: auto
""",
    "tokenizer_model_source": """merge_method: task_arithmetic
base_model: org/base
models:
  - model: org/a
    parameters: {weight: 0.5}
tokenizer_source: org/b
chat_template: "{% for m in messages %}{{ m['content'] }}{% endfor %}"
""",
    "moe_random": """base_model: org/base
gate_mode: random
dtype: bfloat16
experts_per_token: 2
experts:
  - source_model: org/a
    positive_prompts: ["chat"]
    noise_scale: 0.01
  - source_model: org/b
    positive_prompts: ["code"]
    residual_scale: 0.5
""",
    "moe_cheap_qwen": """base_model: org/base
gate_mode: cheap_embed
architecture: qwen
experts:
  - source_model: org/a
    positive_prompts: ["ab cd", "tell me"]
    negative_prompts: ["zz"]
  - source_model: org/b
    positive_prompts: ["ef"]
shared_experts:
  - source_model: org/deep
    positive_prompts: ["gh"]
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
    # a name holding "{}" before its layer index once made the template's prefix length negative
    put("arch", "brace_in_name", arch_input("{}", ["{}.0.w", "encoder.block.1.w", "a.{}.2.w"]))
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


# ---- sentencepiece models (tokenizer.model): protobuf built field by field, and trained ones ------------

def pb_varint(v):
    v &= (1 << 64) - 1  # negatives as protobuf writes int32: their 64-bit sign extension
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def pb_key(field, wtype):
    return pb_varint(field << 3 | wtype)


def pb_int(field, v):
    return pb_key(field, 0) + pb_varint(v)


def pb_bytes(field, data):
    data = data.encode() if isinstance(data, str) else data
    return pb_key(field, 2) + pb_varint(len(data)) + data


def pb_float(field, f):
    return pb_key(field, 5) + struct.pack("<f", f)


def spm_piece(text, score=0.0, typ=None):
    body = (pb_bytes(1, text) if text is not None else b"") + pb_float(2, score)
    if typ is not None:
        body += pb_int(3, typ)
    return pb_bytes(1, body)


NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def spm_model(pieces, trainer=b"", normalizer=b"", extra=b""):
    """pieces: [(text, score, type)]; trainer/normalizer: the messages' bodies."""
    out = b"".join(spm_piece(*p) for p in pieces)
    if trainer:
        out += pb_bytes(2, trainer)
    if normalizer:
        out += pb_bytes(3, normalizer)
    return out + extra


BASIC = [("<unk>", 0.0, UNKNOWN), ("<s>", 0.0, CONTROL), ("</s>", 0.0, CONTROL)] + \
        [(p, -float(i), None) for i, p in enumerate(["\u2581the", "\u2581a", "s", "t", "\u00e9", "\u65e5", "\U0001f600"])]
BYTES = [(f"<0x{b:02X}>", 0.0, BYTE) for b in range(256)]


def trained_models():
    """{name: bytes} trained by sentencepiece, or {} without it."""
    try:
        import io
        import sentencepiece as spm
    except ImportError:
        return {}
    rng = random.Random(12)
    words = ["merge", "mount", "token", "vocab", "\u00fcber", "\u65e5\u672c", "\U0001f600", "a", "the"]
    lines = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(400)]
    out = {}
    for name, kw in {"unigram": dict(model_type="unigram", vocab_size=60),
                     "bpe_bytes_user": dict(model_type="bpe", vocab_size=300, byte_fallback=True,
                                            user_defined_symbols=["<|im_start|>", "<|im_end|>"]),
                     "char_control_pad": dict(model_type="char", vocab_size=40, control_symbols=["<c>"], pad_id=3),
                     "word": dict(model_type="word", vocab_size=30)}.items():
        w = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=w, minloglevel=2, num_threads=1,
                                       normalization_rule_name="identity", hard_vocab_limit=False, **kw)
        out[name] = w.getvalue()
    return out


def spm_cases():
    """{name: bytes}: valid models and the corners next to every check."""
    trainer = pb_int(3, 2) + pb_int(4, 32000) + pb_int(40, 0) + pb_int(41, 1) + pb_int(42, 2) + pb_int(43, -1) + \
        pb_bytes(45, "<unk>") + pb_bytes(99, "unknown field")
    normalizer = pb_bytes(1, "nmt_nfkc") + pb_bytes(2, bytes(range(16))) + pb_int(3, 0) + pb_int(4, 1) + pb_int(5, 1)
    c = {
        "valid_basic": spm_model(BASIC),
        "valid_bpe_specs": spm_model(BASIC, trainer, normalizer),
        "valid_byte_fallback": spm_model(BASIC + BYTES, pb_int(35, 1)),
        "valid_user_unused": spm_model(BASIC + [("<|im_start|>", 0.0, USER_DEFINED), ("x", -9.5, UNUSED)]),
        "valid_normal_and_control_same_text": spm_model(BASIC + [("<s>", 0.0, NORMAL)]),
        "valid_unknown_fields_every_wire_type": spm_model(BASIC, extra=pb_int(7, 5) + pb_key(8, 1) + bytes(8) +
                                                          pb_key(9, 5) + bytes(4) + pb_bytes(250, "ext")),
        "valid_trainer_twice_merged": spm_model(BASIC, pb_int(41, -1)) + pb_bytes(2, pb_int(42, -1)),
        "valid_nul_in_piece": spm_model(BASIC + [("a\x00b", 0.0, None)]),
        "bad_empty_piece": spm_model(BASIC + [(None, 0.0, None)]),
        "bad_duplicate": spm_model(BASIC + [("s", 0.0, USER_DEFINED)]),
        "bad_two_unknown": spm_model(BASIC + [("<unk2>", 0.0, UNKNOWN)]),
        "bad_no_unknown": spm_model(BASIC[1:]),
        "bad_byte_without_fallback": spm_model(BASIC + BYTES),
        "bad_byte_missing": spm_model(BASIC + BYTES[:-1], pb_int(35, 1)),
        "bad_byte_lower_hex": spm_model(BASIC + BYTES[:10] + [("<0x0a>", 0.0, BYTE)] + BYTES[11:], pb_int(35, 1)),
        "bad_type_7": spm_model(BASIC + [("x", 0.0, 7)]),
        "bad_model_type_9": spm_model(BASIC, pb_int(3, 9)),
        "bad_int32_overflow": spm_model(BASIC, pb_int(40, 1 << 40)),
        "bad_bool_2": spm_model(BASIC, pb_int(35, 2)),
        "bad_id_beyond_pieces": spm_model(BASIC, pb_int(41, 10)),
        "bad_invalid_utf8": spm_model(BASIC + [(b"\xc3\x28", 0.0, None)]),
        "bad_wrong_wire_type": spm_model(BASIC) + pb_int(1, 3),
        "bad_group": spm_model(BASIC) + pb_key(5, 3),
        "bad_overlong_varint": spm_model(BASIC) + pb_key(7, 0) + b"\x80" * 10 + b"\x00",
        "bad_truncated": spm_model(BASIC)[:-3],
        "bad_length_past_end": spm_model(BASIC) + b"\x0a\x7f",
        "bad_text": b"IQ== 0\nIg== 1\n",
    }
    return c


def spm_seeds():
    for name, data in spm_cases().items():
        put("spm", name, data)
    for name, data in trained_models().items():
        put("spm", "trained_" + name, data)


# ---- a folder's tokenizer: its files split by "=====" lines ----------------------------------------------

SEP = "\n=====\n"


def tok_folder(tokenizer_json="", config="", special_tokens_map="", added_tokens="", chat_template=""):
    parts = [tokenizer_json, config, special_tokens_map, added_tokens, chat_template]
    parts = [p if isinstance(p, (str, bytes)) else json.dumps(p, indent=1) for p in parts]
    parts = [p.encode() if isinstance(p, str) else p for p in parts]
    while parts and not parts[-1]:
        parts.pop()
    return SEP.encode().join(parts)


def added(i, content, special=True, **flags):
    e = {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": not special, "special": special}
    e.update(flags)
    return e


def tj(model, added_tokens=(), padding=None):
    return {"version": "1.0", "truncation": None, "padding": padding, "added_tokens": list(added_tokens),
            "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
            "post_processor": None, "decoder": None, "model": model}


BPE = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
       "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
       "vocab": {"a": 0, "b": 1, "ab": 2, "c": 3, "abc": 4, "\u0120the": 5, "<|endoftext|>": 6},
       "merges": ["a b", "ab c"]}


def tokenizer_seeds():
    s = "tokenizer"
    eot = added(6, "<|endoftext|>")
    chatml = [added(7, "<|im_start|>"), added(8, "<|im_end|>")]
    dec = {str(e["id"]): {k: v for k, v in e.items() if k != "id"} for e in [eot] + chatml}
    put(s, "bpe_gpt2", tok_folder(tj(BPE, [eot])))
    put(s, "bpe_pairs_merges", tok_folder(tj(dict(BPE, merges=[["a", "b"], ["ab", "c"]]), [eot])))
    put(s, "qwen_config_decoder", tok_folder(tj(BPE, [eot] + chatml), {
        "added_tokens_decoder": dec, "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}", "model_max_length": 32768}))
    put(s, "config_specials_new_tokens", tok_folder(tj(BPE, [eot]), {
        "added_tokens_decoder": {"7": {"content": "<tool>", "special": False}}, "pad_token": "<pad>",
        "image_token": "<image>", "extra_special_tokens": ["<e1>", {"__type": "AddedToken", "content": "<e2>"}],
        "mask_token": {"__type": "AddedToken", "content": "<mask>", "lstrip": True, "normalized": False,
                       "rstrip": False, "single_word": False, "special": True}}))
    put(s, "legacy_files", tok_folder(tj(BPE, [eot]), {"additional_special_tokens": ["<x>"]},
                                      {"pad_token": {"content": "<pad>", "lstrip": False, "normalized": True,
                                                     "rstrip": False, "single_word": False}, "bos_token": "abc",
                                       "additional_special_tokens": [{"content": "<z>"}]},
                                      {"<x>": 7, "<y>": 8}, "{{ bos_token }}"))
    put(s, "unigram", tok_folder(tj({"type": "Unigram", "unk_id": 0, "byte_fallback": False,
                                     "vocab": [["<unk>", 0.0], ["\u2581a", -1.5], ["b", -2.25], ["<pad>", 0]]},
                                    [added(0, "<unk>"), added(3, "<pad>")], {"pad_token": "<pad>", "pad_id": 3,
                                                                               "strategy": "BatchLongest"})))
    put(s, "wordpiece", tok_folder(tj({"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                                       "max_input_chars_per_word": 100,
                                       "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "##b": 5}},
                                      [added(i, t) for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])]),
                                   {"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}))
    put(s, "wordlevel_gap", tok_folder(tj({"type": "WordLevel", "vocab": {"<unk>": 0, "b": 2}, "unk_token": "<unk>"})))
    put(s, "chat_template_list", tok_folder(tj(BPE), {"chat_template": [{"name": "default", "template": "D"},
                                                                        {"name": "tool_use", "template": "T"}]},
                                            "", "", "{{ file wins }}"))
    put(s, "bad_added_out_of_order", tok_folder(tj(BPE, [eot] + chatml[::-1])))
    put(s, "bad_decoder_wrong_id", tok_folder(tj(BPE, [eot]), {"added_tokens_decoder": {"12": {"content": "x"}}}))
    put(s, "bad_duplicate_token", tok_folder('{"added_tokens": [], "model": {"type": "BPE", "vocab": {"a": 0, "a": 1}, '
                                             '"merges": []}}'))
    put(s, "bad_nul_escape", tok_folder('{"added_tokens": [], "model": {"type": "WordLevel", "unk_token": "u", '
                                        '"vocab": {"a\\u0000": 0}}}'))
    put(s, "bad_merge", tok_folder(tj(dict(BPE, merges=["b c"]))))
    for name, data in spm_cases().items():
        if name.startswith("valid_"):
            put(s, "spm_" + name[len("valid_"):], b"SPM:" + data)
    put(s, "spm_with_config", b"SPM:" + spm_cases()["valid_user_unused"] + SEP.encode() + json.dumps(
        {"added_tokens_decoder": {"12": {"content": "<|im_end|>", "special": True}}, "unk_token": "<unk>"}).encode())
    for name, data in trained_models().items():
        put(s, "spm_trained_" + name, b"SPM:" + data)


# ---- the GGUF view: config.json, then a folder's tokenizer files, split by "=====" lines -----------------

def gguf_seeds():
    """Configs of every family over fuzz_gguf.c's Llama-shaped tensors (hidden 64, 4 heads, 2 key/value
    heads, 2 layers, vocabulary 96), with a Llama 3 style BPE tokenizer or a sentencepiece model."""
    import sys
    sys.path.insert(0, os.path.join(HERE, "..", "reference"))
    import tok_fixture
    base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_hidden_layers": 2,
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "vocab_size": 96,
            "bos_token_id": 93, "eos_token_id": 95, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    llama3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 1024, "rope_type": "llama3"}
    configs = {
        "llama": {},
        "llama3_rope": {"rope_scaling": llama3},
        "llama_linear_rope": {"rope_scaling": {"type": "linear", "factor": 2.0}},
        "mistral": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": 4096},
        "qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"},
        "qwen2_yarn": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                       "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}},
        "gemma": {"architectures": ["GemmaForCausalLM"], "model_type": "gemma"},
        "gemma2": {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "sliding_window": 512},
        "gemma3": {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "sliding_window": 512,
                   "rope_local_base_freq": 10000.0},
        "phi3": {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3"},
        "bad_heads": {"num_attention_heads": 3},
        "bad_family": {"architectures": ["FalconForCausalLM"], "model_type": "falcon"},
    }
    tj, cfg = tok_fixture.styled_tokenizer("llama3-bpe")
    bpe = [json.dumps(tj, indent=1), json.dumps(cfg, indent=1)]
    spm = b"SPM:" + next(iter(trained_models().values()), spm_cases()["valid_user_unused"])
    for name, extra in configs.items():
        config = json.dumps(dict(base, **extra), indent=1).encode()
        put("gguf", name + "_bpe", SEP.encode().join([config] + [p.encode() for p in bpe]))
        put("gguf", name + "_spm", SEP.encode().join([config, spm]))


if __name__ == "__main__":
    lora_seeds()
    arch_seeds()
    safetensors_seeds()
    index_seeds()
    config_seeds()
    json_seeds()
    param_seeds()
    spm_seeds()
    tokenizer_seeds()
    gguf_seeds()
