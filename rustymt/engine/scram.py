"""SCRAM-SHA-256 (RFC 5802 / RFC 7677), server side, as PostgreSQL speaks it.

PostgreSQL clients (libpq, psycopg, asyncpg) authenticate with SCRAM-SHA-256
against a stored verifier; the server never sees or stores the password:

    verifier = "SCRAM-SHA-256$<iterations>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>"
    SaltedPassword = PBKDF2-HMAC-SHA256(SASLprep(password), salt, iterations)
    ClientKey = HMAC(SaltedPassword, "Client Key");  StoredKey = SHA256(ClientKey)
    ServerKey = HMAC(SaltedPassword, "Server Key")

The exchange (one ScramExchange per authentication attempt):

    1. client-first  "n,,n=<ignored>,r=<client nonce>"  -> server-first
       "r=<client nonce + server nonce>,s=<salt>,i=<iterations>"
    2. client-final  "c=<b64 gs2 header>,r=<nonce>,p=<proof>"; the server
       recomputes ClientKey = proof XOR HMAC(StoredKey, AuthMessage) and
       accepts iff SHA256(ClientKey) == StoredKey -> server-final "v=<signature>".

The SCRAM user name is ignored (libpq sends it empty): the startup message's
user is authoritative. For an unknown user the exchange runs with a salt derived
from a per-process secret and the user name, and fails only at step 2, so user
names cannot be probed (PostgreSQL's mock authentication).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stringprep
import unicodedata

MECHANISM = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096  # PostgreSQL's scram_iterations default
SALT_BYTES = 16
NONCE_BYTES = 18
_MOCK_SECRET = secrets.token_bytes(32)


class ScramError(Exception):
    """The client's messages are malformed or its proof is wrong."""


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def saslprep(password: str) -> str:
    """RFC 4013 SASLprep; like PostgreSQL, fall back to the raw string when the
    password contains prohibited characters (so such passwords still work)."""
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in password
        if not stringprep.in_table_b1(ch)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
        stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6,
        stringprep.in_table_c7, stringprep.in_table_c8, stringprep.in_table_c9,
    )
    if any(test(ch) for ch in normal for test in prohibited):
        return password
    if any(stringprep.in_table_d1(ch) for ch in normal):
        # RandALCat text must start and end with RandALCat and contain no LCat.
        if not (stringprep.in_table_d1(normal[0]) and stringprep.in_table_d1(normal[-1])):
            return password
        if any(stringprep.in_table_d2(ch) for ch in normal):
            return password
    return normal


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    stored_key = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
    server_key = _hmac(salted, b"Server Key")
    return stored_key, server_key


def make_verifier(password: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS) -> str:
    """PostgreSQL-format SCRAM-SHA-256 verifier for `password`."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    stored_key, server_key = _keys(password, salt, iterations)
    return f"{MECHANISM}${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def parse_verifier(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    """-> (iterations, salt, stored_key, server_key); ValueError if malformed."""
    try:
        mechanism, rest = verifier.split("$", 1)
        params, keys = rest.split("$", 1)
        iterations_text, salt_b64 = params.split(":", 1)
        stored_b64, server_b64 = keys.split(":", 1)
        iterations = int(iterations_text)
        salt = base64.b64decode(salt_b64, validate=True)
        stored_key = base64.b64decode(stored_b64, validate=True)
        server_key = base64.b64decode(server_b64, validate=True)
    except (ValueError, TypeError) as exc:
        raise ValueError("malformed SCRAM verifier") from exc
    if mechanism != MECHANISM or iterations < 1 or len(stored_key) != 32 or len(server_key) != 32:
        raise ValueError("malformed SCRAM verifier")
    return iterations, salt, stored_key, server_key


def _attributes(message: str) -> list[tuple[str, str]]:
    pairs = []
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError(f"malformed SCRAM attribute {part[:16]!r}")
        pairs.append((part[0], part[2:]))
    return pairs


class ScramExchange:
    """One server-side SCRAM-SHA-256 exchange. `verifier` None = unknown user
    (mock exchange that always fails at the end)."""

    def __init__(self, verifier: str | None, user: str, server_nonce: str | None = None):
        # server_nonce: fixed only by tests replaying RFC 7677's example exchange.
        self._server_nonce = server_nonce
        self.mock = verifier is None
        if verifier is not None:
            try:
                self.iterations, self.salt, self.stored_key, self.server_key = parse_verifier(verifier)
            except ValueError:
                verifier = None
                self.mock = True
        if self.mock:
            self.iterations = DEFAULT_ITERATIONS
            self.salt = _hmac(_MOCK_SECRET, user.encode("utf-8", "replace"))[:SALT_BYTES]
            self.stored_key = self.server_key = b""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._gs2_header = ""

    def server_first(self, client_first: bytes) -> bytes:
        """Handle client-first-message; return server-first-message."""
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScramError("client-first-message is not UTF-8") from exc
        # gs2-header = cbind-flag "," [authzid] ","
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise ScramError("malformed client-first-message")
        flag, authzid, bare = parts
        if flag.startswith("p="):
            raise ScramError("channel binding was not offered (SCRAM-SHA-256-PLUS)")
        if flag not in ("n", "y"):
            raise ScramError("malformed gs2 channel binding flag")
        if authzid:
            raise ScramError("authorization identities are not supported")
        attrs = _attributes(bare)
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            raise ScramError("client-first-message must be n=...,r=...")
        if any(key == "m" for key, _ in attrs):
            raise ScramError("mandatory SCRAM extensions are not supported")
        client_nonce = attrs[1][1]
        if not client_nonce or any(ch < "!" or ch > "~" or ch == "," for ch in client_nonce):
            raise ScramError("invalid client nonce")
        self._gs2_header = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = client_nonce + (self._server_nonce or _b64(secrets.token_bytes(NONCE_BYTES)))
        self._server_first = f"r={self._nonce},s={_b64(self.salt)},i={self.iterations}"
        return self._server_first.encode("ascii")

    def server_final(self, client_final: bytes) -> bytes:
        """Verify client-final-message; return server-final-message or raise ScramError."""
        if not self._server_first:
            raise ScramError("client-final-message before client-first-message")
        try:
            text = client_final.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScramError("client-final-message is not UTF-8") from exc
        attrs = _attributes(text)
        if len(attrs) < 3 or attrs[0][0] != "c" or attrs[1][0] != "r" or attrs[-1][0] != "p":
            raise ScramError("client-final-message must be c=...,r=...,...,p=...")
        try:
            binding = base64.b64decode(attrs[0][1], validate=True).decode("utf-8")
            proof = base64.b64decode(attrs[-1][1], validate=True)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ScramError("malformed base64 in client-final-message") from exc
        if binding != self._gs2_header:
            raise ScramError("channel binding header does not match")
        if attrs[1][1] != self._nonce:
            raise ScramError("nonce does not match")
        without_proof = text[: text.rindex(",p=")]
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode("utf-8")
        if self.mock or len(proof) != 32:
            raise ScramError("password authentication failed")
        signature = _hmac(self.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.stored_key):
            raise ScramError("password authentication failed")
        return f"v={_b64(_hmac(self.server_key, auth_message))}".encode("ascii")

