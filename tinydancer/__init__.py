"""tinydancer: decide in microseconds where an AI request should go, and which candidates to send.

The main names are importable from here; each is loaded on first use, so ``import tinydancer`` loads only
the kernels (:mod:`tinydancer.kernels`) and the errors (:mod:`tinydancer.errors`).

Where things live: :mod:`~tinydancer.router` (the candidate router), :mod:`~tinydancer.types` (its data
types), :mod:`~tinydancer.features`, :mod:`~tinydancer.model` (the FastGRNN and its files),
:mod:`~tinydancer.training`, :mod:`~tinydancer.breaker`, :mod:`~tinydancer.checks` (single-value checks),
:mod:`~tinydancer.cli`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tinydancer import errors
from tinydancer.kernels import active_isa, available_isas, cosine, cosine_batch, set_isa

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "Router": "tinydancer.router",
    "RouterConfig": "tinydancer.router",
    "Candidate": "tinydancer.candidates",
    "CandidateBatch": "tinydancer.candidates",
    "RoutingRequest": "tinydancer.candidates",
    "RoutingDecision": "tinydancer.responses",
    "RoutingResponse": "tinydancer.responses",
    "FeatureConfig": "tinydancer.features",
    "FeatureEngineer": "tinydancer.features",
    "FastGRNN": "tinydancer.model",
    "FastGRNNConfig": "tinydancer.model",
    "Trainer": "tinydancer.training",
    "TrainingConfig": "tinydancer.training",
    "CircuitBreaker": "tinydancer.breaker",
}

__all__ = ["__version__", "active_isa", "available_isas", "cosine", "cosine_batch", "errors", "set_isa", *_LAZY]

if TYPE_CHECKING:
    from tinydancer.breaker import CircuitBreaker
    from tinydancer.candidates import Candidate, CandidateBatch, RoutingRequest
    from tinydancer.features import FeatureConfig, FeatureEngineer
    from tinydancer.model import FastGRNN, FastGRNNConfig
    from tinydancer.responses import RoutingDecision, RoutingResponse
    from tinydancer.router import Router, RouterConfig
    from tinydancer.training import Trainer, TrainingConfig


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tinydancer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
