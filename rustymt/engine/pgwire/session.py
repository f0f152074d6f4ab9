"""A client session: runs protocol events against the engine connection.

The server hands a batch of query-phase events (everything one read produced)
to Session.run() on the session's own worker thread, and writes the bytes it
returns. One thread hop per batch, not per message: a pipelined
Bind/Describe/Execute/Sync costs one hop. Statement steps release the GIL in
the binding, so sessions run in parallel with each other and with the event
loop. Large results are written while they are produced (`flush` callback,
which blocks the worker until the transport drained: backpressure).

Transaction status (ReadyForQuery): 'E' after an error inside a transaction
block until ROLLBACK/COMMIT (every other statement gets 25P02), 'T' inside a
block or while SQLite is not in autocommit, else 'I'.
"""
from __future__ import annotations

import logging
import re
import time
from itertools import repeat

from ..._native import _core
from . import codecs as C
from . import messages as M
from . import protocol as P
from . import sqlfront
from . import sqlstate as S
from . import wireloop as W
from .errors import PgError, from_sqlite
from .rows import encode_rows

log = logging.getLogger("rustymt.pgwire")
_NEAR = re.compile(r'near "([^"]+)": syntax error')
FLUSH_BYTES = 1 << 20     # write out results in chunks of about this size
FETCH_ROWS = 256          # rows per fetchmany() between Python conversions
WRITE_LOCK_TIMEOUT = 30.0 # seconds a writer waits for the database's write lock (then 55P03)
LITERAL_STATEMENTS = 64   # compiled simple-Query templates (and Parse translations) kept per session
_DDL_VERBS = ("CREATE", "DROP", "ALTER")

# Settings SHOW/current_setting() answer; ParameterStatus reports the REPORTED ones.
REPORTED = ("server_version", "server_encoding", "client_encoding", "application_name", "DateStyle",
            "IntervalStyle", "TimeZone", "integer_datetimes", "standard_conforming_strings",
            "is_superuser", "session_authorization", "default_transaction_read_only",
            "in_hot_standby", "search_path")
DEFAULT_SETTINGS = {
    "server_version": P.SERVER_VERSION, "server_version_num": "150000", "server_encoding": "UTF8",
    "client_encoding": "UTF8", "application_name": "", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres",
    "TimeZone": "UTC", "integer_datetimes": "on", "standard_conforming_strings": "on", "is_superuser": "off",
    "session_authorization": "", "default_transaction_read_only": "off", "transaction_read_only": "off",
    "in_hot_standby": "off", "search_path": '"$user", public', "transaction_isolation": "serializable",
    "default_transaction_isolation": "serializable", "max_identifier_length": "63",
    "statement_timeout": "0", "lock_timeout": "0", "idle_in_transaction_session_timeout": "0",
    "lc_collate": "C", "lc_ctype": "C", "lc_messages": "C", "extra_float_digits": "1",
    "bytea_output": "hex", "client_min_messages": "notice", "max_connections": "100",
}


class Prepared:
    """A parsed statement: its translation, SQLite statement, and types."""
    __slots__ = ("name", "front", "sqlite", "param_oids", "columns", "busy", "described", "parsed", "loop_refused")

    def __init__(self, name, front, sqlite, param_oids, columns):
        self.name, self.front, self.sqlite = name, front, sqlite
        self.param_oids = param_oids
        self.columns = columns      # [(name, oid or None)] or None if no result rows
        self.busy = False           # sqlite statement bound to an open portal
        self.described = {}         # result formats -> (fields, encoders, RowDescription bytes)
        # The unnamed statement's Parse (sql, declared oids) while a repeated Parse
        # of the same may reuse it; None once the schema changed (or never reusable).
        self.parsed = None
        self.loop_refused = set()   # (result formats, parameter formats) the native loop cannot serve


class Portal:
    """A bound statement ready to execute (possibly in several row-limited parts)."""
    __slots__ = ("name", "prepared", "stmt", "own_stmt", "formats", "fields", "encoders", "row_description",
                 "pending", "done", "rows", "started")

    def __init__(self, name, prepared, stmt, own_stmt, formats):
        self.name, self.prepared, self.stmt, self.own_stmt = name, prepared, stmt, own_stmt
        self.formats = formats
        self.fields = None          # RowDescription tuples once column types are known
        self.encoders = None
        self.row_description = None
        self.pending = []           # rows fetched ahead (to type undeclared columns)
        self.done = False
        self.rows = 0
        self.started = False


class Session:
    def __init__(self, db, database: str, user: str, pid: int, flush=None, parameters=None):
        self.db = db                          # backend.DatabaseSession
        self.conn = db.connection
        self.database, self.user, self.pid = database, user, pid
        self.flush = flush                    # callable(bytes) from the worker thread
        self.defaults = dict(DEFAULT_SETTINGS, session_authorization=user, **(parameters or {}))
        if db.readonly:
            self.defaults["default_transaction_read_only"] = self.defaults["transaction_read_only"] = "on"
        self.settings = dict(self.defaults)
        self.statements: dict[str, Prepared] = {}
        self.portals: dict[str, Portal] = {}
        self.explicit = False                 # inside BEGIN ... COMMIT
        self.begin_pending = False            # BEGIN seen, SQLite's BEGIN not yet issued
        self.failed = False                   # an error happened inside the block
        self.skipping = False                 # extended protocol: discard until Sync
        self.running = False
        self.cancel_requested = False
        self.write_lock = getattr(db, "write_lock", None)
        self.on_statement = getattr(db, "on_statement", None)
        self.last_sqlstate: str | None = None  # of the message being timed for on_statement
        self.holds_write_lock = False
        self._columns_cache: dict[str, dict] = {}
        # Simple-Query texts with their integer literals as parameters
        # (sqlfront.literal_template) -> compiled Prepared, reused with new values.
        self._literal_statements: dict[str, Prepared] = {}
        self.literal_statements_max = LITERAL_STATEMENTS
        # False: no fast path, no reuse of compiled statements or translations:
        # every message takes the general path (the tests compare the two).
        self.fast_paths = True
        self._translations: dict[str, sqlfront.FrontStatement] = {}   # Parse text -> its translation
        # A reused statement is checked and counted as a compiled one (TenantConnection.reuse).
        self._note_reuse = getattr(self.conn, "reuse", None)
        # Statements kept for reuse were authorized when compiled: when the
        # connection's authorizer changes (TenantConnection.authorizer_epoch), they go.
        self._watch_authorizer = hasattr(self.conn, "authorizer_epoch")
        self._authorizer_epoch = self.conn.authorizer_epoch if self._watch_authorizer else 0
        self.ctx = sqlfront.Context(self.settings, database, user, pid, self._columns_of)
        # The native round-trip loop (native/wireloop.c) once the server's
        # thread serves this session with it: what _run_prepared_fast served
        # is registered there, keyed (statement name, result formats).
        self.wire_loop = None
        self._loop_registered: set = set()
        self._loop_step_error = None   # a step error the loop saw: the next fetch reports it

    # -- status ----------------------------------------------------------------------------
    def status(self) -> bytes:
        if self.failed:
            return b"E"
        if self.explicit or self.conn.in_transaction:
            return b"T"
        return b"I"

    def parameter_status(self) -> dict:
        return {name: self.settings[name] for name in REPORTED}

    def cancel(self):
        """CancelRequest (from another connection's task): interrupt the running statement."""
        if self.running or getattr(self.conn, "loop_stepping", False):
            self.conn.interrupt()
        self.cancel_requested = True

    def close(self):
        self._forget_loop()
        self.wire_loop = None
        if self.conn.in_transaction:
            # Straight through the base binding: a session an administrator
            # ended refuses to compile the tenant's SQL, but its open
            # transaction must still be rolled back.
            try:
                stmt, _tail = _core.Connection.prepare(self.conn, "ROLLBACK")
                try:
                    stmt.step()
                finally:
                    stmt.finalize()
            except _core.SQLiteError as exc:
                log.warning("session close: ROLLBACK failed (%s); the connection's close rolls back", exc)
        if self.holds_write_lock:  # never leave the database's writers waiting on a closed session
            self.holds_write_lock = False
            self.write_lock.release()
        for portal in list(self.portals.values()):
            self._close_portal(portal)
        for prepared in self.statements.values():
            if prepared.sqlite is not None:
                prepared.sqlite.finalize()
        self.statements.clear()
        self._drop_literal_statements()

    # -- batch entry point (worker thread) --------------------------------------------------
    def run(self, events) -> bytes:
        if self.fast_paths and 3 <= len(events) <= 5 and type(events[-1]) is P.Sync:
            fast = self._run_prepared_fast(events)
            if fast is not None:
                return fast
        out = _Output(self.flush)
        for event in events:
            kind = type(event)
            if self.skipping and kind is not P.Sync:
                continue
            timed = self.on_statement is not None and (kind is P.Query or kind is P.Execute)
            if timed:
                self.last_sqlstate, started = None, time.perf_counter()
            try:
                if kind is P.Query:
                    self._simple_query(event.sql, out)
                elif kind is P.Parse:
                    self._parse(event, out)
                elif kind is P.Bind:
                    self._bind(event, out)
                elif kind is P.Describe:
                    self._describe(event, out)
                elif kind is P.Execute:
                    self._execute(event, out)
                elif kind is P.Sync:
                    self._sync(out)
                elif kind is P.Close:
                    self._close(event, out)
                # Flush: the batch's output is written when run() returns.
            except PgError as error:
                self._error(error, out)
                self.skipping = True
            except Exception as exc:  # noqa: BLE001 - a bug here must not drop the connection silently
                log.exception("pgwire: internal error in session %s", self.pid)
                self._error(PgError(S.INTERNAL_ERROR, f"internal error: {type(exc).__name__}"), out)
                if kind is P.Query:  # a Query always ends with ReadyForQuery, or the client waits forever
                    out.append(M.ready_for_query(self.status()))
                else:
                    self.skipping = True
            if timed:
                self.on_statement((time.perf_counter() - started) * 1000.0, self.last_sqlstate)
        self._release_write_lock()
        self._loop_step_error = None
        return out.take()

    def _run_prepared_fast(self, events):
        """[Parse] Bind [Describe portal] Execute Sync of a prepared read-only statement,
        outside a transaction block, that ran before (its result description is
        cached): the pgbench/asyncpg/psycopg prepared round trip, with the
        general path's output, timing and error handling but none of its
        per-message dispatch, portal bookkeeping or re-checks. None when the
        batch is anything else or a parameter does not decode (then the general
        path runs it from the start: nothing was changed yet). A Parse must
        repeat the unnamed statement's (see _reusable_unnamed)."""
        head = M.BIND_COMPLETE
        if type(events[0]) is P.Parse:
            if len(events) < 4 or self._reusable_unnamed(events[0]) is None:
                return None
            events, head = events[1:], M.PARSE_COMPLETE + M.BIND_COMPLETE
        bind, execute = events[0], events[-2]
        describe = events[1] if len(events) == 4 else None
        if type(bind) is not P.Bind or type(execute) is not P.Execute or (
                describe is not None and (type(describe) is not P.Describe or describe.kind != b"P" or describe.name)):
            return None
        prepared = self.statements.get(bind.statement)
        if (prepared is None or prepared.busy or prepared.sqlite is None or bind.portal or execute.portal
                or execute.max_rows or self.portals or self.skipping or self.failed or self.explicit
                or self.begin_pending):
            return None
        described = prepared.described.get(tuple(bind.result_formats))
        stmt = prepared.sqlite
        if described is None or self.conn.in_transaction or not stmt.readonly:
            return None
        oids, params, formats = prepared.param_oids, bind.params, bind.param_formats
        if len(params) != len(oids) or len(formats) not in (0, 1, len(oids)):
            return None
        try:
            if head is not M.BIND_COMPLETE:
                self._note_reused(prepared.front)
            codes = formats if len(formats) > 1 else repeat(formats[0] if formats else 0)
            values = list(map(C.decode_param, params, oids, codes))
            stmt.bind_all(values)
        except Exception:  # noqa: BLE001 - the general path reports it (22P02, ...)
            return None
        out = _Output(self.flush)
        out.append(head)
        if describe is not None:
            out.append(described[2])
        timed = self.on_statement is not None
        if timed:
            self.last_sqlstate, started = None, time.perf_counter()
        try:
            self._run_to_end(prepared.front, stmt, described[1], out)
        except PgError as error:
            self._error(error, out)
        else:
            if self.wire_loop is not None:
                self._loop_register(prepared, bind, described)
        if timed:
            self.on_statement((time.perf_counter() - started) * 1000.0, self.last_sqlstate)
        out.append(M.ready_for_query(self.status()))
        return out.take()

    def _run_to_end(self, front, stmt, encoders, out):
        """Step a bound statement to its end: DataRows, CommandComplete, reset
        (what _run_portal does for an unlimited portal whose description is
        known, without the portal). PgError, statement reset, on failure."""
        rows = 0
        self.running = True
        try:
            if self._loop_step_error is not None:
                error, self._loop_step_error = self._loop_step_error, None
                raise error
            while True:
                batch = stmt.fetchmany(FETCH_ROWS)
                if batch:
                    out.rows(encode_rows(batch, encoders))
                    rows += len(batch)
                if len(batch) < FETCH_ROWS:
                    break
        except Exception as exc:  # noqa: BLE001 - binding SQLiteError, as _fetch
            try:
                stmt.reset()
            except Exception:  # noqa: BLE001 - the error is reported below
                pass
            raise self._sqlite_error(exc, front) from None
        finally:
            self.running = False
        out.append(M.select_complete(rows) if front.verb == "SELECT" else M.command_complete(self._tag(front, rows)))
        stmt.reset()  # ends SQLite's read transaction now

    # -- the native round-trip loop (native/wireloop.c) ---------------------------------------
    def open_wire_loop(self, max_message_bytes: int):
        """The session's native loop (None when the build or the connection
        has none, or the fast paths are off); messages over max_message_bytes
        are left to Python, which refuses them."""
        loop_type = getattr(_core, "WireLoop", None)
        if self.wire_loop is None and self.fast_paths and loop_type is not None and isinstance(self.conn, _core.Connection):
            self.wire_loop = loop_type(self.conn, max_message_bytes)
        return self.wire_loop

    def loop_may_serve(self) -> bool:
        """Whether the loop may answer the next batches: the session state
        _run_prepared_fast requires (idle, no portals, no error to skip past),
        the authorizer unchanged since the entries were registered, and
        something registered."""
        if not self._loop_registered or getattr(self.conn, "ended_with", None) is not None:
            return False  # (an ended session: Python answers its batches with the error that ended it)
        if self._watch_authorizer:
            self._check_authorizer()  # a change forgets the entries
        return bool(self._loop_registered) and not (
            self.portals or self.skipping or self.failed or self.explicit or self.begin_pending
            or self.conn.in_transaction)

    def loop_served(self, latencies, reused):
        """The loop answered len(latencies) statements (`reused` of them after
        a Parse): counted and timed as the fast path does."""
        for _ in range(reused):
            try:
                self._note_reuse()
            except Exception:  # noqa: BLE001 - ended meanwhile: the next statement gets the error
                break
        if self.on_statement is not None:
            for ms in latencies:
                self.on_statement(ms, None)

    def loop_step_failed(self, code, extended, message):
        """The loop's step of the batch it hands back failed: the Python path
        running that batch reports this error (a cancel is not lost to a re-run)."""
        self._loop_step_error = _core.SQLiteError(code, extended, message)

    def _loop_register(self, prepared, bind, described):
        """Tell the loop about a statement _run_prepared_fast just served, when
        its command tag, parameters (in these formats) and columns are the loop's."""
        key = (bind.statement, tuple(bind.result_formats))
        if key in self._loop_registered or prepared.front.verb != "SELECT":
            return
        refused = (key[1], tuple(bind.param_formats))
        if refused in prepared.loop_refused:
            return
        text, binary = W.param_kinds(prepared.param_oids)
        columns = W.column_kinds(described[1])
        formats = bind.param_formats
        used = [(binary if (formats[i] if len(formats) > 1 else formats[0]) else text)[i] if formats else text[i]
                for i in range(len(text))]
        if columns is None or 0 in used or len(used) > W.MAX_PARAMS:
            prepared.loop_refused.add(refused)
            return
        parse = W.parse_body(*prepared.parsed) if not prepared.name and prepared.parsed is not None else None
        entry = (prepared.sqlite, prepared.name, parse, W.result_formats(bind.result_formats), described[2],
                 text, binary, columns, self._authorizer_epoch)
        if not self.wire_loop.register(*entry):
            self._forget_loop()  # the table is full: start over with what is used now
            if not self.wire_loop.register(*entry):
                return
        self._loop_registered.add(key)

    def _forget_loop(self, prepared=None):
        """The loop's entries go: all of them, or those of `prepared`."""
        if not self._loop_registered:
            return
        if prepared is None:
            self.wire_loop.clear()
            self._loop_registered.clear()
        elif prepared.sqlite is not None:
            self.wire_loop.unregister(prepared.sqlite)
            self._loop_registered = {key for key in self._loop_registered if key[0] != prepared.name}

    def _error(self, error: PgError, out):
        self.last_sqlstate = error.code
        if self.explicit or self.conn.in_transaction:
            self.failed = True
        out.append(error.encode())

    def _check_not_failed(self, front):
        if self.failed and front.kind not in ("rollback", "commit"):
            raise PgError(S.IN_FAILED_SQL_TRANSACTION,
                          "current transaction is aborted, commands ignored until end of transaction block")

    # -- simple query ----------------------------------------------------------------------
    def _simple_query(self, sql, out):
        try:
            literal = sqlfront.literal_template(sql)
            if literal is None or not self.fast_paths or not self._run_literal(sql, literal, out):
                self._run_translated(sqlfront.translate(sql, self.ctx), out)
        except PgError as error:
            self._error(error, out)
        out.append(M.ready_for_query(self.status()))

    def _run_literal(self, sql, literal, out) -> bool:
        """Run sql through the compiled statement of its literal template
        (compiling and keeping it on first sight); False when sql is not a
        plain single statement or its template does not compile (the caller
        then takes the general path, which reports any error as usual)."""
        template, values = literal
        if self._watch_authorizer:
            self._check_authorizer()
        prepared = self._literal_statements.get(template)
        if prepared is None:
            front = sqlfront.plain_statement(sql)
            if front is None:
                return False
            try:
                stmt = self._prepare(sqlfront.literal_template(front.sql)[0], front)
            except PgError:
                return False
            if stmt is None or stmt.param_count != len(values):
                if stmt is not None:
                    stmt.finalize()
                return False
            prepared = Prepared("", front, stmt, [], self._columns(front, stmt))
            if len(self._literal_statements) >= self.literal_statements_max:
                self._literal_statements.pop(next(iter(self._literal_statements))).sqlite.finalize()
            self._literal_statements[template] = prepared
        else:
            self._note_reused(prepared.front)
        self._check_not_failed(prepared.front)
        stmt = prepared.sqlite
        self._begin_if_pending(stmt)
        try:
            stmt.bind_all(values)
        except Exception as exc:  # noqa: BLE001 - binding SQLiteError
            raise self._sqlite_error(exc, prepared.front) from None
        described = prepared.described.get((0,))
        if described is None:  # first run (or no result rows): the general way, which caches it
            self._run_portal(Portal("", prepared, stmt, False, [0]), 0, out, describe=True)
        else:
            out.append(described[2])
            self._run_to_end(prepared.front, stmt, described[1], out)
        return True

    def _note_reused(self, front):
        """A compiled statement serves again: checked and counted as if compiled."""
        if self._note_reuse is not None:
            try:
                self._note_reuse()
            except Exception as exc:  # noqa: BLE001 - the session was ended (a PgError) or similar
                raise self._sqlite_error(exc, front) from None

    def _drop_literal_statements(self):
        for prepared in self._literal_statements.values():
            prepared.sqlite.finalize()
        self._literal_statements.clear()

    def _run_translated(self, fronts, out):
        if not fronts:
            out.append(M.EMPTY_QUERY_RESPONSE)
        for front in fronts:
            self._check_not_failed(front)
            if front.kind != "sql":
                self._session_command(front, out, describe=True)
                continue
            if front.param_count:
                raise PgError(S.UNDEFINED_PARAMETER, f"there is no parameter ${front.param_count}")
            # A read-only statement's first rows come with its compilation (one
            # GIL release for both) unless a BEGIN must be issued before it runs.
            if self.begin_pending:
                stmt, first_rows = self._prepare(front.sql, front), None
            else:
                stmt, first_rows = self._prepare(front.sql, front, prefetch=True)
            try:
                if stmt is None:
                    out.append(M.EMPTY_QUERY_RESPONSE)
                    continue
                self._begin_if_pending(stmt)
                prepared = Prepared("", front, stmt, [], self._columns(front, stmt))
                portal = Portal("", prepared, stmt, False, [0])
                if first_rows is not None:
                    portal.pending, portal.done = first_rows, len(first_rows) < FETCH_ROWS
                self._run_portal(portal, 0, out, describe=True)
            finally:
                if stmt is not None:
                    stmt.finalize()

    # -- extended query --------------------------------------------------------------------
    def _parse(self, event, out):
        if event.name and event.name in self.statements:
            raise PgError(S.DUPLICATE_PSTATEMENT, f'prepared statement "{event.name}" already exists')
        current = self._reusable_unnamed(event)
        if current is not None:
            self._note_reused(current.front)
            self._check_not_failed(current.front)
            out.append(M.PARSE_COMPLETE)
            return
        fronts = self._translate(event.sql)
        if len(fronts) > 1:
            raise PgError(S.SYNTAX_ERROR, "cannot insert multiple commands into a prepared statement")
        front = fronts[0] if fronts else sqlfront.FrontStatement("empty")
        self._check_not_failed(front)
        stmt = None
        if front.kind == "sql":
            stmt = self._prepare(front.sql, front)
            if stmt is None:
                front = sqlfront.FrontStatement("empty")
        count = max(front.param_count, stmt.param_count if stmt is not None else 0, len(event.param_oids))
        oids = []
        for index in range(count):
            given = event.param_oids[index] if index < len(event.param_oids) else 0
            oids.append(given or front.param_hints.get(index + 1, C.TEXT))
        columns = self._columns(front, stmt) if stmt is not None else (
            [(front.setting or "setting", C.TEXT)] if front.kind == "show" else None)
        if not event.name and "" in self.statements:
            self._drop_statement("")
        prepared = self.statements[event.name] = Prepared(event.name, front, stmt, oids, columns)
        if not event.name and stmt is not None and "*" not in event.sql:
            # `*`: a column added later would be missing from the reused statement.
            prepared.parsed = (event.sql, list(event.param_oids))
        out.append(M.PARSE_COMPLETE)

    def _reusable_unnamed(self, event):
        """The unnamed statement, when Parse `event` repeats the Parse that made
        it (same text and declared types; pgbench -M extended, drivers' unnamed
        statements) and it is free: reused instead of translated and compiled
        again. SQLite recompiles it by itself if the schema changed meanwhile."""
        if event.name or not self.fast_paths:
            return None
        if self._watch_authorizer:
            self._check_authorizer()
        current = self.statements.get("")
        if (current is None or current.parsed is None or current.busy or current.parsed[0] != event.sql
                or current.parsed[1] != event.param_oids):
            return None
        return current

    def _translate(self, sql):
        """sqlfront.translate, remembered per text for single SQL statements
        until a setting or the schema changes (both feed the translation)."""
        front = self._translations.get(sql)
        if front is not None:
            return [front]
        fronts = sqlfront.translate(sql, self.ctx)
        if len(fronts) == 1 and fronts[0].kind == "sql" and self.fast_paths:
            if len(self._translations) >= LITERAL_STATEMENTS:
                self._translations.clear()
            self._translations[sql] = fronts[0]
        return fronts

    def _schema_changed(self):
        """This session ran DDL: forget what was derived from the old schema."""
        self._columns_cache.clear()
        self._drop_literal_statements()
        self._translation_inputs_changed()

    def _check_authorizer(self):
        if self.conn.authorizer_epoch != self._authorizer_epoch:
            self._authorizer_epoch = self.conn.authorizer_epoch
            self._drop_literal_statements()
            self._translation_inputs_changed()

    def _translation_inputs_changed(self):
        """Settings or schema changed: translations (and the unnamed statement
        compiled from one) may come out differently now."""
        self._forget_loop()
        self._translations.clear()
        unnamed = self.statements.get("")
        if unnamed is not None:
            unnamed.parsed = None

    def _bind(self, event, out):
        prepared = self.statements.get(event.statement)
        if prepared is None:
            raise PgError(S.UNDEFINED_PSTATEMENT, f'prepared statement "{event.statement}" does not exist')
        self._check_not_failed(prepared.front)
        if event.portal and event.portal in self.portals:
            raise PgError(S.DUPLICATE_CURSOR, f'portal "{event.portal}" already exists')
        oids = prepared.param_oids
        if len(event.params) != len(oids):
            raise PgError(S.PROTOCOL_VIOLATION, f"bind message supplies {len(event.params)} parameters, "
                                                f"but prepared statement \"{prepared.name}\" requires {len(oids)}")
        formats = event.param_formats
        if len(formats) not in (0, 1, len(oids)):
            raise PgError(S.PROTOCOL_VIOLATION, f"bind message has {len(formats)} parameter formats "
                                                f"but {len(oids)} parameters")
        if len(formats) == 1:
            formats = formats * len(oids)
        values = [C.decode_param(data, oid, formats[i] if formats else 0)
                  for i, (data, oid) in enumerate(zip(event.params, oids))]
        if event.portal == "" and "" in self.portals:
            self._close_portal(self.portals.pop(""))
        stmt, own = prepared.sqlite, False
        if stmt is not None:
            if prepared.busy:
                stmt, own = self._prepare(prepared.front.sql, prepared.front), True
            else:
                prepared.busy = True
            try:
                stmt.reset()
                stmt.bind_all(values)
            except Exception as exc:  # noqa: BLE001 - binding SQLiteError
                self._release(prepared, stmt, own)
                raise self._sqlite_error(exc, prepared.front) from None
        self.portals[event.portal] = Portal(event.portal, prepared, stmt, own, event.result_formats)
        out.append(M.BIND_COMPLETE)

    def _describe(self, event, out):
        if event.kind == b"S":
            prepared = self.statements.get(event.name)
            if prepared is None:
                raise PgError(S.UNDEFINED_PSTATEMENT, f'prepared statement "{event.name}" does not exist')
            out.append(M.parameter_description(prepared.param_oids))
            if prepared.columns is None:
                out.append(M.NO_DATA)
                return
            # Freeze undeclared columns as text: later portals must match this description.
            prepared.columns = [(name, oid or C.TEXT) for name, oid in prepared.columns]
            out.append(M.row_description([(n, o, C.TYPE_SIZES.get(o, -1), 0) for n, o in prepared.columns]))
            return
        portal = self.portals.get(event.name)
        if portal is None:
            raise PgError(S.UNDEFINED_CURSOR, f'portal "{event.name}" does not exist')
        if portal.prepared.columns is None:
            out.append(M.NO_DATA)
            return
        self._resolve_fields(portal)
        out.append(portal.row_description)

    def _execute(self, event, out):
        portal = self.portals.get(event.portal)
        if portal is None:
            raise PgError(S.UNDEFINED_CURSOR, f'portal "{event.portal}" does not exist')
        front = portal.prepared.front
        self._check_not_failed(front)
        if front.kind == "empty":
            out.append(M.EMPTY_QUERY_RESPONSE)
        elif front.kind != "sql":
            self._session_command(front, out, describe=False)
        else:
            if not portal.started:
                portal.started = True
                self._begin_if_pending(portal.stmt)
            self._run_portal(portal, event.max_rows, out, describe=False)

    def _sync(self, out):
        self.skipping = False
        if not (self.explicit or self.conn.in_transaction):
            for portal in list(self.portals.values()):
                self._close_portal(portal)
            self.portals.clear()
        out.append(M.ready_for_query(self.status()))

    def _close(self, event, out):
        if event.kind == b"S":
            if event.name in self.statements:
                self._drop_statement(event.name)
        else:
            portal = self.portals.pop(event.name, None)
            if portal is not None:
                self._close_portal(portal)
        out.append(M.CLOSE_COMPLETE)

    # -- running a statement ---------------------------------------------------------------
    def _run_portal(self, portal, max_rows, out, describe):
        """Send rows (up to max_rows, 0 = all) then CommandComplete or PortalSuspended."""
        prepared = portal.prepared
        stmt = portal.stmt
        front = prepared.front
        if prepared.columns is not None:
            self._resolve_fields(portal)
            if describe:
                out.append(portal.row_description)
        encoders = portal.encoders
        sent = 0
        try:
            while True:
                want = min(FETCH_ROWS, max_rows - sent) if max_rows else FETCH_ROWS
                if portal.pending:
                    rows, portal.pending = portal.pending[:want], portal.pending[want:]
                elif portal.done:
                    break
                else:
                    rows = self._fetch(stmt, want, front)
                    portal.done = len(rows) < want
                if rows:
                    if encoders is None:
                        raise PgError(S.INTERNAL_ERROR, "statement returned rows but was described without")
                    out.rows(encode_rows(rows, encoders))
                    sent += len(rows)
                    portal.rows += len(rows)
                if max_rows and sent >= max_rows and not (portal.done and not portal.pending):
                    out.append(M.PORTAL_SUSPENDED)
                    return
        except PgError:
            self._close_portal(portal)
            raise
        out.append(M.command_complete(self._tag(front, portal.rows)))
        if portal.stmt is not None:
            portal.stmt.reset()  # ends SQLite's read transaction now, not at Sync
        if front.verb.startswith(_DDL_VERBS):
            self._schema_changed()

    def _fetch(self, stmt, count, front):
        # `running` tells cancel() to interrupt; a late interrupt is harmless:
        # SQLite clears the flag when the next statement starts on an idle connection.
        self.running = True
        try:
            if self._loop_step_error is not None:
                error, self._loop_step_error = self._loop_step_error, None
                raise error
            return stmt.fetchmany(count)
        except Exception as exc:  # noqa: BLE001 - binding SQLiteError
            raise self._sqlite_error(exc, front) from None
        finally:
            self.running = False

    def _resolve_fields(self, portal):
        if portal.fields is not None:
            return
        cached = portal.prepared.described.get(tuple(portal.formats))
        if cached is not None:
            portal.fields, portal.encoders, portal.row_description = cached
            return
        columns = portal.prepared.columns
        if any(oid is None for _, oid in columns) and not portal.done and not portal.pending:
            # Undeclared columns: type them from the first rows' values.
            portal.pending = self._fetch(portal.stmt, FETCH_ROWS, portal.prepared.front)
            portal.done = len(portal.pending) < FETCH_ROWS
        resolved = []
        for index, (name, oid) in enumerate(columns):
            if oid is None:
                oid = next((C.oid_for_value(row[index]) for row in portal.pending if row[index] is not None), C.TEXT)
            resolved.append((name, oid))
        formats = portal.formats
        if len(formats) not in (0, 1, len(resolved)):
            raise PgError(S.PROTOCOL_VIOLATION, f"bind message has {len(formats)} result formats "
                                                f"but query has {len(resolved)} columns")
        per_column = [formats[0] if len(formats) == 1 else (formats[i] if formats else 0) for i in range(len(resolved))]
        portal.fields = [(n, o, C.TYPE_SIZES.get(o, -1), f) for (n, o), f in zip(resolved, per_column)]
        portal.encoders = [C.encoder(o, f) for (_, o), f in zip(resolved, per_column)]
        portal.row_description = M.row_description(portal.fields)
        if all(oid is not None for _, oid in columns):  # typed by declaration: same for every portal
            portal.prepared.described[tuple(portal.formats)] = (portal.fields, portal.encoders, portal.row_description)

    def _tag(self, front, rows):
        verb = front.verb
        if verb == "INSERT":
            return f"INSERT 0 {self.conn.changes()}"
        if verb in ("UPDATE", "DELETE"):
            return f"{verb} {self.conn.changes()}"
        if verb == "SELECT" or (front.returns_rows and verb not in ("TRUNCATE TABLE",)):
            return f"SELECT {rows}"
        return verb

    def _prepare(self, sql, front=None, prefetch=False):
        """The SQLite statement for sql; with prefetch, (statement, its first
        FETCH_ROWS rows if it is read-only else None)."""
        try:
            if prefetch:
                self.running = True  # the statement may run: cancel() interrupts it
                stmt, tail, rows = self.conn.prepare_and_fetch(sql, FETCH_ROWS)
            else:
                stmt, tail = self.conn.prepare(sql)
        except Exception as exc:  # noqa: BLE001 - binding SQLiteError
            raise self._sqlite_error(exc, front) from None
        finally:
            self.running = False
        if tail.strip():
            if stmt is not None:
                stmt.finalize()
            raise PgError(S.SYNTAX_ERROR, "cannot insert multiple commands into a prepared statement")
        return (stmt, rows) if prefetch else stmt

    def _sqlite_error(self, exc, front):
        if isinstance(exc, PgError):
            return exc
        if not hasattr(exc, "code"):
            return PgError(S.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        error = from_sqlite(exc)
        near = _NEAR.search(error.message)
        if near and front is not None:
            # ErrorResponse P: 1-based character position in the client's statement.
            found = front.source.lower().find(near.group(1).lower())
            error.position = found + 1 if found >= 0 else None
        if error.code == S.READ_ONLY_SQL_TRANSACTION and front is not None:
            error.message = f"cannot execute {front.verb or 'statement'} in a read-only transaction"
        if front is not None and front.verb.startswith(_DDL_VERBS):
            self._schema_changed()
        return error

    def _columns(self, front, stmt):
        """[(name, oid or None)] for a statement returning rows, else None."""
        count = stmt.column_count
        if not count:
            return None
        names = list(stmt.column_names)
        if len(front.result_names) == count:
            names = [pg or sq for pg, sq in zip(front.result_names, names)]
        oids = [C.oid_for_decltype(d) for d in stmt.column_decltypes]
        if len(front.result_hints) == count:
            oids = [oid if oid is not None else hint for oid, hint in zip(oids, front.result_hints)]
        return list(zip(names, oids))

    def _columns_of(self, table) -> dict:
        """Column name -> OID of `table` (for parameter type inference)."""
        cached = self._columns_cache.get(table)
        if cached is None:
            cached = {}
            try:
                stmt, _ = self.conn.prepare(f"PRAGMA table_info({sqlfront._quote(table)})")
                for row in stmt.fetchmany(10000):
                    cached[str(row[1]).lower()] = C.oid_for_decltype(row[2]) or C.TEXT
                stmt.finalize()
            except Exception:  # noqa: BLE001 - unknown table: no hints
                cached = {}
            self._columns_cache[table] = cached
        return cached

    def _release(self, prepared, stmt, own):
        if own:
            stmt.finalize()
        else:
            prepared.busy = False

    def _close_portal(self, portal):
        if portal.stmt is not None:
            try:
                portal.stmt.reset()
            except Exception:  # noqa: BLE001 - the error was reported when it happened
                pass
            self._release(portal.prepared, portal.stmt, portal.own_stmt)
            portal.stmt = None
        if self.portals.get(portal.name) is portal:
            del self.portals[portal.name]

    def _drop_statement(self, name):
        prepared = self.statements.pop(name)
        self._forget_loop(prepared)  # before its statement is finalized
        if prepared.sqlite is not None and not prepared.busy:
            prepared.sqlite.finalize()

    def _acquire_write_lock(self):
        if self.write_lock is None or self.holds_write_lock:
            return
        self.cancel_requested = False
        waited = 0.0
        while not self.write_lock.acquire(timeout=0.05):
            waited += 0.05
            if self.cancel_requested:
                raise PgError(S.QUERY_CANCELED, "canceling statement due to user request")
            if waited >= WRITE_LOCK_TIMEOUT:
                raise PgError(S.LOCK_NOT_AVAILABLE, "could not obtain the database write lock",
                              hint="Another session has held a write transaction open for a long time.")
        self.holds_write_lock = True

    def _release_write_lock(self):
        if self.holds_write_lock and not self.conn.in_transaction:
            self.holds_write_lock = False
            self.write_lock.release()

    def _begin_if_pending(self, stmt):
        """Issue the block's SQLite BEGIN before its first statement: IMMEDIATE
        when that statement writes, so a read-then-write upgrade cannot fail
        with SQLITE_BUSY_SNAPSHOT midway (TPC-B's UPDATE-first blocks wait for
        the write lock instead); DEFERRED for reads, so readers stay concurrent."""
        if self.begin_pending:
            self.begin_pending = False
            if not self.conn.in_transaction:
                if stmt.readonly:
                    self._run_sql("BEGIN", None)
                else:
                    self._acquire_write_lock()
                    self._run_sql("BEGIN IMMEDIATE", None)
        elif not stmt.readonly:
            self._acquire_write_lock()  # held until the transaction (or autocommit statement) ends

    # -- session commands ------------------------------------------------------------------
    def _run_sql(self, sql, front):
        stmt = self._prepare(sql)
        try:
            self.running = True
            while stmt.step():
                pass
        except Exception as exc:  # noqa: BLE001 - binding SQLiteError
            raise self._sqlite_error(exc, front) from None
        finally:
            self.running = False
            stmt.finalize()

    def _session_command(self, front, out, describe):
        kind = front.kind
        tag = front.verb
        if kind in ("set", "reset", "discard"):
            self._translation_inputs_changed()  # version() and current_setting() become literals
        if kind == "begin":
            if not self.explicit and not self.conn.in_transaction:
                self.begin_pending = True
            self.explicit = True
        elif kind in ("commit", "rollback"):
            if self.failed:
                tag = "ROLLBACK"
            if self.conn.in_transaction:
                self._run_sql("ROLLBACK" if tag == "ROLLBACK" else "COMMIT", front)
            self.explicit = self.failed = self.begin_pending = False
        elif kind == "set":
            name = _canonical(front.setting)
            value = front.value
            if name == "client_encoding":
                value = P.normalise_client_encoding(value)
                if value is None:
                    raise PgError(S.INVALID_PARAMETER_VALUE, f'invalid value for parameter "client_encoding": "{front.value}"')
            self.settings[name] = value
            if name in REPORTED:
                out.append(M.parameter_status(name, value))
        elif kind == "reset":
            names = list(self.settings) if front.setting == "all" else [_canonical(front.setting)]
            for name in names:
                if name in self.defaults and self.settings.get(name) != self.defaults[name]:
                    self.settings[name] = self.defaults[name]
                    if name in REPORTED:
                        out.append(M.parameter_status(name, self.settings[name]))
                elif name not in self.defaults:
                    self.settings.pop(name, None)
        elif kind == "show":
            self._show(front, out, describe)
            return
        elif kind == "role":  # CREATE/ALTER/DROP USER|ROLE: the backend's job (rustymt.engine.pdb_users)
            manage = getattr(self.db, "manage_users", None)
            if manage is None:
                raise PgError(S.FEATURE_NOT_SUPPORTED, f"{tag} is not supported by this server")
            for notice in manage(front.value, self.explicit or self.conn.in_transaction):
                out.append(notice.encode(b"N"))
        elif kind == "discard":
            if self.explicit:
                raise PgError(S.ACTIVE_SQL_TRANSACTION, "DISCARD ALL cannot run inside a transaction block")
            for portal in list(self.portals.values()):
                self._close_portal(portal)
            for name in list(self.statements):
                self._drop_statement(name)
            self._drop_literal_statements()
            self.settings.clear()
            self.settings.update(self.defaults)
        elif kind == "deallocate":
            if front.setting is None:
                for name in [n for n in self.statements if n]:
                    self._drop_statement(name)
            elif front.setting in self.statements:
                self._drop_statement(front.setting)
            else:
                raise PgError(S.UNDEFINED_PSTATEMENT, f'prepared statement "{front.setting}" does not exist')
        out.append(M.command_complete(tag))

    def _show(self, front, out, describe):
        name = front.setting
        if name == "all":
            rows = [(key, value, "") for key, value in sorted(self.settings.items())]
            fields = [("name", C.TEXT, -1, 0), ("setting", C.TEXT, -1, 0), ("description", C.TEXT, -1, 0)]
        else:
            key = _canonical(name)
            if key not in self.settings:
                raise PgError(S.UNDEFINED_OBJECT, f'unrecognized configuration parameter "{name}"')
            rows = [(self.settings[key],)]
            fields = [(name, C.TEXT, -1, 0)]
        if describe:
            out.append(M.row_description(fields))
        out.append(encode_rows(rows, [C.text_encoder(C.TEXT)] * len(fields)))
        out.append(M.command_complete("SHOW"))


_CANONICAL = {name.lower(): name for name in DEFAULT_SETTINGS}


def _canonical(name: str) -> str:
    return _CANONICAL.get(name.lower(), name.lower())


class _Output(list):
    """Collects outgoing messages (a list: append() is the plain list's); row
    data goes through rows(), which hands what was collected to `flush` once
    it passes FLUSH_BYTES, so a big result is written while it is produced."""
    __slots__ = ("size", "flush")

    def __init__(self, flush):  # list.__new__ made it empty
        self.size, self.flush = 0, flush

    def rows(self, data: bytes):
        self.append(data)
        self.size += len(data)
        if self.size >= FLUSH_BYTES and self.flush is not None:
            self.flush(self.take())

    def take(self) -> bytes:
        data = b"".join(self)
        self.clear()
        self.size = 0
        return data
