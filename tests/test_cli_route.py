from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tinydancer import cli
from tinydancer.cli.route import MAX_REQUEST_BYTES

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "request.json"


def request_json(n: int = 4, dim: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    query = rng.standard_normal(dim)
    cands = [{"id": f"doc{i}", "embedding": (query if i == 2 else rng.standard_normal(dim)).tolist(),
              "metadata": {"lang": "en"}, "created_at": 1.7e9, "access_count": 10 * i, "success_rate": 0.5}
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


def one_error_line(capsys, *needles: str) -> str:
    """The one error line on stderr, checked to hold each of ``needles``."""
    err = capsys.readouterr().err
    assert err.startswith("tinydancer: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def bytes_stdin(data: bytes) -> io.TextIOWrapper:
    """A standard input with bytes underneath, as the real one has."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")


def test_route_non_utf8_file_and_stdin(tmp_path, monkeypatch, capsys):
    raw = b'{"query_embedding": [1, 2], "candidates": [], "metadata": {"k": "\xff\xfe"}}'
    path = tmp_path / "latin.json"
    path.write_bytes(raw)
    assert cli.main(["route", str(path)]) == 1
    offset = raw.index(b"\xff")
    one_error_line(capsys, f"{path}: the request is not UTF-8 text (byte 0xff at offset {offset})")
    monkeypatch.setattr("sys.stdin", bytes_stdin(raw))
    assert cli.main(["route"]) == 1
    one_error_line(capsys, "standard input: the request is not UTF-8 text (byte 0xff")


def test_route_accepts_a_utf8_bom(tmp_path, capsys):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(request_json(2)).encode())
    assert cli.main(["route", str(path)]) == 0
    assert len(json.loads(capsys.readouterr().out)["decisions"]) == 2


@pytest.mark.parametrize("payload", ["[" * 100_000, '{"a": ' * 100_000])
def test_route_deeply_nested_json(monkeypatch, capsys, payload):
    monkeypatch.setattr("sys.stdin", bytes_stdin(payload.encode()))
    assert cli.main(["route"]) == 1
    one_error_line(capsys, "the request is nested too deeply to be read as JSON")


def test_route_request_size_cap(tmp_path, monkeypatch, capsys):
    text = json.dumps(request_json(2))
    size = len(text.encode())
    path = tmp_path / "req.json"
    path.write_text(text)
    assert cli.main(["route", str(path), "--max-request-bytes", str(size)]) == 0  # exactly the cap is fine
    capsys.readouterr()
    assert cli.main(["route", str(path), "--max-request-bytes", str(size - 1)]) == 1
    one_error_line(capsys, f"{path}: the request is larger than {size - 1} bytes", "--max-request-bytes")
    monkeypatch.setattr("sys.stdin", bytes_stdin(text.encode()))
    assert cli.main(["route", "--max-request-bytes", "100"]) == 1
    one_error_line(capsys, "standard input: the request is larger than 100 bytes")
    monkeypatch.setattr("sys.stdin", io.StringIO(text))  # a text stream without bytes underneath
    assert cli.main(["route", "--max-request-bytes", "100"]) == 1
    one_error_line(capsys, "larger than 100 bytes")
    assert MAX_REQUEST_BYTES == 64 * 1024 * 1024


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_route_dev_zero_stops_at_the_cap(capsys):
    assert cli.main(["route", "/dev/zero", "--max-request-bytes", "4096"]) == 1
    one_error_line(capsys, "/dev/zero: the request is larger than 4096 bytes (--max-request-bytes")


@pytest.mark.parametrize("value", ["0", "-5", "ten"])
def test_route_max_request_bytes_is_checked(capsys, value):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["route", "--max-request-bytes", value])
    assert exit_.value.code == 2
    assert "argument --max-request-bytes" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change, message",
    [
        ({"success_rate": 2}, "candidates[3].success_rate must lie in [0, 1], got 2 (candidate id 'doc3')"),
        ({"access_count": -1}, "candidates[3].access_count must be an int >= 0, got -1 (candidate id 'doc3')"),
        ({"created_at": "yesterday"}, "candidates[3].created_at must be a real number, got str (candidate id 'doc3')"),
        ({"created_at": 1.7e12}, "candidates[3].created_at is 1700000000000.0, "),
        ({"metadata": []}, "candidates[3].metadata must be a dict, got list (candidate id 'doc3')"),
        ({"embedding": []}, "candidates[3].embedding is empty (candidate id 'doc3')"),
        ({"id": 7}, "candidates[3].id must be a str, got int"),
        ({"id": 'say "hi"', "success_rate": -1}, "candidates[3].success_rate must lie in [0, 1], got -1 "
                                                  "(candidate id 'say \"hi\"')"),
        ({"colour": "red"}, "candidates[3] has unknown fields ['colour'] (candidate id 'doc3')"),
        ({"embedding": None}, "candidates[3].embedding is None; expected a 1-D array (candidate id 'doc3')"),
    ],
)
def test_route_errors_name_the_candidate(monkeypatch, capsys, change, message):
    request = request_json(5)
    request["candidates"][3].update(change)
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(request)))
    assert cli.main(["route"]) == 1
    one_error_line(capsys, message)


def test_route_missing_fields_name_the_candidate(monkeypatch, capsys):
    request = request_json(3)
    del request["candidates"][1]["embedding"]
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(request)))
    assert cli.main(["route"]) == 1
    one_error_line(capsys, "candidates[1] must be an object with at least id and embedding (candidate id 'doc1')")
    request["candidates"][1] = ["not", "an", "object"]
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(request)))
    assert cli.main(["route"]) == 1
    one_error_line(capsys, "candidates[1] must be an object with at least id and embedding")


def test_shipped_example_request_routes(monkeypatch, capsys):
    monkeypatch.chdir(EXAMPLE.parent.parent)  # as the README runs it, from the repository's root
    assert cli.main(["route", "examples/request.json", "--pretty"]) == 0
    out = json.loads(capsys.readouterr().out)
    request = json.loads(EXAMPLE.read_text())
    assert out["candidates_processed"] == len(request["candidates"]) and not out["fell_back"]
    assert {d["candidate_id"] for d in out["decisions"]} == {c["id"] for c in request["candidates"]}
    assert len(request["query_embedding"]) == 8
    assert all(c["created_at"] < 1.77e9 for c in request["candidates"])  # in the past (2025), never refused


def test_route_missing_file(capsys):
    assert cli.main(["route", "/nonexistent/req.json"]) == 1
    assert "cannot be read" in capsys.readouterr().err


def test_demo(capsys):
    assert cli.main(["demo", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "routing demo with the shipped model" in out
    assert "agent memory, 100 entries" in out and "route()" in out
    assert "can go to the lightweight model" in out and "circuit breaker closed" in out
