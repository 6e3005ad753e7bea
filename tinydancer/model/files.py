"""Model files: safetensors bytes turned into a neutral :class:`ModelRecord` (tensors and metadata) and back.

This module knows the container, not the models: it never imports a model class. It reads and writes two
formats. tinydancer's own (``format`` = ``tinydancer-fastgrnn``) carries a ``format_version`` and a
``checksum`` of the tensor data, both written and checked here; files written by the Rust crate
(``format`` = ``ruvector-tiny-dancer-fastgrnn-v1``) carry neither. The README documents every key.

Loading checks, before any model sees the tensors: that the path is a regular file within the size cap; the
header (length, JSON, no duplicate names, tensor count cap, only F32/I8/I32 tensors); the format, and for
tinydancer's format its version and the checksum. :meth:`ModelRecord.check_tensors` then checks the exact
set of tensors against a model's spec (dtypes, shapes, finite values). Every failure raises a
:class:`~tinydancer.errors.ModelError` subclass. Saving writes a temporary file in the target folder, fsyncs
it, and renames it into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from tinydancer.atomic_files import write_atomic
from tinydancer.errors import InvalidInputError, ModelFileError, ModelFormatError, ModelSchemaError, ModelValueError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CRATE_FORMAT",
    "FORMATS",
    "MAX_FILE_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_TENSORS",
    "ModelRecord",
    "checksum",
    "load",
    "load_file",
    "save",
    "save_file",
]

FORMAT = "tinydancer-fastgrnn"
FORMAT_VERSION = 1
CRATE_FORMAT = "ruvector-tiny-dancer-fastgrnn-v1"
FORMATS = (FORMAT, CRATE_FORMAT)
MAX_FILE_BYTES = 256 << 20
MAX_HEADER_BYTES = 1 << 20
MAX_TENSORS = 64

_DTYPES = {"F32": np.float32, "I8": np.int8, "I32": np.int32}
_OWN_KEYS = ("format", "format_version", "checksum")  # metadata written and checked here, not by the models

PathArg = str | PathLike[str]


@dataclass(frozen=True)
class ModelRecord:
    """The content of a model file, whatever the model.

    Args:
        format: :data:`FORMAT` or :data:`CRATE_FORMAT`.
        metadata: the model's own ``__metadata__`` entries (strings); ``format``, ``format_version`` and
            ``checksum`` belong to this module and are not in it.
        tensors: the tensors by name.
        where: the file's name, for error messages.
    """

    format: str
    metadata: Mapping[str, str]
    tensors: Mapping[str, np.ndarray]
    where: str = "<model>"

    def json(self, key: str) -> Any:
        """The metadata entry ``key``, parsed as JSON.

        Raises:
            ModelSchemaError: the entry is missing or is not valid JSON.
        """
        if key not in self.metadata:
            raise ModelSchemaError(f"{self.where}: __metadata__ has no {key!r}")
        try:
            return json.loads(self.metadata[key])
        except json.JSONDecodeError as exc:
            raise ModelSchemaError(f"{self.where}: __metadata__[{key!r}] is not valid JSON ({exc})") from None

    def check_tensors(self, spec: Mapping[str, tuple[type, tuple[int, ...]]]) -> None:
        """Check that the record holds exactly the tensors of ``spec``, each of its dtype and shape, finite.

        Args:
            spec: tensor name -> (dtype, shape); -1 in a shape allows any length.

        Raises:
            ModelSchemaError: a tensor is missing or extra, or has another dtype or shape.
            ModelValueError: a float tensor holds NaN or an infinity.
        """
        tensors, where = self.tensors, self.where
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


def checksum(tensors: Mapping[str, np.ndarray]) -> str:
    """``sha256:`` of every tensor's name, dtype, shape and bytes, in name order (the ``checksum`` key)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}|{t.dtype.str}|{t.shape}|".encode())
        digest.update(t.tobytes())
    return "sha256:" + digest.hexdigest()


# --------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------


def load_file(path: PathArg) -> ModelRecord:
    """Read and check the model file at ``path``.

    Args:
        path: a str or path-like naming a regular file.

    Returns:
        The file's record.

    Raises:
        ModelFileError: not a path, no such file, not a regular file, unreadable, over the size cap.
        ModelFormatError, ModelSchemaError: see :func:`load`.
    """
    where = os.fspath(path) if isinstance(path, (str, PathLike)) else repr(path)
    return load(_read_file(path), where)


def load(data: bytes, where: str = "<bytes>") -> ModelRecord:
    """Parse and check the bytes of a model file.

    Args:
        data: the whole file.
        where: the file's name, for error messages.

    Returns:
        The file's record.

    Raises:
        ModelFormatError: truncated, a header over the cap or not a JSON object, a name twice, metadata that
            is not strings, too many tensors, not safetensors, an unknown format, a newer format version,
            data that fails the checksum.
        ModelSchemaError: a dtype other than F32/I8/I32, or no checksum in tinydancer's format.
    """
    metadata, tensors = _parse(data, where)
    fmt = metadata.get("format")
    if fmt not in FORMATS:
        raise ModelFormatError(f"{where}: unknown model format {fmt!r} (expected {FORMAT!r} or {CRATE_FORMAT!r})")
    if fmt == FORMAT:
        _check_version_and_checksum(metadata, tensors, where)
    own = {key: value for key, value in metadata.items() if key not in _OWN_KEYS}
    return ModelRecord(fmt, own, tensors, where)


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
    """(metadata, tensors) of a safetensors file, after the header checks of :func:`load`."""
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


def _check_version_and_checksum(metadata: Mapping[str, str], tensors: Mapping[str, np.ndarray], where: str) -> None:
    version = metadata.get("format_version", "")
    if not version.isdigit():
        raise ModelFormatError(f"{where}: format_version {version!r} is not a whole number")
    if int(version) > FORMAT_VERSION:
        raise ModelFormatError(
            f"{where}: written in format version {version}; this tinydancer reads up to {FORMAT_VERSION} (upgrade it)")
    if "checksum" not in metadata:
        raise ModelSchemaError(f"{where}: __metadata__ has no 'checksum'")
    if metadata["checksum"] != checksum(tensors):
        raise ModelFormatError(f"{where}: the tensor data does not match its checksum (the file is damaged)")


# --------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------


def save(record: ModelRecord) -> bytes:
    """The bytes of a model file holding ``record``; tinydancer's format gets its version and checksum.

    Args:
        record: what to write (``where`` is ignored).

    Returns:
        The safetensors bytes.

    Raises:
        InvalidInputError: an unknown format, or metadata naming a key this module writes.
    """
    if record.format not in FORMATS:
        raise InvalidInputError(f"unknown model format {record.format!r} (expected {FORMAT!r} or {CRATE_FORMAT!r})")
    reserved = sorted(set(record.metadata) & set(_OWN_KEYS))
    if reserved:
        raise InvalidInputError(f"metadata keys {reserved} are written by tinydancer.model.files itself")
    tensors = {name: np.array(t, order="C") for name, t in record.tensors.items()}
    metadata = {"format": record.format}
    if record.format == FORMAT:
        metadata["format_version"] = str(FORMAT_VERSION)
    metadata.update(record.metadata)
    if record.format == FORMAT:
        metadata["checksum"] = checksum(tensors)
    return _st_save(tensors, metadata=metadata)


def save_file(record: ModelRecord, path: PathArg) -> None:
    """Write ``record`` to ``path`` atomically (see :func:`save` and
    :func:`tinydancer.atomic_files.write_atomic`): a symlink's target is written; a path that is not a
    regular file (a FIFO, a device, a folder) is refused and left untouched.

    Raises:
        InvalidInputError: see :func:`save`.
        ModelFileError: the path is not a regular file, or the folder is missing or cannot be written; the
            target is then left as it was.
    """
    write_atomic(path, save(record), ModelFileError)
