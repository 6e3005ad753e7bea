"""``tinydancer demo``: route the built-in requests with the shipped model and print the decisions, the
time of each ``route()`` call and how many candidates can go to the lightweight model."""

from __future__ import annotations

import argparse

from tinydancer.cli.options import non_negative_int, positive_float

HELP = "route a built-in set of requests with the shipped model"
DESCRIPTION = ("Route a built-in set of requests (candidates from a minute to four weeks old) with the shipped "
               "model and print the decisions, the time of each route() call and the share of candidates that "
               "can go to the lightweight model.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to its subparser."""
    parser.add_argument("--model", help="a candidate model file instead of the shipped one")
    parser.add_argument("--top", type=non_negative_int, default=3,
                        help="decisions shown per request (default: %(default)s)")
    parser.add_argument("--recency-half-life", type=positive_float, metavar="SECONDS",
                        help="age at which the recency feature halves (default: the crate's decay of 0.001 per "
                             "second, a half-life of 693 s)")


def run(args: argparse.Namespace) -> int:
    """Route and print; the exit status is 0.

    Raises:
        TinyDancerError: the model cannot be loaded.
    """
    from tinydancer import __version__, kernels
    from tinydancer.benchmarks import format_ns, time_call
    from tinydancer.features import FeatureConfig
    from tinydancer.router import Router, RouterConfig
    from tinydancer.synthetic import demo_requests

    features = FeatureConfig(recency_half_life=args.recency_half_life)
    config = RouterConfig(model_path=args.model, feature_config=features)
    router = Router(config)
    model = router.model
    print(f"tinydancer {__version__}: routing demo with {'the shipped model' if args.model is None else args.model} "
          f"({model.cell.W.kind} weights, {model.size_bytes()} bytes), kernels: {kernels.active_isa()}")
    print(f"lightweight when confidence >= {config.confidence_threshold} and uncertainty <= "
          f"{config.max_uncertainty}, that is confidence >= {config.effective_threshold:g}; recency halves every "
          f"{_duration(0.693147180559945 / features.recency_decay)}\n")
    total = light = 0
    for item in demo_requests():
        response = router.route(item.request)
        median_ns = time_call(lambda r=item.request: router.route(r), repeats=5, target_s=0.005)[0]
        n, k = response.candidates_processed, response.lightweight_count
        total, light = total + n, light + k
        print(f"{item.name}: {k} of {n} to the lightweight model, route() {format_ns(median_ns)}")
        for d in response.decisions[: args.top]:
            side = "lightweight" if d.use_lightweight else "powerful"
            print(f"    {d.candidate_id}  confidence {d.confidence:.3f}  uncertainty {d.uncertainty:.3f}  -> {side}")
        if n > args.top:
            print(f"    ... {n - args.top} more")
    share = light / total if total else 0.0
    print(f"\n{light} of {total} candidates ({share:.0%}) can go to the lightweight model; "
          f"circuit breaker {router.metrics()['circuit_breaker']}.")
    return 0


def _duration(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps it at least 1 (s, min, h, days)."""
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"
