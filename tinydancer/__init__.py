"""tinydancer: decide in microseconds where an AI request should go, and which candidates to send.

The kernels live in :mod:`tinydancer.kernels`; errors in :mod:`tinydancer.errors`.
"""

from __future__ import annotations

from tinydancer import errors
from tinydancer.kernels import active_isa, available_isas, cosine, cosine_batch, set_isa

__version__ = "0.1.0"

__all__ = ["__version__", "active_isa", "available_isas", "cosine", "cosine_batch", "errors", "set_isa"]
