"""Routing logs off the hot path: a bounded queue and a background writer that commits decisions in batches.

A router with a database hands each request's results to a :class:`DecisionLog` (:meth:`DecisionLog.put`
appends one tuple to a deque: no lock, no I/O). A writer thread turns the queued requests into rows of the
``routing_decisions`` table and inserts them with ``executemany``, one transaction per batch, every
``interval`` seconds or sooner when the queue fills past half. :meth:`DecisionLog.flush` returns once
everything queued before it is committed; :meth:`DecisionLog.close`, the router's context manager and
interpreter exit flush.

When the queue is full, :meth:`DecisionLog.put` waits up to ``full_wait`` seconds for room (default 0: it
never waits) and then drops the request, counting it in ``dropped`` (the router's ``metrics()``,
``log_dropped``) and logging a warning through :mod:`logging` at the first drop after a write. Rows that
the database refuses (a full disk, a lock held past the busy timeout) are counted as ``failed`` and make the
next :meth:`DecisionLog.flush` raise. Nothing is dropped silently.

Request ids are ``<12 hex digits>-<n>``: a random prefix per log and process, and a counter; the queries
of one batch share a number and add their position (``<prefix>-<n>.<i>``).

After ``fork()``, the child's log starts empty with a new prefix: what the parent had queued is the
parent's to write. A log that opened its database from a path opens its own connection in the child; one
given a :class:`~tinydancer.storage.Storage` cannot (the connection is the parent's) and raises
:class:`~tinydancer.errors.StorageError` from :meth:`DecisionLog.put`.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from tinydancer import checks
from tinydancer.errors import ConfigError, StorageBusyError, StorageError
from tinydancer.storage import PathArg, Storage

__all__ = ["DecisionLog", "EMBEDDING_DTYPE"]

EMBEDDING_DTYPE = "float16"
"""The precision of the query embeddings a query router logs: half precision, 2 bytes a value (768 bytes
for a 384-d MiniLM embedding); each value changes by at most 2**-11 of its size (half an ulp), or 2**-25
below float16's normal range. An embedding with a value beyond float16's range (65504) is logged in
float32, and its row says so (``embedding_dtype``)."""

_log = logging.getLogger(__name__)
_LIVE: weakref.WeakSet[DecisionLog] = weakref.WeakSet()

# Queue items: a tag, then the request's values. Rows are built on the writer thread.
CANDIDATES, QUERY, QUERY_BATCH = 1, 2, 3


class _Marker:
    """A flush's place in the queue: set once everything before it is committed."""

    __slots__ = ("event", "failed")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.failed = 0


class DecisionLog:
    """A bounded queue of routing decisions and the thread that writes them to a :class:`Storage`.

    Args:
        database: a path (the log opens, and closes, its own :class:`Storage`) or an open :class:`Storage`
            (shared; the log flushes it but leaves it open).
        capacity: requests the queue holds (a batch of queries counts as one).
        full_wait: seconds :meth:`put` waits for room in a full queue before it drops the request.
        interval: seconds between the writer's commits while the queue is less than half full.
        clock: unix seconds for the ``recorded_at`` column (default ``time.time``).

    Raises:
        ConfigError: a bad setting.
        StorageError: the database cannot be opened (see :class:`Storage`).
    """

    def __init__(self, database: PathArg | Storage, *, capacity: int = 100_000, full_wait: float = 0.0,
                 interval: float = 0.05, clock: Callable[[], float] = time.time) -> None:
        self._capacity = checks.integer(capacity, "log capacity", 1)
        self._half = max(self._capacity // 2, 1)
        self._full_wait = checks.real(full_wait, "full_wait (seconds)", 0.0)
        self._interval = checks.real(interval, "interval (seconds)", 0.0, low_open=True)
        if not callable(clock):
            raise ConfigError("clock must be callable")
        self.clock = clock
        if isinstance(database, Storage):
            self._storage, self._path, self._owns = database, None, False
        else:
            self._storage, self._path, self._owns = Storage(database), database, True
        if self._storage.read_only:
            if self._owns:
                self._storage.close()
            raise ConfigError(f"{self._storage.path}: a routing log needs a database opened for writing")
        self._dropped = 0
        self._written = 0  # rows committed
        self._requests = 0  # requests written
        self._failed = 0  # rows the database refused
        self._reported = 0  # of those, the ones a flush has raised for
        self._last_error: str | None = None
        self._warned = False
        self._closed = False
        self._start()
        self._storage._attach(self)
        _LIVE.add(self)

    def _start(self) -> None:
        self._pid = os.getpid()
        self._fresh_state()
        self._wake = threading.Event()
        self._stop = False
        self._slow = False  # put() takes the slow path: closed, or in a child after fork()
        self._thread = threading.Thread(target=self._run, name="tinydancer-decision-log", daemon=True)
        self._thread.start()

    def _fresh_state(self) -> None:
        """A new id prefix, an empty queue and new locks (at start, and in a child right after fork())."""
        self._prefix = os.urandom(6).hex() + "-"
        self._numbers = itertools.count()
        self._queue: deque[Any] = deque()
        self._drop_lock = threading.Lock()

    # -- the hot path ---------------------------------------------------------------------------------------

    def new_id(self) -> str:
        """A new request id."""
        return f"{self._prefix}{next(self._numbers)}"

    def put(self, item: tuple[Any, ...]) -> bool:
        """Queue one request's decisions; False when it was dropped (the queue stayed full).

        Raises:
            StorageError: the log is closed, or this is a child process that cannot open its own connection.
        """
        if self._slow:
            self._slow_path()
        queue = self._queue
        if len(queue) >= self._capacity:
            return self._put_full(item)
        queue.append(item)
        if len(queue) >= self._half:
            self._wake.set()
        return True

    def _put_full(self, item: tuple[Any, ...]) -> bool:
        deadline = time.monotonic() + self._full_wait
        self._wake.set()
        while time.monotonic() < deadline:
            time.sleep(min(0.001, self._full_wait))
            if len(self._queue) < self._capacity:
                self._queue.append(item)
                return True
        with self._drop_lock:
            self._dropped += 1
            warn = not self._warned
            self._warned = True
        if warn:
            _log.warning("tinydancer: the routing log's queue is full (%d requests): decisions are being dropped "
                         "and counted in metrics()['log_dropped']", self._capacity)
        return False

    # -- the writer -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            stopping = self._stop
            while queue:
                self._write_some(queue)
            if stopping:
                return

    def _write_some(self, queue: deque[Any]) -> None:
        """Write up to 4096 queued requests (and set the flush markers among them) in one transaction."""
        rows: list[tuple[Any, ...]] = []
        markers: list[_Marker] = []
        requests = 0
        while queue and requests < 4096:
            item = queue.popleft()
            if type(item) is _Marker:
                markers.append(item)
                continue
            requests += 1
            try:
                _rows(item, rows)
            except Exception as exc:  # a bug here must not stop the writer; the request is counted as failed
                self._fail(1, exc)
        if rows:
            for attempt in range(3):
                try:
                    self._storage._write_decisions(rows)
                except StorageBusyError as exc:
                    if attempt == 2:
                        self._fail(len(rows), exc)
                except Exception as exc:  # full, read-only, closed, damaged: counted, and flush() raises it
                    self._fail(len(rows), exc)
                    break
                else:
                    self._written += len(rows)
                    self._requests += requests
                    self._warned = False
                    break
        for marker in markers:
            marker.failed = self._failed
            marker.event.set()

    def _fail(self, rows: int, exc: BaseException) -> None:
        self._failed += rows
        self._last_error = f"{type(exc).__name__}: {exc}"
        _log.warning("tinydancer: %d logged decisions could not be written: %s", rows, self._last_error)

    # -- lifetime -------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Return once every request queued before the call is committed.

        Raises:
            StorageError: rows the database refused since the previous flush (how many, and the last error).
        """
        if self._closed:
            return
        if self._slow:
            self._slow_path()
        marker = _Marker()
        self._queue.append(marker)
        self._wake.set()
        while not marker.event.wait(0.1):
            if not self._thread.is_alive():  # the writer is gone (interpreter exit): write here
                while self._queue:
                    self._write_some(self._queue)
        with self._drop_lock:
            reported, self._reported = self._reported, max(self._reported, marker.failed)
        if marker.failed > reported:
            raise StorageError(f"{marker.failed - reported} logged decisions could not be written "
                               f"(last error: {self._last_error})")

    def close(self) -> None:
        """Flush, stop the writer and close the database when the log opened it. Closing twice is fine.

        Raises:
            StorageError: as :meth:`flush` (the log is closed all the same).
        """
        if self._closed:
            return
        if self._pid != os.getpid():  # inherited through fork() and never used here: nothing of ours to write
            self._closed = self._slow = True
            _LIVE.discard(self)
            return
        try:
            self.flush()
        finally:
            self._closed = self._slow = True
            self._stop = True
            self._wake.set()
            if self._thread is not threading.current_thread():
                self._thread.join()
            self._storage._detach(self)
            if self._owns:
                self._storage.close()
            _LIVE.discard(self)

    def _slow_path(self) -> None:
        if self._closed:
            raise StorageError("the routing log is closed")
        if self._pid == os.getpid():
            self._slow = False
            return
        # In a child process: a fresh, empty log of the child's own, on its own connection.
        if self._path is None:
            raise StorageError("this router logs to a Storage opened in another process (before fork()); "
                               "give the child its own Storage or a database path")
        inherited = self._storage
        inherited._detach(self)
        inherited.close()  # in a child this leaves the parent's connection untouched
        self._storage = Storage(self._path)
        self._storage._attach(self)
        self._start()

    def metrics(self) -> dict[str, Any]:
        """``log_written`` (rows committed), ``log_requests`` (requests written), ``log_pending`` (requests
        queued), ``log_dropped`` (requests dropped on a full queue), ``log_failed`` (rows the database
        refused) and ``log_last_error``."""
        return {"log_written": self._written, "log_requests": self._requests, "log_pending": len(self._queue),
                "log_dropped": self._dropped, "log_failed": self._failed, "log_last_error": self._last_error}

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def closed(self) -> bool:
        return self._closed


def _rows(item: tuple[Any, ...], out: list[tuple[Any, ...]]) -> None:
    """Append the table rows of one queued request (see :data:`tinydancer.storage.DECISION_COLUMNS`)."""
    tag = item[0]
    if tag == CANDIDATES:
        _, rid, ids, result, fallback, threshold, time_us, at = item
        n = result.n
        if n == 0:
            return
        conf = result.confidence.tolist()
        unc = result.uncertainty.tolist()
        light = result.lightweight.tolist()
        features = result.features
        blob = b"" if features is None else features.tobytes()
        ids = ids.tolist() if isinstance(ids, np.ndarray) else ids
        fell_back = int(fallback)
        for i in range(n):
            out.append((rid, "candidate", str(ids[i]), None, None, None, blob[20 * i:20 * i + 20] or None, None,
                        conf[i], None, threshold, int(light[i]), unc[i], fell_back, time_us, at))
    elif tag == QUERY:
        _, rid, embedding, length, d, time_us, at = item
        [(blob, dtype)] = _packed(embedding[None])
        out.append((rid, "query", None, blob, dtype, int(embedding.shape[0]), None, length, d.confidence,
                    d.expected_gain, d.threshold, int(d.use_lightweight), d.uncertainty, 0, time_us, at))
    else:
        _, rid, embeddings, lengths, ds, time_us, at = item
        dim = int(embeddings.shape[1])
        n = embeddings.shape[0]
        each = time_us / n
        conf, gain = ds.confidence.tolist(), ds.expected_gain.tolist()
        use, unc = ds.use_lightweight.tolist(), ds.uncertainty.tolist()
        lens = [None] * n if lengths is None else lengths.tolist()
        packed = _packed(embeddings)
        for i in range(n):
            blob, dtype = packed[i]
            out.append((f"{rid}.{i}", "query", None, blob, dtype, dim, None, lens[i], conf[i], gain[i], ds.threshold,
                        int(use[i]), unc[i], 0, each, at))


def _packed(embeddings: np.ndarray) -> list[tuple[bytes, str]]:
    """Each row of a float32 matrix of embeddings as (bytes, dtype): in half precision, or in single
    precision when one of its values is beyond float16's range (65504). The matrix is converted at once."""
    half = embeddings.astype(np.float16)
    fits = np.all(np.isfinite(half), axis=1).tolist()
    return [(half[i].tobytes(), EMBEDDING_DTYPE) if fit else (embeddings[i].tobytes(), "float32")
            for i, fit in enumerate(fits)]


def _close_all() -> None:
    """At interpreter exit: flush and close every open log (errors are logged, not raised)."""
    for log in list(_LIVE):
        try:
            log.close()
        except Exception as exc:
            _log.error("tinydancer: a routing log could not be flushed at exit: %s", exc)


def _forked() -> None:
    """In the child after fork(): every log starts afresh (new ids, an empty queue, new locks); its
    connection is opened on first use."""
    for log in list(_LIVE):
        log._fresh_state()
        log._slow = True


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
