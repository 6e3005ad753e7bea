"""The routing database from Python: ``route()`` of 10 candidates without and with a database, the
background writer's ``flush()`` of 10,000 queued requests beside ``Storage.record_routing``, and
``Storage.search`` top 10 of 10,000 and 100,000 stored 384-d candidates beside NumPy's brute force: the
calls ``tinydancer bench --group storage`` times, built with its helpers
(:mod:`tinydancer.storage_benchmarks`). ``TD_BENCH_PROFILE=fast`` searches 10,000 candidates only.

asv times one call at a time and cannot alternate two calls in one loop as ``tinydancer bench`` does, so
a difference between two suites here mixes in the drift between their processes; the README's figures
come from ``tinydancer bench``.

Two suites need fresh state before every sample and keep a ``setup`` for it, with one call a sample
(``number = 1``): RouteLogging flushes the log (so the writer sleeps through the timed batch of
``route()`` calls) and Writer queues the requests its timed ``flush()`` writes. The others prepare on
their first call, as the other suites do. Databases go into a temporary folder per suite, closed and
removed when the process exits (asv runs each benchmark in a process of its own).
"""

from __future__ import annotations

import atexit
import os
import tempfile
from contextlib import ExitStack

from tinydancer.benchmarks import routing_inputs
from tinydancer.storage_benchmarks import (
    ROUTE_BATCH,
    ROUTE_CANDIDATES,
    SEARCH_K,
    SEARCH_SIZES,
    WRITER_REQUESTS,
    logged_requests,
    numpy_top_k,
    search_inputs,
    store_candidates,
    writer_log,
)

from .common import ISAS, PROFILE, IsaSuite, Suite

SIZES = list(SEARCH_SIZES[:1]) if PROFILE == "fast" else list(SEARCH_SIZES)


def _resources() -> tuple[ExitStack, str]:
    """A stack closed at process exit (before the routers' own exit flush) and a temporary folder on it,
    removed last."""
    stack = ExitStack()
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="tinydancer-asv-"))
    atexit.register(stack.close)
    return stack, folder


class _Owned:
    """A suite that owns a stack of resources and a temporary folder on it (``folder``): preparing closes
    the previous ones first, then makes new ones."""

    stack: ExitStack | None = None
    folder = ""

    def prepare(self, *params):
        super().prepare(*params)
        self.release()
        self.stack, self.folder = _resources()

    def release(self) -> None:
        """Close the databases and remove the folder now (tests; asv leaves it to process exit)."""
        if self.stack is not None:
            self.stack.close()
            self.stack = None


class RouteLogging(_Owned, IsaSuite):
    """``route()`` of the routing group's request of 10 candidates, ``batch`` calls a sample, by a router
    without a database (``off``) and with one (``on``). ``setup`` flushes the log, untimed, so the writer
    sleeps through the timed batch, as in ``tinydancer bench``. The figure is the batch's time: divide by
    ``batch`` (2,000) for one call."""

    params = (ISAS, ["off", "on"])
    param_names = ["isa", "log"]
    number = 1
    batch = ROUTE_BATCH

    def prepare(self, isa, log):
        from tinydancer.router import Router, RouterConfig

        super().prepare(isa, log)
        self.request = routing_inputs(ROUTE_CANDIDATES).columnar
        config = (RouterConfig(database_path=os.path.join(self.folder, "route.db"), log_queue_size=4 * self.batch + 4)
                  if log == "on" else RouterConfig())
        self.router = self.stack.enter_context(Router(config))

    def setup(self, isa, log):
        if self.key != (isa, log):
            self.prepare(isa, log)
        self.router.flush()

    def time_route_batch(self, isa, log):
        route, request = self.router.route, self.request
        for _ in range(self.batch):
            route(request)


class Writer(_Owned, Suite):
    """The background writer's ``flush()`` of ``requests`` (10,000) requests of 10 candidates, queued by
    ``setup`` (untimed) while the writer sleeps: one flush a sample, about half a second here."""

    number = 1
    repeat = (2, 5, 10.0)
    warmup_time = 0.1
    requests = WRITER_REQUESTS

    def prepare(self):
        super().prepare()
        self.logged = logged_requests(os.path.join(self.folder, "routed.db"))
        self.log = writer_log(os.path.join(self.folder, "writer.db"), self.requests)
        self.stack.callback(self.log.close)

    def setup(self):
        if self.key is None:
            self.prepare()
        self.queued = self.logged.queue(self.log, self.requests)

    def time_flush(self):
        self.log.flush()

    def track_decisions_per_second(self):
        import time

        start = time.perf_counter()
        self.log.flush()
        return self.queued / (time.perf_counter() - start)

    track_decisions_per_second.unit = "decisions/s"


class RecordRouting(_Owned, Suite):
    """``Storage.record_routing``: one row with its 384-d query embedding, one transaction, a call."""

    def prepare(self):
        from tinydancer.storage import Storage

        super().prepare()
        self.storage = self.stack.enter_context(Storage(os.path.join(self.folder, "record.db")))
        self.query = routing_inputs(ROUTE_CANDIDATES).query

    def time_record_routing(self):
        if self.key is None:
            self.prepare()
        self.storage.record_routing("mem-0000", self.query, 0.42, False, 0.84, 1.5)


class Search(_Owned, IsaSuite):
    """``Storage.search(query, 10)`` over stored 384-d candidates, inserted once (one transaction) on the
    first call, which also reads them into memory; later calls are timed."""

    params = (ISAS, SIZES)
    param_names = ["isa", "candidates"]
    timeout = 300

    def prepare(self, isa, n):
        from tinydancer.storage import Storage

        super().prepare(isa, n)
        inputs = search_inputs(n)
        self.query = inputs.query
        self.storage = self.stack.enter_context(Storage(os.path.join(self.folder, "search.db")))
        store_candidates(self.storage, inputs.embeddings)
        self.storage.search(self.query, SEARCH_K)

    def time_search(self, isa, n):
        if self.key != (isa, n):
            self.prepare(isa, n)
        self.storage.search(self.query, SEARCH_K)


class SearchNumpy(Suite):
    """NumPy's brute-force top 10 over the same embeddings (normalised matrix times the normalised query,
    ``argpartition``, a sort of the 10), with BLAS held to one thread when threadpoolctl is installed (as
    ``tinydancer bench`` holds it), else on its default threads. No ISA: no kernel of ours runs."""

    params = (SIZES,)
    param_names = ["candidates"]

    def prepare(self, n):
        super().prepare(n)
        inputs = search_inputs(n)
        self.normalised, self.query = inputs.normalised, inputs.query
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return
        threadpool_limits(limits=1)  # this process only

    def time_numpy_top_10(self, n):
        if self.key != (n,):
            self.prepare(n)
        numpy_top_k(self.normalised, self.query, SEARCH_K)
