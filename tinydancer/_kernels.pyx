# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, nonecheck=False
# cython: initializedcheck=False, embedsignature=True
"""Validated Python wrappers over the C kernels of ``csrc/``.

Arguments are checked with the GIL held: a NumPy array that is already C-contiguous, aligned and of the
kernel's dtype goes straight to C (about 15 ns of checks); anything else (lists, other dtypes, strided,
unaligned, byte-swapped or read-only views) is converted once, or rejected with an
:class:`~tinydancer.errors.InvalidInputError` that names the argument. The kernels run without the GIL
when the work is large enough for releasing it to pay off.
"""

cimport numpy as cnp
from libc.math cimport isfinite, isnan, sqrt
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from tinydancer cimport _ckernels as ck

import time

import numpy as np

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

# ---------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------


cdef list _names(unsigned mask):
    return [name for name in _ISA_ORDER if mask & ck.td_isa_from_name(name.encode())]


def available_isas():
    """The ISAs this CPU can run and this build contains, slowest first (``"scalar"`` is always there)."""
    return _names(ck.td_isa_usable())


def compiled_isas():
    """The ISAs compiled into this build, whether or not this CPU can run them."""
    return _names(ck.td_isa_compiled())


def detected_isas():
    """The ISAs this CPU and operating system support, whether or not this build contains them."""
    return _names(ck.td_isa_detected())


def best_isa():
    """The fastest ISA available here: the one selected at import unless ``TINYDANCER_ISA`` says otherwise."""
    return ck.td_isa_name(ck.td_isa_best()).decode()


def active_isa():
    """The ISA the kernels run now."""
    return ck.td_isa_name(ck.td_isa_active()).decode()


def set_isa(name):
    """Make every kernel run ``name`` (``"scalar"``, ``"avx2"``, ``"avx512"`` or ``"neon"``).

    A hook for tests and benchmarks: do not call it while other threads are running kernels.

    Raises:
        ConfigError: ``name`` is not an ISA, or this CPU or build cannot run it.
    """
    if not isinstance(name, str):
        raise ConfigError(f"ISA name must be a string, not {type(name).__name__}")
    cdef unsigned isa = ck.td_isa_from_name(name.lower().encode())
    if isa == 0:
        raise ConfigError(f"unknown ISA {name!r}; known: {', '.join(_ISA_ORDER)}")
    if ck.td_isa_select(isa) != 0:
        raise ConfigError(
            f"ISA {name!r} is not available here (available: {', '.join(available_isas())})"
        )


# ---------------------------------------------------------------------------------------------------------
# Argument checking
# ---------------------------------------------------------------------------------------------------------

cdef inline bint _ready(object a, int typenum, int ndim) noexcept:
    """True when ``a`` can go to C as it is: an exact ndarray, right dtype and rank, C-contiguous, aligned."""
    if not cnp.PyArray_CheckExact(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_NDIM(arr) == ndim
            and cnp.PyArray_ISCARRAY_RO(arr) and cnp.PyArray_ISNOTSWAPPED(arr))


_KIND_NAMES = {
    cnp.NPY_FLOAT32: "float32",
    cnp.NPY_FLOAT64: "float64",
    cnp.NPY_INT8: "int8",
    cnp.NPY_INT32: "int32",
    cnp.NPY_INT64: "int64",
}
_INT_RANGES = {
    cnp.NPY_INT8: (-128, 127),
    cnp.NPY_INT32: (-2147483648, 2147483647),
    cnp.NPY_INT64: (-9223372036854775808, 9223372036854775807),
}


cdef cnp.ndarray _convert(object a, str name, int typenum, int ndim):
    """Slow path of :func:`_arr`: read ``a`` as an array of ``typenum`` and rank ``ndim``, or raise."""
    if a is None:
        raise InvalidInputError(f"{name} is None; expected a {ndim}-D array")
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} cannot be read as an array: {exc}") from None
    target = _KIND_NAMES[typenum]
    kind = arr.dtype.kind
    if arr.ndim != ndim:
        raise InvalidInputError(f"{name} must be a {ndim}-D array, got shape {arr.shape}")
    if typenum == cnp.NPY_FLOAT32 or typenum == cnp.NPY_FLOAT64:
        if kind not in "fiu":
            raise InvalidInputError(f"{name} must hold real numbers ({target}), got dtype {arr.dtype}")
    else:
        if kind not in "iub" and not (arr.size == 0 and kind == "f"):  # np.array([]) is float64
            raise InvalidInputError(f"{name} must hold integers ({target}), got dtype {arr.dtype}")
        if arr.size and kind != "b" and not np.can_cast(arr.dtype, np.dtype(target)):
            lo, hi = _INT_RANGES[typenum]
            if int(arr.min()) < lo or int(arr.max()) > hi:
                raise InvalidInputError(f"{name} holds values outside the {target} range [{lo}, {hi}]")
    with np.errstate(over="ignore", invalid="ignore"):  # float64 -> float32 overflow is caught as Inf later
        return <cnp.ndarray>np.require(arr, dtype=np.dtype(target), requirements=["C", "A"])


cdef inline cnp.ndarray _arr(object a, str name, int typenum, int ndim):
    """``a`` as a C-contiguous, aligned, native-order array of ``typenum`` and rank ``ndim``, or raise."""
    if _ready(a, typenum, ndim):
        return <cnp.ndarray>a
    return _convert(a, name, typenum, ndim)


cdef inline void *_release(bint big) noexcept:
    """Release the GIL when the coming kernel call is big enough to be worth it (pair with _reacquire)."""
    return <void *>PyEval_SaveThread() if big else NULL


cdef inline void _reacquire(void *state) noexcept:
    if state != NULL:
        PyEval_RestoreThread(<PyThreadState *>state)


cdef inline Py_ssize_t _dim(cnp.ndarray a, int axis) noexcept:
    return cnp.PyArray_DIM(a, axis)


cdef inline Py_ssize_t _first_nonfinite_f32(const float *p, Py_ssize_t n) noexcept nogil:
    """Index of the first NaN or Inf, or -1."""
    cdef size_t i = ck.td_find_nonfinite_f32(p, <size_t>n)
    return -1 if i == <size_t>n else <Py_ssize_t>i


cdef inline Py_ssize_t _first_nonfinite_f64(const double *p, Py_ssize_t n) noexcept nogil:
    cdef size_t i = ck.td_find_nonfinite_f64(p, <size_t>n)
    return -1 if i == <size_t>n else <Py_ssize_t>i


cdef inline const float *_f32p(cnp.ndarray a) noexcept:
    return <const float *>cnp.PyArray_DATA(a)


cdef inline float *_out_f32(cnp.ndarray a) noexcept:
    return <float *>cnp.PyArray_DATA(a)


cdef int _require_finite(cnp.ndarray a, str name) except -1:
    """Raise if a float32 or float64 array holds NaN or Inf, naming the first offending element."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a), bad
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        bad = _first_nonfinite_f32(_f32p(a), n)
    else:
        bad = _first_nonfinite_f64(<const double *>cnp.PyArray_DATA(a), n)
    if bad >= 0:
        where = np.unravel_index(bad, (<object>a).shape)
        index = ", ".join(str(int(i)) for i in where)
        raise InvalidInputError(f"{name} holds a non-finite value ({float(a.flat[bad])}) at [{index}]")
    return 0


cdef int _require_norms(cnp.ndarray a, str name) except -1:
    """Raise unless every value of a float32 vector is finite and >= 0."""
    cdef const float *p = _f32p(a)
    cdef Py_ssize_t i, n = cnp.PyArray_SIZE(a)
    for i in range(n):
        if not (p[i] >= 0.0 and p[i] <= 3.4028234663852886e38):  # false for NaN too
            raise InvalidInputError(f"{name}[{i}] = {p[i]!r}: norms must be finite and not negative")
    return 0


cdef int _require_counts(cnp.ndarray a, str name) except -1:
    """Raise unless every value of an int64 vector is >= 0."""
    cdef const int64_t *p = <const int64_t *>cnp.PyArray_DATA(a)
    cdef Py_ssize_t i, n = cnp.PyArray_SIZE(a)
    for i in range(n):
        if p[i] < 0:
            raise InvalidInputError(f"{name}[{i}] = {p[i]} must not be negative")
    return 0


cdef int _require_finite_result(cnp.ndarray out, str what) except -1:
    """Finite inputs can still overflow float32 on the way (huge values times weights): say so."""
    cdef Py_ssize_t bad = _first_nonfinite_f32(_out_f32(out), cnp.PyArray_SIZE(out))
    if bad >= 0:
        raise InvalidInputError(f"{what} overflows float32 (at flat index {bad}); the inputs are too large")
    return 0


cdef int _require_nonempty(Py_ssize_t n, str name) except -1:
    if n == 0:
        raise InvalidInputError(f"{name} is empty")
    return 0


cdef cnp.ndarray _out_array(object out, str name, Py_ssize_t n):
    """A writable float32 vector of length ``n``: ``out`` itself when it fits, else a new array."""
    if out is None:
        return cnp.PyArray_EMPTY(1, [n], cnp.NPY_FLOAT32, 0)
    if not (_ready(out, cnp.NPY_FLOAT32, 1) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)):
        raise InvalidInputError(f"{name} must be a writable, C-contiguous 1-D float32 array")
    if _dim(<cnp.ndarray>out, 0) != n:
        raise InvalidInputError(f"{name} must have length {n}, got {_dim(<cnp.ndarray>out, 0)}")
    return <cnp.ndarray>out


# ---------------------------------------------------------------------------------------------------------
# Cosine
# ---------------------------------------------------------------------------------------------------------


def cosine(a, b):
    """Cosine similarity of two float32 vectors of the same length.

    Returns a float in [-1, 1]; 0.0 when either vector is all zeros.

    Raises:
        InvalidInputError: an argument is not a non-empty 1-D real vector, the lengths differ, or a value
            is NaN or infinite.
    """
    cdef cnp.ndarray x = _arr(a, "a", cnp.NPY_FLOAT32, 1)
    cdef cnp.ndarray y = _arr(b, "b", cnp.NPY_FLOAT32, 1)
    cdef Py_ssize_t n = _dim(x, 0)
    cdef double result
    if _dim(y, 0) != n:
        raise InvalidInputError(f"a and b must have the same length, got {n} and {_dim(y, 0)}")
    _require_nonempty(n, "a")
    cdef void *state = _release(n >= NOGIL_WORK)
    result = ck.td_cosine_f32(_f32p(x), _f32p(y), <size_t>n)
    _reacquire(state)
    if isnan(result):  # the kernels give NaN only for non-finite input
        _require_finite(x, "a")
        _require_finite(y, "b")
    return result


cdef int _check_batch_output(cnp.ndarray q, cnp.ndarray rows, cnp.ndarray out) except -1:
    """After a batch cosine: a NaN result comes from a non-finite query or row; name it."""
    cdef Py_ssize_t n = _dim(rows, 0), dim = _dim(rows, 1)
    cdef Py_ssize_t bad = _first_nonfinite_f32(_out_f32(out), n)
    if bad < 0:
        return 0
    _require_finite(q, "query")
    raise InvalidInputError(f"rows[{bad}] holds a non-finite value")


def cosine_batch(query, rows, row_norms=None, out=None):
    """Cosine similarity of ``query`` (D,) against each row of ``rows`` (N, D), as a float32 array (N,).

    Args:
        query: the query vector.
        rows: a row-major matrix with one candidate per row. N may be 0 (the result is then empty).
        row_norms: optional precomputed L2 norms of the rows (from :func:`l2_norms`); they are trusted,
            so only dot products are computed.
        out: optional float32 array (N,) to write into, to avoid an allocation per call.

    Raises:
        InvalidInputError: bad shapes or dtypes, NaN or Inf in any input, negative norms.
    """
    cdef cnp.ndarray q = _arr(query, "query", cnp.NPY_FLOAT32, 1)
    cdef cnp.ndarray r = _arr(rows, "rows", cnp.NPY_FLOAT32, 2)
    cdef Py_ssize_t n = _dim(r, 0), dim = _dim(q, 0)
    cdef cnp.ndarray norms = None
    cdef const float *norms_p = NULL
    _require_nonempty(dim, "query")
    if _dim(r, 1) != dim:
        raise InvalidInputError(f"rows must have {dim} columns to match query, got shape {(<object>r).shape}")
    if row_norms is not None:
        norms = _arr(row_norms, "row_norms", cnp.NPY_FLOAT32, 1)
        if _dim(norms, 0) != n:
            raise InvalidInputError(f"row_norms must have length {n} (one per row), got {_dim(norms, 0)}")
        _require_norms(norms, "row_norms")
        norms_p = _f32p(norms)
    cdef cnp.ndarray result = _out_array(out, "out", n)
    cdef void *state = _release(n * dim >= NOGIL_WORK)
    ck.td_cosine_batch_f32(_f32p(q), _f32p(r), <size_t>n, <size_t>dim, norms_p, _out_f32(result))
    _reacquire(state)
    _check_batch_output(q, r, result)
    return result


def l2_norms(rows):
    """The L2 norm of each row of a float32 matrix (N, D), as float32 (N,): the ``row_norms`` of
    :func:`cosine_batch`.

    Raises:
        InvalidInputError: not a 2-D real matrix, or NaN or Inf in it.
    """
    cdef cnp.ndarray r = _arr(rows, "rows", cnp.NPY_FLOAT32, 2)
    cdef Py_ssize_t n = _dim(r, 0), dim = _dim(r, 1)
    _require_finite(r, "rows")
    cdef cnp.ndarray result = cnp.PyArray_EMPTY(1, [n], cnp.NPY_FLOAT32, 0)
    cdef void *state = _release(n * dim >= NOGIL_WORK)
    ck.td_l2_norms_f32(_f32p(r), <size_t>n, <size_t>dim, _out_f32(result))
    _reacquire(state)
    cdef Py_ssize_t bad = _first_nonfinite_f32(_out_f32(result), n)
    if bad >= 0:
        raise InvalidInputError(f"rows[{bad}] has a norm beyond the float32 range")
    return result


# ---------------------------------------------------------------------------------------------------------
# int8 mat-vec
# ---------------------------------------------------------------------------------------------------------

cdef cnp.ndarray _row_vector(object a, str name, Py_ssize_t n, bint finite):
    cdef cnp.ndarray v = _arr(a, name, cnp.NPY_FLOAT32, 1)
    if _dim(v, 0) != n:
        raise InvalidInputError(f"{name} must have length {n}, got {_dim(v, 0)}")
    if finite:
        _require_finite(v, name)
    return v


cdef const float *_opt_bias(object bias, Py_ssize_t rows, list keep) except? NULL:
    if bias is None:
        return NULL
    cdef cnp.ndarray b = _row_vector(bias, "bias", rows, True)
    keep.append(b)
    return _f32p(b)


def int8_matvec(w, scales, x, bias=None):
    """``y = scales * (w @ x) + bias`` for int8 weights ``w`` (R, C), float32 ``scales`` (R,), float32
    ``x`` (C,) and optional float32 ``bias`` (R,). Returns float32 (R,).

    Raises:
        InvalidInputError: bad shapes or dtypes (weights must be int8 or integers within its range), NaN
            or Inf in ``scales``, ``x`` or ``bias``.
    """
    cdef cnp.ndarray W = _arr(w, "w", cnp.NPY_INT8, 2)
    cdef Py_ssize_t rows = _dim(W, 0), cols = _dim(W, 1)
    cdef cnp.ndarray s = _row_vector(scales, "scales", rows, True)
    cdef cnp.ndarray v = _row_vector(x, "x", cols, True)
    cdef list keep = []
    cdef const float *b = _opt_bias(bias, rows, keep)
    cdef cnp.ndarray y = cnp.PyArray_EMPTY(1, [rows], cnp.NPY_FLOAT32, 0)
    cdef void *state = _release(rows * cols >= NOGIL_WORK)
    ck.td_matvec_i8_f32(<const int8_t *>cnp.PyArray_DATA(W), _f32p(s), b, _f32p(v), <size_t>rows,
                        <size_t>cols, _out_f32(y))
    _reacquire(state)
    _require_finite_result(y, "the product")
    return y


def int8_matvec_int32(w, x):
    """Exact ``w @ x`` for int8 ``w`` (R, C) and int8 ``x`` (C,), accumulated in int32. Returns int32 (R,).

    Raises:
        InvalidInputError: bad shapes or dtypes, or C > 131071 (beyond that int32 could overflow).
    """
    cdef cnp.ndarray W = _arr(w, "w", cnp.NPY_INT8, 2)
    cdef Py_ssize_t rows = _dim(W, 0), cols = _dim(W, 1)
    cdef cnp.ndarray v = _arr(x, "x", cnp.NPY_INT8, 1)
    if _dim(v, 0) != cols:
        raise InvalidInputError(f"x must have length {cols} (the columns of w), got {_dim(v, 0)}")
    if cols > MAX_EXACT_TERMS:
        raise InvalidInputError(f"w has {cols} columns; exact int32 accumulation allows at most {MAX_EXACT_TERMS}")
    cdef cnp.ndarray acc = cnp.PyArray_EMPTY(1, [rows], cnp.NPY_INT32, 0)
    cdef void *state = _release(rows * cols >= NOGIL_WORK)
    ck.td_matvec_i8_i32(<const int8_t *>cnp.PyArray_DATA(W), <const int8_t *>cnp.PyArray_DATA(v),
                        <size_t>rows, <size_t>cols, <int32_t *>cnp.PyArray_DATA(acc))
    _reacquire(state)
    return acc


cdef tuple _csr(object values, object indices, object indptr, Py_ssize_t cols, int value_type):
    """Validated CSR arrays (values, indices, indptr) for a matrix with ``cols`` columns."""
    cdef cnp.ndarray v = _arr(values, "values", value_type, 1)
    cdef cnp.ndarray idx = _arr(indices, "indices", cnp.NPY_INT32, 1)
    cdef cnp.ndarray ptr = _arr(indptr, "indptr", cnp.NPY_INT32, 1)
    cdef Py_ssize_t nnz = _dim(v, 0), rows = _dim(ptr, 0) - 1
    if rows < 0:
        raise InvalidInputError("indptr is empty; it needs rows + 1 entries")
    if _dim(idx, 0) != nnz:
        raise InvalidInputError(f"indices must have one entry per value ({nnz}), got {_dim(idx, 0)}")
    if value_type == cnp.NPY_FLOAT32:
        _require_finite(v, "values")
    if ck.td_csr_check(<const int32_t *>cnp.PyArray_DATA(idx), <const int32_t *>cnp.PyArray_DATA(ptr),
                       <size_t>rows, <size_t>cols, <size_t>nnz) != 0:
        raise InvalidInputError(
            f"indices/indptr do not describe a CSR matrix of {rows} rows, {cols} columns and {nnz} values "
            "(indptr must start at 0, never decrease and end at the number of values; every index must "
            f"lie in [0, {cols}))"
        )
    return v, idx, ptr, rows


def csr_int8_matvec(values, indices, indptr, scales, x, bias=None):
    """``y = scales * (W @ x) + bias`` for a sparse int8 matrix W in CSR form (``values`` int8,
    ``indices`` and ``indptr`` int32) with R = len(indptr) - 1 rows and C = len(x) columns.
    Returns float32 (R,).

    Raises:
        InvalidInputError: bad shapes or dtypes, a malformed CSR structure, or NaN/Inf in the floats.
    """
    cdef cnp.ndarray v = _arr(x, "x", cnp.NPY_FLOAT32, 1)
    _require_finite(v, "x")
    cdef cnp.ndarray vals, idx, ptr
    cdef Py_ssize_t rows
    vals, idx, ptr, rows = _csr(values, indices, indptr, _dim(v, 0), cnp.NPY_INT8)
    cdef cnp.ndarray s = _row_vector(scales, "scales", rows, True)
    cdef list keep = []
    cdef const float *b = _opt_bias(bias, rows, keep)
    cdef cnp.ndarray y = cnp.PyArray_EMPTY(1, [rows], cnp.NPY_FLOAT32, 0)
    cdef void *state = _release(_dim(vals, 0) >= NOGIL_WORK)
    ck.td_csr_matvec_i8_f32(<const int8_t *>cnp.PyArray_DATA(vals), <const int32_t *>cnp.PyArray_DATA(idx),
                            <const int32_t *>cnp.PyArray_DATA(ptr), _f32p(s), b, _f32p(v), <size_t>rows,
                            _out_f32(y))
    _reacquire(state)
    _require_finite_result(y, "the product")
    return y


def csr_int8_matvec_int32(values, indices, indptr, x):
    """Exact ``W @ x`` for a sparse int8 CSR matrix W and an int8 vector ``x``, in int32. Returns int32 (R,).

    Raises:
        InvalidInputError: bad shapes or dtypes, a malformed CSR structure, or a row with more than
            131071 entries (int32 could overflow).
    """
    cdef cnp.ndarray v = _arr(x, "x", cnp.NPY_INT8, 1)
    cdef cnp.ndarray vals, idx, ptr
    cdef Py_ssize_t rows
    vals, idx, ptr, rows = _csr(values, indices, indptr, _dim(v, 0), cnp.NPY_INT8)
    if rows and int(np.max(np.diff(ptr))) > MAX_EXACT_TERMS:
        raise InvalidInputError(f"a row has more than {MAX_EXACT_TERMS} entries; int32 could overflow")
    cdef cnp.ndarray acc = cnp.PyArray_EMPTY(1, [rows], cnp.NPY_INT32, 0)
    cdef void *state = _release(_dim(vals, 0) >= NOGIL_WORK)
    ck.td_csr_matvec_i8_i32(<const int8_t *>cnp.PyArray_DATA(vals), <const int32_t *>cnp.PyArray_DATA(idx),
                            <const int32_t *>cnp.PyArray_DATA(ptr), <const int8_t *>cnp.PyArray_DATA(v),
                            <size_t>rows, <int32_t *>cnp.PyArray_DATA(acc))
    _reacquire(state)
    return acc


def csr_matvec(values, indices, indptr, x, bias=None):
    """``y = W @ x + bias`` for a sparse float32 CSR matrix W. Returns float32 (R,).

    Raises:
        InvalidInputError: bad shapes or dtypes, a malformed CSR structure, or NaN/Inf anywhere.
    """
    cdef cnp.ndarray v = _arr(x, "x", cnp.NPY_FLOAT32, 1)
    _require_finite(v, "x")
    cdef cnp.ndarray vals, idx, ptr
    cdef Py_ssize_t rows
    vals, idx, ptr, rows = _csr(values, indices, indptr, _dim(v, 0), cnp.NPY_FLOAT32)
    cdef list keep = []
    cdef const float *b = _opt_bias(bias, rows, keep)
    cdef cnp.ndarray y = cnp.PyArray_EMPTY(1, [rows], cnp.NPY_FLOAT32, 0)
    cdef void *state = _release(_dim(vals, 0) >= NOGIL_WORK)
    ck.td_csr_matvec_f32(_f32p(vals), <const int32_t *>cnp.PyArray_DATA(idx),
                         <const int32_t *>cnp.PyArray_DATA(ptr), b, _f32p(v), <size_t>rows, _out_f32(y))
    _reacquire(state)
    _require_finite_result(y, "the product")
    return y


# ---------------------------------------------------------------------------------------------------------
# FastGRNN
# ---------------------------------------------------------------------------------------------------------

cdef cnp.ndarray _frozen(cnp.ndarray a):
    """A private, read-only copy: bound weights cannot change under a running kernel."""
    cdef cnp.ndarray c = np.array(a, copy=True, order="C")
    c.setflags(write=False)
    return c


cdef class KernelMatrix:
    """A weight matrix bound in the layout the FastGRNN kernels read: dense float32, low-rank float32,
    dense int8 with per-row scales, or sparse (CSR) int8 or float32.

    Build one with the class methods :meth:`dense`, :meth:`low_rank`, :meth:`int8`, :meth:`sparse_int8`
    or :meth:`sparse`. The arrays are copied and frozen, so the matrix is immutable and thread-safe.
    """

    cdef ck.td_matrix m
    cdef readonly str kind
    cdef tuple _arrays

    def __init__(self):
        raise TypeError("use KernelMatrix.dense, .low_rank, .int8, .sparse_int8 or .sparse")

    @staticmethod
    cdef KernelMatrix _new(str kind, Py_ssize_t rows, Py_ssize_t cols, tuple arrays):
        cdef KernelMatrix self = KernelMatrix.__new__(KernelMatrix)
        if rows <= 0 or cols <= 0:
            raise InvalidInputError(f"a weight matrix needs at least one row and column, got ({rows}, {cols})")
        if rows > 0x7FFFFFFF or cols > 0x7FFFFFFF:
            raise InvalidInputError(f"matrix shape ({rows}, {cols}) is too large")
        self.kind = kind
        self._arrays = arrays
        self.m.rows = <int32_t>rows
        self.m.cols = <int32_t>cols
        self.m.rank = 0
        self.m.f32 = NULL
        self.m.f32_right = NULL
        self.m.i8 = NULL
        self.m.scales = NULL
        self.m.indices = NULL
        self.m.indptr = NULL
        return self

    @staticmethod
    def dense(a):
        """A dense float32 matrix (rows, cols)."""
        cdef cnp.ndarray A = _arr(a, "matrix", cnp.NPY_FLOAT32, 2)
        _require_finite(A, "matrix")
        cdef cnp.ndarray cm = _frozen(np.ascontiguousarray(A.T))  # column-major for the kernels
        cdef KernelMatrix self = KernelMatrix._new("dense", _dim(A, 0), _dim(A, 1), (cm,))
        self.m.kind = ck.TD_MATRIX_DENSE_F32
        self.m.f32 = _f32p(cm)
        return self

    @staticmethod
    def low_rank(left, right):
        """The product ``left @ right`` of float32 (rows, rank) and (rank, cols), kept factored."""
        cdef cnp.ndarray L = _arr(left, "left", cnp.NPY_FLOAT32, 2)
        cdef cnp.ndarray R = _arr(right, "right", cnp.NPY_FLOAT32, 2)
        _require_finite(L, "left")
        _require_finite(R, "right")
        cdef Py_ssize_t rank = _dim(L, 1)
        if _dim(R, 0) != rank:
            raise InvalidInputError(f"left is {(<object>L).shape} and right is {(<object>R).shape}: the ranks differ")
        if rank < 1 or rank > ck.TD_FASTGRNN_MAX_DIM:
            raise InvalidInputError(f"rank must lie in [1, {ck.TD_FASTGRNN_MAX_DIM}], got {rank}")
        cdef cnp.ndarray lc = _frozen(np.ascontiguousarray(L.T))
        cdef cnp.ndarray rc = _frozen(np.ascontiguousarray(R.T))
        cdef KernelMatrix self = KernelMatrix._new("low_rank", _dim(L, 0), _dim(R, 1), (lc, rc))
        self.m.kind = ck.TD_MATRIX_LOWRANK_F32
        self.m.rank = <int32_t>rank
        self.m.f32 = _f32p(lc)
        self.m.f32_right = _f32p(rc)
        return self

    @staticmethod
    def int8(values, scales):
        """A dense int8 matrix (rows, cols) whose element (i, j) is ``scales[i] * values[i, j]``."""
        cdef cnp.ndarray V = _arr(values, "values", cnp.NPY_INT8, 2)
        cdef cnp.ndarray s = _frozen(_row_vector(scales, "scales", _dim(V, 0), True))
        cdef cnp.ndarray cm = _frozen(np.ascontiguousarray(V.T))
        cdef KernelMatrix self = KernelMatrix._new("int8", _dim(V, 0), _dim(V, 1), (cm, s))
        self.m.kind = ck.TD_MATRIX_DENSE_I8
        self.m.i8 = <const int8_t *>cnp.PyArray_DATA(cm)
        self.m.scales = _f32p(s)
        return self

    @staticmethod
    def sparse_int8(values, indices, indptr, scales, shape):
        """A sparse int8 matrix in CSR form; element = ``scales[row] * value``. ``shape`` = (rows, cols)."""
        rows, cols = _shape2(shape)
        vals, idx, ptr, n = _csr(values, indices, indptr, cols, cnp.NPY_INT8)
        if n != rows:
            raise InvalidInputError(f"indptr describes {n} rows but shape says {rows}")
        cdef cnp.ndarray s = _frozen(_row_vector(scales, "scales", rows, True))
        vals, idx, ptr = _frozen(vals), _frozen(idx), _frozen(ptr)
        cdef KernelMatrix self = KernelMatrix._new("sparse_int8", rows, cols, (vals, idx, ptr, s))
        self.m.kind = ck.TD_MATRIX_SPARSE_I8
        self.m.i8 = <const int8_t *>cnp.PyArray_DATA(vals)
        self.m.indices = <const int32_t *>cnp.PyArray_DATA(idx)
        self.m.indptr = <const int32_t *>cnp.PyArray_DATA(ptr)
        self.m.scales = _f32p(s)
        return self

    @staticmethod
    def sparse(values, indices, indptr, shape):
        """A sparse float32 matrix in CSR form. ``shape`` = (rows, cols)."""
        rows, cols = _shape2(shape)
        vals, idx, ptr, n = _csr(values, indices, indptr, cols, cnp.NPY_FLOAT32)
        if n != rows:
            raise InvalidInputError(f"indptr describes {n} rows but shape says {rows}")
        vals, idx, ptr = _frozen(vals), _frozen(idx), _frozen(ptr)
        cdef KernelMatrix self = KernelMatrix._new("sparse", rows, cols, (vals, idx, ptr))
        self.m.kind = ck.TD_MATRIX_SPARSE_F32
        self.m.f32 = _f32p(vals)
        self.m.indices = <const int32_t *>cnp.PyArray_DATA(idx)
        self.m.indptr = <const int32_t *>cnp.PyArray_DATA(ptr)
        return self

    @property
    def shape(self):
        """(rows, cols)."""
        return (self.m.rows, self.m.cols)

    @property
    def rank(self):
        """The inner dimension of a low-rank matrix; None for the other kinds."""
        if self.m.kind == ck.TD_MATRIX_LOWRANK_F32:
            return int(self.m.rank)
        return None

    @property
    def nnz(self):
        """Stored values: rows * cols when dense, the CSR entries when sparse, rank * (rows + cols) when low-rank."""
        if self.m.kind in (ck.TD_MATRIX_SPARSE_I8, ck.TD_MATRIX_SPARSE_F32):
            return int(self.m.indptr[self.m.rows])
        if self.m.kind == ck.TD_MATRIX_LOWRANK_F32:
            return int(self.m.rank) * (self.m.rows + self.m.cols)
        return int(self.m.rows) * self.m.cols

    @property
    def nbytes(self):
        """Bytes of the parameters as stored: values, indices, row pointers and scales."""
        return int(sum(a.nbytes for a in self._arrays))

    def arrays(self):
        """The stored arrays (read-only), in the order the constructor took them; dense forms transposed
        back to (rows, cols)."""
        if self.m.kind in (ck.TD_MATRIX_DENSE_F32, ck.TD_MATRIX_DENSE_I8, ck.TD_MATRIX_LOWRANK_F32):
            return tuple(a.T if a.ndim == 2 else a for a in self._arrays)
        return self._arrays

    def to_dense(self):
        """The matrix as a dense float32 (rows, cols) array, with scales applied and factors multiplied."""
        rows, cols = self.shape
        if self.m.kind == ck.TD_MATRIX_DENSE_F32:
            return np.array(self._arrays[0].T, dtype=np.float32)
        if self.m.kind == ck.TD_MATRIX_LOWRANK_F32:
            return (self._arrays[0].T.astype(np.float64) @ self._arrays[1].T.astype(np.float64)).astype(np.float32)
        if self.m.kind == ck.TD_MATRIX_DENSE_I8:
            return (self._arrays[0].T.astype(np.float32) * self._arrays[1][:, None]).astype(np.float32)
        out = np.zeros((rows, cols), dtype=np.float32)
        vals, idx, ptr = self._arrays[0], self._arrays[1], self._arrays[2]
        row_of = np.repeat(np.arange(rows), np.diff(ptr))
        scale = self._arrays[3][row_of] if self.m.kind == ck.TD_MATRIX_SPARSE_I8 else 1.0
        out[row_of, idx] = vals.astype(np.float32) * scale
        return out

    def __repr__(self):
        return f"KernelMatrix.{self.kind}(shape={self.shape}, nbytes={self.nbytes})"


cdef tuple _shape2(object shape):
    try:
        rows, cols = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InvalidInputError(f"shape must be a pair of integers (rows, cols), got {shape!r}") from None
    if rows <= 0 or cols <= 0:
        raise InvalidInputError(f"shape must be positive, got {shape!r}")
    return rows, cols


cdef KernelMatrix _as_matrix(object m, str name):
    if isinstance(m, KernelMatrix):
        return <KernelMatrix>m
    return KernelMatrix.dense(_arr(m, name, cnp.NPY_FLOAT32, 2))


cdef class FastGRNNCell:
    """FastGRNN weights bound once for repeated inference (Kusupati et al., NeurIPS 2018)::

        z_t  = sigmoid(W x_t + U h_{t-1} + b_z)
        h~_t = tanh(W x_t + U h_{t-1} + b_h)
        h_t  = z_t * h_{t-1} + (sigmoid(zeta) * (1 - z_t) + sigmoid(nu)) * h~_t,   h_0 = 0
        p    = sigmoid(w_out . h_T + b_out)      (softmax over outputs when output_dim > 1)

    Args:
        W: (hidden, input) weights: a float32 array or a :class:`KernelMatrix` of any kind.
        U: (hidden, hidden) weights, likewise.
        b_z, b_h: (hidden,) biases.
        w_out: (output_dim, hidden) or (hidden,) output weights; b_out: (output_dim,) or a scalar.
        zeta, nu: the gate scalars before the sigmoid.
        timesteps: T, the number of input steps per example.

    All arrays are copied and frozen: the cell is immutable and may be shared between threads.
    """

    cdef ck.td_fastgrnn m
    cdef readonly KernelMatrix W
    cdef readonly KernelMatrix U
    cdef readonly object b_z
    cdef readonly object b_h
    cdef readonly object w_out
    cdef readonly object b_out
    cdef Py_ssize_t _step  # floats per example: timesteps * input_dim

    def __init__(self, W, U, b_z, b_h, w_out, b_out, double zeta, double nu, int timesteps=1):
        self.W = _as_matrix(W, "W")
        self.U = _as_matrix(U, "U")
        hidden, inputs = self.W.shape
        if self.U.shape != (hidden, hidden):
            raise InvalidInputError(f"U must be ({hidden}, {hidden}) to match W {self.W.shape}, got {self.U.shape}")
        if hidden > ck.TD_FASTGRNN_MAX_DIM:
            raise InvalidInputError(f"hidden_dim {hidden} exceeds the limit of {ck.TD_FASTGRNN_MAX_DIM}")
        if timesteps < 1:
            raise InvalidInputError(f"timesteps must be at least 1, got {timesteps}")
        if not (isfinite(zeta) and isfinite(nu)):
            raise InvalidInputError(f"zeta and nu must be finite, got {zeta} and {nu}")
        self.b_z = _frozen(_row_vector(b_z, "b_z", hidden, True))
        self.b_h = _frozen(_row_vector(b_h, "b_h", hidden, True))
        wo = np.asarray(w_out) if w_out is not None else None
        if wo is not None and wo.ndim == 1:
            wo = wo.reshape(1, -1)
        cdef cnp.ndarray wout = _arr(wo, "w_out", cnp.NPY_FLOAT32, 2)
        if _dim(wout, 1) != hidden:
            raise InvalidInputError(f"w_out must have {hidden} columns (hidden_dim), got shape {(<object>wout).shape}")
        outputs = _dim(wout, 0)
        if outputs > ck.TD_FASTGRNN_MAX_DIM:
            raise InvalidInputError(f"output_dim {outputs} exceeds the limit of {ck.TD_FASTGRNN_MAX_DIM}")
        _require_finite(wout, "w_out")
        self.w_out = _frozen(wout)
        bo = np.atleast_1d(np.asarray(b_out)) if b_out is not None else None
        self.b_out = _frozen(_row_vector(bo, "b_out", outputs, True))
        self.m.input_dim = <int32_t>inputs
        self.m.hidden_dim = <int32_t>hidden
        self.m.output_dim = <int32_t>outputs
        self.m.timesteps = timesteps
        self.m.w = self.W.m
        self.m.u = self.U.m
        self.m.b_z = _f32p(self.b_z)
        self.m.b_h = _f32p(self.b_h)
        self.m.w_out = _f32p(self.w_out)
        self.m.b_out = _f32p(self.b_out)
        self.m.zeta = <float>zeta
        self.m.nu = <float>nu
        self._step = <Py_ssize_t>timesteps * inputs
        if ck.td_fastgrnn_check(&self.m) != 0:
            raise InvalidInputError("the FastGRNN weights are inconsistent")

    @property
    def input_dim(self):
        return self.m.input_dim

    @property
    def hidden_dim(self):
        return self.m.hidden_dim

    @property
    def output_dim(self):
        return self.m.output_dim

    @property
    def timesteps(self):
        return self.m.timesteps

    @property
    def zeta(self):
        return self.m.zeta

    @property
    def nu(self):
        return self.m.nu

    @property
    def nbytes(self):
        """Bytes of every parameter as stored."""
        return (self.W.nbytes + self.U.nbytes + self.b_z.nbytes + self.b_h.nbytes + self.w_out.nbytes
                + self.b_out.nbytes + 8)

    cdef cnp.ndarray _input(self, object x, str name, int batch_axes):
        """``x`` as C-contiguous float32 of shape (..., T, I), or (..., I) when T is 1; checked finite."""
        cdef int ndim = batch_axes + (1 if self.m.timesteps == 1 else 2)
        cdef cnp.ndarray a
        if _ready(x, cnp.NPY_FLOAT32, ndim):  # the hot path: checked without building Python objects
            a = <cnp.ndarray>x
            if _dim(a, ndim - 1) == self.m.input_dim and (self.m.timesteps == 1 or _dim(a, ndim - 2) == self.m.timesteps):
                _require_finite(a, name)
                return a
        return self._input_slow(x, name, batch_axes)

    cdef cnp.ndarray _input_slow(self, object x, str name, int batch_axes):
        cdef int ndim = batch_axes + (1 if self.m.timesteps == 1 else 2)
        arr = np.asarray(x) if x is not None else None
        # (..., 1, I) is accepted for T = 1 too
        want = ndim + 1 if (self.m.timesteps == 1 and arr is not None and arr.ndim == ndim + 1) else ndim
        cdef cnp.ndarray a = _convert(x, name, cnp.NPY_FLOAT32, want)
        shape = (<object>a).shape
        if a.ndim - batch_axes == 2:
            expected = (int(self.m.timesteps), int(self.m.input_dim))
        else:
            expected = (int(self.m.input_dim),)
        if shape[batch_axes:] != expected:
            lead = "(batch, " if batch_axes else "("
            raise InvalidInputError(
                f"{name} must have shape {lead}{', '.join(map(str, expected))}), got {shape}"
            )
        _require_finite(a, name)
        return a

    def forward(self, x):
        """The output for one example ``x`` of shape (input_dim,) when T = 1, or (T, input_dim).

        Returns a float (the probability) when output_dim is 1, else a float32 array of output_dim
        probabilities.

        Raises:
            InvalidInputError: wrong shape or dtype, NaN or Inf in ``x``.
        """
        cdef cnp.ndarray a = self._input(x, "x", 0)
        cdef float out[ck.TD_FASTGRNN_MAX_DIM]
        ck.td_fastgrnn_forward(&self.m, _f32p(a), out)
        if _first_nonfinite_f32(out, self.m.output_dim) >= 0:
            raise InvalidInputError("x overflows float32 inside the model; the inputs are too large")
        if self.m.output_dim == 1:
            return out[0]
        cdef cnp.ndarray result = cnp.PyArray_EMPTY(1, [self.m.output_dim], cnp.NPY_FLOAT32, 0)
        memcpy(cnp.PyArray_DATA(result), out, self.m.output_dim * sizeof(float))
        return result

    def forward_batch(self, X, out=None):
        """Outputs for a batch ``X`` of shape (B, input_dim) when T = 1, or (B, T, input_dim).

        Returns float32 (B,) when output_dim is 1, else (B, output_dim). ``out`` may be a preallocated
        float32 array of that shape (B,) for output_dim 1. B may be 0.

        Raises:
            InvalidInputError: wrong shape or dtype, NaN or Inf in ``X``.
        """
        cdef cnp.ndarray a = self._input(X, "X", 1)
        cdef Py_ssize_t batch = _dim(a, 0)
        cdef cnp.ndarray result
        if self.m.output_dim == 1:
            result = _out_array(out, "out", batch)
        elif out is not None:
            raise InvalidInputError("out is only supported for output_dim 1")
        else:
            result = cnp.PyArray_EMPTY(2, [batch, self.m.output_dim], cnp.NPY_FLOAT32, 0)
        cdef void *state = _release(batch * self.m.hidden_dim * (self.m.hidden_dim + self.m.input_dim) >= NOGIL_WORK)
        ck.td_fastgrnn_forward_batch(&self.m, _f32p(a), <size_t>batch, _out_f32(result))
        _reacquire(state)
        _require_finite_result(result, "X inside the model")
        return result

    def __repr__(self):
        return (f"FastGRNNCell(input_dim={self.m.input_dim}, hidden_dim={self.m.hidden_dim}, "
                f"output_dim={self.m.output_dim}, timesteps={self.m.timesteps}, W={self.W.kind}, U={self.U.kind})")


# ---------------------------------------------------------------------------------------------------------
# Fused candidate scoring
# ---------------------------------------------------------------------------------------------------------

cdef cnp.ndarray _per_candidate(object a, str name, Py_ssize_t n, int typenum):
    cdef cnp.ndarray v = _arr(a, name, typenum, 1)
    if _dim(v, 0) != n:
        raise InvalidInputError(f"{name} must have one entry per candidate ({n}), got {_dim(v, 0)}")
    return v


cdef int _require_unit_interval(cnp.ndarray v, str name) except -1:
    cdef const float *p = _f32p(v)
    cdef Py_ssize_t i, n = _dim(v, 0)
    for i in range(n):
        if not (p[i] >= 0.0 and p[i] <= 1.0):  # also false for NaN
            raise InvalidInputError(f"{name}[{i}] = {p[i]!r} is outside [0, 1]")
    return 0


cdef class FeatureWeights:
    """The five feature weights and the recency decay, validated once (the routers keep one).

    Args:
        weights: (similarity, recency, frequency, success, metadata) weights, finite.
        recency_decay: per second, finite and >= 0.
    """

    cdef ck.td_feature_config cfg

    def __init__(self, weights=(0.4, 0.2, 0.15, 0.15, 0.1), double recency_decay=0.001):
        try:
            w = [float(v) for v in weights]
        except (TypeError, ValueError):
            raise InvalidInputError(f"weights must be five numbers, got {weights!r}") from None
        if len(w) != ck.TD_NUM_FEATURES or not all(isfinite(v) for v in w):
            raise InvalidInputError(f"weights must be five finite numbers, got {weights!r}")
        if not (isfinite(recency_decay) and recency_decay >= 0.0):
            raise InvalidInputError(f"recency_decay must be finite and >= 0, got {recency_decay}")
        self.cfg.similarity_weight = w[0]
        self.cfg.recency_weight = w[1]
        self.cfg.frequency_weight = w[2]
        self.cfg.success_weight = w[3]
        self.cfg.metadata_weight = w[4]
        self.cfg.recency_decay = recency_decay

    @property
    def weights(self):
        c = self.cfg
        return (c.similarity_weight, c.recency_weight, c.frequency_weight, c.success_weight, c.metadata_weight)

    @property
    def recency_decay(self):
        return self.cfg.recency_decay

    def __repr__(self):
        return f"FeatureWeights(weights={self.weights}, recency_decay={self.cfg.recency_decay})"


cdef FeatureWeights _DEFAULT_WEIGHTS = FeatureWeights()


cdef FeatureWeights _as_weights(object weights, double recency_decay):
    """A FeatureWeights as given, or built from five numbers (None: the defaults) and recency_decay."""
    if isinstance(weights, FeatureWeights):
        return <FeatureWeights>weights
    if weights is None:
        if recency_decay == _DEFAULT_WEIGHTS.cfg.recency_decay:
            return _DEFAULT_WEIGHTS
        return FeatureWeights(_DEFAULT_WEIGHTS.weights, recency_decay)
    return FeatureWeights(weights, recency_decay)


cdef class CandidateArrays:
    """Candidate columns checked once, for the kernels (a :class:`~tinydancer.types.CandidateBatch` keeps
    one for repeated routing): embeddings (N, D) float32, created_at (N,) float64 finite, access_count
    (N,) int64 >= 0, success_rate (N,) float32 in [0, 1], and optionally the row norms (without them the
    kernels compute each norm on the way).

    Arrays already in kernel form are used as given, not copied: do not change them afterwards.

    Raises:
        InvalidInputError: a bad shape, dtype or value, naming the argument.
    """

    cdef readonly cnp.ndarray embeddings, created_at, access_count, success_rate
    cdef readonly object norms
    cdef readonly Py_ssize_t n, dim
    cdef const float *norms_p

    def __init__(self, embeddings, created_at, access_count, success_rate, norms=None):
        self.embeddings = _arr(embeddings, "embeddings", cnp.NPY_FLOAT32, 2)
        self.n = _dim(self.embeddings, 0)
        self.dim = _dim(self.embeddings, 1)
        self.created_at = _per_candidate(created_at, "created_at", self.n, cnp.NPY_FLOAT64)
        _require_finite(self.created_at, "created_at")
        self.access_count = _per_candidate(access_count, "access_count", self.n, cnp.NPY_INT64)
        _require_counts(self.access_count, "access_count")
        self.success_rate = _per_candidate(success_rate, "success_rate", self.n, cnp.NPY_FLOAT32)
        _require_unit_interval(self.success_rate, "success_rate")
        self.norms_p = NULL
        if norms is not None:
            self.norms = _per_candidate(norms, "embedding_norms", self.n, cnp.NPY_FLOAT32)
            _require_norms(<cnp.ndarray>self.norms, "embedding_norms")
            self.norms_p = _f32p(<cnp.ndarray>self.norms)


cdef class _Candidates:
    """A query, its candidates, their metadata overlap and the time, checked (internal)."""

    cdef cnp.ndarray q, overlap
    cdef CandidateArrays c
    cdef const float *overlap_p
    cdef Py_ssize_t n, dim
    cdef double now

    cdef int load(self, object query, object embeddings, object created_at, object access_count,
                  object success_rate, double now, object metadata_overlap, object embedding_norms) except -1:
        self.q = _arr(query, "query", cnp.NPY_FLOAT32, 1)
        self.dim = _dim(self.q, 0)
        _require_nonempty(self.dim, "query")
        if isinstance(embeddings, CandidateArrays):
            self.c = <CandidateArrays>embeddings
        else:
            self.c = CandidateArrays(embeddings, created_at, access_count, success_rate, embedding_norms)
        self.n = self.c.n
        if self.c.dim != self.dim:
            raise InvalidInputError(f"embeddings must have {self.dim} columns to match query, got shape "
                                    f"{(<object>self.c.embeddings).shape}")
        self.overlap_p = NULL
        if metadata_overlap is not None:
            self.overlap = _per_candidate(metadata_overlap, "metadata_overlap", self.n, cnp.NPY_FLOAT32)
            _require_unit_interval(self.overlap, "metadata_overlap")
            self.overlap_p = _f32p(self.overlap)
        if not isfinite(now):
            raise InvalidInputError(f"now must be finite, got {now}")
        self.now = now
        return 0

    cdef int explain_nan(self) except -1:
        """A NaN score or feature comes from a non-finite query or embedding: name it."""
        _require_finite(self.q, "query")
        _require_finite(self.c.embeddings, "embeddings")
        return 0


cdef int _check_scorer(FastGRNNCell model) except -1:
    if model.m.input_dim != ck.TD_NUM_FEATURES or model.m.timesteps != 1 or model.m.output_dim != 1:
        raise InvalidInputError(
            f"model must have input_dim {ck.TD_NUM_FEATURES}, timesteps 1 and output_dim 1, got {model!r}")
    return 0


def candidate_features(query, embeddings, created_at, access_count, success_rate, double now,
                       metadata_overlap=None, embedding_norms=None, weights=None,
                       double recency_decay=0.001, out=None):
    """The five weighted features of N candidates, as float32 (N, 5); see :func:`score_candidates`.

    ``weights`` may be a :class:`FeatureWeights` (then ``recency_decay`` is its own), five numbers, or None
    for the defaults (0.4, 0.2, 0.15, 0.15, 0.1).
    ``out`` may be a writable C-contiguous float32 (N, 5) array.

    Raises:
        InvalidInputError: any bad shape, dtype or value, naming the argument.
    """
    cdef _Candidates c = _Candidates.__new__(_Candidates)
    c.load(query, embeddings, created_at, access_count, success_rate, now, metadata_overlap, embedding_norms)
    cdef FeatureWeights fw = _as_weights(weights, recency_decay)
    cdef cnp.ndarray feats
    if out is None:
        feats = cnp.PyArray_EMPTY(2, [c.n, ck.TD_NUM_FEATURES], cnp.NPY_FLOAT32, 0)
    elif (_ready(out, cnp.NPY_FLOAT32, 2) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)
          and _dim(<cnp.ndarray>out, 0) == c.n and _dim(<cnp.ndarray>out, 1) == ck.TD_NUM_FEATURES):
        feats = <cnp.ndarray>out
    else:
        raise InvalidInputError(f"out must be a writable C-contiguous float32 array of shape ({c.n}, 5)")
    cdef void *state = _release(c.n * c.dim >= NOGIL_WORK)
    ck.td_candidate_features(&fw.cfg, _f32p(c.q), <size_t>c.dim, _f32p(c.c.embeddings), c.c.norms_p, <size_t>c.n,
                             <const double *>cnp.PyArray_DATA(c.c.created_at),
                             <const int64_t *>cnp.PyArray_DATA(c.c.access_count), _f32p(c.c.success_rate),
                             c.overlap_p, c.now, _out_f32(feats))
    _reacquire(state)
    if _first_nonfinite_f32(_out_f32(feats), c.n * ck.TD_NUM_FEATURES) >= 0:
        c.explain_nan()
    return feats


def score_candidates(FastGRNNCell model not None, query, embeddings, created_at, access_count, success_rate,
                     double now, metadata_overlap=None, embedding_norms=None, weights=None,
                     double recency_decay=0.001, features_out=None, out=None):
    """Score N candidates against a query in one call: 5 features, then the model, without the GIL.

    Features of candidate i (weighted by ``weights``)::

        similarity = cosine(query, embeddings[i])
        recency    = exp(-recency_decay * max(now - created_at[i], 0))      (seconds)
        frequency  = min(log(1 + access_count[i]) / log(1 + 10000), 1)
        success    = success_rate[i]
        metadata   = metadata_overlap[i] (0 when None)

    Args:
        model: a cell with input_dim 5, timesteps 1 and output_dim 1.
        query: (D,) float32; embeddings: (N, D) float32; created_at: (N,) float64 unix seconds;
        access_count: (N,) int64 >= 0; success_rate and metadata_overlap: (N,) float32 in [0, 1];
        now: the current time in unix seconds; embedding_norms: optional (N,) precomputed row norms.
        weights: a :class:`FeatureWeights`, or the five feature weights, or None for (0.4, 0.2, 0.15,
            0.15, 0.1); with numbers or None, recency_decay (per second, >= 0) applies.
        features_out: optional writable float32 (N, 5) array that receives the weighted features.
        out: optional writable float32 (N,) array for the scores.

    Returns:
        float32 (N,) scores in [0, 1]. N may be 0.

    Raises:
        InvalidInputError: any bad shape, dtype or value, naming the argument.
    """
    _check_scorer(model)
    cdef _Candidates c = _Candidates.__new__(_Candidates)
    c.load(query, embeddings, created_at, access_count, success_rate, now, metadata_overlap, embedding_norms)
    cdef FeatureWeights fw = _as_weights(weights, recency_decay)
    cdef float *features_p = NULL
    if features_out is not None:
        if not (_ready(features_out, cnp.NPY_FLOAT32, 2) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>features_out)
                and (<object>features_out).shape == (c.n, ck.TD_NUM_FEATURES)):
            raise InvalidInputError(f"features_out must be a writable C-contiguous float32 array of shape ({c.n}, 5)")
        features_p = _out_f32(<cnp.ndarray>features_out)
    cdef cnp.ndarray scores = _out_array(out, "out", c.n)
    cdef int rc
    cdef void *state = _release(c.n * c.dim >= NOGIL_WORK)
    rc = ck.td_score_candidates(&model.m, &fw.cfg, _f32p(c.q), <size_t>c.dim, _f32p(c.c.embeddings), c.c.norms_p,
                                <size_t>c.n, <const double *>cnp.PyArray_DATA(c.c.created_at),
                                <const int64_t *>cnp.PyArray_DATA(c.c.access_count), _f32p(c.c.success_rate),
                                c.overlap_p, c.now,
                                features_p, _out_f32(scores))
    _reacquire(state)
    if rc != 0:
        raise InvalidInputError("model does not have the shape of a candidate scorer")
    if _first_nonfinite_f32(_out_f32(scores), c.n) >= 0:  # only non-finite embeddings give NaN scores
        c.explain_nan()
    return scores


def route_candidates(FastGRNNCell model not None, query, embeddings, created_at, access_count, success_rate,
                     double now, metadata_overlap=None, embedding_norms=None, weights=None,
                     double confidence_threshold=0.85, double max_uncertainty=0.15):
    """One routing pass in C: :func:`score_candidates`, then per candidate the uncertainty
    ``clamp(1 - 2 |p - 0.5|, 0, 1)`` and ``use_lightweight = p >= confidence_threshold and uncertainty <=
    max_uncertainty``, and the rank order (highest confidence first, stable).

    Returns:
        (scores float32 (N,), uncertainty float32 (N,), lightweight bool (N,), order int32 (N,)), the first
        three in input order.

    Raises:
        InvalidInputError: bad input, naming the argument (a non-finite query or embedding included).
        ModelError: the model produced a non-finite score from finite input.
    """
    _check_scorer(model)
    cdef _Candidates c = _Candidates.__new__(_Candidates)
    c.load(query, embeddings, created_at, access_count, success_rate, now, metadata_overlap, embedding_norms)
    cdef FeatureWeights fw = _as_weights(weights, _DEFAULT_WEIGHTS.cfg.recency_decay)
    cdef Py_ssize_t n = c.n
    cdef cnp.ndarray scores = cnp.PyArray_EMPTY(1, [n], cnp.NPY_FLOAT32, 0)
    cdef cnp.ndarray uncertainty = cnp.PyArray_EMPTY(1, [n], cnp.NPY_FLOAT32, 0)
    cdef cnp.ndarray light = cnp.PyArray_EMPTY(1, [n], cnp.NPY_BOOL, 0)
    cdef cnp.ndarray order = cnp.PyArray_EMPTY(1, [n], cnp.NPY_INT32, 0)
    cdef cnp.ndarray scratch = None
    cdef int32_t *scratch_p = NULL
    if n > 32:
        scratch = cnp.PyArray_EMPTY(1, [n], cnp.NPY_INT32, 0)
        scratch_p = <int32_t *>cnp.PyArray_DATA(scratch)
    cdef int rc
    cdef void *state = _release(n * c.dim >= NOGIL_WORK)
    rc = ck.td_route_candidates(&model.m, &fw.cfg, _f32p(c.q), <size_t>c.dim, _f32p(c.c.embeddings), c.c.norms_p,
                                <size_t>n, <const double *>cnp.PyArray_DATA(c.c.created_at),
                                <const int64_t *>cnp.PyArray_DATA(c.c.access_count), _f32p(c.c.success_rate),
                                c.overlap_p, c.now,
                                <float>confidence_threshold, <float>max_uncertainty, _out_f32(scores),
                                _out_f32(uncertainty), <uint8_t *>cnp.PyArray_DATA(light),
                                <int32_t *>cnp.PyArray_DATA(order), scratch_p)
    _reacquire(state)
    if rc < 0:
        raise InvalidInputError("model does not have the shape of a candidate scorer")
    if rc > 0:
        c.explain_nan()
        raise ModelError("the model produced a non-finite score")
    return scores, uncertainty, light, order


# ---------------------------------------------------------------------------------------------------------
# Repeated routing: candidate columns validated once, a routing pass bound once
# ---------------------------------------------------------------------------------------------------------


cdef object _perf_counter_ns = time.perf_counter_ns


cdef class RouteCounters:
    """A router's request counters. They change only in C with the GIL held, which makes each update and
    each :meth:`snapshot` atomic without a lock (this module never runs without the GIL: it does not declare
    free-threading support, so free-threaded Python builds enable the GIL when they import it)."""

    cdef long long requests, candidates, lightweight, fallbacks, model_errors, rejected, invalid, reloads
    cdef long long reload_failures
    cdef double total_us

    cdef inline void routed(self, Py_ssize_t candidates, Py_ssize_t lightweight, double elapsed_us) noexcept:
        self.requests += 1
        self.candidates += candidates
        self.lightweight += lightweight
        self.total_us += elapsed_us

    def count_routed(self, Py_ssize_t candidates, Py_ssize_t lightweight, double elapsed_us):
        """One request routed by the model (:meth:`RoutePass.route` counts its own)."""
        self.routed(candidates, lightweight, elapsed_us)

    def count_fallback(self, Py_ssize_t candidates, bint rejected, bint model_error):
        """One request that fell back to the powerful model."""
        self.requests += 1
        self.candidates += candidates
        self.fallbacks += 1
        self.rejected += rejected
        self.model_errors += model_error

    def count_invalid(self):
        self.invalid += 1

    def count_reload(self):
        self.reloads += 1

    def count_reload_failure(self):
        self.reload_failures += 1

    def snapshot(self):
        """Every counter at one instant, as a dict; ``mean_route_us`` averages over requests the model routed."""
        cdef long long routed = self.requests - self.fallbacks
        return {
            "requests": self.requests, "candidates": self.candidates, "lightweight": self.lightweight,
            "fallbacks": self.fallbacks, "rejected_by_breaker": self.rejected, "model_errors": self.model_errors,
            "invalid_requests": self.invalid, "reloads": self.reloads, "reload_failures": self.reload_failures,
            "mean_route_us": self.total_us / routed if routed else 0.0,
        }


cdef class RouteResult:
    """The results of routing N candidates, the base of :class:`tinydancer.types.RoutingResponse`:
    confidence, uncertainty and the lightweight flag of each candidate in input order, and the rank order.

    :meth:`RoutePass.route` writes them into one C block and they appear as read-only NumPy arrays, each made
    on first access; :meth:`_set_arrays` stores arrays made elsewhere instead.
    """

    cdef void *block
    cdef Py_ssize_t n, light_count
    cdef object conf_a, unc_a, light_a, order_a
    cdef public object _ids, _fallback_reason, _decisions
    cdef public double _inference_time_us, _feature_time_us

    def __cinit__(self):
        self.light_count = -1

    def __dealloc__(self):
        free(self.block)

    def _set_arrays(self, confidence, uncertainty, use_lightweight, order):
        """Hold these arrays (input order; ``order`` the rank order) as the results."""
        if self.block != NULL:
            raise InvalidInputError("the results of a routing pass cannot be replaced")
        self.conf_a, self.unc_a, self.light_a, self.order_a = confidence, uncertainty, use_lightweight, order
        self.n = len(order)
        self.light_count = -1

    cdef object _view(self, int typenum, Py_ssize_t offset):
        cdef cnp.npy_intp dims[1]
        dims[0] = self.n
        cdef cnp.ndarray a = cnp.PyArray_SimpleNewFromData(1, dims, typenum, <char *>self.block + offset)
        cnp.set_array_base(a, self)
        cnp.PyArray_CLEARFLAGS(a, cnp.NPY_ARRAY_WRITEABLE)
        return a

    @property
    def _confidence(self):
        if self.conf_a is None:
            self.conf_a = self._view(cnp.NPY_FLOAT32, 0)
        return self.conf_a

    @property
    def _uncertainty(self):
        if self.unc_a is None:
            self.unc_a = self._view(cnp.NPY_FLOAT32, 4 * self.n)
        return self.unc_a

    @property
    def _order(self):
        if self.order_a is None:
            self.order_a = self._view(cnp.NPY_INT32, 8 * self.n)
        return self.order_a

    @property
    def _lightweight(self):
        if self.light_a is None:
            self.light_a = self._view(cnp.NPY_BOOL, 12 * self.n)
        return self.light_a

    @property
    def _lightweight_count(self):
        """The number of lightweight decisions (counted by the routing pass, or from the array)."""
        if self.light_count >= 0:
            return self.light_count
        return int(np.count_nonzero(self.light_a))

    def __len__(self):
        return self.n


cdef class RoutePass:
    """:func:`route_candidates` with the model, feature weights and thresholds bound once.

    Args:
        model: a candidate scorer (input_dim 5, timesteps 1, output_dim 1).
        weights: the feature weights.
        confidence_threshold, max_uncertainty: the lightweight rule.
        result_type: what :meth:`route` returns: :class:`RouteResult` or a subclass of it.
    """

    cdef readonly FastGRNNCell model
    cdef readonly FeatureWeights weights
    cdef float threshold, max_uncertainty
    cdef type result_type

    def __init__(self, FastGRNNCell model not None, FeatureWeights weights not None,
                 double confidence_threshold=0.85, double max_uncertainty=0.15, type result_type=RouteResult):
        _check_scorer(model)
        if not issubclass(result_type, RouteResult):
            raise ConfigError(f"result_type must be RouteResult or a subclass, got {result_type.__name__}")
        self.model, self.weights = model, weights
        self.threshold, self.max_uncertainty = <float>confidence_threshold, <float>max_uncertainty
        self.result_type = result_type

    cdef Py_ssize_t _run(self, _Candidates c, float *scores, float *uncertainty, uint8_t *flags, int32_t *order,
                         int32_t *scratch) except -1:
        """The routing pass over checked candidates; scratch (n int32) is needed above 32 candidates.
        Returns the number of lightweight decisions."""
        cdef int rc
        cdef Py_ssize_t i, count = 0
        cdef void *state = _release(c.n * c.dim >= NOGIL_WORK)
        rc = ck.td_route_candidates(&self.model.m, &self.weights.cfg, _f32p(c.q), <size_t>c.dim,
                                    _f32p(c.c.embeddings), c.c.norms_p, <size_t>c.n,
                                    <const double *>cnp.PyArray_DATA(c.c.created_at),
                                    <const int64_t *>cnp.PyArray_DATA(c.c.access_count),
                                    _f32p(c.c.success_rate), c.overlap_p, c.now, self.threshold,
                                    self.max_uncertainty, scores, uncertainty, flags, order, scratch)
        _reacquire(state)
        if rc > 0:
            c.explain_nan()
            raise ModelError("the model produced a non-finite score")
        for i in range(c.n):
            count += flags[i]
        return count

    def run(self, query, CandidateArrays candidates not None, double now, metadata_overlap=None):
        """Route ``candidates`` for ``query`` at time ``now``.

        Returns:
            (scores, uncertainty, lightweight, order, lightweight_count): as :func:`route_candidates`, plus
            the number of lightweight decisions.

        Raises:
            InvalidInputError: a bad query, overlap or time, naming it.
            ModelError: the model produced a non-finite score from finite input.
        """
        cdef _Candidates c = _Candidates.__new__(_Candidates)
        c.load(query, candidates, None, None, None, now, metadata_overlap, None)
        cdef Py_ssize_t n = c.n
        cdef cnp.ndarray scores = cnp.PyArray_EMPTY(1, [n], cnp.NPY_FLOAT32, 0)
        cdef cnp.ndarray uncertainty = cnp.PyArray_EMPTY(1, [n], cnp.NPY_FLOAT32, 0)
        cdef cnp.ndarray light = cnp.PyArray_EMPTY(1, [n], cnp.NPY_BOOL, 0)
        cdef cnp.ndarray order = cnp.PyArray_EMPTY(1, [n], cnp.NPY_INT32, 0)
        cdef cnp.ndarray scratch
        cdef int32_t *scratch_p = NULL
        if n > 32:
            scratch = cnp.PyArray_EMPTY(1, [n], cnp.NPY_INT32, 0)
            scratch_p = <int32_t *>cnp.PyArray_DATA(scratch)
        cdef Py_ssize_t count = self._run(c, _out_f32(scores), _out_f32(uncertainty),
                                          <uint8_t *>cnp.PyArray_DATA(light), <int32_t *>cnp.PyArray_DATA(order),
                                          scratch_p)
        return scores, uncertainty, light, order, count

    def route(self, query, CandidateArrays candidates not None, ids, double now, metadata_overlap,
              long long start_ns, double feature_time_us, RouteCounters counters not None):
        """:meth:`run`, returning a ``result_type`` and counting the request in ``counters``.

        The results live in one allocation. ``ids`` (the candidate ids, input order) and ``feature_time_us``
        are stored on the result; its ``_inference_time_us`` runs from ``start_ns`` (a
        ``time.perf_counter_ns()`` reading) to the end of the pass.

        Raises:
            InvalidInputError: a bad query, overlap or time, naming it (nothing is counted).
            ModelError: the model produced a non-finite score from finite input (nothing is counted).
        """
        cdef _Candidates c = _Candidates.__new__(_Candidates)
        c.load(query, candidates, None, None, None, now, metadata_overlap, None)
        cdef Py_ssize_t n = c.n, count
        cdef RouteResult r = <RouteResult>RouteResult.__new__(self.result_type)
        # confidence f32, uncertainty f32, order i32, flags u8; then the sort's scratch above 32 candidates
        r.block = malloc(<size_t>(n * 13 + (4 * n + 4 if n > 32 else 1)))
        if r.block == NULL:
            raise MemoryError(f"no memory for the results of {n} candidates")
        cdef char *b = <char *>r.block
        count = self._run(c, <float *>b, <float *>(b + 4 * n), <uint8_t *>(b + 12 * n), <int32_t *>(b + 8 * n),
                          <int32_t *>(b + ((13 * n + 3) & ~3)) if n > 32 else NULL)
        cdef double elapsed_us = (<long long>_perf_counter_ns() - start_ns) / 1e3
        r.n = n
        r.light_count = count
        r._ids = ids
        r._inference_time_us = elapsed_us
        r._feature_time_us = feature_time_us
        counters.routed(n, count, elapsed_us)
        return r


def gather_candidates(list candidates not None):
    """Columns from a list of :class:`~tinydancer.types.Candidate` objects, in one pass in C.

    Each candidate must have ``embedding`` (a C-contiguous float32 1-D array, all of one length),
    ``created_at`` (a finite float or int), ``access_count`` (an int >= 0, not a bool) and ``success_rate``
    (a float or int in [0, 1]).

    Returns:
        (embeddings float32 (N, D), norms float32 (N,), created_at float64 (N,), access_count int64 (N,),
        success_rate float32 (N,)).

    Raises:
        InvalidInputError: anything else (the caller falls back to a slower path that converts what it can
            and names the bad field).
    """
    cdef Py_ssize_t n = len(candidates), dim = 0, i
    if n == 0:
        raise InvalidInputError("no candidates")
    cdef object first = candidates[0].embedding
    if not _ready(first, cnp.NPY_FLOAT32, 1):
        raise InvalidInputError("candidates[0].embedding is not a float32 vector")
    dim = _dim(<cnp.ndarray>first, 0)
    if dim == 0:
        raise InvalidInputError("candidates[0].embedding is empty")
    cdef cnp.ndarray E = cnp.PyArray_EMPTY(2, [n, dim], cnp.NPY_FLOAT32, 0)
    cdef cnp.ndarray created = cnp.PyArray_EMPTY(1, [n], cnp.NPY_FLOAT64, 0)
    cdef cnp.ndarray counts = cnp.PyArray_EMPTY(1, [n], cnp.NPY_INT64, 0)
    cdef cnp.ndarray success = cnp.PyArray_EMPTY(1, [n], cnp.NPY_FLOAT32, 0)
    cdef float *e = _out_f32(E)
    cdef double *cr = <double *>cnp.PyArray_DATA(created)
    cdef int64_t *co = <int64_t *>cnp.PyArray_DATA(counts)
    cdef float *su = _out_f32(success)
    cdef object c, emb, count
    cdef double t, rate
    for i in range(n):
        c = candidates[i]
        emb = c.embedding
        if not (_ready(emb, cnp.NPY_FLOAT32, 1) and _dim(<cnp.ndarray>emb, 0) == dim):
            raise InvalidInputError(f"candidates[{i}].embedding does not match")
        memcpy(e + i * dim, cnp.PyArray_DATA(<cnp.ndarray>emb), dim * sizeof(float))
        t = c.created_at
        count = c.access_count
        if type(count) is not int or count < 0:
            raise InvalidInputError(f"candidates[{i}].access_count is not a count")
        rate = c.success_rate
        if not (isfinite(t) and rate >= 0.0 and rate <= 1.0):
            raise InvalidInputError(f"candidates[{i}] has an out-of-range field")
        cr[i] = t
        co[i] = count
        su[i] = <float>rate
    if _first_nonfinite_f32(e, n * dim) >= 0:
        raise InvalidInputError("a candidate embedding holds NaN or Inf")
    cdef cnp.ndarray norms = cnp.PyArray_EMPTY(1, [n], cnp.NPY_FLOAT32, 0)
    ck.td_l2_norms_f32(e, <size_t>n, <size_t>dim, _out_f32(norms))
    if _first_nonfinite_f32(_out_f32(norms), n) >= 0:
        raise InvalidInputError("a candidate embedding's norm overflows float32")
    for a in (E, norms, created, counts, success):
        a.setflags(write=False)
    return E, norms, created, counts, success
