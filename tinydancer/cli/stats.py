"""``tinydancer stats``: what a routing database holds: decisions, latency percentiles and the estimated
saving at given prices."""

from __future__ import annotations

import argparse
import json

from tinydancer.cli.options import non_negative_float, positive_float

HELP = "totals, latency percentiles and the estimated saving of a routing database"
DESCRIPTION = ("Read a routing database (tinydancer.storage.Storage) without writing to it and print the number "
               "of logged decisions, how many went to the lightweight and to the powerful model, the latency "
               "percentiles and the estimated saving against sending every decision to the powerful model.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to its subparser."""
    parser.add_argument("database", help="the SQLite routing database")
    parser.add_argument("--price-strong", type=positive_float, default=24.7, metavar="PRICE",
                        help="cost of a powerful-model call (default: %(default)s, RouteLLM's GPT-4 per million tokens)")
    parser.add_argument("--price-weak", type=non_negative_float, default=0.24, metavar="PRICE",
                        help="cost of a lightweight-model call (default: %(default)s, RouteLLM's Mixtral)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Print the statistics; the exit status is 0.

    Raises:
        StorageError: the file is missing, not a tinydancer database, or unreadable.
    """
    import os

    from tinydancer.errors import StorageError
    from tinydancer.storage import Storage

    if not os.path.exists(args.database):  # a read-only open would refuse it too; say it plainly
        raise StorageError(f"{args.database}: no such file")
    with Storage(args.database, read_only=True) as storage:
        stats = storage.get_statistics()
    saving = stats.estimated_saving(args.price_strong, args.price_weak)
    if args.json:
        print(json.dumps({**stats.as_dict(), "price_strong": args.price_strong, "price_weak": args.price_weak,
                          "estimated_saving": saving}, indent=2))
        return 0
    total = stats.total_routes
    share = stats.lightweight_routes / total if total else 0.0
    print(f"{args.database}: {total} routing decisions ({total - stats.query_routes} of candidates, "
          f"{stats.query_routes} of queries), {stats.total_candidates} stored candidates")
    print(f"  lightweight  {stats.lightweight_routes:>10}  ({share:.1%})")
    print(f"  powerful     {stats.powerful_routes:>10}  (of them {stats.fallback_routes} fallbacks without the model)")
    print(f"  outcomes reported: {stats.outcomes}, the lightweight answer good enough in {stats.good_outcomes}")
    if stats.lightweight_outcomes:
        bad = stats.lightweight_outcomes - stats.lightweight_good_outcomes
        print(f"  of the decisions sent to the lightweight model: {stats.lightweight_outcomes} outcomes, "
              f"{bad} bad ({bad / stats.lightweight_outcomes:.1%})")
    print(f"  inference time, us: mean {stats.avg_inference_time_us:.2f}, p50 {stats.p50_inference_time_us:.2f}, "
          f"p95 {stats.p95_inference_time_us:.2f}, p99 {stats.p99_inference_time_us:.2f}")
    print(f"  estimated saving against the powerful model alone: {saving:.1%} (costs per call: powerful "
          f"{args.price_strong:g}, lightweight {args.price_weak:g})")
    return 0
