"""JSON answers: orjson when installed, the stdlib's json as its pure-Python twin.

    body = encode(value)          # UTF-8 bytes
    response(value, status=200)   # a web.Response with that body, application/json

Encoding the answer was the largest single cost of a GET after aiohttp's own
work: the stdlib encoder needs 25-40 us for a GET tenant body (900 bytes) and
80-130 us for a page of 20 tenants, orjson 2-3 us (docs/api.md
"Performance"). Both write the same JSON values; the bytes differ only in
spacing and in non-ASCII text being sent as UTF-8 instead of \\u escapes.
What orjson refuses (an integer beyond 64 bits) goes to the stdlib encoder,
which also raises for what neither can encode, as before.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from aiohttp import web

try:
    import orjson
except ImportError:  # the twin: same values, slower
    orjson = None

CONTENT_TYPE = "application/json"


def encode_stdlib(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encode(value: Any) -> bytes:
    if orjson is not None:
        try:
            return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:
            pass
    return encode_stdlib(value)


def response(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return encoded_response(encode(value), status, headers)


def encoded_response(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, headers=headers, content_type=CONTENT_TYPE, charset="utf-8")


class KeptEncodings:
    """encode() of the latest value per key, reused while the caller passes the very same object
    (for a service that hands out one kept dict until it changes: GET tenant, list tenants). The
    kept value is referenced, so its id cannot be reused by another object while it is kept.
    With `limit`, at most that many keys are kept (keys a client chooses: all are dropped when
    full, and the next answers are encoded again)."""

    def __init__(self, limit: int | None = None):
        self._kept: dict[Any, tuple[Any, bytes]] = {}
        self._limit = limit

    def encode(self, key: Any, value: Any) -> bytes:
        kept = self._kept.get(key)
        if kept is not None and kept[0] is value:
            return kept[1]
        data = encode(value)
        if kept is None and self._limit is not None and len(self._kept) >= self._limit:
            self._kept.clear()
        self._kept[key] = (value, data)
        return data
