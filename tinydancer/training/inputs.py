"""Checks of what training and evaluation are given: the model, features, labels, teacher targets, and the
split into training and validation data.

Every array is checked once here, before any training starts, and comes out as float64 (labels of a
softmax model as integer classes); each problem raises :class:`~tinydancer.errors.InvalidInputError` with a
message that names the argument. Data that trains but cannot teach much (every label the same) is not an
error: :func:`one_class_message` says so, and the trainer warns with :class:`TrainingDataWarning`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tinydancer import checks
from tinydancer.errors import InvalidInputError
from tinydancer.model import FastGRNN, FastGRNNConfig

__all__ = [
    "MAX_FEATURE_MAGNITUDE",
    "MIN_TRAINING_EXAMPLES",
    "TrainingDataWarning",
    "PreparedData",
    "check_model",
    "as_inputs",
    "as_labels",
    "as_soft",
    "prepare",
    "one_class_message",
]

MAX_FEATURE_MAGNITUDE = 1e15
"""The largest feature magnitude training and evaluation accept. The model runs in float32 (largest value
3.4e38): the square of 1e15 is 1e30, so products and sums of squares over many features stay finite. A gate
saturates for inputs beyond about 20 anyway, so features this large need scaling, not a model."""

MIN_TRAINING_EXAMPLES = 2
"""The fewest examples training runs on (after the validation split): one example teaches nothing."""


_WORDING = "must be an array of real numbers"


class TrainingDataWarning(UserWarning):
    """The training data trains without error but cannot teach the model much (every label the same)."""


def check_model(model: Any) -> FastGRNN:
    """``model`` itself when it is a :class:`FastGRNN`.

    Raises:
        InvalidInputError: it is anything else.
    """
    if not isinstance(model, FastGRNN):
        raise InvalidInputError(f"model must be a tinydancer.model.FastGRNN, got {type(model).__name__}")
    return model


def as_inputs(X: Any, name: str, config: FastGRNNConfig) -> np.ndarray:
    """Model inputs as float64 (N, T, I).

    Args:
        X: (N, T, I), or (N, I) when the model's timesteps is 1.
        name: the argument's name, for messages.
        config: the model's configuration (timesteps and input_dim).

    Raises:
        InvalidInputError: missing, not real numbers, the wrong shape, empty, NaN/Inf, or a magnitude
            beyond :data:`MAX_FEATURE_MAGNITUDE`.
    """
    a = checks.real_array(X, name, finite=False, wording=_WORDING)
    steps, inputs = config.timesteps, config.input_dim
    expected = f"(N, {inputs})" if steps == 1 else f"(N, {steps}, {inputs})"
    if steps == 1 and a.ndim == 2:
        a = a[:, None, :]
    if a.ndim != 3 or a.shape[1:] != (steps, inputs):
        raise InvalidInputError(f"{name} must have shape {expected} for this model, got {np.shape(X)}")
    if a.shape[0] == 0:
        raise InvalidInputError(f"{name} is empty")
    checks.all_finite(a, name)
    peak = float(np.abs(a).max())
    if peak > MAX_FEATURE_MAGNITUDE:
        raise InvalidInputError(f"{name} holds values up to {peak:.3g} in magnitude; beyond "
                                f"{MAX_FEATURE_MAGNITUDE:g} features overflow float32 arithmetic: scale them")
    return a


def as_labels(y: Any, name: str, n: int, output_dim: int) -> np.ndarray:
    """Labels, one per example.

    Args:
        y: (n,) labels (an (n, 1) column is accepted for output_dim 1).
        name: the argument's name, for messages.
        n: the number of examples.
        output_dim: the model's output size.

    Returns:
        float64 labels in [0, 1] for output_dim 1, else intp classes in [0, output_dim).

    Raises:
        InvalidInputError: missing, the wrong shape, NaN/Inf, or out of range.
    """
    a = checks.real_array(y, name, finite=False, wording=_WORDING)
    if output_dim == 1 and a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.shape != (n,):
        raise InvalidInputError(f"{name} must have shape ({n},), one label per example, got {a.shape}")
    checks.all_finite(a, name)
    if output_dim == 1:
        if ((a < 0.0) | (a > 1.0)).any():
            raise InvalidInputError(f"{name} must hold labels in [0, 1]")
        return a
    if (a != np.round(a)).any() or ((a < 0) | (a >= output_dim)).any():
        raise InvalidInputError(f"{name} must hold integer classes in [0, {output_dim})")
    return a.astype(np.intp)


def as_soft(soft: Any, name: str, n: int, output_dim: int) -> np.ndarray:
    """Teacher probabilities, one entry per example.

    Args:
        soft: (n,) in [0, 1] for output_dim 1, else (n, output_dim) rows summing to 1 (within 1e-3).
        name: the argument's name, for messages.
        n: the number of examples.
        output_dim: the model's output size.

    Returns:
        float64 probabilities; rows of a softmax model renormalised to sum to exactly 1.

    Raises:
        InvalidInputError: the wrong shape, NaN/Inf, out of [0, 1], or rows not summing to 1.
    """
    a = checks.real_array(soft, name, required=False, finite=False, wording=_WORDING)
    if output_dim == 1 and a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    shape = (n,) if output_dim == 1 else (n, output_dim)
    if a.shape != shape:
        raise InvalidInputError(f"{name} must have shape {shape}, one entry per example, got {a.shape}")
    checks.all_finite(a, name)
    if ((a < 0.0) | (a > 1.0)).any():
        raise InvalidInputError(f"{name} must hold probabilities in [0, 1]")
    if output_dim > 1:
        sums = a.sum(axis=1)
        if (np.abs(sums - 1.0) > 1e-3).any():
            raise InvalidInputError(f"{name} rows must sum to 1")
        a = a / sums[:, None]
    return a


@dataclass
class PreparedData:
    """Checked training and validation arrays (see :func:`prepare`)."""

    X: np.ndarray
    y: np.ndarray
    soft: np.ndarray | None
    X_val: np.ndarray
    y_val: np.ndarray
    soft_val: np.ndarray | None


def prepare(config: FastGRNNConfig, split: float, rng: np.random.Generator, X: Any, y: Any, soft_targets: Any,
            X_val: Any, y_val: Any, soft_val: Any) -> PreparedData:
    """Check everything, then split off the validation set when none is given.

    Args:
        config: the model's configuration.
        split: the fraction of X to hold out when there is no ``X_val`` (rounded down; 0 examples means the
            training set doubles as the validation set).
        rng: draws the split (not used when ``X_val`` is given or nothing is held out).
        X, y, soft_targets: training data, as for :meth:`Trainer.fit`.
        X_val, y_val, soft_val: validation data, or all ``None``.

    Returns:
        The checked arrays.

    Raises:
        InvalidInputError: a bad array, fewer than :data:`MIN_TRAINING_EXAMPLES` examples left to train on,
            or validation arrays given without ``X_val`` or ``y_val``.
    """
    o = config.output_dim
    Xa = as_inputs(X, "X", config)
    ya = as_labels(y, "y", Xa.shape[0], o)
    sa = None if soft_targets is None else as_soft(soft_targets, "soft_targets", Xa.shape[0], o)
    if X_val is None:
        if y_val is not None:
            raise InvalidInputError("y_val was given without X_val")
        if soft_val is not None:
            raise InvalidInputError("soft_val was given without X_val")
        n_val = int(Xa.shape[0] * split)
        _enough(Xa.shape[0], n_val, split)
        if n_val == 0:
            return PreparedData(Xa, ya, sa, Xa, ya, sa)
        perm = rng.permutation(Xa.shape[0])
        tr, va = perm[n_val:], perm[:n_val]
        return PreparedData(Xa[tr], ya[tr], None if sa is None else sa[tr], Xa[va], ya[va],
                            None if sa is None else sa[va])
    if y_val is None:
        raise InvalidInputError("X_val was given without y_val")
    _enough(Xa.shape[0], 0, split)
    Xv = as_inputs(X_val, "X_val", config)
    yv = as_labels(y_val, "y_val", Xv.shape[0], o)
    sv = None if soft_val is None else as_soft(soft_val, "soft_val", Xv.shape[0], o)
    return PreparedData(Xa, ya, sa, Xv, yv, sv)


def _enough(n: int, n_val: int, split: float) -> None:
    """Raise InvalidInputError when fewer than MIN_TRAINING_EXAMPLES of ``n`` are left after ``n_val``
    are held out for validation."""
    if n - n_val >= MIN_TRAINING_EXAMPLES:
        return
    if n_val:
        raise InvalidInputError(f"X has {n} examples and validation_split {split:g} holds out {n_val}, leaving "
                                f"{n - n_val} to train on; training needs at least {MIN_TRAINING_EXAMPLES}")
    raise InvalidInputError(f"X has {n} example{'s' if n != 1 else ''}; training needs at least "
                            f"{MIN_TRAINING_EXAMPLES}")


def one_class_message(y: np.ndarray) -> str | None:
    """What to warn about when every training label in ``y`` (checked, non-empty) is the same, else None."""
    if y.size and bool(np.all(y == y.flat[0])):
        return (f"every training label is {y.flat[0]:g}: the model can only learn to predict that one "
                f"label")
    return None
