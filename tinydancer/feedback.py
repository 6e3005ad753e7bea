"""The feedback loop: training and calibration examples from a routing database's logged decisions and
their outcomes.

A router with a database logs each decision with the model's input (:mod:`~tinydancer.decision_log`);
``record_outcome`` says whether the lightweight answer was good enough. :func:`logged_examples` reads the
decisions that have an outcome as arrays; :meth:`LoggedExamples.split` divides them, by a hash of the
request id, into a training part and a held-out calibration part that every command and method agrees on
(``tinydancer train --from-db`` trains on the first, ``tinydancer calibrate --from-db`` and
:meth:`Router.calibrate <tinydancer.router.Router.calibrate>` certify on the second), so a threshold is
never certified on the examples the model learnt from.

A candidate model file may carry its calibration (:func:`save_candidate_model`); the router reads it with
the model (:func:`read_calibration`).

What the outcomes can teach is limited by what was observed: if outcomes are only reported for requests
sent to the lightweight model, the examples hold only those, and a model retrained on them learns nothing
about the rest. Report outcomes for a random share of all requests (for instance by also asking the
lightweight model, off the critical path, for some requests routed to the powerful one).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tinydancer import checks
from tinydancer.calibration import RISK_LIGHTWEIGHT_ERROR, Calibration, calibrate_lightweight_error
from tinydancer.errors import InvalidInputError, ModelSchemaError
from tinydancer.model import FastGRNN, files
from tinydancer.storage import Storage

__all__ = ["CALIBRATION_KEY", "DEFAULT_HOLDOUT", "MIN_ROUTED_SHARE", "LoggedExamples", "calibrate_candidates",
           "calibration_of", "logged_examples", "min_routed", "read_calibration", "save_candidate_model"]

DEFAULT_HOLDOUT = 0.3
"""The share of requests held out for calibration (by a hash of the request id)."""

MIN_ROUTED_SHARE = 0.01
"""Calibration from logs starts its walk where a threshold routes at least this share of the held-out
decisions (see ``min_routed`` of :func:`~tinydancer.calibration.calibrate_lightweight_error`)."""

CALIBRATION_KEY = "candidate_calibration"
"""The metadata key of a candidate model file's calibration (JSON of :meth:`Calibration.to_dict`)."""


@dataclass(frozen=True)
class LoggedExamples:
    """Logged decisions with their outcomes, in the order they were logged.

    Attributes:
        kind: ``"candidate"`` or ``"query"``.
        request_ids: the request id of each example.
        candidate_ids: each example's candidate id (None for query decisions).
        inputs: (N, 5) float32 weighted features, or (N, D) float32 query embeddings (widened from the
            logged precision).
        prompt_length: (N,) prompt lengths in characters, or None unless every example has one.
        good: (N,) int8, 1 where the lightweight answer was good enough.
        confidence: (N,) the confidence the router logged (from the model that served then).
        use_lightweight: (N,) bool, the decision it logged.
    """

    kind: str
    request_ids: tuple[str, ...]
    candidate_ids: tuple[str | None, ...]
    inputs: NDArray[np.float32]
    prompt_length: NDArray[np.float64] | None
    good: NDArray[np.int8]
    confidence: NDArray[np.float64]
    use_lightweight: NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.request_ids)

    def split(self, holdout: float = DEFAULT_HOLDOUT) -> tuple[LoggedExamples, LoggedExamples]:
        """(training part, calibration part): a request goes to the calibration part when the CRC-32 of its
        id, divided by 2**32, is below ``holdout``; all decisions of a request go to the same part, and the
        same request always to the same part.

        Raises:
            InvalidInputError: ``holdout`` is not in [0, 1].
        """
        holdout = checks.real(holdout, "holdout", 0.0, 1.0, error=InvalidInputError)
        held = np.fromiter((zlib.crc32(r.encode("utf-8")) / 2.0**32 < holdout for r in self.request_ids),
                           np.bool_, len(self))
        return self._take(~held), self._take(held)

    def _take(self, keep: NDArray[np.bool_]) -> LoggedExamples:
        where = np.flatnonzero(keep).tolist()
        return LoggedExamples(self.kind, tuple(self.request_ids[i] for i in where),
                              tuple(self.candidate_ids[i] for i in where), self.inputs[keep],
                              None if self.prompt_length is None else self.prompt_length[keep], self.good[keep],
                              self.confidence[keep], self.use_lightweight[keep])


def logged_examples(database: str | PathLike[str] | Storage, kind: str) -> LoggedExamples:
    """The logged decisions of ``kind`` that have an outcome (see
    :meth:`Storage.labelled_decisions <tinydancer.storage.Storage.labelled_decisions>`).

    Args:
        database: a path (opened read-only) or an open :class:`Storage` (flushed first).
        kind: ``"candidate"`` or ``"query"``.

    Raises:
        InvalidInputError: an unknown kind, or logged query embeddings of different dimensions.
        StorageError: the database cannot be opened or read.
    """
    if isinstance(database, Storage):
        database.flush()
        rows = database.labelled_decisions(kind)
    else:
        with Storage(database, read_only=True) as storage:
            rows = storage.labelled_decisions(kind)
    n = len(rows)
    width = 5
    inputs: list[NDArray[np.float32]] = []
    for _, _, blob, dtype, *_ in rows:
        vector = np.frombuffer(blob, np.float16 if dtype == "float16" else np.float32).astype(np.float32)
        inputs.append(vector)
    if inputs:
        width = inputs[0].shape[0]
        if any(v.shape[0] != width for v in inputs):
            raise InvalidInputError(f"the logged {kind} inputs differ in length; they cannot form one training set")
    lengths = [r[4] for r in rows]
    return LoggedExamples(
        kind, tuple(r[0] for r in rows), tuple(r[1] for r in rows),
        np.stack(inputs) if inputs else np.empty((0, width), np.float32),
        np.asarray(lengths, np.float64) if n and all(v is not None for v in lengths) else None,
        np.fromiter((r[7] for r in rows), np.int8, n), np.fromiter((r[5] for r in rows), np.float64, n),
        np.fromiter((r[6] for r in rows), np.bool_, n))


def min_routed(n: int) -> int:
    """The ``min_routed`` of a calibration on ``n`` logged decisions: :data:`MIN_ROUTED_SHARE` of them,
    rounded up (at least 1)."""
    return max(1, math.ceil(MIN_ROUTED_SHARE * n))


def calibrate_candidates(model: FastGRNN, examples: LoggedExamples, *, target: float = 0.9,
                         delta: float = 0.1) -> Calibration:
    """Certify a threshold for a candidate ``model`` on ``examples`` (candidate decisions held out from its
    training): the model rescores their logged features, then
    :func:`~tinydancer.calibration.calibrate_lightweight_error`, starting where a threshold routes
    :func:`min_routed` of them.

    Raises:
        InvalidInputError: no examples, candidate examples of another kind, or bad ``target``/``delta``.
    """
    if examples.kind != "candidate":
        raise InvalidInputError(f"a candidate model is calibrated on candidate decisions, not {examples.kind} ones")
    if len(examples) == 0:
        raise InvalidInputError("no logged candidate decision with an outcome to calibrate on (in the held-out "
                                "share); record outcomes with record_outcome first")
    scores = np.asarray(model.forward_batch(examples.inputs), dtype=np.float64).reshape(-1)
    return calibrate_lightweight_error(scores, examples.good, target, delta, min_routed=min_routed(len(examples)))


def save_candidate_model(model: FastGRNN, calibration: Calibration | None, path: files.PathArg) -> None:
    """Write a candidate model file, with its calibration in the metadata when one is given (atomically,
    only over a regular file).

    Raises:
        InvalidInputError: a calibration of another risk than ``lightweight_error``.
        ModelFileError: the file cannot be written.
    """
    record = model.to_record()
    metadata = dict(record.metadata)
    if calibration is not None:
        if calibration.risk != RISK_LIGHTWEIGHT_ERROR:
            raise InvalidInputError(f"a candidate model's calibration ranks by confidence (lightweight_error), "
                                    f"not {calibration.risk}")
        metadata[CALIBRATION_KEY] = json.dumps(calibration.to_dict(), sort_keys=True)
    files.save_file(files.ModelRecord(record.format, metadata, dict(record.tensors)), path)


def read_calibration(path: files.PathArg) -> Calibration | None:
    """The calibration a candidate model file carries, or None.

    Raises:
        ModelError: the file cannot be read, or its calibration is malformed.
    """
    return calibration_of(files.load_file(path))


def calibration_of(record: files.ModelRecord) -> Calibration | None:
    """The calibration in a candidate model file's record (read once with the model), or None.

    Raises:
        ModelSchemaError: the calibration is malformed or of another risk than ``lightweight_error``.
    """
    text = record.metadata.get(CALIBRATION_KEY)
    if text is None:
        return None
    data: Any = record.json(CALIBRATION_KEY)
    try:
        calibration = Calibration.from_dict(data)
    except InvalidInputError as exc:
        raise ModelSchemaError(f"{record.where}: {CALIBRATION_KEY}: {exc}") from None
    if calibration.risk != RISK_LIGHTWEIGHT_ERROR:
        raise ModelSchemaError(f"{record.where}: {CALIBRATION_KEY}: a candidate calibration ranks by confidence "
                               f"(lightweight_error), not {calibration.risk}")
    return calibration
