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
    # 3 (metering branch): metering records at three resolutions, SLA hourly
    #    aggregates, violations and declared maintenance windows, the tier log
    #    billing prorates with, and webhooks with their durable delivery outbox. IF NOT EXISTS so that the
    #    order of parallel branches' appended migrations cannot break a merge.
    """
    CREATE TABLE IF NOT EXISTS metering_records (
        tenant_id         TEXT NOT NULL,
        resolution        INTEGER NOT NULL,  -- 0 = raw sample, 60 = 1 min, 3600 = 1 h rollup
        period_start      REAL NOT NULL,     -- unix seconds
        period_end        REAL NOT NULL,
        tier              TEXT NOT NULL,     -- tier in effect when sampled (bucket start for rollups)
        cpu_seconds       REAL NOT NULL DEFAULT 0,
        memory_mb_avg     REAL NOT NULL DEFAULT 0,  -- time-weighted over the period
        memory_mb_peak    REAL NOT NULL DEFAULT 0,
        storage_gb        REAL NOT NULL DEFAULT 0,  -- time-weighted over the period
        read_ops          INTEGER NOT NULL DEFAULT 0,
        write_ops         INTEGER NOT NULL DEFAULT 0,
        network_bytes_in  INTEGER NOT NULL DEFAULT 0,
        network_bytes_out INTEGER NOT NULL DEFAULT 0,
        peak_connections  INTEGER NOT NULL DEFAULT 0,
        statements        INTEGER NOT NULL DEFAULT 0,
        api_requests      INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant_id, resolution, period_start)
    );
    CREATE INDEX IF NOT EXISTS metering_records_time ON metering_records(resolution, period_start);
    CREATE TABLE IF NOT EXISTS billing_tier_log (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id    TEXT NOT NULL,
        tier         TEXT NOT NULL,
        effective_at REAL NOT NULL             -- unix seconds
    );
    CREATE INDEX IF NOT EXISTS billing_tier_log_tenant ON billing_tier_log(tenant_id, effective_at);
    CREATE TABLE IF NOT EXISTS sla_hours (
        tenant_id         TEXT NOT NULL,
        hour              INTEGER NOT NULL,    -- unix seconds, multiple of 3600
        up_seconds        REAL NOT NULL DEFAULT 0,
        down_seconds      REAL NOT NULL DEFAULT 0,
        excluded_seconds  REAL NOT NULL DEFAULT 0,  -- operator suspension, declared maintenance
        statements        INTEGER NOT NULL DEFAULT 0,
        server_errors     INTEGER NOT NULL DEFAULT 0,
        executing_ns      INTEGER NOT NULL DEFAULT 0,
        queued_ns         INTEGER NOT NULL DEFAULT 0,
        throttled_ns      INTEGER NOT NULL DEFAULT 0,   -- held back at the tenant's own caps
        latency_sketch    TEXT,                         -- JSON DDSketch of statement latencies (ms)
        PRIMARY KEY (tenant_id, hour)
    );
    CREATE TABLE IF NOT EXISTS sla_violations (
        violation_id   INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id      TEXT NOT NULL,
        violation_type TEXT NOT NULL,          -- uptime, latency, error_rate
        at             TEXT NOT NULL,          -- ISO-8601 Z
        severity       TEXT NOT NULL,          -- critical, high, medium, low
        description    TEXT NOT NULL,
        remediation    TEXT NOT NULL,
        current_value  REAL NOT NULL,
        sla_target     REAL NOT NULL,
        event_id       TEXT
    );
    CREATE INDEX IF NOT EXISTS sla_violations_tenant ON sla_violations(tenant_id, violation_id);
    CREATE TABLE IF NOT EXISTS webhooks (
        webhook_id   TEXT PRIMARY KEY,
        tenant_id    TEXT,                     -- NULL: every tenant's events (CDB admins only)
        url          TEXT NOT NULL,
        events       TEXT NOT NULL,            -- JSON array of event types
        secret       TEXT NOT NULL,            -- sealed with <data_dir>/keys/webhooks.key, never plain
        created_at   TEXT NOT NULL,
        created_by   TEXT NOT NULL,
        deleted_at   TEXT
    );
    CREATE TABLE IF NOT EXISTS webhook_outbox (
        delivery_id     INTEGER PRIMARY KEY AUTOINCREMENT,
        webhook_id      TEXT NOT NULL,
        event_id        TEXT NOT NULL,
        event_type      TEXT NOT NULL,
        body            TEXT NOT NULL,         -- the exact bytes sent (signed) on every attempt
        state           TEXT NOT NULL,         -- pending, delivered, dead, cancelled
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,         -- unix seconds
        created_at      REAL NOT NULL,
        last_attempt_at REAL,
        delivered_at    REAL,
        last_status     INTEGER,
        last_error      TEXT,
        UNIQUE (webhook_id, event_id)
    );
    CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox(state, next_attempt_at);
    CREATE INDEX IF NOT EXISTS webhook_outbox_hook ON webhook_outbox(webhook_id, delivery_id);
    CREATE TABLE IF NOT EXISTS sla_maintenance (  -- declared maintenance: excluded from uptime
        window_id    INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id    TEXT NOT NULL,
        starts_at    REAL NOT NULL,             -- unix seconds
        ends_at      REAL NOT NULL,
        reason       TEXT NOT NULL,
        declared_by  TEXT NOT NULL,
        declared_at  TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS sla_maintenance_time ON sla_maintenance(ends_at, starts_at);
    """,
    # 4: the tables rustymt <= 9f33ae7 created at runtime (CREATE TABLE IF NOT
    #    EXISTS on every start) now come from here: asynchronous jobs and
    #    Idempotency-Key answers, common users, lockdown profiles and the PDBs
    #    they apply to, explicit tenant placement. IF NOT EXISTS once more, and
    #    only here: a catalog written by those versions already has the tables
    #    (same DDL) at version 3, and adopts them as they are.
    """
    CREATE TABLE IF NOT EXISTS jobs (
        job_id               TEXT PRIMARY KEY,
        kind                 TEXT NOT NULL,           -- clone
        tenant_id            TEXT,
        source_pdb_id        TEXT,
        target_pdb_id        TEXT,
        status               TEXT NOT NULL,           -- pending, in_progress, completed, failed, cancelled
        progress             REAL NOT NULL DEFAULT 0,
        bytes_transferred    INTEGER NOT NULL DEFAULT 0,
        estimated_completion TEXT,
        error                TEXT,
        request              TEXT NOT NULL DEFAULT '{}',  -- JSON: what was asked
        result               TEXT,                        -- JSON: what was made
        stage                TEXT,                        -- staging folder being filled
        cancel_requested     INTEGER NOT NULL DEFAULT 0,
        created_at           TEXT NOT NULL,
        updated_at           TEXT NOT NULL,
        finished_at          TEXT
    );
    CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
    CREATE TABLE IF NOT EXISTS idempotency (
        scope        TEXT NOT NULL,      -- who asked: tenant id or role of the principal
        key          TEXT NOT NULL,
        method       TEXT NOT NULL,
        path         TEXT NOT NULL,
        status_code  INTEGER NOT NULL,
        body         TEXT NOT NULL,      -- JSON
        created_at   TEXT NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE TABLE IF NOT EXISTS common_users (
        username    TEXT PRIMARY KEY COLLATE NOCASE,   -- starts with C##
        verifier    TEXT NOT NULL,                     -- SCRAM-SHA-256$...; never the password
        pdbs        TEXT,                              -- JSON list of PDB ids/names; NULL = all
        created_at  TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS lockdown_profiles (
        name        TEXT PRIMARY KEY COLLATE NOCASE,
        spec        TEXT NOT NULL,                     -- JSON as given (disabled_statements, ...)
        rules       TEXT NOT NULL,                     -- JSON authorizer rules
        created_at  TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS pdb_lockdown (
        pdb_id      TEXT PRIMARY KEY,
        profile     TEXT NOT NULL REFERENCES lockdown_profiles(name),
        applied_at  TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS tenant_placement (
        tenant_id   TEXT PRIMARY KEY REFERENCES tenants(tenant_id),
        placement   TEXT NOT NULL CHECK (placement IN ('shared', 'dedicated')),  -- explicit choice
        updated_at  TEXT NOT NULL
    );
    """,
    # 5: where an unplugged PDB's datafiles went when unplug moved them out of
    #    the data dir (keep_datafiles false): the folder next to its manifest.
    #    NULL: they are in pdbs/<pdb_id> as always.
    """
    ALTER TABLE pdb_files ADD COLUMN datafiles_dir TEXT;
    """,
    # 6: the SHA-256 of the request an Idempotency-Key first answered, so a
    #    retry with another body is refused instead of replaying the first
    #    answer. NULL for answers kept before: those are not compared.
    """
    ALTER TABLE idempotency ADD COLUMN request_sha256 TEXT;
    """,
    # 7: a dropped PDB no longer holds its lockdown profile (drop now clears
    #    it): assignments left by drops before this version go. Lists are in
    #    creation order: created_at has whole seconds, so ties go by insertion
    #    (rowid), not by the random id; an index on created_at alone ends in
    #    the rowid and serves that order.
    """
    DELETE FROM pdb_lockdown WHERE pdb_id IN (SELECT pdb_id FROM pdbs WHERE state = 'dropped');
    DROP INDEX tenants_list;
    CREATE INDEX tenants_created ON tenants(created_at);
    DROP INDEX pdbs_list;
    CREATE INDEX pdbs_created ON pdbs(created_at);
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
