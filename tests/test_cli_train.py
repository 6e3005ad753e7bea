from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinydancer import cli
from tinydancer.model import FastGRNN


def easy_data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, 5)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 1.0).astype(np.float32)


def test_train_from_npz_with_report(tmp_path: Path, capsys):
    X, y = easy_data()
    np.savez(tmp_path / "data.npz", X=X, y=y)
    out, report = tmp_path / "m.safetensors", tmp_path / "report.json"
    code = cli.main(["train", str(tmp_path / "data.npz"), "-o", str(out), "--report", str(report),
                     "--epochs", "15", "--lr", "0.01", "--quantize"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "accuracy" in printed
    model = FastGRNN.load(out)
    assert model.is_quantized
    Xt, yt = easy_data(500, seed=1)
    assert np.mean((model.forward_batch(Xt) > 0.5) == yt) > 0.95
    data = json.loads(report.read_text())
    assert len(data["history"]) == 15 and data["model_config"]["input_dim"] == 5
    assert data["final"]["accuracy"] > 0.95 and data["size_bytes"] == model.size_bytes()


def test_train_from_csv_with_compression(tmp_path: Path, capsys):
    X, y = easy_data()
    rows = ["f0,f1,f2,f3,f4,target"] + [",".join(map(str, [*x, int(t)])) for x, t in zip(X, y)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "m.safetensors"
    code = cli.main(["train", str(tmp_path / "data.csv"), "-o", str(out), "--label-column", "target",
                     "--hidden", "16", "--epochs", "30", "--lr", "0.01", "--sparsity", "0.8", "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    for stage in ("dense", "iht", "retrain", "prune", "quantize"):
        assert stage in printed
    model = FastGRNN.load(out)
    assert model.cell.W.kind == "sparse_int8" and model.sparsity >= 0.8


def test_train_timesteps_reshape(tmp_path: Path):
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 1, (1000, 3 * 4)).astype(np.float32)  # three steps of four features, flat
    y = (X[:, :4].sum(axis=1) > 2).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    assert cli.main(["train", str(tmp_path / "d.npz"), "-o", str(tmp_path / "m.safetensors"), "--timesteps", "3",
                     "--epochs", "2", "-q"]) == 0
    assert FastGRNN.load(tmp_path / "m.safetensors").config.timesteps == 3


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda d: None, ["missing.npz"], "no such file"),
        (lambda d: (d / "x.txt").write_text("1"), ["x.txt"], "must be a .npz or .csv"),
        (lambda d: np.savez(d / "a.npz", X=np.ones((3, 5))), ["a.npz"], "no 'y' array"),
        (lambda d: np.savez(d / "a.npz", X=np.full((3, 5), np.nan), y=np.ones(3)), ["a.npz"], "X holds NaN"),
        (lambda d: (d / "a.csv").write_text("a,b\n1,2\n"), ["a.csv"], "no 'label' column"),
        (lambda d: (d / "a.csv").write_text("a,label\n1,x\n"), ["a.csv"], "must be a number"),
        (lambda d: np.savez(d / "a.npz", X=np.ones((3, 5)), y=np.full(3, 2.0)), ["a.npz"], "y"),
        (lambda d: np.savez(d / "a.npz", X=np.ones((4, 6)), y=np.ones(4)), ["a.npz", "--timesteps", "4"],
         "not a multiple of 4"),
        (lambda d: np.savez(d / "a.npz", X=np.ones((4, 6)), y=np.ones(4)), ["a.npz", "--hidden", "0"],
         "hidden_dim must be"),
    ],
)
def test_train_errors_are_one_line(tmp_path: Path, monkeypatch, capsys, setup, args, message):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    assert cli.main(["train", *args, "-o", "m.safetensors", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinydancer: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "m.safetensors").exists()
