"""The benchmarks behind ``tinydancer bench`` and ``tinydancer info``: kernel, model and routing timings
from Python, their runner, and the table they are printed as.

Each figure is the median over repeats of the mean time of a batch of calls, so a busy machine shows up
as spread between repeats rather than as a wrong median. The asv suites (``asv_bench/``) place their
inputs with :func:`aligned_copy` too.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinydancer import kernels
from tinydancer.model import FastGRNN, FastGRNNConfig


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
    """Time ``fn`` in batches of calls.

    Args:
        fn: the call to time (called once first to warm up).
        repeats: the number of timed batches.
        target_s: the approximate length of one batch, in seconds.

    Returns:
        (median, min, max) over the batches of the nanoseconds per call.
    """
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


def aligned_copy(a: np.ndarray, offset: int = 0) -> np.ndarray:
    """A C-contiguous copy of ``a`` starting ``offset`` bytes past a 64-byte boundary.

    Benchmarks place their arrays on purpose: a 64-byte load that straddles two cache lines costs about
    twice as much, so where NumPy happens to put an array would otherwise move the figures by up to 25%.

    Args:
        a: the array to copy.
        offset: bytes past the 64-byte boundary, in [0, 64).

    Returns:
        The copy, with ``a``'s dtype and shape.

    Raises:
        ValueError: ``offset`` is outside [0, 64).
    """
    if not 0 <= offset < 64:
        raise ValueError(f"offset must lie in [0, 64), got {offset}")
    raw = np.empty(a.nbytes + 128, dtype=np.uint8)
    start = -raw.ctypes.data % 64 + offset
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _fastgrnn_5_8(rng: np.random.Generator) -> kernels.FastGRNNCell:
    """A dense FastGRNN cell of input 5 and hidden 8 with random weights (the crate's benchmark size)."""
    return kernels.FastGRNNCell(
        rng.standard_normal((8, 5)) * 0.5, rng.standard_normal((8, 8)) * 0.5, np.zeros(8), np.zeros(8),
        rng.standard_normal(8), 0.0, zeta=1.0, nu=-4.0,
    )


def kernel_benchmarks(seed: int = 0) -> list[tuple[str, Callable[[], object], str]]:
    """(name, call, the peer's figure) for each kernel benchmark, on fixed random inputs."""
    rng = np.random.default_rng(seed)
    a = aligned_copy(rng.standard_normal(384).astype(np.float32))
    b = aligned_copy(rng.standard_normal(384).astype(np.float32))
    rows = aligned_copy(rng.standard_normal((100, 384)).astype(np.float32))
    shifted = aligned_copy(rows, 16)  # where NumPy's allocator often puts large arrays
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
        ("  the same, rows 16 bytes past a cache line", lambda: kernels.cosine_batch(a, shifted, norms, out=out), ""),
        ("FastGRNN 5->8, one step, single", lambda: cell.forward(x), "crate 7.5 us"),
        ("FastGRNN 5->8, batch of 100", lambda: cell.forward_batch(X, out=yb), "crate 7.35 us per item"),
    ]


def _model(form: str, inputs: int, hidden: int) -> FastGRNN:
    """A seeded model stored as ``form``: ``float32``, ``int8`` or ``sparse int8`` (90% pruned)."""
    model = FastGRNN(FastGRNNConfig(input_dim=inputs, hidden_dim=hidden), seed=0)
    if form == "sparse int8":
        model.prune(0.9)
    if form != "float32":
        model.quantize()
    return model


def model_benchmarks(seed: int = 0) -> list[tuple[str, Callable[[], object], str]]:
    """(name, call, the peer's figure) for the FastGRNN model in each storage form and at two sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for inputs, hidden in ((5, 8), (384, 32)):
        x = rng.standard_normal(inputs).astype(np.float32)
        X = rng.standard_normal((100, inputs)).astype(np.float32)
        y = np.empty(100, np.float32)
        for form in ("float32", "int8", "sparse int8"):
            m = _model(form, inputs, hidden)
            label = f"model {inputs}->{hidden} {form} ({m.size_bytes()} B)"
            single = "crate 7.5 us" if (inputs, form) == (5, "float32") else ""
            out.append((f"{label}, one call", (lambda m=m, x=x: m.forward(x)), single))
            out.append((f"{label}, batch of 100", (lambda m=m, X=X, y=y: m.forward_batch(X, y)), ""))
    return out


CRATE_ROUTE = {10: "crate 8.8 us; npm binding 107 us", 50: "crate 48 us; npm binding 219 us",
               100: "crate 93 us; npm binding 342 us"}


def routing_benchmarks(seed: int = 0) -> list[tuple[str, Callable[[], object], str]]:
    """The crate's benchmark table: feature extraction, model inference and complete routing, 384-d."""
    from tinydancer.features import FeatureEngineer
    from tinydancer.router import Router
    from tinydancer.synthetic import candidate_batch, candidate_list, random_candidates, random_query
    from tinydancer.types import RoutingRequest

    rng = np.random.default_rng(seed)
    now = time.time()
    router = Router()
    engineer = FeatureEngineer()
    out: list[tuple[str, Callable[[], object], str]] = []
    requests = {}
    for n in (10, 50, 100):
        query = random_query(rng)
        cols = random_candidates(rng, query, n, now=now)
        batch = candidate_batch(cols, metadata=False)
        objects = candidate_list(cols, metadata=False)
        requests[n] = (RoutingRequest(query, batch), RoutingRequest(query, objects))
        out.append((f"feature extraction, {n} candidates", (lambda q=query, b=batch: engineer.extract_batch_features(q, b)),
                    "crate 18.5 us" if n == 100 else ""))
    features = engineer.extract_batch_features(requests[100][0].query_embedding, requests[100][0].candidates)
    model = router.model
    x, X10, X100 = features[0].copy(), features[:10].copy(), features.copy()
    out += [
        ("model inference, single", lambda: model.forward(x), "crate 7.5 us"),
        ("model inference, batch of 10", lambda: model.forward_batch(X10), ""),
        ("model inference, batch of 100", lambda: model.forward_batch(X100), "crate 7.35 us per item"),
    ]
    for n, (columnar, listed) in requests.items():
        out.append((f"route(), {n} candidates (CandidateBatch)", (lambda r=columnar: router.route(r)), CRATE_ROUTE[n]))
    for n, (columnar, listed) in requests.items():
        out.append((f"route(), {n} Candidate objects", (lambda r=listed: router.route(r)), ""))
    return out


def run(isas: list[str] | None = None, *, repeats: int = 7, target_s: float = 0.02,
        groups: tuple[str, ...] = ("kernels",)) -> list[Timing]:
    """Time the benchmarks of ``groups`` on each ISA; the active ISA is restored afterwards.

    Args:
        isas: the ISAs to run on (default: all available).
        repeats, target_s: as for :func:`time_call`.
        groups: any of ``"kernels"``, ``"model"`` and ``"routing"``.

    Returns:
        One :class:`Timing` per benchmark and ISA, ISA by ISA, in the groups' order.
    """
    isas = isas or kernels.available_isas()
    before = kernels.active_isa()
    makers = {"kernels": kernel_benchmarks, "model": model_benchmarks, "routing": routing_benchmarks}
    results = []
    try:
        for isa in isas:
            kernels.set_isa(isa)
            for group in groups:
                for name, fn, reference in makers[group]():
                    median, low, high = time_call(fn, repeats=repeats, target_s=target_s)
                    results.append(Timing(name, isa, median, low, high, reference))
    finally:
        kernels.set_isa(before)
    return results


def training_epoch_seconds(n: int = 10_000, repeats: int = 3) -> float:
    """Median seconds of one training epoch over ``n`` examples of input 5, hidden 8 (batch 32)."""
    from tinydancer.training import Trainer, TrainingConfig

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (n, 5)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 1.0).astype(np.float32)
    samples = []
    for _ in range(repeats):
        trainer = Trainer(FastGRNN(seed=0), TrainingConfig(epochs=1, validation_split=0.0, seed=0))
        start = time.perf_counter()
        trainer.fit(X, y)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def format_ns(ns: float) -> str:
    """``ns`` nanoseconds as ns, us or ms with a readable number of digits."""
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.0f} ns"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, or what :mod:`platform` knows elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(timings: list[Timing], isas: list[str]) -> str:
    """The timings as a printable table: one row per benchmark, one column per ISA, then the peer's figure.

    Args:
        timings: what :func:`run` returned for ``isas``.
        isas: the column order.

    Returns:
        The table's lines joined by newlines (no trailing newline).
    """
    names = list(dict.fromkeys(t.name for t in timings))
    by_key = {(t.name, t.isa): t for t in timings}
    width = max(len(n) for n in names)
    lines = [f"{'benchmark':<{width}}  " + "  ".join(f"{isa:>10}" for isa in isas) + "  peer"]
    for name in names:
        cells = "  ".join(f"{format_ns(by_key[(name, isa)].median_ns):>10}" for isa in isas)
        lines.append(f"{name:<{width}}  {cells}  {by_key[(name, isas[0])].reference}")
    return "\n".join(lines)
