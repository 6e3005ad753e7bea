"""``tinydancer eval`` on a small synthetic copy of the data folder's embeddings/ layout."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tinydancer import cli


def write_dataset(root: Path, name: str, n: int, subjects: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((n, 8)).astype(np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    hard = 1 / (1 + np.exp(-3 * E[:, 0]))
    weak, strong = rng.random(n) > hard, rng.random(n) > 0.3 * hard
    (root / "embeddings").mkdir(parents=True, exist_ok=True)
    np.save(root / "embeddings" / f"{name}.npy", E)
    with open(root / "embeddings" / f"{name}_labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow((["subject"] if subjects else []) + ["weak_correct", "strong_correct", "prompt_chars"])
        for i in range(n):
            row = [str(bool(weak[i])), str(bool(strong[i])), str(int(60 + 400 * hard[i]))]
            writer.writerow(([f"s{i % subjects}"] if subjects else []) + row)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_dataset(root, "mmlu", 300, 6, 0)
    write_dataset(root, "gsm8k", 160, 0, 1)
    return root


FAST = ["--bootstrap", "20", "--folds", "3", "--members", "1", "--hidden", "3"]


def test_eval_prints_every_protocol_and_writes_json(data, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert cli.main(["eval", "--data", str(data), "--prompt-length", "--json", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    for title in ("mmlu, stratified 3-fold cross-validation", "gsm8k, stratified 3-fold cross-validation",
                  "mmlu, subjects held out (3 folds)", "trained on mmlu, tested on gsm8k",
                  "trained on gsm8k, tested on mmlu"):
        assert title in text
    for method in ("router ", "router + prompt length", "prompt length", "random", "oracle", "always weak",
                   "always strong"):
        assert method in text
    tables = json.loads(out.read_text())["tables"]
    assert len(tables) == 5


def test_eval_is_reproducible(data, capsys):
    args = ["eval", "--data", str(data), "--protocol", "cv", "--dataset", "gsm8k", *FAST]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert cli.main(args) == 0
    assert capsys.readouterr().out == first


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent/data"], "nonexistent"),
    (["--members", "0"], "--members"),
    (["--protocol", "other"], "--protocol"),
])
def test_eval_errors_are_one_line(data, capsys, args, message):
    argv = ["eval", *(["--data", str(data)] if "--data" not in args else []), *args]
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    assert status in (1, 2)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_eval_refuses_a_fifo_for_json_before_any_work(data, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert cli.main(["eval", "--data", str(data), "--json", str(fifo), *FAST]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "is a FIFO, not a regular file" in captured.err


def test_eval_plot(data, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "q.png"
    assert cli.main(["eval", "--data", str(data), "--protocol", "cv", "--dataset", "mmlu", "--plot", str(png),
                     *FAST]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
