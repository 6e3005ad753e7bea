"""The C kernels from Python, per ISA and size."""

from __future__ import annotations

import numpy as np

from tinydancer import kernels

from .common import BATCHES, DIMS, ISAS, ROWS, IsaSuite, fastgrnn_cell, vectors


class Cosine(IsaSuite):
    params = (ISAS, DIMS)
    param_names = ["isa", "dim"]

    def prepare(self, isa, dim):
        super().prepare(isa, dim)
        self.a, self.b = vectors(2, dim)

    def time_cosine(self, isa, dim):
        if self.key != (isa, dim):
            self.prepare(isa, dim)
        kernels.cosine(self.a, self.b)

    def track_gbytes_per_s(self, isa, dim):
        import timeit

        if self.key != (isa, dim):
            self.prepare(isa, dim)
        number = 20000
        seconds = min(timeit.repeat(lambda: kernels.cosine(self.a, self.b), number=number, repeat=3)) / number
        return 2 * dim * 4 / seconds / 1e9

    track_gbytes_per_s.unit = "GB/s"


class CosineBatch(IsaSuite):
    params = (ISAS, DIMS, ROWS)
    param_names = ["isa", "dim", "rows"]

    def prepare(self, isa, dim, rows):
        super().prepare(isa, dim, rows)
        self.query = vectors(1, dim, seed=2)[0]
        self.rows = vectors(rows, dim)
        self.norms = kernels.l2_norms(self.rows)
        self.out = np.empty(rows, np.float32)

    def time_cosine_batch(self, isa, dim, rows):
        if self.key != (isa, dim, rows):
            self.prepare(isa, dim, rows)
        kernels.cosine_batch(self.query, self.rows, out=self.out)

    def time_cosine_batch_with_norms(self, isa, dim, rows):
        if self.key != (isa, dim, rows):
            self.prepare(isa, dim, rows)
        kernels.cosine_batch(self.query, self.rows, self.norms, out=self.out)


class Int8Matvec(IsaSuite):
    params = (ISAS, [(32, 384), (256, 1024)])
    param_names = ["isa", "shape"]

    def prepare(self, isa, shape):
        super().prepare(isa, shape)
        rng = np.random.default_rng(3)
        self.w = rng.integers(-128, 128, size=shape, dtype=np.int8)
        self.scales = np.full(shape[0], 0.01, np.float32)
        self.x = rng.standard_normal(shape[1]).astype(np.float32)
        self.xi = rng.integers(-128, 128, size=shape[1], dtype=np.int8)
        keep = rng.random(shape) < 0.1
        self.values = self.w[keep]
        self.indices = np.nonzero(keep)[1].astype(np.int32)
        self.indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)

    def time_int8_matvec(self, isa, shape):
        if self.key != (isa, shape):
            self.prepare(isa, shape)
        kernels.int8_matvec(self.w, self.scales, self.x)

    def time_int8_matvec_int32(self, isa, shape):
        if self.key != (isa, shape):
            self.prepare(isa, shape)
        kernels.int8_matvec_int32(self.w, self.xi)

    def time_csr_int8_matvec_90pct_sparse(self, isa, shape):
        if self.key != (isa, shape):
            self.prepare(isa, shape)
        kernels.csr_int8_matvec(self.values, self.indices, self.indptr, self.scales, self.x)


class FastGRNN(IsaSuite):
    params = (ISAS, ["dense", "int8", "sparse_int8", "low_rank"], [(5, 8), (384, 32)])
    param_names = ["isa", "weights", "input_hidden"]

    def prepare(self, isa, weights, input_hidden):
        super().prepare(isa, weights, input_hidden)
        inputs, hidden = input_hidden
        self.cell = fastgrnn_cell(inputs, hidden, weights)
        self.x = vectors(1, inputs, seed=4)[0]
        self.X = vectors(100, inputs, seed=5)
        self.out = np.empty(100, np.float32)

    def time_forward(self, isa, weights, input_hidden):
        if self.key != (isa, weights, input_hidden):
            self.prepare(isa, weights, input_hidden)
        self.cell.forward(self.x)

    def time_forward_batch_100(self, isa, weights, input_hidden):
        if self.key != (isa, weights, input_hidden):
            self.prepare(isa, weights, input_hidden)
        self.cell.forward_batch(self.X, out=self.out)


class FastGRNNBatchSizes(IsaSuite):
    params = (ISAS, BATCHES)
    param_names = ["isa", "batch"]

    def prepare(self, isa, batch):
        super().prepare(isa, batch)
        self.cell = fastgrnn_cell(5, 8)
        self.X = vectors(batch, 5, seed=6)
        self.out = np.empty(batch, np.float32)

    def time_forward_batch(self, isa, batch):
        if self.key != (isa, batch):
            self.prepare(isa, batch)
        self.cell.forward_batch(self.X, out=self.out)


class ScoreCandidates(IsaSuite):
    params = (ISAS, [10, 50, 100])
    param_names = ["isa", "candidates"]

    def prepare(self, isa, n):
        super().prepare(isa, n)
        rng = np.random.default_rng(7)
        self.cell = fastgrnn_cell(5, 8)
        self.query = vectors(1, 384, seed=8)[0]
        self.embeddings = vectors(n, 384, seed=9)
        self.norms = kernels.l2_norms(self.embeddings)
        self.created = 1.8e9 - rng.uniform(0, 1e5, n)
        self.counts = rng.integers(0, 1000, n)
        self.success = rng.uniform(0, 1, n).astype(np.float32)
        self.out = np.empty(n, np.float32)

    def time_score_candidates(self, isa, n):
        if self.key != (isa, n):
            self.prepare(isa, n)
        kernels.score_candidates(self.cell, self.query, self.embeddings, self.created, self.counts, self.success,
                                 1.8e9, embedding_norms=self.norms, out=self.out)
