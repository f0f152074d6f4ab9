"""Catalog rows for long-running jobs and for Idempotency-Key answers.

jobs          one row per asynchronous operation (clone today): status
              pending -> in_progress -> completed | failed | cancelled,
              progress 0.0-1.0, bytes_transferred, estimated_completion,
              error. `stage` names the staging folder the job is filling, so
              startup recovery knows what a job that died left behind.
idempotency   the first answer (status code + JSON body) given to a creating
              POST that carried an Idempotency-Key, per principal scope: a
              retry with the same key gets that answer back, not a second job.

The tables come from catalog migration 4 (rustymt.catalog.migrations).
"""
from __future__ import annotations

import json
import sqlite3


ACTIVE = ("pending", "in_progress")
FINAL = ("completed", "failed", "cancelled")
_COLUMNS = ("job_id", "kind", "tenant_id", "source_pdb_id", "target_pdb_id", "status", "progress",
            "bytes_transferred", "estimated_completion", "error", "request", "result", "stage",
            "cancel_requested", "created_at", "updated_at", "finished_at")


def _row(row: sqlite3.Row | None) -> dict | None:
    if row is None:
        return None
    job = dict(row)
    job["request"] = json.loads(job["request"] or "{}")
    job["result"] = json.loads(job["result"]) if job["result"] else None
    job["cancel_requested"] = bool(job["cancel_requested"])
    return job


def insert(conn: sqlite3.Connection, job: dict) -> None:
    values = {c: job.get(c) for c in _COLUMNS}
    values["request"] = json.dumps(job.get("request") or {})
    values["result"] = json.dumps(job["result"]) if job.get("result") is not None else None
    values["cancel_requested"] = int(bool(job.get("cancel_requested")))
    values["progress"] = job.get("progress", 0.0)
    values["bytes_transferred"] = job.get("bytes_transferred", 0)
    conn.execute(f"INSERT INTO jobs({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                 [values[c] for c in _COLUMNS])


def get(conn: sqlite3.Connection, job_id: str) -> dict | None:
    return _row(conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone())


def update(conn: sqlite3.Connection, job_id: str, **fields) -> None:
    if "result" in fields:
        fields["result"] = json.dumps(fields["result"]) if fields["result"] is not None else None
    if "cancel_requested" in fields:
        fields["cancel_requested"] = int(bool(fields["cancel_requested"]))
    unknown = set(fields) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"unknown job fields {sorted(unknown)}")
    assignments = ", ".join(f"{name} = ?" for name in fields)
    conn.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", [*fields.values(), job_id])


def active(conn: sqlite3.Connection) -> list[dict]:
    rows = conn.execute(f"SELECT * FROM jobs WHERE status IN ({', '.join('?' * len(ACTIVE))}) ORDER BY created_at",
                        ACTIVE).fetchall()
    return [_row(r) for r in rows]


def remembered_answer(conn: sqlite3.Connection, scope: str, key: str) -> dict | None:
    row = conn.execute("SELECT method, path, status_code, body, request_sha256 FROM idempotency WHERE scope = ? AND key = ?",
                       (scope, key)).fetchone()
    if row is None:
        return None
    return {"method": row["method"], "path": row["path"], "status_code": row["status_code"],
            "body": json.loads(row["body"]), "request_sha256": row["request_sha256"]}


def remember_answer(conn: sqlite3.Connection, scope: str, key: str, method: str, path: str,
                    status_code: int, body: dict, now: str, request_sha256: str) -> None:
    conn.execute("INSERT OR IGNORE INTO idempotency(scope, key, method, path, status_code, body, created_at, request_sha256) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (scope, key, method, path, status_code, json.dumps(body), now, request_sha256))
