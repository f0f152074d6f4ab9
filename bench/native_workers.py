"""Workers for the native benches, each run in its own process (the hooks can
only be installed before SQLite's first initialization, so the baseline with
SQLite's stock pcache1 + system malloc needs a process of its own).

  python bench/native_workers.py sqlite hooked|stock ROWS REPS [CACHE_KIB]
      -> JSON list of {wall, cpu, digest of all results} per repetition
  python bench/native_workers.py isolation partitioned|solo|global
      -> JSON {"hit_ratio": B's hit ratio, ...}
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from rustymt._native import _core  # noqa: E402
from tests.native.workload import run_engine, script  # noqa: E402


def sqlite_workload(mode: str, rows: int, reps: int, cache_kib: int = 0) -> list[dict]:
    """cache_kib > 0: both sides get PRAGMA cache_size=-cache_kib and the pool
    that many KiB of 4 KiB frames, so neither side's cache size decides the IO
    and the ratio measures the mechanisms alone."""
    if mode == "hooked":
        _core.install(pool_frames=max(8192, cache_kib // 4 + 1024))
        _core.canary()
        tenant = 1
    else:
        _core.initialize_without_hooks()
        tenant = 0
    # The hooked side opens through the IO-metering VFS too (unlimited
    # tenant: counted, never throttled); RUSTYMT_BENCH_VFS= (empty) leaves it out.
    vfs = os.environ.get("RUSTYMT_BENCH_VFS", "rustymt") or None
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):
            path = os.path.join(tmp, f"w{rep}.db")
            wall, cpu = time.perf_counter(), time.process_time()
            conn = _core.Connection(path, tenant=tenant, vfs=vfs if mode == "hooked" else None)
            if cache_kib:
                run_engine(conn, [f"PRAGMA cache_size=-{cache_kib}"])
            results = run_engine(conn, script(rows))
            # Point selects through one prepared statement: page-fetch bound.
            stmt, _ = conn.prepare("SELECT note, amount FROM orders WHERE id = ?")
            for i in range(20000):
                stmt.bind_all([(i * 104729) % rows + 1])
                results.append(stmt.fetchmany(2))
            stmt.finalize()
            results += run_engine(conn, ["SELECT count(*), sum(amount) FROM orders o JOIN customer c ON c.id = o.customer"] * 5)
            conn.close()
            runs.append({
                "wall": time.perf_counter() - wall,
                "cpu": time.process_time() - cpu,
                "digest": hashlib.sha256(repr(results).encode()).hexdigest(),
            })
    return runs


POOL = 1000          # frames
PAGE = 4096
HOT_ROWS = 9000      # B's hot set: ~9000 rows of ~190 bytes: ~450 leaf pages
SCAN_PAGES = 5 * POOL


def isolation(mode: str) -> dict:
    _core.install(pool_frames=POOL)
    a_slot, b_slot = 11, 12
    if mode == "global":
        a_slot = b_slot = 13   # one partition: one CLOCK for both, no limits
    elif mode == "partitioned":
        _core.set_partition(b_slot, 550, 0)        # B's hot set is reserved
        _core.set_partition(a_slot, 0, POOL - 550)  # the scanner cannot take it
    with tempfile.TemporaryDirectory() as tmp:
        a = _core.Connection(os.path.join(tmp, "a.db"), tenant=a_slot)
        b = _core.Connection(os.path.join(tmp, "b.db"), tenant=b_slot)
        blob_rows = SCAN_PAGES * 3  # ~1200-byte rows: 3 per 4 KiB page
        run_engine(a, [f"PRAGMA page_size={PAGE}", "CREATE TABLE big(id INTEGER PRIMARY KEY, pad BLOB)",
                       f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < {blob_rows}) "
                       "INSERT INTO big SELECT x, zeroblob(1200) FROM c"])
        run_engine(b, [f"PRAGMA page_size={PAGE}", "CREATE TABLE hot(id INTEGER PRIMARY KEY, v TEXT)",
                       f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < {HOT_ROWS * 4}) "
                       "INSERT INTO hot SELECT x, printf('%0180d', x) FROM c"])
        pages = run_engine(a, ["PRAGMA page_count"])[0][0][0]
        point, _ = b.prepare("SELECT v FROM hot WHERE id = ?")
        rng = random.Random(7)

        def b_round(n):
            for _ in range(n):
                point.bind_all([rng.randint(1, HOT_ROWS)])
                point.fetchmany(2)

        def a_scan_chunk(stmt):
            if not stmt.fetchmany(200):
                stmt.reset()

        scan, _ = a.prepare("SELECT sum(length(pad)) FROM (SELECT pad FROM big)") if mode != "solo" else (None, "")
        scan_rows, _ = a.prepare("SELECT id, length(pad) FROM big") if mode != "solo" else (None, "")
        # Warm up: B's hot set in, A scanning.
        for _ in range(40):
            b_round(400)
            if scan_rows is not None:
                a_scan_chunk(scan_rows)
        _core.reset_tenant_stats(b_slot)
        if mode == "global":
            # One slot for both: count B's lookups by the counters' difference
            # around B's own rounds only.
            hits = misses = 0
            for _ in range(150):
                before = _core.pool_stats(b_slot)
                b_round(50)
                after = _core.pool_stats(b_slot)
                hits += after["hits"] - before["hits"]
                misses += after["misses"] - before["misses"]
                for _ in range(10):
                    a_scan_chunk(scan_rows)
            ratio = hits / (hits + misses)
        else:
            for _ in range(150):
                b_round(50)
                if scan_rows is not None:
                    for _ in range(10):
                        a_scan_chunk(scan_rows)
            ratio = _core.pool_stats(b_slot)["hit_ratio"]
        result = {"hit_ratio": ratio, "scan_table_pages": pages, "pool_frames": POOL,
                  "b": _core.pool_stats(b_slot), "a": _core.pool_stats(a_slot)}
        for s in (scan, scan_rows, point):
            if s is not None:
                s.finalize()
        a.close()
        b.close()
    return result


def run(*args):
    """Run one worker in a fresh process (for the bench tests); its JSON answer."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *map(str, args)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "sqlite":
        print(json.dumps(sqlite_workload(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 0)))
    elif what == "isolation":
        print(json.dumps(isolation(sys.argv[2])))
    else:
        raise SystemExit(f"unknown worker {what}")
