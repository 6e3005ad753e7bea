"""The feedback loop's commands: ``tinydancer train --from-db``, ``tinydancer calibrate --from-db``, and the
example that simulates judged traffic."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinydancer import cli
from tinydancer.feedback import logged_examples, read_calibration
from tinydancer.model import FastGRNN, load_model
from tinydancer.query_router import EnsembleConfig, QueryRouter
from tinydancer.router import Router, RouterConfig
from tinydancer.synthetic import candidate_list, random_candidates, random_query
from tinydancer.types import RoutingRequest

ROOT = Path(__file__).resolve().parent.parent
NOW = 1.7e9


def judged(query: np.ndarray, cols: dict, rng: np.random.Generator) -> np.ndarray:
    """Good enough with a probability that rises with the candidate's similarity to the query."""
    logit = 12.0 * (cols["embeddings"] @ query - 0.6) + 4.0 * (cols["success_rate"] - 0.5)
    return rng.random(logit.shape[0]) < 1.0 / (1.0 + np.exp(-logit))


@pytest.fixture(scope="module")
def candidate_db(tmp_path_factory) -> Path:
    """600 requests of 10 candidates, logged by the shipped model, each candidate with an outcome."""
    path = tmp_path_factory.mktemp("feedback") / "routing.db"
    rng = np.random.default_rng(0)
    with Router(RouterConfig(database_path=path), clock=lambda: NOW) as router:
        for _ in range(600):
            query = random_query(rng)
            cols = random_candidates(rng, query, 10, now=NOW)
            response = router.route(RoutingRequest(query, candidate_list(cols, metadata=False)))
            for cid, good in zip(cols["ids"], judged(query, cols, rng)):
                router.record_outcome(response.request_id, bool(good), candidate_id=cid)
    return path


def test_train_and_calibrate_candidates_from_db(candidate_db, tmp_path, capsys):
    model_path, report = tmp_path / "retrained.safetensors", tmp_path / "report.json"
    assert cli.main(["train", "--from-db", str(candidate_db), "-o", str(model_path), "--epochs", "15", "-q",
                     "--report", str(report)]) == 0
    out = capsys.readouterr().out
    everything = logged_examples(candidate_db, "candidate")
    train, held = everything.split(0.3)
    assert f"6000 candidate decisions with an outcome; training on {len(train)}, {len(held)} held out" in out
    data = json.loads(report.read_text())
    assert data["examples"] == len(train) and data["kind"] == "candidate" and data["holdout"] == 0.3
    model = load_model(model_path)
    assert isinstance(model, FastGRNN) and model.config.input_dim == 5
    assert read_calibration(model_path) is None

    calibrated = tmp_path / "calibrated.safetensors"
    assert cli.main(["calibrate", "--from-db", str(candidate_db), "--model", str(model_path),
                     "-o", str(calibrated), "--target", "0.85"]) == 0
    out = capsys.readouterr().out
    cal = read_calibration(calibrated)
    assert cal is not None and cal.n == len(held) and cal.target == 0.85
    assert cal.certified and f"threshold {cal.threshold:.4g} certified on {len(held)}" in out
    # the router serves the calibrated file: its threshold, and the conformal uncertainty
    router = Router(RouterConfig(model_path=calibrated), clock=lambda: NOW)
    assert router.calibration == cal and router.threshold == cal.threshold
    rng = np.random.default_rng(5)
    query = random_query(rng)
    response = router.route(RoutingRequest(query, candidate_list(random_candidates(rng, query, 20, now=NOW))))
    np.testing.assert_array_equal(response.lightweight, response.confidences >= np.float32(cal.threshold))
    np.testing.assert_allclose(response.uncertainties, cal.uncertainty(response.confidences.astype(np.float64)),
                               rtol=1e-6)


def test_calibrated_file_keeps_its_promise_on_fresh_traffic(candidate_db, tmp_path):
    """The held-out calibration's threshold, used on new judged traffic: the bad share among the lightweight
    decisions stays near or below 1 - target (one draw here; the guarantee itself is tested over many
    resplits in test_calibration.py and test_feedback.py)."""
    model_path, calibrated = tmp_path / "m.safetensors", tmp_path / "c.safetensors"
    assert cli.main(["train", "--from-db", str(candidate_db), "-o", str(model_path), "--epochs", "15", "-q"]) == 0
    assert cli.main(["calibrate", "--from-db", str(candidate_db), "--model", str(model_path), "-o",
                     str(calibrated)]) == 0
    router = Router(RouterConfig(model_path=calibrated), clock=lambda: NOW)
    rng = np.random.default_rng(11)
    light = bad = 0
    for _ in range(400):
        query = random_query(rng)
        cols = random_candidates(rng, query, 10, now=NOW)
        response = router.route(RoutingRequest(query, candidate_list(cols, metadata=False)))
        good = judged(query, cols, rng)
        use = response.result.lightweight
        light += int(use.sum())
        bad += int((use & ~good).sum())
    assert light > 100  # the loop saves something
    assert bad / light <= 0.13  # 1 - target = 0.10, plus sampling slack for ~1,000 decisions


def test_train_from_db_refusals(candidate_db, tmp_path, capsys):
    out = str(tmp_path / "m.safetensors")
    with pytest.raises(SystemExit) as exc:  # a file and a database at once
        cli.main(["train", "data.npz", "--from-db", str(candidate_db), "-o", out])
    assert exc.value.code == 2
    capsys.readouterr()
    for extra, message in ((["--timesteps", "2"], "--timesteps 1"), (["--kind", "query", "--sparsity", "0.5"],
                                                                      "--sparsity does not apply")):
        assert cli.main(["train", "--from-db", str(candidate_db), "-o", out, *extra]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1
    empty = tmp_path / "empty.db"
    Router(RouterConfig(database_path=empty)).close()
    assert cli.main(["train", "--from-db", str(empty), "-o", out]) == 1
    assert "0 logged candidate decisions have an outcome" in capsys.readouterr().err
    assert cli.main(["calibrate", "--from-db", str(empty), "--model", out, "-o", out]) == 1
    assert "no logged candidate decision with an outcome" in capsys.readouterr().err
    assert not os.path.exists(out)
    assert cli.main(["train", "--from-db", str(tmp_path / "missing.db"), "-o", out]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["calibrate", "--from-db", str(candidate_db), "--model", out, "-o", out, "--target", "1"])
    assert exc.value.code == 2


def test_train_and_calibrate_a_query_router_from_db(tmp_path, capsys):
    rng = np.random.default_rng(3)
    E = rng.standard_normal((1500, 16)).astype(np.float32)
    good = E[:, 0] > -0.5  # the first embedding column decides: certified whatever the held-out ids
    router = QueryRouter.fit(E[:300], good[:300], config=EnsembleConfig(members=1, epochs=3))
    db = tmp_path / "queries.db"
    with router:
        router.log_to(db)
        decisions = router.route_batch(E[300:900])
        for rid, g in zip(decisions.request_ids, good[300:900]):
            router.record_outcome(rid, bool(g))
        for i in range(900, 1500):
            router.record_outcome(router.route(E[i]).request_id, bool(good[i]))
    examples = logged_examples(db, "query")
    assert len(examples) == 1200 and examples.inputs.shape == (1200, 16) and examples.prompt_length is None
    np.testing.assert_allclose(examples.inputs, E[300:], atol=2e-3, rtol=1e-3)  # float16 logging

    trained, calibrated = tmp_path / "q.safetensors", tmp_path / "qc.safetensors"
    assert cli.main(["train", "--from-db", str(db), "--kind", "query", "-o", str(trained), "--epochs", "40",
                     "--hidden", "4", "--lr", "0.01"]) == 0
    assert "not calibrated" in capsys.readouterr().out
    assert QueryRouter.load(trained).calibration is None
    assert cli.main(["calibrate", "--from-db", str(db), "--kind", "query", "--model", str(trained),
                     "-o", str(calibrated), "--target", "0.8"]) == 0
    loaded = QueryRouter.load(calibrated)
    held = examples.split(0.3)[1]
    assert loaded.calibration is not None and loaded.calibration.n == len(held)
    assert loaded.calibration.certified
    # a candidate model is not a query router, and the other way round
    assert cli.main(["calibrate", "--from-db", str(db), "--kind", "candidate", "--model", str(trained),
                     "-o", str(tmp_path / "x.safetensors")]) == 1
    capsys.readouterr()


def test_the_feedback_example_runs(tmp_path):
    """examples/feedback_loop.py as the README runs it (outside the source tree: it imports the installed
    package)."""
    db = tmp_path / "routing.db"
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "feedback_loop.py"), str(db), "--requests", "30"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "routed 30 requests (300 candidate decisions), logged 300 rows, dropped 0" in out.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM routing_decisions").fetchone()[0] == 300
        assert conn.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0] == 300
    conn.close()
