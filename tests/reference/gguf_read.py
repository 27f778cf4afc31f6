"""A small reader of GGUF files (llama.cpp's model format, version 3, little-endian), numpy only.

    g = gguf_read.read(path_or_bytes)
    g.kv          {key: Value(type, value, elem)} in file order
    g.tensors     [TensorInfo(name, ne, type, offset)] in file order (ne innermost first)
    g.data(t)     the raw bytes of tensor t (its info or its name)
    g.array(t)    its values as a numpy array in the safetensors order of dimensions (outermost first):
                  F32/F16/BF16 as float32, Q8_0 dequantized (d * q) as float32

A value keeps its GGUF type: Value.type is one of the type names below ("u32", "i32", "f32", "bool",
"str", "arr", ...); an array's elements are a list (strings as str, or bytes when they are not UTF-8) and
Value.elem is their type name. Strings are decoded as UTF-8 (bytes when they are not).

The reader checks the layout as gguf-py writes it and llama.cpp reads it, raising GGUFError:
magic "GGUF" and version 3; no key twice, no tensor name twice; the data section starts at the first
multiple of the alignment (general.alignment, default 32) after the tensor infos, with zero padding;
each tensor's offset is a multiple of the alignment, the tensors follow one another in file order with
no gap but zero padding to the alignment, their sizes are what their type and ne imply, and the file
ends exactly at the last tensor's padded end (gguf-py pads the last tensor too).
"""

import struct
from typing import NamedTuple

import numpy as np

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# value types (gguf-py's GGUFValueType)
VTYPES = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool", 8: "str", 9: "arr",
          10: "u64", 11: "i64", 12: "f64"}
VTYPE_CODE = {v: k for k, v in VTYPES.items()}
_SCALAR = {"u8": "<B", "i8": "<b", "u16": "<H", "i16": "<h", "u32": "<I", "i32": "<i", "f32": "<f", "u64": "<Q",
           "i64": "<q", "f64": "<d"}

# ggml tensor types we read: (name, elements per block, bytes per block)
GGML_TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 8: ("Q8_0", 32, 34), 30: ("BF16", 1, 2)}
GGML_CODE = {v[0]: k for k, v in GGML_TYPES.items()}


class GGUFError(Exception):
    pass


class Value(NamedTuple):
    type: str          # "u32", "str", "arr", ...
    value: object      # int, float, bool, str (bytes if not UTF-8), or a list for arrays
    elem: str = None   # arrays: the element type


class TensorInfo(NamedTuple):
    name: str
    ne: tuple          # dimensions, innermost first (the reverse of the safetensors shape)
    type: str          # "F32", "F16", "BF16", "Q8_0"
    offset: int        # relative to the data section

    @property
    def shape(self):
        return tuple(reversed(self.ne))

    @property
    def numel(self):
        n = 1
        for d in self.ne:
            n *= d
        return n

    @property
    def nbytes(self):
        _, block, size = GGML_TYPES[GGML_CODE[self.type]]
        if self.ne[0] % block:
            raise GGUFError(f"tensor {self.name}: ne[0] = {self.ne[0]} is not a multiple of {self.type}'s block "
                            f"of {block}")
        return self.numel // block * size


def pad(x, n=DEFAULT_ALIGNMENT):
    return (x + n - 1) // n * n


class _Cursor:
    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def take(self, n, what):
        if self.pos + n > len(self.buf):
            raise GGUFError(f"file ends inside {what} (at byte {self.pos}, {n} bytes wanted, "
                            f"{len(self.buf) - self.pos} left)")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def scalar(self, t, what):
        fmt = _SCALAR[t]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what):
        n = self.scalar("u64", what + " (length)")
        raw = bytes(self.take(n, what))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw

    def value(self, t, what):
        if t == "str":
            return self.string(what)
        if t == "bool":
            b = self.take(1, what)[0]
            if b not in (0, 1):
                raise GGUFError(f"{what}: bool byte {b} is neither 0 nor 1")
            return bool(b)
        if t == "arr":
            raise GGUFError(f"{what}: arrays of arrays are not supported")
        return self.scalar(t, what)


def _vtype(code, what):
    if code not in VTYPES:
        raise GGUFError(f"{what}: unknown value type {code}")
    return VTYPES[code]


class GGUF:
    def __init__(self, buf):
        self.buf = memoryview(buf)
        c = _Cursor(self.buf)
        if bytes(c.take(4, "magic")) != MAGIC:
            raise GGUFError("not a GGUF file (magic)")
        self.version = c.scalar("u32", "version")
        if self.version != 3:
            raise GGUFError(f"GGUF version {self.version}, not 3")
        n_tensors = c.scalar("u64", "tensor count")
        n_kv = c.scalar("u64", "key/value count")
        self.kv = {}
        for i in range(n_kv):
            key = c.string(f"key {i}")
            if key in self.kv:
                raise GGUFError(f"key {key!r} twice")
            t = _vtype(c.scalar("u32", f"type of {key}"), key)
            if t == "arr":
                et = _vtype(c.scalar("u32", f"element type of {key}"), key)
                n = c.scalar("u64", f"length of {key}")
                self.kv[key] = Value("arr", [c.value(et, f"{key}[{j}]") for j in range(n)], et)
            else:
                self.kv[key] = Value(t, c.value(t, key))
        self.alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in self.kv:
            a = self.kv["general.alignment"]
            if a.type != "u32" or a.value <= 0 or a.value % 8:
                raise GGUFError(f"general.alignment {a}")
            self.alignment = a.value
        self.tensors = []
        names = set()
        for i in range(n_tensors):
            name = c.string(f"tensor {i} name")
            if name in names:
                raise GGUFError(f"tensor {name!r} twice")
            names.add(name)
            nd = c.scalar("u32", f"{name}: n_dims")
            if not 1 <= nd <= 4:
                raise GGUFError(f"{name}: n_dims {nd}")
            ne = tuple(c.scalar("u64", f"{name}: ne") for _ in range(nd))
            code = c.scalar("u32", f"{name}: type")
            if code not in GGML_TYPES:
                raise GGUFError(f"{name}: ggml type {code} is not one this reader knows")
            off = c.scalar("u64", f"{name}: offset")
            self.tensors.append(TensorInfo(name, ne, GGML_TYPES[code][0], off))
        self.header_end = c.pos
        self.data_start = pad(c.pos, self.alignment)
        if self.data_start > len(self.buf):
            raise GGUFError("file ends inside the padding before the data section")
        if any(self.buf[self.header_end:self.data_start]):
            raise GGUFError("non-zero padding before the data section")
        self._by_name = {t.name: t for t in self.tensors}
        expect = 0
        for t in self.tensors:
            if t.offset % self.alignment:
                raise GGUFError(f"{t.name}: offset {t.offset} is not a multiple of {self.alignment}")
            if t.offset != expect:
                raise GGUFError(f"{t.name}: offset {t.offset}, the previous tensor's padded end is {expect}")
            end = t.offset + t.nbytes
            expect = pad(end, self.alignment)
            if self.data_start + expect > len(self.buf):
                raise GGUFError(f"{t.name}: its data (padded) ends at {self.data_start + expect}, past the end of "
                                f"the file ({len(self.buf)})")
            if any(self.buf[self.data_start + end:self.data_start + expect]):
                raise GGUFError(f"{t.name}: non-zero padding after its data")
        if self.data_start + expect != len(self.buf):
            raise GGUFError(f"file size {len(self.buf)}, the format implies {self.data_start + expect}")
        self.size = len(self.buf)

    def info(self, t):
        return self._by_name[t] if isinstance(t, str) else t

    def data(self, t):
        t = self.info(t)
        start = self.data_start + t.offset
        return bytes(self.buf[start:start + t.nbytes])

    def array(self, t):
        t = self.info(t)
        return decode(t.type, self.data(t), t.shape)

    def value(self, key):
        return self.kv[key].value


def decode(typ, raw, shape):
    """Raw tensor bytes of a ggml type as float32 values of `shape` (Q8_0: d * q)."""
    if typ == "F32":
        v = np.frombuffer(raw, "<f4").astype(np.float32)
    elif typ == "F16":
        v = np.frombuffer(raw, "<f2").astype(np.float32)
    elif typ == "BF16":
        v = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    elif typ == "Q8_0":
        blocks = np.frombuffer(raw, np.uint8).reshape(-1, 34)
        d = blocks[:, :2].copy().view("<f2").astype(np.float32)
        q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
        v = (q * d).reshape(-1)
    else:
        raise GGUFError(f"cannot decode {typ}")
    return v.reshape(shape)


def read(src):
    """A GGUF from a path or from bytes."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return GGUF(bytes(src))
    with open(src, "rb") as f:
        return GGUF(f.read())


def describe(g, max_array=8):
    """A text listing of the key/values and tensors (for messages)."""
    lines = []
    for k, v in g.kv.items():
        if v.type == "arr":
            shown = v.value[:max_array]
            more = f" ... ({len(v.value)})" if len(v.value) > max_array else ""
            lines.append(f"{k}: arr[{v.elem}] {shown!r}{more}")
        else:
            lines.append(f"{k}: {v.type} {v.value!r}")
    for t in g.tensors:
        lines.append(f"tensor {t.name} {t.type} ne={list(t.ne)} @{t.offset}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    print(describe(read(sys.argv[1])))
