from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference as ref
from tinydancer import kernels
from tinydancer.errors import InvalidInputError

SHAPES = [(1, 1), (1, 7), (3, 1), (5, 31), (8, 32), (9, 33), (17, 64), (31, 65), (33, 127), (64, 384), (7, 1100)]


def test_int8_int32_exact_every_length(isa, rng):
    for cols in range(1, 1101):
        w = rng.integers(-128, 128, size=(3, cols), dtype=np.int8)
        x = rng.integers(-128, 128, size=cols, dtype=np.int8)
        expected = w.astype(np.int64) @ x.astype(np.int64)
        got = kernels.int8_matvec_int32(w, x)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, expected)


def test_int8_int32_extremes(isa):
    for cols in (1, 15, 16, 17, 63, 64, 65, 1000, 4099):
        w = np.full((2, cols), -128, np.int8)
        x = np.full(cols, -128, np.int8)
        w[1] = 127
        expected = w.astype(np.int64) @ x.astype(np.int64)
        np.testing.assert_array_equal(kernels.int8_matvec_int32(w, x), expected)


def test_int8_int32_largest_exact_size(isa):
    cols = 131071
    w = np.full((1, cols), -128, np.int8)
    x = np.full(cols, -128, np.int8)
    assert int(kernels.int8_matvec_int32(w, x)[0]) == 128 * 128 * cols == 2**31 - 16384
    with pytest.raises(InvalidInputError, match="at most 131071"):
        kernels.int8_matvec_int32(np.zeros((1, cols + 1), np.int8), np.zeros(cols + 1, np.int8))


@pytest.mark.parametrize("shape", SHAPES)
def test_int8_f32_against_float64(isa, rng, shape):
    rows, cols = shape
    w = rng.integers(-128, 128, size=shape, dtype=np.int8)
    scales = rng.uniform(0.001, 0.1, rows).astype(np.float32)
    x = rng.standard_normal(cols).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    expected = scales * (w.astype(np.float64) @ x) + bias
    bound = scales * (np.abs(w).astype(np.float64) @ np.abs(x)) * 1e-6 + 1e-6
    got = kernels.int8_matvec(w, scales, x, bias)
    assert np.all(np.abs(got - expected) <= bound)
    np.testing.assert_allclose(kernels.int8_matvec(w, scales, x), expected - bias, atol=float(bound.max()))


def test_int8_views(isa, rng):
    big = rng.integers(-128, 128, size=(20, 70), dtype=np.int8)
    w = big[::2, 1::2]  # strided
    x = rng.standard_normal(2 * 35).astype(np.float32)[::2]
    x.setflags(write=False)
    scales = np.ones(10, np.float32)
    np.testing.assert_allclose(kernels.int8_matvec(w, scales, x), w.astype(np.float64) @ x, rtol=1e-5, atol=1e-4)
    xi = rng.integers(-128, 128, size=35, dtype=np.int8)
    np.testing.assert_array_equal(kernels.int8_matvec_int32(w, xi), w.astype(np.int64) @ xi)
    # Integer weights of a wider dtype are accepted when every value fits in int8.
    np.testing.assert_array_equal(kernels.int8_matvec_int32(w.astype(np.int64), xi), w.astype(np.int64) @ xi)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: kernels.int8_matvec(np.ones((2, 3), np.int8), np.ones(2), np.ones(4)), "x must have length 3"),
        (lambda: kernels.int8_matvec(np.ones((2, 3), np.int8), np.ones(3), np.ones(3)), "scales must have length 2"),
        (lambda: kernels.int8_matvec(np.ones((2, 3), np.int8), np.ones(2), np.ones(3), np.ones(3)), "bias must have length 2"),
        (lambda: kernels.int8_matvec(np.ones((2, 3)), np.ones(2), np.ones(3)), "w must hold integers"),
        (lambda: kernels.int8_matvec(np.full((2, 3), 300), np.ones(2), np.ones(3)), "outside the int8 range"),
        (lambda: kernels.int8_matvec(np.ones(3, np.int8), np.ones(2), np.ones(3)), "w must be a 2-D"),
        (lambda: kernels.int8_matvec(np.ones((2, 3), np.int8), [1, np.nan], np.ones(3)), "scales holds"),
        (lambda: kernels.int8_matvec(np.ones((2, 3), np.int8), np.ones(2), [0, np.inf, 0]), "x holds"),
        (lambda: kernels.int8_matvec(np.ones((2, 3), np.int8), np.ones(2), np.ones(3), [np.nan, 0]), "bias holds"),
        (lambda: kernels.int8_matvec_int32(np.ones((2, 3), np.int8), np.ones(3, np.float32)), "x must hold integers"),
        (lambda: kernels.int8_matvec_int32(np.ones((2, 3), np.int8), np.ones(2, np.int8)), "x must have length 3"),
        (lambda: kernels.int8_matvec_int32(None, np.ones(2, np.int8)), "w is None"),
    ],
)
def test_dense_bad_input(isa, call, match):
    with pytest.raises(InvalidInputError, match=match):
        call()


@pytest.mark.parametrize("shape", SHAPES + [(40, 1100)])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_csr_against_reference(isa, rng, shape, density):
    rows, cols = shape
    dense, values, indices, indptr = ref.random_csr(rng, rows, cols, density, np.int8)
    xi = rng.integers(-128, 128, size=cols, dtype=np.int8)
    got = kernels.csr_int8_matvec_int32(values, indices, indptr, xi)
    np.testing.assert_array_equal(got, dense.astype(np.int64) @ xi.astype(np.int64))

    x = rng.standard_normal(cols).astype(np.float32)
    scales = rng.uniform(0.01, 0.1, rows).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    expected = scales * (dense.astype(np.float64) @ x) + bias
    bound = scales * (np.abs(dense).astype(np.float64) @ np.abs(x)) * 1e-6 + 1e-6
    assert np.all(np.abs(kernels.csr_int8_matvec(values, indices, indptr, scales, x, bias) - expected) <= bound)

    fdense, fvalues, findices, findptr = ref.random_csr(rng, rows, cols, density, np.float32)
    expected = fdense.astype(np.float64) @ x
    bound = (np.abs(fdense).astype(np.float64) @ np.abs(x)) * 1e-6 + 1e-6
    assert np.all(np.abs(kernels.csr_matvec(fvalues, findices, findptr, x) - expected) <= bound)


def test_csr_extremes_exact(isa):
    cols = 5000
    values = np.full(cols, -128, np.int8)
    indices = np.arange(cols, dtype=np.int32)[::-1].copy()  # unsorted columns are fine
    indptr = np.array([0, cols], np.int32)
    x = np.full(cols, -128, np.int8)
    assert int(kernels.csr_int8_matvec_int32(values, indices, indptr, x)[0]) == 16384 * cols


@pytest.mark.parametrize(
    "values, indices, indptr, match",
    [
        ([1, 2], [0, 1], [0, 1], "indptr must start at 0"),  # ends at 1, not 2 values
        ([1, 2], [0, 5], [0, 2], r"lie in \[0, 3\)"),
        ([1, 2], [0, -1], [0, 2], r"lie in \[0, 3\)"),
        ([1, 2], [0, 1], [1, 2], "indptr must start at 0"),
        ([1, 2], [0, 1], [0, 2, 1, 2], "never decrease"),
        ([1, 2], [0], [0, 2], "one entry per value"),
        ([1, 2], [0, 1], [], "indptr is empty"),
        ([1.5, 2], [0, 1], [0, 2], "values must hold integers"),
    ],
)
def test_csr_bad_structure(isa, values, indices, indptr, match):
    with pytest.raises(InvalidInputError, match=match):
        kernels.csr_int8_matvec_int32(np.array(values), np.array(indices), np.array(indptr), np.ones(3, np.int8))


def test_csr_bad_floats(isa):
    with pytest.raises(InvalidInputError, match="values holds"):
        kernels.csr_matvec([1.0, np.nan], [0, 1], [0, 2], np.ones(3))
    with pytest.raises(InvalidInputError, match="scales must have length 1"):
        kernels.csr_int8_matvec([1, 2], [0, 1], [0, 2], np.ones(2), np.ones(3))
    with pytest.raises(InvalidInputError, match="x holds"):
        kernels.csr_int8_matvec([1, 2], [0, 1], [0, 2], np.ones(1), [np.nan, 0, 0])


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(np.int8, st.tuples(st.integers(1, 20), st.integers(1, 200))),
    st.data(),
)
def test_int8_exact_property(w, data):
    x = data.draw(hnp.arrays(np.int8, w.shape[1]))
    np.testing.assert_array_equal(kernels.int8_matvec_int32(w, x), w.astype(np.int64) @ x.astype(np.int64))


def test_overflowing_products_are_errors(isa):
    with pytest.raises(InvalidInputError, match="the product overflows float32"):
        kernels.int8_matvec(np.full((2, 3), 127, np.int8), np.full(2, 1e10), np.full(3, 3e38))
    with pytest.raises(InvalidInputError, match="the product overflows float32"):
        kernels.csr_matvec([3e38, 3e38], [0, 1], [0, 2], np.full(2, 10.0))
