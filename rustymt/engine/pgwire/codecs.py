"""Type OIDs and value codecs between SQLite values and PostgreSQL formats.

Only PostgreSQL's builtin OIDs are ever described (asyncpg introspects pg_type
for anything else). SQLite values are dynamically typed, so every encoder
accepts any SQLite value (None/int/float/str/bytes) and converts it to the
described type, raising PgError 22P02/22003 when it cannot.

Decoders turn client parameter values (text or binary) into values SQLite can
bind: ints, floats, str, bytes; dates and timestamps become ISO text, which is
how SQLite's date functions store them.
"""
from __future__ import annotations

import datetime
import decimal
import struct
import uuid

from . import sqlstate as S
from .errors import PgError

BOOL, BYTEA, INT8, INT2, INT4, TEXT, JSON, FLOAT4, FLOAT8, UNKNOWN = 16, 17, 20, 21, 23, 25, 114, 700, 701, 705
VARCHAR, BPCHAR, DATE, TIMESTAMP, TIMESTAMPTZ, NUMERIC, UUID, JSONB, VOID = 1043, 1042, 1082, 1114, 1184, 1700, 2950, 3802, 2278

TYPE_NAMES = {
    BOOL: "boolean", BYTEA: "bytea", INT8: "bigint", INT2: "smallint", INT4: "integer",
    TEXT: "text", JSON: "json", FLOAT4: "real", FLOAT8: "double precision", VARCHAR: "character varying",
    BPCHAR: "character", DATE: "date", TIMESTAMP: "timestamp without time zone",
    TIMESTAMPTZ: "timestamp with time zone", NUMERIC: "numeric", UUID: "uuid", JSONB: "jsonb",
    UNKNOWN: "unknown", VOID: "void",
}
# pg_type.typname: PostgreSQL names an unaliased cast column after it.
PG_TYPE_NAMES = {BOOL: "bool", BYTEA: "bytea", INT8: "int8", INT2: "int2", INT4: "int4", TEXT: "text",
                 JSON: "json", FLOAT4: "float4", FLOAT8: "float8", VARCHAR: "varchar", BPCHAR: "bpchar",
                 DATE: "date", TIMESTAMP: "timestamp", TIMESTAMPTZ: "timestamptz", NUMERIC: "numeric",
                 UUID: "uuid", JSONB: "jsonb"}
# pg_type.typlen, as RowDescription reports it.
TYPE_SIZES = {BOOL: 1, INT2: 2, INT4: 4, INT8: 8, FLOAT4: 4, FLOAT8: 8, DATE: 4, TIMESTAMP: 8,
              TIMESTAMPTZ: 8, UUID: 16, VOID: 4}
INTEGER_OIDS = frozenset((INT2, INT4, INT8))
FLOAT_OIDS = frozenset((FLOAT4, FLOAT8))

# Declared type names (SQL spelling, as CREATE TABLE wrote them) -> OID.
_DECLTYPE_WORDS = {
    "int2": INT2, "smallint": INT2, "int4": INT4, "int": INT4, "integer": INT4, "serial": INT4,
    "serial4": INT4, "mediumint": INT4, "int8": INT8, "bigint": INT8, "bigserial": INT8, "serial8": INT8,
    "real": FLOAT8, "float4": FLOAT4, "float8": FLOAT8, "float": FLOAT8, "double": FLOAT8,
    "numeric": NUMERIC, "decimal": NUMERIC, "bool": BOOL, "boolean": BOOL,
    "text": TEXT, "varchar": VARCHAR, "character": BPCHAR, "char": BPCHAR, "bpchar": BPCHAR,
    "clob": TEXT, "string": TEXT, "name": TEXT, "citext": TEXT,
    "blob": BYTEA, "bytea": BYTEA, "date": DATE, "timestamp": TIMESTAMP, "datetime": TIMESTAMP,
    "timestamptz": TIMESTAMPTZ, "uuid": UUID, "json": JSON, "jsonb": JSONB,
}


def oid_for_decltype(decltype: str | None) -> int | None:
    """OID for a declared column type, None when undeclared (an expression)."""
    if not decltype:
        return None
    words = decltype.lower().replace("(", " ").replace(")", " ").split()
    if not words:
        return None
    if words[0] == "character" and "varying" in words:
        return VARCHAR
    if words[0] == "double":
        return FLOAT8
    if words[0] == "timestamp" and "with" in words and "without" not in words:
        return TIMESTAMPTZ
    found = _DECLTYPE_WORDS.get(words[0])
    if found is not None:
        return found
    # SQLite's affinity rules (datatype3.html §3.1) for names we do not know.
    name = words[0]
    if "int" in name:
        return INT8
    if "char" in name or "clob" in name or "text" in name:
        return TEXT
    if "real" in name or "floa" in name or "doub" in name:
        return FLOAT8
    return TEXT


# SQLite fundamental types (sqlite3_column_type) -> OID for undeclared columns.
OID_FOR_VALUE_TYPE = {1: INT8, 2: FLOAT8, 3: TEXT, 4: BYTEA, 5: TEXT}


def oid_for_value(value) -> int:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT8
    if isinstance(value, float):
        return FLOAT8
    if isinstance(value, (bytes, bytearray, memoryview)):
        return BYTEA
    return TEXT


def _bad(oid: int, value, exc=None) -> PgError:
    return PgError(S.INVALID_TEXT_REPRESENTATION,
                   f"invalid input syntax for type {TYPE_NAMES.get(oid, oid)}: {str(value)[:64]!r}")


# ---- conversions shared by text and binary -------------------------------------------------

def _as_int(value, oid):
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(value.decode() if isinstance(value, bytes) else str(value).strip())
    except (ValueError, UnicodeDecodeError):
        raise _bad(oid, value) from None


def _as_float(value, oid):
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value.decode() if isinstance(value, bytes) else value)
    except (ValueError, UnicodeDecodeError):
        raise _bad(oid, value) from None


def _as_bool(value):
    if isinstance(value, str):
        return value.strip().lower() in ("t", "true", "1", "y", "yes", "on")
    return bool(value)


def _as_text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float):
        return _float_text(value)
    return str(value)


def _float_text(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


_PG_EPOCH = datetime.datetime(2000, 1, 1)
_PG_EPOCH_DATE = datetime.date(2000, 1, 1)


def _as_datetime(value, oid) -> datetime.datetime:
    if isinstance(value, (int, float)):  # unix epoch seconds, as SQLite's unixepoch()
        return datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=value)
    text = _as_text(value).strip().replace("T", " ")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if len(text) > 3 and text[-3] in "+-" and text[-3:].lstrip("+-").isdigit() and " " in text:
        text += ":00"  # "+00" -> "+00:00"
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise _bad(oid, value) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return parsed


def _as_date(value, oid) -> datetime.date:
    try:
        return datetime.date.fromisoformat(_as_text(value).strip()[:10])
    except ValueError:
        raise _bad(oid, value) from None


def _bytea_text(value) -> bytes:
    raw = value if isinstance(value, bytes) else _as_text(value).encode("utf-8")
    return b"\\x" + raw.hex().encode("ascii")


# ---- text format ----------------------------------------------------------------------------

def _text_int(oid):
    def encode(v):
        if type(v) is int:  # what SQLite hands back for an integer column: one format, no calls
            return b"%d" % v
        return str(_as_int(v, oid)).encode("ascii")
    return encode


def _text_float(oid):
    return lambda v: _float_text(_as_float(v, oid)).encode("ascii")


def _text_plain(v) -> bytes:
    return v if isinstance(v, bytes) else _as_text(v).encode("utf-8")


def _text_timestamp(oid):
    def encode(v):
        if isinstance(v, str):
            return v.encode("utf-8")
        text = _as_datetime(v, oid).isoformat(" ")
        return (text + "+00" if oid == TIMESTAMPTZ else text).encode("ascii")
    return encode


TEXT_ENCODERS = {
    INT2: _text_int(INT2), INT4: _text_int(INT4), INT8: _text_int(INT8),
    FLOAT4: _text_float(FLOAT4), FLOAT8: _text_float(FLOAT8),
    BOOL: lambda v: b"t" if _as_bool(v) else b"f",
    BYTEA: _bytea_text,
    TIMESTAMP: _text_timestamp(TIMESTAMP), TIMESTAMPTZ: _text_timestamp(TIMESTAMPTZ),
}


def text_encoder(oid: int):
    return TEXT_ENCODERS.get(oid, _text_plain)


# ---- binary format --------------------------------------------------------------------------

def _packer(fmt, convert, oid):
    pack = struct.Struct(fmt).pack

    def encode(v):
        try:
            return pack(convert(v, oid))
        except struct.error:
            raise PgError(S.NUMERIC_VALUE_OUT_OF_RANGE,
                          f"value {str(v)[:32]} is out of range for type {TYPE_NAMES[oid]}") from None
    return encode


def _binary_timestamp(oid):
    pack = struct.Struct("!q").pack

    def encode(v):
        delta = _as_datetime(v, oid) - _PG_EPOCH
        return pack((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)
    return encode


def _binary_date(v):
    return struct.pack("!i", (_as_date(v, DATE) - _PG_EPOCH_DATE).days)


def _binary_uuid(v):
    if isinstance(v, bytes) and len(v) == 16:
        return v
    try:
        return uuid.UUID(_as_text(v)).bytes
    except ValueError:
        raise _bad(UUID, v) from None


def _binary_bytea(v):
    return v if isinstance(v, bytes) else _as_text(v).encode("utf-8")


def encode_numeric_binary(v) -> bytes:
    """numeric send format: ndigits, weight, sign, dscale, base-10000 digits."""
    if isinstance(v, float):
        v = decimal.Decimal(repr(v))
    elif not isinstance(v, decimal.Decimal):
        try:
            v = decimal.Decimal(_as_text(v).strip())
        except decimal.InvalidOperation:
            raise _bad(NUMERIC, v) from None
    if v.is_nan():
        return struct.pack("!hhHh", 0, 0, 0xC000, 0)
    if v.is_infinite():
        return struct.pack("!hhHh", 0, 0, 0xD000 if v > 0 else 0xF000, 0)
    sign, _digits, exponent = v.as_tuple()
    dscale = max(0, -exponent)
    int_part, _, frac_part = format(v.copy_abs(), "f").partition(".")
    int_part = int_part.lstrip("0")
    int_part = "0" * ((-len(int_part)) % 4) + int_part
    frac_part += "0" * ((-len(frac_part)) % 4)
    digits = int_part + frac_part
    groups = [int(digits[i:i + 4]) for i in range(0, len(digits), 4)]
    weight = len(int_part) // 4 - 1
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    return struct.pack(f"!hhHh{len(groups)}H", len(groups), weight, 0x4000 if sign else 0, dscale, *groups)


def decode_numeric_binary(data: bytes) -> decimal.Decimal:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHh", data)
    if sign == 0xC000:
        return decimal.Decimal("NaN")
    if sign in (0xD000, 0xF000):
        return decimal.Decimal("Infinity" if sign == 0xD000 else "-Infinity")
    groups = struct.unpack_from(f"!{ndigits}H", data, 8)
    with decimal.localcontext() as exact:
        exact.prec = 4 * (ndigits + abs(weight)) + dscale + 4  # never round
        value = decimal.Decimal(0)
        for index, group in enumerate(groups):
            value += decimal.Decimal(group).scaleb(4 * (weight - index))
        value = value.quantize(decimal.Decimal(1).scaleb(-dscale))
    return -value if sign == 0x4000 else value


BINARY_ENCODERS = {
    INT2: _packer("!h", _as_int, INT2), INT4: _packer("!i", _as_int, INT4), INT8: _packer("!q", _as_int, INT8),
    FLOAT4: _packer("!f", _as_float, FLOAT4), FLOAT8: _packer("!d", _as_float, FLOAT8),
    BOOL: lambda v: b"\x01" if _as_bool(v) else b"\x00",
    BYTEA: _binary_bytea, DATE: _binary_date, UUID: _binary_uuid, NUMERIC: encode_numeric_binary,
    TIMESTAMP: _binary_timestamp(TIMESTAMP), TIMESTAMPTZ: _binary_timestamp(TIMESTAMPTZ),
    JSONB: lambda v: b"\x01" + _text_plain(v),
}


def binary_encoder(oid: int):
    return BINARY_ENCODERS.get(oid, _text_plain)


def encoder(oid: int, format_code: int):
    return binary_encoder(oid) if format_code else text_encoder(oid)


# ---- parameter decoding (client -> SQLite value) --------------------------------------------

def _text_to_bool(data: bytes):
    word = data.decode("ascii", "replace").strip().lower()
    if word in ("t", "true", "y", "yes", "on", "1"):
        return 1
    if word in ("f", "false", "n", "no", "off", "0"):
        return 0
    raise _bad(BOOL, word)


def _text_to_bytea(data: bytes) -> bytes:
    if data.startswith(b"\\x"):
        try:
            return bytes.fromhex(data[2:].decode("ascii"))
        except ValueError:
            raise _bad(BYTEA, data) from None
    return data


def _text_to_int(data: bytes):
    try:
        return int(data)
    except ValueError:
        raise _bad(INT8, data) from None


def _text_to_float(data: bytes):
    try:
        return float(data)
    except ValueError:
        raise _bad(FLOAT8, data) from None


def _text_to_str(data: bytes):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PgError(S.CHARACTER_NOT_IN_REPERTOIRE, "invalid byte sequence for encoding \"UTF8\"") from None


TEXT_DECODERS = {
    INT2: _text_to_int, INT4: _text_to_int, INT8: _text_to_int,
    FLOAT4: _text_to_float, FLOAT8: _text_to_float,
    BOOL: _text_to_bool, BYTEA: _text_to_bytea,
}


def _binary_timestamp_to_text(oid):
    def decode(data):
        (micros,) = struct.unpack("!q", data)
        text = (_PG_EPOCH + datetime.timedelta(microseconds=micros)).isoformat(" ")
        return text + "+00:00" if oid == TIMESTAMPTZ else text
    return decode


def _unpacker(fmt):
    unpack = struct.Struct(fmt).unpack
    return lambda data: unpack(data)[0]


BINARY_DECODERS = {
    INT2: _unpacker("!h"), INT4: _unpacker("!i"), INT8: _unpacker("!q"),
    FLOAT4: _unpacker("!f"), FLOAT8: _unpacker("!d"),
    BOOL: lambda data: 1 if data != b"\x00" else 0,
    BYTEA: bytes, UNKNOWN: _text_to_str, TEXT: _text_to_str, VARCHAR: _text_to_str, BPCHAR: _text_to_str,
    JSON: _text_to_str, JSONB: lambda data: _text_to_str(data[1:]),
    DATE: lambda data: (_PG_EPOCH_DATE + datetime.timedelta(days=struct.unpack("!i", data)[0])).isoformat(),
    TIMESTAMP: _binary_timestamp_to_text(TIMESTAMP), TIMESTAMPTZ: _binary_timestamp_to_text(TIMESTAMPTZ),
    UUID: lambda data: str(uuid.UUID(bytes=data)),
    NUMERIC: lambda data: _numeric_to_sqlite(decode_numeric_binary(data)),
}


def _numeric_to_sqlite(value: decimal.Decimal):
    if value == value.to_integral_value() and value.is_finite():
        return int(value)
    return str(value)


def decode_param(data: bytes | None, oid: int, format_code: int):
    """A Bind parameter as a value SQLite can bind."""
    if data is None:
        return None
    if format_code:
        decode = BINARY_DECODERS.get(oid)
        if decode is None:
            raise PgError(S.FEATURE_NOT_SUPPORTED, f"binary format for parameter type {oid} is not supported")
        try:
            return decode(data)
        except (struct.error, ValueError, IndexError):
            raise PgError(S.INVALID_BINARY_REPRESENTATION,
                          f"incorrect binary data format in bind parameter (type {TYPE_NAMES.get(oid, oid)})") from None
    decode = TEXT_DECODERS.get(oid, _text_to_str)
    return decode(data)


def sql_literal(value) -> str:
    """SQLite literal for a value the front layer substitutes into SQL text."""
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"

