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

This is the one SCRAM implementation: rustymt.service.passwords re-exports
the verifier functions for PDB users it stores.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
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


def b64decode_lenient(text: str) -> bytes:
    """Decode base64 with or without padding; ValueError when it is not base64."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from None


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep for stored strings; ValueError when `text` is prohibited.

    PostgreSQL applies this to passwords and, when it fails, falls back to the
    raw bytes (src/common/saslprep.c); scram_normalize does the same.
    """
    # 1. Map: non-ASCII spaces -> space, "commonly mapped to nothing" -> removed.
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in text
        if not stringprep.in_table_b1(ch)
    )
    # 2. Normalize with NFKC.
    normalized = unicodedata.normalize("NFKC", mapped)
    if not normalized:
        return normalized
    # 3. Prohibit; unassigned code points too (stored strings, RFC 3454 section 7).
    prohibited = (
        stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22,
        stringprep.in_table_c3, stringprep.in_table_c4, stringprep.in_table_c5,
        stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
        stringprep.in_table_c9, stringprep.in_table_a1,
    )
    for ch in normalized:
        if any(table(ch) for table in prohibited):
            raise ValueError(f"prohibited character U+{ord(ch):04X}")
    # 4. Bidirectional text: RandAL text must not mix with L and must start and end with RandAL.
    rand_al = [stringprep.in_table_d1(ch) for ch in normalized]
    if any(rand_al):
        if any(stringprep.in_table_d2(ch) for ch in normalized):
            raise ValueError("mixes right-to-left and left-to-right characters")
        if not (rand_al[0] and rand_al[-1]):
            raise ValueError("right-to-left text must start and end with a right-to-left character")
    return normalized


def scram_normalize(password: str) -> bytes:
    """The bytes PostgreSQL feeds to PBKDF2: SASLprep'd UTF-8, or the raw UTF-8 when that fails."""
    try:
        return saslprep(password).encode("utf-8")
    except ValueError:
        return password.encode("utf-8")


@dataclasses.dataclass(frozen=True)
class ScramVerifier:
    iterations: int
    salt: bytes
    stored_key: bytes  # H(ClientKey): checks the client's proof
    server_key: bytes  # HMAC(SaltedPassword, "Server Key"): signs the server's final message

    def __str__(self) -> str:
        return f"{MECHANISM}${self.iterations}:{_b64(self.salt)}${_b64(self.stored_key)}:{_b64(self.server_key)}"


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes, bytes]:
    """(SaltedPassword, StoredKey, ServerKey) as RFC 5802 section 3 defines them."""
    salted = hashlib.pbkdf2_hmac("sha256", scram_normalize(password), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return salted, stored_key, server_key


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier string for `password` (random 16-byte salt by default)."""
    if not isinstance(password, str):
        raise TypeError("password must be a str")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    _, stored_key, server_key = scram_keys(password, salt, iterations)
    return str(ScramVerifier(iterations, salt, stored_key, server_key))


make_verifier = scram_verifier   # the name the wire server's callers use


def parse_scram_verifier(text: str) -> ScramVerifier:
    """Split a verifier string; ValueError when it is not SCRAM-SHA-256$<i>:<salt>$<stored>:<server>."""
    try:
        scheme, rest = text.split("$", 1)
        iter_salt, keys = rest.split("$", 1)
        iterations_text, salt_text = iter_salt.split(":", 1)
        stored_text, server_text = keys.split(":", 1)
        iterations = int(iterations_text)
    except ValueError:
        raise ValueError("not a SCRAM-SHA-256 verifier") from None
    if scheme != MECHANISM:
        raise ValueError("not a SCRAM-SHA-256 verifier")
    if not 1 <= iterations <= 10_000_000:
        raise ValueError("SCRAM iteration count out of range")
    salt, stored_key, server_key = b64decode_lenient(salt_text), b64decode_lenient(stored_text), b64decode_lenient(server_text)
    if not salt or len(stored_key) != 32 or len(server_key) != 32:
        raise ValueError("SCRAM salt or key has a bad length")
    return ScramVerifier(iterations, salt, stored_key, server_key)


def scram_verify_password(password: str, verifier: str) -> bool:
    """True when `password` produces `verifier`'s StoredKey and ServerKey (constant-time)."""
    try:
        parsed = parse_scram_verifier(verifier)
    except ValueError:
        return False
    _, stored_key, server_key = scram_keys(password, parsed.salt, parsed.iterations)
    return hmac.compare_digest(stored_key + server_key, parsed.stored_key + parsed.server_key)


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
                parsed = parse_scram_verifier(verifier)
                self.iterations, self.salt = parsed.iterations, parsed.salt
                self.stored_key, self.server_key = parsed.stored_key, parsed.server_key
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

