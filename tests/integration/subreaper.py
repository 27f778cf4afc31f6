"""Runs a command that daemonises (`mergemount mount` without -f) as a child subreaper, so that the
daemon is re-parented to this process and its exit status can be collected, which a test cannot do for
a process that is not its child (test_faults_process.py).

  subreaper.py COMMAND [ARGS...]
Prints "pid N" (the daemon) once COMMAND has exited 0, then "exit N" or "signal N" when the daemon
ends. If COMMAND fails: prints "command N" and its output, and exits 1."""

import ctypes
import os
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def children():
    """Pids of this process's children, from /proc/PID/stat (field 4 is the parent's pid)."""
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name (field 2) is in parentheses and may hold spaces
        if int(stat[stat.rindex(")") + 2:].split()[1]) == me:
            out.append(int(entry))
    return out


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"prctl: {os.strerror(ctypes.get_errno())}", flush=True)
        return 1
    r = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        print(f"command {r.returncode}\n{r.stdout}", flush=True)
        return 1
    pids = children()
    if len(pids) != 1:
        print(f"expected one daemon, found children {pids}", flush=True)
        return 1
    print(f"pid {pids[0]}", flush=True)
    _, status = os.waitpid(pids[0], 0)
    if os.WIFSIGNALED(status):
        print(f"signal {os.WTERMSIG(status)}", flush=True)
    else:
        print(f"exit {os.WEXITSTATUS(status)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
