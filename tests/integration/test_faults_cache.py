"""The block cache's directory failing under a mount (issue 6, "Faults"): deleted, made read-only,
filled up. Reads keep their bytes (served uncached when the cache cannot help), the daemon keeps
running, a cache problem is logged at most once per kind, and unmount exits 0 (the `mount` fixture
checks the exit status and that stderr holds no error line).

What the kernel makes of these faults (observed on Linux 6.x): LMDB keeps data.mdb and lock.mdb open
for the life of the mount and never opens a path again, so a deleted directory or a read-only bind
mount over it changes nothing for the running daemon (writes go on into the open, possibly unlinked
files), and remounting the filesystem read-only is refused (EBUSY) while those files are open for
writing. They matter to the next mount: a read-only directory means no cache at all (one warning). A
full disk does reach the running daemon: commits fail with ENOSPC, the writer evicts and retries or
drops the blocks."""

import errno
import os
import shutil
import signal
import subprocess

import pytest

import mmtest
from mmcache import (Case, assert_same_tree, cache_stats, cached, linear3, make_big_models, read_direct, read_tree,
                     show, stats, wait_stats)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def case(make_model, tmp_path_factory):
    """The 3-model linear merge of test_cache (bf16 out, ~15.5 MiB of multi-block tensors, 3+ shards)."""
    return Case(tmp_path_factory.mktemp("faults-cache"), linear3(*make_big_models(make_model)),
                args=["--out-shard-size", "6M"])


def warnings_of(text):
    return [ln for ln in text.splitlines() if ln.startswith("mergemount: warning:")]


def assert_logged_once_each(text):
    """No cache message twice (each kind is logged once per process)."""
    lines = warnings_of(text)
    assert len(lines) == len(set(lines)), "a cache message was repeated:\n" + "\n".join(lines)


def read_some(mnt, files, names):
    for n in names:
        assert read_direct(os.path.join(mnt, n)) == files[n], n


def test_cache_dir_deleted_while_mounted(mount, case, tmp_path):
    cdir = str(tmp_path / "cache")
    names = sorted(case.files)
    with mount(case.config, *case.args, *cached(cdir)) as m:
        read_some(m.path, case.files, names[::2])
        shutil.rmtree(cdir)
        # computed blocks are stored into the open, unlinked environment; hits come from it
        assert_same_tree(read_tree(m.path, direct=True), case.files, "after rm -rf of the cache")
        assert_same_tree(read_tree(m.path, direct=True), case.files, "second read after rm -rf")
        s = wait_stats(m.path, lambda s: s["cache_puts_stored"] + s["cache_puts_dropped"] >= case.blocks)
        print("after rm -rf:", show(s), m.stderr(), sep="\n")
        assert s["cache_enabled"] is True and s["blocks_computed"] == case.blocks, show(s)
        assert s["cache_hits"] >= case.blocks, show(s)
        assert m.proc.poll() is None, "the daemon died"
        assert_logged_once_each(m.stderr())
    assert not os.path.exists(cdir), "nothing should have recreated the deleted directory"
    # the next mount starts a new cache there
    with mount(case.config, *case.args, *cached(cdir)) as m:
        assert_same_tree(read_tree(m.path), case.files, "mount after the deletion")
        assert stats(m.path)["blocks_computed"] == case.blocks


@pytest.fixture
def read_only_bind(tmp_path):
    """read_only_bind(dir): makes dir read-only for everyone, root included (a read-only bind mount of
    itself), until the test ends."""
    done = []

    def make(d):
        r = mmtest.run(["mount", "--bind", d, d], timeout=30)
        if r.returncode != 0:
            pytest.skip(f"cannot make a bind mount (needs root): {r.stderr.strip()}")
        done.append(d)
        r = mmtest.run(["mount", "-o", "remount,bind,ro", d], timeout=30)
        assert r.returncode == 0, r.stderr
        with pytest.raises(OSError) as e:
            open(os.path.join(d, "probe"), "w")
        assert e.value.errno == errno.EROFS
        return d

    yield make
    for d in done:
        if mmtest.run(["umount", d], timeout=30).returncode != 0:
            mmtest.run(["umount", "-l", d], timeout=30)


def test_cache_dir_read_only(mount, case, tmp_path, read_only_bind):
    cdir = str(tmp_path / "cache")
    with mount(case.config, *case.args, *cached(cdir)) as m:
        read_some(m.path, case.files, sorted(case.files)[::2])
        os.chmod(cdir, 0o555)
        read_only_bind(cdir)
        # the open environment is not affected: everything is still served, stored and found
        assert_same_tree(read_tree(m.path, direct=True), case.files, "after the directory became read-only")
        assert_same_tree(read_tree(m.path, direct=True), case.files, "second read")
        s = stats(m.path)
        print("read-only while mounted:", show(s), m.stderr(), sep="\n")
        assert s["cache_enabled"] is True and s["blocks_computed"] == case.blocks, show(s)
        assert m.proc.poll() is None, "the daemon died"
    # A mount that starts on the read-only directory runs without a cache, saying so once.
    with mount(case.config, *case.args, *cached(cdir)) as m:
        assert_same_tree(read_tree(m.path, direct=True), case.files, "mount on a read-only cache directory")
        assert_same_tree(read_tree(m.path, direct=True), case.files, "second read")
        s = stats(m.path)
        print("read-only at mount:", show(s), m.stderr(), sep="\n")
        assert s["cache_enabled"] is False, show(s)
        lines = [ln for ln in m.stderr().splitlines() if cdir in ln]
        assert len(lines) == 1 and lines[0].startswith("mergemount: warning:"), m.stderr()


def fill(folder):
    """Writes a file into folder until the filesystem is full."""
    chunk = b"\0" * (1 << 20)
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    subprocess.run(["sync"])


def test_cache_disk_fills_while_mounted(mount, case, tmp_path, tmpfs):
    """The cache (~16 MB for everything) on a 24 MB tmpfs that something else fills up mid-read."""
    disk = tmpfs("24m")
    cdir = os.path.join(disk, "cache")
    names = sorted(case.files)
    with mount(case.config, *case.args, *cached(cdir)) as m:
        read_some(m.path, case.files, names[::2])
        wait_stats(m.path, lambda s: s["cache_puts_stored"] + s["cache_puts_dropped"] >= s["blocks_computed"])
        fill(disk)
        assert_same_tree(read_tree(m.path, direct=True), case.files, "read on a full disk")
        assert_same_tree(read_tree(m.path, direct=True), case.files, "second read on a full disk")
        s = wait_stats(m.path, lambda s: s["cache_puts_stored"] + s["cache_puts_dropped"] >= s["blocks_computed"])
        print("disk full:", show(s), m.stderr(), sep="\n")
        assert s["cache_enabled"] is True, show(s)
        assert s["cache_puts_stored"] + s["cache_puts_dropped"] >= s["blocks_computed"], show(s)
        assert m.proc.poll() is None, "the daemon died"
        assert_logged_once_each(m.stderr())
    os.unlink(os.path.join(disk, "filler"))
    with mount(case.config, *case.args, *cached(cdir)) as m:
        assert_same_tree(read_tree(m.path), case.files, "mount after the disk was freed")


# ---- commits without sync: the record of unsynced commits ------------------------------------------------

OTHER_BOOT = "00000000-1111-2222-3333-444444444444"


def this_boot():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        pytest.skip("no /proc/sys/kernel/random/boot_id: commits sync and leave no record")


def markers(cdir):
    return sorted(n for n in os.listdir(cdir) if n.startswith("unsynced."))


def marker_text(cdir, pid):
    with open(os.path.join(cdir, f"unsynced.{pid}")) as f:
        return f.read().strip()


def test_cache_after_kill_9_and_after_a_stop_of_the_system(mount, case, tmp_path):
    """Commits do not sync. A daemon killed with -9 loses nothing (the kernel holds its writes): the next
    mount of this boot serves every block from the cache. A record of another boot means the system
    stopped with commits unsynced: `cache stats` refuses and changes nothing, the next mount starts a new
    cache (cache_resets 1) and the bytes stay right."""
    boot = this_boot()
    cdir = str(tmp_path / "cache")
    m = mount(case.config, *case.args, *cached(cdir))
    m.__enter__()
    assert_same_tree(read_tree(m.path), case.files, "first read")
    s = wait_stats(m.path, lambda s: s["cache_puts_stored"] + s["cache_puts_dropped"] >= case.blocks)
    assert s["blocks_computed"] == case.blocks and s["cache_puts_stored"] == case.blocks, show(s)
    # the daemon recorded itself (this boot) before its first commit
    assert markers(cdir) == [f"unsynced.{m.proc.pid}"] and marker_text(cdir, m.proc.pid) == boot
    killed = m.proc.pid
    m.proc.kill()
    assert m.proc.wait(timeout=10) == -signal.SIGKILL
    r = mmtest.run([mmtest.FUSERMOUNT, "-u", m.path], timeout=30)
    assert r.returncode == 0, r.stderr
    m._close()
    assert markers(cdir) == [f"unsynced.{killed}"], "a killed daemon cannot remove its record"

    with mount(case.config, *case.args, *cached(cdir)) as m:
        assert_same_tree(read_tree(m.path), case.files, "mount after kill -9")
        s = stats(m.path)
        print("after kill -9:", show(s), m.stderr(), sep="\n")
        assert s["blocks_computed"] == 0 and s["cache_hits"] >= case.blocks and s["cache_resets"] == 0, show(s)
        assert markers(cdir) == [f"unsynced.{m.proc.pid}"], "the dead daemon's record should be synced and gone"
    assert markers(cdir) == [], "a clean unmount syncs and removes its record"

    with open(os.path.join(cdir, "unsynced.1"), "w") as f:
        f.write(OTHER_BOOT + "\n")
    with open(os.path.join(cdir, "data.mdb"), "rb") as f:
        before = f.read()
    r = mmtest.mergemount("cache", "stats", "--cache-dir", cdir)
    assert r.returncode == 1 and f"cache clear --cache-dir {cdir}" in r.stderr, (r.returncode, r.stderr)
    with open(os.path.join(cdir, "data.mdb"), "rb") as f:
        assert f.read() == before, "`cache stats` changed data.mdb"

    with mount(case.config, *case.args, *cached(cdir)) as m:
        assert_same_tree(read_tree(m.path), case.files, "mount after a stop of the system")
        s = stats(m.path)
        print("after a record of another boot:", show(s), m.stderr(), sep="\n")
        assert s["cache_resets"] == 1 and s["blocks_computed"] == case.blocks, show(s)
        assert [ln for ln in warnings_of(m.stderr()) if cdir in ln and "starting a new one" in ln], m.stderr()
        assert markers(cdir) == [f"unsynced.{m.proc.pid}"], "the other boot's record goes once the new cache exists"
    assert markers(cdir) == []
    assert cache_stats(cdir)["blocks"] == case.blocks
