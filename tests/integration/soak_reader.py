"""A reader process of the process-fault and soak tests (test_faults_process.py): reads a mounted
checkpoint folder the ways loaders do and compares every byte with a built copy of it.

It runs as its own process so that a read stuck in the kernel can be killed by the test (a thread
blocked in a FUSE request cannot be), so that many readers really run at once (no GIL), and so that a
test can kill a reader in the middle of a read.

  soak_reader.py MOUNT WANT --seconds S --seed N [--mode mix|pread|direct|mmap]
      Until S seconds have passed, SIGTERM (which ends it at the next read, exit status as below), or
      the first mismatch or failed read: pick a file (shards four times as often as the small files), a
      random range, and read it by the mode (mix: each read picks one of the others), comparing with
      WANT/<same name>. Every read opens the file anew, so open and release are exercised too.
        pread   buffered os.pread (may come from the kernel's page cache)
        direct  os.pread with O_DIRECT: always reaches the daemon
        mmap    MAP_SHARED or MAP_PRIVATE of the whole file, a slice of it; the file's cached pages
                are dropped first now and then (POSIX_FADV_DONTNEED) so that faults reach the daemon
      Prints one JSON line {"reads", "bytes", "mismatches", "error"} and exits 0 when every read
      matched, 1 on a mismatch, 3 when a read failed (the errno name is in "error": the expected end
      when the test kills or stops the daemon).
      A failed page fault of a mapping kills the process with SIGBUS, as it would a loader.

  soak_reader.py MOUNT WANT --hold NAME [--seed N]
      Opens and maps MOUNT/NAME, reads its first page, prints "ready" and waits for a line on stdin;
      then reads every page of the mapping in random order and the whole file with pread on the same
      descriptor, compares both with WANT/NAME, prints the JSON line and closes.
"""

import argparse
import errno
import json
import mmap
import os
import random
import signal
import sys
import time

MODES = ("pread", "direct", "mmap")
LENGTHS = (1, 7, 4096, 65536, 200000, 1 << 20, 3 << 20)
MAX_MISMATCHES = 5


class Result:
    def __init__(self):
        self.reads = 0
        self.bytes = 0
        self.mismatches = []
        self.error = None

    def check(self, name, off, got, want):
        self.reads += 1
        self.bytes += len(got)
        if got != want and len(self.mismatches) < MAX_MISMATCHES:
            first = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                         min(len(got), len(want)))
            self.mismatches.append(f"{name} at {off}: {len(got)} bytes read, {len(want)} expected, "
                                   f"first difference at +{first}")

    def finish(self):
        print(json.dumps({"reads": self.reads, "bytes": self.bytes, "mismatches": self.mismatches,
                          "error": self.error}), flush=True)
        if self.mismatches:
            return 1
        return 3 if self.error else 0


def read_whole(path, direct=False):
    """A whole file; direct: with O_DIRECT, so that every byte comes from the daemon."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    buf = mmap.mmap(-1, 1 << 20) if direct else None  # page-aligned, as O_DIRECT wants
    try:
        return pread_all(fd, 0, os.fstat(fd).st_size, buf)
    finally:
        os.close(fd)
        if buf is not None:
            buf.close()


def read_want(path, off, length):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(length)


def pread_all(fd, off, length, buf=None):
    """length bytes from off (fewer at EOF); buf: a page-aligned buffer for O_DIRECT."""
    out = []
    while length > 0:
        if buf is None:
            chunk = os.pread(fd, length, off)
        else:
            n = os.preadv(fd, [memoryview(buf)[:min(length, len(buf))]], off)
            chunk = bytes(buf[:n])
        if not chunk:
            break
        out.append(chunk)
        off += len(chunk)
        length -= len(chunk)
    return b"".join(out)


def one_read(mode, path, size, off, length, rnd, direct_buf):
    if mode == "mmap":
        fd = os.open(path, os.O_RDONLY)
        try:
            if rnd.random() < 0.2:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            flags = rnd.choice((mmap.MAP_SHARED, mmap.MAP_PRIVATE))
            m = mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ)
            try:
                return m[off:off + length]
            finally:
                m.close()
        finally:
            os.close(fd)
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if mode == "direct" else 0))
    try:
        return pread_all(fd, off, length, direct_buf if mode == "direct" else None)
    finally:
        os.close(fd)


def soak(args):
    rnd = random.Random(args.seed)
    names = sorted(os.listdir(args.want))
    weighted = [n for n in names for _ in range(4 if n.endswith(".safetensors") else 1)]
    sizes = {n: os.path.getsize(os.path.join(args.want, n)) for n in names}
    direct_buf = mmap.mmap(-1, 4 << 20)  # page-aligned, as O_DIRECT wants
    res = Result()
    deadline = [time.monotonic() + args.seconds]
    signal.signal(signal.SIGTERM, lambda signum, frame: deadline.__setitem__(0, 0.0))
    try:
        while time.monotonic() < deadline[0]:
            name = rnd.choice(weighted)
            size = sizes[name]
            mode = rnd.choice(MODES) if args.mode == "mix" else args.mode
            off = rnd.randrange(0, size + 16) if mode != "mmap" else rnd.randrange(0, size)
            length = rnd.choice(LENGTHS)
            got = one_read(mode, os.path.join(args.mount, name), size, off, length, rnd, direct_buf)
            res.check(f"{name} ({mode})", off, got, read_want(os.path.join(args.want, name), off, length))
            if res.mismatches:
                break
    except OSError as e:
        res.error = errno.errorcode.get(e.errno, str(e.errno))
    return res.finish()


def hold(args):
    rnd = random.Random(args.seed)
    want_path = os.path.join(args.want, args.hold)
    size = os.path.getsize(want_path)
    res = Result()
    fd = os.open(os.path.join(args.mount, args.hold), os.O_RDONLY)
    m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    try:
        res.check(args.hold, 0, m[:mmap.PAGESIZE], read_want(want_path, 0, mmap.PAGESIZE))
        print("ready", flush=True)
        sys.stdin.readline()
        want = read_want(want_path, 0, size)
        pages = list(range(0, size, mmap.PAGESIZE))
        rnd.shuffle(pages)
        for off in pages:
            res.check(f"{args.hold} (mmap)", off, m[off:off + mmap.PAGESIZE], want[off:off + mmap.PAGESIZE])
        res.check(f"{args.hold} (pread)", 0, pread_all(fd, 0, size), want)
    except OSError as e:
        res.error = errno.errorcode.get(e.errno, str(e.errno))
    finally:
        m.close()
        os.close(fd)
    return res.finish()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mount")
    p.add_argument("want")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=("mix",) + MODES, default="mix")
    p.add_argument("--hold")
    args = p.parse_args()
    return hold(args) if args.hold else soak(args)


if __name__ == "__main__":
    sys.exit(main())
