"""Shared inputs, sizes and the suites' base. ``TD_BENCH_PROFILE=fast`` shrinks the parameter grid for smoke runs."""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from tinydancer import kernels

PROFILE = os.environ.get("TD_BENCH_PROFILE", "regular")
ISAS = kernels.available_isas()
DIMS = [384] if PROFILE == "fast" else [16, 384, 1536]
ROWS = [100] if PROFILE == "fast" else [10, 100, 1000]
BATCHES = [100] if PROFILE == "fast" else [1, 10, 100, 1000]


@lru_cache(maxsize=None)
def vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 standard-normal rows, 64-byte aligned (so figures do not depend on where the
    allocator put them), cached: inputs are built once per process."""
    from tinydancer.benchmarks import aligned_copy

    return aligned_copy(np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32))


@lru_cache(maxsize=None)
def fastgrnn_cell(inputs: int, hidden: int, kind: str = "dense") -> kernels.FastGRNNCell:
    """A FastGRNN cell with W and U of the given storage kind: dense, int8, sparse_int8 (90% zeros) or low_rank."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((hidden, inputs)).astype(np.float32) * 0.3
    U = rng.standard_normal((hidden, hidden)).astype(np.float32) * 0.3
    matrices = []
    for m in (W, U):
        if kind == "dense":
            matrices.append(kernels.KernelMatrix.dense(m))
        elif kind == "int8":
            scales = np.abs(m).max(axis=1) / 127.0
            matrices.append(kernels.KernelMatrix.int8(np.rint(m / scales[:, None]).astype(np.int8), scales))
        elif kind == "sparse_int8":
            keep = np.abs(m) >= np.quantile(np.abs(m), 0.9)
            scales = np.abs(m).max(axis=1) / 127.0
            q = np.where(keep, np.rint(m / scales[:, None]), 0).astype(np.int8)
            rows, cols = np.nonzero(q)
            indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=m.shape[0]))])
            matrices.append(kernels.KernelMatrix.sparse_int8(q[rows, cols], cols, indptr, scales, m.shape))
        elif kind == "low_rank":
            rank = max(1, min(m.shape) // 4)
            u, s, vt = np.linalg.svd(m, full_matrices=False)
            matrices.append(kernels.KernelMatrix.low_rank(u[:, :rank] * s[:rank], vt[:rank]))
        else:
            raise ValueError(kind)
    return kernels.FastGRNNCell(matrices[0], matrices[1], np.zeros(hidden), np.zeros(hidden),
                                rng.standard_normal(hidden), 0.0, zeta=1.0, nu=-4.0)


class Suite:
    """Base of the timed suites: inputs are built on a parameter set's first call, never in ``setup``.

    asv_runner 0.3 and later run a suite's ``setup`` before every timed call and then time one call per
    sample (asv#966): each figure was then a single call on freshly built, cold inputs plus the timer's own
    cost (``route()`` of 10 candidates read 6.8 us against 1.4 us from ``tinydancer bench``). Without
    ``setup``, asv times batches of calls as ``tinydancer bench`` does. So each timed method starts with

        if self.key != (isa, n):
            self.prepare(isa, n)

    which costs about 20 ns a call. asv runs each parameter set in its own process, and the first call, the
    one that prepares, falls in its warm-up (``--quick`` makes only that call: a smoke test, not a timing).
    """

    key: tuple | None = None

    def prepare(self, *params):
        """Remember the parameter set; suites extend this to build their inputs."""
        self.key = params


class IsaSuite(Suite):
    """A suite whose first parameter is the ISA the kernels run."""

    def prepare(self, isa, *params):
        """Select ``isa``, then remember the parameter set."""
        kernels.set_isa(isa)
        super().prepare(isa, *params)
