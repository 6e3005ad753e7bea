"""Model files: safetensors written and read through the ``safetensors`` package, then validated here.

tinydancer's own format (``format`` = ``tinydancer-fastgrnn``, ``format_version`` = 1) stores W and U in their
kernel form; the README documents every tensor and metadata key. Files written by the Rust crate
(``format`` = ``ruvector-tiny-dancer-fastgrnn-v1``) load as :class:`CrateFastGRNN`, the crate's GRU-like cell.

Loading checks, before any model is built: that the path is a regular file within the size cap; the header
(length, JSON, no duplicate names, tensor count cap, only F32/I8/I32 tensors); the format and its version;
the checksum of the tensor data; the config; the exact set of tensor names with their dtypes and shapes;
finite values; valid CSR structures. Every failure raises a :class:`~tinydancer.errors.ModelError` subclass.
Saving writes a temporary file in the target folder, fsyncs it, and renames it into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import tempfile
from collections.abc import Mapping
from os import PathLike
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from tinydancer.errors import (
    ConfigError,
    InvalidInputError,
    ModelFileError,
    ModelFormatError,
    ModelSchemaError,
    ModelValueError,
)
from tinydancer.kernels import KernelMatrix
from tinydancer.model import FastGRNN, FastGRNNConfig

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CRATE_FORMAT",
    "MAX_FILE_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_TENSORS",
    "CrateFastGRNN",
    "load_model",
    "save_fastgrnn",
    "write_atomic",
]

FORMAT = "tinydancer-fastgrnn"
FORMAT_VERSION = 1
CRATE_FORMAT = "ruvector-tiny-dancer-fastgrnn-v1"
MAX_FILE_BYTES = 256 << 20
MAX_HEADER_BYTES = 1 << 20
MAX_TENSORS = 64

_DTYPES = {"F32": np.float32, "I8": np.int8, "I32": np.int32}
_KINDS = ("dense", "low_rank", "int8", "sparse", "sparse_int8")

PathArg = str | PathLike[str]


# --------------------------------------------------------------------------------------------------------
# Reading and checking the container
# --------------------------------------------------------------------------------------------------------


def _read_file(path: PathArg) -> bytes:
    """The file's bytes, after checking that it is a regular file within the size cap."""
    try:
        fspath = os.fspath(path)
    except TypeError:
        raise ModelFileError(f"model path must be a string or path, got {type(path).__name__}") from None
    try:
        info = os.stat(fspath)
    except FileNotFoundError:
        raise ModelFileError(f"{fspath}: no such file") from None
    except OSError as exc:
        raise ModelFileError(f"{fspath}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ModelFileError(f"{fspath}: is {what}; a model is a .safetensors file")
    if info.st_size > MAX_FILE_BYTES:
        raise ModelFileError(f"{fspath}: {info.st_size} bytes is over the {MAX_FILE_BYTES}-byte cap for a model")
    try:
        # O_NONBLOCK: if the path is swapped for a FIFO after the check, opening it does not hang.
        fd = os.open(fspath, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ModelFileError(f"{fspath}: cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ModelFileError(f"{fspath}: is not a regular file")
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ModelFileError(f"{fspath}: over the {MAX_FILE_BYTES}-byte cap for a model")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ModelFormatError(f"the header names {key!r} twice")
        seen[key] = value
    return seen


def _parse(data: bytes, where: str) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, tensors) of a safetensors file, with the container checks of the module docstring."""
    if len(data) < 8:
        raise ModelFormatError(f"{where}: {len(data)} bytes is too short for a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES:
        raise ModelFormatError(f"{where}: header of {header_len} bytes is over the {MAX_HEADER_BYTES}-byte cap")
    if 8 + header_len > len(data):
        raise ModelFormatError(f"{where}: truncated (the header says {header_len} bytes, the file has {len(data) - 8})")
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{where}: the header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{where}: the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelFormatError(f"{where}: __metadata__ must map names to strings")
    if len(header) > MAX_TENSORS:
        raise ModelFormatError(f"{where}: {len(header)} tensors is over the cap of {MAX_TENSORS}")
    for name, entry in header.items():
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if dtype not in _DTYPES:
            raise ModelSchemaError(f"{where}: tensor {name!r} has dtype {dtype}; model files hold only F32, I8 and I32")
    try:
        tensors = _st_load(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise ModelFormatError(f"{where}: not a valid safetensors file ({exc})") from None
    return metadata, tensors


def _checksum(tensors: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}|{t.dtype.str}|{t.shape}|".encode())
        digest.update(t.tobytes())
    return "sha256:" + digest.hexdigest()


def _json(metadata: Mapping[str, str], key: str, where: str) -> Any:
    if key not in metadata:
        raise ModelSchemaError(f"{where}: __metadata__ has no {key!r}")
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise ModelSchemaError(f"{where}: __metadata__[{key!r}] is not valid JSON ({exc})") from None


def _expect(tensors: Mapping[str, np.ndarray], spec: Mapping[str, tuple[type, tuple[int, ...]]], where: str) -> None:
    """Exactly the tensors of ``spec``, each with its dtype and shape (-1: any length), all finite."""
    missing, extra = sorted(set(spec) - set(tensors)), sorted(set(tensors) - set(spec))
    if missing or extra:
        raise ModelSchemaError(f"{where}: missing tensors {missing}, unexpected tensors {extra}")
    for name, (dtype, shape) in spec.items():
        t = tensors[name]
        if t.dtype != dtype:
            raise ModelSchemaError(f"{where}: tensor {name!r} is {t.dtype}, expected {np.dtype(dtype)}")
        if len(t.shape) != len(shape) or any(want not in (-1, got) for want, got in zip(shape, t.shape)):
            raise ModelSchemaError(f"{where}: tensor {name!r} has shape {list(t.shape)}, expected {list(shape)}")
        if t.dtype.kind == "f" and not np.all(np.isfinite(t)):
            raise ModelValueError(f"{where}: tensor {name!r} holds NaN or infinite values")


# --------------------------------------------------------------------------------------------------------
# tinydancer's format
# --------------------------------------------------------------------------------------------------------


def _matrix_spec(name: str, kind: str, rows: int, cols: int, rank: int | None) -> dict[str, tuple[type, tuple]]:
    f32, i8, i32 = np.float32, np.int8, np.int32
    if kind == "dense":
        return {name: (f32, (rows, cols))}
    if kind == "low_rank":
        return {f"{name}.left": (f32, (rows, rank)), f"{name}.right": (f32, (rank, cols))}
    if kind == "int8":
        return {f"{name}.values": (i8, (rows, cols)), f"{name}.scales": (f32, (rows,))}
    sparse = {f"{name}.values": (f32 if kind == "sparse" else i8, (-1,)), f"{name}.indices": (i32, (-1,)),
              f"{name}.indptr": (i32, (rows + 1,))}
    if kind == "sparse_int8":
        sparse[f"{name}.scales"] = (f32, (rows,))
    return sparse


def _matrix_tensors(name: str, m: KernelMatrix) -> dict[str, np.ndarray]:
    arrays = m.arrays()
    if m.kind == "dense":
        return {name: arrays[0]}
    if m.kind == "low_rank":
        return {f"{name}.left": arrays[0], f"{name}.right": arrays[1]}
    if m.kind == "int8":
        return {f"{name}.values": arrays[0], f"{name}.scales": arrays[1]}
    out = {f"{name}.values": arrays[0], f"{name}.indices": arrays[1], f"{name}.indptr": arrays[2]}
    if m.kind == "sparse_int8":
        out[f"{name}.scales"] = arrays[3]
    return out


def _build_matrix(name: str, kind: str, shape: tuple[int, int], t: Mapping[str, np.ndarray]) -> KernelMatrix:
    if kind == "dense":
        return KernelMatrix.dense(t[name])
    if kind == "low_rank":
        return KernelMatrix.low_rank(t[f"{name}.left"], t[f"{name}.right"])
    if kind == "int8":
        return KernelMatrix.int8(t[f"{name}.values"], t[f"{name}.scales"])
    if kind == "sparse_int8":
        return KernelMatrix.sparse_int8(t[f"{name}.values"], t[f"{name}.indices"], t[f"{name}.indptr"],
                                        t[f"{name}.scales"], shape)
    return KernelMatrix.sparse(t[f"{name}.values"], t[f"{name}.indices"], t[f"{name}.indptr"], shape)


def save_fastgrnn(model: FastGRNN, path: PathArg) -> None:
    """Write ``model`` to ``path`` atomically (temporary file, fsync, rename). Raises ModelFileError when the
    folder cannot be written; the target is then left as it was."""
    cell = model.cell
    tensors: dict[str, np.ndarray] = {}
    tensors.update(_matrix_tensors("W", cell.W))
    tensors.update(_matrix_tensors("U", cell.U))
    tensors.update(b_z=cell.b_z, b_h=cell.b_h, w_out=cell.w_out, b_out=cell.b_out,
                   zeta=np.array(cell.zeta, np.float32), nu=np.array(cell.nu, np.float32))
    tensors = {k: np.array(v, order="C") for k, v in tensors.items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "storage": json.dumps({"W": cell.W.kind, "U": cell.U.kind}, sort_keys=True),
        "checksum": _checksum(tensors),
    }
    write_atomic(path, _st_save(tensors, metadata=metadata))


def _umask() -> int:
    """The process umask, read without changing it where Linux reports it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write_atomic(path: PathArg, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and rename. A file that
    is replaced keeps its permissions; a new one gets the usual 0o666 less the umask."""
    target = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=folder)
    except OSError as exc:
        raise ModelFileError(f"{target}: cannot write into {folder} ({exc.strerror})") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ModelFileError(f"{target}: cannot be written ({exc.strerror})") from None
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _load_tinydancer(metadata: Mapping[str, str], tensors: Mapping[str, np.ndarray], where: str) -> FastGRNN:
    version = metadata.get("format_version", "")
    if not version.isdigit():
        raise ModelFormatError(f"{where}: format_version {version!r} is not a whole number")
    if int(version) > FORMAT_VERSION:
        raise ModelFormatError(
            f"{where}: written in format version {version}; this tinydancer reads up to {FORMAT_VERSION} (upgrade it)")
    if "checksum" not in metadata:
        raise ModelSchemaError(f"{where}: __metadata__ has no 'checksum'")
    if metadata["checksum"] != _checksum(tensors):
        raise ModelFormatError(f"{where}: the tensor data does not match its checksum (the file is damaged)")
    try:
        config = FastGRNNConfig.from_dict(_json(metadata, "config", where))
    except (ConfigError, TypeError) as exc:
        raise ModelSchemaError(f"{where}: bad config ({exc})") from None
    storage = _json(metadata, "storage", where)
    if not isinstance(storage, dict) or set(storage) != {"W", "U"} or not all(k in _KINDS for k in storage.values()):
        raise ModelSchemaError(f"{where}: storage must give W and U each one of {list(_KINDS)}, got {storage!r}")
    h, i, o = config.hidden_dim, config.input_dim, config.output_dim
    ranks = {"W": config.w_rank, "U": config.u_rank}
    for name in ("W", "U"):
        if (storage[name] == "low_rank") != (ranks[name] is not None):
            raise ModelSchemaError(f"{where}: {name} is stored {storage[name]} but the config's rank is {ranks[name]}")
    spec: dict[str, tuple[type, tuple]] = {}
    spec.update(_matrix_spec("W", storage["W"], h, i, config.w_rank))
    spec.update(_matrix_spec("U", storage["U"], h, h, config.u_rank))
    spec.update(b_z=(np.float32, (h,)), b_h=(np.float32, (h,)), w_out=(np.float32, (o, h)),
                b_out=(np.float32, (o,)), zeta=(np.float32, ()), nu=(np.float32, ()))
    _expect(tensors, spec, where)
    try:
        W = _build_matrix("W", storage["W"], (h, i), tensors)
        U = _build_matrix("U", storage["U"], (h, h), tensors)
        return FastGRNN.from_matrices(config, W, U, tensors["b_z"], tensors["b_h"], tensors["w_out"],
                                      tensors["b_out"], float(tensors["zeta"]), float(tensors["nu"]))
    except InvalidInputError as exc:
        raise ModelSchemaError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------------------------------------
# The crate's format
# --------------------------------------------------------------------------------------------------------


class CrateFastGRNN:
    """The GRU-like cell of the Rust crate ``ruvector-tiny-dancer-core``, so its users can bring a model::

        r = sigmoid(nu (W_r x + b_r));  u = sigmoid(nu (W_u x + b_u))
        c = tanh(zeta (W_c x + W_rec (r * h0) + b_c));  h = u * h0 + (1 - u) * c
        p = sigmoid(W_out h + b_out)[0]

    with h0 = 0 unless given. Computed in float64 with NumPy: this class is for carrying models over, not
    for the hot path (train a :class:`~tinydancer.model.FastGRNN` on its outputs for that).
    """

    TENSORS = ("w_reset", "w_update", "w_candidate", "w_recurrent", "w_output",
               "b_reset", "b_update", "b_candidate", "b_output")

    def __init__(self, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> None:
        self.config = dict(config)
        self.input_dim = int(self.config["input_dim"])
        self.hidden_dim = int(self.config["hidden_dim"])
        self.output_dim = int(self.config["output_dim"])
        self.nu = float(self.config["nu"])
        self.zeta = float(self.config["zeta"])
        self._t = {name: np.array(tensors[name], dtype=np.float64) for name in self.TENSORS}
        for t in self._t.values():
            t.setflags(write=False)

    def tensors(self) -> dict[str, np.ndarray]:
        """The crate's tensors as float32 copies, by the crate's names."""
        return {name: t.astype(np.float32) for name, t in self._t.items()}

    def forward_batch(self, X: Any, h0: Any = None) -> np.ndarray:
        """Probabilities for X of shape (B, input_dim), as float32 (B,)."""
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise InvalidInputError(f"X must have shape (batch, {self.input_dim}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise InvalidInputError("X holds NaN or infinite values")
        h = np.zeros((x.shape[0], self.hidden_dim)) if h0 is None else np.broadcast_to(
            np.asarray(h0, dtype=np.float64), (x.shape[0], self.hidden_dim))
        t = self._t
        with np.errstate(over="ignore"):
            r = _sigmoid(self.nu * (x @ t["w_reset"].T + t["b_reset"]))
            u = _sigmoid(self.nu * (x @ t["w_update"].T + t["b_update"]))
            c = np.tanh(self.zeta * (x @ t["w_candidate"].T + (r * h) @ t["w_recurrent"].T + t["b_candidate"]))
            h = u * h + (1.0 - u) * c
            out = h @ t["w_output"].T + t["b_output"]
        return _sigmoid(out[:, 0]).astype(np.float32)

    def forward(self, x: Any, h0: Any = None) -> float:
        """The probability for one input vector of length input_dim."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise InvalidInputError(f"x must be a vector of length {self.input_dim}, got shape {x.shape}")
        return float(self.forward_batch(x[None, :], h0)[0])

    def save(self, path: PathArg) -> None:
        """Write the model back in the crate's format (atomically)."""
        metadata = {"format": CRATE_FORMAT, "config": json.dumps(self.config)}
        write_atomic(path, _st_save({k: np.array(v, order="C") for k, v in self.tensors().items()},
                                    metadata=metadata))

    def __repr__(self) -> str:
        return f"CrateFastGRNN(input_dim={self.input_dim}, hidden_dim={self.hidden_dim}, output_dim={self.output_dim})"


def _sigmoid(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-v))


def _load_crate(metadata: Mapping[str, str], tensors: Mapping[str, np.ndarray], where: str) -> CrateFastGRNN:
    config = _json(metadata, "config", where)
    if not isinstance(config, dict):
        raise ModelSchemaError(f"{where}: the crate config is not a JSON object")
    dims = {}
    for key in ("input_dim", "hidden_dim", "output_dim"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 16:
            raise ModelSchemaError(f"{where}: config {key} must be a positive integer, got {value!r}")
        dims[key] = value
    for key in ("nu", "zeta"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ModelSchemaError(f"{where}: config {key} must be a finite number, got {value!r}")
    h, i, o = dims["hidden_dim"], dims["input_dim"], dims["output_dim"]
    f32 = np.float32
    _expect(tensors, {"w_reset": (f32, (h, i)), "w_update": (f32, (h, i)), "w_candidate": (f32, (h, i)),
                      "w_recurrent": (f32, (h, h)), "w_output": (f32, (o, h)), "b_reset": (f32, (h,)),
                      "b_update": (f32, (h,)), "b_candidate": (f32, (h,)), "b_output": (f32, (o,))}, where)
    return CrateFastGRNN(config, tensors)


# --------------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------------


def load_model(path: PathArg) -> FastGRNN | CrateFastGRNN:
    """Load a model file of either format, fully validated (see the module docstring)."""
    where = os.fspath(path) if isinstance(path, (str, PathLike)) else repr(path)
    metadata, tensors = _parse(_read_file(path), where)
    fmt = metadata.get("format")
    if fmt == FORMAT:
        return _load_tinydancer(metadata, tensors, where)
    if fmt == CRATE_FORMAT:
        return _load_crate(metadata, tensors, where)
    raise ModelFormatError(f"{where}: unknown model format {fmt!r} (expected {FORMAT!r} or {CRATE_FORMAT!r})")

