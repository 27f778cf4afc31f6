"""Source files that change under a mount (issue 6, "Faults"): a source shard truncated, rewritten in
place (same size with its mtime set back, or another size), replaced by a rename, or deleted. Reads
that need it fail with EIO and one log line names it; everything else keeps its bytes; nothing is
ever served from other content — not by the engine, not from the block cache, not through the
in-memory statistics of a pre-pass. A change between two mounts gives other recipes, so the cache
serves nothing of the old content then either.

Every read that must reach the daemon uses O_DIRECT (the kernel's page cache would answer otherwise),
over page-aligned ranges: a range is expected to fail exactly when it overlaps a tensor computed from
the changed shard. The daemon looks at a source's path at most every MM_SRCFILE_RECHECK_MS (100 ms,
merge/plan/srcfile.h): a cache hit, or a read of a deleted or replaced file (whose old inode stays readable),
may still return the mount-time bytes within that interval, never other bytes; after it, EIO."""

import errno
import json
import mmap
import os
import random
import re
import shutil
import threading
import time

import pytest

import mmtest
from mmcache import (SIZES, Case, assert_same_tree, cached, plan_json, read_direct, read_tree, show, stats,
                     tensor_blocks, tensor_nbytes)

pytestmark = pytest.mark.timeout(90)

RECHECK = 0.1  # MM_SRCFILE_RECHECK_MS
SETTLE = RECHECK * 3
PAGE = 4096
VICTIM_SHARD = "model-00002-of-00002.safetensors"


# ---- the setup: a merge with a private, sharded copy of one model ----------------------------------------

def linear_cfg(victim, other):
    return {"merge_method": "linear",
            "models": [{"model": victim, "parameters": {"weight": 0.6}},
                       {"model": other, "parameters": {"weight": 0.4}}],
            "dtype": "float32", "out_dtype": "bfloat16"}


def ties_cfg(victim, other, base):
    """A method with a pre-pass (top-k thresholds): its statistics are kept in memory."""
    return {"merge_method": "ties", "base_model": base,
            "models": [{"model": victim, "parameters": {"weight": 0.7, "density": 0.5}},
                       {"model": other, "parameters": {"weight": 0.5, "density": 0.5}}]}


@pytest.fixture(scope="module")
def pristine(make_model):
    """(sharded model to copy as the victim, another model, a base model)."""
    return make_model(1, "bf16", shards=2, **SIZES), make_model(2, "bf16", **SIZES), make_model(3, "bf16", **SIZES)


@pytest.fixture(scope="module")
def references(pristine, tmp_path_factory):
    """{method: Case} built from the pristine models: the bytes a mount of the victim copy must serve
    (the weight files do not depend on where the models are)."""
    tmp = tmp_path_factory.mktemp("faults-ref")
    a, b, c = pristine
    return {"linear": Case(tmp, linear_cfg(a, b), args=["--out-shard-size", "6M"], name="linear.yml"),
            "ties": Case(tmp, ties_cfg(a, b, c), args=["--out-shard-size", "6M"], name="ties.yml")}


class Setup:
    """A private copy of the sharded model, the config merging it, and which page-aligned ranges of the
    output shards need its shard VICTIM_SHARD."""

    def __init__(self, tmp_path, pristine, method):
        self.victim = str(tmp_path / "victim")
        shutil.copytree(pristine[0], self.victim)
        self.shard = os.path.join(self.victim, VICTIM_SHARD)
        cfg = (linear_cfg(self.victim, pristine[1]) if method == "linear"
               else ties_cfg(self.victim, pristine[1], pristine[2]))
        self.config = mmtest.write_config(tmp_path, cfg)
        self.args = ["--out-shard-size", "6M"]
        self.plan = plan_json(self.config, *self.args)
        with open(os.path.join(self.victim, "model.safetensors.index.json")) as f:
            where = json.load(f)["weight_map"]
        self.bad = {t["name"] for t in self.plan["tensors"]
                    if any(s["path"] == self.victim and where[s["tensor"]] == VICTIM_SHARD for s in t["sources"])}
        assert self.bad and len(self.bad) < len(self.plan["tensors"]), "the victim shard must feed some tensors"
        self.ranges = probe_ranges(self.plan, self.bad)
        assert any(r[3] for r in self.ranges) and not all(r[3] for r in self.ranges)

    def mount_args(self, tmp_path, cache):
        """The mount's options: a private block cache ("cache") or none ("no-cache")."""
        return [*self.args, *(cached(str(tmp_path / "cache")) if cache == "cache" else ["--no-cache"])]


def probe_ranges(plan, bad):
    """[(file, offset, length, needs_bad)]: per output tensor, the page-aligned range around its data,
    and whether any tensor computed from the changed shard overlaps that range."""
    sizes = {f["name"]: f["size"] for f in plan["files"]}
    spans = [(t["file"], t["offset"], t["offset"] + tensor_nbytes(t), t["name"] in bad) for t in plan["tensors"]]
    out = []
    for file, a, z, _ in spans:
        lo, hi = a // PAGE * PAGE, min(-(-z // PAGE) * PAGE, sizes[file])
        hit = any(f == file and isbad and s < hi and e > lo for f, s, e, isbad in spans)
        out.append((file, lo, hi - lo, hit))
    return out


def read_range(path, off, length):
    """length bytes at off with O_DIRECT (page-aligned buffer); an EIO raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, -(-length // PAGE) * PAGE)
    try:
        got = 0
        while got < length:
            with memoryview(buf) as view:
                n = os.preadv(fd, [view[got:length]], off + got)
            if n == 0:
                break
            got += n
        return bytes(buf[:got])
    finally:
        buf.close()
        os.close(fd)


def probe(mnt, ranges, want, strict):
    """Reads every range. A range that needs the changed shard must fail with EIO — or, unless strict,
    may still give the mount-time bytes; any other range must give them. Returns how many failed."""
    failed = 0
    for file, off, length, needs_bad in ranges:
        expected = want[file][off:off + length]
        try:
            got = read_range(os.path.join(mnt, file), off, length)
        except OSError as e:
            assert e.errno == errno.EIO, f"{file} [{off}, +{length}): {e}"
            assert needs_bad, f"{file} [{off}, +{length}) does not need the changed shard but failed: {e}"
            failed += 1
            continue
        assert got == expected, f"{file} [{off}, +{length}): WRONG BYTES (needs the changed shard: {needs_bad})"
        assert not (strict and needs_bad), f"{file} [{off}, +{length}) needs the changed shard but was served"
    return failed


def log_lines_naming(text, path):
    return [ln for ln in text.splitlines() if path in ln]


# ---- the faults ------------------------------------------------------------------------------------------

def data_start(path):
    with open(path, "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def other_bytes(n, seed=5):
    return random.Random(seed).randbytes(n)


def truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def rewrite_same_size_mtime_kept(path):
    """Other tensor bytes in place, then the mtime set back: only ctime tells."""
    st = os.stat(path)
    start = data_start(path)
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(other_bytes(os.path.getsize(path) - start))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def rewrite_other_size(path):
    """The same inode rewritten from the start with other, longer content."""
    with open(path, "rb") as f:
        old = f.read()
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(old[:data_start(path)] + other_bytes(len(old)))


def replace_by_rename(path):
    """Another file of the same size and mtime renamed over the name."""
    start = data_start(path)
    tmp = path + ".new"
    with open(path, "rb") as f:
        head = f.read(start)
    with open(tmp, "wb") as f:
        f.write(head + other_bytes(os.path.getsize(path) - start))
    shutil.copystat(path, tmp)
    os.replace(tmp, path)


def delete(path):
    os.unlink(path)


FAULTS = {"truncate": truncate, "rewrite_same_size_mtime_kept": rewrite_same_size_mtime_kept,
          "rewrite_other_size": rewrite_other_size, "replace_by_rename": replace_by_rename, "delete": delete}
# Faults on the inode our descriptor reads: the engine's check after reading sees them at once.
IN_PLACE = {"truncate", "rewrite_same_size_mtime_kept", "rewrite_other_size"}


# ---- tests -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cache", ["cache", "no-cache"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_changed_source_shard(mount, pristine, references, tmp_path, fault, cache):
    s = Setup(tmp_path, pristine, "linear")
    want = references["linear"].files
    args = s.mount_args(tmp_path, cache)
    with mount(s.config, *args, allow=re.escape(s.shard)) as m:
        # everything read once: the block cache (or nothing, with --no-cache) holds every block
        assert probe(m.path, s.ranges, want, strict=False) == 0
        before = stats(m.path)
        FAULTS[fault](s.shard)
        # At once: never other bytes. Without a cache every read computes, and a computation from a
        # changed inode is caught by the check after reading, with no interval.
        probe(m.path, s.ranges, want, strict=(cache == "no-cache" and fault in IN_PLACE))
        time.sleep(SETTLE)
        # After the interval: every range that needs the shard fails, cache hits included; the rest
        # keeps working, and so do the other files.
        failed = probe(m.path, s.ranges, want, strict=True)
        assert failed == sum(1 for r in s.ranges if r[3])
        for name in ("config.json", "tokenizer.json", "model.safetensors.index.json"):
            assert read_direct(os.path.join(m.path, name)) == want[name]
        after = stats(m.path)
        if cache == "cache":
            assert after["blocks_computed"] == before["blocks_computed"], \
                "nothing may be computed from the changed shard: " + show(before, after)
        lines = log_lines_naming(m.stderr(), s.shard)
        assert len(lines) == 1, f"want one log line naming {s.shard}, got:\n" + "\n".join(lines)
        assert "mergemount: error:" in lines[0] and "EIO" in lines[0], lines[0]
        errors = [ln for ln in m.stderr().splitlines() if "error" in ln]
        assert errors == lines, "\n".join(errors)
        assert m.proc.poll() is None, "the daemon died"


def test_rewrites_racing_readers_never_give_other_bytes(mount, pristine, references, tmp_path):
    """Readers computing blocks from the shard while another process starts rewriting it in place: each
    read gives the mount-time bytes or EIO, whatever the interleaving (the check after reading)."""
    s = Setup(tmp_path, pristine, "linear")
    want = references["linear"].files
    bad = [r for r in s.ranges if r[3]]
    stop = threading.Event()
    problems, served, failed = [], [0], [0]

    def reader(k):
        rnd = random.Random(k)
        while not stop.is_set():
            file, off, length, _ = rnd.choice(bad)
            try:
                got = read_range(os.path.join(m.path, file), off, length)
            except OSError as e:
                if e.errno != errno.EIO:
                    problems.append(f"{file} [{off}, +{length}): {e}")
                failed[0] += 1
                continue
            served[0] += 1
            if got != want[file][off:off + length]:
                problems.append(f"{file} [{off}, +{length}): WRONG BYTES")

    with mount(s.config, *s.args, "--no-cache", allow=re.escape(s.shard)) as m:
        threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        try:
            time.sleep(0.3)
            start = data_start(s.shard)
            with open(s.shard, "r+b", buffering=0) as f:
                rnd = random.Random(9)
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    f.seek(rnd.randrange(start, os.path.getsize(s.shard) - 4096))
                    f.write(rnd.randbytes(4096))
            time.sleep(SETTLE)
        finally:
            stop.set()
            for th in threads:
                th.join(timeout=30)
        assert not problems, "\n".join(problems[:10])
        assert served[0] > 0 and failed[0] > 0, (served, failed)
        assert probe(m.path, s.ranges, want, strict=True) == len(bad)
        assert len(log_lines_naming(m.stderr(), s.shard)) == 1, m.stderr()


@pytest.mark.parametrize("cache", ["cache", "no-cache"])
def test_statistics_memo_is_not_used_after_a_change(mount, pristine, references, tmp_path, cache):
    """ties keeps per-tensor thresholds (a pre-pass) in memory and in the cache: after the shard
    changes, tensors that need it fail instead of being computed from new values with old thresholds."""
    s = Setup(tmp_path, pristine, "ties")
    want = references["ties"].files
    args = s.mount_args(tmp_path, cache)
    with mount(s.config, *args, allow=re.escape(s.shard)) as m:
        assert probe(m.path, s.ranges, want, strict=False) == 0
        before = stats(m.path)
        assert before["prepasses_run"] > 0, show(before)
        rewrite_same_size_mtime_kept(s.shard)
        probe(m.path, s.ranges, want, strict=(cache == "no-cache"))
        time.sleep(SETTLE)
        assert probe(m.path, s.ranges, want, strict=True) == sum(1 for r in s.ranges if r[3])
        after = stats(m.path)
        assert after["prepasses_run"] == before["prepasses_run"], show(before, after)
        assert len(log_lines_naming(m.stderr(), s.shard)) == 1, m.stderr()


def test_restored_source_stays_failed_until_remount(mount, pristine, references, tmp_path):
    """The rule is "the mount-time bytes or EIO": a source put back as it was (same bytes, but a new
    inode and ctime) keeps failing until the config is mounted again; the new mount serves it."""
    s = Setup(tmp_path, pristine, "linear")
    want = references["linear"].files
    args = [*s.args, *cached(str(tmp_path / "cache"))]
    with mount(s.config, *args, allow=re.escape(s.shard)) as m:
        assert probe(m.path, s.ranges, want, strict=False) == 0
        delete(s.shard)
        time.sleep(SETTLE)
        assert probe(m.path, s.ranges, want, strict=True) > 0
        shutil.copy2(os.path.join(pristine[0], VICTIM_SHARD), s.shard)
        time.sleep(SETTLE)
        assert probe(m.path, s.ranges, want, strict=True) > 0
        assert len(log_lines_naming(m.stderr(), s.shard)) == 1, m.stderr()
    with mount(s.config, *args) as m:
        assert probe(m.path, s.ranges, want, strict=False) == 0


def test_changed_donor_file(mount, pristine, references, tmp_path):
    """A file served as it is (the donor's tokenizer.json) rewritten in place: its reads fail, the
    weights do not."""
    s = Setup(tmp_path, pristine, "linear")
    want = references["linear"].files
    tok = os.path.join(s.victim, "tokenizer.json")
    with mount(s.config, *s.args, "--no-cache", allow=re.escape(tok)) as m:
        with open(tok, "r+b") as f:
            f.write(b"{}  ")
        with pytest.raises(OSError) as e:
            read_direct(os.path.join(m.path, "tokenizer.json"))
        assert e.value.errno == errno.EIO
        assert probe(m.path, s.ranges, want, strict=False) == 0
        assert len(log_lines_naming(m.stderr(), tok)) == 1, m.stderr()


@pytest.mark.parametrize("how", ["in_place_mtime_kept", "renamed_over_mtime_kept"])
def test_change_between_mounts_is_a_new_recipe(mount, pristine, tmp_path, how):
    """A shard changed between two mounts sharing one cache — with the same size and mtime, so only
    its inode or ctime tells — is computed again from the new content: exactly the blocks of the
    tensors it feeds; the others are served from the cache."""
    s = Setup(tmp_path, pristine, "linear")
    cdir = str(tmp_path / "cache")
    with mount(s.config, *s.args, *cached(cdir)) as m:
        read_tree(m.path)
    (rewrite_same_size_mtime_kept if how == "in_place_mtime_kept" else replace_by_rename)(s.shard)
    mmtest.run(["sync"])
    changed = Case(tmp_path, mmtest.read_file(s.config).decode(), args=s.args, name="changed.yml")
    with mount(s.config, *s.args, *cached(cdir)) as m:
        got = read_tree(m.path, direct=True)
        st = stats(m.path)
    weights = [n for n in changed.files if n.endswith(".safetensors")]
    assert_same_tree({n: got[n] for n in weights}, {n: changed.files[n] for n in weights}, "remount")
    bad_blocks = sum(tensor_blocks(t) for t in s.plan["tensors"] if t["name"] in s.bad)
    assert st["blocks_computed"] == bad_blocks, show(st)
    assert st["cache_hits"] > 0, show(st)
