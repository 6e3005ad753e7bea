"""tinydancer.query_router: training, scoring, routing, calibration, files and bad input (synthetic data)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tinydancer.errors import InvalidInputError, ModelError, ModelFileError, ModelFormatError, ModelSchemaError
from tinydancer.model import files
from tinydancer.query_router import EnsembleConfig, QueryDecision, QueryRouter, outcomes
from tinydancer.query_router.ensemble import merge, train_ensemble

SMALL = EnsembleConfig(members=2, hidden=4, epochs=25, patience=5)


def synthetic(n: int, dim: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Queries whose first embedding coordinate says how hard they are: the weak model fails hard ones,
    the strong model fails a few of the hardest; prompt length grows with hardness."""
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((n, dim)).astype(np.float32)
    hard = 1.0 / (1.0 + np.exp(-2.5 * E[:, 0]))
    weak = (rng.random(n) > hard).astype(np.float64)
    strong = (rng.random(n) > 0.3 * hard).astype(np.float64)
    length = np.exp(4.0 + hard + 0.2 * rng.standard_normal(n))
    return {"E": E, "strong": strong, "weak": weak, "length": length, "hard": hard}


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return synthetic(3000)


@pytest.fixture(scope="module")
def router(data) -> QueryRouter:
    return QueryRouter.fit(data["E"][:2000], strong=data["strong"][:2000], weak=data["weak"][:2000], config=SMALL)


# ----------------------------------------------------------------------------------------------------------
# Outcomes
# ----------------------------------------------------------------------------------------------------------


def test_outcome_classes():
    s = np.array([1, 1, 0, 0], float)
    w = np.array([1, 0, 1, 0], float)
    assert outcomes.encode("binary", s, w).tolist() == [0, 1, 2, 3]
    assert outcomes.good_enough("binary", s, w).tolist() == [1, 0, 1, 1]
    g = np.array([9, 5, 3], float), np.array([4, 5, 7], float)
    assert outcomes.encode("graded", *g).tolist() == [0, 1, 2]
    assert outcomes.good_enough("graded", *g).tolist() == [0, 1, 1]
    assert outcomes.encode("labels", np.array([1.0, 0.0]), np.array([1.0, 0.0])).tolist() == [0, 1]


def test_score_and_gain_from_probabilities():
    p = np.array([[0.5, 0.3, 0.1, 0.1]], np.float32)  # both right, strong only, weak only, both wrong
    score, gain = outcomes.score_and_gain("binary", p)
    assert score[0] == pytest.approx(0.7) and gain[0] == pytest.approx(0.2)
    score, gain = outcomes.score_and_gain("graded", np.array([[0.6, 0.3, 0.1]], np.float32))
    assert score[0] == pytest.approx(0.4) and gain[0] == pytest.approx(0.5)
    score, gain = outcomes.score_and_gain("labels", np.array([[0.8, 0.2]], np.float32))
    assert score[0] == pytest.approx(0.8) and gain[0] == pytest.approx(0.2)


@pytest.mark.parametrize("kind", ["binary", "graded", "labels"])
def test_the_outcome_kind_follows_the_data(data, kind):
    n = 400
    if kind == "labels":
        r = QueryRouter.fit(data["E"][:n], np.maximum(data["weak"][:n], 1 - data["strong"][:n]), config=SMALL)
    elif kind == "graded":
        r = QueryRouter.fit(data["E"][:n], strong=data["strong"][:n] * 7 + 2, weak=data["weak"][:n] * 5 + 3,
                            config=SMALL)
    else:
        r = QueryRouter.fit(data["E"][:n], strong=data["strong"][:n], weak=data["weak"][:n], config=SMALL)
    assert r.outcome_kind == kind and r.model.config.output_dim == len(outcomes.CLASSES[kind])


# ----------------------------------------------------------------------------------------------------------
# The merged ensemble
# ----------------------------------------------------------------------------------------------------------


def test_the_merged_model_averages_the_members_logits(data):
    X = data["E"][:500]
    classes = outcomes.encode("binary", data["strong"][:500], data["weak"][:500])
    members = train_ensemble(X, classes, 4, EnsembleConfig(members=3, hidden=4, epochs=5), seed=3)
    assert len({float(m.parameters()["zeta"]) for m in members}) == 1  # the gates were held
    merged = merge(members)
    assert merged.config.hidden_dim == 12
    logits = []
    for m in members:
        p = m.parameters()
        pre = X @ p["W"].T
        z = 1 / (1 + np.exp(-(pre + p["b_z"])))
        h = (1 / (1 + np.exp(-p["zeta"])) * (1 - z) + 1 / (1 + np.exp(-p["nu"]))) * np.tanh(pre + p["b_h"])
        logits.append(h @ p["w_out"].T + p["b_out"])
    mean = np.mean(logits, axis=0)
    expected = np.exp(mean - mean.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(merged.forward_batch(X), expected, atol=2e-5)


def test_fit_is_deterministic(data):
    a = QueryRouter.fit(data["E"][:300], strong=data["strong"][:300], weak=data["weak"][:300], config=SMALL, seed=4)
    b = QueryRouter.fit(data["E"][:300], strong=data["strong"][:300], weak=data["weak"][:300], config=SMALL, seed=4)
    np.testing.assert_array_equal(a.score(data["E"][300:400]), b.score(data["E"][300:400]))


def test_the_model_learns_who_needs_the_strong_model(router, data):
    gain = router.expected_gain(data["E"][2000:])
    hard = data["hard"][2000:]
    assert np.corrcoef(gain, hard)[0, 1] > 0.5
    score = router.score(data["E"][2000:])
    assert np.corrcoef(score, hard)[0, 1] < -0.5


# ----------------------------------------------------------------------------------------------------------
# Scoring and routing
# ----------------------------------------------------------------------------------------------------------


def test_score_one_and_many_agree(router, data):
    E = data["E"][2000:2010]
    many = router.score(E)
    assert many.dtype == np.float32 and many.shape == (10,)
    one = router.score(E[3])
    assert isinstance(one, float) and one == pytest.approx(float(many[3]), abs=1e-6)
    assert router.expected_gain(E[3]) == pytest.approx(float(router.expected_gain(E)[3]), abs=1e-6)


def test_an_uncalibrated_router_sends_everything_to_the_powerful_model(router, data):
    d = router.route(data["E"][2000])
    assert isinstance(d, QueryDecision)
    assert not d.use_lightweight and not d.certified and d.threshold == np.inf and d.uncertainty == 1.0
    batch = router.route_batch(data["E"][2000:2100])
    assert not batch.use_lightweight.any() and not batch.certified and batch.lightweight_share == 0.0


@pytest.mark.parametrize("risk, target", [("lightweight_error", 0.85), ("quality_loss", 0.9)])
def test_calibrated_routing(data, risk, target):
    r = QueryRouter.fit(data["E"][:2000], strong=data["strong"][:2000], weak=data["weak"][:2000], config=SMALL)
    cal_rows = slice(2000, 2600)
    cal = r.calibrate(data["E"][cal_rows], target=target, delta=0.1, risk=risk, strong=data["strong"][cal_rows],
                      weak=data["weak"][cal_rows])
    assert cal.certified and r.calibration is cal and cal.risk == risk
    test = slice(2600, 3000)
    batch = r.route_batch(data["E"][test])
    assert batch.certified and batch.threshold == cal.threshold
    assert 0.0 < batch.lightweight_share < 1.0
    for arr in (batch.use_lightweight, batch.confidence, batch.uncertainty, batch.expected_gain):
        assert not arr.flags.writeable and arr.shape == (400,)
    # one at a time gives the same decisions
    for i in range(0, 400, 37):
        d = r.route(data["E"][test][i])
        assert d.use_lightweight == bool(batch.use_lightweight[i]) and d.threshold == cal.threshold
        assert d.confidence == float(batch.confidence[i]) and d.expected_gain == float(batch.expected_gain[i])
        assert d.uncertainty == pytest.approx(float(batch.uncertainty[i]))
    value = batch.confidence if risk == "lightweight_error" else batch.expected_gain
    np.testing.assert_array_equal(batch.uncertainty, cal.uncertainty(value))
    if risk == "lightweight_error":
        assert np.array_equal(batch.use_lightweight, batch.confidence >= cal.threshold)
    else:
        assert np.array_equal(batch.use_lightweight, batch.expected_gain <= cal.threshold)


def test_an_uncertifiable_target_routes_nothing_to_the_lightweight_model(router, data):
    r = QueryRouter.fit(data["E"][:500], strong=data["strong"][:500], weak=data["weak"][:500], config=SMALL)
    cal = r.calibrate(data["E"][2000:2030], target=0.999, delta=0.01, strong=data["strong"][2000:2030],
                      weak=data["weak"][2000:2030])
    assert not cal.certified
    batch = r.route_batch(data["E"][2600:2700])
    assert not batch.certified and not batch.use_lightweight.any()
    assert not r.route(data["E"][2600]).use_lightweight


def test_the_prompt_length_side_input(data):
    n = 1500
    r = QueryRouter.fit(data["E"][:n], strong=data["strong"][:n], weak=data["weak"][:n],
                        prompt_length=data["length"][:n], config=SMALL)
    assert r.uses_prompt_length and r.model.config.input_dim == 17
    E, L = data["E"][2000:2050], data["length"][2000:2050]
    many = r.score(E, prompt_length=L)
    assert r.score(E[7], prompt_length=float(L[7])) == pytest.approx(float(many[7]), abs=1e-6)
    with pytest.raises(InvalidInputError, match="reads the prompt length: pass prompt_length"):
        r.score(E)
    with pytest.raises(InvalidInputError, match=r"prompt_length\[0\] must be finite and > 0 \(characters\), got 0.0"):
        r.score(E, prompt_length=np.zeros(50))
    with pytest.raises(InvalidInputError, match="prompt_length must have one entry per query"):
        r.score(E, prompt_length=L[:3])
    plain = QueryRouter.fit(data["E"][:300], strong=data["strong"][:300], weak=data["weak"][:300], config=SMALL)
    with pytest.raises(InvalidInputError, match="does not read it"):
        plain.score(E, prompt_length=L)


# ----------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path, data):
    r = QueryRouter.fit(data["E"][:1500], strong=data["strong"][:1500], weak=data["weak"][:1500],
                        prompt_length=data["length"][:1500], config=SMALL)
    path = tmp_path / "q.safetensors"
    r.save(path)  # not calibrated yet
    assert QueryRouter.load(path).calibration is None
    r.calibrate(data["E"][2000:2600], target=0.85, strong=data["strong"][2000:2600], weak=data["weak"][2000:2600],
                prompt_length=data["length"][2000:2600])
    r.save(path)
    back = QueryRouter.load(path)
    assert back.calibration == r.calibration and back.outcome_kind == r.outcome_kind
    E, L = data["E"][2600:], data["length"][2600:]
    a, b = r.route_batch(E, prompt_length=L), back.route_batch(E, prompt_length=L)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    np.testing.assert_array_equal(a.use_lightweight, b.use_lightweight)
    assert path.stat().st_size < 16 * 1024


def test_bad_files(tmp_path, router):
    path = tmp_path / "q.safetensors"
    with pytest.raises(ModelFileError):
        QueryRouter.load(tmp_path / "absent.safetensors")
    path.write_bytes(b"not a model")
    with pytest.raises(ModelFormatError):
        QueryRouter.load(path)
    router.model.save(path)  # a plain FastGRNN file
    with pytest.raises(ModelSchemaError, match="not a query router file"):
        QueryRouter.load(path)
    router.save(path)
    record = files.load_file(path)
    for key, value in [("version", 2), ("outcomes", "weird"), ("embedding_dim", 99), ("calibration", {"risk": 1}),
                       ("prompt_length", {"log_mean": 1.0})]:
        meta = dict(record.json("query_router"))
        meta[key] = value
        bad = dict(record.metadata)
        bad["query_router"] = __import__("json").dumps(meta)
        files.save_file(files.ModelRecord(record.format, bad, record.tensors), path)
        with pytest.raises(ModelSchemaError, match="query_router metadata"):
            QueryRouter.load(path)
    fifo = tmp_path / "pipe"
    __import__("os").mkfifo(fifo)
    with pytest.raises(ModelError):
        router.save(fifo)


# ----------------------------------------------------------------------------------------------------------
# Bad input, threads
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r, E: r.score(np.full(16, np.nan)), "embedding holds"),
        (lambda r, E: r.score(np.ones(15)), "embedding must have length 16"),
        (lambda r, E: r.score(np.ones((3, 15))), "embeddings must have 16 columns"),
        (lambda r, E: r.score(np.ones((0, 16))), "embeddings is empty"),
        (lambda r, E: r.score(np.array([["a"] * 16])), "embeddings must hold real numbers"),
        (lambda r, E: r.score(np.where(np.eye(3, 16) > 0, np.inf, 0.0)), r"embeddings holds a non-finite value \(inf\) at \[0, 0\]"),
        (lambda r, E: r.route(E), "embedding must be a 1-D array"),
        (lambda r, E: r.route_batch(E[0]), "embeddings must be a 2-D array"),
        (lambda r, E: r.calibrate(E, np.full(len(E), 0.5)), "labels must be 0 or 1"),
        (lambda r, E: r.calibrate(E, np.ones(len(E)), target=1.0), "target"),
        (lambda r, E: r.calibrate(E, np.ones(len(E)), target=0.0), "target"),
        (lambda r, E: r.calibrate(E, np.ones(len(E)), delta=1.5), "delta"),
        (lambda r, E: r.calibrate(E, np.ones(len(E)), risk="other"), "risk must be one of"),
        (lambda r, E: r.calibrate(E, np.ones(len(E)), risk="quality_loss"), "needs strong and weak"),
        (lambda r, E: r.calibrate(E, np.ones(3)), "labels must have one entry per query"),
        (lambda r, E: r.calibrate(E), "give labels, or both strong and weak"),
        (lambda r, E: r.calibrate(E, np.ones(len(E)), strong=np.ones(len(E)), weak=np.ones(len(E))),
         "either labels or strong and weak"),
    ],
)
def test_bad_input(router, data, call, message):
    with pytest.raises(InvalidInputError, match=message):
        call(router, data["E"][2000:2050])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(labels=np.ones(20)), "at least 10|one entry per query"),
        (dict(strong=np.ones(50)), "give labels, or both strong and weak"),
        (dict(strong=np.ones(50), weak=np.full(50, np.nan)), "weak holds NaN"),
        (dict(labels=np.ones(50), seed=-1), "seed"),
        (dict(labels=np.ones(50), config="big"), "config must be an EnsembleConfig"),
    ],
)
def test_bad_fit_arguments(data, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        QueryRouter.fit(data["E"][:50], **kwargs)


def test_routing_while_calibrating(data):
    r = QueryRouter.fit(data["E"][:800], strong=data["strong"][:800], weak=data["weak"][:800], config=SMALL)
    E = data["E"][2600:2700]
    errors: list[BaseException] = []

    def route() -> None:
        try:
            for _ in range(200):
                batch = r.route_batch(E)
                cal = r.calibration
                if batch.certified:
                    assert batch.threshold in {c.threshold for c in calibrations}
                assert cal is None or cal in calibrations
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    calibrations = []
    threads = [threading.Thread(target=route) for _ in range(3)]
    for t in threads:
        t.start()
    for target in (0.8, 0.85, 0.9, 0.8):
        calibrations.append(r.calibrate(data["E"][2000:2600], target=target, strong=data["strong"][2000:2600],
                                        weak=data["weak"][2000:2600]))
    for t in threads:
        t.join()
    assert not errors


def test_the_shipped_default_query_model():
    from pathlib import Path

    from tinydancer.query_router import default_query_model_path

    r = QueryRouter.default()
    assert Path(default_query_model_path()).stat().st_size <= 16 * 1024
    cal = r.calibration
    assert cal is not None and cal.certified and cal.risk == "quality_loss" and cal.target == 0.95
    assert r.embedding_dim == 384 and r.uses_prompt_length and r.outcome_kind == "binary"
    rng = np.random.default_rng(0)
    E = rng.standard_normal((200, 384)).astype(np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    batch = r.route_batch(E, prompt_length=rng.integers(50, 2000, 200))
    assert batch.certified and batch.threshold == cal.threshold
    assert np.array_equal(batch.use_lightweight, batch.expected_gain <= cal.threshold)


def test_a_calibration_tensor_without_its_metadata_is_refused(tmp_path, router, data):
    import json

    r = QueryRouter.fit(data["E"][:500], strong=data["strong"][:500], weak=data["weak"][:500], config=SMALL)
    r.calibrate(data["E"][2000:2600], target=0.85, strong=data["strong"][2000:2600], weak=data["weak"][2000:2600])
    path = tmp_path / "q.safetensors"
    r.save(path)
    record = files.load_file(path)
    meta = dict(record.json("query_router"), calibration=None)
    files.save_file(files.ModelRecord(record.format, {**record.metadata, "query_router": json.dumps(meta)},
                                      record.tensors), path)
    with pytest.raises(ModelSchemaError, match="a calibration needs the tensor"):
        QueryRouter.load(path)


# ----------------------------------------------------------------------------------------------------------
# The query pass, on every ISA, against a float64 reference
# ----------------------------------------------------------------------------------------------------------


def reference_scores(router: QueryRouter, E: np.ndarray, lengths: np.ndarray | None) -> tuple[np.ndarray, ...]:
    p = router.model.parameters()
    X = E.astype(np.float64)
    if lengths is not None:
        mean, std = router._length
        X = np.hstack([X, ((np.log(lengths) - mean) / std)[:, None]])
    pre = X @ p["W"].astype(np.float64).T
    z = 1 / (1 + np.exp(-(pre + p["b_z"])))
    h = (1 / (1 + np.exp(-float(p["zeta"]))) * (1 - z) + 1 / (1 + np.exp(-float(p["nu"])))) * np.tanh(pre + p["b_h"])
    logits = h @ p["w_out"].T.astype(np.float64) + p["b_out"]
    q = np.exp(logits - logits.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    return 1 - q[:, 1], q[:, 1] - q[:, 2]


@pytest.mark.parametrize("lengths", [False, True])
def test_the_query_pass_against_a_reference_on_every_isa(data, lengths):
    from tinydancer import kernels

    n = 1200
    kw = {"prompt_length": data["length"][:n]} if lengths else {}
    r = QueryRouter.fit(data["E"][:n], strong=data["strong"][:n], weak=data["weak"][:n], config=SMALL, **kw)
    E = data["E"][2000:2037]  # an odd batch size
    L = data["length"][2000:2037] if lengths else None
    want_score, want_gain = reference_scores(r, E, L)
    before = kernels.active_isa()
    try:
        for isa in kernels.available_isas():
            kernels.set_isa(isa)
            score, gain = r.score(E, prompt_length=L), r.expected_gain(E, prompt_length=L)
            np.testing.assert_allclose(score, want_score, atol=2e-5, err_msg=isa)
            np.testing.assert_allclose(gain, want_gain, atol=2e-5, err_msg=isa)
            view = np.asfortranarray(E)[::1]  # not C-contiguous: converted once
            np.testing.assert_array_equal(r.score(view, prompt_length=L), score)
            for i in (0, 17, 36):
                one = r.score(E[i], prompt_length=None if L is None else float(L[i]))
                assert one == float(score[i]), isa
    finally:
        kernels.set_isa(before)


def test_the_query_pass_checks_its_model(router):
    from tinydancer import kernels

    cell = router.model.cell
    with pytest.raises(InvalidInputError, match="does not read 15 embedding values"):
        kernels.QueryPass(cell, 15, 1, 1, 2)
    with pytest.raises(InvalidInputError, match="class indices 1, 1, 9 do not fit 4 outputs"):
        kernels.QueryPass(cell, 16, 1, 1, 9)
    with pytest.raises(InvalidInputError, match="does not read 16 embedding values and a length"):
        kernels.QueryPass(cell, 16, 1, 1, 2, (1.0, 1.0))


def test_decisions_are_read_only_and_uncertainty_is_computed_once(data):
    r = QueryRouter.fit(data["E"][:1500], strong=data["strong"][:1500], weak=data["weak"][:1500],
                        prompt_length=data["length"][:1500], config=SMALL)
    r.calibrate(data["E"][2000:2600], target=0.85, strong=data["strong"][2000:2600], weak=data["weak"][2000:2600],
                prompt_length=data["length"][2000:2600])
    batch = r.route_batch(data["E"][2600:2700], prompt_length=data["length"][2600:2700])
    with pytest.raises(AttributeError, match="read-only"):
        batch.threshold = 0.0
    u = batch.uncertainty
    assert u is batch.uncertainty and not u.flags.writeable
    np.testing.assert_array_equal(u, r.calibration.uncertainty(batch.confidence))
    E = data["E"][2600:2700].copy()
    E[41, 5] = np.nan
    with pytest.raises(InvalidInputError, match=r"embeddings holds a non-finite value \(nan\) at \[41, 5\]"):
        r.route_batch(E, prompt_length=data["length"][2600:2700])
