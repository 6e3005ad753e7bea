"""``tinydancer train``: train a FastGRNN from a ``.npz`` or ``.csv`` file, optionally compress it (IHT
pruning, retraining, int8), and write it as a ``.safetensors`` model file with an optional JSON report.

With ``--from-db``, the examples are a routing database's logged decisions that have an outcome
(:mod:`tinydancer.feedback`), less the held-out share that ``tinydancer calibrate --from-db`` certifies on:
``--kind candidate`` trains a candidate model on the logged features, ``--kind query`` a query router
(:class:`~tinydancer.query_router.QueryRouter`) on the logged query embeddings."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from tinydancer.cli.options import (
    fraction,
    non_negative_float,
    open_fraction,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    write_json,
)

if TYPE_CHECKING:
    from tinydancer.training import TrainingMetrics

HELP = "train a FastGRNN model from a .npz or .csv file, or from a routing database's outcomes"
DESCRIPTION = ("Train a FastGRNN (optionally compressed: IHT pruning, retraining, int8) and "
               "write it as a .safetensors model file. With --from-db, retrain from the decisions a router "
               "logged and the outcomes reported for them.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to its subparser; option types refuse bad values with a usage error."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("data", nargs="?",
                        help=".npz (X, y[, soft_targets, X_val, y_val]) or .csv (features, label column)")
    source.add_argument("--from-db", metavar="DATABASE",
                        help="train on a routing database's logged decisions with outcomes instead")
    parser.add_argument("--kind", choices=("candidate", "query"), default="candidate",
                        help="with --from-db: a candidate model (the five features) or a query router (the "
                             "query embeddings; a 4-member ensemble of --hidden units each) (default %(default)s)")
    parser.add_argument("--holdout", type=open_fraction, default=0.3,
                        help="with --from-db: the share of requests left out for `tinydancer calibrate --from-db`, "
                             "by a hash of the request id (default %(default)s)")
    parser.add_argument("-o", "--out", required=True, help="model file to write (.safetensors)")
    parser.add_argument("--report", help="also write a JSON training report here (default: none)")
    parser.add_argument("--label-column", default="label", help="CSV label column (default: %(default)s)")
    parser.add_argument("--hidden", type=positive_int, default=8, help="hidden size (default %(default)s)")
    parser.add_argument("--timesteps", type=positive_int, default=1,
                        help="timesteps per example (default %(default)s)")
    parser.add_argument("--classes", type=positive_int, default=1,
                        help="1 for a probability, more for a softmax (default %(default)s)")
    parser.add_argument("--w-rank", type=positive_int, help="low-rank W of this rank (default: full rank)")
    parser.add_argument("--u-rank", type=positive_int, help="low-rank U of this rank (default: full rank)")
    parser.add_argument("--epochs", type=positive_int, default=100,
                        help="epochs in all; with --sparsity shared out in thirds among the stages "
                             "(default %(default)s)")
    parser.add_argument("--lr", type=positive_float, default=0.001, help="learning rate (default %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="examples per optimizer step (default %(default)s)")
    parser.add_argument("--validation-split", type=fraction, default=0.2,
                        help="fraction held out for validation when the data has no X_val, in [0, 1) "
                             "(default %(default)s)")
    parser.add_argument("--patience", type=non_negative_int, default=10,
                        help="early-stopping patience in epochs, 0 for none (default %(default)s)")
    parser.add_argument("--l2", type=non_negative_float, default=1e-5,
                        help="L2 regularisation (default %(default)s)")
    parser.add_argument("--distill-alpha", type=probability, default=0.0,
                        help="weight of the teacher's soft targets, in [0, 1] (needs soft targets in the data; "
                             "default %(default)s: off)")
    parser.add_argument("--temperature", type=positive_float, default=3.0,
                        help="distillation temperature (default %(default)s)")
    parser.add_argument("--sparsity", type=fraction,
                        help="compress: prune to this sparsity in [0, 1) with IHT, retrain, quantize "
                             "(default: no compression)")
    parser.add_argument("--no-quantize", action="store_true", help="with --sparsity: stop before quantization")
    parser.add_argument("--quantize", action="store_true", help="without --sparsity: quantize to int8 after training")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default %(default)s)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")


class _Progress:
    """One status line per epoch on stderr: rewritten in place on a terminal, every tenth epoch (and each
    stage's last) otherwise.

    Args:
        totals: the number of epochs of each training stage, shown as the denominator.
        quiet: print nothing.
    """

    def __init__(self, totals: Mapping[str, int], quiet: bool) -> None:
        self.totals, self.quiet = totals, quiet
        self.tty = sys.stderr.isatty()

    def __call__(self, stage: str, metrics: TrainingMetrics) -> None:
        """Show the epoch ``metrics`` of training stage ``stage``."""
        if self.quiet:
            return
        done, total = metrics.epoch + 1, self.totals[stage]
        line = (f"{stage:>8} epoch {done:>4}/{total}  loss {metrics.train_loss:.4f}  "
                f"val_loss {metrics.val_loss:.4f}  val_acc {metrics.val_accuracy:.4f}  lr {metrics.learning_rate:.2e}")
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif done % 10 == 0 or done == total:
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        """End the status line (on a terminal)."""
        if self.tty and not self.quiet:
            print(file=sys.stderr)


def _finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float in it (an AUC of one class is NaN) made None, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    """Train, write the model (and the report), and print the result; the exit status is 0.

    Raises:
        TinyDancerError: unreadable or bad data, a bad setting, diverging training, or an unwritable file.
    """
    from tinydancer.atomic_files import check_writable
    from tinydancer.errors import ModelFileError, OutputFileError
    from tinydancer.model import FastGRNN, FastGRNNConfig
    from tinydancer.training import Trainer, TrainingConfig, compress, evaluate, load_training_data
    from tinydancer.training.compression import stage_epochs

    # Both files are checked before any training, so a bad path costs nothing.
    model_target, _ = check_writable(args.out, ModelFileError)
    if args.report is not None:
        report_target, _ = check_writable(args.report, OutputFileError)
        if report_target == model_target:
            raise OutputFileError(f"{args.report}: --report names the model file {args.out}")
    if args.from_db is not None:
        _check_from_db_options(args)
        if args.kind == "query":
            return _train_query_router(args)
        data = _logged_training_data(args)
    else:
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
    totals = stage_epochs(args.epochs) if args.sparsity is not None else {"train": args.epochs}
    progress = _Progress(totals, args.quiet)
    start = time.perf_counter()
    source = args.data if args.from_db is None else args.from_db
    report: dict[str, Any] = {"data": os.path.abspath(source), "examples": int(data.X.shape[0]),
                              "model_config": model.config.to_dict(), "training_config": asdict(config)}
    if args.from_db is not None:
        report.update(kind="candidate", holdout=args.holdout)
    if args.sparsity is not None:
        result = compress(model, data.X, data.y, target_sparsity=args.sparsity, config=config,
                          X_val=data.X_val, y_val=data.y_val, quantize=not args.no_quantize, callback=progress)
        progress.done()
        print(result.table())
        report["stages"] = [asdict(s) for s in result.stages]
        report["notes"] = list(result.notes)
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
    auc = f", AUC {final['auc']:.4f}" if final.get("auc") is not None and math.isfinite(final["auc"]) else ""
    print(f"wrote {args.out}: {model.size_bytes()} bytes (W {model.cell.W.kind}, U {model.cell.U.kind}); "
          f"{where} loss {final['loss']:.4f}, accuracy {final['accuracy']:.4f}{auc}; "
          f"{report['seconds']:.1f} s")
    if args.report is not None:
        write_json(args.report, _finite_or_none(report))
        print(f"wrote {args.report}")
    return 0


def _check_from_db_options(args: argparse.Namespace) -> None:
    """Refuse the options that do not apply to training from a routing database."""
    from tinydancer.errors import ConfigError

    if args.timesteps != 1 or args.classes != 1:
        raise ConfigError("--from-db trains on one timestep and one output (--timesteps 1, --classes 1)")
    if args.distill_alpha > 0:
        raise ConfigError("--from-db has no teacher targets: --distill-alpha does not apply")
    if args.kind == "query":
        given = [name for name, value in (("--sparsity", args.sparsity), ("--w-rank", args.w_rank),
                                          ("--u-rank", args.u_rank)) if value is not None]
        if given or args.quantize or args.no_quantize:
            raise ConfigError(f"--kind query trains a query router ensemble (always int8): "
                              f"{', '.join(given) or '--quantize/--no-quantize'} does not apply")


def _logged_examples(args: argparse.Namespace) -> Any:
    """The training part of the database's labelled decisions of ``--kind``."""
    from tinydancer.errors import InvalidInputError
    from tinydancer.feedback import logged_examples

    everything = logged_examples(args.from_db, args.kind)
    train, held = everything.split(args.holdout)
    if len(train) < 2:
        raise InvalidInputError(
            f"{args.from_db}: {len(everything)} logged {args.kind} decisions have an outcome, {len(train)} of them "
            f"outside the held-out share ({args.holdout}); training needs at least 2 (record outcomes first)")
    print(f"{args.from_db}: {len(everything)} {args.kind} decisions with an outcome; training on {len(train)}, "
          f"{len(held)} held out for calibration")
    return train


def _logged_training_data(args: argparse.Namespace) -> Any:
    """TrainingData of the candidate decisions with outcomes, outside the held-out share."""
    import numpy as np

    from tinydancer.training import TrainingData

    train = _logged_examples(args)
    return TrainingData(train.inputs, train.good.astype(np.float32))


def _train_query_router(args: argparse.Namespace) -> int:
    """``--from-db --kind query``: fit a query router on the logged embeddings (uncalibrated) and save it."""
    from tinydancer.query_router import QueryRouter
    from tinydancer.query_router.ensemble import EnsembleConfig

    train = _logged_examples(args)
    config = EnsembleConfig(hidden=args.hidden, epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                            l2_reg=args.l2, patience=args.patience, validation_split=args.validation_split)
    start = time.perf_counter()
    router = QueryRouter.fit(train.inputs, train.good, prompt_length=train.prompt_length, seed=args.seed,
                             config=config)
    router.save(args.out)
    seconds = time.perf_counter() - start
    print(f"wrote {args.out}: a query router on {len(train)} logged queries "
          f"({'with' if router.uses_prompt_length else 'without'} prompt length), {router.model.size_bytes()} "
          f"bytes, not calibrated: run `tinydancer calibrate --from-db {args.from_db} --kind query` next; "
          f"{seconds:.1f} s")
    if args.report is not None:
        report = {"data": os.path.abspath(args.from_db), "kind": "query", "examples": len(train),
                  "holdout": args.holdout, "ensemble_config": asdict(config), "seconds": seconds,
                  "size_bytes": router.model.size_bytes(), "prompt_length": router.uses_prompt_length}
        write_json(args.report, report)
        print(f"wrote {args.report}")
    return 0
