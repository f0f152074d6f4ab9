"""TokenVerifier: a verified token is remembered, but never past its exp, and refusals are not."""
from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import rustymt.config
from rustymt.api.auth import TokenVerifier, issue_token, token_claims
from rustymt.api.keys import load_or_create_keys
from rustymt.service.errors import ServiceError

SETTINGS = rustymt.config.load(env={})


class TurnedClock:
    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


@pytest.fixture
def keys(tmp_path):
    return load_or_create_keys(tmp_path)


def test_remembered_token_still_expires(keys):
    clock = TurnedClock()
    verifier = TokenVerifier(keys, SETTINGS, clock=clock)
    token = issue_token(keys, SETTINGS, "monitor", "tenant_a", ttl=60)
    assert verifier.verify(token).tenant_id == "tenant_a"
    clock.now += 30
    assert verifier.verify(token).roles == ("monitor",)  # from memory
    clock.now += 31
    with pytest.raises(ServiceError) as refused:
        verifier.verify(token)
    assert refused.value.code == "UNAUTHENTICATED"


def test_refusals_are_not_remembered_and_memory_is_bounded(keys):
    verifier = TokenVerifier(keys, SETTINGS, capacity=2)
    forged = token_claims("cdb_admin", None, 60, SETTINGS.auth.issuer)
    bad = jwt.encode(forged, Ed25519PrivateKey.generate(), algorithm="EdDSA")
    for _ in range(2):
        with pytest.raises(ServiceError):
            verifier.verify(bad)
    tokens = [issue_token(keys, SETTINGS, "monitor", f"tenant_{i}") for i in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._verified) == 2 and list(verifier._verified) == tokens[-2:]
    assert verifier.verify(tokens[0]).tenant_id == "tenant_0"  # evicted, verified again from scratch


def test_a_token_verified_under_other_keys_is_refused(keys, tmp_path):
    other = load_or_create_keys(tmp_path / "elsewhere")
    token = issue_token(other, SETTINGS, "cdb_admin")
    with pytest.raises(ServiceError) as refused:
        TokenVerifier(keys, SETTINGS).verify(token)
    assert refused.value.code == "UNAUTHENTICATED"
