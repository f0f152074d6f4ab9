"""Tenant rows: SQL only, no policy. Every function runs on the caller's
connection inside the caller's transaction (see Catalog.write/read)."""
from __future__ import annotations

import json
import sqlite3
from typing import Any

from rustymt.model.tiers import QUOTA_FIELDS

LIVE = "state != 'terminated'"


def row_to_dict(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    record = dict(row)
    record["tags"] = json.loads(record["tags"])
    return record


def insert(conn: sqlite3.Connection, record: dict[str, Any]) -> None:
    record = {**record, "tags": json.dumps(record.get("tags") or {}, sort_keys=True)}
    columns = ", ".join(record)
    marks = ", ".join(f":{name}" for name in record)
    conn.execute(f"INSERT INTO tenants ({columns}) VALUES ({marks})", record)


def get(conn: sqlite3.Connection, tenant_id: str) -> dict[str, Any] | None:
    return row_to_dict(conn.execute("SELECT * FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone())


def get_live_by_name(conn: sqlite3.Connection, tenant_name: str) -> dict[str, Any] | None:
    return row_to_dict(conn.execute(f"SELECT * FROM tenants WHERE tenant_name = ? AND {LIVE}", (tenant_name,)).fetchone())


def get_live_by_admin(conn: sqlite3.Connection, admin_user: str) -> dict[str, Any] | None:
    return row_to_dict(conn.execute(f"SELECT * FROM tenants WHERE admin_user = ? AND {LIVE}", (admin_user,)).fetchone())


def page(conn: sqlite3.Connection, *, offset: int, limit: int, tier: str | None = None, state: str | None = None,
         tenant_id: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, one page) in creation order; None filters match all."""
    where, params = [], []
    for column, value in (("service_tier", tier), ("state", state), ("tenant_id", tenant_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    total = conn.execute(f"SELECT count(*) FROM tenants {clause}", params).fetchone()[0]
    rows = conn.execute(
        f"SELECT * FROM tenants {clause} ORDER BY created_at, rowid LIMIT ? OFFSET ?", [*params, limit, offset]
    ).fetchall()
    return total, [row_to_dict(row) for row in rows]


def update(conn: sqlite3.Connection, tenant_id: str, changes: dict[str, Any]) -> None:
    assert changes and "tenant_id" not in changes
    assignments = ", ".join(f"{name} = :{name}" for name in changes)
    conn.execute(f"UPDATE tenants SET {assignments} WHERE tenant_id = :tenant_id", {**changes, "tenant_id": tenant_id})


def used_ports(conn: sqlite3.Connection) -> set[int]:
    return {row[0] for row in conn.execute("SELECT network_port FROM tenants WHERE network_port IS NOT NULL")}


def live_cpu_quotas(conn: sqlite3.Connection, exclude: str | None = None) -> list[tuple[str, int]]:
    """(tier, cpu_percent) of every live tenant but `exclude`: input to admission control."""
    rows = conn.execute(f"SELECT service_tier, cpu_percent FROM tenants WHERE {LIVE} AND tenant_id != ?", (exclude or "",))
    return [(row[0], row[1]) for row in rows]


def quota_of(record: dict[str, Any]) -> dict[str, int]:
    return {name: record[name] for name in QUOTA_FIELDS}


def log_state(conn: sqlite3.Connection, tenant_id: str, old_state: str | None, new_state: str, reason: str | None, at: str) -> None:
    conn.execute(
        "INSERT INTO tenant_state_log (tenant_id, old_state, new_state, reason, at) VALUES (?, ?, ?, ?, ?)",
        (tenant_id, old_state, new_state, reason, at),
    )


def state_history(conn: sqlite3.Connection, tenant_id: str) -> list[tuple[str, str]]:
    """[(new_state, at)] oldest first."""
    rows = conn.execute("SELECT new_state, at FROM tenant_state_log WHERE tenant_id = ? ORDER BY seq", (tenant_id,))
    return [(row[0], row[1]) for row in rows]


# ---- scheduled tier changes


def schedule_tier_change(conn: sqlite3.Connection, tenant_id: str, new_tier: str, effective_at: str, requested_at: str) -> None:
    conn.execute(
        "INSERT INTO tier_changes (tenant_id, new_tier, effective_at, requested_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (tenant_id) DO UPDATE SET new_tier = excluded.new_tier, "
        "effective_at = excluded.effective_at, requested_at = excluded.requested_at",
        (tenant_id, new_tier, effective_at, requested_at),
    )


def cancel_tier_change(conn: sqlite3.Connection, tenant_id: str) -> None:
    conn.execute("DELETE FROM tier_changes WHERE tenant_id = ?", (tenant_id,))


def pending_tier_change(conn: sqlite3.Connection, tenant_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM tier_changes WHERE tenant_id = ?", (tenant_id,)).fetchone()
    return dict(row) if row else None


def due_tier_changes(conn: sqlite3.Connection, now: str) -> list[dict[str, Any]]:
    # ISO-8601 UTC strings of one fixed format compare like the instants they name.
    rows = conn.execute("SELECT * FROM tier_changes WHERE effective_at <= ? ORDER BY effective_at", (now,))
    return [dict(row) for row in rows]


def earliest_tier_change(conn: sqlite3.Connection) -> str | None:
    return conn.execute("SELECT min(effective_at) FROM tier_changes").fetchone()[0]
