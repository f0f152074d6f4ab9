-- A catalog written by rustymt main at 9f33ae7 (schema version 3; jobs, idempotency, lockdown,
-- common users and placement tables created at runtime with IF NOT EXISTS): a daemon made a tenant,
-- a metadata-only clone (Idempotency-Key), a lockdown profile applied to a PDB, a common user and an
-- explicit placement, then stopped. Dumped with sqlite3 iterdump; tests/lifecycle/test_catalog_upgrade.py.
PRAGMA user_version = 3;
BEGIN TRANSACTION;
CREATE TABLE billing_tier_log (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id    TEXT NOT NULL,
        tier         TEXT NOT NULL,
        effective_at REAL NOT NULL             -- unix seconds
    );
INSERT INTO "billing_tier_log" VALUES(1,'tenant_64bc97074629','silver',1795737048.0);
CREATE TABLE cdb (
        id          INTEGER PRIMARY KEY CHECK (id = 1),  -- one CDB per data dir
        cdb_name    TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
INSERT INTO "cdb" VALUES(1,'CDB_PROD','2026-11-26T23:50:47Z');
CREATE TABLE common_users (
    username    TEXT PRIMARY KEY COLLATE NOCASE,   -- starts with C##
    verifier    TEXT NOT NULL,                     -- SCRAM-SHA-256$...; never the password
    pdbs        TEXT,                              -- JSON list of PDB ids/names; NULL = all
    created_at  TEXT NOT NULL
);
INSERT INTO "common_users" VALUES('C##LEGACY','SCRAM-SHA-256$4096:WLe9mV7Mr+jMMrPhu5ko7w==$L1h9z23PmgFCWCqmv0NVxWch5jecm+9RE9TGw2qvC6k=:irFMN6dVaprwNNqR+jFf1XgLZ02E0UZlCdo2qMt/EC0=',NULL,'2026-11-26T23:50:48Z');
CREATE TABLE idempotency (
    scope        TEXT NOT NULL,      -- who asked: tenant id or role of the principal
    key          TEXT NOT NULL,
    method       TEXT NOT NULL,
    path         TEXT NOT NULL,
    status_code  INTEGER NOT NULL,
    body         TEXT NOT NULL,      -- JSON
    created_at   TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
INSERT INTO "idempotency" VALUES('operator:cdb_admin','legacy-1','POST','/api/v1/pdbs/pdb_44cc52f38b20/clone',202,'{"job_id": "clone_job_c954002a16c0", "source_pdb": "PDB_LEGACY", "target_pdb": "LEGACY_META", "status": "in_progress", "estimated_completion": null, "target_pdb_id": "pdb_7807ace4f293", "clone_type": "metadata_only"}','2026-11-26T23:50:48Z');
CREATE TABLE instance_events (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        instance  TEXT NOT NULL,     -- "shared" or "dedicated-<tenant_id>"
        event     TEXT NOT NULL,     -- instance.started | instance.crashed | instance.restarted | instance.stopped
        data      TEXT NOT NULL,     -- JSON
        at        TEXT NOT NULL
    );
INSERT INTO "instance_events" VALUES(1,'shared','instance.started','{"instance": "shared", "pid": 5066, "restarts": 0}','2026-11-26T23:50:47Z');
INSERT INTO "instance_events" VALUES(2,'shared','instance.stopped','{"instance": "shared", "pid": 5066}','2026-11-26T23:50:49Z');
CREATE TABLE jobs (
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
INSERT INTO "jobs" VALUES('clone_job_c954002a16c0','clone','tenant_64bc97074629','pdb_44cc52f38b20','pdb_7807ace4f293','completed',1.0,45056,'2026-11-26T23:50:48Z',NULL,'{"source_pdb_name": "PDB_LEGACY", "target_name": "LEGACY_META", "clone_type": "metadata_only", "open_after_clone": false, "allow_full_copy": false}','{"pdb_id": "pdb_7807ace4f293", "pdb_name": "LEGACY_META", "method": "metadata", "bytes": 45056, "state": "mounted"}',NULL,0,'2026-11-26T23:50:48Z','2026-11-26T23:50:48Z','2026-11-26T23:50:48Z');
CREATE TABLE lockdown_profiles (
    name        TEXT PRIMARY KEY COLLATE NOCASE,
    spec        TEXT NOT NULL,                     -- JSON as given (disabled_statements, ...)
    rules       TEXT NOT NULL,                     -- JSON authorizer rules
    created_at  TEXT NOT NULL
);
INSERT INTO "lockdown_profiles" VALUES('LEGACY_SAFE','{"disabled_statements": ["ATTACH"]}','[{"action": "ATTACH", "object": null, "result": "deny"}]','2026-11-26T23:50:48Z');
CREATE TABLE metering_records (
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
CREATE TABLE pdb_files (              -- what the daemon knows of a PDB's folder
        pdb_id          TEXT PRIMARY KEY REFERENCES pdbs(pdb_id),
        guid            TEXT NOT NULL,
        datafiles_kept  INTEGER NOT NULL DEFAULT 0   -- 1: dropped (or terminated) with its files kept
    );
INSERT INTO "pdb_files" VALUES('pdb_44cc52f38b20','82A34690708A49778B783230159250B4',0);
INSERT INTO "pdb_files" VALUES('pdb_7807ace4f293','443B98311DAA44738355B527C8C148EC',0);
CREATE TABLE pdb_lockdown (
    pdb_id      TEXT PRIMARY KEY,
    profile     TEXT NOT NULL REFERENCES lockdown_profiles(name),
    applied_at  TEXT NOT NULL
);
INSERT INTO "pdb_lockdown" VALUES('pdb_44cc52f38b20','LEGACY_SAFE','2026-11-26T23:50:48Z');
CREATE TABLE pdbs (
        pdb_id      TEXT PRIMARY KEY,
        pdb_name    TEXT NOT NULL COLLATE NOCASE,
        tenant_id   TEXT REFERENCES tenants(tenant_id),
        state       TEXT NOT NULL,   -- created, mounted, open, closed, dropped
        open_mode   TEXT,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
INSERT INTO "pdbs" VALUES('pdb_44cc52f38b20','PDB_LEGACY','tenant_64bc97074629','open','READ_WRITE','2026-11-26T23:50:48Z','2026-11-26T23:50:48Z');
INSERT INTO "pdbs" VALUES('pdb_7807ace4f293','LEGACY_META','tenant_64bc97074629','mounted',NULL,'2026-11-26T23:50:48Z','2026-11-26T23:50:48Z');
CREATE TABLE sla_hours (
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
CREATE TABLE sla_maintenance (  -- declared maintenance: excluded from uptime
        window_id    INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id    TEXT NOT NULL,
        starts_at    REAL NOT NULL,             -- unix seconds
        ends_at      REAL NOT NULL,
        reason       TEXT NOT NULL,
        declared_by  TEXT NOT NULL,
        declared_at  TEXT NOT NULL
    );
CREATE TABLE sla_violations (
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
CREATE TABLE tenant_placement (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants(tenant_id),
    placement   TEXT NOT NULL CHECK (placement IN ('shared', 'dedicated')),  -- explicit choice
    updated_at  TEXT NOT NULL
);
INSERT INTO "tenant_placement" VALUES('tenant_64bc97074629','shared','2026-11-26T23:50:48Z');
CREATE TABLE tenant_slots (
        slot       INTEGER PRIMARY KEY CHECK (slot BETWEEN 1 AND 255),  -- native tenant id; 0 is the system
        tenant_id  TEXT NOT NULL UNIQUE REFERENCES tenants(tenant_id)
    );
INSERT INTO "tenant_slots" VALUES(1,'tenant_64bc97074629');
CREATE TABLE tenant_state_log (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id   TEXT NOT NULL REFERENCES tenants(tenant_id),
        old_state   TEXT,
        new_state   TEXT NOT NULL,
        reason      TEXT,
        at          TEXT NOT NULL
    );
INSERT INTO "tenant_state_log" VALUES(1,'tenant_64bc97074629',NULL,'active','created','2026-11-26T23:50:48Z');
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
INSERT INTO "tenants" VALUES('tenant_64bc97074629','legacy','admin@legacy.example','$scrypt$ln=14,r=8,p=1$59cQsV/bgMrp+iyUx9PtPQ$mt+CBebE3bztzGVgpd9RHKSzYCGxm15jB3l5nDxeD9A',NULL,'{}','silver','active','medium',0,200,4096,100,3000,250,100,42300,NULL,'2026-11-26T23:50:48Z','2026-11-26T23:50:48Z','2026-11-26T23:50:48Z');
CREATE TABLE tier_changes (
        tenant_id     TEXT PRIMARY KEY REFERENCES tenants(tenant_id),  -- one pending change per tenant
        new_tier      TEXT NOT NULL,
        effective_at  TEXT NOT NULL,  -- ISO-8601 UTC; applied by the daemon when due
        requested_at  TEXT NOT NULL
    );
CREATE TABLE webhook_outbox (
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
CREATE TABLE webhooks (
        webhook_id   TEXT PRIMARY KEY,
        tenant_id    TEXT,                     -- NULL: every tenant's events (CDB admins only)
        url          TEXT NOT NULL,
        events       TEXT NOT NULL,            -- JSON array of event types
        secret       TEXT NOT NULL,            -- sealed with <data_dir>/keys/webhooks.key, never plain
        created_at   TEXT NOT NULL,
        created_by   TEXT NOT NULL,
        deleted_at   TEXT
    );
CREATE UNIQUE INDEX tenants_live_name ON tenants(tenant_name) WHERE state != 'terminated';
CREATE UNIQUE INDEX tenants_live_admin ON tenants(admin_user) WHERE state != 'terminated';
CREATE UNIQUE INDEX tenants_port ON tenants(network_port) WHERE network_port IS NOT NULL;
CREATE INDEX tenants_list ON tenants(created_at, tenant_id);
CREATE UNIQUE INDEX pdbs_live_name ON pdbs(pdb_name) WHERE state != 'dropped';
CREATE INDEX tenant_state_log_tenant ON tenant_state_log(tenant_id, seq);
CREATE INDEX pdbs_list ON pdbs(created_at, pdb_id);
CREATE INDEX metering_records_time ON metering_records(resolution, period_start);
CREATE INDEX billing_tier_log_tenant ON billing_tier_log(tenant_id, effective_at);
CREATE INDEX sla_violations_tenant ON sla_violations(tenant_id, violation_id);
CREATE INDEX webhook_outbox_due ON webhook_outbox(state, next_attempt_at);
CREATE INDEX webhook_outbox_hook ON webhook_outbox(webhook_id, delivery_id);
CREATE INDEX sla_maintenance_time ON sla_maintenance(ends_at, starts_at);
CREATE INDEX jobs_status ON jobs(status);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('instance_events',2);
INSERT INTO "sqlite_sequence" VALUES('tenant_state_log',1);
INSERT INTO "sqlite_sequence" VALUES('billing_tier_log',1);
COMMIT;
