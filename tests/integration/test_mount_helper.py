"""mount(8), fstab and mount.fuse3 (issue 10, part 3). `mount -t fuse.mergemount CONFIG MNT -o OPTIONS` and
an fstab line (with a temporary fstab: `mount -T FSTAB MNT`) mount for real: mount(8) runs
/sbin/mount.fuse3, which runs `mergemount CONFIG MNT -o OPTIONS` through /bin/sh, whose default PATH
finds /usr/local/bin/mergemount. Checked: the -o options that name long options act as those options
(by their effect: where the cache appears, which files and bytes are served), FUSE and generic mount(8)
options are accepted, an unknown one fails before anything is mounted and is named on mount(8)'s
stderr, messages of a background mount go to --log-file or syslog with the mountpoint in each line, and
`mergemount stats` / `mergemount cache` work on such mounts.

Needs root (mount(8) of a FUSE type by another user needs an fstab `user` entry) and mount.fuse3. The
module installs the build under test (`meson install --destdir` into a temporary folder when
MM_BUILD_DIR is set, else MERGEMOUNT_BIN as is) and links /usr/local/bin/mergemount to it while it runs;
it skips if something else is there. Each daemon runs under subreaper.py, which adopts it when mount(8)
returns, so its exit status after `umount` is checked (0)."""

import errno
import json
import os
import pwd
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import mmtest
from mmcache import Case, assert_same_tree, cache_stats, read_direct, read_tree, stats, wait_stats

pytestmark = pytest.mark.timeout(90)

HERE = os.path.dirname(os.path.abspath(__file__))
SUBREAPER = os.path.join(HERE, "subreaper.py")
LINK = "/usr/local/bin/mergemount"
MARK = "mm-mount-helper-"  # in the name of the folder our link points into
# What mount.fuse3 runs: `/bin/sh -c 'mergemount ...'`; dash's default PATH when mount(8) gives none.
SHADOWING = ["/usr/local/sbin/mergemount"]
# Lines of a daemon's log that fail a test unless it expects them.
BAD_LOG = re.compile(r"mergemount: error:")


# ---- installing the command where mount.fuse3 finds it --------------------------------------------------

def mount_helper_missing():
    for p in ("/sbin/mount.fuse3", "/usr/sbin/mount.fuse3"):
        if os.access(p, os.X_OK):
            return None
    return "mount.fuse3 is not installed (apt-get install fuse3)"


def _ours(link):
    return os.path.islink(link) and MARK in os.readlink(link)


def _install(tmp):
    """The mergemount to link: the build installed into tmp, or MERGEMOUNT_BIN."""
    build = os.environ.get("MM_BUILD_DIR")
    if not build or not shutil.which("meson"):
        return os.path.abspath(mmtest.MERGEMOUNT)
    r = mmtest.run(["meson", "install", "-C", build, "--destdir", tmp, "--no-rebuild", "--quiet"], timeout=300)
    assert r.returncode == 0, f"meson install --destdir failed:\n{r.stdout}\n{r.stderr}"
    for root, _, files in os.walk(tmp):
        if os.path.basename(root) == "bin" and "mergemount" in files:
            return os.path.join(root, "mergemount")
    raise AssertionError(f"meson install put no bin/mergemount under {tmp}")


@pytest.fixture(scope="module")
def helper(binaries):
    """mergemount installed as /usr/local/bin/mergemount for the module (removed after)."""
    if os.geteuid() != 0:
        pytest.skip("mount(8) of fuse.mergemount without an fstab `user` entry needs root")
    missing = mount_helper_missing()
    if missing:
        pytest.skip(missing)
    for p in SHADOWING:
        if os.path.lexists(p):
            pytest.skip(f"{p} exists and would be run instead of the build under test")
    if os.path.lexists(LINK):
        if not _ours(LINK) or os.path.exists(LINK):
            pytest.skip(f"{LINK} exists and is not this test's (another install or test run): not replacing it")
        os.unlink(LINK)  # ours, left by a run that was killed: its target is gone
    tmp = tempfile.mkdtemp(prefix=MARK)
    try:
        target = _install(tmp)
        link_target = os.path.join(tmp, "mergemount")
        if target != link_target:
            os.symlink(target, link_target)  # so that the link's text names our folder
        os.symlink(link_target, LINK)
        yield LINK
    finally:
        if _ours(LINK) and os.readlink(LINK).startswith(tmp):
            os.unlink(LINK)
        shutil.rmtree(tmp, ignore_errors=True)


# ---- mounts made by mount(8) ---------------------------------------------------------------------------

def _unescape(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mountinfo(path):
    """{"options", "fstype", "source", "super"} of the mount at path (from /proc/self/mountinfo), or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if _unescape(fields[4]) == path:
                sep = fields.index("-")
                return {"options": set(fields[5].split(",")), "fstype": fields[sep + 1],
                        "source": _unescape(fields[sep + 2]), "super": set(fields[sep + 3].split(","))}
    return None


def readline(proc, timeout):
    """One line of proc's stdout within timeout seconds, or ""."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def daemons_of(mnt):
    """Pids of mergemount processes whose arguments name mnt."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and os.path.basename(args[0]) == b"mergemount" and mnt.encode() in args:
            out.append(int(entry))
    return out


def log_text(path):
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return f.read()


def sanitizer_env(env, folder):
    """env (or ours) with the sanitizers' reports sent to files in folder: a background daemon's stderr
    is /dev/null. mount(8) and mount.fuse3 pass the environment on."""
    env = dict(os.environ if env is None else env)
    for var, name in (("ASAN_OPTIONS", "asan"), ("UBSAN_OPTIONS", "ubsan")):
        env[var] = ":".join(filter(None, [env.get(var), f"log_path={os.path.join(folder, name)}"]))
    return env


class SysMount:
    """A mount made by the command `argv` (mount(8), or mergemount in the form mount.fuse3 runs) for a
    with-block. Enter: runs it under subreaper.py and waits for mount(8) to return with the mount up.
    Exit: `umount`, then the daemon must exit 0 with no sanitizer report, and the log file (when the test
    gave one) must hold no error line but those matching `allow`. If the block raised, the mount is torn
    down by force (lazy unmount, SIGKILL)."""

    def __init__(self, argv, mnt, log=None, allow=None, cwd=None, env=None):
        self.argv = [str(a) for a in argv]
        self.mnt = str(mnt)
        self.log = str(log) if log else None
        self.allow = re.compile(allow) if allow else None
        self.cwd = cwd
        self.reports = tempfile.mkdtemp(prefix="mm-sanitizer-")
        self.env = sanitizer_env(env, self.reports)
        self.reaper = None
        self.pid = None

    def sanitizer_reports(self):
        out = []
        for name in sorted(os.listdir(self.reports)):
            with open(os.path.join(self.reports, name), errors="replace") as f:
                out.append(f"{name}:\n{f.read()}")
        shutil.rmtree(self.reports, ignore_errors=True)
        return out

    def __enter__(self):
        os.makedirs(self.mnt, exist_ok=True)
        self.reaper = subprocess.Popen([sys.executable, SUBREAPER, *self.argv], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.cwd,
                                       env=self.env)
        line = readline(self.reaper, 30)
        if not line.startswith("pid "):
            rest = self.reaper.stdout.read() if self.reaper.poll() is not None else ""
            self.force_cleanup()
            rest += "".join(self.sanitizer_reports())
            raise AssertionError(f"{' '.join(self.argv)} failed: {line}\n{rest}")
        self.pid = int(line.split()[1])
        assert mountinfo(self.mnt) is not None, f"{' '.join(self.argv)} returned 0 but {self.mnt} is not mounted"
        return self

    def force_cleanup(self):
        if mountinfo(self.mnt) is not None:
            subprocess.run(["umount", "-l", self.mnt], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.pid and os.path.exists(f"/proc/{self.pid}"):
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
        if self.reaper and self.reaper.poll() is None:
            try:
                self.reaper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.reaper.kill()
                self.reaper.wait()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.force_cleanup()
            sys.stderr.write(f"--- log of {self.mnt} ---\n{log_text(self.log)}\n")
            sys.stderr.write("".join(self.sanitizer_reports()))
            return False
        r = None
        for _ in range(50):  # EBUSY while the kernel still holds a file of ours briefly
            r = mmtest.run(["umount", self.mnt], timeout=30)
            if r.returncode == 0 or mountinfo(self.mnt) is None:
                break
            time.sleep(0.1)
        if r.returncode != 0:
            self.force_cleanup()
            raise AssertionError(f"umount {self.mnt} failed: {r.stderr}")
        line = readline(self.reaper, 20)
        if line != "exit 0":
            self.force_cleanup()
            raise AssertionError(f"the daemon of {self.mnt} ended with {line!r}:\n{log_text(self.log)}"
                                 + "".join(self.sanitizer_reports()))
        assert self.reaper.wait(timeout=10) == 0
        reports = self.sanitizer_reports()
        assert not reports, "sanitizer reports of the daemon:\n" + "\n".join(reports)
        text = log_text(self.log)
        bad = [ln for ln in text.splitlines() if BAD_LOG.search(ln) and not (self.allow and self.allow.search(ln))]
        assert not bad, "unexpected lines in the daemon's log:\n" + "\n".join(bad)
        return False


def mount_t(config, mnt, opts=None):
    """The mount(8) command line for CONFIG on MNT."""
    return ["mount", "-t", "fuse.mergemount", str(config), str(mnt)] + (["-o", opts] if opts else [])


# ---- the merges --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trio(make_model):
    return make_model(1, "bf16"), make_model(2, "bf16"), make_model(3, "bf16")


def linear_cfg(a, b):
    return {"merge_method": "linear", "models": [{"model": a, "parameters": {"weight": 0.6}},
                                                 {"model": b, "parameters": {"weight": 0.4}}]}


def dare_cfg(a, b, base):
    return {"merge_method": "dare_ties", "base_model": base,
            "models": [{"model": a, "parameters": {"weight": 0.6, "density": 0.5}},
                       {"model": b, "parameters": {"weight": 0.5, "density": 0.5}}]}


@pytest.fixture(scope="module")
def linear(trio, tmp_path_factory):
    return Case(tmp_path_factory.mktemp("helper-linear"), linear_cfg(trio[0], trio[1]))


def config_of(tmp_path, cfg, name="merge.yml"):
    return mmtest.write_config(tmp_path, cfg, name)


# ---- mount -t, fstab -----------------------------------------------------------------------------------

def test_mount_t_with_cache_dir_and_fuse_options(helper, linear, tmp_path):
    """The issue's command line: the mount is a fuse.mergemount of the config, allow_other reaches the
    kernel, cache_dir= puts the cache there, and the folder serves `build`'s bytes."""
    mnt, cache, log = str(tmp_path / "mnt"), str(tmp_path / "cache"), str(tmp_path / "mm.log")
    with SysMount(mount_t(linear.config, mnt, f"cache_dir={cache},allow_other,log_file={log}"), mnt, log=log) as m:
        assert os.readlink(f"/proc/{m.pid}/exe") == os.path.realpath(helper), "mount.fuse3 ran another mergemount"
        info = mountinfo(mnt)
        assert info["fstype"] == "fuse.mergemount" and info["source"] == linear.config, info
        assert "allow_other" in info["super"], info
        assert_same_tree(read_tree(mnt), linear.files)
        s = wait_stats(mnt, lambda s: s["cache_puts_stored"] > 0)
        assert s["cache_enabled"] and s["cache_dir"] == cache, s
        assert os.path.exists(os.path.join(cache, "data.mdb"))
    assert "mounted " + linear.config in log_text(log)


@pytest.mark.parametrize("flag", ["-T", "--fstab"])
def test_fstab_line(helper, linear, tmp_path, flag):
    """The issue's fstab line, in a temporary fstab: `mount MNT` finds it, ro is applied, cache_dir= is
    used, and nofail and x-systemd.automount (options of mount(8) and systemd) do not get in the way."""
    mnt, cache = str(tmp_path / "mnt"), str(tmp_path / "cache")
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# a temporary fstab\n{linear.config} {mnt} fuse.mergemount "
                     f"ro,nofail,x-systemd.automount,cache_dir={cache} 0 0\n")
    with SysMount(["mount", flag, str(fstab), mnt], mnt):
        info = mountinfo(mnt)
        assert info["fstype"] == "fuse.mergemount" and "ro" in info["options"], info
        assert_same_tree(read_tree(mnt), linear.files)
        assert stats(mnt)["cache_dir"] == cache
        with pytest.raises(OSError) as e:
            open(os.path.join(mnt, "config.json"), "r+b")
        assert e.value.errno == errno.EROFS
    assert os.path.exists(os.path.join(cache, "data.mdb"))


def test_stats_and_cache_commands_on_a_mount8_mount(helper, linear, tmp_path):
    """`mergemount stats MNT` and `mergemount cache stats|prune|clear --cache-dir DIR` on a mount
    started by mount(8); the mount keeps serving the same bytes after its cache was emptied."""
    mnt, cache = str(tmp_path / "mnt"), str(tmp_path / "cache")
    with SysMount(mount_t(linear.config, mnt, f"cache_dir={cache}"), mnt):
        read_tree(mnt)
        s = wait_stats(mnt, lambda s: s["cache_puts_stored"] >= s["blocks_computed"] > 0)
        text = mmtest.mergemount("stats", mnt, check=True).stdout
        assert re.search(rf"^cache +{re.escape(cache)}$", text, re.M), text
        assert re.search(rf"^blocks computed +{s['blocks_computed']}$", text, re.M), text
        assert json.loads(mmtest.mergemount("stats", mnt, "--json", check=True).stdout)["cache_dir"] == cache
        info = cache_stats(cache)
        assert info["directory"] == cache and info["blocks"] == s["cache_puts_stored"], (info, s)
        out = mmtest.mergemount("cache", "prune", "--cache-dir", cache, "--cache-size", "1M", check=True).stdout
        assert re.fullmatch(r"evicted \d+ blocks\n", out), out
        out = mmtest.mergemount("cache", "clear", "--cache-dir", cache, check=True).stdout
        assert re.fullmatch(r"removed \d+ blocks\n", out), out
        assert cache_stats(cache)["blocks"] == 0
        assert_same_tree(read_tree(mnt, direct=True), linear.files)


# ---- -o options by their effect -----------------------------------------------------------------------

def test_merge_options_as_mount_options(helper, trio, tmp_path):
    """random_seed=, out_shard_size=, no_write_model_card, no_copy_tokenizer and no_cache given as -o
    through mount(8) serve what `build` serves with the same long options, which differs from the
    defaults; no cache is made anywhere."""
    config = config_of(tmp_path, dare_cfg(*trio))
    long_opts = ["--random-seed", "7", "--out-shard-size", "20K", "--no-write-model-card", "--no-copy-tokenizer"]
    want = Case(tmp_path, dare_cfg(*trio), args=long_opts, name="want.yml")
    default = Case(tmp_path, dare_cfg(*trio), name="default.yml")
    assert len(want.files) > 2 and not {"README.md", "tokenizer.json"} & set(want.files), sorted(want.files)
    seed0 = Case(tmp_path, dare_cfg(*trio), args=["--out-shard-size", "20K"], name="seed0.yml")
    assert want.files["model.safetensors.index.json"] == seed0.files["model.safetensors.index.json"]
    assert any(want.files[n] != seed0.files[n] for n in want.files if n.endswith(".safetensors"))
    mnt = str(tmp_path / "mnt")
    cache_root = os.environ["XDG_CACHE_HOME"]
    before = set(os.listdir(cache_root)) if os.path.isdir(cache_root) else set()
    opts = "random_seed=7,out_shard_size=20K,no_write_model_card,no_copy_tokenizer,no_cache,cache_dir=" + str(
        tmp_path / "unused-cache")
    with SysMount(mount_t(config, mnt, opts), mnt):
        got = read_tree(mnt)
        assert_same_tree(got, want.files)
        assert sorted(got) != sorted(default.files)
        s = stats(mnt)
        assert not s["cache_enabled"], s
    assert not os.path.exists(tmp_path / "unused-cache")
    assert (set(os.listdir(cache_root)) if os.path.isdir(cache_root) else set()) == before


def test_dash_o_in_the_mount_command(linear, mount, tmp_path):
    """`mergemount mount CONFIG MNT -o ...` takes the same -o options as the mount(8) form."""
    want = Case(tmp_path, linear.cfg, args=["--out-shard-size", "20K", "--no-write-model-card"], name="want.yml")
    cache = str(tmp_path / "cache")
    with mount(linear.config, "-o", "out_shard_size=20K", "-o", f"no_write_model_card,cache_dir={cache},ro") as m:
        assert_same_tree(read_tree(m.path), want.files)
        assert stats(m.path)["cache_dir"] == cache


@pytest.mark.parametrize("opts,message", [
    ("ro,cache_dri=/x", "unknown mount option 'cache_dri' (did you mean 'cache_dir'?)"),
    ("allow_other,frobnicate", "unknown mount option 'frobnicate'"),
    ("no_cache=1", "mount option 'no_cache' takes no value"),
    ("cache_size", "mount option 'cache_size' needs a value"),
    ("cache_size=lots", "--cache-size: 'lots' is not a size"),
    ("readahead=-1", "--readahead: '-1' is not a size"),
    ("help", "unknown mount option 'help'"),
], ids=["typo", "unknown", "flag-with-value", "value-missing", "bad-size", "bad-readahead", "help"])
def test_bad_option_fails_before_mounting(helper, linear, tmp_path, opts, message):
    """mount(8) fails, its stderr names the option, and nothing is mounted or left running."""
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    r = mmtest.run(mount_t(linear.config, mnt, opts), timeout=60)
    assert r.returncode != 0, r
    assert message in r.stderr, r.stderr
    assert mountinfo(mnt) is None
    assert not daemons_of(mnt)


def test_config_error_reaches_mount8_stderr(helper, trio, tmp_path):
    """An error in the config is reported on mount(8)'s stderr with its place, before mounting."""
    config = config_of(tmp_path, {"merge_method": "linaer", "models": [{"model": trio[0]}]})
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    r = mmtest.run(mount_t(config, mnt, "no_cache"), timeout=60)
    assert r.returncode != 0 and re.search(rf"mergemount: error: {re.escape(config)}:\d+:\d+: .*'linaer'", r.stderr), r
    assert mountinfo(mnt) is None and not daemons_of(mnt)


def test_drop_privileges_refused(helper, linear, tmp_path):
    """mount.fuse3's drop_privileges mounts by itself and passes the mount as /dev/fd/N: refused with a
    message naming the option (mount.fuse3's mount is left without a daemon: unmounted here)."""
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    try:
        r = mmtest.run(mount_t(linear.config, mnt, "drop_privileges,no_cache"), timeout=60)
        assert r.returncode != 0 and "drop_privileges option is not supported" in r.stderr, r
        assert not daemons_of(mnt)
    finally:
        if mountinfo(mnt) is not None:
            mmtest.run(["umount", mnt], timeout=30)
    assert mountinfo(mnt) is None


def test_generic_mount_options_accepted(helper, linear, tmp_path):
    """Generic options through mount(8) (which acts on some itself) and, in the form mount.fuse3
    runs, the ones mount(8) and mount.fuse3 usually strip: all accepted; those libfuse knows reach the
    kernel (noexec, nosuid, nodev, noatime)."""
    mnt = str(tmp_path / "mnt")
    opts = "defaults,noatime,nodev,nosuid,noexec,sync,auto,_netdev,nofail,relatime,no_cache"
    with SysMount(mount_t(linear.config, mnt, opts), mnt):
        info = mountinfo(mnt)
        assert {"noexec", "nosuid", "nodev", "noatime"} <= info["options"], info
        assert_same_tree(read_tree(mnt), linear.files)
    direct = ("rw,dev,suid,nofail,_netdev,x-systemd.automount,x-systemd.idle-timeout=60,X-mount.mkdir,"
              "comment=systemd.automount,defaults,auto,noauto,user,nouser,users,owner,group,nodiratime,no_cache")
    with SysMount([helper, linear.config, mnt, "-o", direct], mnt):
        assert_same_tree(read_tree(mnt), linear.files)


def test_config_named_like_a_command(helper, linear, tmp_path):
    """A config file named `mount`: mount(8) passes an existing source as an absolute path, so it
    mounts; `mergemount ./mount MNT` mounts; the bare name is the command, which refuses mount.fuse3's
    arguments (nothing is mounted); `version` with arguments is refused rather than "succeeding"."""
    shutil.copy(linear.config, tmp_path / "mount")
    mnt = str(tmp_path / "mnt")
    with SysMount(mount_t("mount", mnt, "no_cache"), mnt, cwd=str(tmp_path)):
        assert mountinfo(mnt)["source"] == str(tmp_path / "mount")
        assert_same_tree(read_tree(mnt), linear.files)
    with SysMount([helper, "./mount", mnt, "-o", "no_cache"], mnt, cwd=str(tmp_path)):
        assert_same_tree(read_tree(mnt), linear.files)
    for argv in (["mount", mnt, "-o", "rw,dev,suid"], ["version", mnt, "-o", "rw,dev,suid"]):
        r = mmtest.run([helper, *argv], timeout=60)
        assert r.returncode == 2, (argv, r)
        assert mountinfo(mnt) is None
    r = mmtest.run([helper, "version", mnt], timeout=60)
    assert "give its folder: ./version" in r.stderr, r.stderr


def test_home_unset(helper, linear, tmp_path):
    """Without HOME (and XDG_CACHE_HOME) the default cache folder comes from the password database; a
    mount(8) mount whose daemon has no HOME (setuid=, which mount.fuse3 handles, leaves it unset)
    works, and relative cache_dir= and log_file= are resolved against the caller's folder."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    out = mmtest.run(["env", "-i", *[f"{k}={v}" for k, v in env.items()], helper, "cache", "stats"],
                     check=True).stdout
    home = pwd.getpwuid(os.getuid()).pw_dir
    assert re.search(rf"^directory +{re.escape(os.path.join(home, '.cache/mergemount'))}$", out, re.M), out
    mnt = str(tmp_path / "mnt")
    user = pwd.getpwuid(os.getuid()).pw_name
    opts = f"setuid={user},cache_dir=rel-cache,log_file=rel.log"
    with SysMount(mount_t(linear.config, mnt, opts), mnt, log=tmp_path / "rel.log", cwd=str(tmp_path), env=env) as m:
        with open(f"/proc/{m.pid}/environ", "rb") as f:
            assert not any(v.startswith(b"HOME=") for v in f.read().split(b"\0"))
        assert_same_tree(read_tree(mnt), linear.files)
        assert stats(mnt)["cache_dir"] == str(tmp_path / "rel-cache")
    assert "mounted" in log_text(tmp_path / "rel.log")


# ---- logging -----------------------------------------------------------------------------------------

@pytest.fixture
def victim(trio, tmp_path):
    """A config over a private copy of model 1, and that copy's weight file (to truncate under a mount)."""
    copy = str(tmp_path / "victim")
    shutil.copytree(trio[0], copy)
    return config_of(tmp_path, linear_cfg(copy, trio[1])), os.path.join(copy, "model.safetensors")


def provoke_read_error(mnt, shard):
    """Truncates a source file under the mount; a read of the merged weights then fails with EIO (the
    daemon logs one error line naming the file)."""
    os.truncate(shard, os.path.getsize(shard) // 2)
    time.sleep(0.3)  # the daemon looks at a source's path at most every 100 ms
    with pytest.raises(OSError) as e:
        read_direct(os.path.join(mnt, "model.safetensors"))
    assert e.value.errno == errno.EIO


def test_log_file_gets_the_error_with_the_mountpoint(helper, victim, tmp_path):
    """log_file= (relative: resolved before the daemon goes to /) receives the background daemon's
    error line, which names the mountpoint and the file."""
    config, shard = victim
    mnt, log = str(tmp_path / "mnt"), tmp_path / "logs" / "mm.log"
    log.parent.mkdir()
    with SysMount(mount_t(config, mnt, "no_cache,log_file=logs/mm.log"), mnt, log=log, cwd=str(tmp_path),
                  allow=re.escape(shard)):
        provoke_read_error(mnt, shard)
        assert mmtest.wait_for(lambda: shard in log_text(log)), log_text(log)
    lines = [ln for ln in log_text(log).splitlines() if shard in ln]
    assert len(lines) == 1 and "mergemount: error: " + mnt + ": " in lines[0], lines
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} ", lines[0]), lines[0]


def test_log_file_unopenable(helper, linear, tmp_path):
    """A log file that cannot be opened fails the mount before anything is mounted."""
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    bad = str(tmp_path / "no-such-dir" / "mm.log")
    r = mmtest.run(mount_t(linear.config, mnt, f"log_file={bad}"), timeout=60)
    assert r.returncode != 0 and f"--log-file {bad}: cannot open" in r.stderr, r
    assert mountinfo(mnt) is None and not daemons_of(mnt)


def test_libfuse_messages_through_the_log(linear, mount, tmp_path):
    """libfuse's own lines (-d traces) reach the same sink: stderr until mounted, then the log file,
    whole lines, with the mountpoint."""
    log = str(tmp_path / "mm.log")
    with mount(linear.config, "-d", "--no-cache", "--log-file", log) as m:
        os.listdir(m.path)
        assert mmtest.wait_for(lambda: "opcode: READDIR" in log_text(log))
        assert "mergemount: debug: FUSE library version" in m.stderr()
    text = log_text(log)
    assert re.search(rf"mergemount: debug: {re.escape(m.path)}: unique: \d+, opcode: INIT", text), text
    assert not [ln for ln in text.splitlines() if ln and " mergemount: " not in ln], text


@pytest.fixture
def dev_log():
    """A datagram socket bound at /dev/log for the test (glibc's syslog() sends there), or a skip."""
    if os.path.lexists("/dev/log"):
        pytest.skip("/dev/log exists (a syslog daemon or journald owns it): see `journalctl -t mergemount`")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("/dev/log")
    except OSError as e:
        sock.close()
        pytest.skip(f"cannot bind /dev/log: {e}")
    try:
        yield sock
    finally:
        sock.close()
        os.unlink("/dev/log")


def syslog_lines(sock, pid, until, timeout=10.0):
    """Messages of process `pid` received on sock, until one matches `until` (or the timeout)."""
    out, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536).decode("utf-8", "replace")
        except socket.timeout:
            break
        m = re.match(r"<(\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d mergemount\[(\d+)\]: (.*)", data, re.S)
        if m and int(m.group(2)) == pid:
            out.append((int(m.group(1)), m.group(3)))
            if until(m.group(3)):
                break
    return out


def test_syslog_of_a_background_mount(helper, victim, tmp_path, dev_log):
    """Without a log file, a background mount logs to syslog: ident mergemount with the pid, facility
    daemon, the mountpoint in every line, errors at LOG_ERR."""
    config, shard = victim
    mnt = str(tmp_path / "mnt")
    with SysMount(mount_t(config, mnt, "no_cache"), mnt) as m:
        provoke_read_error(mnt, shard)
        got = syslog_lines(dev_log, m.pid, lambda text: shard in text)
    got += syslog_lines(dev_log, m.pid, lambda text: text.endswith("unmounted"), timeout=5)
    texts = [t for _, t in got]
    assert texts and all(f"{mnt}: " in t for t in texts), texts
    errors = [(p, t) for p, t in got if shard in t]
    assert len(errors) == 1 and errors[0][0] == (3 << 3) | 3, got  # LOG_DAEMON | LOG_ERR
    assert errors[0][1].startswith(f"error: {mnt}: "), errors
    assert f"{mnt}: mounted {config} (pid {m.pid})" in texts and f"{mnt}: unmounted" in texts, texts


# ---- help --------------------------------------------------------------------------------------------

def test_help_shows_the_mount8_form(binaries):
    text = mmtest.mergemount("mount", "--help", check=True).stdout
    for want in ("mount -t fuse.mergemount CONFIG MOUNTPOINT", "fstab:", "fuse.mergemount",
                 "'_'", "-o cache_dir=DIR,no_cache is --cache-dir DIR --no-cache", "--log-file FILE", "syslog"):
        assert want in text, want
    assert "CONFIG MOUNTPOINT" in mmtest.mergemount("--help", check=True).stdout
