"""Types for command-line options: each parses one option's text and refuses a bad value with a usage error.

Pass them as argparse's ``type=``; a value they refuse makes argparse print the usage and
``tinydancer <command>: error: argument --epochs: 0 is not an integer >= 1`` and exit with status 2,
before any work starts::

    parser.add_argument("--epochs", type=positive_int, default=100)

Numbers must be finite: ``nan`` and ``inf`` are refused by every float type here.

:func:`write_json` writes the JSON files the commands produce (``--report``, ``--json``).
"""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "non_negative_int", "positive_float", "non_negative_float", "probability", "fraction",
           "open_fraction", "write_json"]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return number


def positive_int(text: str) -> int:
    """An integer >= 1 (a count of epochs, units, examples)."""
    number = _int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text} is not an integer >= 1")
    return number


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a seed, or a count where 0 turns something off)."""
    number = _int(text)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{text} is not an integer >= 0")
    return number


def positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate, a temperature)."""
    number = _float(text)
    if number <= 0.0:
        raise argparse.ArgumentTypeError(f"{text} is not a number > 0")
    return number


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a regularisation weight)."""
    number = _float(text)
    if number < 0.0:
        raise argparse.ArgumentTypeError(f"{text} is not a number >= 0")
    return number


def probability(text: str) -> float:
    """A number in [0, 1], both ends included (a weight between two losses)."""
    number = _float(text)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a number in [0, 1]")
    return number


def fraction(text: str) -> float:
    """A number in [0, 1), 1 excluded (a share to hold out or to prune, which must leave something)."""
    number = _float(text)
    if not 0.0 <= number < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a number in [0, 1)")
    return number


def open_fraction(text: str) -> float:
    """A number in (0, 1), both ends excluded (a target quality, a risk level, a share held out)."""
    number = _float(text)
    if not 0.0 < number < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a number in (0, 1)")
    return number


def write_json(path: str, obj: object) -> None:
    """Write ``obj`` to ``path`` as JSON indented by 2 with a final newline, atomically (see
    :func:`tinydancer.atomic_files.write_atomic`).

    Raises:
        OutputFileError: ``path`` cannot be written; it is then left as it was.
    """
    import json

    from tinydancer.atomic_files import write_atomic

    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))
