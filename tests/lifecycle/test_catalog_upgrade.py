"""A catalog written by rustymt main at 9f33ae7 — schema version 3, with the
jobs, idempotency, lockdown, common-user and placement tables made at runtime
(CREATE TABLE IF NOT EXISTS) — upgrades through the numbered migrations: the
version is current, every row is still there and served, and the schema is the
one a new catalog gets."""
from __future__ import annotations

import asyncio
import os
import sqlite3

from rustymt import config
from rustymt.catalog import placement as placement_rows
from rustymt.catalog.db import Catalog
from rustymt.catalog.migrations import SCHEMA_VERSION
from rustymt.events.bus import EventBus
from rustymt.service.authz import Principal
from rustymt.service.lifecycle import LifecycleService
from rustymt.service.pdbs import PdbService

DUMP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "catalog_v3_main.sql")


def old_catalog(path: str) -> None:
    conn = sqlite3.connect(path)
    with open(DUMP) as handle:
        conn.executescript(handle.read())
    conn.close()


def schema(path: str) -> dict:
    """Every table's columns, indexes and foreign keys, as SQLite reports them."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' "
                                             "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {table: {"columns": conn.execute(f"PRAGMA table_info({table})").fetchall(),
                        "indexes": sorted((r[1], r[2], r[3]) for r in conn.execute(f"PRAGMA index_list({table})")),
                        "foreign_keys": conn.execute(f"PRAGMA foreign_key_list({table})").fetchall()}
                for table in tables}
    finally:
        conn.close()


def test_main_catalog_upgrades_with_its_rows(tmp_path):
    path = str(tmp_path / "catalog.db")
    old_catalog(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (3,)
    assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)  # the runtime-made tables are there
    conn.close()

    catalog = Catalog.open(path)
    try:
        with catalog.read() as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            job = dict(conn.execute("SELECT * FROM jobs").fetchone())
            tenant_id = conn.execute("SELECT tenant_id FROM tenants").fetchone()[0]
            assert placement_rows.tenant(conn, tenant_id)["explicit_placement"] == "shared"
            assert tuple(conn.execute("SELECT count(*) FROM idempotency WHERE key = 'legacy-1'").fetchone()) == (1,)
            assert [tuple(r) for r in conn.execute("SELECT profile FROM pdb_lockdown")] == [("LEGACY_SAFE",)]
            assert tuple(conn.execute("SELECT count(*), count(datafiles_dir) FROM pdb_files").fetchone()) == (2, 0)
        settings = config.load(None, env={}, overrides={"server.data_dir": str(tmp_path)})
        lifecycle = LifecycleService(catalog, settings, EventBus(), PdbService(catalog, settings, EventBus()))
        admin = Principal.from_claims({"roles": ["cdb_admin"]})
        served = asyncio.run(lifecycle.get_job(admin, job["job_id"]))
        assert served["status"] == "completed" and served["target_pdb"] == "LEGACY_META"
        profiles = asyncio.run(lifecycle.list_lockdown_profiles(admin))["lockdown_profiles"]
        assert [(p["name"], p["applied_to"]) for p in profiles] == [("LEGACY_SAFE", [job["source_pdb_id"]])]
        users = asyncio.run(lifecycle.list_common_users(admin))["common_users"]
        assert [u["username"] for u in users] == ["C##LEGACY"]
    finally:
        catalog.close()
    Catalog.open(path).close()  # reopening migrates nothing more

    fresh = str(tmp_path / "fresh.db")
    Catalog.open(fresh).close()
    assert schema(path) == schema(fresh)
