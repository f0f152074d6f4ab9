"""Splitting the client byte stream into typed messages (type byte + int32
length + body). split_frames_py is the pure-Python twin of
_speedups.split_frames; the compiled one is used when built."""
from __future__ import annotations

import struct

_I32 = struct.Struct("!i").unpack_from


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


try:
    from ._speedups import split_frames as split_frames_c
except ImportError:  # not built: the pure-Python twin serves
    split_frames_c = None

split_frames = split_frames_c or split_frames_py
