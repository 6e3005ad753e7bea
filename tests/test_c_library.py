"""csrc/ builds on its own, without Python, and its C test program passes under ctest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parent.parent / "csrc"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if found is None:
        pytest.fail(f"{name} is not installed; `pip install .[test]` provides it")
    return found


def test_ctest(tmp_path: Path):
    if not (CSRC / "CMakeLists.txt").exists():
        pytest.skip("csrc/ is not next to the tests (installed test files only)")
    build = tmp_path / "build"
    cmake, ctest = _tool("cmake"), _tool("ctest")
    subprocess.run([cmake, "-S", str(CSRC), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"], check=True,
                   capture_output=True)
    subprocess.run([cmake, "--build", str(build), "--parallel", "2"], check=True, capture_output=True)
    result = subprocess.run([ctest, "--test-dir", str(build), "--output-on-failure"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "100% tests passed" in result.stdout
