"""A tenant created over REST is served by the daemon's engine instance:
real psql/psycopg on its port, suspend/resume and quota changes reaching the
instance, usage and isolation figures measured after a known workload."""
from __future__ import annotations

import os
import subprocess

import psycopg
import pytest

from tests.conftest import wait_for
from tests.daemon_engine.conftest import connect, get_json, new_tenant, startup_sqlstate

ROWS, ROW_BYTES = 2000, 1000


def test_tenant_created_over_rest_is_reachable_with_psql(engine_daemon):
    tenant = new_tenant(engine_daemon, "psql")
    pdb = get_json(engine_daemon, f"/api/v1/pdbs/{tenant['pdb_id']}")
    assert (pdb["state"], pdb["open_mode"], pdb["tenant_id"]) == ("open", "READ_WRITE", tenant["tenant_id"])
    assert pdb["pdb_name"] == tenant["pdb_name"] and {"system", "users"} <= set(pdb["tablespaces"])
    assert all(path.startswith(engine_daemon.data_dir) for path in pdb["datafiles"])
    script = ("CREATE TABLE orders (id integer PRIMARY KEY, customer text, amount integer);"
              "INSERT INTO orders VALUES (1, 'ada', 30), (2, 'bob', 12), (3, 'ada', 8);"
              "SELECT customer, sum(amount) FROM orders GROUP BY customer ORDER BY customer;")
    result = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(tenant["port"]),
                             "-U", tenant["user"], "-d", tenant["pdb_name"], "-c", script],
                            env={**os.environ, "PGPASSWORD": tenant["password"], "PGCONNECT_TIMEOUT": "5"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ada|38", "bob|12"]
    # a wrong password is refused (the verifier was computed from the REST password)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect({**tenant, "password": "not the password"})
    assert startup_sqlstate(tenant, "PDB_NO_SUCH") == "3D000"


def test_suspend_ends_sessions_and_refuses_new_ones_until_resume(engine_daemon):
    tenant = new_tenant(engine_daemon, "susp")
    session = connect(tenant)
    assert session.execute("SELECT 1").fetchone() == (1,)
    response = engine_daemon.request("POST", f"/api/v1/tenants/{tenant['tenant_id']}/suspend", json={"reason": "test"})
    assert response.status == 200, response.text
    with pytest.raises(psycopg.OperationalError) as ended:
        session.execute("SELECT 1")
    assert ended.value.sqlstate == "57P01" or "administrator command" in str(ended.value)
    session.close()
    assert startup_sqlstate(tenant) == "57P01"
    assert engine_daemon.request("POST", f"/api/v1/tenants/{tenant['tenant_id']}/resume").status == 200
    with connect(tenant) as again:
        assert again.execute("SELECT 2").fetchone() == (2,)


def test_suspend_rolls_back_an_open_write_transaction_and_frees_the_write_lock(engine_daemon):
    """A session ended by suspend inside a write transaction must roll it back:
    after resume, new sessions write (the PDB's write lock was released)."""
    tenant = new_tenant(engine_daemon, "suspw")
    tid = tenant["tenant_id"]
    with connect(tenant) as setup:
        setup.execute("CREATE TABLE r (x integer)")
    writer = connect(tenant, autocommit=False)
    writer.execute("INSERT INTO r VALUES (1)")  # the transaction stays open
    assert engine_daemon.request("POST", f"/api/v1/tenants/{tid}/suspend", json={"reason": "test"}).status == 200
    with pytest.raises(psycopg.OperationalError):
        writer.execute("INSERT INTO r VALUES (2)")
    writer.close()
    assert engine_daemon.request("POST", f"/api/v1/tenants/{tid}/resume").status == 200
    with connect(tenant) as again:
        again.execute("INSERT INTO r VALUES (3)")
        assert again.execute("SELECT x FROM r ORDER BY x").fetchall() == [(3,)]  # the ended transaction left nothing


def test_quota_change_reaches_the_instance_within_a_second(engine_daemon):
    tenant = new_tenant(engine_daemon, "quota")
    tid = tenant["tenant_id"]
    keep = connect(tenant)
    body = {"iops": 777, "memory_mb": 1234, "max_connections": 1, "cpu_percent": 150}
    assert engine_daemon.request("PUT", f"/api/v1/tenants/{tid}/quota", json=body).status == 200

    def applied():
        io = get_json(engine_daemon, f"/api/v1/isolation/io?tenant={tid}")
        memory = get_json(engine_daemon, f"/api/v1/isolation/memory?tenant={tid}")
        cpu = get_json(engine_daemon, f"/api/v1/isolation/cpu?tenant={tid}")
        return io["iops_limit"] == 777 and memory["quota_bytes"] == 1234 << 20 and cpu["max_percent"] == 150

    wait_for(applied, timeout=1.0, what="the new quota in the instance's stats")
    assert startup_sqlstate(tenant) == "53300"  # max_connections 1, one session open
    keep.close()
    # priority changes the scheduler weight live: silver 512 x high 2
    assert engine_daemon.request("PUT", f"/api/v1/tenants/{tid}/priority", json={"priority": "high"}).status == 200
    assert get_json(engine_daemon, f"/api/v1/isolation/cpu?tenant={tid}")["shares"] == 1024


def test_isolation_endpoints_show_the_workload(engine_daemon):
    tenant = new_tenant(engine_daemon, "work")
    tid = tenant["tenant_id"]
    with connect(tenant) as conn:
        conn.execute("CREATE TABLE blobs (id integer PRIMARY KEY, payload blob)")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = {kind: get_json(engine_daemon, f"/api/v1/isolation/{kind}?tenant={tid}") for kind in ("io", "cpu", "network")}
        storage_before = get_json(engine_daemon, f"/api/v1/tenants/{tid}")["usage"]["storage_bytes"]
        payloads = [(i, os.urandom(ROW_BYTES)) for i in range(ROWS)]
        with conn.transaction():
            with conn.cursor() as cursor:
                cursor.executemany("INSERT INTO blobs VALUES (%s, %s)", payloads)
        assert conn.execute("SELECT count(*), sum(length(payload)) FROM blobs").fetchone() == (ROWS, ROWS * ROW_BYTES)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL folded into users.db: bytes counted once

        def measured_after_the_inserts():
            # usage is served from measurements up to 1.5 s old (docs/api.md "How fresh `usage` is")
            usage = get_json(engine_daemon, f"/api/v1/tenants/{tid}")["usage"]
            grown = usage["storage_bytes"] - storage_before
            return usage if usage["active_connections"] == 1 and grown >= 0.9 * ROWS * ROW_BYTES else None

        usage = wait_for(measured_after_the_inserts, timeout=5.0, what="usage measured after the inserts")
    grown = usage["storage_bytes"] - storage_before
    assert grown <= 1.1 * ROWS * ROW_BYTES, (grown, storage_before)

    io = get_json(engine_daemon, f"/api/v1/isolation/io?tenant={tid}")
    assert io["writes"] > before["io"]["writes"] and io["write_bytes"] - before["io"]["write_bytes"] >= ROWS * ROW_BYTES
    cpu = get_json(engine_daemon, f"/api/v1/isolation/cpu?tenant={tid}")
    assert cpu["used_cpu_ns"] > before["cpu"]["used_cpu_ns"]
    network = get_json(engine_daemon, f"/api/v1/isolation/network?tenant={tid}")
    assert network["bytes_received"] - before["network"]["bytes_received"] >= ROWS * ROW_BYTES  # the payloads came in
    assert network["port"] == tenant["port"] and network["rate_limit_mbps"] == 250
    memory = get_json(engine_daemon, f"/api/v1/isolation/memory?tenant={tid}")
    assert memory["peak_usage_bytes"] > 0 and memory["allocation_count"] >= memory["deallocation_count"] > 0
    pool = get_json(engine_daemon, f"/api/v1/isolation/buffer_pool?tenant={tid}")
    assert pool["hits"] + pool["misses"] > 0 and 0 < pool["min_frames"] <= pool["max_frames"]
    assert 0 <= pool["pinned"] <= pool["resident"]  # no session is mid-statement: few or none pinned
    resources = get_json(engine_daemon, f"/api/v1/tenants/{tid}/resources")
    assert resources["current_usage"]["storage_bytes"] == usage["storage_bytes"]
    assert "engine instance shared" in usage["source"]


def test_terminate_detaches_the_tenant_and_keeps_its_files(engine_daemon):
    tenant = new_tenant(engine_daemon, "term")
    session = connect(tenant)
    assert engine_daemon.request("DELETE", f"/api/v1/tenants/{tenant['tenant_id']}").status == 200
    with pytest.raises(psycopg.OperationalError) as ended:
        session.execute("SELECT 1")
    assert ended.value.sqlstate == "57P01" or "administrator command" in str(ended.value)
    session.close()
    with pytest.raises(psycopg.OperationalError):  # the listener is gone
        connect(tenant)
    pdb = get_json(engine_daemon, f"/api/v1/pdbs/{tenant['pdb_id']}")
    assert pdb["state"] == "dropped" and pdb["open_mode"] is None
    assert os.path.isfile(os.path.join(engine_daemon.data_dir, "pdbs", tenant["pdb_id"], "users.db"))  # kept


def test_cpu_percent_is_sampled_while_a_statement_runs(engine_daemon):
    tenant = new_tenant(engine_daemon, "busy")
    tid = tenant["tenant_id"]
    seen = []
    with connect(tenant) as conn:
        def busy_rate():
            # ~0.3 s of CPU per statement in the engine; the sampler looks every second
            conn.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) "
                         "SELECT sum(x) FROM c").fetchone()
            usage = get_json(engine_daemon, f"/api/v1/tenants/{tid}/resources")["current_usage"]
            seen.append(usage["cpu_percent"])
            return usage["cpu_percent"] > 0

        wait_for(busy_rate, timeout=20, what="a non-zero cpu_percent sample")
    assert 0 < seen[-1] <= 200 * 1.1  # within the tenant's cap (2 cores), allowing for the window's edges
    assert get_json(engine_daemon, f"/api/v1/isolation/cpu?tenant={tid}")["used_cpu_ns"] > 0
