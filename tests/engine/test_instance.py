"""A real instance process, driven over its control socket, with real clients
(psql, psycopg, raw sockets) on the tenants' ports."""
from __future__ import annotations

import os
import socket
import threading

import psycopg
import pytest

from rustymt.engine import storage
from rustymt.engine.control import ControlError
from tests.conftest import wait_for
from tests.engine.harness import ADMIN, ADMIN_PASSWORD, USER, Engine, connect, psql
from tests.pgwire.pgwire_client import error_fields, read_until, split_messages, startup

BIG = "SELECT length(randomblob(40000000))"  # 40 MB in one value: beyond an 8 MB quota


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = Engine(str(tmp_path_factory.mktemp("engine")))
    yield engine
    engine.stop()


_slots = iter(range(1, 200))


def tenant(engine, name, pdb_name=None, mode="READ_WRITE", **quota):
    """A fresh tenant with one open PDB: (port, pdb_id, pdb_name)."""
    slot = next(_slots)
    tenant_id, pdb_id, pdb_name = f"t_{name}", f"p_{name}", pdb_name or f"PDB_{name.upper()}"
    engine.create_pdb(pdb_id, pdb_name)
    port = engine.attach(tenant_id, slot, **quota)
    engine.open(pdb_id, tenant_id, pdb_name, mode)
    return port, pdb_id, pdb_name


def execute(engine, pdb_id, sql, params=(), user=USER, session=None):
    args = {"pdb_id": pdb_id, "user": user, "sql": sql, "params": list(params)}
    if session:
        args["session"] = session
    return engine.request("execute", args)


def sqlstate_of(call) -> str:
    try:
        call()
    except ControlError as exc:
        assert exc.code == "SQL_ERROR", exc
        return exc.sqlstate
    except psycopg.Error as exc:
        return exc.sqlstate
    raise AssertionError("no error")


def startup_error(port, database, user=USER) -> dict:
    """Send a StartupMessage; the server's first answer must be a FATAL ErrorResponse."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(startup(user=user, database=database))
        data = read_until(sock, lambda d: len(split_messages(d)) >= 1 and len(d) >= 5 and
                          len(d) >= 1 + int.from_bytes(d[1:5], "big"))
    kind, body = split_messages(data)[0]
    assert kind == b"E", (kind, body)
    return error_fields(body)


def test_psql_on_the_tenant_port_and_unknown_database(engine):
    port, pdb_id, name = tenant(engine, "psql")
    result = psql(port, name, "CREATE TABLE items(id int primary key, label text);"
                              "INSERT INTO items VALUES (1, 'one'), (2, 'two');"
                              "SELECT label FROM items ORDER BY id;")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["one", "two"]
    # the engine API sees the same rows, through the same PDB files
    assert execute(engine, pdb_id, "SELECT count(*) FROM items")["rows"] == [[2]]
    assert startup_error(port, "PDB_NOPE")["C"] == "3D000"
    bad = psql(port, name, "SELECT 1", password="wrong")
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr


def test_read_only_open_refuses_writes_with_25006(engine):
    port, pdb_id, name = tenant(engine, "ro")
    execute(engine, pdb_id, "CREATE TABLE t(x)")
    execute(engine, pdb_id, "INSERT INTO t VALUES (1)")
    engine.request("close_pdb", {"pdb_id": pdb_id, "mode": "NORMAL"})
    engine.open(pdb_id, "t_ro", name, "READ_ONLY")
    assert sqlstate_of(lambda: execute(engine, pdb_id, "INSERT INTO t VALUES (2)")) == "25006"
    with connect(port, name, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
        assert sqlstate_of(lambda: conn.execute("INSERT INTO t VALUES (3)")) == "25006"
    history = [mode for _, mode in storage.open_mode_history(storage.pdb_dir(engine.data_dir, pdb_id))]
    assert history == ["READ_WRITE", "CLOSED", "READ_ONLY"]


def test_memory_quota_gives_53200_rolls_back_and_session_survives(engine):
    port, pdb_id, name = tenant(engine, "mem", memory_mb=8)
    execute(engine, pdb_id, "CREATE TABLE t(x)")
    with connect(port, name) as conn:  # psycopg opens a transaction block
        conn.execute("INSERT INTO t VALUES (1)")
        assert sqlstate_of(lambda: conn.execute(BIG)) == "53200"
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)  # the insert went with it
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)          # the session still works
    # the engine API: same code, same session usable afterwards
    execute(engine, pdb_id, "SELECT 1", session="m")
    assert sqlstate_of(lambda: execute(engine, pdb_id, BIG, session="m")) == "53200"
    assert execute(engine, pdb_id, "SELECT 7", session="m")["rows"] == [[7]]
    engine.request("end_session", {"session": "m"})
    memory = engine.stats("t_mem")["memory"]
    assert memory["quota_bytes"] == 8 << 20 and memory["oom_count"] >= 2
    # set_quota applies live: with 64 MB the same statement runs
    applied = engine.request("set_quota", {"tenant_id": "t_mem", "quota": {"memory_mb": 128, "cpu_shares": 2048}})["applied"]
    now = engine.stats("t_mem")  # the native core reports the new settings at once
    assert now["memory"]["quota_bytes"] == 128 << 20 and now["cpu"]["shares"] == 2048
    assert now["buffer_pool"]["max_frames"] == applied["max_frames"] > 4 * 1000
    assert execute(engine, pdb_id, BIG)["rows"] == [[40000000]]


def test_sessions_reach_only_their_own_files(engine, tmp_path):
    port, pdb_id, name = tenant(engine, "fence")
    folder = storage.pdb_dir(engine.data_dir, pdb_id)
    # a second tablespace in the dictionary: attached under its name before the authorizer
    from rustymt._native import _core
    conn = _core.Connection(os.path.join(folder, storage.DICTIONARY_FILE))
    storage.execute(conn, "INSERT INTO tablespaces(name, file, created_at) VALUES ('hist', 'hist.db', ?1)", (storage.now_iso(),))
    conn.close()
    _core.Connection(os.path.join(folder, "hist.db")).close()
    execute(engine, pdb_id, "CREATE TABLE hist.events(x)")
    assert execute(engine, pdb_id, "INSERT INTO hist.events VALUES (5)")["command"] == "INSERT 0 1"
    outside = str(tmp_path / "outside.db")
    other = os.path.join(engine.data_dir, "pdbs", "seed", "users.db")
    catalog = os.path.join(engine.data_dir, "catalog.db")
    for sql in (f"ATTACH DATABASE '{outside}' AS x", f"ATTACH DATABASE '{other}' AS x",
                f"ATTACH DATABASE '{catalog}' AS c", "DETACH DATABASE hist",
                f"VACUUM INTO '{outside}'", "SELECT load_extension('libc.so.6')", "PRAGMA database_list",
                "PRAGMA writable_schema=ON", "PRAGMA journal_mode=DELETE"):
        assert sqlstate_of(lambda: execute(engine, pdb_id, sql)) == "42501", sql
    with connect(port, name, autocommit=True) as client:
        assert sqlstate_of(lambda: client.execute(f"ATTACH DATABASE '{outside}' AS x")) == "42501"
        assert client.execute("SELECT x FROM hist.events").fetchall() == [(5,)]
    assert not os.path.exists(outside) and not os.path.exists(catalog)


def test_max_connections_refuses_with_53300(engine):
    port, pdb_id, name = tenant(engine, "conns", max_connections=2)
    first, second = connect(port, name), connect(port, name)
    try:
        assert engine.stats("t_conns")["sessions"] == 2
        assert startup_error(port, name)["C"] == "53300"
        with pytest.raises(psycopg.OperationalError, match="too many connections"):
            connect(port, name)
        assert sqlstate_of(lambda: execute(engine, pdb_id, "SELECT 1")) == "53300"
    finally:
        first.close()
        second.close()
    wait_for(lambda: engine.stats("t_conns")["sessions"] == 0, 10, what="sessions to end")
    with connect(port, name) as again:
        assert again.execute("SELECT 1").fetchone() == (1,)


def test_suspend_ends_sessions_with_57p01_and_refuses_new_ones(engine):
    port, pdb_id, name = tenant(engine, "susp")
    conn = connect(port, name, autocommit=True)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    result = engine.request("set_tenant_state", {"tenant_id": "t_susp", "state": "suspended"})
    assert result["sessions_ended"] == 1
    with pytest.raises(psycopg.OperationalError) as ended:
        conn.execute("SELECT 1")
    assert ended.value.sqlstate == "57P01" and "suspended" in str(ended.value)
    conn.close()
    refused = startup_error(port, name)
    assert refused["C"] == "57P01" and "suspended" in refused["M"]
    assert sqlstate_of(lambda: execute(engine, pdb_id, "SELECT 1")) == "57P01"
    engine.request("set_tenant_state", {"tenant_id": "t_susp", "state": "active"})
    with connect(port, name) as again:
        assert again.execute("SELECT 2").fetchone() == (2,)


def test_close_immediate_rolls_back_an_open_transaction(engine):
    port, pdb_id, name = tenant(engine, "close")
    execute(engine, pdb_id, "CREATE TABLE t(x)")
    conn = connect(port, name)
    conn.execute("INSERT INTO t VALUES (1)")  # inside BEGIN (psycopg's default)
    with pytest.raises(ControlError) as busy:
        engine.request("close_pdb", {"pdb_id": pdb_id, "mode": "NORMAL", "timeout_seconds": 0.3})
    assert busy.value.code == "BUSY"
    execute(engine, pdb_id, "BEGIN", session="tx")           # an engine-API session inside a (read) transaction
    execute(engine, pdb_id, "SELECT count(*) FROM t", session="tx")
    result = engine.request("close_pdb", {"pdb_id": pdb_id, "mode": "IMMEDIATE"})
    assert result["sessions_ended"] == 2
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    assert startup_error(port, name)["C"] == "3D000"  # closed: not served
    engine.open(pdb_id, "t_close", name)
    assert execute(engine, pdb_id, "SELECT count(*) FROM t")["rows"] == [[0]]  # the insert was rolled back
    execute(engine, pdb_id, "INSERT INTO t VALUES (3)")  # and no lock was left behind
    with pytest.raises(ControlError) as missing:
        engine.request("close_pdb", {"pdb_id": "p_nope", "mode": "NORMAL"})
    assert missing.value.code == "NOT_FOUND"


def test_upgrade_mode_admits_only_the_pdb_admin(engine):
    port, pdb_id, name = tenant(engine, "upg", mode="UPGRADE")
    with pytest.raises(psycopg.OperationalError, match="only the PDB admin"):
        connect(port, name)
    with connect(port, name, user=ADMIN, password=ADMIN_PASSWORD) as admin:
        assert admin.execute("SHOW is_superuser").fetchone() == ("on",)
    assert sqlstate_of(lambda: execute(engine, pdb_id, "SELECT 1")) == "28000"
    assert execute(engine, pdb_id, "SELECT 1", user=ADMIN)["rows"] == [[1]]


def test_lockdown_applies_to_live_sessions(engine):
    port, pdb_id, name = tenant(engine, "lock")
    with connect(port, name, autocommit=True) as conn:
        conn.execute("CREATE TABLE a(x)")
        conn.execute("CREATE TABLE b(x)")
        engine.request("set_lockdown", {"pdb_id": pdb_id, "profile": "no_drops",
                                        "rules": [{"action": "DROP_TABLE", "result": "deny"}]})
        assert sqlstate_of(lambda: conn.execute("DROP TABLE a")) == "42501"
        engine.request("set_lockdown", {"pdb_id": pdb_id, "profile": None})
        conn.execute("DROP TABLE b")
    assert storage.read_dictionary(storage.pdb_dir(engine.data_dir, pdb_id))["lockdown"] is None
    with pytest.raises(ControlError) as bad:
        engine.request("set_lockdown", {"pdb_id": pdb_id, "profile": "x", "rules": [{"action": "NOPE"}]})
    assert bad.value.code == "BAD_REQUEST"


def test_stats_after_a_known_workload(engine):
    port, pdb_id, name = tenant(engine, "stats", memory_mb=64)
    execute(engine, pdb_id, "CREATE TABLE blobs(id INTEGER PRIMARY KEY, payload BLOB)")
    before = engine.stats("t_stats")
    rows, size = 2000, 1000
    with connect(port, name) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO blobs(payload) VALUES (randomblob(%s))", [(size,)] * rows)
        conn.commit()
        for _ in range(50):
            conn.execute("SELECT count(*), sum(length(payload)) FROM blobs").fetchone()
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("SELEC 1")  # the tenant's own mistake: a client error, not the platform's
        conn.rollback()
    after = engine.stats("t_stats")
    timed = after["statement_stats"]
    assert timed["statements"] - before["statement_stats"]["statements"] >= 50 + 1  # every Query/Execute timed
    assert timed["client_errors"] == before["statement_stats"]["client_errors"] + 1 and timed["server_errors"] == 0
    assert timed["latency_ms"]  # the SLA's latency sketch is fed
    grown = after["storage_bytes"] - before["storage_bytes"]
    assert abs(grown - rows * size) <= 0.10 * rows * size, (grown, rows * size)
    assert after["network"]["bytes_in"] > before["network"]["bytes_in"] + rows * 20
    assert after["network"]["bytes_out"] > before["network"]["bytes_out"]
    assert after["statements"] > before["statements"]
    pool = after["buffer_pool"]
    assert pool["hits"] > 0 and pool["misses"] > 0 and 0 < pool["hit_ratio"] <= 1
    assert 0 < pool["min_frames"] <= pool["max_frames"]
    assert after["memory"]["allocation_count"] > before["memory"]["allocation_count"]
    assert after["memory"]["quota_bytes"] == 64 << 20
    assert after["cpu"]["used_cpu_ns"] > before["cpu"]["used_cpu_ns"] and after["cpu"]["shares"] == 1024
    assert after["io"]["writes"] > before["io"]["writes"] and after["io"]["bytes"] > before["io"]["bytes"] + rows * size
    assert after["pdbs"][pdb_id]["open_mode"] == "READ_WRITE"
    wait_for(lambda: engine.stats("t_stats")["sessions"] == 0, 10, what="the closed client's session to end")


def test_detach_closes_the_listener(engine):
    port, pdb_id, name = tenant(engine, "gone")
    conn = connect(port, name, autocommit=True)
    result = engine.request("detach_tenant", {"tenant_id": "t_gone"})
    assert result["sessions_ended"] == 1
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises(ControlError) as gone:
        engine.request("stats", {"tenant_id": "t_gone"})
    assert gone.value.code == "NOT_FOUND"
    history = storage.open_mode_history(storage.pdb_dir(engine.data_dir, pdb_id))
    assert [mode for _, mode in history] == ["READ_WRITE", "CLOSED"]


def test_bad_requests_get_clear_errors(engine):
    cases = [
        ("attach_tenant", {"tenant_id": "x", "slot": 0}),
        ("attach_tenant", {"tenant_id": "x", "slot": 3, "quota": {"memory_mb": -1}}),
        ("attach_tenant", {"tenant_id": "x", "slot": 3, "quota": {"bogus": 1}}),
        ("open_pdb", {"pdb_id": "x", "tenant_id": "nobody", "pdb_name": "X", "path": "/etc", "mode": "READ_WRITE"}),
        ("set_tenant_state", {"tenant_id": "nobody", "state": "active"}),
        ("execute", {"pdb_id": "nope", "user": "u", "sql": "SELECT 1"}),
    ]
    codes = []
    for op, args in cases:
        with pytest.raises(ControlError) as exc:
            engine.request(op, args)
        codes.append(exc.value.code)
    assert codes == ["BAD_REQUEST", "BAD_REQUEST", "BAD_REQUEST", "NOT_FOUND", "NOT_FOUND", "NOT_FOUND"]
    port, pdb_id, name = tenant(engine, "path")
    assert sqlstate_of(lambda: execute(engine, pdb_id, "SELECT ?1 + ?2", [1])) == "08P01"
    assert sqlstate_of(lambda: execute(engine, pdb_id, "SELECT ?1", [[1, 2]])) == "22023"
    assert sqlstate_of(lambda: execute(engine, pdb_id, "SELEC 1")) == "42601"
    assert execute(engine, pdb_id, "SELECT ?1 || ?2, x'00ff'", ["a", "b"])["rows"] == [["ab", "\\x00ff"]]
    with pytest.raises(ControlError) as outside:
        engine.request("open_pdb", {"pdb_id": "p2", "tenant_id": "t_path", "pdb_name": "P2", "path": "/tmp", "mode": "READ_WRITE"})
    assert outside.value.code == "BAD_REQUEST"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigkill_restart_reopens_pdbs_and_refuses_cleanly_meanwhile(tmp_path):
    import asyncio
    import signal
    port = _free_port()
    desired = {"modes": {}}
    gate = {"event": None, "attached": threading.Event()}

    async def reapply(supervisor):  # what the daemon does from its catalog
        await supervisor.client.request("attach_tenant", {"tenant_id": "t_k", "slot": 1, "port": port,
                                                          "listen_host": "127.0.0.1", "quota": {"memory_mb": 32}})
        if supervisor.restarts:  # hold the restart between attach and reopen, to look at that window
            gate["event"] = asyncio.Event()
            gate["attached"].set()
            await gate["event"].wait()
        for pdb_id, (name, mode) in desired["modes"].items():
            await supervisor.client.request("open_pdb", {"pdb_id": pdb_id, "tenant_id": "t_k", "pdb_name": name,
                                                         "path": storage.pdb_dir(str(tmp_path), pdb_id), "mode": mode})

    engine = Engine(str(tmp_path), on_started=reapply)
    try:
        engine.create_pdb("p_k", "PDB_K")
        engine.create_pdb("p_r", "PDB_R")
        desired["modes"] = {"p_k": ("PDB_K", "READ_WRITE"), "p_r": ("PDB_R", "READ_ONLY")}
        engine.open("p_k", "t_k", "PDB_K")
        engine.open("p_r", "t_k", "PDB_R", "READ_ONLY")
        with connect(port, "PDB_K", autocommit=True) as conn:
            conn.execute("CREATE TABLE t(x)")
            conn.execute("INSERT INTO t VALUES (1)")
        old_pid = engine.supervisor.status()["pid"]
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: engine.supervisor.health != "healthy", 10, what="the supervisor to notice the crash")
        with pytest.raises(ControlError) as down:
            engine.request("health")
        assert down.value.code == "UNAVAILABLE"
        # restarted, tenant attached, PDBs not reopened yet: a clean FATAL, not a hang
        assert gate["attached"].wait(20)
        assert startup_error(port, "PDB_K")["C"] == "3D000"
        engine.loop.call_soon_threadsafe(gate["event"].set)
        engine.call(engine.supervisor.wait_ready(20))
        status = engine.supervisor.status()
        assert status["pid"] != old_pid and status["restarts"] == 1
        with connect(port, "PDB_K", autocommit=True) as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]  # acknowledged data survived kill -9
        assert engine.stats("t_k")["pdbs"]["p_r"]["open_mode"] == "READ_ONLY"
        assert [kind for kind, _ in engine.events].count("instance.crashed") == 1
    finally:
        if gate["event"] is not None:
            engine.loop.call_soon_threadsafe(gate["event"].set)
        engine.stop()


def test_a_reused_slot_starts_from_zero(engine):
    port, pdb_id, name = tenant(engine, "first")
    slot = engine.request("stats", {"tenant_id": "t_first"})["tenants"]["t_first"]["slot"]
    execute(engine, pdb_id, "CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    assert engine.stats("t_first")["memory"]["allocation_count"] > 0
    engine.request("detach_tenant", {"tenant_id": "t_first"})
    engine.create_pdb("p_second", "PDB_SECOND")
    engine.request("attach_tenant", {"tenant_id": "t_second", "slot": slot, "port": 0})
    fresh = engine.stats("t_second")
    assert fresh["memory"]["allocation_count"] == 0 and fresh["cpu"]["used_cpu_ns"] == 0
    assert fresh["io"]["reads"] == fresh["io"]["writes"] == 0 and fresh["buffer_pool"]["hits"] == 0
    assert fresh["network"] == {"bytes_in": 0, "bytes_out": 0} and fresh["statements"] == 0


def test_storage_quota_gives_53100_and_the_session_survives(engine):
    port, pdb_id, name = tenant(engine, "disk", storage_gb=2 / 1024)  # 2 MiB over the tenant's datafiles
    execute(engine, pdb_id, "CREATE TABLE t(x)")
    with connect(port, name, autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (randomblob(500000))")        # fits
        assert sqlstate_of(lambda: conn.execute("INSERT INTO t VALUES (randomblob(3000000))")) == "53100"
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)  # the session still works
    assert sqlstate_of(lambda: execute(engine, pdb_id, "INSERT INTO t VALUES (randomblob(3000000))")) == "53100"
    engine.request("set_quota", {"tenant_id": "t_disk", "quota": {"storage_gb": 1}})  # new sessions see it
    assert execute(engine, pdb_id, "INSERT INTO t VALUES (randomblob(3000000))")["command"] == "INSERT 0 1"
