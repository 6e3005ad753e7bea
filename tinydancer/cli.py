"""The ``tinydancer`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tinydancer")
    parser.parse_args(argv)
    return 0
