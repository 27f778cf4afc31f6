"""Runs each C unit test program (tests/unit/test_*.c, built by meson) as one pytest test.

MM_UNIT_WRAPPER, when set, is a command line that each program runs under (tests/run uses it for
valgrind memcheck); the wrapper must exit non-zero when it finds a problem."""
import os
import pathlib
import shlex
import subprocess

import pytest

HERE = pathlib.Path(__file__).resolve().parent
BUILD = pathlib.Path(os.environ.get("MM_BUILD_DIR", HERE.parent.parent / "build"))
WRAPPER = shlex.split(os.environ.get("MM_UNIT_WRAPPER", ""))
PROGRAMS = sorted(p.stem for p in HERE.glob("test_*.c"))


@pytest.mark.parametrize("name", PROGRAMS)
def test_unit_program(name):
    exe = BUILD / "tests" / name
    assert exe.exists(), f"{exe} not built (run: ninja -C {BUILD})"
    r = subprocess.run(WRAPPER + [str(exe)], cwd=HERE, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{name} failed:\n{r.stdout}\n{r.stderr}"
    assert " passed, 0 failed" in r.stdout
    assert "ERROR: AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    assert "WARNING: ThreadSanitizer" not in r.stderr, r.stderr
