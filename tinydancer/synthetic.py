"""Synthetic routing inputs: the built-in requests of ``tinydancer demo`` and the queries and candidates
of the routing benchmarks (:mod:`tinydancer.benchmarks` and the asv suites).

Candidates are made, deterministically, the way a memory store holds them: 384-d unit embeddings, some
close paraphrases of the query (the query plus a little noise), some on the same topic, most unrelated;
ages from a minute to four weeks (paraphrases up to a day), spread evenly on a log scale; access counts and
success rates drawn per candidate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinydancer.types import Candidate, CandidateBatch, RoutingRequest

__all__ = ["DemoRequest", "candidate_batch", "candidate_list", "demo_requests", "random_candidates", "random_query"]

DIM = 384
_MINUTE, _DAY = 60.0, 86400.0


@dataclass(frozen=True)
class DemoRequest:
    """One of the demo's requests and the name it is shown under."""

    name: str
    request: RoutingRequest


def _unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to unit length along its last axis, as float32."""
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def random_query(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    """A random unit query embedding of ``dim`` float32 values."""
    return _unit(rng.standard_normal(dim))


def random_candidates(rng: np.random.Generator, query: np.ndarray, n: int, *, now: float,
                      close: float = 0.2, related: float = 0.3) -> dict[str, np.ndarray | list]:
    """Columns for n candidates: a share ``close`` nearly identical to the query, ``related`` on its topic.

    Args:
        rng: the source of randomness.
        query: the unit query embedding the candidates are placed around.
        n: the number of candidates.
        now: the current time (seconds since the epoch) that ages count back from.
        close, related: the expected shares of paraphrases and of same-topic candidates; the rest are
            unrelated.

    Returns:
        ``ids``, ``metadata``, ``embeddings`` (n, dim) float32, ``created_at``, ``access_count`` and
        ``success_rate``, one entry per candidate.
    """
    kind = rng.random(n)
    noise = rng.standard_normal((n, query.shape[0]))
    mix = np.where(kind < close, 0.05, np.where(kind < close + related, 1.0, 8.0))[:, None]
    embeddings = _unit(query[None, :] + mix * noise / np.sqrt(query.shape[0]))
    fresh = kind < close  # paraphrases of what was just asked are recent and useful
    oldest = np.where(fresh, _DAY, 28 * _DAY)
    ages = _MINUTE * np.exp(rng.uniform(0.0, 1.0, n) * np.log(oldest / _MINUTE))
    topics = ["billing", "shipping", "returns", "accounts"]
    return {
        "ids": [f"mem-{i:04d}" for i in range(n)],
        "metadata": [{"user": "u42", "topic": "billing"} if f else {"user": f"u{i % 7}", "topic": topics[i % 4]}
                     for i, f in enumerate(fresh)],
        "embeddings": embeddings,
        "created_at": now - ages,
        "access_count": np.where(fresh, rng.integers(200, 20000, n), rng.integers(0, 50, n)),
        "success_rate": np.where(fresh, rng.uniform(0.85, 1.0, n), rng.uniform(0.0, 0.8, n)).astype(np.float32),
    }


def candidate_batch(cols: Mapping[str, Any], *, metadata: bool = True) -> CandidateBatch:
    """The columns of :func:`random_candidates` as one :class:`CandidateBatch`.

    Args:
        cols: what :func:`random_candidates` returned.
        metadata: keep the candidates' metadata (else the batch has none).

    Returns:
        The batch, in the columns' order.
    """
    return CandidateBatch(cols["ids"], cols["embeddings"], cols["created_at"], cols["access_count"],
                          cols["success_rate"], cols["metadata"] if metadata else None)


def candidate_list(cols: Mapping[str, Any], *, metadata: bool = True) -> list[Candidate]:
    """The columns of :func:`random_candidates` as a list of :class:`Candidate` objects.

    Args:
        cols: what :func:`random_candidates` returned.
        metadata: keep the candidates' metadata (else each has an empty dict).

    Returns:
        One candidate per row, in the columns' order.
    """
    return [
        Candidate(id=cols["ids"][i], embedding=cols["embeddings"][i], metadata=cols["metadata"][i] if metadata else {},
                  created_at=float(cols["created_at"][i]), access_count=int(cols["access_count"][i]),
                  success_rate=float(cols["success_rate"][i]))
        for i in range(len(cols["ids"]))
    ]


def demo_requests(seed: int = 7, now: float | None = None) -> list[DemoRequest]:
    """A fixed set of requests: small and large, as objects and columnar, with query metadata.

    Args:
        seed: seeds every embedding and field.
        now: the time the candidates' ages count back from (default: now).

    Returns:
        Five named requests, of 5 to 100 candidates.
    """
    rng = np.random.default_rng(seed)
    now = time.time() if now is None else now
    out = []
    for name, n, columnar in [
        ("chat turn, 5 memories", 5, False),
        ("tool choice, 12 tools", 12, False),
        ("document lookup, 50 passages", 50, True),
        ("agent memory, 100 entries", 100, True),
        ("cold start, 8 unrelated", 8, False),
    ]:
        query = random_query(rng)
        cols = random_candidates(rng, query, n, now=now, close=0.0 if name.startswith("cold") else 0.2)
        candidates = candidate_batch(cols) if columnar else candidate_list(cols)
        request = RoutingRequest(query_embedding=query, candidates=candidates, metadata={"user": "u42", "topic": "billing"})
        out.append(DemoRequest(name, request))
    return out
