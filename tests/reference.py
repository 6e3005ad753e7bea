"""Float64 / int64 NumPy references of every kernel, written from the equations, not from the C code."""

from __future__ import annotations

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


def cosine_batch(q: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.array([cosine(q, r) for r in rows], dtype=np.float64)


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) -> inf gives the right limit, 0
        return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def fastgrnn(x: np.ndarray, W: np.ndarray, U: np.ndarray, b_z, b_h, w_out, b_out, zeta: float, nu: float):
    """x: (T, I) -> output_dim probabilities, the cell of Kusupati et al. with h_0 = 0."""
    W = np.asarray(W, dtype=np.float64)
    U = np.asarray(U, dtype=np.float64)
    w_out = np.atleast_2d(np.asarray(w_out, dtype=np.float64))
    h = np.zeros(W.shape[0])
    for x_t in np.atleast_2d(np.asarray(x, dtype=np.float64)):
        a = W @ x_t + U @ h
        z = sigmoid(a + b_z)
        c = np.tanh(a + np.asarray(b_h, dtype=np.float64))
        h = z * h + (sigmoid(zeta) * (1.0 - z) + sigmoid(nu)) * c
    logits = w_out @ h + np.atleast_1d(np.asarray(b_out, dtype=np.float64))
    if logits.shape[0] == 1:
        return sigmoid(logits)
    e = np.exp(logits - logits.max())
    return e / e.sum()


def features(query, embeddings, created_at, access_count, success_rate, metadata_overlap, now, weights, decay):
    sims = cosine_batch(query, embeddings)
    rec = np.exp(-decay * np.maximum(now - np.asarray(created_at, dtype=np.float64), 0.0))
    freq = np.minimum(np.log1p(np.asarray(access_count, dtype=np.float64)) / np.log1p(10000.0), 1.0)
    meta = np.zeros(len(sims)) if metadata_overlap is None else np.asarray(metadata_overlap, dtype=np.float64)
    raw = np.stack([sims, rec, freq, np.asarray(success_rate, dtype=np.float64), meta], axis=1)
    return raw * np.asarray(weights, dtype=np.float64)


def random_csr(rng: np.random.Generator, rows: int, cols: int, density: float, dtype):
    """A random sparse matrix: (dense, values, indices, indptr), some rows empty."""
    mask = rng.random((rows, cols)) < density
    if dtype == np.int8:
        dense = rng.integers(-128, 128, size=(rows, cols)).astype(np.int8)
        dense[dense == 0] = 1
    else:
        dense = rng.standard_normal((rows, cols)).astype(np.float32)
    dense = np.where(mask, dense, 0).astype(dtype)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    r, c = np.nonzero(mask)
    return dense, dense[r, c], c.astype(np.int32), indptr
