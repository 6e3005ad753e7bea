"""``tinydancer train``: train a FastGRNN from a ``.npz`` or ``.csv`` file, optionally compress it (IHT
pruning, retraining, int8), and write it as a ``.safetensors`` model file with an optional JSON report."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinydancer.training import TrainingMetrics

HELP = "train a FastGRNN model from a .npz or .csv file"
DESCRIPTION = ("Train a FastGRNN (optionally compressed: IHT pruning, retraining, int8) and "
               "write it as a .safetensors model file.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to its subparser."""
    parser.add_argument("data", help=".npz (X, y[, soft_targets, X_val, y_val]) or .csv (features, label column)")
    parser.add_argument("-o", "--out", required=True, help="model file to write (.safetensors)")
    parser.add_argument("--report", help="also write a JSON training report here")
    parser.add_argument("--label-column", default="label", help="CSV label column (default: label)")
    parser.add_argument("--hidden", type=int, default=8, help="hidden size (default 8)")
    parser.add_argument("--timesteps", type=int, default=1, help="timesteps per example (default 1)")
    parser.add_argument("--classes", type=int, default=1, help="1 for a probability, more for a softmax (default 1)")
    parser.add_argument("--w-rank", type=int, help="low-rank W of this rank")
    parser.add_argument("--u-rank", type=int, help="low-rank U of this rank")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.001, help="learning rate (default 0.001)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--validation-split", type=float, default=0.2)
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs (0: off)")
    parser.add_argument("--l2", type=float, default=1e-5, help="L2 regularisation (default 1e-5)")
    parser.add_argument("--distill-alpha", type=float, default=0.0,
                        help="weight of the teacher's soft targets (needs soft targets in the data; default 0: off)")
    parser.add_argument("--temperature", type=float, default=3.0, help="distillation temperature (default 3)")
    parser.add_argument("--sparsity", type=float, help="compress: prune to this sparsity with IHT, retrain, quantize")
    parser.add_argument("--no-quantize", action="store_true", help="with --sparsity: stop before quantization")
    parser.add_argument("--quantize", action="store_true", help="without --sparsity: quantize to int8 after training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")


class _Progress:
    """One status line per epoch on stderr: rewritten in place on a terminal, every tenth epoch otherwise.

    Args:
        total: the number of epochs per stage, shown as the denominator.
        quiet: print nothing.
    """

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet
        self.tty = sys.stderr.isatty()

    def __call__(self, stage: str, metrics: TrainingMetrics) -> None:
        """Show the epoch ``metrics`` of training stage ``stage``."""
        if self.quiet:
            return
        line = (f"{stage:>8} epoch {metrics.epoch + 1:>4}/{self.total}  loss {metrics.train_loss:.4f}  "
                f"val_loss {metrics.val_loss:.4f}  val_acc {metrics.val_accuracy:.4f}  lr {metrics.learning_rate:.2e}")
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif (metrics.epoch + 1) % 10 == 0:
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        """End the status line (on a terminal)."""
        if self.tty and not self.quiet:
            print(file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Train, write the model (and the report), and print the result; the exit status is 0.

    Raises:
        TinyDancerError: unreadable or bad data, a bad setting, diverging training, or an unwritable file.
    """
    from tinydancer.model import FastGRNN, FastGRNNConfig
    from tinydancer.training import Trainer, TrainingConfig, compress, evaluate, load_training_data

    data = load_training_data(args.data, label_column=args.label_column, timesteps=args.timesteps)
    input_dim = int(data.X.shape[-1])
    model = FastGRNN(FastGRNNConfig(input_dim=input_dim, hidden_dim=args.hidden, output_dim=args.classes,
                                    timesteps=args.timesteps, w_rank=args.w_rank, u_rank=args.u_rank), seed=args.seed)
    config = TrainingConfig(
        learning_rate=args.lr, batch_size=args.batch_size, epochs=args.epochs, validation_split=args.validation_split,
        early_stopping_patience=args.patience if args.patience > 0 else None, l2_reg=args.l2,
        enable_distillation=data.soft_targets is not None and args.distill_alpha > 0,
        distillation_alpha=args.distill_alpha if args.distill_alpha > 0 else 0.5,
        distillation_temperature=args.temperature, seed=args.seed)
    progress = _Progress(args.epochs, args.quiet)
    start = time.perf_counter()
    report: dict[str, Any] = {"data": os.path.abspath(args.data), "examples": int(data.X.shape[0]),
                              "model_config": model.config.to_dict(), "training_config": asdict(config)}
    if args.sparsity is not None:
        result = compress(model, data.X, data.y, target_sparsity=args.sparsity, config=config,
                          X_val=data.X_val, y_val=data.y_val, quantize=not args.no_quantize, callback=progress)
        progress.done()
        print(result.table())
        report["stages"] = [asdict(s) for s in result.stages]
        report["histories"] = {k: [asdict(m) for m in v] for k, v in result.histories.items()}
    else:
        history = Trainer(model, config).fit(data.X, data.y, data.soft_targets, data.X_val, data.y_val,
                                             callback=lambda m: progress("train", m))
        progress.done()
        if args.quantize:
            model.quantize()
        report["history"] = [asdict(m) for m in history]
    X_eval, y_eval = (data.X_val, data.y_val) if data.X_val is not None else (data.X, data.y)
    final = evaluate(model, X_eval, y_eval)
    report.update(final=final, size_bytes=model.size_bytes(), seconds=time.perf_counter() - start,
                  weights={"W": model.cell.W.kind, "U": model.cell.U.kind})
    model.save(args.out)
    where = "validation" if data.X_val is not None else "training"
    auc = f", AUC {final['auc']:.4f}" if final.get("auc") is not None else ""
    print(f"wrote {args.out}: {model.size_bytes()} bytes (W {model.cell.W.kind}, U {model.cell.U.kind}); "
          f"{where} loss {final['loss']:.4f}, accuracy {final['accuracy']:.4f}{auc}; "
          f"{report['seconds']:.1f} s")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.report}")
    return 0
