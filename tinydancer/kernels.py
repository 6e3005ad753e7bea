"""The C kernels, validated: cosine similarity, int8 mat-vec (dense and CSR), the FastGRNN cell and the
fused candidate scorer, with runtime CPU dispatch.

At import the fastest ISA this CPU supports is selected; the ``TINYDANCER_ISA`` environment variable
(``scalar``, ``avx2``, ``avx512`` or ``neon``) overrides it, and :func:`set_isa` switches later.
"""

from __future__ import annotations

import os

try:
    from tinydancer import _kernels  # noqa: F401  (the compiled extension)
except ImportError as exc:  # pragma: no cover - an unbuilt source tree, or a broken install
    raise ImportError(
        f"tinydancer's compiled kernels could not be imported ({exc}). Run from outside the source tree, "
        "after `pip install .`."
    ) from exc

from tinydancer._kernels import (
    CandidateColumns,
    FastGRNNCell,
    FeatureWeights,
    MAX_DIM,
    NUM_FEATURES,
    KernelMatrix,
    RouteCounters,
    RoutePass,
    RouteResult,
    active_isa,
    as_vector,
    available_isas,
    best_isa,
    candidate_features,
    compiled_isas,
    cosine,
    cosine_batch,
    csr_int8_matvec,
    csr_int8_matvec_int32,
    csr_matvec,
    detected_isas,
    gather_candidates,
    int8_matvec,
    int8_matvec_int32,
    l2_norms,
    score_candidates,
    set_isa,
)
from tinydancer.errors import ConfigError

__all__ = [
    "CandidateColumns",
    "FastGRNNCell",
    "FeatureWeights",
    "KernelMatrix",
    "MAX_DIM",
    "NUM_FEATURES",
    "RouteCounters",
    "RoutePass",
    "RouteResult",
    "active_isa",
    "as_vector",
    "available_isas",
    "best_isa",
    "candidate_features",
    "compiled_isas",
    "cosine",
    "cosine_batch",
    "csr_int8_matvec",
    "csr_int8_matvec_int32",
    "csr_matvec",
    "detected_isas",
    "gather_candidates",
    "int8_matvec",
    "int8_matvec_int32",
    "l2_norms",
    "score_candidates",
    "set_isa",
]

ISA_ENV = "TINYDANCER_ISA"


def _apply_env() -> None:
    requested = os.environ.get(ISA_ENV, "").strip()
    if not requested:
        return
    try:
        set_isa(requested)
    except ConfigError as exc:
        raise ConfigError(f"{ISA_ENV}={requested!r}: {exc}") from None


_apply_env()
