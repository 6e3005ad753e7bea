from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from tinydancer import kernels
from tinydancer.errors import InvalidInputError
from tinydancer.kernels import FastGRNNCell, KernelMatrix

KINDS = ["dense", "low_rank", "int8", "sparse_int8", "sparse"]


def make_matrix(kind: str, rng: np.random.Generator, rows: int, cols: int) -> KernelMatrix:
    if kind == "dense":
        return KernelMatrix.dense(rng.standard_normal((rows, cols)).astype(np.float32) * 0.5)
    if kind == "low_rank":
        rank = max(1, min(rows, cols) // 2)
        return KernelMatrix.low_rank(rng.standard_normal((rows, rank)) * 0.5, rng.standard_normal((rank, cols)) * 0.5)
    if kind == "int8":
        return KernelMatrix.int8(rng.integers(-127, 128, size=(rows, cols)), rng.uniform(0.001, 0.01, rows))
    dtype = np.int8 if kind == "sparse_int8" else np.float32
    _, values, indices, indptr = ref.random_csr(rng, rows, cols, 0.4, dtype)
    if kind == "sparse_int8":
        return KernelMatrix.sparse_int8(values, indices, indptr, rng.uniform(0.001, 0.01, rows), (rows, cols))
    return KernelMatrix.sparse(values * np.float32(0.5), indices, indptr, (rows, cols))


def make_cell(rng, inputs, hidden, outputs=1, timesteps=1, w_kind="dense", u_kind="dense"):
    W = make_matrix(w_kind, rng, hidden, inputs)
    U = make_matrix(u_kind, rng, hidden, hidden)
    return FastGRNNCell(
        W, U, rng.standard_normal(hidden), rng.standard_normal(hidden),
        rng.standard_normal((outputs, hidden)), rng.standard_normal(outputs),
        zeta=float(rng.standard_normal()), nu=float(rng.standard_normal()), timesteps=timesteps,
    )


def reference_output(cell: FastGRNNCell, x: np.ndarray) -> np.ndarray:
    return ref.fastgrnn(x, cell.W.to_dense(), cell.U.to_dense(), cell.b_z, cell.b_h, cell.w_out, cell.b_out,
                        cell.zeta, cell.nu)


@pytest.mark.parametrize("w_kind", KINDS)
@pytest.mark.parametrize("u_kind", KINDS)
def test_every_matrix_kind(isa, rng, w_kind, u_kind):
    for inputs, hidden, outputs, timesteps in [(5, 8, 1, 1), (3, 7, 1, 3), (20, 33, 3, 2), (1, 1, 1, 4), (9, 16, 2, 5)]:
        cell = make_cell(rng, inputs, hidden, outputs, timesteps, w_kind, u_kind)
        X = rng.standard_normal((6, timesteps, inputs)).astype(np.float32)
        expected = np.array([reference_output(cell, x) for x in X])
        got = cell.forward_batch(X)
        np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=1e-5, rtol=0)
        single = cell.forward(X[0])
        if outputs == 1:
            assert isinstance(single, float)
            assert single == pytest.approx(expected[0, 0], abs=1e-5)
        else:
            np.testing.assert_allclose(single, expected[0], atol=1e-5)
            assert single.sum() == pytest.approx(1.0, abs=1e-5)


def test_hidden_and_input_sizes(isa, rng):
    for hidden in list(range(1, 34)) + [64, 100]:
        for inputs in (1, 5, 17, 384):
            cell = make_cell(rng, inputs, hidden, timesteps=2)
            X = rng.standard_normal((3, 2, inputs)).astype(np.float32)
            expected = np.array([reference_output(cell, x)[0] for x in X])
            np.testing.assert_allclose(cell.forward_batch(X), expected, atol=1e-5, rtol=0)


def test_large_activations_saturate_without_nan(isa, rng):
    cell = FastGRNNCell(np.full((8, 5), 50.0), np.full((8, 8), -50.0), np.zeros(8), np.zeros(8), np.ones(8), 0.0,
                        zeta=1.0, nu=-4.0, timesteps=3)
    X = np.stack([np.full((3, 5), 1e6), np.full((3, 5), -1e6), np.zeros((3, 5))]).astype(np.float32)
    got = cell.forward_batch(X)
    assert np.all(np.isfinite(got))
    expected = np.array([reference_output(cell, x)[0] for x in X])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_input_shapes_and_views(isa, rng):
    cell = make_cell(rng, 5, 8)
    x = rng.standard_normal(5).astype(np.float32)
    expected = reference_output(cell, x)[0]
    assert cell.forward(x) == pytest.approx(expected, abs=1e-5)
    assert cell.forward(x.reshape(1, 5)) == pytest.approx(expected, abs=1e-5)
    assert cell.forward(list(map(float, x))) == pytest.approx(expected, abs=1e-5)
    assert cell.forward(x.astype(np.float64)) == pytest.approx(expected, abs=1e-5)
    X = rng.standard_normal((40, 10)).astype(np.float32)[::2, ::2]  # strided
    X.setflags(write=False)
    expected_b = np.array([reference_output(cell, r)[0] for r in X])
    np.testing.assert_allclose(cell.forward_batch(X), expected_b, atol=1e-5)
    np.testing.assert_allclose(cell.forward_batch(X[:, None, :]), expected_b, atol=1e-5)
    assert cell.forward_batch(np.empty((0, 5), np.float32)).shape == (0,)
    out = np.empty(20, np.float32)
    assert cell.forward_batch(X, out=out) is out


def test_all_isas_agree(rng):
    cell = make_cell(rng, 5, 8, timesteps=2)
    X = rng.standard_normal((100, 2, 5)).astype(np.float32)
    before = kernels.active_isa()
    try:
        results = []
        for isa in kernels.available_isas():
            kernels.set_isa(isa)
            results.append(cell.forward_batch(X))
    finally:
        kernels.set_isa(before)
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], atol=2e-6)


def test_weights_are_copied_and_frozen(rng):
    W = rng.standard_normal((8, 5)).astype(np.float32)
    cell = FastGRNNCell(W, np.zeros((8, 8)), np.zeros(8), np.zeros(8), np.ones(8), 0.0, 1.0, -4.0)
    x = rng.standard_normal(5).astype(np.float32)
    before = cell.forward(x)
    W[:] = 0.0
    assert cell.forward(x) == before
    with pytest.raises(ValueError):
        cell.b_z[0] = 1.0


def test_matrix_properties(rng):
    dense = KernelMatrix.dense(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert dense.shape == (2, 3) and dense.kind == "dense" and dense.rank is None and dense.nbytes == 24
    np.testing.assert_array_equal(dense.to_dense(), np.arange(6).reshape(2, 3))
    lr = KernelMatrix.low_rank(np.ones((4, 2)), np.ones((2, 3)))
    assert lr.rank == 2 and lr.nnz == 14 and lr.nbytes == 4 * 14
    np.testing.assert_array_equal(lr.to_dense(), np.full((4, 3), 2.0))
    q = KernelMatrix.int8([[1, -2], [3, 4]], [0.5, 0.25])
    assert q.nbytes == 4 + 8
    np.testing.assert_array_equal(q.to_dense(), [[0.5, -1.0], [0.75, 1.0]])
    sp = KernelMatrix.sparse_int8([5, -6], [1, 0], [0, 1, 1, 2], [1.0, 1.0, 0.5], (3, 2))
    assert sp.nnz == 2 and sp.nbytes == 2 + 8 + 16 + 12
    np.testing.assert_array_equal(sp.to_dense(), [[0, 5], [0, 0], [-3, 0]])
    with pytest.raises(TypeError):
        KernelMatrix()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(U=np.zeros((7, 7))), r"U must be \(8, 8\)"),
        (dict(b_z=np.zeros(7)), "b_z must have length 8"),
        (dict(b_h=[0] * 7 + [np.nan]), "b_h holds"),
        (dict(w_out=np.ones(7)), "w_out must have 8 columns"),
        (dict(w_out=np.full(8, np.inf)), "w_out holds"),
        (dict(b_out=[0.0, 1.0]), "b_out must have length 1"),
        (dict(zeta=float("nan")), "zeta and nu must be finite"),
        (dict(timesteps=0), "timesteps must be at least 1"),
        (dict(W=np.zeros((8, 0))), "at least one row and column"),
        (dict(W=np.full((8, 5), np.nan)), "matrix holds"),
        (dict(W=np.zeros((1025, 5)), U=np.zeros((1025, 1025))), "exceeds the limit"),
        (dict(W=None), "W is None"),
    ],
)
def test_bad_weights(kwargs, match):
    args = dict(W=np.zeros((8, 5)), U=np.zeros((8, 8)), b_z=np.zeros(8), b_h=np.zeros(8), w_out=np.ones(8),
                b_out=0.0, zeta=1.0, nu=-4.0, timesteps=1)
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=match):
        FastGRNNCell(**args)


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: KernelMatrix.low_rank(np.ones((4, 2)), np.ones((3, 3))), "ranks differ"),
        (lambda: KernelMatrix.int8(np.ones((2, 2)), [1.0, 1.0]), "values must hold integers"),
        (lambda: KernelMatrix.int8(np.ones((2, 2), np.int8), [1.0]), "scales must have length 2"),
        (lambda: KernelMatrix.sparse([1.0], [0], [0, 1], (2, 2)), "indptr describes 1 rows but shape says 2"),
        (lambda: KernelMatrix.sparse([1.0], [4], [0, 1], (1, 2)), "CSR matrix"),
        (lambda: KernelMatrix.sparse([1.0], [0], [0, 1], (1, -2)), "shape must be positive"),
        (lambda: KernelMatrix.sparse([1.0], [0], [0, 1], "ab"), "shape must be a pair"),
    ],
)
def test_bad_matrices(factory, match):
    with pytest.raises(InvalidInputError, match=match):
        factory()


def test_bad_inputs(isa, rng):
    cell = make_cell(rng, 5, 8, timesteps=2)
    with pytest.raises(InvalidInputError, match=r"x must have shape \(2, 5\)"):
        cell.forward(np.ones((2, 4), np.float32))
    with pytest.raises(InvalidInputError, match="x must be a 2-D"):
        cell.forward(np.ones(10, np.float32))
    with pytest.raises(InvalidInputError, match=r"x holds a non-finite value \(nan\) at \[1, 3\]"):
        x = np.ones((2, 5), np.float32)
        x[1, 3] = np.nan
        cell.forward(x)
    with pytest.raises(InvalidInputError, match=r"X must have shape \(batch, 2, 5\)"):
        cell.forward_batch(np.ones((3, 2, 6), np.float32))
    with pytest.raises(InvalidInputError, match="X holds a non-finite value"):
        X = np.ones((3, 2, 5), np.float32)
        X[2, 0, 0] = -np.inf
        cell.forward_batch(X)
    with pytest.raises(InvalidInputError, match="x is None"):
        cell.forward(None)
    with pytest.raises(InvalidInputError, match="X must hold real numbers"):
        cell.forward_batch(np.full((2, 2, 5), "a"))


def test_overflow_inside_the_model_is_an_error(isa):
    # Finite inputs whose products overflow float32: +inf and -inf meet in W x and give NaN.
    cell = FastGRNNCell(np.array([[1e30, -1e30]] * 8), np.zeros((8, 8)), np.zeros(8), np.zeros(8), np.ones(8),
                        0.0, 1.0, -4.0)
    x = np.array([3e38, 3e38], np.float32)
    with pytest.raises(InvalidInputError, match="x overflows float32 inside the model"):
        cell.forward(x)
    with pytest.raises(InvalidInputError, match="X inside the model overflows float32"):
        cell.forward_batch(x[None, :])
