"""Tenant placement rows: SQL only, no policy.

A tenant's engine instance is either the shared one or a dedicated one of its
own (inside its own cgroup). The tier decides by default (see
rustymt.service.hostbinding.default_placement); an operator's explicit choice
is stored here and wins until it is changed again. The table comes from
catalog migration 4 (rustymt.catalog.migrations).
"""
from __future__ import annotations

import sqlite3

PLACEMENTS = ("shared", "dedicated")


# What host enforcement needs of every live tenant, with the explicit placement (or NULL).
LIVE_TENANTS = """
SELECT t.tenant_id, t.tenant_name, t.service_tier, t.priority, t.state, t.cpu_percent, t.memory_mb, t.iops,
       t.network_mbps, t.network_port, p.placement AS explicit_placement
FROM tenants t LEFT JOIN tenant_placement p USING (tenant_id)
"""


def live_tenants(conn: sqlite3.Connection) -> list[dict]:
    return [dict(row) for row in conn.execute(LIVE_TENANTS + " WHERE t.state != 'terminated' ORDER BY t.tenant_id")]


def tenant(conn: sqlite3.Connection, tenant_id: str) -> dict | None:
    row = conn.execute(LIVE_TENANTS + " WHERE t.tenant_id = ?", (tenant_id,)).fetchone()
    return dict(row) if row is not None else None


def set_explicit(conn: sqlite3.Connection, tenant_id: str, placement: str | None, now: str) -> None:
    """Store an explicit placement; None goes back to the tier's default."""
    if placement is None:
        conn.execute("DELETE FROM tenant_placement WHERE tenant_id = ?", (tenant_id,))
    else:
        conn.execute("INSERT INTO tenant_placement (tenant_id, placement, updated_at) VALUES (?, ?, ?) "
                     "ON CONFLICT (tenant_id) DO UPDATE SET placement = excluded.placement, updated_at = excluded.updated_at",
                     (tenant_id, placement, now))
