"""The share of a request's metadata entries that each candidate matches (the fifth feature).

:func:`metadata_overlap` loops over the candidates; :class:`MetadataIndex` answers the same question for
a candidate set queried again and again (a :class:`~tinydancer.types.CandidateBatch` builds one on its
second use) with a few NumPy operations per query key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tinydancer.errors import InvalidInputError

__all__ = ["MetadataIndex", "metadata_overlap"]

_MISSING = object()


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


class MetadataIndex:
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
        """:func:`metadata_overlap` of a non-empty ``query_metadata`` dict with every indexed candidate."""
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
