"""What a query model learns: each training query's outcome as a class, and the two numbers routing reads
from the predicted class probabilities.

Three kinds of outcome, each with its classes (the model's softmax outputs, in this order):

``labels`` (1 where the lightweight answer was good enough)
    ``good_enough``, ``not_good_enough``. ``score`` = P(good enough); ``gain`` = P(not good enough), an
    upper bound of the strong model's gain (the labels cannot tell where the weak model was better).
``binary`` (each model right or wrong: ``strong``, ``weak`` booleans)
    ``both_right``, ``strong_only``, ``weak_only``, ``both_wrong``. The lightweight answer is good enough
    unless only the strong model was right: ``score`` = 1 - P(strong only); ``gain`` = P(strong only) -
    P(weak only), the expected quality gain of the strong model for 0/1 quality.
``graded`` (scores such as MT-Bench's 1-10)
    ``strong_better``, ``tie``, ``weak_better``. ``score`` = 1 - P(strong better); ``gain`` = P(strong
    better) - P(weak better), the gain in the sign of the difference (its size is not learnt).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from tinydancer.errors import InvalidInputError

__all__ = ["KINDS", "CLASSES", "READ", "encode", "good_enough", "score_and_gain", "as_outcomes"]

CLASSES: dict[str, tuple[str, ...]] = {
    "labels": ("good_enough", "not_good_enough"),
    "binary": ("both_right", "strong_only", "weak_only", "both_wrong"),
    "graded": ("strong_better", "tie", "weak_better"),
}
KINDS = tuple(CLASSES)
# per kind: (the class whose probability is P(not good enough), the class added in the gain, the class
# subtracted, or None)

READ: dict[str, tuple[int, int, int | None]] = {"labels": (1, 1, None), "binary": (1, 1, 2), "graded": (0, 0, 2)}


def _column(value: Any, name: str, n: int | None) -> NDArray[np.float64]:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a 1-D array of numbers") from None
    if a.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise InvalidInputError(f"{name} must have one entry per query ({n}), got {a.shape[0]}")
    if not np.isfinite(a).all():
        raise InvalidInputError(f"{name} holds NaN or infinite values")
    return a


def _is_binary(a: NDArray[np.float64]) -> bool:
    return bool(np.isin(a, (0.0, 1.0)).all())


def as_outcomes(labels: Any, strong: Any, weak: Any, n: int) -> tuple[str, NDArray[np.float64], NDArray[np.float64]]:
    """The outcome kind and the checked columns (labels as the first column and the second unused, or
    strong and weak).

    Raises:
        InvalidInputError: neither or both of ``labels`` and ``strong``/``weak`` given, a length that is
            not ``n``, labels that are not 0/1, or non-finite values.
    """
    if labels is not None:
        if strong is not None or weak is not None:
            raise InvalidInputError("give either labels or strong and weak, not both")
        y = _column(labels, "labels", n)
        if not _is_binary(y):
            raise InvalidInputError("labels must be 0 or 1 (1 where the lightweight answer was good enough)")
        return "labels", y, y
    if strong is None or weak is None:
        raise InvalidInputError("give labels, or both strong and weak (each model's per-query quality)")
    s, w = _column(strong, "strong", n), _column(weak, "weak", n)
    return ("binary" if _is_binary(s) and _is_binary(w) else "graded"), s, w


def encode(kind: str, first: NDArray[np.float64], second: NDArray[np.float64]) -> NDArray[np.intp]:
    """Each query's class index for ``kind`` (see the module docstring)."""
    if kind == "labels":
        return (first == 0.0).astype(np.intp)
    if kind == "binary":
        return ((1.0 - first) * 2 + (1.0 - second)).astype(np.intp)
    return np.where(first > second, 0, np.where(first < second, 2, 1)).astype(np.intp)


def good_enough(kind: str, first: NDArray[np.float64], second: NDArray[np.float64]) -> NDArray[np.float64]:
    """1.0 where the lightweight answer was good enough (as good as the strong one), else 0.0."""
    if kind == "labels":
        return first.copy()
    return (second >= first).astype(np.float64)


def score_and_gain(kind: str, probabilities: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``score`` (P(lightweight good enough)) and ``gain`` from class probabilities of shape (..., classes)."""
    bad, plus, minus = READ[kind]
    p_bad = probabilities[..., bad]
    gain = p_bad if minus is None else probabilities[..., plus] - probabilities[..., minus]
    return (1.0 - p_bad).astype(np.float32), np.asarray(gain, dtype=np.float32)
