# ---------------------------------------------------------------------------------------------------------
# Fused candidate scoring
# ---------------------------------------------------------------------------------------------------------

FUTURE_TOLERANCE = 60.0
"""Seconds a candidate's ``created_at`` may lie beyond ``now`` by default (clock skew between machines)."""

cdef class FeatureWeights:
    """The five feature weights and the recency decay, validated once (the routers keep one).

    Args:
        weights: (similarity, recency, frequency, success, metadata) weights, finite.
        recency_decay: per second, finite and >= 0.
        future_tolerance: seconds a candidate's ``created_at`` may lie beyond ``now`` (clock skew); a later
            one is refused, finite and >= 0.
    """

    cdef ck.td_feature_config cfg
    cdef readonly double future_tolerance

    def __init__(self, weights=(0.4, 0.2, 0.15, 0.15, 0.1), double recency_decay=0.001,
                 double future_tolerance=FUTURE_TOLERANCE):
        try:
            w = [float(v) for v in weights]
        except (TypeError, ValueError):
            raise InvalidInputError(f"weights must be five numbers, got {weights!r}") from None
        if len(w) != ck.TD_NUM_FEATURES or not all(isfinite(v) and abs(v) <= FLT_MAX for v in w):
            raise InvalidInputError(f"weights must be five finite numbers within the float32 range, got {weights!r}")
        if not (isfinite(recency_decay) and recency_decay >= 0.0):
            raise InvalidInputError(f"recency_decay must be finite and >= 0, got {recency_decay}")
        if not (isfinite(future_tolerance) and future_tolerance >= 0.0):
            raise InvalidInputError(f"future_tolerance must be finite and >= 0, got {future_tolerance}")
        self.future_tolerance = future_tolerance
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
        return (f"FeatureWeights(weights={self.weights}, recency_decay={self.cfg.recency_decay}, "
                f"future_tolerance={self.future_tolerance})")


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


cdef class CandidateColumns:
    """N candidates as the columns the scoring and routing kernels read, checked once.

    Args:
        embeddings: (N, D) real matrix (N may be 0; D >= 1 when N > 0).
        created_at: (N,) unix seconds, finite (float64).
        access_count: (N,) integers >= 0 (int64; floats and bools are refused).
        success_rate: (N,) values in [0, 1] (float32).
        norms: optional (N,) row norms of the embeddings, finite and >= 0. Without them the kernels compute
            each norm on the way (with ``copy`` they are computed here).
        ids: optional N ids, named in error messages about a candidate (not checked, not copied).
        copy: keep private, read-only copies (the embeddings 64-byte aligned, their norms computed and
            every row checked finite); without it, arrays already in kernel form are used as given, so do
            not change them while the columns are in use.

    Raises:
        InvalidInputError: a bad shape, dtype or value, naming the argument.

    :func:`gather_candidates` fills columns from a list of Candidate objects, reusing their buffers. The
    arrays are shown read-only; columns are immutable once made and may be shared between threads, except
    buffers that :func:`gather_candidates` refills.
    """

    cdef readonly Py_ssize_t n, dim
    cdef object emb_owner           # what keeps each pointer's memory alive
    cdef cnp.ndarray created, counts, success, norm_values
    cdef const float *emb_p
    cdef const double *created_p
    cdef const int64_t *counts_p
    cdef const float *success_p
    cdef const float *norms_p       # NULL: the kernels compute the norms
    cdef Py_ssize_t emb_capacity    # floats of the reusable embedding buffer (gathered columns only)
    cdef bint finite                # every embedding row is known to be finite
    cdef double latest              # the largest created_at (-inf when empty) and its row
    cdef Py_ssize_t latest_row
    cdef object ids                 # for messages: the ids (or None), the sequence's name, whether gathered
    cdef str name
    cdef bint gathered, single

    def __init__(self, embeddings, created_at, access_count, success_rate, norms=None, *, bint copy=False,
                 ids=None):
        self._load(embeddings, created_at, access_count, success_rate, norms, "norms", copy)
        self.ids = ids

    cdef int check_not_future(self, double now, double tolerance) except -1:
        """Refuse a created_at beyond now + tolerance: a time in milliseconds, or a clock far ahead."""
        if self.latest <= now + tolerance:
            return 0
        cdef double t = self.latest
        hint = " (it looks like milliseconds: divide by 1000)" if t > 1e11 and t / 1000.0 <= now + tolerance else ""
        cdef Py_ssize_t row = self.latest_row
        where = f"{_label(self.name, row, self.single)}.created_at" if self.gathered else f"created_at[{row}]"
        raise InvalidInputError(
            f"{where} is {t!r}, {t - now:.6g} s after now ({now!r}); created_at must be unix time in seconds, "
            f"at most {tolerance:g} s ahead of now{hint}{_id_note(self.ids, row)}")

    cdef int _load(self, object embeddings, object created_at, object access_count, object success_rate,
                   object norms, str norms_name, bint copy) except -1:
        cdef cnp.ndarray E = _arr(embeddings, "embeddings", cnp.NPY_FLOAT32, 2)
        cdef Py_ssize_t n = _dim(E, 0), dim = _dim(E, 1)
        cdef char *data
        if n and dim == 0:
            raise InvalidInputError("embeddings has no columns; D must be at least 1")
        created = _per_candidate(created_at, "created_at", n, cnp.NPY_FLOAT64)
        _require_finite(created, "created_at")
        self._find_latest(<const double *>cnp.PyArray_DATA(created), n)
        counts = _per_candidate(access_count, "access_count", n, cnp.NPY_INT64)
        _require_counts(counts, "access_count")
        success = _per_candidate(success_rate, "success_rate", n, cnp.NPY_FLOAT32)
        _require_unit_interval(success, "success_rate")
        if norms is not None:
            norms = _per_candidate(norms, norms_name, n, cnp.NPY_FLOAT32)
            _require_norms(<cnp.ndarray>norms, norms_name)
        self.n, self.dim = n, dim
        if copy:
            self.emb_owner = _aligned_bytes(n * dim * sizeof(float), &data)
            memcpy(data, cnp.PyArray_DATA(E), n * dim * sizeof(float))
            self.emb_p = <const float *>data
            self.created = _frozen(created)
            self.counts = _frozen(counts)
            self.success = _frozen(success)
            if norms is None:
                self.norm_values = cnp.PyArray_EMPTY(1, [n], cnp.NPY_FLOAT32, 0)
                self._compute_norms("embeddings")
                self.norm_values.setflags(write=False)
            else:
                self._require_rows_finite("embeddings")
                self.norm_values = _frozen(<cnp.ndarray>norms)
            self.finite = True
        else:
            self.emb_owner = E
            self.emb_p = _f32p(E)
            self.created, self.counts, self.success = created, counts, success
            self.norm_values = norms
        self._point()
        return 0

    cdef void _find_latest(self, const double *t, Py_ssize_t n) noexcept:
        cdef Py_ssize_t i
        self.latest, self.latest_row = -INFINITY, 0
        for i in range(n):
            if t[i] > self.latest:
                self.latest, self.latest_row = t[i], i

    cdef void _point(self) noexcept:
        self.created_p = <const double *>cnp.PyArray_DATA(self.created)
        self.counts_p = <const int64_t *>cnp.PyArray_DATA(self.counts)
        self.success_p = _f32p(self.success)
        self.norms_p = _f32p(self.norm_values) if self.norm_values is not None else NULL

    cdef int _compute_norms(self, str name, bint gathered=False, bint single=False) except -1:
        """Fill the norms of the n rows and check every row finite through them (a NaN or Inf makes its
        row's norm non-finite), naming the first bad row: ``name[i, j]`` of a matrix, or
        ``name[i].embedding[j]`` of gathered candidates."""
        cdef float *out = _out_f32(self.norm_values)
        cdef void *state = _release(self.n * self.dim >= NOGIL_WORK)
        ck.td_l2_norms_f32(self.emb_p, <size_t>self.n, <size_t>self.dim, out)
        _reacquire(state)
        cdef Py_ssize_t bad = _first_nonfinite_f32(out, self.n)
        if bad >= 0:
            self._raise_row(bad, name, gathered, single)
        return 0

    cdef int _require_rows_finite(self, str name) except -1:
        cdef Py_ssize_t bad = _first_nonfinite_f32(self.emb_p, self.n * self.dim)
        if bad >= 0:
            self._raise_row(bad // self.dim, name, False, False)
        return 0

    cdef int _raise_row(self, Py_ssize_t row, str name, bint gathered, bint single) except -1:
        """Raise for a row whose norm is not finite: a NaN or Inf in it, or values too large for float32."""
        cdef const float *p = self.emb_p + row * self.dim
        cdef Py_ssize_t j = _first_nonfinite_f32(p, self.dim)
        where = f"{_label(name, row, single)}.embedding" if gathered else name
        note = _id_note(self.ids, row)
        if j >= 0:
            at = f"[{j}]" if gathered else f"[{row}, {j}]"
            raise InvalidInputError(f"{where} holds a non-finite value ({p[j]}) at {at}{note}")
        if not gathered:
            where = f"{name}[{row}]"
        raise InvalidInputError(f"{where} has a norm beyond the float32 range{note}")

    @staticmethod
    def buffer():
        """Empty columns to pass to :func:`gather_candidates` again and again (its buffers grow as needed)."""
        cdef CandidateColumns c = CandidateColumns.__new__(CandidateColumns)
        c.latest = -INFINITY
        return c

    @property
    def embeddings(self):
        """(N, D) float32, read-only."""
        if self.emb_owner is None:  # a buffer never filled
            return np.empty((0, 0), dtype=np.float32)
        return _view(self.emb_owner, <void *>self.emb_p, cnp.NPY_FLOAT32, 2, self.n, self.dim)

    @property
    def created_at(self):
        """(N,) float64, read-only."""
        return self._column(self.created, cnp.NPY_FLOAT64)

    @property
    def access_count(self):
        """(N,) int64, read-only."""
        return self._column(self.counts, cnp.NPY_INT64)

    @property
    def success_rate(self):
        """(N,) float32, read-only."""
        return self._column(self.success, cnp.NPY_FLOAT32)

    @property
    def norms(self):
        """(N,) float32 row norms, read-only; None when the kernels compute them."""
        if self.norm_values is None:
            return None
        return self._column(self.norm_values, cnp.NPY_FLOAT32)

    cdef object _column(self, cnp.ndarray a, int typenum):
        if a is None:  # a buffer never filled
            return np.empty(0, dtype=_KIND_NAMES[typenum])
        return _view(a, cnp.PyArray_DATA(a), typenum, 1, self.n, 0)

    def __len__(self):
        return self.n

    def __repr__(self):
        return f"CandidateColumns(n={self.n}, dim={self.dim})"


cdef inline str _label(str name, Py_ssize_t i, bint single):
    return name if single else f"{name}[{i}]"


cdef str _id_note(object ids, Py_ssize_t i):
    """`` (candidate id 'x')`` for messages, or nothing when the id is unknown."""
    if ids is None or i >= len(ids):
        return ""
    cid = ids[i]
    return f" (candidate id {cid!r})" if isinstance(cid, str) else ""


cdef object _field(object check, object value, str label, str field, object cid, tuple args):
    """``check(value, label.field, *args)``, with the candidate's id added to the message of a refusal."""
    try:
        return check(value, f"{label}.{field}", *args, error=InvalidInputError)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc}{_id_note((cid,), 0)}") from None


cdef int _grow(CandidateColumns c, Py_ssize_t n, Py_ssize_t dim) except -1:
    """Room in ``c`` for n candidates of dimension dim (buffers are replaced only when too small)."""
    cdef char *data
    if c.created is None or _dim(c.created, 0) < n:
        cap = max(n, 16)
        c.created = cnp.PyArray_EMPTY(1, [cap], cnp.NPY_FLOAT64, 0)
        c.counts = cnp.PyArray_EMPTY(1, [cap], cnp.NPY_INT64, 0)
        c.success = cnp.PyArray_EMPTY(1, [cap], cnp.NPY_FLOAT32, 0)
        c.norm_values = cnp.PyArray_EMPTY(1, [cap], cnp.NPY_FLOAT32, 0)
    if c.emb_capacity < n * dim or c.emb_owner is None:
        c.emb_owner = _aligned_bytes(max(n * dim, 16) * sizeof(float), &data)
        c.emb_p = <const float *>data
        c.emb_capacity = max(n * dim, 16)
    return 0


def gather_candidates(candidates, CandidateColumns into not None, str name="candidates", *, bint metadata=True,
                      bint single=False):
    """Fill ``into`` with the columns of a list or tuple of Candidate objects, in one pass in C.

    Every field is checked as it is read (the objects are mutable, so this is where their values count):
    ``id`` a str; ``embedding`` a non-empty, finite real vector, all of one length; ``created_at`` a finite
    number; ``access_count`` an int >= 0; ``success_rate`` a number in [0, 1]; ``metadata`` (read only when
    ``metadata`` is true) a dict. The embedding norms are computed on the way.

    Args:
        candidates: a list or tuple of objects with those attributes (Candidate objects).
        into: the columns to fill (:meth:`CandidateColumns.buffer`); their buffers are reused when large
            enough, so one buffer must not be filled by two threads at once.
        name: how error messages name the sequence (``candidates[3].access_count``).
        metadata: also collect the metadata dicts.
        single: name the fields as ``name.field`` (for a one-candidate list).

    Returns:
        (ids, metadatas): the ids as a tuple of str, and the metadata dicts as a tuple (None when
        ``metadata`` is false).

    Raises:
        InvalidInputError: a bad element or field, naming it.
    """
    if type(candidates) is not list and type(candidates) is not tuple:
        if not isinstance(candidates, (list, tuple)):
            raise InvalidInputError(f"{name} must be a list of Candidate, got {type(candidates).__name__}")
    cdef Py_ssize_t n = len(candidates), dim = 0, i
    cdef object c, emb, count, t, rate, cid, md
    cdef cnp.ndarray v
    cdef str label
    ids_list = [None] * n
    into.ids, into.name, into.gathered, into.single = None, name, True, single
    metas = [None] * n if metadata else None
    if n:
        c = candidates[0]
        try:
            emb = c.embedding
        except AttributeError:
            raise InvalidInputError(
                f"{_label(name, 0, single)} must be a Candidate, got {type(c).__name__}") from None
        if _ready(emb, cnp.NPY_FLOAT32, 1):
            dim = _dim(<cnp.ndarray>emb, 0)
        else:
            dim = _dim(_arr(emb, _label(name, 0, single) + ".embedding", cnp.NPY_FLOAT32, 1), 0)
        if dim == 0:
            raise InvalidInputError(f"{_label(name, 0, single)}.embedding is empty")
    _grow(into, n, dim)
    into._point()
    into.n, into.dim, into.finite = n, dim, True
    cdef float *e = <float *>into.emb_p
    cdef double *cr = <double *>cnp.PyArray_DATA(into.created)
    cdef int64_t *co = <int64_t *>cnp.PyArray_DATA(into.counts)
    cdef float *su = _out_f32(into.success)
    cdef double tv, rv
    cdef long long cv
    for i in range(n):
        c = candidates[i]
        try:
            emb = c.embedding
            cid = c.id
            t = c.created_at
            count = c.access_count
            rate = c.success_rate
            md = c.metadata if metadata else None
        except AttributeError:
            raise InvalidInputError(
                f"{_label(name, i, single)} must be a Candidate, got {type(c).__name__}") from None
        if type(cid) is not str and not isinstance(cid, str):
            raise InvalidInputError(f"{_label(name, i, single)}.id must be a str, got {type(cid).__name__}")
        ids_list[i] = cid
        if not _ready(emb, cnp.NPY_FLOAT32, 1):
            try:
                emb = _arr(emb, _label(name, i, single) + ".embedding", cnp.NPY_FLOAT32, 1)
            except InvalidInputError as exc:
                raise InvalidInputError(f"{exc}{_id_note((cid,), 0)}") from None
        if _dim(<cnp.ndarray>emb, 0) != dim:
            raise InvalidInputError(f"{_label(name, i, single)}.embedding has length {_dim(<cnp.ndarray>emb, 0)}, "
                                    f"but {_label(name, 0, single)}.embedding has length {dim}"
                                    f"{_id_note((cid,), 0)}")
        memcpy(e + i * dim, cnp.PyArray_DATA(<cnp.ndarray>emb), dim * sizeof(float))
        if type(t) is float and isfinite(<double>t):
            tv = t
        else:
            tv = _field(checks.real, t, _label(name, i, single), "created_at", cid, ())
        if type(count) is int and count >= 0 and count <= 0x7FFFFFFFFFFFFFFF:
            cv = count
        else:
            cv = _field(checks.integer, count, _label(name, i, single), "access_count", cid, (0,))
        if type(rate) is float and rate >= 0.0 and rate <= 1.0:
            rv = rate
        else:
            rv = _field(checks.real, rate, _label(name, i, single), "success_rate", cid, (0.0, 1.0))
        if metadata:
            if type(md) is not dict and not isinstance(md, dict):
                raise InvalidInputError(f"{_label(name, i, single)}.metadata must be a dict, got "
                                        f"{type(md).__name__}{_id_note((cid,), 0)}")
            metas[i] = md
        cr[i] = tv
        co[i] = cv
        su[i] = <float>rv
    into._find_latest(cr, n)
    ids = tuple(ids_list)
    into.ids = ids
    if n:
        into._compute_norms(name, True, single)
    return ids, (tuple(metas) if metadata else None)


cdef class _Request:
    """A query checked against its candidate columns, with the metadata overlap and the time (internal)."""

    cdef cnp.ndarray q, overlap
    cdef CandidateColumns c
    cdef const float *overlap_p
    cdef double now
    cdef str query_name

    cdef int load_query(self, object query, str query_name) except -1:
        self.q = _arr(query, query_name, cnp.NPY_FLOAT32, 1)
        self.query_name = query_name
        _require_nonempty(_dim(self.q, 0), query_name)
        return 0

    cdef int load(self, CandidateColumns columns, double now, object metadata_overlap,
                  FeatureWeights weights) except -1:
        """The candidates for the loaded query, their metadata overlap and the time (no candidate may be
        created beyond now plus the weights' future tolerance)."""
        cdef Py_ssize_t dim = _dim(self.q, 0)
        cdef str query_name = self.query_name
        self.c = columns
        if columns.dim and columns.dim != dim:
            raise InvalidInputError(f"the candidates' embeddings have length {columns.dim}, but {query_name} has "
                                    f"length {dim}")
        if columns.n == 0:  # no score to show a non-finite query
            _require_finite(self.q, query_name)
        self.overlap_p = NULL
        if metadata_overlap is not None:
            self.overlap = _per_candidate(metadata_overlap, "metadata_overlap", columns.n, cnp.NPY_FLOAT32)
            _require_unit_interval(self.overlap, "metadata_overlap")
            self.overlap_p = _f32p(self.overlap)
        if not isfinite(now):
            raise InvalidInputError(f"now must be finite, got {now}")
        columns.check_not_future(now, weights.future_tolerance)
        self.now = now
        return 0

    cdef int explain_nan(self) except -1:
        """A NaN score or feature comes from a non-finite query or embedding: name it."""
        _require_finite(self.q, self.query_name)
        if not self.c.finite:
            self.c._require_rows_finite("embeddings")
        return 0


cdef _Request _request(object query, str query_name, object embeddings, object created_at, object access_count,
                       object success_rate, double now, object metadata_overlap, object embedding_norms,
                       FeatureWeights weights):
    """The query and loose candidate arrays of the function kernels, checked."""
    cdef _Request r = _Request.__new__(_Request)
    r.load_query(query, query_name)
    cdef CandidateColumns columns
    if isinstance(embeddings, CandidateColumns):
        columns = <CandidateColumns>embeddings
    else:
        columns = CandidateColumns.__new__(CandidateColumns)
        columns._load(embeddings, created_at, access_count, success_rate, embedding_norms, "embedding_norms", False)
    r.load(columns, now, metadata_overlap, weights)
    return r


cdef int _check_scorer(FastGRNNCell model) except -1:
    if model.m.input_dim != ck.TD_NUM_FEATURES or model.m.timesteps != 1 or model.m.output_dim != 1:
        raise InvalidInputError(
            f"model must have input_dim {ck.TD_NUM_FEATURES}, timesteps 1 and output_dim 1, got {model!r}")
    return 0


cdef float *_features_out(object out, str name, Py_ssize_t n) except? NULL:
    """The data of ``out`` when it is a writable C-contiguous float32 (n, 5) array; NULL for None."""
    if out is None:
        return NULL
    if not (_ready(out, cnp.NPY_FLOAT32, 2) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)
            and _dim(<cnp.ndarray>out, 0) == n and _dim(<cnp.ndarray>out, 1) == ck.TD_NUM_FEATURES):
        raise InvalidInputError(f"{name} must be a writable C-contiguous float32 array of shape ({n}, 5)")
    return _out_f32(<cnp.ndarray>out)


def candidate_features(query, embeddings, created_at=None, access_count=None, success_rate=None, double now=0.0,
                       metadata_overlap=None, embedding_norms=None, weights=None,
                       double recency_decay=0.001, out=None, *, str query_name="query"):
    """The five weighted features of N candidates, as float32 (N, 5); see :func:`score_candidates`.

    ``embeddings`` may be a :class:`CandidateColumns` (the other candidate arguments are then ignored).
    ``weights`` may be a :class:`FeatureWeights` (then ``recency_decay`` is its own), five numbers, or None
    for the defaults (0.4, 0.2, 0.15, 0.15, 0.1). ``out`` may be a writable C-contiguous float32 (N, 5)
    array. ``query_name`` is how error messages name the query.

    Raises:
        InvalidInputError: any bad shape, dtype or value, naming the argument.
    """
    cdef FeatureWeights fw = _as_weights(weights, recency_decay)
    cdef _Request r = _request(query, query_name, embeddings, created_at, access_count, success_rate, now,
                               metadata_overlap, embedding_norms, fw)
    cdef CandidateColumns c = r.c
    cdef cnp.ndarray feats
    if out is None:
        feats = cnp.PyArray_EMPTY(2, [c.n, ck.TD_NUM_FEATURES], cnp.NPY_FLOAT32, 0)
    else:
        _features_out(out, "out", c.n)
        feats = <cnp.ndarray>out
    cdef void *state = _release(c.n * c.dim >= NOGIL_WORK)
    ck.td_candidate_features(&fw.cfg, _f32p(r.q), <size_t>_dim(r.q, 0), c.emb_p, c.norms_p, <size_t>c.n,
                             c.created_p, c.counts_p, c.success_p, r.overlap_p, r.now, _out_f32(feats))
    _reacquire(state)
    if _first_nonfinite_f32(_out_f32(feats), c.n * ck.TD_NUM_FEATURES) >= 0:
        r.explain_nan()
    return feats


def score_candidates(FastGRNNCell model not None, query, embeddings, created_at=None, access_count=None,
                     success_rate=None, double now=0.0, metadata_overlap=None, embedding_norms=None, weights=None,
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
        query: (D,) float32; embeddings: (N, D) float32 or a :class:`CandidateColumns` (then created_at,
        access_count, success_rate and embedding_norms are its own); created_at: (N,) float64 unix seconds;
        access_count: (N,) int64 >= 0; success_rate and metadata_overlap: (N,) float32 in [0, 1];
        now: the current time in unix seconds; embedding_norms: optional (N,) precomputed row norms.
        weights: a :class:`FeatureWeights`, or the five feature weights, or None for (0.4, 0.2, 0.15,
            0.15, 0.1); with numbers or None, recency_decay (per second, >= 0) applies.
        features_out: optional writable float32 (N, 5) array that receives the weighted features.
        out: optional writable float32 (N,) array for the scores.

    Returns:
        float32 (N,) scores in [0, 1]. N may be 0.

    Raises:
        InvalidInputError: any bad shape, dtype or value, naming the argument, or a ``created_at`` more
            than the weights' ``future_tolerance`` seconds after ``now``.
    """
    _check_scorer(model)
    cdef FeatureWeights fw = _as_weights(weights, recency_decay)
    cdef _Request r = _request(query, "query", embeddings, created_at, access_count, success_rate, now,
                               metadata_overlap, embedding_norms, fw)
    cdef CandidateColumns c = r.c
    cdef float *features_p = _features_out(features_out, "features_out", c.n)
    cdef cnp.ndarray scores = _out_array(out, "out", c.n)
    cdef void *state = _release(c.n * c.dim >= NOGIL_WORK)
    ck.td_score_candidates(&model.m, &fw.cfg, _f32p(r.q), <size_t>_dim(r.q, 0), c.emb_p, c.norms_p, <size_t>c.n,
                           c.created_p, c.counts_p, c.success_p, r.overlap_p, r.now, features_p, _out_f32(scores))
    _reacquire(state)
    if _first_nonfinite_f32(_out_f32(scores), c.n) >= 0:
        r.explain_nan()  # a non-finite query or embedding, named
        raise ModelError("the model produced a non-finite score from finite features")
    return scores
