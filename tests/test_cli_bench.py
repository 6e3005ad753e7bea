"""``tinydancer bench`` and :mod:`tinydancer.benchmarks`: rows come out as they are measured, bad options are
usage errors, the library refuses bad timing arguments, the query group runs with or without scikit-learn,
the text group runs with the ``[embed]`` extra (or a stand-in embedder) and says when the extra is missing,
and the asv routing, query and text suites time the same inputs.

No test here asserts on how long anything takes."""

from __future__ import annotations

import importlib
import inspect
import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from tinydancer import benchmarks, cli, kernels
from tinydancer.cli import bench
from tinydancer.errors import ConfigError, InvalidInputError

ROOT = Path(__file__).resolve().parent.parent


def counting_benchmarks(n: int, calls: list[int]) -> list[benchmarks.Benchmark]:
    """n benchmarks that do nothing but count their calls in ``calls[i]``."""
    calls[:] = [0] * n

    def make(i: int):
        def fn() -> None:
            calls[i] += 1
        return fn

    return [(f"bench {i}", make(i), f"peer {i}" if i % 2 else "") for i in range(n)]


# --------------------------------------------------------------------------------------------------------
# Rows one at a time
# --------------------------------------------------------------------------------------------------------


def test_measure_yields_each_row_before_timing_the_next():
    calls: list[int] = []
    cases = counting_benchmarks(3, calls)
    isas = kernels.available_isas()
    rows = benchmarks.measure(cases, isas, repeats=1, target_s=1e-5)
    assert calls == [0, 0, 0]  # nothing runs before the first row is asked for
    for i, row in enumerate(rows):
        assert [t.isa for t in row] == isas and {t.name for t in row} == {f"bench {i}"}
        assert all(c > 0 for c in calls[:i + 1]) and all(c == 0 for c in calls[i + 1:])
        assert all(t.min_ns <= t.median_ns <= t.max_ns for t in row)


def test_measure_restores_the_isa_before_each_row():
    before = kernels.active_isa()
    others = [isa for isa in kernels.available_isas() if isa != before] or [before]
    for _ in benchmarks.measure(counting_benchmarks(2, []), others, repeats=1, target_s=1e-5):
        assert kernels.active_isa() == before
    assert kernels.active_isa() == before


def test_cli_prints_the_header_then_each_row_as_it_is_measured(monkeypatch, capsys):
    """When benchmark i first runs, the header and exactly i rows have been written and flushed."""
    flushed: list[str] = []

    class Recorder(io.StringIO):
        def flush(self) -> None:
            flushed.append(self.getvalue())

    out = Recorder()
    seen: list[int] = []

    def make(i: int):
        def fn() -> None:
            if len(seen) == i:  # the first call of benchmark i
                seen.append(len(flushed[-1].splitlines()) if flushed else 0)
        return fn

    cases = [(f"bench {i}", make(i), "") for i in range(3)]
    monkeypatch.setattr(benchmarks, "make_benchmarks", lambda groups: cases)
    monkeypatch.setattr(sys, "stdout", out)
    assert cli.main(["bench", "--isa", "scalar", "--repeats", "1", "--seconds", "0.0001", "--no-training",
                     "--group", "kernels"]) == 0  # (the query group would add a line when scikit-learn is missing)
    assert seen == [2, 3, 4]  # the title and header lines, then one more row before each benchmark
    lines = out.getvalue().splitlines()
    assert lines[1].split() == ["benchmark", "scalar", "peer"]
    assert [line.split()[:2] for line in lines[2:]] == [["bench", "0"], ["bench", "1"], ["bench", "2"]]


def test_table_is_what_the_rows_print():
    calls: list[int] = []
    cases = counting_benchmarks(3, calls)
    isas = kernels.available_isas()
    rows = list(benchmarks.measure(cases, isas, repeats=1, target_s=1e-5))
    layout = benchmarks.TableLayout.for_names([name for name, _, _ in cases], isas)
    printed = "\n".join([layout.header(), *(layout.row(row) for row in rows)])
    assert benchmarks.table([t for row in rows for t in row], isas) == printed
    assert printed.splitlines()[2].endswith("peer 1")


# --------------------------------------------------------------------------------------------------------
# Option checks: usage errors, one line, no traceback
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, option", [
    (["--repeats", "0"], "--repeats"),
    (["--repeats", "-3"], "--repeats"),
    (["--repeats", "two"], "--repeats"),
    (["--seconds", "-1"], "--seconds"),
    (["--seconds", "0"], "--seconds"),
    (["--seconds", "nan"], "--seconds"),
    (["--seconds", "inf"], "--seconds"),
    (["--isa", "bogus"], "--isa"),
    (["--group", "everything"], "--group"),
])
def test_bad_options_are_usage_errors(argv, option, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *argv])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before the header
    assert "Traceback" not in captured.err
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("tinydancer bench: error: argument ") and option in last


def test_isa_option_lists_every_isa(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    assert "{scalar,avx2,avx512,neon}" in capsys.readouterr().out


def test_isa_names_are_the_kernels_isas():
    """Every name the option offers is an ISA set_isa knows (it runs here or is refused as unavailable)."""
    before = kernels.active_isa()
    try:
        for name in bench.ISA_NAMES:
            try:
                kernels.set_isa(name)
            except ConfigError as exc:
                assert "not available" in str(exc)
        with pytest.raises(ConfigError, match="unknown"):
            kernels.set_isa("mmx")
    finally:
        kernels.set_isa(before)
    assert set(kernels.compiled_isas()) <= set(bench.ISA_NAMES)


def test_a_known_isa_not_available_here_is_one_error_line(capsys):
    missing = [name for name in bench.ISA_NAMES if name not in kernels.available_isas()]
    if not missing:
        pytest.skip("every ISA runs here")
    assert cli.main(["bench", "--isa", missing[0]]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "not available" in captured.err and "Traceback" not in captured.err


# --------------------------------------------------------------------------------------------------------
# The library refuses bad timing arguments with InvalidInputError
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"repeats": 0}, {"repeats": -1}, {"repeats": 2.0}, {"repeats": True},
    {"target_s": 0.0}, {"target_s": -1.0}, {"target_s": math.nan}, {"target_s": math.inf}, {"target_s": "1"},
])
def test_timing_arguments_are_checked(kwargs):
    calls: list[int] = []
    cases = counting_benchmarks(1, calls)
    with pytest.raises(InvalidInputError):
        benchmarks.time_call(cases[0][1], **kwargs)
    with pytest.raises(InvalidInputError):
        benchmarks.measure(cases, **kwargs)  # at the call, not at the first row
    with pytest.raises(InvalidInputError):
        benchmarks.run(["scalar"], **kwargs)
    assert calls == [0]


def test_groups_isas_and_training_arguments_are_checked():
    with pytest.raises(InvalidInputError, match="unknown benchmark group"):
        benchmarks.make_benchmarks(["everything"])
    with pytest.raises(ConfigError):
        benchmarks.measure(counting_benchmarks(1, []), ["mmx"])
    with pytest.raises(InvalidInputError):
        benchmarks.training_epoch_seconds(repeats=0)
    with pytest.raises(InvalidInputError):
        benchmarks.training_epoch_seconds(n=0)


# --------------------------------------------------------------------------------------------------------
# One request for both tools
# --------------------------------------------------------------------------------------------------------


def test_routing_inputs_are_reproducible_and_aligned():
    a, b = benchmarks.routing_inputs(10, now=1.7e9), benchmarks.routing_inputs(10, now=1.7e9)
    assert a.query.ctypes.data % 64 == 0 and a.batch.embeddings.ctypes.data % 64 == 0
    assert np.array_equal(a.query, b.query) and np.array_equal(a.batch.embeddings, b.batch.embeddings)
    assert a.columnar.candidates is a.batch and np.array_equal(a.columnar.query_embedding, a.query)
    listed = a.listed.candidates
    assert len(listed) == len(a.batch) == 10
    assert np.array_equal(np.stack([c.embedding for c in listed]), a.batch.embeddings)
    assert [c.access_count for c in listed] == list(a.batch.access_count)
    assert not a.columnar.metadata and not a.listed.metadata and a.batch.metadata is None
    assert not np.array_equal(benchmarks.routing_inputs(50, now=1.7e9).query, a.query)


@pytest.fixture
def asv_suites(monkeypatch):
    """The asv_bench/benchmarks package, imported under its own name."""
    monkeypatch.syspath_prepend(str(ROOT / "asv_bench"))
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    yield {name: importlib.import_module(f"benchmarks.{name}")
           for name in ("bench_kernels", "bench_model", "bench_routing", "bench_query", "bench_text")}
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        del sys.modules[name]


def test_asv_suites_have_no_setup(asv_suites):
    """asv_runner >= 0.3 reruns ``setup`` before every timed call and times single calls; fast suites prepare
    on their first call instead (Training, one 20 ms call a sample, may keep it)."""
    for module in asv_suites.values():
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or name == "Training":
                continue
            if any(attr.startswith("time_") for attr in dir(cls)):
                assert not hasattr(cls, "setup"), f"{module.__name__}.{name} defines setup"


def test_asv_routing_suite_routes_the_bench_request(asv_suites):
    before = kernels.active_isa()
    suite = asv_suites["bench_routing"].Routing()
    try:
        isa = kernels.available_isas()[0]
        suite.time_route_candidate_batch(isa, 10)
        assert kernels.active_isa() == isa and suite.key == (isa, 10)
        made = benchmarks.routing_inputs(10)
        assert np.array_equal(suite.query, made.query)
        assert np.array_equal(suite.batch.embeddings, made.batch.embeddings)
        router = suite.router
        suite.time_route_candidate_objects(isa, 10)
        suite.time_feature_extraction(isa, 10)
        assert suite.router is router  # prepared once per parameter set
    finally:
        kernels.set_isa(before)


# --------------------------------------------------------------------------------------------------------
# The query group: the query router, and scikit-learn's logistic regression when it is installed
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_sklearn(monkeypatch):
    """scikit-learn made unimportable (whether or not it is installed)."""
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)


@pytest.fixture
def fake_sklearn(monkeypatch):
    """A stand-in ``sklearn.linear_model.LogisticRegression`` that records what it was fitted on and asked."""
    import types

    seen: dict[str, list] = {"fit": [], "predict_proba": []}

    class LogisticRegression:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def fit(self, X, y):
            seen["fit"].append((X.shape, np.unique(y).tolist()))
            return self

        def predict_proba(self, X):
            seen["predict_proba"].append(X)
            return np.full((X.shape[0], 4), 0.25)

    seen["limits"] = []  # (entered or set, limit) from the stand-in threadpoolctl
    seen["exits"] = []

    class Limiter:
        def __init__(self, limits):
            seen["limits"].append(limits)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            seen["exits"].append(len(seen["predict_proba"]))

    class ThreadpoolController:
        def limit(self, *, limits):
            return Limiter(limits)

    package = types.ModuleType("sklearn")
    linear_model = types.ModuleType("sklearn.linear_model")
    linear_model.LogisticRegression = LogisticRegression
    package.linear_model = linear_model
    threadpoolctl = types.ModuleType("threadpoolctl")
    threadpoolctl.ThreadpoolController = ThreadpoolController
    threadpoolctl.threadpool_limits = Limiter
    monkeypatch.setitem(sys.modules, "sklearn", package)
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", linear_model)
    monkeypatch.setitem(sys.modules, "threadpoolctl", threadpoolctl)
    return seen


def test_query_text_and_storage_are_group_choices(capsys):
    assert bench.GROUPS == tuple(benchmarks.GROUPS) and "query" in bench.GROUPS and "text" in bench.GROUPS
    assert "storage" in bench.GROUPS
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    assert "{routing,kernels,model,query,text,storage}" in capsys.readouterr().out


def test_query_inputs_are_reproducible_unit_and_aligned():
    q = benchmarks.query_inputs()
    again = benchmarks.query_inputs()
    assert q.embeddings.shape == (1000, 384) and q.embeddings.dtype == np.float32
    assert np.array_equal(q.embeddings, again.embeddings) and np.array_equal(q.prompt_lengths, again.prompt_lengths)
    assert q.embedding.ctypes.data % 64 == 0 and q.embeddings.ctypes.data % 64 == 0
    assert np.allclose(np.linalg.norm(q.embeddings, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(q.embedding, q.embeddings[0]) and q.prompt_length == q.prompt_lengths[0]
    assert type(q.prompt_length) is int and q.prompt_lengths.dtype == np.int64
    assert 50 <= q.prompt_lengths.min() and q.prompt_lengths.max() <= 2000
    assert np.unique(q.prompt_lengths).size > 500  # spread over the range, not a constant
    one, many = q.features()
    assert one.shape == (1, 385) and many.shape == (1000, 385) and many.dtype == np.float64
    assert np.array_equal(one, many[:1]) and np.array_equal(many[:, :384], q.embeddings)
    assert np.allclose(many[:, 384], np.log(q.prompt_lengths))
    assert not np.array_equal(benchmarks.query_inputs(seed=1).embeddings, q.embeddings)
    with pytest.raises(InvalidInputError):
        benchmarks.query_inputs(0)


def test_query_rows_without_sklearn(no_sklearn):
    assert benchmarks.sklearn_peer() is None
    cases = benchmarks.make_benchmarks(["query"])
    names = [name for name, _, _ in cases]
    assert names == ["QueryRouter.route, one 384-d query", "QueryRouter.route_batch, 1,000 queries"]
    assert [peer for _, _, peer in cases] == ["target 2 us", "target 200 us"]
    isas = kernels.available_isas()
    rows = list(benchmarks.measure(cases, isas, repeats=1, target_s=1e-5))
    assert [[t.isa for t in row] for row in rows] == [isas, isas]
    assert [row[0].name for row in rows] == names
    assert all(t.median_ns > 0 for row in rows for t in row)


def test_query_rows_with_sklearn(fake_sklearn):
    cases = benchmarks.make_benchmarks(["query"])
    names = [name for name, _, _ in cases]
    assert names[2:] == [f"{benchmarks.SKLEARN_ROW}, one row", f"{benchmarks.SKLEARN_ROW}, 1,000 rows"]
    assert fake_sklearn["fit"] == [((2000, 385), [0, 1, 2, 3])]  # fitted once, four classes
    assert all(isinstance(fn, benchmarks.OneThread) for _, fn, _ in cases[2:])
    assert fake_sklearn["limits"] == [1] and fake_sklearn["exits"] == [0]  # the fit ran on one thread
    fake_sklearn["limits"].clear()
    fake_sklearn["exits"].clear()
    isas = kernels.available_isas()
    rows = iter(benchmarks.measure(cases[2:], isas, repeats=1, target_s=1e-5))
    first = next(rows)
    asked = fake_sklearn["predict_proba"]
    # held to one thread once for the whole row (every ISA), released before the row is handed out
    assert [t.isa for t in first] == isas and fake_sklearn["limits"] == [1] and fake_sklearn["exits"] == [len(asked)]
    assert len(list(rows)) == 1 and fake_sklearn["limits"] == [1, 1]
    one, many = benchmarks.query_inputs().features()
    assert any(np.array_equal(X, one) for X in asked) and any(np.array_equal(X, many) for X in asked)
    assert fake_sklearn["fit"] == [((2000, 385), [0, 1, 2, 3])]  # not refitted while timing


def test_sklearn_rows_without_threadpoolctl_run_as_they_are(fake_sklearn, monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    cases = benchmarks.make_benchmarks(["query"])
    assert len(cases) == 4 and not any(isinstance(fn, benchmarks.OneThread) for _, fn, _ in cases)
    assert len(list(benchmarks.measure(cases[2:], ["scalar"], repeats=1, target_s=1e-5))) == 2


def test_cli_query_group_says_when_sklearn_is_missing(no_sklearn, capsys):
    argv = ["bench", "--group", "query", "--isa", "scalar", "--repeats", "1", "--seconds", "0.0001",
            "--no-training"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["benchmark", "scalar", "peer"]
    assert lines[2].startswith("QueryRouter.route, one 384-d query") and lines[2].endswith("target 2 us")
    assert lines[3].startswith("QueryRouter.route_batch, 1,000 queries") and lines[3].endswith("target 200 us")
    assert lines[4:] == ["(scikit-learn is not installed: no LogisticRegression.predict_proba rows)"]


def test_asv_query_suite_routes_the_bench_queries(asv_suites):
    before = kernels.active_isa()
    suite = asv_suites["bench_query"].Query()
    try:
        isa = kernels.available_isas()[0]
        suite.time_route(isa)
        assert kernels.active_isa() == isa and suite.key == (isa,)
        made = benchmarks.query_inputs()
        assert np.array_equal(suite.inputs.embedding, made.embedding)
        assert suite.inputs.prompt_length == made.prompt_length
        assert np.array_equal(suite.inputs.embeddings, made.embeddings)
        assert np.array_equal(suite.inputs.prompt_lengths, made.prompt_lengths)
        router = suite.router
        suite.time_route_batch_1000(isa)
        assert suite.router is router  # prepared once per parameter set
    finally:
        kernels.set_isa(before)


def test_asv_sklearn_suite_exists_only_with_sklearn(monkeypatch, fake_sklearn):
    """Without scikit-learn the suite is not defined; with it, it predicts on the bench's feature rows."""
    from importlib.machinery import ModuleSpec
    from importlib.util import find_spec

    monkeypatch.syspath_prepend(str(ROOT / "asv_bench"))
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    sys.modules["sklearn"].__spec__ = ModuleSpec("sklearn", None)  # find_spec finds it
    try:
        module = importlib.import_module("benchmarks.bench_query")
        suite = module.QuerySklearn()
        suite.time_predict_proba(1000)
        assert fake_sklearn["limits"] == [1, 1]  # timed on one thread, as bench times it (and fitted on one)
        one, many = benchmarks.query_inputs().features()
        assert np.array_equal(suite.X, many) and suite.key == (1000,)
        suite.time_predict_proba(1)
        assert np.array_equal(suite.X, one)
        monkeypatch.setitem(sys.modules, "sklearn", None)
        assert find_spec("sklearn") is None
        del sys.modules["benchmarks.bench_query"]
        module = importlib.import_module("benchmarks.bench_query")
        assert not hasattr(module, "QuerySklearn") and hasattr(module, "Query")
    finally:
        for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
            del sys.modules[name]


# --------------------------------------------------------------------------------------------------------
# The text group: text to decision, beside the embedding alone and the routing alone
# --------------------------------------------------------------------------------------------------------

TEXT_NAMES = ["QueryRouter.route_text, one short prompt", "  embed(prompt) alone (onnxruntime: once, no ISA)",
              "  QueryRouter.route alone", "QueryRouter.route_texts, {} short prompts",
              "  embed(prompts) alone (onnxruntime: once, no ISA)", "  QueryRouter.route_batch alone"]
TEXT_ARGV = ["bench", "--group", "text", "--repeats", "1", "--seconds", "0.0001", "--no-training"]


def text_names(batch: int) -> list[str]:
    return [name.format(f"{batch:,}") for name in TEXT_NAMES]


@pytest.fixture
def fake_embed(monkeypatch):
    """A stand-in default embedder (unit vectors from a hash of the text); returns what it was asked to embed."""
    import zlib

    from tinydancer import embed

    seen: list = []

    class FakeEmbedder:
        threads = 1
        batch_size = 32

        def embed(self, texts):
            seen.append(texts)
            items = [texts] if isinstance(texts, str) else list(texts)
            E = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(384) for t in items])
            E = (E / np.linalg.norm(E, axis=1, keepdims=True)).astype(np.float32)
            return E[0] if isinstance(texts, str) else E

    fake = FakeEmbedder()
    monkeypatch.setattr(embed, "default_embedder", lambda: fake)
    monkeypatch.setattr(embed, "embed", lambda texts: fake.embed(texts))
    return seen


@pytest.fixture
def no_embed_extra(monkeypatch):
    """The default embedder fails as it does when the [embed] extra is not installed."""
    from tinydancer import embed
    from tinydancer.errors import MissingExtraError

    def missing():
        raise MissingExtraError('text embedding needs onnxruntime: pip install "tinydancer[embed]"')

    monkeypatch.setattr(embed, "default_embedder", missing)


def test_text_prompts_are_deterministic_short_and_nested():
    prompts = benchmarks.text_prompts(1000)
    assert prompts == benchmarks.text_prompts(1000) == benchmarks.text_prompts(1000, seed=0)
    assert benchmarks.text_prompts() == prompts[:200] == benchmarks.text_prompts(200, 0)
    assert benchmarks.text_prompts(1) == prompts[:1]
    assert len(prompts) == 1000 and len(set(prompts)) > 990  # different prompts, not one repeated
    words = set(benchmarks.TEXT_WORDS)
    openers = dict(benchmarks.TEXT_OPENERS)
    for p in prompts:
        assert isinstance(p, str) and p.isascii() and p == p.strip()
        first, *rest = p[:-1].split(" ")
        assert 6 <= 1 + len(rest) <= 15 and p[-1] == openers[first] and set(rest) <= words
    counts = {len(p.split()) for p in prompts}
    assert counts == set(range(6, 16))  # every length from 6 to 15 words occurs
    other = benchmarks.text_prompts(200, seed=1)
    assert other == benchmarks.text_prompts(200, seed=1) and other != prompts[:200]
    for bad in ({"n": 0}, {"n": 2.0}, {"n": True}, {"seed": -1}, {"seed": "0"}):
        with pytest.raises(InvalidInputError):
            benchmarks.text_prompts(**{"n": 3, **bad})


def test_time_each_times_every_call_once_per_pass():
    calls: list[int] = []
    cases = counting_benchmarks(3, calls)
    median, low, high = benchmarks.time_each([fn for _, fn, _ in cases], repeats=4)
    assert calls == [4, 4, 4] and 0 <= low <= median <= high  # no warm-up call, one call a pass
    with pytest.raises(InvalidInputError):
        benchmarks.time_each([], repeats=1)
    with pytest.raises(InvalidInputError):
        benchmarks.time_each([fn for _, fn, _ in cases], repeats=0)
    assert calls == [4, 4, 4]


def test_rows_honour_the_once_timing_and_describe_hooks():
    """A per_isa=False call is timed once and its figure shown for every ISA; describe writes the peer text."""
    calls: list[int] = []
    cases = counting_benchmarks(2, calls)
    warmed: list[int] = []
    described: list[list[benchmarks.Timing]] = []

    def describe(row):
        described.append(row)
        return f"{len(row)} timings"

    once = benchmarks.PerCall(lambda: [cases[0][1]], warm=lambda: warmed.append(1), per_isa=False,
                              describe=describe)
    each = benchmarks.PerCall(lambda: [cases[1][1]])
    isas = kernels.available_isas()
    before = kernels.active_isa()
    rows = list(benchmarks.measure([("once", once, "ignored"), ("each", each, "kept")], isas, repeats=3,
                                   target_s=1e-5))
    assert kernels.active_isa() == before
    assert calls == [3, 3 * len(isas)] and warmed == [1]
    first, second = rows
    assert [t.isa for t in first] == [t.isa for t in second] == isas
    assert len({(t.median_ns, t.min_ns, t.max_ns) for t in first}) == 1
    assert {t.reference for t in first} == {f"{len(isas)} timings"} and described[0][0].name == "once"
    assert {t.reference for t in second} == {""}  # PerCall without describe: no peer text


def test_text_rows_come_out_of_the_row_iterator(fake_embed):
    cases = benchmarks.text_benchmarks(prompts=5, batch=7)
    assert [name for name, _, _ in cases] == text_names(7)
    assert fake_embed == []  # nothing embedded before the rows are timed
    isas = kernels.available_isas()
    rows = list(benchmarks.measure(cases, isas, repeats=2, target_s=1e-5))
    assert [[t.isa for t in row] for row in rows] == [isas] * 6
    assert [row[0].name for row in rows] == text_names(7)
    for i in (1, 4):  # the embedding alone: timed once, the same figure in every column
        assert len({t.median_ns for t in rows[i]}) == 1
    assert all(t.median_ns > 0 for row in rows for t in row)
    peers = [row[0].reference for row in rows]
    assert peers[0] == "median of 5 prompts, one call each" and peers[1] == "onnxruntime, 1 thread"
    assert peers[2].startswith("routing share: ") and peers[2].endswith("(target < 1%)")
    assert peers[3].startswith("prompts/s: ") and peers[4].endswith("prompts/s; batches of 32")
    assert peers[5].startswith("routing share: ")
    for isa in isas:
        assert f" {isa} " in peers[2] and f" {isa} " in peers[3] and f" {isa} " in peers[5]
    prompts = benchmarks.text_prompts(7)
    singles = [t for t in fake_embed if isinstance(t, str)]
    assert set(singles) == set(prompts[:5])  # route_text and embed(p): one prompt a call
    assert prompts in fake_embed  # route_texts and embed(prompts): the whole batch in one call


def test_text_rows_with_the_embed_extra():
    from tinydancer import embed
    from tinydancer.errors import MissingExtraError

    try:
        embedder = embed.default_embedder()
    except MissingExtraError:
        pytest.skip("the [embed] extra is not installed")
    cases = benchmarks.text_benchmarks(prompts=3, batch=4)
    isas = kernels.available_isas()
    rows = list(benchmarks.measure(cases, isas, repeats=1, target_s=1e-5))
    assert [row[0].name for row in rows] == text_names(4)
    assert [[t.isa for t in row] for row in rows] == [isas] * 6
    assert rows[1][0].reference == f"onnxruntime, {embedder.threads} thread{'s' if embedder.threads > 1 else ''}"
    assert all(row[0].reference for row in rows)


def test_text_group_without_the_embed_extra_has_no_rows(no_embed_extra):
    assert benchmarks.text_benchmarks() == [] and benchmarks.make_benchmarks(["text"]) == []


def test_cli_text_group_alone_without_the_extra_prints_the_note(no_embed_extra, capsys):
    assert cli.main([*TEXT_ARGV, "--isa", "scalar"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("tinydancer ")  # the title, no header and no rows
    assert lines[1] == bench.MISSING_EMBED and "[embed]" in lines[1] and lines[1].startswith("(")


def test_cli_text_group_after_other_rows_without_the_extra(no_embed_extra, fake_sklearn, capsys):
    assert cli.main([*TEXT_ARGV, "--group", "query", "--isa", "scalar"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["benchmark", "scalar", "peer"]
    assert len(lines) == 2 + 4 + 1 and lines[-1] == bench.MISSING_EMBED


def test_cli_text_group_prints_its_rows(fake_embed, capsys):
    assert cli.main([*TEXT_ARGV, "--isa", "scalar"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["benchmark", "scalar", "peer"]
    assert len(lines) == 8 and bench.MISSING_EMBED not in lines
    for line, name in zip(lines[2:], text_names(1000)):
        assert line.startswith(name)
    assert lines[2].endswith("median of 200 prompts, one call each")
    assert lines[5].split("  ")[-1].startswith("prompts/s: scalar ")


def test_asv_text_suites_exist_only_with_the_extra(monkeypatch):
    """Without onnxruntime (or tokenizers, or the model package) the module defines no suite."""
    monkeypatch.syspath_prepend(str(ROOT / "asv_bench"))
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # find_spec finds nothing
    try:
        module = importlib.import_module("benchmarks.bench_text")
        assert not hasattr(module, "RouteText") and not hasattr(module, "RouteTexts")
    finally:
        for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
            del sys.modules[name]


def test_asv_text_suites_route_the_bench_prompts(asv_suites):
    module = asv_suites["bench_text"]
    if not hasattr(module, "RouteText"):
        pytest.skip("the [embed] extra is not installed")
    one = module.RouteText()
    assert one.prompts == benchmarks.TEXT_PROMPTS and one.repeat == benchmarks.TEXT_PROMPTS and one.number == 1
    one.prompts = 3  # a small run of the same suite
    for _ in range(4):
        one.time_route_text()
    assert one.texts == benchmarks.text_prompts(3) and one.key == () and one.next == 1  # every prompt in turn
    many = module.RouteTexts()
    assert many.batch == benchmarks.TEXT_BATCH and many.number == 1 and many.warmup_time > 0
    many.batch = 4
    many.time_route_texts_1000()
    assert many.texts == benchmarks.text_prompts(4)
