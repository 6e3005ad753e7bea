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


