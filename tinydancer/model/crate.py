"""The Rust crate's model: its GRU-like cell, read from and written to the crate's safetensors format.

A file of format ``ruvector-tiny-dancer-fastgrnn-v1`` holds nine F32 tensors and a JSON ``config`` with
``input_dim``, ``hidden_dim``, ``output_dim``, ``nu`` and ``zeta`` (other keys, such as ``rank``, are kept
but not used).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from tinydancer import checks
from tinydancer.errors import InvalidInputError, ModelSchemaError
from tinydancer.model.files import CRATE_FORMAT, ModelRecord, PathArg, save_file

__all__ = ["CrateFastGRNN"]

_MAX_CRATE_DIM = 1 << 16  # the crate's own dimensions are not bound by the C kernels' cap


class CrateFastGRNN:
    """The GRU-like cell of the Rust crate ``ruvector-tiny-dancer-core``, so its users can bring a model::

        r = sigmoid(nu (W_r x + b_r));  u = sigmoid(nu (W_u x + b_u))
        c = tanh(zeta (W_c x + W_rec (r * h0) + b_c));  h = u * h0 + (1 - u) * c
        p = sigmoid(W_out h + b_out)[0]

    with h0 = 0 unless given. Computed in float64 with NumPy: this class is for carrying models over, not
    for the hot path (train a :class:`~tinydancer.model.FastGRNN` on its outputs for that).

    Args:
        config: the crate's config (``input_dim``, ``hidden_dim``, ``output_dim``, ``nu``, ``zeta``).
        tensors: the nine tensors of :attr:`TENSORS`, by the crate's names.
    """

    TENSORS = ("w_reset", "w_update", "w_candidate", "w_recurrent", "w_output",
               "b_reset", "b_update", "b_candidate", "b_output")

    def __init__(self, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> None:
        self.config = dict(config)
        self.input_dim = int(self.config["input_dim"])
        self.hidden_dim = int(self.config["hidden_dim"])
        self.output_dim = int(self.config["output_dim"])
        self.nu = float(self.config["nu"])
        self.zeta = float(self.config["zeta"])
        self._t = {name: np.array(tensors[name], dtype=np.float64) for name in self.TENSORS}
        for t in self._t.values():
            t.setflags(write=False)

    @classmethod
    def from_record(cls, record: ModelRecord) -> CrateFastGRNN:
        """The model held by a record of the crate's format, checked in full first.

        Raises:
            ModelSchemaError: a bad config, or tensors missing, extra, or of the wrong dtype or shape.
            ModelValueError: NaN or infinite weights.
        """
        where = record.where
        config = record.json("config")
        if not isinstance(config, dict):
            raise ModelSchemaError(f"{where}: the crate config is not a JSON object")
        i, h, o = (checks.integer(config.get(key), f"{where}: config {key}", 1, _MAX_CRATE_DIM, error=ModelSchemaError)
                   for key in ("input_dim", "hidden_dim", "output_dim"))
        for key in ("nu", "zeta"):
            checks.real(config.get(key), f"{where}: config {key}", error=ModelSchemaError)
        f32 = np.float32
        record.check_tensors({
            "w_reset": (f32, (h, i)), "w_update": (f32, (h, i)), "w_candidate": (f32, (h, i)),
            "w_recurrent": (f32, (h, h)), "w_output": (f32, (o, h)), "b_reset": (f32, (h,)),
            "b_update": (f32, (h,)), "b_candidate": (f32, (h,)), "b_output": (f32, (o,)),
        })
        return cls(config, record.tensors)

    def tensors(self) -> dict[str, np.ndarray]:
        """The crate's tensors as float32 copies, by the crate's names."""
        return {name: t.astype(np.float32) for name, t in self._t.items()}

    def forward_batch(self, X: Any, h0: Any = None) -> np.ndarray:
        """Probabilities for a batch.

        Args:
            X: inputs of shape (B, input_dim).
            h0: the initial hidden state, broadcast to (B, hidden_dim); zeros by default.

        Returns:
            float32 probabilities of shape (B,).

        Raises:
            InvalidInputError: X has another shape, or holds NaN or infinite values.
        """
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise InvalidInputError(f"X must have shape (batch, {self.input_dim}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise InvalidInputError("X holds NaN or infinite values")
        h = np.zeros((x.shape[0], self.hidden_dim)) if h0 is None else np.broadcast_to(
            np.asarray(h0, dtype=np.float64), (x.shape[0], self.hidden_dim))
        t = self._t
        with np.errstate(over="ignore"):
            r = _sigmoid(self.nu * (x @ t["w_reset"].T + t["b_reset"]))
            u = _sigmoid(self.nu * (x @ t["w_update"].T + t["b_update"]))
            c = np.tanh(self.zeta * (x @ t["w_candidate"].T + (r * h) @ t["w_recurrent"].T + t["b_candidate"]))
            h = u * h + (1.0 - u) * c
            out = h @ t["w_output"].T + t["b_output"]
        return _sigmoid(out[:, 0]).astype(np.float32)

    def forward(self, x: Any, h0: Any = None) -> float:
        """The probability for one input vector of length input_dim (see :meth:`forward_batch`)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise InvalidInputError(f"x must be a vector of length {self.input_dim}, got shape {x.shape}")
        return float(self.forward_batch(x[None, :], h0)[0])

    def save(self, path: PathArg) -> None:
        """Write the model back in the crate's format, atomically (as :meth:`FastGRNN.save` does).

        Raises:
            ModelFileError: ``path`` exists and is not a regular file, or the folder is missing or cannot
                be written; the target is then left as it was.
        """
        save_file(ModelRecord(CRATE_FORMAT, {"config": json.dumps(self.config)}, self.tensors()), path)

    def __repr__(self) -> str:
        return f"CrateFastGRNN(input_dim={self.input_dim}, hidden_dim={self.hidden_dim}, output_dim={self.output_dim})"


def _sigmoid(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-v))
