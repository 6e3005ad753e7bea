"""Models: the FastGRNN (:mod:`~tinydancer.model.fastgrnn`), the Rust crate's cell (:mod:`~tinydancer.model.crate`),
and their files.

The modules depend on each other in one direction only::

    files        bytes <-> ModelRecord (tensors + metadata), every file-level check; imports no model
    storage      the five storage kinds of a weight matrix, one table (tensors <-> KernelMatrix)
    compression  int8 quantization per row, the magnitude mask, CSR (uses storage)
    crate        CrateFastGRNN and the crate's format (uses files)
    fastgrnn     FastGRNNConfig, FastGRNN, tinydancer's format and load_model (uses all of the above)
"""

from __future__ import annotations

from tinydancer.model.compression import magnitude_mask, quantize_rows
from tinydancer.model.crate import CrateFastGRNN
from tinydancer.model.fastgrnn import FastGRNN, FastGRNNConfig, load_model, model_from_record
from tinydancer.model.files import (
    CRATE_FORMAT,
    FORMAT,
    FORMAT_VERSION,
    MAX_FILE_BYTES,
    MAX_HEADER_BYTES,
    MAX_TENSORS,
)

__all__ = [
    "CRATE_FORMAT",
    "CrateFastGRNN",
    "FORMAT",
    "FORMAT_VERSION",
    "FastGRNN",
    "FastGRNNConfig",
    "MAX_FILE_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_TENSORS",
    "load_model",
    "model_from_record",
    "magnitude_mask",
    "quantize_rows",
]
