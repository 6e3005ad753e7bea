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

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from os import PathLike, fspath
from typing import Any

import numpy as np

from tinydancer import kernels
from tinydancer.breaker import CircuitBreaker
from tinydancer.errors import ConfigError, InvalidInputError, ModelSchemaError, TinyDancerError
from tinydancer.features import FeatureConfig
from tinydancer.model import FastGRNN
from tinydancer.model_files import load_model
from tinydancer.types import CandidateBatch, RoutingRequest, RoutingResponse

__all__ = ["RouterConfig", "Router", "default_model_path"]

DEFAULT_MODEL = "candidate_router.safetensors"
_perf_counter_ns = time.perf_counter_ns


def default_model_path() -> str:
    """Where the shipped default candidate model is installed (see models/MODEL_CARD.md)."""
    return str(resources.files("tinydancer") / "models" / DEFAULT_MODEL)


def _number(name: str, value: Any, low: float, high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must lie in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class RouterConfig:
    """How a :class:`Router` decides (the crate's fields and defaults).

    Args:
        model_path: a candidate model file (input 5, one timestep, output 1); None: the shipped default.
        confidence_threshold: a candidate goes to the lightweight model only at this confidence or above...
        max_uncertainty: ...and this uncertainty or below (uncertainty = 1 - 2 |confidence - 0.5|).
        enable_circuit_breaker: guard the model with a :class:`~tinydancer.breaker.CircuitBreaker`.
        circuit_breaker_threshold: consecutive model failures that open it.
        circuit_breaker_timeout: seconds before an open breaker lets probes through.
        enable_quantization: run the model with int8 weights (outputs within 0.02 of float32).
        database_path: routing logs in SQLite; not available in this version, so it must stay None.
        feature_config: feature weights and recency decay (default :class:`FeatureConfig`).
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

    def __post_init__(self) -> None:
        _number("confidence_threshold", self.confidence_threshold, 0.0, 1.0)
        _number("max_uncertainty", self.max_uncertainty, 0.0, 1.0)
        _number("circuit_breaker_timeout", self.circuit_breaker_timeout, 0.0)
        threshold = self.circuit_breaker_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigError(f"circuit_breaker_threshold must be a positive integer, got {threshold!r}")
        for name in ("enable_circuit_breaker", "enable_quantization"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.feature_config is not None and not isinstance(self.feature_config, FeatureConfig):
            raise ConfigError(f"feature_config must be a FeatureConfig, got {type(self.feature_config).__name__}")
        if self.database_path is not None:
            raise ConfigError("database_path: routing logs in SQLite are not available in this version; leave it None")


class Router:
    """Routes a request's candidates with a FastGRNN model (see the module docstring).

    Args:
        config: a :class:`RouterConfig` (default: the shipped model, the crate's thresholds).
        clock: unix seconds, read once per request for recency (default ``time.time``).
        monotonic: the circuit breaker's clock (default ``time.monotonic``).

    Thread-safe: any number of threads may call :meth:`route` at once (the kernels release the GIL for
    large requests), and :meth:`reload_model` swaps the model atomically.
    """

    def __init__(self, config: RouterConfig | None = None, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config if config is not None else RouterConfig()
        if not isinstance(self.config, RouterConfig):
            raise ConfigError(f"config must be a RouterConfig, got {type(config).__name__}")
        if not callable(clock):
            raise ConfigError("clock must be callable")
        fc = self.config.feature_config or FeatureConfig()
        self._weights = fc.kernel_weights()
        self._clock = clock
        self._reload_lock = threading.Lock()
        self._serving = self._bind(self._load(self.config.model_path))
        self._breaker = (CircuitBreaker(failure_threshold=self.config.circuit_breaker_threshold,
                                        recovery_timeout=self.config.circuit_breaker_timeout, clock=monotonic)
                         if self.config.enable_circuit_breaker else None)
        self._counters = kernels.RouteCounters()
        self._closed = False

    @classmethod
    def default(cls) -> Router:
        """A router with the default configuration and the shipped model."""
        return cls()

    # ----------------------------------------------------------------------------------------------------
    # Models
    # ----------------------------------------------------------------------------------------------------

    def _load(self, path: str | PathLike[str] | None) -> FastGRNN:
        """Load and check a candidate model completely; nothing is swapped in here."""
        where = default_model_path() if path is None else fspath(path)
        model = load_model(where)
        if not isinstance(model, FastGRNN):
            raise ModelSchemaError(f"{where}: a {type(model).__name__} cannot route candidates; the router needs a "
                                   "tinydancer FastGRNN (train one on its outputs with `tinydancer train`)")
        c = model.config
        if (c.input_dim, c.timesteps, c.output_dim) != (5, 1, 1):
            raise ModelSchemaError(f"{where}: a candidate model has input_dim 5, timesteps 1 and output_dim 1, "
                                   f"not {c.input_dim}, {c.timesteps} and {c.output_dim}")
        if self.config.enable_quantization:
            model.quantize()
        return model

    def _bind(self, model: FastGRNN) -> tuple[FastGRNN, kernels.RoutePass]:
        """The model with its routing pass: swapped together, so a request sees one model."""
        return model, kernels.RoutePass(model.cell, self._weights, self.config.confidence_threshold,
                                        self.config.max_uncertainty, RoutingResponse)

    @property
    def model(self) -> FastGRNN:
        """The model serving now."""
        return self._serving[0]

    def reload_model(self, path: str | PathLike[str] | None = None) -> None:
        """Load ``path`` (default: the configured model) and swap it in atomically once it is fully loaded
        and checked. On any failure the old model keeps serving and the error is raised."""
        with self._reload_lock:
            serving = self._bind(self._load(self.config.model_path if path is None else path))
            self._serving = serving
        self._counters.count_reload()

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
            ``use_lightweight = confidence >= confidence_threshold and uncertainty <= max_uncertainty``. On a
            model failure or an open circuit breaker, a fallback response: every candidate to the powerful
            model, ``fell_back`` True and ``fallback_reason`` set.

        Raises:
            InvalidInputError: a malformed request (it does not count against the circuit breaker).
            TinyDancerError: the router is closed.
        """
        start = _perf_counter_ns()
        if self._closed:
            raise TinyDancerError("the router is closed")
        if type(request) is not RoutingRequest and not isinstance(request, RoutingRequest):
            self._counters.count_invalid()
            raise InvalidInputError(f"request must be a RoutingRequest, got {type(request).__name__}")
        batch: Any = request.candidates
        metadata = request.metadata
        overlap = None
        feature_us = 0.0
        try:
            if type(batch) is not CandidateBatch or metadata:  # gathering fields: the feature time
                if type(batch) is not CandidateBatch:
                    batch = CandidateBatch.from_candidates(batch)
                if metadata:
                    overlap = batch.metadata_overlap(metadata)
                feature_us = (_perf_counter_ns() - start) / 1e3
            if not len(batch):
                return self._empty(start, feature_us)
            arrays = batch.kernel_arrays()
        except InvalidInputError:
            self._counters.count_invalid()
            raise
        now = self._clock()
        breaker = self._breaker
        if breaker is not None and not breaker.allow_request():
            return self._fall_back(batch, "circuit breaker open", start, rejected=True)
        route_pass = self._serving[1]  # one read: this request sees one model, whatever reloads happen
        try:
            response = route_pass.route(request.query_embedding, arrays, batch.ids, now, overlap, start, feature_us,
                                        self._counters)
        except InvalidInputError:
            self._counters.count_invalid()
            if breaker is not None:
                breaker.release()  # a probe spent on bad input is given back
            raise
        except TypeError as exc:  # only the time can have the wrong type here
            if breaker is not None:
                breaker.release()
            raise ConfigError(f"clock must return unix seconds as a number, got {type(now).__name__}") from exc
        except Exception as exc:  # a model failure: count it, fall back
            if breaker is not None:
                breaker.record_failure()
            return self._fall_back(batch, f"model error: {exc}", start, model_error=True)
        if breaker is not None:
            breaker.record_success()
        return response

    def _empty(self, start: int, feature_us: float) -> RoutingResponse:
        empty_f = np.empty(0, np.float32)
        elapsed_us = (_perf_counter_ns() - start) / 1e3
        response = RoutingResponse([], empty_f, empty_f, np.empty(0, bool), np.empty(0, np.int32), elapsed_us,
                                   feature_us)
        self._counters.count_routed(0, 0, elapsed_us)
        return response

    def _fall_back(self, batch: CandidateBatch, reason: str, start: int, *, rejected: bool = False,
                   model_error: bool = False) -> RoutingResponse:
        response = RoutingResponse.fallback(batch.ids, reason, (_perf_counter_ns() - start) / 1e3)
        self._counters.count_fallback(len(batch), rejected, model_error)
        return response

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
        of those, open-breaker rejections and model errors), invalid requests, reloads, the mean time per
        routed request, the breaker's state, the model's form and size."""
        out: dict[str, Any] = self._counters.snapshot()
        model = self._serving[0]
        out.update(circuit_breaker=None if self._breaker is None else self._breaker.state,
                   model_weights=model.cell.W.kind, model_size_bytes=model.size_bytes())
        return out

    def close(self) -> None:
        """Stop routing: later calls to :meth:`route` raise. Closing twice is fine."""
        self._closed = True

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Router(model={self._serving[0]!r}, breaker={self.circuit_breaker_status()})"
