# ---------------------------------------------------------------------------------------------------------
# The query router's pass
# ---------------------------------------------------------------------------------------------------------

from libc.math cimport log


cdef class QueryPass:
    """A query model bound once with how its outputs are read: one call scores one query or a batch.

    The model reads a query's embedding (``embedding_dim`` values) and, when ``length`` is given, the
    standardised logarithm of its prompt length as one more input. From its class probabilities p::

        score = 1 - p[bad]                       (the chance the lightweight answer is good enough)
        gain  = p[plus] - p[minus]               (p[plus] alone when minus is -1)

    both rounded to float32 (see :mod:`tinydancer.query_router.outcomes`).

    Args:
        model: a cell with timesteps 1, input_dim ``embedding_dim`` (+ 1 with ``length``), output_dim
            above every class index.
        embedding_dim: D, at least 1.
        bad, plus, minus: class indices; ``minus`` -1 for none.
        length: None, or (mean, standard deviation) of the log prompt lengths the model was trained on.

    Raises:
        InvalidInputError: the model does not fit these settings.
    """

    cdef readonly FastGRNNCell model
    cdef Py_ssize_t dim
    cdef int bad, plus, minus
    cdef bint with_length
    cdef double log_mean, log_std

    def __init__(self, FastGRNNCell model not None, Py_ssize_t embedding_dim, int bad, int plus, int minus,
                 length=None):
        cdef int outputs = model.m.output_dim
        self.with_length = length is not None
        if (embedding_dim < 1 or model.m.timesteps != 1 or model.m.input_dim != embedding_dim + self.with_length
                or model.m.input_dim > ck.TD_FASTGRNN_MAX_DIM):
            raise InvalidInputError(f"the model (input {model.m.input_dim}, timesteps {model.m.timesteps}) does not "
                                    f"read {embedding_dim} embedding values{' and a length' * self.with_length}")
        if not (0 <= bad < outputs and 0 <= plus < outputs and -1 <= minus < outputs):
            raise InvalidInputError(f"class indices {bad}, {plus}, {minus} do not fit {outputs} outputs")
        if self.with_length:
            self.log_mean, self.log_std = float(length[0]), float(length[1])
            if not (isfinite(self.log_mean) and isfinite(self.log_std) and self.log_std > 0.0):
                raise InvalidInputError(f"length must be a finite mean and a standard deviation > 0, got {length}")
        self.model, self.dim, self.bad, self.plus, self.minus = model, embedding_dim, bad, plus, minus

    cdef double _standard_length(self, double chars, Py_ssize_t index) except? -1e300:
        """The model's length input; ``index`` names the query in errors (-1: the only one)."""
        if not (chars > 0.0 and isfinite(chars)):
            name = "prompt_length" if index < 0 else f"prompt_length[{index}]"
            raise InvalidInputError(f"{name} must be finite and > 0 (characters), got {chars!r}")
        return (log(chars) - self.log_mean) / self.log_std

    cdef inline float _score(self, const float *p) noexcept:
        """P(the cheap answer is good enough) from one query's probabilities."""
        return 1.0 - p[self.bad]

    cdef inline float _gain(self, const float *p) noexcept:
        """The expected gain of the strong model from one query's probabilities."""
        return p[self.plus] - p[self.minus] if self.minus >= 0 else p[self.plus]

    cdef int _raise_nonfinite(self, const float *src, Py_ssize_t i, Py_ssize_t j) except -1:
        raise InvalidInputError(f"embeddings holds a non-finite value ({src[i * self.dim + j]}) at [{i}, {j}]")

    cdef int _check_length_given(self, object prompt_length) except -1:
        if self.with_length and prompt_length is None:
            raise InvalidInputError("this model reads the prompt length: pass prompt_length (characters)")
        if not self.with_length and prompt_length is not None:
            raise InvalidInputError("prompt_length was given, but this model does not read it")
        return 0

    def scores(self, embedding, prompt_length=None):
        """``(score, gain)`` of one query: a (D,) embedding and, when the model reads it, its prompt length
        in characters. Both are floats holding float32 values.

        Raises:
            InvalidInputError: not a (D,) real vector, NaN or Inf, a missing, extra or non-positive
                ``prompt_length``.
        """
        cdef cnp.ndarray e = _arr(embedding, "embedding", cnp.NPY_FLOAT32, 1)
        cdef Py_ssize_t d = self.dim, bad_at
        if _dim(e, 0) != d:
            raise InvalidInputError(f"embedding must have length {d}, got {_dim(e, 0)}")
        self._check_length_given(prompt_length)
        cdef float x[ck.TD_FASTGRNN_MAX_DIM + 1]
        cdef float p[ck.TD_FASTGRNN_MAX_DIM]
        cdef const float *src = _f32p(e)
        bad_at = _first_nonfinite_f32(src, d)
        if bad_at >= 0:
            raise InvalidInputError(f"embedding holds a non-finite value ({src[bad_at]}) at [{bad_at}]")
        cdef const float *inputs = src
        if self.with_length:
            memcpy(x, src, d * sizeof(float))
            x[d] = <float>self._standard_length(checks.real(prompt_length, "prompt_length", error=InvalidInputError),
                                                -1)
            inputs = x
        ck.td_fastgrnn_forward(&self.model.m, inputs, p)
        if _first_nonfinite_f32(p, self.model.m.output_dim) >= 0:
            raise InvalidInputError("embedding overflows float32 inside the model; the inputs are too large")
        return self._score(p), self._gain(p)

    def scores_batch(self, embeddings, prompt_length=None):
        """``(score, gain)`` of N queries: (N, D) embeddings and, when the model reads them, N prompt
        lengths in characters. Two float32 (N,) arrays.

        Raises:
            InvalidInputError: not an (N, D) real matrix with N >= 1, NaN or Inf, missing, extra, misshapen or
                non-positive ``prompt_length``.
        """
        cdef cnp.ndarray E = _arr(embeddings, "embeddings", cnp.NPY_FLOAT32, 2)
        cdef Py_ssize_t n = _dim(E, 0), d = self.dim, i, bad_at
        if n == 0 or _dim(E, 1) == 0:
            raise InvalidInputError(f"embeddings is empty (shape {(<object>E).shape})")
        if _dim(E, 1) != d:
            raise InvalidInputError(f"embeddings must have {d} columns, got {_dim(E, 1)}")
        self._check_length_given(prompt_length)
        cdef const float *src = _f32p(E)
        cdef cnp.ndarray X = E, L
        cdef const double *lengths
        cdef float *row
        if not self.with_length:
            bad_at = _first_nonfinite_f32(src, n * d)
            if bad_at >= 0:
                self._raise_nonfinite(src, bad_at // d, bad_at % d)
        else:  # each row copied next to its length, and checked while it is in cache
            L = _arr(prompt_length, "prompt_length", cnp.NPY_FLOAT64, 1)
            if _dim(L, 0) != n:
                raise InvalidInputError(f"prompt_length must have one entry per query ({n}), got {_dim(L, 0)}")
            lengths = <const double *>cnp.PyArray_DATA(L)
            X = cnp.PyArray_EMPTY(2, [n, d + 1], cnp.NPY_FLOAT32, 0)
            for i in range(n):
                row = _out_f32(X) + i * (d + 1)
                memcpy(row, src + i * d, d * sizeof(float))
                bad_at = _first_nonfinite_f32(row, d)
                if bad_at >= 0:
                    self._raise_nonfinite(src, i, bad_at)
                row[d] = <float>self._standard_length(lengths[i], i)
        cdef int outputs = self.model.m.output_dim
        cdef cnp.ndarray probabilities = cnp.PyArray_EMPTY(2, [n, outputs], cnp.NPY_FLOAT32, 0)
        cdef void *state = _release(n * self.model.m.hidden_dim * (d + 1) >= NOGIL_WORK)
        ck.td_fastgrnn_forward_batch(&self.model.m, _f32p(X), <size_t>n, _out_f32(probabilities))
        _reacquire(state)
        _require_finite_result(probabilities, "embeddings inside the model")
        cdef cnp.ndarray scores = cnp.PyArray_EMPTY(1, [n], cnp.NPY_FLOAT32, 0)
        cdef cnp.ndarray gains = cnp.PyArray_EMPTY(1, [n], cnp.NPY_FLOAT32, 0)
        cdef float *s = _out_f32(scores)
        cdef float *g = _out_f32(gains)
        cdef const float *p = _f32p(probabilities)
        for i in range(n):
            s[i] = self._score(p + i * outputs)
            g[i] = self._gain(p + i * outputs)
        return scores, gains

    def __repr__(self):
        return f"QueryPass(embedding_dim={self.dim}, prompt_length={bool(self.with_length)}, model={self.model!r})"
