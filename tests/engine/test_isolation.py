"""Isolation between tenants of one instance, measured by the instance itself:
CPU by scheduler shares, buffer pool by partitions."""
from __future__ import annotations

import threading

import psycopg

from tests.conftest import wait_for
from tests.engine.harness import Engine, connect

CPU_STATEMENT = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) SELECT count(*) FROM c"
THREADS_PER_TENANT = 3  # 2 cores: more runnable statements than CPU tokens
WINDOW_LOW_CPU_NS = 600_000_000  # measure until the low-share tenant used this much CPU


def _setup(engine, tenant_id, slot, pdb_id, name, **quota):
    engine.create_pdb(pdb_id, name)
    port = engine.attach(tenant_id, slot, **quota)
    engine.open(pdb_id, tenant_id, name)
    return port


def test_cpu_shares_one_to_three(tmp_path):
    engine = Engine(str(tmp_path))
    stop = threading.Event()
    errors = []
    try:
        ports = {"t_low": _setup(engine, "t_low", 1, "p_low", "PDB_LOW", cpu_shares=1024),
                 "t_high": _setup(engine, "t_high", 2, "p_high", "PDB_HIGH", cpu_shares=3072)}
        names = {"t_low": "PDB_LOW", "t_high": "PDB_HIGH"}

        def burn(tenant_id):
            try:
                with connect(ports[tenant_id], names[tenant_id], autocommit=True) as conn:
                    while not stop.is_set():
                        conn.execute(CPU_STATEMENT).fetchone()
            except psycopg.Error as exc:  # reported below; a silent thread would skew the ratio
                errors.append(exc)

        threads = [threading.Thread(target=burn, args=(t,)) for t in ports for _ in range(THREADS_PER_TENANT)]
        for thread in threads:
            thread.start()
        wait_for(lambda: all(engine.stats(t)["sessions"] == THREADS_PER_TENANT for t in ports), 20,
                 what="every burner to be connected")
        wait_for(lambda: all(engine.stats(t)["cpu"]["used_cpu_ns"] > 200_000_000 for t in ports), 30,
                 what="both tenants to be running")
        before = {t: engine.stats(t)["cpu"]["used_cpu_ns"] for t in ports}
        # The window is a CPU amount, not a wall time: on a loaded machine it just takes longer.
        wait_for(lambda: engine.stats("t_low")["cpu"]["used_cpu_ns"] - before["t_low"] > WINDOW_LOW_CPU_NS, 90,
                 interval=0.2, what="the measuring window")
        after = {t: engine.stats(t)["cpu"] for t in ports}
        stop.set()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        low = after["t_low"]["used_cpu_ns"] - before["t_low"]
        high = after["t_high"]["used_cpu_ns"] - before["t_high"]
        ratio = high / low
        print(f"\nused_cpu_ns over the window: high {high / 1e9:.2f}s, low {low / 1e9:.2f}s, ratio {ratio:.3f}")
        assert after["t_high"]["shares"] == 3072 and after["t_low"]["shares"] == 1024
        assert abs(ratio - 3.0) <= 0.15, ratio
    finally:
        stop.set()
        engine.stop()


LOOKUPS = ("WITH RECURSIVE r(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM r WHERE n < 3000) "
           "SELECT sum((SELECT length(v) FROM hot WHERE id = (r.n * 7919) % 1500 + 1)) FROM r")


def _lookup_hit_ratio(engine, pdb_id, rounds=3) -> float:
    before = engine.stats("t_oltp")["buffer_pool"]
    for _ in range(rounds):
        engine.request("execute", {"pdb_id": pdb_id, "user": "app", "sql": LOOKUPS, "session": "oltp"})
    after = engine.stats("t_oltp")["buffer_pool"]
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    assert hits + misses > 3 * rounds * 1000
    return hits / (hits + misses)


def test_scan_storm_leaves_the_other_tenants_hit_ratio(tmp_path):
    # A small pool (600 frames) so that the scanner really competes for it.
    engine = Engine(str(tmp_path), env={"RUSTYMT_ENGINE_POOL_FRAMES": "600"})
    stop = threading.Event()
    try:
        _setup(engine, "t_oltp", 1, "p_oltp", "PDB_OLTP", memory_mb=8)
        _setup(engine, "t_scan", 2, "p_scan", "PDB_SCAN", memory_mb=8)

        def run(pdb_id, sql, session=None):
            args = {"pdb_id": pdb_id, "user": "app", "sql": sql}
            if session:
                args["session"] = session
            return engine.request("execute", args, timeout=60)

        run("p_oltp", "CREATE TABLE hot(id INTEGER PRIMARY KEY, v TEXT)")
        run("p_oltp", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500) "
                      "INSERT INTO hot SELECT x, hex(randomblob(100)) FROM c")
        run("p_scan", "CREATE TABLE big(id INTEGER PRIMARY KEY, payload BLOB)")
        run("p_scan", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 12000) "
                      "INSERT INTO big SELECT x, randomblob(1000) FROM c")
        _lookup_hit_ratio(engine, "p_oltp")             # warm the OLTP tenant's working set
        solo = _lookup_hit_ratio(engine, "p_oltp")
        run("p_scan", "PRAGMA cache_size = -100000", session="scan")  # the scanner wants the whole pool
        scans = []

        def storm():
            while not stop.is_set():
                scans.append(run("p_scan", "SELECT sum(length(payload)) FROM big", session="scan"))

        scanner = threading.Thread(target=storm)
        scanner.start()
        wait_for(lambda: len(scans) >= 2, 60, what="the scan storm to be under way")
        stormy = _lookup_hit_ratio(engine, "p_oltp")
        scan_pool = engine.stats("t_scan")["buffer_pool"]
        stop.set()
        scanner.join(60)
        oltp_pool = engine.stats("t_oltp")["buffer_pool"]
        print(f"\nOLTP hit ratio solo {solo:.4f}, during the scan storm {stormy:.4f}; "
              f"scanner resident {scan_pool['resident']}/{scan_pool['max_frames']} frames, "
              f"OLTP min_frames {oltp_pool['min_frames']}")
        assert scan_pool["resident"] > 600 - 2 * oltp_pool["min_frames"]  # the storm did fill the pool
        assert scan_pool["misses"] > 12000 // 4                             # and kept missing (a real scan)
        assert stormy >= 0.95 * solo
    finally:
        stop.set()
        engine.stop()


def test_iops_quota_throttles_datafile_reads_and_lifts_live(tmp_path):
    engine = Engine(str(tmp_path))
    try:
        _setup(engine, "t_io", 1, "p_io", "PDB_IO")

        def run(sql):
            return engine.request("execute", {"pdb_id": "p_io", "user": "app", "sql": sql}, timeout=60)

        run("CREATE TABLE big(id INTEGER PRIMARY KEY, payload BLOB)")
        run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) "
            "INSERT INTO big SELECT x, randomblob(3000) FROM c")  # ~300 pages: a fresh session reads each once
        engine.request("set_quota", {"tenant_id": "t_io", "quota": {"iops": 100}})  # live
        before = engine.stats("t_io")["io"]
        assert run("SELECT count(*), sum(length(payload)) FROM big")["rows"] == [[300, 900000]]
        capped = engine.stats("t_io")["io"]
        assert capped["iops_limit"] == 100
        assert capped["reads"] - before["reads"] >= 300
        assert capped["throttled_ns"] - before["throttled_ns"] > 1_000_000_000  # ~300 reads at 100/s
        engine.request("set_quota", {"tenant_id": "t_io", "quota": {"iops": 0}})
        run("SELECT count(*), sum(length(payload)) FROM big")
        lifted = engine.stats("t_io")["io"]
        assert lifted["iops_limit"] == 0 and lifted["reads"] - capped["reads"] >= 300
        assert lifted["throttled_ns"] == capped["throttled_ns"]
    finally:
        engine.stop()
