"""The router's data types: validation, conversion, immutability, alignment and lazy decisions."""

from __future__ import annotations

import copy
import json
import pickle
import time

import numpy as np
import pytest

from tinydancer import kernels
from tinydancer.errors import InvalidInputError
from tinydancer.types import (
    Candidate,
    CandidateBatch,
    RoutingDecision,
    RoutingRequest,
    RoutingResponse,
    metadata_overlap,
    rank_order,
)

# ---------------------------------------------------------------------------------------------------------
# Candidate
# ---------------------------------------------------------------------------------------------------------


def test_candidate_converts_the_embedding_once():
    c = Candidate("a", [1, 2, 3])
    assert c.embedding.dtype == np.float32 and c.embedding.shape == (3,) and c.embedding.flags.c_contiguous
    assert c.embedding.tolist() == [1.0, 2.0, 3.0]
    f64 = np.array([0.5, 1.5])
    assert Candidate("b", f64).embedding.dtype == np.float32
    strided = np.arange(10, dtype=np.float32)[::2]
    assert Candidate("c", strided).embedding.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    f32 = np.ones(4, np.float32)
    assert Candidate("d", f32).embedding is f32  # already right: kept without a copy
    assert Candidate("e", np.array([1, 2], dtype=np.int8)).embedding.tolist() == [1.0, 2.0]


def test_candidate_defaults(monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1234.5)
    a = Candidate("a", [1.0])
    b = Candidate("b", [1.0])
    assert a.created_at == 1234.5
    assert a.metadata == {} and a.metadata is not b.metadata
    assert a.access_count == 0 and a.success_rate == 0.0


def test_candidate_keyword_and_positional_order():
    c = Candidate("x", [1.0], {"k": "v"}, 10.0, 3, 0.5)
    assert (c.id, c.metadata, c.created_at, c.access_count, c.success_rate) == ("x", {"k": "v"}, 10.0, 3, 0.5)
    assert Candidate(id="x", embedding=[1.0], metadata={"k": "v"}, created_at=10, access_count=3, success_rate=0.5) == c


def test_candidate_normalises_numbers():
    c = Candidate("n", [1.0], created_at=np.int64(5), access_count=np.int64(7), success_rate=np.float32(0.5))
    assert type(c.created_at) is float and type(c.access_count) is int and type(c.success_rate) is float
    assert Candidate("n", [1.0], success_rate=1).success_rate == 1.0
    assert Candidate("n", [1.0], access_count=2**63 - 1).access_count == 2**63 - 1


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"id": 7}, "id must be a str, got int"),
        ({"id": None}, "id must be a str, got NoneType"),
        ({"embedding": []}, "embedding is empty"),
        ({"embedding": [[1.0, 2.0]]}, r"embedding must be a 1-D array, got shape \(1, 2\)"),
        ({"embedding": 3.0}, r"embedding must be a 1-D array, got shape \(\)"),
        ({"embedding": ["a", "b"]}, "embedding must hold real numbers"),
        ({"embedding": [1.0, None]}, "embedding must hold real numbers"),
        ({"embedding": [True, False]}, "embedding must hold real numbers"),
        ({"embedding": [1.0, float("nan")]}, r"embedding holds a non-finite value \(nan\) at \[1\]"),
        ({"embedding": [float("-inf"), 1.0]}, r"embedding holds a non-finite value \(-inf\) at \[0\]"),
        ({"embedding": [1e300]}, r"embedding holds a non-finite value \(inf\) at \[0\]"),  # beyond float32
        ({"metadata": [("k", "v")]}, "metadata must be a dict, got list"),
        ({"metadata": None}, "metadata must be a dict, got NoneType"),
        ({"created_at": float("nan")}, "created_at must be finite, got nan"),
        ({"created_at": "2024-01-01"}, "created_at must be a real number, got str"),
        ({"created_at": True}, "created_at must be a real number, got bool"),
        ({"access_count": -1}, "access_count must be an int >= 0, got -1"),
        ({"access_count": 1.0}, "access_count must be an int, got float"),
        ({"access_count": False}, "access_count must be an int, got bool"),
        ({"access_count": 2**63}, "access_count must be an int <= 9223372036854775807"),
        ({"success_rate": 1.5}, r"success_rate must lie in \[0, 1\], got 1.5"),
        ({"success_rate": -0.5}, r"success_rate must lie in \[0, 1\]"),
        ({"success_rate": float("nan")}, r"success_rate must lie in \[0, 1\], got nan"),
        ({"success_rate": True}, "success_rate must be a real number, got bool"),
    ],
)
def test_candidate_validation_names_the_field(kwargs, pattern):
    args = {"id": "a", "embedding": [1.0, 2.0]} | kwargs
    with pytest.raises(InvalidInputError, match=pattern):
        Candidate(**args)


def test_candidate_equality_and_repr():
    a = Candidate("a", np.arange(384), {"k": 1}, 5.0, 2, 0.25)
    b = Candidate("a", np.arange(384).tolist(), {"k": 1}, 5.0, 2, 0.25)
    assert a == b
    assert a != Candidate("a", np.arange(384) + 1, {"k": 1}, 5.0, 2, 0.25)
    assert a != Candidate("a", np.arange(384), {"k": 2}, 5.0, 2, 0.25)
    assert a != "a"
    with pytest.raises(TypeError):
        hash(a)
    r = repr(a)
    assert "float32[384]" in r and "'a'" in r and len(r) < 200
    assert a.dim == 384
    assert not hasattr(a, "__dict__")  # slots


# ---------------------------------------------------------------------------------------------------------
# CandidateBatch
# ---------------------------------------------------------------------------------------------------------


def columns(rng, n=5, dim=16):
    return dict(
        ids=[f"id{i}" for i in range(n)],
        embeddings=rng.standard_normal((n, dim)),
        created_at=np.arange(n, dtype=np.int64) * 10,
        access_count=np.arange(n, dtype=np.int32),
        success_rate=np.linspace(0, 1, n),
        metadata=[{"i": i} for i in range(n)],
    )


def test_batch_converts_and_exposes_columns(rng):
    cols = columns(rng)
    b = CandidateBatch(**cols)
    assert len(b) == 5 and b.dim == 16
    assert b.ids == tuple(cols["ids"])
    assert b.embeddings.dtype == np.float32 and b.embeddings.shape == (5, 16) and b.embeddings.flags.c_contiguous
    np.testing.assert_array_equal(b.embeddings, cols["embeddings"].astype(np.float32))
    assert b.created_at.dtype == np.float64 and b.created_at.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert b.access_count.dtype == np.int64 and b.access_count.tolist() == [0, 1, 2, 3, 4]
    assert b.success_rate.dtype == np.float32 and b.success_rate.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert b.metadata == tuple(cols["metadata"])
    np.testing.assert_array_equal(b.norms, kernels.l2_norms(b.embeddings))
    assert "n=5" in repr(b) and "dim=16" in repr(b)


def test_batch_accepts_plain_lists_and_numpy_string_ids():
    b = CandidateBatch(np.array(["a", "b"]), [[1, 0], [0, 1]], [1.0, 2.0], [3, 4], [0.5, 1])
    assert b.ids == ("a", "b") and all(type(i) is str for i in b.ids)
    assert b.embeddings.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert b.metadata is None


def test_batch_ids_may_repeat():
    b = CandidateBatch(["same", "same"], np.ones((2, 3)), [0, 0], [0, 0], [0, 0])
    assert b.ids == ("same", "same")


@pytest.mark.parametrize(("n", "dim"), [(1, 1), (3, 7), (10, 384), (33, 100), (0, 5)])
def test_batch_embeddings_are_64_byte_aligned(rng, n, dim):
    b = CandidateBatch(
        [str(i) for i in range(n)], rng.standard_normal((n, dim)), np.zeros(n), np.zeros(n, int), np.zeros(n)
    )
    assert b.embeddings.ctypes.data % 64 == 0
    # from_candidates, the per-request list path, gathers into an ordinary array: no alignment promised,
    # but the same values
    cands = [Candidate(str(i), rng.standard_normal(dim)) for i in range(n)]
    if n:
        gathered = CandidateBatch.from_candidates(cands)
        np.testing.assert_array_equal(gathered.embeddings, np.stack([c.embedding for c in cands]))
        assert not gathered.embeddings.flags.writeable


def test_batch_is_immutable_and_owns_its_data(rng):
    cols = columns(rng)
    source = np.ascontiguousarray(cols["embeddings"], dtype=np.float32)
    created = np.arange(5, dtype=np.float64)
    b = CandidateBatch(cols["ids"], source, created, cols["access_count"], cols["success_rate"])
    for name in ("embeddings", "norms", "created_at", "access_count", "success_rate"):
        arr = getattr(b, name)
        assert not arr.flags.writeable, name
        with pytest.raises(ValueError):
            arr[0] = 0
        with pytest.raises(AttributeError):
            setattr(b, name, arr)
    with pytest.raises(AttributeError):
        b.ids = ("x",)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        b.extra = 1  # type: ignore[attr-defined]
    assert isinstance(b.ids, tuple)
    # the caller's arrays stay writable, and changing them does not change the batch
    assert source.flags.writeable and created.flags.writeable
    source[0, 0] = 1e6
    created[0] = -1.0
    assert b.embeddings[0, 0] != 1e6 and b.created_at[0] == 0.0


def test_batch_metadata_normalisation(rng):
    cols = columns(rng, n=3)
    assert CandidateBatch(**(cols | {"metadata": [{}, {}, {}]})).metadata is None
    md = [{}, {"a": 1}, {}]
    assert CandidateBatch(**(cols | {"metadata": md})).metadata == tuple(md)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"ids": "abc"}, "ids must be a sequence of str, got str"),
        ({"ids": None}, "ids must be a sequence of str, got NoneType"),
        ({"ids": ["a", 2, "c"]}, r"ids\[1\] must be a str, got int"),
        ({"ids": ["a", "b"]}, r"embeddings must have one row per id \(2\), got 3"),
        ({"embeddings": np.ones(3)}, r"embeddings must be a 2-D array, got shape \(3,\)"),
        ({"embeddings": np.ones((3, 0))}, "embeddings has no columns"),
        ({"embeddings": np.array([["a"], ["b"], ["c"]])}, "embeddings must hold real numbers"),
        ({"embeddings": np.full((3, 2), np.inf)}, r"embeddings holds a non-finite value \(inf\) at \[0, 0\]"),
        ({"embeddings": np.full((3, 2), 3e38)}, r"embeddings\[0\] has a norm beyond the float32 range"),
        ({"created_at": [0.0, 1.0]}, r"created_at must have one entry per candidate \(3\), got 2"),
        ({"created_at": ["a", "b", "c"]}, "created_at must hold real numbers"),
        ({"created_at": [[0.0, 1.0, 2.0]]}, "created_at must be a 1-D array"),
        ({"created_at": [0.0, np.inf, 1.0]}, r"created_at holds a non-finite value \(inf\) at \[1\]"),
        ({"access_count": [0, 1.5, 2]}, r"access_count must hold integers \(int64\), got dtype float64"),
        ({"access_count": [True, False, True]}, r"access_count must hold integers \(int64\), got dtype bool"),
        ({"access_count": [0, -1, 2]}, r"access_count\[1\] = -1 must not be negative"),
        (
            {"access_count": np.array([0, 2**64 - 1, 1], dtype=np.uint64)},
            r"access_count holds values outside the int64 range",
        ),
        ({"success_rate": [0.0, 0.5, 1.0000001]}, r"success_rate\[2\] = 1.0000001\d* is outside \[0, 1\]"),
        ({"success_rate": [0.0, np.nan, 1.0]}, r"success_rate\[1\] = nan is outside \[0, 1\]"),
        ({"metadata": {"a": 1}}, "metadata must be None or a list of dicts, got dict"),
        ({"metadata": [{}, {}]}, r"metadata must have one dict per candidate \(3\), got 2"),
        ({"metadata": [{}, None, {}]}, r"metadata\[1\] must be a dict, got NoneType"),
    ],
)
def test_batch_validation_names_the_argument(change, pattern):
    args = (
        dict(
            ids=["a", "b", "c"],
            embeddings=np.ones((3, 2)),
            created_at=[0.0, 0.0, 0.0],
            access_count=[0, 0, 0],
            success_rate=[0.0, 0.0, 0.0],
        )
        | change
    )
    with pytest.raises(InvalidInputError, match=pattern):
        CandidateBatch(**args)


def test_empty_batches():
    b = CandidateBatch([], np.empty((0, 8)), [], [], [])
    assert len(b) == 0 and b.dim == 8 and b.norms.shape == (0,)
    e = CandidateBatch.from_candidates([])
    assert len(e) == 0 and e.dim == 0 and e.embeddings.shape == (0, 0) and e.metadata is None
    assert CandidateBatch.from_candidates(()).ids == ()


def test_from_candidates_matches_the_columnar_constructor(rng):
    cands = [
        Candidate(f"c{i}", rng.standard_normal(24), {"k": i % 2} if i % 3 else {}, 100.0 + i, i * 7, i / 16)
        for i in range(10)
    ]
    a = CandidateBatch.from_candidates(cands)
    b = CandidateBatch(
        [c.id for c in cands],
        np.stack([c.embedding for c in cands]),
        [c.created_at for c in cands],
        [c.access_count for c in cands],
        [c.success_rate for c in cands],
        [c.metadata for c in cands],
    )
    assert a.ids == b.ids and a.metadata == b.metadata
    for name in ("embeddings", "norms", "created_at", "access_count", "success_rate"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and not x.flags.writeable, name
        np.testing.assert_array_equal(x, y)
    assert a.to_candidates() == cands
    assert a.candidate(-1) == cands[-1]
    # the batch copied the embeddings: changing a candidate afterwards does not change it
    cands[0].embedding[0] = 42.0
    assert a.embeddings[0, 0] != 42.0


def test_from_candidates_without_metadata_stores_none(rng):
    cands = [Candidate(str(i), rng.standard_normal(4)) for i in range(3)]
    assert CandidateBatch.from_candidates(cands).metadata is None


def test_from_candidates_errors(rng):
    good = [Candidate(str(i), rng.standard_normal(4)) for i in range(4)]
    with pytest.raises(InvalidInputError, match="candidates must be a list of Candidate, got generator"):
        CandidateBatch.from_candidates(c for c in good)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"candidates\[2\] must be a Candidate, got dict"):
        CandidateBatch.from_candidates(good[:2] + [{"id": "x"}] + good[2:])  # type: ignore[list-item]
    odd = good[:3] + [Candidate("odd", rng.standard_normal(5))]
    with pytest.raises(
        InvalidInputError, match=r"candidates\[3\]\.embedding has length 5, but candidates\[0\]\.embedding has length 4"
    ):
        CandidateBatch.from_candidates(odd)
    good[1].embedding = np.array([1.0, np.nan, 0.0, 0.0], np.float32)
    with pytest.raises(InvalidInputError, match=r"candidates\[1\]\.embedding holds a non-finite value"):
        CandidateBatch.from_candidates(good)
    good[1].embedding = np.full(4, 3e38, np.float32)
    with pytest.raises(InvalidInputError, match=r"candidates\[1\]\.embedding has a norm beyond the float32 range"):
        CandidateBatch.from_candidates(good)
    good[1].embedding = "abcd"
    with pytest.raises(InvalidInputError, match=r"candidates\[1\]\.embedding must hold real numbers"):
        CandidateBatch.from_candidates(good)
    good[1].embedding = np.ones(4, np.float32)
    good[2].id = 5  # type: ignore[assignment]
    good[3].access_count = 1.5  # type: ignore[assignment]
    with pytest.raises(InvalidInputError, match=r"candidates\[2\]\.id must be a str"):
        CandidateBatch.from_candidates(good)


def test_batch_pickles_and_copies_stay_aligned(rng):
    b = CandidateBatch(**columns(rng, n=7, dim=9))
    for clone in (pickle.loads(pickle.dumps(b)), copy.deepcopy(b), copy.copy(b)):
        assert clone.ids == b.ids and clone.metadata == b.metadata
        np.testing.assert_array_equal(clone.embeddings, b.embeddings)
        np.testing.assert_array_equal(clone.norms, b.norms)
        assert clone.embeddings.ctypes.data % 64 == 0 and not clone.embeddings.flags.writeable


def test_ten_thousand_candidates(rng):
    n, dim = 10_000, 32
    cands = [Candidate(f"c{i}", rng.standard_normal(dim), {"g": i % 5}, float(i), i, (i % 11) / 10) for i in range(n)]
    b = CandidateBatch.from_candidates(cands)
    assert len(b) == n and b.dim == dim
    assert b.access_count[-1] == n - 1 and b.created_at[1234] == 1234.0
    overlap = metadata_overlap({"g": 3}, b.metadata)
    assert overlap.shape == (n,) and overlap.sum() == n // 5


# ---------------------------------------------------------------------------------------------------------
# metadata_overlap
# ---------------------------------------------------------------------------------------------------------


def test_metadata_overlap_cases():
    q = {"lang": "en", "team": "core", "tier": 2}
    mds = [
        {"lang": "en", "team": "core", "tier": 2},
        {"lang": "en", "team": "web", "tier": 2, "extra": 1},
        {"lang": "fr"},
        {},
        None,
        {"tier": 2.0},  # == in Python: 2 == 2.0
    ]
    got = metadata_overlap(q, mds)
    assert got.dtype == np.float32 and got.shape == (6,)
    np.testing.assert_array_equal(got, np.array([1.0, 2 / 3, 0.0, 0.0, 0.0, 1 / 3], dtype=np.float32))
    assert metadata_overlap(None, mds).tolist() == [0.0] * 6
    assert metadata_overlap({}, mds).tolist() == [0.0] * 6
    assert metadata_overlap(q, []).shape == (0,)
    assert metadata_overlap({"k": None}, [{}, {"k": None}, {"j": None}]).tolist() == [0.0, 1.0, 0.0]
    nan = float("nan")
    assert metadata_overlap({"k": nan}, [{"k": nan}, {"k": float("nan")}]).tolist() == [1.0, 0.0]  # as dicts compare


def test_metadata_overlap_rejects_non_dicts():
    with pytest.raises(InvalidInputError, match="query_metadata must be a dict or None, got list"):
        metadata_overlap([("a", 1)], [{}])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"candidate_metadatas\[1\] must be a dict or None, got list"):
        metadata_overlap({"a": 1}, [{"a": 1}, [("a", 1)]])  # type: ignore[list-item]


def random_metadata(rng, n):
    values = [1, 1.0, True, 0, "1", "en", None, 2.5, [1, 2], {"x": 1}, (1, 2), float("nan")]
    keys = ["a", "b", "c", "d"]
    return [{k: values[int(rng.integers(len(values)))] for k in keys if rng.random() < 0.6} for _ in range(n)]


def test_batch_metadata_index_matches_the_plain_loop(rng):
    n = 300
    mds = random_metadata(rng, n)
    batch = CandidateBatch(
        [str(i) for i in range(n)], np.ones((n, 2)), np.zeros(n), np.zeros(n, int), np.zeros(n), mds
    )
    cands = [Candidate(str(i), [1.0, 1.0], md) for i, md in enumerate(mds)]
    from_list = CandidateBatch.from_candidates(cands)
    for query in random_metadata(rng, 60) + [{"a": [1, 2]}, {"b": {"x": 1}}, {"zzz": 1}, {"a": None, "b": "en"}]:
        if not query:
            continue
        expected = metadata_overlap(query, mds)
        np.testing.assert_array_equal(batch.metadata_overlap(query), expected)  # a loop, then the index
        np.testing.assert_array_equal(from_list.metadata_overlap(query), expected)
        np.testing.assert_array_equal(CandidateBatch.from_candidates(cands).metadata_overlap(query), expected)
        # compared as dict values are compared: identity, then == (one NaN object equals itself)
        reference = [
            sum(1 for k, v in query.items() if k in md and (md[k] is v or md[k] == v)) / len(query) for md in mds
        ]
        np.testing.assert_array_equal(expected, np.array(reference, dtype=np.float32))


def test_batch_metadata_overlap_none_means_zero(rng):
    with_md = CandidateBatch(["a", "b"], np.ones((2, 2)), [0, 0], [0, 0], [0, 0], [{"k": 1}, {}])
    without = CandidateBatch(["a", "b"], np.ones((2, 2)), [0, 0], [0, 0], [0, 0])
    assert with_md.metadata_overlap(None) is None and with_md.metadata_overlap({}) is None
    assert without.metadata_overlap({"k": 1}) is None
    for _ in range(3):  # the loop, then the index it builds, then the index
        assert with_md.metadata_overlap({"k": 1}).tolist() == [1.0, 0.0]
    for batch in (with_md, without):
        with pytest.raises(InvalidInputError, match="query_metadata must be a dict or None, got str"):
            batch.metadata_overlap("k=1")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# RoutingRequest and RoutingDecision
# ---------------------------------------------------------------------------------------------------------


def test_routing_request(rng):
    cands = [Candidate("a", [1.0, 0.0])]
    r = RoutingRequest([1, 0], cands)
    assert r.query_embedding.dtype == np.float32 and r.query_embedding.tolist() == [1.0, 0.0]
    assert r.candidates is cands and r.metadata is None
    q = np.ones(2, np.float32)
    assert RoutingRequest(q, cands).query_embedding is q
    batch = CandidateBatch.from_candidates(cands)
    assert RoutingRequest(q, batch, {"k": 1}).candidates is batch
    assert RoutingRequest(q, tuple(cands)).candidates == tuple(cands)
    assert RoutingRequest(q, []).candidates == []


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (([1.0], "abc"), "candidates must be a list of Candidate or a CandidateBatch, got str"),
        (([1.0], None), "candidates must be a list of Candidate or a CandidateBatch, got NoneType"),
        (([1.0], [], ["k"]), "metadata must be a dict or None, got list"),
        (("abc", []), "query_embedding must hold real numbers"),
        (([[1.0]], []), r"query_embedding must be a 1-D array, got shape \(1, 1\)"),
        (([], []), r"query_embedding is empty"),
        (([1.0, np.nan], []), r"query_embedding holds a non-finite value \(nan\) at \[1\]"),
    ],
)
def test_routing_request_validation(args, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        RoutingRequest(*args)


def test_routing_decision_is_frozen_with_slots():
    d = RoutingDecision("a", 0.9, True, 0.05)
    with pytest.raises(AttributeError):
        d.confidence = 0.1  # type: ignore[misc]
    assert not hasattr(d, "__dict__")
    assert d == RoutingDecision("a", 0.9, True, 0.05) and hash(d) == hash(RoutingDecision("a", 0.9, True, 0.05))
    assert d.to_dict() == {"candidate_id": "a", "confidence": 0.9, "use_lightweight": True, "uncertainty": 0.05}


# ---------------------------------------------------------------------------------------------------------
# RoutingResponse
# ---------------------------------------------------------------------------------------------------------


def make_response(ids=("a", "b", "c", "d", "e"), conf=(0.2, 0.9, 0.5, 0.9, 0.2), reason=None):
    confidence = np.array(conf, dtype=np.float32)
    uncertainty = (1 - confidence).astype(np.float32)
    lightweight = confidence >= 0.85
    return RoutingResponse(list(ids), confidence, uncertainty, lightweight, rank_order(confidence), 12.5, 3.25, reason)


def test_rank_order_is_stable_descending():
    assert rank_order(np.array([0.2, 0.9, 0.5, 0.9, 0.2], np.float32)).tolist() == [1, 3, 2, 0, 4]
    assert rank_order(np.zeros(6, np.float32)).tolist() == list(range(6))
    assert rank_order(np.array([], np.float32)).tolist() == []


def test_response_ranks_decisions():
    r = make_response()
    assert r.candidate_ids == ("b", "d", "c", "a", "e")  # equal confidences keep input order
    assert r.confidences.tolist() == pytest.approx([0.9, 0.9, 0.5, 0.2, 0.2])
    assert r.uncertainties.tolist() == pytest.approx([0.1, 0.1, 0.5, 0.8, 0.8])
    assert r.lightweight.tolist() == [True, True, False, False, False]
    assert r.order.tolist() == [1, 3, 2, 0, 4]
    assert tuple(d.candidate_id for d in r.decisions) == r.candidate_ids
    first = r.decisions[0]
    assert isinstance(first, RoutingDecision)
    assert (first.candidate_id, first.use_lightweight) == ("b", True)
    assert type(first.confidence) is float and type(first.use_lightweight) is bool and type(first.uncertainty) is float
    assert first.confidence == pytest.approx(0.9)
    assert len(r) == r.candidates_processed == 5
    assert r.lightweight_count == 2
    assert (r.inference_time_us, r.feature_time_us, r.fell_back, r.fallback_reason) == (12.5, 3.25, False, None)


def test_response_decisions_are_built_once_and_agree_with_indexing():
    r = make_response()
    top = r[0]  # one decision by rank, before the list exists
    assert top == RoutingDecision("b", pytest.approx(0.9), True, pytest.approx(0.1))
    decisions = r.decisions
    assert r.decisions is decisions  # cached
    assert decisions[0] == top
    assert list(r) == decisions and r[1:3] == decisions[1:3] and r[-1] is decisions[-1] and r[0] is decisions[0]


def test_response_pickles(rng):
    r = make_response(reason="model error: x")
    back = pickle.loads(pickle.dumps(r))
    assert back.decisions == r.decisions and back.fallback_reason == "model error: x"
    assert (back.inference_time_us, back.feature_time_us) == (12.5, 3.25)


def test_response_indexing():
    r = make_response()
    assert r[-1].candidate_id == "e" and r[-5].candidate_id == "b"
    assert [d.candidate_id for d in r[1:4]] == ["d", "c", "a"]
    assert r[np.int64(2)].candidate_id == "c"
    with pytest.raises(IndexError):
        r[5]
    with pytest.raises(IndexError):
        r[-6]
    with pytest.raises(TypeError):
        r["a"]  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        r[1.0]  # type: ignore[call-overload]


def test_response_with_numpy_ids_and_int32_order():
    conf = np.array([0.1, 0.7, 0.4], np.float32)
    r = RoutingResponse(np.array(["x", "y", "z"]), conf, conf, conf > 0.5, rank_order(conf).astype(np.int32), 1.0, 0.0)
    assert r.candidate_ids == ("y", "z", "x") and all(type(i) is str for i in r.candidate_ids)
    assert r[2].candidate_id == "x" and type(r[2].candidate_id) is str
    assert [d.candidate_id for d in r] == ["y", "z", "x"]


def test_response_arrays_cannot_change_the_response():
    r = make_response()
    for array in (r.confidences, r.uncertainties, r.lightweight, r.order):
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    assert r.confidences is not r.confidences  # each read is a new array
    assert isinstance(r.candidate_ids, tuple)
    assert r.lightweight_count == 2 and r.confidences.max() == pytest.approx(0.9)
    with pytest.raises(AttributeError):
        r.inference_time_us = 0.0  # type: ignore[misc]


def test_response_to_dict_is_json_ready():
    d = make_response().to_dict()
    text = json.dumps(d)
    back = json.loads(text)
    assert back["candidates_processed"] == 5 and back["fell_back"] is False and back["fallback_reason"] is None
    assert back["inference_time_us"] == 12.5 and back["feature_time_us"] == 3.25
    assert [x["candidate_id"] for x in back["decisions"]] == ["b", "d", "c", "a", "e"]
    assert set(back["decisions"][0]) == {"candidate_id", "confidence", "use_lightweight", "uncertainty"}


def test_fallback_response():
    r = RoutingResponse.fallback(["a", "b", "c"], "circuit breaker open", 4.0)
    assert r.fell_back and r.fallback_reason == "circuit breaker open"
    assert r.candidate_ids == ("a", "b", "c")  # input order
    assert [(d.confidence, d.use_lightweight, d.uncertainty) for d in r] == [(0.0, False, 1.0)] * 3
    assert r.lightweight_count == 0 and r.inference_time_us == 4.0 and r.feature_time_us == 0.0
    assert json.loads(json.dumps(r.to_dict()))["fell_back"] is True
    empty = RoutingResponse.fallback([], "model error", 1.0)
    assert len(empty) == 0 and empty.decisions == [] and empty.to_dict()["decisions"] == []


def test_empty_response():
    z = np.zeros(0, np.float32)
    r = RoutingResponse([], z, z, z.astype(bool), rank_order(z), 0.5, 0.0)
    assert len(r) == 0 and list(r) == [] and r.candidate_ids == () and r.lightweight_count == 0
    with pytest.raises(IndexError):
        r[0]


def test_response_from_a_batch_routing_round_trip(rng):
    """How the router uses these types: ids from a batch, arrays from the kernels."""
    batch = CandidateBatch.from_candidates([Candidate(f"c{i}", rng.standard_normal(8)) for i in range(100)])
    conf = rng.random(100).astype(np.float32)
    conf[10] = conf[20] = 1.0  # a tie at the top (rng.random() < 1)
    unc = rng.random(100).astype(np.float32)
    r = RoutingResponse(batch.ids, conf, unc, (conf >= 0.85) & (unc <= 0.15), rank_order(conf), 2.0, 1.0)
    assert r.candidate_ids[:2] == ("c10", "c20")
    assert np.all(np.diff(r.confidences) <= 0)
    assert sorted(r.candidate_ids) == sorted(batch.ids)


def test_batch_defaults_are_the_candidate_defaults(monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.5)
    batch = CandidateBatch(["a", "b"], np.ones((2, 3)))
    one = Candidate("a", np.ones(3))
    assert batch.created_at.tolist() == [one.created_at] * 2 == [1_700_000_000.5] * 2
    assert batch.access_count.tolist() == [one.access_count] * 2 == [0, 0]
    assert batch.success_rate.tolist() == [one.success_rate] * 2 == [0.0, 0.0]
    assert batch.candidate(1) == Candidate("b", np.ones(3))
