"""Checks of single values: configuration fields, options and per-object fields.

Arrays are checked by the compiled kernels (``tinydancer._kernels``); everything that is one number, one
flag or one count is checked here, once, with a message that names the value, as is the conversion of an
argument to a float64 array (:func:`real_array`). Each check takes the
exception class to raise, so a configuration field raises :class:`~tinydancer.errors.ConfigError` and a
request field :class:`~tinydancer.errors.InvalidInputError` with the same wording.
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from typing import Any

import numpy as np

from tinydancer.errors import ConfigError, InvalidInputError

__all__ = ["real", "integer", "flag", "unit_interval", "clock_reading", "real_array", "all_finite"]

_INT64_MAX = 2**63 - 1


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if high == math.inf:
        return f"be > {low:g}" if low_open else f"be >= {low:g}"
    if low == -math.inf:
        return f"be < {high:g}" if high_open else f"be <= {high:g}"
    return f"lie in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def real(value: Any, name: str, low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
         high_open: bool = False, error: type[Exception] = ConfigError) -> float:
    """``value`` as a finite float within the bounds, or raise ``error`` naming ``name``.

    Bools and non-numbers (strings, None, arrays) are refused; NumPy scalars are accepted.
    """
    kind = type(value)
    if kind is not float and kind is not int and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise error(f"{name} must be a real number, got {kind.__name__}")
    number = float(value)
    bounded = low > -math.inf or high < math.inf
    if not math.isfinite(number) and not (bounded and math.isnan(number)):
        raise error(f"{name} must be finite, got {value!r}")
    if not (low <= number <= high) or (low_open and number == low) or (high_open and number == high):
        raise error(f"{name} must {_interval(low, high, low_open, high_open)}, got {value!r}")
    return number


def unit_interval(value: Any, name: str, *, error: type[Exception] = InvalidInputError) -> float:
    """``value`` as a float in [0, 1], or raise ``error`` naming ``name``."""
    return real(value, name, 0.0, 1.0, error=error)


def integer(value: Any, name: str, low: int | None = None, high: int | None = _INT64_MAX, *,
            error: type[Exception] = ConfigError) -> int:
    """``value`` as an int within the bounds (by default the int64 range above ``low``), or raise ``error``.

    Bools and floats are refused (3.0 is not a count); NumPy integers are accepted.
    """
    if isinstance(value, bool):
        raise error(f"{name} must be an int, got bool")
    try:
        number = operator.index(value)
    except TypeError:
        raise error(f"{name} must be an int, got {type(value).__name__}") from None
    if low is not None and number < low:
        raise error(f"{name} must be an int >= {low}, got {number}")
    if high is not None and number > high:
        raise error(f"{name} must be an int <= {high}, got {number}")
    return number


def flag(value: Any, name: str, *, error: type[Exception] = ConfigError) -> bool:
    """``value`` itself when it is True or False, else raise ``error`` naming ``name``."""
    if not isinstance(value, bool):
        raise error(f"{name} must be True or False, got {value!r}")
    return value


def clock_reading(value: Any) -> float:
    """A clock's reading of unix seconds as a finite float, or raise :class:`~tinydancer.errors.ConfigError`
    (an injected clock that returns anything else is misconfigured)."""
    if type(value) is float and value - value == 0.0:  # a finite float, the usual case
        return value
    return real(value, "the clock's reading (unix seconds)", error=ConfigError)


def real_array(value: Any, name: str, *, required: bool = True, finite: bool = True,
               wording: str = "must hold real numbers", error: type[Exception] = InvalidInputError) -> np.ndarray:
    """``value`` as a float64 array of any shape, or raise ``error`` naming ``name``.

    None raises "is required" when ``required``; complex numbers and non-numbers raise ``name`` followed by
    ``wording``; NaN and Inf raise when ``finite`` (else see :func:`all_finite`).
    """
    if required and value is None:
        raise error(f"{name} is required")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, np.exceptions.ComplexWarning):
        raise error(f"{name} {wording}") from None
    return all_finite(a, name, error=error) if finite else a


def all_finite(a: np.ndarray, name: str, *, error: type[Exception] = InvalidInputError) -> np.ndarray:
    """``a`` itself when it holds no NaN or Inf, else raise ``error`` naming ``name``."""
    if not np.isfinite(a).all():
        raise error(f"{name} contains NaN or Inf")
    return a
