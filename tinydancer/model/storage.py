"""The five ways a weight matrix is stored, as one table keyed by kind.

For each kind the table gives the tensors a model file holds (name suffix, dtype, shape), whether the kind
is int8 and whether it is sparse (CSR), and the :class:`~tinydancer.kernels.KernelMatrix` constructor that
rebuilds the matrix from those tensors. The parts are listed in the order the constructor takes them, which
is also the order :meth:`KernelMatrix.arrays` returns them in, so one table serves both directions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from tinydancer.kernels import KernelMatrix

__all__ = ["Part", "Storage", "STORAGE", "TensorSpec"]

TensorSpec = dict[str, tuple[type[np.generic], tuple[int, ...]]]
"""Tensor name -> (dtype, shape); -1 in a shape stands for any length."""


@dataclass(frozen=True)
class Part:
    """One stored tensor of a matrix.

    Args:
        suffix: appended to the matrix name (``"W"`` + ``".values"``); empty for a dense matrix.
        dtype: the tensor's NumPy dtype.
        shape: its dimensions by name: ``rows``, ``cols``, ``rank``, ``rows+1`` or ``nnz`` (any length).
    """

    suffix: str
    dtype: type[np.generic]
    shape: tuple[str, ...]


@dataclass(frozen=True)
class Storage:
    """One storage kind: its tensors, its flags, and how to build the kernel matrix from its tensors."""

    kind: str
    parts: tuple[Part, ...]
    build: Callable[..., KernelMatrix]
    int8: bool = False
    sparse: bool = False

    def spec(self, name: str, rows: int, cols: int, rank: int | None = None) -> TensorSpec:
        """The tensors a file holds for matrix ``name`` of this kind.

        Args:
            name: the matrix's name in the file (``"W"`` or ``"U"``).
            rows, cols: the matrix's shape.
            rank: the inner dimension; only the low-rank kind uses it.

        Returns:
            Tensor name -> (dtype, shape), with -1 where any length is allowed.
        """
        dims = {"rows": rows, "cols": cols, "rank": rank, "rows+1": rows + 1, "nnz": -1}
        return {name + p.suffix: (p.dtype, tuple(dims[d] for d in p.shape)) for p in self.parts}

    def tensors(self, name: str, matrix: KernelMatrix) -> dict[str, np.ndarray]:
        """The stored arrays of ``matrix`` (which must be of this kind) by their tensor names."""
        return {name + p.suffix: a for p, a in zip(self.parts, matrix.arrays())}

    def matrix(self, name: str, tensors: Mapping[str, np.ndarray], shape: tuple[int, int]) -> KernelMatrix:
        """The kernel matrix ``name`` of this kind built from ``tensors``.

        Args:
            name: the matrix's name in ``tensors``.
            tensors: holds at least the tensors of :meth:`spec`.
            shape: (rows, cols); CSR kinds need it, since their arrays do not give the column count.

        Raises:
            InvalidInputError: the arrays do not form a valid matrix (bad CSR structure, NaN, ...).
        """
        arrays = [tensors[name + p.suffix] for p in self.parts]
        return self.build(*arrays, shape) if self.sparse else self.build(*arrays)


_F32, _I8, _I32 = np.float32, np.int8, np.int32


def _csr(values: type[np.generic]) -> tuple[Part, ...]:
    return (Part(".values", values, ("nnz",)), Part(".indices", _I32, ("nnz",)), Part(".indptr", _I32, ("rows+1",)))


_SCALES = Part(".scales", _F32, ("rows",))

STORAGE: dict[str, Storage] = {
    s.kind: s
    for s in (
        Storage("dense", (Part("", _F32, ("rows", "cols")),), KernelMatrix.dense),
        Storage("low_rank", (Part(".left", _F32, ("rows", "rank")), Part(".right", _F32, ("rank", "cols"))),
                KernelMatrix.low_rank),
        Storage("int8", (Part(".values", _I8, ("rows", "cols")), _SCALES), KernelMatrix.int8, int8=True),
        Storage("sparse", _csr(_F32), KernelMatrix.sparse, sparse=True),
        Storage("sparse_int8", (*_csr(_I8), _SCALES), KernelMatrix.sparse_int8, int8=True, sparse=True),
    )
}
"""Every storage kind by name, in the order the README lists them."""
