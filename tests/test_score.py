from __future__ import annotations

import time

import numpy as np
import pytest

import reference as ref
from tinydancer import kernels
from tinydancer.errors import ConfigError, InvalidInputError
from tinydancer.kernels import FastGRNNCell

WEIGHTS = (0.4, 0.2, 0.15, 0.15, 0.1)
NOW = 1_800_000_000.0


def scorer(rng: np.random.Generator) -> FastGRNNCell:
    return FastGRNNCell(rng.standard_normal((8, 5)), rng.standard_normal((8, 8)), rng.standard_normal(8),
                        rng.standard_normal(8), rng.standard_normal(8), 0.1, zeta=1.0, nu=-4.0)


def candidates(rng: np.random.Generator, n: int, dim: int = 384) -> dict:
    return dict(
        query=rng.standard_normal(dim).astype(np.float32),
        embeddings=rng.standard_normal((n, dim)).astype(np.float32),
        created_at=NOW - rng.uniform(-100, 5000, n),  # some in the future: age clamps to 0
        access_count=rng.integers(0, 30000, n),
        success_rate=rng.uniform(0, 1, n).astype(np.float32),
        now=NOW,
    )


def expected_scores(cell, args, overlap=None, weights=WEIGHTS, decay=0.001):
    feats = ref.features(args["query"], args["embeddings"], args["created_at"], args["access_count"],
                         args["success_rate"], overlap, args["now"], weights, decay)
    w = cell.W.to_dense()
    u = cell.U.to_dense()
    scores = np.array([ref.fastgrnn(f, w, u, cell.b_z, cell.b_h, cell.w_out, cell.b_out, cell.zeta, cell.nu)[0]
                       for f in feats])
    return feats, scores


@pytest.mark.parametrize("n", [0, 1, 2, 10, 63, 64, 65, 100, 129, 1000])
def test_against_reference(isa, rng, n):
    cell = scorer(rng)
    args = candidates(rng, n)
    overlap = rng.uniform(0, 1, n).astype(np.float32)
    feats_out = np.empty((n, 5), np.float32)
    got = kernels.score_candidates(cell, **args, metadata_overlap=overlap, features_out=feats_out)
    feats, scores = expected_scores(cell, args, overlap)
    assert got.shape == (n,) and got.dtype == np.float32
    np.testing.assert_allclose(feats_out, feats, atol=2e-6, rtol=0)
    np.testing.assert_allclose(got, scores, atol=1e-5, rtol=0)


def test_norms_weights_and_no_metadata(isa, rng):
    cell = scorer(rng)
    args = candidates(rng, 50, dim=33)
    weights = (1.0, 0.0, 0.5, 0.25, 3.0)
    norms = kernels.l2_norms(args["embeddings"])
    got = kernels.score_candidates(cell, **args, embedding_norms=norms, weights=weights, recency_decay=0.01)
    _, scores = expected_scores(cell, args, None, weights, 0.01)
    np.testing.assert_allclose(got, scores, atol=1e-5)


def test_zero_vectors_and_identical_candidate(isa, rng):
    cell = scorer(rng)
    args = candidates(rng, 3, dim=16)
    args["embeddings"][0] = args["query"]
    args["embeddings"][1] = 0.0
    feats = np.empty((3, 5), np.float32)
    kernels.score_candidates(cell, **args, features_out=feats)
    assert feats[0, 0] == pytest.approx(0.4, abs=1e-6)
    assert feats[1, 0] == 0.0
    assert feats[2, 4] == 0.0


def test_views_and_dtypes_convert(isa, rng):
    cell = scorer(rng)
    args = candidates(rng, 20, dim=40)
    reference = kernels.score_candidates(cell, **args)
    wide = np.zeros((20, 80), np.float64)
    wide[:, ::2] = args["embeddings"]
    args2 = dict(args, embeddings=wide[:, ::2], access_count=args["access_count"].astype(np.int32),
                 success_rate=args["success_rate"].astype(np.float64), created_at=list(args["created_at"]))
    np.testing.assert_allclose(kernels.score_candidates(cell, **args2), reference, atol=1e-6)


def test_overflowing_embeddings_are_scored_in_float64(isa, rng):
    cell = scorer(rng)
    args = candidates(rng, 4, dim=8)
    args["embeddings"][2, 0] = 3e19
    got = kernels.score_candidates(cell, **args)
    _, scores = expected_scores(cell, args)
    np.testing.assert_allclose(got, scores, atol=1e-5)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(embeddings=np.ones((3, 7), np.float32)), "embeddings must have 384 columns"),
        (dict(query=np.ones(0, np.float32), embeddings=np.ones((3, 0), np.float32)), "query is empty"),
        (dict(created_at=np.ones(2)), "created_at must have one entry per candidate"),
        (dict(created_at=[0.0, np.nan, 0.0]), "created_at holds"),
        (dict(access_count=[1, -1, 2]), r"access_count\[1\] = -1 must not be negative"),
        (dict(access_count=[1.5, 1, 2]), "access_count must hold integers"),
        (dict(success_rate=[0.5, 1.5, 0.2]), r"success_rate\[1\] = 1.5 is outside \[0, 1\]"),
        (dict(success_rate=[0.5, np.nan, 0.2]), r"success_rate\[1\]"),
        (dict(metadata_overlap=[0.5, 0.5, -0.1]), r"metadata_overlap\[2\]"),
        (dict(embedding_norms=[1.0, 1.0]), "embedding_norms must have one entry"),
        (dict(embedding_norms=[1.0, -1.0, 1.0]), r"embedding_norms\[1\] = -1.0"),
        (dict(embedding_norms=[1.0, 1.0, np.inf]), r"embedding_norms\[2\] = inf"),
        (dict(now=float("inf")), "now must be finite"),
        (dict(recency_decay=-1.0), "recency_decay must be finite and >= 0"),
        (dict(weights=(1, 2, 3)), "weights must be five finite numbers"),
        (dict(weights="abcde"), "weights must be five numbers"),
        (dict(features_out=np.empty((3, 4), np.float32)), "features_out must be"),
        (dict(query=np.full(384, np.nan, np.float32)), "query holds"),
    ],
)
def test_bad_input(rng, change, match):
    cell = scorer(rng)
    args = candidates(rng, 3)
    args.update(change)
    with pytest.raises(InvalidInputError, match=match):
        kernels.score_candidates(cell, **args)


def test_nan_embedding_named(isa, rng):
    cell = scorer(rng)
    args = candidates(rng, 5)
    args["embeddings"][3, 100] = np.nan
    with pytest.raises(InvalidInputError, match=r"embeddings holds a non-finite value \(nan\) at \[3, 100\]"):
        kernels.score_candidates(cell, **args)


def test_wrong_model_shape(rng):
    cell = FastGRNNCell(np.zeros((8, 4)), np.zeros((8, 8)), np.zeros(8), np.zeros(8), np.ones(8), 0.0, 1.0, -4.0)
    with pytest.raises(InvalidInputError, match="input_dim 5"):
        kernels.score_candidates(cell, **candidates(rng, 3))
    with pytest.raises(TypeError):
        kernels.score_candidates(None, **candidates(rng, 3))


# --------------------------------------------------------------------------------------------------------
# Features alone, and the routing pass
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7, 64, 65, 300])
def test_candidate_features_match_reference(isa, rng, n):
    args = candidates(rng, n)
    overlap = rng.uniform(0, 1, n).astype(np.float32)
    feats = kernels.candidate_features(**args, metadata_overlap=overlap)
    expected = ref.features(args["query"], args["embeddings"], args["created_at"], args["access_count"],
                            args["success_rate"], overlap, NOW, WEIGHTS, 0.001)
    assert feats.shape == (n, 5) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, expected, atol=2e-6, rtol=0)
    out = np.empty((n, 5), np.float32)
    assert kernels.candidate_features(**args, metadata_overlap=overlap, out=out) is out


@pytest.mark.parametrize("decay", [0.0, 1e-6, 0.001, 1.0, 1e6])
def test_recency_and_frequency_over_their_whole_range(isa, rng, decay):
    # the SIMD kernels compute exp and log1p with their own polynomials; libm (the scalar path) is the reference
    counts = np.concatenate([np.arange(0, 300), [9998, 9999, 10000, 10001, 2**31, 2**62], rng.integers(0, 20000, 194)])
    ages = np.concatenate([[0.0, -5.0, 1e-9, 1.0, 1e300], rng.uniform(0, 1e5, 195), 10 ** rng.uniform(-3, 9, 300)])
    n = len(counts)
    args = dict(query=np.ones(4, np.float32), embeddings=np.ones((n, 4), np.float32), created_at=NOW - ages,
                access_count=counts, success_rate=np.zeros(n, np.float32), now=NOW)
    unit = kernels.FeatureWeights((1.0,) * 5, recency_decay=decay)
    feats = kernels.candidate_features(**args, weights=unit)
    expected = ref.features(**{k: v for k, v in args.items() if k != "now"}, metadata_overlap=None, now=NOW,
                            weights=(1.0,) * 5, decay=decay)
    np.testing.assert_allclose(feats[:, 1:3], expected[:, 1:3], atol=1e-7, rtol=0)
    assert feats[:, 2].max() == 1.0 and np.all(feats[counts >= 10000, 2] == 1.0)
    assert np.all(feats[ages <= 0, 1] == 1.0)


def test_feature_weights_object(rng):
    fw = kernels.FeatureWeights((1.0, 0.0, 0.0, 0.0, 0.0), recency_decay=0.5)
    assert fw.weights == (1.0, 0.0, 0.0, 0.0, 0.0) and fw.recency_decay == 0.5
    args = candidates(rng, 5, dim=8)
    feats = kernels.candidate_features(**args, weights=fw)
    np.testing.assert_allclose(feats[:, 0], ref.cosine_batch(args["query"], args["embeddings"]), atol=1e-6)
    assert np.all(feats[:, 1:] == 0)
    for bad, match in [((1, 2), "five finite numbers"), ((1, 2, 3, 4, float("nan")), "five finite numbers"),
                       ("xyzzy", "five numbers")]:
        with pytest.raises(InvalidInputError, match=match):
            kernels.FeatureWeights(bad)
    with pytest.raises(InvalidInputError, match="recency_decay"):
        kernels.FeatureWeights(recency_decay=-0.1)


def test_candidate_features_bad_input(rng):
    args = candidates(rng, 3)
    args["embeddings"][1, 5] = np.nan
    with pytest.raises(InvalidInputError, match=r"embeddings holds a non-finite value \(nan\) at \[1, 5\]"):
        kernels.candidate_features(**args)
    with pytest.raises(InvalidInputError, match="out must be"):
        kernels.candidate_features(**candidates(rng, 3), out=np.empty((3, 4), np.float32))


@pytest.mark.parametrize("n", [0, 1, 2, 10, 32, 33, 100, 1000])
def test_route_candidates(isa, rng, n):
    cell = scorer(rng)
    args = candidates(rng, n)
    scores, unc, light, order = kernels.route_candidates(cell, **args, confidence_threshold=0.6,
                                                         max_uncertainty=0.5)
    _, expected = expected_scores(cell, args)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    np.testing.assert_allclose(unc, np.clip(1 - 2 * np.abs(scores.astype(np.float64) - 0.5), 0, 1), atol=1e-6)
    np.testing.assert_array_equal(light, (scores >= np.float32(0.6)) & (unc <= np.float32(0.5)))
    assert light.dtype == bool and order.dtype == np.int32
    np.testing.assert_array_equal(order, np.argsort(-scores, kind="stable"))


@pytest.mark.parametrize("n", [0, 1, 10, 32, 33, 100, 1000])
def test_route_pass_route_matches_run_and_counts(isa, rng, n):
    cell = scorer(rng)
    args = candidates(rng, n)
    arrays = kernels.CandidateArrays(args["embeddings"], args["created_at"], args["access_count"],
                                     args["success_rate"])
    route_pass = kernels.RoutePass(cell, kernels.FeatureWeights(), 0.6, 0.5)
    scores, unc, light, order, count = route_pass.run(args["query"], arrays, NOW)
    counters = kernels.RouteCounters()
    ids = [f"c{i}" for i in range(n)]
    start = time.perf_counter_ns()
    result = route_pass.route(args["query"], arrays, ids, NOW, None, start, 2.5, counters)
    assert type(result) is kernels.RouteResult and len(result) == n
    for got, want in [(result._confidence, scores), (result._uncertainty, unc), (result._lightweight, light),
                      (result._order, order)]:
        assert got.dtype == want.dtype and not got.flags.writeable
        np.testing.assert_array_equal(got, want)
    assert result._confidence is result._confidence  # made once
    assert result._lightweight_count == count and result._ids is ids and result._feature_time_us == 2.5
    assert result._inference_time_us > 0 and result._fallback_reason is None and result._decisions is None
    snap = counters.snapshot()
    assert (snap["requests"], snap["candidates"], snap["lightweight"]) == (1, n, count)
    assert snap["mean_route_us"] == pytest.approx(result._inference_time_us)


def test_route_result_arrays_outlive_the_pass_and_cannot_be_replaced(rng):
    cell = scorer(rng)
    args = candidates(rng, 40)
    arrays = kernels.CandidateArrays(args["embeddings"], args["created_at"], args["access_count"],
                                     args["success_rate"])
    result = kernels.RoutePass(cell, kernels.FeatureWeights()).route(args["query"], arrays, None, NOW, None, 0,
                                                                    0.0, kernels.RouteCounters())
    conf = result._confidence
    expected = conf.copy()
    del result  # the array keeps the block alive
    np.testing.assert_array_equal(conf, expected)
    with pytest.raises(ValueError):
        conf[0] = 1.0
    result = kernels.RoutePass(cell, kernels.FeatureWeights()).route(args["query"], arrays, None, NOW, None, 0,
                                                                    0.0, kernels.RouteCounters())
    with pytest.raises(InvalidInputError, match="cannot be replaced"):
        result._set_arrays(conf, conf, conf, conf)


def test_route_pass_errors_count_nothing(rng):
    cell = scorer(rng)
    args = candidates(rng, 5, dim=8)
    arrays = kernels.CandidateArrays(args["embeddings"], args["created_at"], args["access_count"],
                                     args["success_rate"])
    counters = kernels.RouteCounters()
    route_pass = kernels.RoutePass(cell, kernels.FeatureWeights())
    with pytest.raises(InvalidInputError, match="embeddings must have 9 columns"):
        route_pass.route(np.ones(9, np.float32), arrays, None, NOW, None, 0, 0.0, counters)
    with pytest.raises(InvalidInputError, match="now must be finite"):
        route_pass.route(args["query"], arrays, None, float("nan"), None, 0, 0.0, counters)
    with pytest.raises(InvalidInputError, match="metadata_overlap"):
        route_pass.route(args["query"], arrays, None, NOW, np.full(5, 2.0, np.float32), 0, 0.0, counters)
    assert counters.snapshot()["requests"] == 0
    with pytest.raises(ConfigError, match="result_type must be RouteResult"):
        kernels.RoutePass(cell, kernels.FeatureWeights(), result_type=dict)


def test_route_counters():
    c = kernels.RouteCounters()
    c.count_routed(10, 3, 4.0)
    c.count_routed(5, 1, 2.0)
    c.count_fallback(7, True, False)
    c.count_fallback(2, False, True)
    c.count_invalid()
    c.count_reload()
    c.count_reload_failure()
    c.count_reload_failure()
    assert c.snapshot() == {
        "requests": 4, "candidates": 24, "lightweight": 4, "fallbacks": 2, "rejected_by_breaker": 1,
        "model_errors": 1, "invalid_requests": 1, "reloads": 1, "reload_failures": 2, "mean_route_us": 3.0,
    }
    assert kernels.RouteCounters().snapshot()["mean_route_us"] == 0.0


def test_route_order_is_stable_for_ties(rng):
    cell = FastGRNNCell(np.zeros((8, 5)), np.zeros((8, 8)), np.zeros(8), np.zeros(8), np.ones(8), 0.3, 1.0, -4.0)
    for n in (5, 40):
        scores, _, _, order = kernels.route_candidates(cell, **candidates(rng, n))
        assert np.all(scores == scores[0])  # a constant model: every score ties
        np.testing.assert_array_equal(order, np.arange(n))


def test_route_names_non_finite_embeddings(rng):
    cell = scorer(rng)
    args = candidates(rng, 4, dim=8)
    args["embeddings"][2, 0] = np.inf
    with pytest.raises(InvalidInputError, match=r"embeddings holds a non-finite value \(inf\) at \[2, 0\]"):
        kernels.route_candidates(cell, **args)


def test_gather_candidates(rng):
    from tinydancer.types import Candidate

    cs = [Candidate(f"c{i}", rng.standard_normal(16).astype(np.float32), created_at=float(i), access_count=i,
                    success_rate=0.5) for i in range(5)]
    E, norms, created, counts, success = kernels.gather_candidates(cs)
    np.testing.assert_array_equal(E, np.stack([c.embedding for c in cs]))
    np.testing.assert_allclose(norms, np.linalg.norm(E.astype(np.float64), axis=1), rtol=1e-6)
    np.testing.assert_array_equal(created, np.arange(5.0))
    np.testing.assert_array_equal(counts, np.arange(5))
    assert counts.dtype == np.int64 and np.all(success == np.float32(0.5))
    assert not any(a.flags.writeable for a in (E, norms, created, counts, success))
    for field, value in [("access_count", -1), ("access_count", 2.0), ("access_count", True),
                         ("success_rate", 1.5), ("created_at", float("inf")),
                         ("embedding", np.ones(15, np.float32)), ("embedding", np.full(16, np.nan, np.float32))]:
        saved = getattr(cs[2], field)
        setattr(cs[2], field, value)
        with pytest.raises(InvalidInputError):
            kernels.gather_candidates(cs)
        setattr(cs[2], field, saved)
    with pytest.raises(InvalidInputError, match="no candidates"):
        kernels.gather_candidates([])
