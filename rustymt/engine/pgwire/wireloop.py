"""What the native round-trip loop (native/wireloop.c, _core.WireLoop) is told
about a statement it may serve: parameter and column codecs as the loop's
small kinds, and the exact bytes it matches (Parse body, result formats).

A kind names a codec of codecs.py that the C loop reproduces byte for byte
for the storage classes it handles (anything else makes the loop hand the
batch to Python); a codec without a kind makes the statement ineligible.
The Python session path is the twin: tests/pgwire/test_pgwire_fastpaths.py
compares the two outputs.
"""
from __future__ import annotations

import struct

from ..._native import _core
from . import codecs as C

P = getattr(_core, "LOOP_PARAM_KINDS", {})
K = getattr(_core, "LOOP_COLUMN_KINDS", {})
REPORT_MS = 100   # the loop hands latencies of served statements to Python at least this often
MAX_PARAMS = 64   # RMT_WL_MAX_PARAMS (native/wireloop.h): statements with more stay Python's

_TEXT_PARAM = {C._text_to_int: "int", C._text_to_bool: "bool", C._text_to_str: "str"}
_BINARY_PARAM_BY_OID = {C.INT2: "int2", C.INT4: "int4", C.INT8: "int8", C.BOOL: "bool"}
_COLUMN = {C._text_plain: "plain", C._binary_bytea: "plain", C._bytea_text: "text_bytea",
           C.TEXT_ENCODERS[C.BOOL]: "text_bool", C.BINARY_ENCODERS[C.BOOL]: "bin_bool",
           C.BINARY_ENCODERS[C.INT2]: "bin_int2", C.BINARY_ENCODERS[C.INT4]: "bin_int4",
           C.BINARY_ENCODERS[C.INT8]: "bin_int8"}
_COLUMN.update({C.TEXT_ENCODERS[oid]: "text_int" for oid in C.INTEGER_OIDS})


def param_kinds(oids) -> tuple[bytes, bytes]:
    """(kinds for text format, kinds for binary format), one byte per parameter
    (0: that format is not for the loop)."""
    text, binary = bytearray(), bytearray()
    for oid in oids:
        text.append(P[_TEXT_PARAM.get(C.TEXT_DECODERS.get(oid, C._text_to_str), "none")])
        if C.BINARY_DECODERS.get(oid) is C._text_to_str:
            binary.append(P["str"])
        else:
            binary.append(P[_BINARY_PARAM_BY_OID.get(oid, "none")])
    return bytes(text), bytes(binary)


def column_kinds(encoders) -> bytes | None:
    """One kind per result column, None when a column's codec is not the loop's."""
    kinds = bytearray()
    for encode in encoders:
        name = _COLUMN.get(encode)
        if name is None:
            return None
        kinds.append(K[name])
    return bytes(kinds)


def parse_body(sql: str, oids) -> bytes:
    """The body of an unnamed Parse of `sql` declaring `oids`."""
    return b"\0" + sql.encode("utf-8") + b"\0" + struct.pack(f"!h{len(oids)}I", len(oids), *oids)


def result_formats(formats) -> bytes:
    """Bind's result-format section (count, codes)."""
    return struct.pack(f"!h{len(formats)}h", len(formats), *formats)
