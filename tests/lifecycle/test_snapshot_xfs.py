"""Snapshot clones on a real reflink filesystem: an XFS image (reflink=1) on a
loop device, made and mounted by the test as root, unmounted and detached
even when the test fails."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from rustymt._native import _core
from rustymt.engine import clone, scram, storage
from tests.conftest import require_host

pytestmark = pytest.mark.host


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout


@pytest.fixture
def xfs_dir(tmp_path):
    require_host(os.geteuid() == 0 and shutil.which("mkfs.xfs") is not None and shutil.which("losetup") is not None,
                 "needs root, mkfs.xfs (xfsprogs) and losetup to make a reflink XFS on a loop device")
    image, point = tmp_path / "xfs.img", tmp_path / "mnt"
    point.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(512 << 20)  # sparse; XFS wants >= 300 MB
    _run("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
    device = _run("losetup", "--find", "--show", str(image)).strip()
    mounted = False
    try:
        _run("mount", "-t", "xfs", device, str(point))
        mounted = True
        yield str(point)
    finally:
        if mounted:
            subprocess.run(["umount", str(point)], check=False, timeout=60)
        subprocess.run(["losetup", "-d", device], check=False, timeout=60)


def _fill(folder: str, rows: int):
    """Write rows and keep the writer open (returned): its last commits stay in the WAL."""
    conn = _core.Connection(os.path.join(folder, "users.db"))
    try:
        storage.execute(conn, "PRAGMA wal_autocheckpoint=0")  # leave the last rows in the WAL: the clone must take it
        storage.execute(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB)")
        storage.execute(conn, "BEGIN")
        storage.execute(conn, f"INSERT INTO t(payload) SELECT randomblob(4000) FROM "
                              f"(WITH RECURSIVE s(v) AS (SELECT 1 UNION ALL SELECT v+1 FROM s WHERE v < {rows}) SELECT v FROM s)")
        storage.execute(conn, "COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def _rows(folder: str) -> tuple[int, str]:
    conn = _core.Connection(os.path.join(folder, "users.db"), readonly=True)
    try:
        assert storage.execute(conn, "PRAGMA integrity_check") == [("ok",)]
        return storage.execute(conn, "SELECT count(*), group_concat(hex(substr(payload, 1, 8)), '') FROM t")[0]
    finally:
        conn.close()


def test_snapshot_clone_shares_extents_and_is_independent(xfs_dir):
    assert clone.filesystem_of(xfs_dir)[1] == "xfs"
    data_dir = os.path.join(xfs_dir, "data")
    os.makedirs(data_dir)
    storage.recover(data_dir)
    stage = storage.stage_pdb_from_seed(data_dir, "p_src", "PDB_SRC", "admin", scram.make_verifier("pw-123456"))
    source = storage.publish(data_dir, stage, "p_src")
    writer = _fill(source, 5000)  # ~20 MB, all of it still in users.db-wal: quiesced, not closed
    try:
        assert os.path.getsize(os.path.join(source, "users.db-wal")) > 5000 * 4000
        before = _rows(source)
        stage, facts = clone.clone_pdb(data_dir, source, "p_snap", "PDB_SNAP", "snapshot")
        assert facts["method"] == "reflink"
        target = storage.publish(data_dir, stage, "p_snap")
        # The extents are shared with the source (copy-on-write), not copied: the
        # 20 MB are in the WAL, which the clone took along. (Checked while the
        # source's WAL still exists: closing its writer checkpoints and deletes it.)
        extents = _run("filefrag", "-v", os.path.join(target, "users.db-wal"))
        assert "shared" in extents
    finally:
        writer.close()
    assert _rows(target) == before
    # Writing to the clone leaves the source as it was.
    conn = _core.Connection(os.path.join(target, "users.db"))
    try:
        storage.execute(conn, "DELETE FROM t WHERE id % 2 = 0")
    finally:
        conn.close()
    assert _rows(source) == before
    info = storage.read_dictionary(target)["info"]
    assert info["pdb_id"] == "p_snap" and info["guid"] != storage.read_dictionary(source)["info"]["guid"]
    assert os.listdir(storage.staging_dir(data_dir)) == []
