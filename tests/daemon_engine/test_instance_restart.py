"""The shared instance is killed (SIGKILL) under a running daemon, and the
daemon itself is restarted: tenants come back attached, their PDBs in their
saved states, and the crash is visible in /cdb/status and recorded."""
from __future__ import annotations

import os
import signal
import sqlite3

import psycopg
import pytest

from tests.conftest import wait_for
from tests.daemon_engine.conftest import connect, get_json, new_tenant, port_range_env, startup_sqlstate
from tests.daemon_engine.test_pdb_rest import as_pdb_admin, create_pdb, post


def shared_instance(daemon) -> dict:
    instances = get_json(daemon, "/api/v1/cdb/status")["instances"]
    return next(instance for instance in instances if instance["name"] == "shared")


def read_catalog(daemon, sql: str) -> list[tuple]:
    catalog = sqlite3.connect(f"file:{daemon.data_dir}/catalog.db?mode=ro", uri=True)
    try:
        return [tuple(row) for row in catalog.execute(sql)]
    finally:
        catalog.close()


def assert_states_served(daemon, owner, suspended, read_only_name, closed_name):
    with connect(owner) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("before the crash",)]
    with connect(as_pdb_admin(owner, read_only_name)) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE nope (x int)")
    assert startup_sqlstate(as_pdb_admin(owner, closed_name)) == "3D000"  # closed stays closed
    assert startup_sqlstate(suspended) == "57P01"                           # suspended stays suspended
    assert get_json(daemon, "/api/v1/cdb/status")["open_pdbs"] == 3          # owner's, read-only, suspended's


def test_instance_crash_and_daemon_restart_restore_every_state(daemon_factory):
    daemon = daemon_factory(env=port_range_env())
    owner = new_tenant(daemon, "crash")
    suspended = new_tenant(daemon, "asleep")
    with connect(owner) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('before the crash')")
    read_only = create_pdb(daemon, owner, "PDB_CRASH_RO")["pdb_id"]
    assert post(daemon, f"/api/v1/pdbs/{read_only}/open", {"mode": "READ_ONLY"}).status == 200
    closed = create_pdb(daemon, owner, "PDB_CRASH_CLOSED")["pdb_id"]
    assert post(daemon, f"/api/v1/pdbs/{closed}/open", {"mode": "READ_WRITE"}).status == 200
    assert post(daemon, f"/api/v1/pdbs/{closed}/close", {"mode": "NORMAL"}).status == 200
    assert post(daemon, f"/api/v1/tenants/{suspended['tenant_id']}/suspend", {"reason": "crash test"}).status == 200
    states_before = {pdb["pdb_id"]: (pdb["state"], pdb["open_mode"]) for pdb in get_json(daemon, "/api/v1/pdbs?page_size=100")["pdbs"]}

    victim = shared_instance(daemon)
    assert (victim["restarts"], victim["health"]) == (0, "healthy") and victim["pid"]
    os.kill(victim["pid"], signal.SIGKILL)
    # Meanwhile sessions are refused cleanly: an error at once, never a hang.
    def replaced_while_connecting() -> bool:
        try:
            connect(owner).close()
        except psycopg.OperationalError:
            pass
        return shared_instance(daemon)["pid"] not in (victim["pid"], None)

    wait_for(replaced_while_connecting, timeout=30, what="a new instance process")
    wait_for(lambda: shared_instance(daemon)["health"] == "healthy", timeout=30, what="the instance back")
    restarted = shared_instance(daemon)
    assert restarted["restarts"] == 1 and restarted["pid"] != victim["pid"] and restarted["last_exit_code"] == -9
    assert_states_served(daemon, owner, suspended, "PDB_CRASH_RO", "PDB_CRASH_CLOSED")
    after = {pdb["pdb_id"]: (pdb["state"], pdb["open_mode"]) for pdb in get_json(daemon, "/api/v1/pdbs?page_size=100")["pdbs"]}
    assert after == states_before

    events = read_catalog(daemon, "SELECT event FROM instance_events WHERE instance = 'shared' ORDER BY seq")
    assert [row[0] for row in events][:4] == ["instance.started", "instance.crashed", "instance.started", "instance.restarted"], events
    slots = read_catalog(daemon, "SELECT tenant_id, slot FROM tenant_slots ORDER BY slot")
    assert sorted(tenant for tenant, _ in slots) == sorted([owner["tenant_id"], suspended["tenant_id"]])

    # The daemon itself restarts: same slots, ports and states from the catalog.
    daemon = daemon.restart()
    try:
        assert shared_instance(daemon)["restarts"] == 0
        assert read_catalog(daemon, "SELECT tenant_id, slot FROM tenant_slots ORDER BY slot") == slots  # stable
        assert_states_served(daemon, owner, suspended, "PDB_CRASH_RO", "PDB_CRASH_CLOSED")
        assert post(daemon, f"/api/v1/tenants/{suspended['tenant_id']}/resume").status == 200
        with connect(suspended) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_storage_recovery_at_start_finishes_or_rolls_back(daemon_factory, tmp_path):
    """A crash between the catalog commit and the rename (the PDB's folder still
    in staging/), a stray staged folder, and a dropped PDB whose files were not
    yet removed: the next start publishes, removes and removes."""
    data_dir = str(tmp_path / "rec")
    env = port_range_env()
    daemon = daemon_factory(env=env, data_dir=data_dir)
    owner = new_tenant(daemon, "rec")
    pending = create_pdb(daemon, owner, "PDB_PENDING")["pdb_id"]
    doomed = create_pdb(daemon, owner, "PDB_DOOMED")["pdb_id"]
    assert daemon.request("DELETE", f"/api/v1/pdbs/{doomed}?keep_datafiles=true").status == 200
    assert daemon.stop() == 0
    # Re-create the half-done states a kill -9 leaves behind.
    staging, pdbs = os.path.join(data_dir, "staging"), os.path.join(data_dir, "pdbs")
    os.rename(os.path.join(pdbs, pending), os.path.join(staging, f"create-{pending}-0123456789ab"))
    os.makedirs(os.path.join(staging, "create-pdb_neverdone-ba9876543210"))
    catalog = sqlite3.connect(os.path.join(data_dir, "catalog.db"))
    with catalog:
        catalog.execute("UPDATE pdb_files SET datafiles_kept = 0 WHERE pdb_id = ?", (doomed,))
    catalog.close()

    daemon = daemon_factory(env=env, data_dir=data_dir)
    assert os.listdir(staging) == []
    assert not os.path.exists(os.path.join(pdbs, doomed))
    assert os.path.isfile(os.path.join(pdbs, pending, "system.db"))
    assert post(daemon, f"/api/v1/pdbs/{pending}/open", {"mode": "READ_WRITE"}).status == 200
    with connect(as_pdb_admin(owner, "PDB_PENDING")) as conn:  # its admin's verifier came through staging/
        assert conn.execute("SELECT 1").fetchone() == (1,)
