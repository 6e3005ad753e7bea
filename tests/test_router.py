from __future__ import annotations

import os
import pickle
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import FakeClock
from tinydancer import kernels
from tinydancer.errors import (ConfigError, InvalidInputError, ModelError, ModelFormatError, ModelSchemaError,
                               ModelValueError, TinyDancerError)
from tinydancer.features import FeatureConfig
from tinydancer.model import FastGRNN, FastGRNNConfig
from tinydancer.router import MODEL_FAILURES, Router, RouterConfig, default_model_path
from tinydancer.types import Candidate, CandidateBatch, RoutingDecision, RoutingRequest

NOW = 1_800_000_000.0


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def make_request(rng: np.random.Generator, n: int, dim: int = 384, columnar: bool = False,
                 metadata: dict | None = None) -> RoutingRequest:
    query = unit(rng.standard_normal(dim))
    emb = unit(rng.standard_normal((n, dim)))
    created = NOW - rng.uniform(0, 1e5, n)
    counts = rng.integers(0, 1000, n)
    success = rng.uniform(0, 1, n).astype(np.float32)
    ids = [f"c{i}" for i in range(n)]
    if columnar:
        return RoutingRequest(query, CandidateBatch(ids, emb, created, counts, success), metadata)
    cands = [Candidate(id=ids[i], embedding=emb[i], created_at=float(created[i]), access_count=int(counts[i]),
                       success_rate=float(success[i])) for i in range(n)]
    return RoutingRequest(query, cands, metadata)


def router(**kwargs) -> Router:
    clock = kwargs.pop("clock", FakeClock(NOW))
    monotonic = kwargs.pop("monotonic", FakeClock(0.0))
    return Router(RouterConfig(**kwargs), clock=clock, monotonic=monotonic)


def expected_confidences(r: Router, request: RoutingRequest) -> np.ndarray:
    batch = request.candidates if isinstance(request.candidates, CandidateBatch) else \
        CandidateBatch.from_candidates(request.candidates)
    feats = kernels.candidate_features(request.query_embedding, batch.embeddings, batch.created_at,
                                       batch.access_count, batch.success_rate, NOW)
    return r.model.forward_batch(feats)


@pytest.mark.parametrize("columnar", [False, True])
@pytest.mark.parametrize("n", [1, 3, 10, 50, 100])
def test_route_scores_sorts_and_decides(isa, rng, columnar, n):
    r = router(confidence_threshold=0.5, max_uncertainty=0.9)
    request = make_request(rng, n, columnar=columnar)
    response = r.route(request)
    conf = expected_confidences(r, request)
    assert response.candidates_processed == n and len(response) == n and not response.fell_back
    order = np.argsort(-conf, kind="stable")
    assert [d.candidate_id for d in response.decisions] == [f"c{i}" for i in order]
    for d in response.decisions:
        assert isinstance(d, RoutingDecision)
        i = int(d.candidate_id[1:])
        assert d.confidence == pytest.approx(float(conf[i]), abs=1e-6)
        assert d.uncertainty == pytest.approx(min(max(1 - 2 * abs(d.confidence - 0.5), 0.0), 1.0), abs=1e-6)
        assert d.use_lightweight == (d.confidence >= 0.5 and d.uncertainty <= 0.9)
    confidences = [d.confidence for d in response.decisions]
    assert confidences == sorted(confidences, reverse=True)
    assert response.inference_time_us > 0


def test_feature_time_and_pickled_responses(rng):
    r = router()
    columnar = r.route(make_request(rng, 20, columnar=True))
    assert columnar.feature_time_us == 0.0  # nothing to gather
    for request in (make_request(rng, 20), make_request(rng, 20, columnar=True, metadata={"topic": "a"})):
        response = r.route(request)
        assert 0.0 < response.feature_time_us < response.inference_time_us
    for response in (columnar, r.route(make_request(rng, 0, columnar=True))):
        clone = pickle.loads(pickle.dumps(response))
        assert type(clone) is type(response) and clone.to_dict() == response.to_dict()
        np.testing.assert_array_equal(clone.order, response.order)
        assert clone.lightweight_count == response.lightweight_count


def test_a_clock_that_returns_no_number_is_a_config_error(rng):
    r = router(clock=lambda: "noon")
    with pytest.raises(ConfigError, match=r"the clock.s reading \(unix seconds\) must be a real number, got str"):
        r.route(make_request(rng, 3, columnar=True))
    assert r.circuit_breaker_status() is True and r.metrics()["model_errors"] == 0
    r = router(clock=lambda: float("nan"))
    with pytest.raises(ConfigError, match=r"the clock.s reading \(unix seconds\) must be finite, got nan"):
        r.route(make_request(rng, 3, columnar=True))
    assert r.metrics()["invalid_requests"] == 0


def test_default_router_uses_the_shipped_model_sensibly(rng):
    """A candidate identical to the query, fresh and successful, ranks above unrelated ones."""
    r = Router.default()
    assert Path(default_model_path()).is_file()
    assert r.model.is_quantized  # enable_quantization is the default
    query = unit(rng.standard_normal(384))
    now = time.time()
    same = Candidate(id="same", embedding=query, created_at=now, access_count=5000, success_rate=0.95)
    others = [Candidate(id=f"u{i}", embedding=unit(rng.standard_normal(384)), created_at=now - 86400 * 30,
                        access_count=3, success_rate=0.3) for i in range(20)]
    response = r.route(RoutingRequest(query, others[:10] + [same] + others[10:]))
    top = response.decisions[0]
    assert top.candidate_id == "same" and top.confidence > 0.85
    assert all(d.confidence < 0.5 for d in response.decisions[1:])


def test_shipped_model_reproduces_the_weighted_score(rng):
    r = router(enable_quantization=False)
    request = make_request(rng, 200, columnar=True)
    b = request.candidates
    feats = kernels.candidate_features(request.query_embedding, b.embeddings, b.created_at, b.access_count,
                                       b.success_rate, NOW)
    target = np.clip(feats.astype(np.float64).sum(axis=1), 0, 1)
    conf = np.array([d.confidence for d in sorted(r.route(request).decisions, key=lambda d: int(d.candidate_id[1:]))])
    assert np.abs(conf - target).mean() < 0.01


def test_list_and_batch_paths_agree(rng):
    r = router()
    listed = make_request(rng, 30)
    columnar = RoutingRequest(listed.query_embedding, CandidateBatch.from_candidates(listed.candidates))
    a, b = r.route(listed), r.route(columnar)
    assert [d.candidate_id for d in a.decisions] == [d.candidate_id for d in b.decisions]
    np.testing.assert_array_equal(a.confidences, b.confidences)


def test_metadata_overlap_counts(rng):
    r = router(enable_quantization=False)
    query = unit(rng.standard_normal(16))
    emb = unit(rng.standard_normal((2, 16)))
    a = Candidate(id="a", embedding=emb[0], metadata={"topic": "x", "user": 1}, created_at=NOW)
    b = Candidate(id="b", embedding=emb[0], metadata={"topic": "y"}, created_at=NOW)
    response = r.route(RoutingRequest(query, [a, b], metadata={"topic": "x", "user": 1}))
    conf = {d.candidate_id: d.confidence for d in response.decisions}
    assert conf["a"] > conf["b"]  # a full metadata match adds 0.1 to the weighted score


def test_empty_candidate_list(rng):
    r = router()
    for candidates in ([], CandidateBatch([], np.zeros((0, 8), np.float32), [], [], [])):
        response = r.route(RoutingRequest(unit(rng.standard_normal(8)), candidates))
        assert len(response) == 0 and response.decisions == [] and not response.fell_back


def test_ten_thousand_candidates(rng):
    r = router()
    response = r.route(make_request(rng, 10_000, dim=64, columnar=True))
    assert response.candidates_processed == 10_000
    conf = response.confidences
    assert np.all(np.diff(conf) <= 0)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda req: req.query_embedding.__setitem__(3, np.nan), "query"),
        (lambda req: req.candidates[1].embedding.__setitem__(0, np.inf), r"candidates\[1\]|embeddings"),
        (lambda req: setattr(req.candidates[0], "embedding", np.ones(7, np.float32)), r"candidates\[0\]|embedding"),
        (lambda req: setattr(req.candidates[2], "access_count", -1), r"access_count"),
        (lambda req: setattr(req.candidates[2], "success_rate", 1.5), r"success_rate"),
    ],
)
def test_bad_input_raises_and_does_not_count_against_the_breaker(rng, mutate, match):
    r = router(circuit_breaker_threshold=1)
    request = make_request(rng, 4, dim=16)
    mutate(request)
    with pytest.raises(InvalidInputError, match=match):
        r.route(request)
    assert r.circuit_breaker_status() is True
    assert r.metrics()["invalid_requests"] == 1


def test_not_a_request():
    with pytest.raises(InvalidInputError, match="RoutingRequest"):
        router().route({"query_embedding": [1.0]})


# A real model failure: a candidate model that scores NaN from finite features. W = W1 W2 is low-rank; W2
# reads c (-similarity + recency + success) and its negative, with c = 1.5e38, so a candidate opposite to
# the query, created now, with success rate 1 gives W2 x = (+inf, -inf) (3c overflows float32), and the two
# meet in W1 (W2 x) as NaN on every ISA. The router's smoke probes reach at most 2c and pass. The same model
# with W2 = 0 is the healthy one.
FAILING_FEATURES = FeatureConfig(similarity_weight=1.0, recency_weight=1.0, success_weight=1.0)


def low_rank_model(tmp_path: Path, name: str, healthy: bool, scale: float = 1.5e38) -> str:
    model = FastGRNN(FastGRNNConfig(w_rank=2), seed=0)
    w = model.weights()
    w["W2"] = np.zeros((2, 5), np.float32)
    if not healthy:
        w["W2"][0] = np.array([-1, 1, 0, 1, 0], np.float32) * np.float32(scale)
        w["W2"][1] = -w["W2"][0]
    w["W1"] = np.ones((8, 2), np.float32)
    model.set_weights(w)
    path = tmp_path / name
    model.save(path)
    return str(path)


def failing_router(tmp_path: Path, **kwargs) -> tuple[Router, str, str]:
    """A router serving the failing model, with the paths of the failing and the healthy model."""
    bad, good = low_rank_model(tmp_path, "nan.safetensors", False), low_rank_model(tmp_path, "ok.safetensors", True)
    r = router(model_path=bad, feature_config=FAILING_FEATURES, enable_quantization=False, **kwargs)
    return r, bad, good


def fresh_request(rng: np.random.Generator, n: int, columnar: bool = False) -> RoutingRequest:
    """Candidates opposite to the query, created now, with success rate 1: the failing model scores NaN."""
    request = make_request(rng, n, dim=16, columnar=columnar)
    ids = [f"c{i}" for i in range(n)]
    emb = np.tile(-np.asarray(request.query_embedding, np.float32), (n, 1))
    if columnar:
        return RoutingRequest(request.query_embedding, CandidateBatch(ids, emb, np.full(n, NOW), np.zeros(n, int),
                                                                      np.ones(n)))
    return RoutingRequest(request.query_embedding,
                          [Candidate(ids[i], emb[i], created_at=NOW, success_rate=1.0) for i in range(n)])


@pytest.mark.parametrize("columnar", [False, True])
def test_model_failure_falls_back_and_opens_the_breaker(tmp_path, rng, columnar):
    monotonic = FakeClock(0.0)
    r, _, good = failing_router(tmp_path, circuit_breaker_threshold=3, circuit_breaker_timeout=10.0,
                                monotonic=monotonic)
    request = fresh_request(rng, 5, columnar)
    for i in range(3):
        response = r.route(request)
        assert response.fell_back
        assert response.fallback_reason == "model error: the model produced a non-finite score from finite features"
        assert all(not d.use_lightweight and d.confidence == 0.0 and d.uncertainty == 1.0 for d in response)
        assert [d.candidate_id for d in response.decisions] == [f"c{k}" for k in range(5)]
    assert r.circuit_breaker_status() is False
    response = r.route(request)  # open: the model is not called
    assert response.fell_back and response.fallback_reason == "circuit breaker open"
    monotonic.now = 10.0  # recovery timeout: a probe goes through, fails, and opens it again
    assert r.route(request).fallback_reason.startswith("model error")
    assert r.circuit_breaker_status() is False
    r.reload_model(good)  # a new model starts with a closed breaker
    assert r.circuit_breaker_status() is True
    assert not r.route(request).fell_back
    m = r.metrics()
    assert m["fallbacks"] == 5 and m["model_errors"] == 4 and m["rejected_by_breaker"] == 1 and m["requests"] == 6


def test_a_model_that_fails_the_smoke_test_is_refused(tmp_path, rng):
    # scale 2e38: the probe (recency 1, success 1) already reaches 2c, which overflows float32
    bad = low_rank_model(tmp_path, "bad.safetensors", healthy=False, scale=2e38)
    with pytest.raises(ModelValueError, match=r"bad\.safetensors: the model scores the raw features "
                                              r"\[0\.0, 1\.0, 0\.0, 1\.0, 0\.0\].*non-finite"):
        router(model_path=bad, feature_config=FAILING_FEATURES, enable_quantization=False)
    good = low_rank_model(tmp_path, "good.safetensors", healthy=True)
    r = router(model_path=good, feature_config=FAILING_FEATURES, enable_quantization=False)
    serving = r.model
    with pytest.raises(ModelValueError, match="non-finite"):
        r.reload_model(bad)
    assert r.model is serving and r.metrics()["reload_failures"] == 1
    assert not r.route(fresh_request(rng, 3)).fell_back


def test_a_reload_closes_the_breaker(tmp_path, rng):
    monotonic = FakeClock(0.0)
    r, bad, good = failing_router(tmp_path, circuit_breaker_threshold=1, circuit_breaker_timeout=60.0,
                                  monotonic=monotonic)
    assert r.route(fresh_request(rng, 2)).fell_back
    assert r.circuit_breaker.state == "open"
    r.reload_model(good)
    assert r.circuit_breaker.state == "closed"
    assert not r.route(fresh_request(rng, 2)).fell_back
    good_bytes = Path(good).read_bytes()
    Path(good).write_bytes(Path(bad).read_bytes())  # the watched file changes to the failing model...
    os.utime(good, ns=(1, 1))
    assert r.check_model_file()
    assert r.route(fresh_request(rng, 2)).fell_back and r.circuit_breaker.state == "open"
    Path(good).write_bytes(good_bytes)  # ...and back: the reload through the watched file closes it too
    os.utime(good, ns=(2, 2))
    assert r.check_model_file()
    assert r.circuit_breaker.state == "closed" and monotonic.now == 0.0


def test_errors_that_are_not_model_failures_propagate(tmp_path, rng):
    """A failing clock is a bug, not a model failure: it propagates and leaves the breaker alone."""
    def broken_clock() -> float:
        raise ZeroDivisionError("clock broke")

    r = router(circuit_breaker_threshold=1, clock=broken_clock)
    for _ in range(3):
        with pytest.raises(ZeroDivisionError, match="clock broke"):
            r.route(make_request(rng, 3, dim=8))
    assert r.circuit_breaker_status() is True
    assert r.metrics()["fallbacks"] == 0 and r.circuit_breaker.metrics()["total_failures"] == 0


def test_the_breaker_counts_exactly_the_model_failures(tmp_path):
    r, _, _ = failing_router(tmp_path)
    assert r.circuit_breaker.failures == MODEL_FAILURES == (ModelError,)
    assert r.circuit_breaker.is_failure(ModelError("x")) and not r.circuit_breaker.is_failure(RuntimeError("x"))


def test_reading_the_breaker_status_does_not_change_it(tmp_path, rng):
    monotonic = FakeClock(0.0)
    r, _, _ = failing_router(tmp_path, circuit_breaker_threshold=1, circuit_breaker_timeout=5.0, monotonic=monotonic)
    assert r.route(fresh_request(rng, 2)).fell_back
    monotonic.now = 100.0
    for _ in range(10):
        assert r.circuit_breaker_status() is False
    assert r.circuit_breaker.state == "open"


def test_invalid_input_in_half_open_gives_the_probe_back(tmp_path, rng):
    monotonic = FakeClock(0.0)
    r, _, _ = failing_router(tmp_path, circuit_breaker_threshold=1, circuit_breaker_timeout=5.0,
                             monotonic=monotonic)
    assert r.route(fresh_request(rng, 2)).fell_back
    monotonic.now = 5.0  # half-open
    bad = fresh_request(rng, 2)
    bad.candidates[1].success_rate = 2.0
    for _ in range(5):  # more bad requests than half-open probes: none may use a probe up
        with pytest.raises(InvalidInputError, match=r"candidates\[1\]"):
            r.route(bad)
    # the failing model scores ordinary candidates finitely: this probe succeeds and closes the breaker
    assert not r.route(make_request(rng, 2, dim=16)).fell_back
    assert r.circuit_breaker_status() is True


def test_without_breaker(tmp_path, rng):
    r, _, _ = failing_router(tmp_path, enable_circuit_breaker=False)
    assert r.circuit_breaker_status() is None
    for _ in range(10):
        assert r.route(fresh_request(rng, 2)).fell_back
    assert r.metrics()["model_errors"] == 10


def test_reload_model(tmp_path, rng):
    r = router(enable_quantization=False)
    request = make_request(rng, 20, dim=16, columnar=True)
    before = r.route(request).confidences
    other = FastGRNN(FastGRNNConfig(), seed=99)
    path = tmp_path / "other.safetensors"
    other.save(path)
    r.reload_model(path)
    after = r.route(request).confidences
    assert not np.array_equal(before, after)
    assert r.metrics()["reloads"] == 1
    r.reload_model()  # back to the configured (shipped) model
    np.testing.assert_array_equal(r.route(request).confidences, before)


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda p: p.write_bytes(b"not a model"), ModelFormatError),
        (lambda p: FastGRNN(FastGRNNConfig(input_dim=6)).save(p), ModelSchemaError),
        (lambda p: FastGRNN(FastGRNNConfig(timesteps=2)).save(p), ModelSchemaError),
        (lambda p: None, Exception),
    ],
)
def test_failed_reload_keeps_the_old_model(tmp_path, rng, make, error):
    r = router()
    model = r.model
    path = tmp_path / "m.safetensors"
    make(path)
    with pytest.raises(error):
        r.reload_model(path)
    assert r.model is model
    assert not r.route(make_request(rng, 3, dim=8)).fell_back


def test_failed_reload_is_counted(tmp_path):
    r = router()
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    with pytest.raises(ModelFormatError):
        r.reload_model(tmp_path / "bad.safetensors")
    m = r.metrics()
    assert (m["reloads"], m["reload_failures"]) == (0, 1) and m["last_reload_error"].startswith("ModelFormatError")
    assert m["model_path"] == default_model_path()


def test_check_model_file_reloads_only_on_change(tmp_path, rng):
    path = tmp_path / "m.safetensors"
    FastGRNN(FastGRNNConfig(), seed=1).save(path)
    r = router(model_path=path, enable_quantization=False)
    request = make_request(rng, 20, dim=16, columnar=True)
    first = r.route(request).confidences
    assert r.check_model_file() is False  # unchanged
    FastGRNN(FastGRNNConfig(), seed=2).save(path)  # written to a new file, renamed over the old one
    assert r.check_model_file() is True
    second = r.route(request).confidences
    assert not np.array_equal(first, second)
    assert r.check_model_file() is False and r.metrics()["reloads"] == 1
    path.unlink()  # a missing file changes nothing
    assert r.check_model_file() is False
    np.testing.assert_array_equal(r.route(request).confidences, second)


def test_a_broken_model_file_keeps_the_old_model_and_is_tried_once(tmp_path, rng):
    path = tmp_path / "m.safetensors"
    FastGRNN(FastGRNNConfig(), seed=1).save(path)
    r = router(model_path=path)
    model = r.model
    path.write_bytes(b"half a model")
    with pytest.raises(ModelFormatError):
        r.check_model_file()
    assert r.model is model and r.metrics()["reload_failures"] == 1
    assert r.check_model_file() is False  # the same broken version is not tried again
    FastGRNN(FastGRNNConfig(), seed=3).save(path)
    assert r.check_model_file() is True and r.model is not model


def test_reload_model_moves_the_watched_file(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    FastGRNN(FastGRNNConfig(), seed=1).save(a)
    FastGRNN(FastGRNNConfig(), seed=2).save(b)
    r = router(model_path=a)
    r.reload_model(b)
    assert r.metrics()["model_path"] == str(b)
    FastGRNN(FastGRNNConfig(), seed=3).save(a)
    assert r.check_model_file() is False  # a is not served any more
    FastGRNN(FastGRNNConfig(), seed=4).save(b)
    assert r.check_model_file() is True


def test_watch_model_reloads_in_the_background(tmp_path, rng):
    path = tmp_path / "m.safetensors"
    FastGRNN(FastGRNNConfig(), seed=1).save(path)
    r = router(model_path=path)
    changes: queue.Queue[tuple[str, BaseException | None]] = queue.Queue()
    r.watch_model(interval=0.005)
    r.watch_model(interval=0.01, on_change=lambda where, error: changes.put((where, error)))  # replaces it
    threads = [t for t in threading.enumerate() if t.name == "tinydancer-model-watch"]
    assert r.watching and r.metrics()["watching_model_file"] and len(threads) == 1
    path.write_bytes(b"broken")  # a failed reload in the watcher is recorded, never raised
    where, error = changes.get(timeout=60)
    assert where == str(path) and isinstance(error, ModelFormatError)
    assert r.metrics()["reload_failures"] == 1 and r.metrics()["reloads"] == 0
    FastGRNN(FastGRNNConfig(), seed=2).save(tmp_path / "next.safetensors")
    (tmp_path / "next.safetensors").replace(path)
    assert changes.get(timeout=60) == (str(path), None)
    assert r.metrics()["reloads"] == 1 and not r.route(make_request(rng, 4, dim=8)).fell_back
    r.close()
    assert not r.watching and not threads[0].is_alive()
    with pytest.raises(TinyDancerError, match="closed"):
        r.watch_model()
    with pytest.raises(ConfigError, match="on_change must be callable"):
        router().watch_model(on_change="print")


@pytest.mark.parametrize("interval", [0, -1.0, float("inf"), float("nan"), True, "1"])
def test_watch_model_bad_interval(interval):
    with pytest.raises(ConfigError, match=r"interval \(seconds\) must be"):
        router().watch_model(interval)


def test_a_dropped_watching_router_is_collected(tmp_path):
    import gc
    import weakref

    r = router()
    r.watch_model(interval=0.001)
    thread = [t for t in threading.enumerate() if t.name == "tinydancer-model-watch"][0]
    ref = weakref.ref(r)
    del r
    gc.collect()
    assert ref() is None
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_concurrent_routes_during_reloads_see_one_model_or_the_other(tmp_path, rng):
    r = router(enable_quantization=False)
    request = make_request(rng, 64, dim=32, columnar=True)
    a_out = r.route(request).confidences
    path = tmp_path / "b.safetensors"
    FastGRNN(FastGRNNConfig(), seed=5).save(path)
    r.reload_model(path)
    b_out = r.route(request).confidences
    r.reload_model()
    stop = threading.Event()
    bad: list[np.ndarray] = []

    def reader() -> None:
        while not stop.is_set():
            out = r.route(request).confidences
            if not (np.array_equal(out, a_out) or np.array_equal(out, b_out)):
                bad.append(out)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for i in range(40):
        r.reload_model(path if i % 2 == 0 else None)
    stop.set()
    for t in threads:
        t.join()
    assert not bad


def test_many_threads_route_at_once(rng):
    r = router()
    requests = [make_request(rng, 50, dim=64, columnar=True) for _ in range(8)]
    expected = [r.route(q).confidences for q in requests]
    errors: list[str] = []

    def work(k: int) -> None:
        for _ in range(50):
            if not np.array_equal(r.route(requests[k % 8]).confidences, expected[k % 8]):
                errors.append("mismatch")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert r.metrics()["requests"] == 8 + 16 * 50


def test_close_and_context_manager(rng):
    with router() as r:
        r.route(make_request(rng, 2, dim=8))
    with pytest.raises(TinyDancerError, match="closed"):
        r.route(make_request(rng, 2, dim=8))
    r.close()


@pytest.mark.parametrize(
    "kwargs",
    [dict(confidence_threshold=1.5), dict(max_uncertainty=-0.1), dict(circuit_breaker_threshold=0),
     dict(circuit_breaker_timeout=float("nan")), dict(enable_quantization="yes"), dict(feature_config={}),
     dict(database_path=3), dict(log_queue_size=0), dict(log_full_wait=-1.0)],
)
def test_bad_config(kwargs):
    with pytest.raises(ConfigError):
        RouterConfig(**kwargs)


def test_feature_config_is_used(rng):
    only_similarity = FeatureConfig(similarity_weight=1.0, recency_weight=0.0, frequency_weight=0.0,
                                    success_weight=0.0, metadata_weight=0.0)
    r = router(feature_config=only_similarity, enable_quantization=False)
    request = make_request(rng, 10, dim=16, columnar=True)
    b = request.candidates
    feats = kernels.candidate_features(request.query_embedding, b.embeddings, b.created_at, b.access_count,
                                       b.success_rate, NOW, weights=only_similarity.weights)
    expected = r.model.forward_batch(feats)
    got = {d.candidate_id: d.confidence for d in r.route(request).decisions}
    for i in range(10):
        assert got[f"c{i}"] == pytest.approx(float(expected[i]), abs=1e-6)


def test_router_rejects_models_of_the_wrong_shape(tmp_path):
    path = tmp_path / "q.safetensors"
    FastGRNN(FastGRNNConfig(input_dim=384, hidden_dim=8)).save(path)
    with pytest.raises(ModelSchemaError, match="input_dim 5"):
        Router(RouterConfig(model_path=path))
    with pytest.raises(ModelError):
        Router(RouterConfig(model_path=tmp_path / "missing.safetensors"))


def test_threads_routing_lists_each_get_their_own_buffer(rng):
    """Lists are gathered into pooled buffers; threads routing at once never see each other's candidates."""
    r = router()
    requests = [make_request(rng, n, dim=64) for n in (3, 40, 400, 7)]  # 400 x 64 releases the GIL
    expected = [r.route(q).to_dict()["decisions"] for q in requests]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(200):
                j = (k + i) % len(requests)
                assert r.route(requests[j]).to_dict()["decisions"] == expected[j]
        except Exception as exc:  # a failed assertion in a thread: reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[0]


# ----------------------------------------------------------------------------------------------------------
# Timestamps from the future, and candidates named by index and id
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("columnar", [False, True])
def test_created_at_in_milliseconds_is_refused(rng, columnar):
    r = router()  # clock: NOW
    emb = unit(rng.standard_normal((3, 8)))
    created = [NOW - 10.0, NOW * 1000.0, NOW]
    if columnar:
        candidates = CandidateBatch(["a", "doc-7", "c"], emb, created)
        where = r"created_at\[1\]"
    else:
        candidates = [Candidate(i, e, created_at=t) for i, e, t in zip(["a", "doc-7", "c"], emb, created)]
        where = r"candidates\[1\]\.created_at"
    with pytest.raises(InvalidInputError, match=where + r" is 1800000000000\.0, .* s after now \(1800000000\.0\); created_at "
                       r"must be unix time in seconds, at most 60 s ahead of now \(it looks like milliseconds: "
                       r"divide by 1000\) \(candidate id 'doc-7'\)"):
        r.route(RoutingRequest(emb[0], candidates))
    assert r.metrics()["invalid_requests"] == 1 and r.circuit_breaker_status() is True


@pytest.mark.parametrize("ahead, ok", [(0.0, True), (60.0, True), (61.0, False), (86400.0, False)])
def test_the_future_tolerance(rng, ahead, ok):
    emb = unit(rng.standard_normal((2, 8)))
    request = RoutingRequest(emb[0], [Candidate("a", emb[0], created_at=NOW - 5.0),
                                      Candidate("b", emb[1], created_at=NOW + ahead)])
    if ok:
        response = router().route(request)
        assert response.candidates_processed == 2
    else:
        with pytest.raises(InvalidInputError, match=r"candidates\[1\]\.created_at .*candidate id 'b'"):
            router().route(request)
    # a wider tolerance lets a clock that far ahead through
    r = router(feature_config=FeatureConfig(future_tolerance=ahead + 1.0))
    assert r.route(request).candidates_processed == 2


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("success_rate", 2.0, r"candidates\[2\]\.success_rate must lie in \[0, 1\], got 2\.0 \(candidate id 'x-2'\)"),
        ("access_count", -1, r"candidates\[2\]\.access_count must be an int >= 0, got -1 \(candidate id 'x-2'\)"),
        ("created_at", float("nan"), r"candidates\[2\]\.created_at must be finite, got nan \(candidate id 'x-2'\)"),
        ("embedding", [1.0, float("inf")] + [0.0] * 6,
         r"candidates\[2\]\.embedding holds a non-finite value \(inf\) at \[1\] \(candidate id 'x-2'\)"),
        ("embedding", [1.0, 2.0], r"candidates\[2\]\.embedding has length 2, but candidates\[0\]\.embedding has "
                                  r"length 8 \(candidate id 'x-2'\)"),
        ("metadata", "k=v", r"candidates\[2\]\.metadata must be a dict, got str \(candidate id 'x-2'\)"),
    ],
)
def test_a_bad_field_names_the_candidate_by_index_and_id(rng, field, value, message):
    emb = unit(rng.standard_normal((3, 8)))
    candidates = [Candidate(f"x-{i}", emb[i], created_at=NOW) for i in range(3)]
    setattr(candidates[2], field, value)
    with pytest.raises(InvalidInputError, match=message):
        router().route(RoutingRequest(emb[0], candidates, metadata={"k": "v"}))
