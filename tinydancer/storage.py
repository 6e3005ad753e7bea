"""The routing database: candidates and routing decisions in SQLite, through the standard ``sqlite3`` module.

:class:`Storage` keeps the crate's operations and names (``insert_candidate``, ``get_candidate``,
``query_candidates``, ``increment_access_count``, ``record_routing``, ``get_statistics``) and adds a true
top-k ``search`` by cosine similarity, run by the kernels over the embeddings held in memory.

How the file is used:

- WAL journal mode; ``synchronous=NORMAL`` by default (a commit survives the process being killed, but not
  a power cut), ``"full"`` on request (a commit also survives a power cut); a busy timeout; every write is
  one ``BEGIN IMMEDIATE`` transaction, so writers queue for the lock instead of failing half-way.
- The schema carries a version (``PRAGMA user_version``) and an application id (``PRAGMA application_id``)
  that marks the file as ours. Opening applies the missing migration steps; a newer version is refused.
- An existing file is first inspected through a read-only connection; a file that is not SQLite, is
  damaged, or holds another program's tables is refused and left byte-for-byte unchanged.
- Only a regular file, or a path that does not exist yet in an existing folder, is opened.
- Every embedding (candidates and logged queries) must have the database's one dimension, fixed by the
  first embedding stored; embeddings are float32 BLOBs, metadata is JSON.

One :class:`Storage` may be shared by threads (a lock guards its connection), and several processes may
write one file (SQLite's locks order them). A :class:`Storage` inherited by a child through ``fork()``
refuses every use there: open a new one in the child. ``fork()`` waits until no thread is using a
:class:`Storage` (a commit in progress ends first, after at most the busy timeout), and the child starts by
closing the inherited connections, so that SQLite in the child holds no state of the parent's.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tinydancer import checks, kernels
from tinydancer.atomic_files import describe_kind
from tinydancer.candidates import Candidate, CandidateBatch
from tinydancer.errors import (
    ConfigError,
    InvalidInputError,
    StorageBusyError,
    StorageCorruptError,
    StorageError,
    StorageFullError,
    StorageReadOnlyError,
)

__all__ = ["APPLICATION_ID", "DECISION_COLUMNS", "SCHEMA_VERSION", "RoutingStatistics", "Storage"]

PathArg = str | PathLike[str]

APPLICATION_ID = 0x54446E63  # "TDnc": PRAGMA application_id of every tinydancer database
"""The ``PRAGMA application_id`` that marks a SQLite file as a tinydancer database."""

# Migration steps: _MIGRATIONS[v] takes a database at version v - 1 to version v. Version 0 is an empty
# file. Steps run in one write transaction with the new user_version, so a file is at one version or the next.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        f"PRAGMA application_id = {APPLICATION_ID}",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # seq orders insertion; candidates are never deleted, so the in-memory index only ever appends.
        """CREATE TABLE candidates (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            embedding BLOB NOT NULL,
            dim INTEGER NOT NULL,
            metadata TEXT NOT NULL,
            created_at REAL NOT NULL,
            access_count INTEGER NOT NULL,
            success_rate REAL NOT NULL)""",
        "CREATE INDEX candidates_created_at ON candidates (created_at)",
        """CREATE TABLE routing_decisions (
            seq INTEGER PRIMARY KEY,
            candidate_id TEXT NOT NULL,
            query_embedding BLOB NOT NULL,
            dim INTEGER NOT NULL,
            confidence REAL NOT NULL,
            use_lightweight INTEGER NOT NULL,
            uncertainty REAL NOT NULL,
            inference_time_us REAL NOT NULL,
            recorded_at REAL NOT NULL)""",
    ),
    # Request ids on decisions, and the outcomes reported for them (was the lightweight answer good enough?).
    2: (
        "ALTER TABLE routing_decisions ADD COLUMN request_id TEXT",
        "CREATE INDEX routing_decisions_request ON routing_decisions (request_id, candidate_id)",
        """CREATE TABLE outcomes (
            seq INTEGER PRIMARY KEY,
            request_id TEXT NOT NULL,
            candidate_id TEXT,
            good INTEGER NOT NULL,
            recorded_at REAL NOT NULL)""",
    ),
    # What retraining needs on every decision: its kind, the model's input (the weighted features of a
    # candidate decision, the query embedding of a query decision), the threshold, and whether the router
    # fell back. SQLite cannot relax NOT NULL in place, so the table is rebuilt with its rows.
    3: (
        """CREATE TABLE routing_decisions_3 (
            seq INTEGER PRIMARY KEY,
            request_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            candidate_id TEXT,
            query_embedding BLOB,
            embedding_dtype TEXT,
            dim INTEGER,
            features BLOB,
            prompt_length REAL,
            confidence REAL NOT NULL,
            expected_gain REAL,
            threshold REAL,
            use_lightweight INTEGER NOT NULL,
            uncertainty REAL NOT NULL,
            fell_back INTEGER NOT NULL,
            inference_time_us REAL NOT NULL,
            recorded_at REAL NOT NULL)""",
        """INSERT INTO routing_decisions_3 (seq, request_id, kind, candidate_id, query_embedding, embedding_dtype, dim,
            confidence, use_lightweight, uncertainty, fell_back, inference_time_us, recorded_at)
            SELECT seq, COALESCE(request_id, 'logged-' || seq), 'candidate', candidate_id, query_embedding, 'float32',
            dim, confidence, use_lightweight, uncertainty, 0, inference_time_us, recorded_at FROM routing_decisions""",
        "DROP TABLE routing_decisions",
        "ALTER TABLE routing_decisions_3 RENAME TO routing_decisions",
        "CREATE INDEX routing_decisions_request ON routing_decisions (request_id, candidate_id)",
        "CREATE INDEX outcomes_request ON outcomes (request_id, candidate_id)",
    ),
}
SCHEMA_VERSION = max(_MIGRATIONS)
"""The schema version this tinydancer writes; a database with a higher one is refused."""

_SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}

# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26

_CANDIDATE_COLUMNS = "id, embedding, dim, metadata, created_at, access_count, success_rate"

DECISION_COLUMNS = ("request_id", "kind", "candidate_id", "query_embedding", "embedding_dtype", "dim", "features",
                    "prompt_length", "confidence", "expected_gain", "threshold", "use_lightweight", "uncertainty",
                    "fell_back", "inference_time_us", "recorded_at")
"""The columns of a logged decision, in the order the routers' background writer gives them."""
# Each outcome with the decisions it labels: its request's, or only its candidate's when it names one.
_OUTCOME_JOIN = ("outcomes o JOIN routing_decisions d ON d.request_id = o.request_id"
                 " AND (o.candidate_id IS NULL OR o.candidate_id = d.candidate_id)")
_INSERT_DECISION = (f"INSERT INTO routing_decisions ({', '.join(DECISION_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(DECISION_COLUMNS))})")

_OPEN: weakref.WeakSet[Storage] = weakref.WeakSet()
_HELD_AT_FORK: list[Storage] = []
_FORK_LOCK = threading.Lock()  # one fork() at a time takes the Storages' locks


# SQLite keeps, per process, what each open file's connections hold (locks, the WAL index's mutexes), and
# fork() copies that state into the child although the parent's locks and threads stay behind. A
# connection the child opened beside an inherited one would share that state: it could wait forever on a
# mutex a parent's thread held at fork(), or write without any lock of its own, so that the parent, closing
# the file, deletes the WAL the child still commits to. Hence every Storage's lock is taken across fork()
# (no thread of ours is then inside SQLite), and the child closes the inherited connections, idle as they
# are, before anything of its own runs.
def _before_fork() -> None:
    _FORK_LOCK.acquire()
    pid = os.getpid()
    for storage in list(_OPEN):
        if storage._pid == pid:
            storage._lock.acquire()
            _HELD_AT_FORK.append(storage)


def _after_fork_in_parent() -> None:
    while _HELD_AT_FORK:
        _HELD_AT_FORK.pop()._lock.release()
    _FORK_LOCK.release()


def _after_fork_in_child() -> None:
    global _FORK_LOCK
    _FORK_LOCK = threading.Lock()
    _HELD_AT_FORK.clear()
    for storage in list(_OPEN):
        storage._lock = threading.RLock()
        conn = getattr(storage, "_conn", None)
        if conn is not None:
            try:
                conn.close()  # idle: no transaction to roll back into the parent's file
            except sqlite3.Error:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


@dataclass(frozen=True, slots=True)
class RoutingStatistics:
    """What :meth:`Storage.get_statistics` reports about the logged routing decisions.

    Inference times are in microseconds; with no decision logged the average and percentiles are 0.0.
    Percentiles interpolate linearly between the two nearest logged values (NumPy's default). A decision is
    one candidate of a candidate router's request (each row carries its request's time) or one query of a
    query router. ``query_routes`` counts the query decisions among ``total_routes``, ``fallback_routes``
    the candidate decisions made without the model (it failed, or the circuit breaker was open).
    ``outcomes`` counts the outcomes reported with :meth:`Storage.record_outcome`, ``good_outcomes`` those
    where the lightweight answer was good enough; ``lightweight_outcomes`` and ``lightweight_good_outcomes``
    the same for the decisions sent to the lightweight model (an outcome without a candidate id counts once
    per decision of its request): how often the cheap answer that was actually used was good enough.
    """

    total_routes: int
    lightweight_routes: int
    powerful_routes: int
    avg_inference_time_us: float
    p50_inference_time_us: float
    p95_inference_time_us: float
    p99_inference_time_us: float
    total_candidates: int
    outcomes: int
    good_outcomes: int
    query_routes: int = 0
    fallback_routes: int = 0
    lightweight_outcomes: int = 0
    lightweight_good_outcomes: int = 0

    def as_dict(self) -> dict[str, int | float]:
        """The statistics as a plain dict (for JSON)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def estimated_saving(self, strong_cost: float, weak_cost: float) -> float:
        """The share of the bill saved against sending every logged decision to the powerful model, at these
        per-call costs (same tokens per call assumed): ``1 - (powerful * strong + lightweight * weak) /
        (total * strong)``; 0.0 with nothing logged.

        Raises:
            InvalidInputError: a cost that is not a finite number >= 0, or a strong cost of 0.
        """
        from tinydancer.evaluation.metrics import cost_saving

        share = self.powerful_routes / self.total_routes if self.total_routes else 1.0  # nothing logged: 0.0
        return cost_saving(share, strong_cost, weak_cost)


class Storage:
    """Candidates and routing decisions in one SQLite file (or in memory).

    Args:
        path: the database file, or ``":memory:"`` for a private in-memory database. A file that does
            not exist is created (its folder must exist).
        synchronous: ``"normal"`` (default: commits survive a killed process, not a power cut) or
            ``"full"`` (commits also survive a power cut, at the cost of an fsync each).
        read_only: open without writing anything to the database file (an existing tinydancer database
            only); every write raises :class:`~tinydancer.errors.StorageReadOnlyError`. In WAL mode
            SQLite may still create the ``-wal`` and ``-shm`` files beside it, as any reader does.
        busy_timeout: seconds to wait for another writer's lock before raising
            :class:`~tinydancer.errors.StorageBusyError`.

    Raises:
        ConfigError: a bad ``synchronous``, ``read_only`` or ``busy_timeout``.
        StorageError: the path is not a regular file (a folder, a FIFO, a device), its folder does not
            exist, or the database's schema version is newer than this tinydancer's.
        StorageCorruptError: the file is not SQLite, is damaged, or holds another program's tables. The
            file is left byte-for-byte unchanged. Opening reads the header and the schema only (a full
            ``PRAGMA integrity_check`` would read every page): damage elsewhere raises this error from the
            first method that reads the damaged pages.
        StorageReadOnlyError: ``read_only=True`` and the file holds no tinydancer schema yet.

    Every method commits before it returns (``flush`` has nothing left to wait for). Writes that fail
    roll back whole: a list of candidates is stored entirely or not at all.
    """

    def __init__(self, path: PathArg, *, synchronous: str = "normal", read_only: bool = False,
                 busy_timeout: float = 5.0) -> None:
        if not isinstance(synchronous, str) or synchronous.lower() not in _SYNCHRONOUS:
            raise ConfigError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        self._read_only = checks.flag(read_only, "read_only")
        self._busy_timeout = checks.real(busy_timeout, "busy_timeout", 0.0)
        self._synchronous = _SYNCHRONOUS[synchronous.lower()]
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._closed = False
        self._dim: int | None = None  # the database's embedding dimension, once one is stored
        self._dim_claimed: int | None = None  # stored by the open write; becomes _dim when it commits
        # The in-memory search index: rows [0, _count) of _matrix/_norms hold candidates _seqs[:_count].
        self._index_loaded = False
        self._matrix = np.empty((0, 0), np.float32)
        self._norms = np.empty(0, np.float32)
        self._seqs = np.empty(0, np.int64)
        self._count = 0
        self._last_seq = 0
        self._data_version: int | None = None
        self._logs: weakref.WeakSet[Any] = weakref.WeakSet()  # routers' logs writing here
        _OPEN.add(self)
        with self._lock:  # fork() waits for the opening to finish
            self._open(path)

    def _open(self, path: PathArg) -> None:
        given = path if isinstance(path, str) else os.fspath(path)
        if not isinstance(given, str):
            raise ConfigError(f"path must be a str or os.PathLike[str], got {type(path).__name__}")
        self._path = given
        if given == ":memory:":
            if self._read_only:
                raise StorageReadOnlyError(":memory: cannot be opened read-only (it would always be empty)")
            self._conn = self._connect(":memory:", uri=False)
            self._prepare()
            return
        exists = _check_path(given)
        if exists:
            self._conn = self._inspect(given)
            if self._read_only:
                return
            self._conn.close()
        elif self._read_only:
            raise StorageError(f"{given}: does not exist (read_only=True opens existing databases only)")
        self._conn = self._connect(_uri(given, "rw" if exists else "rwc"), uri=True)
        self._prepare()

    # -- opening ------------------------------------------------------------------------------------------

    def _connect(self, target: str, uri: bool) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(target, timeout=self._busy_timeout, isolation_level=None,
                                   check_same_thread=False, uri=uri)
        except sqlite3.Error as exc:
            raise _storage_error(exc, self._path) from exc
        return conn

    def _inspect(self, path: str) -> sqlite3.Connection:
        """A read-only connection to ``path``, after checking the file holds our schema (or none at all)."""
        conn = self._connect(_uri(path, "ro"), uri=True)
        try:
            version, ours, tables = _schema_of(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise _storage_error(exc, path) from exc
        try:
            _check_schema(path, version, ours, tables, self._read_only)
        except StorageError:
            conn.close()
            raise
        return conn

    def _prepare(self) -> None:
        """Set the connection's pragmas and bring the schema to SCHEMA_VERSION."""
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() not in ("wal", "memory"):
                raise StorageError(f"{self._path}: SQLite could not switch the journal to WAL mode (got {mode})")
            self._conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            version, ours, _ = _schema_of(self._conn)
            if ours and version == SCHEMA_VERSION:
                return  # up to date: no write transaction, so opening never waits for a writer
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                # Checked again under the write lock: another process may have set the file up meanwhile.
                version, ours, tables = _schema_of(self._conn)
                _check_schema(self._path, version, ours, tables, False)
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        self._conn.execute(statement)
                if version != SCHEMA_VERSION:
                    self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as exc:
            self._conn.close()
            raise _storage_error(exc, self._path) from exc
        except StorageError:
            self._conn.close()
            raise

    # -- the connection, guarded ---------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if os.getpid() != self._pid:
            raise StorageError(
                f"{self._path}: this Storage was opened in process {self._pid} and cannot be used in process "
                f"{os.getpid()} after fork(); open a new Storage in the child"
            )
        if self._closed:
            raise StorageError(f"{self._path}: the Storage is closed")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_usable()
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise _storage_error(exc, self._path) from exc

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction, committed when the block ends, rolled back on any error."""
        with self._lock:
            self._check_usable()
            if self._read_only:
                raise StorageReadOnlyError(f"{self._path}: opened with read_only=True")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._dim_claimed = None
                    self._rollback()
                    raise
                if self._dim_claimed is not None:
                    self._dim, self._dim_claimed = self._dim_claimed, None
            except sqlite3.Error as exc:
                raise _storage_error(exc, self._path) from exc

    def _rollback(self) -> None:
        if self._conn.in_transaction:  # SQLite may already have rolled back (a full disk, say)
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _stored_dim(self, conn: sqlite3.Connection) -> int | None:
        if self._dim is None:
            row = conn.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
            if row is not None:
                self._dim = int(row[0])
        return self._dim

    def _claim_dim(self, conn: sqlite3.Connection, dim: int, name: str) -> None:
        """Check ``dim`` against the database's dimension (inside :meth:`_writing`); when none is stored yet,
        store ``dim`` (remembered as the dimension once the transaction commits)."""
        stored = self._stored_dim(conn)
        if stored is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('dim', ?)", (str(dim),))
            self._dim_claimed = dim
        elif dim != stored:
            raise InvalidInputError(f"{name} has dimension {dim}, but this database stores dimension {stored}")

    # -- candidates ----------------------------------------------------------------------------------------

    def insert_candidate(self, candidate: Candidate) -> None:
        """Store one candidate (see :meth:`insert_candidates`)."""
        self.insert_candidates([candidate])

    def insert_candidates(self, candidates: Sequence[Candidate]) -> None:
        """Store ``candidates`` (a list or tuple of :class:`~tinydancer.candidates.Candidate`) in one
        transaction: all of them, or none.

        Raises:
            InvalidInputError: an element is not a Candidate, a field is bad (a NaN embedding, say), the
                embeddings differ in dimension from each other or from the database's, metadata cannot be
                written as JSON, or an id is repeated or already stored. Nothing is written.
            StorageReadOnlyError, StorageFullError, StorageBusyError, StorageError: the write failed;
                nothing of it is stored.
        """
        if not isinstance(candidates, (list, tuple)):
            raise InvalidInputError(f"candidates must be a list or tuple of Candidate, got {type(candidates).__name__}")
        batch = CandidateBatch.from_candidates(candidates)  # checks every field, names it
        n = len(batch)
        if n == 0:
            return
        if len(set(batch.ids)) != n:
            raise InvalidInputError("candidates holds the same id more than once")
        metadata = [_json(c.metadata, f"candidates[{i}].metadata") for i, c in enumerate(candidates)]
        emb = batch.embeddings
        dim = batch.dim
        with self._lock:  # the index must take our rows before another thread's catch-up could
            with self._writing() as conn:
                self._claim_dim(conn, dim, "candidates[0].embedding")
                self._catch_up(conn)  # others' rows first, so ours follow them in the index
                first = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM candidates").fetchone()[0] + 1
                rows = (  # made as SQLite takes them, so the embeddings are not all copied at once
                    (first + i, batch.ids[i], emb[i].tobytes(), dim, metadata[i], float(batch.created_at[i]),
                     int(batch.access_count[i]), float(batch.success_rate[i]))
                    for i in range(n)
                )
                try:
                    conn.executemany(
                        f"INSERT INTO candidates (seq, {_CANDIDATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                except sqlite3.IntegrityError:
                    taken = _already_stored(conn, batch.ids)
                    raise InvalidInputError(f"candidate id {taken!r} is already stored") from None
            if self._index_loaded:
                self._append(np.arange(first, first + n, dtype=np.int64), emb, batch.norms)

    def get_candidate(self, id: str) -> Candidate | None:
        """The candidate stored under ``id``, or None."""
        if not isinstance(id, str):
            raise InvalidInputError(f"id must be a str, got {type(id).__name__}")
        with self._reading() as conn:
            row = conn.execute(f"SELECT {_CANDIDATE_COLUMNS} FROM candidates WHERE id = ?", (id,)).fetchone()
        return None if row is None else _candidate(row)

    def query_candidates(self, limit: int) -> list[Candidate]:
        """At most ``limit`` candidates, newest ``created_at`` first (the later inserted first on ties)."""
        limit = checks.integer(limit, "limit", 0, error=InvalidInputError)
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_CANDIDATE_COLUMNS} FROM candidates ORDER BY created_at DESC, seq DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_candidate(row) for row in rows]

    def increment_access_count(self, id: str) -> None:
        """Add one to the access count of candidate ``id``.

        Raises:
            InvalidInputError: no candidate has this id (nothing is written).
        """
        if not isinstance(id, str):
            raise InvalidInputError(f"id must be a str, got {type(id).__name__}")
        with self._writing() as conn:
            if conn.execute("UPDATE candidates SET access_count = access_count + 1 WHERE id = ?", (id,)).rowcount != 1:
                raise InvalidInputError(f"id {id!r} names no stored candidate")

    # -- search ----------------------------------------------------------------------------------------------

    def search(self, query_embedding: ArrayLike, k: int) -> list[tuple[Candidate, float]]:
        """The ``k`` stored candidates most similar to ``query_embedding`` by cosine similarity, highest
        first, each with its similarity (ties: the earlier inserted first).

        Exact, not approximate: every stored embedding is scored by
        :func:`~tinydancer.kernels.cosine_batch`. The embeddings are held in memory as one float32 matrix,
        read from SQLite once and then kept in step: rows this Storage inserts are appended as they are
        committed, and rows other connections committed are read (only those) when SQLite's
        ``data_version`` says the file changed.

        Raises:
            InvalidInputError: the query is not a finite 1-D vector, has another dimension than the stored
                embeddings, or ``k`` is not an int >= 0.
        """
        query = kernels.as_vector(query_embedding, "query_embedding")
        k = checks.integer(k, "k", 0, error=InvalidInputError)
        with self._reading() as conn:
            self._refresh(conn)
            n = self._count
            if n == 0 or k == 0:
                return []
            if query.shape[0] != self._matrix.shape[1]:
                raise InvalidInputError(
                    f"query_embedding has dimension {query.shape[0]}, but this database stores dimension "
                    f"{self._matrix.shape[1]}"
                )
            scores = kernels.cosine_batch(query, self._matrix[:n], self._norms[:n])
            if k < n:
                top = np.argpartition(-scores, k - 1)[:k]
            else:
                top = np.arange(n)
            # highest score first, then the lower position (the earlier inserted)
            top = top[np.lexsort((top, -scores[top]))]
            seqs = [int(s) for s in self._seqs[top]]
            marks = ",".join("?" * len(seqs))
            found = {row[0]: _candidate(row[1:]) for row in conn.execute(
                f"SELECT seq, {_CANDIDATE_COLUMNS} FROM candidates WHERE seq IN ({marks})", seqs)}
        return [(found[s], float(scores[i])) for s, i in zip(seqs, top)]

    def _refresh(self, conn: sqlite3.Connection) -> None:
        """Bring the in-memory index up to date (under the lock)."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if self._index_loaded and version == self._data_version:
            return  # no other connection committed since the last look
        self._catch_up(conn, force=True)
        self._data_version = version

    def _catch_up(self, conn: sqlite3.Connection, force: bool = False) -> None:
        """Append the candidates stored after the index's last row (others' inserts), read in chunks of
        4,096 rows into a matrix sized once, so that loading holds little more than the index itself."""
        if not (self._index_loaded or force):
            return
        count = conn.execute("SELECT COUNT(*) FROM candidates WHERE seq > ?", (self._last_seq,)).fetchone()[0]
        cursor = conn.execute(
            "SELECT seq, embedding, dim FROM candidates WHERE seq > ? ORDER BY seq", (self._last_seq,))
        self._index_loaded = True
        reserve = self._count + count
        while rows := cursor.fetchmany(4096):
            dim = rows[0][2]
            seqs = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            emb = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)
            self._append(seqs, emb, kernels.l2_norms(emb), reserve)

    def _append(self, seqs: NDArray[np.int64], emb: NDArray[np.float32], norms: NDArray[np.float32],
                reserve: int = 0) -> None:
        n, dim = self._count, emb.shape[1]
        need = n + emb.shape[0]
        if self._matrix.shape[1] != dim and n == 0:
            self._matrix = np.empty((0, dim), np.float32)
        if need > self._matrix.shape[0]:  # grow by doubling (or to the size reserved)
            cap = max(need, reserve, 2 * self._matrix.shape[0], 64)
            matrix = np.empty((cap, dim), np.float32)
            matrix[:n] = self._matrix[:n]
            self._matrix = matrix
            self._norms = np.concatenate([self._norms[:n], np.empty(cap - n, np.float32)])
            self._seqs = np.concatenate([self._seqs[:n], np.empty(cap - n, np.int64)])
        self._matrix[n:need] = emb
        self._norms[n:need] = norms
        self._seqs[n:need] = seqs
        self._count = need
        self._last_seq = int(seqs[-1])

    # -- routing decisions -----------------------------------------------------------------------------------

    def record_routing(self, candidate_id: str, query_embedding: ArrayLike, confidence: float,
                       use_lightweight: bool, uncertainty: float, inference_time_us: float, *,
                       request_id: str | None = None) -> str:
        """Log one routing decision (committed when this returns).

        ``candidate_id`` need not name a stored candidate (requests may carry their own candidates).
        ``request_id`` ties the decisions of one request together and to the outcome reported later with
        :meth:`record_outcome`; without one, a new random id is made.

        Returns:
            The request id.

        Raises:
            InvalidInputError: a bad value (a NaN or wrong-dimension query embedding, a confidence or
                uncertainty outside [0, 1], a negative time, a non-bool ``use_lightweight``). Nothing is
                written.
        """
        if not isinstance(candidate_id, str):
            raise InvalidInputError(f"candidate_id must be a str, got {type(candidate_id).__name__}")
        if request_id is None:
            request_id = uuid.uuid4().hex
        elif not isinstance(request_id, str) or not request_id:
            raise InvalidInputError(f"request_id must be a non-empty str or None, got {request_id!r}")
        query = kernels.as_vector(query_embedding, "query_embedding")
        dim = int(query.shape[0])
        row = (  # DECISION_COLUMNS order; no features, prompt length, expected gain or threshold
            request_id,
            "candidate",
            candidate_id,
            query.tobytes(),
            "float32",
            dim,
            None,
            None,
            checks.unit_interval(confidence, "confidence"),
            None,
            None,
            int(checks.flag(use_lightweight, "use_lightweight", error=InvalidInputError)),
            checks.unit_interval(uncertainty, "uncertainty"),
            0,
            checks.real(inference_time_us, "inference_time_us", 0.0, error=InvalidInputError),
            time.time(),
        )
        with self._writing() as conn:
            self._claim_dim(conn, dim, "query_embedding")
            conn.execute(_INSERT_DECISION, row)
        return request_id

    def record_outcome(self, request_id: str, good: bool, *, candidate_id: str | None = None) -> None:
        """Report whether the lightweight answer was good enough for a logged request (committed when this
        returns). With ``candidate_id``, for that candidate of the request; without, for the request as a
        whole (a query router's decision).

        Raises:
            InvalidInputError: ``good`` is not a bool, or no logged decision has this request id (and
                candidate id, when given). Nothing is written.
        """
        if not isinstance(request_id, str) or not request_id:
            raise InvalidInputError(f"request_id must be a non-empty str, got {request_id!r}")
        if candidate_id is not None and not isinstance(candidate_id, str):
            raise InvalidInputError(f"candidate_id must be a str or None, got {type(candidate_id).__name__}")
        verdict = int(checks.flag(good, "good", error=InvalidInputError))
        with self._lock:
            with self._writing() as conn:
                if candidate_id is None:
                    known = conn.execute("SELECT 1 FROM routing_decisions WHERE request_id = ? LIMIT 1",
                                         (request_id,)).fetchone()
                else:
                    known = conn.execute("SELECT 1 FROM routing_decisions WHERE request_id = ? AND candidate_id = ?"
                                         " LIMIT 1", (request_id, candidate_id)).fetchone()
                if known is None:
                    which = "" if candidate_id is None else f" and candidate id {candidate_id!r}"
                    raise InvalidInputError(f"no logged decision has request id {request_id!r}{which}")
                conn.execute("INSERT INTO outcomes (request_id, candidate_id, good, recorded_at) VALUES (?, ?, ?, ?)",
                             (request_id, candidate_id, verdict, time.time()))

    def _reserve_dim(self, dim: int, name: str) -> None:
        """Check ``dim`` against the database's embedding dimension, storing it when none is stored yet.

        Raises:
            InvalidInputError: the database stores another dimension.
        """
        with self._lock:
            if self._stored_dim_now() == dim:
                return
            with self._writing() as conn:
                self._claim_dim(conn, dim, name)

    def _stored_dim_now(self) -> int | None:
        with self._reading() as conn:
            return self._stored_dim(conn)

    def _write_decisions(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert logged decisions (tuples in :data:`DECISION_COLUMNS` order, checked by their router) in one
        transaction: all of them, or none."""
        with self._writing() as conn:
            conn.executemany(_INSERT_DECISION, rows)

    def labelled_decisions(self, kind: str) -> list[tuple[Any, ...]]:
        """The logged decisions of ``kind`` (``"candidate"`` or ``"query"``) that have an outcome, with the
        latest outcome reported for each, in the order the decisions were logged.

        An outcome with a candidate id labels that candidate's decision in its request; one without labels
        every decision of its request. Candidate decisions without features (those of :meth:`record_routing`,
        and fallbacks, where the model did not run) and query decisions without an embedding are left out.

        Returns:
            Tuples ``(request_id, candidate_id, model_input, dtype, prompt_length, confidence,
            use_lightweight, good)``: ``model_input`` is the raw BLOB (5 float32 weighted features, or the
            query embedding in ``dtype``, ``"float16"`` or ``"float32"``); ``good`` is 0 or 1.

        Raises:
            InvalidInputError: an unknown ``kind``.
        """
        if kind not in ("candidate", "query"):
            raise InvalidInputError(f"kind must be 'candidate' or 'query', got {kind!r}")
        column = "d.features" if kind == "candidate" else "d.query_embedding"
        dtype = "'float32'" if kind == "candidate" else "d.embedding_dtype"
        with self._reading() as conn:
            conn.execute("BEGIN")
            try:
                rows = conn.execute(
                    f"SELECT d.seq, d.request_id, d.candidate_id, {column}, {dtype}, d.prompt_length, d.confidence,"
                    f" d.use_lightweight, o.good FROM {_OUTCOME_JOIN}"
                    f" WHERE d.kind = ? AND {column} IS NOT NULL AND d.fell_back = 0 ORDER BY o.seq",
                    (kind,)).fetchall()
            finally:
                conn.execute("COMMIT")
        latest: dict[int, tuple[Any, ...]] = {}
        for row in rows:  # in outcome order: a later outcome replaces an earlier one
            latest[row[0]] = row[1:]
        return [latest[seq] for seq in sorted(latest)]

    def get_statistics(self) -> RoutingStatistics:
        """Counts and inference-time figures over every logged routing decision (see
        :class:`RoutingStatistics`), read in one consistent snapshot."""
        with self._reading() as conn:
            conn.execute("BEGIN")  # one read transaction: the counts and the times agree
            try:
                total, light, queries, fallbacks = conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(use_lightweight), 0), COALESCE(SUM(kind = 'query'), 0),"
                    " COALESCE(SUM(fell_back), 0) FROM routing_decisions").fetchone()
                times = np.fromiter(
                    (r[0] for r in conn.execute("SELECT inference_time_us FROM routing_decisions")), np.float64)
                candidates = conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
                outcomes, good = conn.execute("SELECT COUNT(*), COALESCE(SUM(good), 0) FROM outcomes").fetchone()
                light_outcomes, light_good = conn.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(o.good), 0) FROM {_OUTCOME_JOIN} WHERE d.use_lightweight = 1"
                ).fetchone()
            finally:
                conn.execute("COMMIT")
        if times.size:
            avg = float(times.mean())
            p50, p95, p99 = (float(v) for v in np.percentile(times, [50, 95, 99]))
        else:
            avg = p50 = p95 = p99 = 0.0
        return RoutingStatistics(int(total), int(light), int(total - light), avg, p50, p95, p99, int(candidates),
                                 int(outcomes), int(good), int(queries), int(fallbacks), int(light_outcomes),
                                 int(light_good))

    # -- lifetime --------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Return once everything recorded before the call is committed: this Storage's own methods commit
        before they return, and the routers logging to it (:class:`~tinydancer.decision_log.DecisionLog`)
        are flushed. Committed means it survives this process being killed; with ``synchronous="full"`` it
        also survives a power cut.

        Raises:
            StorageError: the Storage is closed or was opened in another process, or a router's log could
                not write some decisions.
        """
        with self._lock:
            self._check_usable()
            logs = list(self._logs)
        for log in logs:  # without the lock: their writers need it
            log.flush()

    def _attach(self, log: Any) -> None:
        with self._lock:
            self._logs.add(log)

    def _detach(self, log: Any) -> None:
        with self._lock:
            self._logs.discard(log)

    def close(self) -> None:
        """Flush the routers' logs to it, then close the connection. Calling it again does nothing. In a
        child process after ``fork()`` there is nothing left to close: the inherited connection was closed
        when the child started (idle, as ``fork()`` waits for every use of it to end)."""
        if not self._closed and os.getpid() == self._pid:
            with self._lock:
                logs = list(self._logs)
            for log in logs:
                try:
                    log.flush()
                except StorageError:  # counted in the router's metrics(); closing goes on
                    pass
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if os.getpid() != self._pid:
                return  # the inherited connection was closed right after fork()
            self._conn.close()

    @property
    def path(self) -> str:
        """The path given (or ``":memory:"``)."""
        return self._path

    @property
    def read_only(self) -> bool:
        """Whether writes are refused."""
        return self._read_only

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("read-only" if self._read_only else "open")
        return f"Storage({self._path!r}, {state})"


# -- helpers ---------------------------------------------------------------------------------------------------

def _check_path(path: str) -> bool:
    """Whether ``path`` exists (as a regular file); raise StorageError for anything else that cannot be opened."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise StorageError(f"{path}: the folder {folder} does not exist") from None
        return False
    except OSError as exc:
        raise StorageError(f"{path}: cannot be checked ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise StorageError(f"{path}: is {describe_kind(st.st_mode)}, not a regular file; it was left untouched")
    return True


def _uri(path: str, mode: str) -> str:
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?mode={mode}"


def _schema_of(conn: sqlite3.Connection) -> tuple[int, bool, list[str]]:
    """(user_version, whether the application id is ours, the names in sqlite_master)."""
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    return version, app == APPLICATION_ID, tables


def _check_schema(path: str, version: int, ours: bool, tables: list[str], read_only: bool) -> None:
    if not ours:
        if tables or version != 0:
            raise StorageCorruptError(
                f"{path}: is an SQLite database of another program (not a tinydancer database); "
                "it was left untouched")
        if read_only:
            raise StorageReadOnlyError(f"{path}: holds no tinydancer schema yet, and read_only=True cannot create it")
        return
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"{path}: was written by a newer tinydancer (schema version {version}; this one reads versions up "
            f"to {SCHEMA_VERSION}). Upgrade tinydancer to open it; the file was left untouched")
    if version < SCHEMA_VERSION and read_only:
        raise StorageReadOnlyError(
            f"{path}: has schema version {version} and needs migrating to {SCHEMA_VERSION}, which read_only=True forbids")


def _storage_error(exc: sqlite3.Error, path: str) -> StorageError:
    """The StorageError subclass for an sqlite3 error."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    message = f"{path}: {exc}"
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StorageBusyError(f"{message} (still locked by another connection after the busy timeout)")
    if primary == _SQLITE_FULL:
        return StorageFullError(f"{message}; earlier commits are kept")
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StorageCorruptError(f"{message} (the file is damaged or not SQLite; it is never repaired)")
    if primary == _SQLITE_READONLY:
        return StorageReadOnlyError(message)
    return StorageError(message)


def _json(value: dict[str, Any], name: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} cannot be stored as JSON ({exc})") from None


def _already_stored(conn: sqlite3.Connection, ids: Sequence[str]) -> str:
    for i in ids:
        if conn.execute("SELECT 1 FROM candidates WHERE id = ?", (i,)).fetchone() is not None:
            return i
    return ids[0]


def _candidate(row: Sequence[Any]) -> Candidate:
    id_, blob, dim, metadata, created_at, access_count, success_rate = row
    embedding = np.frombuffer(blob, np.float32).copy()
    if embedding.shape[0] != dim:
        raise StorageCorruptError(f"candidate {id_!r}: its embedding holds {embedding.shape[0]} values, not {dim}")
    return Candidate(id_, embedding, json.loads(metadata), created_at, access_count, success_rate)
