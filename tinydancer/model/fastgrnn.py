"""The FastGRNN model of Kusupati et al. (NeurIPS 2018), with real int8 quantization and magnitude pruning.

Every forward pass runs the C kernels through a bound :class:`~tinydancer.kernels.FastGRNNCell`. The weights
W and U are each stored in one of the kernel forms of :mod:`tinydancer.model.storage` (dense float32,
low-rank float32, dense int8 with per-row scales, sparse float32 or sparse int8 in CSR), and
:meth:`FastGRNN.size_bytes` counts exactly what is stored. This module also maps a model to and from
tinydancer's file format; the container itself is :mod:`tinydancer.model.files`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tinydancer import checks
from tinydancer.errors import ConfigError, InvalidInputError, ModelSchemaError
from tinydancer.kernels import MAX_DIM, FastGRNNCell, KernelMatrix
from tinydancer.model import files
from tinydancer.model.compression import prune_matrix, quantize_matrix
from tinydancer.model.crate import CrateFastGRNN
from tinydancer.model.storage import STORAGE, TensorSpec

__all__ = ["FastGRNNConfig", "FastGRNN", "load_model", "zero_share"]


def zero_share(matrices: tuple[KernelMatrix, ...]) -> float:
    """The fraction of zero entries in ``matrices`` together."""
    total = sum(m.shape[0] * m.shape[1] for m in matrices)
    zeros = sum(int(np.count_nonzero(m.to_dense() == 0)) for m in matrices)
    return zeros / total


@dataclass(frozen=True)
class FastGRNNConfig:
    """The shape of a FastGRNN model.

    Args:
        input_dim: features per timestep.
        hidden_dim: size of the hidden state (at most :data:`tinydancer.kernels.MAX_DIM`).
        output_dim: 1 for a probability (sigmoid), more for a softmax over classes (at most ``MAX_DIM``).
        timesteps: T, the number of input steps per example.
        nu, zeta: the gate scalars' initial values, stored before the sigmoid as in EdgeML.
        w_rank, u_rank: when set, W = W1 W2 (and U = U1 U2) with inner dimension of that rank.

    Raises:
        ConfigError: a field is not of its type or out of its range.
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
        # Checked values replace the given ones, so NumPy scalars become plain int and float.
        for name in ("input_dim", "timesteps"):
            self._set(name, checks.integer(getattr(self, name), name, 1))
        for name in ("hidden_dim", "output_dim"):  # the C cell's cap (TD_FASTGRNN_MAX_DIM)
            self._set(name, checks.integer(getattr(self, name), name, 1, MAX_DIM))
        for name in ("nu", "zeta"):
            self._set(name, checks.real(getattr(self, name), name))
        for name, high in (("w_rank", min(self.hidden_dim, self.input_dim)), ("u_rank", self.hidden_dim)):
            if getattr(self, name) is not None:
                self._set(name, checks.integer(getattr(self, name), name, 1, high))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # the dataclass is frozen

    def to_dict(self) -> dict[str, Any]:
        """The fields by name (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FastGRNNConfig:
        """The inverse of :meth:`to_dict`.

        Raises:
            ConfigError: ``data`` is not a mapping, has unknown keys, or a bad value.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a FastGRNN config must be a mapping, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown FastGRNN config keys: {sorted(unknown)}")
        return cls(**dict(data))


class FastGRNN:
    """A FastGRNN model whose inference runs the C kernels.

    Args:
        config: the model's shape (default :class:`FastGRNNConfig`).
        seed: seeds the initialisation (EdgeML's: weights N(0, 0.1^2), gate biases 1, output N(0, 0.1^2)).

    Raises:
        ConfigError: ``config`` is not a :class:`FastGRNNConfig`.

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
        """A model from weights already in kernel form (as a model file stores them).

        Raises:
            InvalidInputError: the shapes disagree with ``config``, or a value is not finite.
        """
        model = cls.__new__(cls)
        model._config = config
        model._lock = threading.Lock()
        model._bind(W, U, b_z, b_h, w_out, b_out, zeta, nu)
        return model

    def _bind(self, W: KernelMatrix, U: KernelMatrix, b_z: Any, b_h: Any, w_out: Any, b_out: Any, zeta: float,
              nu: float) -> None:
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
        """The model's shape."""
        return self._config

    @property
    def cell(self) -> FastGRNNCell:
        """The bound kernel cell (immutable; replaced whole by compression or new weights)."""
        return self._cell

    def forward(self, x: Any) -> float | np.ndarray:
        """The output for one example.

        Args:
            x: shape (input_dim,) when timesteps is 1, else (T, input_dim).

        Returns:
            A probability (float) when output_dim is 1, else output_dim softmax probabilities.

        Raises:
            InvalidInputError: x has another shape, or holds NaN or infinite values.
        """
        return self._cell.forward(x)

    def forward_batch(self, X: Any, out: np.ndarray | None = None) -> np.ndarray:
        """Outputs for a batch.

        Args:
            X: shape (B, input_dim), or (B, T, input_dim).
            out: an optional float32 array to write the result into.

        Returns:
            (B,) probabilities, or (B, output_dim).

        Raises:
            InvalidInputError: X or out has another shape, or X holds NaN or infinite values.
        """
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
        """Replace every parameter with float32 values.

        The model becomes dense (or low-rank) float32 again: masks and quantization are dropped.

        Args:
            weights: the keys of :meth:`weights`: ``W`` or ``W1`` and ``W2``, likewise for U, and the rest.

        Raises:
            InvalidInputError: a key is missing, a shape disagrees with the config, or a value is not finite.
        """
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
        return STORAGE[self._cell.W.kind].int8 and STORAGE[self._cell.U.kind].int8

    @property
    def is_sparse(self) -> bool:
        """True when W and U are stored in CSR form."""
        return STORAGE[self._cell.W.kind].sparse and STORAGE[self._cell.U.kind].sparse

    @property
    def sparsity(self) -> float:
        """The fraction of zero entries in W and U together (0.0 for a dense model)."""
        return zero_share((self._cell.W, self._cell.U))

    def quantize(self) -> FastGRNN:
        """Convert W and U to int8, symmetric per output row with a float32 scale; inference then runs the
        int8 kernels. Dense and low-rank matrices become dense int8 (a low-rank product is multiplied out
        first), sparse ones sparse int8. Quantizing twice changes nothing.

        Returns:
            The model itself.
        """
        with self._lock:
            self._replace_matrices(quantize_matrix(self._cell.W), quantize_matrix(self._cell.U))
        return self

    def prune(self, sparsity: float) -> FastGRNN:
        """Zero the fraction ``sparsity`` of smallest-magnitude weights of W and of U (each matrix on its
        own) and store both in CSR form; inference then runs the sparse kernels. An int8 model stays int8
        (sparse int8). A low-rank matrix is multiplied out first.

        Args:
            sparsity: a number in [0, 1).

        Returns:
            The model itself.

        Raises:
            InvalidInputError: ``sparsity`` is not a number in [0, 1).
        """
        s = checks.real(sparsity, "sparsity", 0.0, 1.0, high_open=True, error=InvalidInputError)
        with self._lock:
            self._replace_matrices(prune_matrix(self._cell.W, s), prune_matrix(self._cell.U, s))
        return self

    def size_bytes(self) -> int:
        """Bytes of every parameter as stored: W and U in their form (values, indices, row pointers,
        scales), the float32 biases and output layer, and the two gate scalars."""
        return int(self._cell.nbytes)

    # ----------------------------------------------------------------------------------------------------
    # Files
    # ----------------------------------------------------------------------------------------------------

    def save(self, path: files.PathArg) -> None:
        """Write the model to ``path`` in tinydancer's safetensors format: a temporary file in the same
        folder, fsync, then an atomic rename. A symlink is followed (its target is written, the link stays).

        Raises:
            ModelFileError: ``path`` exists and is not a regular file (a FIFO, a device such as
                ``/dev/null``, a folder), or the folder is missing or cannot be written; the target is then
                left as it was.
        """
        files.save_file(_to_record(self), path)

    def to_record(self) -> files.ModelRecord:
        """The model as a :class:`~tinydancer.model.files.ModelRecord` (tensors and metadata), for files that
        carry a FastGRNN with metadata of their own (add keys to a copy of its ``metadata``)."""
        return _to_record(self)

    @staticmethod
    def from_record(record: files.ModelRecord) -> FastGRNN:
        """The FastGRNN a record of tinydancer's format holds, every tensor checked against its config
        (metadata keys other than ``config`` and ``storage`` are left to the caller).

        Raises:
            ModelSchemaError: a bad config, storage, tensor set, dtype or shape.
            ModelValueError: a weight is NaN or infinite.
        """
        return _from_record(record)

    @classmethod
    def load(cls, path: files.PathArg) -> FastGRNN | CrateFastGRNN:
        """Read a model file, validating everything first (the same as :func:`load_model`).

        Returns:
            A :class:`FastGRNN`, or a :class:`~tinydancer.model.CrateFastGRNN` for a file in the crate's
            format.

        Raises:
            ModelError: a :class:`~tinydancer.errors.ModelError` subclass; a half-loaded model is never
                returned.
        """
        return load_model(path)

    def __repr__(self) -> str:
        c = self._config
        return (f"FastGRNN(input_dim={c.input_dim}, hidden_dim={c.hidden_dim}, output_dim={c.output_dim}, "
                f"timesteps={c.timesteps}, W={self._cell.W.kind}, U={self._cell.U.kind}, "
                f"size_bytes={self.size_bytes()})")


# --------------------------------------------------------------------------------------------------------
# tinydancer's file format
# --------------------------------------------------------------------------------------------------------


def _to_record(model: FastGRNN) -> files.ModelRecord:
    """The model's tensors (W and U in their storage kind) and its ``config`` and ``storage`` metadata."""
    cell = model.cell  # read once: a concurrent compression swaps the whole cell
    tensors: dict[str, np.ndarray] = {}
    for name, matrix in (("W", cell.W), ("U", cell.U)):
        tensors.update(STORAGE[matrix.kind].tensors(name, matrix))
    tensors.update(b_z=cell.b_z, b_h=cell.b_h, w_out=cell.w_out, b_out=cell.b_out,
                   zeta=np.array(cell.zeta, np.float32), nu=np.array(cell.nu, np.float32))
    metadata = {
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "storage": json.dumps({"W": cell.W.kind, "U": cell.U.kind}, sort_keys=True),
    }
    return files.ModelRecord(files.FORMAT, metadata, tensors)


def _from_record(record: files.ModelRecord) -> FastGRNN:
    """The model a record of tinydancer's format holds, every tensor checked against its config first."""
    where = record.where
    try:
        config = FastGRNNConfig.from_dict(record.json("config"))
    except (ConfigError, TypeError) as exc:
        raise ModelSchemaError(f"{where}: bad config ({exc})") from None
    storage = record.json("storage")
    if (not isinstance(storage, dict) or set(storage) != {"W", "U"}
            or not all(isinstance(kind, str) and kind in STORAGE for kind in storage.values())):
        raise ModelSchemaError(f"{where}: storage must give W and U each one of {list(STORAGE)}, got {storage!r}")
    h, i, o = config.hidden_dim, config.input_dim, config.output_dim
    shapes = {"W": (h, i), "U": (h, h)}
    ranks = {"W": config.w_rank, "U": config.u_rank}
    spec: TensorSpec = {}
    for name in ("W", "U"):
        # A rank without low-rank storage is fine: compression multiplies the factors out and keeps the config.
        if storage[name] == "low_rank" and ranks[name] is None:
            raise ModelSchemaError(f"{where}: {name} is stored {storage[name]} but the config's rank is {ranks[name]}")
        spec.update(STORAGE[storage[name]].spec(name, *shapes[name], ranks[name]))
    f32 = np.float32
    spec.update(b_z=(f32, (h,)), b_h=(f32, (h,)), w_out=(f32, (o, h)), b_out=(f32, (o,)), zeta=(f32, ()),
                nu=(f32, ()))
    record.check_tensors(spec)
    t = record.tensors
    try:
        W, U = (STORAGE[storage[name]].matrix(name, t, shapes[name]) for name in ("W", "U"))
        return FastGRNN.from_matrices(config, W, U, t["b_z"], t["b_h"], t["w_out"], t["b_out"], float(t["zeta"]),
                                      float(t["nu"]))
    except InvalidInputError as exc:
        raise ModelSchemaError(f"{where}: {exc}") from None


_READERS = {files.FORMAT: _from_record, files.CRATE_FORMAT: CrateFastGRNN.from_record}


def load_model(path: files.PathArg) -> FastGRNN | CrateFastGRNN:
    """Load a model file of either format, fully validated before any model is built.

    Args:
        path: a str or path-like naming a ``.safetensors`` file.

    Returns:
        A :class:`FastGRNN` for tinydancer's format, a :class:`~tinydancer.model.CrateFastGRNN` for the
        crate's.

    Raises:
        ModelFileError: the path is not a readable regular file within the size cap.
        ModelFormatError: the container, format, version or checksum is wrong.
        ModelSchemaError: the config, metadata, tensor names, dtypes or shapes are wrong.
        ModelValueError: a weight is NaN or infinite.
    """
    return model_from_record(files.load_file(path))


def model_from_record(record: files.ModelRecord) -> FastGRNN | CrateFastGRNN:
    """The model of a record read by :func:`~tinydancer.model.files.load_file`, of either format (see
    :func:`load_model`)."""
    return _READERS[record.format](record)
