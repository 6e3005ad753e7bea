"""What the candidate router routes: :class:`Candidate`, the columnar :class:`CandidateBatch`, and
:class:`RoutingRequest` (a query with its candidates).

Values are checked once, by one layer: single numbers by :mod:`tinydancer.checks`, arrays and candidate
lists by the kernels (:class:`~tinydancer.kernels.CandidateColumns`,
:func:`~tinydancer.kernels.gather_candidates`). A :class:`CandidateBatch` keeps its checked columns, so
routing it again costs no per-candidate work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tinydancer import checks, kernels
from tinydancer.errors import InvalidInputError
from tinydancer.metadata import MetadataIndex, metadata_overlap

__all__ = ["Candidate", "CandidateBatch", "CandidateInput", "RoutingRequest"]

_USED_ONCE = object()


@dataclass(slots=True, eq=False, repr=False)
class Candidate:
    """One item a request may send on (a memory, a document, a tool result), as in the crate.

    Args:
        id: the caller's identifier.
        embedding: a 1-D, non-empty, finite vector; stored as a C-contiguous float32 array (a float32
            vector is kept as it is, anything else is converted once).
        metadata: a dict compared key by key with the request's metadata (see
            :func:`~tinydancer.metadata.metadata_overlap`).
        created_at: unix time in SECONDS (default: now, read with :func:`time.time`). When routed it may lie
            at most ``FeatureConfig.future_tolerance`` (60 s) after the router's clock; a later one, such as
            a time in milliseconds, raises :class:`~tinydancer.errors.InvalidInputError`.
        access_count: how often the item was used, an int >= 0.
        success_rate: the share of good outcomes, in [0, 1].

    Raises:
        InvalidInputError: a field has the wrong type or value; the message names the field.

    Fields are checked at construction, and again when the candidate is routed (they may have been
    assigned since). Two candidates are equal when every field is equal (embeddings element by element).
    """

    id: str
    embedding: NDArray[np.float32]
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=lambda: time.time())  # looked up per call: patchable
    access_count: int = 0
    success_rate: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise InvalidInputError(f"id must be a str, got {type(self.id).__name__}")
        self.embedding = kernels.as_vector(self.embedding, "embedding")
        if not isinstance(self.metadata, dict):
            raise InvalidInputError(f"metadata must be a dict, got {type(self.metadata).__name__}")
        self.created_at = checks.real(self.created_at, "created_at", error=InvalidInputError)
        self.access_count = checks.integer(self.access_count, "access_count", 0, error=InvalidInputError)
        self.success_rate = checks.unit_interval(self.success_rate, "success_rate")

    @property
    def dim(self) -> int:
        """The length of the embedding."""
        return int(self.embedding.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Candidate):
            return NotImplemented
        return (
            self.id == other.id
            and self.created_at == other.created_at
            and self.access_count == other.access_count
            and self.success_rate == other.success_rate
            and self.metadata == other.metadata
            and np.array_equal(self.embedding, other.embedding)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"Candidate(id={self.id!r}, embedding=<float32[{self.embedding.shape[0]}]>, "
            f"metadata={self.metadata!r}, created_at={self.created_at!r}, "
            f"access_count={self.access_count!r}, success_rate={self.success_rate!r})"
        )


class CandidateBatch:
    """N candidates as columns, checked and converted once, immutable, shareable between threads.

    Args:
        ids: N strings. They need not be unique: as with a list of :class:`Candidate`, decisions refer to
            positions, and the router reports each position's id.
        embeddings: (N, D) real matrix, finite. Copied to a C-contiguous float32 array whose data starts
            on a 64-byte boundary (faster AVX-512 loads). N may be 0; D must be >= 1 when N > 0.
        created_at: (N,) unix SECONDS, finite; stored as float64. Default: now, read once with
            :func:`time.time` (as :class:`Candidate` does).
        access_count: (N,) integers >= 0 (not floats, not bools); stored as int64. Default: zeros.
        success_rate: (N,) values in [0, 1]; stored as float32. Default: zeros.
        metadata: None, or N dicts. When no dict has an entry it is stored as None (no metadata).

    Every array attribute is read-only; ``norms`` holds the L2 norm of each embedding row so the kernels
    only compute dot products. The metadata dicts are not copied: do not change them while the batch is
    in use.

    Raises:
        InvalidInputError: a bad shape, dtype, length or value; the message names the argument.
    """

    __slots__ = ("_ids", "_columns", "_metadata", "_metadata_index")

    _ids: tuple[str, ...]
    _columns: kernels.CandidateColumns
    _metadata: tuple[dict[str, Any], ...] | None
    _metadata_index: MetadataIndex | object | None  # None, then _USED_ONCE, then the index

    def __init__(
        self,
        ids: Sequence[str],
        embeddings: ArrayLike,
        created_at: ArrayLike | None = None,
        access_count: ArrayLike | None = None,
        success_rate: ArrayLike | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
            raise InvalidInputError(f"ids must be a sequence of str, got {type(ids).__name__}")
        ids_t = tuple(ids)
        for i, item in enumerate(ids_t):
            if not isinstance(item, str):
                raise InvalidInputError(f"ids[{i}] must be a str, got {type(item).__name__}")
        n = len(ids_t)
        if created_at is None:
            created_at = np.full(n, time.time())
        if access_count is None:
            access_count = np.zeros(n, np.int64)
        if success_rate is None:
            success_rate = np.zeros(n, np.float32)
        ids_t = tuple(str(i) for i in ids_t)  # np.str_ -> str
        columns = kernels.CandidateColumns(embeddings, created_at, access_count, success_rate, copy=True, ids=ids_t)
        if len(columns) != n:
            raise InvalidInputError(f"embeddings must have one row per id ({len(ids_t)}), got {len(columns)}")
        self._ids = ids_t
        self._columns = columns
        self._metadata = _metadata_column(metadata, len(ids_t))
        self._metadata_index = None

    @classmethod
    def from_candidates(cls, candidates: Sequence[Candidate]) -> CandidateBatch:
        """A batch holding ``candidates`` (a list or tuple of :class:`Candidate`), in their order, with every
        field checked as it is read (see :func:`~tinydancer.kernels.gather_candidates`).
        ``from_candidates([])`` gives an empty batch of dimension 0.

        Raises:
            InvalidInputError: an element is not a Candidate, the embeddings differ in length, or a field
                has a bad type or value; the message names it (``candidates[i].field``).
        """
        columns = kernels.CandidateColumns.buffer()
        ids, metadatas = kernels.gather_candidates(candidates, columns)
        return cls._assemble(ids, columns, metadatas if any(metadatas) else None)

    @classmethod
    def _assemble(cls, ids: tuple[str, ...], columns: kernels.CandidateColumns,
                  metadata: tuple[dict[str, Any], ...] | None) -> CandidateBatch:
        """A batch around columns already checked (never refilled afterwards)."""
        self = object.__new__(cls)
        self._ids = ids
        self._columns = columns
        self._metadata = metadata
        self._metadata_index = None
        return self

    # -- read-only attributes ----------------------------------------------------------------------------

    @property
    def ids(self) -> tuple[str, ...]:
        """The N ids, in input order."""
        return self._ids

    @property
    def columns(self) -> kernels.CandidateColumns:
        """The checked columns, as the scoring and routing kernels take them."""
        return self._columns

    @property
    def embeddings(self) -> NDArray[np.float32]:
        """(N, D) float32, C-contiguous, read-only (64-byte aligned when built from arrays)."""
        return self._columns.embeddings

    @property
    def norms(self) -> NDArray[np.float32]:
        """(N,) float32 L2 norm of each embedding row, read-only."""
        return self._columns.norms

    @property
    def created_at(self) -> NDArray[np.float64]:
        """(N,) float64 unix seconds, read-only."""
        return self._columns.created_at

    @property
    def access_count(self) -> NDArray[np.int64]:
        """(N,) int64 >= 0, read-only."""
        return self._columns.access_count

    @property
    def success_rate(self) -> NDArray[np.float32]:
        """(N,) float32 in [0, 1], read-only."""
        return self._columns.success_rate

    @property
    def metadata(self) -> tuple[dict[str, Any], ...] | None:
        """None (no candidate has metadata) or N dicts."""
        return self._metadata

    def metadata_overlap(self, query_metadata: dict[str, Any] | None) -> NDArray[np.float32] | None:
        """:func:`~tinydancer.metadata.metadata_overlap` of ``query_metadata`` with every candidate, as
        float32 (N,), or None when every overlap is 0 (no query metadata, or no candidate metadata).
        Either can be passed as the ``metadata_overlap`` argument of the feature and scoring kernels.

        Raises:
            InvalidInputError: ``query_metadata`` is not a dict or None.
        """
        if query_metadata is not None and not isinstance(query_metadata, dict):
            raise InvalidInputError(f"query_metadata must be a dict or None, got {type(query_metadata).__name__}")
        if not query_metadata or self._metadata is None:
            return None
        # The first query loops over the candidates; a batch queried again is being reused, so the second
        # builds an index (about two loops' cost) that matches later queries in a few numpy operations
        # per query key. Threads racing here at worst build the same index twice.
        index = self._metadata_index
        if isinstance(index, MetadataIndex):
            return index.overlap(query_metadata)
        if index is None:
            self._metadata_index = _USED_ONCE
            return metadata_overlap(query_metadata, self._metadata)
        index = self._metadata_index = MetadataIndex(self._metadata)
        return index.overlap(query_metadata)

    @property
    def dim(self) -> int:
        """D, the embedding length (0 for an empty batch built from no candidates)."""
        return self._columns.dim

    def __len__(self) -> int:
        return len(self._ids)

    def candidate(self, index: int) -> Candidate:
        """Candidate ``index`` as a :class:`Candidate` object (with a copy of its embedding)."""
        i = range(len(self._ids))[index]
        c = self._columns
        return Candidate(
            self._ids[i],
            c.embeddings[i].copy(),
            dict(self._metadata[i]) if self._metadata is not None else {},
            float(c.created_at[i]),
            int(c.access_count[i]),
            float(c.success_rate[i]),
        )

    def to_candidates(self) -> list[Candidate]:
        """Every candidate as a :class:`Candidate` object, in order."""
        return [self.candidate(i) for i in range(len(self._ids))]

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt through __init__, so the copy is aligned and checked again.
        c = self._columns
        metadata = list(self._metadata) if self._metadata is not None else None
        return (CandidateBatch, (list(self._ids), c.embeddings, c.created_at, c.access_count, c.success_rate, metadata))

    def __repr__(self) -> str:
        return f"CandidateBatch(n={len(self._ids)}, dim={self.dim}, metadata={self._metadata is not None})"


def _metadata_column(metadata: Sequence[dict[str, Any]] | None, n: int) -> tuple[dict[str, Any], ...] | None:
    if metadata is None:
        return None
    if isinstance(metadata, (str, bytes, dict)) or not isinstance(metadata, Sequence):
        raise InvalidInputError(f"metadata must be None or a list of dicts, got {type(metadata).__name__}")
    if len(metadata) != n:
        raise InvalidInputError(f"metadata must have one dict per candidate ({n}), got {len(metadata)}")
    for i, md in enumerate(metadata):
        if not isinstance(md, dict):
            raise InvalidInputError(f"metadata[{i}] must be a dict, got {type(md).__name__}")
    return tuple(metadata) if any(metadata) else None


CandidateInput = list[Candidate] | tuple[Candidate, ...] | CandidateBatch
"""What a request's ``candidates`` may be: a list (or tuple) of :class:`Candidate`, or a batch."""


@dataclass(slots=True)
class RoutingRequest:
    """A query and the candidates to route for it, as in the crate.

    Args:
        query_embedding: the query's 1-D, non-empty, finite embedding; stored as a float32 array (a
            float32 vector is kept as it is).
        candidates: a list (or tuple) of :class:`Candidate`, or a :class:`CandidateBatch`. The elements
            of a list are checked when routed, not here (that would cost per candidate).
        metadata: the query's metadata, compared with each candidate's (see
            :func:`~tinydancer.metadata.metadata_overlap`).

    Raises:
        InvalidInputError: a field has the wrong type or value; the message names the field.
    """

    query_embedding: NDArray[np.float32]
    candidates: CandidateInput
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.query_embedding = kernels.as_vector(self.query_embedding, "query_embedding")
        if not isinstance(self.candidates, (list, tuple, CandidateBatch)):
            raise InvalidInputError(
                f"candidates must be a list of Candidate or a CandidateBatch, got {type(self.candidates).__name__}"
            )
        if self.metadata is not None and not isinstance(self.metadata, dict):
            raise InvalidInputError(f"metadata must be a dict or None, got {type(self.metadata).__name__}")
