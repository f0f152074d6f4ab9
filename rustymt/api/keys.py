"""JWT signing keys: created on first start in <data_dir>/keys/, reused after.

    <data_dir>/keys/            0700
        jwt-ed25519.pem         0600  Ed25519 private key, PKCS#8 PEM (EdDSA tokens)
        jwt-hs256.key           0600  32 random bytes, hex (HS256 tokens; only when
                                      auth.algorithms includes HS256)

Keys are written to a temporary file opened O_EXCL with mode 0600 and then
linked into place, so a reader never sees a half-written key and two processes
starting at once (the daemon and `rustymt token create`) end up with the same
key rather than each with its own. An existing key whose mode lets anyone but
the owner read it is tightened to 0600 on load.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import stat
from pathlib import Path
from typing import Callable, Iterable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_DIR = "keys"
ED25519_FILE = "jwt-ed25519.pem"
HS256_FILE = "jwt-hs256.key"
HS256_SECRET_BYTES = 32  # RFC 7518 3.2: at least the hash output size


@dataclasses.dataclass(frozen=True)
class SigningKeys:
    ed25519_private: Ed25519PrivateKey
    hs256_secret: bytes | None  # None unless HS256 is configured

    @property
    def ed25519_public(self) -> Ed25519PublicKey:
        return self.ed25519_private.public_key()

    def signing_key(self, algorithm: str):
        return self.ed25519_private if algorithm == "EdDSA" else self._shared_secret(algorithm)

    def verification_key(self, algorithm: str):
        return self.ed25519_public if algorithm == "EdDSA" else self._shared_secret(algorithm)

    def _shared_secret(self, algorithm: str) -> bytes:
        if algorithm == "HS256" and self.hs256_secret is not None:
            return self.hs256_secret
        raise ValueError(f"no key for JWT algorithm {algorithm!r}")


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        os.chmod(path, 0o700)


def _read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's bytes; when missing, create it atomically with mode 0600."""
    try:
        return _read_private(path)
    except FileNotFoundError:
        pass
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(make())
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails if another process got there first: keep theirs
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return _read_private(path)


def _read_private(path: Path) -> bytes:
    with open(path, "rb") as handle:
        if stat.S_IMODE(os.fstat(handle.fileno()).st_mode) & 0o077:
            os.fchmod(handle.fileno(), 0o600)
        return handle.read()


def _new_ed25519_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _new_hs256_secret() -> bytes:
    return secrets.token_hex(HS256_SECRET_BYTES).encode("ascii") + b"\n"


def load_or_create_keys(data_dir: str | os.PathLike, algorithms: Iterable[str] = ("EdDSA",)) -> SigningKeys:
    """The signing keys under <data_dir>/keys/, creating what is missing.

    The Ed25519 key always exists (it is the default); the HS256 secret is
    created only when `algorithms` includes HS256, and loaded whenever present.
    """
    key_dir = Path(data_dir) / KEY_DIR
    _private_dir(key_dir)
    pem = _read_or_create(key_dir / ED25519_FILE, _new_ed25519_pem)
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{key_dir / ED25519_FILE} is not an Ed25519 private key")
    hs256_path = key_dir / HS256_FILE
    secret = None
    if "HS256" in tuple(algorithms):
        secret = _read_or_create(hs256_path, _new_hs256_secret)
    elif hs256_path.exists():
        secret = _read_private(hs256_path)
    if secret is not None:
        secret = bytes.fromhex(secret.decode("ascii").strip())
        if len(secret) < HS256_SECRET_BYTES:
            raise ValueError(f"{hs256_path} holds fewer than {HS256_SECRET_BYTES} bytes")
    return SigningKeys(private, secret)
