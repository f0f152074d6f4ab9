"""Real SQLite workloads through the engine binding and the native pool and
allocator give the same results as stdlib sqlite3 (the oracle, its own SQLite
copy with the default pcache1) and leave databases that pass integrity_check."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from rustymt._native import _core
from tests.native.workload import run_engine, run_stdlib, script

ROWS = 3000


def oracle(tmp_path, statements, pragmas):
    ref = sqlite3.connect(str(tmp_path / "oracle.db"), isolation_level=None)
    for p in pragmas:
        ref.execute(p)
    out = run_stdlib(ref, statements)
    ref.close()
    return out


def engine(path, slot, statements, pragmas):
    conn = _core.Connection(path, tenant=slot)
    out = run_engine(conn, pragmas + statements)[len(pragmas):]
    check = run_engine(conn, ["PRAGMA integrity_check"])[0]
    conn.close()
    return out, check


@pytest.mark.parametrize("page_size", [1024, 2048, 4096, 8192, 16384, 32768, 65536])
def test_workload_matches_oracle_at_every_page_size(tmp_path, slot, page_size):
    # A small partition forces the CLOCK, spills of dirty pages and recycling.
    _core.set_partition(slot, 0, max(4, 48 * 1024 // page_size))
    pragmas = [f"PRAGMA page_size={page_size}"]
    statements = script(ROWS)
    got, check = engine(str(tmp_path / "engine.db"), slot, statements, pragmas)
    assert got == oracle(tmp_path, statements, pragmas)
    assert check == [("ok",)]
    stats = _core.pool_stats(slot)
    assert stats["evictions"] > 0 and stats["misses"] > 0 and stats["hits"] > 0
    assert stats["resident"] == 0 and stats["pinned"] == 0
    assert _core.memory_stats(slot)["allocated_bytes"] == 0


def test_workload_through_the_io_metering_vfs(tmp_path, slot):
    _core.set_partition(slot, 0, 32)
    statements = script(ROWS)
    conn = _core.Connection(str(tmp_path / "vfs.db"), tenant=slot, vfs="rustymt")
    got = run_engine(conn, statements)
    assert run_engine(conn, ["PRAGMA integrity_check"]) == [[("ok",)]]
    conn.close()
    assert got == oracle(tmp_path, statements, [])
    assert _core.pool_stats(slot)["evictions"] > 0
    assert _core.memory_stats(slot)["allocated_bytes"] == 0
    io = _core.iovfs_stats(slot)
    assert io["writes"] > 0 and io["reads"] > 0  # the datafile IO went through the shim


def test_in_memory_database_and_memory_temp_store(tmp_path, slot):
    statements = script(ROWS)
    pragmas = ["PRAGMA temp_store=MEMORY"]
    got, check = engine(":memory:", slot, statements, pragmas)
    assert got == oracle(tmp_path, statements, pragmas)
    assert check == [("ok",)]
    # bPurgeable=0 pages live outside the shared frames
    assert _core.pool_stats(slot)["unpooled"] == 0
    assert _core.memory_stats(slot)["allocated_bytes"] == 0


def test_file_temp_store_and_pool_invariants(tmp_path, slot):
    _core.set_partition(slot, 0, 64)
    statements = script(ROWS)
    pragmas = ["PRAGMA temp_store=FILE", "PRAGMA cache_size=20"]
    got, check = engine(str(tmp_path / "e.db"), slot, statements, pragmas)
    assert got == oracle(tmp_path, statements, pragmas)
    assert check == [("ok",)]
    assert _core.pool_check()


def test_quota_fails_one_statement_and_the_connection_recovers(tmp_path, slot):
    conn = _core.Connection(str(tmp_path / "q.db"), tenant=slot)
    run_engine(conn, ["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"])
    _core.set_memory_quota(slot, 4 << 20)
    with pytest.raises(_core.SQLiteError) as info:
        run_engine(conn, ["SELECT length(randomblob(16000000))"])
    assert info.value.code == 7  # SQLITE_NOMEM -> SQLSTATE 53200 upstream
    assert _core.memory_stats(slot)["oom_count"] >= 1
    assert run_engine(conn, ["SELECT x FROM t"]) == [[(1,)]]
    # Inside a transaction SQLite rolls the whole transaction back.
    run_engine(conn, ["BEGIN", "INSERT INTO t VALUES (2)"])
    with pytest.raises(_core.SQLiteError) as info:
        run_engine(conn, ["INSERT INTO t VALUES (randomblob(16000000))"])
    assert info.value.code == 7
    run_engine(conn, ["ROLLBACK"]) if conn.in_transaction else None
    assert run_engine(conn, ["SELECT x FROM t ORDER BY x"]) == [[(1,)]]
    # Under the quota everything works again.
    run_engine(conn, ["INSERT INTO t VALUES (3)"])
    assert run_engine(conn, ["SELECT count(*) FROM t"]) == [[(2,)]]
    stats = _core.memory_stats(slot)
    assert 0 < stats["allocated_bytes"] <= stats["quota_bytes"] == 4 << 20
    conn.close()
    assert _core.memory_stats(slot)["allocated_bytes"] == 0


def test_exhausted_quota_refuses_a_new_connection(tmp_path, slot):
    _core.set_memory_quota(slot, 2048)
    with pytest.raises(_core.SQLiteError) as info:
        conn = _core.Connection(str(tmp_path / "tiny.db"), tenant=slot)
        run_engine(conn, ["CREATE TABLE t(x)"])
    assert info.value.code == 7
    assert _core.memory_stats(slot)["allocated_bytes"] == 0


def test_buffer_frames_count_toward_tenant_memory(tmp_path, slot):
    conn = _core.Connection(str(tmp_path / "f.db"), tenant=slot)
    run_engine(conn, ["PRAGMA page_size=4096", "CREATE TABLE t(x)",
                      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 200) "
                      "INSERT INTO t SELECT randomblob(3000) FROM c"])
    resident = _core.pool_stats(slot)["resident"]
    assert resident > 100
    assert _core.memory_stats(slot)["allocated_bytes"] >= resident * 4096
    conn.close()


def test_threads_of_several_tenants_stress_the_shared_pool(tmp_path):
    slots = [240, 241, 242, 243]
    for i, s in enumerate(slots):
        _core.reset_tenant_stats(s)
        _core.set_partition(s, 16 * i, 64 + 32 * i)
    errors = []

    def worker(s, w):
        try:
            conn = _core.Connection(str(tmp_path / f"t{s}.db"), tenant=s)
            conn.busy_timeout(10000)
            run_engine(conn, [f"CREATE TABLE IF NOT EXISTS t{w}(k INTEGER PRIMARY KEY, v TEXT)"])
            for i in range(150):
                run_engine(conn, ["BEGIN IMMEDIATE",
                                  f"INSERT INTO t{w}(v) VALUES (printf('%0500d', {i}))",
                                  "COMMIT"])
                rows = run_engine(conn, [f"SELECT count(*), sum(length(v)) FROM t{w}"])[0]
                assert rows == [(i + 1, 500 * (i + 1))]
            assert run_engine(conn, ["PRAGMA integrity_check"]) == [[("ok",)]]
            conn.close()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s, w)) for s in slots for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert _core.pool_check()
    for i, s in enumerate(slots):
        st = _core.pool_stats(s)
        assert st["resident"] == 0 and st["pinned"] == 0
        assert st["misses"] > 0 and st["hits"] > 0
        assert _core.memory_stats(s)["allocated_bytes"] == 0
