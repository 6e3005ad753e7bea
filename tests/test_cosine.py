from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference as ref
from tinydancer import kernels
from tinydancer.errors import InvalidInputError

LENGTHS = range(1, 1101)


def test_every_length_against_float64(isa, rng):
    for n in LENGTHS:
        a = rng.standard_normal(n).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        assert kernels.cosine(a, b) == pytest.approx(ref.cosine(a, b), abs=1e-6), n


def test_384_dim_within_1e6(isa, rng):
    worst = 0.0
    for _ in range(200):
        a = rng.standard_normal(384).astype(np.float32)
        b = (a + 0.3 * rng.standard_normal(384)).astype(np.float32)  # correlated, so cosines near 1 too
        worst = max(worst, abs(kernels.cosine(a, b) - ref.cosine(a, b)))
    assert worst < 1e-6


def test_identical_and_opposite(isa, rng):
    a = rng.standard_normal(384).astype(np.float32)
    assert kernels.cosine(a, a) == pytest.approx(1.0, abs=1e-6)
    assert kernels.cosine(a, -a) == pytest.approx(-1.0, abs=1e-6)
    assert -1.0 <= kernels.cosine(a, a) <= 1.0


def test_zero_vectors_give_zero(isa, rng):
    z = np.zeros(384, dtype=np.float32)
    a = rng.standard_normal(384).astype(np.float32)
    assert kernels.cosine(z, a) == 0.0
    assert kernels.cosine(a, z) == 0.0
    assert kernels.cosine(z, z) == 0.0


def unaligned_copy(values: np.ndarray, offset: int) -> np.ndarray:
    """A float32 array whose data starts ``offset`` bytes past an aligned address: NumPy marks it unaligned."""
    raw = np.zeros(4 * values.size + offset, dtype=np.uint8)
    view = raw[offset:].view(np.float32)
    view[:] = values
    return view


@pytest.mark.parametrize("offset", [1, 2, 3])
def test_unaligned_views(isa, rng, offset):
    base = rng.standard_normal(385 + offset).astype(np.float32)
    odd = unaligned_copy(base[:384], offset)
    assert not odd.flags.aligned
    assert kernels.cosine(odd, base[1:385]) == pytest.approx(ref.cosine(base[:384], base[1:385]), abs=1e-6)
    # Offsets by whole floats: aligned to 4 bytes but not to any SIMD width.
    a = base[offset : offset + 384]
    assert kernels.cosine(a, base[:384]) == pytest.approx(ref.cosine(a, base[:384]), abs=1e-6)


def test_read_only_and_strided(isa, rng):
    a = rng.standard_normal(2 * 384).astype(np.float32)
    b = rng.standard_normal(384).astype(np.float32)
    b.setflags(write=False)
    strided = a[::2]
    assert not strided.flags.c_contiguous
    expected = ref.cosine(strided, b)
    assert kernels.cosine(strided, b) == pytest.approx(expected, abs=1e-6)
    assert kernels.cosine(np.ascontiguousarray(strided), b) == kernels.cosine(strided, b)


def test_other_dtypes_and_lists_convert(isa):
    a64 = np.array([1.0, 2.0, 3.0])
    assert kernels.cosine(a64, [1, 2, 3]) == pytest.approx(1.0, abs=1e-7)
    assert kernels.cosine(np.array([1, 0], dtype=np.int16), np.array([0, 1], dtype=np.float16)) == 0.0
    big_endian = np.array([3.0, 4.0], dtype=">f4")
    assert kernels.cosine(big_endian, [3.0, 4.0]) == pytest.approx(1.0, abs=1e-7)


def test_all_isas_agree(rng):
    a = rng.standard_normal(1031).astype(np.float32)
    b = rng.standard_normal(1031).astype(np.float32)
    before = kernels.active_isa()
    try:
        results = []
        for isa in kernels.available_isas():
            kernels.set_isa(isa)
            results.append(kernels.cosine(a, b))
    finally:
        kernels.set_isa(before)
    assert max(results) - min(results) < 1e-7


def test_overflowing_products_are_computed_in_float64(isa):
    a = np.array([3e19, 1.0, 0.0], dtype=np.float32)  # a*a overflows float32, not float64
    b = np.array([3e19, 0.0, 1.0], dtype=np.float32)
    assert kernels.cosine(a, b) == pytest.approx(ref.cosine(a, b), abs=1e-6)


@pytest.mark.parametrize("scale", [1e-16, 1e-20, 1e-30, 1e-37, 1e-40, 1e18, 1e30])
def test_tiny_and_huge_vectors(isa, rng, scale):
    a = (rng.standard_normal(384) * scale).astype(np.float32)
    b = (rng.standard_normal(384) * scale).astype(np.float32)
    assert kernels.cosine(a, b) == pytest.approx(ref.cosine(a, b), abs=1e-6)
    normal = rng.standard_normal(384).astype(np.float32)
    rows = np.stack([b, a, np.zeros(384, np.float32), normal])
    for q in (a, normal):
        expected = ref.cosine_batch(q, rows)
        np.testing.assert_allclose(kernels.cosine_batch(q, rows), expected, atol=1e-6)
        np.testing.assert_allclose(kernels.cosine_batch(q, rows, kernels.l2_norms(rows)), expected, atol=1e-6)
    np.testing.assert_allclose(kernels.l2_norms(rows), np.linalg.norm(rows.astype(np.float64), axis=1), rtol=1e-6)


@pytest.mark.parametrize(
    "a, b, match",
    [
        (np.ones(3, np.float32), np.ones(4, np.float32), "same length"),
        (np.ones((2, 3), np.float32), np.ones(3, np.float32), "a must be a 1-D"),
        (np.ones(3, np.float32), np.ones((3, 1), np.float32), "b must be a 1-D"),
        (None, np.ones(3, np.float32), "a is None"),
        (np.ones(3, np.float32), None, "b is None"),
        (np.array([], np.float32), np.array([], np.float32), "a is empty"),
        (np.array(["x", "y"]), np.ones(2, np.float32), "a must hold real numbers"),
        (np.ones(2, np.complex64), np.ones(2, np.float32), "a must hold real numbers"),
        (np.array([object(), object()]), np.ones(2, np.float32), "a must hold real numbers"),
        ([[1.0, 2.0], [3.0]], np.ones(2, np.float32), "a cannot be read as an array"),
        (np.ones(3, np.float32), np.array([1.0, np.nan, 1.0], np.float32), r"b holds a non-finite value \(nan\) at \[1\]"),
        (np.array([np.inf, 1, 1], np.float32), np.ones(3, np.float32), r"a holds a non-finite value \(inf\) at \[0\]"),
        (np.array([1e39, 1.0]), np.ones(2), "a holds a non-finite value"),  # float64 -> float32 overflow
    ],
)
def test_bad_input(isa, a, b, match):
    with pytest.raises(InvalidInputError, match=match):
        kernels.cosine(a, b)


def test_nan_next_to_zero_vector_is_still_an_error(isa):
    with pytest.raises(InvalidInputError, match="a holds"):
        kernels.cosine(np.array([np.nan, 0.0], np.float32), np.zeros(2, np.float32))


finite_f32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 300), elements=finite_f32), st.data())
def test_properties(a, data):
    b = data.draw(hnp.arrays(np.float32, a.shape, elements=finite_f32))
    c = kernels.cosine(a, b)
    assert -1.0 <= c <= 1.0
    assert c == pytest.approx(kernels.cosine(b, a), abs=1e-12)
    assert c == pytest.approx(ref.cosine(a, b), abs=1e-6)
    assert kernels.cosine(a * np.float32(4.0), b) == pytest.approx(c, abs=1e-6)


# --------------------------------------------------------------------------------------------------------
# One query against many rows
# --------------------------------------------------------------------------------------------------------


def test_batch_every_dim(isa, rng):
    for dim in list(range(1, 100)) + [127, 128, 129, 255, 256, 257, 383, 384, 385, 511, 512, 513, 1023, 1100]:
        q = rng.standard_normal(dim).astype(np.float32)
        rows = rng.standard_normal((7, dim)).astype(np.float32)
        rows[3] = 0.0
        np.testing.assert_allclose(kernels.cosine_batch(q, rows), ref.cosine_batch(q, rows), atol=1e-6, rtol=0)
        norms = kernels.l2_norms(rows)
        np.testing.assert_allclose(norms, np.linalg.norm(rows.astype(np.float64), axis=1), rtol=1e-6)
        np.testing.assert_allclose(kernels.cosine_batch(q, rows, norms), ref.cosine_batch(q, rows), atol=1e-6)


def test_batch_row_counts_and_views(isa, rng):
    base = rng.standard_normal((203, 2 * 384 + 1)).astype(np.float32)
    rows = base[1::2, 1 : 2 * 384 + 1 : 2]  # strided in both axes
    q = rng.standard_normal(384).astype(np.float32)
    q.setflags(write=False)
    expected = ref.cosine_batch(q, rows)
    for n in [0, 1, 2, 3, 5, 17, 64, 65, 101]:
        got = kernels.cosine_batch(q, rows[:n])
        assert got.shape == (n,) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected[:n], atol=1e-6)


@pytest.mark.parametrize("special", ["zero", "tiny", "huge"])
def test_batch_with_norms_special_row_anywhere(isa, rng, special):
    # SIMD kernels finish several rows at once; a zero, tiny or overflowing row must not disturb its block
    q = rng.standard_normal(384).astype(np.float32)
    scale = {"zero": 0.0, "tiny": 1e-22, "huge": 1e19}[special]
    for n in range(1, 21):
        rows = rng.standard_normal((n, 384)).astype(np.float32)
        for at in {0, n // 2, n - 1}:
            case = rows.copy()
            case[at] *= scale
            got = kernels.cosine_batch(q, case, kernels.l2_norms(case))
            np.testing.assert_allclose(got, ref.cosine_batch(q, case), atol=1e-6, rtol=0)


def test_batch_zero_query_and_out(isa, rng):
    rows = rng.standard_normal((5, 16)).astype(np.float32)
    out = np.full(5, 7.0, np.float32)
    result = kernels.cosine_batch(np.zeros(16, np.float32), rows, out=out)
    assert result is out
    assert np.all(out == 0.0)


def test_batch_overflow_recomputed(isa):
    q = np.array([3e19, 1.0], np.float32)
    rows = np.array([[3e19, 0.0], [0.0, 1.0]], np.float32)
    np.testing.assert_allclose(kernels.cosine_batch(q, rows), ref.cosine_batch(q, rows), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(query=np.ones(3), rows=np.ones((2, 4))), "rows must have 3 columns"),
        (dict(query=np.ones(3), rows=np.ones(3)), "rows must be a 2-D"),
        (dict(query=np.ones(0), rows=np.ones((2, 0))), "query is empty"),
        (dict(query=np.ones(3), rows=np.ones((2, 3)), row_norms=np.ones(3)), "row_norms must have length 2"),
        (dict(query=np.ones(3), rows=np.ones((2, 3)), row_norms=[1.0, -1.0]), r"row_norms\[1\] = -1.0: norms must be finite and not negative"),
        (dict(query=np.ones(3), rows=np.ones((2, 3)), row_norms=[1.0, np.nan]), r"row_norms\[1\] = nan"),
        (dict(query=[1.0, np.nan, 0.0], rows=np.ones((2, 3))), "query holds a non-finite"),
        (dict(query=np.ones(3), rows=np.ones((2, 3)), out=np.ones(3, np.float32)), "out must have length 2"),
        (dict(query=np.ones(3), rows=np.ones((2, 3)), out=np.ones(2)), "out must be a writable"),
    ],
)
def test_batch_bad_input(isa, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        kernels.cosine_batch(**kwargs)


@pytest.mark.parametrize("with_norms", [False, True])
def test_batch_names_the_bad_row(isa, rng, with_norms):
    rows = rng.standard_normal((10, 33)).astype(np.float32)
    norms = kernels.l2_norms(rows) if with_norms else None
    rows[6, 20] = np.inf
    with pytest.raises(InvalidInputError, match=r"rows\[6\]"):
        kernels.cosine_batch(rng.standard_normal(33).astype(np.float32), rows, norms)
    rows[6, 20] = 0.0
    rows[2, 0] = np.nan
    with pytest.raises(InvalidInputError, match=r"rows\[2\]"):
        kernels.cosine_batch(np.zeros(33, np.float32), rows, norms)


@pytest.mark.parametrize("at", [0, 255, 256, 257, 38399])
def test_non_finite_found_anywhere(at):
    rows = np.ones((100, 384), np.float32)
    rows.flat[at] = np.inf
    with pytest.raises(InvalidInputError, match=rf"rows holds a non-finite value \(inf\) at \[{at // 384}, {at % 384}\]"):
        kernels.l2_norms(rows)


def test_l2_norms_bad_input(isa):
    with pytest.raises(InvalidInputError, match=r"rows\[1\] has a norm beyond the float32 range"):
        kernels.l2_norms(np.array([[1.0, 1.0], [3e38, 3e38]], np.float32))
    with pytest.raises(InvalidInputError, match="rows must be a 2-D"):
        kernels.l2_norms(np.ones(3))
    with pytest.raises(InvalidInputError, match=r"rows holds a non-finite value \(nan\) at \[1, 0\]"):
        kernels.l2_norms(np.array([[1.0], [np.nan]]))
