"""``tinydancer route``: a JSON routing request in (a file or standard input), the JSON response out."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tinydancer.types import RoutingRequest

HELP = "route a JSON request (file or - for stdin); JSON decisions out"
DESCRIPTION = None

# The fields a candidate object may have, as Candidate takes them.
_CANDIDATE_FIELDS = frozenset({"id", "embedding", "metadata", "created_at", "access_count", "success_rate"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to its subparser."""
    parser.add_argument("request", nargs="?", default="-", help="JSON file, or - (default) for standard input")
    parser.add_argument("--model", help="a candidate model file instead of the shipped one")
    parser.add_argument("--pretty", action="store_true", help="indent the JSON")


def read_request(source: str) -> RoutingRequest:
    """Read a routing request from JSON.

    Args:
        source: a file path, or ``-`` for standard input.

    Returns:
        The request: ``{"query_embedding": [...], "candidates": [{"id", "embedding", ...}, ...],
        "metadata": {...}}`` with each candidate made a :class:`Candidate`.

    Raises:
        InvalidInputError: the source cannot be read, is not JSON, or does not have that form.
    """
    from tinydancer.errors import InvalidInputError
    from tinydancer.types import Candidate, RoutingRequest

    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        raise InvalidInputError(f"{source}: cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"the request is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "query_embedding" not in data or "candidates" not in data:
        raise InvalidInputError("the request must be a JSON object with query_embedding and candidates")
    if not isinstance(data["candidates"], list):
        raise InvalidInputError("candidates must be a JSON list")
    candidates = []
    for i, c in enumerate(data["candidates"]):
        if not isinstance(c, dict) or "id" not in c or "embedding" not in c:
            raise InvalidInputError(f"candidates[{i}] must be an object with at least id and embedding")
        unknown = set(c) - _CANDIDATE_FIELDS
        if unknown:
            raise InvalidInputError(f"candidates[{i}] has unknown fields {sorted(unknown)}")
        candidates.append(Candidate(**c))
    return RoutingRequest(query_embedding=data["query_embedding"], candidates=candidates,
                          metadata=data.get("metadata"))


def run(args: argparse.Namespace) -> int:
    """Route the request and print the response as JSON; the exit status is 0.

    Raises:
        TinyDancerError: a bad request or model.
    """
    from tinydancer.router import Router, RouterConfig

    request = read_request(args.request)
    with Router(RouterConfig(model_path=args.model)) as router:
        response = router.route(request)
    json.dump(response.to_dict(), sys.stdout, indent=2 if args.pretty else None)
    print()
    return 0
