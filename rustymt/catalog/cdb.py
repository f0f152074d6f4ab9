"""The CDB identity row and PDB rows: SQL only (see catalog/tenants.py)."""
from __future__ import annotations

import sqlite3
from typing import Any

SEED_PDB = "PDB$SEED"


def ensure_cdb(conn: sqlite3.Connection, cdb_name: str, now: str) -> dict[str, Any]:
    """Create the CDB row on first start; afterwards the stored identity wins."""
    conn.execute("INSERT OR IGNORE INTO cdb (id, cdb_name, created_at) VALUES (1, ?, ?)", (cdb_name, now))
    return get_cdb(conn)


def get_cdb(conn: sqlite3.Connection) -> dict[str, Any] | None:
    row = conn.execute("SELECT cdb_name, created_at FROM cdb WHERE id = 1").fetchone()
    return dict(row) if row else None


def insert_pdb(conn: sqlite3.Connection, pdb_id: str, pdb_name: str, tenant_id: str | None, state: str, now: str) -> None:
    conn.execute(
        "INSERT INTO pdbs (pdb_id, pdb_name, tenant_id, state, open_mode, created_at, updated_at) VALUES (?, ?, ?, ?, NULL, ?, ?)",
        (pdb_id, pdb_name, tenant_id, state, now, now),
    )


def live_pdb_named(conn: sqlite3.Connection, pdb_name: str) -> dict[str, Any] | None:
    """The live PDB holding that name (names are unique in the CDB): its pdb_id and tenant_id."""
    row = conn.execute("SELECT pdb_id, tenant_id FROM pdbs WHERE pdb_name = ? AND state != 'dropped'",
                       (pdb_name,)).fetchone()
    return dict(row) if row else None


def pdbs_of_tenant(conn: sqlite3.Connection, tenant_id: str) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM pdbs WHERE tenant_id = ? ORDER BY created_at, rowid", (tenant_id,))
    return [dict(row) for row in rows]


def set_pdb_state(conn: sqlite3.Connection, pdb_id: str, state: str, now: str) -> None:
    conn.execute("UPDATE pdbs SET state = ?, open_mode = NULL, updated_at = ? WHERE pdb_id = ?", (state, now, pdb_id))


def count_pdbs(conn: sqlite3.Connection) -> dict[str, int]:
    """{'total': live PDBs, 'open': open ones}; the seed is not a row here."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE state != 'dropped'), count(*) FILTER (WHERE state = 'open') FROM pdbs"
    ).fetchone()
    return {"total": row[0], "open": row[1]}
