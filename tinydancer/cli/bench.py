"""``tinydancer bench``: the benchmark table (routing, kernels, model) on every available ISA, and the time
of one training epoch."""

from __future__ import annotations

import argparse

HELP = "time the kernels on every available ISA"
DESCRIPTION = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to its subparser."""
    parser.add_argument("--isa", action="append", help="only this ISA (repeatable)")
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per figure (median reported)")
    parser.add_argument("--seconds", type=float, default=0.05, help="approximate length of one repeat")
    parser.add_argument("--no-training", action="store_true", help="skip the training-epoch timing")
    parser.add_argument("--group", action="append", choices=("routing", "kernels", "model"),
                        help="only this group (repeatable; default: all three)")


def run(args: argparse.Namespace) -> int:
    """Print the table; the exit status is 0.

    Raises:
        TinyDancerError: an ``--isa`` that is not available on this machine.
    """
    from tinydancer import __version__, benchmarks, kernels
    from tinydancer.errors import TinyDancerError

    isas = args.isa or kernels.available_isas()
    for isa in isas:
        if isa not in kernels.available_isas():
            raise TinyDancerError(f"ISA {isa!r} is not available here (available: {', '.join(kernels.available_isas())})")
    print(f"tinydancer {__version__}, {benchmarks.cpu_name()}, median of {args.repeats} repeats per figure")
    groups = tuple(args.group) if args.group else ("routing", "kernels", "model")
    print(benchmarks.table(benchmarks.run(isas, repeats=args.repeats, target_s=args.seconds, groups=groups), isas))
    if not args.no_training:
        seconds = benchmarks.training_epoch_seconds()
        print(f"\ntraining, one epoch over 10,000 examples (input 5, hidden 8, batch 32): {seconds * 1e3:.0f} ms")
    return 0
