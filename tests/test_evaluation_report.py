"""tinydancer.evaluation.tables (the report) and .plot (the quality plot)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from tinydancer.errors import InvalidInputError, OutputFileError, TinyDancerError
from tinydancer.evaluation import (
    MissingExtraError,
    Report,
    RoutingData,
    apgr,
    cost_saving,
    cpt,
    oracle_score,
    plot_quality,
    quality_curve,
    random_score,
    reference_scores,
    share_for_quality,
)


def make_data(n: int = 400, seed: int = 0) -> RoutingData:
    rng = np.random.default_rng(seed)
    strong = rng.random(n) < 0.8
    weak = rng.random(n) < 0.6
    chars = rng.integers(20, 2000, n)
    return RoutingData("synthetic", strong, weak, np.full(n, "s"), chars)


def test_reference_scores():
    data = make_data(50)
    scores = reference_scores(data)
    assert list(scores) == ["prompt length", "random", "oracle"]
    assert apgr(scores["prompt length"], data.strong, data.weak) == apgr(np.log(data.prompt_chars), data.strong,
                                                                          data.weak)
    assert apgr(scores["random"], data.strong, data.weak) == 0.5
    np.testing.assert_array_equal(scores["oracle"], oracle_score(data.strong, data.weak))
    with pytest.raises(InvalidInputError, match="^data "):
        reference_scores([1, 2])


def test_report_figures_are_the_metrics():
    data = make_data()
    router = data.strong - data.weak + np.random.default_rng(1).normal(0, 1, len(data))
    report = Report.for_data(data, {"router": router}, n_boot=100, seed=3)
    assert report.name == "synthetic" and report.n == len(data)
    assert [r.name for r in report.results] == ["router", "prompt length", "random", "oracle"]
    assert report.q_strong == pytest.approx(np.mean(data.strong)) and report.q_weak == pytest.approx(np.mean(data.weak))
    first = report.results[0]
    assert first.apgr == apgr(router, data.strong, data.weak)
    assert first.apgr_low <= first.apgr <= first.apgr_high
    assert first.cpt50 == cpt(router, data.strong, data.weak, 0.5)
    assert first.cpt80 == cpt(router, data.strong, data.weak, 0.8)
    assert first.share90 == share_for_quality(router, data.strong, data.weak, 0.9)
    assert first.saving95 == cost_saving(share_for_quality(router, data.strong, data.weak, 0.95))
    random = report.results[2]
    assert (random.apgr, random.apgr_low, random.apgr_high) == (0.5, 0.5, 0.5)
    assert random.cpt50 == pytest.approx(0.5) and random.cpt80 == pytest.approx(0.8)
    assert report.results[3].apgr > first.apgr > 0.5


def test_report_table_and_dict():
    data = make_data()
    report = Report.for_data(data, {"router": data.strong - data.weak}, n_boot=50, strong_cost=10.0, weak_cost=1.0)
    text = report.table()
    for name in ("router", "prompt length", "random", "oracle", "always weak", "always strong"):
        assert name in text
    assert "0.500  [0.500, 0.500]" in text
    assert "cost per call: strong 10, weak 1" in text and "saving 90.0%" in text
    as_dict = report.to_dict()
    json.dumps(as_dict, allow_nan=False)
    assert as_dict["always_weak"] == {"quality": report.q_weak, "strong_share": 0.0, "cost_saving": 0.9}
    assert as_dict["always_strong"]["strong_share"] == 1.0
    assert list(as_dict["scorers"]) == ["router", "prompt length", "random", "oracle"]
    assert as_dict["scorers"]["random"]["apgr"] == 0.5
    assert set(as_dict["scorers"]["router"]) == {"apgr", "apgr_low", "apgr_high", "cpt50", "cpt80", "share90",
                                                 "saving90", "share95", "saving95"}


def test_report_table_format_is_stable():
    # the router sends the one row that gains first: PGR 0, 1, 1, 1, 1 at 0..4 strong calls (APGR 3.5 / 4);
    # 90% of the strong quality (0.675) at 0.7 of a call, 95% (0.7125) at 0.85
    report = Report.compute([1, 1, 1, 0], [1, 1, 0, 0], {"router": [0.1, 0.2, 0.9, 0.5]}, name="tiny", n_boot=20)
    assert report.table() == (
        "tiny: 4 rows; quality of always-strong 0.7500, always-weak 0.5000; cost per call: strong 24.7, weak 0.24\n"
        "\n"
        "method          APGR    95% interval  CPT(50%)  CPT(80%)  strong@90%  saving@90%  strong@95%  saving@95%\n"
        "router         0.875  [0.625, 0.875]     12.5%     20.0%       17.5%       81.7%       21.2%       78.0%\n"
        "always weak    quality 0.5000 (66.7% of strong), 0.0% strong calls, saving 99.0%\n"
        "always strong  quality 0.7500, 100.0% strong calls, saving 0.0%\n"
        "\n"
        "APGR: area under the PGR curve over the share of strong calls (random 0.500)\n"
        "95% interval: bootstrap percentile, 20 resamples of the rows\n"
        "CPT(x): share of strong calls at which PGR reaches x\n"
        "strong@q: share of strong calls reaching q of the strong model's quality; saving@q: cost saving there "
        "against always-strong\n")


def test_report_when_the_weak_model_is_better():
    report = Report.compute([1, 0, 1, 0], [1, 1, 1, 0], {"flat": [0, 0, 0, 0]}, n_boot=10)
    row = report.results[0]
    assert row.apgr == 0.5 and row.share90 == 0.0 and row.saving90 == cost_saving(0.0)


def test_report_quality_never_reached():
    # graded scores below zero: 90% of the strong model's quality (-0.9) is above what any routing reaches
    report = Report.compute([-1, -1, -1], [-2, -2, -2], {"r": [1, 2, 3]}, n_boot=10)
    row = report.results[0]
    assert math.isnan(row.share90) and math.isnan(row.saving90) and row.cpt50 == pytest.approx(0.5)
    assert report.table().splitlines()[3].split()[-4:] == ["never", "-", "never", "-"]
    assert report.to_dict()["scorers"]["r"]["share90"] is None
    json.dumps(report.to_dict(), allow_nan=False)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"scores": {}}, "scores"), ({"scores": {"r": [1, 2]}}, r"scores\['r'\]"),
    ({"scores": {"r": [1, 2, np.nan]}}, r"scores\['r'\]"), ({"scores": {3: [1, 2, 3]}}, "scores"),
    ({"strong_cost": 0}, "strong_cost"), ({"weak_cost": -1}, "weak_cost"), ({"n_boot": 0}, "n_boot"),
    ({"alpha": 2}, "alpha"), ({"seed": -2}, "seed"), ({"name": 5}, "name"), ({"strong": [1, 0]}, "weak"),
])
def test_report_bad_input(kwargs, name):
    args = {"strong": [1, 1, 0], "weak": [0, 1, 0], "scores": {"r": [1, 2, 3]}, **kwargs}
    with pytest.raises(InvalidInputError, match=name):
        Report.compute(**args)


def test_report_for_data_refuses_reference_names():
    with pytest.raises(InvalidInputError, match="'oracle' is the name of a reference score"):
        Report.for_data(make_data(20), {"oracle": np.zeros(20)})


# ---------------------------------------------------------------------------------------------------- plot


def curves_of(data: RoutingData) -> dict:
    return {name: quality_curve(score, data.strong, data.weak)
            for name, score in {"router": data.strong - data.weak + 0.5 * np.sin(np.arange(len(data))),
                                "random": random_score(len(data)),
                                "oracle": oracle_score(data.strong, data.weak)}.items()}


def test_plot_quality_writes_a_png(tmp_path: Path):
    pytest.importorskip("matplotlib")
    data = make_data(200)
    target = tmp_path / "quality.png"
    written = plot_quality(curves_of(data), target, title="synthetic", strong_quality=float(np.mean(data.strong)),
                           weak_quality=float(np.mean(data.weak)))
    assert written == str(target.resolve())
    assert target.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [p.name for p in tmp_path.iterdir()] == ["quality.png"]  # no temporary file left


def test_plot_quality_without_matplotlib(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` fail
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'tinydancer\[plot\]'") as info:
        plot_quality(curves_of(make_data(20)), tmp_path / "q.png")
    assert isinstance(info.value, TinyDancerError) and isinstance(info.value, ImportError)
    assert not (tmp_path / "q.png").exists()


@pytest.mark.parametrize(("curves", "name"), [
    ({}, "curves"), ([1, 2], "curves"), ({"a": [1, 2, 3]}, r"curves\['a'\]"),
    ({"a": ([0, 1], [0.5])}, r"curves\['a'\]"), ({"a": ([0, 2], [0.5, 0.6])}, r"curves\['a'\]"),
    ({"a": ([0, 1], [0.5, np.nan])}, r"curves\['a'\]"), ({"a": ([0.5], [0.5])}, r"curves\['a'\]"),
])
def test_plot_quality_bad_curves(tmp_path: Path, curves, name):
    with pytest.raises(InvalidInputError, match=name):
        plot_quality(curves, tmp_path / "q.png")


def test_plot_quality_bad_settings_and_path(tmp_path: Path):
    curves = {"a": ([0.0, 1.0], [0.5, 0.6])}
    with pytest.raises(InvalidInputError, match="strong_quality"):
        plot_quality(curves, tmp_path / "q.png", strong_quality="high")
    with pytest.raises(InvalidInputError, match="title"):
        plot_quality(curves, tmp_path / "q.png", title=3)
    with pytest.raises(OutputFileError, match="does not exist"):
        plot_quality(curves, tmp_path / "missing" / "q.png")
    with pytest.raises(OutputFileError, match="a folder"):
        plot_quality(curves, tmp_path)
