"""Storage: the crate's operations, search, and every fault of the issue (corrupt, foreign, newer, read-only,
full, busy, non-regular paths, threads, processes, fork, SIGKILL, bad input)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from tinydancer import storage as storage_module
from tinydancer.candidates import Candidate
from tinydancer.errors import (
    ConfigError,
    InvalidInputError,
    StorageBusyError,
    StorageCorruptError,
    StorageError,
    StorageFullError,
    StorageReadOnlyError,
)
from tinydancer.storage import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    RoutingStatistics,
    Storage,
)

DIM = 16


def make(i: int, rng: np.random.Generator, dim: int = DIM, **fields) -> Candidate:
    return Candidate(f"c{i}", rng.standard_normal(dim), **fields)


def counts(path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        return (conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0],
                conn.execute("SELECT COUNT(*) FROM routing_decisions").fetchone()[0])


# -- the operations -------------------------------------------------------------------------------------------

def test_candidates_round_trip_in_memory(rng):
    with Storage(":memory:") as st:
        c = make(0, rng, metadata={"topic": "x", "n": 2}, created_at=1.5e9, access_count=3, success_rate=0.25)
        st.insert_candidate(c)
        got = st.get_candidate("c0")
        assert got == Candidate("c0", c.embedding, {"topic": "x", "n": 2}, 1.5e9, 3, 0.25)
        assert got.embedding.dtype == np.float32
        assert st.get_candidate("missing") is None


def test_query_candidates_newest_first(rng):
    with Storage(":memory:") as st:
        st.insert_candidates([make(i, rng, created_at=t) for i, t in enumerate([5.0, 9.0, 1.0, 9.0])])
        assert [c.id for c in st.query_candidates(10)] == ["c3", "c1", "c0", "c2"]  # a tie: later inserted first
        assert [c.id for c in st.query_candidates(2)] == ["c3", "c1"]
        assert st.query_candidates(0) == []


def test_increment_access_count(rng):
    with Storage(":memory:") as st:
        st.insert_candidate(make(0, rng, access_count=5))
        for _ in range(3):
            st.increment_access_count("c0")
        assert st.get_candidate("c0").access_count == 8


def test_statistics(rng):
    with Storage(":memory:") as st:
        empty = st.get_statistics()
        assert (empty.total_routes, empty.avg_inference_time_us, empty.p99_inference_time_us) == (0, 0.0, 0.0)
        q = rng.standard_normal(DIM)
        times = np.arange(1, 101, dtype=np.float64)
        for t in times:
            st.record_routing("c0", q, 0.5, bool(t % 4 == 0), 0.1, float(t))
        s = st.get_statistics()
        assert isinstance(s, RoutingStatistics)
        assert (s.total_routes, s.lightweight_routes, s.powerful_routes) == (100, 25, 75)
        assert s.avg_inference_time_us == pytest.approx(50.5)
        assert [s.p50_inference_time_us, s.p95_inference_time_us, s.p99_inference_time_us] == pytest.approx(
            np.percentile(times, [50, 95, 99]))
        assert s.as_dict()["total_routes"] == 100


def test_search_is_the_true_top_k(rng, isa):
    with Storage(":memory:") as st:
        cands = [make(i, rng) for i in range(500)]
        st.insert_candidates(cands)
        q = rng.standard_normal(DIM).astype(np.float32)
        emb = np.stack([c.embedding for c in cands]).astype(np.float64)
        sims = emb @ q / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q))
        want = np.argsort(-sims)[:10]
        got = st.search(q, 10)
        assert [c.id for c, _ in got] == [f"c{i}" for i in want]
        assert [s for _, s in got] == pytest.approx(sims[want], abs=1e-5)
        assert len(st.search(q, 10_000)) == 500
        assert st.search(q, 0) == []


def test_search_index_follows_inserts_and_other_connections(tmp_path, rng):
    path = tmp_path / "r.db"
    q = rng.standard_normal(DIM)
    with Storage(path) as a, Storage(path) as b:
        assert a.search(q, 3) == []
        a.insert_candidates([make(i, rng) for i in range(20)])
        assert len(a.search(q, 100)) == 20
        a.insert_candidate(Candidate("mine", q))
        assert a.search(q, 1)[0][0].id == "mine"
        b.search(q, 1)  # b loads its index
        b.insert_candidate(Candidate("theirs", -q))
        assert a.search(-q, 1)[0][0].id == "theirs"  # committed by another connection
        a.insert_candidate(Candidate("again", q * 3))
        assert sorted(c.id for c, _ in b.search(q, 100)) == sorted(c.id for c, _ in a.search(q, 100))
        assert len(a.search(q, 100)) == 23


def test_an_index_loaded_in_chunks_is_the_whole_table(tmp_path, rng):
    """A second connection loads 10,003 stored rows (more than two chunks of 4,096) and finds the same
    top k as brute force over all of them, also after rows are added on top."""
    path = tmp_path / "r.db"
    emb = rng.standard_normal((10_003, DIM)).astype(np.float32)
    with Storage(path) as writer, Storage(path) as reader:
        writer.insert_candidates([Candidate(f"c{i}", e) for i, e in enumerate(emb)])
        q = rng.standard_normal(DIM).astype(np.float32)
        for _ in range(2):
            sims = emb.astype(np.float64) @ q / (np.linalg.norm(emb.astype(np.float64), axis=1) * np.linalg.norm(q))
            want = np.argsort(-sims, kind="stable")[:25]
            got = reader.search(q, 25)
            assert [c.id for c, _ in got] == [f"c{i}" for i in want]
            assert len(reader.search(q, 20_000)) == emb.shape[0]
            more = rng.standard_normal((5_000, DIM)).astype(np.float32)
            writer.insert_candidates([Candidate(f"c{i}", e) for i, e in enumerate(more, start=emb.shape[0])])
            emb = np.concatenate([emb, more])


def test_search_reports_current_counts(rng):
    with Storage(":memory:") as st:
        st.insert_candidate(make(0, rng))
        st.search(rng.standard_normal(DIM), 1)
        st.increment_access_count("c0")
        assert st.search(rng.standard_normal(DIM), 1)[0][0].access_count == 1


# -- the file ---------------------------------------------------------------------------------------------------

def test_file_persists_with_wal_and_version(tmp_path, rng):
    path = tmp_path / "r.db"
    with Storage(path) as st:
        st.insert_candidate(make(0, rng))
        st.record_routing("c0", rng.standard_normal(DIM), 0.9, True, 0.05, 10.0)
        assert st._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with Storage(path, synchronous="full") as st:
        assert st._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert st.get_candidate("c0") is not None
        assert st.get_statistics().total_routes == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_an_empty_existing_file_is_set_up(tmp_path):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    with Storage(path) as st:
        assert st.get_statistics().total_routes == 0


def test_bad_options():
    with pytest.raises(ConfigError):
        Storage(":memory:", synchronous="off")
    with pytest.raises(ConfigError):
        Storage(":memory:", busy_timeout=-1)
    with pytest.raises(ConfigError):
        Storage(":memory:", read_only=1)


def test_close_is_idempotent_and_final(tmp_path):
    st = Storage(tmp_path / "r.db")
    st.close()
    st.close()
    assert st.closed
    with pytest.raises(StorageError, match="closed"):
        st.get_candidate("x")
    with pytest.raises(StorageError, match="closed"):
        st.flush()


def test_migrations_step_by_step(tmp_path, rng, monkeypatch):
    path = tmp_path / "r.db"
    with Storage(path) as st:
        st.insert_candidate(make(0, rng))
    steps = dict(storage_module._MIGRATIONS)
    steps[4] = ("ALTER TABLE candidates ADD COLUMN note TEXT",)
    monkeypatch.setattr(storage_module, "_MIGRATIONS", steps)
    monkeypatch.setattr(storage_module, "SCHEMA_VERSION", 4)
    with Storage(path) as st:
        assert st.get_candidate("c0") is not None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
        assert "note" in [r[1] for r in conn.execute("PRAGMA table_info(candidates)")]


def test_a_newer_schema_is_refused_untouched(tmp_path):
    path = tmp_path / "r.db"
    Storage(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 7")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StorageError, match="newer tinydancer.*schema version 7"):
        Storage(path)
    with pytest.raises(StorageError, match="newer"):
        Storage(path, read_only=True)
    assert path.read_bytes() == before


# -- faults on open: left byte-for-byte unchanged ---------------------------------------------------------

def test_a_non_sqlite_file_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"just some notes, not a database\n" * 200)
    before = path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(StorageCorruptError):
            Storage(path, read_only=read_only)
    assert path.read_bytes() == before


def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.execute("INSERT INTO users VALUES ('ada')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StorageCorruptError, match="another program"):
        Storage(path)
    assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["users"]
    conn.close()


def test_a_corrupt_file_is_refused_untouched(tmp_path, rng):
    path = tmp_path / "r.db"
    with Storage(path) as st:
        st.insert_candidates([make(i, rng) for i in range(50)])
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xa5" * (4096 - 100)  # page 1: the schema's b-tree
    path.write_bytes(bytes(data))
    with pytest.raises(StorageCorruptError):
        Storage(path)
    assert path.read_bytes() == bytes(data)


def test_damage_past_the_schema_is_reported_when_read(tmp_path):
    path = tmp_path / "r.db"
    with Storage(path) as st:
        st.insert_candidates([Candidate(f"c{i}", np.ones(64)) for i in range(300)])
    data = path.read_bytes()
    page = len(data) - 4096  # the last page holds candidate rows
    damaged = data[:page] + b"\x0d" * 8 + b"\x77" * 4088 + data[page + 4096:]
    path.write_bytes(damaged)
    with Storage(path) as st:
        with pytest.raises(StorageCorruptError):
            st.search(np.ones(64), 1000)
    assert path.read_bytes() == damaged


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_non_regular_paths_are_refused(tmp_path, kind):
    if kind == "folder":
        path = tmp_path / "dir"
        path.mkdir()
    elif kind == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    else:
        path = "/dev/null"
    with pytest.raises(StorageError, match="not a regular file"):
        Storage(path)
    if kind == "folder":
        assert list(path.iterdir()) == []


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        Storage(tmp_path / "nowhere" / "r.db")
    with pytest.raises(StorageError, match="does not exist"):
        Storage(tmp_path / "r.db", read_only=True)
    assert not (tmp_path / "r.db").exists()


# -- read-only, full, busy ------------------------------------------------------------------------------------

def test_read_only_never_writes(tmp_path, rng):
    path = tmp_path / "r.db"
    with Storage(path) as st:
        st.insert_candidate(make(0, rng))
    before = path.read_bytes()
    q = rng.standard_normal(DIM)
    with Storage(path, read_only=True) as ro:
        assert ro.read_only
        assert ro.get_candidate("c0") is not None
        assert ro.search(q, 1)[0][0].id == "c0"
        assert ro.get_statistics().total_candidates == 1
        writes = [
            lambda: ro.insert_candidate(make(1, rng)),
            lambda: ro.insert_candidates([make(2, rng)]),
            lambda: ro.increment_access_count("c0"),
            lambda: ro.record_routing("c0", q, 0.5, True, 0.1, 1.0),
        ]
        for write in writes:
            with pytest.raises(StorageReadOnlyError):
                write()
    assert path.read_bytes() == before
    with pytest.raises(StorageReadOnlyError):
        Storage(":memory:", read_only=True)


def test_read_only_of_an_empty_file_creates_nothing(tmp_path):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    with pytest.raises(StorageReadOnlyError):
        Storage(path, read_only=True)
    assert path.read_bytes() == b""


def test_a_full_database_keeps_earlier_commits(tmp_path, rng):
    path = tmp_path / "r.db"
    with Storage(path) as st:
        st.insert_candidates([make(i, rng) for i in range(10)])
        q = rng.standard_normal(DIM)
        st.search(q, 1)  # the index is loaded
        pages = st._conn.execute("PRAGMA page_count").fetchone()[0]
        st._conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # the simulated full disk
        big = [Candidate(f"big{i}", rng.standard_normal(DIM), {"pad": "x" * 5000}) for i in range(20)]
        with pytest.raises(StorageFullError):
            st.insert_candidates(big)
        assert st.get_candidate("big0") is None
        assert len(st.search(q, 100)) == 10  # the failed rows never reached the index
        st.record_routing("c0", q, 0.5, True, 0.1, 1.0)  # a small write still fits
    assert counts(path) == (10, 1)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_busy_database_raises_after_the_timeout(tmp_path, rng):
    path = tmp_path / "r.db"
    with Storage(path, busy_timeout=0.05) as st:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageBusyError):
                st.insert_candidate(make(0, rng))
            assert st.get_candidate("c0") is None  # reads still work under WAL
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        st.insert_candidate(make(0, rng))
        assert st.get_candidate("c0") is not None


# -- bad input writes nothing ---------------------------------------------------------------------------------

def test_bad_input_writes_nothing(tmp_path, rng):
    path = tmp_path / "r.db"
    with Storage(path) as st:
        st.insert_candidate(make(0, rng))
        nan = make(1, rng)
        nan.embedding = np.full(DIM, np.nan)  # assigned after construction
        bad_calls = [
            lambda: st.insert_candidates([make(5, rng), nan]),
            lambda: st.insert_candidate(make(2, rng, dim=DIM + 1)),
            lambda: st.insert_candidates([make(3, rng), make(4, rng, dim=3)]),
            lambda: st.insert_candidates([make(6, rng), make(6, rng)]),
            lambda: st.insert_candidates([make(7, rng), make(0, rng)]),  # c0 is stored
            lambda: st.insert_candidate(make(8, rng, metadata={"f": object()})),
            lambda: st.insert_candidates("c9"),
            lambda: st.increment_access_count("unknown"),
            lambda: st.record_routing("c0", np.full(DIM, np.nan), 0.5, True, 0.1, 1.0),
            lambda: st.record_routing("c0", np.ones(DIM + 2), 0.5, True, 0.1, 1.0),
            lambda: st.record_routing("c0", np.ones(DIM), 1.5, True, 0.1, 1.0),
            lambda: st.record_routing("c0", np.ones(DIM), 0.5, 1, 0.1, 1.0),
            lambda: st.record_routing("c0", np.ones(DIM), 0.5, True, 0.1, -1.0),
            lambda: st.search(np.ones(DIM + 1), 3),
            lambda: st.search(np.full(DIM, np.nan), 3),
            lambda: st.search(np.ones(DIM), -1),
            lambda: st.query_candidates(-1),
        ]
        for call in bad_calls:
            with pytest.raises(InvalidInputError):
                call()
        assert st.get_candidate("c0").access_count == 0
    assert counts(path) == (1, 0)


def test_the_dimension_is_fixed_by_the_first_embedding(tmp_path, rng):
    path = tmp_path / "r.db"
    with Storage(path) as st:
        st.record_routing("x", np.ones(4), 0.5, True, 0.1, 1.0)
        with pytest.raises(InvalidInputError, match="dimension 4"):
            st.insert_candidate(make(0, rng))
    with Storage(path) as st:  # the dimension is stored, not only remembered
        with pytest.raises(InvalidInputError, match="dimension 4"):
            st.insert_candidate(make(0, rng))
        st.insert_candidate(make(0, rng, dim=4))


# -- threads, processes, fork, SIGKILL ------------------------------------------------------------------------

def test_threads_share_one_storage(tmp_path, rng):
    path = tmp_path / "r.db"
    threads, each = 8, 100
    with Storage(path) as st:
        st.insert_candidate(make(0, rng))
        q = rng.standard_normal(DIM)
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                local = np.random.default_rng(t)
                for i in range(each):
                    st.record_routing("c0", q, 0.5, i % 2 == 0, 0.1, 1.0)
                    st.increment_access_count("c0")
                    st.insert_candidate(Candidate(f"t{t}-{i}", local.standard_normal(DIM)))
                    st.search(q, 3)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
        s = st.get_statistics()
        assert (s.total_routes, s.lightweight_routes, s.total_candidates) == (800, 400, 801)
        assert st.get_candidate("c0").access_count == threads * each
        assert len(st.search(q, 10_000)) == 801


def _process_writer(path: str, worker: int, each: int) -> None:
    rng = np.random.default_rng(worker)
    with Storage(path, busy_timeout=30.0) as st:
        for i in range(each):
            st.insert_candidate(Candidate(f"p{worker}-{i}", rng.standard_normal(DIM)))
            st.record_routing(f"p{worker}-{i}", rng.standard_normal(DIM), 0.5, True, 0.1, 1.0)
            st.increment_access_count("shared")


def test_processes_write_one_file(tmp_path, rng):
    path = str(tmp_path / "r.db")
    with Storage(path) as st:
        st.insert_candidate(Candidate("shared", rng.standard_normal(DIM)))
    ctx = multiprocessing.get_context("spawn")
    workers, each = 4, 50
    procs = [ctx.Process(target=_process_writer, args=(path, w, each)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Storage(path) as st:
        assert st.get_candidate("shared").access_count == workers * each
        assert st.get_statistics().total_routes == workers * each
        assert len(st.search(np.ones(DIM), 10_000)) == workers * each + 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_cannot_use_the_parent_storage(tmp_path, rng):
    path = tmp_path / "r.db"
    with Storage(path) as st:
        st.insert_candidate(make(0, rng))
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                st.get_candidate("c0")
            except StorageError as exc:
                code = 0 if "fork()" in str(exc) else 2
            st.close()  # leaves the inherited connection alone
            try:
                with Storage(path) as own:  # its own Storage works
                    own.increment_access_count("c0")
            except BaseException:  # noqa: BLE001 - the child reports by its code
                code = 3
            os.write(write, bytes([code]))
            os._exit(0)
        os.close(write)
        code = os.read(read, 1)
        os.close(read)
        os.waitpid(pid, 0)
        assert code == b"\x00"
        assert st.get_candidate("c0").access_count == 1  # the parent's connection still works


KILLED_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from tinydancer.candidates import Candidate
    from tinydancer.storage import Storage

    rng = np.random.default_rng(0)
    st = Storage(sys.argv[1])
    i = 0
    while True:
        st.insert_candidates([Candidate(f"k{i}-{j}", rng.standard_normal(16)) for j in range(5)])
        st.record_routing(f"k{i}-0", rng.standard_normal(16), 0.5, True, 0.1, 1.0)
        st.flush()
        i += 1
        print(i, flush=True)
""")


def test_a_killed_writer_loses_nothing_acknowledged(tmp_path):
    path = tmp_path / "r.db"
    # started outside the source tree, which would shadow the installed package (it has no compiled kernels)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    acknowledged = 0
    try:
        for line in proc.stdout:
            acknowledged = int(line)
            if acknowledged >= 200:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert acknowledged >= 200
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with Storage(path) as st:
        s = st.get_statistics()
        assert s.total_routes >= acknowledged
        assert s.total_candidates >= 5 * acknowledged
        assert all(st.get_candidate(f"k{i}-4") is not None for i in range(acknowledged))


def test_a_version_1_database_is_migrated_with_its_data(tmp_path, rng, monkeypatch):
    path = tmp_path / "r.db"
    with monkeypatch.context() as m:  # a file as the first schema wrote it
        m.setattr(storage_module, "_MIGRATIONS", {1: storage_module._MIGRATIONS[1]})
        m.setattr(storage_module, "SCHEMA_VERSION", 1)
        with Storage(path) as st:
            st.insert_candidate(make(0, rng))
    with sqlite3.connect(path) as conn:  # a decision as the first schema stored it
        conn.execute("INSERT INTO routing_decisions (candidate_id, query_embedding, dim, confidence, use_lightweight,"
                     " uncertainty, inference_time_us, recorded_at) VALUES ('c0', ?, ?, 0.9, 1, 0.05, 10.0, 0.0)",
                     (rng.standard_normal(DIM).astype(np.float32).tobytes(), DIM))
    conn.close()
    with pytest.raises(StorageReadOnlyError, match="needs migrating"):
        Storage(path, read_only=True)
    with Storage(path) as st:
        assert st.get_candidate("c0") is not None and st.get_statistics().total_routes == 1
        rid = st.record_routing("c0", rng.standard_normal(DIM), 0.8, False, 0.4, 12.0)
        st.record_outcome(rid, True)
        assert st.get_statistics().outcomes == 1
        old = st._conn.execute("SELECT request_id, kind, embedding_dtype, fell_back FROM routing_decisions"
                               " ORDER BY seq").fetchall()
        assert old[0] == ("logged-1", "candidate", "float32", 0) and old[1][0] == rid
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.close()


def test_request_ids_and_outcomes(tmp_path, rng):
    with Storage(tmp_path / "r.db") as st:
        rid = st.record_routing("c0", rng.standard_normal(DIM), 0.9, True, 0.05, 10.0)
        assert isinstance(rid, str) and len(rid) == 32
        assert st.record_routing("c1", rng.standard_normal(DIM), 0.7, False, 0.5, 9.0, request_id="req-7") == "req-7"
        st.record_routing("c2", rng.standard_normal(DIM), 0.95, True, 0.02, 9.0, request_id="req-7")
        st.record_outcome(rid, True)
        st.record_outcome("req-7", False, candidate_id="c2")
        st.record_outcome("req-7", True)
        s = st.get_statistics()
        assert (s.outcomes, s.good_outcomes) == (3, 2)
        for call, message in [
            (lambda: st.record_outcome("nope", True), "no logged decision has request id 'nope'"),
            (lambda: st.record_outcome("req-7", True, candidate_id="c0"), "and candidate id 'c0'"),
            (lambda: st.record_outcome("req-7", 1), "good"),
            (lambda: st.record_outcome("", True), "request_id"),
            (lambda: st.record_routing("c0", rng.standard_normal(DIM), 0.5, True, 0.1, 1.0, request_id=""),
             "request_id"),
        ]:
            with pytest.raises(InvalidInputError, match=message):
                call()
        assert st.get_statistics().outcomes == 3  # nothing written by the refused calls
