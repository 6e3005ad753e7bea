"""Quality measures: :func:`evaluate` (loss, accuracy and ROC AUC of a model, run on the C kernels),
:func:`roc_auc`, and :func:`logit_accuracy` (the accuracy the trainer reports per epoch)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinydancer.model import FastGRNN, FastGRNNConfig
from tinydancer.training.bptt import EPS
from tinydancer.training.inputs import as_inputs, as_labels, check_model

__all__ = ["evaluate", "roc_auc", "logit_accuracy"]


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Rank-based ROC AUC (the Mann-Whitney U statistic), tied scores sharing their average rank.

    Args:
        scores: (N,) scores, higher meaning more likely positive.
        positive: (N,) bools, True for the positive examples.

    Returns:
        The probability that a random positive scores above a random negative (ties counting half); NaN
        when only one class is present.
    """
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    first = np.concatenate([[True], s[1:] != s[:-1]])
    starts = np.flatnonzero(first)
    ends = np.concatenate([starts[1:], [s.size]])
    average = (starts + ends + 1) / 2.0  # positions start..end-1 hold ranks start+1..end
    ranks = np.empty(s.size)
    ranks[order] = average[np.cumsum(first) - 1]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logit_accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of logits (B, output_dim) against labels: logit >= 0 (probability >= 0.5) against
    label >= 0.5 for output_dim 1, else argmax against the class."""
    if logits.shape[1] == 1:
        return float(np.mean((logits[:, 0] >= 0.0) == (y >= 0.5)))
    return float(np.mean(np.argmax(logits, axis=1) == y))


def _kernel_input(X: np.ndarray, config: FastGRNNConfig) -> np.ndarray:
    """Checked (N, T, I) inputs as the kernels take them: float32, (N, I) when T is 1."""
    a = X[:, 0, :] if config.timesteps == 1 else X
    return np.ascontiguousarray(a, dtype=np.float32)


def evaluate(model: FastGRNN, X: Any, y: Any) -> dict[str, float | None]:
    """Loss, accuracy and ROC AUC of ``model`` on (X, y), computed from :meth:`FastGRNN.forward_batch`
    (the C kernels, in the model's stored form: sparse, int8, ...).

    Args:
        model: the model to measure.
        X: inputs, (N, input_dim) when the model's timesteps is 1, else (N, T, input_dim).
        y: (N,) labels in [0, 1] for output_dim 1, else integer classes.

    Returns:
        ``{"loss", "accuracy", "auc", "n"}``: mean binary cross-entropy (output_dim 1) or softmax
        cross-entropy, with probabilities clipped to [1e-7, 1 - 1e-7]; accuracy at threshold 0.5
        (labels >= 0.5 count as positive) or by argmax; rank-based ROC AUC for output_dim 1 (NaN when y
        has one class only, ``None`` for output_dim > 1); the number of examples.

    Raises:
        InvalidInputError: not a model, or bad X or y, as for :meth:`Trainer.fit`.
    """
    model = check_model(model)
    cfg = model.config
    Xa = as_inputs(X, "X", cfg)
    ya = as_labels(y, "y", Xa.shape[0], cfg.output_dim)
    probs = np.asarray(model.forward_batch(_kernel_input(Xa, cfg)), dtype=np.float64)
    if cfg.output_dim == 1:
        p = np.clip(probs.reshape(-1), EPS, 1.0 - EPS)
        loss = float(np.mean(-(ya * np.log(p) + (1.0 - ya) * np.log1p(-p))))
        positive = ya >= 0.5
        accuracy = float(np.mean((probs.reshape(-1) >= 0.5) == positive))
        auc: float | None = roc_auc(probs.reshape(-1), positive)
    else:
        picked = np.clip(probs[np.arange(ya.size), ya], EPS, 1.0)
        loss = float(np.mean(-np.log(picked)))
        accuracy = float(np.mean(np.argmax(probs, axis=1) == ya))
        auc = None
    return {"loss": loss, "accuracy": accuracy, "auc": auc, "n": int(ya.size)}
