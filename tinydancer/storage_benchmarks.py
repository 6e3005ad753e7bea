"""The storage group of ``tinydancer bench``: what logging decisions and the routing database cost.

Three comparisons, each timed as a pair of rows in one loop (a batch of one call, then a batch of the
other, the order alternating from repeat to repeat), so that a difference or a ratio comes from one run on
one machine state:

- ``route()`` of 10 candidates (the routing group's request, :func:`~tinydancer.benchmarks.routing_inputs`)
  by a :class:`~tinydancer.router.Router` without a database and by one with ``RouterConfig(database_path=...)``:
  the same request object and the shipped model, per ISA. A timed batch with logging is at most
  :data:`ROUTE_BATCH` requests, and the log is flushed (untimed) before and after it: the writer sleeps
  while ``route()`` is timed, so the row is the cost on the caller's thread, and the writer's own cost is
  the next pair. The log's queue holds four batches, so nothing is dropped (the row reports
  ``metrics()["log_dropped"]``).
- The background writer (:class:`~tinydancer.decision_log.DecisionLog`): :data:`WRITER_REQUESTS` routed requests
  of 10 candidates are queued while the writer sleeps (as the router queues them: results with their
  features, a new request id each), then ``flush()`` is timed: decisions committed a second. Beside it,
  ``Storage.record_routing``, the crate's way: one row and one transaction a call. Timed once, on the active
  ISA: neither runs a kernel of ours.
- ``Storage.search(query, 10)`` over :data:`SEARCH_SIZES` stored 384-d candidates (inserted once with
  ``insert_candidates``, one transaction) beside NumPy's brute force over the same embeddings: the
  normalised matrix times the normalised query, ``argpartition`` and a sort of the 10 (indices only, where
  the search also reads the 10 candidates from SQLite). Per ISA. The search runs on one thread; NumPy's
  BLAS is held to one thread as well when threadpoolctl is installed, and otherwise runs on its default
  threads (the row says which).

Every database lives in a :class:`tempfile.TemporaryDirectory` that is made when a pair's first row is
timed and closed and removed after the pair's second row (or at once when timing fails). The asv suite
``asv_bench/benchmarks/bench_storage.py`` times the same calls with the helpers here.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tinydancer import checks, kernels
from tinydancer.benchmarks import (Benchmark, Timing, aligned_copy, calls_per_batch, figures, one_thread_scope,
                                   routing_inputs, thread_controller, time_batch)
from tinydancer.errors import InvalidInputError

if TYPE_CHECKING:
    from tinydancer.decision_log import DecisionLog
    from tinydancer.storage import Storage

__all__ = ["LOG_TARGET_US", "ROUTE_BATCH", "ROUTE_CANDIDATES", "SEARCH_DIM", "SEARCH_K", "SEARCH_SIZES",
           "WRITER_REQUESTS", "WRITER_TARGET", "LoggedRequests", "SearchInputs", "logged_requests",
           "numpy_top_k", "search_inputs", "storage_benchmarks", "store_candidates", "writer_log"]

ROUTE_CANDIDATES = 10  # candidates in the routed request
ROUTE_BATCH = 2_000  # at most this many route() calls in one timed batch (each queues a request when logging)
WRITER_REQUESTS = 10_000  # requests queued before one timed flush()
SEARCH_SIZES = (10_000, 100_000)  # stored candidates searched
SEARCH_K = 10
SEARCH_DIM = 384
LOG_TARGET_US = 2.0  # the target: logging adds at most this to route()
WRITER_TARGET = 100_000  # the target: decisions committed a second
CRATE_RECORD_ROUTING = "crate about 14 us a row"
WRITER_SLEEP = 3600.0  # the timed log's writer interval: it wakes only when flushed
CREATED_AT = 1.7e9  # created_at of the stored candidates

Figures = tuple[float, float, float]  # (median, min, max) nanoseconds per call


# -- inputs, shared with the asv suite ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedRequests:
    """Routed requests as a router hands them to its log: the candidate ids, each request's result (with the
    weighted features it logs), its time and the threshold.

    Attributes:
        ids: the candidates' ids, in the request's order.
        results: one :class:`~tinydancer.kernels.RouteResult` per routed request, with features.
        times_us: each request's ``inference_time_us``.
        threshold: the router's effective threshold, as it logs it.
    """

    ids: tuple[str, ...]
    results: tuple[Any, ...]
    times_us: tuple[float, ...]
    threshold: float

    def queue(self, log: DecisionLog, n: int) -> int:
        """Put ``n`` requests on ``log`` as :meth:`Router.route <tinydancer.router.Router.route>` does, each
        under a new request id, cycling through the results.

        Returns:
            The decisions (table rows) queued; a request the log dropped on a full queue is not counted.
        """
        from tinydancer.decision_log import CANDIDATES

        put, new_id = log.put, log.new_id
        results, times, ids, threshold = self.results, self.times_us, self.ids, self.threshold
        k = len(results)
        now = time.time()
        rows = 0
        for i in range(n):
            result = results[i % k]
            if put((CANDIDATES, new_id(), ids, result, False, threshold, times[i % k], now)):
                rows += result.n
        return rows


def logged_requests(path: str | os.PathLike[str], count: int = 64, *, seed: int = 0) -> LoggedRequests:
    """Route the routing group's request of 10 candidates ``count`` times with a router that logs to ``path``
    (it is closed before this returns) and keep what it queued: the results with their features.

    Raises:
        InvalidInputError: ``count`` is below 1.
    """
    from tinydancer.router import Router, RouterConfig

    count = checks.integer(count, "count", 1, error=InvalidInputError)
    inputs = routing_inputs(ROUTE_CANDIDATES, seed=seed)
    with Router(RouterConfig(database_path=path)) as router:
        responses = [router.route(inputs.columnar) for _ in range(count)]
        threshold = router.config.effective_threshold
    return LoggedRequests(tuple(inputs.batch.ids), tuple(r.result for r in responses),
                          tuple(r.inference_time_us for r in responses), threshold)


def writer_log(path: str | os.PathLike[str], requests: int) -> DecisionLog:
    """A :class:`~tinydancer.decision_log.DecisionLog` on ``path`` whose writer sleeps until it is flushed (or
    closed): its queue holds ``2 * requests + 2``, so ``requests`` queued requests neither wake it (at half
    full) nor are dropped."""
    from tinydancer.decision_log import DecisionLog

    requests = checks.integer(requests, "requests", 1, error=InvalidInputError)
    return DecisionLog(path, capacity=2 * requests + 2, interval=WRITER_SLEEP)


@dataclass(frozen=True)
class SearchInputs:
    """The stored embeddings of the search benchmarks, NumPy's normalised copy and the query.

    Attributes:
        embeddings: (n, dim) float32 standard-normal rows, what is stored (not unit length).
        normalised: the rows scaled to unit length, 64-byte aligned: NumPy's matrix.
        query: a unit float32 query, 64-byte aligned.
    """

    embeddings: np.ndarray
    normalised: np.ndarray
    query: np.ndarray


def search_inputs(n: int, *, seed: int = 0, dim: int = SEARCH_DIM) -> SearchInputs:
    """Deterministic inputs for searching ``n`` stored ``dim``-d candidates.

    Raises:
        InvalidInputError: ``n`` or ``dim`` below 1.
    """
    n = checks.integer(n, "n", 1, error=InvalidInputError)
    dim = checks.integer(dim, "dim", 1, error=InvalidInputError)
    rng = np.random.default_rng([seed, n, dim])
    E = rng.standard_normal((n, dim), dtype=np.float32)
    normalised = aligned_copy(E / np.linalg.norm(E, axis=1, keepdims=True))
    q = rng.standard_normal(dim)
    return SearchInputs(E, normalised, aligned_copy((q / np.linalg.norm(q)).astype(np.float32)))


def store_candidates(storage: Storage, embeddings: np.ndarray) -> None:
    """Insert one candidate per row of ``embeddings`` (ids ``c000000``, ``c000001``, ...; no metadata) with
    one ``insert_candidates`` call: one transaction."""
    from tinydancer.candidates import Candidate

    storage.insert_candidates([Candidate(f"c{i:06d}", row, {}, CREATED_AT, i % 100, 0.5)
                               for i, row in enumerate(embeddings)])


def numpy_top_k(normalised: np.ndarray, query: np.ndarray, k: int = SEARCH_K) -> np.ndarray:
    """NumPy's brute-force top ``k`` by cosine similarity: the rows of ``normalised`` (unit length) times the
    normalised query, ``argpartition``, then the ``k`` sorted; their indices, highest similarity first."""
    scores = normalised @ (query / np.linalg.norm(query))
    if k < scores.shape[0]:
        top = np.argpartition(-scores, k - 1)[:k]
    else:
        top = np.arange(scores.shape[0])
    return top[np.argsort(-scores[top], kind="stable")]


# -- two rows timed in one loop ------------------------------------------------------------------------------------


def _alternate(first: Callable[[], float], second: Callable[[], float], repeats: int) -> tuple[Figures, Figures]:
    """Time ``repeats`` batches of each (each callable times one batch and returns nanoseconds per call),
    ``first`` before ``second`` in even repeats and after it in odd ones."""
    a: list[float] = []
    b: list[float] = []
    for i in range(repeats):
        if i % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
    return figures(a), figures(b)


class _Pair:
    """Two rows timed in one loop: the first row's timing times both on the active ISA and keeps the second's
    figures, which the second row hands out (timing both itself if the first did not run on this ISA).

    The pair's resources (temporary folder, databases, routers) are made when it is first timed or called
    and released after the second row is described (its last step in :func:`~tinydancer.benchmarks.measure`),
    or at once when timing fails; timing again makes them anew.
    """

    per_isa = True

    def __init__(self) -> None:
        self._figures: dict[str, tuple[Figures, Figures]] = {}
        self._stack: ExitStack | None = None

    def _open(self, stack: ExitStack) -> None:
        """Make the pair's resources, registering their cleanup on ``stack``."""
        raise NotImplementedError

    def _measure(self, repeats: int, target_s: float) -> tuple[Figures, Figures]:
        """Time both calls on the active ISA."""
        raise NotImplementedError

    def _call(self, which: int) -> object:
        """One call of the first (0) or second (1) row."""
        raise NotImplementedError

    def scope(self) -> AbstractContextManager[object]:
        """The context both rows are timed in."""
        return nullcontext()

    def _ready(self) -> None:
        if self._stack is None:
            stack = ExitStack()
            try:
                self._open(stack)
            except BaseException:
                stack.close()
                raise
            self._stack = stack

    def figures(self, which: int, repeats: int, target_s: float) -> Figures:
        isa = kernels.active_isa()
        if which == 0 or isa not in self._figures:
            try:
                self._ready()
                self._figures[isa] = self._measure(repeats, target_s)
            except BaseException:
                self.close()
                raise
        return self._figures[isa][which]

    def figures_of(self, which: int, isa: str) -> Figures | None:
        """The figures measured for a row on ``isa``, or None."""
        pair = self._figures.get(isa)
        return None if pair is None else pair[which]

    def call(self, which: int) -> object:
        self._ready()
        return self._call(which)

    def close(self) -> None:
        """Release the resources (the temporary folder is removed); the figures are kept."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    @property
    def open(self) -> bool:
        """Whether the resources are made (for tests)."""
        return self._stack is not None


class _Row:
    """One row of a pair, with the hooks :func:`~tinydancer.benchmarks.measure` honours."""

    def __init__(self, pair: _Pair, which: int, describe: Callable[[list[Timing]], str]) -> None:
        self.pair = pair
        self.which = which
        self.per_isa = pair.per_isa
        self._describe = describe

    def __call__(self) -> object:
        return self.pair.call(self.which)

    def scope(self) -> AbstractContextManager[object]:
        return self.pair.scope()

    def timing(self, repeats: int, target_s: float = 0.02) -> Figures:
        return self.pair.figures(self.which, repeats, target_s)

    def describe(self, row: list[Timing]) -> str:
        try:
            return self._describe(row)
        finally:
            if self.which == 1:
                self.pair.close()


def _folder(stack: ExitStack) -> str:
    return stack.enter_context(tempfile.TemporaryDirectory(prefix="tinydancer-bench-"))


class _RoutePair(_Pair):
    """``route()`` without and with a database: the same request, the same model file."""

    def __init__(self, seed: int, batch: int) -> None:
        super().__init__()
        self.seed, self.batch = seed, batch
        self.dropped = 0
        self.failed = 0

    def _open(self, stack: ExitStack) -> None:
        from tinydancer.router import Router, RouterConfig

        folder = _folder(stack)
        self.request = routing_inputs(ROUTE_CANDIDATES, seed=self.seed).columnar
        self.off = Router()
        stack.callback(self.off.close)
        # Four batches: nothing is dropped, and a batch never fills it to half (which would wake the writer).
        config = RouterConfig(database_path=os.path.join(folder, "route.db"), log_queue_size=4 * self.batch + 4)
        self.on = stack.enter_context(Router(config))

    def _call(self, which: int) -> object:
        return (self.off, self.on)[which].route(self.request)

    def _measure(self, repeats: int, target_s: float) -> tuple[Figures, Figures]:
        off, on, request = self.off.route, self.on.route, self.request
        flush = self.on.flush
        number = min(self.batch, calls_per_batch(lambda: off(request), target_s))
        for _ in range(number):  # the logging path warmed up too
            on(request)
        flush()

        def logged() -> float:
            flush()  # nothing queued: it restarts the writer's wait, which outlasts the batch
            ns = time_batch(lambda: on(request), number)
            flush()  # untimed: the batch is written before the next timed batch
            return ns

        figures = _alternate(lambda: time_batch(lambda: off(request), number), logged, repeats)
        metrics = self.on.metrics()
        self.dropped, self.failed = metrics["log_dropped"], metrics["log_failed"]
        return figures

    def describe_off(self, row: list[Timing]) -> str:
        return "logging off; timed alternately with the next row"

    def describe_on(self, row: list[Timing]) -> str:
        extras = []
        for t in row:
            off = self.figures_of(0, t.isa)
            if off is not None:
                extras.append(f"{t.isa} {(t.median_ns - off[0]) / 1e3:+.2f} us")
        lost = f"{self.dropped:,} requests DROPPED" if self.dropped else "0 dropped"
        if self.failed:
            lost += f", {self.failed:,} rows FAILED"
        return f"extra: {', '.join(extras)} (target +{LOG_TARGET_US:g} us); {lost}; writer idle while timed"


class _WriterPair(_Pair):
    """The background writer's flush of queued requests beside ``Storage.record_routing``, one row a call."""

    per_isa = False

    def __init__(self, seed: int, requests: int) -> None:
        super().__init__()
        self.seed, self.requests = seed, requests
        self.dropped = 0

    def _open(self, stack: ExitStack) -> None:
        from tinydancer.storage import Storage

        folder = _folder(stack)
        self.logged = logged_requests(os.path.join(folder, "routed.db"), seed=self.seed)
        self.log = writer_log(os.path.join(folder, "writer.db"), self.requests)
        stack.callback(self.log.close)
        self.store = stack.enter_context(Storage(os.path.join(folder, "record.db")))
        self.query = routing_inputs(ROUTE_CANDIDATES, seed=self.seed).query

    def _write(self) -> float:
        """Queue the requests (untimed), then time flush(): nanoseconds per decision committed."""
        rows = self.logged.queue(self.log, self.requests)
        start = time.perf_counter_ns()
        self.log.flush()
        return (time.perf_counter_ns() - start) / max(rows, 1)

    def _record(self) -> object:
        return self.store.record_routing("mem-0000", self.query, 0.42, False, 0.84, 1.5)

    def _call(self, which: int) -> object:
        return self._write() if which == 0 else self._record()

    def _measure(self, repeats: int, target_s: float) -> tuple[Figures, Figures]:
        self._write()  # warm up
        number = calls_per_batch(self._record, target_s)
        figures = _alternate(self._write, lambda: time_batch(self._record, number), repeats)
        self.dropped = self.log.metrics()["log_dropped"]
        return figures

    def describe_writer(self, row: list[Timing]) -> str:
        text = (f"{1e9 / row[0].median_ns:,.0f} decisions/s (target {WRITER_TARGET:,}/s); "
                f"flush() of {self.requests:,} queued requests")
        return text + (f"; {self.dropped:,} requests DROPPED" if self.dropped else "")

    def describe_record(self, row: list[Timing]) -> str:
        text = f"{1e9 / row[0].median_ns:,.0f} rows/s, a transaction each ({CRATE_RECORD_ROUTING})"
        writer = self.figures_of(0, row[0].isa) or self.figures_of(0, kernels.active_isa())
        if writer is not None:
            text += f"; the writer commits {row[0].median_ns / writer[0]:.1f}x the rows a second"
        return text


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _blas_note() -> str:
    """How many threads NumPy's BLAS ran on, as far as this process knows."""
    if thread_controller() is not None:
        return "NumPy's BLAS held to 1 thread"
    told = [f"{name}={os.environ[name]}" for name in BLAS_THREAD_VARIABLES if os.environ.get(name)]
    if told:
        return f"NumPy's BLAS threads as {', '.join(told)} sets them (no threadpoolctl)"
    return f"NumPy's BLAS on its default threads, up to {os.cpu_count()} (no threadpoolctl to hold it to one)"


class _SearchPair(_Pair):
    """``Storage.search`` top k beside NumPy's brute force, over the same n embeddings."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__()
        self.n, self.seed = n, seed

    def _open(self, stack: ExitStack) -> None:
        from tinydancer.storage import Storage

        folder = _folder(stack)
        inputs = search_inputs(self.n, seed=self.seed)
        self.storage = stack.enter_context(Storage(os.path.join(folder, "search.db")))
        store_candidates(self.storage, inputs.embeddings)
        self.normalised, self.query = inputs.normalised, inputs.query  # the stored copy is not kept

    def scope(self) -> AbstractContextManager[object]:
        return one_thread_scope()  # NumPy's BLAS; the search's kernels run on one thread anyway

    def _search(self) -> object:
        return self.storage.search(self.query, SEARCH_K)

    def _numpy(self) -> object:
        return numpy_top_k(self.normalised, self.query, SEARCH_K)

    def _call(self, which: int) -> object:
        return self._numpy() if which else self._search()

    def _measure(self, repeats: int, target_s: float) -> tuple[Figures, Figures]:
        searches = calls_per_batch(self._search, target_s)  # the first call reads the embeddings into memory
        products = calls_per_batch(self._numpy, target_s)
        return _alternate(lambda: time_batch(self._search, searches), lambda: time_batch(self._numpy, products),
                          repeats)

    def describe_search(self, row: list[Timing]) -> str:
        return f"reads the {SEARCH_K} candidates from SQLite too; timed alternately with the next row"

    def describe_numpy(self, row: list[Timing]) -> str:
        ratios = []
        for t in row:
            search = self.figures_of(0, t.isa)
            if search is not None:
                ratios.append(f"{t.isa} {search[0] / t.median_ns:.2f}x")
        return f"search takes {', '.join(ratios)} NumPy's time; {_blas_note()}"


def storage_benchmarks(seed: int = 0, *, sizes: tuple[int, ...] = SEARCH_SIZES, requests: int = WRITER_REQUESTS,
                       route_batch: int = ROUTE_BATCH) -> list[Benchmark]:
    """The storage group (see the module docstring): four pairs of rows, nothing built until a row is timed.

    Args:
        seed: seeds the request, the logged results' request and the stored embeddings.
        sizes: the numbers of stored candidates searched, each >= 1.
        requests: requests of 10 candidates queued before each timed ``flush()``, >= 1.
        route_batch: the most ``route()`` calls in one timed batch, >= 1 (a batch is otherwise sized by
            ``target_s`` as :func:`~tinydancer.benchmarks.time_call` sizes them).

    Raises:
        InvalidInputError: a size, ``requests`` or ``route_batch`` below 1.
    """
    sizes = tuple(checks.integer(n, "sizes[]", 1, error=InvalidInputError) for n in sizes)
    requests = checks.integer(requests, "requests", 1, error=InvalidInputError)
    route_batch = checks.integer(route_batch, "route_batch", 1, error=InvalidInputError)
    route = _RoutePair(seed, route_batch)
    writer = _WriterPair(seed, requests)
    out: list[Benchmark] = [
        (f"route(), {ROUTE_CANDIDATES} candidates, no database", _Row(route, 0, route.describe_off), ""),
        (f"route(), {ROUTE_CANDIDATES} candidates, logging to a database", _Row(route, 1, route.describe_on), ""),
        (f"background writer, per decision ({requests:,} requests; no ISA)",
         _Row(writer, 0, writer.describe_writer), ""),
        ("Storage.record_routing, one row a call (no ISA)", _Row(writer, 1, writer.describe_record), ""),
    ]
    for n in sizes:
        search = _SearchPair(n, seed)
        out += [
            (f"Storage.search, top {SEARCH_K} of {n:,} {SEARCH_DIM}-d", _Row(search, 0, search.describe_search), ""),
            (f"  NumPy brute force, top {SEARCH_K} of {n:,}", _Row(search, 1, search.describe_numpy), ""),
        ]
    return out
