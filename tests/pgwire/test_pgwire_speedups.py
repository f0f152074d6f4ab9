"""The compiled hot loops against their pure-Python twins, on the same inputs."""
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rustymt.engine.pgwire import codecs as C
from rustymt.engine.pgwire import framing, rows


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
