"""The project's own promises: the README's test command is what CI runs, the asv suites run, the CLI works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinydancer import cli, kernels

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("```", 2)[1]
    return [line.strip() for line in block.splitlines()[1:] if line.strip() and not line.startswith("#")]


def test_readme_starts_with_the_two_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("tinydancer info") or commands[0].endswith("tinydancer demo")
    assert "[test]" in commands[1] and commands[1].endswith("pytest")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_commands()[1] in ci


def test_asv_smoke_run(tmp_path: Path):
    asv = Path(sys.executable).with_name("asv")
    if not asv.exists():
        pytest.fail("asv is not installed; `pip install .[test]` provides it")
    env = {**os.environ, "HOME": str(tmp_path), "TD_BENCH_PROFILE": "fast"}  # machine file goes to tmp HOME
    bench_dir = ROOT / "asv_bench"
    subprocess.run([str(asv), "machine", "--yes"], cwd=bench_dir, env=env, check=True, capture_output=True)
    check = subprocess.run([str(asv), "check", "--python=same"], cwd=bench_dir, env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [str(asv), "run", "--python=same", "--quick", "--show-stderr", "--dry-run"],
        cwd=bench_dir, env=env, capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "failed" not in run.stdout.lower()
    for isa in kernels.available_isas():
        assert isa in run.stdout


def test_cli_info(capsys):
    assert cli.main(["info", "--no-timings"]) == 0
    out = capsys.readouterr().out
    assert f"active ISA:    {kernels.active_isa()}" in out
    for isa in kernels.available_isas():
        assert isa in out


def test_cli_bench_one_isa(capsys):
    assert cli.main(["bench", "--isa", "scalar", "--repeats", "1", "--seconds", "0.001"]) == 0
    out = capsys.readouterr().out
    assert "cosine, one 384-d pair" in out and "FastGRNN 5->8, batch of 100" in out
    assert "model 384->32 sparse int8" in out and "training, one epoch over 10,000 examples" in out


def test_cli_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--isa", "mmx"])  # not an ISA at all: a usage error
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "invalid choice: 'mmx'" in err.splitlines()[-1]
    with pytest.raises(SystemExit) as exc:
        cli.main(["nonsense"])
    assert exc.value.code == 2


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "tinydancer", "--version"], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(sys.executable))  # outside the source tree
    assert out.stdout.startswith("tinydancer ")


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """Every ```python block of the README runs, in order, in one namespace."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [part.split("```", 1)[0] for part in text.split("```python\n")[1:]]
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    before = kernels.active_isa()
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    finally:
        kernels.set_isa(before)
