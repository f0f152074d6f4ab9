"""Clones, unplug/plug, lockdown profiles and common users against a real
instance process, with the data checked through psycopg on the tenant port.

These drive the engine-level functions (rustymt.engine.clone / manifest /
lockdown / common_users) the lifecycle service is built on; the REST layer
needs the PDB service of the daemon branch."""
from __future__ import annotations

import os
import threading

import psycopg
import pytest

from rustymt._native import _core
from rustymt.engine import clone, common_users, lockdown, manifest, scram, storage
from rustymt.engine.clone import CloneCancelled, CloneError, Progress
from tests.conftest import wait_for
from tests.engine.harness import USER, USER_PASSWORD, Engine, connect

_slots = iter(range(1, 200))


def series(n: int) -> str:
    """A row source of value = 1..n (SQLite has no generate_series built in)."""
    return f"(WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < {n}) SELECT value FROM s)"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = Engine(str(tmp_path_factory.mktemp("lifecycle")))
    yield engine
    engine.stop()


def tenant(engine, name):
    slot = next(_slots)
    tenant_id, pdb_id, pdb_name = f"t_{name}", f"p_{name}", f"PDB_{name.upper()}"
    engine.create_pdb(pdb_id, pdb_name)
    port = engine.attach(tenant_id, slot)
    engine.open(pdb_id, tenant_id, pdb_name)
    return port, tenant_id, pdb_id, pdb_name


def staging_left(engine) -> list[str]:
    root = storage.staging_dir(engine.data_dir)
    return os.listdir(root) if os.path.isdir(root) else []


def dictionary_info(folder: str) -> dict:
    return storage.read_dictionary(folder)["info"]


def test_hot_clone_under_concurrent_inserts_is_one_instant(engine):
    port, tenant_id, pdb_id, name = tenant(engine, "hot")
    with connect(port, name, autocommit=True) as conn:
        conn.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, payload TEXT)")
        conn.execute("INSERT INTO events(payload) SELECT hex(randomblob(200)) FROM " + series(20000))
    stop = threading.Event()
    inserted = [0]

    def load():
        with connect(port, name, autocommit=True) as writer:
            while not stop.is_set():
                writer.execute("INSERT INTO events(payload) VALUES (hex(randomblob(200)))")
                inserted[0] += 1

    loader = threading.Thread(target=load)
    loader.start()
    try:
        wait_for(lambda: inserted[0] >= 20, 30, what="insert load running")
        reports = []
        source = storage.pdb_dir(engine.data_dir, pdb_id)
        stage, facts = clone.clone_pdb(engine.data_dir, source, "p_hot_copy", "PDB_HOT_COPY", "hot",
                                       progress=Progress(clone.source_bytes(source), lambda p, b: reports.append((p, b))),
                                       pages_per_step=16)
        during = inserted[0]
        wait_for(lambda: inserted[0] >= during + 20, 30, what="inserts continuing after the clone")
    finally:
        stop.set()
        loader.join(30)
    assert len(reports) > 10 and [p for p, _ in reports] == sorted(p for p, _ in reports)
    assert reports[-1][0] == 1.0 and reports[-1][1] > 20000 * 200
    assert facts["method"] == "backup"
    # One instant: ids are 1..N without a hole (each insert is its own transaction).
    copy = _core.Connection(os.path.join(stage, "users.db"), readonly=True)
    try:
        assert storage.execute(copy, "PRAGMA integrity_check") == [("ok",)]
        count, top = storage.execute(copy, "SELECT count(*), max(id) FROM events")[0]
    finally:
        copy.close()
    assert count == top and 20000 < count < 20000 + inserted[0]
    folder = storage.publish(engine.data_dir, stage, "p_hot_copy")
    assert staging_left(engine) == []
    info, source_info = dictionary_info(folder), dictionary_info(source)
    assert info["pdb_id"] == "p_hot_copy" and info["guid"] != source_info["guid"]
    engine.open("p_hot_copy", tenant_id, "PDB_HOT_COPY")
    with connect(port, "PDB_HOT_COPY") as conn:  # the source's users log in to the clone
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == count
    with connect(port, name) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] > count


def test_hot_clone_cancel_leaves_nothing(engine):
    port, _tenant_id, pdb_id, name = tenant(engine, "cancel")
    with connect(port, name, autocommit=True) as conn:
        conn.execute("CREATE TABLE t(x)")
        conn.execute("INSERT INTO t SELECT randomblob(1000) FROM " + series(5000))
    steps = [0]

    def cancelled():
        steps[0] += 1
        return steps[0] > 5

    source = storage.pdb_dir(engine.data_dir, pdb_id)
    with pytest.raises(CloneCancelled):
        clone.clone_pdb(engine.data_dir, source, "p_cancel_copy", "X", "hot",
                        progress=Progress(clone.source_bytes(source), None, cancelled), pages_per_step=4)
    assert staging_left(engine) == []
    assert not os.path.exists(storage.pdb_dir(engine.data_dir, "p_cancel_copy"))


def test_metadata_only_clone_has_schema_without_rows(engine):
    port, tenant_id, pdb_id, name = tenant(engine, "meta")
    with connect(port, name, autocommit=True) as conn:
        conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY AUTOINCREMENT, sku TEXT, qty INTEGER)")
        conn.execute("CREATE INDEX items_sku ON items(sku)")
        conn.execute("CREATE VIEW big AS SELECT * FROM items WHERE qty > 10")
        conn.execute("CREATE TABLE audit(sku TEXT)")
        conn.execute("CREATE TRIGGER items_audit AFTER INSERT ON items BEGIN INSERT INTO audit VALUES (new.sku); END")
        conn.execute("INSERT INTO items(sku, qty) SELECT 'S' || value, value FROM " + series(500))
    stage, facts = clone.clone_pdb(engine.data_dir, storage.pdb_dir(engine.data_dir, pdb_id),
                                   "p_meta_copy", "PDB_META_COPY", "metadata_only")
    assert facts["method"] == "metadata"
    storage.publish(engine.data_dir, stage, "p_meta_copy")
    engine.open("p_meta_copy", tenant_id, "PDB_META_COPY")
    with connect(port, "PDB_META_COPY", autocommit=True) as conn:
        objects = conn.execute("SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' "
                               "ORDER BY type, name").fetchall()
        assert objects == [("index", "items_sku"), ("table", "audit"), ("table", "items"),
                           ("trigger", "items_audit"), ("view", "big")]
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 0
        conn.execute("INSERT INTO items(sku, qty) VALUES ('new', 20)")  # the trigger works in the clone
        assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM big").fetchone()[0] == 1


def test_snapshot_clone_without_reflink_names_the_filesystem(engine):
    port, tenant_id, pdb_id, name = tenant(engine, "snapfs")
    with connect(port, name, autocommit=True) as conn:
        conn.execute("CREATE TABLE t(x)")
        conn.execute("INSERT INTO t SELECT value FROM " + series(1000))
    engine.request("close_pdb", {"pdb_id": pdb_id})
    source = storage.pdb_dir(engine.data_dir, pdb_id)
    point, fstype = clone.filesystem_of(source)
    probe_src, probe_dst = os.path.join(engine.data_dir, "probe-a"), os.path.join(engine.data_dir, "probe-b")
    with open(probe_src, "wb") as handle:
        handle.write(b"x" * 4096)
    try:
        clone.reflink(probe_src, probe_dst)
        pytest.skip(f"the data dir's filesystem {fstype} supports reflink; the failure path needs one without")
    except OSError:
        pass
    finally:
        for path in (probe_src, probe_dst):
            if os.path.exists(path):
                os.unlink(path)
    with pytest.raises(CloneError) as refused:
        clone.clone_pdb(engine.data_dir, source, "p_snapfs_copy", "PDB_SNAPFS_COPY", "snapshot")
    assert fstype in str(refused.value) and point in str(refused.value) and "allow_full_copy" in str(refused.value)
    assert staging_left(engine) == []
    stage, facts = clone.clone_pdb(engine.data_dir, source, "p_snapfs_copy", "PDB_SNAPFS_COPY", "snapshot",
                                   allow_full_copy=True)
    assert facts["method"] == "copy"
    storage.publish(engine.data_dir, stage, "p_snapfs_copy")
    engine.open("p_snapfs_copy", tenant_id, "PDB_SNAPFS_COPY")
    with connect(port, "PDB_SNAPFS_COPY") as conn:
        assert conn.execute("SELECT count(*), sum(x) FROM t").fetchone() == (1000, 500500)


def test_unplug_then_plug_serves_the_same_rows(engine, tmp_path):
    port, tenant_id, pdb_id, name = tenant(engine, "unplug")
    with connect(port, name, autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger(id INTEGER PRIMARY KEY, amount INTEGER)")
        conn.execute("INSERT INTO ledger(amount) SELECT value * 3 FROM " + series(3000))
    engine.request("set_lockdown", {"pdb_id": pdb_id, "profile": "P_UNPLUG",
                                    "rules": lockdown.rules_json(lockdown.compile_profile(
                                        {"disabled_statements": ["DROP TABLE"]}))})
    engine.request("close_pdb", {"pdb_id": pdb_id})
    folder = storage.pdb_dir(engine.data_dir, pdb_id)
    xml_path = str(tmp_path / "unplug.xml")
    answer = manifest.unplug(folder, xml_path, tenant_id)
    assert answer["xml_manifest"] == xml_path and answer["size_bytes"] > 3000 * 4
    parsed = manifest.read(xml_path)
    assert parsed["name"] == name and parsed["pdb_id"] == pdb_id and parsed["tenant_id"] == tenant_id
    assert parsed["guid"] == dictionary_info(folder)["guid"] and parsed["page_size"] in (4096, 8192)
    assert parsed["encoding"] == "UTF-8" and parsed["versions"]["sqlite"] == _core.sqlite_version()
    assert {d["name"] for d in parsed["datafiles"]} == {"system.db", "users.db"}
    assert all(len(d["sha256"]) == 64 for d in parsed["datafiles"])
    assert {u["name"] for u in parsed["users"]} >= {USER} and all(u["verifier"].startswith("SCRAM-SHA-256$")
                                                                 for u in parsed["users"])
    assert parsed["lockdown"]["profile"] == "P_UNPLUG"
    assert b"app-secret" not in open(xml_path, "rb").read()

    # Plugged while the original is still in the catalog: same name and GUID -> ERRORs.
    violations = manifest.check_plug_compatibility(parsed, parsed["datafiles_dir"], {name}, {parsed["guid"]})
    assert {v["severity"] for v in violations} == {"ERROR"} and len(violations) == 2
    assert all(v["message"] and v["action"] for v in violations)
    assert manifest.check_plug_compatibility(parsed, parsed["datafiles_dir"], set(), set(), "PDB_BACK") == []

    stage = manifest.stage_plug(engine.data_dir, parsed, parsed["datafiles_dir"], "p_plugged", "PDB_BACK",
                                copy_datafiles=True)
    storage.publish(engine.data_dir, stage, "p_plugged")
    assert manifest.check_plug_compatibility(parsed, parsed["datafiles_dir"], set(), set()) == []  # source intact
    engine.open("p_plugged", tenant_id, "PDB_BACK")
    with connect(port, "PDB_BACK", autocommit=True) as conn:
        assert conn.execute("SELECT count(*), sum(amount) FROM ledger").fetchone() == (3000, 3 * 3000 * 3001 // 2)
        with pytest.raises(psycopg.Error) as denied:
            conn.execute("DROP TABLE ledger")
        assert denied.value.sqlstate == "42501"
    plugged = dictionary_info(storage.pdb_dir(engine.data_dir, "p_plugged"))
    assert plugged["guid"] == parsed["guid"] and plugged["pdb_name"] == "PDB_BACK"


def test_plug_in_place_links_then_releases(engine, tmp_path):
    port, tenant_id, pdb_id, name = tenant(engine, "inplace")
    with connect(port, name, autocommit=True) as conn:
        conn.execute("CREATE TABLE t(x)")
        conn.execute("INSERT INTO t SELECT value FROM " + series(777))
    engine.request("close_pdb", {"pdb_id": pdb_id})
    folder = storage.pdb_dir(engine.data_dir, pdb_id)
    xml_path = os.path.join(engine.data_dir, "inplace.xml")
    manifest.unplug(folder, xml_path, tenant_id)
    parsed = manifest.read(xml_path)
    stage = manifest.stage_plug(engine.data_dir, parsed, folder, "p_inplace2", "PDB_INPLACE2", copy_datafiles=False)
    assert os.stat(os.path.join(stage, "users.db")).st_ino == os.stat(os.path.join(folder, "users.db")).st_ino
    published = storage.publish(engine.data_dir, stage, "p_inplace2")
    manifest.release_sources(published)
    assert not os.path.exists(os.path.join(folder, "users.db"))
    engine.open("p_inplace2", tenant_id, "PDB_INPLACE2")
    with connect(port, "PDB_INPLACE2") as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 777


def test_plug_validation_reports_tampering_and_hostile_xml(engine, tmp_path):
    port, tenant_id, pdb_id, name = tenant(engine, "tamper")
    with connect(port, name, autocommit=True) as conn:
        conn.execute("CREATE TABLE t(x)")
    engine.request("close_pdb", {"pdb_id": pdb_id})
    folder = storage.pdb_dir(engine.data_dir, pdb_id)
    xml_path = str(tmp_path / "t.xml")
    manifest.unplug(folder, xml_path, tenant_id)
    parsed = manifest.read(xml_path)
    with open(os.path.join(folder, "users.db"), "r+b") as handle:  # same size, other bytes
        handle.seek(200)
        handle.write(b"\xff\xfe")
    os.unlink(os.path.join(folder, "system.db"))
    violations = manifest.check_plug_compatibility(parsed, folder, set(), set(), "OTHER")
    messages = " | ".join(v["message"] for v in violations)
    assert "SHA-256" in messages and "system.db missing" in messages
    assert all(v["severity"] == "ERROR" for v in violations)
    for bad in (b"<not-xml", b"<pdb/>",
                b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                b'<pdb xmlns="urn:rustymt:pdb-manifest:1">&e;</pdb>',
                b'<pdb xmlns="urn:rustymt:pdb-manifest:1" format="1"><name>x</name></pdb>'):
        with pytest.raises(manifest.ManifestError):
            manifest.parse(bad)
    tampered = dict(parsed, datafiles=[dict(parsed["datafiles"][0], name="../../etc/passwd")])
    assert any("plain file name" in v["message"] for v in manifest.check_plug_compatibility(tampered, folder, set(), set()))


def test_lockdown_profile_enforced_on_live_session(engine):
    port, _tenant_id, pdb_id, name = tenant(engine, "lockdown")
    rules = lockdown.compile_profile({"disabled_statements": ["ATTACH", "DETACH", "PRAGMA", "CREATE TRIGGER",
                                                             "DROP TABLE", "ALTER"],
                                      "pragma_allow": ["table_info", "user_version"],
                                      "disabled_features": ["load_extension", "temp_files", "recursive_cte"]})
    with connect(port, name, autocommit=True) as conn:
        conn.execute("CREATE TABLE a(x)")
        conn.execute("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n < 3) SELECT * FROM c")
        engine.request("set_lockdown", {"pdb_id": pdb_id, "profile": "TENANT_STRICT",
                                        "rules": lockdown.rules_json(rules)})
        refused = {}
        for sql in ("DROP TABLE a", "ALTER TABLE a ADD COLUMN y", "CREATE TRIGGER tr AFTER INSERT ON a BEGIN SELECT 1; END",
                    "PRAGMA cache_size=10", "CREATE TEMP TABLE tt(x)",
                    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n < 3) SELECT * FROM c",
                    "ATTACH 'x.db' AS x"):
            try:
                conn.execute(sql)
                refused[sql] = None
            except psycopg.Error as exc:
                refused[sql] = exc.sqlstate
                assert "TENANT_STRICT" in str(exc), exc
        assert set(refused.values()) == {"42501"}, refused
        assert conn.execute("PRAGMA table_info(a)").fetchall()  # on the allow-list
        conn.execute("INSERT INTO a VALUES (1)")                 # not disabled
    with pytest.raises(ValueError, match="unknown statement"):
        lockdown.compile_profile({"disabled_statements": ["FROB"]})
    with pytest.raises(ValueError, match="always denied"):
        lockdown.compile_profile({"disabled_statements": ["PRAGMA"], "pragma_allow": ["journal_mode"]})


def test_common_user_authenticates_in_listed_and_later_pdbs(engine):
    port, tenant_id, pdb_id, name = tenant(engine, "common1")
    common = [{"username": "C##OPS", "verifier": scram.make_verifier("ops-secret-9"), "pdbs": None},
              {"username": "C##ONLY2", "verifier": scram.make_verifier("only-secret-9"), "pdbs": ["PDB_COMMON2"]}]
    assert common_users.sync(storage.pdb_dir(engine.data_dir, pdb_id), pdb_id, name, common) == 1
    with connect(port, name, user="C##OPS", password="ops-secret-9") as conn:  # live PDB, no reopen
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError):
        connect(port, name, user="C##ONLY2", password="only-secret-9")
    # A PDB created afterwards gets them when it comes into being.
    engine.create_pdb("p_common2", "PDB_COMMON2")
    assert common_users.sync(storage.pdb_dir(engine.data_dir, "p_common2"), "p_common2", "PDB_COMMON2", common) == 2
    engine.open("p_common2", tenant_id, "PDB_COMMON2")
    for user, password in (("C##OPS", "ops-secret-9"), ("C##ONLY2", "only-secret-9")):
        with connect(port, "PDB_COMMON2", user=user, password=password) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert common_users.is_common_name("c##x") and not common_users.is_common_name("ops")
    assert not common_users.is_common_name("C##")
    with connect(port, name, user=USER, password=USER_PASSWORD) as conn:  # local users unaffected
        assert conn.execute("SELECT 1").fetchone() == (1,)
