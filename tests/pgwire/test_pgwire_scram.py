"""SCRAM-SHA-256 server side against RFC 7677's worked example and PostgreSQL's verifier format."""
import base64
import hashlib
import hmac

import pytest

from rustymt.engine import scram

# RFC 7677 section 3.
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_rfc7677_example_exchange_verifies_and_signs():
    verifier = scram.make_verifier("pencil", salt=RFC_SALT, iterations=4096)
    exchange = scram.ScramExchange(verifier, "user", server_nonce=RFC_SERVER_NONCE)
    assert exchange.server_first(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert exchange.server_final(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL


def test_verifier_has_postgresql_format_and_keys():
    verifier = scram.make_verifier("pencil", salt=RFC_SALT)
    mechanism, rest = verifier.split("$", 1)
    assert mechanism == "SCRAM-SHA-256"
    parsed = scram.parse_scram_verifier(verifier)
    iterations, salt, stored, server = parsed.iterations, parsed.salt, parsed.stored_key, parsed.server_key
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", RFC_SALT, 4096)
    assert (iterations, salt) == (4096, RFC_SALT)
    assert stored == hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    assert server == hmac.new(salted, b"Server Key", "sha256").digest()
    assert len(scram.parse_scram_verifier(scram.make_verifier("x")).salt) == 16  # PostgreSQL's salt length


def test_wrong_proof_and_unknown_user_fail_the_same_way():
    verifier = scram.make_verifier("pencil", salt=RFC_SALT)
    wrong = scram.ScramExchange(verifier, "user", server_nonce=RFC_SERVER_NONCE)
    wrong.server_first(RFC_CLIENT_FIRST)
    bad_final = RFC_CLIENT_FINAL[:-10] + b"AAAAAAAAA="
    with pytest.raises(scram.ScramError, match="password authentication failed"):
        wrong.server_final(bad_final)
    mock = scram.ScramExchange(None, "nobody")
    first = mock.server_first(RFC_CLIENT_FIRST).decode()
    assert ",s=" in first and first.endswith(",i=4096")
    # The mock salt is stable per user name, so probing twice reveals nothing.
    assert scram.ScramExchange(None, "nobody").server_first(RFC_CLIENT_FIRST).decode().split(",")[1] == first.split(",")[1]
    nonce = first.split(",")[0][2:]
    with pytest.raises(scram.ScramError, match="password authentication failed"):
        mock.server_final(f"c=biws,r={nonce},p=".encode() + base64.b64encode(b"x" * 32))


@pytest.mark.parametrize("client_first", [b"", b"p=tls-server-end-point,,n=,r=abc", b"n,,r=abc", b"n,a=x,n=,r=abc",
                                          b"n,,n=,r=", b"n,,n=,r=abc,m=ext", b"\xff\xfe"])
def test_malformed_client_first_is_rejected(client_first):
    with pytest.raises(scram.ScramError):
        scram.ScramExchange(scram.make_verifier("pw"), "u").server_first(client_first)


def test_nonce_and_channel_binding_must_match():
    exchange = scram.ScramExchange(scram.make_verifier("pencil", salt=RFC_SALT), "user", server_nonce=RFC_SERVER_NONCE)
    exchange.server_first(RFC_CLIENT_FIRST)
    with pytest.raises(scram.ScramError, match="nonce"):
        exchange.server_final(RFC_CLIENT_FINAL.replace(b"k0,", b"k1,"))
    with pytest.raises(scram.ScramError, match="channel binding"):
        exchange.server_final(RFC_CLIENT_FINAL.replace(b"c=biws", b"c=eSws"))


def test_saslprep_maps_and_normalises():
    assert scram.saslprep("I\u00adX") == "IX"          # soft hyphen mapped to nothing
    assert scram.saslprep("\u2168") == "IX"            # NFKC
    assert scram.saslprep("a\u00a0b") == "a b"         # non-ASCII space -> space
    with pytest.raises(ValueError):
        scram.saslprep("a\u0007b")                        # prohibited ...
    assert scram.scram_normalize("a\u0007b") == b"a\x07b"  # ... so hashed raw, like PostgreSQL
