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
TOOLCHAIN = CSRC / "cmake" / "aarch64-linux-gnu.cmake"
CROSS_TOOLS = ("aarch64-linux-gnu-gcc", "qemu-aarch64-static")
# The cross build as the README and the toolchain file give it, to paste at the repository root.
CROSS_BUILD = (
    'cmake -S csrc -B build-arm -DCMAKE_TOOLCHAIN_FILE="$PWD/csrc/cmake/aarch64-linux-gnu.cmake"',
    "cmake --build build-arm && ctest --test-dir build-arm",
)


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
    """The documented commands, pasted as they are into a shell at the root of a copy of the repository."""
    shutil.copytree(CSRC, tmp_path / "csrc", ignore=shutil.ignore_patterns("build*"))
    cmake, ctest = _tool("cmake"), _tool("ctest")
    path = os.pathsep.join([os.path.dirname(cmake), os.path.dirname(ctest), os.environ.get("PATH", "")])
    result = subprocess.run(["bash", "-ec", "\n".join(CROSS_BUILD)], cwd=tmp_path, env={**os.environ, "PATH": path},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "100% tests passed" in result.stdout
    verbose = subprocess.run([ctest, "--test-dir", "build-arm", "--verbose"], cwd=tmp_path, capture_output=True,
                             text=True, check=True)
    assert "neon    checked" in verbose.stdout


def test_toolchain_file_gives_the_documented_commands():
    comment = [line.removeprefix("#").strip() for line in TOOLCHAIN.read_text(encoding="utf-8").splitlines()
               if line.startswith("#")]
    assert all(command in comment for command in CROSS_BUILD)
