"""Training data files (what ``tinydancer train`` reads): NumPy ``.npz`` archives and CSV tables.

* ``.npz``: ``X`` (N, F) or (N, T, F) features, ``y`` (N,) labels, optionally ``soft_targets`` (N,) teacher
  probabilities, and ``X_val`` / ``y_val`` for a fixed validation set.
* ``.csv``: a header row, one example per row; the label column (``label`` unless told otherwise), an
  optional ``soft_target`` column, and every other column a feature, in order.

Features of several timesteps are stored flat (T * F columns) and reshaped to (N, T, F).
"""

from __future__ import annotations

import csv
import os
import zipfile
import zlib
from dataclasses import dataclass
from os import PathLike

import numpy as np

from tinydancer.errors import InvalidInputError

__all__ = ["TrainingData", "load_training_data"]

SOFT_COLUMN = "soft_target"


@dataclass(frozen=True)
class TrainingData:
    """Features, labels and the optional teacher targets and validation set read from a file.

    Attributes:
        X: features, (N, F) or (N, T, F), float32.
        y: (N,) labels, float32.
        soft_targets: (N,) teacher probabilities, or ``None``.
        X_val, y_val: a fixed validation set, or ``None`` (``.npz`` only).
        feature_names: the CSV feature columns, in order; empty for ``.npz``.
    """

    X: np.ndarray
    y: np.ndarray
    soft_targets: np.ndarray | None = None
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()


def _shape_steps(X: np.ndarray, timesteps: int, name: str) -> np.ndarray:
    """``X`` as (N, F) for one timestep, else (N, timesteps, F), reshaping flat rows."""
    if X.ndim == 3:
        if X.shape[1] != timesteps:
            raise InvalidInputError(f"{name} has {X.shape[1]} timesteps, expected {timesteps}")
        return X
    if X.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-D (examples x features), got shape {X.shape}")
    if timesteps == 1:
        return X
    if X.shape[1] % timesteps:
        raise InvalidInputError(f"{name} has {X.shape[1]} columns, not a multiple of {timesteps} timesteps")
    return X.reshape(X.shape[0], timesteps, X.shape[1] // timesteps)


def _floats(values: np.ndarray, name: str) -> np.ndarray:
    """Numeric ``values`` as finite float32."""
    if values.dtype.kind not in "fiub":
        raise InvalidInputError(f"{name} must hold numbers, got dtype {values.dtype}")
    out = values.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise InvalidInputError(f"{name} holds NaN or infinite values")
    return out


def load_training_data(path: str | PathLike[str], *, label_column: str = "label",
                       timesteps: int = 1) -> TrainingData:
    """Read a ``.npz`` or ``.csv`` training file (see the module docstring).

    Args:
        path: the file; its suffix (``.npz`` or ``.csv``) says how to read it.
        label_column: the CSV column holding the labels.
        timesteps: timesteps per example; flat features are reshaped to (N, timesteps, F).

    Returns:
        The arrays, as float32, ready for :meth:`Trainer.fit`.

    Raises:
        InvalidInputError: the file is missing, unreadable, of another kind, or its contents do not fit.
    """
    fspath = os.fspath(path)
    if not os.path.isfile(fspath):
        raise InvalidInputError(f"{fspath}: no such file")
    if fspath.endswith(".npz"):
        return _load_npz(fspath, timesteps)
    if fspath.endswith(".csv"):
        return _load_csv(fspath, label_column, timesteps)
    raise InvalidInputError(f"{fspath}: training data must be a .npz or .csv file")


def _load_npz(path: str, timesteps: int) -> TrainingData:
    """Read an ``.npz`` archive: ``X`` and ``y``, optionally ``soft_targets`` and ``X_val`` with ``y_val``."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot be read ({exc.strerror})") from None
    if magic != b"PK":  # np.load would take anything else for a .npy array or a pickle
        raise InvalidInputError(f"{path}: not a .npz archive (a .npz file is a zip archive of NumPy arrays)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        # a damaged archive fails with any of these, depending on where it is damaged
        raise InvalidInputError(f"{path}: not a readable .npz archive ({exc})") from None
    for name in ("X", "y"):
        if name not in arrays:
            raise InvalidInputError(f"{path}: the archive has no {name!r} array (it has {sorted(arrays)})")
    if ("X_val" in arrays) != ("y_val" in arrays):
        raise InvalidInputError(f"{path}: X_val and y_val come together")
    X = _shape_steps(_floats(arrays["X"], "X"), timesteps, "X")
    soft = _floats(arrays["soft_targets"], "soft_targets") if "soft_targets" in arrays else None
    X_val = _shape_steps(_floats(arrays["X_val"], "X_val"), timesteps, "X_val") if "X_val" in arrays else None
    y_val = _floats(arrays["y_val"], "y_val") if "y_val" in arrays else None
    return TrainingData(X, _floats(arrays["y"], "y"), soft, X_val, y_val)


def _load_csv(path: str, label_column: str, timesteps: int) -> TrainingData:
    """Read a CSV table: the label column, an optional soft-target column, features in the others."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError(f"{path}: cannot be read as CSV ({exc})") from None
    if len(rows) < 2:
        raise InvalidInputError(f"{path}: needs a header row and at least one example")
    header = [name.strip() for name in rows[0]]
    if label_column not in header:
        raise InvalidInputError(f"{path}: no {label_column!r} column (columns: {header})")
    if len(set(header)) != len(header):
        raise InvalidInputError(f"{path}: the header names a column twice")
    try:
        table = np.array([[float(v) for v in row] for row in rows[1:] if row], dtype=np.float64)
    except ValueError as exc:
        raise InvalidInputError(f"{path}: every value must be a number ({exc})") from None
    if table.ndim != 2 or table.shape[1] != len(header):
        raise InvalidInputError(f"{path}: every row must have {len(header)} values")
    label_at = header.index(label_column)
    soft_at = header.index(SOFT_COLUMN) if SOFT_COLUMN in header else None
    feature_at = [i for i in range(len(header)) if i not in (label_at, soft_at)]
    if not feature_at:
        raise InvalidInputError(f"{path}: no feature columns")
    X = _shape_steps(_floats(table[:, feature_at], "features"), timesteps, "features")
    soft = _floats(table[:, soft_at], SOFT_COLUMN) if soft_at is not None else None
    return TrainingData(X, _floats(table[:, label_at], label_column), soft,
                        feature_names=tuple(header[i] for i in feature_at))
