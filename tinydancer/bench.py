"""Kernel timings from Python, as printed by ``tinydancer bench`` and ``tinydancer info``.

Each figure is the median over repeats of the mean time of a batch of calls, so a busy machine shows up
as spread between repeats rather than as a wrong median.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinydancer import kernels


@dataclass(frozen=True)
class Timing:
    """Median and spread of the per-call time of one benchmark, in nanoseconds."""

    name: str
    isa: str
    median_ns: float
    min_ns: float
    max_ns: float
    reference: str = ""


def time_call(fn: Callable[[], object], *, repeats: int = 7, target_s: float = 0.02) -> tuple[float, float, float]:
    """(median, min, max) nanoseconds per call of ``fn`` over ``repeats`` batches of about ``target_s`` each."""
    fn()  # warm up
    number = 1
    while True:  # grow the batch until one takes long enough to time well
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter_ns() - start
        if elapsed >= target_s * 1e9 / 4 or number >= 1 << 24:
            break
        number *= 4
    number = max(1, int(number * target_s * 1e9 / max(elapsed, 1)))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter_ns() - start) / number)
    return statistics.median(samples), min(samples), max(samples)


def _fastgrnn_5_8(rng: np.random.Generator) -> kernels.FastGRNNCell:
    return kernels.FastGRNNCell(
        rng.standard_normal((8, 5)) * 0.5, rng.standard_normal((8, 8)) * 0.5, np.zeros(8), np.zeros(8),
        rng.standard_normal(8), 0.0, zeta=1.0, nu=-4.0,
    )


def kernel_benchmarks(seed: int = 0) -> list[tuple[str, Callable[[], object], str]]:
    """(name, call, the peer's figure) for each kernel benchmark, on fixed random inputs."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(384).astype(np.float32)
    b = rng.standard_normal(384).astype(np.float32)
    rows = rng.standard_normal((100, 384)).astype(np.float32)
    norms = kernels.l2_norms(rows)
    out = np.empty(100, np.float32)
    cell = _fastgrnn_5_8(rng)
    x = rng.standard_normal(5).astype(np.float32)
    X = rng.standard_normal((100, 5)).astype(np.float32)
    yb = np.empty(100, np.float32)
    return [
        ("cosine, one 384-d pair", lambda: kernels.cosine(a, b), "crate 144 ns; simsimd 181 ns"),
        ("cosine, 384-d query x 100 rows", lambda: kernels.cosine_batch(a, rows, out=out), "simsimd cdist 4.3 us"),
        ("  the same, row norms given", lambda: kernels.cosine_batch(a, rows, norms, out=out),
         "numpy, cached norms 4.4 us"),
        ("FastGRNN 5->8, one step, single", lambda: cell.forward(x), "crate 7.5 us"),
        ("FastGRNN 5->8, batch of 100", lambda: cell.forward_batch(X, out=yb), "crate 7.35 us per item"),
    ]


def run(isas: list[str] | None = None, *, repeats: int = 7, target_s: float = 0.02) -> list[Timing]:
    """Time every kernel benchmark on each ISA in ``isas`` (default: all available); restores the active ISA."""
    isas = isas or kernels.available_isas()
    before = kernels.active_isa()
    results = []
    try:
        for isa in isas:
            kernels.set_isa(isa)
            for name, fn, reference in kernel_benchmarks():
                median, low, high = time_call(fn, repeats=repeats, target_s=target_s)
                results.append(Timing(name, isa, median, low, high, reference))
    finally:
        kernels.set_isa(before)
    return results


def format_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.0f} ns"
