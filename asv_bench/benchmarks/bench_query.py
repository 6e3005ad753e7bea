"""The query router from Python, per ISA: ``QueryRouter.route`` on one 384-d query and ``route_batch`` on
1,000, with their prompt lengths, the shipped default model; and scikit-learn's ``LogisticRegression``
``predict_proba`` on the same queries when scikit-learn is installed, with BLAS and OpenMP held to one
thread (it runs no tinydancer kernel, so it has no ISA parameter; without scikit-learn the suite is not
defined).

The queries are the ones ``tinydancer bench --group query`` times (:func:`tinydancer.benchmarks.query_inputs`),
so both tools report the same figures within the noise.
"""

from __future__ import annotations

from importlib.util import find_spec

from tinydancer.benchmarks import QUERY_BATCH, query_inputs, sklearn_peer
from tinydancer.query_router.router import QueryRouter

from .common import ISAS, IsaSuite, Suite


class Query(IsaSuite):
    params = (ISAS,)
    param_names = ["isa"]

    def prepare(self, isa):
        super().prepare(isa)
        self.inputs = query_inputs(QUERY_BATCH)
        self.router = QueryRouter.default()

    def time_route(self, isa):
        if self.key != (isa,):
            self.prepare(isa)
        self.router.route(self.inputs.embedding, prompt_length=self.inputs.prompt_length)

    def time_route_batch_1000(self, isa):
        if self.key != (isa,):
            self.prepare(isa)
        self.router.route_batch(self.inputs.embeddings, prompt_length=self.inputs.prompt_lengths)


if find_spec("sklearn") is not None:  # found without importing it; imported by sklearn_peer

    class QuerySklearn(Suite):
        """The first call imports scikit-learn and fits the model (about a second); asv chooses the number of
        calls per sample during its warm-up, which by default (0.1 s) would end inside that call and leave one
        call per sample, so the warm-up here outlasts it."""

        params = ([1, QUERY_BATCH],)
        param_names = ["rows"]
        warmup_time = 4.0

        def prepare(self, rows):
            super().prepare(rows)
            self.predict = sklearn_peer().predict_proba  # scikit-learn and its thread pools are loaded now

            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1)  # one thread, as ``tinydancer bench`` times it (this process only)
            one, many = query_inputs(QUERY_BATCH).features()
            self.X = one if rows == 1 else many

        def time_predict_proba(self, rows):
            if self.key != (rows,):
                self.prepare(rows)
            self.predict(self.X)
