"""The sans-IO protocol state machine, fed plain bytes (no sockets, no database)."""
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rustymt.engine import scram
from rustymt.engine.pgwire import protocol as P
from tests.pgwire.pgwire_client import (SYNC, ScramClient, bind, cancel_request, error_fields, execute, gssenc_request, msg, parse,
                           query, split_messages, ssl_request, startup)

VERIFIER = scram.make_verifier("pw", iterations=64)


def authenticated(password="pw", **startup_params):
    proto = P.ServerProtocol(max_message_bytes=4096)
    events = proto.feed(startup(**startup_params))
    assert isinstance(events[0], P.Startup)
    proto.start_auth(VERIFIER)
    out = split_messages(proto.data_to_send())
    assert out[0][0] == b"R" and struct.unpack("!i", out[0][1][:4])[0] == 10 and b"SCRAM-SHA-256" in out[0][1]
    client = ScramClient(password)
    assert proto.feed(client.initial_response()) == []
    (kind, body), = split_messages(proto.data_to_send())
    assert kind == b"R" and struct.unpack("!i", body[:4])[0] == 11
    return proto, proto.feed(client.final_response(body[4:]))


def test_scram_login_then_ready_with_parameters_and_key():
    proto, events = authenticated()
    assert events == [P.Authenticated("alice", "app")]
    out = split_messages(proto.data_to_send())
    assert [struct.unpack("!i", b[:4])[0] for k, b in out] == [12, 0]
    proto.session_ready({"server_version": "15.0", "client_encoding": "UTF8"}, 1234, 99)
    out = split_messages(proto.data_to_send())
    assert [k for k, _ in out] == [b"S", b"S", b"K", b"Z"]
    assert out[2][1] == struct.pack("!iI", 1234, 99) and out[3][1] == b"I"


def test_wrong_password_is_fatal_28p01():
    proto, events = authenticated(password="nope")
    assert isinstance(events[-1], P.Closed) and proto.closed
    fields = error_fields(split_messages(proto.data_to_send())[0][1])
    assert (fields["S"], fields["V"], fields["C"]) == ("FATAL", "FATAL", "28P01")
    assert 'user "alice"' in fields["M"]


def test_ssl_and_gssenc_requests_are_answered():
    proto = P.ServerProtocol()
    assert proto.feed(ssl_request()) == [P.SSLRequest()]
    proto.answer_ssl(False)
    assert proto.data_to_send() == b"N"
    events = proto.feed(gssenc_request() + startup())
    assert proto.data_to_send() == b"N" and isinstance(events[0], P.Startup)


def test_ssl_accept_refuses_buffered_plaintext():
    proto = P.ServerProtocol(tls_available=True)
    events = proto.feed(ssl_request() + startup())
    assert events == [P.SSLRequest()]
    proto.answer_ssl(True)
    assert proto.closed and error_fields(split_messages(proto.data_to_send())[0][1])["C"] == "08P01"


def test_cancel_request_is_an_event_and_closes():
    proto = P.ServerProtocol()
    assert proto.feed(cancel_request(7, 0xDEADBEEF)) == [P.CancelRequest(7, 0xDEADBEEF)]
    assert proto.closed and proto.data_to_send() == b""


def test_newer_minor_version_and_pq_options_get_negotiate_protocol_version():
    proto = P.ServerProtocol()
    events = proto.feed(startup(version=196610, **{"_pq_.x": "1"}))
    out = split_messages(proto.data_to_send())
    assert out[0][0] == b"v"
    assert out[0][1] == struct.pack("!ii", 0, 1) + b"_pq_.x\0"
    assert "_pq_.x" not in events[0].parameters


def test_client_encoding_is_normalised_and_checked():
    proto = P.ServerProtocol()
    proto.feed(startup(client_encoding="'utf-8'"))
    assert proto.client_encoding == "UTF8"
    bad = P.ServerProtocol()
    assert isinstance(bad.feed(startup(client_encoding="LATIN9"))[-1], P.Closed)
    assert error_fields(split_messages(bad.data_to_send())[0][1])["C"] == "22023"


def test_query_phase_messages_parse_across_arbitrary_splits():
    stream = (query("select 1") + parse("s1", "select $1", [23]) + bind("p", "s1", [b"\0\0\0\1"], [1], [1])
              + execute("p", 5) + SYNC)
    proto, _ = authenticated()
    proto.session_ready({}, 1, 1)
    proto.data_to_send()
    events = []
    for byte in stream:  # one byte at a time: half messages must wait, never misparse
        events += proto.feed(bytes([byte]))
    assert events == [P.Query("select 1"), P.Parse("s1", "select $1", [23]),
                      P.Bind("p", "s1", [1], [b"\0\0\0\1"], [1]), P.Execute("p", 5), P.Sync()]


def _ready():
    proto, _ = authenticated()
    proto.session_ready({}, 1, 1)
    proto.data_to_send()
    return proto


def _fatal_code(proto, data):
    events = proto.feed(data)
    assert events and isinstance(events[-1], P.Closed) and proto.closed
    fields = error_fields(split_messages(proto.data_to_send())[-1][1])
    assert fields["S"] == "FATAL"
    return fields["C"]


def test_bad_length_unknown_type_and_huge_message_are_fatal():
    assert _fatal_code(_ready(), b"Q\x00\x00\x00\x02") == "08P01"
    assert _fatal_code(_ready(), msg(b"\x7f", b"")) == "08P01"
    assert _fatal_code(_ready(), b"Q" + struct.pack("!i", 1 << 30)) == "54000"
    assert _fatal_code(_ready(), msg(b"B", b"\0\0\xff\xff")) == "08P01"  # negative count
    assert _fatal_code(_ready(), msg(b"F", b"")) == "0A000"
    assert _fatal_code(P.ServerProtocol(), struct.pack("!ii", 4, 0)) == "08P01"
    assert _fatal_code(P.ServerProtocol(), struct.pack("!ii", 100000, 196608)) == "08P01"
    assert _fatal_code(P.ServerProtocol(), startup(version=2 << 16)) == "0A000"


def test_terminate_closes_without_error():
    proto = _ready()
    assert isinstance(proto.feed(msg(b"X"))[-1], P.Terminate) and proto.closed
    assert proto.data_to_send() == b""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), max_size=12), st.booleans())
def test_fuzz_random_streams_never_raise(chunks, after_login):
    """Random bytes at startup or in the query phase: events or a FATAL close, never an exception."""
    proto = _ready() if after_login else P.ServerProtocol(max_message_bytes=1024)
    for chunk in chunks:
        events = proto.feed(chunk)
        for event in events:
            assert isinstance(event, P.Event)
            if isinstance(event, P.SSLRequest):
                proto.answer_ssl(False)
            if isinstance(event, P.Startup):
                proto.start_auth(None)
        out = proto.data_to_send()
        if proto.closed and out:
            assert out[:1] in (b"E", b"N", b"R", b"v")
