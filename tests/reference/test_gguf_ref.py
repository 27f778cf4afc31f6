"""Self-tests of the GGUF reference (gguf_ref.py) and reader (gguf_read.py) on hand-derived values: the
encodings (Q8_0 rounding, BF16 rounding and NaNs), gguf-py's size label, the Llama Q/K permutation,
the hyperparameters transformers derives, and the reader's layout checks."""

import struct

import numpy as np
import pytest

import gguf_read
import gguf_ref


def test_q8_0_block():
    x = np.zeros(32, np.float32)
    x[0] = 127.0          # d = 1: q = round-half-away(x)
    x[1], x[2], x[3], x[4] = 2.5, -2.5, 0.49999997, -126.5
    raw = gguf_ref.to_q8_0(x)
    assert len(raw) == 34
    assert np.frombuffer(raw[:2], "<f2")[0] == 1.0
    q = np.frombuffer(raw[2:], np.int8)
    assert list(q[:5]) == [127, 3, -3, 0, -127] and not q[5:].any()
    assert gguf_ref.to_q8_0(np.zeros(32, np.float32)) == bytes(34)   # d = 0: id = 0, q = 0


def test_q8_0_scale_is_float32_then_half():
    x = np.linspace(-0.3, 0.7, 64, dtype=np.float32)
    raw = gguf_ref.to_q8_0(x)
    for b in range(2):
        blk = x[32 * b:32 * b + 32]
        d = np.float32(np.abs(blk).max()) / np.float32(127)
        assert raw[34 * b:34 * b + 2] == np.float16(d).tobytes()
        q = np.frombuffer(raw[34 * b + 2:34 * b + 34], np.int8)
        want = np.sign(blk * (np.float32(1) / d)) * np.floor(np.abs(blk * (np.float32(1) / d)) + np.float32(0.5))
        assert np.array_equal(q, want.astype(np.int8))


def test_bf16_rounding_and_nan():
    bits = np.array([0x3F808000, 0x3F818000, 0x3F808001, 0x7F800001, 0xFF812345, 0x7F800000, 0x7F7FFFFF],
                    np.uint32)
    out = np.frombuffer(gguf_ref.to_bf16(bits.view(np.float32)), "<u2")
    assert [hex(v) for v in out] == ["0x3f80", "0x3f82", "0x3f81", "0x7fc0", "0xffc1", "0x7f80", "0x7f80"]


@pytest.mark.parametrize("n,label", [(22176, "22K"), (999, "1.0K"), (1_230_000, "1.2M"), (494_032_768, "494M"),
                                     (7_241_732_096, "7.2B"), (70_553_706_496, "71B"), (12_000, "12K")])
def test_size_label(n, label):
    assert gguf_ref.weight_count_notation(n) == label


def test_permute_rows():
    heads, hd = 2, 4
    w = np.arange(heads * hd * 3, dtype=np.float32).reshape(heads * hd, 3)
    p = gguf_ref.permute(w, heads, heads)
    for h in range(heads):
        for i in range(hd // 2):
            for j in range(2):
                assert np.array_equal(p[h * hd + 2 * i + j], w[h * hd + j * hd // 2 + i])
    k = gguf_ref.permute(w[:hd], 4, 1)     # K of one kv head: permuted over num_key_value_heads
    assert np.array_equal(k, gguf_ref.permute(w[:hd], 1, 1))


def test_hparams_follow_transformers():
    cfg = {"architectures": ["LlamaForCausalLM"], "hidden_size": 32, "num_attention_heads": 4,
           "num_hidden_layers": 2, "rope_scaling": None}
    arch, h, rope = gguf_ref.hparams(cfg)
    assert arch == "llama" and h["head_dim"] == 8 and h["num_key_value_heads"] == 4
    assert rope == {"rope_theta": 10000.0, "rope_type": "default"}
    cfg = {"architectures": ["Gemma3ForCausalLM"], "rope_theta": 1000000, "rope_local_base_freq": 10000,
           "rope_scaling": {"factor": 8.0, "rope_type": "linear"}}
    _, _, rope = gguf_ref.hparams(cfg)
    assert rope["full_attention"] == {"factor": 8.0, "rope_type": "linear", "rope_theta": 1000000}
    assert rope["sliding_attention"]["rope_theta"] == 10000
    with pytest.raises(gguf_ref.Unsupported, match="GPTNeoX"):
        gguf_ref.hparams({"architectures": ["GPTNeoXForCausalLM"]})


def test_tensor_types():
    m = np.zeros((4, 64), np.float32)
    assert gguf_ref.tensor_type("blk.0.attn_q.weight", m, 7) == "Q8_0"
    assert gguf_ref.tensor_type("blk.0.ffn_down.weight", np.zeros((4, 48), np.float32), 7) == "F16"
    assert gguf_ref.tensor_type("blk.0.attn_norm.weight", np.zeros(64, np.float32), 32) == "F32"
    assert gguf_ref.tensor_type("blk.0.attn_q.bias", np.zeros(64, np.float32), 1) == "F32"
    assert gguf_ref.tensor_type("blk.0.attn_q_norm.weight", m, 32) == "F32"
    assert gguf_ref.gguf_name("gemma2", "model.layers.3.post_attention_layernorm.weight") == \
        "blk.3.post_attention_norm.weight"
    assert gguf_ref.gguf_name("phi3", "model.layers.0.mlp.gate_up_proj.weight") == "blk.0.ffn_up.weight"
    with pytest.raises(gguf_ref.Unsupported):
        gguf_ref.gguf_name("llama", "model.layers.0.self_attn.qkv_proj.weight")


# ---- the reader -----------------------------------------------------------------------------------------

def _s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def make_gguf(tensors, kv=(), align=32, pad_byte=0, size_delta=0):
    """tensors: [(name, ne, type code, raw bytes)]; kv: [(key, type code, packed value)]."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for k, t, v in kv:
        out += _s(k) + struct.pack("<I", t) + v
    off = 0
    for name, ne, t, raw in tensors:
        out += _s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", t, off)
        off = gguf_read.pad(off + len(raw), align)
    out += bytes([pad_byte]) * (gguf_read.pad(len(out), align) - len(out))
    for _, _, _, raw in tensors:
        out += raw + bytes(gguf_read.pad(len(raw), align) - len(raw))
    return out[:len(out) + size_delta] if size_delta < 0 else out + bytes(size_delta)


def test_reader_round_trip():
    a = np.arange(6, dtype=np.float32)
    h = np.array([1.5, -2.0, 3.25], np.float16)
    kv = [("general.architecture", 8, _s("llama")), ("x.u32", 4, struct.pack("<I", 7)),
          ("x.f32", 6, struct.pack("<f", 0.5)), ("x.bool", 7, b"\x01"),
          ("x.arr", 9, struct.pack("<IQ", 5, 2) + struct.pack("<ii", -1, 3)),
          ("x.strs", 9, struct.pack("<IQ", 8, 2) + _s("a b") + _s("Ġc"))]
    g = gguf_read.read(make_gguf([("t.a", (3, 2), 0, a.tobytes()), ("t.h", (3,), 1, h.tobytes())], kv))
    assert list(g.kv) == [k for k, _, _ in kv]
    assert g.kv["x.u32"] == gguf_read.Value("u32", 7) and g.kv["x.f32"] == gguf_read.Value("f32", 0.5)
    assert g.kv["x.bool"].value is True and g.kv["x.arr"] == gguf_read.Value("arr", [-1, 3], "i32")
    assert g.kv["x.strs"].value == ["a b", "Ġc"]
    assert np.array_equal(g.array("t.a"), a.reshape(2, 3)) and g.tensors[0].shape == (2, 3)
    assert np.array_equal(g.array("t.h"), h.astype(np.float32))
    assert g.tensors[1].offset == 32


@pytest.mark.parametrize("broken,match", [
    (lambda b: b[:-1], "past the end of the file"),
    (lambda b: b + b"\0" * 32, "file size"),
    (lambda b: b.replace(b"GGUF", b"GGUG", 1), "magic"),
])
def test_reader_refuses_bad_layouts(broken, match):
    good = make_gguf([("t", (4,), 0, bytes(16))])
    gguf_read.read(good)
    with pytest.raises(gguf_read.GGUFError, match=match):
        gguf_read.read(broken(good))


def test_reader_refuses_bad_padding_and_offsets():
    with pytest.raises(gguf_read.GGUFError, match="padding"):
        gguf_read.read(make_gguf([("t", (4,), 0, bytes(16))], pad_byte=1))
    good = bytearray(make_gguf([("a", (4,), 0, bytes(16)), ("b", (4,), 0, bytes(16))]))
    # the second tensor's offset (32) moved to 48: not aligned
    pos = bytes(good).rindex(struct.pack("<IQ", 0, 32))
    good[pos + 4:pos + 12] = struct.pack("<Q", 48)
    with pytest.raises(gguf_read.GGUFError, match="offset"):
        gguf_read.read(bytes(good))
