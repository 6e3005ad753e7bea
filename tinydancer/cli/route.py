"""``tinydancer route``: a JSON routing request in (a file or standard input), the JSON response out."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from tinydancer.cli.options import positive_int

if TYPE_CHECKING:
    from tinydancer.types import RoutingRequest

HELP = "route a JSON request of candidates, or prompts with --text; JSON decisions out"
DESCRIPTION = ("Route a JSON request of candidates (a file, or - for standard input) with the candidate router, or "
               "with --text route prompts with the query router: --text \"...\" for one prompt, --text - for "
               "JSON Lines of prompts on standard input (each line a JSON string, or an object with \"prompt\"), "
               "one decision per line. --text needs the [embed] extra.")

# The fields a candidate object may have, as Candidate takes them.
_CANDIDATE_FIELDS = frozenset({"id", "embedding", "metadata", "created_at", "access_count", "success_rate"})

MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""The largest request ``route`` reads by default (64 MiB); ``--max-request-bytes`` changes it."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to its subparser."""
    parser.add_argument("request", nargs="?", default="-", help="JSON file, or - (default) for standard input")
    parser.add_argument("--model", help="a candidate model file instead of the shipped one")
    parser.add_argument("--pretty", action="store_true", help="indent the JSON")
    parser.add_argument("--max-request-bytes", type=positive_int, default=MAX_REQUEST_BYTES, metavar="N",
                        help="refuse a request larger than this (default %(default)s, 64 MiB)")
    parser.add_argument("--text", metavar="PROMPT",
                        help="route this prompt with the query router instead (- : JSON Lines of prompts on stdin)")
    parser.add_argument("--query-model", metavar="PATH",
                        help="with --text: a query router file instead of the shipped one")


def _read_bytes(source: str, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``source`` (a path, or ``-`` for standard input), so that a larger
    request shows without reading it all."""
    if source == "-":
        stdin = sys.stdin
        if hasattr(stdin, "buffer"):
            return stdin.buffer.read(limit + 1)
        # a text stream without bytes underneath (a StringIO); surrogateescape gives back undecodable bytes
        return stdin.read(limit + 1).encode("utf-8", "surrogateescape")
    with open(source, "rb") as f:
        return f.read(limit + 1)


def _read_text(source: str, limit: int, too_large: str, not_utf8: str) -> str:
    """``source`` (as for :func:`_read_bytes`) decoded as UTF-8, a leading BOM dropped.

    Raises:
        InvalidInputError: ``too_large`` when ``source`` holds more than ``limit`` bytes; ``not_utf8``
            followed by the first bad byte and its offset when it is not UTF-8.
        OSError: ``source`` cannot be read.
    """
    from tinydancer.errors import InvalidInputError

    raw = _read_bytes(source, limit)
    if len(raw) > limit:
        raise InvalidInputError(too_large)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{not_utf8} (byte {raw[exc.start]:#04x} at offset {exc.start})") from None


def _id_note(candidate: Any) -> str:
    """`` (candidate id 'x')`` when the candidate is an object whose id is a string, as the router says it."""
    cid = candidate.get("id") if isinstance(candidate, dict) else None
    return f" (candidate id {cid!r})" if isinstance(cid, str) else ""


def read_request(source: str, max_bytes: int = MAX_REQUEST_BYTES) -> RoutingRequest:
    """Read a routing request from JSON.

    Args:
        source: a file path, or ``-`` for standard input; UTF-8 text.
        max_bytes: the largest request accepted; at most one byte more is read.

    Returns:
        The request: ``{"query_embedding": [...], "candidates": [{"id", "embedding", ...}, ...],
        "metadata": {...}}`` with each candidate made a :class:`Candidate`.

    Raises:
        InvalidInputError: the source cannot be read, is larger than ``max_bytes``, is not UTF-8 or not
            JSON, is nested too deeply, or does not have that form. A bad candidate is named by its index
            and id, as the router names them: ``candidates[3].success_rate must ... (candidate id 'doc-7')``.
    """
    from tinydancer.errors import InvalidInputError
    from tinydancer.types import Candidate, RoutingRequest

    where = "standard input" if source == "-" else source
    try:
        text = _read_text(source, max_bytes, f"{where}: the request is larger than {max_bytes} bytes "
                                             f"(--max-request-bytes raises the limit)",
                          f"{where}: the request is not UTF-8 text")
    except OSError as exc:
        raise InvalidInputError(f"{source}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"the request is not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidInputError("the request is nested too deeply to be read as JSON") from None
    if not isinstance(data, dict) or "query_embedding" not in data or "candidates" not in data:
        raise InvalidInputError("the request must be a JSON object with query_embedding and candidates")
    if not isinstance(data["candidates"], list):
        raise InvalidInputError("candidates must be a JSON list")
    candidates = []
    for i, c in enumerate(data["candidates"]):
        note = _id_note(c)
        if not isinstance(c, dict) or "id" not in c or "embedding" not in c:
            raise InvalidInputError(f"candidates[{i}] must be an object with at least id and embedding{note}")
        unknown = set(c) - _CANDIDATE_FIELDS
        if unknown:
            raise InvalidInputError(f"candidates[{i}] has unknown fields {sorted(unknown)}{note}")
        try:
            candidates.append(Candidate(**c))
        except InvalidInputError as exc:  # Candidate's messages start with the field's name
            raise InvalidInputError(f"candidates[{i}].{exc}{note}") from None
    return RoutingRequest(query_embedding=data["query_embedding"], candidates=candidates,
                          metadata=data.get("metadata"))


def run(args: argparse.Namespace) -> int:
    """Route the request and print the response as JSON; the exit status is 0.

    Raises:
        TinyDancerError: a bad request or model.
    """
    from tinydancer.errors import InvalidInputError
    from tinydancer.router import Router, RouterConfig

    if args.text is not None:
        if args.request != "-" or args.model is not None:
            raise InvalidInputError("--text routes prompts with the query router: give no request file or --model")
        return _route_text(args)
    if args.query_model is not None:
        raise InvalidInputError("--query-model goes with --text")
    request = read_request(args.request, args.max_request_bytes)
    with Router(RouterConfig(model_path=args.model)) as router:
        response = router.route(request)
    json.dump(response.to_dict(), sys.stdout, indent=2 if args.pretty else None)
    print()
    return 0


def read_prompts(limit: int) -> list[str]:
    """The prompts of JSON Lines on standard input: each non-blank line a JSON string, or an object whose
    ``prompt`` is one.

    Raises:
        InvalidInputError: more than ``limit`` bytes, not UTF-8, a line that is not such JSON (named by its
            number), or no prompt at all.
    """
    from tinydancer.errors import InvalidInputError

    text = _read_text("-", limit, f"standard input: more than {limit} bytes (--max-request-bytes raises the limit)",
                      "standard input is not UTF-8 text")
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise InvalidInputError(f"line {number}: not JSON (give a JSON string or {{\"prompt\": ...}})") from None
        if isinstance(item, dict):
            item = item.get("prompt")
        if not isinstance(item, str):
            raise InvalidInputError(f"line {number}: a prompt must be a JSON string or an object with a string "
                                    f"\"prompt\"")
        prompts.append(item)
    if not prompts:
        raise InvalidInputError("standard input holds no prompt")
    return prompts


def _route_text(args: argparse.Namespace) -> int:
    """``--text``: one decision as JSON, or one JSON line per prompt of standard input."""
    from tinydancer.query_router import QueryRouter

    router = QueryRouter.default() if args.query_model is None else QueryRouter.load(args.query_model)
    indent = 2 if args.pretty else None
    if args.text != "-":
        print(json.dumps(router.route_text(args.text).to_dict(), indent=indent))
        return 0
    batch = router.route_texts(read_prompts(args.max_request_bytes))
    for i in range(len(batch)):
        print(json.dumps(batch.decision(i).to_dict()))
    return 0
