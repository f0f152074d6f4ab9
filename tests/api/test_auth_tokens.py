"""Bearer tokens against a real daemon: what is refused, what is accepted, keys on disk,
the X-Tenant-ID header, and the tenant admin's password-for-token exchange."""
from __future__ import annotations

import base64
import hmac
import json
import os
import stat
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rustymt.api.auth import token_claims
from rustymt.api.keys import ED25519_FILE, HS256_FILE, KEY_DIR, load_or_create_keys
from rustymt.api.rest.auth_routes import LOGIN_FAILURE_BURST
from tests.api.edge_support import daemon, settings_for, token, unique_name  # noqa: F401 - daemon is a fixture
from tests.daemon import Daemon

ISSUER = settings_for().auth.issuer


@pytest.fixture(scope="module")
def tenant(daemon):
    name = unique_name("tok")
    created = daemon.create_tenant(name)
    return {"tenant_id": created["tenant_id"], "admin_user": f"admin@{name}.example", "password": "correct horse battery"}


def _tenant_path(tenant_id: str) -> str:
    return f"/api/v1/tenants/{tenant_id}"


def _claims(**changes):
    claims = token_claims("cdb_admin", None, 600, ISSUER)
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not _DROP}


_DROP = object()


def _daemon_key(daemon):
    return load_or_create_keys(daemon.data_dir).ed25519_private


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _refused(daemon, bearer: str, headers=None):
    response = daemon.request("GET", "/api/v1/tenants", token=None,
                              headers={"Authorization": bearer, **(headers or {})})
    return response.status, response.error_code


def test_valid_operator_token_is_accepted(daemon):
    signed = jwt.encode(_claims(), _daemon_key(daemon), algorithm="EdDSA")
    assert daemon.request("GET", "/api/v1/tenants", token=signed).status == 200


@pytest.mark.parametrize("bearer", [
    "Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", "Bearer not-a-jwt", "Bearer a.b.c", "bearer" + " x" * 3,
    "Bearer " + "A" * 5000,  # longer than any token we issue, shorter than the header limit
])
def test_malformed_authorization_is_401(daemon, bearer):
    assert _refused(daemon, bearer) == (401, "UNAUTHENTICATED")


def test_forged_signature_is_401(daemon):
    forged = jwt.encode(_claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA")
    assert _refused(daemon, f"Bearer {forged}") == (401, "UNAUTHENTICATED")


def test_tampered_payload_is_401(daemon, tenant):
    # A monitor token scoped to one tenant, its payload rewritten to an operator's.
    genuine = token(daemon, "monitor", tenant["tenant_id"])
    header, _, signature = genuine.split(".")
    payload = _b64url(json.dumps(_claims()).encode())
    assert _refused(daemon, f"Bearer {header}.{payload}.{signature}") == (401, "UNAUTHENTICATED")


def test_expired_token_is_401(daemon):
    now = int(time.time())
    expired = jwt.encode(_claims(iat=now - 120, exp=now - 60), _daemon_key(daemon), algorithm="EdDSA")
    assert _refused(daemon, f"Bearer {expired}") == (401, "UNAUTHENTICATED")


@pytest.mark.parametrize("claim", ["exp", "iss"])
def test_token_without_required_claim_is_401(daemon, claim):
    missing = jwt.encode(_claims(**{claim: _DROP}), _daemon_key(daemon), algorithm="EdDSA")
    assert _refused(daemon, f"Bearer {missing}") == (401, "UNAUTHENTICATED")


def test_wrong_issuer_is_401(daemon):
    foreign = jwt.encode(_claims(iss="someone-else"), _daemon_key(daemon), algorithm="EdDSA")
    assert _refused(daemon, f"Bearer {foreign}") == (401, "UNAUTHENTICATED")


def test_alg_none_is_401(daemon):
    header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(_claims()).encode())
    for unsigned in (f"{header}.{payload}.", f"{header}.{payload}"):
        assert _refused(daemon, f"Bearer {unsigned}") == (401, "UNAUTHENTICATED")


def test_hs256_is_401_when_only_eddsa_is_pinned(daemon):
    public_pem = _daemon_key(daemon).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(_claims()).encode())
    # Key confusion: HMAC keyed with the server's public key, plus a random secret.
    for secret in (public_pem, os.urandom(32)):
        signature = _b64url(hmac.digest(secret, f"{header}.{payload}".encode(), "sha256"))
        assert _refused(daemon, f"Bearer {header}.{payload}.{signature}") == (401, "UNAUTHENTICATED")


def test_tenant_admin_token_without_tenant_is_401(daemon):
    unscoped = jwt.encode(_claims(roles=["tenant_admin"], tenant_id=None), _daemon_key(daemon), algorithm="EdDSA")
    assert _refused(daemon, f"Bearer {unscoped}") == (401, "UNAUTHENTICATED")


@pytest.mark.parametrize("roles", [[], "cdb_admin", [1], None])
def test_malformed_roles_claim_is_401(daemon, roles):
    bad = jwt.encode(_claims(roles=roles), _daemon_key(daemon), algorithm="EdDSA")
    assert _refused(daemon, f"Bearer {bad}") == (401, "UNAUTHENTICATED")


def test_unknown_role_grants_nothing(daemon):
    nobody = jwt.encode(_claims(roles=["superuser"]), _daemon_key(daemon), algorithm="EdDSA")
    assert _refused(daemon, f"Bearer {nobody}") == (403, "PERMISSION_DENIED")


def test_permissions_claim_narrows_never_widens(daemon, tenant):
    widened = jwt.encode(_claims(roles=["monitor"], tenant_id=tenant["tenant_id"], permissions=["cdb:admin", "tenant:read"]),
                         _daemon_key(daemon), algorithm="EdDSA")
    assert daemon.request("GET", "/api/v1/cdb/status", token=widened).error_code == "PERMISSION_DENIED"
    assert daemon.request("GET", _tenant_path(tenant["tenant_id"]), token=widened).status == 200


def test_x_tenant_id_must_agree_with_a_tenant_scoped_token(daemon, tenant):
    scoped = token(daemon, "tenant_admin", tenant["tenant_id"])
    path = _tenant_path(tenant["tenant_id"])
    assert daemon.request("GET", path, token=scoped, headers={"X-Tenant-ID": tenant["tenant_id"]}).status == 200
    refused = daemon.request("GET", path, token=scoped, headers={"X-Tenant-ID": "tenant_other"})
    assert (refused.status, refused.error_code) == (403, "ISOLATION_VIOLATION")
    # An operator token is not tenant-scoped: any X-Tenant-ID is context, not a contradiction.
    assert daemon.request("GET", path, headers={"X-Tenant-ID": "tenant_other"}).status == 200


def test_cli_token_create_is_scoped(daemon, tenant):
    other = daemon.create_tenant(unique_name("cli"))["tenant_id"]
    scoped = daemon.token("tenant_admin", tenant_id=tenant["tenant_id"])  # the CLI, as an operator runs it
    assert daemon.request("GET", _tenant_path(tenant["tenant_id"]), token=scoped).status == 200
    assert daemon.request("GET", _tenant_path(other), token=scoped).error_code == "ISOLATION_VIOLATION"
    claims = jwt.decode(scoped, options={"verify_signature": False})
    assert jwt.get_unverified_header(scoped)["alg"] == "EdDSA"
    assert set(claims) >= {"user_id", "username", "roles", "tenant_id", "permissions", "exp", "iss"}
    assert claims["roles"] == ["tenant_admin"] and claims["tenant_id"] == tenant["tenant_id"]


def test_keys_are_private_files_and_survive_restart(tmp_path):
    daemon = Daemon.start(str(tmp_path / "data"))
    try:
        key_dir = os.path.join(daemon.data_dir, KEY_DIR)
        assert stat.S_IMODE(os.stat(key_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(os.path.join(key_dir, ED25519_FILE)).st_mode) == 0o600
        assert not os.path.exists(os.path.join(key_dir, HS256_FILE))  # HS256 not configured
        before = open(os.path.join(key_dir, ED25519_FILE), "rb").read()
        issued = daemon.admin_token
        daemon = daemon.restart()
        assert open(os.path.join(key_dir, ED25519_FILE), "rb").read() == before
        assert daemon.request("GET", "/api/v1/tenants", token=issued).status == 200
    finally:
        daemon.stop()


def test_hs256_when_configured(tmp_path):
    env = {"RUSTYMT_AUTH_ALGORITHMS": "HS256"}
    daemon = Daemon.start(str(tmp_path / "data"), env=env)
    try:
        secret_file = os.path.join(daemon.data_dir, KEY_DIR, HS256_FILE)
        assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
        issued = daemon.admin_token  # signed by the CLI with the first configured algorithm
        assert jwt.get_unverified_header(issued)["alg"] == "HS256"
        assert daemon.request("GET", "/api/v1/tenants", token=issued).status == 200
        # EdDSA is now not pinned: a token the same data dir's Ed25519 key signed is refused.
        eddsa = jwt.encode(_claims(), _daemon_key(daemon), algorithm="EdDSA")
        assert _refused(daemon, f"Bearer {eddsa}") == (401, "UNAUTHENTICATED")
    finally:
        daemon.stop()


# ---- POST /api/v1/auth/token


def test_token_exchange_gives_a_tenant_scoped_bearer_token(daemon, tenant):
    response = daemon.request("POST", "/api/v1/auth/token", token=None,
                              json={"username": tenant["admin_user"], "password": tenant["password"]})
    assert response.status == 200, response.text
    body = response.json
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings_for().auth.token_ttl_seconds
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["tenant_id"] == tenant["tenant_id"] and claims["roles"] == ["tenant_admin"]
    assert claims["username"] == tenant["admin_user"]
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    own = daemon.request("GET", _tenant_path(tenant["tenant_id"]), token=body["access_token"])
    assert own.status == 200 and own.json["tenant_id"] == tenant["tenant_id"]
    everyone = daemon.request("GET", "/api/v1/tenants", token=body["access_token"]).json
    assert [row["tenant_id"] for row in everyone["tenants"]] == [tenant["tenant_id"]]


def test_wrong_password_and_unknown_user_answer_identically(daemon, tenant):
    wrong = daemon.request("POST", "/api/v1/auth/token", token=None,
                           json={"username": tenant["admin_user"], "password": "not the password"})
    unknown = daemon.request("POST", "/api/v1/auth/token", token=None,
                             json={"username": "nobody@nowhere.example", "password": "not the password"})
    assert wrong.status == unknown.status == 401
    assert wrong.json == unknown.json and wrong.error_code == "UNAUTHENTICATED"
    assert "access_token" not in wrong.text


@pytest.mark.parametrize("body", [{}, {"username": "a"}, {"username": "a", "password": 5},
                                  {"username": "a", "password": "b", "extra": 1}])
def test_token_exchange_validates_its_body(daemon, body):
    response = daemon.request("POST", "/api/v1/auth/token", token=None, json=body)
    assert (response.status, response.error_code) == (400, "INVALID_REQUEST"), response.text


def test_repeated_login_failures_are_throttled_per_address(daemon, tenant):
    # Runs last in this module: it exhausts 127.0.0.1's failure allowance on this daemon.
    wrong = {"username": tenant["admin_user"], "password": "guess"}
    # Earlier tests in this module failed a few logins already; the allowance is a burst, not a count per test.
    answers = []
    for _ in range(LOGIN_FAILURE_BURST + 1):
        answers.append(daemon.request("POST", "/api/v1/auth/token", token=None, json=wrong))
        if answers[-1].status != 401:
            break
    throttled = answers[-1]
    assert all(answer.status == 401 for answer in answers[:-1])
    assert (throttled.status, throttled.error_code) == (429, "QUOTA_EXCEEDED"), throttled.text
    assert int(throttled.headers["retry-after"]) >= 1
    # The right password is refused too until the allowance refills: guessing cannot continue.
    right = daemon.request("POST", "/api/v1/auth/token", token=None,
                           json={"username": tenant["admin_user"], "password": tenant["password"]})
    assert right.status == 429
