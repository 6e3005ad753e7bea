# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, nonecheck=False
# cython: initializedcheck=False, embedsignature=True
"""Validated Python wrappers over the C kernels of ``csrc/``: one extension module, so one dispatch table.

Arguments are checked with the GIL held: a NumPy array that is already C-contiguous, aligned and of the
kernel's dtype goes straight to C (about 15 ns of checks); anything else (lists, other dtypes, strided,
unaligned, byte-swapped or read-only views) is converted once, or rejected with an
:class:`~tinydancer.errors.InvalidInputError` that names the argument. The kernels run without the GIL
when the work is large enough for releasing it to pay off.

The code is split by domain into the included files: ``_arguments.pxi`` (the checks every wrapper uses),
``_dispatch.pxi``, ``_linalg.pxi`` (cosine, int8 and CSR mat-vec), ``_fastgrnn.pxi`` (weight matrices and
the cell), ``_scoring.pxi`` (feature weights, candidate columns, the feature and scoring kernels) and
``_routing.pxi`` (the routing pass and its results) and ``_query.pxi`` (the query router's pass).
"""

cimport numpy as cnp
from libc.float cimport FLT_MAX
from libc.math cimport INFINITY, isfinite, isnan, nextafterf
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t
from libc.string cimport memcpy

from tinydancer cimport _ckernels as ck

import numpy as np

from tinydancer import checks
from tinydancer.errors import ConfigError, InvalidInputError, ModelError

cnp.import_array()


cdef extern from "Python.h":
    ctypedef struct PyThreadState:
        pass
    PyThreadState *PyEval_SaveThread()
    void PyEval_RestoreThread(PyThreadState *state)

cdef enum:
    # Work (in multiply-adds) above which a kernel releases the GIL; below it the release costs more than it frees.
    NOGIL_WORK = 16384
    # Exact int32 accumulation of int8 x int8 products holds up to this many terms (2^31 / 128^2 - 1).
    MAX_EXACT_TERMS = 131071

_ISA_ORDER = ("scalar", "avx2", "avx512", "neon")

MAX_DIM = ck.TD_FASTGRNN_MAX_DIM  # cap on hidden_dim, output_dim and low-rank ranks (td_kernels.h)
NUM_FEATURES = ck.TD_NUM_FEATURES  # the candidate features of the routing pass

include "_arguments.pxi"
include "_dispatch.pxi"
include "_linalg.pxi"
include "_fastgrnn.pxi"
include "_scoring.pxi"
include "_routing.pxi"
include "_query.pxi"
