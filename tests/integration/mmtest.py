"""Helpers of the integration tests: where the binaries are, writing configs as YAML, running
mergemount, mounting for real, and comparing a checkpoint folder against the numpy reference."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))

import safetensors_io as st  # noqa: E402

MERGEMOUNT = os.environ.get("MERGEMOUNT_BIN", os.path.join(REPO, "build", "tools", "mergemount"))
MKMODEL = os.environ.get("MM_MKMODEL_BIN", os.path.join(REPO, "build", "tools", "mm-mkmodel"))
FUSERMOUNT = shutil.which("fusermount3")

MOUNT_TIMEOUT = 10.0
# Lines of the daemon's stderr that fail a test that otherwise passed.
# The daemon's own errors start with "mergemount: error:"; a warning may quote a system error text
# ("Input/output error") and is not a failure. Sanitizer reports always are.
BAD_STDERR = re.compile(r"^mergemount: error:|AddressSanitizer|LeakSanitizer|runtime error|ThreadSanitizer",
                        re.IGNORECASE | re.MULTILINE)


def fuse_available():
    """(ok, reason)."""
    if not os.path.exists("/dev/fuse"):
        return False, "/dev/fuse is missing (no FUSE in this environment)"
    if FUSERMOUNT is None:
        return False, "fusermount3 is not installed (apt-get install fuse3)"
    return True, ""


# ---- YAML ----------------------------------------------------------------------------------------------

def _scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        text = repr(v)
        if "e" in text or "E" in text:  # YAML 1.1 floats need a dot; keep plain decimals
            text = format(v, ".20f").rstrip("0")
            if text.endswith("."):
                text += "0"
        return text
    if isinstance(v, str):
        return json.dumps(v)  # a double-quoted YAML scalar
    raise TypeError(f"cannot write {type(v).__name__} as YAML")


def _is_block(v):
    if isinstance(v, dict):
        return bool(v)
    if isinstance(v, list):
        return any(isinstance(e, (dict, list)) for e in v)
    return False


def _flow(v):
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(e) for e in v) + "]"
    return _scalar(v)


def _emit(obj, indent):
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if _is_block(v):
                lines.append(f"{pad}{k}:")
                lines.extend(_emit(v, indent + 2))
            else:
                lines.append(f"{pad}{k}: {_flow(v)}")
    else:
        for item in obj:
            if _is_block(item):
                sub = _emit(item, indent + 2)
                lines.append(f"{pad}- {sub[0][indent + 2:]}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_flow(item)}")
    return lines


def to_yaml(cfg):
    """A config dict as block-style YAML text."""
    return "\n".join(_emit(cfg, 0)) + "\n"


def write_config(folder, cfg, name="merge.yml"):
    """Writes cfg (a dict, or YAML text as is) to folder/name; returns the path."""
    path = os.path.join(str(folder), name)
    text = cfg if isinstance(cfg, str) else to_yaml(cfg)
    with open(path, "w") as f:
        f.write(text)
    return path


# ---- running the program -------------------------------------------------------------------------------

def run(args, timeout=120, check=False):
    """Runs a command; returns CompletedProcess with text stdout/stderr."""
    r = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {r.returncode}\nstdout:\n{r.stdout}\n"
                             f"stderr:\n{r.stderr}")
    return r


def mergemount(*args, **kw):
    return run([MERGEMOUNT, *map(str, args)], **kw)


def build(config, outdir, *args):
    """`mergemount build` that must succeed; returns outdir."""
    mergemount("build", config, outdir, *args, check=True)
    return str(outdir)


def bad_stderr_lines(text):
    return [ln for ln in text.splitlines() if BAD_STDERR.search(ln)]


class Mount:
    """`mergemount mount CONFIG MNT -f ARGS` for the life of a with-block.

    Enter: starts the daemon with stderr captured and waits (<= 10 s) until MNT is a mount point,
    failing early with the daemon's stderr if it exits. Exit: `fusermount3 -u`, then the daemon must
    exit 0 with no error or sanitizer lines on stderr (but error lines matching the regex `allow`,
    which fault tests expect). If the block raised, the mount is torn down
    forcefully (lazy unmount, then terminate/kill) and the daemon's stderr is printed."""

    def __init__(self, config, mountpoint, args=(), allow=None):
        self.config = str(config)
        self.path = str(mountpoint)
        self.args = [str(a) for a in args]
        self.allow = re.compile(allow) if allow else None  # error lines the test expects (a regex)
        self.proc = None
        self._err = None

    def stderr(self):
        if self._err is None:
            return ""
        self._err.seek(0)
        return self._err.read().decode("utf-8", "replace")

    def __enter__(self):
        os.makedirs(self.path, exist_ok=True)
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([MERGEMOUNT, "mount", self.config, self.path, "-f", *self.args],
                                     stdin=subprocess.DEVNULL, stdout=self._err, stderr=self._err)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(self.path):
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"mergemount mount exited {rc} before the mount was up:\n{self.stderr()}")
            if time.monotonic() > deadline:
                self.force_cleanup()
                raise AssertionError(f"{self.path} not mounted after {MOUNT_TIMEOUT} s:\n{self.stderr()}")
            time.sleep(0.02)
        return self

    def unmount(self):
        """Clean unmount; returns (fusermount result, daemon exit status)."""
        r = None
        for _ in range(50):  # EBUSY while the kernel still holds a file of ours briefly
            r = run([FUSERMOUNT, "-u", self.path], timeout=30)
            if r.returncode == 0 or not os.path.ismount(self.path):
                break
            time.sleep(0.1)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.force_cleanup()
            raise AssertionError(f"mergemount did not exit after fusermount3 -u:\n{self.stderr()}")
        return r, rc

    def force_cleanup(self):
        if os.path.ismount(self.path):
            subprocess.run([FUSERMOUNT, "-u", "-z", self.path], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __exit__(self, exc_type, exc, tb):
        if self.proc is None:
            return False
        if exc_type is not None:
            self.force_cleanup()
            sys.stderr.write(f"--- mergemount stderr ---\n{self.stderr()}\n")
            self._close()
            return False
        r, rc = self.unmount()
        text = self.stderr()
        self._close()
        assert r is not None and r.returncode == 0, f"fusermount3 -u failed: {r.stderr if r else ''}"
        assert rc == 0, f"mergemount exited {rc} after unmount:\n{text}"
        bad = [ln for ln in bad_stderr_lines(text) if not (self.allow and self.allow.search(ln))]
        assert not bad, "unexpected lines on mergemount's stderr:\n" + "\n".join(bad)
        return False

    def _close(self):
        if self._err is not None:
            self._err.close()
            self._err = None
        self.proc = None


# ---- checkpoint folders --------------------------------------------------------------------------------

def read_weights(folder):
    """{name: StTensor} of an output folder, checking that the weight files are consistent: one
    model.safetensors without index, or the shards the index names and nothing else."""
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    index_path = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
        assert files == sorted(set(weight_map.values())), (files, sorted(set(weight_map.values())))
        out = {}
        for fname in files:
            tensors, meta = st.read_safetensors(os.path.join(folder, fname))
            assert meta == {"format": "pt"}, (fname, meta)
            for name, t in tensors.items():
                assert weight_map.get(name) == fname, f"{name} is in {fname} but the index says {weight_map.get(name)}"
                out[name] = t
        assert set(out) == set(weight_map), sorted(set(weight_map) ^ set(out))
        return out
    assert files == ["model.safetensors"], files
    tensors, meta = st.read_safetensors(os.path.join(folder, "model.safetensors"))
    assert meta == {"format": "pt"}, meta
    return tensors


def describe_mismatch(name, dtype, want, got):
    w = want.reshape(-1)
    g = got.reshape(-1)
    diff = np.nonzero(~((w == g) | (np.isnan(w) & np.isnan(g))))[0]
    first = ", ".join(f"[{i}] want {w[i]!r} got {g[i]!r}" for i in diff[:5])
    return f"{name} ({dtype}): {len(diff)} of {w.size} elements differ; {first}"


def assert_matches_reference(folder, expected):
    """Every tensor of the folder equals the reference bit for bit (same names, dtypes, shapes)."""
    return assert_bitwise(read_weights(folder), expected)


def assert_bitwise(got, expected, nan_bits=True):
    """Every tensor of `got` ({name: StTensor}) equals the reference `expected` ({name: (dtype, values)})
    bit for bit, with the same names, dtypes and shapes. Returns got. nan_bits=False lets a NaN match
    any NaN: which NaN an operation on two NaN (or 0 * inf) yields depends on the order of the operands
    in the machine instruction, which neither torch nor numpy defines; every other bit must match."""
    def differs(name, dtype, values, t):
        want = st.encode(dtype, values)
        if t.raw == want:
            return None
        if not nan_bits:
            word = np.uint32 if dtype == "F32" else np.uint16
            g, w = np.frombuffer(t.raw, word), np.frombuffer(want, word)
            both_nan = np.isnan(t.f32().reshape(-1)) & np.isnan(np.asarray(values, np.float32).reshape(-1))
            if np.array_equal(g[~both_nan], w[~both_nan]):
                return None
        return describe_mismatch(name, dtype, values, t.f32())
    _assert_tensors(got, expected, differs)
    return got


MAX_PROBLEMS = 24   # tensors described when an output differs from the reference


def _assert_tensors(got, expected, compare):
    """Shared by the comparisons: same names, and per tensor the same dtype and shape, then
    compare(name, dtype, values, t) -> a problem description or None."""
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    assert not missing and not extra, (f"tensor names differ: {len(missing)} missing {missing[:12]}, "
                                       f"{len(extra)} extra {extra[:12]}")
    problems = []
    for name, (dtype, values) in sorted(expected.items()):
        t = got[name]
        if t.dtype != dtype or t.shape != tuple(values.shape):
            problems.append(f"{name}: got {t.dtype}{list(t.shape)}, want {dtype}{list(values.shape)}")
            continue
        problem = compare(name, dtype, values, t)
        if problem:
            problems.append(problem)
    assert not problems, (f"output differs from the reference in {len(problems)} of {len(expected)} tensors:\n"
                          + "\n".join(problems[:MAX_PROBLEMS])
                          + (f"\n... and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""))


def tensor_bytes(t):
    return st.numel(t.shape) * st.DTYPE_SIZE[t.dtype]


def files_of(folder):
    return sorted(os.listdir(folder))


def in_threads(n, fn):
    """Runs fn(i) for i < n on n threads at once; returns what they found wrong: the items of the lists
    fn returns, and the repr of anything fn raised."""
    errors = []

    def run(i):
        try:
            errors.extend(fn(i) or [])
        except Exception as e:  # noqa: BLE001 - reported to the caller
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def wait_for(cond, timeout=10.0):
    """Polls cond() every 20 ms until it is true (True) or `timeout` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def hf_cache_model(src, repo_id, revision="main", commit=None):
    """Puts a copy of model folder `src` into the Hugging Face cache ($HF_HUB_CACHE) the way
    `hf download` lays it out: blobs named by content hash, a snapshot folder of relative symlinks,
    and refs/<revision> holding the commit hash. Returns the snapshot folder."""
    cache = os.environ["HF_HUB_CACHE"]
    org, name = repo_id.split("/")
    repo = os.path.join(cache, f"models--{org}--{name}")
    commit = commit or hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snap = os.path.join(repo, "snapshots", commit)
    os.makedirs(snap, exist_ok=True)
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    for fname in sorted(os.listdir(src)):
        data = read_file(os.path.join(src, fname))
        blob = hashlib.sha256(data).hexdigest()
        with open(os.path.join(repo, "blobs", blob), "wb") as f:
            f.write(data)
        link = os.path.join(snap, fname)
        if not os.path.lexists(link):
            os.symlink(os.path.join("..", "..", "blobs", blob), link)
    with open(os.path.join(repo, "refs", revision), "w") as f:
        f.write(commit)
    return snap


# ---- merge methods: availability, derived models, ulp comparison ------------------------------------------

_METHOD_STATE = {}


def skip_unless_implemented(config, method):
    """Skips the calling test when `mergemount plan CONFIG` refuses `method` as "not implemented yet"
    (so method tests can land before the method does); asked once per method and session."""
    import pytest
    if method not in _METHOD_STATE:
        r = mergemount("plan", config, timeout=60)
        _METHOD_STATE[method] = r.returncode != 0 and "not implemented yet" in r.stderr
    if _METHOD_STATE[method]:
        pytest.skip(f"{method}: not implemented yet in mergemount")


def derive_model(src, dest, fn):
    """A copy of model folder `src` at `dest` (config, tokenizer, ...) whose weights are
    fn(name, dtype, float32 values) -> values, in one model.safetensors (same names, dtypes, shapes)."""
    os.makedirs(dest)
    for fname in os.listdir(src):
        if not fname.endswith(".safetensors") and fname != "model.safetensors.index.json":
            shutil.copy(os.path.join(src, fname), dest)
    out = {}
    for name, t in st.read_folder(src).items():
        values = np.asarray(fn(name, t.dtype, t.f32()), np.float32).reshape(t.shape)
        out[name] = (t.dtype, t.shape, st.encode(t.dtype, values))
    st.write_safetensors(os.path.join(dest, "model.safetensors"), out)
    return str(dest)


_ORDER_BITS = {"BF16": (np.uint16, 15), "F16": (np.uint16, 15), "F32": (np.uint32, 31)}


def _ordered(dtype, values):
    """Values of `dtype` mapped to integers that count representable values (so the difference of two
    is their distance in ulps); +0 and -0 both map to 0."""
    if dtype == "F32":
        bits = np.asarray(values, np.float32).view(np.uint32).astype(np.int64)
    elif dtype == "F16":
        bits = np.asarray(values, np.float32).astype(np.float16).view(np.uint16).astype(np.int64)
    else:
        bits = st.f32_to_bf16_bits(values).astype(np.int64)
    _, top = _ORDER_BITS[dtype]
    sign = bits >> top
    mag = bits & ((1 << top) - 1)
    return np.where(sign == 1, -mag, mag)


def ulp_distance(dtype, a, b):
    """Elementwise distance in ulps of `dtype` between two arrays of dtype values (NaN == NaN: 0; NaN
    against a number: a huge distance)."""
    a = np.asarray(a, np.float32).reshape(-1)
    b = np.asarray(b, np.float32).reshape(-1)
    d = np.abs(_ordered(dtype, a) - _ordered(dtype, b))
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    d = np.where(nan_a & nan_b, 0, d)
    return np.where(nan_a ^ nan_b, 1 << 40, d)


def assert_within_ulp(got, expected, max_ulp=2, context=None):
    """Every tensor of `got` ({name: StTensor}) is within max_ulp ulps (of its dtype) of the reference
    `expected` ({name: (dtype, values)}), elementwise, with the same names, dtypes and shapes.
    context(name, flat_indexes) may add lines about the worst elements (e.g. the inputs)."""
    def too_far(name, dtype, values, t):
        g = t.f32().reshape(-1)
        w = values.reshape(-1)
        d = ulp_distance(dtype, g, w)
        bad = np.nonzero(d > max_ulp)[0]
        if not bad.size:
            return None
        worst = bad[np.argsort(-d[bad], kind="stable")][:4]
        lines = [f"{name} ({dtype}): {bad.size} of {w.size} elements more than {max_ulp} ulp from the "
                 f"reference (max {int(d.max())} ulp); " +
                 "; ".join(f"[{i}] got {g[i]!r} want {w[i]!r} ({int(d[i])} ulp)" for i in worst)]
        if context:
            lines += ["    " + ln for ln in context(name, worst)]
        return "\n".join(lines)
    _assert_tensors(got, expected, too_far)


def method_config(method, entries, base=None, **top):
    """A `models:` config: entries = [(model folder, per-model parameters or None)], an optional
    base_model, and top-level keys (parameters=..., dtype=..., out_dtype=...; None values left out)."""
    cfg = {"merge_method": method,
           "models": [{"model": m, "parameters": p} if p else {"model": m} for m, p in entries]}
    if base is not None:
        cfg["base_model"] = base
    cfg.update({k: v for k, v in top.items() if v is not None})
    return cfg


def run_merge(tmp_path, mount, cfg, *args, name="merge.yml"):
    """Mounts cfg with the `mount` fixture (skipping the calling test if its method is not implemented
    yet); returns ({name: StTensor}, config.json as a dict), read through the mount."""
    config = write_config(tmp_path, cfg, name)
    skip_unless_implemented(config, cfg["merge_method"])
    with mount(config, *args) as m:
        got = read_weights(m.path)
        with open(os.path.join(m.path, "config.json")) as f:
            out_config = json.load(f)
    return got, out_config


def weights_of(folder):
    """{name: float32 values} of a model folder."""
    return {n: t.f32() for n, t in st.read_folder(folder).items()}


def merge_folder(tmp_path, mount, cfg, via_mount=False, name="run"):
    """Runs cfg in tmp_path/name through a real mount (the `mount` fixture) or `mergemount build`;
    returns ({name: StTensor}, config.json as a dict, a folder with the output's other files: the build's
    output, or a copy of the mount's files but its shards)."""
    d = tmp_path / name
    d.mkdir()
    config = write_config(d, cfg)
    if not via_mount:
        out = build(config, d / "out")
        with open(os.path.join(out, "config.json")) as f:
            return read_weights(out), json.load(f), str(out)
    copy = d / "copy"
    copy.mkdir()
    with mount(config) as m:
        got = read_weights(m.path)
        for f in os.listdir(m.path):
            if not f.endswith(".safetensors") and os.path.isfile(os.path.join(m.path, f)):
                with open(copy / f, "wb") as dst:
                    dst.write(read_file(os.path.join(m.path, f)))
    with open(copy / "config.json") as f:
        return got, json.load(f), str(copy)
