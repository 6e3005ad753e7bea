"""The routing log of both routers (tinydancer.decision_log), end to end through the file, and its faults:
record_outcome, flush/close/exit, a full queue, a full database, threads, processes, SIGKILL, fork and bad input.

Time never decides a result here: the routers read injected clocks, and the background writer is held at its
commit by a gate (a patched ``Storage._write_decisions`` waiting on an event) wherever a test needs requests
to wait in the queue."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeClock

from tinydancer import decision_log, kernels
from tinydancer.decision_log import CANDIDATES, DecisionLog
from tinydancer.errors import InvalidInputError, StorageError, TinyDancerError
from tinydancer.features import FeatureConfig
from tinydancer.metadata import metadata_overlap
from tinydancer.model import FastGRNN, FastGRNNConfig
from tinydancer.query_router import QueryRouter
from tinydancer.router import Router, RouterConfig
from tinydancer.storage import DECISION_COLUMNS, Storage
from tinydancer.types import Candidate, CandidateBatch, RoutingRequest

NOW = 1_800_000_000.0
DIM = 16
QDIM = 384
TIMEOUT = 60.0  # seconds: only ever a deadlock detector, never a measurement
REQUEST_ID = re.compile(r"^[0-9a-f]{12}-\d+$")


# -- helpers ------------------------------------------------------------------------------------------------

def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def make_candidates(rng: np.random.Generator, n: int, prefix: str, dim: int = DIM) -> list[Candidate]:
    """Candidates with ids unique to ``prefix``, mixed metadata, created in the last day before NOW."""
    topics = ["a", "b"]
    return [Candidate(f"{prefix}-c{i}", unit(rng.standard_normal(dim)),
                      metadata={"topic": topics[int(rng.integers(0, 2))], "lang": "en"} if i % 3 else {},
                      created_at=float(NOW - rng.uniform(0, 86_400)), access_count=int(rng.integers(0, 500)),
                      success_rate=float(rng.uniform(0, 1))) for i in range(n)]


def make_request(rng: np.random.Generator, n: int, prefix: str, *, columnar: bool = False,
                 metadata: dict | None = None, dim: int = DIM) -> RoutingRequest:
    cands = make_candidates(rng, n, prefix, dim)
    query = unit(rng.standard_normal(dim))
    if columnar:
        batch = CandidateBatch([c.id for c in cands], np.array([c.embedding for c in cands]).reshape(n, dim),
                               [c.created_at for c in cands], [c.access_count for c in cands],
                               [c.success_rate for c in cands], [c.metadata for c in cands])
        return RoutingRequest(query, batch, metadata)
    return RoutingRequest(query, cands, metadata)


def request_ids_and_columns(request: RoutingRequest) -> tuple[list[str], CandidateBatch, np.ndarray | None]:
    cands = request.candidates
    if isinstance(cands, CandidateBatch):
        overlap = cands.metadata_overlap(request.metadata) if request.metadata else None
        return list(cands.ids), cands, overlap
    batch = CandidateBatch.from_candidates(cands)
    overlap = metadata_overlap(request.metadata, [c.metadata for c in cands]) if request.metadata else None
    return [c.id for c in cands], batch, overlap


def expected_features(request: RoutingRequest, now: float = NOW) -> np.ndarray:
    """The weighted features (the model's input) of every candidate, in input order, at ``now``."""
    _, batch, overlap = request_ids_and_columns(request)
    return kernels.candidate_features(request.query_embedding, batch.embeddings, batch.created_at,
                                      batch.access_count, batch.success_rate, now, metadata_overlap=overlap,
                                      embedding_norms=batch.norms, weights=FeatureConfig().kernel_weights())


def decision_rows(path: Path, where: str = "", params: tuple = ()) -> list[dict]:
    """The routing_decisions rows (a separate connection), in the order they were written."""
    conn = sqlite3.connect(path)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(f"SELECT * FROM routing_decisions {where} ORDER BY seq", params).fetchall()
        return [dict(r) for r in rows]
    finally:
        conn.close()


def scalar(path: Path, sql: str, params: tuple = ()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


def count_rows(path: Path, table: str = "routing_decisions") -> int:
    return scalar(path, f"SELECT COUNT(*) FROM {table}")


def integrity(path: Path) -> str:
    return scalar(path, "PRAGMA integrity_check")


def wait_for(condition, what: str, timeout: float = TIMEOUT) -> None:
    """Wait until ``condition()`` holds (a condition, not a guess at how long a thread takes)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        pause.wait(0.001)


class Gate:
    """Holds the background writers of the databases under ``folder`` at their commits (in this process only)
    until ``release`` is set: ``entered`` is set once a writer has taken a batch off its queue and waits here.
    It waits before the Storage's lock is taken, as a writer between two commits does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.pid = os.getpid()
        original = Storage._write_decisions
        gate = self
        mine = str(folder) + os.sep

        def write(storage: Storage, rows: list) -> None:
            # a forked child, and other tests' routers still writing, go straight through
            if os.getpid() == gate.pid and os.path.abspath(storage.path).startswith(mine):
                gate.entered.set()
                gate.release.wait(TIMEOUT)
            original(storage, rows)

        monkeypatch.setattr(Storage, "_write_decisions", write)


@pytest.fixture
def cleanup():
    """Closes what a test opened, after releasing its gates (a held writer would block close and exit)."""
    state = types.SimpleNamespace(gates=[], closers=[])
    yield state
    for gate in state.gates:
        gate.release.set()
    for close in reversed(state.closers):
        with contextlib.suppress(Exception):
            close()


@pytest.fixture
def gate(monkeypatch, cleanup, tmp_path) -> Gate:
    g = Gate(monkeypatch, tmp_path)
    cleanup.gates.append(g)
    return g


def logging_router(cleanup, path=None, *, storage: Storage | None = None, clock=None, **config) -> Router:
    r = Router(RouterConfig(database_path=None if path is None else str(path), **config),
               clock=FakeClock(NOW) if clock is None else clock, monotonic=FakeClock(0.0), storage=storage)
    cleanup.closers.append(r.close)
    return r


def query_router(cleanup, path=None) -> QueryRouter:
    qr = QueryRouter.default(database=None if path is None else str(path))
    if path is not None:
        qr._log.clock = FakeClock(NOW)  # recorded_at of query decisions comes from the log's clock
    cleanup.closers.append(qr.close)
    return qr


def queries(rng: np.random.Generator, n: int) -> np.ndarray:
    return unit(rng.standard_normal((n, QDIM)))


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # cwd outside the source tree, which would shadow the installed package
    return subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


# -- 1. the candidate router, end to end ----------------------------------------------------------------------

def test_router_logs_every_candidate_decision(tmp_path, rng, gate, cleanup, isa):
    path = tmp_path / "r.db"
    r = logging_router(cleanup, path)
    requests = [
        make_request(rng, 5, "r0"),
        make_request(rng, 4, "r1", metadata={"topic": "a"}),
        make_request(rng, 6, "r2", columnar=True),
        make_request(rng, 3, "r3", columnar=True, metadata={"topic": "b", "lang": "en"}),
        make_request(rng, 1, "r4"),
        make_request(rng, 7, "r5", metadata={"lang": "en"}),
    ]
    responses = [r.route(requests[0])]
    assert gate.entered.wait(TIMEOUT)  # the writer holds the first request: the others wait in the queue,
    responses += [r.route(q) for q in requests[1:]]  # so what is logged cannot come from a reused buffer
    empty = r.route(RoutingRequest(unit(rng.standard_normal(DIM)), []))
    empty_batch = r.route(RoutingRequest(unit(rng.standard_normal(DIM)),
                                         CandidateBatch([], np.empty((0, DIM), np.float32))))
    gate.release.set()
    r.flush()

    all_rows = decision_rows(path)
    assert len(all_rows) == sum(len(q.candidates) for q in requests)
    ids = [resp.request_id for resp in responses]
    assert all(REQUEST_ID.match(i) for i in ids) and len(set(ids)) == len(ids)
    assert set(ids) == {row["request_id"] for row in all_rows}
    for request, response in zip(requests, responses):
        rows = [row for row in all_rows if row["request_id"] == response.request_id]
        cids, _, _ = request_ids_and_columns(request)
        result = response.result
        assert [row["candidate_id"] for row in rows] == cids  # input order
        assert [row["kind"] for row in rows] == ["candidate"] * len(cids)
        assert [row["confidence"] for row in rows] == result.confidence.tolist()
        assert [row["uncertainty"] for row in rows] == result.uncertainty.tolist()
        assert [row["use_lightweight"] for row in rows] == [int(x) for x in result.lightweight.tolist()]
        by_id = {d.candidate_id: d for d in response.decisions}
        for row in rows:
            d = by_id[row["candidate_id"]]
            assert (row["confidence"], row["uncertainty"], bool(row["use_lightweight"])) == \
                (d.confidence, d.uncertainty, d.use_lightweight)
            assert row["threshold"] == r.threshold == pytest.approx(0.925)
            assert row["fell_back"] == 0
            assert row["recorded_at"] == NOW
            assert row["inference_time_us"] == response.inference_time_us
            assert (row["query_embedding"], row["embedding_dtype"], row["dim"], row["prompt_length"],
                    row["expected_gain"]) == (None, None, None, None, None)
            assert isinstance(row["features"], bytes) and len(row["features"]) == 20
        logged = np.frombuffer(b"".join(row["features"] for row in rows), "<f4").reshape(len(rows), 5)
        np.testing.assert_array_equal(logged, expected_features(request))
        # the logged features are the model's input: the model gives the logged confidences from them
        np.testing.assert_allclose(r.model.forward_batch(logged), result.confidence, atol=1e-6)
    assert any(np.frombuffer(row["features"], "<f4")[4] > 0 for row in all_rows)  # metadata overlap was logged
    for resp in (empty, empty_batch):  # an empty request gets an id and logs nothing
        assert len(resp) == 0 and REQUEST_ID.match(resp.request_id) and resp.request_id not in ids
        assert decision_rows(path, "WHERE request_id = ?", (resp.request_id,)) == []
    m = r.metrics()
    assert (m["log_written"], m["log_requests"], m["log_pending"], m["log_dropped"], m["log_failed"]) == \
        (len(all_rows), len(requests), 0, 0, 0)
    with Storage(path) as st:
        s = st.get_statistics()
        assert (s.total_routes, s.query_routes, s.fallback_routes) == (len(all_rows), 0, 0)


# A model that scores NaN from finite features (as in test_router.py): W = W1 W2 is low-rank; W2 reads
# c (-similarity + recency + success) and its negative, c = 1.5e38, so a candidate opposite to the query,
# created now, with success rate 1 gives (+inf, -inf), and W1 makes NaN of them.
FAILING_FEATURES = FeatureConfig(similarity_weight=1.0, recency_weight=1.0, success_weight=1.0)


def nan_model(tmp_path: Path) -> str:
    model = FastGRNN(FastGRNNConfig(w_rank=2), seed=0)
    w = model.weights()
    w["W2"] = np.zeros((2, 5), np.float32)
    w["W2"][0] = np.array([-1, 1, 0, 1, 0], np.float32) * np.float32(1.5e38)
    w["W2"][1] = -w["W2"][0]
    w["W1"] = np.ones((8, 2), np.float32)
    model.set_weights(w)
    path = tmp_path / "nan.safetensors"
    model.save(path)
    return str(path)


def test_fallbacks_are_logged_without_features(tmp_path, rng, cleanup):
    path = tmp_path / "r.db"
    r = logging_router(cleanup, path, model_path=nan_model(tmp_path), feature_config=FAILING_FEATURES,
                       enable_quantization=False, circuit_breaker_threshold=2)
    query = unit(rng.standard_normal(DIM))
    ids = [f"f{i}" for i in range(4)]
    opposite = [Candidate(i, -query, created_at=NOW, success_rate=1.0) for i in ids]
    responses = [r.route(RoutingRequest(query, opposite)) for _ in range(2)]  # model errors: the breaker opens
    assert all(resp.fallback_reason.startswith("model error") for resp in responses)
    assert r.circuit_breaker_status() is False
    responses.append(r.route(make_request(rng, 3, "open", columnar=True)))  # rejected by the open breaker
    assert responses[-1].fallback_reason == "circuit breaker open"
    r.flush()
    for resp in responses:
        rows = decision_rows(path, "WHERE request_id = ?", (resp.request_id,))
        assert [row["candidate_id"] for row in rows] == list(resp.candidate_ids)  # a fallback keeps input order
        assert len(rows) == len(resp) > 0
        for row in rows:
            assert (row["kind"], row["fell_back"], row["features"], row["threshold"]) == ("candidate", 1, None, None)
            assert (row["confidence"], row["uncertainty"], row["use_lightweight"]) == (0.0, 1.0, 0)
            assert row["recorded_at"] == NOW
    assert [row["candidate_id"] for row in decision_rows(path, "WHERE request_id = ?",
                                                         (responses[0].request_id,))] == ids
    with Storage(path) as st:
        assert st.get_statistics().fallback_routes == 4 + 4 + 3
    m = r.metrics()
    assert (m["fallbacks"], m["model_errors"], m["rejected_by_breaker"], m["log_written"]) == (3, 2, 1, 11)


# -- 2. the query router, end to end -------------------------------------------------------------------------

def test_query_router_logs_every_query_decision(tmp_path, rng, gate, cleanup):
    path = tmp_path / "q.db"
    qr = query_router(cleanup, path)
    E = queries(rng, 6)
    lengths = [120.0, 48.0, 900.0, 33.0, 2000.0, 250.0]
    first = qr.route(E[0].copy(), prompt_length=lengths[0])
    assert gate.entered.wait(TIMEOUT)  # held: the next decisions wait in the queue while the caller
    mine = E[1].copy()  # reuses its arrays
    second = qr.route(mine, prompt_length=lengths[1])
    mine[:] = 0.0
    block = E[2:].copy()
    block_lengths = np.array(lengths[2:])
    batch = qr.route_batch(block, prompt_length=block_lengths)
    block[:] = np.nan
    block_lengths[:] = 1.0
    gate.release.set()
    qr.flush()

    cal = qr.calibration
    rows = decision_rows(path)
    assert len(rows) == 6 and [row["kind"] for row in rows] == ["query"] * 6
    base = batch.request_ids[0].rsplit(".", 1)[0]
    assert batch.request_ids == tuple(f"{base}.{i}" for i in range(4))
    assert REQUEST_ID.match(base) and REQUEST_ID.match(first.request_id) and REQUEST_ID.match(second.request_id)
    assert [batch.decision(i).request_id for i in range(4)] == list(batch.request_ids)
    assert [row["request_id"] for row in rows] == [first.request_id, second.request_id, *batch.request_ids]
    expected = [(first.confidence, first.expected_gain, first.uncertainty, first.use_lightweight, first.threshold),
                (second.confidence, second.expected_gain, second.uncertainty, second.use_lightweight,
                 second.threshold)]
    expected += [(float(batch.confidence[i]), float(batch.expected_gain[i]), float(batch.uncertainty[i]),
                  bool(batch.use_lightweight[i]), batch.threshold) for i in range(4)]
    for i, (row, (conf, gain, unc, light, threshold)) in enumerate(zip(rows, expected)):
        assert (row["embedding_dtype"], row["dim"], row["candidate_id"], row["features"]) == ("float16", QDIM, None,
                                                                                             None)
        half = np.frombuffer(row["query_embedding"], "<f2")
        assert half.shape == (QDIM,)
        np.testing.assert_array_equal(half, E[i].astype(np.float16))  # the caller's later changes are not logged
        err = np.abs(half.astype(np.float32) - E[i])
        assert np.all(err <= np.abs(E[i]) * 2.0 ** -11 + 2.0 ** -25)  # within float16 rounding
        assert row["prompt_length"] == lengths[i]
        assert (row["confidence"], row["expected_gain"], row["uncertainty"], row["use_lightweight"]) == \
            (conf, gain, unc, int(light))
        assert row["threshold"] == threshold == cal.threshold
        assert (row["fell_back"], row["recorded_at"]) == (0, NOW)
        assert row["inference_time_us"] > 0
    m = qr.metrics()
    assert (m["log_written"], m["log_requests"], m["log_dropped"], m["log_failed"]) == (6, 3, 0, 0)
    with Storage(path) as st:
        s = st.get_statistics()
        assert (s.total_routes, s.query_routes) == (6, 6)


def test_route_text_and_route_texts_are_logged(tmp_path, cleanup):
    class FakeEmbedder:
        def embed(self, texts):
            rows = [texts] if isinstance(texts, str) else texts
            out = np.stack([unit(np.random.default_rng(len(t)).standard_normal(QDIM)) for t in rows])
            return out[0] if isinstance(texts, str) else out

    path = tmp_path / "q.db"
    qr = query_router(cleanup, path)
    texts = ["What is the capital of France?", "hi", "explain the proof of Fermat's last theorem"]
    one = qr.route_text(texts[0], embedder=FakeEmbedder())
    many = qr.route_texts(texts[1:], embedder=FakeEmbedder())
    qr.flush()
    rows = decision_rows(path)
    assert [row["request_id"] for row in rows] == [one.request_id, *many.request_ids]
    assert [row["prompt_length"] for row in rows] == [float(len(t)) for t in texts]
    for row, text in zip(rows, texts):
        np.testing.assert_array_equal(np.frombuffer(row["query_embedding"], "<f2"),
                                      FakeEmbedder().embed(text).astype(np.float16))


def test_a_database_of_another_dimension_is_refused(tmp_path, rng, cleanup):
    path = tmp_path / "q.db"
    with Storage(path) as st:
        st.insert_candidate(Candidate("c16", rng.standard_normal(16)))
    with pytest.raises(InvalidInputError, match="dimension"):
        QueryRouter.default(database=str(path))
    qr = query_router(cleanup)
    with pytest.raises(InvalidInputError, match="dimension"):
        qr.log_to(path)
    assert qr.metrics() == {}  # it does not log
    d = qr.route(queries(rng, 1)[0], prompt_length=10.0)
    assert d.request_id is None
    assert count_rows(path) == 0
    # the refused logs were closed (no writer left behind) and the file kept its data
    assert not [log for log in decision_log._LIVE if os.path.abspath(log.storage.path) == str(path)]
    with Storage(path) as st:
        assert st.get_candidate("c16") is not None
    qr.log_to(tmp_path / "other.db")  # a database of its own dimension is fine
    with pytest.raises(TinyDancerError, match="already logs"):
        qr.log_to(tmp_path / "third.db")
    assert qr.route(queries(rng, 1)[0], prompt_length=10.0).request_id is not None


# -- 3. outcomes ----------------------------------------------------------------------------------------------

def outcome_rows(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT request_id, candidate_id, good FROM outcomes ORDER BY seq").fetchall()
    finally:
        conn.close()


def test_record_outcome_through_the_candidate_router(tmp_path, rng, cleanup):
    path = tmp_path / "r.db"
    r = logging_router(cleanup, path)
    first = r.route(make_request(rng, 3, "a"))
    r.record_outcome(first.request_id, True)  # at once: the router flushes first
    second = r.route(make_request(rng, 4, "b", columnar=True))
    best = second.decisions[0].candidate_id
    r.record_outcome(second.request_id, False, candidate_id=best)
    r.record_outcome(first.request_id, False, candidate_id="a-c1")  # a later outcome for one candidate
    assert outcome_rows(path) == [(first.request_id, None, 1), (second.request_id, best, 0),
                                  (first.request_id, "a-c1", 0)]
    bad = [
        lambda: r.record_outcome("0123456789ab-99", True),  # unknown request id
        lambda: r.record_outcome(first.request_id, True, candidate_id="b-c0"),  # a candidate of another request
        lambda: r.record_outcome(second.request_id, True, candidate_id="nobody"),
        lambda: r.record_outcome(first.request_id, 1),  # not a bool
        lambda: r.record_outcome("", True),
    ]
    for call in bad:
        with pytest.raises(InvalidInputError):
            call()
    assert len(outcome_rows(path)) == 3  # nothing written
    r.close()
    with Storage(path) as st:
        labelled = st.labelled_decisions("candidate")
        assert {(row[0], row[1]): row[-1] for row in labelled} == {
            (first.request_id, "a-c0"): 1, (first.request_id, "a-c1"): 0, (first.request_id, "a-c2"): 1,
            (second.request_id, best): 0}
        assert all(len(row[2]) == 20 and row[3] == "float32" for row in labelled)
        assert st.get_statistics().outcomes == 3
    with pytest.raises(TinyDancerError):
        logging_router(cleanup).record_outcome(first.request_id, True)  # no database


def test_record_outcome_through_the_query_router(tmp_path, rng, cleanup):
    path = tmp_path / "q.db"
    qr = query_router(cleanup, path)
    E = queries(rng, 4)
    d = qr.route(E[0], prompt_length=100.0)
    qr.record_outcome(d.request_id, True)
    batch = qr.route_batch(E[1:], prompt_length=[10.0, 20.0, 30.0])
    qr.record_outcome(batch.request_ids[1], False)
    assert outcome_rows(path) == [(d.request_id, None, 1), (batch.request_ids[1], None, 0)]
    for rid in ("0123456789ab-7", batch.request_ids[0].rsplit(".", 1)[0], batch.request_ids[2] + "0"):
        with pytest.raises(InvalidInputError):
            qr.record_outcome(rid, True)
    with pytest.raises(InvalidInputError):
        qr.record_outcome(d.request_id, "yes")
    assert len(outcome_rows(path)) == 2
    with Storage(path) as st:
        labelled = st.labelled_decisions("query")
        assert [(row[0], row[3], row[4], row[-1]) for row in labelled] == [
            (d.request_id, "float16", 100.0, 1), (batch.request_ids[1], "float16", 20.0, 0)]
    qr.close()
    with pytest.raises(TinyDancerError):
        qr.record_outcome(d.request_id, True)  # closed: it logs nothing any more
    with pytest.raises(TinyDancerError):
        query_router(cleanup).record_outcome(d.request_id, True)


# -- 4. flush and close ---------------------------------------------------------------------------------------

def test_flush_commits_everything_routed_before_it(tmp_path, rng, cleanup):
    path = tmp_path / "r.db"
    r = logging_router(cleanup, path)
    requests = [make_request(rng, 4, f"q{i}", columnar=i % 2 == 0) for i in range(20)]
    for _ in range(10):
        for q in requests:
            r.route(q)
        r.flush()
        m = r.metrics()
        # committed when flush returns: a separate connection sees every row
        assert count_rows(path) == m["log_written"] == m["log_requests"] * 4
        assert m["log_pending"] == 0
    assert count_rows(path) == 10 * 20 * 4


def test_close_and_the_context_manager_flush(tmp_path, rng, cleanup):
    path = tmp_path / "r.db"
    request = make_request(rng, 3, "x")
    r = logging_router(cleanup, path)
    for _ in range(50):
        r.route(request)
    r.close()
    assert count_rows(path) == 150
    r.close()  # twice is fine
    with pytest.raises(TinyDancerError, match="closed"):
        r.route(request)
    r.flush()  # nothing to do
    with Router(RouterConfig(database_path=str(path)), clock=FakeClock(NOW)) as r2:
        for _ in range(40):
            r2.route(request)
    assert count_rows(path) == 270
    with QueryRouter.default(database=str(tmp_path / "q.db")) as qr:
        for e in queries(rng, 30):
            qr.route(e, prompt_length=50.0)
    assert count_rows(tmp_path / "q.db") == 30
    qr.close()  # twice is fine; the router still routes, without logging
    assert qr.route(queries(rng, 1)[0], prompt_length=5.0).request_id is None
    assert count_rows(tmp_path / "q.db") == 30


def test_a_closed_log_refuses_puts(tmp_path):
    log = DecisionLog(tmp_path / "r.db")
    rid = log.new_id()
    assert REQUEST_ID.match(rid)
    log.close()
    assert log.closed and log.storage.closed  # it opened the Storage, so it closed it
    with pytest.raises(StorageError, match="closed"):
        log.put((CANDIDATES, rid, ["c"], None, False, None, 1.0, NOW))
    log.flush()  # nothing to do
    log.close()  # twice is fine


def test_a_shared_storage_is_flushed_and_left_open(tmp_path, rng, cleanup):
    path = tmp_path / "r.db"
    st = Storage(path)
    cleanup.closers.append(st.close)
    r1 = logging_router(cleanup, storage=st)
    r2 = logging_router(cleanup, storage=st)
    for i in range(30):
        r1.route(make_request(rng, 2, f"one{i}"))
        r2.route(make_request(rng, 3, f"two{i}", columnar=True))
    st.flush()  # flushes both routers' logs
    assert count_rows(path) == 30 * 5
    r1.route(make_request(rng, 2, "last"))
    r1.close()
    assert not st.closed and st.get_statistics().total_routes == 30 * 5 + 2
    r2.route(make_request(rng, 3, "last2"))
    st.close()  # closing the Storage flushes the logs still writing to it
    assert count_rows(path) == 30 * 5 + 5


# -- 5. interpreter exit --------------------------------------------------------------------------------------

EXITING = textwrap.dedent("""
    import sys
    import numpy as np
    from tinydancer.query_router import QueryRouter
    from tinydancer.router import Router, RouterConfig
    from tinydancer.types import CandidateBatch, RoutingRequest

    rng = np.random.default_rng(0)
    r = Router(RouterConfig(database_path=sys.argv[1]))
    batch = CandidateBatch([f"c{i}" for i in range(8)], rng.standard_normal((8, 16)))
    for i in range(3000):
        last = r.route(RoutingRequest(rng.standard_normal(16), batch)).request_id
    qr = QueryRouter.default(database=sys.argv[1])
    E = rng.standard_normal((500, 384)).astype(np.float32)
    for e in E:
        qr.route(e, prompt_length=100.0)
    print(last)
    # no close(), no flush(): exit flushes
""")


def test_interpreter_exit_flushes(tmp_path):
    path = tmp_path / "r.db"
    done = run_script(EXITING, str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip()
    assert REQUEST_ID.match(last) and last.endswith("-2999")
    assert scalar(path, "SELECT COUNT(*) FROM routing_decisions WHERE kind = 'candidate'") == 3000 * 8
    assert scalar(path, "SELECT COUNT(*) FROM routing_decisions WHERE kind = 'query'") == 500
    assert scalar(path, "SELECT COUNT(*) FROM routing_decisions WHERE request_id = ?", (last,)) == 8
    assert "could not" not in done.stderr


# -- 6. a full queue ------------------------------------------------------------------------------------------

def test_a_full_queue_drops_and_counts_without_blocking(tmp_path, rng, gate, cleanup, caplog):
    path = tmp_path / "r.db"
    r = logging_router(cleanup, path, log_queue_size=4)
    request = make_request(rng, 3, "x", columnar=True)
    first = r.route(request)
    assert gate.entered.wait(TIMEOUT)  # the writer is stuck at its commit with the first request
    responses = []

    def burst() -> None:
        for _ in range(40):
            responses.append(r.route(request))

    caplog.set_level(logging.WARNING, logger="tinydancer.decision_log")
    worker = threading.Thread(target=burst)
    worker.start()
    worker.join(TIMEOUT)
    stuck = worker.is_alive()
    gate.release.set()
    assert not stuck, "route() blocked on a full log queue with log_full_wait=0"
    assert len(responses) == 40 and all(not resp.fell_back and len(resp) == 3 for resp in responses)
    m = r.metrics()
    assert (m["log_dropped"], m["log_failed"]) == (36, 0)  # 4 fit in the queue
    drops = [rec for rec in caplog.records if "queue is full" in rec.getMessage()]
    assert len(drops) == 1  # one warning, not one per drop
    r.flush()
    assert count_rows(path) == (41 - 36) * 3
    logged = {row["request_id"] for row in decision_rows(path)}
    assert logged == {first.request_id, *(resp.request_id for resp in responses[:4])}
    assert all(resp.request_id is None for resp in responses[4:])  # dropped: no id to report outcomes under
    assert r.metrics()["log_dropped"] == 36


def test_a_full_queue_waits_for_room_with_log_full_wait(tmp_path, rng, gate, cleanup, monkeypatch):
    path = tmp_path / "r.db"
    r = logging_router(cleanup, path, log_queue_size=2, log_full_wait=TIMEOUT)
    waiting = threading.Event()

    def sleep(seconds: float) -> None:  # route() is waiting for room in the full queue
        waiting.set()
        time.sleep(seconds)

    monkeypatch.setattr(decision_log, "time",
                        types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep, time=time.time))
    request = make_request(rng, 2, "w")
    r.route(request)
    assert gate.entered.wait(TIMEOUT)
    r.route(request)
    r.route(request)  # the queue is full now

    def make_room() -> None:
        if waiting.wait(TIMEOUT):
            gate.release.set()

    helper = threading.Thread(target=make_room)
    helper.start()
    for _ in range(10):
        r.route(request)  # waits for the writer to make room instead of dropping
    helper.join(TIMEOUT)
    assert waiting.is_set() and gate.release.is_set()
    r.flush()
    assert r.metrics()["log_dropped"] == 0
    assert count_rows(path) == 13 * 2


# -- 7. a full database ---------------------------------------------------------------------------------------

def fill_up(r: Router) -> None:
    """Simulate a full disk: no page may be added to the router's log database."""
    st = r._log.storage
    with st._lock:
        pages = st._conn.execute("PRAGMA page_count").fetchone()[0]
        st._conn.execute(f"PRAGMA max_page_count = {pages}")


def make_room_on_disk(r: Router) -> None:
    st = r._log.storage
    with st._lock:
        st._conn.execute("PRAGMA max_page_count = 1073741823")


def test_a_full_database_counts_failures_and_keeps_earlier_commits(tmp_path, rng, gate, cleanup):
    path = tmp_path / "r.db"
    r = logging_router(cleanup, path)
    gate.release.set()  # open for the first commits
    request = make_request(rng, 20, "big", columnar=True)
    for _ in range(5):
        r.route(request)
    r.flush()
    before = count_rows(path)
    written = r.metrics()["log_written"]
    assert before == written == 100
    fill_up(r)
    gate.release.clear()
    gate.entered.clear()
    responses = [r.route(request)]
    assert gate.entered.wait(TIMEOUT)
    responses += [r.route(request) for _ in range(30)]
    outcome: dict[str, BaseException | None] = {}

    def flusher() -> None:
        try:
            r.flush()
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome["error"] = exc
        else:
            outcome["error"] = None

    worker = threading.Thread(target=flusher)
    worker.start()
    wait_for(lambda: r.metrics()["log_pending"] == 31, "the flush to queue its marker")  # 30 requests + marker
    gate.release.set()  # the writes fail while flush() waits for them
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    error = outcome["error"]
    assert isinstance(error, StorageError), error
    assert "could not be written" in str(error) and "StorageFullError" in str(error)
    m = r.metrics()
    assert m["log_failed"] > 0 and m["log_last_error"].startswith("StorageFullError")
    assert m["log_failed"] + (m["log_written"] - written) == 31 * 20  # every row committed or counted
    assert count_rows(path) == before + (m["log_written"] - written)  # earlier commits kept
    # routing itself goes on
    assert all(not resp.fell_back and len(resp) == 20 for resp in responses)
    assert not r.route(request).fell_back and r.circuit_breaker_status() is True
    make_room_on_disk(r)
    with contextlib.suppress(StorageError):
        r.flush()  # the request routed just above may or may not have failed
    committed = count_rows(path)
    ok = [r.route(request).request_id for _ in range(3)]
    r.flush()  # nothing refused since: no error
    assert count_rows(path) == committed + 60
    assert all(len(decision_rows(path, "WHERE request_id = ?", (rid,))) == 20 for rid in ok)
    r.close()
    assert integrity(path) == "ok"


def test_flush_reports_failures_that_happened_before_it(tmp_path, rng, cleanup):
    """The docs: rows the database refuses "make the next flush() raise" ("since the previous flush").
    Here the writer's failure is certainly over before flush() is called."""
    path = tmp_path / "r.db"
    r = logging_router(cleanup, path)
    request = make_request(rng, 20, "big", columnar=True)
    r.route(request)
    r.flush()
    fill_up(r)
    failed = threading.Event()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "could not be written" in record.getMessage():
                failed.set()

    spy = Spy()
    logger = logging.getLogger("tinydancer.decision_log")
    logger.addHandler(spy)
    try:
        for _ in range(30):
            r.route(request)
        assert failed.wait(TIMEOUT)  # the writer has counted the refused rows
        assert r.metrics()["log_failed"] > 0
        with pytest.raises(StorageError, match="could not be written"):
            r.flush()
        r.flush()  # reported once: nothing new since
    finally:
        logger.removeHandler(spy)
        make_room_on_disk(r)


# -- 8. threads -----------------------------------------------------------------------------------------------

def _route_in_threads(routers: list[Router], rng: np.random.Generator, threads: int, each: int,
                      n: int) -> list[str]:
    requests = [make_request(rng, n, f"t{i}", columnar=i % 2 == 1, metadata={"topic": "a"} if i % 3 else None)
                for i in range(8)]
    ids: list[list[str]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            start.wait(TIMEOUT)
            router = routers[t % len(routers)]
            for i in range(each):
                ids[t].append(router.route(requests[(t + i) % len(requests)]).request_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(TIMEOUT)
    assert not any(w.is_alive() for w in workers)
    assert errors == []
    return [i for chunk in ids for i in chunk]


def test_threads_route_with_one_logging_router(tmp_path, rng, cleanup):
    path = tmp_path / "r.db"
    r = logging_router(cleanup, path)
    threads, each, n = 4, 300, 5
    ids = _route_in_threads([r], rng, threads, each, n)
    r.flush()
    assert len(ids) == len(set(ids)) == threads * each
    assert count_rows(path) == threads * each * n
    per_request = dict(sqlite3.connect(path).execute(
        "SELECT request_id, COUNT(*) FROM routing_decisions GROUP BY request_id").fetchall())
    assert set(per_request) == set(ids) and set(per_request.values()) == {n}
    m = r.metrics()
    assert (m["requests"], m["log_requests"], m["log_dropped"], m["log_failed"]) == (1200, 1200, 0, 0)


def test_threads_route_with_two_routers_sharing_a_storage(tmp_path, rng, cleanup):
    path = tmp_path / "r.db"
    st = Storage(path)
    cleanup.closers.append(st.close)
    routers = [logging_router(cleanup, storage=st), logging_router(cleanup, storage=st)]
    threads, each, n = 4, 250, 4
    ids = _route_in_threads(routers, rng, threads, each, n)
    st.flush()
    assert len(ids) == len(set(ids)) == threads * each
    assert count_rows(path) == threads * each * n
    assert scalar(path, "SELECT COUNT(DISTINCT request_id) FROM routing_decisions") == threads * each
    assert sum(r.metrics()["log_written"] for r in routers) == threads * each * n


# -- 9. processes ---------------------------------------------------------------------------------------------

PROCESS_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from tinydancer.router import Router, RouterConfig
    from tinydancer.types import Candidate, CandidateBatch, RoutingRequest

    path, worker, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(worker)
    r = Router(RouterConfig(database_path=path))
    for i in range(k):
        ids = [f"w{worker}-{i}-{j}" for j in range(5)]
        if i % 2:
            candidates = CandidateBatch(ids, rng.standard_normal((5, 16)))
        else:
            candidates = [Candidate(c, rng.standard_normal(16)) for c in ids]
        r.route(RoutingRequest(rng.standard_normal(16), candidates))
    r.close()
""")


def test_processes_log_to_one_file(tmp_path):
    path = tmp_path / "r.db"
    Storage(path).close()  # set up once
    k = 400
    procs = [subprocess.Popen([sys.executable, "-c", PROCESS_WRITER, str(path), str(w), str(k)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert count_rows(path) == 3 * k * 5
    assert scalar(path, "SELECT COUNT(DISTINCT request_id) FROM routing_decisions") == 3 * k
    assert scalar(path, "SELECT COUNT(DISTINCT candidate_id) FROM routing_decisions") == 3 * k * 5
    assert integrity(path) == "ok"


# -- 10. SIGKILL ----------------------------------------------------------------------------------------------

KILLED = textwrap.dedent("""
    import sys
    import numpy as np
    from tinydancer.router import Router, RouterConfig
    from tinydancer.types import Candidate, RoutingRequest

    rng = np.random.default_rng(0)
    r = Router(RouterConfig(database_path=sys.argv[1]))
    n = 0
    while True:
        for _ in range(25):
            cands = [Candidate(f"c{j}", rng.standard_normal(16)) for j in range(5)]
            last = r.route(RoutingRequest(rng.standard_normal(16), cands)).request_id
            n += 1
        r.flush()
        print("flushed", n, last, flush=True)
""")


def test_a_killed_router_loses_no_flushed_decision(tmp_path):
    path = tmp_path / "r.db"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    acknowledged, last = 0, None
    try:
        for line in proc.stdout:
            word, n, last = line.split()
            assert word == "flushed"
            acknowledged = int(n)
            if acknowledged >= 25 * 20:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert acknowledged >= 500 and last.endswith(f"-{acknowledged - 1}")
    assert integrity(path) == "ok"
    prefix = last.rsplit("-", 1)[0]
    conn = sqlite3.connect(path)
    try:
        per_request = dict(conn.execute("SELECT request_id, COUNT(*) FROM routing_decisions GROUP BY request_id"))
    finally:
        conn.close()
    assert all(per_request.get(f"{prefix}-{i}") == 5 for i in range(acknowledged))  # every acknowledged one
    assert set(per_request.values()) == {5}  # and no request half-written
    with Storage(path) as st:
        assert st.get_statistics().total_routes == 5 * len(per_request) >= 5 * acknowledged


# -- 11. fork -------------------------------------------------------------------------------------------------

def _in_child(work) -> None:
    """Run ``work()`` in the forked child and leave with its code (never returning into pytest)."""
    code = 99
    try:
        code = work()
    except BaseException:  # noqa: BLE001 - the child reports by its code
        code = 98
    finally:
        os._exit(code)


def _wait_child(pid: int, read_fd: int, timeout: float = TIMEOUT) -> tuple[bytes | None, int | None]:
    """The child's report through the pipe and its exit code; (None, None) when it hung (then it is killed)."""
    ready, _, _ = select.select([read_fd], [], [], timeout)
    if not ready:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)
        return None, None
    report = os.read(read_fd, 1000)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    return report, os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_logs_on_its_own_connection(tmp_path, rng, gate, cleanup):
    """After fork() the child's log starts empty, on a connection of its own, numbering its requests under a
    prefix of its own: the parent's queued decisions are written once (by the parent), and no request id is
    given out by both processes."""
    path = tmp_path / "r.db"
    r = logging_router(cleanup, path)
    request = make_request(rng, 3, "f")
    parent_ids = [r.route(request).request_id]
    assert gate.entered.wait(TIMEOUT)  # held outside the Storage's lock: the fork is safe
    parent_ids += [r.route(request).request_id for _ in range(2)]  # queued, not flushed
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        def child() -> int:
            os.close(read_fd)
            ids = [r.route(request).request_id for _ in range(4)]
            r.flush()
            found = scalar(path, "SELECT COUNT(*) FROM routing_decisions")  # the child's own rows only
            os.write(write_fd, " ".join([str(found), *ids]).encode())
            return 0
        _in_child(child)
    os.close(write_fd)
    report, code = _wait_child(pid, read_fd)
    assert report is not None, "the child hung"
    assert code == 0
    found, *child_ids = report.decode().split()
    assert int(found) == 4 * 3  # the child committed its own rows, and not the parent's queued ones
    gate.release.set()
    r.flush()
    rows = decision_rows(path)
    assert len(rows) == (3 + 4) * 3
    assert len({(row["request_id"], row["candidate_id"]) for row in rows}) == len(rows)  # nothing twice
    assert {row["request_id"] for row in rows} == set(parent_ids) | set(child_ids)
    parent_ids += [r.route(request).request_id for _ in range(2)]  # the parent goes on logging
    r.flush()
    assert count_rows(path) == 9 * 3
    # Request ids stay unique across the fork: the child numbers its requests under a prefix of its own
    # (from its very first request), so none of them can be an id the parent gives out too.
    assert not set(child_ids) & set(parent_ids), "the child reused request ids of the parent"
    parent_prefix = parent_ids[0].rsplit("-", 1)[0]
    assert all(rid.rsplit("-", 1)[0] != parent_prefix for rid in child_ids), child_ids
    per_request = dict(sqlite3.connect(path).execute(
        "SELECT request_id, COUNT(*) FROM routing_decisions GROUP BY request_id").fetchall())
    assert set(per_request.values()) == {3}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_cannot_log_to_the_parents_storage(tmp_path, rng, cleanup):
    path = tmp_path / "r.db"
    st = Storage(path)
    cleanup.closers.append(st.close)
    r = logging_router(cleanup, storage=st)
    request = make_request(rng, 3, "s")
    r.route(request)
    r.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        def child() -> int:
            os.close(read_fd)
            try:
                r.route(request)
            except StorageError as exc:
                os.write(write_fd, str(exc).encode())
                return 0
            os.write(write_fd, b"no error")
            return 1
        _in_child(child)
    os.close(write_fd)
    report, code = _wait_child(pid, read_fd)
    assert report is not None, "the child hung"
    assert code == 0, report
    assert b"fork()" in report and b"Storage" in report
    r.route(request)  # the parent's log and Storage are untouched
    r.flush()
    assert count_rows(path) == 6


HOLDER = textwrap.dedent("""
    import sqlite3
    import sys

    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("ROLLBACK")
    print("released", flush=True)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_fork_during_a_commit_waits_for_it(tmp_path, rng, cleanup):
    """fork() while the writer is inside SQLite (another process holds the database's write lock, so the
    writer is waiting out the busy timeout in its commit) waits for that commit to end: a child forked while a
    thread held one of SQLite's mutexes would wait on it forever. The child then logs on its own connection,
    and nothing of either process is lost."""
    path = tmp_path / "r.db"
    r = logging_router(cleanup, path)
    request = make_request(rng, 3, "d")
    r.route(request)
    r.flush()
    st = r._log.storage
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=tmp_path, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)

    def release() -> None:
        holder.stdin.write("go\n")
        holder.stdin.flush()

    releaser = threading.Timer(0.3, release)  # while the fork below waits for the commit
    try:
        assert holder.stdout.readline().strip() == "locked"
        r.route(request)

        def writer_holds_the_lock() -> bool:
            if st._lock.acquire(blocking=False):
                st._lock.release()
                return False
            return True

        wait_for(writer_holds_the_lock, "the writer to start its commit")
        read_fd, write_fd = os.pipe()
        releaser.start()
        pid = os.fork()
        if pid == 0:
            def child() -> int:
                os.close(read_fd)
                r.route(request)
                r.flush()
                os.write(write_fd, b"ok")
                return 0
            _in_child(child)
        os.close(write_fd)
        assert holder.stdout.readline().strip() == "released"
        report, code = _wait_child(pid, read_fd)
    finally:
        releaser.cancel()
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()
    assert report == b"ok", "the forked child hung"
    assert code == 0
    r.flush()
    assert r.metrics()["log_failed"] == 0
    assert count_rows(path) == 3 * 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_childs_commits_survive_the_parent_closing_the_file(tmp_path, rng, cleanup):
    """The child's connection holds locks of its own on the file, so the parent, closing the database while
    the child still logs to it, cannot take the child's WAL away: a commit of the child survives the child
    being killed before it closes."""
    path = tmp_path / "r.db"
    r = logging_router(cleanup, path)
    request = make_request(rng, 3, "p")
    r.route(request)
    r.flush()
    read_fd, write_fd = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        def child() -> int:
            os.close(read_fd)
            r.route(request)
            r.flush()
            os.write(write_fd, b"1")
            os.read(go_read, 1)  # the parent has closed the database meanwhile
            r.route(request)
            r.flush()
            os.write(write_fd, b"2")
            return 0  # killed, as it were: no close, no checkpoint
        _in_child(child)
    os.close(write_fd)
    os.close(go_read)
    ready, _, _ = select.select([read_fd], [], [], TIMEOUT)
    assert ready and os.read(read_fd, 1) == b"1"
    r.close()
    os.write(go_write, b"g")
    os.close(go_write)
    report, code = _wait_child(pid, read_fd)
    assert report == b"2" and code == 0
    assert count_rows(path) == 3 * 3, "a commit of the child was lost when the parent closed the database"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_two_threads_forking_at_once(tmp_path, cleanup):
    """fork() holds every Storage's lock until it returns in the parent; two threads forking at once take
    turns, each child opens the files on its own, and the parent's Storages are left with no lock held."""
    paths = [tmp_path / "a.db", tmp_path / "b.db"]
    stores = [Storage(p) for p in paths]
    cleanup.closers.extend(st.close for st in stores)
    q = np.ones(DIM, np.float32)
    for st in stores:
        st.record_routing("parent", q, 0.5, True, 0.1, 1.0)
    results: list[tuple[bytes | None, int | None]] = []
    barrier = threading.Barrier(2)

    def fork_once() -> None:
        read_fd, write_fd = os.pipe()
        barrier.wait()
        pid = os.fork()
        if pid == 0:
            def child() -> int:
                os.close(read_fd)
                for p in paths:
                    with Storage(p) as own:
                        own.record_routing("child", q, 0.5, True, 0.1, 1.0)
                os.write(write_fd, b"ok")
                return 0
            _in_child(child)
        os.close(write_fd)
        results.append(_wait_child(pid, read_fd))

    threads = [threading.Thread(target=fork_once) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert results == [(b"ok", 0)] * 2
    for st, p in zip(stores, paths):
        writer = threading.Thread(target=st.record_routing, args=("parent", q, 0.5, True, 0.1, 1.0))
        writer.start()
        writer.join(TIMEOUT)
        assert not writer.is_alive(), "a lock taken for fork() was left held in the parent"
        assert count_rows(p) == 4


# -- 12. bad input writes nothing -----------------------------------------------------------------------------

def test_bad_input_writes_nothing(tmp_path, rng, cleanup):
    path = tmp_path / "r.db"
    r = logging_router(cleanup, path)
    r.route(make_request(rng, 3, "ok"))
    r.flush()
    bad = make_request(rng, 3, "nan")
    bad.query_embedding[1] = np.nan
    wrong_dim = make_request(rng, 3, "dim")
    wrong_dim.candidates[2].embedding = np.ones(DIM + 1, np.float32)
    future = make_request(rng, 2, "future")
    future.candidates[0].created_at = NOW * 1000  # milliseconds
    for request in (bad, wrong_dim, future):
        with pytest.raises(InvalidInputError):
            r.route(request)
    r.flush()
    assert count_rows(path) == 3
    m = r.metrics()
    assert (m["invalid_requests"], m["log_requests"], m["log_written"], m["log_failed"]) == (3, 1, 3, 0)

    qpath = tmp_path / "q.db"
    qr = query_router(cleanup, qpath)
    e = queries(rng, 3)
    nan = e[0].copy()
    nan[5] = np.nan
    E = e.copy()
    E[2, 0] = np.inf
    calls = [
        lambda: qr.route(nan, prompt_length=10.0),
        lambda: qr.route(e[0][:100], prompt_length=10.0),
        lambda: qr.route(e[0]),  # the default model needs the prompt length
        lambda: qr.route(e[0], prompt_length=-1.0),
        lambda: qr.route_batch(E, prompt_length=[1.0, 2.0, 3.0]),
        lambda: qr.route_batch(e, prompt_length=[1.0, 2.0]),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError):
            call()
    qr.flush()
    assert count_rows(qpath) == 0
    assert qr.metrics()["log_requests"] == 0
    qr.route(e[1], prompt_length=10.0)
    qr.flush()
    assert count_rows(qpath) == 1


def test_the_decision_columns_are_the_table_columns(tmp_path):
    with Storage(tmp_path / "r.db"):
        pass
    conn = sqlite3.connect(tmp_path / "r.db")
    try:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(routing_decisions)")]
    finally:
        conn.close()
    assert columns == ["seq", *DECISION_COLUMNS]
