"""The five candidate features of the crate, computed by the C kernels.

For a query and a candidate, with ``now`` read from an injectable clock once per request::

    semantic_similarity = cosine(query, candidate.embedding)             in [-1, 1]; a zero vector gives 0
    recency_score       = exp(-recency_decay * max(now - created_at, 0))  created_at in unix SECONDS
                        = 0.5 ** (age / recency_half_life)
    frequency_score     = min(ln(1 + access_count) / ln(1 + 10000), 1)
    success_rate        = candidate.success_rate                         in [0, 1]
    metadata_overlap    = |{k in query_md : candidate_md[k] == query_md[k]}| / |query_md|   (0 if either is empty)
    features            = [w_sim*sim, w_rec*rec, w_freq*freq, w_succ*succ, w_meta*meta]

Unlike the crate, NaN or Inf anywhere, a mismatched embedding length, a negative access count or a
success rate outside [0, 1] raise :class:`~tinydancer.errors.InvalidInputError` naming the field, and so
does a ``created_at`` more than ``future_tolerance`` seconds after ``now`` (a time in milliseconds, say).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tinydancer import checks, kernels
from tinydancer.candidates import Candidate, CandidateBatch
from tinydancer.errors import ConfigError, InvalidInputError
from tinydancer.metadata import metadata_overlap

__all__ = ["FeatureConfig", "FeatureVector", "FeatureEngineer", "NUM_FEATURES", "FEATURE_NAMES"]

NUM_FEATURES = kernels.NUM_FEATURES
FEATURE_NAMES = ("semantic_similarity", "recency_score", "frequency_score", "success_rate", "metadata_overlap")

_candidate_features = kernels.candidate_features
_FLOAT32_MAX = float(np.finfo(np.float32).max)  # the kernels weigh in float32
_CRATE_DECAY = 0.001


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Weights of the five features and the recency decay, with the crate's defaults.

    Args:
        similarity_weight, recency_weight, frequency_weight, success_weight, metadata_weight: finite,
            >= 0. They need not sum to 1.
        recency_decay: per second, finite, >= 0. The crate's 0.001 halves the recency score every 11.6
            minutes: a candidate a day old has a recency score of 2e-38, so recency only tells apart
            candidates of the last hour or so.
        recency_half_life: the same decay said as the age, in seconds, at which the recency score is 0.5
            (``recency_decay = ln 2 / recency_half_life``); when given it sets ``recency_decay``, e.g.
            ``FeatureConfig(recency_half_life=7 * 86400)`` for a week.
        future_tolerance: seconds a candidate's ``created_at`` may lie after ``now`` (clocks of different
            machines disagree a little); a later one raises
            :class:`~tinydancer.errors.InvalidInputError`.

    Raises:
        ConfigError: a value is not a finite number >= 0 (a half-life > 0), or ``recency_decay`` and
            ``recency_half_life`` disagree; the message names it.
    """

    similarity_weight: float = 0.4
    recency_weight: float = 0.2
    frequency_weight: float = 0.15
    success_weight: float = 0.15
    metadata_weight: float = 0.1
    recency_decay: float = _CRATE_DECAY
    recency_half_life: float | None = None
    future_tolerance: float = kernels.FUTURE_TOLERANCE

    def __post_init__(self) -> None:
        for name in (
            "similarity_weight",
            "recency_weight",
            "frequency_weight",
            "success_weight",
            "metadata_weight",
            "recency_decay",
        ):
            object.__setattr__(self, name, checks.real(getattr(self, name), name, 0.0, _FLOAT32_MAX))
        object.__setattr__(self, "future_tolerance", checks.real(self.future_tolerance, "future_tolerance", 0.0))
        if self.recency_half_life is not None:
            half_life = checks.real(self.recency_half_life, "recency_half_life", 0.0, low_open=True)
            decay = math.log(2.0) / half_life
            if self.recency_decay not in (_CRATE_DECAY, decay):
                raise ConfigError(f"recency_decay {self.recency_decay} and recency_half_life {half_life} disagree; "
                                  "give one of them")
            object.__setattr__(self, "recency_half_life", half_life)
            object.__setattr__(self, "recency_decay", decay)

    @property
    def weights(self) -> tuple[float, float, float, float, float]:
        """(similarity, recency, frequency, success, metadata) weights, in feature order."""
        return (
            self.similarity_weight,
            self.recency_weight,
            self.frequency_weight,
            self.success_weight,
            self.metadata_weight,
        )

    def kernel_weights(self) -> kernels.FeatureWeights:
        """The weights and decay bound for the kernels: build it once and pass it as ``weights=`` to
        :func:`~tinydancer.kernels.candidate_features` or :func:`~tinydancer.kernels.score_candidates`."""
        return kernels.FeatureWeights(self.weights, self.recency_decay, self.future_tolerance)


@dataclass(frozen=True, slots=True)
class FeatureVector:
    """The features of one candidate.

    Attributes:
        semantic_similarity, recency_score, frequency_score, success_rate, metadata_overlap: the raw
            values, before weighting (computed in float32 by the kernels).
        features: the weighted five-vector, as a tuple of floats: exactly the row that
            :meth:`FeatureEngineer.extract_batch_features` gives for this candidate. A tuple keeps the
            vector immutable and hashable; :meth:`as_array` gives it as float32.
    """

    semantic_similarity: float
    recency_score: float
    frequency_score: float
    success_rate: float
    metadata_overlap: float
    features: tuple[float, float, float, float, float]

    @property
    def raw(self) -> tuple[float, float, float, float, float]:
        """The five raw values, in feature order."""
        return (
            self.semantic_similarity,
            self.recency_score,
            self.frequency_score,
            self.success_rate,
            self.metadata_overlap,
        )

    def as_array(self) -> NDArray[np.float32]:
        """The weighted features as a float32 array of shape (5,)."""
        return np.array(self.features, dtype=np.float32)


class FeatureEngineer:
    """Computes candidate features through :func:`tinydancer.kernels.candidate_features`.

    Args:
        config: the weights and decay (default: ``FeatureConfig()``, the crate's).
        clock: a callable returning the current unix time in seconds (default :func:`time.time`). It is
            read once per call; pass ``now=`` to the extract methods to reuse one reading.

    Raises:
        ConfigError: ``config`` is not a FeatureConfig, or ``clock`` is not callable.

    The engineer holds no per-request state and may be shared between threads.
    """

    __slots__ = ("_config", "_clock", "_weights", "_unit_weights", "_w32")

    def __init__(self, config: FeatureConfig | None = None, clock: Callable[[], float] | None = None) -> None:
        if config is None:
            config = FeatureConfig()
        elif not isinstance(config, FeatureConfig):
            raise ConfigError(f"config must be a FeatureConfig, got {type(config).__name__}")
        if clock is None:
            clock = time.time
        elif not callable(clock):
            raise ConfigError(f"clock must be a callable returning unix seconds, got {type(clock).__name__}")
        self._config = config
        self._clock = clock
        self._weights = config.kernel_weights()
        # raw values: the same kernel with unit weights (and the same decay)
        self._unit_weights = kernels.FeatureWeights((1.0,) * NUM_FEATURES, config.recency_decay,
                                                    config.future_tolerance)
        # the kernel multiplies in float32 (float weight * float value); so does extract_features
        self._w32 = np.array(config.weights, dtype=np.float32)

    @property
    def config(self) -> FeatureConfig:
        return self._config

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def extract_features(
        self,
        query_embedding: ArrayLike,
        candidate: Candidate,
        query_metadata: dict[str, Any] | None = None,
        *,
        now: float | None = None,
    ) -> FeatureVector:
        """The raw and weighted features of one candidate.

        Args:
            query_embedding: 1-D, the same length as the candidate's embedding.
            candidate: a :class:`Candidate`; its fields are checked again (they may have been assigned).
            query_metadata: the request's metadata dict, or None.
            now: unix seconds; default: one reading of the clock.

        Raises:
            InvalidInputError: a bad query, a bad candidate field, or mismatched lengths, naming it.
        """
        if not isinstance(candidate, Candidate):
            raise InvalidInputError(f"candidate must be a Candidate, got {type(candidate).__name__}")
        columns = kernels.CandidateColumns.buffer()
        _, metadatas = kernels.gather_candidates((candidate,), columns, "candidate", single=True,
                                                 metadata=query_metadata is not None)
        overlap = None if query_metadata is None else metadata_overlap(query_metadata, metadatas)
        raw = _candidate_features(query_embedding, columns, now=self._time(now), metadata_overlap=overlap,
                                  weights=self._unit_weights, query_name="query_embedding")
        values = raw[0].tolist()
        weighted = (raw[0] * self._w32).tolist()
        return FeatureVector(values[0], values[1], values[2], values[3], values[4], tuple(weighted))

    def extract_batch_features(
        self,
        query_embedding: ArrayLike,
        candidates: Sequence[Candidate] | CandidateBatch,
        query_metadata: dict[str, Any] | None = None,
        *,
        now: float | None = None,
        out: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float32]:
        """The weighted features of N candidates, as float32 (N, 5), rows in input order.

        Args:
            query_embedding: 1-D, the candidates' embedding length.
            candidates: a :class:`CandidateBatch` (the fast path: no per-candidate Python work unless
                ``query_metadata`` is given), or a list or tuple of :class:`Candidate` (converted with
                :meth:`CandidateBatch.from_candidates`, which costs far more than the features).
            query_metadata: the request's metadata dict, or None. Matching it costs a Python loop over
                the candidates, except for a CandidateBatch used more than once, which builds an index
                (see :meth:`CandidateBatch.metadata_overlap`).
            now: unix seconds; default: one reading of the clock.
            out: optional writable C-contiguous float32 (N, 5) array to fill and return.

        Raises:
            InvalidInputError: a bad query or candidate field, or mismatched lengths, naming it.
        """
        if type(candidates) is CandidateBatch or isinstance(candidates, CandidateBatch):
            columns = candidates.columns
            overlap = None if query_metadata is None else candidates.metadata_overlap(query_metadata)
        elif isinstance(candidates, (list, tuple)):
            columns = kernels.CandidateColumns.buffer()
            _, metadatas = kernels.gather_candidates(candidates, columns, metadata=query_metadata is not None)
            overlap = None if query_metadata is None else metadata_overlap(query_metadata, metadatas)
        else:
            raise InvalidInputError(
                f"candidates must be a list of Candidate or a CandidateBatch, got {type(candidates).__name__}")
        return _candidate_features(query_embedding, columns, now=self._time(now), metadata_overlap=overlap,
                                   weights=self._weights, out=out, query_name="query_embedding")

    def _time(self, now: Any) -> float:
        """``now`` checked, or one reading of the clock, checked."""
        if now is None:
            return checks.clock_reading(self._clock())
        return checks.real(now, "now", error=InvalidInputError)

    def __repr__(self) -> str:
        return f"FeatureEngineer(config={self._config!r})"

