"""The crate's benchmark table from Python: feature extraction, complete routing with a CandidateBatch and
with Candidate objects, 384-d embeddings, the shipped default model.

The requests are the ones ``tinydancer bench --group routing`` times
(:func:`tinydancer.benchmarks.routing_inputs`), so both tools report the same figures within the noise.
"""

from __future__ import annotations

from tinydancer.benchmarks import routing_inputs
from tinydancer.features import FeatureEngineer
from tinydancer.router import Router

from .common import ISAS, IsaSuite


class Routing(IsaSuite):
    params = (ISAS, [10, 50, 100])
    param_names = ["isa", "candidates"]

    def prepare(self, isa, n):
        super().prepare(isa, n)
        made = routing_inputs(n)
        self.query, self.batch, self.columnar, self.listed = made.query, made.batch, made.columnar, made.listed
        self.router = Router()
        self.engineer = FeatureEngineer()

    def time_feature_extraction(self, isa, n):
        if self.key != (isa, n):
            self.prepare(isa, n)
        self.engineer.extract_batch_features(self.query, self.batch)

    def time_route_candidate_batch(self, isa, n):
        if self.key != (isa, n):
            self.prepare(isa, n)
        self.router.route(self.columnar)

    def time_route_candidate_objects(self, isa, n):
        if self.key != (isa, n):
            self.prepare(isa, n)
        self.router.route(self.listed)
