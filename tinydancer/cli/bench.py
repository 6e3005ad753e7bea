"""``tinydancer bench``: the benchmark table (candidate routing, kernels, model, query routing, text to
decision, storage) on every available ISA, and the time of one training epoch. Each row is printed as soon
as it is measured on every ISA. The text group needs the ``[embed]`` extra; without it the group prints a
note instead of its rows. The storage group's databases live in temporary folders, removed afterwards."""

from __future__ import annotations

import argparse

from tinydancer.cli.options import positive_float, positive_int

HELP = ("time routing, the kernels, the model, the query router, text to decision and the routing database "
        "on every available ISA")
DESCRIPTION = None

# Every ISA tinydancer knows (``kernels.set_isa`` accepts these names); one that this machine cannot run is
# refused with its own error when the command runs. Listed here so that ``--help`` imports no kernels.
ISA_NAMES = ("scalar", "avx2", "avx512", "neon")
GROUPS = ("routing", "kernels", "model", "query", "text", "storage")
MISSING_EMBED = ('(the [embed] extra is not installed: no text-to-decision rows; '
                 'pip install "tinydancer[embed]")')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to its subparser."""
    parser.add_argument("--isa", action="append", choices=ISA_NAMES,
                        help="only this ISA (repeatable; default: every ISA available here)")
    parser.add_argument("--repeats", type=positive_int, default=9,
                        help="timed repeats per figure, >= 1 (median reported; default 9)")
    parser.add_argument("--seconds", type=positive_float, default=0.05,
                        help="approximate length of one repeat, > 0 (default 0.05)")
    parser.add_argument("--no-training", action="store_true", help="skip the training-epoch timing")
    parser.add_argument("--group", action="append", choices=GROUPS,
                        help="only this group (repeatable; default: all; text needs the [embed] extra)")


def run(args: argparse.Namespace) -> int:
    """Print the header, then each row of the table as soon as it is measured; the exit status is 0.

    Raises:
        TinyDancerError: an ``--isa`` that is not available on this machine.
    """
    from tinydancer import __version__, benchmarks

    isas = benchmarks.check_isas(list(dict.fromkeys(args.isa)) if args.isa else None)
    groups = tuple(dict.fromkeys(args.group)) if args.group else GROUPS
    print(f"tinydancer {__version__}, {benchmarks.cpu_name()}, median of {args.repeats} repeats per figure",
          flush=True)
    cases = benchmarks.make_benchmarks(groups)
    layout = benchmarks.TableLayout.for_names([name for name, _, _ in cases], isas)
    if cases:  # none when the only group is text and the [embed] extra is missing
        print(layout.header(), flush=True)
    for row in benchmarks.measure(cases, isas, repeats=args.repeats, target_s=args.seconds):
        print(layout.row(row), flush=True)
    if "query" in groups and not any(name.startswith(benchmarks.SKLEARN_ROW) for name, _, _ in cases):
        print("(scikit-learn is not installed: no LogisticRegression.predict_proba rows)", flush=True)
    if "text" in groups and not any(name.startswith(benchmarks.TEXT_ROW) for name, _, _ in cases):
        print(MISSING_EMBED, flush=True)
    if not args.no_training:
        seconds = benchmarks.training_epoch_seconds()
        print(f"\ntraining, one epoch over 10,000 examples (input 5, hidden 8, batch 32): {seconds * 1e3:.0f} ms")
    return 0
