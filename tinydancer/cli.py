"""The ``tinydancer`` command line: ``info`` and ``bench``.

Errors print one line to stderr and exit with status 2 (bad usage) or 1 (anything else).
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence

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
    _print_table(bench.run(isas, repeats=args.repeats, target_s=args.seconds), isas)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinydancer", description="Microsecond routing for AI requests.")
    parser.add_argument("--version", action="version", version=f"tinydancer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="version, CPU features, active kernels and a few quick timings")
    info.add_argument("--no-timings", action="store_true", help="skip the quick timings")
    info.set_defaults(func=_cmd_info)
    b = sub.add_parser("bench", help="time the kernels on every available ISA")
    b.add_argument("--isa", action="append", help="only this ISA (repeatable)")
    b.add_argument("--repeats", type=int, default=9, help="timed repeats per figure (median reported)")
    b.add_argument("--seconds", type=float, default=0.05, help="approximate length of one repeat")
    b.set_defaults(func=_cmd_bench)
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
