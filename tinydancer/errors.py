"""The one exception hierarchy of tinydancer.

Every error the library raises on purpose is a :class:`TinyDancerError`. Subclasses also inherit the
built-in exception they stand for, so ``except ValueError`` keeps working for callers who do not know ours.
"""

from __future__ import annotations

__all__ = [
    "TinyDancerError",
    "InvalidInputError",
    "ConfigError",
    "OutputFileError",
    "MissingExtraError",
    "ModelError",
    "ModelFileError",
    "ModelFormatError",
    "ModelSchemaError",
    "ModelValueError",
    "StorageError",
    "StorageBusyError",
    "StorageCorruptError",
    "StorageReadOnlyError",
    "StorageFullError",
    "CircuitOpenError",
]


class TinyDancerError(Exception):
    """Base class of every error raised by tinydancer."""


class InvalidInputError(TinyDancerError, ValueError):
    """An argument has the wrong shape, dtype, length or value; the message names the argument."""


class ConfigError(TinyDancerError, ValueError):
    """A configuration value (or an environment setting such as ``TINYDANCER_ISA``) is not usable."""


class OutputFileError(TinyDancerError, OSError):
    """A file (a training report, say) cannot be written where asked: its folder is missing or read-only,
    or the path is not a regular file (a FIFO, a device, a folder), which is never replaced."""


class MissingExtraError(TinyDancerError, ImportError):
    """An optional feature needs a package that is not installed; the message names the extra to install
    (for example ``pip install 'tinydancer[plot]'``)."""


class ModelError(TinyDancerError):
    """A model could not be loaded, saved or run."""


class ModelFileError(ModelError, OSError):
    """A model file is missing, unreadable, or not a regular file, or cannot be written where asked."""


class ModelFormatError(ModelError, ValueError):
    """A model file is not valid safetensors, or its format version is unknown."""


class ModelSchemaError(ModelError, ValueError):
    """A model file has wrong tensor names, dtypes or shapes, or a config that does not match them."""


class ModelValueError(ModelError, ValueError):
    """A model file holds NaN or infinite weights."""


class StorageError(TinyDancerError, OSError):
    """The routing database could not be used."""


class StorageBusyError(StorageError):
    """The database stayed locked by another writer past the busy timeout."""


class StorageCorruptError(StorageError):
    """The file is not a tinydancer database, or it is damaged."""


class StorageReadOnlyError(StorageError):
    """The database cannot be written."""


class StorageFullError(StorageError):
    """The disk (or the database's size limit) is full."""


class CircuitOpenError(TinyDancerError, RuntimeError):
    """The circuit breaker is open and the caller asked it to raise rather than fall back."""
