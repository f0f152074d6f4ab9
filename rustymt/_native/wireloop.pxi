# The wire server's native round-trip loop (native/wireloop.c): a session
# registers the prepared statements Python's fast path served, and the loop
# answers repeats of them without the GIL. The pgwire session decides what is
# eligible (rustymt/engine/pgwire/session.py, WireLoopEntries); this wrapper
# keeps the statements alive while registered and runs the loop under the
# connection's close protocol (_enter_sqlite/_leave_sqlite, as a step does).
from libc.stdlib cimport malloc as _wl_malloc, free as _wl_free

# rmt_wl_run outcomes (native/wireloop.h, enum rmt_wl_status).
LOOP_DATA, LOOP_EOF, LOOP_TIMEOUT, LOOP_REPORT, LOOP_OS_ERROR, LOOP_STEP_ERROR = range(6)
LOOP_MAX_ANSWER = RMT_WL_MAX_ANSWER  # a bigger answer is Python's
# Parameter and column codec kinds (enum rmt_wl_param_kind / rmt_wl_column_kind).
LOOP_PARAM_KINDS = {"none": 0, "int": 1, "str": 2, "bool": 3, "int2": 4, "int4": 5, "int8": 6}
LOOP_COLUMN_KINDS = {"none": 0, "text_int": 1, "bin_int2": 2, "bin_int4": 3, "bin_int8": 4, "plain": 5,
                     "text_bool": 6, "bin_bool": 7, "text_bytea": 8}


cdef class WireLoop:
    """The native loop state of one wire session on `conn`."""

    cdef rmt_wl_session *session
    cdef rmt_wl_result *result
    cdef Connection conn
    cdef list statements      # the registered Statements (kept alive; checked before every run)

    def __cinit__(self, Connection conn, size_t max_message_bytes=1 << 20):
        conn._db()
        self.conn = conn
        self.statements = []
        self.session = <rmt_wl_session *>_wl_malloc(sizeof(rmt_wl_session))
        self.result = <rmt_wl_result *>_wl_malloc(sizeof(rmt_wl_result))
        if self.session == NULL or self.result == NULL:
            raise MemoryError()
        rmt_wl_session_init(self.session, conn.db, &conn.ctx, &conn.signals)
        rmt_wl_session_set_max_message(self.session, max_message_bytes)  # longer: Python refuses them (54000)

    def __dealloc__(self):
        if self.session != NULL:
            rmt_wl_session_free(self.session)
            _wl_free(self.session)
        _wl_free(self.result)

    @property
    def entries(self):
        return self.session.nentries

    @property
    def buffer_capacity(self):
        """Bytes the loop keeps for answers between runs (tests: bounded)."""
        return self.session.answer_cap

    def register(self, Statement stmt, str name, parse_body, bytes result_formats, bytes row_description,
                 bytes param_text, bytes param_binary, bytes columns, unsigned auth_epoch):
        """Let the loop serve Bind(name, result_formats) [+ Parse == parse_body
        when not None]; False when the table is full (Python serves it)."""
        cdef sqlite3_stmt *s = stmt._stmt()
        cdef bytes bname = name.encode("utf-8")
        cdef bytes parse = parse_body
        cdef const unsigned char *cparse = NULL if parse is None else <const unsigned char *>parse
        if len(param_text) != len(param_binary) or len(param_text) != stmt.param_count:
            raise ValueError("one parameter kind per parameter and format")
        if len(columns) != stmt.column_count:
            raise ValueError("one column kind per column")
        if rmt_wl_register(self.session, s, bname, len(bname), cparse, 0 if parse is None else len(parse),
                           result_formats, len(result_formats), row_description, len(row_description),
                           len(param_text), param_text, param_binary, len(columns), columns, auth_epoch) != 0:
            return False
        if stmt not in self.statements:
            self.statements.append(stmt)
        return True

    def unregister(self, Statement stmt):
        """Forget the entries of `stmt` (before it is finalized; if it already
        was, its entries cannot be told apart: all go)."""
        if stmt.stmt == NULL:
            self.clear()
            return
        rmt_wl_unregister(self.session, stmt.stmt)
        if stmt in self.statements:
            self.statements.remove(stmt)

    def clear(self):
        """Forget every entry (before any of their statements is finalized)."""
        rmt_wl_session_clear(self.session)
        self.statements.clear()

    def run(self, int fd, const unsigned char[:] out, unsigned char[:] inbuf, double timeout, bint serve,
            int report_ms):
        """Send out, receive, and (serve) answer registered batches: returns
        (status, data for Python or None, [latency ms per served statement],
        statements reused by a Parse, (code, extended, message) of a step error
        or None, errno or 0). See native/wireloop.h."""
        cdef Py_ssize_t out_len = out.shape[0]
        cdef const unsigned char *outp = &out[0] if out_len else NULL
        cdef unsigned char *inp = &inbuf[0]
        cdef size_t in_cap = inbuf.shape[0]
        cdef int timeout_ms = -1 if timeout < 0 else <int>(timeout * 1000)
        cdef rmt_wl_result *r = self.result
        cdef Statement stmt
        cdef bint entered = False
        if serve:
            for stmt in self.statements:
                if stmt.stmt == NULL or stmt.stepping:  # finalized behind our back: forget all
                    self.clear()
                    break
            if self.session.nentries == 0 or self.conn.db == NULL or self.conn.close_pending:
                serve = False
        if serve:
            self.conn._enter_sqlite()
            entered = True
        try:
            with nogil:
                rmt_wl_run(self.session, fd, outp, out_len, inp, in_cap, timeout_ms, serve, report_ms, r)
        finally:
            if entered:
                self.conn._leave_sqlite()  # may close the connection (close() came meanwhile)
        data = None
        if r.status == LOOP_DATA or r.status == LOOP_STEP_ERROR:
            data = PyBytes_FromStringAndSize(<const char *>inp + r.in_start, r.in_len)
        latencies = [r.latency_ms[i] for i in range(r.served)]
        error = None
        if r.status == LOOP_STEP_ERROR:
            error = (r.step_rc, r.step_extended, r.step_message.decode("utf-8", "replace"))
        return r.status, data, latencies, r.reused, error, r.os_error
