"""The Session's fast paths against its general path, on real engine
connections (no server): the same client bytes in must give the same bytes
out, whichever path answers them."""
import os
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rustymt.engine.pgwire import protocol as P
from rustymt.engine.pgwire.backend import DatabaseSession, open_engine_connection
from rustymt.engine.pgwire.session import Session
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


def test_big_results_are_handed_to_flush_while_they_are_produced(tmp_path):
    """Over FLUSH_BYTES of rows go out in chunks (backpressure), on the fast
    path as on the general one, and the bytes are the same."""
    from rustymt.engine.pgwire.session import FLUSH_BYTES
    from tests.pgwire.pgwire_client import SYNC, bind, execute, parse
    db = str(tmp_path / "big.db")
    open_engine_connection(db, readonly=False, create=True).close()
    setup = Client(db)
    setup.send(query("CREATE TABLE big (id integer PRIMARY KEY, pad text)"))
    setup.send(query("INSERT INTO big WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 30000) "
                     "SELECT i, printf('%060d', i) FROM s"))
    setup.close()
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
