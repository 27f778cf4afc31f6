"""A child process of test_state_dir.py, acting on files of a mount's `.cache/` the way a second client
would; it reports on stdout, one line per event, flushed at once.

  state_child.py try   flock|fcntl PATH        take an exclusive lock without waiting: "locked" or "busy"
  state_child.py wait  flock|fcntl PATH        "waiting", then "locked" once the lock is had (blocking)
  state_child.py count flock|fcntl PATH N      N times: lock PATH, add 1 to the number in PATH.count
                                               (read, pause, write back), unlock; then "done"
  state_child.py rewrite PATH LOCK             forever: under a flock of LOCK, rewrite PATH whole
                                               (O_TRUNC) with rewrite_content(i), print i, pause 5 ms

Locks are taken as filelock (huggingface_hub's lock package) takes them: the lock file opened with
O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW and mode 0o664."""

import fcntl
import os
import sys
import time


def open_lock_file(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o664)
    os.fchmod(fd, 0o664)
    return fd


def lock(fd, kind, blocking=True):
    op = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
    (fcntl.flock if kind == "flock" else fcntl.lockf)(fd, op)


def unlock(fd, kind):
    (fcntl.flock if kind == "flock" else fcntl.lockf)(fd, fcntl.LOCK_UN)


def rewrite_content(i):
    """What iteration i of `rewrite` writes: 64 KiB of numbered lines."""
    return "".join(f"iteration {i} line {k:06d}\n" for k in range(64 * 1024 // 30)).encode()


def say(text):
    print(text, flush=True)


def add_one(path, kind):
    fd = open_lock_file(path)
    try:
        lock(fd, kind)
        counter = path + ".count"
        with open(counter) as f:
            n = int(f.read() or 0)
        time.sleep(0.002)  # widen the window a missing lock would let another process into
        with open(counter, "w") as f:
            f.write(str(n + 1))
        unlock(fd, kind)
    finally:
        os.close(fd)


def main():
    cmd = sys.argv[1]
    if cmd == "rewrite":
        path = sys.argv[2]
        lock_fd = open_lock_file(sys.argv[3])
        i = 0
        while True:
            lock(lock_fd, "flock")
            with open(path, "wb") as f:
                f.write(rewrite_content(i))
            unlock(lock_fd, "flock")
            say(str(i))
            i += 1
            time.sleep(0.005)  # a pause between saves, as real writers have, so others get the lock
    kind, path = sys.argv[2], sys.argv[3]
    if cmd == "count":
        for _ in range(int(sys.argv[4])):
            add_one(path, kind)
        say("done")
        return
    fd = os.open(path, os.O_RDWR)
    if cmd == "try":
        try:
            lock(fd, kind, blocking=False)
            say("locked")
        except BlockingIOError:
            say("busy")
    elif cmd == "wait":
        say("waiting")
        lock(fd, kind)
        say("locked")
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
