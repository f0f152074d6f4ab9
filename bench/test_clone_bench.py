"""Clone speed.

snapshot: clone time of 10 MB, 100 MB and 1 GB PDBs on a reflink XFS (an
image on a loop device, made and mounted here as root). Goal: flat in the
size, under 1 s at 1 GB — FICLONE shares extents instead of copying them.

hot: throughput of the online-backup clone of a ~200 MB PDB against `cp` of
the same datafiles, interleaved in the same run (contention hits both). The
ratio printed is cp time / hot-clone time (throughput relative to cp).
Goal >= 0.5.

    .venv/bin/python -m pytest -q -s bench/test_clone_bench.py
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from rustymt._native import _core
from rustymt.engine import clone, scram, storage
from tests.conftest import require_host

MB = 1 << 20


def make_pdb(data_dir: str, pdb_id: str, size_bytes: int) -> str:
    stage = storage.stage_pdb_from_seed(data_dir, pdb_id, pdb_id.upper(), "admin", scram.make_verifier("bench-pw-1"))
    folder = storage.publish(data_dir, stage, pdb_id)
    conn = _core.Connection(os.path.join(folder, "users.db"))
    try:
        storage.execute(conn, "PRAGMA journal_mode=DELETE")  # one file, no WAL: the size is the file's
        storage.execute(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
        rows = size_bytes // 64000
        storage.execute(conn, "BEGIN")
        storage.execute(conn, f"INSERT INTO t(b) SELECT randomblob(64000) FROM (WITH RECURSIVE s(v) AS "
                              f"(SELECT 1 UNION ALL SELECT v+1 FROM s WHERE v < {rows}) SELECT v FROM s)")
        storage.execute(conn, "COMMIT")
        storage.execute(conn, "PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return folder


@pytest.fixture(scope="module")
def xfs_data_dir():
    require_host(os.geteuid() == 0 and shutil.which("mkfs.xfs") is not None, "needs root and mkfs.xfs")
    root = tempfile.mkdtemp(prefix="rustymt-clone-bench-")
    image, point = os.path.join(root, "xfs.img"), os.path.join(root, "mnt")
    os.mkdir(point)
    with open(image, "wb") as handle:
        handle.truncate(3 << 30)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", image], check=True)
    device = subprocess.run(["losetup", "--find", "--show", image], check=True, capture_output=True, text=True).stdout.strip()
    mounted = False
    try:
        subprocess.run(["mount", "-t", "xfs", device, point], check=True)
        mounted = True
        data_dir = os.path.join(point, "data")
        os.makedirs(data_dir)
        storage.recover(data_dir)
        yield data_dir
    finally:
        if mounted:
            subprocess.run(["umount", point], check=False)
        subprocess.run(["losetup", "-d", device], check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("size_mb", [10, 100, 1024])
def test_snapshot_clone_time(benchmark, xfs_data_dir, size_mb):
    source = make_pdb(xfs_data_dir, f"p_snap_{size_mb}", size_mb * MB)
    actual = clone.source_bytes(source)
    counter = [0]

    def one_clone():
        counter[0] += 1
        stage, facts = clone.clone_pdb(xfs_data_dir, source, f"p_c{size_mb}_{counter[0]}", "X", "snapshot")
        assert facts["method"] == "reflink"
        storage.discard(stage)

    benchmark.pedantic(one_clone, rounds=5, iterations=1, warmup_rounds=1)
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(source_mb=round(actual / MB, 1), mean_seconds=round(mean, 4))
    print(f"\nsnapshot clone of {actual / MB:.0f} MB: {mean * 1000:.1f} ms (goal: flat, < 1 s at 1 GB)")
    storage.remove_pdb_files(xfs_data_dir, f"p_snap_{size_mb}")


def test_hot_clone_throughput_vs_cp(benchmark, tmp_path):
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    storage.recover(data_dir)
    source = make_pdb(data_dir, "p_hot", 200 * MB)
    files = [os.path.join(source, name) for name in clone.tablespace_files(source)]
    nbytes = sum(os.path.getsize(path) for path in files)
    hot_times, cp_times = [], []
    counter = [0]

    def hot_round():
        counter[0] += 1
        started = time.perf_counter()
        stage, _facts = clone.clone_pdb(data_dir, source, f"p_h{counter[0]}", "X", "hot")
        hot_times.append(time.perf_counter() - started)
        storage.discard(stage)
        # cp of the same files in the same round (fsynced like the clone), so contention hits both
        target = tmp_path / f"cp{counter[0]}"
        target.mkdir()
        started = time.perf_counter()
        subprocess.run(["cp", *files, str(target)], check=True)
        subprocess.run(["sync", "-f", str(target)], check=True)
        cp_times.append(time.perf_counter() - started)
        shutil.rmtree(target)

    benchmark.pedantic(hot_round, rounds=4, iterations=1, warmup_rounds=1)
    hot, cp = sorted(hot_times)[len(hot_times) // 2], sorted(cp_times)[len(cp_times) // 2]
    ratio = cp / hot
    benchmark.extra_info.update(mb=round(nbytes / MB, 1), hot_mb_s=round(nbytes / MB / hot, 1),
                                cp_mb_s=round(nbytes / MB / cp, 1), ratio=round(ratio, 3))
    print(f"\nhot clone {nbytes / MB:.0f} MB: {nbytes / MB / hot:.0f} MB/s; cp: {nbytes / MB / cp:.0f} MB/s; "
          f"ratio {ratio:.2f} (goal >= 0.5)")
