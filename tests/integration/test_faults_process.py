"""Process-level faults and a soak (issue 6): SIGKILL of the daemon during reads, SIGTERM/SIGINT to a
foreground and to a daemonised mount, lazy unmount while a file is open and mapped, readers interrupted
mid-read (SIGINT to `cp`, SIGKILL of an mmap reader), read-only enforcement and `allow_other`, and 32
concurrent readers against one mount with bounds on the daemon's memory and descriptors.

Readers run as separate processes (soak_reader.py): a read stuck in the kernel cannot be interrupted in
the test's own process, but a child can be killed, and every wait on one has a timeout. On top of that
conftest.py gives every test an alarm (MM_TEST_TIMEOUT, 120 s by default).

Expected bytes always come from `mergemount build --no-cache` of the same config.

MM_SOAK_SECONDS (default 12) sets the length of each soak run, for longer local runs (raise
MM_TEST_TIMEOUT with it)."""

import contextlib
import errno
import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

import mmtest
import soak_reader

HERE = os.path.dirname(os.path.abspath(__file__))
READER = os.path.join(HERE, "soak_reader.py")
SUBREAPER = os.path.join(HERE, "subreaper.py")

# Blocks of ~1 MiB in every big tensor; one model in two files; four output shards with 6M.
SIZES = dict(layers=2, hidden=512, intermediate=1536, vocab=2048, heads=8, kv_heads=2)
SHARDS = ["--out-shard-size", "6M"]
# A single 50 MB shard of a ties merge: `cp` of it takes long enough to be interrupted.
BIG_SIZES = dict(layers=2, hidden=1024, intermediate=2048, vocab=4096, heads=8, kv_heads=2)

SOAK_SECONDS = float(os.environ.get("MM_SOAK_SECONDS", "12"))
SOAK_READERS = 32
# Growth of the daemon's VmRSS allowed between the end of the soak's first quarter and its end. The
# working set (source pages, LMDB pages, per-request buffers, allocator arenas of ~20 threads) is in
# place by then: measured growth was under 1 MiB (plain and ASan builds) and 8 MiB (TSan). Keeping every
# request's buffer (thousands of reads of up to 1 MiB) or anything else that grows with the reads
# exceeds it within seconds; a few bytes lost per request are LeakSanitizer's job (ASan run, at exit).
RSS_GROWTH_BOUND_KB = 32 * 1024

# What a reader may see when the daemon dies or unmounts under it: the connection is gone
# (ENOTCONN, ECONNABORTED for requests in flight, EIO), or the name is gone after the unmount (ENOENT).
DEAD_MOUNT_ERRORS = {"ENOTCONN", "ECONNABORTED", "EIO", "ENOENT"}
REFUSED = {errno.EROFS, errno.EACCES, errno.EPERM}


# ---- cases ---------------------------------------------------------------------------------------------

def make_case(tmp, cfg, args, name):
    config = mmtest.write_config(tmp, cfg, name=name)
    built = mmtest.build(config, tmp / (name + ".built"), "--no-cache", "--no-progress", *args)
    return {"config": config, "args": list(args), "built": built, "files": mmtest.files_of(built)}


def linear_cfg(a, b, c):
    return {"merge_method": "linear",
            "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.3}},
                       {"model": c, "parameters": {"weight": [0.1, 0.6]}}],
            "dtype": "float32", "out_dtype": "bfloat16"}


def ties_cfg(base, *others):
    return {"merge_method": "ties", "base_model": base,
            "models": [{"model": m, "parameters": {"weight": w, "density": d}}
                       for m, w, d in zip(others, (0.6, 0.4), (0.5, 0.7))],
            "dtype": "float32", "out_dtype": "bfloat16"}


@pytest.fixture(scope="module")
def small(make_model):
    return [make_model(seed, "bf16", shards=2 if seed == 2 else 1, **SIZES) for seed in (1, 2, 3)]


@pytest.fixture(scope="module")
def linear_case(small, tmp_path_factory):
    return make_case(tmp_path_factory.mktemp("linear"), linear_cfg(*small), SHARDS, "linear.yml")


@pytest.fixture(scope="module")
def ties_case(small, tmp_path_factory):
    a, b, base = small
    return make_case(tmp_path_factory.mktemp("ties"), ties_cfg(base, a, b), SHARDS, "ties.yml")


@pytest.fixture(scope="module")
def big_case(make_model, tmp_path_factory):
    a, base = (make_model(seed, "bf16", **BIG_SIZES) for seed in (1, 2))
    return make_case(tmp_path_factory.mktemp("big"), ties_cfg(base, a), [], "big.yml")


# ---- helpers -------------------------------------------------------------------------------------------

def mountinfo(path):
    """The /proc/self/mountinfo fields of the mount at path, or None. (os.path.ismount cannot tell a
    dead FUSE mount, whose stat fails with ENOTCONN, from no mount.)"""
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == real:
                return fields
    return None


def served(mnt):
    return json.loads(os.getxattr(mnt, "user.mergemount.stats"))["bytes_served"]


@contextlib.contextmanager
def readers_running(mnt, case, n, **kw):
    """start_readers as a context: whatever happens in the block, no reader outlives it."""
    readers = start_readers(mnt, case, n, **kw)
    try:
        yield readers
    finally:
        for p in readers:
            if p.poll() is None:
                p.kill()


def start_readers(mnt, case, n, seconds=120.0, mode="mix", seed=0):
    return [subprocess.Popen([sys.executable, READER, mnt, case["built"], "--seconds", str(seconds),
                              "--seed", str(seed + i), "--mode", mode],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(n)]


def finish_readers(procs, timeout=30.0):
    """[(exit status, the reader's JSON result or None, stderr)] once every reader has ended; a reader
    still running after `timeout` (a hang) fails the test."""
    out, deadline = [], time.monotonic() + timeout
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
                q.wait()
            raise AssertionError(f"a reader is still running {timeout} s later (hung on the mount?)")
        line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        out.append((p.returncode, json.loads(line) if line.startswith("{") else None, stderr))
    return out


def assert_readers_failed_cleanly(results):
    """After the daemon went away: every reader ended with an error or SIGBUS (a mapped page that could
    not be read), none saw a wrong byte."""
    for rc, res, err in results:
        assert rc != 1, f"a reader saw wrong bytes: {res}"
        if rc == -signal.SIGBUS:
            continue
        assert rc == 3 and res and res["error"] in DEAD_MOUNT_ERRORS, f"reader ended {rc}: {res}\n{err}"


def assert_readers_clean(results):
    for rc, res, err in results:
        assert rc == 0 and res and not res["mismatches"], f"reader ended {rc}: {res}\n{err}"


def assert_tree_equals_built(mnt, case):
    assert mmtest.files_of(mnt) == case["files"]
    for name in case["files"]:
        got = soak_reader.read_whole(os.path.join(mnt, name), direct=True)
        assert got == mmtest.read_file(os.path.join(case["built"], name)), f"{name} differs from build"


def readline(proc, timeout):
    """One line of proc's stdout within timeout seconds, or ""."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def proc_status(pid, key):
    """A field of /proc/PID/status in kB (VmRSS, RssAnon, ...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def mount_args(case, tmp_path, cache=True):
    return case["args"] + (["--cache-dir", str(tmp_path / "cache")] if cache else ["--no-cache"])


# ---- the daemon killed or stopped ------------------------------------------------------------------------

def test_sigkill_during_reads(mount, linear_case, tmp_path):
    """kill -9 while 6 readers are inside reads: they get errors, not a hang; `fusermount3 -u` cleans the
    dead mount; a new mount on the same cache (written by the killed daemon) serves the built bytes."""
    args = mount_args(linear_case, tmp_path)
    m = mount(linear_case["config"], *args)
    m.__enter__()
    with readers_running(m.path, linear_case, 6) as readers:
        assert mmtest.wait_for(lambda: served(m.path) > (8 << 20), timeout=60), "the readers did not get going"
        assert all(p.poll() is None for p in readers), "a reader ended before the kill"
        m.proc.kill()
        assert m.proc.wait(timeout=10) == -signal.SIGKILL
        results = finish_readers(readers)
    assert_readers_failed_cleanly(results)
    print("readers after the kill:", [res and res["error"] or rc for rc, res, _ in results])
    assert mountinfo(m.path) is not None, "the dead mount should still be listed until unmounted"
    # (a stat may still be answered from the kernel's attribute cache; an open must ask the daemon)
    with pytest.raises(OSError) as e:
        os.open(os.path.join(m.path, linear_case["files"][0]), os.O_RDONLY)
    assert e.value.errno == errno.ENOTCONN
    r = mmtest.run([mmtest.FUSERMOUNT, "-u", m.path], timeout=30)
    assert r.returncode == 0, r.stderr
    assert mountinfo(m.path) is None
    m._close()  # reaped above: nothing left for the fixture to tear down
    with mount(linear_case["config"], *args, mountpoint=m.path) as again:
        assert_tree_equals_built(again.path, linear_case)


def signal_during_reads(mnt, case, send):
    """Starts readers that only do O_DIRECT reads (so they are inside the daemon), sends the signal once
    bytes flow, and checks the readers end with errors and no wrong byte."""
    with readers_running(mnt, case, 4, mode="direct") as readers:
        assert mmtest.wait_for(lambda: served(mnt) > (4 << 20), timeout=60), "the readers did not get going"
        send()
        results = finish_readers(readers)
    assert_readers_failed_cleanly(results)


# SIGHUP too: closing the terminal of a foreground mount must unmount as cleanly.
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["TERM", "INT", "HUP"])
def test_signal_foreground_during_reads(mount, linear_case, tmp_path, sig):
    m = mount(linear_case["config"], *mount_args(linear_case, tmp_path, cache=False))
    m.__enter__()
    signal_during_reads(m.path, linear_case, lambda: m.proc.send_signal(sig))
    rc = m.proc.wait(timeout=20)
    text = m.stderr()
    assert rc == 0, f"exit {rc} after {sig.name}:\n{text}"
    assert mountinfo(m.path) is None
    assert not mmtest.bad_stderr_lines(text), text
    m._close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_daemonised_during_reads(binaries, linear_case, tmp_path, sig):
    """Without -f the daemon is not our child: subreaper.py adopts it to report its exit status."""
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    reaper = subprocess.Popen([sys.executable, SUBREAPER, mmtest.MERGEMOUNT, "mount", linear_case["config"], mnt,
                               *mount_args(linear_case, tmp_path, cache=False)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        line = readline(reaper, 30)
        assert line.startswith("pid "), f"mount failed: {line}{reaper.stdout.read() if not line else ''}"
        pid = int(line.split()[1])
        assert mountinfo(mnt) is not None
        signal_during_reads(mnt, linear_case, lambda: os.kill(pid, sig))
        assert readline(reaper, 20) == "exit 0"
        assert reaper.wait(timeout=10) == 0
        assert not os.path.exists(f"/proc/{pid}"), "the daemon is still there"
        assert mountinfo(mnt) is None
    finally:
        if mountinfo(mnt) is not None:
            subprocess.run([mmtest.FUSERMOUNT, "-u", "-z", mnt], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if reaper.poll() is None:
            reaper.kill()
            reaper.wait()


def test_lazy_unmount_while_mapped(mount, linear_case, tmp_path):
    """fusermount3 -u -z while a reader has a shard open and mapped: the name is gone, the reader reads
    every page (computed after the unmount: no cache, nothing read before) and the whole file correctly;
    the daemon exits 0 only once the reader has closed."""
    shard = max(linear_case["files"], key=lambda n: os.path.getsize(os.path.join(linear_case["built"], n)))
    m = mount(linear_case["config"], *mount_args(linear_case, tmp_path, cache=False))
    m.__enter__()
    holder = subprocess.Popen([sys.executable, READER, m.path, linear_case["built"], "--hold", shard, "--seed", "7"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert readline(holder, 30) == "ready", holder.stderr.read() if holder.poll() is not None else ""
        mmtest.run([mmtest.FUSERMOUNT, "-u", "-z", m.path], check=True, timeout=30)
        assert mountinfo(m.path) is None
        time.sleep(0.5)
        assert m.proc.poll() is None, f"the daemon left while a file was still open:\n{m.stderr()}"
        stdout, stderr = holder.communicate("go\n", timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert holder.returncode == 0, f"{stdout}\n{stderr}"
    res = json.loads(stdout.splitlines()[-1])
    size = os.path.getsize(os.path.join(linear_case["built"], shard))
    assert res["reads"] == 2 + (size + 4095) // 4096 and not res["mismatches"], res
    rc = m.proc.wait(timeout=20)
    text = m.stderr()
    assert rc == 0, f"exit {rc}:\n{text}"
    assert not mmtest.bad_stderr_lines(text), text
    m._close()


# ---- readers interrupted -----------------------------------------------------------------------------------

def interrupt_cp(src, dest, attempts=10):
    """SIGINT to `cp src dest` once it has copied 1 MiB and before it is done; the number of the attempt
    in which that happened, or 0 (each attempt first drops src's cached pages so that cp reads from the
    daemon)."""
    for attempt in range(1, attempts + 1):
        fd = os.open(src, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        if os.path.exists(dest):
            os.unlink(dest)
        cp = subprocess.Popen(["cp", src, dest])
        try:
            while cp.poll() is None and (not os.path.exists(dest) or os.path.getsize(dest) < (1 << 20)):
                time.sleep(0.002)
            if cp.poll() is None:
                cp.send_signal(signal.SIGINT)
                rc = cp.wait(timeout=30)
                if rc == -signal.SIGINT:
                    return attempt
        finally:
            if cp.poll() is None:
                cp.kill()
                cp.wait()
    return 0


def test_interrupted_readers(mount, big_case, tmp_path):
    """SIGINT to `cp` of a 50 MB shard mid-copy and SIGKILL of an mmap reader mid-read, while two other
    readers keep reading: they see only correct bytes, and afterwards the whole folder reads correctly."""
    m = mount(big_case["config"], *mount_args(big_case, tmp_path, cache=False))
    with m:
        others = start_readers(m.path, big_case, 2, seed=100)
        try:
            attempt = interrupt_cp(os.path.join(m.path, "model.safetensors"), str(tmp_path / "copy"))
            assert attempt, "cp finished before it could be interrupted, 10 times"
            print(f"cp interrupted in attempt {attempt}, after {os.path.getsize(tmp_path / 'copy')} bytes")
            victim = start_readers(m.path, big_case, 1, mode="mmap", seed=200)[0]
            before = served(m.path)
            assert mmtest.wait_for(lambda: served(m.path) > before + (4 << 20) or victim.poll() is not None, timeout=60)
            assert victim.poll() is None, victim.communicate()
            victim.kill()
            assert victim.wait(timeout=10) == -signal.SIGKILL
            assert m.proc.poll() is None, "the daemon died"
            for p in others:
                p.terminate()  # soak_reader stops at its next read and reports
            results = finish_readers(others, timeout=60)
        finally:
            for p in others:
                if p.poll() is None:
                    p.kill()
        assert_readers_clean(results)
        assert all(res["reads"] > 0 for _, res, _ in results), results
        assert_tree_equals_built(m.path, big_case)


# ---- read-only ---------------------------------------------------------------------------------------------

def refused(fn, *args):
    """Calls fn(*args) and returns the errno it failed with; fails the test if it succeeded."""
    try:
        r = fn(*args)
    except OSError as e:
        return e.errno
    if isinstance(r, int) and fn is os.open:
        os.close(r)
    raise AssertionError(f"{fn.__name__}{args} succeeded on the read-only mount")


def test_read_only_enforced(mount, linear_case, tmp_path):
    """Modes and mount flags of a mount nobody writes to; every write attempt on the root and the model
    files (and what stays writable) is tried in test_state_dir.py::test_outside_cache_is_read_only."""
    with mount(linear_case["config"], *mount_args(linear_case, tmp_path)) as m:
        root = m.path
        # 0755: the owner may make `.cache/` there (test_state_dir.py); nothing else.
        assert os.stat(root).st_mode == 0o40755
        for name in linear_case["files"]:
            assert os.stat(os.path.join(root, name)).st_mode == 0o100444, name
        assert mmtest.files_of(root) == linear_case["files"]
        assert_tree_equals_built(root, linear_case)
        fields = mountinfo(root)
        # Not `ro` in the kernel, so that `.cache/` can be written; the daemon refuses everything else.
        assert "ro" not in fields[5].split(","), fields
        assert "default_permissions" in fields[-1].split(","), fields


def user_allow_other():
    try:
        with open("/etc/fuse.conf") as f:
            return any(line.strip() == "user_allow_other" for line in f)
    except OSError:
        return False


@pytest.mark.parametrize("opts", ["allow_other", "rw,allow_other"])
def test_allow_other_keeps_default_permissions(mount, linear_case, tmp_path, opts):
    """With allow_other, other users reach the mount: permission checks must stay with the kernel
    (default_permissions), and a user's `rw` does not make the model files writable."""
    if os.geteuid() != 0 and not user_allow_other():
        pytest.skip("allow_other needs root or user_allow_other in /etc/fuse.conf")
    with mount(linear_case["config"], *mount_args(linear_case, tmp_path), "-o", opts) as m:
        fields = mountinfo(m.path)
        sep = fields.index("-")
        super_opts = fields[sep + 3].split(",")
        assert "allow_other" in super_opts and "default_permissions" in super_opts, fields
        f = os.path.join(m.path, linear_case["files"][0])
        assert refused(os.open, f, os.O_WRONLY) in REFUSED
        assert refused(os.open, os.path.join(m.path, "new"), os.O_WRONLY | os.O_CREAT, 0o644) in REFUSED


# ---- soak --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which,cache", [("linear", True), ("ties", False)], ids=["linear-cached", "ties-uncached"])
def test_soak(request, mount, tmp_path, monkeypatch, which, cache):
    """32 reader processes (buffered pread, O_DIRECT pread, shared and private mmap, random files and
    ranges) for MM_SOAK_SECONDS against one mount: every byte equals `build`; the daemon's VmRSS grows
    by less than RSS_GROWTH_BOUND_KB from the end of the first quarter to the end, and its descriptors
    are back to their count before the soak. linear with the cache (the cache-hit path after the
    warm-up), ties without it (every read recomputes, with the per-tensor pre-pass)."""
    case = request.getfixturevalue(f"{which}_case")
    # AddressSanitizer holds freed memory in a quarantine of up to 256 MiB, which would read as growth.
    if "ASAN_OPTIONS" in os.environ:
        monkeypatch.setenv("ASAN_OPTIONS", os.environ["ASAN_OPTIONS"] + ":quarantine_size_mb=16")
    with mount(case["config"], *mount_args(case, tmp_path, cache=cache)) as m:
        pid = m.proc.pid
        assert_tree_equals_built(m.path, case)  # warm-up: every block once (and into the cache)
        fds_before = fd_count(pid)
        served_before = served(m.path)
        start = time.monotonic()
        with readers_running(m.path, case, SOAK_READERS, seconds=SOAK_SECONDS, seed=1000) as readers:
            rss = []
            warm = None
            while any(p.poll() is None for p in readers):
                rss.append(proc_status(pid, "VmRSS"))
                if warm is None and time.monotonic() - start >= SOAK_SECONDS / 4:
                    warm = (rss[-1], proc_status(pid, "RssAnon"))
                time.sleep(0.25)
                assert time.monotonic() - start < SOAK_SECONDS + 60, "the readers did not stop"
            results = finish_readers(readers)
        end = (proc_status(pid, "VmRSS"), proc_status(pid, "RssAnon"))
        assert_readers_clean(results)
        # releases reach the daemon asynchronously after the readers' close
        mmtest.wait_for(lambda: fd_count(pid) == fds_before, timeout=5)
        fds_after = fd_count(pid)
        soak_served = served(m.path) - served_before
        reads = sum(res["reads"] for _, res, _ in results)
        print(f"soak {which}: {SOAK_READERS} readers, {time.monotonic() - start:.1f} s, {reads} reads, "
              f"{sum(res['bytes'] for _, res, _ in results) >> 20} MiB read, {soak_served >> 20} MiB served "
              f"by the daemon; VmRSS kB warm {warm[0]} end {end[0]} max {max(rss)}; RssAnon kB warm {warm[1]} "
              f"end {end[1]}; fds {fds_before} -> {fds_after}")
        assert reads >= SOAK_READERS
        assert soak_served > 0, "the soak never reached the daemon"
        assert fds_after == fds_before, f"descriptor leak: {fds_before} before the soak, {fds_after} after"
        assert end[0] - warm[0] <= RSS_GROWTH_BOUND_KB, \
            f"VmRSS grew by {end[0] - warm[0]} kB during the soak (bound {RSS_GROWTH_BOUND_KB} kB): {rss}"
