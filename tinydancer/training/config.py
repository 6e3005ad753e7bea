"""The training records: :class:`TrainingConfig` (hyperparameters) and :class:`TrainingMetrics` (one epoch)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tinydancer import checks
from tinydancer.errors import ConfigError

__all__ = ["TrainingConfig", "TrainingMetrics"]


@dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters of :class:`~tinydancer.training.Trainer`, with the field names and defaults of the
    crate's ``TrainingConfig`` plus a ``seed``.

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

    Raises:
        ConfigError: a field of the wrong type or out of its range (the message names the field).
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
        checks.real(self.learning_rate, "learning_rate", 0.0, low_open=True)
        checks.integer(self.batch_size, "batch_size", 1)
        checks.integer(self.epochs, "epochs", 1)
        checks.real(self.validation_split, "validation_split", 0.0, 1.0, high_open=True)
        if self.early_stopping_patience is not None:
            checks.integer(self.early_stopping_patience, "early_stopping_patience", 1)
        checks.real(self.lr_decay, "lr_decay", 0.0, 1.0, low_open=True)
        checks.integer(self.lr_decay_step, "lr_decay_step", 1)
        checks.real(self.grad_clip, "grad_clip", 0.0)
        checks.real(self.adam_beta1, "adam_beta1", 0.0, 1.0, high_open=True)
        checks.real(self.adam_beta2, "adam_beta2", 0.0, 1.0, high_open=True)
        checks.real(self.adam_epsilon, "adam_epsilon", 0.0, low_open=True)
        checks.real(self.l2_reg, "l2_reg", 0.0)
        checks.flag(self.enable_distillation, "enable_distillation")
        checks.real(self.distillation_temperature, "distillation_temperature", 0.0, low_open=True)
        checks.real(self.distillation_alpha, "distillation_alpha", 0.0, 1.0)
        if self.seed is not None:
            # NumPy seeds may be any non-negative integer, so no upper bound
            checks.integer(self.seed, "seed", 0, None)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict, keyed by field name."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        """The inverse of :meth:`to_dict`.

        Args:
            data: field values by name; missing fields take their defaults.

        Returns:
            The config.

        Raises:
            ConfigError: ``data`` is not a mapping, has unknown keys, or holds a bad value.
        """
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
        """The fields as a plain dict, keyed by field name."""
        return asdict(self)
