from __future__ import annotations

import json
import os
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
        (lambda d: np.savez(d / "a.npz", X=np.ones((4, 6)), y=np.ones(4)), ["a.npz", "--hidden", "100000"],
         "hidden_dim must be"),
        (lambda d: (d / "a.npz").write_bytes(b"PK\x03\x04" + bytes(200)), ["a.npz"], "not a readable .npz archive"),
        (lambda d: (d / "a.npz").write_text("X,y\n1,2\n"), ["a.npz"], "not a .npz archive"),
        (lambda d: np.savez(d / "a.npz", X=np.ones((1, 5)), y=np.ones(1)), ["a.npz"], "training needs at least 2"),
        (lambda d: np.savez(d / "a.npz", X=np.full((9, 5), 3e20), y=np.arange(9) % 2), ["a.npz"],
         "X holds values up to 3e+20 in magnitude; beyond 1e+15"),
    ],
)
def test_train_errors_are_one_line(tmp_path: Path, monkeypatch, capsys, setup, args, message):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    assert cli.main(["train", *args, "-o", "m.safetensors", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinydancer: error:") and message in err and err.count("\n") == 1
    assert "Traceback" not in err
    assert not (tmp_path / "m.safetensors").exists()


def test_train_damaged_npz(tmp_path: Path, capsys):
    X, y = easy_data(200)
    np.savez(tmp_path / "good.npz", X=X, y=y)
    whole = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    assert cli.main(["train", str(tmp_path / "cut.npz"), "-o", str(tmp_path / "m.safetensors"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err == f"tinydancer: error: {tmp_path / 'cut.npz'}: not a readable .npz archive (File is not a zip file)\n"


@pytest.mark.parametrize(
    "option, value",
    [("--epochs", "0"), ("--hidden", "0"), ("--lr", "-1"), ("--lr", "0"), ("--lr", "nan"),
     ("--validation-split", "1.5"), ("--validation-split", "1"), ("--sparsity", "1.5"), ("--sparsity", "-0.1"),
     ("--batch-size", "0"), ("--patience", "-1"), ("--timesteps", "0"), ("--classes", "0"), ("--w-rank", "0"),
     ("--l2", "-1e-5"), ("--distill-alpha", "1.5"), ("--temperature", "0"), ("--seed", "-1"), ("--epochs", "2.5"),
     ("--lr", "fast")],
)
def test_train_option_values_are_usage_errors(tmp_path: Path, capsys, option, value):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", str(tmp_path / "d.npz"), "-o", str(tmp_path / "m.safetensors"), option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"tinydancer train: error: argument {option}" in err and "Traceback" not in err


def test_train_help_states_every_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for fragment in ("--hidden HIDDEN hidden size (default 8)", "(default 100)", "learning rate (default 0.001)",
                     "(default 32)", "(default 0.2)", "0 for none (default 10)", "(default 1e-05)",
                     "default 0.0: off)", "(default 3.0)", "(default: no compression)", "(default 0)",
                     "(default: label)", "(default: none)", "(default: full rank)"):
        assert fragment in text, fragment


def test_train_report_into_a_missing_folder_fails_before_training(tmp_path: Path, capsys):
    X, y = easy_data(200)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    out = tmp_path / "m.safetensors"
    code = cli.main(["train", str(tmp_path / "d.npz"), "-o", str(out), "--report", str(tmp_path / "no" / "r.json"),
                     "--epochs", "2"])
    assert code == 1
    captured = capsys.readouterr()
    missing = tmp_path / "no"
    assert captured.err == f"tinydancer: error: {missing / 'r.json'}: the folder {missing} does not exist\n"
    assert captured.out == "" and not out.exists()  # no epoch ran, no model was written
    code = cli.main(["train", str(tmp_path / "d.npz"), "-o", str(tmp_path / "no" / "m.safetensors")])
    assert code == 1 and "the folder" in capsys.readouterr().err
    assert cli.main(["train", str(tmp_path / "d.npz"), "-o", str(out), "--report", str(out)]) == 1
    assert "--report names the model file" in capsys.readouterr().err and not out.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_train_onto_a_fifo_leaves_it_untouched(tmp_path: Path, capsys):
    X, y = easy_data(200)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    fifo = tmp_path / "m.safetensors"
    os.mkfifo(fifo)
    assert cli.main(["train", str(tmp_path / "d.npz"), "-o", str(fifo), "--epochs", "2"]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"tinydancer: error: {fifo}: is a FIFO, not a regular file; it was left untouched\n"
    assert fifo.is_fifo() and captured.out == ""
    report = tmp_path / "r.fifo"
    os.mkfifo(report)
    assert cli.main(["train", str(tmp_path / "d.npz"), "-o", str(tmp_path / "m2.safetensors"), "--report",
                     str(report)]) == 1
    assert "is a FIFO" in capsys.readouterr().err and report.is_fifo()
    assert not (tmp_path / "m2.safetensors").exists()


def test_train_onto_symlinks_writes_their_targets(tmp_path: Path, capsys):
    X, y = easy_data(200)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    (tmp_path / "models").mkdir()
    link, report_link = tmp_path / "current.safetensors", tmp_path / "report.json"
    link.symlink_to(tmp_path / "models" / "v2.safetensors")
    report_link.symlink_to(tmp_path / "models" / "v2.json")
    assert cli.main(["train", str(tmp_path / "d.npz"), "-o", str(link), "--report", str(report_link),
                     "--epochs", "2", "-q"]) == 0
    assert link.is_symlink() and report_link.is_symlink()
    assert FastGRNN.load(tmp_path / "models" / "v2.safetensors").config.input_dim == 5
    assert json.loads((tmp_path / "models" / "v2.json").read_text())["examples"] == 200
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["v2.json", "v2.safetensors"]  # no temp files
    capsys.readouterr()


def test_train_one_class_warns_in_one_line(tmp_path: Path, capsys):
    X, _ = easy_data(200)
    np.savez(tmp_path / "d.npz", X=X, y=np.ones(200))
    report = tmp_path / "r.json"
    assert cli.main(["train", str(tmp_path / "d.npz"), "-o", str(tmp_path / "m.safetensors"), "--report", str(report),
                     "--epochs", "2", "-q"]) == 0
    err = capsys.readouterr().err
    assert err == ("tinydancer: warning: every training label is 1: the model can only learn to predict that one "
                   "label\n")
    assert json.loads(report.read_text())["final"]["auc"] is None  # NaN for one class; strict JSON has none


def test_train_progress_counts_each_stage_epochs(tmp_path: Path, capsys):
    X, y = easy_data(300)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    report = tmp_path / "r.json"
    assert cli.main(["train", str(tmp_path / "d.npz"), "-o", str(tmp_path / "m.safetensors"), "--epochs", "31",
                     "--sparsity", "0.5", "--patience", "0", "--report", str(report)]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()  # not a terminal: every tenth epoch and each stage's last
    assert [line.split("  loss")[0].strip() for line in lines] == [
        "dense epoch   10/11", "dense epoch   11/11", "iht epoch   10/10", "retrain epoch   10/10"]
    note = "note: U is unused with one timestep (h0 = 0) and is not counted in the sparsity"
    assert note in captured.out.splitlines()
    data = json.loads(report.read_text())
    assert data["notes"] == [note.removeprefix("note: ")]
    assert [s["sparsity"] for s in data["stages"]][-1] == pytest.approx(0.5, abs=0.03)
