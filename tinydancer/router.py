"""The candidate router: scores a request's candidates and says which can go to the lightweight model.

``Router.route(request)`` computes the five features of every candidate, runs the FastGRNN model and ranks
the candidates by confidence, all in one C call; the response keeps its results in arrays and builds
:class:`~tinydancer.types.RoutingDecision` objects only when they are read. Failures follow the crate's
contract, made honest: a model error or a non-finite score counts against the circuit breaker and the
request falls back (every candidate to the powerful model, the response saying why); while the breaker is
open, requests fall back without touching the model; bad input raises
:class:`~tinydancer.errors.InvalidInputError` and does not count against the breaker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from os import PathLike, fspath
from typing import Any

import numpy as np

from tinydancer import checks, feedback, kernels
from tinydancer.breaker import CircuitBreaker
from tinydancer.candidates import CandidateBatch, RoutingRequest
from tinydancer.errors import (ConfigError, InvalidInputError, ModelError, ModelSchemaError, ModelValueError,
                               TinyDancerError)
from tinydancer.features import FeatureConfig
from tinydancer.metadata import metadata_overlap
from tinydancer.model import FastGRNN, files, model_from_record
from tinydancer.calibration import Calibration
from tinydancer.decision_log import CANDIDATES as _CANDIDATES
from tinydancer.decision_log import DecisionLog
from tinydancer.responses import RoutingResponse
from tinydancer.storage import Storage

__all__ = ["MODEL_FAILURES", "SMOKE_PROBES", "RouterConfig", "Router", "candidate_model", "default_model_path"]

MODEL_FAILURES: tuple[type[BaseException], ...] = (ModelError,)
"""What counts as the model failing: the routing pass raises :class:`~tinydancer.errors.ModelError` when the
model gives a non-finite score from finite features. Only these count against the circuit breaker and make
a request fall back; any other exception (bad input, a bug, a clock that fails) propagates."""

DEFAULT_MODEL = "candidate_router.safetensors"
_perf_counter_ns = time.perf_counter_ns
_log = logging.getLogger(__name__)
_gather = kernels.gather_candidates
_from_result = RoutingResponse.from_result
_NO_RESULT = kernels.RouteResult.from_arrays([], [], [], [])

# The smoke test of a model loaded for serving: raw features (similarity, recency, frequency, success,
# metadata overlap), weighed with the router's feature weights. Every score must be finite.
SMOKE_PROBES = np.array([
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [1.0, 1.0, 1.0, 1.0, 1.0],
    [-1.0, 0.0, 0.0, 0.0, 0.0],
    [0.5, 0.5, 0.5, 0.5, 0.5],
    [1.0, 0.0, 1.0, 0.0, 1.0],
    [0.0, 1.0, 0.0, 1.0, 0.0],
], dtype=np.float32)


def candidate_model(model: object, where: str) -> FastGRNN:
    """``model`` when it can score candidates: a tinydancer FastGRNN with input_dim 5, timesteps 1 and
    output_dim 1.

    Raises:
        ModelSchemaError: anything else, naming ``where`` it came from.
    """
    if not isinstance(model, FastGRNN):
        raise ModelSchemaError(f"{where}: a {type(model).__name__} cannot route candidates; the router needs a "
                               "tinydancer FastGRNN (train one on its outputs with `tinydancer train`)")
    c = model.config
    if (c.input_dim, c.timesteps, c.output_dim) != (5, 1, 1):
        raise ModelSchemaError(f"{where}: a candidate model has input_dim 5, timesteps 1 and output_dim 1, "
                               f"not {c.input_dim}, {c.timesteps} and {c.output_dim}")
    return model


def default_model_path() -> str:
    """Where the shipped default candidate model is installed (see models/MODEL_CARD.md)."""
    return str(resources.files("tinydancer") / "models" / DEFAULT_MODEL)


def _file_signature(path: str) -> tuple[int, int, int, int] | None:
    """What tells a changed file: device, inode, size and modification time (ns); None when it is absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


OnChange = Callable[[str, "BaseException | None"], None]
_Serving = tuple[FastGRNN, kernels.RoutePass, float, "Calibration | None"]


def _watch(router_ref: weakref.ref[Router], stop: threading.Event, interval: float,
           on_change: OnChange | None) -> None:
    """The watcher thread: check the model file every ``interval`` seconds until stopped or the router is
    gone. It holds only a weak reference, so a router that is dropped without close() is still collected."""
    while not stop.wait(interval):
        router = router_ref()
        if router is None:
            return
        error: BaseException | None = None
        try:
            changed = router.check_model_file()
        except Exception as exc:  # any load failure: it has no caller on this thread, and _swap_in_locked
            changed, error = True, exc  # has counted it in metrics(); the old model keeps serving
        if changed and on_change is not None:
            try:
                on_change(router.metrics()["model_path"], error)
            except Exception:  # the caller's callback: whatever it raises is logged, the watcher goes on
                _log.exception("the on_change callback of watch_model failed")
        del router


@dataclass(frozen=True)
class RouterConfig:
    """How a :class:`Router` decides (the crate's fields and defaults).

    Args:
        model_path: a candidate model file (input 5, one timestep, output 1); None: the shipped default.
        confidence_threshold: a candidate goes to the lightweight model only at this confidence or above...
        max_uncertainty: ...and this uncertainty or below (uncertainty = 1 - 2 |confidence - 0.5|). Together
            they ask for confidence >= :attr:`effective_threshold` (0.925 with these defaults).
        enable_circuit_breaker: guard the model with a :class:`~tinydancer.breaker.CircuitBreaker`.
        circuit_breaker_threshold: consecutive model failures that open it.
        circuit_breaker_timeout: seconds before an open breaker lets probes through.
        enable_quantization: run the model with int8 weights (outputs within 0.02 of float32).
        database_path: log every decision to this SQLite database (:class:`~tinydancer.storage.Storage`),
            through a background writer (:class:`~tinydancer.decision_log.DecisionLog`); None: no log.
        feature_config: feature weights and recency decay (default :class:`FeatureConfig`).
        log_queue_size: requests the log's queue holds before :meth:`Router.route` drops their decisions
            (counted in ``metrics()["log_dropped"]``).
        log_full_wait: seconds :meth:`Router.route` waits for room in a full log queue before dropping
            (default 0: routing never waits for the disk).
    """

    model_path: str | PathLike[str] | None = None
    confidence_threshold: float = 0.85
    max_uncertainty: float = 0.15
    enable_circuit_breaker: bool = True
    circuit_breaker_threshold: int = 5
    circuit_breaker_timeout: float = 60.0
    enable_quantization: bool = True
    database_path: str | PathLike[str] | None = None
    feature_config: FeatureConfig | None = field(default=None)
    log_queue_size: int = 100_000
    log_full_wait: float = 0.0

    def __post_init__(self) -> None:
        checks.real(self.confidence_threshold, "confidence_threshold", 0.0, 1.0)
        checks.real(self.max_uncertainty, "max_uncertainty", 0.0, 1.0)
        checks.real(self.circuit_breaker_timeout, "circuit_breaker_timeout", 0.0)
        checks.integer(self.circuit_breaker_threshold, "circuit_breaker_threshold", 1)
        checks.flag(self.enable_circuit_breaker, "enable_circuit_breaker")
        checks.flag(self.enable_quantization, "enable_quantization")
        if self.feature_config is not None and not isinstance(self.feature_config, FeatureConfig):
            raise ConfigError(f"feature_config must be a FeatureConfig, got {type(self.feature_config).__name__}")
        if self.database_path is not None and not isinstance(self.database_path, (str, PathLike)):
            raise ConfigError(f"database_path must be a str, os.PathLike or None, got {type(self.database_path).__name__}")
        checks.integer(self.log_queue_size, "log_queue_size", 1)
        checks.real(self.log_full_wait, "log_full_wait", 0.0)

    @property
    def effective_threshold(self) -> float:
        """The confidence from which on a candidate goes to the lightweight model: both conditions hold from
        ``max(confidence_threshold, 1 - max_uncertainty / 2)`` (0.925 with the defaults: uncertainty <= 0.15
        means confidence >= 0.925 or <= 0.075). A ``confidence_threshold`` below ``max_uncertainty / 2``
        also lets the least confident candidates through."""
        return max(self.confidence_threshold, 1.0 - self.max_uncertainty / 2.0)


class Router:
    """Routes a request's candidates with a FastGRNN model (see the module docstring).

    Args:
        config: a :class:`RouterConfig` (default: the shipped model, the crate's thresholds).
        clock: unix seconds, read once per request for recency (default ``time.time``).
        monotonic: the circuit breaker's clock (default ``time.monotonic``).
        storage: an open :class:`~tinydancer.storage.Storage` to log decisions to (shared: the router
            flushes it but does not close it); instead of ``config.database_path``.

    Thread-safe: any number of threads may call :meth:`route` at once (the kernels release the GIL for
    large requests), and :meth:`reload_model` swaps the model atomically. :meth:`watch_model` reloads the
    model whenever its file changes.

    With a database, every decision of every request is logged (see
    :mod:`~tinydancer.decision_log`): each candidate's weighted features (the model's input), confidence,
    threshold, decision and uncertainty, under the request id the response carries
    (:attr:`RoutingResponse.request_id <tinydancer.responses.RoutingResponse.request_id>`). Report what
    happened with :meth:`record_outcome`; retrain and calibrate from it with ``tinydancer train --from-db``
    and :meth:`calibrate`.

    Uncertainty: uncalibrated, it is the crate's heuristic ``1 - 2 |confidence - 0.5|``, a distance from
    0.5 that promises nothing. After :meth:`calibrate` (or with a model file that carries a calibration),
    a candidate goes to the lightweight model when its confidence reaches the certified threshold, and its
    uncertainty is the calibration's conformal p-value (see :class:`~tinydancer.calibration.Calibration`).
    """

    def __init__(self, config: RouterConfig | None = None, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, storage: Storage | None = None) -> None:
        self.config = config if config is not None else RouterConfig()
        if not isinstance(self.config, RouterConfig):
            raise ConfigError(f"config must be a RouterConfig, got {type(config).__name__}")
        if not callable(clock):
            raise ConfigError("clock must be callable")
        fc = self.config.feature_config or FeatureConfig()
        self._weights = fc.kernel_weights()
        self._probes = SMOKE_PROBES * np.asarray(fc.weights, dtype=np.float32)
        self._clock = clock
        self._reload_lock = threading.Lock()
        self._counters = kernels.RouteCounters()
        self._buffers: list[kernels.CandidateColumns] = []  # gather buffers for lists, one per routing thread
        self._last_reload_error: str | None = None
        self._watcher: tuple[threading.Thread, threading.Event] | None = None
        self._watch_lock = threading.Lock()  # starts and stops the watcher (never held while reloading)
        self._source = self._resolve(self.config.model_path)
        self._source_signature = _file_signature(self._source)  # read before loading: a later change shows
        self._serving = self._bind(*self._load(self._source))
        self._breaker = (CircuitBreaker(failure_threshold=self.config.circuit_breaker_threshold,
                                        recovery_timeout=self.config.circuit_breaker_timeout, clock=monotonic,
                                        failures=MODEL_FAILURES)
                         if self.config.enable_circuit_breaker else None)
        self._closed = False
        if storage is not None and self.config.database_path is not None:
            raise ConfigError("give either config.database_path or storage, not both")
        if storage is not None and not isinstance(storage, Storage):
            raise ConfigError(f"storage must be a Storage, got {type(storage).__name__}")
        database = storage if storage is not None else self.config.database_path
        self._log = None if database is None else DecisionLog(
            database, capacity=self.config.log_queue_size, full_wait=self.config.log_full_wait)

    @classmethod
    def default(cls) -> Router:
        """A router with the default configuration and the shipped model."""
        return cls()

    # ----------------------------------------------------------------------------------------------------
    # Models
    # ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _resolve(path: str | PathLike[str] | None) -> str:
        return default_model_path() if path is None else fspath(path)

    def _load(self, where: str) -> tuple[FastGRNN, Calibration | None]:
        """Load and check a candidate model completely (with the calibration its file carries, if any), then
        score :data:`SMOKE_PROBES` with it; nothing is swapped in here.

        Raises:
            ModelError: the file cannot be loaded, is not a candidate model, carries a bad calibration, or
                scores a probe as NaN or Inf (:class:`~tinydancer.errors.ModelValueError`).
        """
        record = files.load_file(where)  # read once: the model and its calibration come from one version
        model = candidate_model(model_from_record(record), where)
        if self.config.enable_quantization:
            model.quantize()
        for probe, weighted in zip(SMOKE_PROBES.tolist(), self._probes):
            try:  # the cell raises on a non-finite result
                model.forward(weighted)
            except InvalidInputError:
                raise ModelValueError(f"{where}: the model scores the raw features {probe} (with this router's "
                                      "feature weights) as a non-finite value; it was not loaded") from None
        return model, feedback.calibration_of(record)

    def _bind(self, model: FastGRNN, calibration: Calibration | None) -> _Serving:
        """The model with its calibration, routing pass and logged threshold: swapped together, so a request
        sees one model."""
        if calibration is None:
            route_pass = kernels.RoutePass(model.cell, self._weights, self.config.confidence_threshold,
                                           self.config.max_uncertainty)
            return model, route_pass, self.config.effective_threshold, None
        route_pass = kernels.RoutePass(model.cell, self._weights, calibration.threshold, 1.0,
                                       failure_values=calibration.failure_values,
                                       failure_count=calibration.failure_count)
        return model, route_pass, calibration.threshold, calibration

    @property
    def model(self) -> FastGRNN:
        """The model serving now."""
        return self._serving[0]

    @property
    def calibration(self) -> Calibration | None:
        """The serving model's calibration (None: uncalibrated, the crate's thresholds and heuristic)."""
        return self._serving[3]

    @property
    def threshold(self) -> float:
        """The confidence from which a candidate goes to the lightweight model: the calibration's certified
        threshold (+inf when nothing was certified), else :attr:`RouterConfig.effective_threshold`."""
        return self._serving[2]

    def calibrate(self, database: str | PathLike[str] | Storage, *, target: float = 0.9, delta: float = 0.1,
                  holdout: float = feedback.DEFAULT_HOLDOUT) -> Calibration:
        """Certify a threshold for the serving model from logged outcomes, and route with it from now on.

        The calibration examples are the logged candidate decisions with an outcome whose request falls in
        the held-out share (``holdout``, by a hash of the request id: the part ``tinydancer train
        --from-db`` leaves out). The serving model rescores their logged features, and Learn then Test
        (:func:`~tinydancer.calibration.calibrate_lightweight_error`) picks the lowest threshold for which
        at most ``1 - target`` of the lightweight-routed candidates had a bad outcome, with probability at
        least ``1 - delta``.

        Returns:
            The :class:`~tinydancer.calibration.Calibration` now in use. When nothing could be certified,
            no candidate goes to the lightweight model until the next calibration. It stays with this model:
            a reload serves the new file's calibration, or none (write a calibrated file with ``tinydancer
            calibrate --from-db`` or :func:`~tinydancer.feedback.save_candidate_model`).

        Raises:
            InvalidInputError: bad settings, or no logged outcome in the held-out share.
            StorageError: the database cannot be read.
        """
        if self._log is not None:  # what this router has queued counts too
            self._log.flush()
        with self._reload_lock:
            model = self._serving[0]
            examples = feedback.logged_examples(database, "candidate").split(holdout)[1]
            calibration = feedback.calibrate_candidates(model, examples, target=target, delta=delta)
            self._serving = self._bind(model, calibration)
        return calibration

    def reload_model(self, path: str | PathLike[str] | None = None) -> None:
        """Load ``path`` (default: the configured model) and swap it in atomically once it is fully loaded
        and checked (see :meth:`_load`: a model that scores a probe as NaN or Inf is refused with a
        :class:`~tinydancer.errors.ModelValueError`). On any failure the old model keeps serving and the
        error is raised. A new model starts with a closed circuit breaker. The loaded file is the one
        :meth:`check_model_file` and :meth:`watch_model` watch from then on."""
        with self._reload_lock:
            where = self._resolve(self.config.model_path if path is None else path)
            self._swap_in_locked(where, _file_signature(where))

    def check_model_file(self) -> bool:
        """Reload the model if its file changed since it was loaded (another inode, size or modification
        time). A missing file changes nothing: a replacement may be on its way.

        Returns:
            True when a new model was swapped in.

        Raises:
            the load's error, when the changed file is not a valid candidate model: the old model keeps
            serving, and that version of the file is not tried again (the next change is).
        """
        with self._reload_lock:
            signature = _file_signature(self._source)
            if signature is None or signature == self._source_signature:
                return False
            self._source_signature = signature
            self._swap_in_locked(self._source, signature)
            return True

    def _swap_in_locked(self, where: str, signature: tuple[int, int, int, int] | None) -> None:
        try:
            serving = self._bind(*self._load(where))
        except Exception as exc:
            self._counters.count_reload_failure()
            self._last_reload_error = f"{type(exc).__name__}: {exc}"
            raise
        self._serving = serving
        self._source, self._source_signature = where, signature
        if self._breaker is not None:  # the failures it counted were the old model's
            self._breaker.reset()
        self._counters.count_reload()

    def watch_model(self, interval: float = 1.0, *, on_change: OnChange | None = None) -> None:
        """Check the model file every ``interval`` seconds on a background thread and reload it when it
        changes (see :meth:`check_model_file`). A failed reload keeps the old model serving and shows in
        :meth:`metrics` (``reload_failures``, ``last_reload_error``). Calling it again changes the interval;
        :meth:`stop_watching` or :meth:`close` stops it.

        Args:
            interval: seconds between checks.
            on_change: called on the watcher thread after each change it acted on, with the model's path
                and None when the new model was swapped in, or the load's error when it was refused (an
                exception it raises is logged and otherwise ignored).

        Raises:
            ConfigError: ``interval`` is not a positive finite number of seconds, or ``on_change`` is not
                callable.
            TinyDancerError: the router is closed.
        """
        interval = checks.real(interval, "interval (seconds)", 0.0, low_open=True)
        if on_change is not None and not callable(on_change):
            raise ConfigError(f"on_change must be callable or None, got {type(on_change).__name__}")
        with self._watch_lock:
            if self._closed:
                raise TinyDancerError("the router is closed")
            self._stop_watching_locked()
            stop = threading.Event()
            thread = threading.Thread(target=_watch, args=(weakref.ref(self), stop, interval, on_change),
                                      name="tinydancer-model-watch", daemon=True)
            self._watcher = (thread, stop)
            thread.start()

    def stop_watching(self) -> None:
        """Stop the watcher thread of :meth:`watch_model`, if one runs, and wait for it to end."""
        with self._watch_lock:
            self._stop_watching_locked()

    def _stop_watching_locked(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            thread, stop = watcher
            stop.set()
            if thread is not threading.current_thread():
                thread.join()

    @property
    def watching(self) -> bool:
        """Whether a watcher thread checks the model file."""
        return self._watcher is not None

    # ----------------------------------------------------------------------------------------------------
    # Routing
    # ----------------------------------------------------------------------------------------------------

    def route(self, request: RoutingRequest) -> RoutingResponse:
        """Score, rank and route the request's candidates.

        Returns:
            a :class:`RoutingResponse`; ``inference_time_us`` is the whole call, ``feature_time_us`` the part
            spent gathering fields: converting a list of Candidate objects and matching metadata (0.0 for
            a CandidateBatch without query metadata; the features themselves are computed with the model,
            in one C pass). Decisions are sorted by confidence, highest first (stable), each with
            ``use_lightweight = confidence >= confidence_threshold and uncertainty <= max_uncertainty``
            (calibrated: ``confidence >= threshold``). On a model failure or an open circuit breaker, a
            fallback response: every candidate to the powerful model, ``fell_back`` True and
            ``fallback_reason`` set. With a database, ``request_id`` is the id the decisions were logged under
            (None when the log's queue was full and they were dropped).

        Raises:
            InvalidInputError: a malformed request (it does not count against the circuit breaker).
            ConfigError: the clock returned something that is not a finite number.
            TinyDancerError: the router is closed.

        Only :data:`MODEL_FAILURES` fall back; any other exception propagates and leaves the breaker as it was.
        """
        start = _perf_counter_ns()
        if self._closed:
            raise TinyDancerError("the router is closed")
        if type(request) is not RoutingRequest and not isinstance(request, RoutingRequest):
            self._counters.count_invalid()
            raise InvalidInputError(f"request must be a RoutingRequest, got {type(request).__name__}")
        candidates: Any = request.candidates
        metadata = request.metadata
        overlap = None
        feature_us = 0.0
        buffers = columns = None
        log = self._log
        try:
            if type(candidates) is CandidateBatch:
                columns = candidates.columns
                ids: Any = candidates.ids
                if metadata:
                    overlap = candidates.metadata_overlap(metadata)
                    feature_us = (_perf_counter_ns() - start) / 1e3
            else:  # gathered into a buffer of this router's, checked on the way
                buffers = self._buffers
                columns = buffers.pop() if buffers else kernels.CandidateColumns.buffer()
                ids, metadatas = _gather(candidates, columns, metadata=bool(metadata))
                if metadata:
                    overlap = metadata_overlap(metadata, metadatas)
                feature_us = (_perf_counter_ns() - start) / 1e3
            if not len(columns):
                if log is not None:
                    return self._respond_logged(_NO_RESULT, ids, start, feature_us, log, 0.0, None)
                return self._respond(_NO_RESULT, ids, start, feature_us)
            now = self._clock()
            if type(now) is not float or now - now != 0.0:  # a finite float passes inline; anything else is checked
                now = checks.clock_reading(now)
            breaker = self._breaker
            if breaker is not None and not breaker.allow_request():
                return self._fall_back(ids, "circuit breaker open", start, feature_us, log, now, rejected=True)
            serving = self._serving  # one read: this request sees one model, whatever reloads happen
            try:
                if log is None:
                    result = serving[1].route(request.query_embedding, columns, now, overlap)
                else:  # the log keeps the model's input: the pass writes the features out
                    result = serving[1].route(request.query_embedding, columns, now, overlap, True)
            except MODEL_FAILURES as exc:
                if breaker is not None:
                    breaker.record_failure()
                return self._fall_back(ids, f"model error: {exc}", start, feature_us, log, now, model_error=True)
            except BaseException:  # anything else, KeyboardInterrupt included, is not the model's fault:
                if breaker is not None:  # a probe spent here is given back, and the exception goes on
                    breaker.release()
                raise
            if breaker is not None:
                breaker.record_success()
            if log is not None:
                return self._respond_logged(result, ids, start, feature_us, log, now, serving[2])
            return self._respond(result, ids, start, feature_us)
        except InvalidInputError:
            self._counters.count_invalid()
            raise
        finally:
            if buffers is not None and columns is not None:
                buffers.append(columns)

    def _respond(self, result: kernels.RouteResult, ids: Any, start: int, feature_us: float) -> RoutingResponse:
        elapsed_us = (_perf_counter_ns() - start) / 1e3
        self._counters.count_routed(result.n, result.lightweight_count, elapsed_us)
        return _from_result(result, ids, elapsed_us, feature_us)

    def _respond_logged(self, result: kernels.RouteResult, ids: Any, start: int, feature_us: float,
                        log: DecisionLog, now: float, threshold: float | None) -> RoutingResponse:
        rid: str | None = log.new_id()
        elapsed_us = (_perf_counter_ns() - start) / 1e3
        if result.n and not log.put((_CANDIDATES, rid, ids, result, False, threshold, elapsed_us, now)):
            rid = None  # dropped on a full queue (counted): no id, since nothing was logged under it
        self._counters.count_routed(result.n, result.lightweight_count, elapsed_us)
        return _from_result(result, ids, elapsed_us, feature_us, None, rid)

    def _fall_back(self, ids: Any, reason: str, start: int, feature_us: float, log: DecisionLog | None,
                   now: float, *, rejected: bool = False, model_error: bool = False) -> RoutingResponse:
        rid = None if log is None else log.new_id()
        response = RoutingResponse.fallback(ids, reason, (_perf_counter_ns() - start) / 1e3, feature_us, rid)
        if log is not None and not log.put((_CANDIDATES, rid, ids, response.result, True, None,
                                            response.inference_time_us, now)):
            response = _from_result(response.result, ids, response.inference_time_us, feature_us,
                                    response.fallback_reason, None)  # dropped on a full queue: no id
        self._counters.count_fallback(len(ids), rejected, model_error)
        return response

    # ----------------------------------------------------------------------------------------------------
    # Outcomes
    # ----------------------------------------------------------------------------------------------------

    def record_outcome(self, request_id: str, good: bool, *, candidate_id: str | None = None) -> None:
        """Report whether the lightweight answer was good enough for a request this router logged (see
        :meth:`Storage.record_outcome <tinydancer.storage.Storage.record_outcome>`); the request's
        decisions are flushed first, so an outcome may follow its response at once.

        Raises:
            TinyDancerError: the router has no database.
            InvalidInputError: a bad value, or no logged decision has this request id (and candidate id).
        """
        log = self._log
        if log is None:
            raise TinyDancerError("this router logs nothing (no database_path or storage): it has no outcomes")
        log.flush()
        log.storage.record_outcome(request_id, good, candidate_id=candidate_id)

    def flush(self) -> None:
        """Return once every decision logged before the call is committed (nothing to do without a
        database).

        Raises:
            StorageError: decisions the database refused since the previous flush.
        """
        if self._log is not None:
            self._log.flush()

    # ----------------------------------------------------------------------------------------------------
    # State
    # ----------------------------------------------------------------------------------------------------

    def circuit_breaker_status(self) -> bool | None:
        """True when the breaker is closed, False when open or half-open, None without one. Reading it
        never changes the breaker's state."""
        return None if self._breaker is None else self._breaker.state == "closed"

    @property
    def circuit_breaker(self) -> CircuitBreaker | None:
        return self._breaker

    def metrics(self) -> dict[str, Any]:
        """Counters since the router was made: requests, candidates, lightweight decisions, fallbacks (and
        of those, open-breaker rejections and model errors), invalid requests, reloads and failed reloads
        (with the last failure's message), the mean time per routed request, the breaker's state, the model's
        file, form and size, whether the file is watched and whether the model is calibrated. With a
        database, the log's counters too (see :meth:`DecisionLog.metrics
        <tinydancer.decision_log.DecisionLog.metrics>`): rows written, requests pending, dropped and failed."""
        out: dict[str, Any] = self._counters.snapshot()
        model = self._serving[0]
        out.update(last_reload_error=self._last_reload_error,
                   circuit_breaker=None if self._breaker is None else self._breaker.state,
                   model_path=self._source, model_weights=model.cell.W.kind, model_size_bytes=model.size_bytes(),
                   watching_model_file=self.watching, calibrated=self._serving[3] is not None)
        if self._log is not None:
            out.update(self._log.metrics())
        return out

    def close(self) -> None:
        """Stop routing (later calls to :meth:`route` raise), stop watching the model file, and flush and
        close the decision log (closing the database when the router opened it). Closing twice is fine.

        Raises:
            StorageError: decisions the database refused (the router is closed all the same).
        """
        self._closed = True
        self.stop_watching()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Router(model={self._serving[0]!r}, breaker={self.circuit_breaker_status()})"
