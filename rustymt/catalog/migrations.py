"""Versioned, forward-only catalog migrations.

MIGRATIONS[i] takes the schema from version i to i+1. A migration is never
edited once released; a change is a new entry appended at the end. The
applied version lives in `PRAGMA user_version` and each step runs inside the
caller's transaction, so a crash mid-migration leaves the previous version.
A catalog newer than this code is refused rather than guessed at.
"""
from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: CDB identity, tenants with their quota vector and port, PDB rows,
    #    scheduled tier changes, tenant state history.
    """
    CREATE TABLE cdb (
        id          INTEGER PRIMARY KEY CHECK (id = 1),  -- one CDB per data dir
        cdb_name    TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE tenants (
        tenant_id        TEXT PRIMARY KEY,
        tenant_name      TEXT NOT NULL COLLATE NOCASE,
        admin_user       TEXT NOT NULL COLLATE NOCASE,
        admin_password   TEXT NOT NULL,           -- scrypt hash, never the password
        organization     TEXT,
        tags             TEXT NOT NULL DEFAULT '{}',  -- JSON object of strings
        service_tier     TEXT NOT NULL,
        state            TEXT NOT NULL,
        priority         TEXT NOT NULL,
        priority_is_explicit INTEGER NOT NULL DEFAULT 0,  -- 0: follows the tier's default
        cpu_percent      INTEGER NOT NULL,
        memory_mb        INTEGER NOT NULL,
        storage_gb       INTEGER NOT NULL,
        iops             INTEGER NOT NULL,
        network_mbps     INTEGER NOT NULL,
        max_connections  INTEGER NOT NULL,
        network_port     INTEGER,                  -- NULL once terminated (port freed)
        state_reason     TEXT,
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL,
        state_changed_at TEXT NOT NULL
    );
    -- Names, admin users and ports are unique among live tenants only, so a
    -- terminated tenant's name and port can be reused.
    CREATE UNIQUE INDEX tenants_live_name ON tenants(tenant_name) WHERE state != 'terminated';
    CREATE UNIQUE INDEX tenants_live_admin ON tenants(admin_user) WHERE state != 'terminated';
    CREATE UNIQUE INDEX tenants_port ON tenants(network_port) WHERE network_port IS NOT NULL;
    CREATE INDEX tenants_list ON tenants(created_at, tenant_id);

    CREATE TABLE pdbs (
        pdb_id      TEXT PRIMARY KEY,
        pdb_name    TEXT NOT NULL COLLATE NOCASE,
        tenant_id   TEXT REFERENCES tenants(tenant_id),
        state       TEXT NOT NULL,   -- created, mounted, open, closed, dropped
        open_mode   TEXT,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE UNIQUE INDEX pdbs_live_name ON pdbs(pdb_name) WHERE state != 'dropped';

    CREATE TABLE tier_changes (
        tenant_id     TEXT PRIMARY KEY REFERENCES tenants(tenant_id),  -- one pending change per tenant
        new_tier      TEXT NOT NULL,
        effective_at  TEXT NOT NULL,  -- ISO-8601 UTC; applied by the daemon when due
        requested_at  TEXT NOT NULL
    );
    CREATE TABLE tenant_state_log (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id   TEXT NOT NULL REFERENCES tenants(tenant_id),
        old_state   TEXT,
        new_state   TEXT NOT NULL,
        reason      TEXT,
        at          TEXT NOT NULL
    );
    CREATE INDEX tenant_state_log_tenant ON tenant_state_log(tenant_id, seq);
    """,
    # 2: engine wiring (daemon): each PDB's GUID and whether a dropped PDB's
    #    files were kept; native tenant slots (stable across
    #    restarts); engine instance events (start, crash, restart).
    """
    CREATE INDEX pdbs_list ON pdbs(created_at, pdb_id);
    CREATE TABLE pdb_files (              -- what the daemon knows of a PDB's folder
        pdb_id          TEXT PRIMARY KEY REFERENCES pdbs(pdb_id),
        guid            TEXT NOT NULL,
        datafiles_kept  INTEGER NOT NULL DEFAULT 0   -- 1: dropped (or terminated) with its files kept
    );
    CREATE TABLE tenant_slots (
        slot       INTEGER PRIMARY KEY CHECK (slot BETWEEN 1 AND 255),  -- native tenant id; 0 is the system
        tenant_id  TEXT NOT NULL UNIQUE REFERENCES tenants(tenant_id)
    );
    CREATE TABLE instance_events (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        instance  TEXT NOT NULL,     -- "shared" or "dedicated-<tenant_id>"
        event     TEXT NOT NULL,     -- instance.started | instance.crashed | instance.restarted | instance.stopped
        data      TEXT NOT NULL,     -- JSON
        at        TEXT NOT NULL
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(sqlite3.DatabaseError):
    pass


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing migrations inside the caller's transaction; return the version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(f"catalog schema version {version} is newer than this rustymt ({SCHEMA_VERSION})")
    for number in range(version, SCHEMA_VERSION):
        for statement in _statements(MIGRATIONS[number]):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number + 1}")
    return SCHEMA_VERSION


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would COMMIT our transaction)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    assert not pending.strip(), f"incomplete SQL in migration: {pending!r}"
    return statements
