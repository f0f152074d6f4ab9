"""Password hashing: scrypt strings for API logins, SCRAM-SHA-256 verifiers for PDB users."""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from rustymt.service import passwords
from rustymt.service.passwords import (
    burn_verify, hash_password, parse_scram_verifier, parse_scrypt_hash, saslprep,
    scram_verifier, scram_verify_password, verify_password,
)


def test_scrypt_hash_is_self_describing_salted_and_verifies():
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second  # random salt
    parsed = parse_scrypt_hash(first)
    assert (parsed.log2_n, parsed.r, parsed.p) == (passwords.SCRYPT_LOG2_N, passwords.SCRYPT_R, passwords.SCRYPT_P)
    assert first.startswith(f"$scrypt$ln={parsed.log2_n},r={parsed.r},p={parsed.p}$")
    assert "s3cret" not in first
    assert verify_password("s3cret", first) and verify_password("s3cret", second)
    assert not verify_password("s3cret ", first)
    assert not verify_password("", first)


def test_verify_reads_parameters_from_the_stored_string():
    # A hash made with other (cheaper) parameters still verifies: cost can change over time.
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"pw", salt=salt, n=2 ** 10, r=4, p=2, dklen=32)
    stored = "$scrypt$ln=10,r=4,p=2$" + base64.b64encode(salt).decode().rstrip("=") + "$" + base64.b64encode(digest).decode().rstrip("=")
    assert verify_password("pw", stored)
    assert not verify_password("px", stored)


@pytest.mark.parametrize("stored", [
    "", "plain", "$scrypt$", "$scrypt$ln=14,r=8$AAAA$AAAA", "$scrypt$ln=x,r=8,p=1$AAAA$AAAA",
    "$scrypt$ln=30,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43,  # 2**30: refused, never allocated
    "$scrypt$ln=14,r=8,p=1$!!!!$AAAA", "$bcrypt$ln=14,r=8,p=1$AAAA$AAAA",
    "SCRAM-SHA-256$4096:c2FsdA==$bad", "SCRAM-SHA-256$0:c2FsdA==$" + "A" * 44 + ":" + "A" * 44,
])
def test_malformed_stored_values_verify_nothing_and_never_raise(stored):
    assert verify_password("anything", stored) is False


def test_burn_verify_refuses_and_costs_what_a_real_verification_costs():
    assert burn_verify("") is False and burn_verify("correct horse battery") is False
    # Same work as a real login: the decoy is a genuine hash with today's parameters.
    decoy = parse_scrypt_hash(passwords.DECOY_HASH)
    assert (decoy.log2_n, decoy.r, decoy.p) == (passwords.SCRYPT_LOG2_N, passwords.SCRYPT_R, passwords.SCRYPT_P)
    assert len(decoy.salt) == passwords.SCRYPT_SALT_BYTES and len(decoy.digest) == passwords.SCRYPT_DIGEST_BYTES


# RFC 7677 section 3: user "user", password "pencil", salt and nonces below.
RFC7677_SALT = "W22ZaJ0SNY7soEsUEjb6gQ=="
RFC7677_AUTH_MESSAGE = (
    "n=user,r=rOprNGfwEbeRWgbNEkqO,"
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
).encode()
RFC7677_CLIENT_PROOF = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
RFC7677_SERVER_SIGNATURE = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_scram_verifier_matches_the_rfc7677_exchange():
    text = scram_verifier("pencil", salt=base64.b64decode(RFC7677_SALT))
    assert text.startswith(f"SCRAM-SHA-256$4096:{RFC7677_SALT}$")
    verifier = parse_scram_verifier(text)
    # The server signature the RFC's server sends is HMAC(ServerKey, AuthMessage) ...
    signature = hmac.digest(verifier.server_key, RFC7677_AUTH_MESSAGE, "sha256")
    assert base64.b64encode(signature).decode() == RFC7677_SERVER_SIGNATURE
    # ... and the RFC's client proof checks out against StoredKey.
    client_signature = hmac.digest(verifier.stored_key, RFC7677_AUTH_MESSAGE, "sha256")
    client_key = bytes(a ^ b for a, b in zip(base64.b64decode(RFC7677_CLIENT_PROOF), client_signature))
    assert hashlib.sha256(client_key).digest() == verifier.stored_key


def test_scram_verifier_has_postgresql_shape_and_defaults():
    text = scram_verifier("pw")
    scheme, iterations_salt, keys = text.split("$")
    assert scheme == "SCRAM-SHA-256"
    iterations, salt = iterations_salt.split(":")
    assert iterations == "4096" and len(base64.b64decode(salt)) == 16
    stored_key, server_key = keys.split(":")
    assert len(base64.b64decode(stored_key)) == 32 and len(base64.b64decode(server_key)) == 32
    assert scram_verifier("pw") != text  # fresh salt each time
    parsed = parse_scram_verifier(text)
    assert str(parsed) == text  # round trip
    assert scram_verify_password("pw", text) and verify_password("pw", text)
    assert not scram_verify_password("pW", text)


@pytest.mark.parametrize("text", [
    "", "SCRAM-SHA-256", "SCRAM-SHA-1$4096:c2FsdA==$" + "A" * 44 + ":" + "A" * 44,
    "SCRAM-SHA-256$x:c2FsdA==$" + "A" * 44 + ":" + "A" * 44,
    "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",  # keys too short
    "SCRAM-SHA-256$4096:$" + "A" * 44 + ":" + "A" * 44,  # empty salt
])
def test_parse_scram_verifier_rejects_malformed(text):
    with pytest.raises(ValueError):
        parse_scram_verifier(text)


def test_saslprep_maps_and_normalizes_like_rfc4013_examples():
    assert saslprep("I\u00adX") == "IX"  # soft hyphen mapped to nothing
    assert saslprep("user") == "user"
    assert saslprep("USER") == "USER"
    assert saslprep("\u00aa") == "a"  # NFKC
    assert saslprep("\u2168") == "IX"  # NFKC
    assert saslprep("a\u00a0b") == "a b"  # non-ASCII space -> space
    with pytest.raises(ValueError):
        saslprep("\u0007")  # prohibited control character
    with pytest.raises(ValueError):
        saslprep("\u0627\u0031")  # RandALCat must end with RandALCat


def test_scram_falls_back_to_raw_bytes_when_saslprep_refuses():
    # PostgreSQL hashes the raw password when SASLprep fails; both sides must agree.
    salt = b"\x01" * 16
    raw = hashlib.pbkdf2_hmac("sha256", "a\u0007b".encode(), salt, 4096)
    stored_key = hashlib.sha256(hmac.digest(raw, b"Client Key", "sha256")).digest()
    assert parse_scram_verifier(scram_verifier("a\u0007b", salt=salt)).stored_key == stored_key
    # and SASLprep applies when it succeeds: the soft hyphen vanishes.
    assert scram_verifier("pen\u00adcil", salt=salt) == scram_verifier("pencil", salt=salt)


def test_one_scram_implementation_serves_stored_users_and_the_wire():
    # PDB users stored with scram_verifier log in through the wire protocol's
    # SCRAM exchange: both use the same code (rustymt.engine.scram).
    from rustymt.engine import scram

    assert (scram_verifier, parse_scram_verifier, saslprep) == (
        scram.scram_verifier, scram.parse_scram_verifier, scram.saslprep)
    assert scram.make_verifier is scram_verifier


def test_rfc7677_exchange_against_a_stored_verifier():
    from rustymt.engine import scram

    stored = scram_verifier("pencil", salt=base64.b64decode(RFC7677_SALT))
    exchange = scram.ScramExchange(stored, "user", server_nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    exchange.server_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    final = exchange.server_final(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=" + RFC7677_CLIENT_PROOF.encode())
    assert final == b"v=" + RFC7677_SERVER_SIGNATURE.encode()
