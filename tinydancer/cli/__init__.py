"""The ``tinydancer`` command line: ``demo``, ``route``, ``info``, ``bench`` and ``train``.

Each command is a module of this package with ``HELP`` and ``DESCRIPTION`` (its help texts),
``add_arguments(parser)`` (its options) and ``run(args)`` (what it does, returning the exit status). The
command modules import nothing heavy at module level, so ``tinydancer --help`` stays fast.

Errors print one line to stderr and exit with status 2 (bad usage) or 1 (anything else).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tinydancer import __version__
from tinydancer.cli import bench, demo, info, route, train
from tinydancer.errors import TinyDancerError

__all__ = ["build_parser", "main"]

# In the order ``tinydancer --help`` lists them.
_COMMANDS = {"demo": demo, "route": route, "info": info, "bench": bench, "train": train}


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line; each subcommand stores its ``run`` as ``args.func``."""
    parser = argparse.ArgumentParser(prog="tinydancer", description="Microsecond routing for AI requests.")
    parser.add_argument("--version", action="version", version=f"tinydancer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in _COMMANDS.items():
        command_parser = sub.add_parser(name, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(command_parser)
        command_parser.set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: the command's (0 on success), 1 after a tinydancer error (printed as one line on
        stderr), 130 when interrupted.

    Raises:
        SystemExit: from argparse, with status 2 for bad usage and 0 for ``--help`` and ``--version``.
    """
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
