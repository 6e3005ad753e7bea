"""``tinydancer bench --group storage`` (:mod:`tinydancer.storage_benchmarks`) and the asv storage suites: the
rows, their columns and texts, the pairs timed in one loop, nothing dropped or lost, the temporary databases
removed after each pair (and when timing fails), the helpers both tools share, and the BLAS thread note.

Small sizes throughout. No test here asserts on how long anything takes."""

from __future__ import annotations

import importlib
import re
import sqlite3
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest

from tinydancer import benchmarks, cli, kernels
from tinydancer import storage_benchmarks as sb
from tinydancer.cli import bench
from tinydancer.errors import InvalidInputError
from tinydancer.router import RouterConfig
from tinydancer.storage import Storage

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"sizes": (40, 90), "requests": 12, "route_batch": 25}
ISAS = kernels.available_isas()


def names(first: int, second: int, requests: int) -> list[str]:
    return [
        "route(), 10 candidates, no database",
        "route(), 10 candidates, logging to a database",
        f"background writer, per decision ({requests:,} requests; no ISA)",
        "Storage.record_routing, one row a call (no ISA)",
        f"Storage.search, top 10 of {first:,} 384-d",
        f"  NumPy brute force, top 10 of {first:,}",
        f"Storage.search, top 10 of {second:,} 384-d",
        f"  NumPy brute force, top 10 of {second:,}",
    ]


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """tempfile's folder for this test: every TemporaryDirectory the benchmarks make lands here."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture
def fake_threadpoolctl(monkeypatch):
    """A stand-in threadpoolctl that records each limit entered and left."""
    seen: dict[str, list] = {"limits": [], "inside": [False]}

    class Limiter:
        def __init__(self, limits):
            seen["limits"].append(limits)

        def __enter__(self):
            seen["inside"][0] = True
            return self

        def __exit__(self, *exc):
            seen["inside"][0] = False

    class ThreadpoolController:
        def limit(self, *, limits):
            return Limiter(limits)

    module = types.ModuleType("threadpoolctl")
    module.ThreadpoolController = ThreadpoolController
    module.threadpool_limits = Limiter
    monkeypatch.setitem(sys.modules, "threadpoolctl", module)
    return seen


# --------------------------------------------------------------------------------------------------------
# The group and its rows
# --------------------------------------------------------------------------------------------------------


def test_storage_is_a_group_in_the_default_set():
    assert "storage" in bench.GROUPS and bench.GROUPS == tuple(benchmarks.GROUPS)
    assert benchmarks.GROUPS["storage"] is benchmarks.storage_benchmarks


def test_default_rows_build_nothing_until_timed(temp_root):
    cases = benchmarks.make_benchmarks(["storage"])
    assert [name for name, _, _ in cases] == names(10_000, 100_000, 10_000)
    assert all(reference == "" for _, _, reference in cases)  # every peer text is written from the timings
    assert list(temp_root.iterdir()) == [] and not any(fn.pair.open for _, fn, _ in cases)
    assert [fn.per_isa for _, fn, _ in cases] == [True, True, False, False, True, True, True, True]


def test_rows_come_in_pairs_and_each_pair_removes_its_folder(temp_root):
    cases = sb.storage_benchmarks(**SMALL)
    assert [name for name, _, _ in cases] == names(40, 90, 12)
    before = kernels.active_isa()
    rows, folders = [], []
    for row in benchmarks.measure(cases, ISAS, repeats=2, target_s=1e-5):
        rows.append(row)
        folders.append(len(list(temp_root.iterdir())))
        assert kernels.active_isa() == before
    assert folders == [1, 0] * 4  # made for a pair's first row, removed after its second
    assert not any(fn.pair.open for _, fn, _ in cases)
    assert [row[0].name for row in rows] == names(40, 90, 12)
    for row in rows:
        assert [t.isa for t in row] == ISAS
        assert all(0 < t.min_ns <= t.median_ns <= t.max_ns for t in row)
    for row in rows[2:4]:  # timed once: the same figures in every column
        assert len({(t.median_ns, t.min_ns, t.max_ns) for t in row}) == 1

    peers = [row[0].reference for row in rows]
    assert all(len({t.reference for t in row}) == 1 for row in rows)
    assert peers[0] == "logging off; timed alternately with the next row"
    extras = ", ".join(rf"{isa} [+-]\d+\.\d\d us" for isa in ISAS)
    assert re.fullmatch(rf"extra: {extras} \(target \+2 us\); 0 dropped; writer idle while timed", peers[1])
    assert re.fullmatch(r"[\d,]+ decisions/s \(target 100,000/s\); flush\(\) of 12 queued requests", peers[2])
    assert re.fullmatch(r"[\d,]+ rows/s, a transaction each \(crate about 14 us a row\); "
                        r"the writer commits \d+\.\dx the rows a second", peers[3])
    ratios = ", ".join(rf"{isa} \d+\.\d\dx" for isa in ISAS)
    for i in (4, 6):
        assert peers[i] == "reads the 10 candidates from SQLite too; timed alternately with the next row"
        assert re.fullmatch(rf"search takes {ratios} NumPy's time; NumPy's BLAS .+", peers[i + 1])
    # the "extra" is the logged row's median less the unlogged row's, per ISA
    for t_off, t_on in zip(rows[0], rows[1]):
        assert f"{t_on.isa} {(t_on.median_ns - t_off.median_ns) / 1e3:+.2f} us" in peers[1]

    # every logged request was written: none dropped, none failed, none left queued
    route = cases[1][1].pair
    m = route.on.metrics()
    assert m["log_dropped"] == m["log_failed"] == m["log_pending"] == 0
    assert m["log_requests"] > 0 and m["log_written"] == 10 * m["log_requests"] == 10 * m["requests"]
    writer = cases[2][1].pair
    w = writer.log.metrics()
    assert w["log_dropped"] == w["log_failed"] == w["log_pending"] == 0
    assert w["log_requests"] == 12 * (1 + 2) and w["log_written"] == 10 * w["log_requests"]  # warm-up + 2 repeats


def test_cli_storage_group_prints_its_rows(temp_root, monkeypatch, capsys):
    monkeypatch.setitem(benchmarks.GROUPS, "storage", lambda: sb.storage_benchmarks(**SMALL))
    argv = ["bench", "--group", "storage", "--isa", "scalar", "--repeats", "1", "--seconds", "0.0001", "--no-training"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tinydancer ") and lines[1].split() == ["benchmark", "scalar", "peer"]
    assert len(lines) == 2 + 8
    for line, name in zip(lines[2:], names(40, 90, 12)):
        assert line.startswith(name)
    assert "0 dropped" in lines[3] and "decisions/s" in lines[4]
    assert list(temp_root.iterdir()) == []


def test_a_pair_that_fails_removes_its_folder(temp_root, monkeypatch):
    def broken(self, query, k):
        raise RuntimeError("search broke")

    monkeypatch.setattr(Storage, "search", broken)
    cases = sb.storage_benchmarks(sizes=(30,), requests=5, route_batch=5)[4:]
    with pytest.raises(RuntimeError, match="search broke"):
        list(benchmarks.measure(cases, ISAS[:1], repeats=1, target_s=1e-5))
    assert list(temp_root.iterdir()) == [] and not cases[0][1].pair.open


def test_each_row_can_be_called(temp_root):
    cases = sb.storage_benchmarks(sizes=(30,), requests=5, route_batch=5)
    off, on, write, record, search, peer = (fn() for _, fn, _ in cases)
    assert len(off) == len(on) == 10 and off.request_id is None and on.request_id is not None
    assert write > 0  # nanoseconds per committed decision
    assert isinstance(record, str)  # the request id record_routing returns
    assert [int(c.id[1:]) for c, _ in search] == peer.tolist()
    for _, fn, _ in cases:
        fn.pair.close()
    assert list(temp_root.iterdir()) == []


def test_drops_and_failures_are_reported():
    cases = sb.storage_benchmarks(sizes=(), requests=5, route_batch=5)
    route, writer = cases[1][1].pair, cases[2][1].pair
    route._figures["scalar"] = ((1000.0,) * 3, (1500.0,) * 3)
    route.dropped, route.failed = 3, 20
    text = route.describe_on([benchmarks.Timing("x", "scalar", 1500.0, 1500.0, 1500.0)])
    assert "scalar +0.50 us" in text and "3 requests DROPPED, 20 rows FAILED" in text
    writer.dropped = 2
    assert writer.describe_writer([benchmarks.Timing("x", "scalar", 4000.0, 4000.0, 4000.0)]).startswith(
        "250,000 decisions/s (target 100,000/s)")
    assert "2 requests DROPPED" in writer.describe_writer([benchmarks.Timing("x", "scalar", 4e3, 4e3, 4e3)])


def test_bad_sizes_are_refused(tmp_path):
    for kwargs in ({"sizes": (0,)}, {"sizes": (2.0,)}, {"requests": 0}, {"route_batch": 0}, {"route_batch": True}):
        with pytest.raises(InvalidInputError):
            sb.storage_benchmarks(**kwargs)
    with pytest.raises(InvalidInputError):
        sb.search_inputs(0)
    with pytest.raises(InvalidInputError):
        sb.writer_log(tmp_path / "w.db", 0)
    with pytest.raises(InvalidInputError):
        sb.logged_requests(tmp_path / "r.db", 0)


# --------------------------------------------------------------------------------------------------------
# NumPy's threads
# --------------------------------------------------------------------------------------------------------


def test_numpy_runs_on_one_thread_with_threadpoolctl(fake_threadpoolctl, temp_root, monkeypatch):
    inside: list[bool] = []
    top_k = sb.numpy_top_k

    def watched(normalised, query, k=10):
        inside.append(fake_threadpoolctl["inside"][0])
        return top_k(normalised, query, k)

    monkeypatch.setattr(sb, "numpy_top_k", watched)
    cases = sb.storage_benchmarks(sizes=(30,), requests=5, route_batch=5)[4:]
    rows = list(benchmarks.measure(cases, ISAS, repeats=1, target_s=1e-5))
    assert inside and all(inside)  # every NumPy call ran inside the one-thread limit
    assert fake_threadpoolctl["limits"] == [1, 1]  # entered once for each row
    assert rows[1][0].reference.endswith("NumPy's BLAS held to 1 thread")


def test_without_threadpoolctl_the_note_says_what_threads_numpy_had(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    for name in sb.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert sb._blas_note().startswith("NumPy's BLAS on its default threads, up to ")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert sb._blas_note() == "NumPy's BLAS threads as OPENBLAS_NUM_THREADS=1 sets them (no threadpoolctl)"


# --------------------------------------------------------------------------------------------------------
# The shared helpers
# --------------------------------------------------------------------------------------------------------


def test_logged_requests_queue_as_the_router_does(tmp_path):
    logged = sb.logged_requests(tmp_path / "routed.db", 3)
    assert len(logged.results) == len(logged.times_us) == 3 and len(logged.ids) == 10
    assert all(r.n == 10 and r.features is not None and r.features.shape == (10, 5) for r in logged.results)
    assert logged.threshold == RouterConfig().effective_threshold
    log = sb.writer_log(tmp_path / "writer.db", 5)
    try:
        assert logged.queue(log, 5) == 50
        m = log.metrics()
        assert m["log_pending"] == 5 and m["log_written"] == 0  # the writer sleeps until flushed
        log.flush()
        assert log.metrics()["log_written"] == 50
    finally:
        log.close()
    with sqlite3.connect(tmp_path / "writer.db") as conn:
        rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT request_id), COUNT(features), MIN(kind), MAX(kind),"
                            " SUM(fell_back) FROM routing_decisions").fetchone()
    assert rows == (50, 5, 50, "candidate", "candidate", 0)


def test_search_inputs_and_numpy_agree_with_the_search(tmp_path):
    inputs = sb.search_inputs(300)
    again = sb.search_inputs(300)
    assert inputs.embeddings.shape == inputs.normalised.shape == (300, 384) and inputs.query.shape == (384,)
    assert inputs.embeddings.dtype == inputs.normalised.dtype == inputs.query.dtype == np.float32
    assert np.array_equal(inputs.embeddings, again.embeddings) and np.array_equal(inputs.query, again.query)
    assert not np.array_equal(sb.search_inputs(300, seed=1).query, inputs.query)
    assert inputs.normalised.ctypes.data % 64 == 0 and inputs.query.ctypes.data % 64 == 0
    assert np.allclose(np.linalg.norm(inputs.normalised, axis=1), 1.0, atol=1e-6)
    assert np.isclose(np.linalg.norm(inputs.query), 1.0, atol=1e-6)
    with Storage(tmp_path / "s.db") as storage:
        sb.store_candidates(storage, inputs.embeddings)
        assert storage.get_statistics().total_candidates == 300
        found = storage.search(inputs.query, 10)
    top = sb.numpy_top_k(inputs.normalised, inputs.query, 10)
    assert [int(c.id[1:]) for c, _ in found] == top.tolist()
    assert np.allclose([s for _, s in found], inputs.normalised[top] @ inputs.query, atol=1e-5)
    few = sb.numpy_top_k(inputs.normalised[:4], inputs.query * 3.0, 10)  # k >= n, any query length
    assert sorted(few.tolist()) == [0, 1, 2, 3]
    scores = inputs.normalised[:4] @ inputs.query
    assert np.all(np.diff(scores[few]) <= 0)


# --------------------------------------------------------------------------------------------------------
# The asv suites
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def asv_storage(monkeypatch):
    """asv_bench/benchmarks/bench_storage.py, imported under its package's name."""
    monkeypatch.syspath_prepend(str(ROOT / "asv_bench"))
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    yield importlib.import_module("benchmarks.bench_storage")
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        del sys.modules[name]


def test_asv_storage_suites_keep_setup_only_for_one_call_a_sample(asv_storage):
    import inspect

    suites = {name: cls for name, cls in inspect.getmembers(asv_storage, inspect.isclass)
              if cls.__module__ == asv_storage.__name__ and any(a.startswith(("time_", "track_")) for a in dir(cls))}
    assert set(suites) == {"RouteLogging", "Writer", "RecordRouting", "Search", "SearchNumpy"}
    for name, cls in suites.items():
        assert (hasattr(cls, "setup") and getattr(cls, "number", 0) == 1) or not hasattr(cls, "setup"), name
    assert asv_storage.SIZES in ([10_000], [10_000, 100_000])


def test_asv_storage_suites_time_the_bench_calls(asv_storage, temp_root, fake_threadpoolctl):
    before = kernels.active_isa()
    isa = ISAS[0]
    suites = []
    try:
        route = asv_storage.RouteLogging()
        suites.append(route)
        route.batch = 20
        for log in ("off", "on"):
            route.setup(isa, log)
            route.time_route_batch(isa, log)
            route.setup(isa, log)  # flushes what the batch queued
        assert kernels.active_isa() == isa and route.key == (isa, "on")
        assert route.router.metrics()["log_written"] == 200 and route.router.metrics()["log_dropped"] == 0
        made = benchmarks.routing_inputs(10)
        assert np.array_equal(route.request.query_embedding, made.query)
        assert np.array_equal(route.request.candidates.embeddings, made.batch.embeddings)

        writer = asv_storage.Writer()
        suites.append(writer)
        writer.requests = 15
        writer.setup()
        assert writer.queued == 150 and writer.log.metrics()["log_written"] == 0
        writer.time_flush()
        assert writer.log.metrics()["log_written"] == 150
        writer.setup()
        assert writer.track_decisions_per_second() > 0 and writer.log.metrics()["log_written"] == 300

        record = asv_storage.RecordRouting()
        suites.append(record)
        for _ in range(3):
            record.time_record_routing()
        assert record.storage.get_statistics().total_routes == 3

        search = asv_storage.Search()
        suites.append(search)
        search.time_search(isa, 60)
        inputs = sb.search_inputs(60)
        assert np.array_equal(search.query, inputs.query) and search.storage.get_statistics().total_candidates == 60
        numpy_suite = asv_storage.SearchNumpy()
        numpy_suite.time_numpy_top_10(60)
        assert np.array_equal(numpy_suite.normalised, inputs.normalised)
        assert fake_threadpoolctl["limits"] == [1]  # NumPy held to one thread, as tinydancer bench holds it
        assert len(list(temp_root.iterdir())) == 4
    finally:
        kernels.set_isa(before)
        for suite in suites:
            suite.release()
    assert list(temp_root.iterdir()) == []
