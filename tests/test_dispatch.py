from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

import tinydancer
from tinydancer import kernels
from tinydancer.errors import ConfigError


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter, outside the source tree (so the installed package is imported)."""
    environ = {k: v for k, v in os.environ.items() if k != "TINYDANCER_ISA"}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ,
                          cwd=os.path.dirname(sys.executable))


def test_scalar_is_always_available():
    assert kernels.available_isas()[0] == "scalar"
    assert set(kernels.available_isas()) <= set(kernels.compiled_isas())
    assert set(kernels.available_isas()) <= set(kernels.detected_isas())


def test_best_is_selected_at_import():
    out = run_python("from tinydancer import kernels; print(kernels.active_isa(), kernels.best_isa())")
    active, best = out.stdout.split()
    assert active == best == kernels.available_isas()[-1]


def test_architecture_isas_are_compiled():
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        assert {"avx2", "avx512"} <= set(kernels.compiled_isas())
    elif machine in ("aarch64", "arm64"):
        assert "neon" in kernels.compiled_isas()


def test_set_isa_round_trip():
    before = kernels.active_isa()
    try:
        for isa in kernels.available_isas():
            kernels.set_isa(isa)
            assert kernels.active_isa() == isa
        kernels.set_isa("SCALAR")
        assert kernels.active_isa() == "scalar"
    finally:
        kernels.set_isa(before)


def test_set_isa_errors():
    with pytest.raises(ConfigError, match="unknown ISA 'sse9'"):
        kernels.set_isa("sse9")
    with pytest.raises(ConfigError, match="must be a string"):
        kernels.set_isa(3)
    missing = [isa for isa in ("scalar", "avx2", "avx512", "neon") if isa not in kernels.available_isas()]
    for isa in missing:
        with pytest.raises(ConfigError, match="not available here"):
            kernels.set_isa(isa)


@pytest.mark.parametrize("isa", kernels.available_isas())
def test_environment_variable_selects(isa):
    out = run_python("from tinydancer import kernels; print(kernels.active_isa())", TINYDANCER_ISA=isa)
    assert out.stdout.strip() == isa


@pytest.mark.parametrize("value, message", [("avx1024", "unknown ISA"), ("nothing", "unknown ISA")])
def test_environment_variable_errors(value, message):
    out = run_python("import tinydancer", TINYDANCER_ISA=value)
    assert out.returncode != 0
    assert "ConfigError" in out.stderr and "TINYDANCER_ISA" in out.stderr and message in out.stderr


def test_package_exports():
    assert tinydancer.cosine is kernels.cosine
    assert isinstance(tinydancer.__version__, str)


def test_environment_variable_names_an_unavailable_isa():
    missing = [isa for isa in ("avx2", "avx512", "neon") if isa not in kernels.available_isas()]
    assert missing  # no machine runs both the x86 and the Arm kernels
    for isa in missing:
        out = run_python("import tinydancer", TINYDANCER_ISA=isa)
        assert out.returncode != 0
        assert f"TINYDANCER_ISA='{isa}'" in out.stderr and "not available here" in out.stderr


def test_main_names_load_lazily():
    code = (
        "import sys, tinydancer\n"
        "assert 'tinydancer.router' not in sys.modules and 'tinydancer.training' not in sys.modules\n"
        "from tinydancer import Router, Candidate, FastGRNN, Trainer, CircuitBreaker, RoutingResponse\n"
        "from tinydancer.router import Router as R\n"
        "assert Router is R and 'Router' in dir(tinydancer)\n"
        "try:\n"
        "    tinydancer.Nope\n"
        "except AttributeError as e:\n"
        "    assert 'Nope' in str(e)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
        "print('ok')\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
