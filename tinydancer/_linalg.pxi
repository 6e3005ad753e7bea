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


