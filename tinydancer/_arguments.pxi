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
    if typenum == cnp.NPY_FLOAT32 or typenum == cnp.NPY_FLOAT64:
        if kind not in "fiu":
            raise InvalidInputError(f"{name} must hold real numbers ({target}), got dtype {arr.dtype}")
    elif kind not in "iu" and not (arr.size == 0 and kind == "f"):  # np.array([]) is float64
        raise InvalidInputError(f"{name} must hold integers ({target}), got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise InvalidInputError(f"{name} must be a {ndim}-D array, got shape {arr.shape}")
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        if arr.size and not np.can_cast(arr.dtype, np.dtype(target)):
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
        if not (p[i] >= 0.0 and p[i] <= FLT_MAX):  # false for NaN too
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


cdef cnp.ndarray _per_candidate(object a, str name, Py_ssize_t n, int typenum):
    """A 1-D array of ``typenum`` with one entry per candidate, or raise naming ``name``."""
    cdef cnp.ndarray v = _arr(a, name, typenum, 1)
    if _dim(v, 0) != n:
        raise InvalidInputError(f"{name} must have one entry per candidate ({n}), got {_dim(v, 0)}")
    return v


cdef int _require_unit_interval(cnp.ndarray v, str name) except -1:
    """Raise unless every value of a float32 vector lies in [0, 1] (NaN does not)."""
    cdef const float *p = _f32p(v)
    cdef Py_ssize_t i, n = _dim(v, 0)
    for i in range(n):
        if not (p[i] >= 0.0 and p[i] <= 1.0):
            raise InvalidInputError(f"{name}[{i}] = {p[i]!r} is outside [0, 1]")
    return 0


def as_vector(value, str name="vector"):
    """``value`` as a non-empty, finite, C-contiguous float32 vector, or raise naming ``name``.

    A float32 vector that already has that form is returned as it is (not copied); anything else real
    (lists, other dtypes, strided views) is converted once.

    Raises:
        InvalidInputError: not a 1-D real vector, empty, or holding NaN or Inf.
    """
    cdef cnp.ndarray v = _arr(value, name, cnp.NPY_FLOAT32, 1)
    _require_nonempty(_dim(v, 0), name)
    _require_finite(v, name)
    return v


cdef enum:
    ALIGN = 64  # bytes: one cache line, one AVX-512 register


cdef cnp.ndarray _aligned_bytes(Py_ssize_t nbytes, char **data):
    """A new uint8 array with room for ``nbytes`` starting on a 64-byte boundary, which ``*data`` receives
    (NumPy itself aligns to 16 bytes)."""
    cdef cnp.ndarray raw = cnp.PyArray_EMPTY(1, [nbytes + ALIGN], cnp.NPY_UINT8, 0)
    cdef char *p = <char *>cnp.PyArray_DATA(raw)
    data[0] = p + ((-<size_t>p) & (ALIGN - 1))
    return raw


cdef cnp.ndarray _view(object owner, void *data, int typenum, int ndim, Py_ssize_t n, Py_ssize_t dim):
    """A read-only NumPy view of ``data`` ((n,) or (n, dim) of ``typenum``) that keeps ``owner`` alive."""
    cdef cnp.npy_intp dims[2]
    dims[0] = n
    dims[1] = dim
    cdef cnp.ndarray a = cnp.PyArray_SimpleNewFromData(ndim, dims, typenum, data)
    cnp.set_array_base(a, owner)
    cnp.PyArray_CLEARFLAGS(a, cnp.NPY_ARRAY_WRITEABLE)
    return a
