"""Kernels shared between threads, and every kernel on unaligned, strided and read-only inputs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tinydancer import kernels
from tinydancer.kernels import FastGRNNCell


def unaligned(values: np.ndarray, offset: int = 1) -> np.ndarray:
    """A copy of ``values`` whose data starts ``offset`` bytes past an aligned address."""
    raw = np.zeros(values.nbytes + offset, dtype=np.uint8)
    view = raw[offset:].view(values.dtype).reshape(values.shape)
    view[...] = values
    return view


def readonly(values: np.ndarray) -> np.ndarray:
    out = values.copy()
    out.setflags(write=False)
    return out


def test_every_kernel_gives_the_same_result_on_any_layout(isa, rng):
    q = rng.standard_normal(384).astype(np.float32)
    rows = rng.standard_normal((37, 384)).astype(np.float32)
    w = rng.integers(-128, 128, size=(9, 77), dtype=np.int8)
    x = rng.standard_normal(77).astype(np.float32)
    xi = rng.integers(-128, 128, size=77, dtype=np.int8)
    scales = rng.uniform(0.01, 0.1, 9).astype(np.float32)
    cell = FastGRNNCell(rng.standard_normal((8, 5)), rng.standard_normal((8, 8)), np.zeros(8), np.zeros(8),
                        np.ones(8), 0.0, 1.0, -4.0)
    X = rng.standard_normal((50, 5)).astype(np.float32)
    calls = {
        "cosine_batch": lambda q, rows: kernels.cosine_batch(q, rows),
        "l2_norms": lambda q, rows: kernels.l2_norms(rows),
        "int8_matvec": lambda w, scales, x: kernels.int8_matvec(w, scales, x),
        "int8_matvec_int32": lambda w, xi: kernels.int8_matvec_int32(w, xi),
        "forward": lambda X: np.array([cell.forward(X[0])]),
        "forward_batch": lambda X: cell.forward_batch(X),
    }
    inputs = {"cosine_batch": (q, rows), "l2_norms": (q, rows), "int8_matvec": (w, scales, x),
              "int8_matvec_int32": (w, xi), "forward": (X,), "forward_batch": (X,)}
    for name, call in calls.items():
        args = inputs[name]
        expected = call(*args)
        for layout in (unaligned, readonly, np.asfortranarray):  # Fortran order: 2-D inputs not C-contiguous
            got = call(*(layout(a) for a in args))
            np.testing.assert_array_equal(got, expected, err_msg=f"{name}, {layout.__name__}")
        strided = tuple(np.repeat(a, 2, axis=-1)[..., ::2] for a in args)
        np.testing.assert_array_equal(call(*strided), expected, err_msg=f"{name} strided")


def test_threads_share_kernels_and_cells(rng):
    cell = FastGRNNCell(rng.standard_normal((8, 5)), rng.standard_normal((8, 8)), np.zeros(8), np.zeros(8),
                        np.ones(8), 0.0, 1.0, -4.0)
    query = rng.standard_normal(384).astype(np.float32)
    rows = rng.standard_normal((2000, 384)).astype(np.float32)  # large enough to release the GIL
    X = rng.standard_normal((5000, 5)).astype(np.float32)
    expected_cos = kernels.cosine_batch(query, rows)
    expected_p = cell.forward_batch(X)

    def work(i: int) -> bool:
        ok = True
        for _ in range(20):
            ok &= np.array_equal(kernels.cosine_batch(query, rows), expected_cos)
            ok &= np.array_equal(cell.forward_batch(X), expected_p)
            ok &= cell.forward(X[i]) == expected_p[i]
        return ok

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(work, range(16)))
