"""The quality curve as a PNG: routed quality against the share of strong calls.

matplotlib is optional (``pip install 'tinydancer[plot]'``) and imported only when a plot is drawn.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from tinydancer.atomic_files import PathArg, check_writable, write_atomic
from tinydancer.checks import real
from tinydancer.errors import InvalidInputError, MissingExtraError

__all__ = ["plot_quality"]


def _curve(name: str, curve: Any) -> tuple[np.ndarray, np.ndarray]:
    """One ``(share_strong, quality)`` pair, checked."""
    try:
        share, quality = (np.asarray(part, dtype=np.float64) for part in curve)
    except (TypeError, ValueError):
        raise InvalidInputError(f"curves[{name!r}] must be a (share_strong, quality) pair of arrays") from None
    if share.ndim != 1 or share.shape != quality.shape or share.size < 2:
        raise InvalidInputError(f"curves[{name!r}]: share_strong and quality must be 1-D, of one length >= 2, "
                                f"got shapes {share.shape} and {quality.shape}")
    if not (np.all(np.isfinite(share)) and np.all(np.isfinite(quality))):
        raise InvalidInputError(f"curves[{name!r}] holds NaN or infinite values")
    if share.min() < 0.0 or share.max() > 1.0:
        raise InvalidInputError(f"curves[{name!r}]: share_strong must lie in [0, 1]")
    return share, quality


def plot_quality(curves: Mapping[str, Any], path: PathArg, *, title: str = "",
                 strong_quality: float | None = None, weak_quality: float | None = None) -> str:
    """Draw quality against the share of strong calls, one line per curve, and write it as a PNG.

    Args:
        curves: name -> ``(share_strong, quality)`` as :func:`~tinydancer.evaluation.metrics.quality_curve`
            returns them (e.g. the router, random and oracle).
        path: the PNG file; written atomically (:func:`tinydancer.atomic_files.write_atomic`).
        title: the plot's title.
        strong_quality, weak_quality: when given, drawn as dashed lines (always-strong and always-weak).

    Returns:
        The path written (absolute).

    Raises:
        MissingExtraError: matplotlib is not installed.
        InvalidInputError: a bad curve or setting.
        OutputFileError: the file cannot be written there.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise InvalidInputError("curves must be a non-empty mapping of name -> (share_strong, quality)")
    checked = {str(name): _curve(str(name), curve) for name, curve in curves.items()}
    if not isinstance(title, str):
        raise InvalidInputError(f"title must be a str, got {type(title).__name__}")
    levels = [(label, real(value, name, error=InvalidInputError), color)
              for label, name, value, color in (("always strong", "strong_quality", strong_quality, "tab:red"),
                                                ("always weak", "weak_quality", weak_quality, "tab:gray"))
              if value is not None]
    check_writable(path)  # fail before drawing
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtraError("plotting needs matplotlib: pip install 'tinydancer[plot]'") from exc
    figure = Figure(figsize=(7.0, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for name, (share, quality) in checked.items():
        axes.plot(100.0 * share, quality, label=name, linewidth=1.5)
    for label, value, color in levels:
        axes.axhline(value, color=color, linestyle="--", linewidth=1.0, label=label)
    axes.set_xlim(0.0, 100.0)
    axes.set_xlabel("strong-model calls (%)")
    axes.set_ylabel("quality")
    if title:
        axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return write_atomic(path, buffer.getvalue())
