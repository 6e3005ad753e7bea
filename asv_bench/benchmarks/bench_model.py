"""The FastGRNN model from Python: dense, int8 and sparse int8 (90% zeros) weights, at the candidate-scoring
size (input 5, hidden 8) and the query size (input 384, hidden 32)."""

from __future__ import annotations

import numpy as np

from tinydancer.model import FastGRNN, FastGRNNConfig

from .common import Suite, vectors

FORMS = ["dense", "int8", "sparse_int8"]
SHAPES = ["5x8", "384x32"]


def make_model(form: str, shape: str) -> FastGRNN:
    inputs, hidden = (int(v) for v in shape.split("x"))
    model = FastGRNN(FastGRNNConfig(input_dim=inputs, hidden_dim=hidden), seed=0)
    if form == "sparse_int8":
        model.prune(0.9)
    if form in ("int8", "sparse_int8"):
        model.quantize()
    return model


class Model(Suite):
    params = (FORMS, SHAPES)
    param_names = ["weights", "shape"]

    def prepare(self, form, shape):
        super().prepare(form, shape)
        self.model = make_model(form, shape)
        inputs = self.model.config.input_dim
        self.x = vectors(1, inputs, seed=10)[0]
        self.X = vectors(100, inputs, seed=11)
        self.out = np.empty(100, np.float32)

    def time_forward(self, form, shape):
        if self.key != (form, shape):
            self.prepare(form, shape)
        self.model.forward(self.x)

    def time_forward_batch_100(self, form, shape):
        if self.key != (form, shape):
            self.prepare(form, shape)
        self.model.forward_batch(self.X, self.out)

    def track_size_bytes(self, form, shape):
        if self.key != (form, shape):
            self.prepare(form, shape)
        return self.model.size_bytes()

    track_size_bytes.unit = "bytes"


class Training:
    """One epoch of backpropagation through time over 10,000 examples (input 5, hidden 8, batch 32).

    An epoch (about 20 ms) outlasts asv's 10 ms sample, so a sample is one call with or without ``setup``
    (which asv runs, untimed, before each call).
    """

    timeout = 120

    def setup(self):
        from tinydancer.training import TrainingConfig

        rng = np.random.default_rng(12)
        self.X = rng.uniform(0, 1, (10_000, 5)).astype(np.float32)
        self.y = (self.X[:, 0] + self.X[:, 1] > 1.0).astype(np.float32)
        self.config = TrainingConfig(epochs=1, validation_split=0.0, seed=0)

    def time_epoch_10k(self):
        from tinydancer.training import Trainer

        Trainer(FastGRNN(seed=0), self.config).fit(self.X, self.y)
