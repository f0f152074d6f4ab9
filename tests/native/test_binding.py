"""The engine's SQLite binding (API_CONTRACTS.md "Engine binding") on real
database files, with the native hooks installed."""
from __future__ import annotations

import threading

import pytest

from rustymt._native import _core
from tests.conftest import wait_for


def run(conn, sql, params=()):
    """Execute every statement of sql; rows of the last one."""
    rows = []
    while sql.strip():
        stmt, sql = conn.prepare(sql)
        if stmt is None:
            break
        if params:
            stmt.bind_all(params)
        rows = stmt.fetchmany(1 << 30)
        stmt.finalize()
    return rows


@pytest.fixture
def conn(tmp_path, slot):
    c = _core.Connection(str(tmp_path / "db.sqlite"), tenant=slot)
    yield c
    c.close()


def test_install_is_idempotent_and_the_canary_sees_the_pool():
    assert _core.hooks_installed()
    assert _core.install() is False
    moved = _core.canary()
    assert moved["caches_created"] >= 1 and moved["allocations"] > 0


def test_prepare_returns_tail_and_none_for_empty_sql(conn):
    stmt, tail = conn.prepare("CREATE TABLE t(a); INSERT INTO t VALUES (1);")
    assert stmt.sql == "CREATE TABLE t(a);"
    assert tail == " INSERT INTO t VALUES (1);"
    assert conn.prepare("   ") == (None, "")
    assert conn.prepare("-- only a comment\n") == (None, "")
    assert conn.prepare("/* c */ ;")[0] is None


def test_values_round_trip_with_types_and_metadata(conn):
    run(conn, "CREATE TABLE t(i INTEGER, f REAL, s TEXT, b BLOB, n)")
    stmt, _ = conn.prepare("INSERT INTO t VALUES (?, ?, ?, ?, ?)")
    assert stmt.param_count == 5 and stmt.param_names is None and not stmt.readonly
    stmt.bind_all([2**62, 2.5, "héllo ☃", b"\x00\x01\xff", None])
    assert stmt.step() is False
    assert conn.changes() == 1 and conn.last_insert_rowid() == 1
    stmt.finalize()
    stmt.finalize()  # idempotent
    sel, _ = conn.prepare("SELECT i, f, s, b, n, i + 1 AS j FROM t")
    assert sel.readonly
    assert sel.column_count == 6
    assert sel.column_names == ["i", "f", "s", "b", "n", "j"]
    assert sel.column_decltypes == ["INTEGER", "REAL", "TEXT", "BLOB", None, None]
    assert sel.step() is True
    assert sel.row() == (2**62, 2.5, "héllo ☃", b"\x00\x01\xff", None, 2**62 + 1)
    assert sel.row_types() == (1, 2, 3, 4, 5, 1)
    assert sel.step() is False
    assert sel.step() is False  # stays done until reset
    sel.reset()
    assert sel.fetchmany(10) == [(2**62, 2.5, "héllo ☃", b"\x00\x01\xff", None, 2**62 + 1)]
    assert sel.fetchmany(10) == []


def test_named_parameters_bind_from_a_mapping(conn):
    stmt, _ = conn.prepare("SELECT :a + :b, $c")
    assert stmt.param_names == [":a", ":b", "$c"]
    stmt.bind_all({"a": 1, "b": 2, "c": "x"})
    assert stmt.fetchmany(5) == [(3, "x")]
    with pytest.raises(ValueError):
        stmt.bind_all({"a": 1})
    with pytest.raises(ValueError):
        stmt.bind_all([1])
    with pytest.raises(TypeError):
        stmt.bind_all([1, 2, object()])


def test_fetchmany_pages_through_a_result(conn):
    run(conn, "CREATE TABLE t(x); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000) INSERT INTO t SELECT x FROM c")
    stmt, _ = conn.prepare("SELECT x FROM t ORDER BY x")
    got = []
    while batch := stmt.fetchmany(128):
        assert len(batch) <= 128
        got.extend(r[0] for r in batch)
    assert got == list(range(1, 1001))
    assert conn.total_changes() == 1000


def test_errors_carry_primary_and_extended_codes(conn):
    with pytest.raises(_core.SQLiteError) as info:
        conn.prepare("SELEC 1")
    assert info.value.code == 1 and "syntax error" in info.value.message
    run(conn, "CREATE TABLE u(x PRIMARY KEY)")
    run(conn, "INSERT INTO u VALUES (1)")
    stmt, _ = conn.prepare("INSERT INTO u VALUES (1)")
    with pytest.raises(_core.SQLiteError) as info:
        stmt.step()
    assert info.value.code == 19  # SQLITE_CONSTRAINT
    assert info.value.extended_code == 1555  # SQLITE_CONSTRAINT_PRIMARYKEY
    stmt.finalize()
    with pytest.raises(_core.SQLiteError) as info:
        _core.Connection("/nonexistent-dir/x.db", tenant=0)
    assert info.value.code == 14  # SQLITE_CANTOPEN


def test_transactions_and_readonly_connections(conn, tmp_path, slot):
    assert conn.in_transaction is False
    run(conn, "BEGIN; CREATE TABLE t(x); INSERT INTO t VALUES (7)")
    assert conn.in_transaction is True
    run(conn, "COMMIT")
    assert conn.in_transaction is False
    ro = _core.Connection(str(tmp_path / "db.sqlite"), tenant=slot, readonly=True)
    assert run(ro, "SELECT x FROM t") == [(7,)]
    with pytest.raises(_core.SQLiteError) as info:
        run(ro, "INSERT INTO t VALUES (8)")
    assert info.value.code == 8  # SQLITE_READONLY
    ro.close()
    with pytest.raises(_core.SQLiteError):
        _core.Connection(str(tmp_path / "missing.db"), tenant=slot, create=False)


def test_close_finalizes_statements_and_is_idempotent(conn):
    stmt, _ = conn.prepare("SELECT 1")
    conn.close()
    conn.close()
    assert conn.closed
    with pytest.raises(_core.SQLiteError):
        stmt.step()
    with pytest.raises(_core.SQLiteError):
        conn.prepare("SELECT 1")


def test_interrupt_from_another_thread_stops_a_running_statement(conn):
    stmt, _ = conn.prepare(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"
    )
    errors = []

    def runner():
        try:
            stmt.step()
        except _core.SQLiteError as exc:
            errors.append(exc)

    t = threading.Thread(target=runner)
    t.start()
    # The statement never ends on its own: keep interrupting until it reports.
    wait_for(lambda: (conn.interrupt(), errors)[1], timeout=20, what="interrupted statement")
    t.join(10)
    assert errors[0].code == 9  # SQLITE_INTERRUPT
    assert run(conn, "SELECT 1") == [(1,)]


def test_busy_timeout_waits_then_reports_busy(tmp_path, slot):
    path = str(tmp_path / "busy.db")
    a = _core.Connection(path, tenant=slot)
    b = _core.Connection(path, tenant=slot)
    run(a, "CREATE TABLE t(x)")
    run(a, "BEGIN IMMEDIATE")
    b.busy_timeout(50)
    with pytest.raises(_core.SQLiteError) as info:
        run(b, "BEGIN IMMEDIATE")
    assert info.value.code == 5  # SQLITE_BUSY
    run(a, "COMMIT")
    b.busy_timeout(2000)
    run(b, "BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT")
    assert run(a, "SELECT count(*) FROM t") == [(1,)]
    a.close()
    b.close()


def test_authorizer_rule_table(conn):
    run(conn, "CREATE TABLE t(x); CREATE TABLE secret(y)")
    conn.set_authorizer([
        ("ATTACH", None, "deny"),
        ("PRAGMA", "writable_schema", "deny"),
        ("READ", "secret", "ignore"),
        (None, "SECRET", "deny"),  # any other action on it (case-insensitive)
    ])
    with pytest.raises(_core.SQLiteError) as info:
        conn.prepare("ATTACH DATABASE ':memory:' AS other")
    assert info.value.code == 23  # SQLITE_AUTH
    with pytest.raises(_core.SQLiteError):
        conn.prepare("PRAGMA writable_schema = 1")
    with pytest.raises(_core.SQLiteError):
        conn.prepare("DELETE FROM secret")
    assert run(conn, "SELECT count(*) FROM t") == [(0,)]
    conn.set_authorizer(None)
    run(conn, "DELETE FROM secret")
    with pytest.raises(ValueError):
        conn.set_authorizer([("READ", None, "maybe")])


def test_backup_is_stepwise_with_progress(conn, tmp_path, slot):
    run(conn, "PRAGMA page_size=1024; CREATE TABLE t(x); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 3000) INSERT INTO t SELECT randomblob(100) FROM c")
    target = _core.Connection(str(tmp_path / "copy.db"), tenant=slot)
    calls = []
    conn.backup_to(target, pages_per_step=50, progress=lambda remaining, total: calls.append((remaining, total)))
    assert len(calls) > 3
    assert calls[-1][0] == 0
    assert [r for r, _ in calls] == sorted((r for r, _ in calls), reverse=True)
    assert run(target, "SELECT count(*) FROM t") == [(3000,)]
    assert run(target, "PRAGMA integrity_check") == [("ok",)]
    target.close()


def test_bad_tenant_slot_is_refused(tmp_path):
    with pytest.raises(ValueError):
        _core.Connection(str(tmp_path / "x.db"), tenant=_core.MAX_TENANTS)
    with pytest.raises(ValueError):
        _core.set_partition(1, 10, 5)
    with pytest.raises(ValueError):
        _core.set_memory_quota(0, 1000)


def test_tenant_is_charged_and_released(tmp_path, slot):
    c = _core.Connection(str(tmp_path / "acct.db"), tenant=slot)
    run(c, "CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(5000))")
    mem = _core.memory_stats(slot)
    pool = _core.pool_stats(slot)
    assert mem["allocated_bytes"] > 0 and mem["allocation_count"] > 0
    assert pool["resident"] > 0 and pool["misses"] > 0 and pool["caches"] >= 1
    c.close()
    assert _core.memory_stats(slot)["allocated_bytes"] == 0
    assert _core.pool_stats(slot)["resident"] == 0


def test_close_during_a_running_statement_interrupts_and_closes_after_it(conn):
    stmt, _ = conn.prepare(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"
    )
    errors = []
    started = threading.Event()

    def runner():
        started.set()
        try:
            stmt.step()
        except _core.SQLiteError as exc:
            errors.append(exc)

    t = threading.Thread(target=runner)
    t.start()
    started.wait(10)
    # Keep closing until the runner reports: close() either closes at once (the
    # step had not started) or interrupts it and lets the runner close.
    wait_for(lambda: (conn.close(), errors)[1], timeout=20, what="closed statement")
    t.join(10)
    assert errors[0].code in (9, 21)  # SQLITE_INTERRUPT, or MISUSE if closed first
    wait_for(lambda: conn.closed, timeout=10, what="deferred close")
    with pytest.raises(_core.SQLiteError):
        stmt.step()


def test_fetchmany_batches_agree_with_row_by_row_stepping(conn):
    # fetchmany copies rows out of SQLite in batches under one GIL release;
    # step()+row() reads them one at a time: both must give the same values,
    # also for rows wider than a batch's byte budget (256 KiB).
    run(conn, "CREATE TABLE w (i INTEGER, f REAL, t TEXT, b BLOB, n)")
    ins, _ = conn.prepare("INSERT INTO w VALUES (?, ?, ?, ?, ?)")
    expected = []
    for i in range(40):
        row = (i - 20, i / 7, "é" * (i * 3000), bytes([i % 256]) * (i * 5000), None if i % 2 else i)
        ins.bind_all(row)
        assert ins.fetchmany(1) == []
        expected.append(row)
    ins.finalize()
    one, _ = conn.prepare("SELECT * FROM w ORDER BY rowid")
    stepped = []
    while one.step():
        stepped.append(one.row())
    one.finalize()
    batched, _ = conn.prepare("SELECT * FROM w ORDER BY rowid")
    first = batched.fetchmany(7)
    rest = batched.fetchmany(1000)
    assert (len(first), batched.fetchmany(5)) == (7, [])
    assert first + rest == stepped == expected
    batched.finalize()


def test_fetchmany_error_midway_resets_the_statement(conn):
    run(conn, "CREATE TABLE e (x TEXT)")
    run(conn, "INSERT INTO e VALUES ('1'), ('2'), ('x')")
    stmt, _ = conn.prepare("SELECT json(x) FROM e ORDER BY rowid")
    with pytest.raises(_core.SQLiteError) as caught:
        stmt.fetchmany(10)
    assert caught.value.code == 1 and "JSON" in caught.value.message  # the third row
    assert stmt.fetchmany(2) == [("1",), ("2",)]  # reset: it runs again from the start
    stmt.finalize()


def test_close_finalizes_the_live_statements_after_others_were_collected(conn):
    # The connection keeps its live statements in an intrusive list that each
    # statement leaves when collected: dropping some first (head, middle, tail)
    # must leave the rest reachable for close().
    import gc

    stmts = [conn.prepare(f"SELECT {i}")[0] for i in range(6)]
    for index in (5, 2, 0):
        del stmts[index]
    gc.collect()
    assert [s.sql for s in stmts] == ["SELECT 1", "SELECT 3", "SELECT 4"]
    conn.close()
    for stmt in stmts:
        with pytest.raises(_core.SQLiteError, match="finalized"):
            stmt.step()


def test_prepare_and_fetch_steps_only_read_only_statements(conn):
    run(conn, "CREATE TABLE p (x INTEGER, y TEXT)")
    stmt, tail, rows = conn.prepare_and_fetch("INSERT INTO p VALUES (1, 'a'), (2, 'b') ; SELECT 1", 10)
    assert (rows, tail.strip()) == (None, "SELECT 1") and conn.total_changes() == 0  # not stepped
    assert stmt.fetchmany(1) == [] and conn.total_changes() == 2
    stmt.finalize()
    stmt, tail, rows = conn.prepare_and_fetch("SELECT x, y FROM p ORDER BY x", 1)
    assert (rows, tail) == ([(1, "a")], "")
    assert stmt.fetchmany(10) == [(2, "b")]             # continues where it stopped
    stmt, _, rows = conn.prepare_and_fetch("SELECT x FROM p WHERE x > 5", 10)
    assert rows == [] and stmt.fetchmany(10) == []      # done
    assert conn.prepare_and_fetch("  -- nothing", 10) == (None, "", None)
    with pytest.raises(_core.SQLiteError):
        conn.prepare_and_fetch("SELECT json('{') FROM p", 10)   # a step error is raised
    run(conn, "INSERT INTO p SELECT x + 2, hex(randomblob(200000)) FROM p")  # rows wider than a batch
    stmt, _, rows = conn.prepare_and_fetch("SELECT x, y FROM p ORDER BY x", 10)
    assert [r[0] for r in rows] == [1, 2, 3, 4] and len(rows[3][1]) == 400000
