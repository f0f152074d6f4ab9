"""What the wire server needs from the engine: the Backend interface.

The server knows nothing of tenants, catalogs or PDB storage. For each client
it asks its Backend two things:

  1. `await backend.verifier(database, user)` -> the user's SCRAM-SHA-256
     verifier (PostgreSQL format, see rustymt/engine/scram.py), or None when
     the user is unknown (the server then runs a mock exchange that fails with
     28P01, so user names cannot be probed). Raise PgError (FATAL) to refuse
     before authentication: 3D000 unknown database, 53300 too many
     connections, 57P01 tenant suspended, 28000 not admitted.
  2. after a successful exchange, `await backend.open_session(database, user)`
     -> a DatabaseSession: an engine Connection (rustymt._native._core) on the
     PDB, whether it is read-only, and extra ParameterStatus values. Raise
     PgError (FATAL) to refuse (same codes as above).

The server calls `backend.session_closed(session)` exactly once per opened
session when the client goes away (it has already closed nothing: closing the
connection is the backend's job, so a pool can keep it).

The engine instance implements Backend for real (per-tenant listeners, open
modes, quotas). FileBackend below is the simple implementation the wire tests
and the bench use: database name -> <directory>/<name>.db, users with
verifiers in a dict.
"""
from __future__ import annotations

import abc
import asyncio
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Callable

from .. import scram
from . import sqlstate as S
from .errors import fatal


@dataclass
class DatabaseSession:
    """An open PDB for one client session."""
    connection: object                 # rustymt._native._core.Connection
    readonly: bool = False
    parameters: dict = field(default_factory=dict)   # extra ParameterStatus (e.g. is_superuser)
    tenant: int = 0                    # native tenant slot the connection charges
    # Shared by every session on the same database file: writers queue on it
    # in-process (woken at once on release) instead of in SQLite's busy handler,
    # which sleeps in growing steps up to 100 ms. None = rely on busy_timeout.
    write_lock: threading.Lock | None = None
    # Called after every Query and Execute message with (latency_ms, sqlstate
    # or None on success): the engine feeds the tenant's SLA statistics.
    on_statement: Callable[[float, str | None], None] | None = None
    # Runs CREATE/ALTER/DROP USER|ROLE (a sqlfront "role" statement) as
    # (statement, in_transaction) -> notices; raises PgError. None: this
    # backend has no user dictionary (0A000). The engine's is rustymt.engine.pdb_users.
    manage_users: Callable[[object, bool], list] | None = None


class Backend(abc.ABC):
    """The engine side of the wire server (see the module docstring)."""

    @abc.abstractmethod
    async def verifier(self, database: str, user: str) -> str | None:
        """SCRAM verifier of `user` for `database`, None if no such user."""

    @abc.abstractmethod
    async def open_session(self, database: str, user: str) -> DatabaseSession:
        """Open `database` for the authenticated `user`."""

    def session_closed(self, session: DatabaseSession) -> None:
        """The client of `session` went away (default: close its connection)."""
        session.connection.close()


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")


def open_engine_connection(path: str, readonly: bool, tenant: int = 0, create: bool = False):
    """An engine connection set up the way the wire server expects: WAL, a busy
    timeout (contention becomes 40001 only after it), foreign keys on."""
    from rustymt._native import _core  # the engine binding; imported lazily (built extension)

    _core.install()  # idempotent: installs the native hooks before the first connection
    conn = _core.Connection(path, tenant=tenant, readonly=readonly, create=create)
    conn.busy_timeout(5000)
    pragmas = ["PRAGMA foreign_keys=ON"] if readonly else \
        ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON"]
    for pragma in pragmas:
        stmt, _tail = conn.prepare(pragma)
        while stmt.step():
            pass
        stmt.finalize()
    return conn


class FileBackend(Backend):
    """Databases are SQLite files <directory>/<name>.db; users are global."""

    def __init__(self, directory: str, users: dict[str, str] | None = None,
                 readonly_databases: set[str] | None = None, superusers: set[str] | None = None,
                 tenant_slots: dict[str, int] | None = None):
        self.directory = directory
        self.tenant_slots = dict(tenant_slots or {})  # database -> native tenant slot (default 0)
        self.users = dict(users or {})          # user -> SCRAM verifier
        self.readonly_databases = set(readonly_databases or ())
        self.superusers = set(superusers or ())
        self._write_locks: dict[str, threading.Lock] = {}

    def add_user(self, user: str, password: str) -> None:
        self.users[user] = scram.make_verifier(password)

    def path_of(self, database: str) -> str:
        if not _NAME.match(database):
            raise fatal(S.INVALID_CATALOG_NAME, f'database "{database}" does not exist')
        return os.path.join(self.directory, database + ".db")

    def create_database(self, database: str) -> str:
        path = self.path_of(database)
        open_engine_connection(path, readonly=False, create=True).close()
        return path

    async def verifier(self, database, user):
        if not os.path.exists(self.path_of(database)):
            raise fatal(S.INVALID_CATALOG_NAME, f'database "{database}" does not exist')
        return self.users.get(user)

    async def open_session(self, database, user):
        readonly = database in self.readonly_databases
        path = self.path_of(database)
        tenant = self.tenant_slots.get(database, 0)
        conn = await asyncio.to_thread(open_engine_connection, path, readonly, tenant)
        superuser = "on" if user in self.superusers else "off"
        lock = self._write_locks.setdefault(path, threading.Lock())
        return DatabaseSession(conn, readonly=readonly, parameters={"is_superuser": superuser}, tenant=tenant,
                               write_lock=lock)
