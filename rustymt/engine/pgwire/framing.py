"""Splitting the client byte stream into typed messages (type byte + int32
length + body), and parsing the most frequent body (Bind). split_frames_py and
parse_bind_py are the pure-Python twins of _speedups.split_frames and
_speedups.parse_bind; the compiled ones are used when built."""
from __future__ import annotations

import struct

_I32 = struct.Struct("!i").unpack_from
_I16 = struct.Struct("!h").unpack_from


def split_frames_py(buf, max_body: int):
    """-> (frames [(kind, body)], consumed, bad_length or None); see _speedups."""
    frames = []
    pos, n = 0, len(buf)
    while n - pos >= 5:
        (length,) = _I32(buf, pos + 1)
        if length < 4 or length - 4 > max_body:
            return frames, pos, length
        if n - pos < length + 1:
            break
        frames.append((bytes(buf[pos:pos + 1]), bytes(buf[pos + 5:pos + 1 + length])))
        pos += length + 1
    return frames, pos, None


def _cstr(body, pos):
    end = body.find(b"\0", pos)
    if end < 0:
        raise ValueError("unterminated string")
    return bytes(body[pos:end]).decode("utf-8"), end + 1


def parse_bind_py(body):
    """Bind body -> (portal, statement, param_formats, params, result_formats);
    ValueError when malformed (lengths overrun, negative counts, trailing bytes)."""
    body = bytes(body)
    n = len(body)
    portal, pos = _cstr(body, 0)
    statement, pos = _cstr(body, pos)
    if n - pos < 2:
        raise ValueError("truncated")
    (count,) = _I16(body, pos)
    pos += 2
    if count < 0 or n - pos < 2 * count:
        raise ValueError("bad format count")
    param_formats = [_I16(body, pos + 2 * i)[0] for i in range(count)]
    pos += 2 * count
    if n - pos < 2:
        raise ValueError("truncated")
    (count,) = _I16(body, pos)
    pos += 2
    if count < 0:
        raise ValueError("bad parameter count")
    params = []
    for _ in range(count):
        if n - pos < 4:
            raise ValueError("truncated")
        (size,) = _I32(body, pos)
        pos += 4
        if size == -1:
            params.append(None)
            continue
        if size < 0 or n - pos < size:
            raise ValueError("bad parameter length")
        params.append(body[pos:pos + size])
        pos += size
    if n - pos < 2:
        raise ValueError("truncated")
    (count,) = _I16(body, pos)
    pos += 2
    if count < 0 or n - pos != 2 * count:
        raise ValueError("bad result format count")
    return portal, statement, param_formats, params, [_I16(body, pos + 2 * i)[0] for i in range(count)]


try:
    from ._speedups import parse_bind as parse_bind_c
    from ._speedups import split_frames as split_frames_c
except ImportError:  # not built: the pure-Python twins serve
    split_frames_c = parse_bind_c = None

split_frames = split_frames_c or split_frames_py
parse_bind = parse_bind_c or parse_bind_py
