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
import dataclasses
import hashlib
import hmac
import os

# SCRAM-SHA-256 verifiers (PDB users): one implementation, shared with the
# wire protocol's SCRAM exchange, re-exported here.
from rustymt.engine.scram import (  # noqa: F401 - re-exported
    MECHANISM as SCRAM_PREFIX, ScramVerifier, b64decode_lenient, parse_scram_verifier, saslprep, scram_keys,
    scram_normalize, scram_verifier, scram_verify_password,
)

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


def _b64(raw: bytes, padded: bool = False) -> str:
    text = base64.b64encode(raw).decode("ascii")
    return text if padded else text.rstrip("=")


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
    salt, digest = b64decode_lenient(parts[3]), b64decode_lenient(parts[4])
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
