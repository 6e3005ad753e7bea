# ---------------------------------------------------------------------------------------------------------
# Routing: one pass bound to a model, its results, and the request counters
# ---------------------------------------------------------------------------------------------------------


cdef class RouteCounters:
    """Request counters. Each update is one C method call made with the GIL held, so updates and
    :meth:`snapshot` are atomic without a lock (this module does not declare free-threading support, so
    free-threaded Python builds run it with the GIL)."""

    cdef long long requests, candidates, lightweight, fallbacks, model_errors, rejected, invalid, reloads
    cdef long long reload_failures
    cdef double total_us

    def count_routed(self, Py_ssize_t candidates, Py_ssize_t lightweight, double elapsed_us):
        """One request routed by the model."""
        self.requests += 1
        self.candidates += candidates
        self.lightweight += lightweight
        self.total_us += elapsed_us

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
    """What one routing pass computed for N candidates, in input order: confidence, uncertainty and the
    lightweight flag of each, the rank order (highest confidence first, stable) and the number of
    lightweight decisions.

    The pass writes everything into one allocation; each array is a read-only view made on first access.
    :meth:`from_arrays` makes one from arrays computed elsewhere (a fallback, a copy). ``features`` holds
    the model's input when the pass was asked to keep it, else None.
    """

    cdef cnp.ndarray block
    cdef readonly Py_ssize_t n
    cdef readonly Py_ssize_t lightweight_count
    cdef object conf_a, unc_a, light_a, order_a, feat_a
    cdef bint has_features

    @staticmethod
    cdef RouteResult _new(Py_ssize_t n, bint features=False):
        """Room for n results: confidence f32, uncertainty f32, order i32, flags u8, then the sort's scratch
        (n int32) above 32 candidates, then the features (n x 5 f32) when asked for."""
        cdef RouteResult r = RouteResult.__new__(RouteResult)
        cdef Py_ssize_t size = n * 13 + (4 * n + 4 if n > 32 else 1)
        if features:
            size = RouteResult._features_at(n) + 20 * n + 1
        r.block = cnp.PyArray_EMPTY(1, [size], cnp.NPY_UINT8, 0)
        r.n = n
        r.has_features = features
        return r

    @staticmethod
    cdef inline Py_ssize_t _scratch_at(Py_ssize_t n) noexcept:
        return (13 * n + 3) & ~3

    @staticmethod
    cdef inline Py_ssize_t _features_at(Py_ssize_t n) noexcept:
        return RouteResult._scratch_at(n) + (4 * n if n > 32 else 0)

    cdef inline int32_t *_scratch(self) noexcept:
        return <int32_t *>(self._data() + RouteResult._scratch_at(self.n)) if self.n > 32 else NULL

    cdef inline float *_features(self) noexcept:
        return <float *>(self._data() + RouteResult._features_at(self.n)) if self.has_features else NULL

    cdef inline char *_data(self) noexcept:
        return <char *>cnp.PyArray_DATA(self.block)

    @staticmethod
    def from_arrays(confidence, uncertainty, use_lightweight, order):
        """Results from arrays of one length N, in input order (``order``: the N input positions in rank
        order). They are copied.

        Raises:
            InvalidInputError: a wrong dtype or length.
        """
        cdef cnp.ndarray conf = _arr(confidence, "confidence", cnp.NPY_FLOAT32, 1)
        cdef Py_ssize_t n = _dim(conf, 0)
        cdef cnp.ndarray unc = _per_candidate(uncertainty, "uncertainty", n, cnp.NPY_FLOAT32)
        cdef cnp.ndarray light = _per_candidate(np.ascontiguousarray(use_lightweight, dtype=np.bool_), "use_lightweight", n,
                                                cnp.NPY_BOOL)
        cdef cnp.ndarray rank = _per_candidate(order, "order", n, cnp.NPY_INT32)
        cdef RouteResult r = RouteResult._new(n)
        cdef char *b = r._data()
        memcpy(b, cnp.PyArray_DATA(conf), 4 * n)
        memcpy(b + 4 * n, cnp.PyArray_DATA(unc), 4 * n)
        memcpy(b + 8 * n, cnp.PyArray_DATA(rank), 4 * n)
        memcpy(b + 12 * n, cnp.PyArray_DATA(light), n)
        r.lightweight_count = int(np.count_nonzero(light))
        return r

    @property
    def confidence(self):
        """(N,) float32, input order."""
        if self.conf_a is None:
            self.conf_a = _view(self.block, self._data(), cnp.NPY_FLOAT32, 1, self.n, 0)
        return self.conf_a

    @property
    def uncertainty(self):
        """(N,) float32, input order."""
        if self.unc_a is None:
            self.unc_a = _view(self.block, self._data() + 4 * self.n, cnp.NPY_FLOAT32, 1, self.n, 0)
        return self.unc_a

    @property
    def order(self):
        """(N,) int32: the input positions in rank order."""
        if self.order_a is None:
            self.order_a = _view(self.block, self._data() + 8 * self.n, cnp.NPY_INT32, 1, self.n, 0)
        return self.order_a

    @property
    def lightweight(self):
        """(N,) bool, input order."""
        if self.light_a is None:
            self.light_a = _view(self.block, self._data() + 12 * self.n, cnp.NPY_BOOL, 1, self.n, 0)
        return self.light_a

    @property
    def features(self):
        """(N, 5) float32, input order: the weighted features the model read; None unless the pass was
        asked to keep them."""
        if not self.has_features:
            return None
        if self.feat_a is None:
            self.feat_a = _view(self.block, <char *>self._features(), cnp.NPY_FLOAT32, 2, self.n, 5)
        return self.feat_a

    def __len__(self):
        return self.n

    def __reduce__(self):
        return (RouteResult.from_arrays, (np.array(self.confidence), np.array(self.uncertainty),
                                          np.array(self.lightweight), np.array(self.order)))


cdef class RoutePass:
    """The routing pass with a model, feature weights and thresholds bound once.

    For each candidate: the five features, the model's confidence ``p``, the uncertainty
    ``clamp(1 - 2 |p - 0.5|, 0, 1)`` and ``use_lightweight = p >= confidence_threshold and uncertainty <=
    max_uncertainty``; then the rank order. One C call, without the GIL when the request is large.

    Calibrated (``failure_values`` given, from a :class:`~tinydancer.calibration.Calibration` of risk
    ``lightweight_error``): ``use_lightweight = p >= confidence_threshold`` (the certified threshold; +inf
    routes nothing), ``max_uncertainty`` is not used, and the uncertainty is the calibration's conformal
    p-value, ``(1 + #{failures with score >= p}) / (1 + failure_count)``, with the count rounded up to the
    next stored rank when only quantiles of the failures are stored (as
    :meth:`Calibration.uncertainty <tinydancer.calibration.Calibration.uncertainty>` does).

    Args:
        model: a candidate scorer (input_dim 5, timesteps 1, output_dim 1).
        weights: the feature weights and recency decay.
        confidence_threshold, max_uncertainty: the lightweight rule, each in [0, 1] (the threshold may be
            +inf when calibrated).
        failure_values: the calibration's stored failure scores (any order), or None.
        failure_count: the number of failures they stand for (>= their number).

    Raises:
        InvalidInputError: the model does not have the scorer's shape, or a threshold or the calibration's
            values are out of range.
    """

    cdef readonly FastGRNNCell model
    cdef readonly FeatureWeights weights
    cdef float threshold, max_uncertainty
    cdef cnp.ndarray ascending  # the calibration's failure scores, float64, ascending; None: not calibrated
    cdef Py_ssize_t failure_count

    def __init__(self, FastGRNNCell model not None, FeatureWeights weights not None,
                 double confidence_threshold=0.85, double max_uncertainty=0.15, failure_values=None,
                 Py_ssize_t failure_count=0):
        _check_scorer(model)
        cdef bint calibrated = failure_values is not None
        cdef bint threshold_ok = 0.0 <= confidence_threshold <= 1.0 or (
            calibrated and confidence_threshold == float("inf"))
        if not (threshold_ok and 0.0 <= max_uncertainty <= 1.0):
            raise InvalidInputError(f"confidence_threshold and max_uncertainty must lie in [0, 1], got "
                                    f"{confidence_threshold} and {max_uncertainty}")
        if calibrated:
            values = np.sort(np.asarray(failure_values, dtype=np.float64).ravel())
            if not np.isfinite(values).all() or failure_count < values.shape[0]:
                raise InvalidInputError(f"failure_values must be finite and failure_count ({failure_count}) at "
                                        f"least their number ({values.shape[0]})")
            self.ascending = values
            self.failure_count = failure_count
        self.model, self.weights = model, weights
        # the float32 at or above the threshold, so that p >= it exactly when p >= confidence_threshold
        self.threshold = <float>confidence_threshold
        if self.threshold < confidence_threshold:
            self.threshold = nextafterf(self.threshold, INFINITY)
        self.max_uncertainty = <float>max_uncertainty
        if calibrated:
            self.max_uncertainty = 1.0

    @property
    def calibrated(self):
        """Whether the uncertainty is a calibration's conformal p-value."""
        return self.ascending is not None

    def route(self, query, CandidateColumns candidates not None, double now, metadata_overlap=None,
              bint keep_features=False):
        """Route ``candidates`` for ``query`` (named ``query_embedding`` in errors) at unix time ``now``.

        Args:
            keep_features: also keep the weighted features the model read (``RouteResult.features``).

        Returns:
            a :class:`RouteResult`.

        Raises:
            InvalidInputError: a bad query, overlap or time, a non-finite query or embedding, or a candidate
                created more than the weights' ``future_tolerance`` seconds after ``now``, naming it.
            ModelError: the model produced a non-finite score from finite input.
        """
        cdef _Request r = _Request.__new__(_Request)
        r.load_query(query, "query_embedding")
        r.load(candidates, now, metadata_overlap, self.weights)
        cdef CandidateColumns c = candidates
        cdef Py_ssize_t i, n = c.n, count = 0
        cdef RouteResult result = RouteResult._new(n, keep_features)
        cdef char *b = result._data()
        cdef uint8_t *flags = <uint8_t *>(b + 12 * n)
        cdef int rc
        cdef void *state = _release(n * c.dim >= NOGIL_WORK)
        rc = ck.td_route_candidates_ex(&self.model.m, &self.weights.cfg, _f32p(r.q), <size_t>_dim(r.q, 0), c.emb_p,
                                       c.norms_p, <size_t>n, c.created_p, c.counts_p, c.success_p, r.overlap_p, r.now,
                                       self.threshold, self.max_uncertainty, <float *>b, <float *>(b + 4 * n), flags,
                                       <int32_t *>(b + 8 * n),
                                       result._scratch(), result._features())
        _reacquire(state)
        if rc != 0:
            r.explain_nan()
            raise ModelError("the model produced a non-finite score from finite features")
        if self.ascending is not None:
            self._conformal(<float *>b, <float *>(b + 4 * n), n)
        for i in range(n):
            count += flags[i]
        result.lightweight_count = count
        return result

    cdef void _conformal(self, const float *scores, float *uncertainty, Py_ssize_t n) noexcept:
        """uncertainty[i] = the calibration's conformal p-value of scores[i] (see the class docstring)."""
        cdef const double *asc = <const double *>cnp.PyArray_DATA(self.ascending)
        cdef Py_ssize_t kept = cnp.PyArray_DIM(self.ascending, 0), total = self.failure_count
        cdef Py_ssize_t i, lo, hi, mid, beyond, k
        cdef double p
        for i in range(n):
            if total == 0:
                uncertainty[i] = 1.0
                continue
            p = scores[i]
            lo, hi = 0, kept  # bisect_left: the first stored value >= p
            while lo < hi:
                mid = (lo + hi) >> 1
                if asc[mid] < p:
                    lo = mid + 1
                else:
                    hi = mid
            beyond = kept - lo
            k = total if beyond >= kept else (beyond * (total - 1)) // (kept - 1 if kept > 1 else 1)
            uncertainty[i] = <float>((1.0 + k) / (1.0 + total))
