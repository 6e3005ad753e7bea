"""The query model: a few FastGRNN members trained from different seeds, merged into one FastGRNN.

Each member reads the query's inputs (the embedding, and optionally the standardised log prompt length)
and predicts the outcome classes with a softmax (:mod:`~tinydancer.query_router.outcomes`). The members
are trained by :class:`~tinydancer.training.Trainer` with the gate scalars ``zeta`` and ``nu`` held at
their initial values, so that the members can be merged exactly: their W rows and biases stacked into one
cell of ``members * hidden`` units (U is unused with one timestep and stored as an empty sparse matrix), and their output
layers side by side, each divided by the number of members. The merged model's logits are the mean of the
members' logits, so its softmax is the members' normalised geometric mean: one C forward pass for the
whole ensemble.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tinydancer import checks, kernels
from tinydancer.errors import InvalidInputError
from tinydancer.model import FastGRNN, FastGRNNConfig
from tinydancer.training import Trainer, TrainingConfig, TrainingDataWarning

__all__ = ["EnsembleConfig", "train_ensemble", "merge"]


@dataclass(frozen=True)
class EnsembleConfig:
    """How :meth:`QueryRouter.fit <tinydancer.query_router.QueryRouter.fit>` trains its model.

    Args:
        members: FastGRNN members trained from different seeds and merged (>= 1).
        hidden: hidden units per member (the merged model has ``members * hidden``).
        epochs: the most epochs per member (early stopping on a held-out 10% usually ends sooner).
        learning_rate, batch_size, l2_reg, patience: as :class:`~tinydancer.training.TrainingConfig`.
        validation_split: share of the training rows held out for early stopping.
        quantize: store W as int8 per row (the measured quality does not change).
    """

    members: int = 4
    hidden: int = 4
    epochs: int = 60
    learning_rate: float = 0.005
    batch_size: int = 64
    l2_reg: float = 1e-4
    patience: int = 8
    validation_split: float = 0.1
    quantize: bool = True

    def __post_init__(self) -> None:
        checks.integer(self.members, "members", 1, 64)
        checks.integer(self.hidden, "hidden", 1)
        checks.integer(self.epochs, "epochs", 1)
        checks.integer(self.batch_size, "batch_size", 1)
        checks.integer(self.patience, "patience", 0)
        checks.real(self.learning_rate, "learning_rate", 0.0, low_open=True)
        checks.real(self.l2_reg, "l2_reg", 0.0)
        checks.real(self.validation_split, "validation_split", 0.0, 1.0, high_open=True)
        checks.flag(self.quantize, "quantize")


def _hold_gates(zeta: float, nu: float) -> Any:
    """A training projection that puts the gate scalars back to fixed values after every step."""
    def projection(epoch: int, params: dict[str, NDArray[np.float64]]) -> None:
        params["zeta"][...] = zeta
        params["nu"][...] = nu
    return projection


def train_ensemble(X: NDArray[np.float32], classes: NDArray[np.intp], n_classes: int, config: EnsembleConfig,
                   seed: int) -> list[FastGRNN]:
    """Train ``config.members`` FastGRNN members on inputs ``X`` (N, D) and class indices ``classes``.

    Raises:
        InvalidInputError: too few rows to train and validate on.
        ConfigError: training diverged.
    """
    if X.shape[0] < 10:
        raise InvalidInputError(f"embeddings must hold at least 10 queries to train on, got {X.shape[0]}")
    if X.shape[1] > kernels.MAX_DIM:
        raise InvalidInputError(f"the model takes at most {kernels.MAX_DIM} inputs, got {X.shape[1]}")
    members = []
    for k in range(config.members):
        member_seed = seed * 1000 + k
        model = FastGRNN(FastGRNNConfig(input_dim=X.shape[1], hidden_dim=config.hidden, output_dim=n_classes),
                         seed=member_seed)
        weights = model.weights()
        training = TrainingConfig(learning_rate=config.learning_rate, batch_size=config.batch_size,
                                  epochs=config.epochs, validation_split=config.validation_split,
                                  early_stopping_patience=config.patience or None, l2_reg=config.l2_reg,
                                  lr_decay_step=10**9, seed=member_seed)
        with warnings.catch_warnings():  # a class absent from the data is expected (no ties, say)
            warnings.simplefilter("ignore", TrainingDataWarning)
            Trainer(model, training).fit(X, classes, projection=_hold_gates(float(weights["zeta"]),
                                                                             float(weights["nu"])))
        members.append(model)
    return members


def merge(members: list[FastGRNN]) -> FastGRNN:
    """One FastGRNN whose logits are the mean of the members' (see the module docstring). The members must
    share their shapes and gate scalars."""
    weights = [m.parameters() for m in members]
    first = members[0].config
    k = len(members)
    for w in weights[1:]:
        if float(w["zeta"]) != float(weights[0]["zeta"]) or float(w["nu"]) != float(weights[0]["nu"]):
            raise InvalidInputError("members to merge must share zeta and nu")
    hidden = first.hidden_dim * k
    no_weights = kernels.KernelMatrix.sparse(np.zeros(0, np.float32), np.zeros(0, np.int32),
                                             np.zeros(hidden + 1, np.int32), (hidden, hidden))
    return FastGRNN.from_matrices(
        FastGRNNConfig(input_dim=first.input_dim, hidden_dim=hidden, output_dim=first.output_dim),
        kernels.KernelMatrix.dense(np.vstack([w["W"] for w in weights])),
        no_weights,  # U multiplies h0 = 0: stored as an empty sparse matrix
        np.concatenate([w["b_z"] for w in weights]),
        np.concatenate([w["b_h"] for w in weights]),
        np.hstack([w["w_out"] for w in weights]) / np.float32(k),
        np.mean([w["b_out"] for w in weights], axis=0).astype(np.float32),
        float(weights[0]["zeta"]),
        float(weights[0]["nu"]),
    )
