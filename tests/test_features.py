"""Feature extraction against a float64 NumPy reference written from SPEC section 3."""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np
import pytest

from tinydancer.errors import ConfigError, InvalidInputError
from tinydancer.features import FEATURE_NAMES, NUM_FEATURES, FeatureConfig, FeatureEngineer, FeatureVector
from tinydancer.types import Candidate, CandidateBatch

NOW = 1_750_000_000.0
WEIGHTS = (0.4, 0.2, 0.15, 0.15, 0.1)


# ---------------------------------------------------------------------------------------------------------
# The reference: SPEC 3, in float64
# ---------------------------------------------------------------------------------------------------------


def ref_cosine(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(a @ b / (na * nb))


def ref_overlap(query_md, cand_md) -> float:
    if not query_md or not cand_md:
        return 0.0
    hits = sum(1 for k, v in query_md.items() if k in cand_md and cand_md[k] == v)
    return hits / len(query_md)


def ref_raw(query, emb, created_at, access_count, success_rate, now, decay=0.001, query_md=None, cand_md=None):
    """The five raw values of SPEC 3 for one candidate."""
    return np.array(
        [
            ref_cosine(query, emb),
            math.exp(-decay * max(now - created_at, 0.0)),
            min(math.log1p(access_count) / math.log1p(10000), 1.0),
            success_rate,
            ref_overlap(query_md, cand_md),
        ]
    )


def ref_features(query, candidates, now, weights=WEIGHTS, decay=0.001, query_md=None) -> np.ndarray:
    rows = [
        ref_raw(query, c.embedding, c.created_at, c.access_count, c.success_rate, now, decay, query_md, c.metadata)
        for c in candidates
    ]
    return np.array(rows).reshape(-1, 5) * np.asarray(weights, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------


class CountingClock:
    """A fixed clock that counts how often it is read."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


@pytest.fixture
def clock() -> CountingClock:
    return CountingClock()


@pytest.fixture
def engineer(clock: CountingClock) -> FeatureEngineer:
    return FeatureEngineer(clock=clock)


def make_candidates(rng: np.random.Generator, n: int, dim: int = 384, metadata: bool = True) -> list[Candidate]:
    colours = ["red", "green", "blue"]
    out = []
    for i in range(n):
        md = {"colour": colours[i % 3], "lang": "en" if i % 2 else "de"} if metadata else {}
        out.append(
            Candidate(
                id=f"c{i}",
                embedding=rng.standard_normal(dim).astype(np.float32),
                metadata=md,
                created_at=NOW - float(rng.integers(-60, 7 * 86400)),  # some in the future, within the tolerance
                access_count=int(rng.integers(0, 20000)),
                success_rate=float(rng.random()),
            )
        )
    return out


def as_batch(cands: list[Candidate]) -> CandidateBatch:
    """A batch built through the columnar constructor (not from_candidates)."""
    return CandidateBatch(
        [c.id for c in cands],
        np.stack([c.embedding for c in cands]) if cands else np.empty((0, 4), np.float32),
        [c.created_at for c in cands],
        [c.access_count for c in cands],
        [c.success_rate for c in cands],
        [c.metadata for c in cands],
    )


# float32 features against a float64 reference: cosine within 1e-6 (SPEC 2) times a weight <= 1, the
# rest rounded once to float32
ATOL = 2e-6


# ---------------------------------------------------------------------------------------------------------
# Formulas
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 64, 65, 100])
def test_batch_features_match_reference(isa, rng, engineer, n):
    cands = make_candidates(rng, n)
    q = rng.standard_normal(384).astype(np.float32)
    query_md = {"colour": "red", "lang": "en", "tier": 1}
    batch = CandidateBatch.from_candidates(cands)
    got = engineer.extract_batch_features(q, batch, query_md)
    assert got.dtype == np.float32 and got.shape == (n, NUM_FEATURES)
    np.testing.assert_allclose(got, ref_features(q, cands, NOW, query_md=query_md), rtol=0, atol=ATOL)


def test_single_candidate_raw_values_and_weighted_features(rng, engineer):
    cands = make_candidates(rng, 12, dim=33)
    q = rng.standard_normal(33).astype(np.float32)
    md = {"colour": "blue", "lang": "de"}
    for c in cands:
        fv = engineer.extract_features(q, c, md)
        assert isinstance(fv, FeatureVector)
        raw = ref_raw(q, c.embedding, c.created_at, c.access_count, c.success_rate, NOW, 0.001, md, c.metadata)
        np.testing.assert_allclose(fv.raw, raw, rtol=0, atol=1e-6)
        np.testing.assert_allclose(fv.features, raw * np.array(WEIGHTS), rtol=0, atol=ATOL)
        assert fv.raw == tuple(getattr(fv, name) for name in FEATURE_NAMES)
        assert fv.as_array().dtype == np.float32 and fv.as_array().tolist() == list(fv.features)


def test_recency(engineer):
    emb = np.ones(8, np.float32)
    cases = [
        (NOW, 1.0),  # just created
        (NOW + 60.0, 1.0),  # created in the future, within the tolerance: age clamps to 0
        (NOW - 1000.0, math.exp(-1.0)),
        (NOW - 693.147, 0.5),
        (NOW - 1e6, math.exp(-1000.0)),  # underflows float32 to 0
        (0.0, 0.0),  # 1970
    ]
    for created, expected in cases:
        fv = engineer.extract_features(emb, Candidate("r", emb, created_at=created))
        assert fv.recency_score == pytest.approx(expected, rel=1e-6, abs=1e-12)
        assert fv.features[1] == pytest.approx(0.2 * expected, rel=1e-6, abs=1e-12)


def test_recency_decay_zero_and_custom():
    emb = np.ones(4, np.float32)
    old = Candidate("o", emb, created_at=NOW - 1e9)
    assert (
        FeatureEngineer(FeatureConfig(recency_decay=0.0), clock=lambda: NOW).extract_features(emb, old).recency_score
        == 1.0
    )
    fast = FeatureEngineer(FeatureConfig(recency_decay=0.01), clock=lambda: NOW)
    c = Candidate("c", emb, created_at=NOW - 100.0)
    assert fast.extract_features(emb, c).recency_score == pytest.approx(math.exp(-1.0), rel=1e-6)


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (0, 0.0),
        (1, math.log(2) / math.log(10001)),
        (9999, math.log(10000) / math.log(10001)),
        (10000, 1.0),
        (10001, 1.0),  # capped
        (10**12, 1.0),
        (2**63 - 1, 1.0),
    ],
)
def test_frequency_and_its_cap(engineer, count, expected):
    emb = np.ones(4, np.float32)
    fv = engineer.extract_features(emb, Candidate("f", emb, created_at=NOW, access_count=count))
    assert fv.frequency_score == pytest.approx(expected, rel=1e-6)
    assert fv.frequency_score <= 1.0


def test_similarity_cases(engineer):
    a = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    zero = np.zeros(4, np.float32)
    sim = lambda q, e: engineer.extract_features(q, Candidate("s", e, created_at=NOW)).semantic_similarity  # noqa: E731
    assert sim(a, a) == pytest.approx(1.0, abs=1e-6)
    assert sim(a, -a) == pytest.approx(-1.0, abs=1e-6)
    assert sim(a, np.array([-2.0, 1.0, -4.0, 3.0], np.float32)) == pytest.approx(0.0, abs=1e-6)
    assert sim(a, zero) == 0.0  # zero candidate
    assert sim(zero, a) == 0.0  # zero query
    assert sim(zero, zero) == 0.0  # both: 0, never NaN
    assert sim(a, 1e-30 * a) == pytest.approx(1.0, abs=1e-6)  # tiny but not zero


def test_zero_vectors_in_a_batch(rng, engineer):
    cands = make_candidates(rng, 5, dim=16)
    cands[2].embedding = np.zeros(16, np.float32)
    feats = engineer.extract_batch_features(rng.standard_normal(16), cands)
    assert feats[2, 0] == 0.0 and np.isfinite(feats).all()
    assert (engineer.extract_batch_features(np.zeros(16), cands)[:, 0] == 0.0).all()


def test_success_rate_passes_through(engineer):
    emb = np.ones(4, np.float32)
    for s in (0.0, 0.25, 1.0):
        fv = engineer.extract_features(emb, Candidate("s", emb, created_at=NOW, success_rate=s))
        assert fv.success_rate == s
        assert fv.features[3] == pytest.approx(0.15 * s, rel=1e-6)


@pytest.mark.parametrize(
    ("query_md", "cand_md", "expected"),
    [
        ({"a": 1, "b": 2}, {"a": 1, "b": 2}, 1.0),
        ({"a": 1, "b": 2}, {"a": 1, "b": 3}, 0.5),
        ({"a": 1, "b": 2, "c": 3}, {"a": 1, "c": 3, "z": 9}, 2 / 3),
        ({"a": 1}, {"b": 1}, 0.0),
        ({"a": None}, {}, 0.0),  # a missing key never matches, even None
        ({"a": None}, {"a": None}, 1.0),
        ({"a": [1, 2]}, {"a": [1, 2]}, 1.0),
        ({}, {"a": 1}, 0.0),
        (None, {"a": 1}, 0.0),
    ],
)
def test_metadata_overlap_feature(engineer, query_md, cand_md, expected):
    emb = np.ones(4, np.float32)
    c = Candidate("m", emb, metadata=cand_md, created_at=NOW)
    fv = engineer.extract_features(emb, c, query_md)
    assert fv.metadata_overlap == pytest.approx(expected, rel=1e-6)
    batch = engineer.extract_batch_features(emb, [c], query_md)
    assert batch[0, 4] == pytest.approx(0.1 * expected, rel=1e-6)


def test_custom_weights(rng, clock):
    config = FeatureConfig(0.0, 1.0, 0.5, 0.0, 2.0, recency_decay=0.002)
    eng = FeatureEngineer(config, clock=clock)
    cands = make_candidates(rng, 9, dim=12)
    q = rng.standard_normal(12).astype(np.float32)
    got = eng.extract_batch_features(q, cands, {"colour": "red"})
    expected = ref_features(q, cands, NOW, weights=config.weights, decay=0.002, query_md={"colour": "red"})
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert (got[:, 0] == 0.0).all() and (got[:, 3] == 0.0).all()


# ---------------------------------------------------------------------------------------------------------
# Paths agree
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [1, 3, 17, 384])
def test_batch_equals_per_candidate_and_list_equals_batch(isa, rng, engineer, dim):
    cands = make_candidates(rng, 40, dim=dim)
    q = rng.standard_normal(dim).astype(np.float32)
    md = {"colour": "green", "lang": "en"}
    from_batch = engineer.extract_batch_features(q, CandidateBatch.from_candidates(cands), md)
    from_list = engineer.extract_batch_features(q, cands, md)
    from_tuple = engineer.extract_batch_features(q, tuple(cands), md)
    from_columns = engineer.extract_batch_features(q, as_batch(cands), md)
    single = np.array([engineer.extract_features(q, c, md).features for c in cands], dtype=np.float32)
    np.testing.assert_array_equal(from_list, from_batch)
    np.testing.assert_array_equal(from_tuple, from_batch)
    np.testing.assert_array_equal(from_columns, from_batch)
    np.testing.assert_array_equal(single, from_batch)


def test_query_as_list_or_float64_gives_the_same(rng, engineer):
    cands = make_candidates(rng, 5, dim=8)
    q = rng.standard_normal(8).astype(np.float32)
    expected = engineer.extract_batch_features(q, cands)
    np.testing.assert_array_equal(engineer.extract_batch_features(q.tolist(), cands), expected)
    np.testing.assert_array_equal(engineer.extract_batch_features(q.astype(np.float64), cands), expected)


def test_out_array_is_filled(rng, engineer):
    batch = CandidateBatch.from_candidates(make_candidates(rng, 6, dim=8))
    q = rng.standard_normal(8).astype(np.float32)
    out = np.full((6, 5), np.nan, np.float32)
    assert engineer.extract_batch_features(q, batch, out=out) is out
    np.testing.assert_array_equal(out, engineer.extract_batch_features(q, batch))
    with pytest.raises(InvalidInputError, match="out"):
        engineer.extract_batch_features(q, batch, out=np.empty((5, 5), np.float32))


# ---------------------------------------------------------------------------------------------------------
# The clock
# ---------------------------------------------------------------------------------------------------------


def test_clock_is_read_once_per_call(rng, engineer, clock):
    cands = make_candidates(rng, 10, dim=8)
    batch = CandidateBatch.from_candidates(cands)
    q = rng.standard_normal(8)
    engineer.extract_batch_features(q, batch)
    assert clock.reads == 1
    engineer.extract_batch_features(q, cands, {"colour": "red"})
    assert clock.reads == 2
    engineer.extract_features(q, cands[0])
    assert clock.reads == 3
    engineer.extract_batch_features(q, batch, now=NOW)
    engineer.extract_features(q, cands[0], now=NOW)
    assert clock.reads == 3  # an explicit now is used instead


def test_clock_moves_recency(rng):
    clock = CountingClock(NOW)
    eng = FeatureEngineer(clock=clock)
    emb = np.ones(4, np.float32)
    c = Candidate("c", emb, created_at=NOW)
    assert eng.extract_features(emb, c).recency_score == 1.0
    clock.now = NOW + 1000.0
    assert eng.extract_features(emb, c).recency_score == pytest.approx(math.exp(-1.0), rel=1e-6)


def test_default_clock_is_time_time():
    import time

    assert FeatureEngineer().clock is time.time


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "soon", None])
def test_bad_clock_values(rng, bad):
    eng = FeatureEngineer(clock=lambda: bad)
    cands = make_candidates(rng, 3, dim=4)
    with pytest.raises(ConfigError, match="clock"):
        eng.extract_batch_features(np.ones(4), cands)
    with pytest.raises(ConfigError, match="clock"):
        eng.extract_features(np.ones(4), cands[0])


@pytest.mark.parametrize("bad", [float("nan"), "now"])
def test_bad_now(engineer, rng, bad):
    cands = make_candidates(rng, 3, dim=4)
    with pytest.raises(InvalidInputError, match="now"):
        engineer.extract_batch_features(np.ones(4), cands, now=bad)


# ---------------------------------------------------------------------------------------------------------
# Bad input names the field
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def cands(rng) -> list[Candidate]:
    return make_candidates(rng, 6, dim=8)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_query(engineer, cands, bad):
    q = np.ones(8, np.float32)
    q[3] = bad
    for candidates in (cands, CandidateBatch.from_candidates(cands)):
        with pytest.raises(InvalidInputError, match=r"query_embedding holds a non-finite value .* at \[3\]"):
            engineer.extract_batch_features(q, candidates)
    with pytest.raises(InvalidInputError, match="query_embedding"):
        engineer.extract_features(q, cands[0])


def test_non_finite_candidate_embedding(engineer, cands):
    bad = np.ones(8, np.float32)
    bad[5] = np.nan
    with pytest.raises(InvalidInputError, match=r"embedding holds a non-finite value \(nan\) at \[5\]"):
        Candidate("x", bad)
    with pytest.raises(InvalidInputError, match=r"embeddings holds a non-finite value \(nan\) at \[2, 5\]"):
        CandidateBatch(["a", "b", "c"], np.stack([np.ones(8), np.ones(8), bad]), [0, 0, 0], [0, 0, 0], [0, 0, 0])
    cands[4].embedding = bad  # assigned after construction: caught when used
    with pytest.raises(InvalidInputError, match=r"candidates\[4\]\.embedding holds a non-finite value"):
        engineer.extract_batch_features(np.ones(8), cands)
    with pytest.raises(InvalidInputError, match=r"candidate\.embedding holds a non-finite value"):
        engineer.extract_features(np.ones(8), cands[4])


def test_mismatched_lengths(engineer, cands):
    q = np.ones(9, np.float32)
    with pytest.raises(
        InvalidInputError, match=r"the candidates' embeddings have length 8, but query_embedding has length 9"
    ):
        engineer.extract_batch_features(q, CandidateBatch.from_candidates(cands))
    with pytest.raises(
        InvalidInputError, match=r"the candidates' embeddings have length 8, but query_embedding has length 9"
    ):
        engineer.extract_batch_features(q, cands)
    with pytest.raises(InvalidInputError, match=r"the candidates' embeddings have length 8, but query_embedding has length 9"):
        engineer.extract_features(q, cands[0])
    cands[3].embedding = np.ones(7, np.float32)  # one candidate differs from the others
    with pytest.raises(
        InvalidInputError, match=r"candidates\[3\]\.embedding has length 7, but candidates\[0\]\.embedding has length 8"
    ):
        engineer.extract_batch_features(np.ones(8), cands)


@pytest.mark.parametrize(
    ("field", "value", "pattern", "list_checks"),
    [
        ("access_count", -1, r"access_count must be an int >= 0, got -1", True),
        ("success_rate", 1.5, r"success_rate must lie in \[0, 1\], got 1.5", True),
        ("success_rate", -0.01, r"success_rate must lie in \[0, 1\]", True),
        ("success_rate", float("nan"), r"success_rate must lie in \[0, 1\], got nan", True),
        ("created_at", float("nan"), r"created_at must be finite", True),
        ("created_at", float("inf"), r"created_at must be finite", True),
        ("access_count", 2.5, r"access_count must be an int, got float", True),
        ("access_count", "7", r"access_count must be an int, got str", True),
        ("success_rate", "high", r"success_rate must be a real number, got str", True),
        ("created_at", None, r"created_at must be a real number, got NoneType", True),
        ("access_count", True, r"access_count must be an int, got bool", True),
    ],
)
def test_bad_candidate_fields(engineer, cands, field, value, pattern, list_checks):
    emb = np.ones(8, np.float32)
    with pytest.raises(InvalidInputError, match=pattern):
        Candidate("x", emb, **{field: value})
    # assigned after construction: the kernels (or the slow-path diagnosis) still name it
    setattr(cands[2], field, value)
    if list_checks:
        with pytest.raises(InvalidInputError, match=r"candidates\[2\]\." + pattern):
            engineer.extract_batch_features(emb, cands)
    with pytest.raises(InvalidInputError, match=r"candidate\." + pattern):
        engineer.extract_features(emb, cands[2])


@pytest.mark.parametrize(
    ("column", "value", "pattern"),
    [
        ("access_count", [0, -4, 1], r"access_count\[1\] = -4 must not be negative"),
        ("success_rate", [0.5, 1.5, 1.0], r"success_rate\[1\] = 1.5 is outside \[0, 1\]"),
        ("created_at", [0.0, 1.0, np.nan], r"created_at holds a non-finite value \(nan\) at \[2\]"),
    ],
)
def test_bad_batch_columns(column, value, pattern):
    args = {"created_at": [0.0, 0.0, 0.0], "access_count": [0, 0, 0], "success_rate": [0.0, 0.0, 0.0]}
    args[column] = value
    with pytest.raises(InvalidInputError, match=pattern):
        CandidateBatch(["a", "b", "c"], np.ones((3, 4)), **args)


@pytest.mark.parametrize(
    ("query", "pattern"),
    [
        ("hello", "query_embedding must hold real numbers"),
        (np.ones((2, 8)), r"query_embedding must be a 1-D array, got shape \(2, 8\)"),
        (np.ones(0), "query_embedding is empty"),
        (None, "query_embedding is None; expected a 1-D array"),
        ([1, "a"], "query_embedding must hold real numbers"),
    ],
)
def test_bad_query_types(engineer, cands, query, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        engineer.extract_batch_features(query, cands)
    with pytest.raises(InvalidInputError, match=pattern):
        engineer.extract_batch_features(query, CandidateBatch.from_candidates(cands))
    with pytest.raises(InvalidInputError, match=pattern):
        engineer.extract_features(query, cands[0])


def test_bad_candidates_types(engineer, cands):
    q = np.ones(8)
    for bad in (cands[0], {"a": cands[0]}, "abc", None, np.ones((3, 8)), iter(cands)):
        with pytest.raises(InvalidInputError, match="candidates must be a list of Candidate or a CandidateBatch"):
            engineer.extract_batch_features(q, bad)
    with pytest.raises(InvalidInputError, match=r"candidates\[1\] must be a Candidate, got str"):
        engineer.extract_batch_features(q, [cands[0], "nope"])
    with pytest.raises(InvalidInputError, match="candidate must be a Candidate, got list"):
        engineer.extract_features(q, cands)


def test_bad_query_metadata(engineer, cands):
    for candidates in (cands, CandidateBatch.from_candidates(make_candidates(np.random.default_rng(1), 2, 8, False))):
        with pytest.raises(InvalidInputError, match="query_metadata must be a dict or None, got list"):
            engineer.extract_batch_features(np.ones(8), candidates, [("colour", "red")])
    with pytest.raises(InvalidInputError, match="query_metadata must be a dict"):
        engineer.extract_features(np.ones(8), cands[0], "colour=red")


# ---------------------------------------------------------------------------------------------------------
# Config and engineer
# ---------------------------------------------------------------------------------------------------------


def test_feature_config_defaults_and_weights():
    config = FeatureConfig()
    assert config.weights == WEIGHTS
    assert config.recency_decay == 0.001
    assert config.kernel_weights().weights == pytest.approx(WEIGHTS)
    assert FeatureConfig(1, 0, 0, 0, 0, 0).weights == (1.0, 0.0, 0.0, 0.0, 0.0)
    assert isinstance(FeatureConfig(1).similarity_weight, float)
    with pytest.raises(AttributeError):
        config.similarity_weight = 1.0  # type: ignore[misc]
    assert FeatureConfig() == FeatureConfig() and hash(FeatureConfig()) == hash(FeatureConfig())


@pytest.mark.parametrize(
    "name",
    ["similarity_weight", "recency_weight", "frequency_weight", "success_weight", "metadata_weight", "recency_decay"],
)
@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), "0.4", True, None])
def test_feature_config_validation(name, value):
    with pytest.raises(ConfigError, match=name):
        FeatureConfig(**{name: value})


def test_engineer_arguments():
    with pytest.raises(ConfigError, match="config must be a FeatureConfig"):
        FeatureEngineer({"similarity_weight": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="clock must be a callable"):
        FeatureEngineer(clock=NOW)  # type: ignore[arg-type]
    config = FeatureConfig(similarity_weight=1.0)
    assert FeatureEngineer(config).config is config


def test_feature_vector_is_frozen_with_slots(engineer):
    fv = engineer.extract_features(np.ones(4), Candidate("a", np.ones(4), created_at=NOW))
    with pytest.raises(AttributeError):
        fv.recency_score = 0.0  # type: ignore[misc]
    assert not hasattr(fv, "__dict__")
    assert isinstance(fv.features, tuple) and len(fv.features) == 5
    assert hash(fv) == hash(engineer.extract_features(np.ones(4), Candidate("a", np.ones(4), created_at=NOW)))


# ---------------------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------------------


def test_no_candidates(engineer):
    q = np.ones(8, np.float32)
    for empty in ([], (), CandidateBatch.from_candidates([]), CandidateBatch([], np.empty((0, 8)), [], [], [])):
        got = engineer.extract_batch_features(q, empty, {"a": 1})
        assert got.shape == (0, 5) and got.dtype == np.float32
    with pytest.raises(InvalidInputError, match="query_embedding holds a non-finite value"):
        engineer.extract_batch_features(np.array([np.nan]), [])
    with pytest.raises(InvalidInputError, match="length 8, but query_embedding has length 3"):
        engineer.extract_batch_features(np.ones(3), CandidateBatch([], np.empty((0, 8)), [], [], []))


def test_ten_thousand_candidates(rng, engineer):
    n, dim = 10_000, 64
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    created = NOW - rng.uniform(-100, 1e6, n)
    counts = rng.integers(0, 50_000, n)
    success = rng.random(n)
    md = [{"k": i % 4} for i in range(n)]
    batch = CandidateBatch([f"c{i}" for i in range(n)], emb, created, counts, success, md)
    q = rng.standard_normal(dim).astype(np.float32)
    got = engineer.extract_batch_features(q, batch, {"k": 1})
    assert got.shape == (n, 5) and np.isfinite(got).all()
    cands = batch.to_candidates()
    np.testing.assert_array_equal(engineer.extract_batch_features(q, cands, {"k": 1}), got)
    pick = rng.choice(n, 200, replace=False)
    expected = ref_features(q, [cands[i] for i in pick], NOW, query_md={"k": 1})
    np.testing.assert_allclose(got[pick], expected, rtol=0, atol=ATOL)


def test_engineer_and_batch_shared_between_threads(rng, engineer):
    batch = CandidateBatch.from_candidates(make_candidates(rng, 300, dim=64))
    queries = rng.standard_normal((8, 64)).astype(np.float32)
    expected = [engineer.extract_batch_features(q, batch, now=NOW) for q in queries]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(50):
                np.testing.assert_array_equal(engineer.extract_batch_features(queries[i], batch, now=NOW), expected[i])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_recency_half_life(clock):
    week = 7 * 86400.0
    config = FeatureConfig(recency_half_life=week)
    assert config.recency_decay == pytest.approx(math.log(2) / week, rel=1e-15)
    assert dataclasses.replace(config, similarity_weight=0.5).recency_decay == config.recency_decay
    eng = FeatureEngineer(config, clock=clock)
    emb = np.ones(4)
    for age, expected in [(0.0, 1.0), (week, 0.5), (2 * week, 0.25), (3600.0, 0.5 ** (3600 / week))]:
        fv = eng.extract_features(emb, Candidate("c", emb, created_at=NOW - age))
        assert fv.recency_score == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(recency_half_life=0.0), "recency_half_life must be > 0"),
        (dict(recency_half_life=-5.0), "recency_half_life must be > 0"),
        (dict(recency_half_life=float("inf")), "recency_half_life must be finite"),
        (dict(recency_half_life="1h"), "recency_half_life must be a real number"),
        (dict(recency_decay=0.01, recency_half_life=60.0), "recency_decay 0.01 and recency_half_life 60.0 disagree"),
        (dict(future_tolerance=-1.0), "future_tolerance must be >= 0"),
    ],
)
def test_bad_recency_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FeatureConfig(**kwargs)


def test_the_future_tolerance_of_the_engineer(clock):
    emb = np.ones(4)
    eng = FeatureEngineer(FeatureConfig(future_tolerance=10.0), clock=clock)
    assert eng.extract_features(emb, Candidate("c", emb, created_at=NOW + 10.0)).recency_score == 1.0
    with pytest.raises(InvalidInputError, match=r"candidate\.created_at is .*at most 10 s ahead of now \(candidate id 'c'\)"):
        eng.extract_features(emb, Candidate("c", emb, created_at=NOW + 11.0))
    with pytest.raises(InvalidInputError, match=r"candidates\[1\]\.created_at .*candidate id 'late'"):
        eng.extract_batch_features(emb, [Candidate("a", emb, created_at=NOW), Candidate("late", emb, created_at=NOW + 1e4)])
