"""Weight compression, each step written once: int8 quantization per row, the magnitude mask, and CSR.

:func:`quantize_matrix` and :func:`prune_matrix` turn one :class:`~tinydancer.kernels.KernelMatrix` into
its compressed form; :meth:`FastGRNN.quantize <tinydancer.model.FastGRNN.quantize>` and
:meth:`FastGRNN.prune <tinydancer.model.FastGRNN.prune>` apply them to W and U, and training uses
:func:`magnitude_mask` for its hard thresholding.
"""

from __future__ import annotations

import numpy as np

from tinydancer.kernels import KernelMatrix
from tinydancer.model.storage import STORAGE

__all__ = ["quantize_csr", "quantize_rows", "magnitude_mask", "to_csr", "quantize_matrix", "prune_matrix"]


def _row_of(indptr: np.ndarray) -> np.ndarray:
    """The row of each CSR entry."""
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def quantize_csr(values: np.ndarray, indptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 quantization of the values of a CSR matrix.

    Each row's scale is its largest magnitude over 127, so ``values ~= scales[row] * q`` with q in
    [-127, 127]; a row with no nonzero value gets scale 1.0 (any positive scale represents it exactly).

    Args:
        values: the stored values, row by row.
        indptr: the row pointers (length rows + 1).

    Returns:
        (q, scales): int8 values in the same positions, and float32 scales of shape (rows,).
    """
    v = np.asarray(values, dtype=np.float64)
    rows = _row_of(np.asarray(indptr))
    peak = np.zeros(len(indptr) - 1)
    np.maximum.at(peak, rows, np.abs(v))
    scales = np.where(peak > 0, peak / 127.0, 1.0)
    q = np.clip(np.rint(v / scales[rows]), -127, 127).astype(np.int8)
    return q, scales.astype(np.float32)


def quantize_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 quantization of a dense matrix: ``matrix ~= scales[:, None] * q``.

    The same rule as :func:`quantize_csr`, with every entry of a row stored.

    Args:
        matrix: a 2-D array.

    Returns:
        (q, scales): int8 of the matrix's shape with q in [-127, 127], and float32 scales of shape (rows,).
    """
    m = np.asarray(matrix, dtype=np.float64)
    rows, cols = m.shape
    q, scales = quantize_csr(m.ravel(), np.arange(rows + 1) * cols)
    return q.reshape(m.shape), scales


def magnitude_mask(matrix: np.ndarray, sparsity: float) -> np.ndarray:
    """True for the weights that survive pruning the fraction ``sparsity`` of smallest magnitudes.

    Exactly ``round(sparsity * size)`` weights are dropped; ties are broken by position, so the result is
    deterministic.

    Args:
        matrix: the weights, of any shape.
        sparsity: the fraction to drop, in [0, 1].

    Returns:
        A bool array of the matrix's shape.
    """
    values = np.abs(np.asarray(matrix, dtype=np.float64)).ravel()
    drop = int(round(sparsity * values.size))
    keep = np.ones(values.size, dtype=bool)
    if drop:
        keep[np.argsort(values, kind="stable")[:drop]] = False
    return keep.reshape(np.shape(matrix))


def to_csr(dense: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries of ``dense`` where ``keep`` is True, in CSR form.

    Args:
        dense: a 2-D array.
        keep: a bool array of the same shape.

    Returns:
        (values, indices, indptr): values in dense's dtype, int32 column indices and int32 row pointers,
        row by row and by column within a row.
    """
    rows, cols = np.nonzero(keep)
    indptr = np.zeros(dense.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
    return dense[rows, cols], cols.astype(np.int32), indptr


def quantize_matrix(m: KernelMatrix) -> KernelMatrix:
    """``m`` as int8 with a float32 scale per row.

    Dense and low-rank matrices become dense int8 (a low-rank product is multiplied out first), sparse
    ones sparse int8 with the same structure; an int8 matrix is returned as it is.
    """
    storage = STORAGE[m.kind]
    if storage.int8:
        return m
    if storage.sparse:
        values, indices, indptr = m.arrays()
        q, scales = quantize_csr(values, indptr)
        return KernelMatrix.sparse_int8(q, indices, indptr, scales, m.shape)
    q, scales = quantize_rows(m.to_dense())
    return KernelMatrix.int8(q, scales)


def prune_matrix(m: KernelMatrix, sparsity: float) -> KernelMatrix:
    """``m`` in CSR form without the fraction ``sparsity`` of smallest-magnitude weights (and its zeros).

    An int8 matrix stays int8 (sparse int8, with its scales and values unchanged); any other becomes sparse
    float32, a low-rank product multiplied out first.
    """
    dense = m.to_dense()
    keep = magnitude_mask(dense, sparsity) & (dense != 0)
    if not STORAGE[m.kind].int8:
        return KernelMatrix.sparse(*to_csr(dense, keep), m.shape)
    q, scales = _int8_values(m)
    values, indices, indptr = to_csr(q, keep)
    return KernelMatrix.sparse_int8(values, indices, indptr, scales, m.shape)


def _int8_values(m: KernelMatrix) -> tuple[np.ndarray, np.ndarray]:
    """(dense int8 values, scales) of an int8 or sparse int8 matrix."""
    *stored, scales = m.arrays()
    if not STORAGE[m.kind].sparse:
        return stored[0], scales
    values, indices, indptr = stored
    q = np.zeros(m.shape, dtype=np.int8)
    q[_row_of(indptr), indices] = values
    return q, scales
