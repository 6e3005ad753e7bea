"""tinydancer.feedback and Router.calibrate: logged examples from a routing database, the request-id split,
candidate calibration (its guarantee over many fresh draws, and its use by the router), and the calibration
a candidate model file carries.

The synthetic candidate traffic: weighted features as the router computes them, and a lightweight answer
that is good with probability rising with the similarity and success features (:func:`p_good`).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeClock

from tinydancer import decision_log, feedback, kernels
from tinydancer import router as router_module
from tinydancer.calibration import (
    MAX_FAILURE_VALUES,
    Calibration,
    calibrate_lightweight_error,
    calibrate_quality_loss,
)
from tinydancer.errors import (
    InvalidInputError,
    ModelError,
    ModelSchemaError,
    TinyDancerError,
)
from tinydancer.features import FeatureConfig
from tinydancer.feedback import LoggedExamples
from tinydancer.model import FastGRNN, FastGRNNConfig, files
from tinydancer.query_router import EnsembleConfig, QueryRouter
from tinydancer.router import Router, RouterConfig
from tinydancer.storage import Storage
from tinydancer.training import Trainer, TrainingConfig
from tinydancer.types import Candidate, CandidateBatch, RoutingRequest

NOW = 1_800_000_000.0
TARGET, DELTA = 0.9, 0.1
WEIGHTS = (0.4, 0.2, 0.15, 0.15, 0.1)  # FeatureConfig's defaults


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def p_good(features: np.ndarray) -> np.ndarray:
    """P(the lightweight answer is good enough | the weighted features): rises with similarity and success."""
    f = np.asarray(features, np.float64)
    similarity, success = f[:, 0] / WEIGHTS[0], f[:, 3] / WEIGHTS[3]
    return 1.0 / (1.0 + np.exp(-(9.0 * (similarity - 0.45) + 3.0 * (success - 0.5))))


def synthetic_features(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 5) float32 weighted features as a router logs them (similarity spread over [-0.2, 1])."""
    raw = np.column_stack([rng.uniform(-0.2, 1.0, n), rng.uniform(0, 1, n), rng.uniform(0, 1, n),
                           rng.uniform(0, 1, n), rng.uniform(0, 1, n)])
    return (raw * np.asarray(WEIGHTS)).astype(np.float32)


def synthetic_examples(rng: np.random.Generator, requests: int, per_request: int = 3) -> LoggedExamples:
    """Logged candidate examples with outcomes drawn from p_good, under random request ids."""
    n = requests * per_request
    X = synthetic_features(rng, n)
    good = (rng.uniform(size=n) < p_good(X)).astype(np.int8)
    prefix = rng.integers(0, 2**48)
    rids = tuple(f"{prefix:012x}-{i // per_request}" for i in range(n))
    cids = tuple(f"c{i % per_request}" for i in range(n))
    return LoggedExamples("candidate", rids, cids, X, None, good, np.zeros(n), np.zeros(n, np.bool_))


def train_candidate_model(examples: LoggedExamples, seed: int = 0, epochs: int = 20) -> FastGRNN:
    model = FastGRNN(FastGRNNConfig(input_dim=5, hidden_dim=8), seed=seed)
    config = TrainingConfig(learning_rate=0.02, epochs=epochs, seed=seed, early_stopping_patience=None)
    Trainer(model, config).fit(examples.inputs, examples.good.astype(np.float64))
    return model


def logging_router(path: Path | None = None, storage: Storage | None = None, *,
                   monkeypatch: pytest.MonkeyPatch | None = None, **kwargs) -> Router:
    """A router logging to ``path`` or ``storage``. With ``monkeypatch``, its log's request-id prefix (random
    per log) is fixed while the router is made, so that the request-id split, and all that follows from
    it, is the same on every run."""
    config = RouterConfig(database_path=path, **kwargs)
    if monkeypatch is None:
        return Router(config, clock=FakeClock(NOW), monotonic=FakeClock(0.0), storage=storage)
    with monkeypatch.context() as patch:
        patch.setattr(decision_log.os, "urandom", lambda n: bytes(range(1, n + 1)))
        return Router(config, clock=FakeClock(NOW), monotonic=FakeClock(0.0), storage=storage)


def candidate_request(rng: np.random.Generator, k: int, dim: int = 16, metadata: bool = False,
                      as_list: bool = False) -> RoutingRequest:
    """k candidates whose cosine to the query is spread over [-0.2, 1]."""
    q = unit(rng.standard_normal(dim))
    a = rng.uniform(-0.2, 1.0, k)
    other = rng.standard_normal((k, dim))
    other -= np.outer(other @ q, q)
    emb = a[:, None] * q + np.sqrt(1.0 - a**2)[:, None] * unit(other)
    ids = [f"c{i}" for i in range(k)]
    created = NOW - rng.uniform(0, 3000, k)
    counts = rng.integers(0, 5000, k)
    success = rng.uniform(0, 1, k)
    metas = [{"lang": "en" if i % 2 else "de", "topic": "x"} for i in range(k)] if metadata else None
    query_meta = {"lang": "en", "topic": "x"} if metadata else None
    if as_list:
        cands = [Candidate(id=ids[i], embedding=emb[i], created_at=float(created[i]), access_count=int(counts[i]),
                           success_rate=float(success[i]), metadata={} if metas is None else metas[i])
                 for i in range(k)]
        return RoutingRequest(q, cands, query_meta)
    return RoutingRequest(q, CandidateBatch(ids, emb, created, counts, success, metas), query_meta)


def expected_features(request: RoutingRequest) -> np.ndarray:
    batch = request.candidates if isinstance(request.candidates, CandidateBatch) else \
        CandidateBatch.from_candidates(request.candidates)
    overlap = batch.metadata_overlap(request.metadata)
    return kernels.candidate_features(request.query_embedding, batch.columns, now=NOW, metadata_overlap=overlap,
                                      weights=FeatureConfig().kernel_weights())


def route_and_label(router: Router, rng: np.random.Generator, requests: int, k: int = 4) -> None:
    """Route synthetic traffic and record an outcome per candidate, drawn from p_good of the logged features."""
    for _ in range(requests):
        request = candidate_request(rng, k)
        response = router.route(request)
        assert not response.fell_back and response.request_id is not None
        good = rng.uniform(size=k) < p_good(response.result.features)
        for i in range(k):
            router.record_outcome(response.request_id, bool(good[i]), candidate_id=f"c{i}")


def assert_float32_of(got: np.ndarray, reference) -> None:
    """``got`` (float32) is the float64 ``reference`` to within float32 rounding (one unit in the last place)."""
    ref = np.broadcast_to(np.asarray(reference, np.float64), np.shape(got))
    assert got.dtype == np.float32
    assert np.all(np.abs(got.astype(np.float64) - ref) <= 2.0**-23 * np.abs(ref)), (got, ref)


def binomial_allowance(draws: int, p: float, tail: float = 1e-3) -> int:
    """The smallest k with P(Binomial(draws, p) > k) <= tail."""
    below = 0.0
    for k in range(draws + 1):
        below += math.comb(draws, k) * p**k * (1.0 - p) ** (draws - k)
        if 1.0 - below <= tail:
            return k
    return draws


# ---------------------------------------------------------------------------------------------------------
# 1. logged_examples
# ---------------------------------------------------------------------------------------------------------


def test_logged_examples_from_a_logging_router(tmp_path, rng):
    db = tmp_path / "log.sqlite"
    router = logging_router(db)
    requests = [candidate_request(rng, 3), candidate_request(rng, 4, metadata=True),
                candidate_request(rng, 3, as_list=True), candidate_request(rng, 3, metadata=True, as_list=True),
                candidate_request(rng, 2), candidate_request(rng, 3)]
    responses = [router.route(r) for r in requests]
    rids = [r.request_id for r in responses]
    assert all(rids) and len(set(rids)) == len(rids)

    router.record_outcome(rids[0], True, candidate_id="c0")
    router.record_outcome(rids[0], False, candidate_id="c2")  # c1 gets no outcome: left out
    router.record_outcome(rids[1], True)  # the request as a whole: all four candidates
    router.record_outcome(rids[2], True, candidate_id="c1")
    router.record_outcome(rids[2], False, candidate_id="c1")  # replaces the earlier one
    router.record_outcome(rids[3], False)
    router.record_outcome(rids[3], True, candidate_id="c2")  # replaces the request's verdict for c2 only
    router.record_outcome(rids[4], False, candidate_id="c0")
    router.record_outcome(rids[4], True)  # replaces it for every candidate of the request
    # rids[5]: no outcome at all
    labelled = {  # (request, candidate) -> good, in the order the decisions were logged
        (0, 0): 1, (0, 2): 0, (1, 0): 1, (1, 1): 1, (1, 2): 1, (1, 3): 1, (2, 1): 0,
        (3, 0): 0, (3, 1): 0, (3, 2): 1, (4, 0): 1, (4, 1): 1,
    }
    router.close()

    ex = feedback.logged_examples(db, "candidate")
    with Storage(db) as storage:  # an open Storage gives the same
        again = feedback.logged_examples(storage, "candidate")
    for got in (ex, again):
        assert got.kind == "candidate" and len(got) == len(labelled)
        assert got.request_ids == tuple(rids[r] for r, _ in labelled)
        assert got.candidate_ids == tuple(f"c{c}" for _, c in labelled)
        np.testing.assert_array_equal(got.good, np.array(list(labelled.values()), np.int8))
        assert got.good.dtype == np.int8 and got.inputs.dtype == np.float32 and got.inputs.shape == (12, 5)
        assert got.prompt_length is None
    for row, (r, c) in enumerate(labelled):
        result = responses[r].result
        # the model's input as the routing pass kept it, and as candidate_features computes it, bit for bit
        np.testing.assert_array_equal(ex.inputs[row].view(np.uint32), result.features[c].view(np.uint32))
        np.testing.assert_array_equal(ex.inputs[row], expected_features(requests[r])[c])
        assert ex.confidence[row] == float(result.confidence[c])
        assert ex.use_lightweight[row] == bool(result.lightweight[c])
    np.testing.assert_array_equal(ex.inputs, again.inputs)
    assert ex.inputs[:, 4].any()  # metadata overlap was logged with the features


def test_record_routing_decisions_and_fallbacks_are_not_examples(tmp_path, rng):
    db = tmp_path / "log.sqlite"
    storage = Storage(db)
    router = logging_router(storage=storage, circuit_breaker_threshold=1)
    plain_rid = storage.record_routing("c0", unit(rng.standard_normal(16)), 0.9, True, 0.1, 3.0)
    storage.record_outcome(plain_rid, True)
    storage.record_outcome(plain_rid, True, candidate_id="c0")

    routed = router.route(candidate_request(rng, 3))
    router.circuit_breaker.record_failure()  # opens the breaker: the next request falls back
    fallback = router.route(candidate_request(rng, 3))
    assert fallback.fell_back and fallback.request_id is not None
    router.record_outcome(fallback.request_id, True)  # the fallback's decisions are logged...
    router.record_outcome(fallback.request_id, False, candidate_id="c1")
    router.record_outcome(routed.request_id, False, candidate_id="c1")

    ex = feedback.logged_examples(storage, "candidate")  # flushes the router's log first
    assert ex.request_ids == (routed.request_id,) and ex.candidate_ids == ("c1",)  # ...but are no examples
    np.testing.assert_array_equal(ex.good, [0])
    np.testing.assert_array_equal(ex.inputs[0], routed.result.features[1])
    assert len(feedback.logged_examples(storage, "query")) == 0
    router.close()
    assert not storage.closed  # shared: the router leaves it open
    storage.close()


def test_query_examples_widen_float16_and_prompt_lengths(tmp_path, rng):
    db = tmp_path / "log.sqlite"
    dim = 12
    E = rng.standard_normal((80, dim)).astype(np.float32)
    labels = (E[:, 0] > 0).astype(np.int8)
    small = EnsembleConfig(members=1, hidden=4, epochs=3, patience=1)
    with_length = QueryRouter.fit(E, labels, prompt_length=rng.uniform(10, 500, 80), config=small)
    without = QueryRouter.fit(E, labels, config=small)
    storage = Storage(db)
    with_length.log_to(storage)
    without.log_to(storage)

    queries = (3.0 * rng.standard_normal((6, dim))).astype(np.float32)  # values float16 cannot hold exactly
    lengths = rng.uniform(10, 500, 6)
    one = with_length.route(queries[0], prompt_length=float(lengths[0]))
    batch = with_length.route_batch(queries[1:4], prompt_length=lengths[1:4])
    bare = without.route(queries[4])
    unlabelled = without.route(queries[5])
    with_length.record_outcome(one.request_id, True)
    for rid, good in zip(batch.request_ids, (False, True, True)):
        with_length.record_outcome(rid, good)
    with_length.record_outcome(batch.request_ids[1], False)  # the later outcome wins

    ex = feedback.logged_examples(storage, "query")
    assert ex.kind == "query" and len(ex) == 4
    assert ex.request_ids == (one.request_id, *batch.request_ids)
    assert ex.candidate_ids == (None,) * 4
    np.testing.assert_array_equal(ex.good, [1, 0, 0, 1])
    assert ex.inputs.dtype == np.float32 and ex.inputs.shape == (4, dim)
    np.testing.assert_array_equal(ex.inputs, queries[:4].astype(np.float16).astype(np.float32))
    assert not np.array_equal(ex.inputs, queries[:4])  # what was logged is the half-precision copy
    np.testing.assert_array_equal(ex.prompt_length, lengths[:4])
    np.testing.assert_array_equal(ex.confidence, np.r_[one.confidence, batch.confidence].astype(np.float64))
    assert len(feedback.logged_examples(storage, "candidate")) == 0

    without.record_outcome(bare.request_id, True)  # one example without a prompt length: no lengths at all
    ex = feedback.logged_examples(storage, "query")
    assert len(ex) == 5 and ex.prompt_length is None
    assert unlabelled.request_id not in ex.request_ids
    train, held = ex.split(0.5)
    assert train.prompt_length is None and held.prompt_length is None
    with_length.close()
    without.close()
    storage.close()


def test_logged_examples_of_an_empty_database_and_bad_kinds(tmp_path):
    db = tmp_path / "empty.sqlite"
    Storage(db).close()
    ex = feedback.logged_examples(db, "candidate")
    assert len(ex) == 0 and ex.inputs.shape == (0, 5) and ex.inputs.dtype == np.float32
    assert ex.good.shape == (0,) and ex.prompt_length is None
    assert len(feedback.logged_examples(db, "query")) == 0
    with pytest.raises(InvalidInputError, match="kind"):
        feedback.logged_examples(db, "decision")


# ---------------------------------------------------------------------------------------------------------
# 2. split
# ---------------------------------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_complete_and_by_request(rng):
    n_requests = 3000
    per = rng.integers(1, 5, n_requests)
    names = [f"req-{i}-{rng.integers(1 << 30)}" for i in range(n_requests)]
    rids = tuple(names[i] for i in range(n_requests) for _ in range(per[i]))
    n = len(rids)
    cids = tuple(f"c{i}" for i in range(n))
    ex = LoggedExamples("candidate", rids, cids, rng.standard_normal((n, 5)).astype(np.float32),
                        rng.uniform(1, 100, n), rng.integers(0, 2, n).astype(np.int8), np.arange(n, dtype=np.float64),
                        rng.uniform(size=n) < 0.5)
    train, held = ex.split(0.3)
    train2, held2 = ex.split(0.3)
    assert train.candidate_ids == train2.candidate_ids and held.candidate_ids == held2.candidate_ids
    # disjoint, complete, each part in the logged order (confidence holds each example's position)
    positions = np.r_[train.confidence, held.confidence].astype(int)
    assert sorted(positions.tolist()) == list(range(n))
    assert np.all(np.diff(train.confidence) > 0) and np.all(np.diff(held.confidence) > 0)
    for part in (train, held):
        at = part.confidence.astype(int)
        assert part.kind == "candidate"
        assert part.request_ids == tuple(rids[i] for i in at) and part.candidate_ids == tuple(cids[i] for i in at)
        np.testing.assert_array_equal(part.inputs, ex.inputs[at])
        np.testing.assert_array_equal(part.prompt_length, ex.prompt_length[at])
        np.testing.assert_array_equal(part.good, ex.good[at])
        np.testing.assert_array_equal(part.use_lightweight, ex.use_lightweight[at])
    # all decisions of a request in one part, and the documented rule
    assert not set(train.request_ids) & set(held.request_ids)
    for rid in set(held.request_ids):
        assert zlib.crc32(rid.encode()) / 2.0**32 < 0.3
    for rid in set(train.request_ids):
        assert zlib.crc32(rid.encode()) / 2.0**32 >= 0.3
    # the share of requests held out is close to the holdout (sd of the share about 0.008 here)
    share = len(set(held.request_ids)) / n_requests
    assert abs(share - 0.3) < 0.04
    # nested: a request held out at 0.3 is held out at 0.6
    assert set(held.request_ids) <= set(ex.split(0.6)[1].request_ids)


def test_split_extremes_and_bad_holdouts(rng):
    ex = synthetic_examples(rng, 50)
    train, held = ex.split(0.0)
    assert len(train) == len(ex) and len(held) == 0 and held.inputs.shape == (0, 5)
    train, held = ex.split(1.0)
    assert len(train) == 0 and len(held) == len(ex)
    train, held = ex.split()  # the default holdout
    assert feedback.DEFAULT_HOLDOUT == 0.3 and len(train) + len(held) == len(ex)
    for bad in (-0.1, 1.5, float("nan"), float("inf"), "0.3", None, True):
        with pytest.raises(InvalidInputError, match="holdout"):
            ex.split(bad)


def test_split_of_logged_examples_keeps_requests_together(tmp_path, rng):
    db = tmp_path / "log.sqlite"
    router = logging_router(db)
    rids = []
    for _ in range(40):
        response = router.route(candidate_request(rng, 3))
        router.record_outcome(response.request_id, bool(rng.integers(2)))
        rids.append(response.request_id)
    router.close()
    ex = feedback.logged_examples(db, "candidate")
    assert len(ex) == 120
    train, held = ex.split(0.5)
    assert len(train) % 3 == 0 and len(held) % 3 == 0 and len(train) + len(held) == 120
    for part in (train, held):
        for rid in set(part.request_ids):
            assert part.request_ids.count(rid) == 3


# ---------------------------------------------------------------------------------------------------------
# 3. calibrate_candidates and Router.calibrate
# ---------------------------------------------------------------------------------------------------------


def test_candidate_calibration_guarantee_over_many_draws():
    """For 100 seeds: fresh logged examples (200 requests of 3 candidates), split by request id, a model
    trained on the training part, calibrate_candidates on the held-out part, and the error share among
    candidates routed lightweight measured on 20000 fresh candidates (averaging the true P(bad), which
    removes the test set's label noise).

    Learn then Test promises P(error share > 1 - target) <= delta over the calibration draw. The number
    of violating draws is then at most Binomial(100, delta); we allow the count that such a binomial exceeds
    with probability <= 1e-3 (20 of 100 at delta 0.1). A naive plug-in threshold (the lowest score whose
    calibration error share is <= 1 - target) is checked the same way and fails far more often: the check
    has power."""
    draws = 100
    violations = plug_in_violations = certified = 0
    risks, shares = [], []
    for seed in range(draws):
        rng = np.random.default_rng(5000 + seed)
        train, held = synthetic_examples(rng, 200).split(0.5)
        model = train_candidate_model(train, seed=seed)
        cal = feedback.calibrate_candidates(model, held, target=TARGET, delta=DELTA)
        assert cal.risk == "lightweight_error" and cal.n == len(held)
        assert cal.target == TARGET and cal.delta == DELTA

        X = synthetic_features(rng, 20000)
        bad = 1.0 - p_good(X)
        score = np.asarray(model.forward_batch(X), np.float64).reshape(-1)
        routed = score >= cal.threshold
        risk = float(bad[routed].mean()) if routed.any() else 0.0
        certified += cal.certified
        violations += risk > 1.0 - TARGET
        risks.append(risk)
        shares.append(float(routed.mean()))
        if not cal.certified:
            assert not routed.any()

        # the plug-in threshold on the same held-out scores
        held_score = np.asarray(model.forward_batch(held.inputs), np.float64).reshape(-1)
        order = np.argsort(-held_score, kind="stable")
        running = np.cumsum(1 - held.good[order]) / np.arange(1, len(held) + 1)
        ok = np.flatnonzero(running <= 1.0 - TARGET)
        if ok.size:
            plug = held_score[order][ok[-1]]
            plug_risk = float(bad[score >= plug].mean())
            plug_in_violations += plug_risk > 1.0 - TARGET

    allowed = binomial_allowance(draws, DELTA)
    assert violations <= allowed, (violations, allowed)
    assert float(np.mean(risks)) < 1.0 - TARGET
    # not vacuous: most draws certify a threshold (about 80 of 100; the walk from the strictest threshold
    # stops at once when the top ~22 held-out candidates hold a failure), routing a real share of the
    # traffic (the best threshold with the true P(bad) would route about 40%)
    assert certified >= 0.7 * draws
    assert float(np.mean(shares)) > 0.12
    assert plug_in_violations > allowed  # the same check catches a threshold without the guarantee


def test_router_calibrate_end_to_end(tmp_path, rng, monkeypatch):
    db = tmp_path / "log.sqlite"
    logger = logging_router(db, monkeypatch=monkeypatch)
    assert logger.route(candidate_request(rng, 1)).request_id == "010203040506-0"  # the split is reproducible
    route_and_label(logger, rng, 250)
    logger.close()

    examples = feedback.logged_examples(db, "candidate")
    assert len(examples) == 1000
    train, held = examples.split()  # the router's default holdout
    model = train_candidate_model(train)
    path = tmp_path / "candidate.safetensors"
    feedback.save_candidate_model(model, None, path)

    serving = Router(RouterConfig(model_path=path), clock=FakeClock(NOW))
    assert serving.calibration is None and not serving.metrics()["calibrated"]
    assert serving.threshold == serving.config.effective_threshold
    # (target 0.8 at delta 0.2: certified with a wide margin; the guarantee at 0.9 is tested above)
    cal = serving.calibrate(db, target=0.8, delta=0.2)
    # certified on the held-out part only, by the serving (quantized) model
    assert cal == feedback.calibrate_candidates(serving.model, held, target=0.8, delta=0.2)
    assert cal.n == len(held) and cal.certified and 0.0 < cal.lightweight_share < 1.0
    assert serving.calibration == cal and serving.threshold == cal.threshold
    assert serving.metrics()["calibrated"] is True

    routed = 0
    for k in (1, 5, 40):
        for _ in range(5):
            response = serving.route(candidate_request(rng, k))
            conf = response.confidences
            np.testing.assert_array_equal(response.lightweight, conf.astype(np.float64) >= cal.threshold)
            assert_float32_of(response.uncertainties, cal.uncertainty(conf.astype(np.float64)))
            for d in response:
                assert d.use_lightweight == (d.confidence >= cal.threshold)
            routed += response.lightweight_count
    assert routed > 0

    # an uncalibrated model file reloaded drops the calibration
    serving.reload_model()
    assert serving.calibration is None and serving.threshold == serving.config.effective_threshold
    assert serving.metrics()["calibrated"] is False
    response = serving.route(candidate_request(rng, 30))
    unc = response.uncertainties
    np.testing.assert_allclose(unc, np.clip(1 - 2 * np.abs(response.confidences.astype(np.float64) - 0.5), 0, 1),
                               atol=1e-6)
    serving.close()


def test_a_calibrated_router_logs_its_threshold_and_uncertainty(tmp_path, rng, monkeypatch):
    db = tmp_path / "log.sqlite"
    storage = Storage(db)
    router = logging_router(storage=storage, monkeypatch=monkeypatch)
    route_and_label(router, rng, 120)
    cal = router.calibrate(storage, target=0.8, delta=0.2, holdout=0.6)  # an open Storage: flushed first
    held = feedback.logged_examples(storage, "candidate").split(0.6)[1]
    assert cal == feedback.calibrate_candidates(router.model, held, target=0.8, delta=0.2)
    assert cal.certified and cal.n == len(held)
    response = router.route(candidate_request(rng, 6))
    router.flush()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT candidate_id, confidence, threshold, use_lightweight, uncertainty FROM "
                            "routing_decisions WHERE request_id = ? ORDER BY seq", (response.request_id,)).fetchall()
    result = response.result
    assert [r[0] for r in rows] == [f"c{i}" for i in range(6)]
    for i, (_, conf, threshold, light, unc) in enumerate(rows):
        assert threshold == cal.threshold
        assert conf == float(result.confidence[i]) and unc == float(result.uncertainty[i])
        assert light == int(conf >= cal.threshold)
    router.close()
    storage.close()


def test_calibrate_without_held_out_outcomes(tmp_path, rng):
    db = tmp_path / "log.sqlite"
    router = logging_router(db)
    router.route(candidate_request(rng, 3))  # logged, but no outcome
    router.flush()
    with pytest.raises(InvalidInputError, match="no logged candidate decision with an outcome"):
        router.calibrate(db)
    assert router.calibration is None and not router.metrics()["calibrated"]

    route_and_label(router, rng, 30)
    router.flush()
    with pytest.raises(InvalidInputError, match="no logged candidate decision with an outcome"):
        router.calibrate(db, holdout=0.0)  # every outcome is in the training part
    assert router.calibration is None
    for bad in ({"target": 1.5}, {"delta": 0.0}, {"holdout": 2.0}):
        with pytest.raises(InvalidInputError):
            router.calibrate(db, **bad)
    assert router.calibration is None
    cal = router.calibrate(db, holdout=1.0, target=0.5, delta=0.5)
    assert cal.n == 120 and router.calibration == cal
    # a failed calibration leaves the one in use
    with pytest.raises(InvalidInputError):
        router.calibrate(db, holdout=0.0)
    assert router.calibration == cal
    router.close()


def test_calibrate_candidates_refuses_query_and_empty_examples(rng):
    model = FastGRNN(FastGRNNConfig(input_dim=5, hidden_dim=8), seed=0)
    ex = synthetic_examples(rng, 10)
    query = LoggedExamples("query", ex.request_ids, (None,) * len(ex), ex.inputs, None, ex.good, ex.confidence,
                           ex.use_lightweight)
    with pytest.raises(InvalidInputError, match="candidate decisions"):
        feedback.calibrate_candidates(model, query)
    with pytest.raises(InvalidInputError, match="no logged candidate decision"):
        feedback.calibrate_candidates(model, ex.split(0.0)[1])
    with pytest.raises(InvalidInputError):
        feedback.calibrate_candidates(model, ex, target=1.0)


# ---------------------------------------------------------------------------------------------------------
# 4. the calibration in a candidate model file
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def trained(rng):
    """A trained candidate model and a certified calibration of it with more than MAX_FAILURE_VALUES failures."""
    train, held = synthetic_examples(rng, 1200).split(0.7)
    model = train_candidate_model(train)
    cal = feedback.calibrate_candidates(model, held, target=0.85, delta=0.1)
    assert cal.certified and cal.failure_count > MAX_FAILURE_VALUES
    return model, cal


def test_a_model_file_carries_its_calibration(tmp_path, rng, trained):
    model, cal = trained
    calibrated, plain = tmp_path / "calibrated.safetensors", tmp_path / "plain.safetensors"
    feedback.save_candidate_model(model, cal, calibrated)
    feedback.save_candidate_model(model, None, plain)
    assert feedback.read_calibration(calibrated) == cal
    assert feedback.read_calibration(plain) is None
    record = files.load_file(calibrated)
    assert Calibration.from_dict(json.loads(record.metadata[feedback.CALIBRATION_KEY])) == cal
    assert feedback.CALIBRATION_KEY not in files.load_file(plain).metadata
    model.save(tmp_path / "saved.safetensors")  # a model saved the ordinary way has none
    assert feedback.read_calibration(tmp_path / "saved.safetensors") is None

    router = Router(RouterConfig(model_path=calibrated, enable_quantization=False), clock=FakeClock(NOW))
    assert router.calibration == cal and router.threshold == cal.threshold
    assert router.metrics()["calibrated"] is True
    X = synthetic_features(rng, 50)
    np.testing.assert_array_equal(router.model.forward_batch(X), model.forward_batch(X))  # the saved weights
    response = router.route(candidate_request(rng, 60))
    conf = response.confidences.astype(np.float64)
    np.testing.assert_array_equal(response.lightweight, conf >= cal.threshold)
    assert 0 < response.lightweight_count < 60  # the threshold splits this request
    assert_float32_of(response.uncertainties, cal.uncertainty(conf))

    router.reload_model(plain)  # the uncalibrated file: the calibration goes with the old model
    assert router.calibration is None and router.threshold == router.config.effective_threshold
    assert not router.metrics()["calibrated"]
    router.reload_model(calibrated)
    assert router.calibration == cal and router.threshold == cal.threshold
    router.close()


def test_an_uncertified_calibration_routes_nothing(tmp_path, rng):
    model = FastGRNN(FastGRNNConfig(input_dim=5, hidden_dim=8), seed=3)
    cal = calibrate_lightweight_error(rng.uniform(size=100), np.zeros(100), 0.9, 0.1)
    assert not cal.certified and cal.threshold == math.inf
    path = tmp_path / "uncertified.safetensors"
    feedback.save_candidate_model(model, cal, path)
    assert json.loads(files.load_file(path).metadata[feedback.CALIBRATION_KEY])["threshold"] is None
    router = Router(RouterConfig(model_path=path), clock=FakeClock(NOW))
    assert router.calibration == cal and router.threshold == math.inf
    response = router.route(candidate_request(rng, 40))
    assert response.lightweight_count == 0 and not response.lightweight.any()
    assert_float32_of(response.uncertainties, cal.uncertainty(response.confidences.astype(np.float64)))
    router.close()


def test_the_calibration_comes_from_the_same_file_version_as_the_model(tmp_path, rng, monkeypatch, trained):
    """The router reads the model and its calibration from one version of the file: a new version renamed
    over it while the router loads (what watch_model and atomic deploys do) must not pair the old model with
    the new version's calibration, or the reverse: the file is read once, and the replacement lands right
    after the model was built from what was read."""
    model, cal = trained
    path = tmp_path / "serving.safetensors"
    feedback.save_candidate_model(model, cal, path)
    replacement = tmp_path / "next.safetensors"
    feedback.save_candidate_model(FastGRNN(FastGRNNConfig(input_dim=5, hidden_dim=8), seed=7), None, replacement)
    real_build = router_module.model_from_record

    def build_then_replace(record):
        built = real_build(record)
        if replacement.exists():
            os.replace(replacement, path)  # the next version lands right after the model was built
        return built

    monkeypatch.setattr(router_module, "model_from_record", build_then_replace)
    router = Router(RouterConfig(model_path=path, enable_quantization=False), clock=FakeClock(NOW))
    X = synthetic_features(rng, 50)
    np.testing.assert_array_equal(router.model.forward_batch(X), model.forward_batch(X))  # the first version...
    assert router.calibration == cal and router.threshold == cal.threshold  # ...with its own calibration
    assert not replacement.exists()  # the replacement did land
    router.close()


def _file_with_calibration_text(model: FastGRNN, text: str, path: Path) -> Path:
    record = model.to_record()
    metadata = dict(record.metadata)
    metadata[feedback.CALIBRATION_KEY] = text
    files.save_file(files.ModelRecord(record.format, metadata, dict(record.tensors)), path)
    return path


def _bad_calibration_texts(cal: Calibration) -> dict[str, str]:
    good = cal.to_dict()
    quality = calibrate_quality_loss(np.linspace(0, 1, 200), np.ones(200), np.ones(200), 0.9, 0.1).to_dict()
    assert quality["risk"] == "quality_loss"
    missing = dict(good)
    del missing["failure_count"]
    return {
        "not json": "{not json",
        "a list": json.dumps([1, 2, 3]),
        "missing key": json.dumps(missing),
        "extra key": json.dumps({**good, "extra": 1}),
        "bad threshold": json.dumps({**good, "threshold": "high"}),
        "unsorted failures": json.dumps({**good, "failure_values": good["failure_values"][::-1]}),
        "more failures than queries": json.dumps({**good, "failure_count": good["n"] + 1}),
        "quality_loss": json.dumps(quality),
    }


def test_malformed_or_quality_loss_calibrations_are_refused_at_load(tmp_path, rng, trained):
    model, cal = trained
    good_path = tmp_path / "good.safetensors"
    feedback.save_candidate_model(model, cal, good_path)
    router = Router(RouterConfig(model_path=good_path), clock=FakeClock(NOW))
    serving = router.model
    for name, text in _bad_calibration_texts(cal).items():
        path = _file_with_calibration_text(model, text, tmp_path / f"{name.replace(' ', '_')}.safetensors")
        with pytest.raises(ModelError) as info:
            feedback.read_calibration(path)
        assert isinstance(info.value, ModelSchemaError), name
        with pytest.raises(ModelError):
            Router(RouterConfig(model_path=path))
        failures = router.metrics()["reload_failures"]
        with pytest.raises(ModelError):
            router.reload_model(path)
        # the old model and its calibration keep serving
        assert router.model is serving and router.calibration == cal and router.threshold == cal.threshold
        assert router.metrics()["reload_failures"] == failures + 1
    router.close()


def test_save_candidate_model_refuses_a_quality_loss_calibration(tmp_path, rng):
    model = FastGRNN(FastGRNNConfig(input_dim=5, hidden_dim=8), seed=0)
    quality = calibrate_quality_loss(rng.uniform(size=300), np.ones(300), rng.uniform(size=300) < 0.95, 0.8, 0.1)
    path = tmp_path / "q.safetensors"
    with pytest.raises(InvalidInputError, match="lightweight_error"):
        feedback.save_candidate_model(model, quality, path)
    assert not path.exists()
    with pytest.raises(TinyDancerError):  # a router without a database has no outcomes to calibrate on
        Router(RouterConfig(), clock=FakeClock(NOW)).record_outcome("x", True)
