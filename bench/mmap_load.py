#!/usr/bin/python3
"""bench/run's mmap loader (issue 5, figure 5): what transformers/vLLM-style loaders do to a checkpoint
folder. Every *.safetensors file of FOLDER is mapped with numpy.memmap (MAP_SHARED, read-only), its
tensors are touched in file order (by data offset), and each tensor is summed in float32 (bf16 and f16
converted; the sum is done in 16 Mi-element chunks so the temporaries stay small). Prints the number of
bytes touched and a checksum (the sum of the tensor sums), so two folders with the same bytes print the
same line.
Usage: bench/mmap_load.py FOLDER"""
import glob, json, os, struct, sys

import numpy as np

CHUNK = 16 << 20


def as_f32(raw, dtype):
    if dtype == "BF16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    if dtype == "F16":
        return raw.view(np.float16).astype(np.float32)
    if dtype == "F32":
        return raw.view(np.float32)
    return raw.astype(np.float32)


def main():
    total_bytes, checksum = 0, 0.0
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.safetensors"))):
        with open(path, "rb") as f:
            (hlen,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(hlen))
        header.pop("__metadata__", None)
        m = np.memmap(path, dtype=np.uint8, mode="r")
        base = 8 + hlen
        width = {"BF16": 2, "F16": 2, "F32": 4}
        for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            a, b = t["data_offsets"]
            w = width.get(t["dtype"], 1)
            step = CHUNK * w
            s = 0.0
            for off in range(base + a, base + b, step):
                s += float(as_f32(m[off:min(off + step, base + b)], t["dtype"]).sum(dtype=np.float64))
            checksum += s
            total_bytes += b - a
        del m
    print(f"{total_bytes} bytes touched, checksum {checksum:.6e}")


main()
