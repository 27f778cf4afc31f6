"""The daemon's life: background mount, SIGTERM, SIGKILL then remount, lazy unmount with an open
file, a source file truncated under a mount."""

import errno
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import config_eval
import mmtest


def linear_cfg(a, b):
    return {"merge_method": "linear",
            "models": [{"model": a, "parameters": {"weight": 0.25}}, {"model": b, "parameters": {"weight": 0.75}}]}


def start(config, mnt, *args):
    err = tempfile.TemporaryFile()
    os.makedirs(mnt, exist_ok=True)
    proc = subprocess.Popen([mmtest.MERGEMOUNT, "mount", str(config), str(mnt), "-f", *args],
                            stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    if not mmtest.wait_for(lambda: os.path.ismount(mnt) or proc.poll() is not None):
        proc.kill()
        raise AssertionError("not mounted in 10 s")
    err.seek(0)
    assert os.path.ismount(mnt), f"exited {proc.poll()}: {err.read().decode()}"
    return proc, err


def cleanup(proc, mnt):
    if os.path.ismount(mnt):
        subprocess.run([mmtest.FUSERMOUNT, "-u", "-z", mnt], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def stderr_of(err):
    err.seek(0)
    return err.read().decode("utf-8", "replace")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_unmounts_cleanly(binaries, tmp_path, models, sig):
    config = mmtest.write_config(tmp_path, linear_cfg(models[(1, "bf16")], models[(2, "bf16")]))
    mnt = str(tmp_path / "mnt")
    proc, err = start(config, mnt)
    try:
        mmtest.read_weights(mnt)
        proc.send_signal(sig)
        rc = proc.wait(timeout=20)
        text = stderr_of(err)
        assert rc == 0, f"exit {rc} after {sig.name}:\n{text}"
        assert not os.path.ismount(mnt)
        assert not mmtest.bad_stderr_lines(text), text
    finally:
        cleanup(proc, mnt)
        err.close()


def test_sigkill_then_remount_same_bytes(binaries, tmp_path, models):
    cfg = linear_cfg(models[(1, "f16")], models[(2, "f16", "sharded")])
    config = mmtest.write_config(tmp_path, cfg)
    mnt = str(tmp_path / "mnt")
    proc, err = start(config, mnt)
    try:
        first = {f: mmtest.read_file(os.path.join(mnt, f)) for f in mmtest.files_of(mnt)}
        proc.kill()
        proc.wait(timeout=10)
        r = mmtest.run([mmtest.FUSERMOUNT, "-u", mnt])
        if r.returncode != 0:  # a dead daemon's mount may need a lazy unmount
            mmtest.run([mmtest.FUSERMOUNT, "-u", "-z", mnt], check=True)
        assert mmtest.wait_for(lambda: not os.path.ismount(mnt))
    finally:
        cleanup(proc, mnt)
        err.close()
    with mmtest.Mount(config, mnt) as m:
        again = {f: mmtest.read_file(os.path.join(m.path, f)) for f in mmtest.files_of(m.path)}
        mmtest.assert_matches_reference(m.path, config_eval.evaluate(cfg).tensors)
    assert again == first


def test_background_mount(binaries, tmp_path, models):
    """Without -f, `mergemount mount` returns 0 once the folder is ready; fusermount3 -u ends it."""
    cfg = linear_cfg(models[(1, "bf16")], models[(3, "bf16")])
    config = mmtest.write_config(tmp_path, cfg)
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    try:
        r = mmtest.mergemount("mount", config, mnt, timeout=30)
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mnt), "mount returned before the folder was mounted"
        mmtest.assert_matches_reference(mnt, config_eval.evaluate(cfg).tensors)
        mmtest.run([mmtest.FUSERMOUNT, "-u", mnt], check=True)
        assert not os.path.ismount(mnt)
    finally:
        if os.path.ismount(mnt):
            subprocess.run([mmtest.FUSERMOUNT, "-u", "-z", mnt])


def test_lazy_unmount_with_open_file(binaries, tmp_path, models):
    cfg = linear_cfg(models[(2, "bf16")], models[(3, "bf16")])
    config = mmtest.write_config(tmp_path, cfg)
    built = mmtest.build(config, tmp_path / "built")
    want = mmtest.read_file(os.path.join(built, "model.safetensors"))
    mnt = str(tmp_path / "mnt")
    proc, err = start(config, mnt)
    try:
        fd = os.open(os.path.join(mnt, "model.safetensors"), os.O_RDONLY)
        try:
            head = os.pread(fd, 100, 0)
            mmtest.run([mmtest.FUSERMOUNT, "-u", "-z", mnt], check=True)
            assert not os.path.ismount(mnt)
            # the open file keeps the connection: it still reads, the rest computed on demand
            assert head + os.pread(fd, len(want), 100) == want
        finally:
            os.close(fd)
        rc = proc.wait(timeout=20)
        text = stderr_of(err)
        assert rc == 0, f"exit {rc}:\n{text}"
        assert not mmtest.bad_stderr_lines(text), text
    finally:
        cleanup(proc, mnt)
        err.close()


def test_source_truncated_after_mount(binaries, tmp_path, models):
    """A source shard truncated under a mount: reads of what it feeds fail with EIO (never a crash,
    never wrong bytes); the daemon keeps serving the rest and unmounts cleanly."""
    src = str(tmp_path / "victim")
    shutil.copytree(models[(1, "bf16")], src)
    cfg = linear_cfg(src, models[(2, "bf16")])
    config = mmtest.write_config(tmp_path, cfg)
    # No block cache here: this is about reading a source that changed under the mount. (Every kind of
    # change, with and without the cache, is in test_faults_source.py.)
    built = mmtest.build(config, tmp_path / "built", "--no-cache")
    want = mmtest.read_file(os.path.join(built, "model.safetensors"))
    mnt = str(tmp_path / "mnt")
    proc, err = start(config, mnt, "--no-cache")
    try:
        with open(os.path.join(src, "model.safetensors"), "r+b") as f:
            f.truncate(4096)
        try:
            got = mmtest.read_file(os.path.join(mnt, "model.safetensors"))
            assert got == want, "wrong bytes served from a truncated source"
        except OSError as e:
            print("read failed:", e)
            assert e.errno == errno.EIO, e
        assert proc.poll() is None, f"the daemon died:\n{stderr_of(err)}"
        assert mmtest.read_file(os.path.join(mnt, "config.json"))
        r = mmtest.run([mmtest.FUSERMOUNT, "-u", mnt])
        assert r.returncode == 0, r.stderr
        rc = proc.wait(timeout=20)
        text = stderr_of(err)
        print(text)
        assert rc == 0, f"exit {rc}:\n{text}"
        assert "victim" in text, f"the failed source read is not reported:\n{text}"
        assert "Sanitizer" not in text and "runtime error" not in text, text
    finally:
        cleanup(proc, mnt)
        err.close()


def test_mount_table_names_the_config_by_its_absolute_path(binaries, tmp_path, models, monkeypatch):
    """A config given relative to the current folder appears in /proc/mounts (findmnt, umount by
    source, fstab comparisons) as its absolute path, as mount(8) would name it."""
    config = mmtest.write_config(tmp_path, linear_cfg(models[(1, "bf16")], models[(2, "bf16")]))
    monkeypatch.chdir(os.path.dirname(config))
    mnt = str(tmp_path / "mnt")
    proc, err = start(os.path.basename(config), mnt)
    try:
        with open("/proc/self/mountinfo") as f:
            rows = [line.split() for line in f]
        row = next(r for r in rows if r[4] == os.path.realpath(mnt))
        fstype, source = row[row.index("-") + 1:row.index("-") + 3]
        assert fstype == "fuse.mergemount"
        assert source == os.path.realpath(config), row
    finally:
        cleanup(proc, mnt)
        err.close()
