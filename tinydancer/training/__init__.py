"""Training and compression of :class:`~tinydancer.model.FastGRNN` models, in NumPy.

:class:`Trainer` runs real backpropagation through time over mini-batches (float64, vectorised over the
batch), with Adam, L2 on the weight matrices, global-norm gradient clipping, step learning-rate decay,
early stopping and optional knowledge distillation; :class:`TrainingConfig` carries the crate's field names
and defaults. :func:`compress` is the paper's pipeline (Kusupati et al., NeurIPS 2018): dense training,
iterative hard thresholding to a target sparsity, retraining on the fixed support, then CSR storage and
int8 quantization, each stage measured on validation data with the C kernels (:func:`evaluate`).
:func:`load_training_data` reads the ``.npz`` and ``.csv`` files ``tinydancer train`` takes.

The modules, one concern each:

* :mod:`~tinydancer.training.config`: :class:`TrainingConfig` and :class:`TrainingMetrics`.
* :mod:`~tinydancer.training.bptt`: forward pass, loss and backpropagation through time.
* :mod:`~tinydancer.training.inputs`: checks of the arrays given, and the validation split.
* :mod:`~tinydancer.training.trainer`: :class:`Trainer` (Adam, clipping, early stopping, masks and the
  projection hook).
* :mod:`~tinydancer.training.metrics`: :func:`evaluate` and ROC AUC.
* :mod:`~tinydancer.training.compression`: :func:`compress` and its reports.
* :mod:`~tinydancer.training.data`: training data files.

Example (X: (N, 5) float features, y: (N,) labels in [0, 1])::

    from tinydancer.model import FastGRNN, FastGRNNConfig
    from tinydancer.training import Trainer, TrainingConfig, compress

    model = FastGRNN(FastGRNNConfig(input_dim=5, hidden_dim=16), seed=0)
    history = Trainer(model, TrainingConfig(learning_rate=0.01, epochs=20, seed=0)).fit(X, y)
    report = compress(model, X, y, target_sparsity=0.8, config=TrainingConfig(learning_rate=0.01, seed=0))
    print(report.table())
"""

from __future__ import annotations

from tinydancer.training.compression import CompressionReport, StageReport, compress
from tinydancer.training.config import TrainingConfig, TrainingMetrics
from tinydancer.training.data import TrainingData, load_training_data
from tinydancer.training.inputs import TrainingDataWarning
from tinydancer.training.metrics import evaluate
from tinydancer.training.trainer import Trainer

__all__ = [
    "TrainingConfig",
    "TrainingMetrics",
    "Trainer",
    "evaluate",
    "StageReport",
    "CompressionReport",
    "compress",
    "TrainingData",
    "TrainingDataWarning",
    "load_training_data",
]
