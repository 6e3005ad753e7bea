"""The query router: from a query's embedding, decide whether the cheap (lightweight) model's answer will be
good enough, on a threshold certified by :mod:`tinydancer.calibration`.

A :class:`QueryRouter` holds a query model (see :mod:`~tinydancer.query_router.ensemble`), what kind of
outcome it learnt (:mod:`~tinydancer.query_router.outcomes`) and a :class:`~tinydancer.calibration.Calibration`.
For each query it gives

- ``confidence``: the model's probability that the lightweight answer is good enough (as good as the
  strong model's);
- ``expected_gain``: the strong model's expected quality gain over the lightweight one (sending queries to
  the strong model in decreasing order of it maximises quality for a budget of strong calls);
- ``use_lightweight``: the calibrated rule (``confidence >= threshold`` for the ``lightweight_error`` risk,
  ``expected_gain <= threshold`` for ``quality_loss``); False for every query while nothing is certified,
  including a router that was never calibrated;
- ``uncertainty``: the calibration's conformal p-value for "the lightweight model fails on this query"
  (see :meth:`Calibration.uncertainty <tinydancer.calibration.Calibration.uncertainty>`): if the query is
  one the lightweight model fails, drawn like the calibration's failures, P(uncertainty <= a) <= a. Small
  means the query ranks beyond nearly all the calibration's failures (by confidence for the
  ``lightweight_error`` risk, by expected gain for ``quality_loss``). 1.0 without a calibration.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, replace
from importlib import resources
from os import PathLike
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tinydancer import checks, kernels
from tinydancer.calibration import RISKS, Calibration, calibrate_lightweight_error, calibrate_quality_loss
from tinydancer.decision_log import QUERY as _QUERY
from tinydancer.decision_log import QUERY_BATCH as _QUERY_BATCH
from tinydancer.decision_log import DecisionLog
from tinydancer.errors import InvalidInputError, ModelSchemaError, TinyDancerError
from tinydancer.model import FastGRNN, files
from tinydancer.query_router import outcomes
from tinydancer.query_router.ensemble import EnsembleConfig, merge, train_ensemble
from tinydancer.storage import Storage

__all__ = ["QueryDecision", "QueryDecisions", "QueryRouter", "DEFAULT_QUERY_MODEL", "RISKS", "default_query_model_path"]

DEFAULT_QUERY_MODEL = "query_router.safetensors"
_METADATA_KEY = "query_router"
_FAILURES = "calibration.failure_values"
_VERSION = 1
_perf_counter_ns = time.perf_counter_ns


@dataclass(frozen=True, slots=True)
class QueryDecision:
    """The router's verdict on one query.

    Attributes:
        use_lightweight: send the query to the lightweight model.
        confidence: the model's probability that the lightweight answer is good enough.
        uncertainty: the calibration's conformal p-value for this query (1.0 without a calibration).
        threshold: the calibrated threshold the decision used.
        expected_gain: the strong model's expected quality gain over the lightweight one.
        certified: whether the threshold is certified (False: every query goes to the powerful model).
        request_id: the id the router logged the decision under (give it to ``record_outcome``); None when
            the router logs nothing, or when its log's queue was full and the decision was dropped.
    """

    use_lightweight: bool
    confidence: float
    uncertainty: float
    threshold: float
    expected_gain: float
    certified: bool
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields (an uncertified threshold, +inf, as None)."""
        return {"use_lightweight": self.use_lightweight, "confidence": self.confidence,
                "uncertainty": self.uncertainty, "expected_gain": self.expected_gain,
                "threshold": self.threshold if math.isfinite(self.threshold) else None,
                "certified": self.certified, "request_id": self.request_id}


class QueryDecisions:
    """The verdicts on a batch of queries, as read-only arrays in input order (see :class:`QueryDecision`):
    ``use_lightweight``, ``confidence``, ``expected_gain`` and ``uncertainty``, with the batch's
    ``threshold`` and ``certified``. ``uncertainty`` is computed when it is first read. ``request_ids``
    holds each query's logged request id (``<batch id>.<position>``), or None when the router logs nothing."""

    __slots__ = ("use_lightweight", "confidence", "expected_gain", "threshold", "certified", "_calibration",
                 "_uncertainty", "_batch_id")

    use_lightweight: NDArray[np.bool_]
    confidence: NDArray[np.float32]
    expected_gain: NDArray[np.float32]
    threshold: float
    certified: bool

    def __init__(self, use_lightweight: NDArray[np.bool_], confidence: NDArray[np.float32],
                 expected_gain: NDArray[np.float32], calibration: Calibration | None,
                 batch_id: str | None = None) -> None:
        init = object.__setattr__
        init(self, "use_lightweight", _frozen(use_lightweight))
        init(self, "confidence", _frozen(confidence))
        init(self, "expected_gain", _frozen(expected_gain))
        init(self, "threshold", math.inf if calibration is None else float(calibration.threshold))
        init(self, "certified", calibration is not None and bool(calibration.certified))
        init(self, "_calibration", calibration)
        init(self, "_uncertainty", None)
        init(self, "_batch_id", batch_id)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"QueryDecisions is read-only: cannot set {name!r}")

    @property
    def uncertainty(self) -> NDArray[np.float64]:
        """The calibration's conformal p-value of each query (1.0 without a calibration), read-only."""
        u = self._uncertainty
        if u is None:
            cal = self._calibration
            if cal is None:
                u = np.ones(len(self))
            else:
                u = cal.uncertainty(self.confidence if cal.risk == "lightweight_error" else self.expected_gain)
            u = _frozen(np.asarray(u, dtype=np.float64))
            object.__setattr__(self, "_uncertainty", u)  # computed once; threads racing here compute the same
        return u

    def __len__(self) -> int:
        return int(self.use_lightweight.shape[0])

    @property
    def request_ids(self) -> tuple[str, ...] | None:
        """Each query's logged request id, in input order; None when the router logs nothing."""
        base = self._batch_id
        return None if base is None else tuple(f"{base}.{i}" for i in range(len(self)))

    def decision(self, i: int) -> QueryDecision:
        """Query ``i``'s verdict as a :class:`QueryDecision`."""
        i = range(len(self))[i]
        return QueryDecision(bool(self.use_lightweight[i]), float(self.confidence[i]), float(self.uncertainty[i]),
                             self.threshold, float(self.expected_gain[i]), self.certified,
                             None if self._batch_id is None else f"{self._batch_id}.{i}")

    @property
    def lightweight_share(self) -> float:
        """The share of the batch sent to the lightweight model (0.0 for an empty batch)."""
        n = len(self)
        return float(np.count_nonzero(self.use_lightweight)) / n if n else 0.0

    def __repr__(self) -> str:
        return (f"QueryDecisions(n={len(self)}, lightweight_share={self.lightweight_share:.3f}, "
                f"threshold={self.threshold:.4g}, certified={self.certified})")


_new = object.__new__
_SLOTS = [vars(QueryDecision)[name].__set__ for name in QueryDecision.__slots__]


def _decision(*values: Any) -> QueryDecision:
    """A QueryDecision from values of the right types, its slots written directly (a frozen dataclass's
    ``__init__`` costs several times as much, and route() is meant to take a microsecond or two)."""
    d = _new(QueryDecision)
    for set_slot, value in zip(_SLOTS, values):
        set_slot(d, value)
    return d


def _frozen(a: NDArray[Any]) -> NDArray[Any]:
    a.flags.writeable = False
    return a


def default_query_model_path() -> str:
    """Where the shipped default query model is installed (see models/MODEL_CARD.md)."""
    return str(resources.files("tinydancer") / "models" / DEFAULT_QUERY_MODEL)


class QueryRouter:
    """Routes queries between a lightweight and a powerful model (see the module docstring).

    Made by :meth:`fit`, :meth:`load` or :meth:`default`, not directly. Thread-safe: any number of threads
    may route while another calibrates; a route sees the old calibration or the new one.

    With a database (:meth:`log_to`, or ``database=`` of :meth:`load` and :meth:`default`), every decision
    of :meth:`route`, :meth:`route_batch`, :meth:`route_text` and :meth:`route_texts` is logged through a
    background writer (:mod:`~tinydancer.decision_log`) with the query embedding in half precision
    (:data:`~tinydancer.decision_log.EMBEDDING_DTYPE`), the prompt length when given, the confidence,
    expected gain, threshold, decision and uncertainty, under the request id the decision carries. Report
    outcomes with :meth:`record_outcome`; :meth:`close` (or ``with``) flushes the log.
    """

    __slots__ = ("_model", "_pass", "_kind", "_dim", "_length", "_calibration", "_lock", "_log")

    def __init__(self, model: FastGRNN, kind: str, embedding_dim: int, length: tuple[float, float] | None,
                 calibration: Calibration | None) -> None:
        self._model = model
        bad, plus, minus = outcomes.READ[kind]
        self._pass = kernels.QueryPass(model.cell, embedding_dim, bad, plus, -1 if minus is None else minus, length)
        self._kind = kind
        self._dim = embedding_dim
        self._length = length
        self._calibration = calibration
        self._lock = threading.Lock()
        self._log: DecisionLog | None = None

    # -- making one ---------------------------------------------------------------------------------------

    @classmethod
    def fit(cls, embeddings: ArrayLike, labels: ArrayLike | None = None, *, strong: ArrayLike | None = None,
            weak: ArrayLike | None = None, prompt_length: ArrayLike | None = None, seed: int = 0,
            config: EnsembleConfig | None = None) -> QueryRouter:
        """Train a query model (not calibrated yet: call :meth:`calibrate` on held-out queries).

        Args:
            embeddings: (N, D) query embeddings, finite; any D up to 1024 (1023 with ``prompt_length``).
            labels: (N,) 1 where the lightweight answer was good enough, else 0. Or instead:
            strong, weak: (N,) each model's per-query quality: booleans (right or wrong), or graded scores
                such as MT-Bench's 1-10. From them the model learns the outcome classes that give both the
                probability that the lightweight answer is good enough and the expected gain
                (:mod:`~tinydancer.query_router.outcomes`).
            prompt_length: optional (N,) prompt lengths in characters (> 0), a side input: the model then
                reads their standardised logarithm too, and needs them when it routes.
            seed: seeds the members' initialisation, shuffling and early-stopping split.
            config: the ensemble's size and training settings (default :class:`EnsembleConfig`).

        Raises:
            InvalidInputError: a bad array, length, label or value, naming the argument.
        """
        config = EnsembleConfig() if config is None else config
        if not isinstance(config, EnsembleConfig):
            raise InvalidInputError(f"config must be an EnsembleConfig, got {type(config).__name__}")
        seed = checks.integer(seed, "seed", 0, error=InvalidInputError)
        X = E = _matrix(embeddings, "embeddings")
        n, dim = E.shape
        kind, first, second = outcomes.as_outcomes(labels, strong, weak, n)
        length = None
        if prompt_length is not None:
            logs = np.log(_lengths(prompt_length, n))
            length = (float(logs.mean()), float(max(logs.std(), 1e-6)))
            # the standardised log prompt length is the model's last input column
            X = np.empty((n, dim + 1), np.float32)
            X[:, :-1] = E
            X[:, -1] = (logs - length[0]) / length[1]
        members = train_ensemble(X, outcomes.encode(kind, first, second), len(outcomes.CLASSES[kind]), config, seed)
        model = merge(members)
        if config.quantize:
            model.quantize()
        return cls(model, kind, dim, length, None)

    @classmethod
    def default(cls, *, database: str | PathLike[str] | Storage | None = None) -> QueryRouter:
        """The shipped default query model with its shipped calibration (see models/MODEL_CARD.md), logging
        to ``database`` when given (see :meth:`log_to`)."""
        return cls.load(default_query_model_path(), database=database)

    # -- the decision log ---------------------------------------------------------------------------------

    def log_to(self, database: str | PathLike[str] | Storage, *, queue_size: int = 100_000,
               full_wait: float = 0.0) -> None:
        """Log every decision from now on to ``database`` (a path: the router opens and closes it; or an
        open :class:`~tinydancer.storage.Storage`, shared and left open).

        Args:
            queue_size: requests the queue holds (a batch counts as one) before decisions are dropped and
                counted in :meth:`metrics` (``log_dropped``).
            full_wait: seconds a route waits for room in a full queue before dropping (default 0).

        Raises:
            TinyDancerError: the router already logs.
            InvalidInputError: the database stores embeddings of another dimension.
            StorageError: the database cannot be opened for writing.
        """
        with self._lock:
            if self._log is not None:
                raise TinyDancerError("this query router already logs to a database")
            log = DecisionLog(database, capacity=queue_size, full_wait=full_wait)
            try:
                log.storage._reserve_dim(self._dim, "this query router's embeddings")
            except BaseException:
                log.close()
                raise
            self._log = log

    def record_outcome(self, request_id: str, good: bool) -> None:
        """Report whether the lightweight answer was good enough for a query this router logged; the
        query's decision is flushed first.

        Raises:
            TinyDancerError: the router logs nothing.
            InvalidInputError: a bad value, or no logged decision has this request id.
        """
        log = self._log
        if log is None:
            raise TinyDancerError("this query router logs nothing (see log_to): it has no outcomes")
        log.flush()
        log.storage.record_outcome(request_id, good)

    def flush(self) -> None:
        """Return once every decision logged before the call is committed (nothing to do without a log).

        Raises:
            StorageError: decisions the database refused since the previous flush.
        """
        if self._log is not None:
            self._log.flush()

    def metrics(self) -> dict[str, Any]:
        """The log's counters (see :meth:`DecisionLog.metrics <tinydancer.decision_log.DecisionLog.metrics>`);
        empty without a log."""
        return {} if self._log is None else self._log.metrics()

    def close(self) -> None:
        """Flush and close the decision log (and its database when the router opened it); the router can
        still route, without logging. Closing twice is fine.

        Raises:
            StorageError: decisions the database refused (the log is closed all the same).
        """
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def __enter__(self) -> QueryRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scoring ------------------------------------------------------------------------------------------

    @property
    def model(self) -> FastGRNN:
        """The query model (one FastGRNN; see :mod:`~tinydancer.query_router.ensemble`)."""
        return self._model

    @property
    def outcome_kind(self) -> str:
        """What the model learnt: ``labels``, ``binary`` or ``graded`` (see :mod:`~tinydancer.query_router.outcomes`)."""
        return self._kind

    @property
    def embedding_dim(self) -> int:
        return self._dim

    @property
    def uses_prompt_length(self) -> bool:
        """Whether the model reads the prompt length (then every call needs ``prompt_length``)."""
        return self._length is not None

    @property
    def calibration(self) -> Calibration | None:
        """The calibration in use, or None before :meth:`calibrate`."""
        return self._calibration

    def _scores(self, embeddings: ArrayLike, prompt_length: Any) -> tuple[Any, Any]:
        """(score, gain): floats for one (D,) embedding, float32 (N,) arrays for (N, D)."""
        if np.ndim(embeddings) == 1:
            return self._pass.scores(embeddings, prompt_length)
        return self._pass.scores_batch(embeddings, prompt_length)

    def score(self, embeddings: ArrayLike, *, prompt_length: Any = None) -> float | NDArray[np.float32]:
        """The probability that the lightweight model's answer is good enough: a float for one (D,)
        embedding, a float32 (N,) array for (N, D).

        Raises:
            InvalidInputError: NaN or Inf, a wrong dimension or dtype, an empty batch, or a missing, extra
                or non-positive ``prompt_length``.
        """
        return self._scores(embeddings, prompt_length)[0]

    def expected_gain(self, embeddings: ArrayLike, *, prompt_length: Any = None) -> float | NDArray[np.float32]:
        """The strong model's expected quality gain over the lightweight one (for 0/1 quality:
        P(strong right, weak wrong) - P(weak right, strong wrong)); a float or a float32 (N,) array."""
        return self._scores(embeddings, prompt_length)[1]

    # -- routing ------------------------------------------------------------------------------------------

    def route(self, embedding: ArrayLike, *, prompt_length: float | None = None) -> QueryDecision:
        """Decide for one (D,) query embedding (see the module docstring).

        Raises:
            InvalidInputError: see :meth:`score`; a 2-D array (use :meth:`route_batch`), a missing or
                extra ``prompt_length``.
        """
        log = self._log
        if log is not None:
            return self._route_logged(log, embedding, prompt_length)
        score, gain = self._pass.scores(embedding, prompt_length)
        cal = self._calibration
        if cal is None:
            return _decision(False, score, 1.0, math.inf, gain, False, None)
        value = score if cal.risk == "lightweight_error" else gain  # what the risk ranks by
        return _decision(bool(cal.use_lightweight(value)), score, cal.uncertainty(value), cal.threshold, gain,
                         cal.certified, None)

    def _route_logged(self, log: DecisionLog, embedding: ArrayLike, prompt_length: float | None) -> QueryDecision:
        start = _perf_counter_ns()
        score, gain = self._pass.scores(embedding, prompt_length)
        rid = log.new_id()
        cal = self._calibration
        if cal is None:
            d = _decision(False, score, 1.0, math.inf, gain, False, rid)
        else:
            value = score if cal.risk == "lightweight_error" else gain
            d = _decision(bool(cal.use_lightweight(value)), score, cal.uncertainty(value), cal.threshold, gain,
                          cal.certified, rid)
        copy = np.array(embedding, dtype=np.float32)  # the caller may reuse its array
        if not log.put((_QUERY, rid, copy, None if prompt_length is None else float(prompt_length), d,
                        (_perf_counter_ns() - start) / 1e3, log.clock())):
            return replace(d, request_id=None)  # dropped on a full queue (counted): no id
        return d

    def route_batch(self, embeddings: ArrayLike, *, prompt_length: ArrayLike | None = None) -> QueryDecisions:
        """Decide for (N, D) query embeddings at once, as arrays (no per-query Python objects).

        Raises:
            InvalidInputError: see :meth:`score`.
        """
        log = self._log
        start = _perf_counter_ns()
        score, gain = self._pass.scores_batch(embeddings, prompt_length)
        cal = self._calibration
        rid = None if log is None else log.new_id()
        if cal is None:
            decisions = QueryDecisions(np.zeros(score.shape[0], np.bool_), score, gain, None, rid)
        else:
            use = cal.use_lightweight(score if cal.risk == "lightweight_error" else gain)  # what the risk ranks by
            decisions = QueryDecisions(use, score, gain, cal, rid)
        if log is not None:
            lengths = None if prompt_length is None else np.array(prompt_length, dtype=np.float64).reshape(-1)
            if not log.put((_QUERY_BATCH, rid, np.array(embeddings, dtype=np.float32), lengths, decisions,
                            (_perf_counter_ns() - start) / 1e3, log.clock())):
                object.__setattr__(decisions, "_batch_id", None)  # dropped on a full queue (counted): no ids
        return decisions

    def route_text(self, text: str, *, embedder: Any = None) -> QueryDecision:
        """Decide for one prompt: embed it with all-MiniLM-L6-v2 (:mod:`tinydancer.embed`, the ``[embed]``
        extra), then :meth:`route` it, with its length in characters when the model reads it.

        Args:
            text: the prompt.
            embedder: an :class:`~tinydancer.embed.Embedder` (default: the shared default one).

        Raises:
            InvalidInputError: an empty or non-string prompt, or a router that does not read 384-d
                MiniLM embeddings.
            MissingExtraError: the ``[embed]`` extra is not installed.
        """
        vectors = self._embed([text], embedder, "text")
        return self.route(vectors[0], prompt_length=float(len(text)) if self._length is not None else None)

    def route_texts(self, texts: list[str] | tuple[str, ...], *, embedder: Any = None) -> QueryDecisions:
        """Decide for several prompts at once (embedded in length-sorted batches, then :meth:`route_batch`).

        Raises:
            InvalidInputError: an empty list, or an empty or non-string prompt (``texts[i]``).
            MissingExtraError: the ``[embed]`` extra is not installed.
        """
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise InvalidInputError(f"texts must be a list of str, got {type(texts).__name__}")
        vectors = self._embed(texts, embedder, "texts")
        lengths = np.array([len(t) for t in texts], dtype=np.float64) if self._length is not None else None
        return self.route_batch(vectors, prompt_length=lengths)

    def _embed(self, texts: Any, embedder: Any, name: str) -> NDArray[np.float32]:
        from tinydancer import embed

        if self._dim != embed.DIM:
            raise InvalidInputError(f"this router reads {self._dim}-d embeddings; route_text embeds prompts with "
                                    f"all-MiniLM-L6-v2 ({embed.DIM}-d)")
        if name == "text":
            text = embed.check_text(texts[0], "text")
            vectors = (embed.embed if embedder is None else embedder.embed)(text)[None, :]
        else:
            vectors = (embed.embed if embedder is None else embedder.embed)(list(texts))
        return vectors

    # -- calibration --------------------------------------------------------------------------------------

    def calibrate(self, embeddings: ArrayLike, labels: ArrayLike | None = None, target: float = 0.9,
                  delta: float = 0.1, *, risk: str = "lightweight_error", strong: ArrayLike | None = None,
                  weak: ArrayLike | None = None, prompt_length: ArrayLike | None = None,
                  min_routed: int = 1) -> Calibration:
        """Certify a threshold on held-out queries (not the training ones) and use it from now on.

        Args:
            embeddings: (N, D) calibration queries, drawn like the queries the router will serve.
            labels: (N,) 1 where the lightweight answer was good enough; or give ``strong`` and ``weak``
                (each model's per-query quality; for ``quality_loss`` in [0, 1]: scale graded scores).
            target: for ``lightweight_error``, the share of lightweight-routed queries whose lightweight
                answer must be good enough (0.9: at most 10% worse than the strong model's); for
                ``quality_loss``, the share of the strong model's overall quality to keep (0.95: at least
                95% of always-strong).
            delta: the guarantee holds with probability at least 1 - delta over the calibration draw.
            risk: ``lightweight_error`` (routes on confidence, highest first) or ``quality_loss`` (routes
                on expected gain, lowest first: the order that keeps the most quality per strong call;
                needs ``strong`` and ``weak``).
            prompt_length: the queries' prompt lengths, when the model reads them.
            min_routed: for ``lightweight_error``, pass over thresholds that route fewer calibration
                queries (see :func:`~tinydancer.calibration.calibrate_lightweight_error`).

        Returns:
            The :class:`~tinydancer.calibration.Calibration`; when nothing could be certified its
            ``certified`` is False and every query goes to the powerful model.

        Raises:
            InvalidInputError: bad arrays or labels, target or delta outside (0, 1), an unknown risk.
        """
        if risk not in RISKS:
            raise InvalidInputError(f"risk must be one of {RISKS}, got {risk!r}")
        score, gain = self._pass.scores_batch(embeddings, prompt_length)
        n = score.shape[0]
        if risk == "lightweight_error":
            kind, first, second = outcomes.as_outcomes(labels, strong, weak, n)
            cal = calibrate_lightweight_error(score, outcomes.good_enough(kind, first, second), target, delta,
                                              min_routed=min_routed)
        else:
            if labels is not None:
                raise InvalidInputError("risk 'quality_loss' needs strong and weak, not labels")
            _, first, second = outcomes.as_outcomes(None, strong, weak, n)
            cal = calibrate_quality_loss(gain, first, second, target, delta)
        with self._lock:
            self._calibration = cal
        return cal

    # -- files --------------------------------------------------------------------------------------------

    def save(self, path: files.PathArg) -> None:
        """Write the model and its calibration to one safetensors file, atomically (only a regular file:
        see :func:`tinydancer.atomic_files.write_atomic`).

        Raises:
            ModelFileError: the path is not a regular file, or its folder is missing or not writable.
        """
        record = self._model.to_record()
        cal = self._calibration
        tensors = dict(record.tensors)
        cal_meta = None
        if cal is not None:  # the failure values go in a float32 tensor: a quarter of their size as JSON
            cal_meta = cal.to_dict()
            tensors[_FAILURES] = _float32_failures(cal_meta.pop("failure_values"), cal.risk)
        meta = {"version": _VERSION, "outcomes": self._kind, "classes": list(outcomes.CLASSES[self._kind]),
                "embedding_dim": self._dim,
                "prompt_length": None if self._length is None else {"log_mean": self._length[0],
                                                                     "log_std": self._length[1]},
                "calibration": cal_meta}
        metadata = dict(record.metadata)
        metadata[_METADATA_KEY] = json.dumps(meta, sort_keys=True)
        files.save_file(files.ModelRecord(record.format, metadata, tensors), path)

    @classmethod
    def load(cls, path: files.PathArg, *, database: str | PathLike[str] | Storage | None = None) -> QueryRouter:
        """Read a query router file written by :meth:`save`, validated completely first; log to
        ``database`` when given (see :meth:`log_to`).

        Raises:
            ModelError: a :class:`~tinydancer.errors.ModelError` subclass for every bad file (missing, not a
                regular file, not safetensors, a wrong format or checksum, wrong tensors, bad metadata or
                calibration, NaN weights).
        """
        record = files.load_file(path)
        where = record.where
        if record.format != files.FORMAT or _METADATA_KEY not in record.metadata:
            raise ModelSchemaError(f"{where}: not a query router file (no {_METADATA_KEY!r} in its metadata)")
        meta = record.json(_METADATA_KEY)
        tensors = dict(record.tensors)
        failures = tensors.pop(_FAILURES, None)
        model = FastGRNN.from_record(files.ModelRecord(record.format, record.metadata, tensors, where))
        router = cls(model, *_read_metadata(meta, model, failures, where))
        if database is not None:
            router.log_to(database)
        return router

    def __repr__(self) -> str:
        cal = self._calibration
        state = "not calibrated" if cal is None else (
            f"{cal.risk} target {cal.target}, threshold {cal.threshold:.4g}"
            + ("" if cal.certified else " (not certified)"))
        return (f"QueryRouter(outcomes={self._kind}, embedding_dim={self._dim}, "
                f"prompt_length={self._length is not None}, {state})")


def _float32_failures(values: list[float], risk: str) -> NDArray[np.float32]:
    """The calibration's failure values as float32, each rounded the way that keeps the conformal p-value
    conservative (up for ``lightweight_error``, down for ``quality_loss``); the router's own values are
    float32 already and stay exact."""
    exact = np.asarray(values, dtype=np.float64)
    stored = exact.astype(np.float32)
    towards = np.inf if risk == "lightweight_error" else -np.inf
    off = (stored < exact) if risk == "lightweight_error" else (stored > exact)
    stored[off] = np.nextafter(stored[off], np.float32(towards))
    return stored


def _read_metadata(meta: Any, model: FastGRNN, failures: NDArray[Any] | None,
                   where: str) -> tuple[str, int, tuple[float, float] | None, Calibration | None]:
    """The checked fields of a query router file's metadata."""
    def bad(what: str) -> ModelSchemaError:
        return ModelSchemaError(f"{where}: query_router metadata: {what}")

    if not isinstance(meta, dict):
        raise bad("not a JSON object")
    if meta.get("version") != _VERSION:
        raise bad(f"version {meta.get('version')!r} is not {_VERSION}")
    kind = meta.get("outcomes")
    if kind not in outcomes.KINDS or meta.get("classes") != list(outcomes.CLASSES[kind]):
        raise bad(f"outcomes {kind!r} with classes {meta.get('classes')!r} is not one of {list(outcomes.KINDS)}")
    dim = meta.get("embedding_dim")
    if type(dim) is not int or dim < 1:
        raise bad(f"embedding_dim must be an int >= 1, got {dim!r}")
    length_meta = meta.get("prompt_length")
    length = None
    if length_meta is not None:
        try:
            length = (float(length_meta["log_mean"]), float(length_meta["log_std"]))
        except (TypeError, KeyError, ValueError):
            raise bad(f"prompt_length must hold log_mean and log_std, got {length_meta!r}") from None
        if not (math.isfinite(length[0]) and math.isfinite(length[1]) and length[1] > 0):
            raise bad(f"prompt_length statistics must be finite with log_std > 0, got {length}")
    c = model.config
    if (c.timesteps, c.output_dim, c.input_dim) != (1, len(outcomes.CLASSES[kind]), dim + (length is not None)):
        raise bad(f"the model (input {c.input_dim}, output {c.output_dim}, timesteps {c.timesteps}) does not "
                  f"fit embedding_dim {dim}, prompt_length {length is not None} and {kind} outcomes")
    cal_meta = meta.get("calibration")
    calibration = None
    if (cal_meta is None) != (failures is None):
        raise bad(f"a calibration needs the tensor {_FAILURES!r} and the tensor needs a calibration")
    if cal_meta is not None:
        if not isinstance(cal_meta, dict) or failures is None or failures.dtype != np.float32 or failures.ndim != 1:
            raise bad(f"calibration must be an object, with {_FAILURES!r} a 1-D float32 tensor")
        try:
            calibration = Calibration.from_dict({**cal_meta, "failure_values": [float(v) for v in failures]})
        except InvalidInputError as exc:
            raise bad(f"calibration: {exc}") from None
    return kind, dim, length, calibration


def _matrix(value: ArrayLike, name: str) -> NDArray[np.float32]:
    """``value`` as a C-contiguous float32 (N, D) matrix, N >= 1, D >= 1, finite."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a 2-D array of numbers") from None
    if a.dtype.kind not in "fiu":
        raise InvalidInputError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-D (N, D), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InvalidInputError(f"{name} is empty (shape {a.shape})")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise InvalidInputError(f"{name} holds a non-finite value at [{bad[0]}, {bad[1]}]")
    return a


def _lengths(value: Any, n: int) -> NDArray[np.float64]:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError("prompt_length must be numbers (characters)") from None
    if a.shape != (n,):
        raise InvalidInputError(f"prompt_length must have one entry per query ({n}), got shape {a.shape}")
    if not (np.isfinite(a).all() and (a > 0).all()):
        raise InvalidInputError("prompt_length must be finite and > 0 (characters)")
    return a
