"""Fixtures of the integration suite: binaries, tiny models made with mm-mkmodel, real FUSE mounts,
per-test timeouts.

Environment:
  MERGEMOUNT_BIN   the mergemount binary (default <repo>/build/tools/mergemount)
  MM_MKMODEL_BIN   the mm-mkmodel binary (default <repo>/build/tools/mm-mkmodel)
  MM_TEST_TIMEOUT  seconds per test (default 120, or a test's @pytest.mark.timeout)
"""

import os
import signal
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mmtest  # noqa: E402

TEST_TIMEOUT = int(os.environ.get("MM_TEST_TIMEOUT", "120"))


def pytest_collection_modifyitems(config, items):
    ok, reason = mmtest.fuse_available()
    if not ok:
        skip = pytest.mark.skip(reason=f"integration tests need FUSE: {reason}")
        here = os.path.dirname(os.path.abspath(__file__))
        for item in items:
            if str(item.fspath).startswith(here + os.sep):
                item.add_marker(skip)


class TestTimeout(Exception):
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): this test's time limit (instead of 120 s)")


@pytest.fixture(autouse=True)
def _timeout(request):
    """A hung FUSE read would hang the run: every test gets an alarm, of @pytest.mark.timeout(seconds)
    or 120 s; MM_TEST_TIMEOUT, when set, wins over both (slow machines)."""
    marker = request.node.get_closest_marker("timeout")
    limit = int(marker.args[0]) if marker and "MM_TEST_TIMEOUT" not in os.environ else TEST_TIMEOUT

    def on_alarm(signum, frame):
        raise TestTimeout(f"{request.node.nodeid} took more than {limit} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session", autouse=True)
def _environment(tmp_path_factory):
    """Isolates the program from the machine: its cache under a fresh XDG_CACHE_HOME, and an empty
    Hugging Face cache so that `org/name` references are never found by accident."""
    root = tmp_path_factory.mktemp("env")
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE")}
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    os.environ["HF_HOME"] = str(root / "hf")
    os.environ["HF_HUB_CACHE"] = str(root / "hf" / "hub")
    os.makedirs(os.environ["HF_HUB_CACHE"], exist_ok=True)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def binaries():
    missing = [p for p in (mmtest.MERGEMOUNT, mmtest.MKMODEL) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"binaries not found: {', '.join(missing)} (build with `meson setup build && ninja -C build`, "
                    "or set MERGEMOUNT_BIN / MM_MKMODEL_BIN)", pytrace=False)
    return mmtest.MERGEMOUNT, mmtest.MKMODEL


@pytest.fixture(scope="session")
def make_model(binaries, tmp_path_factory):
    """make_model(seed, dtype="bf16", shards=1, tied=False, **sizes) -> folder, made once per session
    by mm-mkmodel. sizes: layers, hidden, intermediate, vocab, heads, kv_heads, scale."""
    root = tmp_path_factory.mktemp("models")
    made = {}

    def make(seed, dtype="bf16", shards=1, tied=False, tokenizer=True, **sizes):
        key = (seed, dtype, shards, tied, tokenizer, tuple(sorted(sizes.items())))
        if key not in made:
            name = f"s{seed}-{dtype}-{shards}sh" + ("-tied" if tied else "") + ("" if tokenizer else "-notok")
            name += "".join(f"-{k}{v}" for k, v in sorted(sizes.items()))
            folder = str(root / name)
            args = [binaries[1], folder, "--seed", seed, "--dtype", dtype, "--shards", shards]
            if tied:
                args.append("--tie-embeddings")
            if not tokenizer:
                args.append("--no-tokenizer")
            for k, v in sorted(sizes.items()):
                args += ["--" + k.replace("_", "-"), v]
            mmtest.run([str(a) for a in args], check=True)
            made[key] = folder
        return made[key]

    return make


@pytest.fixture(scope="session")
def models(make_model):
    """The standard tiny models: seeds 1, 2, 3 in bf16/f16/f32, single file and 3 shards, tied."""
    out = {}
    for dtype in ("bf16", "f16", "f32"):
        for seed in (1, 2, 3):
            out[(seed, dtype)] = make_model(seed, dtype)
            out[(seed, dtype, "sharded")] = make_model(seed, dtype, shards=3)
    for seed in (1, 2, 3):
        out[(seed, "bf16", "tied")] = make_model(seed, "bf16", tied=True)
    return out


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(size, name="tmpfs") -> the path of a fresh tmpfs of that size (mount's `size=` syntax,
    e.g. "8m") under tmp_path, unmounted when the test ends. Skips the test where mounting is not
    allowed (needs root / CAP_SYS_ADMIN)."""
    made = []

    def make(size, name="tmpfs"):
        d = tmp_path / name
        d.mkdir()
        r = mmtest.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], timeout=30)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a {size} tmpfs (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}")
        made.append(d)
        return str(d)

    yield make
    for d in reversed(made):
        for _ in range(50):
            if mmtest.run(["umount", str(d)], timeout=30).returncode == 0:
                break
            time.sleep(0.1)


@pytest.fixture
def tiny_tmpfs(tmpfs):
    """An 8 MB tmpfs (see tmpfs)."""
    return tmpfs("8m")


@pytest.fixture
def mount(binaries, tmp_path):
    """mount(config, *args, mountpoint=None, allow=None) -> a Mount context manager (see mmtest.Mount).
    Any mount still up when the test ends is torn down."""
    active = []
    counter = [0]

    def factory(config, *args, mountpoint=None, allow=None):
        if mountpoint is None:
            counter[0] += 1
            mountpoint = tmp_path / f"mnt{counter[0]}"
        m = mmtest.Mount(config, mountpoint, args, allow=allow)
        active.append(m)
        return m

    yield factory
    for m in active:
        if m.proc is not None:
            m.force_cleanup()
