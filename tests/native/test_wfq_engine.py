"""The scheduler wired into the engine binding: real SQLite statements.

Each case runs tests/native/sched_workload.py in its own process (installing
the scheduler sets process-wide execution hooks). Statements are longer than
the quantum, so fair shares on one slot prove that the progress handler makes
them yield.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from rustymt._native import _core
from tests.conftest import wait_for


def run_workload(config):
    out = subprocess.run(
        [sys.executable, "-m", "tests.native.sched_workload", json.dumps(config)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    return json.loads(out.stdout)


def test_long_statements_share_one_slot_by_weight():
    result = run_workload({
        "tokens": 1, "quantum_ms": 5, "progress_ops": 1000, "rows": 400_000,
        "tenants": [{"slot": 1, "shares": 1024}, {"slot": 2, "shares": 3072}],
        "measure_cpu_s": 1.0,
    })
    a, b = result["used_ns"]["1"], result["used_ns"]["2"]
    assert b / (a + b) == pytest.approx(0.75, abs=0.06)
    assert result["stats"]["1"]["wait_ns"] > 0


def test_max_percent_caps_real_statements():
    result = run_workload({
        "tokens": 2, "period_ms": 20, "quantum_ms": 2,
        "tenants": [{"slot": 4, "shares": 1024, "max_percent": 30}],
        "warmup_cpu_s": 0.1, "measure_cpu_s": 0.5,
    })
    assert result["used_ns"]["4"] / 1e9 / result["wall_s"] <= 0.33  # a cap only errs upward
    assert result["stats"]["4"]["throttled_ns"] > 0


def test_vfs_meters_and_throttles_a_tenant(tmp_path):
    _core.install()
    path = str(tmp_path / "io.db")
    conn = _core.Connection(path, tenant=21, vfs="rustymt")
    for sql in ("CREATE TABLE t(x INTEGER PRIMARY KEY, y BLOB)",
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 600)"
                " INSERT INTO t SELECT i, zeroblob(3000) FROM c"):
        stmt, _ = conn.prepare(sql)
        stmt.step()
        stmt.finalize()
    conn.close()
    written = _core.iovfs_stats(21)
    assert written["writes"] > 0 and written["write_bytes"] >= 600 * 3000
    assert _core.iovfs_stats(22)["writes"] == 0

    _core.iovfs_set_limits(22, iops=400)
    _core.iovfs_reset_stats(22)
    reader = _core.Connection(path, tenant=22, vfs="rustymt")
    try:
        stmt, _ = reader.prepare("SELECT sum(length(y)) FROM t")
        stmt.step()
        assert stmt.row() == (600 * 3000,)
        stmt.finalize()
    finally:
        reader.close()
        _core.iovfs_set_limits(22, 0, 0)
    read = _core.iovfs_stats(22)
    # 600 rows of 3000 bytes overflow into ~600+ pages: well past the burst
    assert read["reads"] > 100 and read["read_bytes"] > 600 * 3000
    assert read["throttled_ns"] > 0


def test_busy_wait_frees_the_slot_for_other_tenants(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", BUSY_SCRIPT, str(tmp_path / "busy.db")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# One slot. Tenant 1 holds the write lock (between statements: no slot);
# tenant 2's INSERT waits on it in the busy handler; tenant 3 must still run.
BUSY_SCRIPT = r"""
import sys, threading
from rustymt._native import _core
from tests.conftest import wait_for
_core.install()
sched = _core.WfqScheduler(tokens=1)
sched.install()
path = sys.argv[1]
def run(conn, sql):
    stmt, _ = conn.prepare(sql)
    stmt.step()
    stmt.finalize()
holder = _core.Connection(path, tenant=1)
run(holder, "CREATE TABLE t(x)")
run(holder, "BEGIN IMMEDIATE")
waiter = _core.Connection(path, tenant=2)
waiter.busy_timeout(30000)
done = threading.Event()
def insert():
    run(waiter, "INSERT INTO t VALUES (2)")
    done.set()
th = threading.Thread(target=insert)
th.start()
wait_for(lambda: sched.stats(2)["used_cpu_ns"] > 0, 10, what="tenant 2 started")
other = _core.Connection(":memory:", tenant=3)
run(other, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<100000) SELECT sum(i) FROM c")
assert not done.is_set(), "tenant 2 should still be waiting for the lock"
run(holder, "COMMIT")
th.join(30)
assert done.is_set()
print("ok")
"""
