"""The C kernels, validated: cosine similarity, int8 mat-vec (dense and CSR), the FastGRNN cell and the
fused candidate scorer, with runtime CPU dispatch.

At import the fastest ISA this CPU supports is selected; the ``TINYDANCER_ISA`` environment variable
(``scalar``, ``avx2``, ``avx512`` or ``neon``) overrides it, and :func:`set_isa` switches later. A value
that names no usable ISA fails the import with :class:`~tinydancer.errors.ConfigError`; in the process of
the ``tinydancer`` command, which cannot catch it, it prints as one line rather than a traceback.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

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
    FUTURE_TOLERANCE,
    FeatureWeights,
    MAX_DIM,
    NUM_FEATURES,
    KernelMatrix,
    QueryPass,
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
    "FUTURE_TOLERANCE",
    "FeatureWeights",
    "KernelMatrix",
    "MAX_DIM",
    "NUM_FEATURES",
    "QueryPass",
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


def _started_as_command() -> bool:
    """True in the process of the ``tinydancer`` command: its console script, or ``python -m tinydancer``
    (while runpy imports the package, ``sys.argv[0]`` is ``-m``)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 == "-m":
        args = getattr(sys, "orig_argv", [])[1:]
        for i, arg in enumerate(args):
            if arg.startswith("-m"):
                module = arg[2:] or (args[i + 1] if i + 1 < len(args) else "")
                return module.partition(".")[0] == "tinydancer"
        return False
    name = os.path.basename(argv0)
    return name in ("tinydancer", "tinydancer.exe", "tinydancer-script.py")


def _report_as_one_line(error: ConfigError) -> None:
    """Let ``error``, when nothing catches it, print as the command line prints errors: one line, no
    traceback; any other uncaught exception goes to the hook there was before."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        if value is error:
            print(f"tinydancer: error: {value}", file=sys.stderr)
        else:
            previous(kind, value, traceback)

    sys.excepthook = hook


def _apply_env() -> None:
    requested = os.environ.get(ISA_ENV, "").strip()
    if not requested:
        return
    try:
        set_isa(requested)
    except ConfigError as exc:
        error = ConfigError(f"{ISA_ENV}={requested!r}: {exc}")
        # The import fails either way; the command's own process shows why in one line.
        if _started_as_command():
            _report_as_one_line(error)
        raise error from None


_apply_env()
