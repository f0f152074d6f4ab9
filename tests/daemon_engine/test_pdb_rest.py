"""PDB REST against a real daemon and its instance: the lifecycle, what each
open mode means to a real client, and every refusal."""
from __future__ import annotations

import os

import psycopg
import pytest

from tests.daemon_engine.conftest import connect, get_json, new_tenant, port_range_env, startup_sqlstate

PDB_PASSWORD = "pdb admin secret"


@pytest.fixture(scope="module")
def owner(engine_daemon):
    return new_tenant(engine_daemon, "pdbs")


def create_pdb(daemon, tenant: dict, name: str, token=None) -> dict:
    body = {"pdb_name": name, "admin_user": "pdb_admin", "admin_password": PDB_PASSWORD,
            "tenant_id": tenant["tenant_id"], "clone_from_seed": True}
    kwargs = {"token": token} if token else {}
    response = daemon.request("POST", "/api/v1/pdbs", json=body, **kwargs)
    assert response.status == 201, response.text
    return response.json


def post(daemon, path: str, body=None, **kwargs):
    return daemon.request("POST", path, json=body if body is not None else {}, **kwargs)


def as_pdb_admin(tenant: dict, name: str) -> dict:
    return {**tenant, "user": "pdb_admin", "password": PDB_PASSWORD, "pdb_name": name}


def test_pdb_lifecycle(engine_daemon, owner):
    created = create_pdb(engine_daemon, owner, "PDB_LIFE")
    assert created["state"] == "mounted" and created["pdb_name"] == "PDB_LIFE" and created["created_at"].endswith("Z")
    pdb_id = created["pdb_id"]
    detail = get_json(engine_daemon, f"/api/v1/pdbs/{pdb_id}")
    assert (detail["state"], detail["open_mode"], detail["tenant_id"]) == ("mounted", None, owner["tenant_id"])
    assert sorted(os.path.basename(path) for path in detail["datafiles"]) == ["system.db", "users.db"]
    assert startup_sqlstate(as_pdb_admin(owner, "PDB_LIFE")) == "3D000"  # mounted: not open to sessions

    opened = post(engine_daemon, f"/api/v1/pdbs/{pdb_id}/open", {"mode": "READ_WRITE"})
    assert opened.status == 200, opened.text
    assert {k: opened.json[k] for k in ("pdb_id", "state", "open_mode")} == {"pdb_id": pdb_id, "state": "open", "open_mode": "READ_WRITE"}
    with connect(as_pdb_admin(owner, "PDB_LIFE")) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('survives close')")
    closed = post(engine_daemon, f"/api/v1/pdbs/{pdb_id}/close", {"mode": "NORMAL"})
    assert closed.status == 200 and closed.json["state"] == "closed", closed.text

    # READ_ONLY: reads work, writes are refused by SQLite (25006)
    assert post(engine_daemon, f"/api/v1/pdbs/{pdb_id}/open", {"mode": "read_only"}).json["open_mode"] == "READ_ONLY"
    with connect(as_pdb_admin(owner, "PDB_LIFE")) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("survives close",)]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO kept VALUES ('no')")
    listed = get_json(engine_daemon, "/api/v1/pdbs?state=open&page_size=100")
    assert pdb_id in [pdb["pdb_id"] for pdb in listed["pdbs"]] and all(p["state"] == "open" for p in listed["pdbs"])

    # IMMEDIATE ends a session inside a transaction
    session = connect(as_pdb_admin(owner, "PDB_LIFE"), autocommit=False)
    session.execute("SELECT count(*) FROM kept")
    closed = post(engine_daemon, f"/api/v1/pdbs/{pdb_id}/close", {"mode": "IMMEDIATE"})
    assert closed.status == 200 and closed.json["sessions_ended"] == 1, closed.text
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()

    dropped = engine_daemon.request("DELETE", f"/api/v1/pdbs/{pdb_id}")
    assert dropped.status == 200 and dropped.json["state"] == "dropped", dropped.text
    assert not os.path.exists(os.path.join(engine_daemon.data_dir, "pdbs", pdb_id))
    assert get_json(engine_daemon, f"/api/v1/pdbs/{pdb_id}")["state"] == "dropped"


def test_upgrade_mode_admits_only_the_pdb_admin(engine_daemon, owner):
    pdb_id = create_pdb(engine_daemon, owner, "PDB_UPG")["pdb_id"]
    assert post(engine_daemon, f"/api/v1/pdbs/{pdb_id}/open", {"mode": "UPGRADE"}).status == 200
    with connect(as_pdb_admin(owner, "PDB_UPG")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    kept = engine_daemon.request("DELETE", f"/api/v1/pdbs/{pdb_id}?keep_datafiles=true")
    assert kept.status == 400 and kept.json["error"]["code"] == "INVALID_STATE"  # open: close first
    assert post(engine_daemon, f"/api/v1/pdbs/{pdb_id}/close", {"mode": "IMMEDIATE"}).status == 200
    kept = engine_daemon.request("DELETE", f"/api/v1/pdbs/{pdb_id}?keep_datafiles=true")
    assert kept.status == 200 and kept.json["keep_datafiles"] is True
    assert os.path.isfile(os.path.join(engine_daemon.data_dir, "pdbs", pdb_id, "users.db"))


@pytest.mark.parametrize("method, suffix, body, status, code", [
    ("POST", "/open", {"mode": "READ_WRITE"}, 400, "INVALID_STATE"),        # already open
    ("POST", "/open", {"mode": "WRITE_ONLY"}, 400, "INVALID_REQUEST"),      # no such mode
    ("POST", "/close", {"mode": "SOMETIME"}, 400, "INVALID_REQUEST"),
    ("DELETE", "", None, 400, "INVALID_STATE"),                             # open: close first
])
def test_refusals_on_an_open_pdb(engine_daemon, owner, method, suffix, body, status, code):
    response = engine_daemon.request(method, f"/api/v1/pdbs/{owner['pdb_id']}{suffix}", json=body)
    assert (response.status, response.json["error"]["code"]) == (status, code), response.text
    assert get_json(engine_daemon, f"/api/v1/pdbs/{owner['pdb_id']}")["state"] == "open"  # nothing changed


def test_refusals_by_state_and_identity(engine_daemon, owner):
    pdb_id = create_pdb(engine_daemon, owner, "PDB_STATES")["pdb_id"]
    close = post(engine_daemon, f"/api/v1/pdbs/{pdb_id}/close", {"mode": "NORMAL"})
    assert (close.status, close.json["error"]["code"]) == (400, "INVALID_STATE")  # mounted, not open
    assert close.json["error"]["details"]["current_state"] == "mounted"
    assert engine_daemon.request("DELETE", f"/api/v1/pdbs/{pdb_id}").status == 200
    for method, suffix, body in (("POST", "/open", {}), ("POST", "/close", {}), ("DELETE", "", None)):
        again = engine_daemon.request(method, f"/api/v1/pdbs/{pdb_id}{suffix}", json=body)
        assert (again.status, again.json["error"]["code"]) == (400, "INVALID_STATE"), again.text
    for method, suffix, body in (("GET", "", None), ("POST", "/open", {}), ("POST", "/close", {}), ("DELETE", "", None)):
        unknown = engine_daemon.request(method, f"/api/v1/pdbs/pdb_nope{suffix}", json=body)
        assert (unknown.status, unknown.json["error"]["code"]) == (404, "PDB_NOT_FOUND"), unknown.text
    taken = engine_daemon.request("POST", "/api/v1/pdbs", json={
        "pdb_name": owner["pdb_name"], "admin_user": "x", "admin_password": PDB_PASSWORD, "tenant_id": owner["tenant_id"]})
    assert (taken.status, taken.json["error"]["code"]) == (409, "CONFLICT")
    for bad in ({"pdb_name": "1bad"}, {"admin_password": "short"}, {"clone_from_seed": False}, {"tenant_id": "tenant_nope"}):
        body = {"pdb_name": "PDB_OK", "admin_user": "a", "admin_password": PDB_PASSWORD, "tenant_id": owner["tenant_id"], **bad}
        response = engine_daemon.request("POST", "/api/v1/pdbs", json=body)
        assert response.status in (400, 404) and response.json["error"]["code"] in ("INVALID_REQUEST", "TENANT_NOT_FOUND"), response.text
    page = get_json(engine_daemon, "/api/v1/pdbs?page=1&page_size=1")
    assert len(page["pdbs"]) == 1 and page["total"] >= 2 and page["page_size"] == 1
    assert engine_daemon.request("GET", "/api/v1/pdbs?state=floating").status == 400


def test_permissions_and_tenant_scoping(engine_daemon, owner):
    other = new_tenant(engine_daemon, "other")
    other_admin = engine_daemon.token("tenant_admin", tenant_id=other["tenant_id"])
    # the other tenant sees only its own PDBs and cannot touch the owner's
    listed = engine_daemon.request("GET", "/api/v1/pdbs?page_size=100", token=other_admin).json
    assert [pdb["tenant_id"] for pdb in listed["pdbs"]] == [other["tenant_id"]] * len(listed["pdbs"]) and listed["total"] >= 1
    for method, suffix, body in (("GET", "", None), ("POST", "/close", {"mode": "IMMEDIATE"}), ("DELETE", "", None)):
        response = engine_daemon.request(method, f"/api/v1/pdbs/{owner['pdb_id']}{suffix}", json=body, token=other_admin)
        assert (response.status, response.json["error"]["code"]) == (403, "ISOLATION_VIOLATION"), response.text
    response = engine_daemon.request("POST", "/api/v1/pdbs", token=other_admin, json={
        "pdb_name": "PDB_INTRUDER", "admin_user": "a", "admin_password": PDB_PASSWORD, "tenant_id": owner["tenant_id"]})
    assert (response.status, response.json["error"]["code"]) == (403, "ISOLATION_VIOLATION")
    monitor = engine_daemon.token("monitor", tenant_id=other["tenant_id"])
    assert engine_daemon.request("GET", f"/api/v1/pdbs/{other['pdb_id']}", token=monitor).status == 200
    denied = engine_daemon.request("POST", f"/api/v1/pdbs/{other['pdb_id']}/close", json={}, token=monitor)
    assert (denied.status, denied.json["error"]["code"]) == (403, "PERMISSION_DENIED")
    # a tenant admin creates a PDB for its own tenant without naming it
    created = engine_daemon.request("POST", "/api/v1/pdbs", token=other_admin, json={
        "pdb_name": "PDB_OTHER_SECOND", "admin_user": "a", "admin_password": PDB_PASSWORD})
    assert created.status == 201, created.text
    assert get_json(engine_daemon, f"/api/v1/pdbs/{created.json['pdb_id']}")["tenant_id"] == other["tenant_id"]
    assert get_json(engine_daemon, "/api/v1/cdb/status")["open_pdbs"] >= 2


def test_max_pdbs_is_enforced_with_507(daemon_factory):
    daemon = daemon_factory(env={**port_range_env(), "RUSTYMT_CDB_MAX_PDBS": "2"})
    tenant = new_tenant(daemon, "full")
    create_pdb(daemon, tenant, "PDB_SECOND")
    response = daemon.request("POST", "/api/v1/pdbs", json={
        "pdb_name": "PDB_THIRD", "admin_user": "a", "admin_password": PDB_PASSWORD, "tenant_id": tenant["tenant_id"]})
    assert (response.status, response.json["error"]["code"]) == (507, "INSUFFICIENT_RESOURCES"), response.text
    refused = daemon.request("POST", "/api/v1/tenants", json={"tenant_name": "one_more", "admin_user": "a@b.c",
                                                               "admin_password": PDB_PASSWORD, "service_tier": "bronze"})
    assert (refused.status, refused.json["error"]["code"]) == (507, "INSUFFICIENT_RESOURCES")
    assert not [name for name in os.listdir(os.path.join(daemon.data_dir, "staging"))]  # nothing half-made left
