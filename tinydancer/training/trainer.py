""":class:`Trainer`: mini-batch training of a :class:`~tinydancer.model.FastGRNN` by backpropagation
through time, with Adam, L2 on the weight matrices, global-norm gradient clipping, step learning-rate
decay, early stopping and optional knowledge distillation.

Two hooks constrain the weights while they train: ``masks`` fix chosen weights of W and U at zero (the
paper's retraining on a fixed support), and a ``projection`` runs after every optimizer step and may change
the weights in place (the paper's iterative hard thresholding; see :func:`tinydancer.training.compress`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tinydancer.errors import ConfigError, InvalidInputError
from tinydancer.model import FastGRNN
from tinydancer.training.bptt import data_loss, forward, objective, soften
from tinydancer.training.config import TrainingConfig, TrainingMetrics
from tinydancer.training.inputs import PreparedData, TrainingDataWarning, check_model, one_class_message, prepare
from tinydancer.training.metrics import logit_accuracy

__all__ = ["Trainer", "Projection", "ParamLayout", "clip_by_global_norm"]

Projection = Callable[[int, Mapping[str, np.ndarray]], None]
"""``projection(epoch, params)``: called after every optimizer step with the epoch's index (from 0) and the
parameters, to change them in place (see :meth:`Trainer.fit`)."""

# The order of the parameters in the flat vector the optimizer updates.
_ORDER = ("W", "W1", "W2", "U", "U1", "U2", "b_z", "b_h", "w_out", "b_out", "zeta", "nu")


class ParamLayout:
    """All parameters as views into one flat float64 vector, so Adam and clipping are a few vector ops.

    Args:
        weights: parameters keyed as :meth:`FastGRNN.weights`; only their names and shapes are used.

    Attributes:
        names: the parameter names, in their order in the vector.
        shapes: each parameter's shape.
        slices: each parameter's place in the vector.
        size: the vector's length.
    """

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        self.names = [n for n in _ORDER if n in weights]
        self.shapes = {n: np.shape(weights[n]) for n in self.names}
        self.slices: dict[str, slice] = {}
        offset = 0
        for n in self.names:
            size = int(np.prod(self.shapes[n], dtype=np.int64))
            self.slices[n] = slice(offset, offset + size)
            offset += size
        self.size = offset

    def flatten(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """A new float64 vector holding ``arrays`` (keyed like the layout's parameters)."""
        return np.concatenate([np.ravel(arrays[n]) for n in self.names]).astype(np.float64, copy=False)

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Each parameter as a view into ``flat``: writing one writes the vector."""
        return {n: flat[self.slices[n]].reshape(self.shapes[n]) for n in self.names}


def clip_by_global_norm(grad: np.ndarray, max_norm: float) -> tuple[np.ndarray, float]:
    """Rescale a gradient vector to a maximum length.

    Args:
        grad: the gradient, all parameters as one vector.
        max_norm: the longest norm allowed; 0 disables clipping.

    Returns:
        (``grad`` rescaled to norm ``max_norm`` when its norm is larger, else ``grad`` itself; the norm
        before clipping).
    """
    norm = float(np.sqrt(np.vdot(grad, grad)))
    if max_norm > 0.0 and norm > max_norm:
        return grad * (max_norm / norm), norm
    return grad, norm


class _Adam:
    """Adam's moment estimates for one flat parameter vector, with bias correction."""

    def __init__(self, size: int, beta1: float, beta2: float, epsilon: float) -> None:
        self.b1, self.b2, self.eps = beta1, beta2, epsilon
        self.m = np.zeros(size)
        self.v = np.zeros(size)
        self.steps = 0

    def step(self, theta: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Move ``theta`` in place one step of size ``lr`` against ``grad``."""
        b1, b2 = self.b1, self.b2
        self.steps += 1
        self.m *= b1
        self.m += (1.0 - b1) * grad
        self.v *= b2
        self.v += (1.0 - b2) * (grad * grad)
        theta -= lr * (self.m / (1.0 - b1**self.steps)) / (np.sqrt(self.v / (1.0 - b2**self.steps)) + self.eps)


def _keep_vector(layout: ParamLayout, params: dict[str, np.ndarray],
                 masks: Mapping[str, Any] | None) -> np.ndarray | None:
    """1.0 where a weight may train, 0.0 where a mask fixes it at zero (and zero those weights now);
    ``None`` without masks.

    Raises:
        InvalidInputError: masks is not a mapping, has keys other than W and U, names a matrix stored
            low-rank, or holds a mask that is not a bool array of the matrix's shape.
    """
    if masks is None:
        return None
    if not isinstance(masks, Mapping):
        raise InvalidInputError("masks must be a mapping {'W': bool array, 'U': bool array}")
    unknown = set(masks) - {"W", "U"}
    if unknown:
        raise InvalidInputError(f"masks may only have the keys 'W' and 'U', got {sorted(unknown)}")
    keep = np.ones(layout.size)
    for name, mask in masks.items():
        if name not in params:
            raise InvalidInputError(f"masks[{name!r}] needs a dense {name}, but this model stores it low-rank")
        a = np.asarray(mask)
        if a.dtype != np.bool_ or a.shape != params[name].shape:
            raise InvalidInputError(f"masks[{name!r}] must be a bool array of shape {params[name].shape}, "
                                    f"got {a.dtype} {a.shape}")
        params[name][~a] = 0.0
        keep[layout.slices[name]] = a.ravel()
    return keep


def _project(projection: Projection, epoch: int, params: dict[str, np.ndarray]) -> None:
    """Run ``projection`` on a copy of the dict of views ``params`` and copy any array it replaced back
    into its view, so the optimizer's vector holds what the projection left.

    Raises:
        InvalidInputError: the projection put an array of another shape under a key.
    """
    given = dict(params)
    projection(epoch, given)
    for name, view in params.items():
        new = given.get(name, view)
        if new is view:
            continue
        new = np.asarray(new)
        if new.shape != view.shape:
            raise InvalidInputError(f"the projection replaced {name} of shape {view.shape} by one of shape "
                                    f"{new.shape}")
        view[...] = new


def _check_hooks(callback: Any, projection: Any) -> None:
    """Raise InvalidInputError unless ``callback`` and ``projection`` are each None or callable."""
    if callback is not None and not callable(callback):
        raise InvalidInputError("callback must be callable")
    if projection is not None and not callable(projection):
        raise InvalidInputError("projection must be callable")


class Trainer:
    """Trains a :class:`FastGRNN` in place.

    Args:
        model: the model to train; its current weights are the starting point.
        config: hyperparameters (default :class:`TrainingConfig`).

    Attributes:
        history: the metrics of the last :meth:`fit`.

    Raises:
        InvalidInputError: ``model`` is not a :class:`FastGRNN`.
        ConfigError: ``config`` is not a :class:`TrainingConfig`.
    """

    def __init__(self, model: FastGRNN, config: TrainingConfig | None = None) -> None:
        self.model = check_model(model)
        self.config = config if config is not None else TrainingConfig()
        if not isinstance(self.config, TrainingConfig):
            raise ConfigError(f"config must be a TrainingConfig, got {type(config).__name__}")
        self.history: list[TrainingMetrics] = []

    def fit(self, X: Any, y: Any, soft_targets: Any = None, X_val: Any = None, y_val: Any = None,
            soft_val: Any = None, callback: Callable[[TrainingMetrics], bool | None] | None = None, *,
            masks: Mapping[str, Any] | None = None, projection: Projection | None = None) -> list[TrainingMetrics]:
        """Train by backpropagation through time with Adam; returns one :class:`TrainingMetrics` per epoch.

        The model is only written at the end (with :meth:`FastGRNN.set_weights`, so it is stored as dense
        float32 again, or low-rank when it was low-rank: pruning and quantization are dropped). When
        anything fails, the model is left as it was.

        Args:
            X: inputs, (N, input_dim) when the model's timesteps is 1, else (N, T, input_dim).
            y: (N,) labels in [0, 1] for output_dim 1 (binary cross-entropy), else integer classes in
                [0, output_dim) (softmax cross-entropy).
            soft_targets: teacher probabilities for distillation, (N,) in [0, 1] or (N, output_dim) rows
                summing to 1. Used only when ``config.enable_distillation``; without them a distilling
                config trains on the hard labels alone, as the crate does.
            X_val, y_val, soft_val: validation data; when absent, ``config.validation_split`` of X is held
                out at random (seeded), or, with split 0, the training set is used.
            callback: called with each epoch's metrics; returning ``False`` stops training (the best
                weights are still restored when early stopping is on).
            masks: ``{"W": bool array, "U": bool array}`` (either or both): weights where the mask is False
                are set to 0 and stay exactly 0. Only for a W (U) stored dense.
            projection: called as ``projection(epoch, params)`` after every optimizer step, with the
                epoch's index (from 0) and the parameters as float64 arrays in a dict keyed as
                :meth:`FastGRNN.weights`, to project them onto a constraint set. It may change the arrays
                in place (``params["W"] *= keep``) or put new arrays of the same shape under their keys;
                either way the optimizer continues from the changed weights. Hard thresholding of W to
                sparsity 0.8, for example, is ``def project(epoch, p): p["W"] *= magnitude_mask(p["W"], 0.8)``;
                :func:`compress` thresholds W and U this way with a sparsity that ramps up over the epochs.

        With one timestep U is left as it is (it multiplies h0 = 0, so nothing trains it).

        Returns:
            The per-epoch metrics (also kept as :attr:`history`).

        Raises:
            InvalidInputError: bad data (shape, NaN/Inf, features beyond
                :data:`~tinydancer.training.inputs.MAX_FEATURE_MAGNITUDE`, labels out of range, empty or
                fewer than 2 examples left to train on, mismatched lengths, X_val without y_val, bad masks),
                a callback or projection that is not callable, or a projection that put an array of another
                shape under a parameter's key.
            ConfigError: training diverged to non-finite values (lower ``learning_rate``).

        Warns:
            TrainingDataWarning: every training label is the same (and no teacher's soft targets are
                distilled from).
            UserWarning: ``soft_targets`` were given but distillation is off.
        """
        _check_hooks(callback, projection)
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        data = prepare(self.model.config, cfg.validation_split, rng, X, y, soft_targets, X_val, y_val, soft_val)
        if soft_targets is not None and not cfg.enable_distillation:
            warnings.warn("soft_targets are ignored because enable_distillation is False", stacklevel=2)
        one_class = one_class_message(data.y)
        if one_class is not None and not (cfg.enable_distillation and data.soft is not None):
            warnings.warn(one_class, TrainingDataWarning, stacklevel=2)
        return self.run(data, rng, callback, masks=masks, projection=projection)

    def run(self, data: PreparedData, rng: np.random.Generator,
            callback: Callable[[TrainingMetrics], bool | None] | None = None, *,
            masks: Mapping[str, Any] | None = None, projection: Projection | None = None) -> list[TrainingMetrics]:
        """:meth:`fit` on data already checked and split by :func:`~tinydancer.training.inputs.prepare`
        (what :func:`~tinydancer.training.compress` does once for all its stages), shuffling with ``rng``.

        With one timestep U is left as it is: it multiplies h0 = 0, so no gradient reaches it, and L2 alone
        would only shrink it towards zero.

        Raises:
            InvalidInputError: bad masks, or a callback or projection that is not callable.
            ConfigError: training diverged to non-finite values.
        """
        cfg, mcfg = self.config, self.model.config
        _check_hooks(callback, projection)

        weights = {k: np.asarray(v, dtype=np.float64) for k, v in self.model.weights().items()}
        layout = ParamLayout(weights)
        theta = layout.flatten(weights)
        params = layout.views(theta)
        keep = _keep_vector(layout, params, masks)
        if mcfg.timesteps == 1:
            keep = np.ones(layout.size) if keep is None else keep
            for name in ("U", "U1", "U2"):
                if name in layout.slices:
                    keep[layout.slices[name]] = 0.0

        distill = cfg.enable_distillation
        temperature, alpha = cfg.distillation_temperature, cfg.distillation_alpha
        q_train = soften(data.soft, temperature, mcfg.output_dim) if distill and data.soft is not None else None
        q_val = soften(data.soft_val, temperature, mcfg.output_dim) if distill and data.soft_val is not None else None

        n, bs, l2 = data.X.shape[0], cfg.batch_size, cfg.l2_reg
        adam = _Adam(layout.size, cfg.adam_beta1, cfg.adam_beta2, cfg.adam_epsilon)
        best_loss, best_theta, waited = math.inf, None, 0
        history: list[TrainingMetrics] = []
        for epoch in range(cfg.epochs):
            started = time.perf_counter()
            lr = cfg.learning_rate * cfg.lr_decay ** (epoch // cfg.lr_decay_step)
            perm = rng.permutation(n)
            Xe, ye = data.X[perm], data.y[perm]
            qe = None if q_train is None else q_train[perm]
            total = 0.0
            for start in range(0, n, bs):
                stop = min(start + bs, n)
                loss, _, grads = objective(params, Xe[start:stop], ye[start:stop],
                                           None if qe is None else qe[start:stop], temperature, alpha, l2)
                total += loss * (stop - start)
                g = layout.flatten(grads)
                if keep is not None:
                    g *= keep
                g, _ = clip_by_global_norm(g, cfg.grad_clip)
                adam.step(theta, g, lr)
                if projection is not None:
                    _project(projection, epoch, params)
            train_loss = total / n
            if not (math.isfinite(train_loss) and np.isfinite(theta).all()):
                raise ConfigError(f"training diverged at epoch {epoch} (non-finite loss or weights); "
                                  f"lower learning_rate (now {cfg.learning_rate})")
            train_logits, _ = forward(params, data.X, keep_cache=False)
            val_logits, _ = forward(params, data.X_val, keep_cache=False)
            val_loss, _ = data_loss(val_logits, data.y_val, q_val, temperature, alpha)
            metrics = TrainingMetrics(
                epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                train_accuracy=logit_accuracy(train_logits, data.y),
                val_accuracy=logit_accuracy(val_logits, data.y_val),
                learning_rate=lr, seconds=time.perf_counter() - started,
            )
            history.append(metrics)
            stop_now = False
            if cfg.early_stopping_patience is not None:
                if val_loss < best_loss:
                    best_loss, best_theta, waited = val_loss, theta.copy(), 0
                else:
                    waited += 1
                    stop_now = waited >= cfg.early_stopping_patience
            if callback is not None and callback(metrics) is False:
                stop_now = True
            if stop_now:
                break

        final = best_theta if best_theta is not None else theta
        self.model.set_weights({k: np.asarray(a, dtype=np.float32) for k, a in layout.views(final).items()})
        self.history = history
        return history
