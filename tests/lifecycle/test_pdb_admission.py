"""Who may get a new PDB, and what a refusal tells: a suspended tenant gets
none (create, clone or plug); a PDB name another tenant holds is refused
without naming the holder; a dropped PDB lets go of its lockdown profile;
unplugging twice says so. Against a real daemon over REST."""
from __future__ import annotations

import random

import pytest

from tests.conftest import wait_for

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    from tests.daemon import Daemon

    low = random.randrange(21000, 32000, 100)  # own tenant port range (others run daemons too)
    data_dir = str(tmp_path_factory.mktemp("admission") / "data")
    daemon = Daemon.start(data_dir, {"RUSTYMT_TENANT_PORTS": f"{low}-{low + 99}",
                                     "RUSTYMT_LIFECYCLE_EXPORT_ROOTS": f"{data_dir}/exports"})
    yield daemon
    daemon.stop()


def tenant(daemon, name):
    body = daemon.create_tenant(name)
    token = daemon.token("tenant_admin", body["tenant_id"])
    wait_for(lambda: daemon.request("GET", f"/api/v1/pdbs/{body['pdb_id']}").json["state"] == "open", 30,
             what="tenant PDB open")
    return body["tenant_id"], body["pdb_id"], token


def new_pdb(daemon, token, name):
    return daemon.request("POST", "/api/v1/pdbs", {"pdb_name": name, "admin_user": "pa", "admin_password": PASSWORD,
                                                   "clone_from_seed": True}, token=token)


def test_a_suspended_tenant_gets_no_new_pdbs(daemon):
    tenant_id, pdb_id, token = tenant(daemon, "suspendo")
    assert daemon.request("POST", f"/api/v1/tenants/{tenant_id}/suspend", {"reason": "payment overdue"}).status == 200
    refused = [new_pdb(daemon, token, "PDB_WHILE_SUSP"),
               daemon.request("POST", f"/api/v1/pdbs/{pdb_id}/clone", {"target_name": "PDB_SUSP_CLONE"}, token=token),
               daemon.request("POST", "/api/v1/pdbs", {"pdb_name": "PDB_OP_SUSP", "admin_user": "pa",
                                                       "admin_password": PASSWORD, "clone_from_seed": True,
                                                       "tenant_id": tenant_id})]  # the operator neither
    for answer in refused:
        assert answer.status == 400 and answer.error_code == "INVALID_STATE", answer.text
        assert answer.json["error"]["details"]["current_state"] == "suspended"
    names = {p["pdb_name"] for p in daemon.request("GET", "/api/v1/pdbs?page_size=100").json["pdbs"]}
    assert not names & {"PDB_WHILE_SUSP", "PDB_SUSP_CLONE", "PDB_OP_SUSP"}
    assert daemon.request("POST", f"/api/v1/tenants/{tenant_id}/resume").status == 200
    assert new_pdb(daemon, token, "PDB_AFTER_RESUME").status == 201


def test_a_name_another_tenant_holds_is_refused_without_naming_the_holder(daemon):
    _, _, alpha = tenant(daemon, "alphaname")
    beta_id, beta_pdb, beta = tenant(daemon, "betaname")
    mine = new_pdb(daemon, alpha, "PDB_MINE")
    assert mine.status == 201
    again = new_pdb(daemon, alpha, "PDB_MINE")  # own name: says so, with the id
    assert again.status == 409 and again.error_code == "CONFLICT"
    assert again.json["error"]["details"]["pdb_id"] == mine.json["pdb_id"]
    for answer in (new_pdb(daemon, beta, "PDB_MINE"),
                   daemon.request("POST", f"/api/v1/pdbs/{beta_pdb}/clone", {"target_name": "pdb_mine"}, token=beta)):
        assert answer.status == 409 and answer.error_code == "CONFLICT", answer.text
        assert "not available" in answer.json["error"]["message"]
        assert mine.json["pdb_id"] not in answer.text and "alphaname" not in answer.text
        assert "exists" not in answer.json["error"]["message"]


def test_a_dropped_pdb_lets_go_of_its_lockdown_profile(daemon):
    _, _, token = tenant(daemon, "lockdrop")
    profiles = "/api/v1/cdb/lockdown-profiles"
    assert daemon.request("POST", profiles, {"name": "LP_DROP", "disabled_statements": ["ATTACH"]}).status == 201
    pdb_id = new_pdb(daemon, token, "PDB_LOCKED").json["pdb_id"]
    assert daemon.request("POST", f"/api/v1/pdbs/{pdb_id}/lockdown", {"profile_name": "LP_DROP"}).status == 200
    assert daemon.request("GET", f"{profiles}/LP_DROP").json["applied_to"] == [pdb_id]
    assert daemon.request("DELETE", f"/api/v1/pdbs/{pdb_id}").status == 200
    assert daemon.request("GET", f"{profiles}/LP_DROP").json["applied_to"] == []
    assert daemon.request("DELETE", f"{profiles}/LP_DROP").status == 200


def test_unplugging_twice_says_already_unplugged(daemon):
    _, _, token = tenant(daemon, "twiceunplug")
    pdb_id = new_pdb(daemon, token, "PDB_TWICE").json["pdb_id"]
    xml = f"{daemon.data_dir}/exports/twice.xml"
    assert daemon.request("POST", f"/api/v1/pdbs/{pdb_id}/unplug", {"xml_path": xml}).status == 200
    again = daemon.request("POST", f"/api/v1/pdbs/{pdb_id}/unplug", {"xml_path": f"{daemon.data_dir}/exports/t2.xml"})
    assert again.status == 400 and again.error_code == "INVALID_STATE"
    assert "already unplugged" in again.json["error"]["message"] and "close it" not in again.json["error"]["message"]
