"""``tinydancer info``: version, CPU features, the kernels in use, and a few quick timings."""

from __future__ import annotations

import argparse
import platform

HELP = "version, CPU features, active kernels and a few quick timings"
DESCRIPTION = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to its subparser."""
    parser.add_argument("--no-timings", action="store_true", help="skip the quick timings")


def run(args: argparse.Namespace) -> int:
    """Print the report; the exit status is 0."""
    from tinydancer import __version__, benchmarks, kernels

    print(f"tinydancer {__version__}")
    print(f"python {platform.python_version()} on {platform.machine()}, {benchmarks.cpu_name()}")
    print(f"ISAs detected: {', '.join(kernels.detected_isas())}")
    print(f"ISAs compiled: {', '.join(kernels.compiled_isas())}")
    print(f"ISAs usable:   {', '.join(kernels.available_isas())}")
    print(f"active ISA:    {kernels.active_isa()} (override with TINYDANCER_ISA or tinydancer.kernels.set_isa)")
    if not args.no_timings:
        isas = kernels.available_isas()
        print("\nmedian time per call from Python (quick run; `tinydancer bench` for a longer one):")
        print(benchmarks.table(benchmarks.run(isas, repeats=3, target_s=0.005), isas))
    return 0
