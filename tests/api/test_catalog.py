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


def test_read_now_is_a_read_only_connection_of_its_own(tmp_path):
    catalog = Catalog.open(str(tmp_path / "catalog.db"))
    try:
        with catalog.write() as conn:
            conn.execute("INSERT INTO cdb (id, cdb_name, created_at) VALUES (1, 'CDB1', 'x')")
        with catalog.read_now() as reader:
            assert reader.execute("SELECT cdb_name FROM cdb").fetchone()[0] == "CDB1"  # sees what was committed
            with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
                reader.execute("DELETE FROM cdb")  # the event loop's connection can never take the write lock
        with catalog.read() as conn:
            assert conn.execute("SELECT count(*) FROM cdb").fetchone()[0] == 1
    finally:
        catalog.close()


def counted_names_query(runs: list):
    """A read_cached query of the CDB names that records each time it runs."""
    def names(conn):
        runs.append(1)
        return [row[0] for row in conn.execute("SELECT cdb_name FROM cdb")]
    return names


def test_read_cached_answers_from_memory_until_any_connection_commits(tmp_path):
    path = str(tmp_path / "catalog.db")
    catalog = Catalog.open(path)
    runs = []
    names = counted_names_query(runs)

    def refuse(conn):
        runs.append(1)
        raise ServiceError("NOT_FOUND", "nothing here")

    try:
        assert catalog.read_cached("names", names) == [] and len(runs) == 1
        assert catalog.read_cached("names", names) == [] and len(runs) == 1  # nothing committed: not run again
        with catalog.write() as conn:  # this process's writer connection
            conn.execute("INSERT INTO cdb (id, cdb_name, created_at) VALUES (1, 'CDB1', 'x')")
        assert catalog.read_cached("names", names) == ["CDB1"] and len(runs) == 2
        other = sqlite3.connect(path, isolation_level=None)  # as another process would commit
        other.execute("UPDATE cdb SET cdb_name = 'CDB2'")
        other.close()
        assert catalog.read_cached("names", names) == ["CDB2"] and len(runs) == 3
        for _ in range(2):  # a refusal is never kept
            with pytest.raises(ServiceError):
                catalog.read_cached("missing", refuse)
        assert len(runs) == 5
    finally:
        catalog.close()


def test_read_cached_on_an_event_loop_checks_data_version_once_per_iteration(tmp_path):
    """On a loop thread the PRAGMA is read once per loop iteration: another process's commit
    shows from the next iteration on (a request that could know of it arrives in a later one),
    this process's own commits at once, even within the iteration."""
    path = str(tmp_path / "catalog.db")
    catalog = Catalog.open(path)
    runs = []
    names = counted_names_query(runs)

    async def scenario():
        assert catalog.read_cached("names", names) == [] and len(runs) == 1
        with catalog.write() as conn:  # this process: seen within the same iteration
            conn.execute("INSERT INTO cdb (id, cdb_name, created_at) VALUES (1, 'CDB1', 'x')")
        assert catalog.read_cached("names", names) == ["CDB1"] and len(runs) == 2
        other = sqlite3.connect(path, isolation_level=None)  # as another process would commit
        other.execute("UPDATE cdb SET cdb_name = 'CDB2'")
        other.close()
        assert catalog.read_cached("names", names) == ["CDB1"] and len(runs) == 2  # same iteration: kept
        await asyncio.sleep(0)  # the loop's next iteration
        assert catalog.read_cached("names", names) == ["CDB2"] and len(runs) == 3
        await asyncio.sleep(0)  # another iteration (a yield, not a wait): the PRAGMA is read again
        assert catalog.read_cached("names", names) == ["CDB2"] and len(runs) == 3  # nothing committed since

    try:
        asyncio.run(scenario())
    finally:
        catalog.close()
