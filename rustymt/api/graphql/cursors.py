"""Relay cursors: opaque, signed positions in a filtered list.

A cursor names an offset in one list under one set of filters. It is
base64url(JSON) + "." + HMAC-SHA256 tag, so a client can neither forge an
offset nor replay a cursor against another list or other filters: both are
inside the signed payload and checked on the way back. The key lives in the
data dir (<data_dir>/keys/graphql-cursor.key, 0600), so cursors survive a
daemon restart.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from rustymt.service.errors import ServiceError

KEY_FILE = "graphql-cursor.key"
TAG_BYTES = 16


def load_or_create_cursor_key(data_dir: str) -> bytes:
    """32 random bytes kept in <data_dir>/keys; created 0600 on first use."""
    keys_dir = os.path.join(data_dir, "keys")
    os.makedirs(keys_dir, mode=0o700, exist_ok=True)
    path = os.path.join(keys_dir, KEY_FILE)
    try:
        with open(path, "rb") as handle:
            key = handle.read()
        if len(key) == 32:
            return key
    except FileNotFoundError:
        pass
    key = os.urandom(32)
    # O_EXCL: when two processes race, the loser reads the winner's key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as handle:
            return handle.read()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


class CursorCodec:
    def __init__(self, key: bytes):
        self._key = key

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:TAG_BYTES]

    def encode(self, kind: str, filters: dict[str, Any], offset: int) -> str:
        payload = json.dumps({"k": kind, "f": filters, "o": offset}, sort_keys=True, separators=(",", ":")).encode()
        return _b64(payload) + "." + _b64(self._tag(payload))

    def decode(self, cursor: str, kind: str, filters: dict[str, Any]) -> int:
        """The offset `cursor` stands for; INVALID_REQUEST if forged, altered or foreign."""
        try:
            body_text, tag_text = cursor.split(".")
            payload = _unb64(body_text)
            tag = _unb64(tag_text)
        except (ValueError, AttributeError):
            raise _bad_cursor("malformed") from None
        if not hmac.compare_digest(tag, self._tag(payload)):
            raise _bad_cursor("signature mismatch")
        fields = json.loads(payload)
        if fields.get("k") != kind or fields.get("f") != json.loads(json.dumps(filters, sort_keys=True)):
            raise _bad_cursor("it belongs to another list or other filters")
        offset = fields.get("o")
        if not isinstance(offset, int) or offset < 0:
            raise _bad_cursor("bad offset")
        return offset


def _bad_cursor(why: str) -> ServiceError:
    return ServiceError("INVALID_REQUEST", f"invalid cursor: {why}", field="after/before")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or len(text) > 2048:
        raise ValueError("bad length")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
