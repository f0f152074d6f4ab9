"""Backend (server -> client) messages of PostgreSQL protocol 3.0, as bytes.

Every message is one type byte, an int32 length that counts itself but not the
type byte, and the body. These builders are pure functions; the hot ones
(DataRow, CommandComplete, ReadyForQuery) have Cython twins in _speedups.pyx.
"""
from __future__ import annotations

import struct

_I32 = struct.Struct("!i")
_HEADER = struct.Struct("!ci")
_FIELD = struct.Struct("!IhIhih")


def message(kind: bytes, body: bytes = b"") -> bytes:
    return _HEADER.pack(kind, len(body) + 4) + body


def cstring(text: str) -> bytes:
    return text.encode("utf-8").replace(b"\0", b"") + b"\0"


def authentication(code: int, payload: bytes = b"") -> bytes:
    """AuthenticationOk (0), SASL (10), SASLContinue (11), SASLFinal (12)."""
    return message(b"R", _I32.pack(code) + payload)


def authentication_sasl(mechanisms: list[str]) -> bytes:
    return authentication(10, b"".join(cstring(m) for m in mechanisms) + b"\0")


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstring(name) + cstring(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", struct.pack("!iI", pid, secret))


def negotiate_protocol_version(newest_minor: int, unsupported: list[str]) -> bytes:
    body = struct.pack("!ii", newest_minor, len(unsupported)) + b"".join(cstring(o) for o in unsupported)
    return message(b"v", body)


def row_description(fields) -> bytes:
    """fields: iterable of (name, type_oid, type_size, format_code)."""
    parts = [struct.pack("!h", len(fields))]
    for name, type_oid, type_size, format_code in fields:
        parts.append(cstring(name))
        parts.append(_FIELD.pack(0, 0, type_oid, type_size, -1, format_code))
    return message(b"T", b"".join(parts))


def parameter_description(oids) -> bytes:
    return message(b"t", struct.pack(f"!h{len(oids)}I", len(oids), *oids))


def data_row(cells) -> bytes:
    """cells: already-encoded column values (bytes) or None for SQL NULL."""
    parts = [b"", struct.pack("!h", len(cells))]
    size = 2
    for cell in cells:
        if cell is None:
            parts.append(b"\xff\xff\xff\xff")
            size += 4
        else:
            parts.append(_I32.pack(len(cell)))
            parts.append(cell)
            size += 4 + len(cell)
    parts[0] = _HEADER.pack(b"D", size + 4)
    return b"".join(parts)


def command_complete(tag: str) -> bytes:
    return message(b"C", cstring(tag))


def ready_for_query(status: bytes) -> bytes:
    return _READY.get(status) or b"Z\x00\x00\x00\x05" + status


_READY = {status: b"Z\x00\x00\x00\x05" + status for status in (b"I", b"T", b"E")}
# CommandComplete of a SELECT returning few rows, built once (one per point query).
_SELECT_COMPLETE = [command_complete(f"SELECT {rows}") for rows in range(64)]


def select_complete(rows: int) -> bytes:
    return _SELECT_COMPLETE[rows] if rows < 64 else command_complete(f"SELECT {rows}")


PARSE_COMPLETE = b"1\x00\x00\x00\x04"
BIND_COMPLETE = b"2\x00\x00\x00\x04"
CLOSE_COMPLETE = b"3\x00\x00\x00\x04"
NO_DATA = b"n\x00\x00\x00\x04"
PORTAL_SUSPENDED = b"s\x00\x00\x00\x04"
EMPTY_QUERY_RESPONSE = b"I\x00\x00\x00\x04"
AUTHENTICATION_OK = authentication(0)
SSL_DECLINED = b"N"
SSL_ACCEPTED = b"S"

# ErrorResponse / NoticeResponse field codes (protocol "Error and Notice Message Fields").
FIELD_CODES = {
    "severity": b"S", "severity_nonlocalized": b"V", "sqlstate": b"C", "message": b"M",
    "detail": b"D", "hint": b"H", "position": b"P", "where": b"W",
}


def error_fields(kind: bytes, fields: dict) -> bytes:
    body = b"".join(FIELD_CODES[key] + cstring(str(value)) for key, value in fields.items() if value is not None)
    return message(kind, body + b"\0")
