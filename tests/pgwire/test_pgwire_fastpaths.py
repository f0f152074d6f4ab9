"""The Session's fast paths against its general path, on real engine
connections (no server): the same client bytes in must give the same bytes
out, whichever path answers them."""
import os
import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rustymt.engine.pgwire import protocol as P
from rustymt.engine.pgwire.backend import DatabaseSession, open_engine_connection
from rustymt.engine.pgwire.session import Session
from rustymt.engine.sessions import StatementCounter, TenantConnection
from tests.pgwire.pgwire_client import query

SCHEMA = """CREATE TABLE t (id integer PRIMARY KEY, v integer, name text, r real);
INSERT INTO t WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 50)
  SELECT i, i * 10, 'n' || i, i / 4.0 FROM s;"""


class Client:
    """A protocol state machine and a Session on its own connection to `path`."""

    def __init__(self, path, **session_options):
        self.conn = open_engine_connection(path, readonly=False)
        self.stats = []
        db = DatabaseSession(self.conn, write_lock=LOCKS.setdefault(path, threading.Lock()),
                             on_statement=lambda ms, state: self.stats.append(state))
        self.session = Session(db, "app", "alice", 1)
        for name, value in session_options.items():
            setattr(self.session, name, value)
        self.proto = P.ServerProtocol()
        self.proto.state = P.READY

    def send(self, data: bytes) -> bytes:
        return self.session.run(self.proto.feed(data)) + self.proto.data_to_send()

    def close(self):
        self.session.close()
        self.conn.close()


LOCKS: dict = {}


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("fastpaths") / "app.db")
    conn = open_engine_connection(db, readonly=False, create=True)
    conn.close()
    setup = Client(db)
    for statement in SCHEMA.split(";"):
        if statement.strip():
            setup.send(query(statement))
    setup.close()
    return db


@pytest.fixture(scope="module")
def pair(path):
    """(fast, general): one session with the literal-template cache, one without."""
    fast, general = Client(path), Client(path, fast_paths=False)
    yield fast, general
    fast.close()
    general.close()


SHAPES = [
    "SELECT v FROM t WHERE id = {a}",
    "SELECT id, name, r FROM t WHERE id >= {a} AND id < {b};",
    "select name from t where id in ({a}, {b}) ",
    "SELECT v FROM t WHERE id = {a} LIMIT {b}",
    "SELECT id FROM t WHERE v > {a} ORDER BY 1 DESC LIMIT 3",     # BY: never templated
    "SELECT v FROM t WHERE id = {a}.5",                           # not an integer literal
    "SELECT v FROM t WHERE id = 1234567890123456789{a}",          # beyond 18 digits
    "SELECT v FROM t WHERE name = 'n{a}'",                        # quotes: never templated
    "SELECT v FROM t WHERE id = -{a}",
    "UPDATE t SET v = v + {a} - {a} WHERE id = {b}",
    "SELECT v FROM t WHERE nosuchcolumn = {a}",                   # an error either way
    "SELECT v FROM t WHERE id = {a}; SELECT {b}",                 # two statements
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(SHAPES), st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=8))
def test_literal_templates_answer_like_the_general_path(pair, calls):
    fast, general = pair
    for shape, a, b in calls:
        sql = shape.format(a=a, b=b)
        assert fast.send(query(sql)) == general.send(query(sql)), sql
    assert fast.stats == general.stats  # the same statements timed, with the same outcome
    assert len(fast.session._literal_statements) <= fast.session.literal_statements_max


def test_a_template_is_compiled_once_and_serves_other_numbers(path):
    client = Client(path)
    try:
        for aid in (3, 7, 11):
            out = client.send(query(f"SELECT v FROM t WHERE id = {aid}"))
            assert str(aid * 10).encode() in out and out.endswith(b"Z\x00\x00\x00\x05I")
        assert list(client.session._literal_statements) == ["SELECT v FROM t WHERE id = ?1"]
        # inside a failed transaction block the cached statement is refused like any other
        client.send(query("BEGIN"))
        client.send(query("SELECT nosuchcolumn FROM t"))
        out = client.send(query("SELECT v FROM t WHERE id = 5"))
        assert b"25P02" in out and out.endswith(b"Z\x00\x00\x00\x05E")
        client.send(query("ROLLBACK"))
        client.send(query("DISCARD ALL"))
        assert client.session._literal_statements == {}
    finally:
        client.close()


PREPARED = {
    "point": ("SELECT v, name FROM t WHERE id = $1", [23]),              # int4 parameter
    "range": ("SELECT id, r FROM t WHERE id >= $1 ORDER BY id", [23]),   # up to 50 rows
    "many": ("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $1) SELECT i FROM s", [20]),
    "write": ("UPDATE t SET v = v WHERE id = $1", [23]),                 # not read-only: general path
}


def _prepare_all(client):
    from tests.pgwire.pgwire_client import SYNC, parse
    for name, (sql, oids) in PREPARED.items():
        out = client.send(parse(name, sql, oids) + SYNC)
        assert out.startswith(b"1"), out


@pytest.fixture(scope="module")
def prepared_pair(path):
    fast, general = Client(path), Client(path, fast_paths=False)
    _prepare_all(fast)
    _prepare_all(general)
    yield fast, general
    fast.close()
    general.close()


param = st.one_of(st.none(), st.integers(-3, 700).map(lambda n: str(n).encode()), st.just(b"x1"),
                  st.integers(0, 60).map(lambda n: n.to_bytes(4, "big")))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(PREPARED)), param, st.sampled_from([(), (0,), (1,)]),
                          st.sampled_from([(), (0,), (1,)]), st.booleans(), st.sampled_from(["", "p"])),
                max_size=8))
def test_prepared_round_trips_answer_like_the_general_path(prepared_pair, calls):
    from tests.pgwire.pgwire_client import SYNC, bind, describe, execute
    fast, general = prepared_pair
    for name, value, param_formats, result_formats, with_describe, portal in calls:
        if param_formats == (1,) and value is not None and len(value) != 4:
            value = b"\0\0\0\x05"
        batch = (bind(portal, name, [value], param_formats, result_formats)
                 + (describe(b"P", portal) if with_describe else b"") + execute(portal) + SYNC)
        assert fast.send(batch) == general.send(batch), (name, value, param_formats, result_formats)
    assert fast.stats == general.stats


def test_the_fast_path_answers_the_second_round_trip(path):
    from tests.pgwire.pgwire_client import SYNC, bind, execute
    client = Client(path)
    try:
        _prepare_all(client)
        for aid in (b"7", b"8"):
            out = client.send(bind("", "point", [aid]) + execute() + SYNC)
            assert out.endswith(b"Z\x00\x00\x00\x05I") and b"n" + aid in out
        assert client.session.statements["point"].described  # what the fast path needs, cached by the first
        assert client.session.portals == {} and not client.session.statements["point"].busy
        out = client.send(bind("", "point", [b"nan"]) + execute() + SYNC)
        assert b"22P02" in out and out.endswith(b"Z\x00\x00\x00\x05I")
    finally:
        client.close()


@pytest.fixture(scope="module")
def own_databases_pair(tmp_path_factory):
    """(fast, general) on two databases of their own (the tests change the schema)."""
    clients = []
    for name in ("fast", "general"):
        db = str(tmp_path_factory.mktemp(name) / "app.db")
        open_engine_connection(db, readonly=False, create=True).close()
        setup = Client(db)
        for statement in SCHEMA.split(";"):
            if statement.strip():
                setup.send(query(statement))
        setup.close()
        clients.append(Client(db, fast_paths=name == "fast"))
    yield clients
    for client in clients:
        client.close()


UNNAMED = [
    "SELECT v, name FROM t WHERE id = $1",
    "SELECT * FROM t WHERE id = $1",                                        # `*`: never reused
    "SELECT current_setting('application_name') AS app, v FROM t WHERE id = $1",
    "SELECT count(*) FROM t WHERE id < $1",
]
step = st.one_of(st.tuples(st.just("extended"), st.sampled_from(UNNAMED), st.integers(0, 60)),
                 st.tuples(st.just("ddl"), st.just(""), st.just(0)),
                 st.tuples(st.just("set"), st.sampled_from(["a", "b"]), st.just(0)))


@settings(max_examples=100, deadline=None)
@given(st.lists(step, min_size=1, max_size=10))
def test_unnamed_statements_and_translations_are_reused_like_fresh_ones(own_databases_pair, steps):
    from tests.pgwire.pgwire_client import SYNC, bind, describe, execute, parse
    fast, general = own_databases_pair
    for kind, text, value in steps:
        if kind == "extended":
            batch = parse("", text) + bind("", "", [str(value).encode()]) + describe(b"P") + execute() + SYNC
        elif kind == "ddl":
            probe = query("SELECT * FROM t WHERE id = 1")
            row = fast.send(probe)
            assert row == general.send(probe)
            columns = len(row.split(b"\0"))  # grows with each ADD: a new column name each time
            batch = query(f"ALTER TABLE t ADD COLUMN c{columns} integer DEFAULT {columns}")
        else:
            batch = query(f"SET application_name = '{text}'")
        assert fast.send(batch) == general.send(batch), (kind, text, value)
    assert fast.stats == general.stats


def test_reused_statements_go_when_the_lockdown_changes(path):
    """A new authorizer (a lockdown profile applied to live sessions) refuses a
    statement the session had kept compiled, at compile time, naming the profile."""
    from rustymt.engine import lockdown
    from rustymt.engine.sessions import StatementCounter, TenantConnection
    from tests.pgwire.pgwire_client import SYNC, bind, execute, parse
    counter = StatementCounter()
    conn = TenantConnection(path, 0, False, None, counter)
    session = Session(DatabaseSession(conn), "app", "alice", 1)
    proto = P.ServerProtocol()
    proto.state = P.READY

    def send(data):
        return session.run(proto.feed(data))

    try:
        extended = parse("", "SELECT v FROM t WHERE id = $1") + bind("", "", [b"2"]) + execute() + SYNC
        counts = []
        for aid in (1, 2):
            assert send(query(f"SELECT v FROM t WHERE id = {aid}")).endswith(b"Z\x00\x00\x00\x05I")
            assert send(extended).endswith(b"Z\x00\x00\x00\x05I")
            counts.append(counter.count)
        assert counts[1] == counts[0] + 2  # the second round reuses both statements, counted as compiles
        assert len(session._literal_statements) == 1 and session.statements[""].parsed is not None
        conn.lockdown_profile = "no_selects"
        conn.set_authorizer(lockdown.authorizer_rules([("SELECT", None, "deny")]))
        for out in (send(query("SELECT v FROM t WHERE id = 3")), send(extended)):
            assert b"42501" in out and b"lockdown profile no_selects" in out
    finally:
        session.close()
        conn.close()


def big_table(tmp_path, rows: int) -> str:
    """A database with table big(id, pad): `rows` rows of ~70 bytes each."""
    db = str(tmp_path / "big.db")
    open_engine_connection(db, readonly=False, create=True).close()
    setup = Client(db)
    setup.send(query("CREATE TABLE big (id integer PRIMARY KEY, pad text)"))
    setup.send(query("INSERT INTO big WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s "
                     f"WHERE i < {rows}) SELECT i, printf('%060d', i) FROM s"))
    setup.close()
    return db


def test_big_results_are_handed_to_flush_while_they_are_produced(tmp_path):
    """Over FLUSH_BYTES of rows go out in chunks (backpressure), on the fast
    path as on the general one, and the bytes are the same."""
    from rustymt.engine.pgwire.session import FLUSH_BYTES
    from tests.pgwire.pgwire_client import SYNC, bind, execute, parse
    db = big_table(tmp_path, 30000)
    streams = []
    for fast_paths in (True, False):
        client = Client(db, fast_paths=fast_paths)
        chunks = []
        client.session.flush = chunks.append
        try:
            client.send(parse("all", "SELECT id, pad FROM big WHERE id <= $1") + SYNC)
            for _ in range(2):  # the second run is the fast path's (description cached)
                chunks.clear()
                tail = client.send(bind("", "all", [b"30000"]) + execute() + SYNC)
                assert len(chunks) >= 2 and all(len(chunk) >= FLUSH_BYTES for chunk in chunks)
                assert tail.endswith(b"Z\x00\x00\x00\x05I") and b"SELECT 30000" in tail
            streams.append(b"".join(chunks) + tail)
        finally:
            client.close()
    assert streams[0] == streams[1]


# ---- the native round-trip loop (native/wireloop.c) against the general path -------------------
# LoopClient answers as the server's session thread does (_serve_blocking): the
# bytes go through the session's WireLoop on one end of a socketpair first, and
# what the loop hands back runs on the Python session. Its twin is a Client
# without fast paths (the general path): the same bytes out, whichever answers.

from rustymt._native import _core  # noqa: E402
from tests.conftest import wait_for  # noqa: E402
from tests.pgwire.pgwire_client import SYNC, bind, describe, execute, parse, split_messages  # noqa: E402

TYPED_SCHEMA = """CREATE TABLE typed (id integer PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, t text,
  vc varchar(20), b boolean, f real, raw blob);
INSERT INTO typed VALUES (1, 1, 10, 100, 'one', 'v1', 1, 0.5, x'00ff');
INSERT INTO typed VALUES (2, -32768, -2147483648, -9223372036854775808, 'tw\u00f6 \U0001F600', '', 0, NULL, NULL);
INSERT INTO typed VALUES (3, NULL, NULL, NULL, NULL, NULL, NULL, 1e300, x'');
INSERT INTO typed VALUES (4, 70000, 5000000000, 7, CAST(x'ff' AS TEXT), 'v4', 2, 2.5, x'41');
INSERT INTO typed VALUES (5, 'abc', 1.5, 'x', 42, 7, 'yes', 'nan?', 'text in blob');
INSERT INTO typed VALUES (6, 6, 60, 600, 'six', 'v6', 1, -0.0, x'06')"""

LOOP_STATEMENTS = {
    "ints": ("SELECT i2, i4, i8 FROM typed WHERE id = $1", []),
    "texts": ("SELECT id, t, vc, b, raw FROM typed WHERE id = $1", []),
    "by_text": ("SELECT id, i4 FROM typed WHERE t = $1", []),
    "by_bool": ("SELECT id FROM typed WHERE b = $1 ORDER BY id", [16]),
    "by_i8": ("SELECT id, i8 FROM typed WHERE i8 = $1", [20]),
    "many": ("SELECT id, i4, t FROM typed WHERE id >= $1 ORDER BY id", []),
    "float": ("SELECT id, f FROM typed WHERE id = $1", []),                      # float column: never the loop's
    "row": ("SELECT i2, i4, i8, t, b, raw FROM typed WHERE id = $1", [23]),
    "boom": ("SELECT i8 FROM typed WHERE id = abs(-9223372036854775807 - $1)", [20]),  # 1: overflow in the step
}


class LoopClient(Client):
    def __init__(self, path, max_message_bytes=64 << 20, **session_options):
        super().__init__(path, **session_options)
        self.proto = P.ServerProtocol(max_message_bytes)
        self.proto.state = P.READY
        self.peer, self.sock = socket.socketpair()
        self.loop = self.session.open_wire_loop(max_message_bytes)
        assert self.loop is not None
        self.inbuf = bytearray(256 * 1024)
        self.served = 0
        self.step_errors = 0   # batches the loop handed back after a failed step
        self.session.flush = self.sock.sendall
        self.received = bytearray()
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            chunk = self.peer.recv(1 << 16)
            if not chunk:
                return
            with self.lock:
                self.received += chunk

    def _ready_count(self):
        with self.lock:
            return sum(kind == b"Z" for kind, _ in split_messages(bytes(self.received)))

    def send(self, data: bytes) -> bytes:
        expected = sum(kind in (b"S", b"Q") for kind, _ in split_messages(data))
        self.peer.sendall(data)
        out = b""
        while True:  # _serve_blocking's round trips, with a zero wait: done when nothing is left to read
            serve = self.session.status() == b"I" and self.proto.between_messages and self.session.loop_may_serve()
            status, got, latencies, reused, step_error, _errno = self.loop.run(
                self.sock.fileno(), out, self.inbuf, 0.0, serve, 0)
            out = b""
            self.served += len(latencies)
            if latencies:
                self.session.loop_served(latencies, reused)
            if status == _core.LOOP_TIMEOUT:
                break
            if status == _core.LOOP_REPORT:
                continue
            assert status in (_core.LOOP_DATA, _core.LOOP_STEP_ERROR), status
            if status == _core.LOOP_STEP_ERROR:
                self.step_errors += 1
                self.session.loop_step_failed(*step_error)
            out = self.session.run(self.proto.feed(got)) + self.proto.data_to_send()
        wait_for(lambda: self._ready_count() >= expected, what="every ReadyForQuery")
        with self.lock:
            answer = bytes(self.received)
            self.received.clear()
        return answer

    def registered(self, name, sql, oids, params) -> bytes:
        """Prepare `name` and run it twice (the second time alone, so the fast
        path serves it and registers it with the loop); its batch's bytes."""
        self.send(parse(name, sql, oids) + SYNC)
        batch = bind("", name, params) + describe(b"P") + execute() + SYNC
        self.send(batch)
        self.send(batch)
        assert self.session.loop_may_serve()
        return batch

    def close(self):
        super().close()
        self.sock.close()
        self.reader.join(5)
        self.peer.close()


def _typed_database(tmp_path_factory, name):
    db = str(tmp_path_factory.mktemp(name) / "typed.db")
    open_engine_connection(db, readonly=False, create=True).close()
    setup = Client(db)
    for statement in TYPED_SCHEMA.split(";"):
        if statement.strip():
            assert b"E" not in [kind for kind, _ in split_messages(setup.send(query(statement)))], statement
    setup.close()
    return db


@pytest.fixture(scope="module")
def loop_pair(tmp_path_factory):
    db = _typed_database(tmp_path_factory, "loop")
    looped, general = LoopClient(db), Client(db, fast_paths=False)
    for client in (looped, general):
        for name, (sql, oids) in LOOP_STATEMENTS.items():
            assert client.send(parse(name, sql, oids) + SYNC).startswith(b"1")
    yield looped, general
    looped.close()
    general.close()


loop_param = st.one_of(
    st.none(),
    st.integers(-3, 8).map(lambda n: str(n).encode()),
    st.sampled_from([b"one", b"six", "tw\u00f6 \U0001F600".encode(), b"\xff", b"t", b"TRUE", b"off", b" 1",
                     b"+5", b"1_0", b"9223372036854775807", b"-9223372036854775808", b"", b"x1"]),
    st.integers(-2, 8).map(lambda n: n.to_bytes(4, "big", signed=True)),
    st.integers(-2, 8).map(lambda n: n.to_bytes(8, "big", signed=True)),
    st.sampled_from([b"\x00", b"\x01", b"\x02"]),
)
loop_batch = st.tuples(st.sampled_from(sorted(LOOP_STATEMENTS)), loop_param, st.sampled_from([(), (0,), (1,)]),
                       st.sampled_from([(), (0,), (1,), (0, 1, 0)]), st.booleans(), st.booleans())


def _loop_batch(name, value, formats, results, with_describe, unnamed):
    """Bind (to `name`, or after an unnamed Parse of its text) [Describe] Execute Sync."""
    head = parse("", *LOOP_STATEMENTS[name]) if unnamed else b""
    return (head + bind("", "" if unnamed else name, [value], formats, results)
            + (describe(b"P") if with_describe else b"") + execute() + SYNC)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(loop_batch, min_size=1, max_size=3), min_size=1, max_size=6))
def test_the_native_loop_answers_like_the_general_path(loop_pair, sends):
    """Bytes, errors and per-statement accounting as the general path, for
    pipelined batches of registered statements over every parameter and
    column codec (and values the loop does not encode: handed to Python)."""
    looped, general = loop_pair
    for batches in sends:
        data = b"".join(_loop_batch(*batch) for batch in batches)
        assert looped.send(data) == general.send(data), batches
    assert looped.stats == general.stats


sqlite_value = st.one_of(st.none(), st.integers(-2 ** 63, 2 ** 63 - 1), st.integers(-40000, 40000),
                         st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), st.binary(max_size=12),
                         st.floats(allow_nan=False, width=32))


@settings(max_examples=150, deadline=None)
@given(st.lists(sqlite_value, min_size=6, max_size=6), st.sampled_from([(), (0,), (1,), (1, 0, 1, 0, 1, 0)]))
def test_the_native_loop_encodes_any_stored_value_like_the_general_path(loop_pair, values, results):
    """Whatever SQLite holds in a row (any storage class in any declared
    column type), the loop's bytes are the general path's (or it hands the
    batch to Python)."""
    looped, general = loop_pair
    stmt, _ = _core.Connection.prepare(looped.conn, "INSERT OR REPLACE INTO typed (id, i2, i4, i8, t, b, raw) "
                                                    "VALUES (7, ?1, ?2, ?3, ?4, ?5, ?6)")
    try:
        stmt.bind_all(values)
        while stmt.step():
            pass
    finally:
        stmt.finalize()
    batch = bind("", "row", [b"7"], (), results) + describe(b"P") + execute() + SYNC
    for _ in range(3):  # general path, Python's fast path, then the loop when it can
        assert looped.send(batch) == general.send(batch), values
    assert looped.stats == general.stats


def test_the_loop_serves_repeats_and_hands_back_what_it_does_not_encode(tmp_path_factory):
    db = _typed_database(tmp_path_factory, "serves")
    client = LoopClient(db)
    try:
        for name, (sql, oids) in LOOP_STATEMENTS.items():
            client.send(parse(name, sql, oids) + SYNC)
        batch = bind("", "texts", [b"1"]) + describe(b"P") + execute() + SYNC
        first = client.send(batch)   # the general path (caches the description)
        assert client.send(batch) == first and client.served == 0  # Python's fast path, which registers it
        assert ("texts", ()) in client.session._loop_registered
        assert client.send(batch) == first and client.served == 1
        for _ in range(3):  # a float column: served by Python's fast path, never registered
            client.send(bind("", "float", [b"1"]) + execute() + SYNC)
        assert ("float", ()) not in client.session._loop_registered and client.served == 1
        out = client.send(bind("", "texts", [b"4"]) + execute() + SYNC)   # t is not UTF-8: Python answers
        assert client.served == 1 and b"\xef\xbf\xbd" in out                # (U+FFFD, as the binding decodes)
        client.send(bind("", "texts", [b"6"]) + execute() + SYNC)
        assert client.served == 2
        # the unnamed statement: a repeated Parse of the same text is served too (and counted as a compile)
        extended = parse("", "SELECT i4 FROM typed WHERE id = $1") + bind("", "", [b"6"]) + describe(b"P") + execute() + SYNC
        assert client.send(extended) == client.send(extended)
        out = client.send(extended)
        assert client.served == 3 and out.startswith(b"1\x00\x00\x00\x042") and b"60" in out
        assert client.session.statements[""].parsed is not None
        client.send(query("SET application_name = 'x'"))  # a setting may change translations: entries go
        assert not client.session._loop_registered
        assert client.send(extended) == out and client.served == 3
        client.send(query("DEALLOCATE ALL"))
        assert not client.session._loop_registered
    finally:
        client.close()


def test_a_step_error_in_the_loop_is_reported_by_the_python_path(loop_pair):
    looped, general = loop_pair
    ok = bind("", "boom", [b"0"]) + execute() + SYNC
    for _ in range(3):
        assert looped.send(ok) == general.send(ok)
    before, errors_before = looped.served, looped.step_errors
    assert ("boom", ()) in looped.session._loop_registered
    failing = bind("", "boom", [b"1"]) + execute() + SYNC
    out = looped.send(failing)
    assert out == general.send(failing) and b"integer overflow" in out and looped.served == before
    assert looped.step_errors == errors_before + 1
    assert looped.send(ok) == general.send(ok) and looped.served == before + 1
    assert looped.stats == general.stats


def test_a_cancel_interrupts_a_statement_the_loop_runs(tmp_path_factory):
    db = _typed_database(tmp_path_factory, "cancel")
    client = LoopClient(db)
    count = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $1) "
             "SELECT count(*) FROM c")
    try:
        client.send(parse("count", count, [20]) + SYNC)
        for _ in range(2):
            assert b"SELECT 1" in client.send(bind("", "count", [b"10"]) + execute() + SYNC)
        assert ("count", ()) in client.session._loop_registered
        answer = []
        worker = threading.Thread(target=lambda: answer.append(
            client.send(bind("", "count", [b"1000000000000"]) + execute() + SYNC)))
        worker.start()
        wait_for(lambda: client.conn.loop_stepping, what="the loop stepping the long statement")
        client.session.cancel()
        worker.join(30)
        assert answer and b"57014" in answer[0] and answer[0].endswith(b"Z\x00\x00\x00\x05I")
        assert client.stats[-1] == "57014"
        assert b"SELECT 1" in client.send(bind("", "count", [b"10"]) + execute() + SYNC)  # still served
    finally:
        client.close()


def test_a_new_authorizer_stops_the_loop_before_its_next_statement(tmp_path_factory):
    db = _typed_database(tmp_path_factory, "auth")
    from rustymt.engine import lockdown
    looped, general = LoopClient(db), Client(db, fast_paths=False)
    batch = bind("", "ints", [b"1"]) + execute() + SYNC
    try:
        for client in (looped, general):
            client.send(parse("ints", LOOP_STATEMENTS["ints"][0]) + SYNC)
            for _ in range(3):
                client.send(batch)
        assert looped.served == 1
        for client in (looped, general):
            client.conn.set_authorizer(lockdown.authorizer_rules([("SELECT", None, "deny")]))
        out = looped.send(batch)
        assert out == general.send(batch) and b"42501" in out and looped.served == 1
        assert not looped.session._loop_registered
    finally:
        looped.close()
        general.close()


def test_an_answer_too_big_for_the_loop_is_left_to_python(tmp_path):
    """Over 256 KiB the loop gives the batch back (nothing sent) and leaves the
    statement to Python from then on, which flushes as it goes: same bytes."""
    db = big_table(tmp_path, 8000)
    looped, general = LoopClient(db), Client(db, fast_paths=False)
    try:
        for client in (looped, general):
            client.send(parse("upto", "SELECT id, pad FROM big WHERE id <= $1") + SYNC)
        for limit in (b"10", b"10", b"10", b"8000", b"8000", b"10"):
            batch = bind("", "upto", [limit]) + execute() + SYNC
            assert looped.send(batch) == general.send(batch), limit
        assert looped.served == 1  # the third: after a 600 KB answer the statement stays Python's
        assert looped.stats == general.stats
    finally:
        looped.close()
        general.close()


def test_pipelined_big_answers_go_out_as_they_come_and_the_buffer_is_not_kept(tmp_path):
    """Many batches in one read, each answer under the loop's per-answer bound
    but together tens of MB: sent as they pass the bound, so the loop's buffer
    stays near two answers and is not kept afterwards (it is the session's,
    and not charged to the tenant's memory quota)."""
    db = str(tmp_path / "wide.db")
    open_engine_connection(db, readonly=False, create=True).close()
    setup = Client(db)
    setup.send(query("CREATE TABLE wide (id integer PRIMARY KEY, pad text)"))
    setup.send(query("INSERT INTO wide VALUES (1, printf('%0200000d', 1))"))
    setup.close()
    looped = LoopClient(db)
    try:
        one = looped.registered("w", "SELECT pad FROM wide WHERE id = $1", [23], [b"1"])
        answers = looped.send(one * 100)  # ~20 MB of answers queued by one write
        assert looped.served >= 99
        assert sum(kind == b"D" for kind, _ in split_messages(answers)) == 100
        assert looped.loop.buffer_capacity <= 2 * _core.LOOP_MAX_ANSWER
    finally:
        looped.close()


def test_messages_over_the_servers_limit_are_left_to_python(tmp_path):
    """pgwire.max_message_bytes holds for batches the loop would serve: a
    Bind over the limit is handed to Python (which ends the session with
    FATAL 54000), never answered in C."""
    db = str(tmp_path / "limit.db")
    open_engine_connection(db, readonly=False, create=True).close()
    looped = LoopClient(db, max_message_bytes=4096)
    try:
        looped.registered("n", "SELECT length($1)", [25], [b"abc"])
        big = bind("", "n", [b"x" * 20_000]) + describe(b"P") + execute() + SYNC
        looped.peer.sendall(big)
        status, got, latencies, _reused, _error, _errno = looped.loop.run(
            looped.sock.fileno(), b"", looped.inbuf, 5.0, True, 0)
        assert status == _core.LOOP_DATA and latencies == []
        while len(got) < len(big):  # the rest of the message, as _serve_blocking reads on
            _status, more, *_ = looped.loop.run(looped.sock.fileno(), b"", looped.inbuf, 5.0, False, 0)
            got += more
        looped.proto.feed(got)
        refusal = looped.proto.data_to_send()
        assert refusal[:1] == b"E" and b"54000" in refusal and looped.proto.closed
    finally:
        looped.close()


def test_an_ended_session_is_not_served_by_the_loop(tmp_path):
    """A session an administrator ended (tenant suspended, PDB closed
    IMMEDIATE) answers what is already queued through Python, which reports
    the error that ended it: the loop does not serve it any more."""
    db = str(tmp_path / "ended.db")
    open_engine_connection(db, readonly=False, create=True).close()
    looped = LoopClient(db)
    looped.conn.close()
    looped.conn = TenantConnection(db, 0, False, None, StatementCounter())  # the daemon's kind: it can be ended
    looped.session = Session(DatabaseSession(looped.conn, write_lock=threading.Lock()), "app", "alice", 1)
    looped.session.flush = looped.sock.sendall
    looped.loop = looped.session.open_wire_loop(64 << 20)
    try:
        looped.registered("s", "SELECT $1::int4 + 1", [23], [b"1"])
        looped.conn.ended_with = RuntimeError("ended by the test")  # as WireLink.terminate marks it
        assert not looped.session.loop_may_serve()
    finally:
        looped.close()
