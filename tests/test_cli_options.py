"""tinydancer.cli.options: the option types every command uses."""

from __future__ import annotations

import argparse

import pytest

from tinydancer.cli import options


@pytest.mark.parametrize(
    "kind, text, value",
    [
        (options.positive_int, "1", 1),
        (options.positive_int, "12", 12),
        (options.non_negative_int, "0", 0),
        (options.positive_float, "1e-3", 1e-3),
        (options.positive_float, "2", 2.0),
        (options.non_negative_float, "0", 0.0),
        (options.probability, "1", 1.0),
        (options.probability, "0", 0.0),
        (options.fraction, "0.5", 0.5),
    ],
)
def test_good_values(kind, text, value):
    assert kind(text) == value and type(kind(text)) is type(value)


@pytest.mark.parametrize(
    "kind, text, message",
    [
        (options.positive_int, "0", "0 is not an integer >= 1"),
        (options.positive_int, "1.5", "'1.5' is not an integer"),
        (options.non_negative_int, "-1", "-1 is not an integer >= 0"),
        (options.positive_float, "0", "0 is not a number > 0"),
        (options.positive_float, "-1", "-1 is not a number > 0"),
        (options.positive_float, "inf", "'inf' is not a finite number"),
        (options.positive_float, "nan", "'nan' is not a finite number"),
        (options.positive_float, "x", "'x' is not a number"),
        (options.non_negative_float, "-0.1", "-0.1 is not a number >= 0"),
        (options.probability, "1.5", "1.5 is not a number in [0, 1]"),
        (options.fraction, "1", "1 is not a number in [0, 1)"),
    ],
)
def test_bad_values(kind, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        kind(text)
    assert str(exc.value) == message
