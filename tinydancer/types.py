"""The candidate router's data types, as in the crate: :class:`Candidate`, :class:`RoutingRequest`,
:class:`RoutingDecision` and :class:`RoutingResponse`, plus the columnar :class:`CandidateBatch`.

Costs on the hot path decide the shapes here. A :class:`CandidateBatch` holds N candidates as arrays,
validated and converted once, so routing it costs no per-candidate Python work; a list of
:class:`Candidate` objects is turned into one with :meth:`CandidateBatch.from_candidates`. A
:class:`RoutingResponse` keeps its results as arrays and builds :class:`RoutingDecision` objects only when
they are read.

Every type validates its arguments at construction (except :class:`RoutingResponse`, which the router
builds) and raises :class:`~tinydancer.errors.InvalidInputError` naming the offending field.
"""

from __future__ import annotations

import math
import operator
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tinydancer import kernels
from tinydancer.errors import InvalidInputError

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

_F32 = np.dtype(np.float32)
_INT64_MAX = 2**63 - 1
_ALIGN = 64  # bytes: one cache line, one AVX-512 register
_MISSING = object()
_USED_ONCE = object()


# ---------------------------------------------------------------------------------------------------------
# Field checks shared by Candidate, CandidateBatch and the feature engineer
# ---------------------------------------------------------------------------------------------------------


def _embedding_vector(value: Any, name: str) -> NDArray[np.float32]:
    """``value`` as a C-contiguous float32 vector: non-empty, finite. A float32 vector is kept, not copied."""
    arr = value
    if not (type(arr) is np.ndarray and arr.dtype == _F32 and arr.ndim == 1 and arr.flags.c_contiguous):
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{name} cannot be read as an array: {exc}") from None
        if arr.dtype.kind not in "fiu":
            raise InvalidInputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise InvalidInputError(f"{name} must be a 1-D vector, got shape {arr.shape}")
        with np.errstate(over="ignore"):  # a float64 beyond the float32 range becomes Inf, caught below
            arr = np.ascontiguousarray(arr, dtype=_F32)
    if arr.shape[0] == 0:
        raise InvalidInputError(f"{name} is empty")
    try:
        kernels.cosine(arr, arr)  # ~0.1 us (numpy's isfinite().all() costs ~0.9); raises on NaN or Inf
    except InvalidInputError:
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise InvalidInputError(
                f"{name} holds a non-finite value ({float(arr[bad[0]])}) at [{int(bad[0])}]"
            ) from None
        raise
    return arr


def _real(value: Any, name: str) -> float:
    """``value`` as a finite float; bools and non-numbers are rejected."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"{name} must be a real number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise InvalidInputError(f"{name} must be finite, got {result}")
    return result


def _count(value: Any, name: str) -> int:
    """``value`` as an int in [0, 2**63); bools and floats are rejected."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"{name} must be an int, got {type(value).__name__}")
    result = int(value)
    if result < 0:
        raise InvalidInputError(f"{name} must not be negative, got {result}")
    if result > _INT64_MAX:
        raise InvalidInputError(f"{name} exceeds the int64 range, got {result}")
    return result


def _unit(value: Any, name: str) -> float:
    """``value`` as a float in [0, 1]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"{name} must be a real number, got {type(value).__name__}")
    result = float(value)
    if not 0.0 <= result <= 1.0:  # false for NaN too
        raise InvalidInputError(f"{name} must lie in [0, 1], got {result}")
    return result


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype[Any]) -> NDArray[Any]:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary (numpy gives 16)."""
    count = math.prod(shape)
    raw = np.empty((count + 1) * dtype.itemsize + _ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % _ALIGN
    # one spare element: numpy moves the data pointer of a zero-byte view, not of an empty slice
    return raw[start : start + (count + 1) * dtype.itemsize].view(dtype)[:count].reshape(shape)


def _frozen(a: NDArray[Any]) -> NDArray[Any]:
    a.flags.writeable = False
    return a


# ---------------------------------------------------------------------------------------------------------
# Candidate
# ---------------------------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False, repr=False)
class Candidate:
    """One item a request may send on (a memory, a document, a tool result), as in the crate.

    Args:
        id: the caller's identifier.
        embedding: a 1-D, non-empty, finite vector; stored as a C-contiguous float32 array (a float32
            vector is kept as it is, anything else is converted once).
        metadata: a dict compared key by key with the request's metadata (see :func:`metadata_overlap`).
        created_at: unix time in SECONDS (default: now, read with :func:`time.time`).
        access_count: how often the item was used, an int >= 0.
        success_rate: the share of good outcomes, in [0, 1].

    Raises:
        InvalidInputError: a field has the wrong type or value; the message names the field.

    Fields are checked at construction only. Assigning them later is not re-checked here, but the
    feature kernels check every value they read, so a bad value still raises when the candidate is used.
    Two candidates are equal when every field is equal (embeddings element by element).
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
        self.embedding = _embedding_vector(self.embedding, "embedding")
        if not isinstance(self.metadata, dict):
            raise InvalidInputError(f"metadata must be a dict, got {type(self.metadata).__name__}")
        self.created_at = _real(self.created_at, "created_at")
        self.access_count = _count(self.access_count, "access_count")
        self.success_rate = _unit(self.success_rate, "success_rate")

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


# ---------------------------------------------------------------------------------------------------------
# CandidateBatch
# ---------------------------------------------------------------------------------------------------------


class CandidateBatch:
    """N candidates as columns, validated and converted once, immutable, shareable between threads.

    Args:
        ids: N strings. They need not be unique: as with a list of :class:`Candidate`, decisions refer to
            positions, and the router reports each position's id.
        embeddings: (N, D) real matrix. Copied to a C-contiguous float32 array whose data starts on a
            64-byte boundary (faster AVX-512 loads). N may be 0; D must be >= 1 when N > 0.
        created_at: (N,) unix SECONDS, finite; stored as float64.
        access_count: (N,) integers >= 0 (not floats, not bools); stored as int64.
        success_rate: (N,) values in [0, 1]; stored as float32.
        metadata: None, or N dicts. When no dict has an entry it is stored as None (no metadata).

    Every array attribute is read-only; ``norms`` holds the precomputed L2 norm of each embedding row
    so the kernels only compute dot products. The metadata dicts are not copied: do not change them
    while the batch is in use.

    Raises:
        InvalidInputError: a bad shape, dtype, length or value; the message names the argument.
    """

    __slots__ = (
        "_ids",
        "_embeddings",
        "_norms",
        "_created_at",
        "_access_count",
        "_success_rate",
        "_metadata",
        "_metadata_index",
        "_kernel_arrays",
    )

    _ids: tuple[str, ...]
    _embeddings: NDArray[np.float32]
    _norms: NDArray[np.float32]
    _created_at: NDArray[np.float64]
    _access_count: NDArray[np.int64]
    _success_rate: NDArray[np.float32]
    _metadata: tuple[dict[str, Any], ...] | None
    _metadata_index: _MetadataIndex | object | None  # None, then _USED_ONCE, then the index

    def __init__(
        self,
        ids: Sequence[str],
        embeddings: ArrayLike,
        created_at: ArrayLike,
        access_count: ArrayLike,
        success_rate: ArrayLike,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
            raise InvalidInputError(f"ids must be a sequence of str, got {type(ids).__name__}")
        ids_t = tuple(ids)
        for i, item in enumerate(ids_t):
            if not isinstance(item, str):
                raise InvalidInputError(f"ids[{i}] must be a str, got {type(item).__name__}")
        n = len(ids_t)
        emb = _matrix(embeddings, n)
        created = _column(created_at, "created_at", n, "f", np.float64)
        if not np.isfinite(created).all():
            bad = int(np.flatnonzero(~np.isfinite(created))[0])
            raise InvalidInputError(f"created_at[{bad}] = {created[bad]} must be finite")
        counts = _column(access_count, "access_count", n, "i", np.int64)
        if n and counts.min() < 0:
            bad = int(np.flatnonzero(counts < 0)[0])
            raise InvalidInputError(f"access_count[{bad}] = {counts[bad]} must not be negative")
        success64 = _column(success_rate, "success_rate", n, "f", np.float64)
        outside = ~((success64 >= 0.0) & (success64 <= 1.0))
        if outside.any():
            bad = int(np.flatnonzero(outside)[0])
            raise InvalidInputError(f"success_rate[{bad}] = {success64[bad]} is outside [0, 1]")
        self._ids = tuple(str(i) for i in ids_t)  # np.str_ -> str
        self._embeddings = emb
        self._norms = _frozen(_row_norms(emb))
        self._created_at = _frozen(created)
        self._access_count = _frozen(counts)
        self._success_rate = _frozen(success64.astype(np.float32))
        self._metadata = _metadata_column(metadata, n)
        self._metadata_index = None
        self._kernel_arrays: kernels.CandidateArrays | None = None

    @classmethod
    def from_candidates(cls, candidates: Sequence[Candidate]) -> CandidateBatch:
        """A batch holding ``candidates`` (a list or tuple of :class:`Candidate`), in their order.

        The router's path for lists, made cheap (the embeddings are gathered into an ordinary array, not a
        64-byte aligned one): the fields were validated when each Candidate was built,
        so this checks types and embedding lengths, and finiteness through the norms kernel; ranges
        (access counts >= 0, success rates in [0, 1]) of fields assigned since are checked by the feature
        kernels on use. ``from_candidates([])`` gives an empty batch of dimension 0.

        Raises:
            InvalidInputError: an element is not a Candidate, the embeddings differ in length, or a field
                has the wrong type; the message names it (``candidates[i].field``).
        """
        if not isinstance(candidates, (list, tuple)):
            raise InvalidInputError(f"candidates must be a list of Candidate, got {type(candidates).__name__}")
        if candidates and type(candidates) is list and all(type(c) is Candidate for c in candidates):
            try:  # the usual case, in one pass in C
                emb, norms, created, counts, success = kernels.gather_candidates(candidates)
            except (InvalidInputError, TypeError, ValueError, OverflowError):
                pass  # the path below converts what it can and names the bad field
            else:
                ids = tuple([c.id for c in candidates])
                if all(type(i) is str for i in ids):
                    metas = [c.metadata for c in candidates]
                    return cls._assemble(ids, emb, norms, created, counts, success,
                                         tuple(metas) if any(metas) else None)
        n = len(candidates)
        try:
            embs = [c.embedding for c in candidates]
            ids = tuple([c.id for c in candidates])
            created = np.fromiter([c.created_at for c in candidates], np.float64, n)
            counts = np.array([c.access_count for c in candidates]) if n else np.empty(0, np.int64)
            if counts.dtype != np.int64:  # a float, bool or huge count assigned after construction
                _diagnose_candidates(candidates, None, "candidates")
                counts = counts.astype(np.int64)  # other int dtypes (e.g. int32 on some platforms)
            success = np.fromiter([c.success_rate for c in candidates], np.float32, n)
            metas = [c.metadata for c in candidates]
        except (AttributeError, TypeError, ValueError, OverflowError):
            _diagnose_candidates(candidates, None, "candidates")  # names the bad field when it can
            raise
        if n == 0:
            emb = _frozen(_aligned_empty((0, 0), _F32))
        else:
            try:
                dim = len(embs[0])
                if len(set(map(len, embs))) != 1:
                    raise ValueError("embedding lengths differ")
                emb = _aligned_empty((n, dim), _F32)
                np.concatenate(embs, out=emb.reshape(-1))
            except (TypeError, ValueError):
                _diagnose_candidates(candidates, None, "candidates")  # each one a Candidate, a 1-D vector
                _diagnose_candidates(candidates, len(embs[0]), "candidates", "candidates[0].embedding")
                raise
            _frozen(emb)
        try:
            norms = _frozen(kernels.l2_norms(emb))
        except InvalidInputError as exc:
            _diagnose_candidates(candidates, None, "candidates")
            # finite values whose norm overflows float32; the kernel calls the matrix "rows"
            raise InvalidInputError(re.sub(r"^rows\[(\d+)\]", r"candidates[\1].embedding", str(exc))) from None
        return cls._assemble(ids, emb, norms, _frozen(created), _frozen(counts), _frozen(success),
                             tuple(metas) if any(metas) else None)

    @classmethod
    def _assemble(cls, ids: tuple[str, ...], emb: NDArray[np.float32], norms: NDArray[np.float32],
                  created: NDArray[np.float64], counts: NDArray[np.int64], success: NDArray[np.float32],
                  metadata: tuple[dict[str, Any], ...] | None) -> CandidateBatch:
        """A batch from columns already checked and frozen."""
        self = object.__new__(cls)
        self._ids = ids
        self._embeddings = emb
        self._norms = norms
        self._created_at = created
        self._access_count = counts
        self._success_rate = success
        self._metadata = metadata
        self._metadata_index = None
        self._kernel_arrays = None
        return self

    # -- read-only attributes ----------------------------------------------------------------------------

    @property
    def ids(self) -> tuple[str, ...]:
        """The N ids, in input order."""
        return self._ids

    @property
    def embeddings(self) -> NDArray[np.float32]:
        """(N, D) float32, C-contiguous, 64-byte aligned, read-only."""
        return self._embeddings

    @property
    def norms(self) -> NDArray[np.float32]:
        """(N,) float32 L2 norm of each embedding row, read-only."""
        return self._norms

    @property
    def created_at(self) -> NDArray[np.float64]:
        """(N,) float64 unix seconds, read-only."""
        return self._created_at

    @property
    def access_count(self) -> NDArray[np.int64]:
        """(N,) int64 >= 0, read-only."""
        return self._access_count

    @property
    def success_rate(self) -> NDArray[np.float32]:
        """(N,) float32 in [0, 1], read-only."""
        return self._success_rate

    @property
    def metadata(self) -> tuple[dict[str, Any], ...] | None:
        """None (no candidate has metadata) or N dicts."""
        return self._metadata

    def metadata_overlap(self, query_metadata: dict[str, Any] | None) -> NDArray[np.float32] | None:
        """:func:`metadata_overlap` of ``query_metadata`` with every candidate, as float32 (N,), or None
        when every overlap is 0 (no query metadata, or no candidate metadata). Either can be passed as
        the ``metadata_overlap`` argument of the feature and scoring kernels.

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
        if isinstance(index, _MetadataIndex):
            return index.overlap(query_metadata)
        if index is None:
            self._metadata_index = _USED_ONCE
            return metadata_overlap(query_metadata, self._metadata)
        index = self._metadata_index = _MetadataIndex(self._metadata)
        return index.overlap(query_metadata)

    @property
    def dim(self) -> int:
        """D, the embedding length (0 for an empty batch built from no candidates)."""
        return int(self._embeddings.shape[1])

    def __len__(self) -> int:
        return len(self._ids)

    def candidate(self, index: int) -> Candidate:
        """Candidate ``index`` as a :class:`Candidate` object (with a copy of its embedding)."""
        i = range(len(self._ids))[index]
        return Candidate(
            self._ids[i],
            self._embeddings[i].copy(),
            dict(self._metadata[i]) if self._metadata is not None else {},
            float(self._created_at[i]),
            int(self._access_count[i]),
            float(self._success_rate[i]),
        )

    def to_candidates(self) -> list[Candidate]:
        """Every candidate as a :class:`Candidate` object, in order."""
        return [self.candidate(i) for i in range(len(self._ids))]

    def kernel_arrays(self) -> kernels.CandidateArrays:
        """The columns checked once for the routing kernels (made on first use, then reused)."""
        arrays = self._kernel_arrays
        if arrays is None:  # racing threads may both build one: equal, and either may stay
            arrays = kernels.CandidateArrays(self._embeddings, self._created_at, self._access_count,
                                             self._success_rate, self._norms)
            self._kernel_arrays = arrays
        return arrays

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt through __init__, so the copy is aligned and validated again.
        metadata = list(self._metadata) if self._metadata is not None else None
        return (
            CandidateBatch,
            (list(self._ids), self._embeddings, self._created_at, self._access_count, self._success_rate, metadata),
        )

    def __repr__(self) -> str:
        return f"CandidateBatch(n={len(self._ids)}, dim={self.dim}, metadata={self._metadata is not None})"


def _matrix(embeddings: ArrayLike, n: int) -> NDArray[np.float32]:
    """``embeddings`` as an aligned, read-only float32 (n, D) copy."""
    try:
        arr = np.asarray(embeddings)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"embeddings cannot be read as an array: {exc}") from None
    if arr.dtype.kind not in "fiu":
        raise InvalidInputError(f"embeddings must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InvalidInputError(f"embeddings must be a 2-D (N, D) array, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InvalidInputError(f"embeddings must have one row per id ({n}), got {arr.shape[0]}")
    if n and arr.shape[1] == 0:
        raise InvalidInputError("embeddings has no columns; D must be at least 1")
    out = _aligned_empty(arr.shape, _F32)
    with np.errstate(over="ignore"):  # float64 beyond float32 becomes Inf, caught below
        np.copyto(out, arr, casting="unsafe")
    if not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        raise InvalidInputError(
            f"embeddings holds a non-finite value ({float(out[tuple(bad)])}) at [{bad[0]}, {bad[1]}]"
        )
    return _frozen(out)


def _row_norms(emb: NDArray[np.float32]) -> NDArray[np.float32]:
    try:
        return kernels.l2_norms(emb)
    except InvalidInputError as exc:  # the kernel calls its argument "rows"
        message = str(exc)
        raise InvalidInputError("embeddings" + message[4:] if message.startswith("rows") else message) from None


def _column(value: ArrayLike, name: str, n: int, kind: str, dtype: type[np.generic]) -> NDArray[Any]:
    """``value`` as a 1-D array of ``dtype`` and length n; ``kind`` "f" takes reals, "i" integers only."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} cannot be read as an array: {exc}") from None
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InvalidInputError(f"{name} must have one entry per candidate ({n}), got {arr.shape[0]}")
    if n == 0:
        return np.empty(0, dtype=dtype)
    if kind == "f" and arr.dtype.kind not in "fiu":
        raise InvalidInputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if kind == "i":
        if arr.dtype.kind not in "iu":
            raise InvalidInputError(f"{name} must hold integers, got dtype {arr.dtype}")
        if arr.dtype == np.uint64 and int(arr.max()) > _INT64_MAX:
            raise InvalidInputError(f"{name} holds values beyond the int64 range")
    return np.array(arr, dtype=dtype, order="C", copy=True)  # our own copy: it is frozen and kept


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


def _diagnose_candidates(candidates: Sequence[Any], dim: int | None, name: str, dim_source: str = "") -> None:
    """Raise an InvalidInputError naming the first bad field of a candidate list (the slow error path).

    ``dim``, when given, is the embedding length every candidate must have, taken from ``dim_source``
    (for the message). Returns when nothing is wrong.
    """
    for i, c in enumerate(candidates):
        where = f"{name}[{i}]"
        if not isinstance(c, Candidate):
            raise InvalidInputError(f"{where} must be a Candidate, got {type(c).__name__}")
        if not isinstance(c.id, str):
            raise InvalidInputError(f"{where}.id must be a str, got {type(c.id).__name__}")
        emb = _embedding_vector(c.embedding, f"{where}.embedding")
        if dim is not None and emb.shape[0] != dim:
            raise InvalidInputError(f"{where}.embedding has length {emb.shape[0]}, but {dim_source} has length {dim}")
        if not isinstance(c.metadata, dict):
            raise InvalidInputError(f"{where}.metadata must be a dict, got {type(c.metadata).__name__}")
        _real(c.created_at, f"{where}.created_at")
        _count(c.access_count, f"{where}.access_count")
        _unit(c.success_rate, f"{where}.success_rate")


# ---------------------------------------------------------------------------------------------------------
# Metadata overlap
# ---------------------------------------------------------------------------------------------------------


def metadata_overlap(
    query_metadata: dict[str, Any] | None, candidate_metadatas: Sequence[dict[str, Any] | None]
) -> NDArray[np.float32]:
    """The share of the query's metadata entries that each candidate matches, as float32 (N,).

    ``|{k in query_md : k in cand_md and cand_md[k] == query_md[k]}| / |query_md|``, and 0 when either
    dict is empty or None. A key the candidate lacks never matches (not even a query value of None).
    Values are compared as Python compares dict values (identity, then ``==``; so 1 == 1.0 == True), so
    keep them JSON-like: str, numbers, bools, None, lists, dicts.

    Raises:
        InvalidInputError: ``query_metadata`` is not a dict or None, or a candidate's entry is neither.
    """
    n = len(candidate_metadatas)
    if query_metadata is not None and not isinstance(query_metadata, dict):
        raise InvalidInputError(f"query_metadata must be a dict or None, got {type(query_metadata).__name__}")
    if not query_metadata or n == 0:
        return np.zeros(n, dtype=np.float32)
    items = tuple(query_metadata.items())
    hits: list[int] = []
    append = hits.append
    for i, cm in enumerate(candidate_metadatas):
        count = 0
        if cm:
            try:
                get = cm.get
            except AttributeError:
                raise InvalidInputError(
                    f"candidate_metadatas[{i}] must be a dict or None, got {type(cm).__name__}"
                ) from None
            for key, value in items:
                found = get(key, _MISSING)
                if found is value or (found is not _MISSING and found == value):
                    count += 1
        append(count)
    return (np.array(hits, dtype=np.float64) / len(items)).astype(np.float32)


class _MetadataIndex:
    """For each metadata key: hashable value -> positions of the candidates holding it (equal values share
    one entry, as dict keys), plus the (position, value) pairs whose value is unhashable (lists, dicts).
    Gives the same overlaps as :func:`metadata_overlap`."""

    __slots__ = ("_n", "_hashable", "_unhashable")

    def __init__(self, metadatas: Sequence[dict[str, Any]]) -> None:
        hashable: dict[Any, dict[Any, list[int]]] = {}
        unhashable: dict[Any, list[tuple[int, Any]]] = {}
        for i, md in enumerate(metadatas):
            for key, value in md.items():
                try:
                    hashable.setdefault(key, {}).setdefault(value, []).append(i)
                except TypeError:
                    unhashable.setdefault(key, []).append((i, value))
        self._n = len(metadatas)
        self._hashable = {
            key: {value: np.array(positions, dtype=np.intp) for value, positions in values.items()}
            for key, values in hashable.items()
        }
        self._unhashable = unhashable

    def overlap(self, query_metadata: dict[str, Any]) -> NDArray[np.float32]:
        hits = np.zeros(self._n, dtype=np.int64)
        for key, value in query_metadata.items():
            values = self._hashable.get(key)
            if values:
                try:
                    positions = values.get(value)
                    if positions is not None:
                        hits[positions] += 1  # one value per candidate and key: no repeated positions
                except TypeError:  # an unhashable query value: compare with each value
                    for candidate_value, positions in values.items():
                        if candidate_value == value:
                            hits[positions] += 1
            for i, candidate_value in self._unhashable.get(key, ()):
                if candidate_value == value:
                    hits[i] += 1
        return (hits / len(query_metadata)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Request, decision, response
# ---------------------------------------------------------------------------------------------------------

CandidateInput = list[Candidate] | tuple[Candidate, ...] | CandidateBatch
"""What a request's ``candidates`` may be: a list (or tuple) of :class:`Candidate`, or a batch."""


@dataclass(slots=True)
class RoutingRequest:
    """A query and the candidates to route for it, as in the crate.

    Args:
        query_embedding: the query's 1-D embedding; stored as a float32 array (a float32 vector is kept
            as it is). Its values are checked for NaN/Inf by the kernels when routed.
        candidates: a list (or tuple) of :class:`Candidate`, or a :class:`CandidateBatch`. The elements
            of a list are checked when routed, not here (that would cost per candidate).
        metadata: the query's metadata, compared with each candidate's (see :func:`metadata_overlap`).

    Raises:
        InvalidInputError: a field has the wrong type or shape; the message names the field.
    """

    query_embedding: NDArray[np.float32]
    candidates: CandidateInput
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        q = self.query_embedding
        if not (type(q) is np.ndarray and q.dtype == _F32 and q.ndim == 1 and q.shape[0] > 0):
            try:
                q = np.asarray(q)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"query_embedding cannot be read as an array: {exc}") from None
            if q.dtype.kind not in "fiu":
                raise InvalidInputError(f"query_embedding must hold real numbers, got dtype {q.dtype}")
            if q.ndim != 1 or q.shape[0] == 0:
                raise InvalidInputError(f"query_embedding must be a non-empty 1-D vector, got shape {q.shape}")
            with np.errstate(over="ignore"):
                q = q.astype(_F32)
            self.query_embedding = q
        if not isinstance(self.candidates, (list, tuple, CandidateBatch)):
            raise InvalidInputError(
                f"candidates must be a list of Candidate or a CandidateBatch, got {type(self.candidates).__name__}"
            )
        if self.metadata is not None and not isinstance(self.metadata, dict):
            raise InvalidInputError(f"metadata must be a dict or None, got {type(self.metadata).__name__}")


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


def rank_order(confidence: NDArray[np.float32]) -> NDArray[np.intp]:
    """The rank order of ``confidence``: indices sorted by confidence, highest first, equal values in
    input order (a stable sort). The ``order`` argument of :class:`RoutingResponse`."""
    return np.argsort(-np.asarray(confidence), kind="stable")


class RoutingResponse(kernels.RouteResult):
    """The result of routing one request: a decision per candidate, ranked by confidence.

    Results are held as arrays in input order plus a rank ``order``; :class:`RoutingDecision` objects
    are built only when read (``decisions``, iteration, indexing), once, and cached. Decisions are in
    rank order: confidence descending, equal confidences in input order. The router writes the arrays of a
    response in one allocation (see :class:`~tinydancer.kernels.RouteResult`); they are read-only.

    The constructor is for responses made outside the routing pass (it does no validation): ``ids`` is a
    sequence of the N candidate ids in input order (list, tuple or numpy array); ``confidence`` and
    ``uncertainty`` are float32 (N,), ``use_lightweight`` bool (N,), all in input order; ``order`` is an
    integer array of the N input positions in rank order (see :func:`rank_order`). Times are microseconds.
    ``fallback_reason`` is set when the router could not use its model and fell back to the powerful model
    for every candidate.
    """

    __slots__ = ()

    def __init__(
        self,
        ids: Sequence[str] | NDArray[Any],
        confidence: NDArray[np.float32],
        uncertainty: NDArray[np.float32],
        use_lightweight: NDArray[np.bool_],
        order: NDArray[np.integer[Any]],
        inference_time_us: float,
        feature_time_us: float,
        fallback_reason: str | None = None,
    ) -> None:
        self._set_arrays(confidence, uncertainty, use_lightweight, order)
        self._ids = ids
        self._inference_time_us = inference_time_us
        self._feature_time_us = feature_time_us
        self._fallback_reason = fallback_reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            RoutingResponse,
            (self._ids, np.array(self._confidence), np.array(self._uncertainty), np.array(self._lightweight),
             np.array(self._order), self._inference_time_us, self._feature_time_us, self._fallback_reason),
        )

    @classmethod
    def fallback(
        cls,
        ids: Sequence[str] | NDArray[Any],
        reason: str,
        inference_time_us: float,
        feature_time_us: float = 0.0,
    ) -> RoutingResponse:
        """The all-powerful response: every candidate ``use_lightweight=False``, confidence 0.0,
        uncertainty 1.0, in input order, with ``fell_back`` True and ``fallback_reason`` = ``reason``."""
        n = len(ids)
        return cls(
            ids,
            np.zeros(n, dtype=np.float32),
            np.ones(n, dtype=np.float32),
            np.zeros(n, dtype=np.bool_),
            np.arange(n, dtype=np.intp),
            inference_time_us,
            feature_time_us,
            str(reason),
        )

    # -- decisions ---------------------------------------------------------------------------------------

    def _ranked_ids(self) -> list[str]:
        ids = self._ids
        if isinstance(ids, np.ndarray):
            return [str(i) for i in ids[self._order].tolist()]
        return [ids[i] for i in self._order.tolist()]

    @property
    def decisions(self) -> list[RoutingDecision]:
        """Every decision, in rank order. Built on first access and cached (do not mutate the list)."""
        decisions = self._decisions
        if decisions is None:
            order = self._order
            decisions = list(
                map(
                    _decision,
                    self._ranked_ids(),
                    self._confidence[order].tolist(),
                    self._lightweight[order].tolist(),
                    self._uncertainty[order].tolist(),
                )
            )
            self._decisions = decisions
        return decisions

    def __iter__(self) -> Iterator[RoutingDecision]:
        return iter(self.decisions)

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
        n = len(self)
        if rank < 0:
            rank += n
        if not 0 <= rank < n:
            raise IndexError(f"decision index {index} out of range for {n} decisions")
        i = int(self._order[rank])
        ids = self._ids
        return _decision(
            str(ids[i]),
            float(self._confidence[i]),
            bool(self._lightweight[i]),
            float(self._uncertainty[i]),
        )

    # -- arrays, in rank order ---------------------------------------------------------------------------

    @property
    def order(self) -> NDArray[np.integer[Any]]:
        """The input positions in rank order (read-only view)."""
        view = self._order.view()
        view.flags.writeable = False
        return view

    @property
    def confidences(self) -> NDArray[np.float32]:
        """Confidence of each decision, in rank order (a copy)."""
        return self._confidence[self._order]

    @property
    def uncertainties(self) -> NDArray[np.float32]:
        """Uncertainty of each decision, in rank order (a copy)."""
        return self._uncertainty[self._order]

    @property
    def lightweight(self) -> NDArray[np.bool_]:
        """``use_lightweight`` of each decision, in rank order (a copy)."""
        return self._lightweight[self._order]

    @property
    def candidate_ids(self) -> list[str]:
        """Candidate ids in rank order."""
        if self._decisions is not None:
            return [d.candidate_id for d in self._decisions]
        return self._ranked_ids()

    # -- summary -----------------------------------------------------------------------------------------

    @property
    def inference_time_us(self) -> float:
        """Time the router spent on the request, in microseconds."""
        return self._inference_time_us

    @property
    def feature_time_us(self) -> float:
        """Time spent extracting features, in microseconds (0.0 when the router does not separate it)."""
        return self._feature_time_us

    @property
    def candidates_processed(self) -> int:
        """The number of candidates routed."""
        return len(self)

    @property
    def fallback_reason(self) -> str | None:
        """Why the router fell back to the powerful model for every candidate, or None."""
        return self._fallback_reason

    @property
    def fell_back(self) -> bool:
        """True when the router fell back (model error, non-finite output, open circuit breaker)."""
        return self._fallback_reason is not None

    @property
    def lightweight_count(self) -> int:
        """How many candidates may go to the lightweight model."""
        return self._lightweight_count

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``decisions`` (in rank order) and the summary fields."""
        return {
            "decisions": [d.to_dict() for d in self.decisions],
            "inference_time_us": float(self._inference_time_us),
            "candidates_processed": self.candidates_processed,
            "feature_time_us": float(self._feature_time_us),
            "fell_back": self.fell_back,
            "fallback_reason": self._fallback_reason,
        }

    def __repr__(self) -> str:
        return (
            f"RoutingResponse(candidates_processed={self.candidates_processed}, "
            f"lightweight_count={self.lightweight_count}, inference_time_us={self._inference_time_us:.2f}, "
            f"fell_back={self.fell_back})"
        )
