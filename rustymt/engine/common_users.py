"""Common users (Oracle's C## users) in a PDB's dictionary.

A common user is defined once in the CDB catalog and exists in every PDB it
covers. The engine authenticates sessions from the PDB's own system.db users
table (rustymt.engine.tenants.OpenPdb.dictionary, re-read when the file
changes), so a common user is made real in a PDB by writing its SCRAM
verifier there — the running instance picks it up at the next connection, no
control op needed. The daemon writes them when the common user is created
(every covered PDB) and whenever a PDB comes into being (create, clone, plug)
with sync(); a clone also inherits them with the rest of the source's users.
"""
from __future__ import annotations

import os

from rustymt._native import _core
from rustymt.engine import storage
from rustymt.engine.storage import execute

PREFIX = "C##"
BUSY_MS = 5000


def is_common_name(username: str) -> bool:
    return username.upper().startswith(PREFIX) and len(username) > len(PREFIX)


def covers(pdbs: list[str] | None, pdb_id: str, pdb_name: str) -> bool:
    """pdbs None = every PDB (incl. later ones); else PDB ids or names (case-insensitive names)."""
    if pdbs is None:
        return True
    return any(p == pdb_id or p.lower() == pdb_name.lower() for p in pdbs)


def write(folder: str, users: list[tuple[str, str]]) -> None:
    """Insert or refresh (username, verifier) common users in one PDB folder."""
    if not users:
        return
    conn = _core.Connection(os.path.join(folder, storage.DICTIONARY_FILE), create=False)
    try:
        conn.busy_timeout(BUSY_MS)
        execute(conn, "BEGIN IMMEDIATE")
        for username, verifier in users:
            execute(conn, "INSERT INTO users(username, verifier, is_admin, created_at) VALUES (?1, ?2, 0, ?3) "
                          "ON CONFLICT(username) DO UPDATE SET verifier=excluded.verifier",
                    (username, verifier, storage.now_iso()))
        execute(conn, "COMMIT")
    finally:
        conn.close()


def sync(folder: str, pdb_id: str, pdb_name: str, common: list[dict]) -> int:
    """Write every common user ({username, verifier, pdbs}) that covers this PDB; returns how many."""
    chosen = [(u["username"], u["verifier"]) for u in common if covers(u.get("pdbs"), pdb_id, pdb_name)]
    write(folder, chosen)
    return len(chosen)
