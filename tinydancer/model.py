"""The FastGRNN model of Kusupati et al. (NeurIPS 2018), with real int8 quantization and magnitude pruning.

Every forward pass runs the C kernels through a bound :class:`~tinydancer.kernels.FastGRNNCell`. The weights
W and U are each stored in one of the kernel forms (dense float32, low-rank float32, dense int8 with per-row
scales, sparse float32 or sparse int8 in CSR), and :meth:`FastGRNN.size_bytes` counts exactly what is
stored. Files are handled by :mod:`tinydancer.model_files`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from tinydancer.errors import ConfigError, InvalidInputError
from tinydancer.kernels import FastGRNNCell, KernelMatrix

if TYPE_CHECKING:
    from tinydancer import model_files

__all__ = ["FastGRNNConfig", "FastGRNN", "quantize_rows", "magnitude_mask"]

_MAX_DIM = 1024


@dataclass(frozen=True)
class FastGRNNConfig:
    """The shape of a FastGRNN model.

    Args:
        input_dim: features per timestep.
        hidden_dim: size of the hidden state (at most 1024).
        output_dim: 1 for a probability (sigmoid), more for a softmax over classes.
        timesteps: T, the number of input steps per example.
        nu, zeta: the gate scalars' initial values, stored before the sigmoid as in EdgeML.
        w_rank, u_rank: when set, W = W1 W2 (and U = U1 U2) with inner dimension of that rank.
    """

    input_dim: int = 5
    hidden_dim: int = 8
    output_dim: int = 1
    timesteps: int = 1
    nu: float = -4.0
    zeta: float = 1.0
    w_rank: int | None = None
    u_rank: int | None = None

    def __post_init__(self) -> None:
        for name in ("input_dim", "hidden_dim", "output_dim", "timesteps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_dim > _MAX_DIM or self.output_dim > _MAX_DIM:
            raise ConfigError(f"hidden_dim and output_dim must be at most {_MAX_DIM}")
        for name in ("nu", "zeta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        for name, limit in (("w_rank", min(self.hidden_dim, self.input_dim)), ("u_rank", self.hidden_dim)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit):
                raise ConfigError(f"{name} must be None or an integer in [1, {limit}], got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FastGRNNConfig:
        """The inverse of :meth:`to_dict`; unknown or missing keys raise :class:`ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a FastGRNN config must be a mapping, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown FastGRNN config keys: {sorted(unknown)}")
        return cls(**dict(data))


def quantize_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 quantization: ``matrix ~= scales[:, None] * q`` with q in [-127, 127].

    A row of zeros gets scale 1.0 (any positive scale represents it exactly).
    """
    m = np.asarray(matrix, dtype=np.float64)
    peak = np.abs(m).max(axis=1) if m.size else np.zeros(m.shape[0])
    scales = np.where(peak > 0, peak / 127.0, 1.0)
    q = np.clip(np.rint(m / scales[:, None]), -127, 127).astype(np.int8)
    return q, scales.astype(np.float32)


def magnitude_mask(matrix: np.ndarray, sparsity: float) -> np.ndarray:
    """True for the weights that survive pruning the fraction ``sparsity`` of smallest magnitudes.

    Exactly ``round(sparsity * size)`` weights are dropped; ties are broken by position, so the result is
    deterministic.
    """
    values = np.abs(np.asarray(matrix, dtype=np.float64)).ravel()
    drop = int(round(sparsity * values.size))
    keep = np.ones(values.size, dtype=bool)
    if drop:
        keep[np.argsort(values, kind="stable")[:drop]] = False
    return keep.reshape(np.shape(matrix))


def _csr(dense: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, indices, indptr) of the entries of ``dense`` where ``keep`` is True, row by row."""
    rows, cols = np.nonzero(keep)
    indptr = np.zeros(dense.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
    return dense[rows, cols], cols.astype(np.int32), indptr


def _kind_is_int8(m: KernelMatrix) -> bool:
    return m.kind in ("int8", "sparse_int8")


class FastGRNN:
    """A FastGRNN model whose inference runs the C kernels.

    Args:
        config: the model's shape (default :class:`FastGRNNConfig`).
        seed: seeds the initialisation (EdgeML's: weights N(0, 0.1^2), gate biases 1, output N(0, 0.1^2)).

    The model is safe to share between threads: compression and reloading swap in a new bound cell
    atomically, so a concurrent forward pass sees the old weights or the new ones, never a mix.
    """

    def __init__(self, config: FastGRNNConfig | None = None, seed: int | None = None) -> None:
        self._config = config if config is not None else FastGRNNConfig()
        if not isinstance(self._config, FastGRNNConfig):
            raise ConfigError(f"config must be a FastGRNNConfig, got {type(config).__name__}")
        c = self._config
        rng = np.random.default_rng(seed)

        def normal(*shape: int) -> np.ndarray:
            return (0.1 * rng.standard_normal(shape)).astype(np.float32)

        weights: dict[str, np.ndarray] = {}
        if c.w_rank is None:
            weights["W"] = normal(c.hidden_dim, c.input_dim)
        else:
            weights["W1"], weights["W2"] = normal(c.hidden_dim, c.w_rank), normal(c.w_rank, c.input_dim)
        if c.u_rank is None:
            weights["U"] = normal(c.hidden_dim, c.hidden_dim)
        else:
            weights["U1"], weights["U2"] = normal(c.hidden_dim, c.u_rank), normal(c.u_rank, c.hidden_dim)
        weights.update(
            b_z=np.ones(c.hidden_dim, np.float32), b_h=np.ones(c.hidden_dim, np.float32),
            w_out=normal(c.output_dim, c.hidden_dim), b_out=np.zeros(c.output_dim, np.float32),
            zeta=np.float32(c.zeta), nu=np.float32(c.nu),
        )
        self._lock = threading.Lock()
        self.set_weights(weights)

    # ----------------------------------------------------------------------------------------------------
    # Construction from stored forms
    # ----------------------------------------------------------------------------------------------------

    @classmethod
    def from_matrices(cls, config: FastGRNNConfig, W: KernelMatrix, U: KernelMatrix, b_z: np.ndarray,
                      b_h: np.ndarray, w_out: np.ndarray, b_out: np.ndarray, zeta: float, nu: float) -> FastGRNN:
        """A model from weights already in kernel form (as :mod:`tinydancer.model_files` reads them)."""
        model = cls.__new__(cls)
        model._config = config
        model._lock = threading.Lock()
        model._bind(W, U, b_z, b_h, w_out, b_out, zeta, nu)
        return model

    def _bind(self, W: KernelMatrix, U: KernelMatrix, b_z, b_h, w_out, b_out, zeta: float, nu: float) -> None:
        c = self._config
        if W.shape != (c.hidden_dim, c.input_dim):
            raise InvalidInputError(f"W has shape {W.shape}, the config says {(c.hidden_dim, c.input_dim)}")
        if U.shape != (c.hidden_dim, c.hidden_dim):
            raise InvalidInputError(f"U has shape {U.shape}, the config says {(c.hidden_dim, c.hidden_dim)}")
        cell = FastGRNNCell(W, U, b_z, b_h, w_out, np.atleast_1d(b_out), float(zeta), float(nu),
                            timesteps=c.timesteps)
        if cell.output_dim != c.output_dim:
            raise InvalidInputError(f"w_out has {cell.output_dim} rows, the config says output_dim {c.output_dim}")
        self._cell = cell  # one reference swap: readers see the old cell or the new one

    # ----------------------------------------------------------------------------------------------------
    # Inference
    # ----------------------------------------------------------------------------------------------------

    @property
    def config(self) -> FastGRNNConfig:
        return self._config

    @property
    def cell(self) -> FastGRNNCell:
        """The bound kernel cell (immutable; replaced whole by compression or new weights)."""
        return self._cell

    def forward(self, x: Any) -> float | np.ndarray:
        """The output for one example: x of shape (input_dim,) when timesteps is 1, else (T, input_dim).

        Returns a probability (float) when output_dim is 1, else output_dim softmax probabilities.
        """
        return self._cell.forward(x)

    def forward_batch(self, X: Any, out: np.ndarray | None = None) -> np.ndarray:
        """Outputs for a batch: X of shape (B, input_dim), or (B, T, input_dim). Returns (B,) or (B, output_dim)."""
        return self._cell.forward_batch(X, out)

    # ----------------------------------------------------------------------------------------------------
    # Weights
    # ----------------------------------------------------------------------------------------------------

    def parameters(self) -> dict[str, np.ndarray]:
        """Dense float32 copies of every parameter: ``W``, ``U`` (low-rank products multiplied out, int8 and
        sparse forms expanded with their scales), ``b_z``, ``b_h``, ``w_out`` (output_dim, hidden_dim),
        ``b_out``, and the scalars ``zeta`` and ``nu`` (before the sigmoid) as 0-d arrays."""
        cell = self._cell
        return {
            "W": cell.W.to_dense(), "U": cell.U.to_dense(), "b_z": np.array(cell.b_z), "b_h": np.array(cell.b_h),
            "w_out": np.array(cell.w_out), "b_out": np.array(cell.b_out),
            "zeta": np.array(cell.zeta, dtype=np.float32), "nu": np.array(cell.nu, dtype=np.float32),
        }

    def weights(self) -> dict[str, np.ndarray]:
        """Float32 copies of the trainable parameters by their names: like :meth:`parameters`, but a
        low-rank W or U stays factored as ``W1``/``W2`` (``U1``/``U2``), as long as it is stored that way."""
        cell = self._cell
        out = self.parameters()
        for name, matrix in (("W", cell.W), ("U", cell.U)):
            if matrix.kind == "low_rank":
                left, right = matrix.arrays()
                del out[name]
                out[name + "1"], out[name + "2"] = np.array(left), np.array(right)
        return out

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Replace every parameter with float32 values (the keys of :meth:`weights`; ``W`` or ``W1`` and
        ``W2``, likewise for U). The model becomes dense (or low-rank) float32 again: masks and
        quantization are dropped."""
        missing = {"b_z", "b_h", "w_out", "b_out", "zeta", "nu"} - set(weights)
        if missing:
            raise InvalidInputError(f"weights is missing {sorted(missing)}")
        matrices = []
        for name in ("W", "U"):
            if name in weights:
                matrices.append(KernelMatrix.dense(weights[name]))
            elif name + "1" in weights and name + "2" in weights:
                matrices.append(KernelMatrix.low_rank(weights[name + "1"], weights[name + "2"]))
            else:
                raise InvalidInputError(f"weights needs {name!r} or {name + '1'!r} and {name + '2'!r}")
        with self._lock:
            self._bind(matrices[0], matrices[1], weights["b_z"], weights["b_h"], weights["w_out"],
                       weights["b_out"], float(np.asarray(weights["zeta"])), float(np.asarray(weights["nu"])))

    def _replace_matrices(self, W: KernelMatrix, U: KernelMatrix) -> None:
        cell = self._cell
        self._bind(W, U, cell.b_z, cell.b_h, cell.w_out, cell.b_out, cell.zeta, cell.nu)

    # ----------------------------------------------------------------------------------------------------
    # Compression
    # ----------------------------------------------------------------------------------------------------

    @property
    def is_quantized(self) -> bool:
        """True when W and U are stored as int8."""
        return _kind_is_int8(self._cell.W) and _kind_is_int8(self._cell.U)

    @property
    def is_sparse(self) -> bool:
        """True when W and U are stored in CSR form."""
        return self._cell.W.kind.startswith("sparse") and self._cell.U.kind.startswith("sparse")

    @property
    def sparsity(self) -> float:
        """The fraction of zero entries in W and U together (0.0 for a dense model)."""
        cell = self._cell
        total = cell.W.shape[0] * cell.W.shape[1] + cell.U.shape[0] * cell.U.shape[1]
        zeros = sum(int(np.count_nonzero(m.to_dense() == 0)) for m in (cell.W, cell.U))
        return zeros / total

    def quantize(self) -> FastGRNN:
        """Convert W and U to int8, symmetric per output row with a float32 scale; inference then runs the
        int8 kernels. Dense and low-rank matrices become dense int8 (a low-rank product is multiplied out
        first), sparse ones sparse int8. Quantizing twice changes nothing. Returns the model."""
        with self._lock:
            self._replace_matrices(*(self._quantized(m) for m in (self._cell.W, self._cell.U)))
        return self

    @staticmethod
    def _quantized(m: KernelMatrix) -> KernelMatrix:
        if _kind_is_int8(m):
            return m
        if m.kind == "sparse":
            values, indices, indptr = m.arrays()
            rows = np.repeat(np.arange(m.shape[0]), np.diff(indptr))
            peak = np.zeros(m.shape[0])
            np.maximum.at(peak, rows, np.abs(values.astype(np.float64)))
            scales = np.where(peak > 0, peak / 127.0, 1.0)
            q = np.clip(np.rint(values / scales[rows]), -127, 127).astype(np.int8)
            return KernelMatrix.sparse_int8(q, indices, indptr, scales.astype(np.float32), m.shape)
        q, scales = quantize_rows(m.to_dense())
        return KernelMatrix.int8(q, scales)

    def prune(self, sparsity: float) -> FastGRNN:
        """Zero the fraction ``sparsity`` (in [0, 1)) of smallest-magnitude weights of W and of U (each
        matrix on its own) and store both in CSR form; inference then runs the sparse kernels. An int8
        model stays int8 (sparse int8). A low-rank matrix is multiplied out first. Returns the model."""
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
            raise InvalidInputError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
        with self._lock:
            self._replace_matrices(*(self._pruned(m, float(sparsity)) for m in (self._cell.W, self._cell.U)))
        return self

    @staticmethod
    def _pruned(m: KernelMatrix, sparsity: float) -> KernelMatrix:
        dense = m.to_dense()
        keep = magnitude_mask(dense, sparsity) & (dense != 0)
        if _kind_is_int8(m):
            if m.kind == "int8":
                q, scales = m.arrays()
            else:
                q, scales = np.rint(dense / m.arrays()[3][:, None]).astype(np.int8), m.arrays()[3]
            values, indices, indptr = _csr(np.asarray(q), keep)
            return KernelMatrix.sparse_int8(values, indices, indptr, scales, m.shape)
        values, indices, indptr = _csr(dense, keep)
        return KernelMatrix.sparse(values, indices, indptr, m.shape)

    def size_bytes(self) -> int:
        """Bytes of every parameter as stored: W and U in their form (values, indices, row pointers,
        scales), the float32 biases and output layer, and the two gate scalars."""
        return int(self._cell.nbytes)

    # ----------------------------------------------------------------------------------------------------
    # Files
    # ----------------------------------------------------------------------------------------------------

    def save(self, path: str | PathLike[str]) -> None:
        """Write the model to ``path`` as safetensors (see :mod:`tinydancer.model_files`): a temporary
        file in the same folder, fsync, then an atomic rename."""
        from tinydancer import model_files

        model_files.save_fastgrnn(self, path)

    @classmethod
    def load(cls, path: str | PathLike[str]) -> FastGRNN | model_files.CrateFastGRNN:
        """Read a model written by :meth:`save`, validating everything first; raises a
        :class:`~tinydancer.errors.ModelError` subclass and never returns a half-loaded model. Files in the
        crate's format load as :class:`tinydancer.model_files.CrateFastGRNN` through
        :func:`tinydancer.model_files.load_model`."""
        from tinydancer import model_files

        return model_files.load_model(path)

    def __repr__(self) -> str:
        c = self._config
        return (f"FastGRNN(input_dim={c.input_dim}, hidden_dim={c.hidden_dim}, output_dim={c.output_dim}, "
                f"timesteps={c.timesteps}, W={self._cell.W.kind}, U={self._cell.U.kind}, "
                f"size_bytes={self.size_bytes()})")
