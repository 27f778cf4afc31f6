"""The writable `.cache/` of a mount (issue 10, part 2): `hf upload-large-folder` keeps its resume state
in <folder>/.cache/huggingface/, and `hf upload` hashes every file. The mount keeps `.cache/` in
<state-dir>/<recipe id>/.cache and passes every file operation there through; everything else stays
read-only. Checked here with real mounts:

- `.cache` is absent until made (and nothing is on disk until then), and every ordinary file operation
  works inside it; flock and fcntl locks exclude each other between processes;
- what huggingface_hub does in that folder (.gitignore and CACHEDIR.TAG, upload/<file>.metadata rewritten
  under <file>.lock by several writers at once), emulated without huggingface_hub;
- writes anywhere else answer EROFS, and nothing done through the mount reaches outside the state
  directory (symlinks, `..`, renames and links across the border, a symlink planted in the state dir);
- the state survives kill -9 of the daemon and a clean remount, with the model files' bytes and mtimes
  unchanged; another recipe gets another directory; --state-dir, its default, a state dir that cannot
  be made, and `-o ro`;
- hashing the mount as `hf upload` does (sha256 in 1 MiB reads from 5 threads, git blob sha1) gives the
  built folder's hashes.

Optional: the real huggingface_hub code (its _local_folder functions, and upload_large_folder with the
network steps replaced) against the mount. It runs when `import huggingface_hub` works, or when
MM_HF_HUB_SRC names a huggingface_hub src/ tree, and is skipped otherwise. huggingface_hub >= 1.4 needs
filelock >= 3.10; with Debian 12's python3-filelock (3.9) use the v1.3.7 tree:
  git clone https://github.com/huggingface/huggingface_hub && mkdir /tmp/hfhub &&
  git -C huggingface_hub archive v1.3.7 src | tar -x -C /tmp/hfhub
  apt-get install python3-filelock python3-httpx python3-tqdm python3-packaging python3-yaml
  MM_HF_HUB_SRC=/tmp/hfhub/src pytest tests/integration/test_state_dir.py"""

import concurrent.futures
import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import mmap
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

import mmtest
import state_child

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "state_child.py")

SIZES = dict(layers=2, hidden=256, intermediate=512, vocab=512, heads=4, kv_heads=2)
ROOT = os.geteuid() == 0
# Where the kernel stops a write first because of the modes (0444 files), a user gets EACCES; root gets
# to the daemon, which answers EROFS.
REFUSED = {errno.EROFS} if ROOT else {errno.EROFS, errno.EACCES}


def linear_cfg(a, b, wb=0.5):
    return {"merge_method": "linear",
            "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": wb}}],
            "dtype": "float32", "out_dtype": "bfloat16"}


def make_case(tmp, cfg, name):
    config = mmtest.write_config(tmp, cfg, name=name)
    args = ["--out-shard-size", "1M"]
    built = mmtest.build(config, tmp / (name + ".built"), "--no-cache", "--no-progress", *args)
    return {"config": config, "args": args, "built": built, "files": mmtest.files_of(built)}


@pytest.fixture(scope="module")
def models(make_model):
    return [make_model(seed, "bf16", **SIZES) for seed in (1, 2)]


@pytest.fixture(scope="module")
def case(models, tmp_path_factory):
    c = make_case(tmp_path_factory.mktemp("state"), linear_cfg(*models), "merge.yml")
    assert len([f for f in c["files"] if f.endswith(".safetensors")]) >= 2, c["files"]
    return c


@pytest.fixture(scope="module")
def other_case(models, tmp_path_factory):
    """The same models with another weight: another recipe."""
    return make_case(tmp_path_factory.mktemp("state-other"), linear_cfg(*models, wb=0.25), "other.yml")


# ---- helpers -------------------------------------------------------------------------------------------

def args_of(case, state, *more):
    return [*case["args"], "--no-cache", "--state-dir", str(state), *more]


def backing(state):
    """The one <state>/<recipe id> directory under a state dir."""
    ids = os.listdir(state)
    assert len(ids) == 1 and len(ids[0]) == 64, ids
    return os.path.join(str(state), ids[0])


def error_of(fn, *args, **kw):
    """The errno fn(*args) fails with; fails the test if it succeeded."""
    try:
        r = fn(*args, **kw)
    except OSError as e:
        return e.errno
    if fn is os.open:
        os.close(r)
    raise AssertionError(f"{fn.__name__}{args} succeeded")


def tree(path):
    """{relative path: (type, bytes or link target)} of a directory, links not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, path)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", None)
            else:
                out[rel] = ("file", mmtest.read_file(p))
    return out


def model_mtimes(mnt, case):
    return {name: os.stat(os.path.join(mnt, name)).st_mtime_ns for name in case["files"]}


def assert_models_unchanged(mnt, case):
    """The model files of the mount: the built names (plus `.cache` if made), modes 0444, the built bytes."""
    assert sorted(set(os.listdir(mnt)) - {".cache"}) == case["files"]
    for name in case["files"]:
        p = os.path.join(mnt, name)
        assert os.stat(p).st_mode == 0o100444, name
        fd = os.open(p, os.O_RDONLY | os.O_DIRECT)  # from the daemon, not the page cache
        try:
            data = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
        finally:
            os.close(fd)
        assert data == mmtest.read_file(os.path.join(case["built"], name)), f"{name} differs from build"


def child(*args):
    return subprocess.Popen([sys.executable, CHILD, *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def readline(proc, timeout):
    """One line of proc's stdout within timeout seconds, or ""."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def child_says(*args, timeout=20):
    p = child(*args)
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err
    return out.strip()


# ---- what huggingface_hub does in <folder>/.cache/huggingface (huggingface_hub/_local_folder.py) ----------

CACHEDIR_TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n"
                "# This file is a cache directory tag created by huggingface_hub.\n"
                "# For information about cache directory tags, see:\n"
                "#\thttps://bford.info/cachedir/\n")


@contextlib.contextmanager
def hf_lock(path, timeout=20.0):
    """huggingface_hub's WeakFileLock: filelock's UnixFileLock, polled every 50 ms (open_lock_file as
    filelock opens it, flock(LOCK_EX | LOCK_NB) until it is had)."""
    deadline = time.monotonic() + timeout
    while True:
        fd = state_child.open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            os.close(fd)
            assert time.monotonic() < deadline, f"lock {path} not had in {timeout} s"
            time.sleep(0.05)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def hf_dir(folder):
    """_huggingface_dir: .cache/huggingface with CACHEDIR.TAG and a .gitignore written under a lock."""
    path = os.path.join(folder, ".cache", "huggingface")
    os.makedirs(path, exist_ok=True)
    tag = os.path.join(path, "CACHEDIR.TAG")
    if not os.path.exists(tag):
        with open(tag, "w") as f:
            f.write(CACHEDIR_TAG)
    gitignore = os.path.join(path, ".gitignore")
    if not os.path.exists(gitignore):
        with hf_lock(gitignore + ".lock"):
            with open(gitignore, "w") as f:
                f.write("*")
        with contextlib.suppress(OSError):
            os.unlink(gitignore + ".lock")
    return path


def hf_upload_paths(folder, name):
    """get_local_upload_paths: (file, metadata, lock) paths, their folders made."""
    metadata = os.path.join(hf_dir(folder), "upload", name + ".metadata")
    os.makedirs(os.path.dirname(metadata), exist_ok=True)
    os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)  # the folder itself: EEXIST
    return os.path.join(folder, name), metadata, metadata[:-len(".metadata")] + ".lock"


def hf_save(folder, name, size, sha256="", mode="", uploaded=0, committed=0):
    """LocalUploadFileMetadata.save: the whole record rewritten under the lock; returns its timestamp."""
    _, metadata, lock = hf_upload_paths(folder, name)
    with hf_lock(lock):
        with open(metadata, "w") as f:
            ts = time.time()
            f.write(f"{ts}\n{size}\n0\n{sha256}\n{mode}\n\n{uploaded}\n{committed}\n")
    return ts


def hf_read(folder, name):
    """read_upload_metadata: the record, or None where huggingface_hub would start over (no record, or
    the file looks newer than the record)."""
    path, metadata, lock = hf_upload_paths(folder, name)
    with hf_lock(lock):
        if not os.path.exists(metadata):
            return None
        with open(metadata) as f:
            lines = f.read().split("\n")
        record = {"timestamp": float(lines[0]), "size": int(lines[1]), "sha256": lines[3],
                  "upload_mode": lines[4], "is_uploaded": lines[6] == "1", "is_committed": lines[7] == "1"}
        return record if os.stat(path).st_mtime <= record["timestamp"] else None


def sha256_of(path, chunk=1 << 20):
    """huggingface_hub's sha_fileobj: sha256 in 1 MiB reads."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            h.update(b)
            if not b:
                return h.hexdigest()


def git_blob_sha1(path):
    data = mmtest.read_file(path)
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# huggingface_hub's DEFAULT_IGNORE_PATTERNS (utils/_paths.py), applied by upload_folder and
# upload_large_folder to the listing of the folder.
HF_IGNORE = [".git", ".git/*", "*/.git", "**/.git/**", ".cache/huggingface", ".cache/huggingface/*",
             "*/.cache/huggingface", "**/.cache/huggingface/**"]


def hf_candidates(folder):
    """The files `hf upload` would send: every file under the folder, minus the ignored patterns."""
    out = []
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            if not any(fnmatch.fnmatch(rel, p) for p in HF_IGNORE):
                out.append(rel)
    return sorted(out)


# ---- `.cache` itself ---------------------------------------------------------------------------------------

def test_cache_appears_when_made(mount, case, tmp_path):
    """Absent from the listing and from lookup until mkdir makes it (in <state>/<id>/.cache, the state
    dir made then, 0700); rmdir when empty removes it again. The root is 0755 with nlink 2, then 3."""
    state = tmp_path / "state"
    with mount(case["config"], *args_of(case, state)) as m:
        cache = os.path.join(m.path, ".cache")
        assert mmtest.files_of(m.path) == case["files"]
        assert error_of(os.stat, cache) == errno.ENOENT
        root = os.stat(m.path)
        assert (root.st_mode, root.st_nlink) == (0o40755, 2)
        assert not state.exists()
        os.mkdir(cache)
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        assert ".cache" in os.listdir(m.path)
        assert os.stat(m.path).st_nlink == 3
        assert os.path.isdir(os.path.join(backing(state), ".cache"))
        assert stat.S_IMODE(os.stat(backing(state)).st_mode) == 0o700
        with open(os.path.join(cache, "f"), "w") as f:
            f.write("x")
        assert error_of(os.rmdir, cache) == errno.ENOTEMPTY
        os.unlink(os.path.join(cache, "f"))
        os.rmdir(cache)
        assert mmtest.files_of(m.path) == case["files"]
        assert not os.path.exists(cache)
        assert os.listdir(backing(state)) == []
        os.makedirs(os.path.join(cache, "a", "b"))  # mkdir -p from nothing
        assert os.path.isdir(os.path.join(backing(state), ".cache", "a", "b"))
        assert_models_unchanged(m.path, case)


def test_file_operations(mount, case, tmp_path):
    """Inside `.cache`, as on a local disk: mkdir -p, create, write/read, O_TRUNC, O_APPEND, pwrite past
    the end, truncate, rename (over a file, of a directory, RENAME_NOREPLACE-style refusals), hard
    links, unlink, rmdir, stat, readdir, utimens to a set time, chmod, fsync, xattrs, mmap, statvfs of
    the backing filesystem. Every change is in the backing directory."""
    state = tmp_path / "state"
    with mount(case["config"], *args_of(case, state)) as m:
        c = os.path.join(m.path, ".cache")
        d = os.path.join(c, "huggingface", "upload", "sub")
        os.makedirs(d)
        os.makedirs(d, exist_ok=True)
        assert error_of(os.mkdir, d) == errno.EEXIST
        f = os.path.join(d, "a.metadata")
        with open(f, "w") as fh:
            fh.write("first version, longer than the second\n")
        with open(f, "w") as fh:  # O_TRUNC
            fh.write("second\n")
        assert mmtest.read_file(f) == b"second\n"
        with open(f, "a") as fh:
            fh.write("appended\n")
        assert mmtest.read_file(f) == b"second\nappended\n"
        fd = os.open(f, os.O_RDWR)
        os.pwrite(fd, b"Z", 100)
        os.fsync(fd)
        os.fdatasync(fd)
        os.close(fd)
        assert os.stat(f).st_size == 101
        assert mmtest.read_file(f)[16:100] == bytes(84)
        os.truncate(f, 3)
        assert mmtest.read_file(f) == b"sec"
        with open(f, "r+b") as fh:
            fh.truncate(10)
        assert os.stat(f).st_size == 10
        fd = os.open(f, os.O_WRONLY | os.O_TRUNC)
        os.close(fd)
        assert os.stat(f).st_size == 0
        assert error_of(os.open, f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644) == errno.EEXIST

        # times: a set mtime (ns) reads back; atime too
        os.utime(f, ns=(1_600_000_000_123_456_789, 1_700_000_000_987_654_321))
        st = os.stat(f)
        assert (st.st_atime_ns, st.st_mtime_ns) == (1_600_000_000_123_456_789, 1_700_000_000_987_654_321)
        os.utime(f)  # now
        assert abs(os.stat(f).st_mtime - time.time()) < 60

        # modes: create and mkdir give the mode asked for under the caller's umask (002 here, looser than
        # the daemon's 022), chmod and fchmod (as filelock does) change it
        old = os.umask(0o002)
        try:
            fd = os.open(os.path.join(d, "m"), os.O_WRONLY | os.O_CREAT, 0o666)
            assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o664
            os.fchmod(fd, 0o640)
            os.close(fd)
            os.mkdir(os.path.join(d, "dir700"), 0o700)
            os.mkdir(os.path.join(d, "dir775"))
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.stat(os.path.join(d, "m")).st_mode) == 0o640
        assert stat.S_IMODE(os.stat(os.path.join(d, "dir775")).st_mode) == 0o775
        os.rmdir(os.path.join(d, "dir775"))
        assert stat.S_IMODE(os.stat(os.path.join(d, "dir700")).st_mode) == 0o700
        os.chmod(os.path.join(d, "m"), 0o600)
        assert stat.S_IMODE(os.stat(os.path.join(d, "m")).st_mode) == 0o600

        # rename: within a directory, across directories, over an existing file, a directory
        g = os.path.join(c, "g")
        with open(g, "w") as fh:
            fh.write("g")
        os.rename(g, os.path.join(d, "g2"))
        os.replace(os.path.join(d, "g2"), os.path.join(d, "m"))
        assert mmtest.read_file(os.path.join(d, "m")) == b"g"
        os.rename(os.path.join(d, "dir700"), os.path.join(c, "moved"))
        assert os.path.isdir(os.path.join(c, "moved"))
        assert error_of(os.rename, os.path.join(c, "moved"), d) in (errno.ENOTEMPTY, errno.EEXIST)

        # hard links share the inode; unlink and rmdir
        os.link(os.path.join(d, "m"), os.path.join(c, "hard"))
        assert os.stat(os.path.join(c, "hard")).st_nlink == 2
        assert os.stat(os.path.join(c, "hard")).st_ino == os.stat(os.path.join(d, "m")).st_ino
        os.unlink(os.path.join(c, "hard"))
        assert os.stat(os.path.join(d, "m")).st_nlink == 1
        assert error_of(os.rmdir, d) == errno.ENOTEMPTY
        assert error_of(os.unlink, os.path.join(c, "moved")) in (errno.EISDIR, errno.EPERM)
        os.rmdir(os.path.join(c, "moved"))

        # readdir: many entries (several readdir replies), then removed
        many = os.path.join(c, "many")
        os.mkdir(many)
        names = [f"entry-{i:04d}-{'x' * 40}" for i in range(600)]
        for n in names:
            open(os.path.join(many, n), "w").close()
        assert sorted(os.listdir(many)) == names
        assert sorted(e.name for e in os.scandir(many) if e.is_file()) == names
        for n in names:
            os.unlink(os.path.join(many, n))
        os.rmdir(many)

        # extended attributes, mmap, statvfs of the backing filesystem (the root keeps its numbers)
        os.setxattr(f, "user.test", b"value")
        assert os.getxattr(f, "user.test") == b"value" and "user.test" in os.listxattr(f)
        os.removexattr(f, "user.test")
        mm = os.path.join(c, "mapped")
        with open(mm, "wb") as fh:
            fh.write(bytes(8192))
        with open(mm, "r+b") as fh, mmap.mmap(fh.fileno(), 8192) as mp:
            mp[100:105] = b"hello"
            mp.flush()
        assert mmtest.read_file(mm)[100:105] == b"hello"
        assert os.statvfs(c).f_blocks == os.statvfs(backing(state)).f_blocks
        assert os.statvfs(m.path).f_bfree == 0

        # all of it in the backing directory
        got = tree(os.path.join(backing(state), ".cache"))
        assert got["huggingface/upload/sub/m"] == ("file", b"g")
        assert got["huggingface/upload/sub/a.metadata"] == ("file", b"")
        assert got["mapped"][1][100:105] == b"hello"
        assert set(got) == {"huggingface", "huggingface/upload", "huggingface/upload/sub", "huggingface/upload/sub/m",
                            "huggingface/upload/sub/a.metadata", "mapped"}
        assert_models_unchanged(m.path, case)


@pytest.mark.parametrize("kind", ["flock", "fcntl"])
def test_locks_between_processes(mount, case, tmp_path, kind):
    """A lock held by one process keeps another out (non-blocking: EWOULDBLOCK; blocking: it waits
    until the release), and 4 processes adding 1 to a counter 25 times each under the lock lose no
    update."""
    with mount(case["config"], *args_of(case, tmp_path / "state")) as m:
        c = os.path.join(m.path, ".cache")
        os.mkdir(c)
        path = os.path.join(c, "x.lock")
        fd = state_child.open_lock_file(path)
        state_child.lock(fd, kind)
        assert child_says("try", kind, path) == "busy"
        waiter = child("wait", kind, path)
        try:
            assert readline(waiter, 10) == "waiting"
            assert readline(waiter, 0.5) == "", "the waiter got the lock while it was held"
            state_child.unlock(fd, kind)
            assert readline(waiter, 10) == "locked"
        finally:
            waiter.kill()
            waiter.communicate()
        os.close(fd)
        assert child_says("try", kind, path) == "locked"

        with open(path + ".count", "w") as f:
            f.write("0")
        counters = [child("count", kind, path, 25) for _ in range(4)]
        for p in counters:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0 and out.strip() == "done", err
        assert mmtest.read_file(path + ".count") == b"100"


def test_hf_local_folder_protocol(mount, case, tmp_path):
    """What huggingface_hub does in the folder while uploading (emulated): .gitignore and CACHEDIR.TAG,
    then upload/<file>.metadata for every file, saved again and again by 3 processes per file under
    <file>.lock while the records are read back; each record reads back whole and is kept (the model
    file is not newer than it)."""
    state = tmp_path / "state"
    with mount(case["config"], *args_of(case, state)) as m:
        hf = hf_dir(m.path)
        assert mmtest.read_file(os.path.join(hf, ".gitignore")) == b"*"
        assert mmtest.read_file(os.path.join(hf, "CACHEDIR.TAG")).decode() == CACHEDIR_TAG
        assert not os.path.exists(os.path.join(hf, ".gitignore.lock"))
        for name in case["files"]:
            assert hf_read(m.path, name) is None
            size = os.stat(os.path.join(m.path, name)).st_size
            ts = hf_save(m.path, name, size)
            record = hf_read(m.path, name)
            assert record and record["size"] == size and record["timestamp"] == ts
        # Concurrent writers of one record: each rewrites it whole under the lock; a reader under the
        # lock must never see a partial record.
        name = case["files"][0]
        _, metadata, lock = hf_upload_paths(m.path, name)
        writers = [child("rewrite", metadata, lock) for _ in range(3)]
        try:
            assert all(readline(w, 10) == "0" for w in writers), "a writer did not get going"
            for _ in range(40):
                with hf_lock(lock):
                    content = mmtest.read_file(metadata)
                i = int(content.split()[1])
                assert content == state_child.rewrite_content(i), "a record read under the lock was partial"
            assert all(readline(w, 10) for w in writers), "a writer made no progress"
        finally:
            for w in writers:
                w.kill()
                w.communicate()
        names = sorted(os.listdir(os.path.join(hf, "upload")))
        assert all(n[:-len(".metadata")] in case["files"] for n in names if n.endswith(".metadata"))
        assert hf_candidates(m.path) == case["files"]
        assert_models_unchanged(m.path, case)


# ---- everything else read-only, nothing escapes ---------------------------------------------------------

def test_outside_cache_is_read_only(mount, case, tmp_path):
    """Writes, creates, unlinks, renames, links and attribute changes of the model files and the root
    fail (EROFS, or EACCES where the 0444 modes stop a non-root caller first); moving between `.cache`
    and the rest fails too; nothing changes."""
    state = tmp_path / "state"
    with mount(case["config"], *args_of(case, state)) as m:
        root = m.path
        c = os.path.join(root, ".cache")
        os.mkdir(c)
        inside = os.path.join(c, "inside")
        with open(inside, "w") as fh:
            fh.write("x")
        f = os.path.join(root, case["files"][0])
        new = os.path.join(root, "new-file")
        attempts = {
            "open O_WRONLY": (os.open, f, os.O_WRONLY),
            "open O_RDWR": (os.open, f, os.O_RDWR),
            "open O_TRUNC": (os.open, f, os.O_RDONLY | os.O_TRUNC),
            "open O_APPEND": (os.open, f, os.O_WRONLY | os.O_APPEND),
            "truncate": (os.truncate, f, 0),
        }
        erofs = {
            "create in root": (os.open, new, os.O_WRONLY | os.O_CREAT, 0o644),
            "mkdir in root": (os.mkdir, os.path.join(root, "d")),
            "mkdir .cache2": (os.mkdir, os.path.join(root, ".cache2")),
            "unlink": (os.unlink, f),
            "rename in root": (os.rename, f, new),
            "rename model into .cache": (os.rename, f, os.path.join(c, "x")),
            "rename .cache file to root": (os.rename, inside, new),
            "rename .cache": (os.rename, c, os.path.join(root, "cache2")),
            "link in root": (os.link, f, new),
            "link .cache file to root": (os.link, inside, new),
            "symlink in root": (os.symlink, f, new),
            "mknod in root": (os.mkfifo, new),
            "chmod file": (os.chmod, f, 0o644),
            "chmod root": (os.chmod, root, 0o777),
            "chown": (os.chown, f, os.getuid(), os.getgid()),
            "utime": (os.utime, f, (1, 1)),
            "utime now": (os.utime, f),
            "setxattr file": (os.setxattr, f, "user.x", b"1"),
            "setxattr root": (os.setxattr, root, "user.mergemount.stats", b"{}"),
            "removexattr root": (os.removexattr, root, "user.mergemount.stats"),
        }
        before = model_mtimes(root, case)
        wrong = {what: errno.errorcode.get(e, e) for what, call in attempts.items()
                 if (e := error_of(*call)) not in REFUSED}
        wrong.update({what: errno.errorcode.get(e, e) for what, call in erofs.items()
                      if (e := error_of(*call)) != errno.EROFS})
        if (e := error_of(os.link, f, os.path.join(c, "x"))) != errno.EXDEV:
            wrong["link model into .cache"] = errno.errorcode.get(e, e)
        assert not wrong, f"refused with other errors than expected: {wrong}"
        assert model_mtimes(root, case) == before
        assert sorted(os.listdir(root)) == sorted(case["files"] + [".cache"])
        assert tree(os.path.join(backing(state), ".cache")) == {"inside": ("file", b"x")}
        assert_models_unchanged(root, case)


def test_nothing_escapes(mount, case, tmp_path):
    """Symlinks and FIFOs are not made; `..` stays in the mount; renames and links across the border
    fail; a symlink put into the state directory from outside is never acted on through (utimes, link,
    open of a FIFO put there), and a `.cache` that is a symlink is not followed at all. Nothing outside
    the state directory changes."""
    state = tmp_path / "state"
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("secret")
    os.utime(secret, ns=(10**18, 10**18))
    before = tree(str(outside))
    with mount(case["config"], *args_of(case, state)) as m:
        c = os.path.join(m.path, ".cache")
        os.mkdir(c)
        assert error_of(os.symlink, "/etc/passwd", os.path.join(c, "pw")) == errno.EPERM
        assert error_of(os.symlink, str(secret), os.path.join(c, "s")) == errno.EPERM
        assert error_of(os.mkfifo, os.path.join(c, "fifo")) == errno.EPERM
        assert error_of(os.mkdir, os.path.join(c, "..", "escape")) == errno.EROFS
        os.mkdir(os.path.join(c, "sub"))
        assert error_of(os.open, os.path.join(c, "sub", "..", "..", "new"), os.O_WRONLY | os.O_CREAT) == errno.EROFS
        assert os.listdir(c) == ["sub"]

        # planted from outside, straight into the backing directory
        real = os.path.join(backing(state), ".cache")
        os.symlink(str(secret), os.path.join(real, "planted"))
        os.mkfifo(os.path.join(real, "planted-fifo"))
        link = os.path.join(c, "planted")
        assert stat.S_ISLNK(os.lstat(link).st_mode)
        assert os.readlink(link) == str(secret)
        assert error_of(os.utime, link, ns=(1, 1), follow_symlinks=False) == errno.EPERM
        assert error_of(os.link, link, os.path.join(c, "l2"), follow_symlinks=False) == errno.EPERM
        # (a FIFO is opened by the kernel itself, as a pipe of the mount's inode: never by the daemon)
        assert error_of(os.utime, os.path.join(c, "planted-fifo"), ns=(1, 1)) == errno.EPERM
    assert tree(str(outside)) == before
    assert os.stat(secret).st_mtime_ns == 10**18

    # `.cache` of the state directory replaced by a symlink to a folder outside: not there for the mount
    shutil.rmtree(os.path.join(backing(state), ".cache"))
    os.symlink(str(outside), os.path.join(backing(state), ".cache"))
    with mount(case["config"], *args_of(case, state)) as m:
        c = os.path.join(m.path, ".cache")
        assert mmtest.files_of(m.path) == case["files"]
        assert error_of(os.stat, c) == errno.ENOENT
        assert error_of(os.mkdir, c) == errno.EEXIST
        assert error_of(os.open, os.path.join(c, "new"), os.O_WRONLY | os.O_CREAT) == errno.ENOENT
    assert tree(str(outside)) == before


# ---- lifetime of the state ---------------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_state_survives_kill_and_remount(mount, case, tmp_path):
    """Records written, then kill -9 of the daemon while a client rewrites a record under its lock: after
    `fusermount3 -u` and a remount (same recipe, same state directory), every record written before is
    intact, the one being rewritten holds a prefix of one version, and the model files have the built
    bytes and the same mtimes; the same again after a clean unmount and remount."""
    state = tmp_path / "state"
    args = args_of(case, state)
    m = mount(case["config"], *args)
    m.__enter__()
    mtimes = model_mtimes(m.path, case)
    records = {}
    for name in case["files"]:
        size = os.stat(os.path.join(m.path, name)).st_size
        hf_save(m.path, name, size, sha256=hashlib.sha256(name.encode()).hexdigest(), mode="lfs")
        records[name] = mmtest.read_file(hf_upload_paths(m.path, name)[1])
    inflight = os.path.join(hf_dir(m.path), "upload", "inflight.metadata")
    writer = child("rewrite", inflight, inflight[:-len(".metadata")] + ".lock")
    try:
        assert [readline(writer, 10) for _ in range(3)] == ["0", "1", "2"], writer.stderr.read()
        m.proc.kill()
        assert m.proc.wait(timeout=10) == -signal.SIGKILL
        _, err = writer.communicate(timeout=30)
        assert writer.returncode != 0 and ("Transport endpoint" in err or "Software caused" in err or
                                           "Errno 103" in err or "Errno 107" in err), err
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate()
    r = mmtest.run([mmtest.FUSERMOUNT, "-u", m.path], timeout=30)
    assert r.returncode == 0, r.stderr
    m._close()

    def check(again):
        for name, content in records.items():
            _, metadata, _ = hf_upload_paths(again.path, name)
            assert mmtest.read_file(metadata) == content, name
            record = hf_read(again.path, name)
            assert record and record["upload_mode"] == "lfs", f"{name}: the record would be thrown away"
        data = mmtest.read_file(inflight)
        if data:
            i = int(data.split()[1])
            assert state_child.rewrite_content(i).startswith(data)
        assert model_mtimes(again.path, case) == mtimes
        assert_models_unchanged(again.path, case)
        assert len(os.listdir(state)) == 1

    with mount(case["config"], *args, mountpoint=m.path) as again:
        check(again)
    with mount(case["config"], *args, mountpoint=m.path) as again:
        check(again)


def test_other_recipe_other_state(mount, case, other_case, tmp_path):
    """Another recipe (another weight) on the same state dir starts without `.cache`, and makes its own
    directory; the first recipe's is still there, with its files."""
    state = tmp_path / "state"
    with mount(case["config"], *args_of(case, state)) as m:
        os.mkdir(os.path.join(m.path, ".cache"))
        with open(os.path.join(m.path, ".cache", "first"), "w") as f:
            f.write("1")
    first = backing(state)
    with mount(other_case["config"], *args_of(other_case, state)) as m:
        assert mmtest.files_of(m.path) == other_case["files"]
        os.mkdir(os.path.join(m.path, ".cache"))
        assert os.listdir(os.path.join(m.path, ".cache")) == []
    ids = sorted(os.listdir(state))
    assert len(ids) == 2 and os.path.basename(first) in ids
    assert mmtest.read_file(os.path.join(first, ".cache", "first")) == b"1"


# ---- options ---------------------------------------------------------------------------------------------

def test_default_state_dir_is_under_the_cache_dir(mount, case, tmp_path):
    """Without --state-dir: <cache-dir>/state/<id>, with --cache-dir and with --no-cache alike (then
    under the default cache dir, $XDG_CACHE_HOME/mergemount here)."""
    cache_dir = tmp_path / "cache"
    with mount(case["config"], *case["args"], "--cache-dir", cache_dir) as m:
        os.mkdir(os.path.join(m.path, ".cache"))
    assert os.path.isdir(os.path.join(backing(cache_dir / "state"), ".cache"))
    default_state = os.path.join(os.environ["XDG_CACHE_HOME"], "mergemount", "state")
    known = set(os.listdir(default_state)) if os.path.isdir(default_state) else set()
    with mount(case["config"], *case["args"], "--no-cache") as m:
        os.mkdir(os.path.join(m.path, ".cache"))
        made = set(os.listdir(default_state)) - known
        assert len(made) == 1, made
        assert os.path.isdir(os.path.join(default_state, made.pop(), ".cache"))
        os.rmdir(os.path.join(m.path, ".cache"))  # the session's cache dir is shared with other tests


def test_relative_state_dir_in_the_background(case, tmp_path, binaries):
    """A relative --state-dir means relative to where `mergemount mount` was started, also once the
    daemon has gone to the background (which runs in /)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([mmtest.MERGEMOUNT, "mount", case["config"], str(mnt), *case["args"], "--no-cache",
                        "--state-dir", "rel/state"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        os.mkdir(mnt / ".cache")
        assert os.path.isdir(os.path.join(backing(tmp_path / "rel" / "state"), ".cache"))
    finally:
        for _ in range(50):
            if mmtest.run([mmtest.FUSERMOUNT, "-u", str(mnt)], timeout=30).returncode == 0:
                break
            time.sleep(0.1)
    assert not os.path.ismount(mnt)


def test_ro_option(mount, case, tmp_path):
    """`-o ro`: the whole mount is read-only, `.cache` included; reads work."""
    state = tmp_path / "state"
    with mount(case["config"], *args_of(case, state), "-o", "ro") as m:
        assert error_of(os.mkdir, os.path.join(m.path, ".cache")) == errno.EROFS
        assert_models_unchanged(m.path, case)
    with mount(case["config"], *args_of(case, state)) as m:
        os.mkdir(os.path.join(m.path, ".cache"))
        open(os.path.join(m.path, ".cache", "f"), "w").close()
    with mount(case["config"], *args_of(case, state), "-o", "ro") as m:
        f = os.path.join(m.path, ".cache", "f")
        assert os.path.exists(f)
        assert error_of(os.open, f, os.O_WRONLY) == errno.EROFS
        assert error_of(os.unlink, f) == errno.EROFS


def test_unusable_state_dir(mount, case, tmp_path):
    """A state dir that cannot be made (a file is in the way): the files are served, making `.cache`
    fails with the error (ENOTDIR here), and the log says why once."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with mount(case["config"], *args_of(case, blocker / "state")) as m:
        for _ in range(2):
            assert error_of(os.mkdir, os.path.join(m.path, ".cache")) == errno.ENOTDIR
        assert_models_unchanged(m.path, case)
        warnings = [ln for ln in m.stderr().splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "cannot create the state directory" in warnings[0], warnings


def test_reading_leaves_no_trace(mount, case, tmp_path):
    """A mount that is only read makes nothing on disk: no state dir, no cache dir with --no-cache."""
    cache_dir = tmp_path / "cache"
    with mount(case["config"], *case["args"], "--no-cache", "--cache-dir", cache_dir) as m:
        assert_models_unchanged(m.path, case)
        assert error_of(os.stat, os.path.join(m.path, ".cache")) == errno.ENOENT
    assert not cache_dir.exists()


def test_help_lists_state_dir(binaries):
    r = mmtest.mergemount("mount", "--help", check=True)
    assert "--state-dir DIR" in r.stdout


# ---- hf upload: hashing the mount --------------------------------------------------------------------------

def test_hashes_as_hf_upload_computes_them(mount, case, tmp_path):
    """`hf upload` (upload_folder) hashes every file it sends: sha256 in 1 MiB reads, 5 files at a time
    (_compute_missing_sha256s), and the git blob sha1 of regular (small) files. Through the mount the
    hashes are the built folder's, with `.cache/huggingface` present and left out of the listing."""
    state = tmp_path / "state"
    built = case["built"]
    want = {n: (sha256_of(os.path.join(built, n)), git_blob_sha1(os.path.join(built, n))) for n in case["files"]}
    with mount(case["config"], *args_of(case, state)) as m:
        hf_dir(m.path)
        hf_save(m.path, case["files"][0], 1)
        names = hf_candidates(m.path)
        assert names == case["files"]
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            got = dict(zip(names, pool.map(
                lambda n: (sha256_of(os.path.join(m.path, n)), git_blob_sha1(os.path.join(m.path, n))), names)))
    assert got == want


# ---- optional: the real huggingface_hub ------------------------------------------------------------------

def import_hf():
    """huggingface_hub's _local_folder and _upload_large_folder modules, or a skip saying how to get them."""
    src = os.environ.get("MM_HF_HUB_SRC")
    if src and src not in sys.path:
        sys.path.insert(0, src)
    try:
        import huggingface_hub._local_folder as local_folder
        import huggingface_hub._upload_large_folder as large
    except ImportError as e:
        pytest.skip(f"huggingface_hub is not importable ({e}); set MM_HF_HUB_SRC to its src/ tree to run this "
                    "(see this file's docstring)")
    return local_folder, large


class FakeApi:
    """The HfApi calls upload_large_folder makes before its network steps."""

    def create_repo(self, repo_id, **kw):
        import types
        return types.SimpleNamespace(repo_id=repo_id)

    def list_repo_commits(self, **kw):
        return []


def fake_network_steps(monkeypatch, large, calls):
    """upload_large_folder's network steps replaced by what they record on success, counted in calls."""
    def get_upload_mode(items, **kw):
        calls["mode"] += len(items)
        for paths, md in items:
            md.upload_mode = "lfs" if md.size > 10_000 else "regular"
            md.should_ignore = False
            md.save(paths)

    def preupload(items, **kw):
        calls["preupload"] += len(items)
        for paths, md in items:
            md.is_uploaded = True
            md.save(paths)

    def commit(items, **kw):
        calls["commit"] += len(items)
        for paths, md in items:
            md.is_committed = True
            md.save(paths)

    real_sha = large._compute_sha256

    def compute_sha256(item):
        calls["sha256"] += 1
        real_sha(item)

    monkeypatch.setattr(large, "_get_upload_mode", get_upload_mode)
    monkeypatch.setattr(large, "_preupload_lfs", preupload)
    monkeypatch.setattr(large, "_commit", commit)
    monkeypatch.setattr(large, "_compute_sha256", compute_sha256)
    monkeypatch.setattr(large, "WAITING_TIME_IF_NO_TASKS", 0.05)


@pytest.mark.timeout(180)
def test_real_huggingface_hub(mount, case, tmp_path, monkeypatch):
    """huggingface_hub's own code on the mount: its _local_folder functions (get_local_upload_paths,
    read_upload_metadata, LocalUploadFileMetadata.save), then upload_large_folder with the network steps
    replaced. Every file ends committed with the built sha256; after a remount, a second run finds all of
    it done and hashes nothing again."""
    local_folder, large = import_hf()
    from pathlib import Path
    state = tmp_path / "state"
    built = case["built"]
    with mount(case["config"], *args_of(case, state)) as m:
        folder = Path(m.path)
        for name in case["files"]:
            paths = local_folder.get_local_upload_paths(folder, name)
            md = local_folder.read_upload_metadata(folder, name)
            assert md.size == os.stat(os.path.join(built, name)).st_size and md.sha256 is None
            md.sha256 = "0" * 64
            md.save(paths)
            again = local_folder.read_upload_metadata(folder, name)
            assert again.sha256 == "0" * 64 and again.timestamp == md.timestamp
            os.unlink(paths.metadata_path)
        calls = {"sha256": 0, "mode": 0, "preupload": 0, "commit": 0}
        fake_network_steps(monkeypatch, large, calls)
        large.upload_large_folder_internal(FakeApi(), "user/merged", m.path, repo_type="model", num_workers=2,
                                           print_report=False)
        assert calls["sha256"] == len(case["files"]) and calls["commit"] == len(case["files"]), calls
    with mount(case["config"], *args_of(case, state)) as m:
        folder = Path(m.path)
        for name in case["files"]:
            md = local_folder.read_upload_metadata(folder, name)
            assert md.is_committed and md.sha256 == sha256_of(os.path.join(built, name)), name
        calls = {"sha256": 0, "mode": 0, "preupload": 0, "commit": 0}
        fake_network_steps(monkeypatch, large, calls)
        large.upload_large_folder_internal(FakeApi(), "user/merged", m.path, repo_type="model", num_workers=2,
                                           print_report=False)
        assert calls == {"sha256": 0, "mode": 0, "preupload": 0, "commit": 0}, calls
        assert_models_unchanged(m.path, case)
