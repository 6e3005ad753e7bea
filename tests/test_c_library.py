"""csrc/ builds on its own, without Python, and its C test program passes under ctest: natively, and for
aarch64 NEON under qemu where a cross toolchain is installed (CI installs one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parent.parent / "csrc"
CROSS_TOOLS = ("aarch64-linux-gnu-gcc", "qemu-aarch64-static")


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if found is None:
        pytest.fail(f"{name} is not installed; `pip install .[test]` provides it")
    return found


def build_and_ctest(build: Path, *configure_args: str) -> str:
    """Configure, build and ctest csrc/ in ``build``; returns ctest's output."""
    cmake, ctest = _tool("cmake"), _tool("ctest")
    subprocess.run([cmake, "-S", str(CSRC), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *configure_args],
                   check=True, capture_output=True)
    subprocess.run([cmake, "--build", str(build), "--parallel", "2"], check=True, capture_output=True)
    result = subprocess.run([ctest, "--test-dir", str(build), "--output-on-failure", "--verbose"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "100% tests passed" in result.stdout
    return result.stdout


def test_ctest_native(tmp_path: Path):
    out = build_and_ctest(tmp_path / "build")
    assert "scalar  checked" in out


@pytest.mark.skipif(not all(shutil.which(t) for t in CROSS_TOOLS),
                    reason="needs gcc-aarch64-linux-gnu and qemu-user-static (Debian packages)")
def test_ctest_neon_under_qemu(tmp_path: Path):
    out = build_and_ctest(tmp_path / "build", f"-DCMAKE_TOOLCHAIN_FILE={CSRC / 'cmake' / 'aarch64-linux-gnu.cmake'}")
    assert "neon    checked" in out
