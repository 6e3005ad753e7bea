"""Thresholds for the query router with a finite-sample guarantee, and a per-query uncertainty with a meaning.

The query router scores each query in one of two ways and sends it to the lightweight (cheap) model when the
score clears a threshold. This module picks that threshold by Learn then Test (Angelopoulos, Bates, Candès,
Jordan and Lei, "Learn then Test: Calibrating Predictive Algorithms to Achieve Risk Control", 2021): every
candidate threshold t is a null hypothesis "the risk at t is above the allowed level", tested with a valid
p-value on held-out calibration queries; the thresholds are tested by fixed-sequence testing (Bauer 1991),
from the strictest (few queries to the lightweight model) to the most lenient, rejecting at level ``delta``
until the first p-value above ``delta``. The most lenient rejected threshold is returned. Fixed-sequence
testing needs no correction for the number of thresholds: a wrong threshold can be returned only if the
strictest threshold whose risk is too high was rejected, which happens with probability at most ``delta``
(each function's docstring gives the argument in full, and its one proviso for the first risk).

Two risks, one function each:

* :func:`calibrate_lightweight_error` (risk ``"lightweight_error"``): ``score`` is the probability that the
  lightweight answer is good enough; queries with ``score >= t`` go to the lightweight model. The risk is
  the share of those queries whose lightweight answer is not good enough, tested with an exact binomial
  tail.
* :func:`calibrate_quality_loss` (risk ``"quality_loss"``): ``gain`` is the strong model's expected quality
  gain; queries with ``gain <= t`` go to the lightweight model, so the strong model is kept where it helps
  most. The risk is a shortfall of routed quality below ``target`` times the strong model's quality, tested
  with a betting p-value for a bounded mean (Waudby-Smith and Ramdas 2024).

Both return a :class:`Calibration`: the threshold, whether it is certified, and what
:meth:`Calibration.uncertainty` needs (a conformal p-value per query, stored as at most
:data:`MAX_FAILURE_VALUES` quantiles so the model file stays small). :meth:`Calibration.to_dict` and
:meth:`Calibration.from_dict` store it as JSON-safe values. Everything is NumPy and the standard library.

Example::

    cal = calibrate_lightweight_error(score, good_enough, target=0.9, delta=0.1)
    if cal.certified:
        # With probability >= 0.9 over the calibration draw, at most 10% of the queries routed this way
        # get a lightweight answer that is not good enough.
        cheap = cal.use_lightweight(new_scores)
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from tinydancer import checks
from tinydancer.errors import InvalidInputError

__all__ = [
    "RISK_LIGHTWEIGHT_ERROR",
    "RISK_QUALITY_LOSS",
    "RISKS",
    "MAX_FAILURE_VALUES",
    "Calibration",
    "calibrate_lightweight_error",
    "calibrate_quality_loss",
    "lightweight_error_p_values",
    "quality_loss_p_values",
    "binomial_tail",
]

RISK_LIGHTWEIGHT_ERROR = "lightweight_error"
RISK_QUALITY_LOSS = "quality_loss"
RISKS = (RISK_LIGHTWEIGHT_ERROR, RISK_QUALITY_LOSS)

MAX_FAILURE_VALUES = 256
"""The most calibration values a :class:`Calibration` keeps for :meth:`Calibration.uncertainty` (2 KB as
float64, up to about 5.5 KB as JSON). Up to this many failures are kept exactly; beyond it, quantiles."""

# The betting test splits the calibration queries into this many equal blocks; the bet in each block is tuned
# on the blocks before it, so the first block only teaches (its bet is 0). More blocks adapt faster; 32 is
# within 1-2% of 100 blocks in lightweight share on the module's tests, at a third of the cost.
_BLOCKS = 32
_MAX_BET = 0.5  # bets stay below 1 (a bet of 1 can lose everything); capping at 0.5 tames noisy early tuning
# The permutation that assigns calibration queries to blocks: fixed, so results are reproducible, and drawn
# without looking at the data, so i.i.d. queries stay i.i.d. in block order whatever order they came in.
_BLOCK_SEED = 0x7D5EED

_TAIL_WINDOW = 64  # binomial terms summed per row at first; doubled for the rows that need more
_TAIL_TOLERANCE = 2.0**-60  # relative bound on the terms left out of a binomial tail sum
_TAIL_CELLS = 1 << 22  # rows x terms per chunk, to bound memory

_log_factorial_table = np.zeros(1)


# ---------------------------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class Calibration:
    """A routing threshold chosen by Learn then Test, and the data behind the per-query uncertainty.

    Attributes:
        risk: ``"lightweight_error"`` (route when ``score >= threshold``) or ``"quality_loss"`` (route when
            ``gain <= threshold``).
        threshold: the certified threshold, a calibration value (or a ``grid`` value). When nothing could be
            certified it is the
            value that routes nothing to the lightweight model: ``+inf`` for ``"lightweight_error"``,
            ``-inf`` for ``"quality_loss"``.
        certified: whether the threshold carries the guarantee (at least one threshold that routes a
            calibration query to the lightweight model passed its test).
        target: the quality asked for, in (0, 1): at most ``1 - target`` of lightweight-routed answers not
            good enough, or routed quality at least ``target`` times the strong model's.
        delta: the allowed probability, over the calibration draw, that the guarantee fails.
        n: the number of calibration queries.
        lightweight_share: the share of calibration queries the threshold sends to the lightweight model
            (0 when not certified).
        failure_count: the number of calibration queries on which the lightweight model fell short: not
            good enough (``"lightweight_error"``), or strictly worse than the strong model
            (``"quality_loss"``).
        failure_values: their scores (highest first) or gains (lowest first), all of them when there are
            at most :data:`MAX_FAILURE_VALUES`, else that many quantiles (see :meth:`uncertainty`).
    """

    risk: str
    threshold: float
    certified: bool
    target: float
    delta: float
    n: int
    lightweight_share: float
    failure_count: int
    failure_values: tuple[float, ...]

    def __post_init__(self) -> None:
        for name, value in _checked({f.name: getattr(self, f.name) for f in fields(self)}, str).items():
            object.__setattr__(self, name, value)
        # the stored values in ascending order, for the one-number path of uncertainty (bisect, no NumPy)
        object.__setattr__(self, "_ascending", tuple(sorted(self.failure_values)))

    def use_lightweight(self, values: Any) -> np.ndarray:
        """Which queries go to the lightweight model.

        Args:
            values: scores (``"lightweight_error"``) or expected gains (``"quality_loss"``), one number or an
                array of any shape.

        Returns:
            A bool array of the same shape: ``values >= threshold`` or ``values <= threshold``. All False
            when the calibration is not certified.

        Raises:
            InvalidInputError: ``values`` are not finite real numbers.
        """
        if type(values) is float and math.isfinite(values):  # one number: no array (a route() call)
            return np.bool_(values >= self.threshold if self.risk == RISK_LIGHTWEIGHT_ERROR
                            else values <= self.threshold)
        v = checks.real_array(values, "values")
        return v >= self.threshold if self.risk == RISK_LIGHTWEIGHT_ERROR else v <= self.threshold

    def uncertainty(self, values: Any) -> float | np.ndarray:
        """A conformal p-value per query: how much the query looks like those the lightweight model failed.

        For ``"lightweight_error"``, with score s: ``(1 + #{calibration queries not good enough with score
        >= s}) / (1 + failure_count)``. For ``"quality_loss"``, with expected gain g: ``(1 + #{calibration
        queries where the strong model was strictly better with gain <= g}) / (1 + failure_count)``.

        Meaning: this is a p-value for "the lightweight model fails on this query". If a new query is one
        the lightweight model fails on, drawn like the calibration failures, then P(uncertainty <= a) <= a
        for every a in [0, 1]. A small value says the query ranks above (score) or below (gain) nearly all
        calibration failures; a value near 1 says it looks like a typical failure. It is 1 for every query
        when the calibration had no failures.

        With more than :data:`MAX_FAILURE_VALUES` failures only quantiles are stored (the extreme failures
        among them); the count is then rounded up to the next stored rank, so the value is never below the
        exact one (the p-value stays valid) and exceeds it by less than ``1 / (MAX_FAILURE_VALUES - 1)``.
        Queries beyond every failure get the exact smallest value, ``1 / (1 + failure_count)``.

        Args:
            values: scores or gains (as for :meth:`use_lightweight`), one number or an array.

        Returns:
            A float for one number, else a float64 array of the same shape, in (0, 1].

        Raises:
            InvalidInputError: ``values`` are not finite real numbers.
        """
        total = self.failure_count
        if type(values) is float and math.isfinite(values):  # one number: the same count by bisection
            if total == 0:
                return 1.0
            ascending: tuple[float, ...] = self._ascending  # type: ignore[attr-defined]
            kept = len(ascending)
            if self.risk == RISK_LIGHTWEIGHT_ERROR:
                beyond = kept - bisect.bisect_left(ascending, values)
            else:
                beyond = bisect.bisect_right(ascending, values)
            count = total if beyond >= kept else beyond * (total - 1) // max(kept - 1, 1)
            return (1.0 + count) / (1.0 + total)
        v = checks.real_array(values, "values")
        if total == 0:
            result = np.ones(v.shape)
        else:
            stored = np.asarray(self.failure_values)
            # Keys: larger is further from the failures (a higher score, a lower gain); stored largest first.
            keys, x = (stored, v) if self.risk == RISK_LIGHTWEIGHT_ERROR else (-stored, -v)
            kept = stored.size
            above = np.searchsorted(-keys, -x, side="right")  # stored values at or beyond the query
            # Stored value k (0-based) is the failure of rank 1 + k (total - 1) // (kept - 1), from the first to
            # the last; the failures at or beyond the query number at most the next stored rank minus one.
            next_rank = 1 + above * (total - 1) // max(kept - 1, 1)
            count = np.where(above >= kept, total, next_rank - 1)
            result = (1.0 + count) / (1.0 + total)
        return float(result) if result.ndim == 0 else result

    def to_dict(self) -> dict[str, Any]:
        """The calibration as JSON-safe values (str, bool, int, float, list; no NaN or infinity).

        The threshold is ``None`` when the calibration is not certified (JSON has no infinity).
        :meth:`from_dict` restores an equal object; floats survive ``json.dumps``/``json.loads`` exactly.
        """
        return {
            "risk": self.risk,
            "threshold": self.threshold if self.certified else None,
            "certified": self.certified,
            "target": self.target,
            "delta": self.delta,
            "n": self.n,
            "lightweight_share": self.lightweight_share,
            "failure_count": self.failure_count,
            "failure_values": list(self.failure_values),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """Rebuild a calibration from :meth:`to_dict`'s output, checking every field.

        Raises:
            InvalidInputError: ``data`` is not a mapping with exactly :meth:`to_dict`'s keys, or a field has
                the wrong type or value, or the fields contradict each other; the message names the key.
        """
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"calibration must be a dict, got {type(data).__name__}")
        expected = [f.name for f in fields(cls)]
        for key in data:
            if key not in expected:
                raise InvalidInputError(f"calibration has an unknown key {key!r}")
        for key in expected:
            if key not in data:
                raise InvalidInputError(f"calibration is missing {key!r}")
        values = dict(data)
        certified = checks.flag(values["certified"], "calibration['certified']", error=InvalidInputError)
        if certified and values["threshold"] is None:
            raise InvalidInputError("calibration['threshold'] is None but the calibration is certified")
        if not certified:
            if values["threshold"] is not None:
                raise InvalidInputError("calibration['threshold'] must be None when the calibration is not "
                                        f"certified, got {values['threshold']!r}")
            values["threshold"] = math.inf if values["risk"] == RISK_LIGHTWEIGHT_ERROR else -math.inf
        return cls(**_checked(values, lambda key: f"calibration[{key!r}]"))


def _checked(values: dict[str, Any], name: Callable[[str], str]) -> dict[str, Any]:
    """The fields of a :class:`Calibration`, checked and normalised; ``name(field)`` names one in messages.

    Raises:
        InvalidInputError: a field has the wrong type or value, or the fields contradict each other.
    """
    err = InvalidInputError
    risk = values["risk"]
    if not isinstance(risk, str) or risk not in RISKS:
        raise err(f"{name('risk')} must be one of {', '.join(map(repr, RISKS))}, got {risk!r}")
    certified = checks.flag(values["certified"], name("certified"), error=err)
    nothing = math.inf if risk == RISK_LIGHTWEIGHT_ERROR else -math.inf
    if certified:
        threshold = checks.real(values["threshold"], name("threshold"), error=err)
    elif isinstance(values["threshold"], numbers.Real) and not isinstance(values["threshold"], bool) \
            and float(values["threshold"]) == nothing:
        threshold = nothing
    else:
        raise err(f"{name('threshold')} must be {nothing} (route nothing) when not certified, "
                  f"got {values['threshold']!r}")
    target = checks.real(values["target"], name("target"), 0.0, 1.0, low_open=True, high_open=True, error=err)
    delta = checks.real(values["delta"], name("delta"), 0.0, 1.0, low_open=True, high_open=True, error=err)
    n = checks.integer(values["n"], name("n"), 1, error=err)
    share = checks.unit_interval(values["lightweight_share"], name("lightweight_share"), error=err)
    if certified and share == 0.0:
        raise err(f"{name('lightweight_share')} must be > 0 for a certified calibration")
    if not certified and share != 0.0:
        raise err(f"{name('lightweight_share')} must be 0 when not certified, got {share!r}")
    failures = checks.integer(values["failure_count"], name("failure_count"), 0, n, error=err)
    stored = values["failure_values"]
    if not isinstance(stored, (list, tuple)):
        raise err(f"{name('failure_values')} must be a list of numbers, got {type(stored).__name__}")
    kept = min(failures, MAX_FAILURE_VALUES)
    if len(stored) != kept:
        raise err(f"{name('failure_values')} must hold {kept} values (failure_count {failures}), got {len(stored)}")
    stored = tuple(checks.real(v, f"{name('failure_values')}[{i}]", error=err) for i, v in enumerate(stored))
    ordered = np.asarray(stored) if risk == RISK_LIGHTWEIGHT_ERROR else -np.asarray(stored)
    if kept > 1 and (np.diff(ordered) > 0).any():
        order = "highest" if risk == RISK_LIGHTWEIGHT_ERROR else "lowest"
        raise err(f"{name('failure_values')} must be sorted {order} first")
    return {"risk": risk, "threshold": threshold, "certified": certified, "target": target, "delta": delta,
            "n": n, "lightweight_share": share, "failure_count": failures, "failure_values": stored}


# ---------------------------------------------------------------------------------------------- the inputs


def _as_vector(value: Any, name: str, n: int | None = None) -> np.ndarray:
    """``value`` as a non-empty 1-D float64 array of finite numbers (of length ``n`` when given)."""
    a = checks.real_array(value, name)
    if a.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        raise InvalidInputError(f"{name} is empty")
    if n is not None and a.size != n:
        raise InvalidInputError(f"{name} must have length {n}, one value per calibration query, got {a.size}")
    return a


def _as_unit_vector(value: Any, name: str, n: int) -> np.ndarray:
    """Per-query qualities in [0, 1] (booleans allowed)."""
    a = _as_vector(value, name, n)
    if ((a < 0.0) | (a > 1.0)).any():
        raise InvalidInputError(f"{name} must hold qualities in [0, 1]")
    return a


def _as_level(value: Any, name: str) -> float:
    """``target`` or ``delta``: a float in the open interval (0, 1)."""
    return checks.real(value, name, 0.0, 1.0, low_open=True, high_open=True, error=InvalidInputError)


def _as_grid(grid: Any) -> np.ndarray | None:
    """The user's candidate thresholds, distinct and ascending, or None."""
    return None if grid is None else np.unique(_as_vector(grid, "grid"))


# ---------------------------------------------------------------------------------------------- binomial tail


def _log_factorials(n: int) -> np.ndarray:
    """``log(k!)`` for k = 0..n (at least), from ``math.lgamma``; the table is kept and grown."""
    global _log_factorial_table
    table = _log_factorial_table
    if table.size <= n:
        extra = np.array([math.lgamma(k + 1.0) for k in range(table.size, 2 * n + 1)])
        table = np.concatenate([table, extra])
        _log_factorial_table = table  # a reference swap: other threads see the old or the new table
    return table


def _log_tail_sum(start: np.ndarray, n: np.ndarray, step: int, p: float, lf: np.ndarray) -> np.ndarray:
    """``log sum_j P(Bin(n, p) = j)`` over j = start, start + step, ... within [0, n], per row.

    The terms must not increase from ``start`` in the direction ``step`` (true on the far side of the mode),
    so after a window of terms the rest is at most a geometric series, which bounds what is left out.
    """
    log_p, log_q = math.log(p), math.log1p(-p)
    result = np.empty(start.size)
    pending = np.arange(start.size)
    width = _TAIL_WINDOW
    while pending.size:
        rows_per_chunk = max(1, _TAIL_CELLS // width)
        finished = []
        for lo in range(0, pending.size, rows_per_chunk):
            rows = pending[lo:lo + rows_per_chunk]
            s, nn = start[rows], n[rows]
            j = s[:, None] + step * np.arange(width)[None, :]
            inside = (j >= 0) & (j <= nn[:, None])
            jc = np.clip(j, 0, nn[:, None])
            terms = lf[nn][:, None] - lf[jc] - lf[nn[:, None] - jc] + jc * log_p + (nn[:, None] - jc) * log_q
            terms = np.where(inside, terms, -np.inf)
            top = terms[:, 0]  # the largest term
            total = top + np.log(np.exp(terms - top[:, None]).sum(axis=1))
            nxt = s + step * width  # the first term left out
            beyond = (nxt < 0) | (nxt > nn)
            jn = np.clip(nxt, 0, nn)
            log_next = lf[nn] - lf[jn] - lf[nn - jn] + jn * log_p + (nn - jn) * log_q
            if step < 0:  # ratio of the term after the next one to the next one; it only shrinks further out
                ratio = jn * (1.0 - p) / ((nn - jn + 1) * p)
            else:
                ratio = (nn - jn) * p / ((jn + 1) * (1.0 - p))
            with np.errstate(divide="ignore", invalid="ignore"):
                rest = np.where(ratio < 1.0, log_next - np.log1p(-ratio), np.inf)  # geometric bound
            done = beyond | (rest <= total + math.log(_TAIL_TOLERANCE))
            result[rows[done]] = total[done]
            finished.append(rows[done])
        pending = np.setdiff1d(pending, np.concatenate(finished), assume_unique=True)
        width *= 2
    return result


def _log_binomial_cdf(k: np.ndarray, n: np.ndarray, p: float) -> np.ndarray:
    """``log P(Bin(n, p) <= k)`` per element of the int64 arrays ``k`` and ``n`` (n >= 0), p in (0, 1)."""
    k, n = np.broadcast_arrays(k, n)
    shape = k.shape
    k, n = k.ravel(), n.ravel()
    out = np.where(k >= n, 0.0, -np.inf)  # certain, or impossible (k < 0)
    pending = (k >= 0) & (k < n)
    if pending.any():
        lf = _log_factorials(int(n[pending].max()))
        mode = np.minimum(np.floor((n + 1) * p).astype(np.int64), n)
        lower = pending & (k < mode)  # terms fall from k down: sum them
        upper = pending & (k >= mode)  # terms fall from k + 1 up: the cdf is one minus their sum
        if lower.any():
            out[lower] = _log_tail_sum(k[lower], n[lower], -1, p, lf)
        if upper.any():
            log_rest = _log_tail_sum(k[upper] + 1, n[upper], 1, p, lf)
            out[upper] = np.log1p(-np.exp(log_rest))
    return out.reshape(shape)


def binomial_tail(k: Any, n: Any, p: float) -> float | np.ndarray:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``: the exact lower tail, elementwise.

    The probability terms come from ``math.lgamma`` and are summed in log space from the largest one
    outwards until the rest is provably below 2**-60 of the sum (a geometric bound), so it stays accurate
    for tails far below the smallest float and for n in the millions; the upper side of the mode is one
    minus the upper tail. The relative error is at most about 1e-15 times ``log(n!)`` (the lgamma values'
    rounding): 1e-12 at n = 2000.

    Args:
        k: integer counts (any integer, below 0 giving 0 and n or more giving 1).
        n: integer numbers of trials, >= 0; broadcast against ``k``.
        p: the success probability, in (0, 1).

    Returns:
        A float for scalar arguments, else a float64 array of the broadcast shape.

    Raises:
        InvalidInputError: non-integer ``k`` or ``n``, a negative ``n``, or ``p`` outside (0, 1).
    """
    p = _as_level(p, "p")
    arrays = []
    for value, name in ((k, "k"), (n, "n")):
        a = checks.real_array(value, name)
        if (a != np.round(a)).any() or (np.abs(a) > 2.0**53).any():
            raise InvalidInputError(f"{name} must hold integers")
        arrays.append(a.astype(np.int64))
    if (arrays[1] < 0).any():
        raise InvalidInputError("n must hold counts >= 0")
    result = np.exp(_log_binomial_cdf(arrays[0], arrays[1], p))
    return float(result) if result.ndim == 0 else result


# ---------------------------------------------------------------------------------------------- risk 1


def lightweight_error_p_values(score: Any, good_enough: Any, target: float, delta: float = 0.1, *,
                               grid: Any = None, min_routed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The thresholds :func:`calibrate_lightweight_error` tests, in its order, and their p-values.

    Args:
        score, good_enough, target, delta, grid, min_routed: as for :func:`calibrate_lightweight_error`
            (``delta`` and ``min_routed`` decide which strict candidates are passed over).

    Returns:
        ``(thresholds, p_values)``: the tested thresholds from the strictest (highest) to the most lenient,
        and for each the exact binomial p-value of "the share of queries with score >= t whose lightweight
        answer is not good enough exceeds 1 - target".

    Raises:
        InvalidInputError: as for :func:`calibrate_lightweight_error`.
    """
    s, bad, tau, grid_values = _lightweight_error_inputs(score, good_enough, target, grid)
    thresholds, routed, errors, _ = _lightweight_error_counts(s, bad, 1.0 - tau, _as_level(delta, "delta"),
                                                              grid_values, _min_routed(min_routed))
    return thresholds, np.exp(_log_binomial_cdf(errors, routed, 1.0 - tau))


def _lightweight_error_inputs(score: Any, good_enough: Any, target: Any,
                              grid: Any) -> tuple[np.ndarray, np.ndarray, float, np.ndarray | None]:
    """Checked scores, not-good-enough flags, the target and the grid."""
    s = _as_vector(score, "score")
    labels = _as_vector(good_enough, "good_enough", s.size)
    if ((labels != 0.0) & (labels != 1.0)).any():
        raise InvalidInputError("good_enough must hold labels 0 or 1 (or booleans)")
    return s, labels == 0.0, _as_level(target, "target"), _as_grid(grid)


def _min_routed(value: Any) -> int:
    return int(checks.integer(value, "min_routed", 1, error=InvalidInputError))


def _lightweight_error_counts(s: np.ndarray, bad: np.ndarray, alpha: float, delta: float, grid: np.ndarray | None,
                              min_routed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The tested thresholds (highest first), the queries routed and the errors among them at each, and the
    failures' scores (highest first).

    Candidates that route so few queries that even no error could not reject them (P(Bin(m, alpha) = 0) =
    (1 - alpha)^m > delta), or fewer than ``min_routed``, are passed over.
    """
    order = np.argsort(-s, kind="stable")
    ranked, ranked_bad = s[order], bad[order]
    errors_so_far = np.cumsum(ranked_bad)
    if grid is None:
        last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])  # the last query of each tie group
        thresholds, routed = ranked[last], last + 1
    else:
        thresholds = grid[::-1]
        routed = np.searchsorted(-ranked, -thresholds, side="right")  # queries with score >= t
    keep = (np.exp(routed * math.log1p(-alpha)) <= delta) & (routed >= min_routed)  # as _log_binomial_cdf for 0 errors
    thresholds, routed = thresholds[keep], routed[keep]
    errors = errors_so_far[routed - 1] if routed.size else routed
    return thresholds, routed.astype(np.int64), errors.astype(np.int64), ranked[ranked_bad]


def calibrate_lightweight_error(score: Any, good_enough: Any, target: float, delta: float = 0.1, *,
                                grid: Any = None, min_routed: int = 1) -> Calibration:
    """The most lenient score threshold whose lightweight error share is certified at most ``1 - target``.

    Queries with ``score >= t`` go to the lightweight model. The risk at t is R(t) = P(the lightweight
    answer is not good enough | score >= t), the share of lightweight-routed queries that fall short.

    Guarantee: with probability at least ``1 - delta`` over the draw of the (i.i.d.) calibration queries,
    R(threshold) <= 1 - target for new queries from the same distribution, provided a higher score never
    means a likelier failure (P(not good enough | score = s) does not increase with s, which is what a
    score is for). Without that proviso the failure probability can exceed delta only by the chance that
    fewer than m0 (below) calibration queries score above the strictest threshold whose risk is too high.

    Method (Learn then Test with fixed-sequence testing): the candidates are the distinct calibration
    scores, from the highest (routing the fewest queries) down, or ``grid``. For a fixed t, given that m
    calibration queries have score >= t, those m are i.i.d. draws from the queries with score >= t
    (selection depends on the score alone), so the number e of them not good enough is Binomial(m, R(t)).
    The p-value of H0: R(t) > 1 - target is therefore the exact tail P(Binomial(m, 1 - target) <= e)
    (:func:`binomial_tail`). Candidates routing fewer than m0 queries, the fewest for which even e = 0
    gives p <= delta (target^m0 <= delta), could never be rejected and are passed over: the walk starts at
    the first candidate routing m0 or more. It rejects while p <= delta and stops at the first p > delta;
    the threshold is the last rejected candidate. Why this is valid: the p-value is constant between
    consecutive calibration scores, so the walk in effect tests every threshold between its first and last
    candidates. Let t0 be the strictest threshold (with a grid: grid value) with R(t0) > 1 - target. A
    wrong threshold is returned only if the walk rejects at t0 (probability <= delta given that m0 or more
    queries score >= t0) or, when fewer do, rejects its very first candidate; the errors among its m
    queries are then, under the proviso, at least Binomial(m, 1 - target) in distribution, so this too has
    probability <= delta.

    Cost: O(n log n) to sort and count, plus the tail sums (O(1) terms per candidate far from the mean,
    O(sqrt n) near it).

    Args:
        score: (n,) the router's probability that the lightweight answer is good enough (any real score
            where higher means more likely good enough works).
        good_enough: (n,) 1 (or True) where the lightweight answer was good enough, else 0.
        target: in (0, 1); at most ``1 - target`` of lightweight-routed answers may fall short.
        delta: in (0, 1); the allowed probability that the guarantee fails.
        grid: optional candidate thresholds chosen without looking at the calibration data (say
            ``np.linspace(0, 1, 201)``); tested from the highest down, passing over those that route fewer
            than m0 calibration queries. By default every distinct calibration score is a candidate.
        min_routed: also pass over the candidates that route fewer than this many calibration queries (an
            int >= 1 fixed without looking at the labels; the argument above holds with m0 replaced by
            ``max(m0, min_routed)``). The walk stops at its first failed test, so one failure among the
            few highest scores can end it almost at once; starting where a test sees more queries (say 1%
            of them) makes it far less fragile, at the price of never certifying a threshold that routes
            fewer.

    Returns:
        A :class:`Calibration` with risk ``"lightweight_error"``. When the first tested candidate is not
        rejected (the target is too high for the data), or n < m0 leaves nothing to test, it is not
        certified and its threshold is ``+inf``: nothing goes to the lightweight model.

    Raises:
        InvalidInputError: ``score`` or ``good_enough`` not 1-D finite arrays of one length >= 1, labels
            other than 0/1, ``target`` or ``delta`` outside (0, 1), or a bad ``grid``; the message names it.
    """
    s, bad, tau, grid_values = _lightweight_error_inputs(score, good_enough, target, grid)
    level = _as_level(delta, "delta")
    thresholds, routed, errors, failures = _lightweight_error_counts(s, bad, 1.0 - tau, level, grid_values,
                                                                     _min_routed(min_routed))
    p_values = np.exp(_log_binomial_cdf(errors, routed, 1.0 - tau))
    passed = _fixed_sequence(p_values, level)
    certified = passed > 0
    return Calibration(
        risk=RISK_LIGHTWEIGHT_ERROR,
        threshold=float(thresholds[passed - 1]) if certified else math.inf,
        certified=certified,
        target=tau,
        delta=level,
        n=int(s.size),
        lightweight_share=float(routed[passed - 1] / s.size) if certified else 0.0,
        failure_count=int(failures.size),
        failure_values=_kept_values(failures),
    )


# ---------------------------------------------------------------------------------------------- risk 2


def quality_loss_p_values(gain: Any, strong: Any, weak: Any, target: float, *,
                          grid: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The thresholds :func:`calibrate_quality_loss` tests, in its order, and their p-values.

    Args:
        gain, strong, weak, target, grid: as for :func:`calibrate_quality_loss`.

    Returns:
        ``(thresholds, p_values)``: ``-inf`` (route nothing) first, then the candidates from the strictest
        (lowest) up, and for each the betting p-value of "routing quality falls below target times the
        strong model's".

    Raises:
        InvalidInputError: as for :func:`calibrate_quality_loss`.
    """
    g, d, c, tau, grid_values = _quality_loss_inputs(gain, strong, weak, target, grid)
    thresholds, routed, order = _quality_loss_candidates(g, grid_values)
    return thresholds, _betting_p_values(routed, d[order], c[order], tau, _blocks(g.size)[order])


def _quality_loss_inputs(gain: Any, strong: Any, weak: Any, target: Any,
                         grid: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray | None]:
    """Checked gains, per-query quality differences strong - weak, the budgets (1 - target) * strong, the
    target and the grid."""
    g = _as_vector(gain, "gain")
    s = _as_unit_vector(strong, "strong", g.size)
    w = _as_unit_vector(weak, "weak", g.size)
    tau = _as_level(target, "target")
    return g, s - w, (1.0 - tau) * s, tau, _as_grid(grid)


def _quality_loss_candidates(g: np.ndarray, grid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate thresholds (``-inf`` first, then ascending), the queries routed at each (those with
    gain <= t), and the order that sorts the queries by gain."""
    order = np.argsort(g, kind="stable")
    ranked = g[order]
    if grid is None:
        last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
        thresholds, routed = ranked[last], last + 1
    else:
        thresholds, routed = grid, np.searchsorted(ranked, grid, side="right")
    return np.r_[-np.inf, thresholds], np.r_[0, routed].astype(np.int64), order


def _blocks(n: int) -> np.ndarray:
    """The block (0 to _BLOCKS - 1) of each of n calibration queries, for the betting test: equal runs of a
    fixed random permutation."""
    block = np.empty(n, dtype=np.int64)
    block[np.random.default_rng(_BLOCK_SEED).permutation(n)] = np.arange(n) * _BLOCKS // n
    return block


def _betting_p_values(routed: np.ndarray, d: np.ndarray, c: np.ndarray, tau: float,
                      block: np.ndarray) -> np.ndarray:
    """Betting p-values of H0: E l(t) >= 0, one per candidate, for queries sorted by gain.

    At a candidate routing the first ``routed`` queries, query i has loss l_i = [i routed] d_i - c_i in
    [-1, tau]. With y_i = -l_i / tau >= -1 and a bet lam in [0, 1), the capital prod (1 + lam_i y_i) has
    expectation <= 1 under H0 for bets fixed before y_i is seen, so by Ville's inequality it reaches 1/delta
    with probability <= delta. Its logarithm is at least sum lam_i y_i + (log(1 - lam_i) + lam_i) y_i^2
    (Fan, Grama and Liu 2015, for y >= -1), which needs only each block's sum and sum of squares of y.
    """
    n_blocks = _BLOCKS
    n = d.size
    rows = np.arange(n)
    # Per-block sums of y and y^2 with nothing routed, and their changes as queries are routed one by one.
    base_sum = np.bincount(block, weights=c / tau, minlength=n_blocks)
    base_squares = np.bincount(block, weights=(c / tau) ** 2, minlength=n_blocks)
    change_sum = np.zeros((n + 1, n_blocks))
    change_squares = np.zeros((n + 1, n_blocks))
    change_sum[rows + 1, block] = -d / tau
    change_squares[rows + 1, block] = ((c - d) ** 2 - c**2) / tau**2
    sums = base_sum + np.cumsum(change_sum, axis=0)[routed]
    squares = base_squares + np.cumsum(change_squares, axis=0)[routed]
    sizes = np.bincount(block, minlength=n_blocks).astype(float)
    # Each block bets lam = mean / (mean + second moment) of the blocks before it (the lam that maximises
    # the lower bound's growth), or nothing when their mean is not positive.
    seen = np.cumsum(sizes) - sizes
    seen_sum = np.cumsum(sums, axis=1) - sums
    seen_squares = np.cumsum(squares, axis=1) - squares
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(seen > 0, seen_sum / seen, 0.0)
        second = np.where(seen > 0, seen_squares / seen, 0.0)
        bet = np.where(mean > 0, mean / (mean + second), 0.0)
    bet = np.clip(bet, 0.0, _MAX_BET)
    log_capital = np.cumsum(bet * sums + (np.log1p(-bet) + bet) * squares, axis=1)
    return np.exp(-np.maximum(log_capital.max(axis=1), 0.0))


def calibrate_quality_loss(gain: Any, strong: Any, weak: Any, target: float, delta: float = 0.1, *,
                           grid: Any = None) -> Calibration:
    """The most lenient gain threshold at which routing is certified to keep ``target`` of the strong
    model's quality.

    Queries with ``gain <= t`` go to the lightweight model and the rest to the strong one, so the strong
    model is kept for the queries where it is expected to help most. With per-query qualities strong_i and
    weak_i in [0, 1], the quality of routing is E[strong] - E[1[gain <= t] (strong - weak)].

    Guarantee: with probability at least ``1 - delta`` over the draw of the (i.i.d.) calibration queries,
    the quality of routing at the threshold is at least ``target * E[strong]`` on new queries from the same
    distribution (e.g. 0.95: at least 95% of the strong model's accuracy).

    Method (Learn then Test with fixed-sequence testing): the per-query loss
    l_i(t) = 1[gain_i <= t] (strong_i - weak_i) - (1 - target) strong_i lies in [-1, target], and the
    guarantee is E l(t) <= 0. Candidates are "route nothing" (a loss of -(1 - target) strong_i each), then
    the distinct calibration gains from the lowest up, or ``grid``. Each gets a p-value for H0: E l(t) > 0
    from the betting test of Waudby-Smith and Ramdas ("Estimating means of bounded random variables by
    betting", JRSS-B 2024), in its empirical-Bernstein form (the log-capital bounded below through Fan,
    Grama and Liu's inequality, so only sums and sums of squares are needed): the queries are split into
    32 equal blocks of a fixed random permutation, each block bets a fraction tuned on the blocks before it
    (the first bets nothing), and the p-value is 1 / the largest capital reached at a block's end (Ville's
    inequality), valid for any losses bounded as above. The walk rejects while p <= delta and stops at the
    first p > delta. The p-value is constant between consecutive calibration gains and the walk starts at
    "route nothing", so every threshold up to the returned one was in effect tested; a threshold with
    E l > 0 can be returned only if the strictest such threshold (with a grid: grid value) was rejected,
    which has probability at most delta. The guarantee needs no assumption beyond i.i.d. queries.

    Cost: O(n log n) to sort, then O(n) per block (32 n in all) for all candidates together.

    Args:
        gain: (n,) the router's expected quality gain of the strong model over the lightweight one.
        strong: (n,) the strong model's quality per query, in [0, 1] (booleans, or graded scores scaled to
            [0, 1]).
        weak: (n,) the lightweight model's quality per query, in [0, 1].
        target: in (0, 1); the share of the strong model's quality to keep.
        delta: in (0, 1); the allowed probability that the guarantee fails.
        grid: optional candidate thresholds chosen without looking at the calibration data; tested from the
            lowest up, after "route nothing". By default every distinct calibration gain is a candidate.

    Returns:
        A :class:`Calibration` with risk ``"quality_loss"``. When no candidate that routes a calibration
        query is rejected, it is not certified and its threshold is ``-inf``: nothing goes to the
        lightweight model.

    Raises:
        InvalidInputError: ``gain``, ``strong`` or ``weak`` not 1-D finite arrays of one length >= 1,
            qualities outside [0, 1], ``target`` or ``delta`` outside (0, 1), or a bad ``grid``; the message
            names it.
    """
    g, d, c, tau, grid_values = _quality_loss_inputs(gain, strong, weak, target, grid)
    level = _as_level(delta, "delta")
    thresholds, routed, order = _quality_loss_candidates(g, grid_values)
    p_values = _betting_p_values(routed, d[order], c[order], tau, _blocks(g.size)[order])
    passed = _fixed_sequence(p_values, level)
    # Candidates that pass but route no calibration query certify nothing.
    last = passed - 1
    while last >= 0 and routed[last] == 0:
        last -= 1
    certified = last >= 0
    failures = g[d > 0.0]  # the strong model was strictly better
    return Calibration(
        risk=RISK_QUALITY_LOSS,
        threshold=float(thresholds[last]) if certified else -math.inf,
        certified=certified,
        target=tau,
        delta=level,
        n=int(g.size),
        lightweight_share=float(routed[last] / g.size) if certified else 0.0,
        failure_count=int(failures.size),
        failure_values=_kept_values(np.sort(failures)),
    )


# ---------------------------------------------------------------------------------------------- shared


def _fixed_sequence(p_values: np.ndarray, delta: float) -> int:
    """How many candidates fixed-sequence testing rejects: the p-values <= delta before the first one above."""
    above = np.flatnonzero(p_values > delta)
    return int(above[0]) if above.size else int(p_values.size)


def _kept_values(ranked: np.ndarray) -> tuple[float, ...]:
    """The failures' values in rank order, all of them or :data:`MAX_FAILURE_VALUES` quantiles: value k
    (0-based) is the one of rank 1 + k (count - 1) // (MAX_FAILURE_VALUES - 1), so the first and the last
    failures are kept."""
    count = ranked.size
    if count <= MAX_FAILURE_VALUES:
        return tuple(float(v) for v in ranked)
    ranks = 1 + np.arange(MAX_FAILURE_VALUES) * (count - 1) // (MAX_FAILURE_VALUES - 1)
    return tuple(float(v) for v in ranked[ranks - 1])
