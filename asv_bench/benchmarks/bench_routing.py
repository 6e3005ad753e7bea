"""The crate's benchmark table from Python: feature extraction, complete routing with a CandidateBatch and
with Candidate objects, 384-d embeddings, the shipped default model."""

from __future__ import annotations

import time

import numpy as np

from tinydancer.features import FeatureEngineer
from tinydancer.router import Router
from tinydancer.synthetic import candidate_batch, candidate_list, random_candidates, random_query
from tinydancer.types import RoutingRequest

from .common import ISAS, IsaBenchmark


class Routing(IsaBenchmark):
    params = (ISAS, [10, 50, 100])
    param_names = ["isa", "candidates"]

    def setup(self, isa, n):
        super().setup(isa, n)
        rng = np.random.default_rng(13)
        query = random_query(rng)
        cols = random_candidates(rng, query, n, now=time.time())
        self.batch = candidate_batch(cols, metadata=False)
        objects = candidate_list(cols, metadata=False)
        self.query = query
        self.columnar = RoutingRequest(query, self.batch)
        self.listed = RoutingRequest(query, objects)
        self.router = Router()
        self.engineer = FeatureEngineer()

    def time_feature_extraction(self, isa, n):
        self.engineer.extract_batch_features(self.query, self.batch)

    def time_route_candidate_batch(self, isa, n):
        self.router.route(self.columnar)

    def time_route_candidate_objects(self, isa, n):
        self.router.route(self.listed)
