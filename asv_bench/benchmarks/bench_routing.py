"""The crate's benchmark table from Python: feature extraction, complete routing with a CandidateBatch and
with Candidate objects, 384-d embeddings, the shipped default model."""

from __future__ import annotations

import time

import numpy as np

from tinydancer.synthetic import random_candidates, random_query
from tinydancer.features import FeatureEngineer
from tinydancer.router import Router
from tinydancer.types import Candidate, CandidateBatch, RoutingRequest

from .common import ISAS, IsaBenchmark


class Routing(IsaBenchmark):
    params = (ISAS, [10, 50, 100])
    param_names = ["isa", "candidates"]

    def setup(self, isa, n):
        super().setup(isa, n)
        rng = np.random.default_rng(13)
        query = random_query(rng)
        cols = random_candidates(rng, query, n, now=time.time())
        self.batch = CandidateBatch(cols["ids"], cols["embeddings"], cols["created_at"], cols["access_count"],
                                    cols["success_rate"])
        objects = [Candidate(id=cols["ids"][i], embedding=cols["embeddings"][i],
                             created_at=float(cols["created_at"][i]), access_count=int(cols["access_count"][i]),
                             success_rate=float(cols["success_rate"][i])) for i in range(n)]
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
