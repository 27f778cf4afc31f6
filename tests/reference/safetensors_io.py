"""Safetensors reading and writing, and dtype rounding, written from the format description
(docs/merge-contract.md D15) with json, struct and numpy only.

Values of the float dtypes are handled as float32 numpy arrays holding values that are exactly
representable in the tensor's dtype ("dtype values carried in float32"). Raw storage:

    F32  -> numpy float32
    F16  -> numpy float16 (numpy's float32 -> float16 cast rounds to nearest even)
    BF16 -> numpy uint16 bit patterns (numpy has no bfloat16); rounding done here by hand

File layout: u64 little-endian N, N bytes of JSON header, then the data; offsets are relative to
the start of the data (8 + N).
"""

import json
import os
import struct

import numpy as np

# The safetensors library's Dtype enum order. Shard writers sort tensors by dtype descending in this
# order, then by name ascending (D15).
DTYPE_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
               "I32", "U32", "F32", "F64", "I64", "U64"]

DTYPE_SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
              "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}

# numpy dtype used to hold the raw little-endian elements of each safetensors dtype.
STORAGE = {"BOOL": np.uint8, "U8": np.uint8, "I8": np.int8, "F8_E5M2": np.uint8, "F8_E4M3": np.uint8,
           "I16": "<i2", "U16": "<u2", "F16": "<f2", "BF16": "<u2", "I32": "<i4", "U32": "<u4",
           "F32": "<f4", "F64": "<f8", "I64": "<i8", "U64": "<u8"}

FLOAT_DTYPES = ("BF16", "F16", "F32")

# mergekit / torch dtype names of the computable types.
CONFIG_DTYPE = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
TORCH_NAME = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def config_dtype(name):
    """A mergekit config dtype string ("bfloat16", "torch.float16", ...) -> safetensors name."""
    if name is None:
        return None
    if name.startswith("torch."):
        name = name[len("torch."):]
    return CONFIG_DTYPE[name]


# ---- bfloat16 / float16 <-> float32 --------------------------------------------------------------

def f32_to_bf16_bits(x):
    """float32 values -> bfloat16 bit patterns (uint16), round to nearest, ties to even.
    NaN stays NaN (quiet). Overflow rounds to infinity as IEEE rounding does."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    lsb = (u >> 16) & 1
    rounded = ((u + 0x7FFF + lsb) >> 16).astype(np.uint16)
    is_nan = np.isnan(x)
    if is_nan.any():
        rounded = np.where(is_nan, ((u >> 16) | 0x0040).astype(np.uint16), rounded)
    return rounded.astype(np.uint16)


def bf16_bits_to_f32(bits):
    """bfloat16 bit patterns -> float32 values (exact)."""
    bits = np.ascontiguousarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def round_to(dtype, x):
    """Rounds float32 values to the nearest value of `dtype` (RNE), returned as float32."""
    x = np.asarray(x, dtype=np.float32)
    if dtype == "F32":
        return x
    if dtype == "BF16":
        return bf16_bits_to_f32(f32_to_bf16_bits(x)).reshape(x.shape)
    if dtype == "F16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(np.float32)
    raise ValueError(f"not a computable dtype: {dtype}")


def round_scalar(dtype, v):
    """A Python number rounded the way torch stores it in a tensor of `dtype`: first to float32 (the
    C++ conversion goes through float), then to the dtype. Returned as a numpy float32."""
    return np.float32(round_to(dtype, np.array([v], dtype=np.float32))[0])


def encode(dtype, values):
    """float32 values (exactly representable, or to be rounded RNE) -> raw bytes of `dtype`."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if dtype == "F32":
        return values.astype("<f4").tobytes()
    if dtype == "F16":
        with np.errstate(over="ignore"):
            return values.astype("<f2").tobytes()
    if dtype == "BF16":
        return f32_to_bf16_bits(values).astype("<u2").tobytes()
    raise ValueError(f"cannot encode {dtype}")


def decode(dtype, raw, shape):
    """Raw bytes of a float dtype -> float32 array of `shape` (exact)."""
    if dtype == "F32":
        arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif dtype == "F16":
        arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif dtype == "BF16":
        arr = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
    else:
        raise ValueError(f"cannot decode {dtype} as floats")
    return arr.reshape(shape)


def numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ---- reading ---------------------------------------------------------------------------------------

class StTensor:
    """One tensor of a safetensors file: dtype name, shape, and its raw bytes."""

    def __init__(self, name, dtype, shape, raw):
        self.name = name
        self.dtype = dtype
        self.shape = tuple(int(d) for d in shape)
        self.raw = raw

    def f32(self):
        return decode(self.dtype, self.raw, self.shape)

    def __repr__(self):
        return f"StTensor({self.name!r}, {self.dtype}, {list(self.shape)})"


def read_header(path_or_bytes):
    """Returns (header_dict, data_start) of a safetensors file (path) or of its bytes."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n].decode("utf-8"))
        return header, 8 + n
    with open(path_or_bytes, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    return header, 8 + n


def read_safetensors(path):
    """Reads one safetensors file. Returns (tensors {name: StTensor}, metadata dict or None)."""
    with open(path, "rb") as f:
        data = f.read()
    header, start = read_header(data)
    meta = header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        raw = data[start + b:start + e]
        if len(raw) != e - b:
            raise ValueError(f"{path}: tensor {name} runs past the end of the file")
        tensors[name] = StTensor(name, info["dtype"], info["shape"], raw)
    return tensors, meta


def weight_files(folder):
    """The weight files of a checkpoint folder, in the order they are listed: model.safetensors, or
    the shards named by model.safetensors.index.json."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        return sorted(set(weight_map.values()))
    return ["model.safetensors"]


def read_folder(folder):
    """All tensors of a checkpoint folder: {name: StTensor}."""
    out = {}
    for fname in weight_files(folder):
        tensors, _ = read_safetensors(os.path.join(folder, fname))
        for name, t in tensors.items():
            if name in out:
                raise ValueError(f"{folder}: tensor {name} appears in two files")
            out[name] = t
    return out


# ---- writing ---------------------------------------------------------------------------------------

def layout_order(entries):
    """The reference writer's order (D15): dtype descending in DTYPE_ORDER, then name ascending
    (byte order). entries: iterable of (name, dtype, shape)."""
    return sorted(entries, key=lambda e: (-DTYPE_ORDER.index(e[1]), e[0].encode("utf-8")))


def header_bytes(entries):
    """The complete header (8-byte length + JSON + space padding to a multiple of 8) that the
    reference writer produces for tensors (name, dtype, shape), and the ordered list of
    (name, dtype, shape, begin, end)."""
    ordered = layout_order(entries)
    doc = {"__metadata__": {"format": "pt"}}
    placed = []
    offset = 0
    for name, dtype, shape in ordered:
        size = numel(shape) * DTYPE_SIZE[dtype]
        doc[name] = {"dtype": dtype, "shape": [int(d) for d in shape],
                     "data_offsets": [offset, offset + size]}
        placed.append((name, dtype, tuple(shape), offset, offset + size))
        offset += size
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text, placed


def safetensors_bytes(tensors):
    """tensors: {name: (dtype, shape, raw bytes)} -> the complete file bytes, in the reference
    writer's layout."""
    head, placed = header_bytes([(n, d, s) for n, (d, s, _) in tensors.items()])
    parts = [head]
    for name, dtype, shape, b, e in placed:
        raw = tensors[name][2]
        if len(raw) != e - b:
            raise ValueError(f"{name}: {len(raw)} bytes for {dtype}{list(shape)}")
        parts.append(raw)
    return b"".join(parts)


def write_safetensors(path, tensors):
    """Writes {name: (dtype, shape, raw bytes)} to path."""
    with open(path, "wb") as f:
        f.write(safetensors_bytes(tensors))


def write_raw_safetensors(path, header_obj, data, pad=True):
    """Writes an arbitrary header object and data blob (for malformed files in tests)."""
    text = json.dumps(header_obj, separators=(",", ":")).encode("utf-8")
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def index_json_text(weight_map, total_size):
    """The index file text of D15: indent 2, keys sorted, trailing newline."""
    return json.dumps({"metadata": {"total_size": int(total_size)}, "weight_map": weight_map},
                      indent=2, sort_keys=True) + "\n"
