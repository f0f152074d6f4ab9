"""PDB files on disk: the layout, the seed, and crash-safe create and drop.

    <data_dir>/pdbs/<pdb_id>/     one folder per PDB
        system.db                 the PDB dictionary (SYSTEM_SCHEMA)
        users.db                  default tablespace: the tenant's main schema
        <tablespace>.db           further tablespaces, ATTACHed under their name
    <data_dir>/pdbs/seed/         PDB$SEED: the read-only template
    <data_dir>/staging/           work in progress; anything here after a crash
                                  is an unfinished operation and is removed

Every multi-step change builds its result under staging/, fsyncs it, and only
then renames it into pdbs/ (rename within one filesystem is atomic), so a
crash leaves either the old state or the new one, never half a PDB. The
catalog row is committed by the caller between "staged" and "renamed"; startup
recovery (recover()) removes what staging/ still holds, and the daemon
reconciles catalog rows whose folder never arrived.

All SQLite access goes through the engine's own binding, never through the
stdlib sqlite3 module: tenant files are only ever touched by the copy of
SQLite that carries the native hooks.
"""
from __future__ import annotations

import datetime
import os
import shutil
import uuid

from rustymt._native import _core

SEED_ID = "seed"
SEED_NAME = "PDB$SEED"
DEFAULT_TABLESPACE = "users"
DICTIONARY_FILE = "system.db"
FORMAT_VERSION = "1"
DICTIONARY_BUSY_MS = 2000

SYSTEM_SCHEMA = """
CREATE TABLE pdb_info (             -- one row per fact about this PDB
    key   TEXT PRIMARY KEY,         -- pdb_id, pdb_name, guid, created_at, format
    value TEXT NOT NULL
);
CREATE TABLE users (                -- local users; passwords only as SCRAM verifiers
    username   TEXT PRIMARY KEY,
    verifier   TEXT NOT NULL,       -- SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>
    is_admin   INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE tablespaces (          -- users.db is the default; others are ATTACHed
    name       TEXT PRIMARY KEY,
    file       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE lockdown (             -- at most one applied profile
    profile TEXT NOT NULL,
    rules   TEXT NOT NULL           -- JSON list of rules, see rustymt.engine.lockdown
);
CREATE TABLE open_mode_history (
    at   TEXT NOT NULL,
    mode TEXT NOT NULL              -- READ_WRITE, READ_ONLY, UPGRADE, MIGRATE, CLOSED
);
"""


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pdbs_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "pdbs")


def pdb_dir(data_dir: str, pdb_id: str) -> str:
    if not pdb_id or "/" in pdb_id or pdb_id.startswith("."):
        raise ValueError(f"bad pdb id {pdb_id!r}")
    return os.path.join(pdbs_dir(data_dir), pdb_id)


def staging_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "staging")


# ---- SQL helpers over the engine binding


def execute(conn, sql: str, params: tuple = ()) -> list[tuple]:
    """Run every statement in `sql` (params bind to the first); return the last one's rows."""
    rows: list[tuple] = []
    first = True
    while sql:
        stmt, sql = conn.prepare(sql)
        if stmt is None:
            break
        try:
            if first and params:
                stmt.bind_all(params)
            first = False
            rows = []
            while True:
                batch = stmt.fetchmany(256)
                if not batch:
                    break
                rows.extend(batch)
        finally:
            stmt.finalize()
    return rows


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: str) -> None:
    for name in os.listdir(path):
        with open(os.path.join(path, name), "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(path)


def _new_stage(data_dir: str, what: str) -> str:
    stage = os.path.join(staging_dir(data_dir), f"{what}-{uuid.uuid4().hex[:12]}")
    os.makedirs(stage, mode=0o700)
    return stage


def _init_dictionary(folder: str, info: dict[str, str]) -> None:
    conn = _core.Connection(os.path.join(folder, DICTIONARY_FILE))
    try:
        execute(conn, "PRAGMA journal_mode=WAL")
        execute(conn, SYSTEM_SCHEMA)
        for key, value in info.items():
            execute(conn, "INSERT INTO pdb_info(key, value) VALUES (?1, ?2)", (key, value))
        execute(conn, "INSERT INTO tablespaces(name, file, created_at) VALUES (?1, ?2, ?3)",
                (DEFAULT_TABLESPACE, f"{DEFAULT_TABLESPACE}.db", info["created_at"]))
        execute(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
        execute(conn, "PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


def _init_tablespace(path: str) -> None:
    conn = _core.Connection(path)
    try:
        execute(conn, "PRAGMA journal_mode=WAL")  # datafiles run in WAL: readers never block the writer
        execute(conn, "PRAGMA user_version=1")
        execute(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


# ---- operations


def ensure_seed(data_dir: str) -> str:
    """Create PDB$SEED (read-only template) if it does not exist yet."""
    seed = pdb_dir(data_dir, SEED_ID)
    if os.path.isdir(seed):
        return seed
    os.makedirs(pdbs_dir(data_dir), mode=0o700, exist_ok=True)
    stage = _new_stage(data_dir, "seed")
    _init_dictionary(stage, {"pdb_id": SEED_ID, "pdb_name": SEED_NAME, "guid": uuid.uuid4().hex.upper(),
                             "created_at": now_iso(), "format": FORMAT_VERSION})
    _init_tablespace(os.path.join(stage, f"{DEFAULT_TABLESPACE}.db"))
    for name in os.listdir(stage):
        os.chmod(os.path.join(stage, name), 0o444)
    _fsync_tree(stage)
    os.rename(stage, seed)
    _fsync_dir(pdbs_dir(data_dir))
    return seed


def stage_pdb_from_seed(data_dir: str, pdb_id: str, pdb_name: str, admin_user: str, admin_verifier: str, guid: str | None = None) -> str:
    """Copy the seed into staging/ and make it this PDB; returns the staged folder.

    The caller commits the catalog row, then calls publish()."""
    seed = ensure_seed(data_dir)
    stage = _new_stage(data_dir, f"create-{pdb_id}")
    for name in os.listdir(seed):
        if name.endswith(("-wal", "-shm", "-journal")):
            continue
        target = os.path.join(stage, name)
        shutil.copyfile(os.path.join(seed, name), target)
        os.chmod(target, 0o600)
    conn = _core.Connection(os.path.join(stage, DICTIONARY_FILE))
    try:
        created = now_iso()
        execute(conn, "BEGIN")
        execute(conn, "UPDATE pdb_info SET value=?1 WHERE key='pdb_id'", (pdb_id,))
        execute(conn, "UPDATE pdb_info SET value=?1 WHERE key='pdb_name'", (pdb_name,))
        execute(conn, "UPDATE pdb_info SET value=?1 WHERE key='guid'", (guid or uuid.uuid4().hex.upper(),))
        execute(conn, "UPDATE pdb_info SET value=?1 WHERE key='created_at'", (created,))
        execute(conn, "INSERT INTO users(username, verifier, is_admin, created_at) VALUES (?1, ?2, 1, ?3)",
                (admin_user, admin_verifier, created))
        execute(conn, "COMMIT")
    finally:
        conn.close()
    _fsync_tree(stage)
    return stage


def publish(data_dir: str, stage: str, pdb_id: str) -> str:
    """Rename a staged PDB folder into place (atomic)."""
    target = pdb_dir(data_dir, pdb_id)
    os.rename(stage, target)
    _fsync_dir(pdbs_dir(data_dir))
    return target


def discard(stage: str) -> None:
    shutil.rmtree(stage, ignore_errors=True)


def remove_pdb_files(data_dir: str, pdb_id: str) -> None:
    """Drop a PDB's folder: first renamed into staging/ (atomic), then deleted."""
    source = pdb_dir(data_dir, pdb_id)
    if not os.path.isdir(source):
        return
    os.makedirs(staging_dir(data_dir), mode=0o700, exist_ok=True)
    doomed = os.path.join(staging_dir(data_dir), f"drop-{pdb_id}-{uuid.uuid4().hex[:8]}")
    os.rename(source, doomed)
    _fsync_dir(pdbs_dir(data_dir))
    shutil.rmtree(doomed, ignore_errors=True)


def recover(data_dir: str) -> list[str]:
    """Remove what an interrupted operation left in staging/; returns what was removed."""
    root = staging_dir(data_dir)
    if not os.path.isdir(root):
        os.makedirs(root, mode=0o700, exist_ok=True)
        return []
    removed = []
    for name in sorted(os.listdir(root)):
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        removed.append(name)
    return removed


def _dictionary_connection(folder: str, readonly: bool = False):
    """system.db through the engine binding (slot 0), waiting briefly on a
    concurrent reader or writer instead of failing with SQLITE_BUSY."""
    conn = _core.Connection(os.path.join(folder, DICTIONARY_FILE), readonly=readonly)
    conn.busy_timeout(DICTIONARY_BUSY_MS)
    return conn


def read_dictionary(folder: str) -> dict:
    """Info, users (verifiers), tablespaces and lockdown of a PDB folder."""
    conn = _dictionary_connection(folder, readonly=True)
    try:
        info = dict(execute(conn, "SELECT key, value FROM pdb_info"))
        users = {name: {"verifier": verifier, "is_admin": bool(admin)}
                 for name, verifier, admin in execute(conn, "SELECT username, verifier, is_admin FROM users")}
        tablespaces = dict(execute(conn, "SELECT name, file FROM tablespaces ORDER BY name"))
        lockdown = execute(conn, "SELECT profile, rules FROM lockdown")
    finally:
        conn.close()
    return {"info": info, "users": users, "tablespaces": tablespaces,
            "lockdown": {"profile": lockdown[0][0], "rules": lockdown[0][1]} if lockdown else None}


def record_open_mode(folder: str, mode: str) -> None:
    conn = _dictionary_connection(folder)
    try:
        execute(conn, "INSERT INTO open_mode_history(at, mode) VALUES (?1, ?2)", (now_iso(), mode))
    finally:
        conn.close()


def write_lockdown(folder: str, profile: str | None, rules_json: str) -> None:
    """Replace the PDB's lockdown profile (None removes it)."""
    conn = _dictionary_connection(folder)
    try:
        execute(conn, "BEGIN IMMEDIATE")
        execute(conn, "DELETE FROM lockdown")
        if profile:
            execute(conn, "INSERT INTO lockdown(profile, rules) VALUES (?1, ?2)", (profile, rules_json))
        execute(conn, "COMMIT")
    finally:
        conn.close()


def open_mode_history(folder: str) -> list[tuple[str, str]]:
    conn = _dictionary_connection(folder, readonly=True)
    try:
        return execute(conn, "SELECT at, mode FROM open_mode_history ORDER BY rowid")
    finally:
        conn.close()


def datafiles(folder: str) -> list[dict]:
    """Every SQLite file of the PDB with its size (WAL included: it is data too)."""
    files = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".db"):
            path = os.path.join(folder, name)
            size = os.path.getsize(path)
            wal = path + "-wal"
            if os.path.exists(wal):
                size += os.path.getsize(wal)
            files.append({"file": path, "tablespace": name[:-3], "size_bytes": size})
    return files


def storage_bytes(folder: str) -> int:
    return sum(entry["size_bytes"] for entry in datafiles(folder))
