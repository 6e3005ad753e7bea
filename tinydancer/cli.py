"""The ``tinydancer`` command line: ``demo``, ``route``, ``info``, ``bench`` and ``train``.

Errors print one line to stderr and exit with status 2 (bad usage) or 1 (anything else).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

from tinydancer import __version__, bench, kernels
from tinydancer.errors import TinyDancerError


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _print_table(timings: list[bench.Timing], isas: list[str]) -> None:
    names = list(dict.fromkeys(t.name for t in timings))
    by_key = {(t.name, t.isa): t for t in timings}
    width = max(len(n) for n in names)
    print(f"{'benchmark':<{width}}  " + "  ".join(f"{isa:>10}" for isa in isas) + "  peer")
    for name in names:
        cells = "  ".join(f"{bench.format_ns(by_key[(name, isa)].median_ns):>10}" for isa in isas)
        print(f"{name:<{width}}  {cells}  {by_key[(name, isas[0])].reference}")


def _cmd_info(args: argparse.Namespace) -> int:
    print(f"tinydancer {__version__}")
    print(f"python {platform.python_version()} on {platform.machine()}, {_cpu_name()}")
    print(f"ISAs detected: {', '.join(kernels.detected_isas())}")
    print(f"ISAs compiled: {', '.join(kernels.compiled_isas())}")
    print(f"ISAs usable:   {', '.join(kernels.available_isas())}")
    print(f"active ISA:    {kernels.active_isa()} (override with TINYDANCER_ISA or tinydancer.kernels.set_isa)")
    if not args.no_timings:
        isas = kernels.available_isas()
        print("\nmedian time per call from Python (quick run; `tinydancer bench` for a longer one):")
        _print_table(bench.run(isas, repeats=3, target_s=0.005), isas)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    isas = args.isa or kernels.available_isas()
    for isa in isas:
        if isa not in kernels.available_isas():
            raise TinyDancerError(f"ISA {isa!r} is not available here (available: {', '.join(kernels.available_isas())})")
    print(f"tinydancer {__version__}, {_cpu_name()}, median of {args.repeats} repeats per figure")
    groups = tuple(args.group) if args.group else ("routing", "kernels", "model")
    _print_table(bench.run(isas, repeats=args.repeats, target_s=args.seconds, groups=groups), isas)
    if not args.no_training:
        seconds = bench.training_epoch_seconds()
        print(f"\ntraining, one epoch over 10,000 examples (input 5, hidden 8, batch 32): {seconds * 1e3:.0f} ms")
    return 0


class _Progress:
    """One status line per epoch: rewritten in place on a terminal, every tenth epoch otherwise."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet
        self.tty = sys.stderr.isatty()

    def __call__(self, stage: str, metrics) -> None:
        if self.quiet:
            return
        line = (f"{stage:>8} epoch {metrics.epoch + 1:>4}/{self.total}  loss {metrics.train_loss:.4f}  "
                f"val_loss {metrics.val_loss:.4f}  val_acc {metrics.val_accuracy:.4f}  lr {metrics.learning_rate:.2e}")
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif (metrics.epoch + 1) % 10 == 0:
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty and not self.quiet:
            print(file=sys.stderr)


def _cmd_train(args: argparse.Namespace) -> int:
    from tinydancer import training
    from tinydancer.model import FastGRNN, FastGRNNConfig

    data = training.load_training_data(args.data, label_column=args.label_column, timesteps=args.timesteps)
    input_dim = int(data.X.shape[-1])
    classes = args.classes
    model = FastGRNN(FastGRNNConfig(input_dim=input_dim, hidden_dim=args.hidden, output_dim=classes,
                                    timesteps=args.timesteps, w_rank=args.w_rank, u_rank=args.u_rank), seed=args.seed)
    config = training.TrainingConfig(
        learning_rate=args.lr, batch_size=args.batch_size, epochs=args.epochs, validation_split=args.validation_split,
        early_stopping_patience=args.patience if args.patience > 0 else None, l2_reg=args.l2,
        enable_distillation=data.soft_targets is not None and args.distill_alpha > 0,
        distillation_alpha=args.distill_alpha if args.distill_alpha > 0 else 0.5,
        distillation_temperature=args.temperature, seed=args.seed)
    progress = _Progress(args.epochs, args.quiet)
    start = time.perf_counter()
    report: dict = {"data": os.path.abspath(args.data), "examples": int(data.X.shape[0]),
                    "model_config": model.config.to_dict(), "training_config": asdict(config)}
    if args.sparsity is not None:
        result = training.compress(model, data.X, data.y, target_sparsity=args.sparsity, config=config,
                                   X_val=data.X_val, y_val=data.y_val, quantize=not args.no_quantize,
                                   callback=lambda stage, m: progress(stage, m))
        progress.done()
        print(result.table())
        report["stages"] = [asdict(s) for s in result.stages]
        report["histories"] = {k: [asdict(m) for m in v] for k, v in result.histories.items()}
    else:
        history = training.Trainer(model, config).fit(data.X, data.y, data.soft_targets, data.X_val, data.y_val,
                                                      callback=lambda m: progress("train", m))
        progress.done()
        if args.quantize:
            model.quantize()
        report["history"] = [asdict(m) for m in history]
    X_eval, y_eval = (data.X_val, data.y_val) if data.X_val is not None else (data.X, data.y)
    final = training.evaluate(model, X_eval, y_eval)
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from tinydancer.demo import demo_requests
    from tinydancer.router import Router, RouterConfig

    router = Router(RouterConfig(model_path=args.model))
    model = router.model
    print(f"tinydancer {__version__}: routing demo with {'the shipped model' if args.model is None else args.model} "
          f"({model.cell.W.kind} weights, {model.size_bytes()} bytes), kernels: {kernels.active_isa()}")
    print(f"lightweight when confidence >= {router.config.confidence_threshold} and uncertainty <= "
          f"{router.config.max_uncertainty}\n")
    total = light = 0
    for item in demo_requests():
        response = router.route(item.request)
        median_ns = bench.time_call(lambda r=item.request: router.route(r), repeats=5, target_s=0.005)[0]
        n, k = response.candidates_processed, response.lightweight_count
        total, light = total + n, light + k
        print(f"{item.name}: {k} of {n} to the lightweight model, route() {bench.format_ns(median_ns)}")
        for d in response.decisions[: args.top]:
            side = "lightweight" if d.use_lightweight else "powerful"
            print(f"    {d.candidate_id}  confidence {d.confidence:.3f}  uncertainty {d.uncertainty:.3f}  -> {side}")
        if n > args.top:
            print(f"    ... {n - args.top} more")
    share = light / total if total else 0.0
    print(f"\n{light} of {total} candidates ({share:.0%}) can go to the lightweight model; "
          f"circuit breaker {router.metrics()['circuit_breaker']}.")
    return 0


def _read_request(source: str):
    from tinydancer.errors import InvalidInputError
    from tinydancer.types import Candidate, RoutingRequest

    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
    except OSError as exc:
        raise InvalidInputError(f"{source}: cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"the request is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "query_embedding" not in data or "candidates" not in data:
        raise InvalidInputError("the request must be a JSON object with query_embedding and candidates")
    if not isinstance(data["candidates"], list):
        raise InvalidInputError("candidates must be a JSON list")
    known = {"id", "embedding", "metadata", "created_at", "access_count", "success_rate"}
    candidates = []
    for i, c in enumerate(data["candidates"]):
        if not isinstance(c, dict) or "id" not in c or "embedding" not in c:
            raise InvalidInputError(f"candidates[{i}] must be an object with at least id and embedding")
        unknown = set(c) - known
        if unknown:
            raise InvalidInputError(f"candidates[{i}] has unknown fields {sorted(unknown)}")
        candidates.append(Candidate(**c))
    return RoutingRequest(query_embedding=data["query_embedding"], candidates=candidates,
                          metadata=data.get("metadata"))


def _cmd_route(args: argparse.Namespace) -> int:
    from tinydancer.router import Router, RouterConfig

    request = _read_request(args.request)
    with Router(RouterConfig(model_path=args.model)) as router:
        response = router.route(request)
    json.dump(response.to_dict(), sys.stdout, indent=2 if args.pretty else None)
    print()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinydancer", description="Microsecond routing for AI requests.")
    parser.add_argument("--version", action="version", version=f"tinydancer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="route a built-in set of requests with the shipped model")
    d.add_argument("--model", help="a candidate model file instead of the shipped one")
    d.add_argument("--top", type=int, default=3, help="decisions shown per request (default 3)")
    d.set_defaults(func=_cmd_demo)
    r = sub.add_parser("route", help="route a JSON request (file or - for stdin); JSON decisions out")
    r.add_argument("request", nargs="?", default="-", help="JSON file, or - (default) for standard input")
    r.add_argument("--model", help="a candidate model file instead of the shipped one")
    r.add_argument("--pretty", action="store_true", help="indent the JSON")
    r.set_defaults(func=_cmd_route)
    info = sub.add_parser("info", help="version, CPU features, active kernels and a few quick timings")
    info.add_argument("--no-timings", action="store_true", help="skip the quick timings")
    info.set_defaults(func=_cmd_info)
    b = sub.add_parser("bench", help="time the kernels on every available ISA")
    b.add_argument("--isa", action="append", help="only this ISA (repeatable)")
    b.add_argument("--repeats", type=int, default=9, help="timed repeats per figure (median reported)")
    b.add_argument("--seconds", type=float, default=0.05, help="approximate length of one repeat")
    b.add_argument("--no-training", action="store_true", help="skip the training-epoch timing")
    b.add_argument("--group", action="append", choices=("routing", "kernels", "model"),
                   help="only this group (repeatable; default: all three)")
    b.set_defaults(func=_cmd_bench)
    t = sub.add_parser("train", help="train a FastGRNN model from a .npz or .csv file",
                       description="Train a FastGRNN (optionally compressed: IHT pruning, retraining, int8) and "
                                   "write it as a .safetensors model file.")
    t.add_argument("data", help=".npz (X, y[, soft_targets, X_val, y_val]) or .csv (features, label column)")
    t.add_argument("-o", "--out", required=True, help="model file to write (.safetensors)")
    t.add_argument("--report", help="also write a JSON training report here")
    t.add_argument("--label-column", default="label", help="CSV label column (default: label)")
    t.add_argument("--hidden", type=int, default=8, help="hidden size (default 8)")
    t.add_argument("--timesteps", type=int, default=1, help="timesteps per example (default 1)")
    t.add_argument("--classes", type=int, default=1, help="1 for a probability, more for a softmax (default 1)")
    t.add_argument("--w-rank", type=int, help="low-rank W of this rank")
    t.add_argument("--u-rank", type=int, help="low-rank U of this rank")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--lr", type=float, default=0.001, help="learning rate (default 0.001)")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--validation-split", type=float, default=0.2)
    t.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs (0: off)")
    t.add_argument("--l2", type=float, default=1e-5, help="L2 regularisation (default 1e-5)")
    t.add_argument("--distill-alpha", type=float, default=0.0,
                   help="weight of the teacher's soft targets (needs soft targets in the data; default 0: off)")
    t.add_argument("--temperature", type=float, default=3.0, help="distillation temperature (default 3)")
    t.add_argument("--sparsity", type=float, help="compress: prune to this sparsity with IHT, retrain, quantize")
    t.add_argument("--no-quantize", action="store_true", help="with --sparsity: stop before quantization")
    t.add_argument("--quantize", action="store_true", help="without --sparsity: quantize to int8 after training")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    t.set_defaults(func=_cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except TinyDancerError as exc:
        print(f"tinydancer: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tinydancer: interrupted", file=sys.stderr)
        return 130
