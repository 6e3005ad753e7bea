"""tinydancer.evaluation.metrics against plain slow references, hand-made examples and bad inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tinydancer.errors import InvalidInputError
from tinydancer.evaluation import metrics
from tinydancer.evaluation.metrics import (
    GPT4_PRICE,
    MIXTRAL_PRICE,
    apgr,
    bootstrap,
    cost_saving,
    cpt,
    oracle_score,
    pgr_curve,
    quality_curve,
    random_score,
    share_for_quality,
)

# ---------------------------------------------------------------------------------------------- references


def routed_quality(order: np.ndarray, strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """Quality at k = 0..N when the rows go to the strong model in ``order``, one cut point at a time."""
    n = len(order)
    out = np.empty(n + 1)
    for k in range(n + 1):
        to_strong = np.zeros(n, dtype=bool)
        to_strong[order[:k]] = True
        out[k] = np.mean(np.where(to_strong, strong, weak))
    return out


def enumerated_quality(score, strong, weak) -> np.ndarray:
    """Expected quality under random tie-breaking, by enumerating every tie-breaking order (small N)."""
    score, strong, weak = (np.asarray(a, dtype=np.float64) for a in (score, strong, weak))
    n = len(score)
    total = np.zeros(n + 1)
    count = 0
    for perm in itertools.permutations(range(n)):
        # highest score first; among equal scores, the order of this permutation
        order = np.array(sorted(range(n), key=lambda i: (-score[i], perm[i])))
        total += routed_quality(order, strong, weak)
        count += 1
    return total / count


def inclusion_quality(score, strong, weak) -> np.ndarray:
    """Expected quality at each cut point from each row's probability of being sent to the strong model:
    1 above the k-th score, 0 below, and (places left) / (rows tied) for the rows tied with it."""
    score, strong, weak = (np.asarray(a, dtype=np.float64) for a in (score, strong, weak))
    n = len(score)
    ranked = np.sort(score)[::-1]
    out = np.empty(n + 1)
    for k in range(n + 1):
        p = np.zeros(n)
        if k > 0:
            cut = ranked[k - 1]
            above = score > cut
            tied = score == cut
            p[above] = 1.0
            p[tied] = (k - above.sum()) / tied.sum()
        out[k] = np.mean(p * strong + (1 - p) * weak)
    return out


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def random_case(rng: np.random.Generator, n: int, graded: bool, levels: int):
    """A score with many ties (``levels`` distinct values) and boolean or 1-10 qualities."""
    score = rng.integers(0, levels, n).astype(float) * 0.25
    if graded:
        strong = rng.integers(1, 11, n).astype(float)
        weak = rng.integers(1, 11, n).astype(float)
    else:
        strong = rng.random(n) < 0.8
        weak = rng.random(n) < 0.6
    return score, strong, weak


def gap_defined(strong, weak) -> bool:
    return not math.isclose(np.mean(strong), np.mean(weak), rel_tol=1e-9, abs_tol=1e-12)


# ---------------------------------------------------------------------------------------------- the curves


@pytest.mark.parametrize("graded", [False, True])
def test_quality_curve_is_the_expectation_over_tie_breaking(rng, graded):
    for n in (1, 2, 3, 5, 6):
        for _ in range(15):
            score, strong, weak = random_case(rng, n, graded, levels=3)
            share, quality = quality_curve(score, strong, weak)
            np.testing.assert_allclose(share, np.arange(n + 1) / n, rtol=0, atol=0)
            np.testing.assert_allclose(quality, enumerated_quality(score, strong, weak), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("levels", [2, 7, 1000])
def test_curves_match_the_slow_reference(rng, graded, levels):
    for n in (7, 40, 151):
        score, strong, weak = random_case(rng, n, graded, levels)
        reference = inclusion_quality(score, strong, weak)
        _, quality = quality_curve(score, strong, weak)
        np.testing.assert_allclose(quality, reference, rtol=1e-12, atol=1e-12)
        if not gap_defined(strong, weak):
            continue
        q_weak, q_strong = np.mean(weak), np.mean(strong)
        pgr_reference = (reference - q_weak) / (q_strong - q_weak)
        share, pgr = pgr_curve(score, strong, weak)
        np.testing.assert_allclose(pgr, pgr_reference, rtol=1e-10, atol=1e-10)
        assert pgr[0] == 0.0 and pgr[-1] == 1.0
        assert apgr(score, strong, weak) == pytest.approx(trapezoid(pgr_reference, share), rel=1e-12, abs=1e-12)


def test_curve_ends_are_the_two_models(rng):
    score, strong, weak = random_case(rng, 500, True, 20)
    _, quality = quality_curve(score, strong, weak)
    assert quality[0] == pytest.approx(np.mean(weak), rel=1e-14)
    assert quality[-1] == pytest.approx(np.mean(strong), rel=1e-14)


def test_random_routing_has_apgr_one_half_exactly(rng):
    for n in (1, 2, 3, 10, 999, 14037):
        for graded in (False, True):
            _, strong, weak = random_case(rng, n, graded, 2)
            if not gap_defined(strong, weak):
                continue
            assert apgr(random_score(n), strong, weak) == 0.5
            assert apgr(np.full(n, -3.7), strong, weak) == 0.5


def test_a_constant_score_is_a_straight_line(rng):
    _, strong, weak = random_case(rng, 300, True, 2)
    share, quality = quality_curve(np.full(300, 2.0), strong, weak)
    np.testing.assert_allclose(quality, np.mean(weak) + share * (np.mean(strong) - np.mean(weak)), rtol=1e-13)
    share, pgr = pgr_curve(np.ones(300), strong, weak)
    np.testing.assert_allclose(pgr, share, rtol=1e-13, atol=1e-15)


def test_oracle_apgr_is_at_least_any_other(rng):
    for graded in (False, True):
        for _ in range(30):
            score, strong, weak = random_case(rng, 60, graded, 5)
            gain = np.asarray(strong, float) - np.asarray(weak, float)
            others = [score, random_score(60), rng.random(60), np.asarray(strong, float),
                      gain + rng.normal(0, 0.5, 60), -gain]
            _, best_quality = quality_curve(oracle_score(strong, weak), strong, weak)
            for other in others:  # the oracle's quality is the highest at every cut point
                assert np.all(best_quality >= quality_curve(other, strong, weak)[1] - 1e-12)
            if np.mean(strong) <= np.mean(weak):  # then PGR divides by a gap <= 0
                continue
            best = apgr(oracle_score(strong, weak), strong, weak)
            for other in others:
                assert best >= apgr(other, strong, weak) - 1e-12


def test_oracle_can_exceed_one():
    # gains 1, 1, -1: the oracle's PGR is 0, 1, 2, 1 at 0..3 strong calls
    strong, weak = [1, 1, 0], [0, 0, 1]
    np.testing.assert_array_equal(oracle_score(strong, weak), [1.0, 1.0, -1.0])
    assert apgr(oracle_score(strong, weak), strong, weak) == pytest.approx(3.5 / 3)
    _, pgr = pgr_curve(oracle_score(strong, weak), strong, weak)
    np.testing.assert_allclose(pgr, [0, 1, 2, 1])


def test_booleans_and_numbers_agree(rng):
    score, strong, weak = random_case(rng, 80, False, 4)
    assert apgr(score, strong, weak) == apgr(score, strong.astype(int), weak.astype(np.float32))


# ------------------------------------------------------------------------------- CPT and share for quality

# four queries, ranked 0..3: gains 1, 0, 0, 1; quality .25 .5 .5 .5 .75; PGR 0 .5 .5 .5 1
SCORE, STRONG, WEAK = [4, 3, 2, 1], [1, 0, 1, 1], [0, 0, 1, 0]


@pytest.mark.parametrize(("level", "share"), [(0.5, 0.25), (0.25, 0.125), (0.75, 0.875), (1.0, 1.0), (0.0, 0.0),
                                               (-1.0, 0.0), (0.5000001, 0.75 + 0.25 * 0.0000002)])
def test_cpt_by_hand(level, share):
    assert cpt(SCORE, STRONG, WEAK, level) == pytest.approx(share, abs=1e-12)


def test_cpt_default_and_never_reached():
    assert cpt(SCORE, STRONG, WEAK) == 0.25
    assert math.isnan(cpt(SCORE, STRONG, WEAK, 1.01))
    # the oracle reaches PGR 2 at 2 of 3 calls, and 1.5 half-way from 1 to 2 calls
    assert cpt([1, 1, 0], [1, 1, 0], [0, 0, 1], 1.5) == pytest.approx(0.5)


def test_cpt_inside_a_tie_group():
    # everything tied: PGR rises linearly from 0 to 1
    assert cpt([0, 0, 0, 0], [1, 1, 0, 1], [0, 0, 0, 0], 0.8) == pytest.approx(0.8)


@pytest.mark.parametrize(("fraction", "share"), [(0.9, 0.925), (0.5, 0.125), (1 / 3, 0.0), (0.0, 0.0), (1.0, 1.0),
                                                  (2 / 3, 0.25)])
def test_share_for_quality_by_hand(fraction, share):
    assert share_for_quality(SCORE, STRONG, WEAK, fraction) == pytest.approx(share, abs=1e-12)


def test_share_for_quality_default_and_never_reached(rng):
    assert share_for_quality(SCORE, STRONG, WEAK) == pytest.approx(0.925)
    assert math.isnan(share_for_quality(SCORE, STRONG, WEAK, 1.1))
    # full strong quality is reached at share 1 by any router, ties or not
    for _ in range(20):
        score, strong, weak = random_case(rng, 50, True, 3)
        assert share_for_quality(score, strong, weak, 1.0) <= 1.0


def test_share_for_quality_needs_no_pgr():
    # equal mean quality: PGR undefined, but quality is still reached
    assert share_for_quality([1, 0], [1, 0], [0, 1], 1.0) == 0.0


# ----------------------------------------------------------------------------------------------- cost


def test_published_prices():
    assert GPT4_PRICE == 24.7 and MIXTRAL_PRICE == 0.24


def test_cost_saving():
    assert cost_saving(1.0) == 0.0
    assert cost_saving(0.0) == pytest.approx(1 - 0.24 / 24.7)
    assert cost_saving(0.5, 10.0, 0.0) == 0.5
    assert cost_saving(0.25, strong_cost=4.0, weak_cost=2.0) == pytest.approx(1 - (1.0 + 1.5) / 4.0)
    assert cost_saving(1, 3, 3) == 0.0
    assert math.isnan(cost_saving(math.nan))
    assert math.isnan(cost_saving(np.float64("nan")))


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"share_strong": 1.5}, "share_strong"), ({"share_strong": -0.1}, "share_strong"),
    ({"share_strong": "half"}, "share_strong"), ({"share_strong": 0.5, "strong_cost": 0.0}, "strong_cost"),
    ({"share_strong": 0.5, "weak_cost": -1.0}, "weak_cost"),
    ({"share_strong": 0.5, "weak_cost": math.inf}, "weak_cost"),
])
def test_cost_saving_bad_input(kwargs, name):
    with pytest.raises(InvalidInputError, match=name):
        cost_saving(**kwargs)


# ------------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_contains_the_estimate_and_narrows_with_n(rng):
    widths = []
    for n in (200, 5000):
        score, strong, weak = random_case(rng, n, False, 50)
        score = score + 2.0 * (np.asarray(strong, float) - np.asarray(weak, float))  # an informative router
        estimate, low, high = bootstrap(apgr, score, strong, weak, n_boot=300, seed=1)
        assert estimate == apgr(score, strong, weak)
        assert low <= estimate <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_bootstrap_of_apgr_counts_rows_as_resampling_does(rng):
    score, strong, weak = random_case(rng, 300, True, 30)
    fast = bootstrap(apgr, score, strong, weak, n_boot=200, seed=5, alpha=0.1)
    slow = bootstrap(lambda *a: apgr(*a), score, strong, weak, n_boot=200, seed=5, alpha=0.1)
    np.testing.assert_allclose(fast, slow, rtol=1e-10)


def test_bootstrap_resamples_in_blocks_the_same_way(rng, monkeypatch):
    score, strong, weak = random_case(rng, 100, False, 10)
    whole = bootstrap(apgr, score, strong, weak, n_boot=50, seed=2)
    monkeypatch.setattr(metrics, "_BOOT_CELLS", 350)  # blocks of 3 resamples
    assert bootstrap(apgr, score, strong, weak, n_boot=50, seed=2) == pytest.approx(whole, rel=1e-12)


def test_bootstrap_is_seeded_and_generic(rng):
    x = rng.normal(size=400)
    one = bootstrap(np.mean, x, n_boot=100, seed=3)
    assert one == bootstrap(np.mean, x, n_boot=100, seed=3)
    assert one != bootstrap(np.mean, x, n_boot=100, seed=4)
    estimate, low, high = one
    assert estimate == pytest.approx(np.mean(x)) and low < estimate < high
    # rows of a 2-D array go together
    table = np.stack([x, 2 * x], axis=1)
    estimate, low, high = bootstrap(lambda t: float(np.mean(t[:, 1] - 2 * t[:, 0])), table, n_boot=20)
    assert estimate == low == high == 0.0


def test_bootstrap_random_routing_and_undefined_resamples():
    strong, weak = [1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 0, 0]
    assert bootstrap(apgr, np.zeros(6), strong, weak, n_boot=200) == (0.5, 0.5, 0.5)
    # undefined on all rows: the estimate's error propagates
    with pytest.raises(InvalidInputError, match="PGR is undefined"):
        bootstrap(apgr, [0.0, 1.0], [1, 1], [1, 1], n_boot=10)
    # resamples of the second row alone have no gap between the models: they are left out
    for metric in (apgr, lambda *a: apgr(*a)):
        assert bootstrap(metric, [0.0, 0.0], [1, 0], [0, 0], n_boot=50) == (0.5, 0.5, 0.5)


def test_bootstrap_all_undefined_gives_nan():
    estimate, low, high = bootstrap(lambda x: float(np.nan if len(set(x.tolist())) < 2 else 1.0), np.array([1, 1]),
                                    n_boot=5)
    assert math.isnan(estimate) and math.isnan(low) and math.isnan(high)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"n_boot": 0}, "n_boot"), ({"n_boot": 2.0}, "n_boot"), ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"),
    ({"alpha": "0.05"}, "alpha"), ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"),
])
def test_bootstrap_bad_settings(kwargs, name):
    with pytest.raises(InvalidInputError, match=name):
        bootstrap(np.mean, np.ones(3), **kwargs)


def test_bootstrap_bad_arrays():
    with pytest.raises(InvalidInputError, match="metric"):
        bootstrap("apgr", np.ones(3))
    with pytest.raises(InvalidInputError, match="arrays"):
        bootstrap(np.mean)
    with pytest.raises(InvalidInputError, match=r"arrays\[1\]"):
        bootstrap(apgr, np.ones(3), np.ones(4), np.ones(3))
    with pytest.raises(InvalidInputError, match=r"arrays\[0\]"):
        bootstrap(np.mean, np.float64(3.0))
    with pytest.raises(InvalidInputError, match=r"arrays\[0\]"):
        bootstrap(np.mean, np.ones(0))


# ---------------------------------------------------------------------------------------------- bad input

CURVES = [quality_curve, pgr_curve, apgr, cpt, share_for_quality]


@pytest.mark.parametrize("function", CURVES)
@pytest.mark.parametrize(("args", "name"), [
    (([1, 2], [1, 0, 1], [0, 0, 1]), "strong"),
    (([1, 2, 3], [1, 0, 1], [0, 0]), "weak"),
    (([[1, 2, 3]], [1, 0, 1], [0, 0, 1]), "strong_score"),
    (([], [], []), "strong_score"),
    (([1, np.nan, 3], [1, 0, 1], [0, 0, 1]), "strong_score"),
    (([1, 2, 3], [1, np.inf, 1], [0, 0, 1]), "strong"),
    (([1, 2, 3], [1, 0, 1], ["a", "b", "c"]), "weak"),
    (([1, 2, 3], [1, 0, 1], [0j, 0j, 1j]), "weak"),
    ((np.array([1, None, 3], dtype=object), [1, 0, 1], [0, 0, 1]), "strong_score"),
    ((3.0, [1], [0]), "strong_score"),
])
def test_bad_arrays_name_the_argument(function, args, name):
    with pytest.raises(InvalidInputError, match=rf"^{name} "):
        function(*args)


@pytest.mark.parametrize("function", [pgr_curve, apgr, cpt])
def test_pgr_undefined_when_both_models_are_equal(function):
    with pytest.raises(InvalidInputError, match=r"PGR is undefined.*\(strong, weak\)"):
        function([3, 2, 1], [1, 0, 1], [0, 1, 1])
    with pytest.raises(InvalidInputError, match="PGR is undefined"):  # graded, equal up to rounding
        function([3, 2, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])


def test_quality_curve_with_equal_models_is_fine():
    _, quality = quality_curve([3, 2, 1], [1, 0, 1], [0, 1, 1])
    np.testing.assert_allclose(quality, [2 / 3, 1, 2 / 3, 2 / 3])


@pytest.mark.parametrize(("function", "value", "name"), [
    (cpt, "half", "pgr"), (cpt, math.nan, "pgr"), (cpt, True, "pgr"),
    (share_for_quality, -0.1, "fraction"), (share_for_quality, math.inf, "fraction"),
    (share_for_quality, None, "fraction"),
])
def test_bad_levels(function, value, name):
    with pytest.raises(InvalidInputError, match=name):
        function(SCORE, STRONG, WEAK, value)


def test_oracle_and_random_bad_input():
    with pytest.raises(InvalidInputError, match="weak"):
        oracle_score([1, 0], [1])
    with pytest.raises(InvalidInputError, match="^n "):
        random_score(0)
    with pytest.raises(InvalidInputError, match="^n "):
        random_score(2.0)
    assert random_score(3).tolist() == [0.0, 0.0, 0.0]
