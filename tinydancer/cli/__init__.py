"""The ``tinydancer`` command line: ``demo``, ``route``, ``info``, ``bench``, ``train``, ``calibrate``, ``eval`` and
``stats``.

Each command is a module of this package with ``HELP`` and ``DESCRIPTION`` (its help texts),
``add_arguments(parser)`` (its options) and ``run(args)`` (what it does, returning the exit status). The
command modules import nothing heavy at module level, so ``tinydancer --help`` stays fast. Option values are
checked by the types in :mod:`tinydancer.cli.options`.

Errors print one line to stderr (``tinydancer: error: ...``) and exit with status 2 (bad usage) or 1
(anything else); warnings print one line each (``tinydancer: warning: ...``). Output into a pipe whose
reader has gone (``tinydancer info | head -1``) ends quietly with status 141 (128 + SIGPIPE), as a command
killed by SIGPIPE would. A bad ``TINYDANCER_ISA`` fails the import of tinydancer itself; in the command's
own process :mod:`tinydancer.kernels` reports it as one line too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

from tinydancer import __version__
from tinydancer.cli import bench, calibrate, demo, eval, info, route, stats, train
from tinydancer.errors import TinyDancerError

__all__ = ["build_parser", "main"]

# In the order ``tinydancer --help`` lists them.
_COMMANDS = {"demo": demo, "route": route, "info": info, "bench": bench, "train": train, "calibrate": calibrate,
             "eval": eval, "stats": stats}

# What a shell reports for a command killed by SIGPIPE (1 where there is no SIGPIPE).
_BROKEN_PIPE_STATUS = 128 + int(getattr(signal, "SIGPIPE", -127))


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
        stderr) or when the output cannot be written, 130 when interrupted, 141 (128 + SIGPIPE) when the
        reader of the output has gone.

    Raises:
        SystemExit: from argparse, with status 2 for bad usage and 0 for ``--help`` and ``--version``.
    """
    try:
        status = _run(build_parser(), argv)
    except SystemExit:  # --help and --version print too
        failed = _flush_output()
        if failed is not None:
            return failed
        raise
    except BrokenPipeError:  # the reader went while the command wrote
        _discard_output()
        return _BROKEN_PIPE_STATUS
    except OSError as exc:  # not a tinydancer error: most likely the output itself (a full disk)
        failed = _flush_output()
        if failed is not None:
            return failed
        where = f"{os.fsdecode(exc.filename)}: " if exc.filename is not None else ""
        _error(f"{where}{exc.strerror or exc}")
        return 1
    failed = _flush_output()  # a reader that went shows here, not as "Exception ignored" at exit
    return status if failed is None else failed


def _flush_output() -> int | None:
    """Flush standard output: None when that worked, else the exit status to end with."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_output()
        return _BROKEN_PIPE_STATUS
    except OSError as exc:  # a full disk, say
        _discard_output()
        _error(f"cannot write the output ({exc.strerror or exc})")
        return 1
    return None


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the command, turning tinydancer errors and warnings into one line each."""
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args))
    except TinyDancerError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        print("tinydancer: interrupted", file=sys.stderr)
        return 130


def _one_line(text: str) -> str:
    return " ".join(text.split("\n"))


def _error(message: str) -> None:
    print(f"tinydancer: error: {_one_line(message)}", file=sys.stderr)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the command line: ``tinydancer: warning: <message>`` on stderr."""
    print(f"tinydancer: warning: {_one_line(str(message))}", file=sys.stderr)


def _discard_output() -> None:
    """Point standard output at the null device, so what is still buffered for a reader that has gone (or a
    full disk) is dropped at exit instead of failing again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (output captured in tests)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
