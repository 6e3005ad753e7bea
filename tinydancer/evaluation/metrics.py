"""RouteLLM's routing metrics, computed exactly over every cut point.

A router gives each query a ``strong_score``; for a budget of k strong calls the k queries with the highest
scores go to the strong model and the rest to the weak one. ``strong`` and ``weak`` are each model's
per-query quality: booleans (was the answer correct) or graded scores (a judge's 1-10, say). For k = 0..N
the routed quality is the mean, over queries, of the strong model's quality where the query went to it and
the weak model's elsewhere.

Ties in ``strong_score`` are broken at random, and the curves give the expected value: inside a group of
tied scores, sending j of its m queries to the strong model adds j/m of the group's total gain. The curve is
therefore exact at every cut point and linear inside each tie group, so a constant score is random routing,
a straight line from ``mean(weak)`` to ``mean(strong)``.

* :func:`quality_curve`, :func:`pgr_curve`: the curves at the N + 1 cut points.
* :func:`apgr`: the area under the PGR curve over the share of strong calls in [0, 1] (random routing 0.5).
* :func:`cpt`: the share of strong calls at which PGR first reaches a level (RouteLLM's CPT(50%)).
* :func:`share_for_quality`, :func:`cost_saving`: strong calls needed for a fraction of the strong model's
  quality, and what that saves against calling the strong model always.
* :func:`oracle_score`, :func:`random_score`: the two reference routers.
* :func:`bootstrap`: percentile confidence intervals by resampling rows.

RouteLLM (Ong et al., 2024, ``routellm/evals/benchmarks.py`` and ``evaluate.py``) evaluates a router at
the 11 edges of 10 quantile bins of its scores and takes the trapezoid of that coarse curve; here every
cut point counts, so figures can differ slightly from its published ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinydancer.checks import integer, real
from tinydancer.errors import InvalidInputError

__all__ = [
    "GPT4_PRICE",
    "MIXTRAL_PRICE",
    "quality_curve",
    "pgr_curve",
    "apgr",
    "cpt",
    "share_for_quality",
    "cost_saving",
    "oracle_score",
    "random_score",
    "bootstrap",
]

# RouteLLM's published prices in USD per million tokens (GPT-4-1106-preview and Mixtral-8x7B-Instruct). A
# call's cost is taken as proportional to its model's price (the same number of tokens per call), so only
# the ratio of the two matters to :func:`cost_saving`.
GPT4_PRICE = 24.7
MIXTRAL_PRICE = 0.24

# Rows resampled per step of :func:`bootstrap`, as a number of (resample, row) cells: about 8 MB a matrix.
_BOOT_CELLS = 1 << 20


def _vector(values: Any, name: str) -> np.ndarray:
    """``values`` as a finite, non-empty 1-D float64 array (booleans become 0 and 1), or raise naming it."""
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise InvalidInputError(f"{name} must hold numbers or booleans, got dtype {array.dtype}")
    if array.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise InvalidInputError(f"{name} must not be empty")
    out = array.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise InvalidInputError(f"{name} holds NaN or infinite values")
    return out


def _vectors(**named: Any) -> list[np.ndarray]:
    """Each named value checked by :func:`_vector`, and all of the same length."""
    arrays = [_vector(value, name) for name, value in named.items()]
    n = arrays[0].size
    for name, array in zip(named, arrays, strict=True):
        if array.size != n:
            first = next(iter(named))
            raise InvalidInputError(f"{name} has {array.size} values but {first} has {n}")
    return arrays


@dataclass(frozen=True)
class _Knots:
    """A routing curve at the ends of its tie groups, where it bends; it is linear in between.

    Attributes:
        n: the number of queries.
        calls: (G + 1,) numbers of strong calls at the group ends: 0, ..., n.
        quality: (G + 1,) routed quality at those numbers of strong calls.
    """

    n: int
    calls: np.ndarray
    quality: np.ndarray

    @property
    def q_weak(self) -> float:
        return float(self.quality[0])

    @property
    def q_strong(self) -> float:
        return float(self.quality[-1])

    def pgr(self) -> np.ndarray:
        """PGR at the knots: 0 at no strong calls, 1 at all, exactly."""
        gap = self.q_strong - self.q_weak
        if _no_gap(self.q_strong, self.q_weak):
            raise InvalidInputError(
                f"PGR is undefined: the strong and the weak model have the same mean quality "
                f"({self.q_strong:.6g}) on these rows (strong, weak)")
        return (self.quality - self.q_weak) / gap

    def at_every_cut(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(share of strong calls, ``values`` interpolated) at k = 0..n strong calls."""
        k = np.arange(self.n + 1, dtype=np.float64)
        return k / self.n, np.interp(k, self.calls, values)

    def first_reach(self, values: np.ndarray, target: float) -> float:
        """The smallest share of strong calls at which the piecewise-linear ``values`` reach ``target``."""
        reached = np.flatnonzero(values >= target)
        if reached.size == 0:
            return math.nan
        i = int(reached[0])
        if i == 0:
            return 0.0
        v0, v1 = float(values[i - 1]), float(values[i])  # v0 < target <= v1
        c0, c1 = float(self.calls[i - 1]), float(self.calls[i])
        calls = c0 + (target - v0) / (v1 - v0) * (c1 - c0)
        return min(max(calls, c0), c1) / self.n


def _groups(strong_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order of the rows by descending score and the start of each tie group in that order."""
    order = np.argsort(-strong_score, kind="stable")
    ranked = strong_score[order]
    starts = np.flatnonzero(np.concatenate(([True], ranked[1:] != ranked[:-1])))
    return order, starts


def _knots(strong_score: Any, strong: Any, weak: Any) -> _Knots:
    """Check the three arrays and compute the curve at its knots; O(N log N)."""
    score, s, w = _vectors(strong_score=strong_score, strong=strong, weak=weak)
    order, starts = _groups(score)
    s_cum = np.concatenate(([0.0], np.cumsum(np.add.reduceat(s[order], starts))))
    w_cum = np.concatenate(([0.0], np.cumsum(np.add.reduceat(w[order], starts))))
    n = score.size
    calls = np.append(starts, n)
    # the first k ranked rows from the strong model, the others from the weak one; at k = n the weak
    # part is w_cum[-1] - w_cum[-1] = 0 exactly, so the last knot is the strong model's mean itself
    quality = (s_cum + (w_cum[-1] - w_cum)) / n
    return _Knots(n, calls, quality)


def quality_curve(strong_score: Any, strong: Any, weak: Any) -> tuple[np.ndarray, np.ndarray]:
    """Routed quality against the share of strong calls, at every cut point k = 0..N.

    Args:
        strong_score: (N,) the router's scores; the highest go to the strong model first.
        strong: (N,) the strong model's quality per query (booleans or graded scores).
        weak: (N,) the weak model's quality per query.

    Returns:
        ``(share_strong, quality)``, each (N + 1,): ``k / N`` and the mean quality with the k best-scored
        queries sent to the strong model, ties broken at random (their expected value). The first quality
        is ``mean(weak)`` and the last ``mean(strong)``.

    Raises:
        InvalidInputError: an array is not 1-D, empty, not numeric, not finite, or of another length.
    """
    knots = _knots(strong_score, strong, weak)
    return knots.at_every_cut(knots.quality)


def pgr_curve(strong_score: Any, strong: Any, weak: Any) -> tuple[np.ndarray, np.ndarray]:
    """Performance gap recovered against the share of strong calls, at every cut point k = 0..N.

    PGR = (quality - q_weak) / (q_strong - q_weak), where q_weak and q_strong are the mean qualities of
    always-weak and always-strong routing: 0 at no strong calls, 1 at all of them, and above 1 where the
    routing beats the strong model.

    Args:
        strong_score, strong, weak: as for :func:`quality_curve`.

    Returns:
        ``(share_strong, pgr)``, each (N + 1,).

    Raises:
        InvalidInputError: bad arrays, as for :func:`quality_curve`, or the two models have the same mean
            quality, where PGR is undefined.
    """
    knots = _knots(strong_score, strong, weak)
    return knots.at_every_cut(knots.pgr())


def _area(calls: np.ndarray, values: np.ndarray, n: int) -> float:
    """The trapezoid area under ``values`` over ``calls / n`` (exact for a curve linear between knots)."""
    return float(np.sum(np.diff(calls) * (values[:-1] + values[1:])) / (2 * n))


def apgr(strong_score: Any, strong: Any, weak: Any) -> float:
    """Average performance gap recovered: the area under the PGR curve over the share of strong calls in [0, 1].

    The trapezoid rule over all N + 1 cut points (exact, since the curve is linear between them). Random
    routing (a constant score) gives exactly 0.5; the oracle (:func:`oracle_score`) can exceed 1.

    Args:
        strong_score, strong, weak: as for :func:`quality_curve`.

    Returns:
        The APGR.

    Raises:
        InvalidInputError: as for :func:`pgr_curve`.
    """
    knots = _knots(strong_score, strong, weak)
    return _area(knots.calls, knots.pgr(), knots.n)


def cpt(strong_score: Any, strong: Any, weak: Any, pgr: float = 0.5) -> float:
    """Call-performance threshold: the smallest share of strong calls at which PGR reaches ``pgr``.

    RouteLLM's CPT(50%) is ``cpt(..., pgr=0.5)``. The PGR curve is interpolated linearly between cut
    points, so the share need not be a multiple of 1/N.

    Args:
        strong_score, strong, weak: as for :func:`quality_curve`.
        pgr: the PGR level to reach; at most 0 gives 0.0.

    Returns:
        The share in [0, 1]; NaN when the curve never reaches ``pgr`` (possible only above 1, since PGR
        is 1 at share 1).

    Raises:
        InvalidInputError: as for :func:`pgr_curve`, or ``pgr`` is not a finite number.
    """
    target = real(pgr, "pgr", error=InvalidInputError)
    knots = _knots(strong_score, strong, weak)
    return knots.first_reach(knots.pgr(), target)


def share_for_quality(strong_score: Any, strong: Any, weak: Any, fraction: float = 0.9) -> float:
    """The smallest share of strong calls at which the routed quality reaches ``fraction * mean(strong)``.

    The quality curve is interpolated linearly between cut points.

    Args:
        strong_score, strong, weak: as for :func:`quality_curve`.
        fraction: the fraction of the strong model's mean quality to reach (>= 0; above 1 only a router
            better than the strong model reaches it).

    Returns:
        The share in [0, 1]; 0.0 when the weak model alone is good enough; NaN when never reached.

    Raises:
        InvalidInputError: as for :func:`quality_curve`, or ``fraction`` is negative or not finite.
    """
    level = real(fraction, "fraction", 0.0, error=InvalidInputError)
    knots = _knots(strong_score, strong, weak)
    return knots.first_reach(knots.quality, level * knots.q_strong)


def cost_saving(share_strong: float, strong_cost: float = GPT4_PRICE, weak_cost: float = MIXTRAL_PRICE) -> float:
    """The saving against always calling the strong model, when a share of the calls goes to it.

    ``1 - (share * strong_cost + (1 - share) * weak_cost) / strong_cost``, with costs per call (by default
    the published prices per million tokens, i.e. the same number of tokens per call on both models).

    Args:
        share_strong: the share of strong calls in [0, 1]; NaN (a quality never reached) gives NaN.
        strong_cost: the cost of one strong call (> 0).
        weak_cost: the cost of one weak call (>= 0).

    Returns:
        The saving as a fraction of the always-strong cost: 0 at share 1, ``1 - weak_cost / strong_cost``
        at share 0.

    Raises:
        InvalidInputError: a value is out of range or not a number.
    """
    strong_price = real(strong_cost, "strong_cost", 0.0, low_open=True, error=InvalidInputError)
    weak_price = real(weak_cost, "weak_cost", 0.0, error=InvalidInputError)
    if isinstance(share_strong, (float, np.floating)) and math.isnan(share_strong):
        return math.nan
    share = real(share_strong, "share_strong", 0.0, 1.0, error=InvalidInputError)
    return 1.0 - (share * strong_price + (1.0 - share) * weak_price) / strong_price


def oracle_score(strong: Any, weak: Any) -> np.ndarray:
    """The oracle's score: the true gain of the strong model, ``strong - weak``.

    ``apgr(oracle_score(s, w), s, w)`` is the oracle's APGR: queries the strong model answers better go to
    it first, ties (equal gain) in random order. Its quality curve is the highest possible at every cut
    point, so (when the strong model is the better one on average) no router has a higher APGR. It falls
    at the end, where the budget forces the
    queries the weak model answers better onto the strong one. (RouteLLM's "optimal" curve instead never
    uses more strong calls than help, and it is sampled at 11 shares; on its data that reads 1.29 / 1.13 on
    MMLU / GSM8K against 1.285 / 1.121 here.)

    Args:
        strong, weak: (N,) each model's quality per query, as for :func:`quality_curve`.

    Returns:
        (N,) float64 scores.

    Raises:
        InvalidInputError: as for :func:`quality_curve`.
    """
    s, w = _vectors(strong=strong, weak=weak)
    return s - w


def random_score(n: int) -> np.ndarray:
    """Random routing's score: a constant, so every query ties and each cut point is the expected quality
    of sending k random queries to the strong model.

    Args:
        n: the number of queries (>= 1).

    Returns:
        (n,) zeros.

    Raises:
        InvalidInputError: ``n`` is not an int >= 1.
    """
    return np.zeros(integer(n, "n", 1, error=InvalidInputError))


def _no_gap(q_strong: Any, q_weak: Any) -> Any:
    """Where PGR is undefined: the strong and the weak mean quality are equal up to rounding (graded scores
    whose sums differ in the last bit count as equal)."""
    return np.abs(q_strong - q_weak) <= 1e-12 * np.maximum(np.abs(q_strong), np.abs(q_weak))


def _resamples(rng: np.random.Generator, n: int, n_boot: int) -> Iterator[np.ndarray]:
    """Row indices of ``n_boot`` resamples with replacement, a block of rows at a time."""
    step = max(1, _BOOT_CELLS // n)
    for first in range(0, n_boot, step):
        yield rng.integers(0, n, size=(min(step, n_boot - first), n))


def _apgr_counted(arrays: list[np.ndarray], indices: np.ndarray) -> np.ndarray:
    """APGR of each resample (a row of ``indices``), vectorised: a resample is the original rows taken
    with multiplicities, its tie groups are the original groups, so only the group sums change."""
    score, s, w = arrays
    b, n = indices.shape
    counts = np.bincount((indices + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
    order, starts = _groups(score)
    counts = counts[:, order].astype(np.float64)
    size = np.add.reduceat(counts, starts, axis=1)
    s_sum = np.add.reduceat(counts * s[order], starts, axis=1)
    w_sum = np.add.reduceat(counts * w[order], starts, axis=1)
    zero = np.zeros((b, 1))
    s_cum = np.concatenate((zero, np.cumsum(s_sum, axis=1)), axis=1)
    w_cum = np.concatenate((zero, np.cumsum(w_sum, axis=1)), axis=1)
    quality = (s_cum + (w_cum[:, -1:] - w_cum)) / n
    gap = quality[:, -1:] - quality[:, :1]
    undefined = _no_gap(quality[:, -1:], quality[:, :1])
    with np.errstate(divide="ignore", invalid="ignore"):  # the undefined rows, set to NaN below
        pgr = (quality - quality[:, :1]) / gap
        area = np.sum(size * (pgr[:, :-1] + pgr[:, 1:]), axis=1) / (2 * n)
    area[undefined[:, 0]] = np.nan
    return area


def bootstrap(metric: Callable[..., float], *arrays: Any, n_boot: int = 1000, seed: int = 0,
              alpha: float = 0.05) -> tuple[float, float, float]:
    """A metric and its percentile bootstrap confidence interval, resampling rows with replacement.

    Every array is resampled with the same rows. :func:`apgr` is resampled in a vectorised way (by
    counting how often each row is drawn); any other metric is called once per resample. Resamples on
    which the metric is undefined (it returns NaN or raises InvalidInputError, e.g. PGR when a resample
    has both models equally good) are left out of the percentiles.

    Args:
        metric: called as ``metric(*arrays)``; returns a number.
        *arrays: one or more arrays with the same number of rows (their first dimension).
        n_boot: the number of resamples (>= 1).
        seed: seeds the resampling, so equal seeds give equal intervals (and paired resamples for
            different scores of the same rows).
        alpha: 1 - the confidence level, in (0, 1); 0.05 gives a 95% interval.

    Returns:
        ``(estimate, low, high)``: the metric on all rows, and the alpha/2 and 1 - alpha/2 percentiles of
        the resampled values (NaN when the metric is undefined on every resample).

    Raises:
        InvalidInputError: no arrays, arrays of different lengths or without rows, or a bad setting; the
            metric's own errors on all rows propagate.
    """
    if not callable(metric):
        raise InvalidInputError(f"metric must be callable, got {type(metric).__name__}")
    if not arrays:
        raise InvalidInputError("arrays: give at least one array to resample")
    count = integer(n_boot, "n_boot", 1, error=InvalidInputError)
    level = real(alpha, "alpha", 0.0, 1.0, low_open=True, high_open=True, error=InvalidInputError)
    rng = np.random.default_rng(integer(seed, "seed", 0, error=InvalidInputError))
    data = [np.asarray(a) for a in arrays]
    for i, a in enumerate(data):
        if a.ndim == 0 or a.shape[0] == 0:
            raise InvalidInputError(f"arrays[{i}] must have at least one row, got shape {a.shape}")
        if a.shape[0] != data[0].shape[0]:
            raise InvalidInputError(f"arrays[{i}] has {a.shape[0]} rows but arrays[0] has {data[0].shape[0]}")
    estimate = float(metric(*data))
    n = data[0].shape[0]
    values = np.empty(count)
    done = 0
    if metric is apgr and len(data) == 3:
        checked = _vectors(strong_score=data[0], strong=data[1], weak=data[2])
        for indices in _resamples(rng, n, count):
            values[done:done + len(indices)] = _apgr_counted(checked, indices)
            done += len(indices)
    else:
        for indices in _resamples(rng, n, count):
            for rows in indices:
                try:
                    values[done] = float(metric(*(a[rows] for a in data)))
                except InvalidInputError:
                    values[done] = math.nan
                done += 1
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        return estimate, math.nan, math.nan
    low, high = np.percentile(defined, [50.0 * level, 100.0 - 50.0 * level])
    return estimate, float(low), float(high)
