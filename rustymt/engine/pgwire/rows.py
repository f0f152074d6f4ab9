"""DataRow encoding, the hottest loop of the server: one call per fetched batch.

`encode_rows(rows, encoders)` -> the concatenated DataRow messages for `rows`
(tuples of SQLite values), each column converted by its encoder (value ->
bytes; None is SQL NULL and never reaches an encoder). This is the pure-Python
implementation; rustymt/engine/pgwire/_speedups.pyx has the compiled twin,
used when built, and the tests run both on the same inputs.
"""
from __future__ import annotations

import struct

_I32 = struct.Struct("!i").pack
_NULL = b"\xff\xff\xff\xff"


def encode_rows_py(rows, encoders) -> bytes:
    head = struct.pack("!h", len(encoders))
    parts = []
    for row in rows:
        cells = [b"D", b"", head]
        size = 6
        for value, encode in zip(row, encoders):
            if value is None:
                cells.append(_NULL)
                size += 4
            else:
                data = encode(value)
                cells.append(_I32(len(data)))
                cells.append(data)
                size += 4 + len(data)
        cells[1] = _I32(size)
        parts.extend(cells)
    return b"".join(parts)


try:
    from ._speedups import encode_rows as encode_rows_c
except ImportError:  # not built: the pure-Python twin serves
    encode_rows_c = None

encode_rows = encode_rows_c or encode_rows_py
