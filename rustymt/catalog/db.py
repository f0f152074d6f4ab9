"""The control-plane catalog: one SQLite file, WAL, foreign keys, migrations.

Each thread gets its own connection (sqlite3 connections must not be shared
across threads; the service layer runs catalog work in worker threads so the
event loop never waits on a disk sync). Connections are in autocommit mode and
every mutation is one explicit `BEGIN IMMEDIATE` transaction: the write lock is
taken up front, so two concurrent creates of one name serialize at BEGIN and
the second sees the first's row instead of failing late on a stale snapshot.
busy_timeout makes waiters queue instead of erroring. synchronous=FULL: a
commit the API acknowledged survives kill -9 and power loss.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from typing import Iterator

from rustymt.catalog.migrations import migrate

BUSY_TIMEOUT_MS = 10_000


class CatalogError(RuntimeError):
    """The catalog file cannot be opened or is from a newer rustymt."""


class Catalog:
    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, path: str) -> "Catalog":
        """Open (creating when missing) and bring the schema up to date."""
        catalog = cls(path)
        try:
            # Owner-only from the first byte (password hashes live here);
            # SQLite gives the -wal and -shm files the same mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            with catalog.write() as conn:
                migrate(conn)
        except (OSError, sqlite3.Error) as exc:
            catalog.close()
            raise CatalogError(f"cannot open catalog {path}: {exc}") from exc
        return catalog

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise CatalogError("catalog is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One mutation = one IMMEDIATE transaction; rolled back on any error."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several SELECTs."""
        conn = self._connection()
        conn.execute("BEGIN")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # SQLite may already have rolled back (disk full, I/O error); a second
        # ROLLBACK would fail and hide the error that matters.
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def close(self) -> None:
        self._closed = True
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()


def catalog_path(data_dir: str) -> str:
    return os.path.join(data_dir, "catalog.db")
