#!/usr/bin/python3
"""What the mount's writable .cache/ costs a client (issue 10): the record huggingface_hub's
upload-large-folder saves for every file it works on (open and flock a <file>.lock, write
upload/<file>.metadata, unlock), done N times through a mount and N times directly in a plain
directory on the same filesystem as the mount's state directory, in one run. Prints both rates and
their ratio. Not a test: the numbers go to the closing note / bench/RESULTS.md.

Usage: bench/state_bench.py [N]   (default 2000; needs /dev/fuse and a built tree: ninja -C build)
"""
import fcntl
import os
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MM = os.environ.get("MERGEMOUNT", os.path.join(TOP, "build", "tools", "mergemount"))
MK = os.environ.get("MM_MKMODEL", os.path.join(TOP, "build", "tools", "mm-mkmodel"))


def save_records(root, n):
    """n metadata saves the way huggingface_hub's _local_folder does them; returns seconds."""
    up = os.path.join(root, ".cache", "huggingface", "upload")
    os.makedirs(up, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(n):
        name = f"model-{i % 8:05d}-of-00008.safetensors"
        lock = os.path.join(up, name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(os.path.join(up, name + ".metadata"), "w") as f:
            f.write(f"{time.time()}\n{'0' * 64}\n\n\n\n\n\n")
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return time.perf_counter() - t0


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory(prefix="mm-state-bench-") as work:
        model = os.path.join(work, "m")
        subprocess.run([MK, model], check=True, stdout=subprocess.DEVNULL)
        cfg = os.path.join(work, "merge.yml")
        with open(cfg, "w") as f:
            f.write(f"merge_method: linear\nmodels:\n  - model: {model}\n    parameters: {{weight: 1.0}}\n")
        mnt, state, plain = (os.path.join(work, d) for d in ("mnt", "state", "plain"))
        for d in (mnt, plain):
            os.mkdir(d)
        subprocess.run([MM, "mount", cfg, mnt, "--no-cache", "--state-dir", state], check=True)
        try:
            save_records(mnt, 50)  # warm both sides up (dentries, the state directory made)
            save_records(plain, 50)
            direct = save_records(plain, n)
            through = save_records(mnt, n)
        finally:
            subprocess.run(["fusermount3", "-u", mnt], check=True)
    print(f"{n} huggingface_hub-style metadata saves")
    print(f"  directly in a directory : {direct / n * 1e6:8.1f} us each")
    print(f"  through the mount       : {through / n * 1e6:8.1f} us each")
    print(f"  ratio mount / direct    : {through / direct:8.2f}")


if __name__ == "__main__":
    main()
