"""Password storage: scrypt hashes for API logins, SCRAM verifiers for PDB users.

Nothing in rustymt stores a password. Tenant administrators' API passwords are
kept as self-describing scrypt strings,

    $scrypt$ln=14,r=8,p=1$<salt>$<digest>        (base64, no padding)

so the cost can be raised later without breaking old hashes (verify reads the
parameters from the string). PDB users, who log in over the PostgreSQL wire
protocol, are kept as PostgreSQL's own SCRAM-SHA-256 verifier,

    SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>   (base64)

which is exactly what `pg_authid.rolpassword` holds, so a PostgreSQL client's
SCRAM exchange can be checked against it (RFC 5802 / RFC 7677) and the value
can be moved between rustymt and PostgreSQL unchanged.

Every comparison of secret material is constant-time (hmac.compare_digest).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import os
import stringprep
import unicodedata

# scrypt cost: N = 2**14, r = 8 -> 16 MiB, the scrypt paper's interactive-login
# setting (tens of milliseconds per hash on an idle core).
# That bounds password guessing through POST /api/v1/auth/token while keeping
# tenant creation quick. Stored strings carry their own parameters.
SCRYPT_LOG2_N = 14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16
SCRYPT_DIGEST_BYTES = 32
# Upper bounds accepted when reading a stored string, so a corrupted or hostile
# catalog row cannot make a login allocate gigabytes.
SCRYPT_MAX_LOG2_N = 20
SCRYPT_MAX_R = 16
SCRYPT_MAX_P = 16

# PostgreSQL's defaults (src/include/common/scram-common.h).
SCRAM_ITERATIONS = 4096
SCRAM_SALT_BYTES = 16
SCRAM_PREFIX = "SCRAM-SHA-256"


def _b64(raw: bytes, padded: bool = False) -> str:
    text = base64.b64encode(raw).decode("ascii")
    return text if padded else text.rstrip("=")


def _unb64(text: str) -> bytes:
    """Decode base64 with or without padding; ValueError when it is not base64."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from None


# ---- scrypt (API logins) ---------------------------------------------------


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int, length: int) -> bytes:
    n = 1 << log2_n
    # hashlib needs maxmem above 128 * r * n (the V array) plus working space.
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


def hash_password(password: str) -> str:
    """A new scrypt hash of `password` with a random salt."""
    if not isinstance(password, str):
        raise TypeError("password must be a str")
    salt = os.urandom(SCRYPT_SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, SCRYPT_DIGEST_BYTES)
    return f"$scrypt$ln={SCRYPT_LOG2_N},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(digest)}"


@dataclasses.dataclass(frozen=True)
class ScryptHash:
    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def parse_scrypt_hash(stored: str) -> ScryptHash:
    """Split a stored scrypt string; ValueError when malformed or out of bounds."""
    parts = stored.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "scrypt":
        raise ValueError("not a $scrypt$ hash")
    try:
        params = dict(item.split("=", 1) for item in parts[2].split(","))
        log2_n, r, p = int(params["ln"]), int(params["r"]), int(params["p"])
    except (KeyError, ValueError):
        raise ValueError("scrypt parameters must be ln=<int>,r=<int>,p=<int>") from None
    if not (1 <= log2_n <= SCRYPT_MAX_LOG2_N and 1 <= r <= SCRYPT_MAX_R and 1 <= p <= SCRYPT_MAX_P):
        raise ValueError("scrypt parameters out of bounds")
    salt, digest = _unb64(parts[3]), _unb64(parts[4])
    if not salt or not 16 <= len(digest) <= 64:
        raise ValueError("scrypt salt or digest has a bad length")
    return ScryptHash(log2_n, r, p, salt, digest)


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches `stored` (a $scrypt$ hash or a SCRAM verifier).

    A malformed `stored` value verifies nothing (False); it never raises, so a
    login path cannot be turned into an error oracle.
    """
    if not isinstance(password, str) or not isinstance(stored, str):
        return False
    if stored.startswith(SCRAM_PREFIX + "$"):
        return scram_verify_password(password, stored)
    try:
        parsed = parse_scrypt_hash(stored)
    except ValueError:
        return False
    candidate = _scrypt(password, parsed.salt, parsed.log2_n, parsed.r, parsed.p, len(parsed.digest))
    return hmac.compare_digest(candidate, parsed.digest)


# The hash of a random password nobody kept, made with the current parameters
# (a unit test keeps them equal). A constant rather than computed on first use:
# computing it then would make the first unknown-user login visibly slower.
DECOY_HASH = "$scrypt$ln=14,r=8,p=1$atP/C1/TyhFhWSmcsjiy1A$PFe3tPUxpLakpq8Ww4ztINdTeLd1Cf4MqvrpI+A/Slg"


def burn_verify(password: str) -> bool:
    """Do the same work as verify_password against a real hash, then refuse.

    Login paths call this for an unknown user so that "no such user" and
    "wrong password" take the same time and give the same answer.
    """
    verify_password(password, DECOY_HASH)
    return False


# ---- SCRAM-SHA-256 verifiers (PDB users, PostgreSQL wire protocol) ------------


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
        return (f"{SCRAM_PREFIX}${self.iterations}:{_b64(self.salt, padded=True)}"
                f"${_b64(self.stored_key, padded=True)}:{_b64(self.server_key, padded=True)}")


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes, bytes]:
    """(SaltedPassword, StoredKey, ServerKey) as RFC 5802 section 3 defines them."""
    salted = hashlib.pbkdf2_hmac("sha256", scram_normalize(password), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return salted, stored_key, server_key


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier string for `password` (random 16-byte salt by default)."""
    if not isinstance(password, str):
        raise TypeError("password must be a str")
    salt = os.urandom(SCRAM_SALT_BYTES) if salt is None else salt
    _, stored_key, server_key = scram_keys(password, salt, iterations)
    return str(ScramVerifier(iterations, salt, stored_key, server_key))


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
    if scheme != SCRAM_PREFIX:
        raise ValueError("not a SCRAM-SHA-256 verifier")
    if not 1 <= iterations <= 10_000_000:
        raise ValueError("SCRAM iteration count out of range")
    salt, stored_key, server_key = _unb64(salt_text), _unb64(stored_text), _unb64(server_text)
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
