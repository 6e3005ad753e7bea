"""The command line as a process: every failure is one line on stderr and a non-zero exit, never a traceback
(the cases where the process matters: the top level, the environment, a closed output pipe)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "request.json"
SCRIPT = Path(sys.executable).with_name("tinydancer")  # the console script, where pip put it


def environment(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TINYDANCER_ISA"}
    env.update(changes)
    return env


def tinydancer(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinydancer", *args], capture_output=True, text=True,
                          cwd=cwd, env=environment(**env), timeout=120)


def assert_one_error_line(out: subprocess.CompletedProcess, message: str, status: int = 1) -> None:
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr
    assert out.stderr.startswith("tinydancer: error: ") and out.stderr.count("\n") == 1, out.stderr
    assert message in out.stderr
    assert out.returncode == status


def _non_utf8(d: Path) -> list[str]:
    (d / "req.json").write_bytes(b'{"query_embedding": [1, 2], "candidates": [], "metadata": {"k": "\xe9t\xe9"}}')
    return ["route", "req.json"]


def _deep(d: Path) -> list[str]:
    (d / "req.json").write_text("[" * 100_000)
    return ["route", "req.json"]


def _damaged_npz(d: Path) -> list[str]:
    np.savez(d / "d.npz", X=np.ones((50, 5)), y=np.arange(50) % 2)
    (d / "d.npz").write_bytes((d / "d.npz").read_bytes()[:300])
    return ["train", "d.npz", "-o", "m.safetensors"]


def _report_folder_missing(d: Path) -> list[str]:
    np.savez(d / "d.npz", X=np.ones((50, 5)), y=np.arange(50) % 2)
    return ["train", "d.npz", "-o", "m.safetensors", "--report", "missing/r.json", "--epochs", "2"]


@pytest.mark.parametrize(
    "setup, message",
    [
        (_non_utf8, "req.json: the request is not UTF-8 text (byte 0xe9 at offset 65)"),
        (_deep, "the request is nested too deeply to be read as JSON"),
        (lambda d: ["route", "/dev/zero", "--max-request-bytes", "1000"],
         "/dev/zero: the request is larger than 1000 bytes (--max-request-bytes raises the limit)"),
        (_damaged_npz, "d.npz: not a readable .npz archive"),
        (_report_folder_missing, "missing/r.json: the folder"),
    ],
    ids=["non_utf8", "deep_json", "dev_zero", "damaged_npz", "report_folder"],
)
def test_failures_print_one_line(tmp_path: Path, setup: Callable[[Path], list[str]], message: str):
    if "/dev/zero" in message and not os.path.exists("/dev/zero"):
        pytest.skip("needs /dev/zero")
    out = tinydancer(setup(tmp_path), tmp_path)
    assert_one_error_line(out, message)
    assert out.stdout == "" and not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("args", [["info", "--no-timings"], ["route", "request.json"], ["--version"]])
def test_bad_isa_in_the_environment_is_one_line(tmp_path: Path, args: list[str]):
    out = tinydancer(args, tmp_path, TINYDANCER_ISA="bogus")
    assert_one_error_line(out, "TINYDANCER_ISA='bogus': unknown ISA 'bogus'")
    assert out.stdout == ""


@pytest.mark.skipif(not SCRIPT.exists(), reason="the console script is not installed next to this Python")
def test_bad_isa_through_the_console_script(tmp_path: Path):
    out = subprocess.run([str(SCRIPT), "info", "--no-timings"], capture_output=True, text=True, cwd=tmp_path,
                         env=environment(TINYDANCER_ISA="bogus"), timeout=120)
    assert_one_error_line(out, "TINYDANCER_ISA='bogus': unknown ISA")


def test_a_library_import_still_raises_the_config_error(tmp_path: Path):
    out = subprocess.run([sys.executable, "-c", "import tinydancer"], capture_output=True, text=True,
                         cwd=tmp_path, env=environment(TINYDANCER_ISA="bogus"), timeout=120)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "ConfigError: TINYDANCER_ISA='bogus'" in out.stderr


BROKEN_PIPE_STATUS = 128 + signal.SIGPIPE if hasattr(signal, "SIGPIPE") else 1


@pytest.mark.parametrize("args", [["info", "--no-timings"], ["demo"], ["route", str(EXAMPLE)], ["--help"],
                                  ["--version"]])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path, args: list[str]):
    """As ``tinydancer info | head -1`` once head has gone: the pipe has no reader before the command writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "tinydancer", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=environment(), timeout=120)
    finally:
        os.close(write_end)
    assert proc.stderr == ""  # no traceback, no "Exception ignored ... BrokenPipeError"
    if args[0].startswith("--"):
        assert proc.returncode in (0, BROKEN_PIPE_STATUS)  # argparse drops what it cannot print itself
    else:
        assert proc.returncode == BROKEN_PIPE_STATUS


def test_reader_that_leaves_after_one_line(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-m", "tinydancer", "info", "--no-timings"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path, env=environment())
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    status = proc.wait(timeout=120)
    assert first.startswith(b"tinydancer ")
    assert err == "" and status in (0, BROKEN_PIPE_STATUS)  # 0 when it had written everything already


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_output_onto_a_full_disk(tmp_path: Path):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "tinydancer", "info", "--no-timings"], stdout=full,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=environment(), timeout=120)
    assert_one_error_line(proc, "No space left on device")
