"""Hostile and broken clients over real sockets: each gets a protocol error or a
closed connection; the listener keeps serving everybody else."""
import socket
import struct

import psycopg
import pytest
from psycopg import errors

from tests.pgwire.conftest import PASSWORD, ServerThread
from tests.pgwire.pgwire_client import (ScramClient, error_fields, msg, query, read_until, split_messages, ssl_request, startup)
from tests.conftest import wait_for


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """A server with small limits so the tests run fast."""
    server = ServerThread(tmp_path_factory.mktemp("strict"), max_message_bytes=64 * 1024,
                          idle_in_transaction_timeout=1, auth_timeout=2)
    server.backend.create_database("app")
    yield server
    server.stop()


def connect(server):
    sock = socket.create_connection((server.host, server.port), timeout=15)
    return sock


def login(server, sock):
    sock.sendall(startup("alice", "app"))
    data = read_until(sock, lambda d: len(d) >= 9)
    client = ScramClient(PASSWORD)
    sock.sendall(client.initial_response())
    data = read_until(sock, lambda d: len(d) >= 5 and len(d) >= 1 + struct.unpack("!i", d[1:5])[0])
    sock.sendall(client.final_response(split_messages(data)[0][1][4:]))
    read_until(sock, lambda d: d.endswith(b"Z\x00\x00\x00\x05I"))


def fatal_then_closed(sock) -> dict:
    data = read_until(sock, lambda d: False)  # until EOF
    kinds = split_messages(data)
    assert kinds and kinds[-1][0] == b"E", data
    fields = error_fields(kinds[-1][1])
    assert fields["S"] == "FATAL"
    return fields


def still_serves(server):
    with psycopg.connect(server.dsn("app"), autocommit=True) as conn:
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)


@pytest.mark.parametrize("payload, code", [
    (b"Q\x00\x00\x00\x01", "08P01"),                                  # length below 4
    (b"Q" + struct.pack("!i", 10 << 20), "54000"),                   # larger than max_message_bytes
    (msg(b"\x01", b"junk"), "08P01"),                                 # unknown message type
    (msg(b"P", b"no terminators"), "08P01"),                          # malformed body
    (msg(b"d", b"copy data"), "0A000"),                               # COPY: not supported
])
def test_malformed_messages_after_login_are_fatal(strict, payload, code):
    with connect(strict) as sock:
        login(strict, sock)
        sock.sendall(payload)
        assert fatal_then_closed(sock)["C"] == code
    still_serves(strict)


@pytest.mark.parametrize("payload", [struct.pack("!ii", 3, 196608), struct.pack("!ii", 1 << 20, 196608),
                                     b"\x00\x00\x00\x08\x00\x00\x00\x00", startup("", "app")])
def test_malformed_startup_is_fatal(strict, payload):
    with connect(strict) as sock:
        sock.sendall(payload)
        assert fatal_then_closed(sock)["C"] in ("08P01", "0A000", "28000")
    still_serves(strict)


def test_half_a_message_then_stall_is_dropped_and_others_are_served(strict):
    with connect(strict) as stalled:
        stalled.sendall(startup("alice", "app")[:7])  # half a startup packet, then nothing
        still_serves(strict)                          # the listener is not blocked by it
        fields = fatal_then_closed(stalled)           # auth_timeout (2 s) closes it
        assert fields["C"] == "08006"


def test_half_a_query_then_stall_blocks_only_that_session(strict):
    with connect(strict) as sock:
        login(strict, sock)
        sock.sendall(query("SELECT 1")[:6])
        still_serves(strict)
        sock.sendall(query("SELECT 1")[6:])
        data = read_until(sock, lambda d: d.endswith(b"Z\x00\x00\x00\x05I"))
        assert [k for k, _ in split_messages(data)] == [b"T", b"D", b"C", b"Z"]


def test_ssl_request_is_declined_with_n_then_startup_works(strict):
    with connect(strict) as sock:
        sock.sendall(ssl_request())
        assert sock.recv(1) == b"N"
        login(strict, sock)


def test_thousand_connections_opened_and_dropped(strict):
    garbage = [b"", startup("alice", "app"), b"\x00\x00", ssl_request(), b"GET / HTTP/1.1\r\n\r\n"]
    for i in range(1000):
        sock = socket.create_connection((strict.host, strict.port), timeout=15)
        payload = garbage[i % len(garbage)]
        if payload:
            sock.sendall(payload)
        sock.close()
    still_serves(strict)
    wait_for(lambda: not strict.server._tasks and strict.session_count() == 0, timeout=30,
             what="every dropped connection's task to end")


def test_idle_in_transaction_timeout_closes_the_session(strict):
    conn = psycopg.connect(strict.dsn("app"))
    conn.execute("SELECT 1")                 # psycopg opened a transaction block: idle in transaction
    wait_for(lambda: strict.session_count() == 0, timeout=15, what="the idle session to be closed")
    with pytest.raises(errors.IdleInTransactionSessionTimeout) as info:
        conn.execute("SELECT 1")
    assert info.value.sqlstate == "25P03"
    conn.close()
    still_serves(strict)


def test_large_result_is_streamed_in_chunks(strict):
    # ~6 MB of DataRows: written while produced (FLUSH_BYTES chunks), not buffered whole.
    with psycopg.connect(strict.dsn("app"), autocommit=True) as conn:
        rows = conn.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200000) "
                            "SELECT i, 'row-' || i FROM s").fetchall()
        assert len(rows) == 200000 and rows[-1] == (200000, "row-200000")


def test_server_limits_come_from_the_pgwire_config_section(tmp_path):
    from rustymt import config
    from rustymt.engine.pgwire.backend import FileBackend
    from rustymt.engine.pgwire.server import PgServer
    cfg = config.load(env={"RUSTYMT_PGWIRE_MAX_MESSAGE_BYTES": "4096",
                           "RUSTYMT_PGWIRE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS": "7"})
    server = PgServer.from_config(cfg, FileBackend(str(tmp_path)))
    assert (server.max_message_bytes, server.idle_in_transaction_timeout, server.ssl_context) == (4096, 7, None)


def _served_by_the_native_loop(server):
    """A logged-in socket whose session has a prepared point select registered
    with the native loop (its thread now waits in the loop): (sock, session)."""
    from tests.pgwire.pgwire_client import SYNC, bind, execute, parse
    sock = connect(server)
    login(server, sock)
    sock.sendall(query("CREATE TABLE IF NOT EXISTS loop_t (id integer PRIMARY KEY, v integer)")
                 + query("INSERT OR REPLACE INTO loop_t VALUES (1, 11)"))
    read_until(sock, lambda d: d.count(b"Z\x00\x00\x00\x05I") >= 2)
    sock.sendall(parse("p", "SELECT v FROM loop_t WHERE id = $1") + SYNC)
    read_until(sock, lambda d: d.endswith(b"Z\x00\x00\x00\x05I"))
    for _ in range(3):  # general path, Python's fast path (registers it), the loop
        sock.sendall(bind("", "p", [b"1"]) + execute() + SYNC)
        assert b"11" in read_until(sock, lambda d: d.endswith(b"Z\x00\x00\x00\x05I"))
    session = wait_for(lambda: next((s for _, s in server.server.sessions.values() if s._loop_registered), None),
                       what="a session with loop entries")
    return sock, session


def test_a_session_ended_while_its_thread_waits_in_the_native_loop_goes(tmp_path):
    """WireLink.terminate's moves (interrupt, shut the reading side) end a
    session the native loop is serving: the client sees the connection close
    and the server forgets the session."""
    server = ServerThread(tmp_path)
    try:
        server.backend.create_database("app")
        sock, session = _served_by_the_native_loop(server)
        raw = next(state.raw for state in server.server._clients if state.session is session)
        session.conn.interrupt()
        raw.shutdown(socket.SHUT_RD)
        assert read_until(sock, lambda d: False) == b""  # EOF, nothing half-written
        wait_for(lambda: server.session_count() == 0, what="the session gone")
        sock.close()
    finally:
        server.stop()


def test_stopping_the_server_ends_sessions_waiting_in_the_native_loop(tmp_path):
    server = ServerThread(tmp_path)
    stopped = False
    try:
        server.backend.create_database("app")
        sock, _session = _served_by_the_native_loop(server)
        server.stop()
        stopped = True
        assert read_until(sock, lambda d: False) == b""
        assert not server.thread.is_alive()
        sock.close()
    finally:
        if not stopped:
            server.stop()


def test_idle_in_transaction_timeout_with_statements_in_the_native_loop(strict):
    """The loop serves only idle sessions: inside a block the read is bounded
    by idle_in_transaction_timeout as before (FATAL 25P03)."""
    sock, session = _served_by_the_native_loop(strict)
    try:
        sock.sendall(query("BEGIN"))
        read_until(sock, lambda d: d.endswith(b"Z\x00\x00\x00\x05T"))
        assert session._loop_registered  # entries stay; the loop just does not run in a block
        fields = fatal_then_closed(sock)
        assert fields["C"] == "25P03"
    finally:
        sock.close()
