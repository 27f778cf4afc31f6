#!/usr/bin/python3
"""bench/run's hand-written baseline (issue 5, figure 8): the linear merge a user would write with numpy
alone. Reads each model's safetensors shards (np.fromfile per tensor), converts bf16 to float32 through
uint16 views, computes sum(w_i * x_i) / sum(w_i) in float32, rounds back to bf16 (round to nearest even)
and writes one model.safetensors to OUTDIR, one tensor at a time. Single-threaded, as such scripts are.
Usage: bench/numpy_merge.py OUTDIR MODEL:WEIGHT [MODEL:WEIGHT ...]"""
import glob, json, os, struct, sys

import numpy as np


def tensors(folder):
    """name -> (path, absolute offset, nbytes, dtype, shape)"""
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with open(path, "rb") as f:
            (hlen,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(hlen))
        header.pop("__metadata__", None)
        for name, t in header.items():
            a, b = t["data_offsets"]
            out[name] = (path, 8 + hlen + a, b - a, t["dtype"], t["shape"])
    return out


def load_f32(entry):
    path, off, n, dtype, _ = entry
    assert dtype == "BF16", dtype
    u = np.fromfile(path, dtype=np.uint16, count=n // 2, offset=off)
    return (u.astype(np.uint32) << 16).view(np.float32)


def to_bf16(x):
    u = x.view(np.uint32)
    u = u + (np.uint32(0x7FFF) + ((u >> 16) & 1))
    return (u >> 16).astype(np.uint16)


def main():
    outdir = sys.argv[1]
    models = [(a.rsplit(":", 1)[0], float(a.rsplit(":", 1)[1])) for a in sys.argv[2:]]
    maps = [tensors(m) for m, _ in models]
    wsum = sum(w for _, w in models)
    names = sorted(maps[0], key=lambda n: (maps[0][n][0], maps[0][n][1]))
    header, offset = {}, 0
    for name in names:
        _, _, n, _, shape = maps[0][name]
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for name in names:
            acc = None
            for (folder, w), tmap in zip(models, maps):
                x = load_f32(tmap[name])
                x *= np.float32(w)
                acc = x if acc is None else acc + x
            acc /= np.float32(wsum)
            f.write(to_bf16(acc).tobytes())


main()
