"""The paper's compression pipeline (Kusupati et al., NeurIPS 2018): :func:`compress` runs dense training,
iterative hard thresholding to a target sparsity, retraining on the fixed support, then CSR storage and
int8 quantization, measuring each stage on validation data with the C kernels; :class:`CompressionReport`
and :class:`StageReport` hold what it measured.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tinydancer import checks
from tinydancer.errors import ConfigError, ModelError
from tinydancer.model import FastGRNN, magnitude_mask
from tinydancer.model.fastgrnn import zero_share
from tinydancer.training.config import TrainingConfig, TrainingMetrics
from tinydancer.training.inputs import PreparedData, TrainingDataWarning, check_model, one_class_message, prepare
from tinydancer.training.metrics import evaluate
from tinydancer.training.trainer import Projection, Trainer, _check_hooks

__all__ = ["StageReport", "CompressionReport", "compress", "stage_epochs", "counted_sparsity"]

UNUSED_U_NOTE = "U is unused with one timestep (h0 = 0) and is not counted in the sparsity"


@dataclass(frozen=True)
class StageReport:
    """The model after one compression stage, measured on the validation data with the C kernels.

    Attributes:
        name: the stage (``dense``, ``iht``, ``retrain``, ``prune`` or ``quantize``).
        val_loss, val_accuracy: validation loss and accuracy, as :func:`evaluate` computes them.
        val_auc: validation ROC AUC; ``None`` for output_dim > 1.
        size_bytes: the model's stored size, as :meth:`FastGRNN.size_bytes` counts it.
        sparsity: the fraction of zero weights in W and U, or in W alone with one timestep (see
            :func:`counted_sparsity`).
        seconds: the stage's wall time, evaluation excluded.
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
    """What :func:`compress` did: one :class:`StageReport` per stage, in order, each training stage's
    per-epoch metrics (``histories``, keyed by stage name), and ``notes`` on how to read the numbers (one
    sentence each, printed under the table)."""

    target_sparsity: float
    stages: tuple[StageReport, ...]
    histories: dict[str, list[TrainingMetrics]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def table(self) -> str:
        """A printable table: stage, bytes, sparsity, validation loss, accuracy, AUC and seconds, then the
        notes, one per line."""
        header = f"{'stage':<10} {'bytes':>8} {'sparsity':>8} {'val_loss':>9} {'accuracy':>8} {'auc':>7} {'seconds':>8}"
        lines = [header, "-" * len(header)]
        for s in self.stages:
            auc = "-" if s.val_auc is None else f"{s.val_auc:.4f}"
            lines.append(f"{s.name:<10} {s.size_bytes:>8d} {s.sparsity:>8.3f} {s.val_loss:>9.4f} "
                         f"{s.val_accuracy:>8.4f} {auc:>7} {s.seconds:>8.2f}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def stage_epochs(epochs: int) -> dict[str, int]:
    """How :func:`compress` shares ``epochs`` out among its training stages when given no counts: in
    thirds as in EdgeML, the dense stage taking the rest (100 gives 34 + 33 + 33), each stage at least 1.

    Returns:
        ``{"dense": ..., "iht": ..., "retrain": ...}``.

    Raises:
        ConfigError: ``epochs`` is not an int >= 1.
    """
    epochs = checks.integer(epochs, "epochs", 1)
    third = max(1, epochs // 3)
    return {"dense": max(1, epochs - 2 * third), "iht": third, "retrain": third}


def counted_sparsity(model: FastGRNN) -> float:
    """The fraction of zero weights in W and U together, as :attr:`FastGRNN.sparsity`, except that with one
    timestep only W counts: U multiplies h0 = 0 there, so no weight of it matters or trains."""
    cell = model.cell
    return zero_share((cell.W,) if model.config.timesteps == 1 else (cell.W, cell.U))


def _epochs(value: Any, name: str, default: int) -> int:
    """An epoch count (>= 0), or ``default`` when ``value`` is None."""
    if value is None:
        return default
    return checks.integer(value, name, 0)


def hard_thresholding(target_sparsity: float, epochs: int) -> Projection:
    """The projection of iterative hard thresholding, for :meth:`Trainer.fit`.

    Args:
        target_sparsity: the fraction of W's and of U's entries to zero by the last epoch, in [0, 1).
        epochs: the number of epochs the sparsity ramps over.

    Returns:
        A projection that, during epoch e, keeps only the largest-magnitude (1 - s) fraction of W and of U
        (each on its own), with ``s = target_sparsity * (e + 1) / epochs``. It needs W and U stored dense.
    """

    def project(epoch: int, params: Mapping[str, np.ndarray]) -> None:
        sparsity = target_sparsity * (epoch + 1) / epochs
        for name in ("W", "U"):
            params[name] *= magnitude_mask(params[name], sparsity)

    return project


class _Stages:
    """Runs and measures the stages of one :func:`compress` call on one model and one data split."""

    def __init__(self, model: FastGRNN, data: PreparedData,
                 callback: Callable[[str, TrainingMetrics], bool | None] | None) -> None:
        self.model, self.data, self.callback = model, data, callback
        self.stages: list[StageReport] = []
        self.histories: dict[str, list[TrainingMetrics]] = {}

    def train(self, name: str, epochs: int, config: TrainingConfig, masks: dict[str, np.ndarray] | None = None,
              projection: Projection | None = None) -> None:
        """Train for ``epochs`` (nothing for 0) on the shared data split, keeping the history under ``name``."""
        if epochs == 0:
            return
        callback = self.callback
        stage_callback = None if callback is None else (lambda metrics: callback(name, metrics))
        config = replace(config, epochs=epochs)
        trainer = Trainer(self.model, config)
        self.histories[name] = trainer.run(self.data, np.random.default_rng(config.seed), stage_callback,
                                           masks=masks, projection=projection)

    def record(self, name: str, started: float) -> None:
        """Measure the model on the validation data and report the stage begun at ``started``."""
        seconds = time.perf_counter() - started
        ev = evaluate(self.model, self.data.X_val, self.data.y_val)
        self.stages.append(StageReport(name, float(ev["loss"]), float(ev["accuracy"]),  # type: ignore[arg-type]
                                       ev["auc"], self.model.size_bytes(), counted_sparsity(self.model),
                                       seconds))


def compress(model: FastGRNN, X: Any, y: Any, *, target_sparsity: float, config: TrainingConfig | None = None,
             X_val: Any = None, y_val: Any = None, dense_epochs: int | None = None, iht_epochs: int | None = None,
             retrain_epochs: int | None = None, quantize: bool = True,
             callback: Callable[[str, TrainingMetrics], bool | None] | None = None) -> CompressionReport:
    """Compress ``model`` in place as in the FastGRNN paper, reporting validation quality after each stage.

    Stages, in order (each recorded as a :class:`StageReport`):

    1. ``dense``: training from the current weights (``config``'s early stopping applies).
    2. ``iht``: iterative hard thresholding: training continues, and after every optimizer step only the
       largest-magnitude (1 - s) fraction of W and of U (each on its own) is kept, s ramping linearly over
       the epochs to ``target_sparsity`` (epoch e of E uses ``target_sparsity * (e + 1) / E``; see
       :func:`hard_thresholding`). No early stopping here: the best early weights would be the least
       sparse. The stage ends with one thresholding at the target, whose support becomes the fixed mask.
    3. ``retrain``: training on that fixed support (masked weights stay exactly 0).
    4. ``prune``: :meth:`FastGRNN.prune` stores W and U sparse (CSR); the kept support is checked to be
       the mask.
    5. ``quantize`` (when ``quantize``): :meth:`FastGRNN.quantize` makes them sparse int8.

    Sizes are what :meth:`FastGRNN.size_bytes` counts, so they can grow: CSR stores a 4-byte column index
    per kept weight (at 50% sparsity that is as large as the dense matrix), and int8 adds a 4-byte scale
    per row, which can outweigh the 3 bytes saved per value when very few weights remain.

    The dense, IHT and retraining stages (and the split) use ``config``; with no epoch counts given,
    ``config.epochs`` is shared out in thirds as in EdgeML (e.g. 34 + 33 + 33 of 100; see
    :func:`stage_epochs`). A stage with 0 epochs is still reported. A low-rank W or U is multiplied out to
    a dense matrix first (IHT works on individual weights), so the compressed model is sparse, never
    low-rank.

    With one timestep U is unused (it multiplies h0 = 0): training leaves it as it is, IHT and pruning
    still threshold it, and the reported sparsity counts W only (the report's ``notes`` say so).

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
        ModelError: pruning kept a support different from the trained mask.
    """
    model = check_model(model)
    cfg = config if config is not None else TrainingConfig()
    if not isinstance(cfg, TrainingConfig):
        raise ConfigError(f"config must be a TrainingConfig, got {type(config).__name__}")
    s = checks.real(target_sparsity, "target_sparsity", 0.0, 1.0, high_open=True)
    shares = stage_epochs(cfg.epochs)
    dense_n = _epochs(dense_epochs, "dense_epochs", shares["dense"])
    iht_n = _epochs(iht_epochs, "iht_epochs", shares["iht"])
    retrain_n = _epochs(retrain_epochs, "retrain_epochs", shares["retrain"])
    checks.flag(quantize, "quantize")
    _check_hooks(callback, None)

    data = prepare(model.config, cfg.validation_split, np.random.default_rng(cfg.seed), X, y, None,
                   X_val, y_val, None)
    one_class = one_class_message(data.y)
    if one_class is not None:
        warnings.warn(one_class, TrainingDataWarning, stacklevel=2)
    weights = model.weights()
    if any(k in weights for k in ("W1", "U1")):
        model.set_weights(model.parameters())  # multiply low-rank factors out
    run = _Stages(model, data, callback)

    started = time.perf_counter()
    run.train("dense", dense_n, cfg)
    run.record("dense", started)

    started = time.perf_counter()
    run.train("iht", iht_n, replace(cfg, early_stopping_patience=None), projection=hard_thresholding(s, iht_n))
    weights = model.weights()
    masks = {name: magnitude_mask(weights[name], s) for name in ("W", "U")}
    for name in ("W", "U"):
        weights[name] = np.where(masks[name], weights[name], np.float32(0))
    model.set_weights(weights)
    run.record("iht", started)

    started = time.perf_counter()
    run.train("retrain", retrain_n, cfg, masks=masks)
    run.record("retrain", started)

    started = time.perf_counter()
    before = model.parameters()
    model.prune(s)
    after = model.parameters()
    for name in ("W", "U"):
        if not np.array_equal(after[name] != 0, masks[name] & (before[name] != 0)):
            raise ModelError(f"pruning kept a support of {name} different from the trained mask")
    run.record("prune", started)

    if quantize:
        started = time.perf_counter()
        model.quantize()
        run.record("quantize", started)
    notes = (UNUSED_U_NOTE,) if model.config.timesteps == 1 else ()
    return CompressionReport(target_sparsity=s, stages=tuple(run.stages), histories=run.histories, notes=notes)
