"""The catalog: SQLite file settings, migrations, transactions, cross-process races."""
from __future__ import annotations

import asyncio
import os
import sqlite3
import stat

import pytest

from rustymt import config
from rustymt.catalog.db import Catalog, CatalogError
from rustymt.catalog.migrations import SCHEMA_VERSION
from rustymt.daemon import prepare_data_dir
from rustymt.events.bus import EventBus
from rustymt.service.authz import Principal
from rustymt.service.capacity import HostCapacity
from rustymt.service.errors import ServiceError
from rustymt.service.services import Services

ADMIN = Principal.from_claims({"roles": ["cdb_admin"]})


def test_new_catalog_is_wal_with_foreign_keys_at_the_latest_version(tmp_path):
    path = str(tmp_path / "catalog.db")
    catalog = Catalog.open(path)
    with catalog.read() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(sqlite3.IntegrityError):
        with catalog.write() as conn:
            conn.execute("INSERT INTO pdbs VALUES ('p', 'P', 'no_such_tenant', 'created', NULL, 'x', 'x')")
    catalog.close()
    Catalog.open(path).close()  # reopening migrates nothing and keeps the version


def test_a_failed_mutation_leaves_nothing_behind(tmp_path):
    catalog = Catalog.open(str(tmp_path / "catalog.db"))
    with pytest.raises(RuntimeError):
        with catalog.write() as conn:
            conn.execute("INSERT INTO cdb VALUES (1, 'CDB_X', 'now')")
            raise RuntimeError("half-way")
    with catalog.read() as conn:
        assert conn.execute("SELECT count(*) FROM cdb").fetchone()[0] == 0
    catalog.close()


def test_a_catalog_from_a_newer_rustymt_is_refused(tmp_path):
    path = str(tmp_path / "catalog.db")
    Catalog.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(CatalogError, match="newer"):
        Catalog.open(path)


def test_two_processes_racing_on_one_name_make_one_tenant(tmp_path):
    """Two service stacks with their own connections (as two daemons would have): the transaction decides."""
    settings = config.load(env={}, overrides={"server.data_dir": str(tmp_path / "data")})
    prepare_data_dir(settings).close()
    stacks = [Services(Catalog.open(os.path.join(settings.server.data_dir, "catalog.db")), settings, EventBus(),
                       HostCapacity(cpu_percent=800)) for _ in range(2)]

    async def race():
        attempts = [stack.tenants.create(ADMIN, tenant_name="contested", admin_user=f"u{i}@x", admin_password="long enough",
                                         service_tier="bronze")
                    for i in range(6) for stack in stacks]
        return await asyncio.gather(*attempts, return_exceptions=True)

    results = asyncio.run(race())
    winners = [r for r in results if isinstance(r, dict)]
    losers = [r for r in results if isinstance(r, ServiceError)]
    assert len(winners) == 1 and len(losers) == 11, results
    assert {error.code for error in losers} == {"TENANT_ALREADY_EXISTS"}
    for stack in stacks:
        stack.catalog.close()
