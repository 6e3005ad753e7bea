"""The benchmarks behind ``tinydancer bench`` and ``tinydancer info``: kernel, model, candidate-routing,
query-routing, text-to-decision and storage timings from Python, their runner, and the table they are printed
as (the storage group lives in :mod:`tinydancer.storage_benchmarks`).

Each figure is the median over repeats of the mean time of a batch of calls, so a busy machine shows up
as spread between repeats rather than as a wrong median. :func:`measure` times one benchmark on every ISA
and yields its row at once, so a table can be printed as it is measured. The asv suites (``asv_bench/``)
build their routing requests with :func:`routing_inputs`, their queries with :func:`query_inputs`, their
prompts with :func:`text_prompts` and place their arrays with :func:`aligned_copy`, so both tools time the
same calls.

A benchmark's call may carry hooks that :func:`measure` honours: ``scope()`` (a context to time the row in,
see :class:`OneThread`), ``timing(repeats, target_s)`` (its own way of timing instead of :func:`time_call`),
``per_isa = False`` (it runs no tinydancer kernel: timed once, the figure shown in every ISA column) and
``describe(row)`` (the row's peer text, written from its measured timings). The text group's rows
(:class:`PerCall`) use the last three; the storage group's rows time two calls in one loop (see
:mod:`tinydancer.storage_benchmarks`).
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tinydancer import checks, kernels
from tinydancer.errors import InvalidInputError
from tinydancer.model import FastGRNN, FastGRNNConfig

if TYPE_CHECKING:
    from tinydancer.types import CandidateBatch, RoutingRequest

# (name, the call to time, the peer's figure): one benchmark, one row of the table. A call with a ``scope``
# method (see :class:`OneThread`) is timed inside the context that ``scope()`` returns.
Benchmark = tuple[str, Callable[[], object], str]


@dataclass(frozen=True)
class Timing:
    """Median and spread of the per-call time of one benchmark, in nanoseconds."""

    name: str
    isa: str
    median_ns: float
    min_ns: float
    max_ns: float
    reference: str = ""


def _check_timing(repeats: int, target_s: float) -> tuple[int, float]:
    """``repeats`` and ``target_s`` checked: an int >= 1 and a finite float > 0, else InvalidInputError."""
    return (checks.integer(repeats, "repeats", 1, error=InvalidInputError),
            checks.real(target_s, "target_s", 0.0, low_open=True, error=InvalidInputError))


def time_call(fn: Callable[[], object], *, repeats: int = 7, target_s: float = 0.02) -> tuple[float, float, float]:
    """Time ``fn`` in batches of calls.

    Args:
        fn: the call to time (called once first to warm up).
        repeats: the number of timed batches, >= 1.
        target_s: the approximate length of one batch, in seconds, > 0.

    Returns:
        (median, min, max) over the batches of the nanoseconds per call.

    Raises:
        InvalidInputError: ``repeats`` or ``target_s`` is out of range.
    """
    repeats, target_s = _check_timing(repeats, target_s)
    number = calls_per_batch(fn, target_s)
    return figures([time_batch(fn, number) for _ in range(repeats)])


def time_batch(fn: Callable[[], object], number: int) -> float:
    """Nanoseconds per call of ``number`` calls of ``fn()``, timed as one batch."""
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(number):
        fn()
    return (clock() - start) / number


def figures(samples: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of timing samples."""
    return statistics.median(samples), min(samples), max(samples)


def calls_per_batch(fn: Callable[[], object], target_s: float) -> int:
    """How many calls of ``fn`` take about ``target_s`` seconds, >= 1: ``fn`` is called once to warm up, then
    in batches growing fourfold until one takes a quarter of ``target_s`` (or 2**24 calls), and the count is
    scaled from that batch. :func:`time_call` times batches of this size."""
    fn()  # warm up
    number = 1
    while True:  # grow the batch until one takes long enough to time well
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter_ns() - start
        if elapsed >= target_s * 1e9 / 4 or number >= 1 << 24:
            break
        number *= 4
    return max(1, int(number * target_s * 1e9 / max(elapsed, 1)))


def time_each(calls: Sequence[Callable[[], object]], *, repeats: int = 7) -> tuple[float, float, float]:
    """Time every call alone, once per pass: the median over the calls of a pass, then (median, min, max) of
    those medians over ``repeats`` passes, in nanoseconds per call.

    For calls that each take long enough to time alone (a millisecond, or a microsecond where the timer's
    own tens of nanoseconds may count), and for "the median over many inputs, one call each": a list of one
    call gives that call's (median, min, max) over ``repeats`` calls. Nothing is called to warm up first.

    Raises:
        InvalidInputError: ``repeats`` is below 1, or ``calls`` is empty.
    """
    repeats = checks.integer(repeats, "repeats", 1, error=InvalidInputError)
    calls = list(calls)
    if not calls:
        raise InvalidInputError("calls is empty: give at least one call to time")
    clock = time.perf_counter_ns
    medians = []
    for _ in range(repeats):
        samples = []
        for fn in calls:
            start = clock()
            fn()
            samples.append(clock() - start)
        medians.append(statistics.median(samples))
    return figures(medians)


def aligned_copy(a: np.ndarray, offset: int = 0) -> np.ndarray:
    """A C-contiguous copy of ``a`` starting ``offset`` bytes past a 64-byte boundary.

    Benchmarks place their arrays on purpose: a 64-byte load that straddles two cache lines costs about
    twice as much, so where NumPy happens to put an array would otherwise move the figures by up to 25%.

    Args:
        a: the array to copy.
        offset: bytes past the 64-byte boundary, in [0, 64).

    Returns:
        The copy, with ``a``'s dtype and shape.

    Raises:
        ValueError: ``offset`` is outside [0, 64).
    """
    if not 0 <= offset < 64:
        raise ValueError(f"offset must lie in [0, 64), got {offset}")
    raw = np.empty(a.nbytes + 128, dtype=np.uint8)
    start = -raw.ctypes.data % 64 + offset
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _fastgrnn_5_8(rng: np.random.Generator) -> kernels.FastGRNNCell:
    """A dense FastGRNN cell of input 5 and hidden 8 with random weights (the crate's benchmark size)."""
    return kernels.FastGRNNCell(
        rng.standard_normal((8, 5)) * 0.5, rng.standard_normal((8, 8)) * 0.5, np.zeros(8), np.zeros(8),
        rng.standard_normal(8), 0.0, zeta=1.0, nu=-4.0,
    )


def kernel_benchmarks(seed: int = 0) -> list[Benchmark]:
    """(name, call, the peer's figure) for each kernel benchmark, on fixed random inputs."""
    rng = np.random.default_rng(seed)
    a = aligned_copy(rng.standard_normal(384).astype(np.float32))
    b = aligned_copy(rng.standard_normal(384).astype(np.float32))
    rows = aligned_copy(rng.standard_normal((100, 384)).astype(np.float32))
    shifted = aligned_copy(rows, 16)  # where NumPy's allocator often puts large arrays
    norms = kernels.l2_norms(rows)
    out = np.empty(100, np.float32)
    cell = _fastgrnn_5_8(rng)
    x = rng.standard_normal(5).astype(np.float32)
    X = rng.standard_normal((100, 5)).astype(np.float32)
    yb = np.empty(100, np.float32)
    return [
        ("cosine, one 384-d pair", lambda: kernels.cosine(a, b), "crate 144 ns; simsimd 181 ns"),
        ("cosine, 384-d query x 100 rows", lambda: kernels.cosine_batch(a, rows, out=out), "simsimd cdist 4.3 us"),
        ("  the same, row norms given", lambda: kernels.cosine_batch(a, rows, norms, out=out),
         "numpy, cached norms 4.4 us"),
        ("  the same, rows 16 bytes past a cache line", lambda: kernels.cosine_batch(a, shifted, norms, out=out), ""),
        ("FastGRNN 5->8, one step, single", lambda: cell.forward(x), "crate 7.5 us"),
        ("FastGRNN 5->8, batch of 100", lambda: cell.forward_batch(X, out=yb), "crate 7.35 us per item"),
    ]


def _model(form: str, inputs: int, hidden: int) -> FastGRNN:
    """A seeded model stored as ``form``: ``float32``, ``int8`` or ``sparse int8`` (90% pruned)."""
    model = FastGRNN(FastGRNNConfig(input_dim=inputs, hidden_dim=hidden), seed=0)
    if form == "sparse int8":
        model.prune(0.9)
    if form != "float32":
        model.quantize()
    return model


def model_benchmarks(seed: int = 0) -> list[Benchmark]:
    """(name, call, the peer's figure) for the FastGRNN model in each storage form and at two sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for inputs, hidden in ((5, 8), (384, 32)):
        x = rng.standard_normal(inputs).astype(np.float32)
        X = rng.standard_normal((100, inputs)).astype(np.float32)
        y = np.empty(100, np.float32)
        for form in ("float32", "int8", "sparse int8"):
            m = _model(form, inputs, hidden)
            label = f"model {inputs}->{hidden} {form} ({m.size_bytes()} B)"
            single = "crate 7.5 us" if (inputs, form) == (5, "float32") else ""
            out.append((f"{label}, one call", (lambda m=m, x=x: m.forward(x)), single))
            out.append((f"{label}, batch of 100", (lambda m=m, X=X, y=y: m.forward_batch(X, y)), ""))
    return out


CRATE_ROUTE = {10: "crate 8.8 us; npm binding 107 us", 50: "crate 48 us; npm binding 219 us",
               100: "crate 93 us; npm binding 342 us"}


@dataclass(frozen=True)
class RoutingInputs:
    """The inputs of the routing benchmarks for one number of candidates (no metadata anywhere).

    Attributes:
        query: the unit 384-d float32 query, 64-byte aligned.
        batch: the candidates as a :class:`~tinydancer.types.CandidateBatch`.
        columnar: a request of ``query`` and ``batch``.
        listed: a request of ``query`` and the same candidates as a list of ``Candidate`` objects.
    """

    query: np.ndarray
    batch: CandidateBatch
    columnar: RoutingRequest
    listed: RoutingRequest


def routing_inputs(n: int, *, seed: int = 0, now: float | None = None) -> RoutingInputs:
    """The routing benchmarks' request of ``n`` candidates, for ``tinydancer bench`` and the asv suite alike.

    Args:
        n: the number of candidates.
        seed: with ``n``, seeds every embedding and field.
        now: the time the candidates' ages count back from (default: now).

    Returns:
        The query and the candidates, as a batch and as objects.
    """
    from tinydancer.synthetic import candidate_batch, candidate_list, random_candidates, random_query
    from tinydancer.types import RoutingRequest

    rng = np.random.default_rng([seed, n])
    query = aligned_copy(random_query(rng))
    cols = random_candidates(rng, query, n, now=time.time() if now is None else now)
    batch = candidate_batch(cols, metadata=False)
    return RoutingInputs(query, batch, RoutingRequest(query, batch),
                         RoutingRequest(query, candidate_list(cols, metadata=False)))


def routing_benchmarks(seed: int = 0) -> list[Benchmark]:
    """The crate's benchmark table: feature extraction, model inference and complete routing, 384-d."""
    from tinydancer.features import FeatureEngineer
    from tinydancer.router import Router

    router = Router()
    engineer = FeatureEngineer()
    inputs = {n: routing_inputs(n, seed=seed) for n in (10, 50, 100)}
    out: list[Benchmark] = [
        (f"feature extraction, {n} candidates",
         (lambda q=i.query, b=i.batch: engineer.extract_batch_features(q, b)), "crate 18.5 us" if n == 100 else "")
        for n, i in inputs.items()
    ]
    features = engineer.extract_batch_features(inputs[100].query, inputs[100].batch)
    model = router.model
    x, X10, X100 = features[0].copy(), features[:10].copy(), features.copy()
    out += [
        ("model inference, single", lambda: model.forward(x), "crate 7.5 us"),
        ("model inference, batch of 10", lambda: model.forward_batch(X10), ""),
        ("model inference, batch of 100", lambda: model.forward_batch(X100), "crate 7.35 us per item"),
    ]
    out += [(f"route(), {n} candidates (CandidateBatch)", (lambda r=i.columnar: router.route(r)), CRATE_ROUTE[n])
            for n, i in inputs.items()]
    out += [(f"route(), {n} Candidate objects", (lambda r=i.listed: router.route(r)), "")
            for n, i in inputs.items()]
    return out


QUERY_DIM = 384
QUERY_BATCH = 1000
QUERY_LENGTHS = (50, 2000)  # prompt lengths in characters, drawn log-uniform between these
QUERY_TARGETS = {"route": "target 2 us", "route_batch": "target 200 us"}  # the project's goals for the query router
SKLEARN_ROW = "sklearn LogisticRegression.predict_proba"


@dataclass(frozen=True)
class QueryInputs:
    """The inputs of the query-routing benchmarks: unit 384-d embeddings and their prompt lengths.

    Attributes:
        embedding: one unit 384-d float32 query embedding, 64-byte aligned (the first row of ``embeddings``).
        prompt_length: its prompt length in characters, an int.
        embeddings: (n, 384) unit float32 query embeddings, 64-byte aligned.
        prompt_lengths: (n,) int64 prompt lengths in characters, 50 to 2,000, log-uniform.
    """

    embedding: np.ndarray
    prompt_length: int
    embeddings: np.ndarray
    prompt_lengths: np.ndarray

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """The same queries as plain feature rows, for a peer model: (1, 385) and (n, 385) float64 arrays of
        the embedding and the natural log of the prompt length."""
        X = np.empty((self.embeddings.shape[0], self.embeddings.shape[1] + 1))
        X[:, :-1] = self.embeddings
        X[:, -1] = np.log(self.prompt_lengths)
        return X[:1].copy(), X


def query_inputs(n: int = QUERY_BATCH, *, seed: int = 0) -> QueryInputs:
    """The query-routing benchmarks' inputs, for ``tinydancer bench`` and the asv suite alike.

    Args:
        n: the number of queries in the batch, >= 1.
        seed: with ``n``, seeds every embedding and length.

    Returns:
        Deterministic unit embeddings (isotropic: the direction does not change the time a call takes) and
        prompt lengths.

    Raises:
        InvalidInputError: ``n`` is below 1.
    """
    n = checks.integer(n, "n", 1, error=InvalidInputError)
    rng = np.random.default_rng([seed, n, QUERY_DIM])
    E = rng.standard_normal((n, QUERY_DIM))
    E = aligned_copy((E / np.linalg.norm(E, axis=1, keepdims=True)).astype(np.float32))
    low, high = QUERY_LENGTHS
    lengths = np.rint(np.exp(rng.uniform(np.log(low), np.log(high), n))).astype(np.int64)
    return QueryInputs(aligned_copy(E[0]), int(lengths[0]), E, lengths)


def sklearn_peer(seed: int = 0) -> object | None:
    """scikit-learn's ``LogisticRegression`` fitted once on synthetic queries like :func:`query_inputs`'
    (385 features, four classes as the query model's outcome classes), or None when scikit-learn cannot be
    imported (it is imported only here, and only when asked)."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return None
    import warnings

    _, X = query_inputs(2000, seed=seed + 1).features()
    rng = np.random.default_rng([seed, 385])
    score = X @ rng.standard_normal(X.shape[1])
    score += rng.standard_normal(score.shape[0]) * score.std()  # not separable: lbfgs stops on its own
    y = np.searchsorted(np.quantile(score, [0.25, 0.5, 0.75]), score)
    with warnings.catch_warnings(), one_thread_scope():  # one thread: 1 s, where two took 13 s on a busy VM
        warnings.simplefilter("ignore")  # a ConvergenceWarning changes nothing about the timing
        return LogisticRegression(max_iter=500).fit(X, y)


def query_benchmarks(seed: int = 0) -> list[Benchmark]:
    """The query router (the shipped default model) on one query and on a batch of 1,000, and scikit-learn's
    logistic regression on the same queries when scikit-learn is installed."""
    from tinydancer.query_router.router import QueryRouter

    router = QueryRouter.default()
    q = query_inputs(seed=seed)
    n = f"{q.embeddings.shape[0]:,}"
    out: list[Benchmark] = [
        (f"QueryRouter.route, one {QUERY_DIM}-d query",
         lambda: router.route(q.embedding, prompt_length=q.prompt_length), QUERY_TARGETS["route"]),
        (f"QueryRouter.route_batch, {n} queries",
         lambda: router.route_batch(q.embeddings, prompt_length=q.prompt_lengths), QUERY_TARGETS["route_batch"]),
    ]
    peer = sklearn_peer(seed)
    if peer is not None:
        x, X = q.features()
        predict = peer.predict_proba  # type: ignore[attr-defined]
        out += [(f"{SKLEARN_ROW}, one row", one_thread(lambda: predict(x)), "385 features, 4 classes, one thread"),
                (f"{SKLEARN_ROW}, {n} rows", one_thread(lambda: predict(X)), "")]
    return out


TEXT_PROMPTS = 200  # the one-prompt latency is the median over this many prompts
TEXT_BATCH = 1000  # prompts in one route_texts call
TEXT_ROW = "QueryRouter.route_text"  # the text group's rows start with this (route_text, route_texts)
TEXT_ROUTING_TARGET = "target < 1%"  # the routing part's share of text-to-decision time (issue 11)

#: How a text prompt opens, and how it ends: a question word and "?", or an instruction and ".".
TEXT_OPENERS = (("What", "?"), ("How", "?"), ("Why", "?"), ("Which", "?"), ("When", "?"), ("Where", "?"),
                ("Who", "?"), ("Can", "?"), ("Should", "?"), ("Is", "?"), ("Explain", "."), ("Describe", "."),
                ("Summarize", "."), ("Compare", "."), ("List", "."), ("Write", "."), ("Translate", "."))
#: The words the rest of a text prompt is drawn from.
TEXT_WORDS = (
    "the", "a", "of", "to", "and", "in", "for", "with", "on", "about", "between", "from", "by", "after", "before",
    "is", "are", "was", "does", "can", "should", "will", "makes", "causes", "changes", "works", "means", "happens",
    "capital", "city", "country", "river", "mountain", "ocean", "planet", "star", "energy", "water", "light",
    "cell", "protein", "gene", "virus", "disease", "medicine", "heart", "brain", "blood", "law", "court",
    "government", "election", "tax", "market", "price", "bank", "money", "loan", "company", "contract", "war",
    "empire", "king", "revolution", "treaty", "century", "history", "language", "poem", "novel", "author",
    "music", "painting", "film", "game", "team", "player", "equation", "number", "function", "integral",
    "matrix", "proof", "probability", "algorithm", "program", "computer", "network", "database", "server",
    "code", "bug", "python", "recipe", "bread", "coffee", "garden", "tree", "dog", "cat", "bird",
    "school", "student", "teacher", "exam", "essay", "email", "letter", "meeting", "plan", "budget", "risk",
    "best", "main", "first", "largest", "smallest", "difference", "reason", "effect", "example", "summary",
    "simple", "quick", "modern", "ancient", "French", "German", "Roman", "American", "chemical", "physical",
    "economic", "social", "legal", "moral", "daily", "healthy", "fast", "slow", "true", "false",
)


def text_prompts(n: int = TEXT_PROMPTS, seed: int = 0) -> list[str]:
    """Short English prompts for the text-to-decision benchmarks, for ``tinydancer bench`` and asv alike.

    Each is 6 to 15 words: an opener from :data:`TEXT_OPENERS` and 5 to 14 words drawn from
    :data:`TEXT_WORDS`, ending in "?" after a question word and "." after an instruction (``"Why war modern
    between before function?"``: English words, not English sentences; what the embedding costs depends on
    the number of tokens, 9 to 20 with [CLS] and [SEP] for seed 0, not on the sense). Built from the seed
    alone, with no data files.

    Args:
        n: the number of prompts, >= 1.
        seed: an int >= 0; the same seed gives the same prompts, and the first ``k`` prompts of
            ``text_prompts(n, seed)`` are ``text_prompts(k, seed)`` (so the 200 latency prompts are the first
            200 of the 1,000 throughput prompts).

    Raises:
        InvalidInputError: ``n`` below 1 or ``seed`` below 0 (or not ints).
    """
    n = checks.integer(n, "n", 1, error=InvalidInputError)
    seed = checks.integer(seed, "seed", 0, error=InvalidInputError)
    rng = np.random.default_rng([seed, 615])  # 615: 6 to 15 words, so no other benchmark draws this stream
    out = []
    for _ in range(n):
        opener, end = TEXT_OPENERS[int(rng.integers(len(TEXT_OPENERS)))]
        words = [TEXT_WORDS[int(i)] for i in rng.integers(len(TEXT_WORDS), size=int(rng.integers(5, 15)))]
        out.append(" ".join([opener, *words]) + end)
    return out


class PerCall:
    """A benchmark whose calls are each timed alone (:func:`time_each`): the text group's rows.

    Args:
        calls: returns the calls to time, one per input (or one call); asked each time the row is timed (once
            per ISA), so inputs that only this row needs are built only if it runs.
        warm: called before each timing, or None; the text group's warm-ups run once per group (shared
            between its rows) and then return at once.
        per_isa: False for calls that run no tinydancer kernel: :func:`measure` times them once, on whatever
            ISA is active, and shows the figure in every ISA column.
        describe: the row's peer text from its timings (one per ISA), or None for "".
    """

    def __init__(self, calls: Callable[[], Sequence[Callable[[], object]]], *, warm: Callable[[], object] | None = None,
                 per_isa: bool = True, describe: Callable[[list[Timing]], str] | None = None) -> None:
        self._calls = calls
        self._warm = warm
        self.per_isa = per_isa
        self._describe = describe

    def __call__(self) -> None:
        for fn in self._calls():
            fn()

    def timing(self, repeats: int, target_s: float = 0.02) -> tuple[float, float, float]:
        """(median, min, max) nanoseconds per call over ``repeats`` passes (see :func:`time_each`; each call is
        timed alone, so ``target_s`` does not apply)."""
        if self._warm is not None:
            self._warm()
        return time_each(self._calls(), repeats=repeats)

    def describe(self, row: list[Timing]) -> str:
        """The row's peer text."""
        return self._describe(row) if self._describe is not None else ""


class _TextInputs:
    """The text group's prompts, router and shared state: the vectors the routing-alone rows route, the
    warm-ups already done, and the totals (route_text, route_texts) that the routing shares divide by."""

    def __init__(self, router: object, embed_module: object, prompts: int, batch: int, seed: int) -> None:
        texts = text_prompts(max(prompts, batch), seed)
        self.router = router
        self.embed = embed_module
        self.one, self.many = texts[:prompts], texts[:batch]
        self.totals: dict[str, dict[str, float]] = {}
        self._vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._warm = False

    def warm_one(self) -> None:
        """Route every one-prompt input once (the embedder's first call on each length), once per group."""
        if not self._warm:
            for p in self.one:
                self.router.route_text(p)  # type: ignore[attr-defined]
            self._warm = True

    def warm_many(self) -> None:
        """Embed the batch once (its vectors, for route_batch alone; this warms the embedder on its chunks)."""
        self.vectors("many")

    def vectors(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, prompt lengths) of the ``"one"`` or ``"many"`` prompts, embedded once."""
        if kind not in self._vectors:
            texts = self.one if kind == "one" else self.many
            E = aligned_copy(np.asarray(self.embed.embed(list(texts)), dtype=np.float32))  # type: ignore[attr-defined]
            self._vectors[kind] = (E, np.array([len(p) for p in texts], dtype=np.float64))
        return self._vectors[kind]

    def remember(self, kind: str, row: list[Timing]) -> None:
        """Keep a total row's medians per ISA, for the routing row's share."""
        self.totals[kind] = {t.isa: t.median_ns for t in row}

    def share(self, kind: str, row: list[Timing]) -> str:
        """The routing row's share of the total it is part of, per ISA."""
        totals = self.totals.get(kind, {})
        shares = [f"{t.isa} {100 * t.median_ns / totals[t.isa]:.2g}%" for t in row if totals.get(t.isa)]
        if not shares:
            return TEXT_ROUTING_TARGET
        return f"routing share: {', '.join(shares)} ({TEXT_ROUTING_TARGET})"


def _per_second(n: int, row: list[Timing], per_isa: bool) -> str:
    if not per_isa:
        return f"{n * 1e9 / row[0].median_ns:,.0f} prompts/s"
    return "prompts/s: " + ", ".join(f"{t.isa} {n * 1e9 / t.median_ns:,.0f}" for t in row)


def text_benchmarks(seed: int = 0, *, prompts: int = TEXT_PROMPTS, batch: int = TEXT_BATCH) -> list[Benchmark]:
    """Text to decision with the default :class:`~tinydancer.embed.Embedder` and ``QueryRouter.default()``,
    beside the embedding alone and the routing alone; no rows when the ``[embed]`` extra is missing.

    The latency rows time one call per prompt, each alone, over ``prompts`` short prompts
    (:func:`text_prompts`) and report the median over the prompts: ``router.route_text(p)``, ``embed(p)``
    and ``router.route(vector, prompt_length=len(p))``. The throughput rows time one call on ``batch``
    prompts: ``router.route_texts(prompts)``, ``embed(prompts)`` and ``router.route_batch`` of their vectors.
    The embedding runs in onnxruntime, which does not use tinydancer's kernels, so the two embedding rows
    are timed once (their names say so) and the rest on every ISA; the routing rows' peer text is their
    share of the total on each ISA.

    Args:
        seed: seeds the prompts.
        prompts: prompts the one-prompt latency is the median over, >= 1.
        batch: prompts in the throughput call, >= 1.

    Raises:
        InvalidInputError: ``prompts`` or ``batch`` below 1.
        ModelError: the default embedder's model or tokenizer file is missing or damaged (see
            :class:`~tinydancer.embed.Embedder`).
    """
    from tinydancer import embed
    from tinydancer.errors import MissingExtraError
    from tinydancer.query_router.router import QueryRouter

    prompts = checks.integer(prompts, "prompts", 1, error=InvalidInputError)
    batch = checks.integer(batch, "batch", 1, error=InvalidInputError)
    try:
        embedder = embed.default_embedder()
    except MissingExtraError:
        return []
    router = QueryRouter.default()
    t = _TextInputs(router, embed, prompts, batch, seed)
    threads = f"onnxruntime, {embedder.threads} thread{'s' if embedder.threads != 1 else ''}"

    def one_text() -> list[Callable[[], object]]:
        return [(lambda p=p: router.route_text(p)) for p in t.one]

    def one_embed() -> list[Callable[[], object]]:
        return [(lambda p=p: embed.embed(p)) for p in t.one]

    def one_route() -> list[Callable[[], object]]:
        E, lengths = t.vectors("one")
        return [(lambda v=v, n=int(n): router.route(v, prompt_length=n)) for v, n in zip(E, lengths)]

    def many_route() -> list[Callable[[], object]]:
        E, lengths = t.vectors("many")
        return [lambda: router.route_batch(E, prompt_length=lengths)]

    def one_total(row: list[Timing]) -> str:
        t.remember("one", row)
        return f"median of {prompts:,} prompts, one call each"

    def many_total(row: list[Timing]) -> str:
        t.remember("many", row)
        return _per_second(batch, row, True)

    n = f"{batch:,}"
    return [
        (f"{TEXT_ROW}, one short prompt", PerCall(one_text, warm=t.warm_one, describe=one_total), ""),
        ("  embed(prompt) alone (onnxruntime: once, no ISA)",
         PerCall(one_embed, warm=t.warm_one, per_isa=False, describe=lambda row: threads), ""),
        ("  QueryRouter.route alone", PerCall(one_route, describe=lambda row: t.share("one", row)), ""),
        (f"{TEXT_ROW}s, {n} short prompts",
         PerCall(lambda: [lambda: router.route_texts(t.many)], warm=t.warm_many, describe=many_total), ""),
        ("  embed(prompts) alone (onnxruntime: once, no ISA)",
         PerCall(lambda: [lambda: embed.embed(t.many)], warm=t.warm_many, per_isa=False,
                 describe=lambda row: f"{_per_second(batch, row, False)}; batches of {embedder.batch_size}"), ""),
        ("  QueryRouter.route_batch alone", PerCall(many_route, describe=lambda row: t.share("many", row)), ""),
    ]


class OneThread:
    """A call that is timed with BLAS and OpenMP held to one thread (see :func:`one_thread_scope`).

    The query router runs on one core, so its peer is timed on one core too; and on a small busy machine a
    BLAS thread pool waits for a core now and then (scikit-learn's ``predict_proba`` of 1,000 rows read 8 ms
    with two threads on a shared two-core VM, 0.3 ms with one).
    """

    def __init__(self, fn: Callable[[], object]) -> None:
        self._fn = fn

    def __call__(self) -> object:
        return self._fn()

    def scope(self) -> AbstractContextManager[object]:
        """The context that holds the thread pools to one thread while a row is timed."""
        return one_thread_scope()


def one_thread(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` as a :class:`OneThread` when threadpoolctl is importable, else as is."""
    return fn if thread_controller() is None else OneThread(fn)


def thread_controller() -> type | None:
    """threadpoolctl's ``ThreadpoolController`` class, or None when threadpoolctl (a scikit-learn dependency)
    cannot be imported."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController  # type: ignore[no-any-return]


def one_thread_scope() -> AbstractContextManager[object]:
    """A context holding BLAS and OpenMP to one thread, or one that does nothing without threadpoolctl."""
    controller = thread_controller()
    return nullcontext() if controller is None else controller().limit(limits=1)  # type: ignore[no-any-return]


def storage_benchmarks(seed: int = 0) -> list[Benchmark]:
    """What logging and the routing database cost: ``route()`` of 10 candidates with and without a database
    (timed alternately), the background writer's decisions a second beside ``Storage.record_routing``'s rows
    a second, and ``Storage.search`` top 10 of 10,000 and 100,000 stored 384-d candidates beside NumPy (see
    :func:`tinydancer.storage_benchmarks.storage_benchmarks`, which also takes the sizes). Nothing is built
    until a row is timed; the databases live in temporary folders, removed after each pair of rows."""
    from tinydancer.storage_benchmarks import storage_benchmarks as build

    return build(seed)


GROUPS: dict[str, Callable[[], list[Benchmark]]] = {
    "routing": routing_benchmarks, "kernels": kernel_benchmarks, "model": model_benchmarks,
    "query": query_benchmarks, "text": text_benchmarks, "storage": storage_benchmarks,
}


def make_benchmarks(groups: Iterable[str] = ("kernels",)) -> list[Benchmark]:
    """The benchmarks of ``groups``, in order, with their inputs built.

    Args:
        groups: any of ``"routing"``, ``"kernels"``, ``"model"``, ``"query"``, ``"text"`` (which has no
            rows when the ``[embed]`` extra is not installed) and ``"storage"``.

    Raises:
        InvalidInputError: an unknown group.
    """
    groups = tuple(groups)
    for group in groups:
        if group not in GROUPS:
            raise InvalidInputError(f"unknown benchmark group {group!r}; known: {', '.join(GROUPS)}")
    return [benchmark for group in groups for benchmark in GROUPS[group]()]


def check_isas(isas: Sequence[str] | None) -> list[str]:
    """``isas`` (default: every available ISA), each one available here, else ConfigError from set_isa."""
    isas = list(isas) if isas else kernels.available_isas()
    before = kernels.active_isa()
    try:
        for isa in isas:
            kernels.set_isa(isa)
    finally:
        kernels.set_isa(before)
    return isas


def measure(benchmarks: Iterable[Benchmark], isas: Sequence[str] | None = None, *, repeats: int = 7,
            target_s: float = 0.02) -> Iterator[list[Timing]]:
    """Time each benchmark on every ISA in turn and yield its row as soon as it is measured.

    The arguments are checked before anything runs; the active ISA is restored before each row is yielded
    (and if timing fails). A call's hooks (see the module's docstring) choose how it is timed, whether once
    or per ISA, and its row's peer text.

    Args:
        benchmarks: what :func:`make_benchmarks` returned.
        isas: the ISAs to run on (default: all available).
        repeats, target_s: as for :func:`time_call`.

    Returns:
        An iterator of rows: per benchmark, one :class:`Timing` per ISA, in the order of ``isas``.

    Raises:
        InvalidInputError: ``repeats`` or ``target_s`` is out of range.
        ConfigError: an ISA that is unknown or not available here.
    """
    repeats, target_s = _check_timing(repeats, target_s)
    return _rows(list(benchmarks), check_isas(isas), repeats, target_s)


def _rows(benchmarks: list[Benchmark], isas: list[str], repeats: int, target_s: float) -> Iterator[list[Timing]]:
    for name, fn, reference in benchmarks:
        before = kernels.active_isa()
        scope = getattr(fn, "scope", None)
        timing = getattr(fn, "timing", None)
        per_isa = getattr(fn, "per_isa", True)
        row = []
        try:
            with scope() if scope is not None else nullcontext():
                for isa in isas if per_isa else isas[:1]:
                    if per_isa:  # else timed once, on the ISA that is active: it runs no kernel of ours
                        kernels.set_isa(isa)
                    figures = (timing(repeats, target_s) if timing is not None
                               else time_call(fn, repeats=repeats, target_s=target_s))
                    row.append(Timing(name, isa, *figures, reference))
        finally:
            kernels.set_isa(before)
        if not per_isa:
            row = [dataclasses.replace(row[0], isa=isa) for isa in isas]
        describe = getattr(fn, "describe", None)
        if describe is not None:
            text = describe(row)
            row = [dataclasses.replace(t, reference=text) for t in row]
        yield row


def run(isas: list[str] | None = None, *, repeats: int = 7, target_s: float = 0.02,
        groups: tuple[str, ...] = ("kernels",)) -> list[Timing]:
    """Time the benchmarks of ``groups`` on each ISA; the active ISA is restored afterwards.

    Args:
        isas: the ISAs to run on (default: all available).
        repeats, target_s: as for :func:`time_call`.
        groups: any of ``"kernels"``, ``"model"``, ``"routing"``, ``"query"``, ``"text"`` and ``"storage"``.

    Returns:
        One :class:`Timing` per benchmark and ISA, benchmark by benchmark, in the groups' order.

    Raises:
        InvalidInputError: ``repeats``, ``target_s`` or a group is out of range.
        ConfigError: an ISA that is unknown or not available here.
    """
    repeats, target_s = _check_timing(repeats, target_s)
    isas = check_isas(isas)
    return [t for row in _rows(make_benchmarks(groups), isas, repeats, target_s) for t in row]


def training_epoch_seconds(n: int = 10_000, repeats: int = 3) -> float:
    """Median seconds of one training epoch over ``n`` examples of input 5, hidden 8 (batch 32).

    Raises:
        InvalidInputError: ``n`` or ``repeats`` is below 1.
    """
    from tinydancer.training import Trainer, TrainingConfig

    n = checks.integer(n, "n", 1, error=InvalidInputError)
    repeats = checks.integer(repeats, "repeats", 1, error=InvalidInputError)

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (n, 5)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 1.0).astype(np.float32)
    samples = []
    for _ in range(repeats):
        trainer = Trainer(FastGRNN(seed=0), TrainingConfig(epochs=1, validation_split=0.0, seed=0))
        start = time.perf_counter()
        trainer.fit(X, y)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def format_ns(ns: float) -> str:
    """``ns`` nanoseconds as ns, us, ms or s with a readable number of digits."""
    if ns >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.0f} ns"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, or what :mod:`platform` knows elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class TableLayout:
    """The columns of the benchmark table: the names' width, then one column per ISA, then the peer's figure.

    Knowing the names in advance, a table can be printed a row at a time (:meth:`header`, then :meth:`row`
    for each row :func:`measure` yields) and looks the same as :func:`table`.
    """

    width: int
    isas: tuple[str, ...]

    @classmethod
    def for_names(cls, names: Iterable[str], isas: Sequence[str]) -> TableLayout:
        """The layout for benchmarks of these names on these ISAs."""
        return cls(max((len(name) for name in names), default=len("benchmark")), tuple(isas))

    def header(self) -> str:
        """The table's first line."""
        return f"{'benchmark':<{self.width}}  " + "  ".join(f"{isa:>10}" for isa in self.isas) + "  peer"

    def row(self, timings: Sequence[Timing]) -> str:
        """One benchmark's line, from its timings on this layout's ISAs (in any order)."""
        by_isa = {t.isa: t for t in timings}
        first = by_isa[self.isas[0]]
        cells = "  ".join(f"{format_ns(by_isa[isa].median_ns):>10}" for isa in self.isas)
        return f"{first.name:<{self.width}}  {cells}  {first.reference}".rstrip()


def table(timings: list[Timing], isas: list[str]) -> str:
    """The timings as a printable table: one row per benchmark, one column per ISA, then the peer's figure.

    Args:
        timings: what :func:`run` returned for ``isas``.
        isas: the column order.

    Returns:
        The table's lines joined by newlines (no trailing newline).
    """
    names = list(dict.fromkeys(t.name for t in timings))
    layout = TableLayout.for_names(names, isas)
    rows: dict[str, list[Timing]] = {name: [] for name in names}
    for t in timings:
        rows[t.name].append(t)
    return "\n".join([layout.header(), *(layout.row(rows[name]) for name in names)])
