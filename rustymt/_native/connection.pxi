# The engine's SQLite binding: SQLiteError, Connection, Statement.
# Every entry point makes the calling thread work for the connection's tenant
# (allocator and page cache charge it); statement execution runs with the GIL
# released between rmt_exec_enter/leave (the scheduler's acquire/release).
import os
from collections.abc import Mapping

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint32_t
from libc.stdlib cimport realloc, free
from libc.string cimport strlen, memcpy

# Column type codes returned by Statement.row_types().
SQLITE_INTEGER_TYPE = 1
SQLITE_FLOAT_TYPE = 2
SQLITE_TEXT_TYPE = 3
SQLITE_BLOB_TYPE = 4
SQLITE_NULL_TYPE = 5

# Authorizer action codes (sqlite3.h) for set_authorizer rules.
AUTH_ACTIONS = {
    "CREATE_INDEX": 1, "CREATE_TABLE": 2, "CREATE_TEMP_INDEX": 3, "CREATE_TEMP_TABLE": 4,
    "CREATE_TEMP_TRIGGER": 5, "CREATE_TEMP_VIEW": 6, "CREATE_TRIGGER": 7, "CREATE_VIEW": 8,
    "DELETE": 9, "DROP_INDEX": 10, "DROP_TABLE": 11, "DROP_TEMP_INDEX": 12,
    "DROP_TEMP_TABLE": 13, "DROP_TEMP_TRIGGER": 14, "DROP_TEMP_VIEW": 15, "DROP_TRIGGER": 16,
    "DROP_VIEW": 17, "INSERT": 18, "PRAGMA": 19, "READ": 20, "SELECT": 21, "TRANSACTION": 22,
    "UPDATE": 23, "ATTACH": 24, "DETACH": 25, "ALTER_TABLE": 26, "REINDEX": 27, "ANALYZE": 28,
    "CREATE_VTABLE": 29, "DROP_VTABLE": 30, "FUNCTION": 31, "SAVEPOINT": 32, "RECURSIVE": 33,
}
# Authorizer decisions.
AUTH_ALLOW = 0
AUTH_DENY = 1
AUTH_IGNORE = 2
_AUTH_RESULTS = {"allow": AUTH_ALLOW, "deny": AUTH_DENY, "ignore": AUTH_IGNORE,
                 AUTH_ALLOW: AUTH_ALLOW, AUTH_DENY: AUTH_DENY, AUTH_IGNORE: AUTH_IGNORE}


class SQLiteError(Exception):
    """An error from the engine's SQLite: .code (primary result code),
    .extended_code and .message (sqlite3_errmsg)."""

    def __init__(self, code, extended_code, message):
        super().__init__(message)
        self.code = code
        self.extended_code = extended_code
        self.message = message

    def __str__(self):
        return f"{self.message} (sqlite code {self.extended_code})"


cdef object _error(sqlite3 *db, int rc):
    cdef int extended = rc
    cdef const char *msg
    if db != NULL:
        extended = sqlite3_extended_errcode(db)
        if (extended & 0xff) != (rc & 0xff):
            extended = rc
        msg = sqlite3_errmsg(db)
    else:
        msg = sqlite3_errstr(rc)
    return SQLiteError(rc & 0xff, extended, msg.decode("utf-8", "replace"))


# ---- authorizer: a rule table evaluated in C ------------------------------

cdef struct auth_rule:
    int action          # action code, -1 = any
    char *name          # object name (arg1, or arg2 when arg1 is NULL); NULL = any
    int result          # SQLITE_OK / SQLITE_DENY / SQLITE_IGNORE

cdef struct auth_table:
    int count
    auth_rule *rules


cdef int _authorize(void *arg, int action, const char *arg1, const char *arg2,
                    const char *dbname, const char *trigger) noexcept nogil:
    cdef auth_table *table = <auth_table *>arg
    cdef const char *name = arg1 if arg1 != NULL else arg2
    cdef int i
    for i in range(table.count):
        if table.rules[i].action >= 0 and table.rules[i].action != action:
            continue
        if table.rules[i].name != NULL and (name == NULL or sqlite3_stricmp(table.rules[i].name, name) != 0):
            continue
        return table.rules[i].result
    return SQLITE_OK


cdef void _free_auth_table(auth_table *table) noexcept:
    cdef int i
    if table == NULL:
        return
    for i in range(table.count):
        PyMem_Free(table.rules[i].name)
    PyMem_Free(table.rules)
    PyMem_Free(table)


cdef auth_table *_build_auth_table(rules) except NULL:
    rules = list(rules)
    cdef auth_table *table = <auth_table *>PyMem_Malloc(sizeof(auth_table))
    if table == NULL:
        raise MemoryError()
    table.count = 0
    table.rules = <auth_rule *>PyMem_Malloc(sizeof(auth_rule) * max(len(rules), 1))
    if table.rules == NULL:
        PyMem_Free(table)
        raise MemoryError()
    cdef bytes encoded
    try:
        for rule in rules:
            action, name, result = rule
            if isinstance(action, str):
                action = AUTH_ACTIONS[action.upper()]
            if result not in _AUTH_RESULTS:
                raise ValueError(f"authorizer result must be allow/deny/ignore, not {result!r}")
            table.rules[table.count].action = -1 if action is None else int(action)
            table.rules[table.count].result = _AUTH_RESULTS[result]
            table.rules[table.count].name = NULL
            table.count += 1
            if name is not None:
                encoded = str(name).encode("utf-8")
                table.rules[table.count - 1].name = <char *>PyMem_Malloc(len(encoded) + 1)
                if table.rules[table.count - 1].name == NULL:
                    raise MemoryError()
                memcpy(table.rules[table.count - 1].name, <const char *>encoded, len(encoded) + 1)
    except BaseException:
        _free_auth_table(table)
        raise
    return table


# ---- row batches: values copied out of SQLite without the GIL ----------------
# Layout per value: one tag byte (SQLITE_INTEGER/FLOAT/TEXT/BLOB/NULL), then
# 8 bytes (int64 / double) or a uint32 length + the bytes (text / blob).

cdef enum:
    BATCH_BYTES = 262144   # a batch stops growing past this (wide rows)

cdef struct rowbuf:
    char *data
    size_t size
    size_t cap


cdef int _reserve(rowbuf *buf, size_t extra) noexcept nogil:
    cdef size_t cap = buf.cap if buf.cap else 1024
    cdef char *grown
    if buf.size + extra <= buf.cap:
        return 0
    while cap < buf.size + extra:
        cap *= 2
    grown = <char *>realloc(buf.data, cap)
    if grown == NULL:
        return -1
    buf.data = grown
    buf.cap = cap
    return 0


cdef int _put_row(rowbuf *buf, sqlite3_stmt *s, int ncols) noexcept nogil:
    cdef int i, kind
    cdef sqlite3_int64 integer
    cdef double real
    cdef const void *data
    cdef uint32_t nbytes
    for i in range(ncols):
        kind = sqlite3_column_type(s, i)
        if kind == SQLITE_INTEGER or kind == SQLITE_FLOAT:
            if _reserve(buf, 9) != 0:
                return -1
            buf.data[buf.size] = <char>kind
            if kind == SQLITE_INTEGER:
                integer = sqlite3_column_int64(s, i)
                memcpy(buf.data + buf.size + 1, &integer, 8)
            else:
                real = sqlite3_column_double(s, i)
                memcpy(buf.data + buf.size + 1, &real, 8)
            buf.size += 9
        elif kind == SQLITE_TEXT or kind == SQLITE_BLOB:
            # text first, then bytes (SQLite's documented order); a NULL
            # pointer (empty blob, or no memory) is stored as empty, as row() does
            if kind == SQLITE_TEXT:
                data = sqlite3_column_text(s, i)
            else:
                data = sqlite3_column_blob(s, i)
            nbytes = <uint32_t>sqlite3_column_bytes(s, i) if data != NULL else 0
            if _reserve(buf, 5 + nbytes) != 0:
                return -1
            buf.data[buf.size] = <char>kind
            memcpy(buf.data + buf.size + 1, &nbytes, 4)
            if nbytes:
                memcpy(buf.data + buf.size + 5, data, nbytes)
            buf.size += 5 + nbytes
        else:
            if _reserve(buf, 1) != 0:
                return -1
            buf.data[buf.size] = <char>SQLITE_NULL
            buf.size += 1
    return 0


cdef enum:
    _ROWBUF_NOMEM = -1     # _step_rows: no memory for the copy (not an SQLite code)


cdef int _step_rows(sqlite3_stmt *s, rowbuf *buf, int limit, int ncols, int *got) noexcept nogil:
    """Step up to limit rows into buf (stops early past BATCH_BYTES); the last
    sqlite3_step result, SQLITE_ROW when stopped by a limit, or _ROWBUF_NOMEM."""
    cdef int rc = SQLITE_DONE
    while got[0] < limit:
        rc = sqlite3_step(s)
        if rc != SQLITE_ROW:
            break
        if _put_row(buf, s, ncols) != 0:
            return _ROWBUF_NOMEM
        got[0] += 1
        if buf.size >= BATCH_BYTES:
            break
    return rc


cdef int _decode_rows(rowbuf *buf, int count, int ncols, list rows) except -1:
    """Append `count` rows from buf to rows as tuples of None/int/float/str/bytes."""
    cdef size_t pos = 0
    cdef int r, i, kind
    cdef sqlite3_int64 integer
    cdef double real
    cdef uint32_t nbytes
    cdef tuple row
    for r in range(count):
        row = PyTuple_New(ncols)
        for i in range(ncols):
            kind = buf.data[pos]
            pos += 1
            if kind == SQLITE_INTEGER:
                memcpy(&integer, buf.data + pos, 8)
                pos += 8
                value = integer
            elif kind == SQLITE_FLOAT:
                memcpy(&real, buf.data + pos, 8)
                pos += 8
                value = real
            elif kind == SQLITE_TEXT or kind == SQLITE_BLOB:
                memcpy(&nbytes, buf.data + pos, 4)
                pos += 4
                if kind == SQLITE_TEXT:
                    value = PyUnicode_DecodeUTF8(buf.data + pos, nbytes, "replace")
                else:
                    value = PyBytes_FromStringAndSize(buf.data + pos, nbytes)
                pos += nbytes
            else:
                value = None
            Py_INCREF(value)
            PyTuple_SET_ITEM(row, i, value)
        rows.append(row)
    assert pos == buf.size
    return 0


# ---- Connection --------------------------------------------------------------

cdef class Connection:
    """One SQLite connection of the engine, working for one tenant slot."""

    cdef sqlite3 *db
    cdef rmt_exec_ctx ctx
    cdef auth_table *auth
    cdef int running          # threads inside SQLite (GIL released) on this handle
    cdef rmt_wl_signals signals   # interrupts / authorizer changes, for the wire loop (wireloop.pxi)
    cdef bint close_pending   # close() came while running: the last one out closes
    cdef readonly int tenant
    cdef readonly object path
    # Live statements, an intrusive list of borrowed pointers: each Statement
    # holds a reference to its connection and unlinks itself in __dealloc__, so
    # every pointer here is a live object. (A WeakSet cost a Python callback
    # per finalized statement: ~9% of a simple query's Python time.)
    cdef void *first_statement
    cdef object __weakref__

    def __init__(self, path, int tenant=0, bint readonly=False, vfs=None, bint create=True):
        if _state is None:
            install()
        _check_slot(tenant)
        cdef int flags = SQLITE_OPEN_URI
        if readonly:
            flags |= SQLITE_OPEN_READONLY
        else:
            flags |= SQLITE_OPEN_READWRITE
            if create:
                flags |= SQLITE_OPEN_CREATE
        cdef bytes bpath = os.fsencode(path)
        cdef bytes bvfs = vfs.encode("utf-8") if vfs is not None else None
        cdef const char *cpath = bpath
        cdef const char *cvfs = NULL if bvfs is None else <const char *>bvfs
        cdef sqlite3 *db = NULL
        cdef int rc
        self.path = path
        self.tenant = tenant
        self.ctx.tenant = tenant
        self.ctx.depth = 0
        self.ctx.busy_timeout_ms = 0
        rmt_tenant_set_current(tenant)
        with nogil:
            rc = sqlite3_open_v2(cpath, &db, flags, cvfs)
        if rc != SQLITE_OK:
            err = _error(db, rc)
            sqlite3_close_v2(db)
            raise err
        self.db = db
        sqlite3_extended_result_codes(db, 1)
        rmt_exec_attach(db, &self.ctx)

    def __dealloc__(self):
        # Statements hold a reference to their connection, so none is left.
        if self.db != NULL:
            rmt_tenant_set_current(self.tenant)
            sqlite3_close_v2(self.db)
            self.db = NULL
        _free_auth_table(self.auth)
        self.auth = NULL

    cdef sqlite3 *_db(self) except NULL:
        if self.db == NULL:
            raise SQLiteError(SQLITE_MISUSE, SQLITE_MISUSE, "connection is closed")
        rmt_tenant_set_current(self.tenant)
        return self.db

    @property
    def closed(self):
        return self.db == NULL

    def prepare(self, sql):
        """Compile the first statement of sql: (Statement | None, tail).

        None for an empty/whitespace/comment-only string; tail is the SQL text
        after the compiled statement (for multi-statement strings).
        """
        cdef sqlite3 *db = self._db()
        cdef bytes encoded = sql.encode("utf-8")
        cdef const char *start = encoded
        cdef const char *tail = NULL
        cdef sqlite3_stmt *stmt = NULL
        cdef int rc
        cdef Py_ssize_t nbytes = len(encoded)
        with nogil:
            rc = sqlite3_prepare_v2(db, start, <int>nbytes, &stmt, &tail)
        if rc != SQLITE_OK:
            raise _error(db, rc)
        rest = encoded[tail - start:].decode("utf-8") if tail != NULL else ""
        if stmt == NULL:
            return None, rest
        cdef Statement s = Statement.__new__(Statement)
        s._init(self, stmt)
        return s, rest

    def prepare_and_fetch(self, sql, int n):
        """prepare(sql), and when the statement is read-only also its first
        rows (as fetchmany(n) would return them), under ONE release of the
        GIL: (Statement | None, tail, rows or None). rows is None when
        nothing was stepped (a writing statement: the caller may need a lock
        first). Errors as prepare() and fetchmany() raise them."""
        cdef sqlite3 *db = self._db()
        cdef bytes encoded = sql.encode("utf-8")
        cdef const char *start = encoded
        cdef const char *tail = NULL
        cdef sqlite3_stmt *stmt = NULL
        cdef int rc, step_rc = SQLITE_OK, got = 0, ncols = 0
        cdef bint stepped = False
        cdef Py_ssize_t nbytes = len(encoded)
        cdef rowbuf buf
        cdef Statement s
        buf.data = NULL
        buf.size = buf.cap = 0
        self._enter_sqlite()
        try:
            with nogil:
                rc = sqlite3_prepare_v2(db, start, <int>nbytes, &stmt, &tail)
                if rc == SQLITE_OK and stmt != NULL and n > 0 and sqlite3_stmt_readonly(stmt):
                    stepped = True
                    ncols = sqlite3_column_count(stmt)
                    rmt_exec_enter(&self.ctx)
                    step_rc = _step_rows(stmt, &buf, n, ncols, &got)
                    rmt_exec_leave(&self.ctx)
            if rc != SQLITE_OK:
                self._leave_sqlite()
                raise _error(db, rc)
            rest = encoded[tail - start:].decode("utf-8") if tail != NULL else ""
            if stmt == NULL:
                self._leave_sqlite()
                return None, rest, None
            s = Statement.__new__(Statement)
            s._init(self, stmt)
            if not stepped:
                self._leave_sqlite()
                return s, rest, None
            s.stepping = True
            s._after_batch(stmt, step_rc, got)   # leaves SQLite; raises a step error
            rows = []
            if got:
                _decode_rows(&buf, got, ncols, rows)
        finally:
            free(buf.data)
        if got < n and not s.done:
            rows += s.fetchmany(n - got)   # stopped at the batch's byte budget
        return s, rest, rows

    def changes(self):
        return sqlite3_changes(self._db())

    def total_changes(self):
        return sqlite3_total_changes(self._db())

    def last_insert_rowid(self):
        return sqlite3_last_insert_rowid(self._db())

    @property
    def in_transaction(self):
        """True inside an explicit transaction (not in autocommit mode)."""
        return not sqlite3_get_autocommit(self._db())

    def interrupt(self):
        """Abort the statement running on this connection (thread-safe); a
        wire loop (wireloop.pxi) serving this connection returns to Python."""
        rmt_wl_signal_interrupt(&self.signals)
        if self.db != NULL:
            sqlite3_interrupt(self.db)

    @property
    def authorizer_epoch(self):
        """Bumped by every set_authorizer(): statements kept for reuse that
        were authorized under an older epoch must be compiled again."""
        return rmt_wl_auth_epoch(&self.signals)

    @property
    def loop_stepping(self):
        """True while a wire loop steps a statement on this connection."""
        return rmt_wl_stepping(&self.signals) != 0

    def busy_timeout(self, int ms):
        """Wait up to ms on a locked database before SQLITE_BUSY (the CPU slot
        is released while waiting)."""
        self._db()
        self.ctx.busy_timeout_ms = max(ms, 0)

    def set_authorizer(self, rules):
        """Install a rule table, evaluated in C for every action SQLite checks
        while compiling: rules is a sequence of (action, name, result) where
        action is an AUTH_ACTIONS name or code (None = any), name is matched
        case-insensitively against the object (table, pragma, function, file
        name; None = any) and result is "allow", "deny" or "ignore". First match
        wins; no match allows. rules=None removes the authorizer."""
        cdef sqlite3 *db = self._db()
        cdef auth_table *table = NULL
        if rules is not None:
            table = _build_auth_table(rules)
            sqlite3_set_authorizer(db, _authorize, table)
        else:
            sqlite3_set_authorizer(db, NULL, NULL)
        _free_auth_table(self.auth)
        self.auth = table
        rmt_wl_signal_auth(&self.signals)

    def backup_to(self, Connection target, int pages_per_step=256, progress=None):
        """Copy this database into target with the online backup API, stepwise.

        progress(remaining, pagecount) is called after every step. A busy or
        locked source is retried for up to target's busy timeout.
        """
        cdef sqlite3 *src = self._db()
        cdef sqlite3 *dst = target._db()
        cdef sqlite3_backup *backup = sqlite3_backup_init(dst, "main", src, "main")
        cdef int rc = SQLITE_OK, finish_rc
        cdef int waited = 0
        if backup == NULL:
            raise _error(dst, sqlite3_errcode(dst))
        try:
            while True:
                self._enter_sqlite()
                try:
                    with nogil:
                        rmt_exec_enter(&self.ctx)
                        rc = sqlite3_backup_step(backup, pages_per_step)
                        rmt_exec_leave(&self.ctx)
                finally:
                    self.running -= 1  # a pending close waits for finish below
                if progress is not None:
                    progress(sqlite3_backup_remaining(backup), sqlite3_backup_pagecount(backup))
                if rc == SQLITE_DONE:
                    break
                if rc == SQLITE_BUSY or rc == SQLITE_LOCKED:
                    if waited >= target.ctx.busy_timeout_ms:
                        break
                    with nogil:
                        sqlite3_sleep(10)
                    waited += 10
                elif rc != SQLITE_OK:
                    break
        finally:
            finish_rc = sqlite3_backup_finish(backup)
            if self.close_pending and self.running == 0:
                self._close_now()
        if rc != SQLITE_DONE:
            raise _error(dst, rc)
        if finish_rc != SQLITE_OK:
            raise _error(dst, finish_rc)

    def close(self):
        """Finalize this connection's statements and close it (idempotent).

        If another thread is inside SQLite on this connection (a step, a
        backup), the running statement is interrupted and the thread that
        leaves SQLite last does the close: the handle is never freed under it.
        """
        if self.db == NULL:
            return
        if self.running > 0:
            self.close_pending = True
            rmt_wl_signal_interrupt(&self.signals)
            sqlite3_interrupt(self.db)
            return
        self._close_now()

    cdef _close_now(self):
        self.close_pending = False
        cdef void *node = self.first_statement
        cdef Statement stmt
        while node != NULL:
            stmt = <Statement>node
            node = stmt.next_statement
            stmt.finalize()
        rmt_tenant_set_current(self.tenant)
        sqlite3_close_v2(self.db)
        self.db = NULL
        _free_auth_table(self.auth)
        self.auth = NULL

    cdef _enter_sqlite(self):
        """Called with the GIL before releasing it to run SQLite."""
        if self.close_pending:
            raise SQLiteError(SQLITE_MISUSE, SQLITE_MISUSE, "connection is closing")
        self.running += 1

    cdef _leave_sqlite(self):
        """Called with the GIL after SQLite returned; performs a pending close."""
        self.running -= 1
        if self.close_pending and self.running == 0:
            self._close_now()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- Statement ---------------------------------------------------------------

@cython.no_gc_clear
cdef class Statement:
    """A compiled statement. step()/fetchmany() run SQLite with the GIL released."""

    cdef sqlite3_stmt *stmt
    cdef Connection conn
    cdef bint done            # ran to SQLITE_DONE; step() answers False until reset()
    cdef bint stepping        # a thread is inside sqlite3_step on it
    cdef void *prev_statement # neighbours in conn's list of live statements (borrowed)
    cdef void *next_statement
    cdef readonly str sql
    cdef readonly int param_count
    cdef readonly int column_count
    cdef object __weakref__

    cdef _init(self, Connection conn, sqlite3_stmt *stmt):
        self.conn = conn
        self.stmt = stmt
        self.next_statement = conn.first_statement   # join conn's live list
        if conn.first_statement != NULL:
            (<Statement>conn.first_statement).prev_statement = <void *>self
        conn.first_statement = <void *>self
        self.done = False
        cdef const char *text = sqlite3_sql(stmt)
        self.sql = text.decode("utf-8") if text != NULL else ""
        self.param_count = sqlite3_bind_parameter_count(stmt)
        self.column_count = sqlite3_column_count(stmt)

    def __dealloc__(self):
        if self.conn is None:
            return  # never initialised (_init not run)
        if self.stmt != NULL:
            rmt_tenant_set_current(self.conn.tenant)
            sqlite3_finalize(self.stmt)
            self.stmt = NULL
        if self.prev_statement != NULL:
            (<Statement>self.prev_statement).next_statement = self.next_statement
        elif self.conn.first_statement == <void *>self:
            self.conn.first_statement = self.next_statement
        if self.next_statement != NULL:
            (<Statement>self.next_statement).prev_statement = self.prev_statement

    cdef sqlite3_stmt *_stmt(self) except NULL:
        if self.stmt == NULL:
            raise SQLiteError(SQLITE_MISUSE, SQLITE_MISUSE, "statement is finalized")
        rmt_tenant_set_current(self.conn.tenant)
        return self.stmt

    @property
    def param_names(self):
        """Parameter names as written (":a", "$1", "?2"), None for plain "?";
        None instead of the list when every parameter is positional."""
        cdef sqlite3_stmt *s = self._stmt()
        names = []
        cdef const char *name
        for i in range(1, self.param_count + 1):
            name = sqlite3_bind_parameter_name(s, i)
            names.append(name.decode("utf-8") if name != NULL else None)
        return names if any(n is not None for n in names) else None

    @property
    def column_names(self):
        cdef sqlite3_stmt *s = self._stmt()
        cdef const char *name
        names = []
        for i in range(self.column_count):
            name = sqlite3_column_name(s, i)
            names.append(name.decode("utf-8") if name != NULL else "")
        return names

    @property
    def column_decltypes(self):
        cdef sqlite3_stmt *s = self._stmt()
        cdef const char *decl
        types = []
        for i in range(self.column_count):
            decl = sqlite3_column_decltype(s, i)
            types.append(decl.decode("utf-8") if decl != NULL else None)
        return types

    @property
    def readonly(self):
        return bool(sqlite3_stmt_readonly(self._stmt()))

    cdef int _bind_one(self, sqlite3_stmt *s, int i, value) except -1:
        cdef int rc
        cdef bytes data
        if value is None:
            rc = sqlite3_bind_null(s, i)
        elif isinstance(value, int):
            rc = sqlite3_bind_int64(s, i, value)
        elif isinstance(value, float):
            rc = sqlite3_bind_double(s, i, value)
        elif isinstance(value, str):
            data = (<str>value).encode("utf-8")
            rc = sqlite3_bind_text(s, i, data, <int>len(data), SQLITE_TRANSIENT)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            rc = sqlite3_bind_blob(s, i, <const char *>data, <int>len(data), SQLITE_TRANSIENT)
        else:
            raise TypeError(f"cannot bind {type(value).__name__} (parameter {i})")
        if rc != SQLITE_OK:
            raise _error(self.conn.db, rc)
        return 0

    def bind_all(self, values):
        """Reset the statement and bind every parameter: a sequence by position,
        or a mapping by name without its prefix (":a" -> "a")."""
        cdef sqlite3_stmt *s = self._stmt()
        self._reset(s)
        # A list or tuple (the wire server's every bind) is never a Mapping: an
        # exact-type test first spares the ABC machinery, profiled at ~9% of the
        # GIL-holding time of a simple point query.
        if type(values) is not list and type(values) is not tuple and isinstance(values, Mapping):
            names = self.param_names or []
            if len(names) != self.param_count or None in names:
                raise ValueError("named binding needs every parameter named")
            for i, name in enumerate(names, 1):
                key = name[1:]
                if key not in values:
                    raise ValueError(f"no value for parameter {name}")
                self._bind_one(s, i, values[key])
        else:
            if type(values) is not list:
                values = list(values)
            if len(values) != self.param_count:
                raise ValueError(f"statement has {self.param_count} parameters, {len(values)} values given")
            for i, value in enumerate(values, 1):
                self._bind_one(s, i, value)

    cdef int _step(self, sqlite3_stmt *s) except -1:
        """One sqlite3_step with the GIL released: 1 row, 0 done; raises on
        error (after resetting, so the connection's locks are released)."""
        cdef int rc
        cdef rmt_exec_ctx *ctx = &self.conn.ctx
        if self.done:
            return 0
        self.conn._enter_sqlite()
        self.stepping = True
        with nogil:
            rmt_exec_enter(ctx)
            rc = sqlite3_step(s)
            rmt_exec_leave(ctx)
        self.stepping = False
        err = None
        if rc == SQLITE_DONE:
            self.done = True
        elif rc != SQLITE_ROW:
            err = _error(self.conn.db, rc)
            sqlite3_reset(s)
        self.conn._leave_sqlite()  # may close the connection (close() came meanwhile)
        if err is not None:
            raise err
        if self.stmt == NULL:
            raise SQLiteError(SQLITE_MISUSE, SQLITE_MISUSE, "connection closed while the statement ran")
        return 1 if rc == SQLITE_ROW else 0

    def step(self):
        """Run to the next row: True when a row is ready, False when done."""
        return self._step(self._stmt()) == 1

    cdef tuple _row(self, sqlite3_stmt *s):
        cdef int i, n = self.column_count, kind, nbytes
        cdef const char *text
        row = []
        for i in range(n):
            kind = sqlite3_column_type(s, i)
            if kind == SQLITE_INTEGER:
                row.append(sqlite3_column_int64(s, i))
            elif kind == SQLITE_FLOAT:
                row.append(sqlite3_column_double(s, i))
            elif kind == SQLITE_TEXT:
                text = <const char *>sqlite3_column_text(s, i)
                nbytes = sqlite3_column_bytes(s, i)
                row.append(PyUnicode_DecodeUTF8(text, nbytes, "replace") if text != NULL else "")
            elif kind == SQLITE_BLOB:
                text = <const char *>sqlite3_column_blob(s, i)
                nbytes = sqlite3_column_bytes(s, i)
                row.append(PyBytes_FromStringAndSize(text, nbytes) if text != NULL else b"")
            else:
                row.append(None)
        return tuple(row)

    def row(self):
        """The current row as a tuple of None/int/float/str/bytes."""
        return self._row(self._stmt())

    def row_types(self):
        """Storage classes of the current row: 1 INTEGER, 2 FLOAT, 3 TEXT, 4 BLOB, 5 NULL."""
        cdef sqlite3_stmt *s = self._stmt()
        return tuple(sqlite3_column_type(s, i) for i in range(self.column_count))

    def fetchmany(self, int n):
        """Step up to n rows; [] when done. Fewer than n only at the end.

        The rows are stepped in batches under ONE GIL release each (values
        copied into a C buffer, see _step_batch), then converted with the GIL:
        a point select costs one GIL hand-off instead of one per step."""
        cdef sqlite3_stmt *s = self._stmt()
        cdef rowbuf buf
        cdef int got
        buf.data = NULL
        buf.size = buf.cap = 0
        rows = []
        try:
            while len(rows) < n:
                buf.size = 0
                got = self._step_batch(s, &buf, n - len(rows))
                if got:
                    _decode_rows(&buf, got, self.column_count, rows)
                if self.done or got == 0:
                    break
        finally:
            free(buf.data)
        return rows

    cdef int _step_batch(self, sqlite3_stmt *s, rowbuf *buf, int limit) except -1:
        """Step up to `limit` rows with the GIL released once, copying each
        row's values into buf; stops early once buf holds BATCH_BYTES (so
        memory stays bounded for wide rows). Returns the rows copied; sets
        done at SQLITE_DONE; raises on error after resetting the statement
        (as _step does). The scheduler token is held for the whole batch
        (one rmt_exec_enter/leave), never while Python converts the rows."""
        cdef int rc = SQLITE_DONE, got = 0, ncols = self.column_count
        cdef rmt_exec_ctx *ctx = &self.conn.ctx
        if self.done or limit <= 0:
            return 0
        self.conn._enter_sqlite()
        self.stepping = True
        with nogil:
            rmt_exec_enter(ctx)
            rc = _step_rows(s, buf, limit, ncols, &got)
            rmt_exec_leave(ctx)
        return self._after_batch(s, rc, got)

    cdef int _after_batch(self, sqlite3_stmt *s, int rc, int got) except -1:
        """The GIL-side end of a batch _step_rows ran (entered with
        conn._enter_sqlite() and stepping set): done / error / pending close."""
        cdef bint out_of_memory = rc == _ROWBUF_NOMEM
        self.stepping = False
        err = None
        if out_of_memory:
            err = MemoryError("no memory for a fetched row")
            sqlite3_reset(s)
        elif rc == SQLITE_DONE:
            self.done = True
        elif rc != SQLITE_ROW:
            err = _error(self.conn.db, rc)
            sqlite3_reset(s)
        self.conn._leave_sqlite()  # may close the connection (close() came meanwhile)
        if err is not None:
            raise err
        if self.stmt == NULL:
            raise SQLiteError(SQLITE_MISUSE, SQLITE_MISUSE, "connection closed while the statement ran")
        return got

    cdef _reset(self, sqlite3_stmt *s):
        sqlite3_reset(s)
        self.done = False

    def reset(self):
        """Rewind the statement (bindings are kept)."""
        self._reset(self._stmt())

    def finalize(self):
        """Destroy the statement (idempotent; also done on garbage collection).
        Refused while another thread is stepping it (interrupt it first)."""
        if self.stepping:
            raise SQLiteError(SQLITE_MISUSE, SQLITE_MISUSE, "statement is running; interrupt it first")
        if self.stmt != NULL:
            rmt_tenant_set_current(self.conn.tenant)
            sqlite3_finalize(self.stmt)
            self.stmt = NULL
