from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tinydancer import cli


def request_json(n: int = 4, dim: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    query = rng.standard_normal(dim)
    cands = [{"id": f"doc{i}", "embedding": (query if i == 2 else rng.standard_normal(dim)).tolist(),
              "metadata": {"lang": "en"}, "created_at": 1.8e9, "access_count": 10 * i, "success_rate": 0.5}
             for i in range(n)]
    return {"query_embedding": query.tolist(), "candidates": cands, "metadata": {"lang": "en"}}


def test_route_from_stdin(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(request_json())))
    assert cli.main(["route"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["candidates_processed"] == 4 and len(out["decisions"]) == 4
    assert out["decisions"][0]["candidate_id"] == "doc2"  # identical to the query
    confidences = [d["confidence"] for d in out["decisions"]]
    assert confidences == sorted(confidences, reverse=True)
    assert set(out["decisions"][0]) >= {"candidate_id", "confidence", "use_lightweight", "uncertainty"}


def test_route_from_file(tmp_path, capsys):
    path = tmp_path / "req.json"
    path.write_text(json.dumps(request_json(3)))
    assert cli.main(["route", str(path), "--pretty"]) == 0
    assert len(json.loads(capsys.readouterr().out)["decisions"]) == 3


@pytest.mark.parametrize(
    "payload, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object with query_embedding and candidates"),
        (json.dumps({"query_embedding": [1, 2], "candidates": {}}), "candidates must be a JSON list"),
        (json.dumps({"query_embedding": [1, 2], "candidates": [{"id": "a"}]}), "at least id and embedding"),
        (json.dumps({"query_embedding": [1, 2], "candidates": [{"id": "a", "embedding": [1, 2], "x": 1}]}),
         "unknown fields"),
        (json.dumps({"query_embedding": [1, 2], "candidates": [{"id": "a", "embedding": [1, 2, 3]}]}), "3"),
        (json.dumps({"query_embedding": [1, 2], "candidates": [{"id": "a", "embedding": [1, 2],
                                                                "success_rate": 2}]}), "success_rate"),
    ],
)
def test_route_errors_are_one_line(monkeypatch, capsys, payload, message):
    monkeypatch.setattr("sys.stdin", io.StringIO(payload))
    assert cli.main(["route"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinydancer: error:") and message in err and err.count("\n") == 1


def test_route_missing_file(capsys):
    assert cli.main(["route", "/nonexistent/req.json"]) == 1
    assert "cannot be read" in capsys.readouterr().err


def test_demo(capsys):
    assert cli.main(["demo", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "routing demo with the shipped model" in out
    assert "agent memory, 100 entries" in out and "route()" in out
    assert "can go to the lightweight model" in out and "circuit breaker closed" in out
