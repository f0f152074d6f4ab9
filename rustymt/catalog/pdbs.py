"""PDB rows, native tenant slots and engine instance events: SQL only, no
policy. Every function runs on the caller's connection inside the caller's
transaction (see Catalog.write/read); PDB rows are created by
rustymt.catalog.cdb.insert_pdb."""
from __future__ import annotations

import json
import sqlite3
from typing import Any

LIVE = "state != 'dropped'"
MAX_SLOT = 255  # native slots 1..255; 0 is the system


SELECT = ("SELECT pdbs.*, pdb_files.guid, coalesce(pdb_files.datafiles_kept, 0) AS datafiles_kept, "
          "pdb_files.datafiles_dir FROM pdbs LEFT JOIN pdb_files USING (pdb_id)")


def get(conn: sqlite3.Connection, pdb_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"{SELECT} WHERE pdb_id = ?", (pdb_id,)).fetchone()
    return dict(row) if row else None


def get_by_name(conn: sqlite3.Connection, pdb_name: str) -> dict[str, Any] | None:
    """The live PDB of that name, else the most recent dropped one."""
    row = conn.execute(f"{SELECT} WHERE pdb_name = ? ORDER BY ({LIVE}) DESC, created_at DESC LIMIT 1",
                       (pdb_name,)).fetchone()
    return dict(row) if row else None


def insert_files(conn: sqlite3.Connection, pdb_id: str, guid: str) -> None:
    conn.execute("INSERT INTO pdb_files (pdb_id, guid) VALUES (?, ?)", (pdb_id, guid))


def page(conn: sqlite3.Connection, *, offset: int, limit: int, state: str | tuple[str, ...] | None = None,
         tenant_id: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, one page) in creation order; None filters match all,
    a tuple of states matches any of them."""
    where, params = [], []
    if state is not None:
        states = (state,) if isinstance(state, str) else state
        where.append(f"state IN ({', '.join('?' * len(states))})")
        params.extend(states)
    if tenant_id is not None:
        where.append("tenant_id = ?")
        params.append(tenant_id)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    total = conn.execute(f"SELECT count(*) FROM pdbs {clause}", params).fetchone()[0]
    rows = conn.execute(f"{SELECT} {clause} ORDER BY created_at, pdbs.rowid LIMIT ? OFFSET ?",
                        [*params, limit, offset]).fetchall()
    return total, [dict(row) for row in rows]


def set_state(conn: sqlite3.Connection, pdb_id: str, state: str, open_mode: str | None, now: str) -> None:
    conn.execute("UPDATE pdbs SET state = ?, open_mode = ?, updated_at = ? WHERE pdb_id = ?",
                 (state, open_mode, now, pdb_id))


def set_datafiles_kept(conn: sqlite3.Connection, pdb_id: str, kept: bool) -> None:
    conn.execute("INSERT INTO pdb_files (pdb_id, guid, datafiles_kept) VALUES (?, '', ?) "
                 "ON CONFLICT (pdb_id) DO UPDATE SET datafiles_kept = excluded.datafiles_kept", (pdb_id, int(kept)))


def set_datafiles_dir(conn: sqlite3.Connection, pdb_id: str, datafiles_dir: str | None) -> None:
    """Where an unplugged PDB's datafiles went (None: its own folder under pdbs/)."""
    conn.execute("UPDATE pdb_files SET datafiles_dir = ? WHERE pdb_id = ?", (datafiles_dir, pdb_id))


def guid_plugged(conn: sqlite3.Connection, guid: str) -> bool:
    """Whether a plugged-in PDB (live, not unplugged) has this GUID."""
    return conn.execute("SELECT 1 FROM pdbs JOIN pdb_files USING (pdb_id) WHERE guid = ? "
                        "AND state NOT IN ('dropped', 'unplugged')", (guid,)).fetchone() is not None


def live(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every PDB not dropped, oldest first (startup reconcile, instance re-apply)."""
    return [dict(row) for row in conn.execute(f"{SELECT} WHERE {LIVE} ORDER BY created_at, pdbs.rowid")]


def dropped_without_kept_files(conn: sqlite3.Connection) -> list[str]:
    """Dropped PDBs whose files were to be removed (startup finishes the removal)."""
    return [row[0] for row in conn.execute(f"{SELECT} WHERE state = 'dropped' AND coalesce(datafiles_kept, 0) = 0")]


def count_live(conn: sqlite3.Connection) -> int:
    return conn.execute(f"SELECT count(*) FROM pdbs WHERE {LIVE}").fetchone()[0]


# ---- native tenant slots


def slot_of(conn: sqlite3.Connection, tenant_id: str) -> int | None:
    row = conn.execute("SELECT slot FROM tenant_slots WHERE tenant_id = ?", (tenant_id,)).fetchone()
    return row[0] if row else None


def assign_slot(conn: sqlite3.Connection, tenant_id: str) -> int | None:
    """The tenant's slot, assigning the lowest free one; None when all are taken."""
    slot = slot_of(conn, tenant_id)
    if slot is not None:
        return slot
    used = {row[0] for row in conn.execute("SELECT slot FROM tenant_slots")}
    for slot in range(1, MAX_SLOT + 1):
        if slot not in used:
            conn.execute("INSERT INTO tenant_slots (slot, tenant_id) VALUES (?, ?)", (slot, tenant_id))
            return slot
    return None


def release_slot(conn: sqlite3.Connection, tenant_id: str) -> None:
    conn.execute("DELETE FROM tenant_slots WHERE tenant_id = ?", (tenant_id,))


# ---- instance events


def record_instance_event(conn: sqlite3.Connection, instance: str, event: str, data: dict, at: str) -> None:
    conn.execute("INSERT INTO instance_events (instance, event, data, at) VALUES (?, ?, ?, ?)",
                 (instance, event, json.dumps(data, sort_keys=True), at))


def instance_events(conn: sqlite3.Connection, instance: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The most recent events, newest first."""
    clause, params = ("WHERE instance = ?", [instance]) if instance else ("", [])
    rows = conn.execute(f"SELECT * FROM instance_events {clause} ORDER BY seq DESC LIMIT ?", [*params, limit])
    return [{**dict(row), "data": json.loads(row["data"])} for row in rows]
