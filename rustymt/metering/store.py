"""Metering records in the catalog: insert, range reads, rollups, retention.

Three resolutions live in one table (`resolution` 0 = raw sample, 60, 3600).
A rollup folds every source row of a finished bucket into one row of the
next resolution and deletes the sources in the same transaction, so at any
time each instant is covered by rows of exactly one resolution and a sum
over all rows of a range counts nothing twice (billing relies on it).

Size is bounded: raw rows live `raw_retention_seconds`, minute rows
`minute_retention_seconds`, hour rows `hour_retention_days`; with T tenants
and interval i that is at most T * (raw/i + minute/60 + hours) rows.

SQL only, on the caller's connection and transaction (Catalog.write/read).
"""
from __future__ import annotations

import sqlite3
from typing import Any, Iterable

RAW, MINUTE, HOUR = 0, 60, 3600
RESOLUTION_NAMES = {RAW: "raw", MINUTE: "1m", HOUR: "1h"}

SUMMED = ("cpu_seconds", "read_ops", "write_ops", "network_bytes_in", "network_bytes_out", "statements", "api_requests")
TIME_WEIGHTED = ("memory_mb_avg", "storage_gb")
PEAKS = ("memory_mb_peak", "peak_connections")
VALUE_FIELDS = SUMMED + TIME_WEIGHTED + PEAKS
COLUMNS = ("tenant_id", "resolution", "period_start", "period_end", "tier") + VALUE_FIELDS


def insert(conn: sqlite3.Connection, records: Iterable[dict[str, Any]]) -> None:
    marks = ", ".join(f":{name}" for name in COLUMNS)
    conn.executemany(f"INSERT OR REPLACE INTO metering_records ({', '.join(COLUMNS)}) VALUES ({marks})",
                     [{name: record.get(name, 0) for name in COLUMNS} for record in records])


def in_range(conn: sqlite3.Connection, tenant_id: str, start: float, end: float, limit: int) -> list[dict[str, Any]]:
    """Rows overlapping [start, end), oldest first, at most `limit`."""
    rows = conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM metering_records WHERE tenant_id = ? AND period_end > ? AND period_start < ? "
        "ORDER BY period_start, resolution LIMIT ?", (tenant_id, start, end, limit))
    return [dict(row) for row in rows]


def merge(rows: list[dict[str, Any]], resolution: int, bucket_start: float) -> dict[str, Any]:
    """Rows of one tenant and bucket -> one row of `resolution` (sums, time-weighted means, peaks)."""
    first = rows[0]
    merged: dict[str, Any] = {"tenant_id": first["tenant_id"], "resolution": resolution, "period_start": bucket_start,
                              "period_end": bucket_start + resolution, "tier": min(rows, key=lambda r: r["period_start"])["tier"]}
    seconds = sum(max(0.0, r["period_end"] - r["period_start"]) for r in rows)
    for name in SUMMED:
        merged[name] = sum(r[name] for r in rows)
    for name in TIME_WEIGHTED:
        merged[name] = (sum(r[name] * max(0.0, r["period_end"] - r["period_start"]) for r in rows) / seconds
                        if seconds else 0.0)
    for name in PEAKS:
        merged[name] = max(r[name] for r in rows)
    return merged


def roll_up(conn: sqlite3.Connection, source: int, target: int, before: float) -> int:
    """Fold `source` rows of buckets of `target` seconds that end by `before`; returns rows folded."""
    cutoff = (before // target) * target  # only whole buckets
    rows = [dict(row) for row in conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM metering_records WHERE resolution = ? AND period_start < ?", (source, cutoff))]
    if not rows:
        return 0
    buckets: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        buckets.setdefault((row["tenant_id"], (row["period_start"] // target) * target), []).append(row)
    merged = []
    for (tenant_id, bucket), members in buckets.items():
        existing = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM metering_records WHERE tenant_id = ? AND resolution = ? "
                                "AND period_start = ?", (tenant_id, target, bucket)).fetchone()
        if existing is not None:  # a bucket already partly folded (a restart mid-bucket)
            members = members + [dict(existing)]
        merged.append(merge(members, target, bucket))
    conn.execute("DELETE FROM metering_records WHERE resolution = ? AND period_start < ?", (source, cutoff))
    insert(conn, merged)
    return len(rows)


def prune(conn: sqlite3.Connection, resolution: int, before: float) -> int:
    return conn.execute("DELETE FROM metering_records WHERE resolution = ? AND period_end <= ?", (resolution, before)).rowcount


# ---- tier log (billing prorates base fees with it)


def log_tier(conn: sqlite3.Connection, tenant_id: str, tier: str, effective_at: float) -> None:
    conn.execute("INSERT INTO billing_tier_log (tenant_id, tier, effective_at) VALUES (?, ?, ?)", (tenant_id, tier, effective_at))


def tier_log(conn: sqlite3.Connection, tenant_id: str) -> list[tuple[str, float]]:
    rows = conn.execute("SELECT tier, effective_at FROM billing_tier_log WHERE tenant_id = ? ORDER BY effective_at, seq",
                        (tenant_id,))
    return [(row[0], row[1]) for row in rows]
