"""Test-side frontend: builds client messages and a SCRAM client proof, for
driving the sans-IO ServerProtocol and for raw-socket robustness tests."""
from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import struct

from rustymt.engine.scram import scram_normalize


def startup(user="alice", database="app", version=196608, **params) -> bytes:
    body = struct.pack("!i", version)
    for key, value in dict(user=user, database=database, **params).items():
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def ssl_request() -> bytes:
    return struct.pack("!ii", 8, 80877103)


def gssenc_request() -> bytes:
    return struct.pack("!ii", 8, 80877104)


def cancel_request(pid, secret) -> bytes:
    return struct.pack("!iiiI", 16, 80877102, pid, secret)


def msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def query(sql: str) -> bytes:
    return msg(b"Q", sql.encode() + b"\0")


def parse(name: str, sql: str, oids=()) -> bytes:
    return msg(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack(f"!h{len(oids)}I", len(oids), *oids))


def bind(portal="", statement="", params=(), param_formats=(), result_formats=()) -> bytes:
    body = portal.encode() + b"\0" + statement.encode() + b"\0"
    body += struct.pack(f"!h{len(param_formats)}h", len(param_formats), *param_formats)
    body += struct.pack("!h", len(params))
    for value in params:
        body += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    body += struct.pack(f"!h{len(result_formats)}h", len(result_formats), *result_formats)
    return msg(b"B", body)


def describe(kind: bytes, name="") -> bytes:
    return msg(b"D", kind + name.encode() + b"\0")


def execute(portal="", max_rows=0) -> bytes:
    return msg(b"E", portal.encode() + b"\0" + struct.pack("!i", max_rows))


SYNC = msg(b"S")
FLUSH = msg(b"H")
TERMINATE = msg(b"X")


def split_messages(data: bytes) -> list[tuple[bytes, bytes]]:
    """Backend byte stream -> [(type, body)] (a lone 'N'/'S' SSL answer included as is)."""
    out, pos = [], 0
    while pos < len(data):
        kind = data[pos:pos + 1]
        if pos + 5 > len(data):
            out.append((kind, b""))
            break
        (length,) = struct.unpack_from("!i", data, pos + 1)
        out.append((kind, data[pos + 5:pos + 1 + length]))
        pos += 1 + length
    return out


def error_fields(body: bytes) -> dict:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1].decode()] = part[1:].decode()
    return fields


class ScramClient:
    def __init__(self, password: str, nonce: str = "fyko+d2lbbFgONRv9qkxdawL"):
        self.password, self.nonce = password, nonce
        self.first_bare = f"n=,r={nonce}"

    def initial_response(self) -> bytes:
        payload = ("n,," + self.first_bare).encode()
        return msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(payload)) + payload)

    def final_response(self, server_first: bytes) -> bytes:
        attrs = dict(part.split("=", 1) for part in server_first.decode().split(","))
        salted = hashlib.pbkdf2_hmac("sha256", scram_normalize(self.password), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.new(hashlib.sha256(client_key).digest(), auth, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return msg(b"p", f"{without_proof},p={base64.b64encode(proof).decode()}".encode())


def read_until(sock: socket.socket, predicate, limit=1 << 20) -> bytes:
    """Read until predicate(data) or EOF; returns what was read."""
    data = b""
    while not predicate(data) and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data
