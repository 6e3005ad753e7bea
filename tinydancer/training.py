"""Training and compression of :class:`~tinydancer.model.FastGRNN` models, in NumPy.

:class:`Trainer` runs real backpropagation through time over mini-batches (float64, vectorised over the
batch), with Adam, L2 on the weight matrices, global-norm gradient clipping, step learning-rate decay,
early stopping and optional knowledge distillation; :class:`TrainingConfig` carries the crate's field names
and defaults. :func:`compress` is the paper's pipeline (Kusupati et al., NeurIPS 2018): dense training,
iterative hard thresholding to a target sparsity, retraining on the fixed support, then CSR storage and
int8 quantization, each stage measured on validation data with the C kernels (:func:`evaluate`).

Example (X: (N, 5) float features, y: (N,) labels in [0, 1])::

    from tinydancer.model import FastGRNN, FastGRNNConfig
    from tinydancer.training import Trainer, TrainingConfig, compress

    model = FastGRNN(FastGRNNConfig(input_dim=5, hidden_dim=16), seed=0)
    history = Trainer(model, TrainingConfig(learning_rate=0.01, epochs=20, seed=0)).fit(X, y)
    report = compress(model, X, y, target_sparsity=0.8, config=TrainingConfig(learning_rate=0.01, seed=0))
    print(report.table())
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from tinydancer.errors import ConfigError, InvalidInputError, ModelError
from tinydancer.model import FastGRNN, FastGRNNConfig, magnitude_mask

__all__ = [
    "TrainingConfig",
    "TrainingMetrics",
    "Trainer",
    "evaluate",
    "StageReport",
    "CompressionReport",
    "compress",
]

# Probabilities are clipped to [_EPS, 1 - _EPS] before a logarithm or a logit.
_EPS = 1e-7
# Weight matrices that L2 applies to; biases, zeta and nu are not regularised.
_REGULARIZED = frozenset({"W", "W1", "W2", "U", "U1", "U2", "w_out"})
_ORDER = ("W", "W1", "W2", "U", "U1", "U2", "b_z", "b_h", "w_out", "b_out", "zeta", "nu")


# --------------------------------------------------------------------------------------------------------
# Configuration and records
# --------------------------------------------------------------------------------------------------------


def _check_number(name: str, value: Any, low: float, high: float, low_open: bool = False,
                  high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        if high == math.inf:
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            raise ConfigError(f"{name} must be {bound}, got {value!r}")
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{name} must be in {interval}, got {value!r}")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters of :class:`Trainer`, with the field names and defaults of the crate's
    ``TrainingConfig`` plus a ``seed``.

    Args:
        learning_rate: Adam's step size at epoch 0 (> 0).
        batch_size: examples per optimizer step (>= 1); the last batch of an epoch may be smaller.
        epochs: the most epochs to run (>= 1).
        validation_split: fraction of ``X`` held out for validation when no ``X_val`` is given, in [0, 1)
            (rounded down to whole examples). When that is no example, training validates on the training
            set itself.
        early_stopping_patience: stop after this many epochs without a lower validation loss and restore
            the best weights; ``None`` trains every epoch and keeps the last weights.
        lr_decay: the learning rate is multiplied by this, in (0, 1], ...
        lr_decay_step: ... every this many epochs (>= 1): epoch e uses
            ``learning_rate * lr_decay ** (e // lr_decay_step)``.
        grad_clip: the gradient (all parameters as one vector) is rescaled to this global norm when longer;
            0 disables clipping.
        adam_beta1, adam_beta2: Adam's moment decay rates, in [0, 1).
        adam_epsilon: Adam's denominator guard (> 0).
        l2_reg: adds ``l2_reg / 2 * ||w||^2`` to the loss for the weight matrices (W, U, their low-rank
            factors, w_out), i.e. ``l2_reg * w`` to their gradients; >= 0.
        enable_distillation: learn from the ``soft_targets`` given to :meth:`Trainer.fit` too.
        distillation_temperature: the temperature T (> 0) at which student and teacher are softened.
        distillation_alpha: weight of the soft loss, in [0, 1] (0 = only hard labels, 1 = only the teacher).
        seed: seeds the validation split and the shuffling; the same seed and data give bit-identical
            weights. ``None`` draws fresh entropy.
    """

    learning_rate: float = 0.001
    batch_size: int = 32
    epochs: int = 100
    validation_split: float = 0.2
    early_stopping_patience: int | None = 10
    lr_decay: float = 0.5
    lr_decay_step: int = 20
    grad_clip: float = 5.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    l2_reg: float = 1e-5
    enable_distillation: bool = False
    distillation_temperature: float = 3.0
    distillation_alpha: float = 0.5
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_number("learning_rate", self.learning_rate, 0.0, math.inf, low_open=True)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("epochs", self.epochs, 1)
        _check_number("validation_split", self.validation_split, 0.0, 1.0, high_open=True)
        if self.early_stopping_patience is not None:
            _check_int("early_stopping_patience", self.early_stopping_patience, 1)
        _check_number("lr_decay", self.lr_decay, 0.0, 1.0, low_open=True)
        _check_int("lr_decay_step", self.lr_decay_step, 1)
        _check_number("grad_clip", self.grad_clip, 0.0, math.inf)
        _check_number("adam_beta1", self.adam_beta1, 0.0, 1.0, high_open=True)
        _check_number("adam_beta2", self.adam_beta2, 0.0, 1.0, high_open=True)
        _check_number("adam_epsilon", self.adam_epsilon, 0.0, math.inf, low_open=True)
        _check_number("l2_reg", self.l2_reg, 0.0, math.inf)
        if not isinstance(self.enable_distillation, bool):
            raise ConfigError(f"enable_distillation must be a bool, got {self.enable_distillation!r}")
        _check_number("distillation_temperature", self.distillation_temperature, 0.0, math.inf, low_open=True)
        _check_number("distillation_alpha", self.distillation_alpha, 0.0, 1.0)
        if self.seed is not None:
            _check_int("seed", self.seed, 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        """The inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`, missing ones default."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a training config must be a mapping, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown training config keys: {sorted(unknown)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class TrainingMetrics:
    """What one epoch did (the crate's fields, plus ``seconds``).

    Attributes:
        epoch: the epoch's index, counted from 0 as in the crate.
        train_loss: mean loss over the epoch's mini-batches as they were trained (the distillation
            objective when distilling), without the L2 term.
        val_loss: the same loss on the validation data after the epoch (the hard-label loss when the
            validation data has no soft targets).
        train_accuracy, val_accuracy: accuracy after the epoch on the training and validation data
            (probability >= 0.5 against label >= 0.5, or argmax against the class).
        learning_rate: the learning rate used during the epoch.
        seconds: wall time of the epoch, validation included.
    """

    epoch: int
    train_loss: float
    val_loss: float
    train_accuracy: float
    val_accuracy: float
    learning_rate: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------------
# Forward, loss and backward in float64
# --------------------------------------------------------------------------------------------------------


def _sigmoid(x: Any) -> Any:
    # tanh form: no overflow warnings for large |x|
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _dense(params: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name in params:
        return params[name]
    return params[name + "1"] @ params[name + "2"]


def _forward(params: Mapping[str, np.ndarray], X: np.ndarray, keep_cache: bool = True) -> tuple[np.ndarray, Any]:
    """Logits (B, output_dim) for X (B, T, I); the cache holds what :func:`_backward` needs."""
    W, U = _dense(params, "W"), _dense(params, "U")
    batch, steps, inputs = X.shape
    hidden = W.shape[0]
    sz, sn = _sigmoid(float(params["zeta"])), _sigmoid(float(params["nu"]))
    b_z, b_h = params["b_z"], params["b_h"]
    wx = (X.reshape(batch * steps, inputs) @ W.T).reshape(batch, steps, hidden)
    hs: list[np.ndarray] = [np.zeros((batch, hidden))]
    zs: list[np.ndarray] = []
    cs: list[np.ndarray] = []
    h = hs[0]
    for t in range(steps):
        a = wx[:, t] if t == 0 else wx[:, t] + h @ U.T  # h_0 = 0
        z = _sigmoid(a + b_z)
        c = np.tanh(a + b_h)
        gate = (sz + sn) - sz * z
        h = gate * c if t == 0 else z * h + gate * c
        if keep_cache:
            zs.append(z)
            cs.append(c)
            hs.append(h)
    logits = h @ params["w_out"].T + params["b_out"]
    return logits, ((W, U, sz, sn, hs, zs, cs) if keep_cache else None)


def _backward(params: Mapping[str, np.ndarray], X: np.ndarray, cache: Any,
              dlogits: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of every parameter (keys as in ``params``) given dL/dlogits (B, output_dim)."""
    W, U, sz, sn, hs, zs, cs = cache
    batch, steps, inputs = X.shape
    hidden = W.shape[0]
    grads: dict[str, np.ndarray] = {"w_out": dlogits.T @ hs[-1], "b_out": dlogits.sum(axis=0)}
    dh = dlogits @ params["w_out"]
    da_all = np.empty((batch, steps, hidden))
    dU = np.zeros_like(U)
    d_bz, d_bh = np.zeros(hidden), np.zeros(hidden)
    d_sz = d_sn = 0.0
    for t in range(steps - 1, -1, -1):
        z, c, h_prev = zs[t], cs[t], hs[t]
        dhc = dh * c
        d_sn += dhc.sum()
        d_sz += (dhc * (1.0 - z)).sum()
        dz = dh * (h_prev - sz * c) if t else -sz * dhc  # dh_t/dz_t = h_{t-1} - sigmoid(zeta) c_t
        dpz = dz * z * (1.0 - z)
        dpc = dh * ((sz + sn) - sz * z) * (1.0 - c * c)
        da = dpz + dpc
        d_bz += dpz.sum(axis=0)
        d_bh += dpc.sum(axis=0)
        da_all[:, t] = da
        if t:
            dU += da.T @ h_prev
            dh = dh * z + da @ U
    grads["b_z"], grads["b_h"] = d_bz, d_bh
    dW = da_all.reshape(batch * steps, hidden).T @ X.reshape(batch * steps, inputs)
    for name, dense_grad in (("W", dW), ("U", dU)):
        if name in params:
            grads[name] = dense_grad
        else:
            left, right = params[name + "1"], params[name + "2"]
            grads[name + "1"], grads[name + "2"] = dense_grad @ right.T, left.T @ dense_grad
    grads["zeta"] = np.array(d_sz * sz * (1.0 - sz))
    grads["nu"] = np.array(d_sn * sn * (1.0 - sn))
    return grads


def _soften(soft: np.ndarray, temperature: float, output_dim: int) -> np.ndarray:
    """Teacher probabilities softened at ``temperature``: sigmoid(logit(q) / T), or softmax(log(q) / T)."""
    if output_dim == 1:
        q = np.clip(soft, _EPS, 1.0 - _EPS)
        return _sigmoid(np.log(q / (1.0 - q)) / temperature)
    scaled = np.log(np.clip(soft, _EPS, 1.0)) / temperature
    e = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _data_loss(logits: np.ndarray, y: np.ndarray, q_soft: np.ndarray | None, temperature: float,
               alpha: float) -> tuple[float, np.ndarray]:
    """Mean loss over the batch and its gradient with respect to the logits (already divided by B).

    Hard: binary cross-entropy on sigmoid(logit), or softmax cross-entropy with integer classes. With
    softened teacher targets ``q_soft``: ``alpha * T^2 * CE(student at T, q_soft) + (1 - alpha) * hard``.
    """
    batch = logits.shape[0]
    if logits.shape[1] == 1:
        l = logits[:, 0]
        terms = np.logaddexp(0.0, l) - y * l
        dl = _sigmoid(l) - y
        if q_soft is not None:
            lt = l / temperature
            soft_terms = temperature * temperature * (np.logaddexp(0.0, lt) - q_soft * lt)
            terms = alpha * soft_terms + (1.0 - alpha) * terms
            dl = alpha * temperature * (_sigmoid(lt) - q_soft) + (1.0 - alpha) * dl
        return float(terms.mean()), (dl / batch)[:, None]
    rows = np.arange(batch)
    logp = _log_softmax(logits)
    terms = -logp[rows, y]
    dl = np.exp(logp)
    dl[rows, y] -= 1.0
    if q_soft is not None:
        logp_t = _log_softmax(logits / temperature)
        soft_terms = -temperature * temperature * (q_soft * logp_t).sum(axis=1)
        terms = alpha * soft_terms + (1.0 - alpha) * terms
        dl = alpha * temperature * (np.exp(logp_t) - q_soft) + (1.0 - alpha) * dl
    return float(terms.mean()), dl / batch


def _objective(params: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray, q_soft: np.ndarray | None,
               temperature: float, alpha: float, l2_reg: float) -> tuple[float, float, dict[str, np.ndarray]]:
    """(data loss, L2 penalty, gradients of their sum) for one batch."""
    logits, cache = _forward(params, X)
    loss, dlogits = _data_loss(logits, y, q_soft, temperature, alpha)
    grads = _backward(params, X, cache, dlogits)
    penalty = 0.0
    if l2_reg:
        for name in _REGULARIZED.intersection(params):
            p = params[name]
            penalty += 0.5 * l2_reg * float(np.vdot(p, p))
            grads[name] = grads[name] + l2_reg * p
    return loss, penalty, grads


def _loss_and_gradients(weights: Mapping[str, Any], X: Any, y: Any, soft_targets: Any = None, *,
                        temperature: float = 1.0, alpha: float = 0.5,
                        l2_reg: float = 0.0) -> tuple[float, dict[str, np.ndarray]]:
    """The training objective on (X, y) and its gradient for every parameter, in float64.

    Args:
        weights: parameters keyed as :meth:`FastGRNN.weights` (``W`` or ``W1``/``W2``, ``U`` or
            ``U1``/``U2``, ``b_z``, ``b_h``, ``w_out``, ``b_out``, ``zeta``, ``nu``).
        X: (N, T, I), or (N, I) for T = 1.
        y: (N,) labels in [0, 1] for output_dim 1, else integer classes.
        soft_targets: teacher probabilities ((N,) or (N, output_dim)); ``None`` for the hard loss only.
        temperature, alpha: the distillation temperature and soft-loss weight (used with soft_targets).
        l2_reg: adds ``l2_reg / 2 * ||w||^2`` over the weight matrices.

    Returns:
        (mean loss + L2 penalty, gradients keyed like ``weights``).
    """
    params = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 2:
        X = X[:, None, :]
    output_dim = params["w_out"].shape[0]
    y = np.asarray(y, dtype=np.intp if output_dim > 1 else np.float64)
    q = None if soft_targets is None else _soften(np.asarray(soft_targets, dtype=np.float64), temperature, output_dim)
    loss, penalty, grads = _objective(params, X, y, q, temperature, alpha, l2_reg)
    return loss + penalty, grads


def _clip_by_global_norm(grad: np.ndarray, max_norm: float) -> tuple[np.ndarray, float]:
    """``grad`` rescaled to norm ``max_norm`` when its norm is larger (``max_norm`` 0 disables), and the
    norm before clipping."""
    norm = float(np.sqrt(np.vdot(grad, grad)))
    if max_norm > 0.0 and norm > max_norm:
        return grad * (max_norm / norm), norm
    return grad, norm


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    if logits.shape[1] == 1:
        return float(np.mean((logits[:, 0] >= 0.0) == (y >= 0.5)))
    return float(np.mean(np.argmax(logits, axis=1) == y))


class _Layout:
    """All parameters as views into one flat float64 vector, so Adam and clipping are a few vector ops."""

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
        return np.concatenate([np.ravel(arrays[n]) for n in self.names]).astype(np.float64, copy=False)

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {n: flat[self.slices[n]].reshape(self.shapes[n]) for n in self.names}


# --------------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------------


def _as_float(value: Any, name: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, np.exceptions.ComplexWarning):
        raise InvalidInputError(f"{name} must be an array of real numbers") from None


def _as_inputs(X: Any, name: str, config: FastGRNNConfig) -> np.ndarray:
    """``X`` as float64 (N, T, I), checked: shape, non-empty, finite."""
    if X is None:
        raise InvalidInputError(f"{name} is required")
    a = _as_float(X, name)
    steps, inputs = config.timesteps, config.input_dim
    expected = f"(N, {inputs})" if steps == 1 else f"(N, {steps}, {inputs})"
    if steps == 1 and a.ndim == 2:
        a = a[:, None, :]
    if a.ndim != 3 or a.shape[1:] != (steps, inputs):
        raise InvalidInputError(f"{name} must have shape {expected} for this model, got {np.shape(X)}")
    if a.shape[0] == 0:
        raise InvalidInputError(f"{name} is empty")
    if not np.isfinite(a).all():
        raise InvalidInputError(f"{name} contains NaN or Inf")
    return a


def _as_labels(y: Any, name: str, n: int, output_dim: int) -> np.ndarray:
    """Labels: float64 in [0, 1] for output_dim 1, else intp classes in [0, output_dim)."""
    if y is None:
        raise InvalidInputError(f"{name} is required")
    a = _as_float(y, name)
    if output_dim == 1 and a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.shape != (n,):
        raise InvalidInputError(f"{name} must have shape ({n},), one label per example, got {a.shape}")
    if not np.isfinite(a).all():
        raise InvalidInputError(f"{name} contains NaN or Inf")
    if output_dim == 1:
        if ((a < 0.0) | (a > 1.0)).any():
            raise InvalidInputError(f"{name} must hold labels in [0, 1]")
        return a
    if (a != np.round(a)).any() or ((a < 0) | (a >= output_dim)).any():
        raise InvalidInputError(f"{name} must hold integer classes in [0, {output_dim})")
    return a.astype(np.intp)


def _as_soft(soft: Any, name: str, n: int, output_dim: int) -> np.ndarray:
    """Teacher probabilities: (N,) in [0, 1] for output_dim 1, else (N, output_dim) rows summing to 1."""
    a = _as_float(soft, name)
    if output_dim == 1 and a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    shape = (n,) if output_dim == 1 else (n, output_dim)
    if a.shape != shape:
        raise InvalidInputError(f"{name} must have shape {shape}, one entry per example, got {a.shape}")
    if not np.isfinite(a).all():
        raise InvalidInputError(f"{name} contains NaN or Inf")
    if ((a < 0.0) | (a > 1.0)).any():
        raise InvalidInputError(f"{name} must hold probabilities in [0, 1]")
    if output_dim > 1:
        sums = a.sum(axis=1)
        if (np.abs(sums - 1.0) > 1e-3).any():
            raise InvalidInputError(f"{name} rows must sum to 1")
        a = a / sums[:, None]
    return a


@dataclass
class _Data:
    X: np.ndarray
    y: np.ndarray
    soft: np.ndarray | None
    X_val: np.ndarray
    y_val: np.ndarray
    soft_val: np.ndarray | None


def _prepare(config: FastGRNNConfig, split: float, rng: np.random.Generator, X: Any, y: Any, soft_targets: Any,
             X_val: Any, y_val: Any, soft_val: Any) -> _Data:
    """Validate everything, then split off the validation set when none is given."""
    o = config.output_dim
    Xa = _as_inputs(X, "X", config)
    ya = _as_labels(y, "y", Xa.shape[0], o)
    sa = None if soft_targets is None else _as_soft(soft_targets, "soft_targets", Xa.shape[0], o)
    if X_val is None:
        if y_val is not None:
            raise InvalidInputError("y_val was given without X_val")
        if soft_val is not None:
            raise InvalidInputError("soft_val was given without X_val")
        n_val = int(Xa.shape[0] * split)
        if n_val == 0:
            return _Data(Xa, ya, sa, Xa, ya, sa)
        perm = rng.permutation(Xa.shape[0])
        tr, va = perm[n_val:], perm[:n_val]
        return _Data(Xa[tr], ya[tr], None if sa is None else sa[tr], Xa[va], ya[va], None if sa is None else sa[va])
    if y_val is None:
        raise InvalidInputError("X_val was given without y_val")
    Xv = _as_inputs(X_val, "X_val", config)
    yv = _as_labels(y_val, "y_val", Xv.shape[0], o)
    sv = None if soft_val is None else _as_soft(soft_val, "soft_val", Xv.shape[0], o)
    return _Data(Xa, ya, sa, Xv, yv, sv)


def _check_model(model: Any) -> FastGRNN:
    if not isinstance(model, FastGRNN):
        raise InvalidInputError(f"model must be a tinydancer.model.FastGRNN, got {type(model).__name__}")
    return model


# --------------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------------


class Trainer:
    """Trains a :class:`FastGRNN` in place.

    Args:
        model: the model to train; its current weights are the starting point.
        config: hyperparameters (default :class:`TrainingConfig`).

    Attributes:
        history: the metrics of the last :meth:`fit`.
    """

    def __init__(self, model: FastGRNN, config: TrainingConfig | None = None) -> None:
        self.model = _check_model(model)
        self.config = config if config is not None else TrainingConfig()
        if not isinstance(self.config, TrainingConfig):
            raise ConfigError(f"config must be a TrainingConfig, got {type(config).__name__}")
        self.history: list[TrainingMetrics] = []

    def fit(self, X: Any, y: Any, soft_targets: Any = None, X_val: Any = None, y_val: Any = None,
            soft_val: Any = None, callback: Callable[[TrainingMetrics], bool | None] | None = None, *,
            masks: Mapping[str, Any] | None = None) -> list[TrainingMetrics]:
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

        Raises:
            InvalidInputError: bad data (shape, NaN/Inf, labels out of range, empty, mismatched lengths,
                X_val without y_val, bad masks).
            ConfigError: training diverged to non-finite values (lower ``learning_rate``).
        """
        return self._train(X, y, soft_targets, X_val, y_val, soft_val, callback, masks, None)

    def _train(self, X: Any, y: Any, soft_targets: Any, X_val: Any, y_val: Any, soft_val: Any,
               callback: Callable[[TrainingMetrics], bool | None] | None, masks: Mapping[str, Any] | None,
               sparsity_at: Callable[[int], float] | None) -> list[TrainingMetrics]:
        """:meth:`fit`, plus iterative hard thresholding: when ``sparsity_at`` is given, after every
        optimizer step of epoch e only the largest (1 - sparsity_at(e)) fraction of W and of U is kept."""
        cfg, mcfg = self.config, self.model.config
        if callback is not None and not callable(callback):
            raise InvalidInputError("callback must be callable")
        rng = np.random.default_rng(cfg.seed)
        data = _prepare(mcfg, cfg.validation_split, rng, X, y, soft_targets, X_val, y_val, soft_val)

        weights = {k: np.asarray(v, dtype=np.float64) for k, v in self.model.weights().items()}
        layout = _Layout(weights)
        theta = layout.flatten(weights)
        params = layout.views(theta)
        keep = self._keep_vector(layout, params, masks)
        if sparsity_at is not None and ("W" not in params or "U" not in params):
            raise ConfigError("iterative hard thresholding needs W and U stored dense")

        distill = cfg.enable_distillation
        if soft_targets is not None and not distill:
            warnings.warn("soft_targets are ignored because enable_distillation is False", stacklevel=3)
        temperature, alpha = cfg.distillation_temperature, cfg.distillation_alpha
        q_train = _soften(data.soft, temperature, mcfg.output_dim) if distill and data.soft is not None else None
        q_val = _soften(data.soft_val, temperature, mcfg.output_dim) if distill and data.soft_val is not None else None

        n, bs = data.X.shape[0], cfg.batch_size
        b1, b2, eps, l2 = cfg.adam_beta1, cfg.adam_beta2, cfg.adam_epsilon, cfg.l2_reg
        m = np.zeros_like(theta)
        v = np.zeros_like(theta)
        step = 0
        best_loss, best_theta, waited = math.inf, None, 0
        history: list[TrainingMetrics] = []
        for epoch in range(cfg.epochs):
            started = time.perf_counter()
            lr = cfg.learning_rate * cfg.lr_decay ** (epoch // cfg.lr_decay_step)
            perm = rng.permutation(n)
            Xe, ye = data.X[perm], data.y[perm]
            qe = None if q_train is None else q_train[perm]
            sparsity = None if sparsity_at is None else sparsity_at(epoch)
            total = 0.0
            for start in range(0, n, bs):
                stop = min(start + bs, n)
                loss, _, grads = _objective(params, Xe[start:stop], ye[start:stop],
                                            None if qe is None else qe[start:stop], temperature, alpha, l2)
                total += loss * (stop - start)
                g = layout.flatten(grads)
                if keep is not None:
                    g *= keep
                g, _ = _clip_by_global_norm(g, cfg.grad_clip)
                step += 1
                m *= b1
                m += (1.0 - b1) * g
                v *= b2
                v += (1.0 - b2) * (g * g)
                theta -= lr * (m / (1.0 - b1**step)) / (np.sqrt(v / (1.0 - b2**step)) + eps)
                if sparsity is not None:
                    for name in ("W", "U"):
                        params[name] *= magnitude_mask(params[name], sparsity)
            train_loss = total / n
            if not (math.isfinite(train_loss) and np.isfinite(theta).all()):
                raise ConfigError(f"training diverged at epoch {epoch} (non-finite loss or weights); "
                                  f"lower learning_rate (now {cfg.learning_rate})")
            train_logits, _ = _forward(params, data.X, keep_cache=False)
            val_logits, _ = _forward(params, data.X_val, keep_cache=False)
            val_loss, _ = _data_loss(val_logits, data.y_val, q_val, temperature, alpha)
            metrics = TrainingMetrics(
                epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                train_accuracy=_accuracy(train_logits, data.y), val_accuracy=_accuracy(val_logits, data.y_val),
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

    @staticmethod
    def _keep_vector(layout: _Layout, params: dict[str, np.ndarray],
                     masks: Mapping[str, Any] | None) -> np.ndarray | None:
        """1.0 where a weight may train, 0.0 where a mask fixes it at zero (and zero those weights now)."""
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


# --------------------------------------------------------------------------------------------------------
# Evaluation with the C kernels
# --------------------------------------------------------------------------------------------------------


def _roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Rank-based ROC AUC (Mann-Whitney U), tied scores sharing their average rank; NaN for one class."""
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


def _kernel_input(X: np.ndarray, config: FastGRNNConfig) -> np.ndarray:
    a = X[:, 0, :] if config.timesteps == 1 else X
    return np.ascontiguousarray(a, dtype=np.float32)


def evaluate(model: FastGRNN, X: Any, y: Any) -> dict[str, float | None]:
    """Loss, accuracy and ROC AUC of ``model`` on (X, y), computed from :meth:`FastGRNN.forward_batch`
    (the C kernels, in the model's stored form: sparse, int8, ...).

    Returns:
        ``{"loss", "accuracy", "auc", "n"}``: mean binary cross-entropy (output_dim 1) or softmax
        cross-entropy, with probabilities clipped to [1e-7, 1 - 1e-7]; accuracy at threshold 0.5
        (labels >= 0.5 count as positive) or by argmax; rank-based ROC AUC for output_dim 1 (NaN when y
        has one class only, ``None`` for output_dim > 1); the number of examples.

    Raises:
        InvalidInputError: bad X or y, as for :meth:`Trainer.fit`.
    """
    model = _check_model(model)
    cfg = model.config
    Xa = _as_inputs(X, "X", cfg)
    ya = _as_labels(y, "y", Xa.shape[0], cfg.output_dim)
    probs = np.asarray(model.forward_batch(_kernel_input(Xa, cfg)), dtype=np.float64)
    if cfg.output_dim == 1:
        p = np.clip(probs.reshape(-1), _EPS, 1.0 - _EPS)
        loss = float(np.mean(-(ya * np.log(p) + (1.0 - ya) * np.log1p(-p))))
        positive = ya >= 0.5
        accuracy = float(np.mean((probs.reshape(-1) >= 0.5) == positive))
        auc: float | None = _roc_auc(probs.reshape(-1), positive)
    else:
        picked = np.clip(probs[np.arange(ya.size), ya], _EPS, 1.0)
        loss = float(np.mean(-np.log(picked)))
        accuracy = float(np.mean(np.argmax(probs, axis=1) == ya))
        auc = None
    return {"loss": loss, "accuracy": accuracy, "auc": auc, "n": int(ya.size)}


# --------------------------------------------------------------------------------------------------------
# Compression pipeline
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageReport:
    """The model after one compression stage, measured on the validation data with the C kernels.

    ``val_auc`` is ``None`` for output_dim > 1; ``seconds`` is the stage's wall time, evaluation excluded.
    """

    name: str
    val_loss: float
    val_accuracy: float
    val_auc: float | None
    size_bytes: int
    sparsity: float
    seconds: float


@dataclass(frozen=True)
class CompressionReport:
    """What :func:`compress` did: one :class:`StageReport` per stage, in order, and each training
    stage's per-epoch metrics (``histories``, keyed by stage name)."""

    target_sparsity: float
    stages: tuple[StageReport, ...]
    histories: dict[str, list[TrainingMetrics]] = field(default_factory=dict)

    def table(self) -> str:
        """A printable table: stage, bytes, sparsity, validation loss, accuracy and AUC."""
        header = f"{'stage':<10} {'bytes':>8} {'sparsity':>8} {'val_loss':>9} {'accuracy':>8} {'auc':>7} {'seconds':>8}"
        lines = [header, "-" * len(header)]
        for s in self.stages:
            auc = "-" if s.val_auc is None else f"{s.val_auc:.4f}"
            lines.append(f"{s.name:<10} {s.size_bytes:>8d} {s.sparsity:>8.3f} {s.val_loss:>9.4f} "
                         f"{s.val_accuracy:>8.4f} {auc:>7} {s.seconds:>8.2f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _check_epochs(name: str, value: Any, default: int) -> int:
    if value is None:
        return default
    _check_int(name, value, 0)
    return int(value)


def compress(model: FastGRNN, X: Any, y: Any, *, target_sparsity: float, config: TrainingConfig | None = None,
             X_val: Any = None, y_val: Any = None, dense_epochs: int | None = None, iht_epochs: int | None = None,
             retrain_epochs: int | None = None, quantize: bool = True,
             callback: Callable[[str, TrainingMetrics], bool | None] | None = None) -> CompressionReport:
    """Compress ``model`` in place as in the FastGRNN paper, reporting validation quality after each stage.

    Stages, in order (each recorded as a :class:`StageReport`):

    1. ``dense``: training from the current weights (``config``'s early stopping applies).
    2. ``iht``: iterative hard thresholding: training continues, and after every optimizer step only the
       largest-magnitude (1 - s) fraction of W and of U (each on its own) is kept, s ramping linearly over
       the epochs to ``target_sparsity`` (epoch e of E uses ``target_sparsity * (e + 1) / E``). No early
       stopping here: the best early weights would be the least sparse. The stage ends with one
       thresholding at the target, whose support becomes the fixed mask.
    3. ``retrain``: training on that fixed support (masked weights stay exactly 0).
    4. ``prune``: :meth:`FastGRNN.prune` stores W and U sparse (CSR); the kept support is checked to be
       the mask.
    5. ``quantize`` (when ``quantize``): :meth:`FastGRNN.quantize` makes them sparse int8.

    Sizes are what :meth:`FastGRNN.size_bytes` counts, so they can grow: CSR stores a 4-byte column index
    per kept weight (at 50% sparsity that is as large as the dense matrix), and int8 adds a 4-byte scale
    per row, which can outweigh the 3 bytes saved per value when very few weights remain.

    The dense, IHT and retraining stages (and the split) use ``config``; with no epoch counts given,
    ``config.epochs`` is shared out in thirds as in EdgeML (e.g. 34 + 33 + 33 of 100). A stage with 0
    epochs is still reported. A low-rank W or U is multiplied out to a dense matrix first (IHT works on
    individual weights), so the compressed model is sparse, never low-rank.

    Args:
        model: the model, changed in place.
        X, y: training data, as for :meth:`Trainer.fit`.
        target_sparsity: the fraction of W's and of U's entries to zero, in [0, 1).
        config: hyperparameters for every training stage (default :class:`TrainingConfig`).
        X_val, y_val: validation data for every stage and report; when absent, ``config.validation_split``
            of X is held out once (seeded) and used throughout, or the training set with split 0.
        dense_epochs, iht_epochs, retrain_epochs: epochs per stage (>= 0).
        quantize: finish with int8 quantization.
        callback: called as ``callback(stage_name, metrics)`` after every training epoch; ``False`` ends
            that stage early (IHT still finishes with the thresholding at the target).

    Returns:
        A :class:`CompressionReport`.

    Raises:
        ConfigError: bad target_sparsity, epoch counts, config or quantize.
        InvalidInputError: bad data, as for :meth:`Trainer.fit`.
    """
    model = _check_model(model)
    cfg = config if config is not None else TrainingConfig()
    if not isinstance(cfg, TrainingConfig):
        raise ConfigError(f"config must be a TrainingConfig, got {type(config).__name__}")
    _check_number("target_sparsity", target_sparsity, 0.0, 1.0, high_open=True)
    third = max(1, cfg.epochs // 3)
    dense_n = _check_epochs("dense_epochs", dense_epochs, max(1, cfg.epochs - 2 * third))
    iht_n = _check_epochs("iht_epochs", iht_epochs, third)
    retrain_n = _check_epochs("retrain_epochs", retrain_epochs, third)
    if not isinstance(quantize, bool):
        raise ConfigError(f"quantize must be a bool, got {quantize!r}")
    if callback is not None and not callable(callback):
        raise InvalidInputError("callback must be callable")

    data = _prepare(model.config, cfg.validation_split, np.random.default_rng(cfg.seed), X, y, None,
                    X_val, y_val, None)
    s = float(target_sparsity)
    weights = model.weights()
    if any(k in weights for k in ("W1", "U1")):
        model.set_weights(model.parameters())  # multiply low-rank factors out

    stages: list[StageReport] = []
    histories: dict[str, list[TrainingMetrics]] = {}

    def record(name: str, started: float) -> None:
        seconds = time.perf_counter() - started
        ev = evaluate(model, data.X_val, data.y_val)
        stages.append(StageReport(name, float(ev["loss"]), float(ev["accuracy"]), ev["auc"],  # type: ignore[arg-type]
                                  model.size_bytes(), model.sparsity, seconds))

    def train(name: str, epochs: int, stage_cfg: TrainingConfig, masks: dict[str, np.ndarray] | None,
              sparsity_at: Callable[[int], float] | None) -> None:
        if epochs == 0:
            return
        stage_callback = None if callback is None else (lambda metrics: callback(name, metrics))
        trainer = Trainer(model, replace(stage_cfg, epochs=epochs))
        histories[name] = trainer._train(data.X, data.y, None, data.X_val, data.y_val, None, stage_callback,
                                         masks, sparsity_at)

    started = time.perf_counter()
    train("dense", dense_n, cfg, None, None)
    record("dense", started)

    started = time.perf_counter()
    train("iht", iht_n, replace(cfg, early_stopping_patience=None), None, lambda e: s * (e + 1) / iht_n)
    weights = model.weights()
    masks = {name: magnitude_mask(weights[name], s) for name in ("W", "U")}
    for name in ("W", "U"):
        weights[name] = np.where(masks[name], weights[name], np.float32(0))
    model.set_weights(weights)
    record("iht", started)

    started = time.perf_counter()
    train("retrain", retrain_n, cfg, masks, None)
    record("retrain", started)

    started = time.perf_counter()
    before = model.parameters()
    model.prune(s)
    after = model.parameters()
    for name in ("W", "U"):
        if not np.array_equal(after[name] != 0, masks[name] & (before[name] != 0)):
            raise ModelError(f"pruning kept a support of {name} different from the trained mask")
    record("prune", started)

    if quantize:
        started = time.perf_counter()
        model.quantize()
        record("quantize", started)
    return CompressionReport(target_sparsity=s, stages=tuple(stages), histories=histories)
