"""The persistent LMDB block cache (issue 3), on real mounts: every block computed once and served
from the cache by later reads (same mount, later mount, another process, another config yielding the
same tensor); single-flight; two mounts sharing a directory; kill -9; a full disk (tiny tmpfs); a
corrupt environment and a corrupt value; --no-cache, --cache-size, `cache clear|prune|stats`;
`mergemount stats`; no hidden files.

Everything is proven by counters (the JSON of the `user.mergemount.stats` xattr of the mount root, and
`mergemount cache stats`), never by timings. Every test gets its own cache directory under tmp_path.
Reference bytes come from `mergemount build --no-cache` (checked once against the numpy reference)."""

import json
import mmap
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

import mmtest
from mmcache import (SIZES, STATS_KEYS, Case, assert_same_tree, block_bytes, cache_cmd, cache_stats, cached,
                     linear3, make_big_models, read_tree, show, stats, tensor_blocks, tensor_nbytes, wait_stats)

@pytest.fixture(scope="module")
def big(make_model):
    return make_big_models(make_model)


@pytest.fixture(scope="module")
def case(big, tmp_path_factory):
    """The 3-model linear merge (bf16 out, ~15.5 MiB), in 3+ output shards."""
    tmp = tmp_path_factory.mktemp("cache-case")
    c = Case(tmp, linear3(*big), args=["--out-shard-size", "6M"], check_reference=True)
    assert c.blocks > len(c.plan["tensors"]), "the models must have multi-block tensors"
    assert sum(1 for f in c.files if f.endswith(".safetensors")) >= 3
    return c


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "cache")


# ---- computed once, then served from the cache ---------------------------------------------------------

def test_cold_read_computes_every_block_once(mount, case, cache_dir):
    """One full read with an empty cache: each distinct block computed once, even though the kernel
    asks for every ~1 MiB block in several smaller (readahead-sized) requests."""
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        assert_same_tree(read_tree(m.path), case.files)
        s = stats(m.path)
        assert s["cache_enabled"] is True
        assert s["cache_dir"] == cache_dir
        assert s["blocks_computed"] == case.blocks, show(s)
        assert s["bytes_computed"] == case.tensor_bytes, show(s)
        assert s["cache_corrupt"] == 0 and s["cache_resets"] == 0, show(s)
        assert s["bytes_served"] >= case.output_bytes, show(s)


def test_second_mount_computes_nothing(mount, case, cache_dir):
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        assert_same_tree(read_tree(m.path), case.files)
        first = stats(m.path)
        assert first["blocks_computed"] >= case.blocks, first
    after = cache_stats(cache_dir)
    assert after["blocks"] == case.blocks, show(after)
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        assert_same_tree(read_tree(m.path), case.files)
        s = stats(m.path)
        assert s["blocks_computed"] == 0, show(s)
        assert s["bytes_computed"] == 0, show(s)
        assert s["cache_hits"] >= case.blocks, show(s)
        assert s["cache_misses"] == 0, show(s)
        assert s["cache_corrupt"] == 0 and s["cache_resets"] == 0, show(s)


def test_build_fills_the_cache_for_a_mount(mount, case, cache_dir, tmp_path):
    """`build` (with a cache) stores what it computes and exits flushed: a later mount computes nothing,
    a second build writes the same bytes."""
    out = tmp_path / "out"
    mmtest.build(case.config, out, "--no-progress", *case.args, *cached(cache_dir))
    assert_same_tree(read_tree(str(out)), case.files, "build with a cache")
    assert cache_stats(cache_dir)["blocks"] == case.blocks
    out2 = tmp_path / "out2"
    mmtest.build(case.config, out2, "--no-progress", *case.args, *cached(cache_dir))
    assert_same_tree(read_tree(str(out2)), case.files, "build from a full cache")
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        assert_same_tree(read_tree(m.path), case.files)
        s = stats(m.path)
        assert s["blocks_computed"] == 0 and s["cache_hits"] > 0, show(s)


# ---- single-flight --------------------------------------------------------------------------------------

def _run_all(threads, timeout):
    """Starts the threads, waits up to `timeout` s for each, and fails if one is still running."""
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=timeout)
    assert not any(th.is_alive() for th in threads), "a reader hung"


def _odirect_read(fd, off, length):
    buf = mmap.mmap(-1, length)  # page-aligned, as O_DIRECT wants
    try:
        n = os.preadv(fd, [buf], off)
        return bytes(buf[:n])
    finally:
        buf.close()


def test_single_flight_sixteen_readers_one_cold_block(mount, case, cache_dir):
    """16 threads read the same range inside the first block of the biggest tensor at once, with
    O_DIRECT so that the kernel's page cache cannot merge them: one computation; every other request
    waited for it (single-flight) or found it in the cache."""
    n = 16
    t = max(case.plan["tensors"], key=tensor_nbytes)
    bb = block_bytes(t["dtype"])
    assert tensor_nbytes(t) > bb
    off = (t["offset"] + 4095) // 4096 * 4096
    length = 64 << 10
    assert off + length <= t["offset"] + bb, "the range must lie inside the tensor's first block"
    want = case.files[t["file"]][off:off + length]

    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        path = os.path.join(m.path, t["file"])
        fds = []
        try:
            for _ in range(n):
                fds.append(os.open(path, os.O_RDONLY | os.O_DIRECT))
        except OSError as e:
            for fd in fds:
                os.close(fd)
            pytest.fail(f"O_DIRECT open of a mounted shard failed: {e}")
        before = stats(m.path)
        assert before["blocks_computed"] == 0 and before["cache_hits"] == 0, show(before)
        barrier = threading.Barrier(n)
        results = [None] * n

        def reader(i):
            try:
                barrier.wait(timeout=30)
                results[i] = _odirect_read(fds[i], off, length)
            except BaseException as e:  # noqa: BLE001 - reported below
                results[i] = e

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        for fd in fds:
            os.close(fd)
        assert not any(th.is_alive() for th in threads), "a reader hung"
        for i, r in enumerate(results):
            assert not isinstance(r, BaseException), f"reader {i}: {r!r}"
            assert r == want, f"reader {i} got wrong bytes"
        s = stats(m.path)
        requests = s["cache_hits"] + s["cache_misses"]
        assert s["blocks_computed"] == 1, show(s)
        assert s["bytes_computed"] == bb, show(s)
        assert requests >= n, f"expected at least {n} block lookups (one per O_DIRECT read): {s}"
        assert s["singleflight_waits"] + s["cache_hits"] == requests - 1, show(s)
        assert s["cache_misses"] == s["blocks_computed"] + s["singleflight_waits"], show(s)


def test_staggered_sequential_readers_compute_each_block_once(mount, case, cache_dir):
    """Four threads read every shard front to back at once, in 1 MiB O_DIRECT requests that straddle
    blocks, each thread starting a quarter of a request after the previous one: requests keep meeting
    blocks that another thread is computing or has just finished. Every block is computed once and none
    is queued twice, and every reader gets the right bytes. Five rounds, each on an empty cache. (The
    race fixed with this test, a block published and retired between a reader's look at the cache and
    its own flight being computed again, showed on the benchmark's 2 GB models, 2-25 blocks in 2143; it
    did not show here in five runs without the fix, so this guards the waits-last logic more than it
    reproduces that race.)"""
    n, req = 4, 1 << 20
    shards = sorted(f for f in case.files if f.endswith(".safetensors"))
    for rnd in range(5):
        cdir = os.path.join(cache_dir, str(rnd))
        with mount(case.config, *case.args, *cached(cdir)) as m:
            errors = []
            barrier = threading.Barrier(n)

            def reader(i):
                try:
                    barrier.wait(timeout=30)
                    for name in shards:
                        want = case.files[name]
                        fd = os.open(os.path.join(m.path, name), os.O_RDONLY | os.O_DIRECT)
                        try:
                            off = i * req // n // 4096 * 4096
                            if off and _odirect_read(fd, 0, off) != want[:off]:
                                errors.append(f"reader {i}: {name} [0, {off}) differs")
                            while off < len(want):
                                got = _odirect_read(fd, off, req)
                                if got != want[off:off + req]:
                                    errors.append(f"reader {i}: {name} at {off} differs")
                                    return
                                off += req
                        finally:
                            os.close(fd)
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append(f"reader {i}: {e!r}")

            _run_all([threading.Thread(target=reader, args=(i,)) for i in range(n)], 120)
            assert not errors, errors
            s = stats(m.path)
            assert s["blocks_computed"] == case.blocks, show(s)
            assert s["cache_puts_dropped"] == 0, show(s)


# ---- two mounts, one cache directory --------------------------------------------------------------------

def test_two_mounts_share_one_cache_dir(mount, case, cache_dir, tmp_path):
    got = {}
    errors = []
    with mount(case.config, *case.args, *cached(cache_dir), mountpoint=tmp_path / "a") as ma, \
            mount(case.config, *case.args, *cached(cache_dir), mountpoint=tmp_path / "b") as mb:
        barrier = threading.Barrier(2)

        def reader(key, path):
            try:
                barrier.wait(timeout=30)
                got[key] = read_tree(path)
            except BaseException as e:  # noqa: BLE001
                errors.append(f"{key}: {e!r}")

        _run_all([threading.Thread(target=reader, args=(k, p)) for k, p in (("a", ma.path), ("b", mb.path))], 90)
        assert not errors, errors
        sa, sb = stats(ma.path), stats(mb.path)
        assert sa["cache_dir"] == sb["cache_dir"] == cache_dir
        # each mount computed or found every block; together at least every block once
        assert sa["blocks_computed"] + sb["blocks_computed"] >= case.blocks, show(sa, sb)
    assert_same_tree(got["a"], case.files, "mount a")
    assert_same_tree(got["b"], case.files, "mount b")
    cs = cache_stats(cache_dir)
    assert cs["blocks"] == case.blocks, f"each block stored once: {cs}"
    assert cs["statistics"] == 0, show(cs)
    assert cs["stored"] >= case.tensor_bytes * 0.99, show(cs)


# ---- kill -9 ---------------------------------------------------------------------------------------------

def _force_unmount(path):
    for _ in range(50):
        r = mmtest.run([mmtest.FUSERMOUNT, "-u", path], timeout=30)
        if not os.path.ismount(path):
            return r
        time.sleep(0.1)
    raise AssertionError(f"fusermount3 -u {path} failed: {r.stderr}")


def test_kill_9_during_cp_then_remount(mount, make_model, tmp_path, cache_dir):
    # bigger than `case` so that cp is still running when the daemon dies
    a, b, c = [make_model(seed, "bf16", **dict(SIZES, layers=6, intermediate=2048)) for seed in (4, 5, 6)]
    kc = Case(tmp_path, linear3(a, b, c), args=["--out-shard-size", "20M"])
    m = mount(kc.config, *kc.args, *cached(cache_dir))
    m.__enter__()
    dest = tmp_path / "copy1"
    cp = subprocess.Popen(["cp", "-r", m.path, str(dest)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    try:
        threshold = kc.output_bytes // 4
        deadline = time.monotonic() + 60
        while cp.poll() is None and time.monotonic() < deadline:
            try:
                if stats(m.path)["bytes_served"] >= threshold:
                    break
            except OSError:
                pass
            time.sleep(0.002)
        served = stats(m.path)["bytes_served"]
        os.kill(m.proc.pid, signal.SIGKILL)
        assert m.proc.wait(timeout=10) == -signal.SIGKILL
        cp.communicate(timeout=60)
        assert cp.returncode != 0 and served < kc.output_bytes, \
            f"cp -r finished before the kill ({served} of {kc.output_bytes} bytes served): not mid-way"
        _force_unmount(m.path)
        m._close()
        m.proc = None
    finally:
        if cp.poll() is None:
            cp.kill()
            cp.wait()
    with mount(kc.config, *kc.args, *cached(cache_dir)) as m2:
        dest2 = tmp_path / "copy2"
        mmtest.run(["cp", "-r", m2.path, str(dest2)], timeout=100, check=True)
        s = stats(m2.path)
        assert s["cache_corrupt"] == 0, show(s)
    assert_same_tree(read_tree(str(dest2)), kc.files, "cp -r after kill -9 and remount")
    # and the cache is whole again afterwards
    assert cache_stats(cache_dir)["blocks"] == kc.blocks


# ---- a full disk: the cache on an 8 MB tmpfs -------------------------------------------------------------

def test_cache_on_a_full_disk(mount, big, tmp_path, tiny_tmpfs):
    """Output ~31 MiB (f32) into an 8 MB filesystem with the default 20G limit: LMDB runs out of space;
    the writer evicts or drops, every read still succeeds with the right bytes."""
    fc = Case(tmp_path, linear3(*big, out_dtype="float32"), args=["--out-shard-size", "12M"])
    assert fc.output_bytes > 3 * 8 * 10**6
    cdir = os.path.join(tiny_tmpfs, "mm")
    with mount(fc.config, *fc.args, *cached(cdir)) as m:
        assert_same_tree(read_tree(m.path), fc.files, "first full read")
        # a second pass in the same mount, past the page cache: hits from a full cache, misses of what
        # was dropped or evicted
        served = stats(m.path)["bytes_served"]
        assert_same_tree(read_tree(m.path, direct=True), fc.files, "second full read (O_DIRECT)")
        assert stats(m.path)["bytes_served"] >= served + fc.output_bytes
        s = wait_stats(m.path, lambda s: s["evictions"] + s["cache_puts_dropped"] > 0)
        assert s["cache_enabled"] is True, show(s)
        assert s["evictions"] + s["cache_puts_dropped"] > 0, show(s)
    st = os.statvfs(tiny_tmpfs)
    assert st.f_blocks * st.f_frsize <= 8 * 2**20
    # a later mount with the full cache still serves the right bytes
    with mount(fc.config, *fc.args, *cached(cdir)) as m:
        assert_same_tree(read_tree(m.path), fc.files, "remount on the full disk")


# ---- corruption -----------------------------------------------------------------------------------------

def test_corrupt_data_mdb_is_reset(mount, case, cache_dir):
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        read_tree(m.path)
    data_mdb = os.path.join(cache_dir, "data.mdb")
    assert os.path.getsize(data_mdb) > 64 << 10
    rnd = random.Random(7)
    with open(data_mdb, "r+b") as f:  # both meta pages and the first tree pages
        f.write(bytes(rnd.getrandbits(8) for _ in range(64 << 10)))
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        assert_same_tree(read_tree(m.path), case.files, "after data.mdb was overwritten")
        s = stats(m.path)
        assert s["cache_resets"] >= 1, show(s)
        assert s["cache_enabled"] is True, show(s)
        log = m.stderr()
        assert log.strip(), "the reset must be logged"
    # the new environment works: the next mount is served from it
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        assert_same_tree(read_tree(m.path), case.files, "mount after the reset")
        s = stats(m.path)
        assert s["blocks_computed"] == 0 and s["cache_resets"] == 0, show(s)


def test_cache_commands_never_wipe_what_they_cannot_read(mount, case, cache_dir):
    """`cache stats` and `cache prune` on an unreadable cache fail with a message that says how to start
    anew, and leave data.mdb byte for byte as it was (the directory may hold someone else's data);
    `cache clear` starts a new, empty cache."""
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        read_tree(m.path)
    data_mdb = os.path.join(cache_dir, "data.mdb")
    with open(data_mdb, "r+b") as f:
        f.write(bytes(random.Random(3).getrandbits(8) for _ in range(64 << 10)))
    with open(data_mdb, "rb") as f:
        before = f.read()
    for cmd in ("stats", "prune"):
        r = mmtest.mergemount("cache", cmd, "--cache-dir", cache_dir)
        assert r.returncode == 1, (cmd, r.returncode, r.stdout, r.stderr)
        assert "unreadable" in r.stderr and "nothing was changed" in r.stderr and "cache clear" in r.stderr, r.stderr
        with open(data_mdb, "rb") as f:
            assert f.read() == before, f"`cache {cmd}` changed data.mdb"
    cache_cmd("clear", "--cache-dir", cache_dir)
    assert cache_stats(cache_dir)["blocks"] == 0


def test_flipped_byte_in_a_value_is_detected(mount, case, cache_dir):
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        read_tree(m.path)
    t = max(case.plan["tensors"], key=tensor_nbytes)
    run = case.files[t["file"]][t["offset"] + 4096:t["offset"] + 4096 + 64]
    assert len(set(run)) > 8, "pick a run of random-looking bytes"
    data_mdb = os.path.join(cache_dir, "data.mdb")
    with open(data_mdb, "rb") as f:
        db = f.read()
    places = [mt.start() for mt in re.finditer(re.escape(run), db)]
    assert places, "a stored block's bytes must appear verbatim in data.mdb"
    with open(data_mdb, "r+b") as f:
        for p in places:
            f.seek(p + 17)
            f.write(bytes([db[p + 17] ^ 0x5A]))
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        got = read_tree(m.path)
        s = stats(m.path)
        log = m.stderr()
    assert_same_tree(got, case.files, "after a flipped byte in a stored value")
    assert s["cache_corrupt"] >= 1, show(s)
    assert s["blocks_computed"] >= 1, show(s)
    assert log.strip(), "the corrupt entry must be logged"
    # the entry was dropped and recomputed: the next mount finds a good one
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        assert_same_tree(read_tree(m.path), case.files)
        s = stats(m.path)
        assert s["cache_corrupt"] == 0 and s["blocks_computed"] == 0, show(s)


# ---- options and `mergemount cache` ---------------------------------------------------------------------

def test_no_cache(mount, case, tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    cdir = tmp_path / "never"
    with mount(case.config, *case.args, "--no-cache", "--cache-dir", cdir) as m:
        assert_same_tree(read_tree(m.path), case.files)
        s = stats(m.path)
        assert s["cache_enabled"] is False, show(s)
        assert s["blocks_computed"] == 0, show(s)
        assert s["cache_hits"] == 0 and s["cache_puts_stored"] == 0, show(s)
        assert s["bytes_computed"] >= case.tensor_bytes, show(s)
    with mount(case.config, *case.args, "--no-cache") as m:
        read_tree(m.path)
        assert stats(m.path)["cache_enabled"] is False
    mmtest.build(case.config, tmp_path / "out", "--no-cache", "--no-progress", *case.args)
    assert not cdir.exists(), f"--no-cache created {cdir}: {os.listdir(cdir)}"
    assert os.listdir(xdg) == [], f"--no-cache wrote to $XDG_CACHE_HOME: {os.listdir(xdg)}"


def test_default_location_xdg_then_home(mount, case, tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    with mount(case.config, *case.args) as m:
        assert stats(m.path)["cache_dir"] == str(xdg / "mergemount")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(home))
    with mount(case.config, *case.args) as m:
        read_tree(m.path)
        assert stats(m.path)["cache_dir"] == str(home / ".cache" / "mergemount")
    assert cache_stats(str(home / ".cache" / "mergemount"))["blocks"] == case.blocks


def test_cache_size_is_respected(mount, case, cache_dir):
    limit = 4 * 10**6  # --cache-size 4M: decimal, like mergekit's sizes
    assert case.tensor_bytes > 3 * limit
    with mount(case.config, *case.args, *cached(cache_dir, "--cache-size", "4M")) as m:
        assert_same_tree(read_tree(m.path), case.files)
        s = wait_stats(m.path, lambda s: s["evictions"] > 0)
        assert s["evictions"] > 0, show(s)
    cs = cache_stats(cache_dir, "--cache-size", "4M")
    assert cs["size limit"] == limit, show(cs)
    assert 0 < cs["stored"] <= limit, show(cs)
    assert cs["blocks"] > 0, show(cs)
    # still correct when read again through the small cache
    with mount(case.config, *case.args, *cached(cache_dir, "--cache-size", "4M")) as m:
        assert_same_tree(read_tree(m.path), case.files)


def test_cache_size_option_values(case, tmp_path):
    for bad in ("999K", "0", "12Q", "-5M", ""):
        r = mmtest.mergemount("build", case.config, tmp_path / "bad", "--cache-size", bad)
        assert r.returncode != 0, f"--cache-size {bad!r} was accepted"
        assert "--cache-size" in r.stderr, r.stderr
    cs = cache_stats(str(tmp_path / "c"), "--cache-size", "1M")
    assert cs["size limit"] == 10**6, show(cs)
    cs = cache_stats(str(tmp_path / "c"))
    assert cs["size limit"] == 20 * 10**9, show(cs)


def test_cache_clear_then_recompute(mount, case, cache_dir):
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        read_tree(m.path)
    assert cache_stats(cache_dir)["blocks"] == case.blocks
    out = cache_cmd("clear", "--cache-dir", cache_dir)
    assert re.search(rf"\bremoved {case.blocks} blocks\b", out), out
    cs = cache_stats(cache_dir)
    assert cs["blocks"] == 0 and cs["stored"] == 0, show(cs)
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        assert_same_tree(read_tree(m.path), case.files)
        s = stats(m.path)
        # the cache was empty (checked above): every distinct block had to be computed again
        assert s["blocks_computed"] >= case.blocks, show(s)
        assert s["bytes_computed"] >= case.tensor_bytes, show(s)
    assert cache_stats(cache_dir)["blocks"] == case.blocks


def test_cache_prune_shrinks(mount, case, cache_dir):
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        read_tree(m.path)
    before = cache_stats(cache_dir)
    assert before["blocks"] == case.blocks and before["stored"] > 3 * 10**6, show(before)
    out = cache_cmd("prune", "--cache-dir", cache_dir, "--cache-size", "3M")
    mt = re.search(r"\bevicted (\d+) blocks\b", out)
    assert mt, out
    evicted = int(mt.group(1))
    after = cache_stats(cache_dir)
    assert evicted > 0, out
    assert after["blocks"] == before["blocks"] - evicted, (before, after)
    assert after["stored"] <= 3 * 10**6, show(after)
    # pruning again within the limit evicts nothing
    out = cache_cmd("prune", "--cache-dir", cache_dir, "--cache-size", "3M")
    assert re.search(r"\bevicted 0 blocks\b", out), out
    # what is left still serves correct bytes; what was evicted is computed again
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        assert_same_tree(read_tree(m.path), case.files)
        s = stats(m.path)
        assert s["blocks_computed"] >= evicted and s["cache_hits"] >= after["blocks"], show(s)


# ---- other configs, same tensors ------------------------------------------------------------------------

def test_other_config_same_tensors_is_served_from_cache(mount, case, big, cache_dir, tmp_path):
    """The same merge written differently (comments, flow style, other key order, other number
    spellings, other shard size): same recipes. The models stay in the same order: the float32 sum runs
    in list order, so another order is another recipe."""
    a, b, c = big
    text = (f"# the same merge, written by hand\n"
            f"out_dtype: bfloat16\n"
            f"dtype: float32\n"
            f"models:\n"
            f"  - parameters:\n"
            f"      weight: 0.50\n"
            f"    model: {a}\n"
            f"  - {{parameters: {{weight: .3}}, model: {json.dumps(b)}}}\n"
            f"  - {{model: '{c}', parameters: {{weight: [1.0e-1, 0.6]}}}}  # gradient\n"
            f"merge_method: linear\n")
    other = Case(tmp_path, text, args=["--out-shard-size", "4M"], name="other.yml")
    assert other.blocks == case.blocks
    assert other.files.keys() != case.files.keys() or any(other.files[n] != case.files[n] for n in case.files), \
        "the other config should lay the files out differently"
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        read_tree(m.path)
    with mount(other.config, *other.args, *cached(cache_dir)) as m:
        assert_same_tree(read_tree(m.path), other.files, "the other config")
        s = stats(m.path)
        assert s["blocks_computed"] == 0 and s["cache_hits"] > 0, show(s)
    assert cache_stats(cache_dir)["blocks"] == case.blocks


def test_random_seed_changes_only_random_recipes(mount, case, cache_dir):
    """--random-seed is part of the recipe of random methods only: a linear merge mounted with another
    seed is served from the blocks cached under the default seed (the bytes are the same)."""
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        read_tree(m.path)
    with mount(case.config, *case.args, "--random-seed", "7", *cached(cache_dir)) as m:
        assert_same_tree(read_tree(m.path), case.files, "linear with --random-seed 7")
        s = stats(m.path)
        assert s["blocks_computed"] == 0 and s["cache_hits"] >= case.blocks, show(s)


def test_changed_weight_for_some_tensors_recomputes_only_those(mount, big, cache_dir, tmp_path):
    a, b, _ = big

    def cfg(mlp_weight):
        return {"merge_method": "linear",
                "models": [{"model": a, "parameters": {"weight": [{"filter": "mlp", "value": mlp_weight},
                                                                  {"value": 0.5}]}},
                           {"model": b, "parameters": {"weight": [0.2, 0.8]}}]}

    one = Case(tmp_path, cfg(0.3), name="one.yml", check_reference=True)
    two = Case(tmp_path, cfg(0.7), name="two.yml", check_reference=True)
    p1 = {t["name"]: t for t in one.plan["tensors"]}
    changed = [t for t in two.plan["tensors"]
               if json.dumps(t["sources"], sort_keys=True) != json.dumps(p1[t["name"]]["sources"], sort_keys=True)]
    assert changed and all("mlp" in t["name"] for t in changed), [t["name"] for t in changed]
    changed_blocks = sum(tensor_blocks(t) for t in changed)
    assert 0 < changed_blocks < two.blocks

    with mount(one.config, *cached(cache_dir)) as m:
        read_tree(m.path)
    with mount(two.config, *cached(cache_dir)) as m:
        assert_same_tree(read_tree(m.path), two.files, "the edited config")
        s = stats(m.path)
        assert 0 < s["blocks_computed"] < two.blocks, show(s)
        assert s["blocks_computed"] >= changed_blocks, show(s)
        assert s["cache_hits"] >= two.blocks - changed_blocks, show(s)
    assert cache_stats(cache_dir)["blocks"] == one.blocks + changed_blocks


# ---- `mergemount stats`, no hidden files ----------------------------------------------------------------

def test_stats_command(mount, case, cache_dir):
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        read_tree(m.path)
        r = mmtest.mergemount("stats", m.path, check=True)
        mt = re.search(r"^blocks computed\s+(\d+)\s*$", r.stdout, re.MULTILINE)
        assert mt, r.stdout
        assert int(mt.group(1)) >= case.blocks, r.stdout
        assert re.search(r"^cache hits\s+\d+\s*$", r.stdout, re.MULTILINE), r.stdout
        r = mmtest.mergemount("stats", m.path, "--json", check=True)
        s = json.loads(r.stdout)
        assert STATS_KEYS <= set(s), sorted(STATS_KEYS - set(s))
        assert s["blocks_computed"] == int(mt.group(1)) and s["cache_dir"] == cache_dir, show(s)
        assert all(isinstance(s[k], int) and s[k] >= 0 for k in STATS_KEYS - {"cache_enabled", "cache_dir"}), show(s)
        if shutil.which("getfattr"):
            r = mmtest.run(["getfattr", "--only-values", "-n", "user.mergemount.stats", m.path], check=True)
            assert STATS_KEYS <= set(json.loads(r.stdout))
    r = mmtest.mergemount("stats", str(cache_dir))
    assert r.returncode != 0 and "not a mergemount mount" in r.stderr, (r.returncode, r.stderr)


def test_no_hidden_files(mount, case, cache_dir):
    with mount(case.config, *case.args, *cached(cache_dir)) as m:
        read_tree(m.path)
        names = os.listdir(m.path)
        assert sorted(names) == sorted(case.files), names
        assert not [n for n in names if n.startswith(".")], names
        for dirpath, dirnames, filenames in os.walk(m.path):
            assert not [n for n in dirnames + filenames if n.startswith(".")], (dirpath, dirnames, filenames)
        assert not os.path.exists(os.path.join(m.path, ".mergemount"))
