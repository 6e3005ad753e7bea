"""tinydancer.calibration: the Learn-then-Test guarantee checked over many calibration draws, the exact binomial
tail, the betting p-value, the conformal uncertainty, storage as a dict, and every bad input.

The statistical tests use synthetic data whose true risk is known in closed form:

* risk 1: score ~ U(0, 1) and P(not good enough | score = s) = 0.9 (1 - s)^2, so the error share among
  queries with score >= t is R(t) = 0.3 (1 - t)^2; at target 0.9 the best threshold is t* = 1 - sqrt(1/3),
  routing 57.7% of queries.
* risk 2: u ~ U(0, 1), gain = 0.6 u, the strong model right with probability 0.9 and the weak one with
  0.9 - 0.6 u. Routing the share x = gain-threshold / 0.6 to the weak model loses 0.3 x^2 of accuracy, so
  the bound E l <= 0 holds up to x* = sqrt((1 - target) 0.9 / 0.3).

Each guarantee test draws 200 calibration sets from one fixed seed and checks that the share of draws whose
threshold is truly too lenient is at most delta plus three binomial standard errors, and that the mean true
lightweight share is a stated fraction of the best one.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from tinydancer import calibration
from tinydancer.calibration import (
    MAX_FAILURE_VALUES,
    Calibration,
    binomial_tail,
    calibrate_lightweight_error,
    calibrate_quality_loss,
    lightweight_error_p_values,
    quality_loss_p_values,
)
from tinydancer.errors import InvalidInputError

DRAWS = 200
DELTA = 0.1


def allowed_violations(delta: float = DELTA, draws: int = DRAWS) -> float:
    """delta plus three standard errors of a binomial proportion over ``draws`` draws."""
    return delta + 3.0 * math.sqrt(delta * (1.0 - delta) / draws)


# ------------------------------------------------------------------------------------------- synthetic data


def lightweight_data(rng: np.random.Generator, n: int, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Risk-1 data: scores and good_enough labels (scores rounded to ``decimals`` when given)."""
    s = rng.uniform(size=n)
    good = rng.uniform(size=n) >= 0.9 * (1.0 - s) ** 2
    return (s if decimals is None else np.round(s, decimals)), good


def lightweight_true_risk(t: float, decimals: int | None = None) -> float:
    """P(not good enough | score >= t) for :func:`lightweight_data`."""
    lower = t if decimals is None else t - 0.5 * 10.0**-decimals  # rounded score >= t <=> s >= t - half a step
    lower = min(max(lower, 0.0), 1.0)
    return 0.3 * (1.0 - lower) ** 2


BEST_SCORE_THRESHOLD = 1.0 - math.sqrt(1.0 / 3.0)  # R(t) = 0.1 at target 0.9


def quality_data(rng: np.random.Generator, n: int, graded: bool = False):
    """Risk-2 data: gains, strong and weak qualities. Graded: strong ~ U(0.8, 1), weak = strong (1 - u B) with
    B ~ Bernoulli(2/3), which has the same means as the 0/1 version."""
    u = rng.uniform(size=n)
    if graded:
        strong = rng.uniform(0.8, 1.0, size=n)
        weak = strong * (1.0 - u * (rng.uniform(size=n) < 2.0 / 3.0))
    else:
        strong = rng.uniform(size=n) < 0.9
        weak = rng.uniform(size=n) < 0.9 - 0.6 * u
    return 0.6 * u, strong, weak


def quality_true_loss(t: float, target: float) -> float:
    """E l(t) for :func:`quality_data`: the accuracy lost minus the allowed (1 - target) E[strong]."""
    x = min(max(t / 0.6, 0.0), 1.0)
    return 0.3 * x * x - (1.0 - target) * 0.9


def best_quality_share(target: float) -> float:
    return min(1.0, math.sqrt((1.0 - target) * 0.9 / 0.3))


# ------------------------------------------------------------------------------------------- binomial tail


def exact_tail(k: int, n: int, p: Fraction) -> Fraction:
    return sum((math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(min(k, n) + 1)), Fraction(0))


@pytest.mark.parametrize("p", [Fraction(1, 100), Fraction(1, 10), Fraction(37, 100), Fraction(1, 2), Fraction(9, 10)])
def test_binomial_tail_matches_exact_sums(p: Fraction):
    for n in [0, 1, 2, 3, 7, 20, 41, 60]:
        for k in range(-2, n + 2):
            expected = float(exact_tail(k, n, p)) if k >= 0 else 0.0
            got = binomial_tail(k, n, float(p))
            assert isinstance(got, float)
            assert got == pytest.approx(expected, rel=1e-12, abs=0.0), (k, n, p)


def test_binomial_tail_large_n_against_integer_arithmetic():
    # With p = 1/10, P(X <= k) = sum_j C(n, j) 9^(n - j) / 10^n exactly.
    n = 2000
    ks = np.array([0, 50, 150, 180, 199, 200, 201, 230, 400, 1999])
    got = binomial_tail(ks, n, 0.1)
    for k, value in zip(ks, got, strict=True):
        numerator = sum(math.comb(n, j) * 9 ** (n - j) for j in range(int(k) + 1))
        assert value == pytest.approx(float(Fraction(numerator, 10**n)), rel=1e-10)


def test_binomial_tail_in_log_space_far_below_the_smallest_float():
    log_cdf = calibration._log_binomial_cdf(np.array([0, 1]), np.array([20000, 20000]), 0.1)
    assert log_cdf[0] == pytest.approx(20000 * math.log(0.9), rel=1e-13)
    # P(X <= 1) = 0.9^n (1 + n 0.1 / 0.9)
    assert log_cdf[1] == pytest.approx(20000 * math.log(0.9) + math.log1p(20000 * 0.1 / 0.9), rel=1e-12)
    assert binomial_tail(0, 20000, 0.1) == 0.0  # underflows only at the very end


def test_binomial_tail_is_monotone():
    n = 500
    k = np.arange(-1, n + 2)
    by_k = binomial_tail(k, n, 0.2)
    assert np.all(np.diff(by_k) >= 0.0) and by_k[0] == 0.0 and by_k[-1] == 1.0
    by_n = binomial_tail(40, np.arange(40, 2000), 0.2)  # more trials, same count: less likely
    assert np.all(np.diff(by_n) <= 0.0)
    by_p = [binomial_tail(40, 300, p) for p in np.linspace(0.05, 0.5, 30)]
    assert np.all(np.diff(by_p) <= 0.0)


def test_binomial_tail_broadcasts_and_checks_its_arguments():
    assert binomial_tail([[3], [4]], [10, 20, 30], 0.3).shape == (2, 3)
    for args, name in [((1.5, 10, 0.3), "k"), ((1, 10.5, 0.3), "n"), ((1, -1, 0.3), "n"), ((1, 10, 0.0), "p"),
                       ((1, 10, 1.0), "p"), ((1, 10, math.nan), "p"), (("a", 10, 0.3), "k"), ((1, None, 0.3), "n")]:
        with pytest.raises(InvalidInputError, match=name):
            binomial_tail(*args)


# ------------------------------------------------------------------------------------------- risk 1


@pytest.mark.parametrize("n, decimals, min_share", [(2000, None, 0.85), (500, None, 0.70), (1000, 2, 0.75)])
def test_lightweight_error_guarantee_over_many_draws(n: int, decimals: int | None, min_share: float):
    rng = np.random.default_rng(20240611 + n)
    violations, shares = 0, []
    for _ in range(DRAWS):
        score, good = lightweight_data(rng, n, decimals)
        cal = calibrate_lightweight_error(score, good, target=0.9, delta=DELTA)
        if cal.certified:
            violations += lightweight_true_risk(cal.threshold, decimals) > 0.1 + 1e-12
            shares.append(1.0 - cal.threshold if decimals is None else 1.0 - (cal.threshold - 0.005))
        else:
            shares.append(0.0)
    best = 1.0 - BEST_SCORE_THRESHOLD
    print(f"risk 1, n={n}, decimals={decimals}: violations {violations / DRAWS:.3f}, "
          f"mean share {np.mean(shares):.3f} = {np.mean(shares) / best:.2f} of the best {best:.3f}")
    assert violations / DRAWS <= allowed_violations()
    assert np.mean(shares) >= min_share * best


def test_lightweight_error_p_values_are_super_uniform_at_the_boundary():
    # At t* the risk is exactly 1 - target: the test's p-value must be <= delta at most delta of the time.
    rng = np.random.default_rng(7)
    rejected = 0
    for _ in range(2000):
        score, good = lightweight_data(rng, 300)
        thresholds, p = lightweight_error_p_values(score, good, 0.9, DELTA, grid=[BEST_SCORE_THRESHOLD])
        rejected += thresholds.size == 1 and p[0] <= DELTA
    assert rejected / 2000 <= allowed_violations(DELTA, 2000)


def test_lightweight_error_walks_fixed_sequence():
    rng = np.random.default_rng(11)
    score, good = lightweight_data(rng, 1500)
    thresholds, p = lightweight_error_p_values(score, good, 0.9, DELTA)
    assert np.all(np.diff(thresholds) < 0)  # strict to lenient
    first_above = int(np.flatnonzero(p > DELTA)[0])
    cal = calibrate_lightweight_error(score, good, 0.9, DELTA)
    assert cal.certified and cal.threshold == thresholds[first_above - 1]
    assert cal.lightweight_share == np.mean(score >= cal.threshold)
    assert np.array_equal(cal.use_lightweight(score), score >= cal.threshold)
    # The first tested candidate routes the fewest queries that zero errors could reject: 0.9^m <= 0.1.
    m0 = math.ceil(math.log(DELTA) / math.log(0.9))
    assert np.sum(score >= thresholds[0]) == m0
    assert cal.failure_count == np.sum(~good) and len(cal.failure_values) == MAX_FAILURE_VALUES


def test_lightweight_error_with_a_fixed_grid():
    rng = np.random.default_rng(12)
    grid = np.linspace(0.0, 1.0, 101)
    violations = 0
    for _ in range(DRAWS):
        score, good = lightweight_data(rng, 1000)
        cal = calibrate_lightweight_error(score, good, 0.9, DELTA, grid=grid)
        assert cal.certified and cal.threshold in grid
        violations += lightweight_true_risk(cal.threshold) > 0.1
    assert violations / DRAWS <= allowed_violations()


def test_lightweight_error_uncertifiable():
    rng = np.random.default_rng(13)
    score, good = lightweight_data(rng, 1000)
    for cal in [calibrate_lightweight_error(score, good, target=0.9999),  # no threshold is that safe here
                calibrate_lightweight_error(score[:5], np.ones(5, bool), target=0.9),  # 0.9^5 > 0.1: too few
                calibrate_lightweight_error(score, np.zeros(1000, bool), target=0.5)]:  # always wrong
        assert not cal.certified and cal.threshold == math.inf and cal.lightweight_share == 0.0
        assert not cal.use_lightweight(score).any() and not cal.use_lightweight(1e300)
    assert calibrate_lightweight_error(score[:22], np.ones(22, bool), 0.9).certified  # 0.9^22 <= 0.1


# ------------------------------------------------------------------------------------------- risk 2


@pytest.mark.parametrize("n, target, graded, min_share",
                         [(2000, 0.9, False, 0.80), (2000, 0.95, False, 0.70), (2000, 0.9, True, 0.80)])
def test_quality_loss_guarantee_over_many_draws(n: int, target: float, graded: bool, min_share: float):
    rng = np.random.default_rng(20240612 + int(target * 100) + graded)
    violations, shares = 0, []
    for _ in range(DRAWS):
        gain, strong, weak = quality_data(rng, n, graded)
        cal = calibrate_quality_loss(gain, strong, weak, target=target, delta=DELTA)
        if cal.certified:
            violations += quality_true_loss(cal.threshold, target) > 1e-12
            shares.append(min(cal.threshold / 0.6, 1.0))
        else:
            shares.append(0.0)
    best = best_quality_share(target)
    print(f"risk 2, n={n}, target={target}, graded={graded}: violations {violations / DRAWS:.3f}, "
          f"mean share {np.mean(shares):.3f} = {np.mean(shares) / best:.2f} of the best {best:.3f}")
    assert violations / DRAWS <= allowed_violations()
    assert np.mean(shares) >= min_share * best


def test_quality_loss_p_values_are_super_uniform_at_the_boundary():
    # At the best threshold E l = 0 exactly: the betting p-value is <= delta at most delta of the time.
    target = 0.9
    t_best = 0.6 * best_quality_share(target)
    rng = np.random.default_rng(17)
    rejected = 0
    for _ in range(2000):
        gain, strong, weak = quality_data(rng, 400)
        thresholds, p = quality_loss_p_values(gain, strong, weak, target, grid=[t_best])
        assert thresholds[0] == -math.inf and thresholds[1] == t_best
        rejected += p[1] <= DELTA
    assert rejected / 2000 <= allowed_violations(DELTA, 2000)


def test_quality_loss_walks_fixed_sequence():
    rng = np.random.default_rng(18)
    gain, strong, weak = quality_data(rng, 1500)
    thresholds, p = quality_loss_p_values(gain, strong, weak, 0.9)
    assert thresholds[0] == -math.inf and np.all(np.diff(thresholds) > 0)
    first_above = int(np.flatnonzero(p > DELTA)[0])
    cal = calibrate_quality_loss(gain, strong, weak, 0.9, DELTA)
    assert cal.certified and cal.threshold == thresholds[first_above - 1]
    assert cal.lightweight_share == np.mean(gain <= cal.threshold)
    assert np.array_equal(cal.use_lightweight(gain), gain <= cal.threshold)
    assert cal.failure_count == np.sum(strong > weak)
    assert calibrate_quality_loss(gain, strong, weak, 0.9, DELTA) == cal  # the blocks' permutation is fixed


def test_quality_loss_uncertifiable():
    rng = np.random.default_rng(19)
    n = 1000
    gain = rng.uniform(size=n)
    strong, weak = np.ones(n), np.zeros(n)  # every routed query loses everything
    for cal in [calibrate_quality_loss(gain, strong, weak, target=0.999),
                calibrate_quality_loss(gain[:5], strong[:5], strong[:5], target=0.9),  # too few to learn from
                calibrate_quality_loss(gain, np.zeros(n), np.zeros(n), target=0.9)]:  # nothing to keep
        assert not cal.certified and cal.threshold == -math.inf and cal.lightweight_share == 0.0
        assert not cal.use_lightweight(gain).any()


def test_fan_inequality_behind_the_betting_bound():
    # log(1 + lam y) >= lam y + (log(1 - lam) + lam) y^2 for y >= -1 and lam in [0, 1).
    y = np.linspace(-1.0, 20.0, 4001)[:, None]
    lam = np.linspace(0.0, calibration._MAX_BET, 51)[None, :]
    assert np.all(np.log1p(lam * y) >= lam * y + (np.log1p(-lam) + lam) * y * y - 1e-12)


# ------------------------------------------------------------------------------------------- uncertainty


def exact_uncertainty(cal_values: np.ndarray, failures: np.ndarray, risk: str) -> np.ndarray:
    if risk == calibration.RISK_LIGHTWEIGHT_ERROR:
        counts = (failures[None, :] >= cal_values[:, None]).sum(axis=1)
    else:
        counts = (failures[None, :] <= cal_values[:, None]).sum(axis=1)
    return (1.0 + counts) / (1.0 + failures.size)


@pytest.mark.parametrize("risk", calibration.RISKS)
def test_uncertainty_is_super_uniform_on_fresh_failures(risk: str):
    rng = np.random.default_rng(23)
    levels = np.array([0.02, 0.05, 0.1, 0.2, 0.5])
    below = np.zeros(levels.size)
    fresh_total = 0
    for _ in range(100):
        if risk == calibration.RISK_LIGHTWEIGHT_ERROR:
            score, good = lightweight_data(rng, 1000)
            cal = calibrate_lightweight_error(score, good, 0.9)
            new_score, new_good = lightweight_data(rng, 1000)
            fresh = new_score[~new_good]
        else:
            gain, strong, weak = quality_data(rng, 1000)
            cal = calibrate_quality_loss(gain, strong, weak, 0.9)
            new_gain, new_strong, new_weak = quality_data(rng, 1000)
            fresh = new_gain[new_strong > new_weak]
        u = cal.uncertainty(fresh)
        below += (u[:, None] <= levels[None, :]).sum(axis=0)
        fresh_total += fresh.size
    share = below / fresh_total
    print(f"{risk}: share of fresh failures with uncertainty <= {levels.tolist()}: {np.round(share, 4).tolist()}")
    assert np.all(share <= levels + 3.0 * np.sqrt(levels * (1 - levels) / fresh_total) + 0.005)


@pytest.mark.parametrize("risk", calibration.RISKS)
def test_uncertainty_from_quantiles_is_conservative_and_close(risk: str):
    rng = np.random.default_rng(29)
    for n in [50, 900, 3000]:  # fewer failures than MAX_FAILURE_VALUES (exact), and more (quantiles)
        if risk == calibration.RISK_LIGHTWEIGHT_ERROR:
            score, good = lightweight_data(rng, n)
            cal = calibrate_lightweight_error(score, good, 0.9)
            failures, probe = score[~good], np.r_[score, rng.uniform(-0.1, 1.1, 500), score[~good]]
        else:
            gain, strong, weak = quality_data(rng, n)
            cal = calibrate_quality_loss(gain, strong, weak, 0.9)
            failures, probe = gain[strong > weak], np.r_[gain, rng.uniform(-0.1, 0.7, 500), gain[strong > weak]]
        exact = exact_uncertainty(probe, failures, risk)
        approx = cal.uncertainty(probe)
        assert cal.failure_count == failures.size
        assert len(cal.failure_values) == min(failures.size, MAX_FAILURE_VALUES)
        if failures.size <= MAX_FAILURE_VALUES:
            assert np.array_equal(approx, exact)
        else:
            assert np.all(approx >= exact) and np.all(approx - exact < 1.0 / (MAX_FAILURE_VALUES - 1))
            assert np.max(approx - exact) > 0.0  # quantiles do lose a little


def test_uncertainty_shapes_and_meaning():
    rng = np.random.default_rng(31)
    score, good = lightweight_data(rng, 1000)
    cal = calibrate_lightweight_error(score, good, 0.9)
    assert isinstance(cal.uncertainty(0.5), float)
    assert cal.uncertainty(np.zeros((2, 3))).shape == (2, 3)
    assert cal.uncertainty(2.0) == 1.0 / (1.0 + cal.failure_count)  # above every failure
    assert cal.uncertainty(-1.0) == 1.0  # below every failure
    assert cal.uncertainty(0.9) < cal.uncertainty(0.2)
    no_failures = calibrate_lightweight_error(score, np.ones(1000, bool), 0.9)
    assert no_failures.failure_count == 0 and no_failures.uncertainty(0.99) == 1.0
    gain, strong, weak = quality_data(rng, 1000)
    cal2 = calibrate_quality_loss(gain, strong, weak, 0.9)
    assert cal2.uncertainty(-1.0) == 1.0 / (1.0 + cal2.failure_count) and cal2.uncertainty(1.0) == 1.0
    assert cal2.uncertainty(0.05) < cal2.uncertainty(0.5)


# ------------------------------------------------------------------------------------------- storage


def stored_calibrations() -> list[Calibration]:
    rng = np.random.default_rng(37)
    score, good = lightweight_data(rng, 3000)
    gain, strong, weak = quality_data(rng, 300, graded=True)
    return [calibrate_lightweight_error(score, good, 0.9),
            calibrate_lightweight_error(score[:100], good[:100], 0.9),
            calibrate_lightweight_error(score, good, 0.9999),
            calibrate_quality_loss(gain, strong, weak, 0.9),
            calibrate_quality_loss(gain, strong, weak, 0.9999)]


def test_to_dict_round_trips_through_strict_json():
    cals = stored_calibrations()
    assert [c.certified for c in cals] == [True, False, False, True, False]
    for cal in cals:
        text = json.dumps(cal.to_dict(), allow_nan=False)
        assert len(text) < 6000
        back = Calibration.from_dict(json.loads(text))
        assert back == cal
        assert back.threshold == cal.threshold and back.failure_values == cal.failure_values
        assert type(back.failure_values) is tuple


def good_dict() -> dict:
    return stored_calibrations()[0].to_dict()


@pytest.mark.parametrize("change, key", [
    (lambda d: d.pop("target"), "target"),
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d.update(risk="latency"), "risk"),
    (lambda d: d.update(risk=None), "risk"),
    (lambda d: d.update(certified=1), "certified"),
    (lambda d: d.update(threshold=None), "threshold"),
    (lambda d: d.update(threshold="0.5"), "threshold"),
    (lambda d: d.update(threshold=True), "threshold"),
    (lambda d: d.update(certified=False), "threshold"),  # an uncertified calibration stores None
    (lambda d: d.update(target=1.0), "target"),
    (lambda d: d.update(target=0), "target"),
    (lambda d: d.update(delta=float("nan")), "delta"),
    (lambda d: d.update(delta="0.1"), "delta"),
    (lambda d: d.update(n=0), "n"),
    (lambda d: d.update(n=2.0), "n"),
    (lambda d: d.update(n=True), "n"),
    (lambda d: d.update(lightweight_share=1.5), "lightweight_share"),
    (lambda d: d.update(lightweight_share=0.0), "lightweight_share"),
    (lambda d: d.update(failure_count=-1), "failure_count"),
    (lambda d: d.update(failure_count=10**9), "failure_count"),
    (lambda d: d.update(failure_count=100), "failure_values"),  # 100 failures keep 100 values, not 256
    (lambda d: d.update(failure_values="0.1"), "failure_values"),
    (lambda d: d.update(failure_values=d["failure_values"][::-1]), "failure_values"),
    (lambda d: d["failure_values"].__setitem__(3, float("inf")), "failure_values"),
    (lambda d: d["failure_values"].__setitem__(3, None), "failure_values"),
])
def test_from_dict_refuses_bad_dicts(change, key: str):
    d = good_dict()
    change(d)
    with pytest.raises(InvalidInputError, match=key):
        Calibration.from_dict(d)


def test_from_dict_refuses_non_dicts_and_bad_uncertified_fields():
    with pytest.raises(InvalidInputError, match="dict"):
        Calibration.from_dict([("risk", "quality_loss")])
    d = stored_calibrations()[2].to_dict()
    for key, value in [("threshold", 0.5), ("lightweight_share", 0.2)]:
        bad = dict(d, **{key: value})
        with pytest.raises(InvalidInputError, match=key):
            Calibration.from_dict(bad)


def test_constructor_checks_fields():
    fields = stored_calibrations()[0].to_dict()
    with pytest.raises(InvalidInputError, match="threshold"):
        Calibration(**dict(fields, certified=False, lightweight_share=0.0))  # threshold must then be +inf
    with pytest.raises(InvalidInputError, match="threshold"):
        Calibration(**dict(fields, risk="quality_loss", certified=False, threshold=math.inf, lightweight_share=0.0))
    cal = Calibration(**dict(fields, failure_values=list(fields["failure_values"])))
    assert isinstance(cal.failure_values, tuple)


# ------------------------------------------------------------------------------------------- bad inputs


GOOD_SCORE = np.linspace(0.0, 1.0, 50)
GOOD_LABELS = np.ones(50)


@pytest.mark.parametrize("kwargs, name", [
    ({"score": None}, "score"),
    ({"score": np.zeros((5, 10))}, "score"),
    ({"score": np.array([])}, "score"),
    ({"score": np.r_[GOOD_SCORE[:-1], np.nan]}, "score"),
    ({"score": np.r_[GOOD_SCORE[:-1], np.inf]}, "score"),
    ({"score": ["a"] * 50}, "score"),
    ({"score": GOOD_SCORE + 1j}, "score"),
    ({"good_enough": np.ones(49)}, "good_enough"),
    ({"good_enough": np.full(50, 0.5)}, "good_enough"),
    ({"good_enough": np.full(50, 2)}, "good_enough"),
    ({"good_enough": None}, "good_enough"),
    ({"target": 0.0}, "target"),
    ({"target": 1.0}, "target"),
    ({"target": math.nan}, "target"),
    ({"target": True}, "target"),
    ({"target": "0.9"}, "target"),
    ({"delta": 0.0}, "delta"),
    ({"delta": 1.0}, "delta"),
    ({"delta": None}, "delta"),
    ({"grid": []}, "grid"),
    ({"grid": [[0.5]]}, "grid"),
    ({"grid": [0.5, math.nan]}, "grid"),
])
def test_calibrate_lightweight_error_bad_inputs(kwargs: dict, name: str):
    args = {"score": GOOD_SCORE, "good_enough": GOOD_LABELS, "target": 0.9, "delta": 0.1, **kwargs}
    with pytest.raises(InvalidInputError, match=name):
        calibrate_lightweight_error(**args)
    with pytest.raises(InvalidInputError, match=name):
        lightweight_error_p_values(**args)


@pytest.mark.parametrize("kwargs, name", [
    ({"gain": np.zeros((5, 10))}, "gain"),
    ({"gain": np.array([])}, "gain"),
    ({"gain": np.r_[GOOD_SCORE[:-1], np.nan]}, "gain"),
    ({"gain": None}, "gain"),
    ({"strong": np.ones(49)}, "strong"),
    ({"strong": np.full(50, 1.5)}, "strong"),
    ({"strong": np.full(50, -0.1)}, "strong"),
    ({"weak": np.ones(51)}, "weak"),
    ({"weak": np.full(50, np.nan)}, "weak"),
    ({"weak": object()}, "weak"),
    ({"target": 1.0}, "target"),
    ({"target": -0.5}, "target"),
    ({"delta": 1.5}, "delta"),
    ({"grid": [np.inf]}, "grid"),
])
def test_calibrate_quality_loss_bad_inputs(kwargs: dict, name: str):
    args = {"gain": GOOD_SCORE, "strong": GOOD_LABELS, "weak": GOOD_LABELS, "target": 0.9, "delta": 0.1, **kwargs}
    with pytest.raises(InvalidInputError, match=name):
        calibrate_quality_loss(**args)
    if "delta" not in kwargs:
        args.pop("delta")
        with pytest.raises(InvalidInputError, match=name):
            quality_loss_p_values(**args)


def test_calibration_methods_refuse_bad_values():
    cal = stored_calibrations()[0]
    for bad in [math.nan, [0.1, math.inf], "x", None]:
        with pytest.raises(InvalidInputError, match="values"):
            cal.use_lightweight(bad)
        with pytest.raises(InvalidInputError, match="values"):
            cal.uncertainty(bad)


def test_lists_and_booleans_are_accepted():
    score = list(np.linspace(0, 1, 400))
    good = [s > 0.2 for s in score]
    cal = calibrate_lightweight_error(score, good, 0.9)
    assert cal.certified and cal.n == 400
    assert calibrate_quality_loss(score, good, [True] * 400, 0.9).failure_count == 0


@pytest.mark.parametrize("n", [40, 3000])  # every failure stored, and quantiles of them
def test_one_number_and_arrays_give_the_same_uncertainty_and_decision(n):
    rng = np.random.default_rng(11)
    score, good = lightweight_data(rng, n, decimals=2)  # ties between queries and stored values
    strong, weak = (rng.random(n) < 0.8).astype(float), (rng.random(n) < 0.65).astype(float)
    gain = np.round(rng.random(n) - 0.3, 2)
    for cal, values in ((calibrate_lightweight_error(score, good, 0.8), score),
                        (calibrate_quality_loss(gain, strong, weak, 0.9), gain)):
        probes = np.concatenate([values[:200], [-5.0, 5.0], np.asarray(cal.failure_values[:20])])
        arrays = cal.uncertainty(probes)
        assert [cal.uncertainty(float(v)) for v in probes] == arrays.tolist()
        assert [bool(cal.use_lightweight(float(v))) for v in probes] == cal.use_lightweight(probes).tolist()
