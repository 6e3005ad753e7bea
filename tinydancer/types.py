"""The candidate router's data types under the crate's names, gathered in one place:
:class:`Candidate`, :class:`CandidateBatch` and :class:`RoutingRequest` (from
:mod:`tinydancer.candidates`), :class:`RoutingDecision` and :class:`RoutingResponse` (from
:mod:`tinydancer.responses`), and :func:`metadata_overlap` (from :mod:`tinydancer.metadata`).
"""

from __future__ import annotations

from tinydancer.candidates import Candidate, CandidateBatch, CandidateInput, RoutingRequest
from tinydancer.metadata import metadata_overlap
from tinydancer.responses import RoutingDecision, RoutingResponse, rank_order

__all__ = [
    "Candidate",
    "CandidateBatch",
    "CandidateInput",
    "RoutingDecision",
    "RoutingRequest",
    "RoutingResponse",
    "metadata_overlap",
    "rank_order",
]
