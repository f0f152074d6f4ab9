"""Session connections on a PDB, and the engine API without the wire.

Every tenant session — a PostgreSQL client on the tenant's port or an
`execute` op over the control socket — gets its connection from
`open_session_connection`:

  1. open the PDB's default tablespace (users.db) through the engine binding
     with the tenant's native slot (page partition, allocator account, CPU
     scheduler) and, when the build has it, the metering VFS; read-only when
     the PDB is open READ_ONLY (SQLite refuses writes: SQLSTATE 25006);
  2. ATTACH the PDB's further tablespaces under their names; with a storage
     quota, cap each datafile's growth at what is left of it (max_page_count);
  3. install the authorizer (rustymt.engine.lockdown): from here on the
     session can reach no other file.

`EngineSession` runs SQLite SQL on such a connection for the `execute` op,
the tests and the bench; errors carry the wire layer's SQLSTATE.
"""
from __future__ import annotations

import os
import re
import threading

from rustymt._native import _core
from rustymt.engine import lockdown
from rustymt.engine.pgwire import sqlstate as S
from rustymt.engine.pgwire.errors import from_sqlite

BUSY_TIMEOUT_MS = 5000
FETCH_ROWS = 256
_TABLESPACE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class StatementCounter:
    """Statements compiled for one tenant (shared by its connections)."""
    __slots__ = ("count",)

    def __init__(self):
        self.count = 0


class TenantConnection(_core.Connection):
    """An engine connection that counts the statements it compiles, and that
    an administrator can end: once `ended_with` is set, compiling anything
    raises it (the wire layer passes a PgError through to the client as is)."""

    def __init__(self, path, tenant, readonly, vfs, counter: StatementCounter):
        super().__init__(path, tenant=tenant, readonly=readonly, vfs=vfs, create=False)
        self.counter = counter
        self.ended_with: Exception | None = None
        self.lockdown_profile = None  # name of the PDB's lockdown profile: named in 42501 messages
        # The base binding's authorizer_epoch, bumped by every set_authorizer (a
        # counter the wire server's native loop reads too): the wire server drops
        # the statements it keeps for reuse, so the new rules refuse at compile
        # time (naming the profile).

    def prepare(self, sql):
        return self._compile(_core.Connection.prepare, sql)

    def prepare_and_fetch(self, sql, n):
        # The wire's fast path compiles through here too: the same checks apply.
        return self._compile(_core.Connection.prepare_and_fetch, sql, n)

    def reuse(self):
        """The wire server runs a statement it compiled earlier again for a new
        simple-Query text (same shape, other numbers): the same refusal once
        ended, and counted, as if it had been compiled anew."""
        if self.ended_with is not None:
            raise self.ended_with
        self.counter.count += 1

    def _compile(self, compile_call, sql, *args):
        """Every statement the tenant compiles: refused once the session was
        ended, counted, and a lockdown refusal names the profile."""
        if self.ended_with is not None:
            raise self.ended_with
        self.counter.count += 1  # GIL-protected increment: good enough for a statistic
        try:
            return compile_call(self, sql, *args)
        except _core.SQLiteError as exc:  # the authorizer refuses at prepare time
            if self.lockdown_profile and "not authorized" in exc.message:
                raise _core.SQLiteError(exc.code, exc.extended_code,
                                        lockdown.denied_message(self.lockdown_profile, exc.message)) from None
            raise


def _run(conn, sql: str, params=()) -> None:
    stmt, _tail = _core.Connection.prepare(conn, sql)  # setup statements are not the tenant's
    try:
        if params:
            stmt.bind_all(params)
        while stmt.step():
            pass
    finally:
        stmt.finalize()


def _rows(conn, sql: str) -> list:
    stmt, _tail = _core.Connection.prepare(conn, sql)
    try:
        return stmt.fetchmany(1000)
    finally:
        stmt.finalize()


def limit_growth(conn, schemas: list[str], budget_bytes: int) -> None:
    """Let each datafile grow by at most `budget_bytes` (SQLite's max_page_count;
    beyond it a write fails with SQLITE_FULL -> SQLSTATE 53100)."""
    for schema in schemas:
        pages = _rows(conn, f'PRAGMA "{schema}".page_count')[0][0]
        page_size = _rows(conn, f'PRAGMA "{schema}".page_size')[0][0]
        _rows(conn, f'PRAGMA "{schema}".max_page_count = {pages + max(budget_bytes, 0) // page_size}')


def open_session_connection(folder: str, tablespaces: dict[str, str], slot: int, readonly: bool,
                            profile_rules, counter: StatementCounter, vfs: str | None = None,
                            storage_budget_bytes: int | None = None):
    """Steps 1-3 of the module docstring; returns a TenantConnection. With a
    storage budget (what is left of the tenant's storage quota) every datafile
    may grow by at most that much in this session."""
    conn = TenantConnection(os.path.join(folder, tablespaces.get("users", "users.db")), slot, readonly, vfs, counter)
    try:
        conn.busy_timeout(BUSY_TIMEOUT_MS)
        _run(conn, "PRAGMA foreign_keys=ON")
        if not readonly:
            _run(conn, "PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoint, no fsync per commit
        for name, file in sorted(tablespaces.items()):
            if name == "users":
                continue
            if not _TABLESPACE_NAME.match(name) or os.path.basename(file) != file:
                raise ValueError(f"bad tablespace entry {name!r} -> {file!r} in the PDB dictionary")
            _run(conn, f'ATTACH DATABASE ?1 AS "{name}"', (os.path.join(folder, file),))
        if storage_budget_bytes is not None and not readonly:
            limit_growth(conn, ["main", *(name for name in sorted(tablespaces) if name != "users")], storage_budget_bytes)
        conn.set_authorizer(lockdown.authorizer_rules(profile_rules))
    except BaseException:
        conn.close()
        raise
    return conn


class SqlError(Exception):
    """A statement failed: `sqlstate` as on the wire, `message`, `hint`."""

    def __init__(self, sqlstate: str, message: str, hint: str | None = None):
        super().__init__(f"{sqlstate}: {message}")
        self.sqlstate = sqlstate
        self.message = message
        self.hint = hint


class _Cached:
    __slots__ = ("stmt", "verb", "columns")

    def __init__(self, stmt):
        self.stmt = stmt
        self.verb = (stmt.sql.lstrip().split(None, 1) or [""])[0].upper()
        self.columns = stmt.column_names if stmt.column_count else None


class EngineSession:
    """A session of one tenant user on one PDB, driven in-process.

    Thread-safe (one statement at a time); single statements are cached
    compiled, so repeating a query costs a bind and a step."""

    CACHE_SIZE = 128

    def __init__(self, conn, user: str, pdb=None):
        self.conn = conn
        self.user = user
        self.pdb = pdb
        self.ended: SqlError | None = None   # set when an admin ended the session
        self._lock = threading.Lock()
        self._cache: dict[str, _Cached] = {}

    @property
    def connection(self):
        return self.conn

    def end(self, error: SqlError) -> None:
        """Terminate from another thread: an idle session is rolled back and
        closed now; a running statement is interrupted and its thread closes
        the session. Further work is refused with `error`."""
        self.ended = error
        self.conn.interrupt()
        if self._lock.acquire(blocking=False):
            try:
                self._close_locked()
            finally:
                self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self.conn.closed:
            return
        try:
            if self.conn.in_transaction:
                _run(self.conn, "ROLLBACK")
        except _core.SQLiteError:
            pass
        self._cache.clear()
        self.conn.close()

    def execute(self, sql: str, params=()) -> dict:
        """Run `sql` (one or more statements; params bind to the one that has
        parameters): the last row-returning statement's columns and rows, the
        last statement's command tag."""
        with self._lock:
            if self.ended is not None:
                self._close_locked()
                raise self.ended
            try:
                cached = self._cache.get(sql)
                if cached is not None:
                    return self._run_cached(cached, params)
                return self._run_text(sql, params)
            except _core.SQLiteError as exc:
                if self.ended is not None:
                    self._close_locked()
                    raise self.ended from None
                error = from_sqlite(exc)
                raise SqlError(error.code, error.message, error.hint) from None
            except ValueError as exc:   # parameter count or names do not match the statement
                raise SqlError(S.PROTOCOL_VIOLATION, str(exc)) from None
            except TypeError as exc:    # a parameter of a type SQLite cannot bind
                raise SqlError(S.INVALID_PARAMETER_VALUE, str(exc)) from None

    def _run_cached(self, cached: _Cached, params) -> dict:
        stmt = cached.stmt
        stmt.bind_all(params)
        try:
            rows = stmt.fetchmany(FETCH_ROWS)
            if len(rows) == FETCH_ROWS:  # short batch = done (the common point-select case)
                while True:
                    batch = stmt.fetchmany(FETCH_ROWS)
                    rows.extend(batch)
                    if len(batch) < FETCH_ROWS:
                        break
        finally:
            stmt.reset()
        verb = cached.verb
        command = f"SELECT {len(rows)}" if verb == "SELECT" else self._tag(verb, len(rows))
        return {"columns": cached.columns, "rows": rows, "command": command}

    def _run_text(self, sql: str, params) -> dict:
        result = {"columns": None, "rows": [], "command": ""}
        text = sql
        while text:
            stmt, tail = self.conn.prepare(text)
            if stmt is None:
                break
            cached = _Cached(stmt)
            if not tail.strip() and text is sql and len(self._cache) < self.CACHE_SIZE:
                self._cache[sql] = cached  # a single statement: keep it compiled
                return self._run_cached(cached, params)
            try:
                out = self._run_cached(cached, params if stmt.param_count else ())
            finally:
                stmt.finalize()
            if out["columns"] is not None or result["columns"] is None:
                result["columns"], result["rows"] = out["columns"], out["rows"]
            result["command"] = out["command"]
            text = tail
        return result

    def _tag(self, verb: str, rows: int) -> str:
        if verb == "INSERT":
            return f"INSERT 0 {self.conn.changes()}"
        if verb in ("UPDATE", "DELETE"):
            return f"{verb} {self.conn.changes()}"
        if verb in ("SELECT", "WITH", "VALUES", "PRAGMA"):
            return f"SELECT {rows}"
        return verb


def admin_shutdown_error(why: str) -> SqlError:
    return SqlError(S.ADMIN_SHUTDOWN, f"terminating connection due to administrator command: {why}")
