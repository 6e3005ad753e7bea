"""What the candidate router answers: :class:`RoutingDecision` (one candidate) and
:class:`RoutingResponse` (one request).

A response keeps the routing pass's results as arrays (a :class:`~tinydancer.kernels.RouteResult`) and
builds :class:`RoutingDecision` objects only when they are read, so routing 100 candidates does not cost
100 object constructions.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

from tinydancer.kernels import RouteResult

__all__ = ["RoutingDecision", "RoutingResponse", "rank_order"]


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """The router's verdict on one candidate.

    Attributes:
        candidate_id: the candidate's id.
        confidence: the model's score in [0, 1].
        use_lightweight: True when ``confidence >= confidence_threshold`` and
            ``uncertainty <= max_uncertainty``.
        uncertainty: in [0, 1]; 1.0 when the router fell back.
    """

    candidate_id: str
    confidence: float
    use_lightweight: bool
    uncertainty: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the four fields."""
        return {
            "candidate_id": self.candidate_id,
            "confidence": self.confidence,
            "use_lightweight": self.use_lightweight,
            "uncertainty": self.uncertainty,
        }


_new_object = object.__new__
_set_id = vars(RoutingDecision)["candidate_id"].__set__
_set_confidence = vars(RoutingDecision)["confidence"].__set__
_set_lightweight = vars(RoutingDecision)["use_lightweight"].__set__
_set_uncertainty = vars(RoutingDecision)["uncertainty"].__set__


def _decision(candidate_id: str, confidence: float, use_lightweight: bool, uncertainty: float) -> RoutingDecision:
    """A RoutingDecision from values that already have the right Python types, in about half the time of
    the frozen dataclass's ``__init__`` (its slots are written directly)."""
    d = _new_object(RoutingDecision)
    _set_id(d, candidate_id)
    _set_confidence(d, confidence)
    _set_lightweight(d, use_lightweight)
    _set_uncertainty(d, uncertainty)
    return d


def _read_only(a: NDArray[Any]) -> NDArray[Any]:
    a.flags.writeable = False
    return a


def rank_order(confidence: NDArray[np.float32]) -> NDArray[np.intp]:
    """The rank order of ``confidence``: indices sorted by confidence, highest first, equal values in
    input order (a stable sort). The ``order`` argument of :class:`RoutingResponse`."""
    return np.argsort(-np.asarray(confidence), kind="stable")



class RoutingResponse:
    """The result of routing one request: a decision per candidate, ranked by confidence.

    Results are held as arrays in input order plus a rank ``order``; :class:`RoutingDecision` objects
    are built only when read (``decisions``, iteration, indexing), once, and cached. Decisions are in
    rank order: confidence descending, equal confidences in input order.

    The constructor is for responses made outside the router: ``ids`` is a sequence of the N candidate ids
    in input order (list, tuple or numpy array); ``confidence`` and ``uncertainty`` are float32 (N,),
    ``use_lightweight`` bool (N,), all in input order; ``order`` is an integer array of the N input
    positions in rank order (see :func:`rank_order`). The arrays are copied. Times are microseconds.
    ``fallback_reason`` is set when the router could not use its model and fell back to the powerful model
    for every candidate.

    Raises:
        InvalidInputError: the arrays do not have one length and the right dtypes.
    """

    __slots__ = ("_result", "_ids", "_inference_time_us", "_feature_time_us", "_fallback_reason", "_decisions",
                 "_request_id")

    _result: RouteResult
    _ids: Sequence[str] | NDArray[Any]
    _inference_time_us: float
    _feature_time_us: float
    _fallback_reason: str | None
    _decisions: list[RoutingDecision] | None
    _request_id: str | None

    def __new__(
        cls,
        ids: Sequence[str] | NDArray[Any],
        confidence: NDArray[np.float32],
        uncertainty: NDArray[np.float32],
        use_lightweight: NDArray[np.bool_],
        order: NDArray[np.integer[Any]],
        inference_time_us: float,
        feature_time_us: float,
        fallback_reason: str | None = None,
        request_id: str | None = None,
    ) -> RoutingResponse:
        # from_result is the one place the slots are set; it stays a single call on the router's path
        return cls.from_result(RouteResult.from_arrays(confidence, uncertainty, use_lightweight, order), ids,
                               inference_time_us, feature_time_us, fallback_reason, request_id)

    @classmethod
    def from_result(
        cls,
        result: RouteResult,
        ids: Sequence[str] | NDArray[Any],
        inference_time_us: float,
        feature_time_us: float,
        fallback_reason: str | None = None,
        request_id: str | None = None,
    ) -> RoutingResponse:
        """A response around the results of a routing pass (not copied); ``ids`` in input order."""
        self = _new_object(cls)
        self._result = result
        self._ids = ids
        self._inference_time_us = inference_time_us
        self._feature_time_us = feature_time_us
        self._fallback_reason = fallback_reason
        self._decisions = None
        self._request_id = request_id
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (RoutingResponse.from_result, (self._result, self._ids, self._inference_time_us,
                                              self._feature_time_us, self._fallback_reason, self._request_id))

    @classmethod
    def fallback(
        cls,
        ids: Sequence[str] | NDArray[Any],
        reason: str,
        inference_time_us: float,
        feature_time_us: float = 0.0,
        request_id: str | None = None,
    ) -> RoutingResponse:
        """The all-powerful response: every candidate ``use_lightweight=False``, confidence 0.0,
        uncertainty 1.0, in input order, with ``fell_back`` True and ``fallback_reason`` = ``reason``."""
        n = len(ids)
        result = RouteResult.from_arrays(np.zeros(n, np.float32), np.ones(n, np.float32), np.zeros(n, np.bool_),
                                         np.arange(n, dtype=np.int32))
        return cls.from_result(result, ids, inference_time_us, feature_time_us, str(reason), request_id)

    # -- decisions ---------------------------------------------------------------------------------------

    def _ranked_ids(self) -> list[str]:
        ids = self._ids
        order = self._result.order
        if isinstance(ids, np.ndarray):
            return [str(i) for i in ids[order].tolist()]
        return [ids[i] for i in order.tolist()]

    @property
    def decisions(self) -> list[RoutingDecision]:
        """Every decision, in rank order. Built on first access and cached (do not mutate the list)."""
        decisions = self._decisions
        if decisions is None:
            r = self._result
            order = r.order
            decisions = list(
                map(
                    _decision,
                    self._ranked_ids(),
                    r.confidence[order].tolist(),
                    r.lightweight[order].tolist(),
                    r.uncertainty[order].tolist(),
                )
            )
            self._decisions = decisions
        return decisions

    def __iter__(self) -> Iterator[RoutingDecision]:
        return iter(self.decisions)

    def __len__(self) -> int:
        return self._result.n

    @overload
    def __getitem__(self, index: int) -> RoutingDecision: ...
    @overload
    def __getitem__(self, index: slice) -> list[RoutingDecision]: ...

    def __getitem__(self, index: int | slice) -> RoutingDecision | list[RoutingDecision]:
        """Decision(s) by rank: ``response[0]`` is the most confident candidate. An int builds just that
        decision while the full list has not been built."""
        if isinstance(index, slice):
            return self.decisions[index]
        rank = operator.index(index)
        if self._decisions is not None:
            return self._decisions[rank]
        r = self._result
        n = r.n
        if rank < 0:
            rank += n
        if not 0 <= rank < n:
            raise IndexError(f"decision index {index} out of range for {n} decisions")
        i = int(r.order[rank])
        return _decision(str(self._ids[i]), float(r.confidence[i]), bool(r.lightweight[i]), float(r.uncertainty[i]))

    # -- arrays, in rank order ---------------------------------------------------------------------------

    @property
    def order(self) -> NDArray[np.int32]:
        """The input positions in rank order (read-only)."""
        return self._result.order

    @property
    def confidences(self) -> NDArray[np.float32]:
        """Confidence of each decision, in rank order: a new read-only array."""
        r = self._result
        return _read_only(r.confidence[r.order])

    @property
    def uncertainties(self) -> NDArray[np.float32]:
        """Uncertainty of each decision, in rank order: a new read-only array."""
        r = self._result
        return _read_only(r.uncertainty[r.order])

    @property
    def lightweight(self) -> NDArray[np.bool_]:
        """``use_lightweight`` of each decision, in rank order: a new read-only array."""
        r = self._result
        return _read_only(r.lightweight[r.order])

    @property
    def candidate_ids(self) -> tuple[str, ...]:
        """Candidate ids in rank order, as a tuple."""
        if self._decisions is not None:
            return tuple([d.candidate_id for d in self._decisions])
        return tuple(self._ranked_ids())

    @property
    def result(self) -> RouteResult:
        """The routing pass's arrays, in input order (read-only)."""
        return self._result

    # -- summary -----------------------------------------------------------------------------------------

    @property
    def inference_time_us(self) -> float:
        """Time the router spent on the request, in microseconds."""
        return self._inference_time_us

    @property
    def feature_time_us(self) -> float:
        """Time spent gathering candidate fields and matching metadata, in microseconds (0.0 when there was
        nothing to gather: a CandidateBatch without query metadata)."""
        return self._feature_time_us

    @property
    def candidates_processed(self) -> int:
        """The number of candidates routed."""
        return self._result.n

    @property
    def fallback_reason(self) -> str | None:
        """Why the router fell back to the powerful model for every candidate, or None."""
        return self._fallback_reason

    @property
    def request_id(self) -> str | None:
        """The id under which the router logged this request (give it to ``record_outcome``); None when the
        router has no database."""
        return self._request_id

    @property
    def fell_back(self) -> bool:
        """True when the router fell back (model error, non-finite output, open circuit breaker)."""
        return self._fallback_reason is not None

    @property
    def lightweight_count(self) -> int:
        """How many candidates may go to the lightweight model."""
        return self._result.lightweight_count

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``decisions`` (in rank order) and the summary fields."""
        return {
            "decisions": [d.to_dict() for d in self.decisions],
            "inference_time_us": float(self._inference_time_us),
            "candidates_processed": self.candidates_processed,
            "feature_time_us": float(self._feature_time_us),
            "fell_back": self.fell_back,
            "fallback_reason": self._fallback_reason,
            "request_id": self._request_id,
        }

    def __repr__(self) -> str:
        return (
            f"RoutingResponse(candidates_processed={self.candidates_processed}, "
            f"lightweight_count={self.lightweight_count}, inference_time_us={self._inference_time_us:.2f}, "
            f"fell_back={self.fell_back})"
        )
