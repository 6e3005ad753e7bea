"""Simulated traffic for the feedback loop: route requests with a logging Router, and report an outcome for
every candidate decision from a simulated judge.

    python examples/feedback_loop.py routing.db                        # the shipped model
    python examples/feedback_loop.py fresh.db --model calibrated.safetensors --seed 1

Each request is a random query with candidates from ``tinydancer.synthetic``. The judge says the
lightweight answer was good enough with probability ``sigmoid(12 (similarity - 0.6) + 4 (success_rate -
0.5))``: close, reliable candidates are safe to send to the cheap model. The outcome is reported for every
candidate (as when a share of traffic is also answered by the other model to check), so the log holds
outcomes for both decisions. The script prints what the router did and how often its lightweight
decisions were bad.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tinydancer.router import Router, RouterConfig
from tinydancer.synthetic import candidate_list, random_candidates, random_query
from tinydancer.types import RoutingRequest


def judge(query: np.ndarray, cols: dict, rng: np.random.Generator) -> np.ndarray:
    """Whether the lightweight answer was good enough, per candidate (random, from the candidate's fields)."""
    similarity = cols["embeddings"] @ query  # unit vectors
    logit = 12.0 * (similarity - 0.6) + 4.0 * (cols["success_rate"] - 0.5)
    return rng.random(len(similarity)) < 1.0 / (1.0 + np.exp(-logit))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("database", help="the routing database to log to (created if missing)")
    parser.add_argument("--model", help="candidate model file (default: the shipped one)")
    parser.add_argument("--requests", type=int, default=2000, help="requests to route (default %(default)s)")
    parser.add_argument("--candidates", type=int, default=10, help="candidates per request (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    light = bad_light = 0
    config = RouterConfig(model_path=args.model, database_path=args.database)
    with Router(config) as router:
        for _ in range(args.requests):
            query = random_query(rng)
            cols = random_candidates(rng, query, args.candidates, now=time.time())
            response = router.route(RoutingRequest(query, candidate_list(cols, metadata=False)))
            good = judge(query, cols, rng)
            for index, use_lightweight in enumerate(response.result.lightweight.tolist()):
                router.record_outcome(response.request_id, bool(good[index]), candidate_id=cols["ids"][index])
                if use_lightweight:
                    light += 1
                    bad_light += not good[index]
        metrics = router.metrics()
    decisions = args.requests * args.candidates
    print(f"{args.database}: routed {args.requests} requests ({decisions} candidate decisions), logged "
          f"{metrics['log_written']} rows, dropped {metrics['log_dropped']}; model calibrated: {metrics['calibrated']}")
    share = f"{bad_light / light:.1%}" if light else "n/a"
    print(f"  lightweight: {light} of {decisions} ({light / decisions:.1%}); bad outcomes among them: {share}")


if __name__ == "__main__":
    main()
