"""The query router: the cost saver. From a query's embedding, send it to the cheap model when its answer
will be good enough, on a threshold with a statistical guarantee.

Modules: :mod:`~tinydancer.query_router.router` (:class:`QueryRouter`, :class:`QueryDecision`,
:class:`QueryDecisions`), :mod:`~tinydancer.query_router.outcomes` (what the model learns),
:mod:`~tinydancer.query_router.ensemble` (how it is trained). The threshold comes from
:mod:`tinydancer.calibration`.
"""

from __future__ import annotations

from tinydancer.query_router.ensemble import EnsembleConfig
from tinydancer.query_router.router import (
    DEFAULT_QUERY_MODEL,
    RISKS,
    QueryDecision,
    QueryDecisions,
    QueryRouter,
    default_query_model_path,
)

__all__ = ["DEFAULT_QUERY_MODEL", "RISKS", "EnsembleConfig", "QueryDecision", "QueryDecisions", "QueryRouter",
           "default_query_model_path"]
