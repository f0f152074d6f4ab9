"""IO throttling by the "rustymt" VFS on a cache-cold workload.

A 12 MB table is built through the VFS; then a reader tenant whose page-pool
partition is capped at 32 frames (and whose file was dropped from the OS page
cache) runs random point selects, so nearly every lookup misses the cache
and becomes an xRead. Unlimited first (baseline, same run), then with a
200 IOPS cap. Goal (issue 3): 200 IOPS +-10%.
"""
from __future__ import annotations

import os
import random
import time

from rustymt._native import _core

WRITER, READER = 40, 41
ROWS = 30_000
CAP = 200


def run(conn, sql, params=()):
    stmt, _ = conn.prepare(sql)
    if params:
        stmt.bind_all(list(params))
    rows = []
    while stmt.step():
        rows.append(stmt.row())
    stmt.finalize()
    return rows


def build(path):
    conn = _core.Connection(path, tenant=WRITER, vfs=_core.IOVFS_NAME)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, payload TEXT)")
    run(conn, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
              "INSERT INTO t SELECT i, printf('%.400d', i) FROM c", (ROWS,))
    conn.close()


def drop_os_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cold_point_selects(path, lookups, seed):
    drop_os_cache(path)
    conn = _core.Connection(path, tenant=READER, vfs=_core.IOVFS_NAME, readonly=True)
    try:
        before = _core.iovfs_stats(READER)
        rng = random.Random(seed)
        t0 = time.monotonic()
        for _ in range(lookups):
            key = rng.randint(1, ROWS)
            assert run(conn, "SELECT length(payload) FROM t WHERE id = ?", (key,)) == [(400,)]
        wall = time.monotonic() - t0
        after = _core.iovfs_stats(READER)
    finally:
        conn.close()
    reads = after["reads"] - before["reads"]
    return reads, wall, after["throttled_ns"] - before["throttled_ns"]


def test_iops_cap_on_cache_cold_reads(benchmark, tmp_path):
    _core.install()
    _core.set_partition(READER, 0, 32)
    path = str(tmp_path / "cold.db")
    build(path)
    try:
        free_reads, free_wall, _ = cold_point_selects(path, 400, seed=1)
        _core.iovfs_set_limits(READER, iops=CAP)
        reads, wall, throttled = benchmark.pedantic(cold_point_selects, args=(path, 400, 2), rounds=1, iterations=1)
    finally:
        _core.iovfs_set_limits(READER, 0, 0)
        _core.set_partition(READER, 0, 0)
    iops, free_iops = reads / wall, free_reads / free_wall
    benchmark.extra_info.update({"iops": round(iops, 1), "cap": CAP, "reads": reads,
                                 "uncapped_iops": round(free_iops, 1), "throttled_s": round(throttled / 1e9, 2)})
    print(f"\niovfs: {CAP} IOPS cap -> {iops:.1f} IOPS ({reads} reads in {wall:.2f}s, throttled {throttled / 1e9:.2f}s); "
          f"uncapped the same cold workload ran {free_iops:.0f} IOPS ({free_reads} reads)")
    assert reads >= 400  # cache-cold: at least one read per lookup
    assert abs(iops - CAP) <= 0.10 * CAP
