"""TLS on the wire: with pgwire.tls_cert/tls_key configured, SSLRequest gets 'S'
and the session runs over TLS (libpq sslmode=require)."""
import datetime

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.pgwire.conftest import ServerThread


def self_signed(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(directory)
    server = ServerThread(directory, tls_cert=cert, tls_key=key)
    server.backend.create_database("app")
    yield server
    server.stop()


def test_sslmode_require_gets_a_tls_session(tls_server):
    with psycopg.connect(tls_server.dsn("app", sslmode="require"), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 'over tls'").fetchone() == ("over tls",)


def test_plaintext_still_allowed_when_client_does_not_ask(tls_server):
    with psycopg.connect(tls_server.dsn("app", sslmode="disable"), autocommit=True) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_without_certificate_sslmode_require_is_refused(pg, db):
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(pg.dsn(db, sslmode="require"))
    assert "SSL" in str(info.value) or "ssl" in str(info.value)
