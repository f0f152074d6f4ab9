"""The lifecycle REST API against a real daemon (rustymt serve + its engine
instance), data checked through psycopg on the tenant's port."""
from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading

import psycopg
import pytest

from tests.conftest import wait_for

PASSWORD = "correct horse battery"


def series(n: int) -> str:
    return f"(WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < {n}) SELECT value FROM s)"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """The module's daemon; its export roots: <data_dir>/exports and daemon.other_root,
    a folder on another filesystem (tmpfs) for unplug's copy path."""
    from tests.daemon import Daemon

    low = random.randrange(21000, 32000, 100)  # own range (others run daemons too), below the ephemeral ports
    data_dir = str(tmp_path_factory.mktemp("lifecycle") / "data")
    other_root = tempfile.mkdtemp(prefix="rustymt-test-exports-", dir="/dev/shm")
    try:
        daemon = Daemon.start(data_dir, {"RUSTYMT_TENANT_PORTS": f"{low}-{low + 99}",
                                         "RUSTYMT_LIFECYCLE_EXPORT_ROOTS": f"{data_dir}/exports,{other_root}"})
        daemon.other_root = other_root
        yield daemon
        daemon.stop()
    finally:
        shutil.rmtree(other_root, ignore_errors=True)


class Tenant:
    def __init__(self, daemon, name: str):
        body = daemon.create_tenant(name)
        self.daemon, self.tenant_id, self.pdb_id = daemon, body["tenant_id"], body["pdb_id"]
        self.port, self.user, self.pdb_name = body["resources"]["network_port"], f"admin@{name}.example", f"PDB_{name.upper()}"
        wait_for(lambda: daemon.request("GET", f"/api/v1/pdbs/{self.pdb_id}").json["state"] == "open", 30,
                 what="tenant PDB open")

    def connect(self, dbname=None, user=None, password=PASSWORD, **kw):
        return psycopg.connect(host="127.0.0.1", port=self.port, dbname=dbname or self.pdb_name, user=user or self.user,
                               password=password, sslmode="disable", connect_timeout=10, **kw)

    def call(self, method, path, json=None, **kw):
        return self.daemon.request(method, path, json=json, **kw)


def wait_job(daemon, job_id: str, timeout: float = 60) -> dict:
    def finished():
        job = daemon.request("GET", f"/api/v1/jobs/{job_id}").json
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    return wait_for(finished, timeout, what=f"job {job_id} finished")


def test_hot_clone_of_a_live_pdb_under_inserts(daemon):
    acme = Tenant(daemon, "acmehot")
    with acme.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY, note TEXT)")
        conn.execute("INSERT INTO orders(note) SELECT hex(randomblob(100)) FROM " + series(20000))
    stop, inserted = threading.Event(), [0]

    def load():
        with acme.connect(autocommit=True) as writer:
            while not stop.is_set():
                writer.execute("INSERT INTO orders(note) VALUES ('live')")
                inserted[0] += 1

    loader = threading.Thread(target=load)
    loader.start()
    try:
        wait_for(lambda: inserted[0] > 10, 30, what="insert load")
        answer = acme.call("POST", f"/api/v1/pdbs/{acme.pdb_id}/clone",
                           {"target_name": "ACME_HOT_DEV", "clone_type": "hot", "open_after_clone": True})
        assert answer.status == 202, answer.text
        body = answer.json
        assert body["status"] == "in_progress" and body["source_pdb"] == acme.pdb_name and body["target_pdb"] == "ACME_HOT_DEV"
        assert "estimated_completion" in body
        job = wait_job(daemon, body["job_id"])
    finally:
        stop.set()
        loader.join(30)
    assert job["status"] == "completed", job
    assert job["progress"] == 1.0 and job["bytes_transferred"] > 20000 * 100 and job["error"] is None
    pdb = acme.call("GET", f"/api/v1/pdbs/{job['target_pdb_id']}").json
    assert pdb["state"] == "open" and pdb["tenant_id"] == acme.tenant_id, job["result"]
    with acme.connect("ACME_HOT_DEV") as conn:  # the source's users log in
        count, top = conn.execute("SELECT count(*), max(id) FROM orders").fetchone()
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert count == top and 20000 <= count <= 20000 + inserted[0]
    assert pdb["guid"] != acme.call("GET", f"/api/v1/pdbs/{acme.pdb_id}").json["guid"]


def test_metadata_clone_cancel_idempotency_and_errors(daemon):
    acme = Tenant(daemon, "acmemeta")
    with acme.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, sku TEXT)")
        conn.execute("CREATE INDEX items_sku ON items(sku)")
        conn.execute("CREATE VIEW skus AS SELECT sku FROM items")
        conn.execute("INSERT INTO items(sku) SELECT 'x' || value FROM " + series(100))
    path = f"/api/v1/pdbs/{acme.pdb_id}/clone"
    key = {"Idempotency-Key": "meta-clone-1"}
    first = acme.call("POST", path, {"target_name": "ACME_META", "clone_type": "metadata_only"}, headers=key)
    again = acme.call("POST", path, {"target_name": "ACME_META", "clone_type": "metadata_only"}, headers=key)
    assert first.status == again.status == 202 and again.json["job_id"] == first.json["job_id"]
    assert again.headers.get("idempotent-replayed") == "true"
    job = wait_job(daemon, first.json["job_id"])
    assert job["status"] == "completed", job
    acme.call("POST", f"/api/v1/pdbs/{job['target_pdb_id']}/open", {"mode": "READ_WRITE"})
    with acme.connect("ACME_META") as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        assert {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")} >= {"items", "items_sku", "skus"}
    # Errors with the spec's codes.
    assert acme.call("POST", "/api/v1/pdbs/pdb_nope/clone", {"target_name": "X1"}).error_code == "PDB_NOT_FOUND"
    assert acme.call("POST", path, {"target_name": "ACME_META"}).error_code == "CONFLICT"
    assert acme.call("POST", path, {"target_name": "Y1", "clone_type": "weird"}).status == 400
    snap = acme.call("POST", path, {"target_name": "SNAP_LIVE", "clone_type": "snapshot"})
    assert snap.status == 400 and snap.error_code == "INVALID_STATE"
    assert acme.call("GET", "/api/v1/jobs/clone_job_nope").status == 404
    other = Tenant(daemon, "othermeta")
    foreign = daemon.request("GET", f"/api/v1/jobs/{first.json['job_id']}", token=daemon.token("tenant_admin", other.tenant_id))
    assert foreign.status == 404  # another tenant's job does not exist for it
    # Cancel: a big hot clone stopped early leaves no PDB and no staging.
    with acme.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE big(b BLOB)")
        conn.execute("INSERT INTO big SELECT randomblob(4000) FROM " + series(5000))
    started = acme.call("POST", path, {"target_name": "ACME_CANCEL", "clone_type": "hot"}).json
    cancelled = acme.call("POST", f"/api/v1/jobs/{started['job_id']}/cancel", {})
    job = wait_job(daemon, started["job_id"])
    if cancelled.status == 200:
        assert job["status"] == "cancelled" and job["error"]
        assert acme.call("GET", f"/api/v1/pdbs/{job['target_pdb_id']}").status == 404
    else:  # it finished first: cancel of a finished job is INVALID_STATE
        assert cancelled.error_code == "INVALID_STATE" and job["status"] == "completed"
    staging = os.path.join(daemon.data_dir, "staging")
    wait_for(lambda: os.listdir(staging) == [], 10, what="staging empty")


def test_unplug_and_plug_round_trip(daemon):
    acme = Tenant(daemon, "acmeplug")
    with acme.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger(id INTEGER PRIMARY KEY, amount INTEGER)")
        conn.execute("INSERT INTO ledger(amount) SELECT value FROM " + series(5000))
    unplug = f"/api/v1/pdbs/{acme.pdb_id}/unplug"
    assert acme.call("POST", unplug, {"xml_path": "acme.xml"}).error_code == "INVALID_STATE"  # still open
    assert acme.call("POST", f"/api/v1/pdbs/{acme.pdb_id}/close", {"mode": "IMMEDIATE"}).status == 200
    for bad in ("../acme.xml", "/etc/acme.xml", "a/../../b.xml"):
        assert acme.call("POST", unplug, {"xml_path": bad}).status == 400, bad
    roots = os.path.join(daemon.data_dir, "exports")
    os.makedirs(roots, exist_ok=True)
    os.symlink("/tmp", os.path.join(roots, "escape"))
    assert acme.call("POST", unplug, {"xml_path": "escape/acme.xml"}).status == 400
    answer = acme.call("POST", unplug, {"xml_path": "acme.xml", "keep_datafiles": True})
    assert answer.status == 200, answer.text
    assert answer.json["state"] == "unplugged" and answer.json["xml_manifest"] == os.path.join(os.path.realpath(roots), "acme.xml")
    assert answer.json["size_mb"] > 0
    assert acme.call("POST", unplug, {"xml_path": "acme.xml"}).status == 400  # never overwrites a manifest
    plug = "/api/v1/pdbs/plug"
    other = Tenant(daemon, "otherplug")
    foreign = daemon.request("POST", plug, json={"xml_path": "acme.xml", "pdb_name": "STOLEN", "dry_run": True},
                             token=daemon.token("tenant_admin", other.tenant_id))
    assert foreign.status == 400 and "violations" not in foreign.text  # another tenant's manifest: not even checked
    dry = acme.call("POST", plug, {"xml_path": "acme.xml", "dry_run": True})
    assert dry.status == 200 and any("already plugged" in v["message"] for v in dry.json["violations"])
    assert set(dry.json) == {"violations"}
    refused = acme.call("POST", plug, {"xml_path": "acme.xml", "pdb_name": acme.pdb_name})
    assert refused.status == 400 and refused.json["error"]["details"]["violations"]
    clean = acme.call("POST", plug, {"xml_path": "acme.xml", "pdb_name": "ACME_RESTORED", "dry_run": True})
    assert clean.json == {"violations": []}
    plugged = acme.call("POST", plug, {"xml_path": "acme.xml", "pdb_name": "ACME_RESTORED", "copy_datafiles": True},
                        headers={"Idempotency-Key": "plug-1"})
    assert plugged.status == 201, plugged.text
    assert plugged.json["state"] == "mounted" and plugged.json["pdb_name"] == "ACME_RESTORED"
    replay = acme.call("POST", plug, {"xml_path": "acme.xml", "pdb_name": "ACME_RESTORED", "copy_datafiles": True},
                       headers={"Idempotency-Key": "plug-1"})
    assert replay.status == 201 and replay.json["pdb_id"] == plugged.json["pdb_id"]
    assert acme.call("POST", f"/api/v1/pdbs/{plugged.json['pdb_id']}/open", {"mode": "READ_WRITE"}).status == 200
    with acme.connect("ACME_RESTORED") as conn:
        assert conn.execute("SELECT count(*), sum(amount) FROM ledger").fetchone() == (5000, 5000 * 5001 // 2)
    # A tampered datafile is an ERROR violation.
    with open(os.path.join(daemon.data_dir, "pdbs", acme.pdb_id, "users.db"), "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    tampered = acme.call("POST", plug, {"xml_path": "acme.xml", "pdb_name": "ACME_T", "dry_run": True})
    assert any(v["severity"] == "ERROR" and "SHA-256" in v["message"] for v in tampered.json["violations"])


def ledger_pdb(daemon, name: str, rows: int) -> "Tenant":
    tenant = Tenant(daemon, name)
    with tenant.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger(id INTEGER PRIMARY KEY, amount INTEGER, note TEXT)")
        conn.execute("INSERT INTO ledger(amount, note) SELECT value, hex(randomblob(50)) FROM " + series(rows))
        tenant.rows = conn.execute("SELECT id, amount, note FROM ledger ORDER BY id").fetchall()
    assert tenant.call("POST", f"/api/v1/pdbs/{tenant.pdb_id}/close", {"mode": "IMMEDIATE"}).status == 200
    return tenant


def open_and_read(tenant: "Tenant", pdb_id: str, pdb_name: str) -> list:
    assert tenant.call("POST", f"/api/v1/pdbs/{pdb_id}/open", {"mode": "READ_WRITE"}).status == 200
    with tenant.connect(pdb_name) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return conn.execute("SELECT id, amount, note FROM ledger ORDER BY id").fetchall()


def test_unplug_moving_datafiles_on_one_filesystem_then_plug_in_place(daemon):
    """keep_datafiles false, same filesystem: the datafiles are hard-linked beside the
    manifest, the PDB's folder leaves the data dir, a restart keeps it that way, and an
    in-place plug serves the same rows from them (then the export folder is gone)."""
    acme = ledger_pdb(daemon, "acmemove", 3000)
    exports = os.path.realpath(os.path.join(daemon.data_dir, "exports"))
    folder = os.path.join(daemon.data_dir, "pdbs", acme.pdb_id)
    inode = os.stat(os.path.join(folder, "users.db")).st_ino
    unplug = f"/api/v1/pdbs/{acme.pdb_id}/unplug"
    assert acme.call("POST", unplug, {"xml_path": "m/acme.xml", "keep_datafiles": "no"}).status == 400
    os.makedirs(os.path.join(exports, "taken_datafiles"))
    taken = acme.call("POST", unplug, {"xml_path": "taken.xml", "keep_datafiles": False})
    assert taken.status == 400 and "taken_datafiles already exists" in taken.text  # never into an existing folder
    assert not os.path.exists(os.path.join(exports, "taken.xml"))
    answer = acme.call("POST", unplug, {"xml_path": "m/acme.xml", "keep_datafiles": False})
    assert answer.status == 200, answer.text
    moved = os.path.join(exports, "m", "acme_datafiles")
    assert answer.json["xml_manifest"] == os.path.join(exports, "m", "acme.xml") and answer.json["keep_datafiles"] is False
    assert answer.json["datafiles_dir"] == moved and answer.json["method"] == "link"
    assert not os.path.exists(folder), "nothing of the PDB stays in the data dir"
    assert sorted(os.listdir(moved)) == ["system.db", "users.db"]
    assert os.stat(os.path.join(moved, "users.db")).st_ino == inode  # moved, not copied
    assert os.listdir(os.path.join(daemon.data_dir, "staging")) == []
    daemon.restart()  # startup reconcile must not take the missing folder for a lost PDB
    assert acme.call("GET", f"/api/v1/pdbs/{acme.pdb_id}").json["state"] == "unplugged"
    assert sorted(os.listdir(moved)) == ["system.db", "users.db"]
    dry = acme.call("POST", "/api/v1/pdbs/plug", {"xml_path": "m/acme.xml", "copy_datafiles": False, "dry_run": True})
    assert dry.json == {"violations": []}
    plugged = acme.call("POST", "/api/v1/pdbs/plug", {"xml_path": "m/acme.xml", "pdb_name": "ACME_BACK",
                                                      "copy_datafiles": False})
    assert plugged.status == 201, plugged.text
    assert not os.path.exists(moved), "an in-place plug takes the files and their folder"
    assert os.stat(os.path.join(daemon.data_dir, "pdbs", plugged.json["pdb_id"], "users.db")).st_ino == inode
    assert open_and_read(acme, plugged.json["pdb_id"], "ACME_BACK") == acme.rows
    assert acme.call("GET", f"/api/v1/pdbs/{acme.pdb_id}").json["state"] == "dropped"  # the unplugged record retired


def test_unplug_moving_datafiles_to_another_filesystem_then_plug_copies(daemon):
    """keep_datafiles false into an export root on tmpfs: copied, fsynced, checked against
    the manifest's SHA-256, removed from the data dir; plug with copy_datafiles and then
    in place (a copy again, across filesystems) both serve the same rows."""
    acme = ledger_pdb(daemon, "acmeshm", 2000)
    other_filesystem_root = daemon.other_root
    folder = os.path.join(daemon.data_dir, "pdbs", acme.pdb_id)
    xml = os.path.join(other_filesystem_root, "acme.xml")
    answer = acme.call("POST", f"/api/v1/pdbs/{acme.pdb_id}/unplug", {"xml_path": xml, "keep_datafiles": False})
    assert answer.status == 200, answer.text
    moved = os.path.join(other_filesystem_root, "acme_datafiles")
    assert answer.json["method"] == "copy" and answer.json["datafiles_dir"] == moved
    assert not os.path.exists(folder) and sorted(os.listdir(moved)) == ["system.db", "users.db"]
    plug = "/api/v1/pdbs/plug"
    copied = acme.call("POST", plug, {"xml_path": xml, "pdb_name": "ACME_SHM_COPY", "copy_datafiles": True})
    assert copied.status == 201, copied.text
    assert open_and_read(acme, copied.json["pdb_id"], "ACME_SHM_COPY") == acme.rows
    assert sorted(os.listdir(moved)) == ["system.db", "users.db"]  # a copy leaves the export as it was
    assert acme.call("POST", f"/api/v1/pdbs/{copied.json['pdb_id']}/close", {"mode": "IMMEDIATE"}).status == 200
    assert acme.call("DELETE", f"/api/v1/pdbs/{copied.json['pdb_id']}").status == 200  # its GUID is free again
    in_place = acme.call("POST", plug, {"xml_path": xml, "pdb_name": "ACME_SHM_BACK", "copy_datafiles": False})
    assert in_place.status == 201, in_place.text
    assert not os.path.exists(moved)
    assert open_and_read(acme, in_place.json["pdb_id"], "ACME_SHM_BACK") == acme.rows


def test_one_unplugged_set_plugs_once_even_when_two_plugs_race(daemon):
    acme = ledger_pdb(daemon, "acmerace", 200)
    assert acme.call("POST", f"/api/v1/pdbs/{acme.pdb_id}/unplug", {"xml_path": "race.xml"}).status == 200
    answers = {}

    def plug(name):
        answers[name] = acme.call("POST", "/api/v1/pdbs/plug", {"xml_path": "race.xml", "pdb_name": name})

    threads = [threading.Thread(target=plug, args=(name,)) for name in ("RACE_A", "RACE_B", "RACE_C")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = sorted(answer.status for answer in answers.values())
    assert statuses[0] == 201 and statuses[1:] in ([400, 400], [400, 409], [409, 409]), \
        {name: answer.text for name, answer in answers.items()}  # one GUID, one plugged PDB


def test_lockdown_profiles_and_common_users(daemon):
    acme = Tenant(daemon, "acmelock")
    profiles = "/api/v1/cdb/lockdown-profiles"
    spec = {"name": "TENANT_SAFE", "disabled_statements": ["DROP TABLE", "ALTER", "PRAGMA", "ATTACH"],
            "pragma_allow": ["table_info"], "disabled_features": ["recursive_cte"]}
    created = acme.call("POST", profiles, spec)
    assert created.status == 201 and created.json["rule_count"] > 4
    assert acme.call("POST", profiles, spec).error_code == "CONFLICT"
    assert acme.call("POST", profiles, {"name": "BAD", "disabled_statements": ["FROB"]}).status == 400
    assert [p["name"] for p in acme.call("GET", profiles).json["lockdown_profiles"]] == ["TENANT_SAFE"]
    with acme.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE keep(x)")
        applied = acme.call("POST", f"/api/v1/pdbs/{acme.pdb_id}/lockdown", {"profile_name": "TENANT_SAFE"})
        assert applied.status == 200 and applied.json["lockdown_profile"] == "TENANT_SAFE"
        with pytest.raises(psycopg.Error) as denied:  # the live session is locked down at once
            conn.execute("DROP TABLE keep")
        assert denied.value.sqlstate == "42501" and "TENANT_SAFE" in str(denied.value)
        assert conn.execute("PRAGMA table_info(keep)").fetchall()
    assert acme.call("GET", f"{profiles}/TENANT_SAFE").json["applied_to"] == [acme.pdb_id]
    assert acme.call("DELETE", f"{profiles}/TENANT_SAFE").error_code == "CONFLICT"
    assert acme.call("POST", f"/api/v1/pdbs/{acme.pdb_id}/lockdown", {"profile_name": None}).status == 200
    assert acme.call("DELETE", f"{profiles}/TENANT_SAFE").status == 200
    assert acme.call("GET", f"{profiles}/TENANT_SAFE").status == 404

    users = "/api/v1/cdb/common-users"
    assert acme.call("POST", users, {"username": "ops", "password": "ops-password-1"}).status == 400
    made = acme.call("POST", users, {"username": "C##OPS", "password": "ops-password-1"})
    assert made.status == 201 and acme.pdb_id in made.json["granted_to"]
    assert "ops-password-1" not in acme.call("GET", users).text
    with acme.connect(user="C##OPS", password="ops-password-1") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    later = Tenant(daemon, "acmelater")  # created after the common user
    with later.connect(user="C##OPS", password="ops-password-1") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
