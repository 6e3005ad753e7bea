"""The demo's data and what the default thresholds mean."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tinydancer import cli
from tinydancer.features import FeatureConfig
from tinydancer.router import Router, RouterConfig
from tinydancer.synthetic import demo_requests, random_candidates, random_query
from tinydancer.types import Candidate, RoutingRequest

NOW = 1_790_000_000.0


def test_demo_ages_run_from_minutes_to_weeks():
    rng = np.random.default_rng(0)
    cols = random_candidates(rng, random_query(rng), 20_000, now=NOW)
    ages = NOW - cols["created_at"]
    assert 60.0 <= ages.min() < 120.0 and 20 * 86400 < ages.max() <= 28 * 86400
    assert 0.2 < np.mean(ages > 86400) < 0.4  # log-uniform: a quarter are days old
    close = np.array([md == {"user": "u42", "topic": "billing"} for md in cols["metadata"]])
    assert ages[close].max() <= 86400  # paraphrases are at most a day old


@pytest.mark.parametrize("threshold, max_uncertainty, effective", [(0.85, 0.15, 0.925), (0.95, 0.15, 0.95),
                                                                   (0.5, 0.5, 0.75), (0.9, 0.0, 1.0)])
def test_effective_threshold(threshold, max_uncertainty, effective):
    assert RouterConfig(confidence_threshold=threshold, max_uncertainty=max_uncertainty).effective_threshold == \
        pytest.approx(effective)


def test_the_effective_threshold_is_what_routing_applies():
    config = RouterConfig(feature_config=FeatureConfig(recency_half_life=7 * 86400))
    router = Router(config, clock=lambda: NOW)
    seen = 0
    for item in demo_requests(now=NOW - 1.0):
        response = router.route(item.request)
        for d in response:
            assert d.use_lightweight == (d.confidence >= config.effective_threshold - 1e-6)
            seen += d.use_lightweight
    assert seen > 0


def shares(*args: str, capsys) -> tuple[int, int]:
    assert cli.main(["demo", "--top", "0", *args]) == 0
    out = capsys.readouterr().out
    light, total = map(int, re.search(r"(\d+) of (\d+) candidates \(\d+%\) can go", out).groups())
    return light, total


def test_the_demo_states_the_rule_and_a_half_life_changes_the_share(capsys):
    assert cli.main(["demo", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "that is confidence >= 0.925; recency halves every 11.6 min" in out
    crate, total = shares(capsys=capsys)
    week, _ = shares("--recency-half-life", "604800", capsys=capsys)
    assert total == 175 and crate < week


@pytest.mark.parametrize("args, message", [(["--top", "-1"], "-1 is not an integer >= 0"),
                                           (["--recency-half-life", "0"], "0 is not a number > 0"),
                                           (["--recency-half-life", "nan"], "is not a finite number")])
def test_bad_demo_options(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("age, confidence, lightweight", [(0.0, 0.946, True), (300.0, 0.922, False),
                                                          (3600.0, 0.803, False)])
def test_a_perfect_candidate_ages_out_of_the_lightweight_model(age, confidence, lightweight):
    """The figures of the README's "What the defaults mean"."""
    query = np.ones(8)
    perfect = Candidate("p", query, {"k": 1}, created_at=NOW - age, access_count=10_000, success_rate=1.0)
    decision = Router(clock=lambda: NOW).route(RoutingRequest(query, [perfect], metadata={"k": 1}))[0]
    assert decision.confidence == pytest.approx(confidence, abs=5e-4)
    assert decision.use_lightweight is lightweight


def _demo_prompts() -> dict:
    import json
    from importlib import resources

    return json.loads((resources.files("tinydancer") / "models" / "demo_prompts.json").read_text("utf-8"))


def test_the_demo_routes_the_example_prompts_without_the_extra(monkeypatch, capsys):
    from tinydancer import embed
    from tinydancer.errors import MissingExtraError

    def missing(texts):
        raise MissingExtraError('embedding text needs onnxruntime: pip install "tinydancer[embed]"')

    monkeypatch.setattr(embed, "embed", missing)
    assert cli.main(["demo", "--top", "0"]) == 0
    out = capsys.readouterr().out
    assert "query routing: 12 real prompts" in out and "stored embeddings" in out
    summary = re.search(r"(\d+) of 12 prompts to the cheap model: (\d+)% of the bill", out)
    assert summary is not None
    prompts = _demo_prompts()["prompts"]
    assert len(prompts) == 12 and all(len(p["embedding"]) == 384 for p in prompts)


def test_the_stored_example_embeddings_are_what_the_extra_computes():
    pytest.importorskip("onnxruntime")
    from tinydancer.embed import embed

    prompts = _demo_prompts()["prompts"]
    live = embed([p["text"] for p in prompts])
    stored = np.array([p["embedding"] for p in prompts], dtype=np.float32)
    cosines = np.sum(live * stored, axis=1) / np.linalg.norm(stored, axis=1)
    assert cosines.min() >= 0.995 and cosines.mean() >= 0.999
