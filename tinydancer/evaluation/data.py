"""The routing data: RouteLLM's per-query correctness of a strong and a weak model, and prompt embeddings.

Two layouts are read from a data folder (by default ``../shared/data``, relative to the working folder;
every loader takes another):

* ``embeddings/``: ``<dataset>.npy`` (N x D float32 prompt embeddings) and ``<dataset>_labels.csv``
  (columns ``subject`` (optional), ``weak_correct``, ``strong_correct``, ``prompt_chars``), row i of one
  being row i of the other. Read by :func:`load_embeddings`.
* ``routellm/``: the RouteLLM files as published, ``mmlu/responses/mmlu_<subject>.csv`` and
  ``gsm8k/gsm8k_responses.csv`` (columns ``prompt``, :data:`WEAK_COLUMN`, :data:`STRONG_COLUMN` with
  True/False), each folder with a ``contaminated_prompts.jsonl`` whose ``eval_prompt`` prompts are dropped.
  Read by :func:`load_routellm`, in the row order of the ``embeddings/`` tables.

Both give a :class:`RoutingData`.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from os import PathLike
from typing import Any

import numpy as np

from tinydancer.errors import InvalidInputError

__all__ = ["DEFAULT_ROOT", "DATASETS", "STRONG_COLUMN", "WEAK_COLUMN", "RoutingData", "load_embeddings",
           "load_routellm", "concatenate"]

DEFAULT_ROOT = os.path.join("..", "shared", "data")
DATASETS = ("mmlu", "gsm8k")
STRONG_COLUMN = "gpt-4-1106-preview"
WEAK_COLUMN = "mistralai/Mixtral-8x7B-Instruct-v0.1"

PathArg = str | PathLike[str]

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_BOOLEANS = {"True": 1.0, "False": 0.0}


@dataclass(frozen=True)
class RoutingData:
    """Rows of queries with both models' quality, as the metrics and protocols take them.

    Attributes:
        name: the dataset's name (``"mmlu"``, ``"gsm8k"``, ...).
        strong: (N,) float64 quality of the strong model's answer (1.0 correct, 0.0 wrong).
        weak: (N,) float64 quality of the weak model's answer.
        subject: (N,) str, the MMLU subject of each row (the dataset's name where there are no subjects).
        prompt_chars: (N,) int64 length of each prompt in characters.
        embeddings: (N, D) float32 prompt embeddings, or None.
        prompts: (N,) object array of the prompts (str), or None.

    The arrays are converted and checked on construction: equal numbers of rows, finite numbers.
    """

    name: str
    strong: np.ndarray
    weak: np.ndarray
    subject: np.ndarray
    prompt_chars: np.ndarray
    embeddings: np.ndarray | None = None
    prompts: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise InvalidInputError(f"name must be a str, got {type(self.name).__name__}")
        converted = {
            "strong": _column(self.strong, "strong", np.float64),
            "weak": _column(self.weak, "weak", np.float64),
            "subject": _column(self.subject, "subject", np.str_),
            "prompt_chars": _column(self.prompt_chars, "prompt_chars", np.int64),
        }
        if self.embeddings is not None:
            emb = np.asarray(self.embeddings)
            if emb.ndim != 2 or emb.dtype.kind not in "iuf":
                raise InvalidInputError(f"embeddings must be a 2-D numeric array, got {emb.dtype} {emb.shape}")
            emb = np.ascontiguousarray(emb, dtype=np.float32)
            if not np.all(np.isfinite(emb)):
                raise InvalidInputError("embeddings hold NaN or infinite values")
            converted["embeddings"] = emb
        if self.prompts is not None:
            prompts = np.empty(len(self.prompts), dtype=object)
            prompts[:] = list(self.prompts)
            if not all(isinstance(p, str) for p in prompts):
                raise InvalidInputError("prompts must all be str")
            converted["prompts"] = prompts
        n = converted["strong"].shape[0]
        for key, value in converted.items():
            if value.shape[0] != n:
                raise InvalidInputError(f"{key} has {value.shape[0]} rows but strong has {n}")
            object.__setattr__(self, key, value)

    def __len__(self) -> int:
        return int(self.strong.shape[0])

    @property
    def weak_sufficient(self) -> np.ndarray:
        """(N,) bool, the routing label: the weak model is good enough (right, or the strong one is wrong too)."""
        return self.weak >= self.strong

    def take(self, rows: Any) -> RoutingData:
        """The rows ``rows`` (indices or a boolean mask), in that order, as a new :class:`RoutingData`."""
        index = np.asarray(rows)
        if index.dtype.kind == "b":
            if index.shape != (len(self),):
                raise InvalidInputError(f"rows: a mask must have shape ({len(self)},), got {index.shape}")
            index = np.flatnonzero(index)
        elif index.dtype.kind not in "iu" or index.ndim != 1:
            raise InvalidInputError(f"rows must be 1-D integer indices or a boolean mask, got {index.dtype} "
                                    f"{index.shape}")
        elif index.size and (index.min() < -len(self) or index.max() >= len(self)):
            raise InvalidInputError(f"rows: indices must lie in [0, {len(self)})")
        return RoutingData(**{f.name: _rows(getattr(self, f.name), index) for f in fields(self)})


def _rows(value: Any, index: np.ndarray) -> Any:
    return value[index] if isinstance(value, np.ndarray) else value


def _column(values: Any, name: str, dtype: Any) -> np.ndarray:
    """``values`` as a 1-D array of ``dtype`` (numbers finite), or raise naming it."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D, got shape {array.shape}")
    if dtype is np.str_:
        if array.size and array.dtype.kind not in "UO":
            raise InvalidInputError(f"{name} must hold str, got dtype {array.dtype}")
        return array.astype(np.str_)
    if array.size and array.dtype.kind not in "biuf":
        raise InvalidInputError(f"{name} must hold numbers, got dtype {array.dtype}")
    if dtype is np.int64 and array.dtype.kind == "f":
        raise InvalidInputError(f"{name} must hold integers, got dtype {array.dtype}")
    out = array.astype(dtype)
    if out.dtype.kind == "f" and not np.all(np.isfinite(out)):
        raise InvalidInputError(f"{name} holds NaN or infinite values")
    return out


def concatenate(parts: Sequence[RoutingData], name: str | None = None) -> RoutingData:
    """The rows of several :class:`RoutingData` one after the other.

    Args:
        parts: one or more datasets; embeddings and prompts are kept when every part has them (and the
            embeddings have one width).
        name: the result's name; by default the parts' names joined by ``+``.

    Returns:
        The concatenated rows.

    Raises:
        InvalidInputError: no parts, or embeddings of different widths.
    """
    if not parts or not all(isinstance(p, RoutingData) for p in parts):
        raise InvalidInputError("parts must be a non-empty sequence of RoutingData")
    joined: dict[str, Any] = {"name": "+".join(p.name for p in parts) if name is None else name}
    for key in ("strong", "weak", "subject", "prompt_chars", "embeddings", "prompts"):
        values = [getattr(p, key) for p in parts]
        if any(v is None for v in values):
            joined[key] = None
            continue
        if key == "embeddings" and len({v.shape[1] for v in values}) > 1:
            raise InvalidInputError(f"parts: embeddings of different widths {[v.shape[1] for v in values]}")
        joined[key] = np.concatenate(values)
    return RoutingData(**joined)


def _dataset_name(dataset: Any, known: Sequence[str] | None = None) -> str:
    if not isinstance(dataset, str) or not _NAME.fullmatch(dataset):
        raise InvalidInputError(f"dataset must be a name of letters, digits, '_' or '-', got {dataset!r}")
    if known is not None and dataset not in known:
        raise InvalidInputError(f"dataset must be one of {', '.join(known)}, got {dataset!r}")
    return dataset


def _existing_file(path: str, argument: str) -> str:
    if not os.path.isfile(path):
        raise InvalidInputError(f"{argument}: {path}: no such file")
    return path


def _read_csv(path: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of a CSV file (UTF-8, quoted fields may span lines)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError(f"{path}: cannot be read as CSV ({exc})") from None
    if not rows:
        raise InvalidInputError(f"{path}: empty file, expected a header row")
    header = rows[0]
    body = [row for row in rows[1:] if row]
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise InvalidInputError(f"{path}: row {i + 1} has {len(row)} values, the header {len(header)}")
    return header, body


def _columns(path: str, header: list[str], wanted: Sequence[str]) -> list[int]:
    missing = [name for name in wanted if name not in header]
    if missing:
        raise InvalidInputError(f"{path}: no column {', '.join(map(repr, missing))} (columns: {header})")
    return [header.index(name) for name in wanted]


def _booleans(path: str, column: str, values: Sequence[str]) -> np.ndarray:
    """``True``/``False`` strings as 1.0/0.0."""
    try:
        return np.array([_BOOLEANS[v] for v in values], dtype=np.float64)
    except KeyError as exc:
        raise InvalidInputError(f"{path}: column {column!r} must hold True or False, got {exc.args[0]!r}") from None


def load_embeddings(root: PathArg = DEFAULT_ROOT, dataset: str = "mmlu") -> RoutingData:
    """Read ``<root>/embeddings/<dataset>.npy`` and ``<dataset>_labels.csv``.

    Args:
        root: the data folder.
        dataset: the file stem, e.g. ``"mmlu"`` or ``"gsm8k"``.

    Returns:
        The rows with embeddings (float32) and labels; ``subject`` is the dataset's name where the labels
        have no ``subject`` column; ``prompts`` is None.

    Raises:
        InvalidInputError: a file is missing or unreadable, a column is missing or holds a bad value, the
            embeddings are not a finite 2-D array, or the two files have different numbers of rows.
    """
    name = _dataset_name(dataset)
    folder = os.path.join(os.fspath(root), "embeddings")
    npy = _existing_file(os.path.join(folder, f"{name}.npy"), "root")
    labels = _existing_file(os.path.join(folder, f"{name}_labels.csv"), "root")
    try:
        embeddings = np.load(npy, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidInputError(f"{npy}: not a readable .npy array ({exc})") from None
    if embeddings.ndim != 2 or embeddings.dtype.kind not in "iuf":
        raise InvalidInputError(f"{npy}: expected a 2-D numeric array, got {embeddings.dtype} {embeddings.shape}")
    header, rows = _read_csv(labels)
    weak_at, strong_at, chars_at = _columns(labels, header, ("weak_correct", "strong_correct", "prompt_chars"))
    if len(rows) != embeddings.shape[0]:
        raise InvalidInputError(f"{labels} has {len(rows)} rows but {npy} has {embeddings.shape[0]}")
    try:
        chars = np.array([int(row[chars_at]) for row in rows], dtype=np.int64)
    except ValueError as exc:
        raise InvalidInputError(f"{labels}: column 'prompt_chars' must hold integers ({exc})") from None
    if "subject" in header:
        subject = np.array([row[header.index("subject")] for row in rows], dtype=np.str_)
    else:
        subject = np.full(len(rows), name)
    try:
        return RoutingData(name=name, strong=_booleans(labels, "strong_correct", [r[strong_at] for r in rows]),
                           weak=_booleans(labels, "weak_correct", [r[weak_at] for r in rows]),
                           subject=subject, prompt_chars=chars, embeddings=embeddings)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{npy}: {exc}") from None


def _contaminated(path: str) -> set[str]:
    """The ``eval_prompt`` of each line of a ``contaminated_prompts.jsonl`` file."""
    prompts = set()
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("eval_prompt"), str):
                    raise InvalidInputError(f"{path}: line {number} has no 'eval_prompt' string")
                prompts.add(record["eval_prompt"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot be read as JSON lines ({exc})") from None
    return prompts


def _responses(path: str, subject: str) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Prompts, strong and weak correctness and subjects of one responses file."""
    header, rows = _read_csv(path)
    prompt_at, weak_at, strong_at = _columns(path, header, ("prompt", WEAK_COLUMN, STRONG_COLUMN))
    prompts = [row[prompt_at] for row in rows]
    strong = _booleans(path, STRONG_COLUMN, [row[strong_at] for row in rows])
    weak = _booleans(path, WEAK_COLUMN, [row[weak_at] for row in rows])
    return prompts, strong, weak, [subject] * len(rows)


def load_routellm(root: PathArg = DEFAULT_ROOT, dataset: str = "mmlu") -> RoutingData:
    """Read RouteLLM's published responses under ``<root>/routellm/<dataset>/``, as its evaluation does.

    MMLU: every ``responses/mmlu_<subject>.csv`` in sorted file-name order, rows concatenated. GSM8K:
    ``gsm8k_responses.csv``. Then every row whose prompt is an ``eval_prompt`` of the folder's
    ``contaminated_prompts.jsonl`` is dropped, the order kept; the rows then line up with the
    ``embeddings/`` tables of :func:`load_embeddings`.

    Args:
        root: the data folder.
        dataset: ``"mmlu"`` or ``"gsm8k"``.

    Returns:
        The rows with their prompts (``embeddings`` is None); ``subject`` from the file name for MMLU,
        ``"gsm8k"`` for GSM8K; ``prompt_chars`` is each prompt's length in characters.

    Raises:
        InvalidInputError: a file is missing or unreadable, a column is missing, or a correctness value is
            not True or False.
    """
    name = _dataset_name(dataset, DATASETS)
    folder = os.path.join(os.fspath(root), "routellm", name)
    contaminated = _contaminated(_existing_file(os.path.join(folder, "contaminated_prompts.jsonl"), "root"))
    if name == "mmlu":
        responses = os.path.join(folder, "responses")
        try:
            names = sorted(f for f in os.listdir(responses) if f.startswith("mmlu_") and f.endswith(".csv"))
        except OSError as exc:
            raise InvalidInputError(f"root: {responses}: cannot be listed ({exc.strerror})") from None
        if not names:
            raise InvalidInputError(f"root: {responses}: no mmlu_<subject>.csv files")
        parts = [_responses(os.path.join(responses, f), f[len("mmlu_"):-len(".csv")]) for f in names]
    else:
        parts = [_responses(_existing_file(os.path.join(folder, "gsm8k_responses.csv"), "root"), name)]
    prompts = [p for part in parts for p in part[0]]
    keep = np.array([p not in contaminated for p in prompts], dtype=bool)
    return RoutingData(
        name=name,
        strong=np.concatenate([part[1] for part in parts])[keep],
        weak=np.concatenate([part[2] for part in parts])[keep],
        subject=np.array([s for part in parts for s in part[3]], dtype=np.str_)[keep],
        prompt_chars=np.array([len(p) for p in prompts], dtype=np.int64)[keep],
        prompts=np.array(prompts, dtype=object)[keep],
    )
