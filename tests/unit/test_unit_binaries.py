"""Runs each C unit test program (tests/unit/test_*.c, built by meson) as one pytest test."""
import os
import pathlib
import subprocess

import pytest

HERE = pathlib.Path(__file__).resolve().parent
BUILD = pathlib.Path(os.environ.get("MM_BUILD_DIR", HERE.parent.parent / "build"))
PROGRAMS = sorted(p.stem for p in HERE.glob("test_*.c"))


@pytest.mark.parametrize("name", PROGRAMS)
def test_unit_program(name):
    exe = BUILD / "tests" / name
    assert exe.exists(), f"{exe} not built (run: ninja -C {BUILD})"
    r = subprocess.run([str(exe)], cwd=HERE, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{name} failed:\n{r.stdout}\n{r.stderr}"
    assert " passed, 0 failed" in r.stdout
    assert "ERROR: AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
