"""RoutePass: the features it can keep for the decision log, and the calibrated pass (a certified threshold
and the calibration's conformal uncertainty instead of the crate's heuristic).

Both are checked on every ISA the machine can run (the ``isa`` fixture of conftest.py): the kept features
against :func:`kernels.candidate_features` bit for bit (the same C code path writes both), and the calibrated
uncertainty against :meth:`Calibration.uncertainty` computed in float64 from the same confidences.
"""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest

from tinydancer import kernels
from tinydancer.calibration import (
    MAX_FAILURE_VALUES,
    Calibration,
    calibrate_lightweight_error,
)
from tinydancer.errors import InvalidInputError
from tinydancer.kernels import FastGRNNCell

NOW = 1_800_000_000.0
SIZES = [0, 1, 7, 32, 33, 100]  # above 32 candidates the result block also holds the merge sort's scratch
WEIGHTS = kernels.FeatureWeights((0.7, 0.3, 0.25, 0.5, 0.9), recency_decay=0.002)


def scorer(rng: np.random.Generator) -> FastGRNNCell:
    """A random candidate scorer (input 5, hidden 8) whose confidences spread over much of (0, 1)."""
    return FastGRNNCell(2.0 * rng.standard_normal((8, 5)), rng.standard_normal((8, 8)), rng.standard_normal(8),
                        rng.standard_normal(8), 1.5 * rng.standard_normal(8), 0.1, zeta=1.0, nu=-4.0)


def request(rng: np.random.Generator, n: int, dim: int = 24, norms: bool = False):
    """(query, CandidateColumns, overlap) for n random candidates; a few duplicates so that
    equal confidences exercise the stable rank order."""
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    created = NOW - rng.uniform(-30, 4000, n)
    counts = rng.integers(0, 20000, n)
    success = rng.uniform(0, 1, n).astype(np.float32)
    if n >= 4:  # candidates 0 and n-1 identical: one confidence, two positions
        emb[-1], created[-1], counts[-1], success[-1] = emb[0], created[0], counts[0], success[0]
    query = rng.standard_normal(dim).astype(np.float32)
    overlap = rng.uniform(0, 1, n).astype(np.float32)
    if n >= 4:
        overlap[-1] = overlap[0]
    cols = kernels.CandidateColumns(emb, created, counts, success, kernels.l2_norms(emb) if norms else None)
    return query, cols, overlap


def assert_float32_of(got: np.ndarray, reference) -> None:
    """``got`` (float32) is the float64 ``reference`` to within float32 rounding (one unit in the last place)."""
    ref = np.broadcast_to(np.asarray(reference, np.float64), np.shape(got))
    assert got.dtype == np.float32
    assert np.all(np.abs(got.astype(np.float64) - ref) <= 2.0**-23 * np.abs(ref)), (got, ref)


def same_decisions(a: kernels.RouteResult, b: kernels.RouteResult) -> None:
    for name in ("confidence", "uncertainty", "lightweight", "order"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.lightweight_count == b.lightweight_count == int(np.count_nonzero(a.lightweight))
    assert a.n == b.n == len(a) == len(b)


# ---------------------------------------------------------------------------------------------------------
# keep_features
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_overlap", [False, True])
@pytest.mark.parametrize("n", SIZES)
def test_kept_features_equal_candidate_features(isa, rng, n, with_overlap):
    cell = scorer(rng)
    query, cols, overlap = request(rng, n, norms=n % 2 == 1)
    overlap = overlap if with_overlap else None
    route_pass = kernels.RoutePass(cell, WEIGHTS, 0.6, 0.5)

    plain = route_pass.route(query, cols, NOW, overlap)
    kept = route_pass.route(query, cols, NOW, overlap, keep_features=True)
    keyword = route_pass.route(query, cols, NOW, metadata_overlap=overlap, keep_features=False)

    assert plain.features is None and keyword.features is None
    feats = kept.features
    assert feats is not None and feats.shape == (n, 5) and feats.dtype == np.float32
    assert feats.flags.c_contiguous and not feats.flags.writeable
    assert kept.features is feats  # one view, made on first access
    with pytest.raises(ValueError):
        feats[...] = 0.0

    expected = kernels.candidate_features(query, cols, now=NOW, metadata_overlap=overlap, weights=WEIGHTS)
    assert expected.shape == (n, 5)
    np.testing.assert_array_equal(feats.view(np.uint32), expected.view(np.uint32))  # bit for bit
    if with_overlap and n:
        np.testing.assert_array_equal(feats[:, 4], np.float32(0.9) * overlap)
    elif n:
        assert not feats[:, 4].any()

    # keeping the features changes no decision, and the decisions are the model's on those features
    same_decisions(plain, kept)
    same_decisions(plain, keyword)
    np.testing.assert_array_equal(kept.confidence, kernels.score_candidates(cell, query, cols, now=NOW,
                                                                           metadata_overlap=overlap,
                                                                           weights=WEIGHTS))
    if n:
        np.testing.assert_allclose(kept.confidence, np.asarray(cell.forward_batch(expected)).reshape(-1),
                                   atol=1e-6, rtol=0)
    np.testing.assert_array_equal(kept.order, np.argsort(-kept.confidence, kind="stable"))
    np.testing.assert_array_equal(kept.lightweight, (kept.confidence >= np.float32(0.6))
                                  & (kept.uncertainty <= np.float32(0.5)))


@pytest.mark.parametrize("n", [33, 100])
def test_kept_features_with_a_calibrated_pass(isa, rng, n):
    cell = scorer(rng)
    query, cols, overlap = request(rng, n)
    cal_pass = kernels.RoutePass(cell, WEIGHTS, 0.5, 0.1, failure_values=[0.9, 0.2, 0.6], failure_count=7)
    plain = cal_pass.route(query, cols, NOW, overlap)
    kept = cal_pass.route(query, cols, NOW, overlap, keep_features=True)
    same_decisions(plain, kept)
    expected = kernels.candidate_features(query, cols, now=NOW, metadata_overlap=overlap, weights=WEIGHTS)
    np.testing.assert_array_equal(kept.features.view(np.uint32), expected.view(np.uint32))


def test_every_isa_keeps_its_own_candidate_features(rng):
    """Every ISA keeps what candidate_features computes on that ISA, and the ISAs agree closely."""
    cell = scorer(rng)
    query, cols, overlap = request(rng, 100, dim=200)
    before = kernels.active_isa()
    kept = {}
    try:
        for isa in kernels.available_isas():
            kernels.set_isa(isa)
            result = kernels.RoutePass(cell, WEIGHTS).route(query, cols, NOW, overlap, keep_features=True)
            expected = kernels.candidate_features(query, cols, now=NOW, metadata_overlap=overlap, weights=WEIGHTS)
            np.testing.assert_array_equal(result.features.view(np.uint32), expected.view(np.uint32), err_msg=isa)
            kept[isa] = np.array(result.features)
    finally:
        kernels.set_isa(before)
    for isa, feats in kept.items():
        np.testing.assert_allclose(feats, kept["scalar"], atol=2e-6, rtol=0, err_msg=isa)


def _route_and_forget(rng, n, expected_out: list):
    """Route with every other reference (pass, model, columns, query) dropped inside; return the result."""
    cell = scorer(rng)
    query, cols, overlap = request(rng, n)
    route_pass = kernels.RoutePass(cell, WEIGHTS, 0.6, 0.5)
    expected_out.append(kernels.candidate_features(query, cols, now=NOW, metadata_overlap=overlap, weights=WEIGHTS))
    expected_out.append(np.array(route_pass.route(query, cols, NOW, overlap).confidence))
    return route_pass.route(query, cols, NOW, overlap, keep_features=True)


def _churn():
    """Allocate and free many blocks of similar sizes, so freed memory would be reused and overwritten."""
    junk = [np.full(k, 0xA5, np.uint8) for k in range(1, 6000, 7)]
    del junk
    gc.collect()


@pytest.mark.parametrize("n", [1, 7, 32, 33, 100])
def test_features_survive_when_the_result_is_the_only_reference(rng, n):
    expected: list = []
    result = _route_and_forget(rng, n, expected)
    gc.collect()
    _churn()
    # the result alone keeps its block: the features read after everything else is gone
    np.testing.assert_array_equal(result.features, expected[0])
    np.testing.assert_array_equal(result.confidence, expected[1])

    # and a view alone keeps the block once the result is gone
    expected = []
    result = _route_and_forget(rng, n, expected)
    feats, conf = result.features, result.confidence
    del result
    gc.collect()
    _churn()
    np.testing.assert_array_equal(feats, expected[0])
    np.testing.assert_array_equal(conf, expected[1])
    assert feats.base is not None  # a view of the block, not a copy


def test_features_of_two_results_are_independent(rng):
    cell = scorer(rng)
    route_pass = kernels.RoutePass(cell, WEIGHTS)
    q1, c1, o1 = request(rng, 40)
    q2, c2, o2 = request(rng, 40)
    r1 = route_pass.route(q1, c1, NOW, o1, keep_features=True)
    f1 = np.array(r1.features)
    r2 = route_pass.route(q2, c2, NOW, o2, keep_features=True)
    np.testing.assert_array_equal(r1.features, f1)  # the second pass wrote its own block
    assert not np.array_equal(r1.features, r2.features)
    assert not np.shares_memory(r1.features, r2.features)


def test_results_from_arrays_and_pickles_have_no_features(rng):
    conf = rng.uniform(0, 1, 5).astype(np.float32)
    made = kernels.RouteResult.from_arrays(conf, 1 - conf, conf > 0.5, np.argsort(-conf, kind="stable"))
    assert made.features is None


# ---------------------------------------------------------------------------------------------------------
# the calibrated pass
# ---------------------------------------------------------------------------------------------------------


def calibration_on(rng: np.random.Generator, pool: np.ndarray, n: int, bad_share: float | None = None,
                   target: float = 0.9, delta: float = 0.1) -> Calibration:
    """A lightweight_error calibration on n scores drawn half from ``pool`` (confidences the pass will see,
    so some ties are exact) and half uniformly over their range; P(bad) falls with the score's rank, or is
    ``bad_share`` everywhere when given."""
    lo, hi = float(pool.min()), float(pool.max())
    half = n // 2
    scores = np.concatenate([rng.choice(pool.astype(np.float64), half), rng.uniform(lo, hi, n - half)])
    if bad_share is None:  # by rank: the share of bad outcomes among the top f of the scores is 0.2 f^2
        rank = np.argsort(np.argsort(scores, kind="stable"), kind="stable") / n
        p_bad = 0.6 * (1.0 - rank) ** 2
    else:
        p_bad = np.full(n, bad_share)
    good = rng.uniform(size=n) >= p_bad
    return calibrate_lightweight_error(scores, good, target, delta)


def calibrated_pass(cell, cal: Calibration, max_uncertainty: float = 0.0) -> kernels.RoutePass:
    # max_uncertainty 0 would send nothing to the lightweight model if it were used
    return kernels.RoutePass(cell, WEIGHTS, cal.threshold, max_uncertainty, failure_values=cal.failure_values,
                             failure_count=cal.failure_count)


def check_calibrated(result: kernels.RouteResult, plain: kernels.RouteResult, cal: Calibration) -> None:
    conf = result.confidence
    # the model, features and rank order are those of the plain pass
    np.testing.assert_array_equal(conf, plain.confidence)
    np.testing.assert_array_equal(result.order, plain.order)
    # lightweight: confidence >= the certified threshold, nothing else
    expected_light = conf.astype(np.float64) >= cal.threshold
    np.testing.assert_array_equal(result.lightweight, expected_light)
    np.testing.assert_array_equal(result.lightweight, cal.use_lightweight(conf.astype(np.float64)))
    assert result.lightweight_count == int(np.count_nonzero(expected_light))
    # uncertainty: the calibration's conformal p-value, rounded to float32
    unc = result.uncertainty
    assert unc.dtype == np.float32 and not unc.flags.writeable
    reference = np.asarray(cal.uncertainty(conf.astype(np.float64)), dtype=np.float64).reshape(-1)
    assert_float32_of(unc, reference)
    if conf.size:  # the one-number path of Calibration.uncertainty agrees too
        i = int(np.argmax(conf))
        assert_float32_of(unc[i:i + 1], cal.uncertainty(float(conf[i])))


@pytest.mark.parametrize("n", SIZES)
def test_calibrated_pass_matches_the_calibration(isa, rng, n):
    cell = scorer(rng)
    query, cols, overlap = request(rng, 300)
    pool = kernels.RoutePass(cell, WEIGHTS).route(query, cols, NOW, overlap).confidence
    # the candidates routed: n of those the calibration drew its tied scores from
    pick = rng.choice(300, n, replace=False)
    emb = cols.embeddings[pick]
    sub = kernels.CandidateColumns(emb, cols.created_at[pick], cols.access_count[pick], cols.success_rate[pick])
    sub_overlap = overlap[pick]

    few = calibration_on(rng, pool, 400)
    many = calibration_on(rng, pool, 4000)
    none = calibration_on(rng, pool, 300, bad_share=0.0)
    uncertified = calibration_on(rng, pool, 200, bad_share=0.6)
    assert few.certified and 0 < few.failure_count <= MAX_FAILURE_VALUES
    assert len(few.failure_values) == few.failure_count
    assert many.failure_count > MAX_FAILURE_VALUES and len(many.failure_values) == MAX_FAILURE_VALUES
    assert none.failure_count == 0 and none.failure_values == () and none.certified
    assert not uncertified.certified and uncertified.threshold == math.inf and uncertified.failure_count > 0

    plain = kernels.RoutePass(cell, WEIGHTS, 0.6, 0.5).route(query, sub, NOW, sub_overlap)
    for cal in (few, many, none, uncertified):
        route_pass = calibrated_pass(cell, cal)
        assert route_pass.calibrated
        result = route_pass.route(query, sub, NOW, sub_overlap)
        check_calibrated(result, plain, cal)
        if cal is none:
            assert np.all(result.uncertainty == 1.0)
        if cal is uncertified:
            assert not result.lightweight.any() and result.lightweight_count == 0
    assert not kernels.RoutePass(cell, WEIGHTS).calibrated


def test_calibrated_pass_on_exact_ties_and_extremes(isa, rng):
    """Confidences equal to stored failure values count those failures ("score >= p"), confidences above
    every failure get 1 / (1 + failure_count), those at the lowest failure 1; exactly, and with only
    quantiles stored."""
    cell = scorer(rng)
    query, cols, overlap = request(rng, 100)
    plain = kernels.RoutePass(cell, WEIGHTS).route(query, cols, NOW, overlap)
    conf = plain.confidence.astype(np.float64)
    ranked = np.sort(np.unique(conf))
    failures = ranked[:-3]  # every confidence but the top three failed once: the routed ones tie with them
    exact = Calibration(risk="lightweight_error", threshold=float(ranked[-5]), certified=True, target=0.9,
                        delta=0.1, n=len(failures) + 500, lightweight_share=0.01, failure_count=len(failures),
                        failure_values=tuple(float(v) for v in failures[::-1]))  # highest first
    # many failures, all at routed confidences, and good outcomes at the top: only quantiles are stored
    bad = np.repeat(failures, 12)
    good = np.repeat(ranked[-3:], 400)
    quantiles = calibrate_lightweight_error(np.concatenate([bad, good]),
                                            np.r_[np.zeros(bad.size), np.ones(good.size)], 0.9, 0.1)
    assert quantiles.failure_count == bad.size > MAX_FAILURE_VALUES
    assert set(quantiles.failure_values) <= set(failures.tolist())
    for cal in (exact, quantiles):
        result = calibrated_pass(cell, cal).route(query, cols, NOW, overlap)
        check_calibrated(result, plain, cal)
        top = conf >= ranked[-3]
        assert top.any()
        assert_float32_of(result.uncertainty[top], 1.0 / (1 + cal.failure_count))
        assert_float32_of(result.uncertainty[conf == ranked[0]], 1.0)
        if cal is exact:  # each routed confidence at a failure value counts it and every failure above it
            at = ~top
            count = np.array([np.count_nonzero(failures >= v) for v in conf[at]])
            assert_float32_of(result.uncertainty[at], (1.0 + count) / (1.0 + len(failures)))


def test_calibrated_pass_takes_failure_values_in_any_order_and_form(isa, rng):
    cell = scorer(rng)
    query, cols, overlap = request(rng, 50)
    pool = kernels.RoutePass(cell, WEIGHTS).route(query, cols, NOW, overlap).confidence
    cal = calibration_on(rng, pool, 600)
    reference = calibrated_pass(cell, cal).route(query, cols, NOW, overlap)
    values = np.array(cal.failure_values)
    for given in (list(values), values[::-1].copy(), rng.permutation(values), values.astype(np.float32).astype(
            np.float64), tuple(values)):
        route_pass = kernels.RoutePass(cell, WEIGHTS, cal.threshold, 0.0, failure_values=given,
                                       failure_count=cal.failure_count)
        same_decisions(route_pass.route(query, cols, NOW, overlap), reference)


def test_calibrated_pass_ignores_max_uncertainty(isa, rng):
    cell = scorer(rng)
    query, cols, overlap = request(rng, 100)
    pool = kernels.RoutePass(cell, WEIGHTS).route(query, cols, NOW, overlap).confidence
    cal = calibration_on(rng, pool, 800)
    results = [calibrated_pass(cell, cal, max_uncertainty=mu).route(query, cols, NOW, overlap)
               for mu in (0.0, 0.3, 1.0)]
    for r in results[1:]:
        same_decisions(r, results[0])
    assert results[0].lightweight_count > 0  # the case is not vacuous: max_uncertainty 0 would route none


def test_calibrated_threshold_between_float32_values(rng):
    """A confidence is float32 and the threshold a float64; "confidence >= threshold" must hold in float64,
    also when the threshold lies strictly between two float32 values (as a threshold calibrated on float64
    scores, or a grid value such as 0.9 (float32(0.9) < 0.9), does). A confidence just below the threshold must not be routed.

    Fails at the time of writing: RoutePass stores the threshold as a float32 rounded to nearest, so a
    threshold just above a float32 value rounds down onto it and that confidence is routed although it is
    below the certified threshold (Calibration.use_lightweight says no). The kernel compares float32
    confidences, so rounding the threshold up instead (the least float32 >= it) gives the exact rule."""
    cell = scorer(rng)
    query, cols, overlap = request(rng, 60)
    plain = kernels.RoutePass(cell, WEIGHTS).route(query, cols, NOW, overlap)
    conf = plain.confidence
    k = int(plain.order[len(conf) // 2])
    c = float(conf[k])  # a float32 value, exactly
    above = np.nextafter(c, math.inf)  # the next float64: float32(above) rounds back down to c
    assert np.float32(above) == conf[k] and above > c
    cal = Calibration(risk="lightweight_error", threshold=float(above), certified=True, target=0.9, delta=0.1,
                      n=1000, lightweight_share=0.3, failure_count=3, failure_values=(0.9, 0.5, 0.1))
    result = calibrated_pass(cell, cal).route(query, cols, NOW, overlap)
    assert not result.lightweight[k]
    check_calibrated(result, plain, cal)


def test_calibrated_pass_bad_inputs(rng):
    cell = scorer(rng)
    fw = WEIGHTS
    with pytest.raises(InvalidInputError, match="failure_values must be finite"):
        kernels.RoutePass(cell, fw, 0.5, 0.1, failure_values=[0.3, float("nan")], failure_count=5)
    with pytest.raises(InvalidInputError, match="failure_values must be finite"):
        kernels.RoutePass(cell, fw, 0.5, 0.1, failure_values=np.array([float("inf")]), failure_count=5)
    with pytest.raises(InvalidInputError, match="failure_count"):
        kernels.RoutePass(cell, fw, 0.5, 0.1, failure_values=[0.3, 0.2, 0.1], failure_count=2)
    with pytest.raises(InvalidInputError, match="failure_count"):
        kernels.RoutePass(cell, fw, 0.5, 0.1, failure_values=[], failure_count=-1)
    with pytest.raises(InvalidInputError, match="confidence_threshold and max_uncertainty must lie in"):
        kernels.RoutePass(cell, fw, math.inf, 0.1)  # +inf only for a calibrated pass
    with pytest.raises(InvalidInputError, match="confidence_threshold and max_uncertainty must lie in"):
        kernels.RoutePass(cell, fw, 1.5, 0.1)
    with pytest.raises(InvalidInputError, match="confidence_threshold and max_uncertainty must lie in"):
        kernels.RoutePass(cell, fw, 1.5, 0.1, failure_values=[0.2], failure_count=1)
    for bad in (float("nan"), -math.inf, -0.1):
        with pytest.raises(InvalidInputError, match="confidence_threshold"):
            kernels.RoutePass(cell, fw, bad, 0.1, failure_values=[0.2], failure_count=1)
    with pytest.raises(InvalidInputError, match="max_uncertainty"):
        kernels.RoutePass(cell, fw, 0.5, 1.5, failure_values=[0.2], failure_count=1)
    # the edges that are allowed
    assert kernels.RoutePass(cell, fw, math.inf, 0.1, failure_values=[0.2], failure_count=1).calibrated
    assert kernels.RoutePass(cell, fw, 1.0, 0.1, failure_values=[], failure_count=0).calibrated
    assert kernels.RoutePass(cell, fw, 0.0, 0.1, failure_values=[0.2, 0.1], failure_count=2).calibrated
