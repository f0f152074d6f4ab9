"""The compiled hot loops against their pure-Python twins, on the same inputs."""
import errno
import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rustymt.engine.pgwire import codecs as C
from rustymt.engine.pgwire import exchange as exchange_mod
from rustymt.engine.pgwire import framing, protocol, rows, sqlfront
from tests.pgwire import pgwire_client as pgc


def test_compiled_twins_are_built():
    # The build registers rustymt.engine.pgwire._speedups (setup.py); production uses it.
    assert framing.split_frames is framing.split_frames_c is not None
    assert rows.encode_rows is rows.encode_rows_c is not None


values = st.one_of(st.none(), st.integers(-(1 << 63), (1 << 63) - 1), st.floats(allow_nan=False),
                   st.text(max_size=20), st.binary(max_size=20))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(values, values, values), max_size=20))
def test_encode_rows_twins_agree(table):
    encoders = [C.text_encoder(C.TEXT), C.text_encoder(C.BYTEA), C.binary_encoder(C.TEXT)]
    assert rows.encode_rows_c(table, encoders) == rows.encode_rows_py(table, encoders)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(-(1 << 63), (1 << 63) - 1)),
                          st.one_of(st.none(), st.integers(-(1 << 31), (1 << 31) - 1))), max_size=300))
def test_encode_rows_twins_agree_on_integer_columns(table):
    encoders = [C.text_encoder(C.INT8), C.binary_encoder(C.INT4)]
    assert rows.encode_rows_c(table, encoders) == rows.encode_rows_py(table, encoders)


def frame(kind, body):
    return kind + struct.pack("!i", len(body) + 4) + body


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 64))
def test_split_frames_twins_agree_on_random_bytes(data, max_body):
    assert framing.split_frames_c(bytearray(data), max_body) == framing.split_frames_py(bytearray(data), max_body)


@pytest.mark.parametrize("split", [framing.split_frames_py, framing.split_frames_c], ids=["python", "compiled"])
def test_split_frames_contract(split):
    stream = frame(b"Q", b"select 1\0") + frame(b"S", b"") + frame(b"E", b"\0\0\0\0\0")[:7]
    frames, consumed, bad = split(bytearray(stream), 1000)
    assert frames == [(b"Q", b"select 1\0"), (b"S", b"")] and consumed == 19 and bad is None
    assert split(bytearray(b"Q\x00\x00\x00\x02xx"), 1000) == ([], 0, 2)
    assert split(bytearray(frame(b"S", b"") + b"Q\x7f\xff\xff\xff"), 1000) == ([(b"S", b"")], 5, 0x7FFFFFFF)
    assert split(bytearray(b"Q\xff\xff\xff\xff"), 1000) == ([], 0, -1)


def _outcome(parse, body):
    try:
        return parse(body)
    except UnicodeDecodeError:
        return "unicode"
    except ValueError:
        return "malformed"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_parse_bind_twins_agree_on_random_bodies(body):
    assert _outcome(framing.parse_bind_c, body) == _outcome(framing.parse_bind_py, body)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=8).filter(lambda s: "\0" not in s), st.lists(st.integers(0, 1), max_size=4),
       st.lists(st.one_of(st.none(), st.binary(max_size=12)), max_size=6), st.lists(st.integers(0, 1), max_size=4))
def test_parse_bind_twins_agree_on_valid_binds(name, param_formats, params, result_formats):
    from tests.pgwire.pgwire_client import bind
    body = bind(name, "s" + name, params, param_formats, result_formats)[5:]
    expected = (name, "s" + name, param_formats, params, result_formats)
    assert framing.parse_bind_c(body) == framing.parse_bind_py(body) == expected


@pytest.mark.parametrize("exchange", [exchange_mod.exchange_py, exchange_mod.exchange], ids=["python", "compiled"])
def test_exchange_sends_then_returns_the_next_bytes(exchange):
    assert exchange_mod.exchange is not exchange_mod.exchange_py  # the compiled one is built
    ours, theirs = socket.socketpair()
    with ours, theirs:
        inbuf = bytearray(8)
        theirs.sendall(b"0123456789")          # more than inbuf holds: the rest stays queued
        big = bytes(range(256)) * 4096         # > a socket buffer: sent in several writes
        received = bytearray()

        def drain():
            while len(received) < len(big):
                received.extend(theirs.recv(1 << 20))

        reader = threading.Thread(target=drain)
        reader.start()
        assert exchange(ours.fileno(), big, inbuf, -1.0) == b"01234567"
        reader.join(10)
        assert bytes(received) == big
        assert exchange(ours.fileno(), b"", inbuf, 5.0) == b"89"
        with pytest.raises(socket.timeout):
            exchange(ours.fileno(), b"x", inbuf, 0.05)
        assert theirs.recv(10) == b"x"
        theirs.shutdown(socket.SHUT_WR)
        assert exchange(ours.fileno(), b"", inbuf, -1.0) == b""   # end of stream
        theirs.close()
        with pytest.raises(OSError) as failed:
            exchange(ours.fileno(), b"y", inbuf, -1.0)   # the peer is gone: EPIPE, not a timeout
        assert not isinstance(failed.value, socket.timeout) and failed.value.errno == errno.EPIPE


# SQL-ish text: digits, word characters (ASCII and not), the characters the
# scanners treat specially, and anything else.
sql_text = st.text(alphabet=st.one_of(st.sampled_from("0123456789 .,=-+()'?:@$*#;byBYxe_é٣\n"),
                                      st.characters(max_codepoint=0x2FFF)), max_size=60)


@settings(max_examples=400, deadline=None)
@given(sql_text)
def test_literal_scanners_twins_agree(sql):
    assert sqlfront.literal_template_c(sql) == sqlfront.literal_template_py(sql)
    assert sqlfront.number_shape_c(sql) == sqlfront.number_shape_py(sql)


@pytest.mark.parametrize("template", [sqlfront.literal_template_py, sqlfront.literal_template_c],
                         ids=["python", "compiled"])
def test_literal_template_contract(template):
    assert sqlfront.literal_template is sqlfront.literal_template_c is not None
    assert template("SELECT abalance FROM a WHERE aid = 12345;") == ("SELECT abalance FROM a WHERE aid = ?1;", [12345])
    assert template("UPDATE t SET v = v + -5 WHERE id=7") == ("UPDATE t SET v = v + -?1 WHERE id=?2", [5, 7])
    # not standalone integers: stay in the text
    assert template("select 1.5, 1e5, 0x1F, t2, é5 from t where a=3") == (
        "select 1.5, 1e5, 0x1F, t2, é5 from t where a=?1", [3])
    assert template("select a from t where b = 1234567890123456789") is None   # beyond 18 digits
    for refused in ("select a from t order by 1", "select a from t where b = '12'", "select * from t where a = 1",
                    "select a from t where b = ?1 and c = 2", "select a from t where b = $1 and c = 2"):
        assert template(refused) is None
    assert template("select a from t") is None


# Message streams mixing well-formed frequent messages, broken ones and others.
frequent = st.one_of(
    st.builds(lambda sql: pgc.query(sql), st.text(max_size=12).filter(lambda s: "\0" not in s)),
    st.builds(lambda portal, rows: pgc.execute(portal, rows), st.sampled_from(["", "p1", "é"]), st.integers(-2, 3)),
    st.builds(lambda kind, name: pgc.describe(kind, name), st.sampled_from([b"S", b"P", b"X"]), st.sampled_from(["", "s1"])),
    st.builds(lambda params, formats: pgc.bind("", "s1", params, formats, formats),
              st.lists(st.one_of(st.none(), st.binary(max_size=6)), max_size=3), st.lists(st.integers(0, 2), max_size=2)),
    st.sampled_from([pgc.msg(b"S"), pgc.msg(b"H"), pgc.msg(b"S", b"x"), pgc.msg(b"X"), pgc.msg(b"C", b"S\0"),
                     pgc.msg(b"Q", b"two\0strings\0"), pgc.msg(b"Q", b"\xff\xfe\0"), pgc.msg(b"E", b"\0\0\0")]),
    st.builds(lambda kind, body: pgc.msg(kind, body), st.sampled_from([b"Q", b"B", b"E", b"D", b"S", b"P"]),
              st.binary(max_size=16)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(frequent, max_size=6), st.binary(max_size=8), st.integers(0, 64))
def test_split_events_twins_agree(messages, tail, max_body):
    stream = bytearray(b"".join(messages) + tail)
    assert protocol.split_events_c(stream, max_body) == protocol.split_events_py(stream, max_body)
    assert protocol.split_events_c(stream, 1 << 20) == protocol.split_events_py(stream, 1 << 20)


def test_split_events_makes_events_of_the_frequent_messages():
    assert protocol.split_events is protocol.split_events_c is not None
    stream = bytearray(pgc.bind("", "s1", [b"42"]) + pgc.execute() + pgc.msg(b"S") + pgc.msg(b"P", b"x\0"))
    items, consumed, bad = protocol.split_events_c(stream, 1 << 20)
    assert items == [protocol.Bind("", "s1", [], [b"42"], []), protocol.Execute("", 0), protocol.SYNC,
                     (b"P", b"x\0")] and consumed == len(stream) and bad is None
