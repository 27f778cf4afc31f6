"""Helpers of the tests that read mounts through the block cache (test_cache.py and the fault tests):
the standard multi-block models and merge, the reference of a config (`build --no-cache`) with its
plan, the counters of a mount, `mergemount cache stats`, and reading folders past the page cache."""

import json
import math
import mmap
import os
import re
import time

import config_eval
import mmtest

# Multi-block tensors: embed/lm_head 2048x512 bf16 = 2 MiB (2 blocks), MLP 1536x512 = 1.5 MiB (2 blocks,
# the last one short), attention 0.5 MiB / 128 KiB (1 block), norms (1 tiny block). ~15.5 MiB of bf16.
SIZES = dict(layers=2, hidden=512, intermediate=1536, vocab=2048, heads=8, kv_heads=2)

STATS_KEYS = {"blocks_computed", "cache_hits", "cache_misses", "singleflight_waits", "bytes_served",
              "bytes_computed", "evictions", "prepasses_run", "cache_puts_stored", "cache_puts_dropped",
              "cache_corrupt", "cache_resets", "cache_enabled", "cache_dir"}
DTYPE_SIZE = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1}
BLOCK = 1 << 20
UNITS = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def stats(mnt):
    """The mount's counters (user.mergemount.stats of its root), checked for the documented keys."""
    s = json.loads(os.getxattr(str(mnt), "user.mergemount.stats"))
    assert STATS_KEYS <= set(s), f"missing keys in user.mergemount.stats: {sorted(STATS_KEYS - set(s))}"
    return s


def show(*objs):
    """Full text of counters for assertion messages (pytest shortens long dicts)."""
    return " ".join(json.dumps(o, sort_keys=True) for o in objs)


def wait_stats(mnt, cond, timeout=10.0):
    """Polls the counters until cond(stats) (the writer thread commits asynchronously); returns the last."""
    deadline = time.monotonic() + timeout
    s = stats(mnt)
    while not cond(s) and time.monotonic() < deadline:
        time.sleep(0.05)
        s = stats(mnt)
    return s


def plan_json(config, *args):
    r = mmtest.mergemount("plan", config, "--json", *args, check=True)
    return json.loads(r.stdout)


def block_bytes(dtype):
    es = DTYPE_SIZE[dtype]
    return (BLOCK // es) * es


def tensor_nbytes(t):
    return math.prod(t["shape"]) * DTYPE_SIZE[t["dtype"]]


def tensor_blocks(t):
    return math.ceil(tensor_nbytes(t) / block_bytes(t["dtype"]))


def total_blocks(plan):
    """Distinct blocks of a plan: per tensor ceil(bytes / block_bytes)."""
    return sum(tensor_blocks(t) for t in plan["tensors"])


def read_direct(path):
    """A whole file read with O_DIRECT: every byte comes from the daemon, none from the page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT wants
    try:
        chunks, off = [], 0
        while True:
            n = os.preadv(fd, [buf], off)
            chunks.append(bytes(buf[:n]))
            off += n
            if n < len(buf):
                return b"".join(chunks)
    finally:
        buf.close()
        os.close(fd)


def read_tree(mnt, direct=False):
    """{name: bytes} of every file of a (flat) checkpoint folder, read in 1 MiB pieces; direct: with
    O_DIRECT (a second pass over the same mount then reaches the daemon again)."""
    out = {}
    for name in sorted(os.listdir(mnt)):
        if direct:
            out[name] = read_direct(os.path.join(mnt, name))
            continue
        with open(os.path.join(mnt, name), "rb") as f:
            chunks = []
            while True:
                c = f.read(1 << 20)
                if not c:
                    break
                chunks.append(c)
        out[name] = b"".join(chunks)
    return out


def assert_same_tree(got, want, what="mount"):
    assert sorted(got) == sorted(want), f"{what}: files differ: {sorted(set(got) ^ set(want))}"
    bad = [n for n in sorted(want) if got[n] != want[n]]
    details = []
    for n in bad:
        g, w = got[n], want[n]
        first = next((i for i in range(min(len(g), len(w))) if g[i] != w[i]), min(len(g), len(w)))
        details.append(f"{n}: {len(g)} vs {len(w)} bytes, first difference at byte {first}")
    assert not bad, f"{what} differs from `build --no-cache`:\n" + "\n".join(details)


def cache_cmd(*args):
    return mmtest.mergemount("cache", *args, check=True).stdout


LABELS = ("directory", "blocks", "statistics", "stored", "size limit", "data.mdb on disk")


def human_bytes(text):
    m = re.fullmatch(r"([0-9.]+) (B|kB|MB|GB|TB)", text.strip())
    assert m, f"not a size: {text!r}"
    return float(m.group(1)) * UNITS[m.group(2)]


def cache_stats(cache_dir, *args):
    """`mergemount cache stats --cache-dir D` as {label: text}, with blocks/statistics as ints and
    stored/size limit/data.mdb on disk in bytes (as printed, 3 significant decimals)."""
    text = cache_cmd("stats", "--cache-dir", cache_dir, *args)
    out = {}
    for line in text.splitlines():
        for label in sorted(LABELS, key=len, reverse=True):
            if line.startswith(label + " "):
                out[label] = line[len(label):].strip()
                break
    assert set(out) == set(LABELS), f"`cache stats` lines missing: {sorted(set(LABELS) - set(out))}\n{text}"
    for k in ("blocks", "statistics"):
        out[k] = int(out[k])
    for k in ("stored", "size limit", "data.mdb on disk"):
        out[k] = human_bytes(out[k])
    return out


def make_big_models(make_model):
    return [make_model(seed, "bf16", shards=2 if seed == 2 else 1, **SIZES) for seed in (1, 2, 3)]


def linear3(a, b, c, out_dtype="bfloat16"):
    return {"merge_method": "linear",
            "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.3}},
                       {"model": c, "parameters": {"weight": [0.1, 0.6]}}],
            "dtype": "float32", "out_dtype": out_dtype}


class Case:
    """A config, the mount arguments, the reference folder (`build --no-cache`) and its plan."""

    def __init__(self, tmp, cfg, args=(), name="merge.yml", check_reference=False):
        self.cfg = cfg
        self.config = mmtest.write_config(tmp, cfg, name=name)
        self.args = [str(a) for a in args]
        built = tmp / (name + ".built")
        mmtest.build(self.config, built, "--no-cache", "--no-progress", *self.args)
        if check_reference and not isinstance(cfg, str):
            mmtest.assert_matches_reference(str(built), config_eval.evaluate(cfg).tensors)
        self.files = read_tree(str(built))
        self.plan = plan_json(self.config, *self.args)
        self.blocks = total_blocks(self.plan)
        self.tensor_bytes = sum(tensor_nbytes(t) for t in self.plan["tensors"])
        self.output_bytes = sum(len(d) for d in self.files.values())



def cached(cache_dir, *more):
    return ["--cache-dir", cache_dir, *map(str, more)]
