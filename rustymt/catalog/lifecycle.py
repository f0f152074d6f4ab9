"""Catalog rows of the CDB's shared services: common users and lockdown profiles.

common_users       C## users: SCRAM verifier only, and the PDBs they cover
                   (NULL = every PDB, including those created later).
lockdown_profiles  named profiles: the operator's spec and the compiled
                   authorizer rules (rustymt.engine.lockdown).
pdb_lockdown       which profile each PDB has applied (a profile in use
                   cannot be deleted).

The tables come from catalog migration 4 (rustymt.catalog.migrations).
"""
from __future__ import annotations

import json
import sqlite3


def common_users(conn: sqlite3.Connection) -> list[dict]:
    return [{"username": r["username"], "verifier": r["verifier"],
             "pdbs": json.loads(r["pdbs"]) if r["pdbs"] is not None else None, "created_at": r["created_at"]}
            for r in conn.execute("SELECT * FROM common_users ORDER BY username")]


def insert_common_user(conn: sqlite3.Connection, username: str, verifier: str, pdbs: list[str] | None, now: str) -> bool:
    """False when the name is taken."""
    try:
        conn.execute("INSERT INTO common_users(username, verifier, pdbs, created_at) VALUES (?, ?, ?, ?)",
                     (username, verifier, json.dumps(pdbs) if pdbs is not None else None, now))
    except sqlite3.IntegrityError:
        return False
    return True


def _profile(row) -> dict | None:
    if row is None:
        return None
    return {"name": row["name"], "spec": json.loads(row["spec"]), "rules": json.loads(row["rules"]),
            "created_at": row["created_at"]}


def profiles(conn: sqlite3.Connection) -> list[dict]:
    return [_profile(r) for r in conn.execute("SELECT * FROM lockdown_profiles ORDER BY name")]


def profile(conn: sqlite3.Connection, name: str) -> dict | None:
    return _profile(conn.execute("SELECT * FROM lockdown_profiles WHERE name = ?", (name,)).fetchone())


def insert_profile(conn: sqlite3.Connection, name: str, spec: dict, rules_json: str, now: str) -> bool:
    try:
        conn.execute("INSERT INTO lockdown_profiles(name, spec, rules, created_at) VALUES (?, ?, ?, ?)",
                     (name, json.dumps(spec), rules_json, now))
    except sqlite3.IntegrityError:
        return False
    return True


def profile_users(conn: sqlite3.Connection, name: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT pdb_id FROM pdb_lockdown WHERE profile = ? ORDER BY pdb_id", (name,))]


def delete_profile(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM lockdown_profiles WHERE name = ?", (name,))


def set_pdb_profile(conn: sqlite3.Connection, pdb_id: str, name: str | None, now: str) -> None:
    conn.execute("DELETE FROM pdb_lockdown WHERE pdb_id = ?", (pdb_id,))
    if name is not None:
        conn.execute("INSERT INTO pdb_lockdown(pdb_id, profile, applied_at) VALUES (?, ?, ?)", (pdb_id, name, now))
