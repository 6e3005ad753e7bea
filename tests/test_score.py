from __future__ import annotations

import pickle

import numpy as np
import pytest

import reference as ref
from tinydancer import kernels
from tinydancer.errors import InvalidInputError, ModelError
from tinydancer.kernels import FastGRNNCell, KernelMatrix

WEIGHTS = (0.4, 0.2, 0.15, 0.15, 0.1)
NOW = 1_800_000_000.0


def scorer(rng: np.random.Generator) -> FastGRNNCell:
    return FastGRNNCell(rng.standard_normal((8, 5)), rng.standard_normal((8, 8)), rng.standard_normal(8),
                        rng.standard_normal(8), rng.standard_normal(8), 0.1, zeta=1.0, nu=-4.0)


def candidates(rng: np.random.Generator, n: int, dim: int = 384) -> dict:
    return dict(
        query=rng.standard_normal(dim).astype(np.float32),
        embeddings=rng.standard_normal((n, dim)).astype(np.float32),
        created_at=NOW - rng.uniform(-60, 5000, n),  # some in the future, within the tolerance: age 0
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
        (dict(embeddings=np.ones((3, 7), np.float32)), "the candidates. embeddings have length 7, but query has length 384"),
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


def columns(args):
    return kernels.CandidateColumns(args["embeddings"], args["created_at"], args["access_count"], args["success_rate"])


@pytest.mark.parametrize("n", [0, 1, 2, 10, 32, 33, 100, 1000])
def test_route_pass(isa, rng, n):
    cell = scorer(rng)
    args = candidates(rng, n)
    result = kernels.RoutePass(cell, kernels.FeatureWeights(), 0.6, 0.5).route(args["query"], columns(args), NOW)
    _, expected = expected_scores(cell, args)
    scores, unc, light, order = result.confidence, result.uncertainty, result.lightweight, result.order
    assert len(result) == result.n == n
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    np.testing.assert_allclose(unc, np.clip(1 - 2 * np.abs(scores.astype(np.float64) - 0.5), 0, 1), atol=1e-6)
    np.testing.assert_array_equal(light, (scores >= np.float32(0.6)) & (unc <= np.float32(0.5)))
    assert light.dtype == bool and order.dtype == np.int32 and scores.dtype == unc.dtype == np.float32
    np.testing.assert_array_equal(order, np.argsort(-scores, kind="stable"))
    assert result.lightweight_count == int(np.count_nonzero(light))
    assert not any(a.flags.writeable for a in (scores, unc, light, order))


def test_route_pass_with_metadata_overlap_and_norms(isa, rng):
    cell = scorer(rng)
    args = candidates(rng, 12)
    overlap = rng.uniform(0, 1, 12).astype(np.float32)
    cols = kernels.CandidateColumns(args["embeddings"], args["created_at"], args["access_count"],
                                    args["success_rate"], kernels.l2_norms(args["embeddings"]))
    result = kernels.RoutePass(cell, kernels.FeatureWeights()).route(args["query"], cols, NOW, overlap)
    expected = kernels.score_candidates(cell, **args, metadata_overlap=overlap)
    np.testing.assert_allclose(result.confidence, expected, atol=1e-6)


def test_route_result_arrays_outlive_the_result(rng):
    cell = scorer(rng)
    args = candidates(rng, 40)
    result = kernels.RoutePass(cell, kernels.FeatureWeights()).route(args["query"], columns(args), NOW)
    conf = result.confidence
    assert conf is result.confidence  # made once
    expected = conf.copy()
    del result  # the array keeps the block alive
    np.testing.assert_array_equal(conf, expected)
    with pytest.raises(ValueError):
        conf[0] = 1.0


def test_route_result_from_arrays(rng):
    conf = rng.uniform(0, 1, 6).astype(np.float32)
    light = conf > 0.5
    order = np.argsort(-conf, kind="stable")
    r = kernels.RouteResult.from_arrays(conf, 1 - conf, light, order)
    np.testing.assert_array_equal(r.confidence, conf)
    np.testing.assert_array_equal(r.uncertainty, 1 - conf)
    np.testing.assert_array_equal(r.lightweight, light)
    np.testing.assert_array_equal(r.order, order)
    assert r.lightweight_count == int(light.sum()) and len(r) == 6
    copy = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(copy.confidence, conf)
    with pytest.raises(InvalidInputError, match="uncertainty must have one entry per candidate"):
        kernels.RouteResult.from_arrays(conf, conf[:3], light, order)


def test_route_pass_bad_input(rng):
    cell = scorer(rng)
    args = candidates(rng, 5, dim=8)
    cols = columns(args)
    route_pass = kernels.RoutePass(cell, kernels.FeatureWeights())
    with pytest.raises(InvalidInputError, match="the candidates. embeddings have length 8, but query_embedding has length 9"):
        route_pass.route(np.ones(9, np.float32), cols, NOW)
    with pytest.raises(InvalidInputError, match="now must be finite"):
        route_pass.route(args["query"], cols, float("nan"))
    with pytest.raises(InvalidInputError, match="metadata_overlap"):
        route_pass.route(args["query"], cols, NOW, np.full(5, 2.0, np.float32))
    with pytest.raises(InvalidInputError, match=r"query_embedding holds a non-finite value \(nan\) at \[3\]"):
        route_pass.route(np.where(np.arange(8) == 3, np.nan, 1.0).astype(np.float32), cols, NOW)
    with pytest.raises(InvalidInputError, match="confidence_threshold and max_uncertainty must lie in"):
        kernels.RoutePass(cell, kernels.FeatureWeights(), 1.5)
    with pytest.raises(InvalidInputError, match="model must have input_dim 5"):
        kernels.RoutePass(FastGRNNCell(np.ones((8, 4)), np.zeros((8, 8)), np.zeros(8), np.zeros(8), np.ones(8), 0.0,
                                       1.0, -4.0), kernels.FeatureWeights())


def test_model_failure_is_a_model_error(isa, rng):
    """Finite features that drive the model to NaN raise ModelError: a low-rank W whose inner vector is
    (+inf, -inf), which meet in the outer product on every ISA."""
    right = np.zeros((2, 5), np.float32)
    right[0, 1], right[1, 3] = 10.0, -10.0  # recency and success, both 1.0 below
    W = KernelMatrix.low_rank(np.ones((8, 2), np.float32), right)
    cell = FastGRNNCell(W, np.zeros((8, 8)), np.zeros(8), np.zeros(8), np.ones(8), 0.0, 1.0, -4.0)
    weights = kernels.FeatureWeights((0.4, 3e38, 0.15, 3e38, 0.1))
    args = candidates(rng, 4, dim=8)
    args["created_at"] = np.full(4, NOW)
    args["success_rate"] = np.ones(4, np.float32)
    with pytest.raises(ModelError, match="non-finite score"):
        kernels.RoutePass(cell, weights).route(args["query"], columns(args), NOW)
    with pytest.raises(ModelError, match="non-finite score"):
        kernels.score_candidates(cell, **args, weights=weights)


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
        args = candidates(rng, n)
        result = kernels.RoutePass(cell, kernels.FeatureWeights()).route(args["query"], columns(args), NOW)
        assert np.all(result.confidence == result.confidence[0])  # a constant model: every score ties
        np.testing.assert_array_equal(result.order, np.arange(n))


def test_route_names_non_finite_embeddings(rng):
    cell = scorer(rng)
    args = candidates(rng, 4, dim=8)
    args["embeddings"][2, 0] = np.inf
    with pytest.raises(InvalidInputError, match=r"embeddings holds a non-finite value \(inf\) at \[2, 0\]"):
        kernels.RoutePass(cell, kernels.FeatureWeights()).route(args["query"], columns(args), NOW)


def test_candidate_columns_copy(rng):
    args = candidates(rng, 7, dim=10)
    cols = kernels.CandidateColumns(args["embeddings"], args["created_at"], args["access_count"],
                                    args["success_rate"], copy=True)
    assert cols.embeddings.ctypes.data % 64 == 0 and not cols.embeddings.flags.writeable
    np.testing.assert_array_equal(cols.embeddings, args["embeddings"])
    np.testing.assert_allclose(cols.norms, np.linalg.norm(args["embeddings"].astype(np.float64), axis=1), rtol=1e-6)
    args["embeddings"][0, 0] = 99.0  # a private copy
    assert cols.embeddings[0, 0] != 99.0 and args["created_at"].flags.writeable
    bad = args["embeddings"].copy()
    bad[3, 4] = np.nan
    with pytest.raises(InvalidInputError, match=r"embeddings holds a non-finite value \(nan\) at \[3, 4\]"):
        kernels.CandidateColumns(bad, args["created_at"], args["access_count"], args["success_rate"], copy=True)
    big = np.full((2, 10), 3e38, np.float32)
    with pytest.raises(InvalidInputError, match=r"embeddings\[0\] has a norm beyond the float32 range"):
        kernels.CandidateColumns(big, [0.0, 0.0], [0, 0], [0.0, 0.0], copy=True)
    with pytest.raises(InvalidInputError, match="access_count must hold integers"):
        kernels.CandidateColumns(bad, args["created_at"], [True] * 7, args["success_rate"])


def test_gather_candidates(rng):
    from tinydancer.types import Candidate

    cs = [Candidate(f"c{i}", rng.standard_normal(16).astype(np.float32), {"k": i}, created_at=float(i),
                    access_count=i, success_rate=0.5) for i in range(5)]
    cols = kernels.CandidateColumns.buffer()
    assert len(cols) == 0 and cols.embeddings.shape == (0, 0) and cols.norms is None
    ids, metadatas = kernels.gather_candidates(cs, cols)
    assert ids == tuple(c.id for c in cs) and metadatas == tuple({"k": i} for i in range(5))
    E = cols.embeddings
    np.testing.assert_array_equal(E, np.stack([c.embedding for c in cs]))
    np.testing.assert_allclose(cols.norms, np.linalg.norm(E.astype(np.float64), axis=1), rtol=1e-6)
    np.testing.assert_array_equal(cols.created_at, np.arange(5.0))
    np.testing.assert_array_equal(cols.access_count, np.arange(5))
    assert cols.access_count.dtype == np.int64 and np.all(cols.success_rate == np.float32(0.5))
    assert kernels.gather_candidates(cs[:2], cols, metadata=False) == (("c0", "c1"), None)
    assert len(cols) == 2  # the buffer is reused, sized to the last fill
    for field, value, match in [
        ("access_count", -1, r"candidates\[2\]\.access_count must be an int >= 0, got -1"),
        ("access_count", 2.0, r"candidates\[2\]\.access_count must be an int, got float"),
        ("access_count", True, r"candidates\[2\]\.access_count must be an int, got bool"),
        ("success_rate", 1.5, r"candidates\[2\]\.success_rate must lie in \[0, 1\], got 1.5"),
        ("created_at", float("inf"), r"candidates\[2\]\.created_at must be finite, got inf"),
        ("embedding", np.ones(15, np.float32),
         r"candidates\[2\]\.embedding has length 15, but candidates\[0\]\.embedding has length 16"),
        ("embedding", np.full(16, np.nan, np.float32), r"candidates\[2\]\.embedding holds a non-finite value"),
        ("embedding", np.full(16, 3e38, np.float32), r"candidates\[2\]\.embedding has a norm beyond"),
        ("embedding", "abc", r"candidates\[2\]\.embedding must hold real numbers"),
        ("id", 7, r"candidates\[2\]\.id must be a str, got int"),
        ("metadata", [], r"candidates\[2\]\.metadata must be a dict, got list"),
    ]:
        saved = getattr(cs[2], field)
        setattr(cs[2], field, value)
        with pytest.raises(InvalidInputError, match=match):
            kernels.gather_candidates(cs, cols)
        setattr(cs[2], field, saved)
    with pytest.raises(InvalidInputError, match=r"candidates\[1\] must be a Candidate, got int"):
        kernels.gather_candidates([cs[0], 5], cols)
    with pytest.raises(InvalidInputError, match="candidate.success_rate must lie in"):
        cs[0].success_rate = 2.0
        kernels.gather_candidates([cs[0]], cols, "candidate", single=True)
    assert kernels.gather_candidates([], cols) == ((), ())
    assert len(cols) == 0
