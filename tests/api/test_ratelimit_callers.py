"""Rate limits of callers without a tier, against real daemons: operator tokens
get a bucket per token subject, requests without a valid token a bucket per
client address; every /api/v1 answer carries the X-RateLimit headers.

The daemons here run with tiny buckets refilled once an hour, so exactly the
burst passes and the next request is refused, whatever the host's speed.
"""
from __future__ import annotations

import time

import pytest

from rustymt.model.tiers import TIERS
from tests.api.edge_support import token

RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
BURST = 6
SMALL_BUCKETS = {
    "RUSTYMT_API_OPERATOR_BURST": str(BURST), "RUSTYMT_API_OPERATOR_REQUESTS_PER_HOUR": "1",
    "RUSTYMT_API_ANONYMOUS_BURST": str(BURST), "RUSTYMT_API_ANONYMOUS_REQUESTS_PER_HOUR": "1",
}


def _assert_refused(answer, limit: int) -> None:
    assert answer.status == 429 and answer.error_code == "QUOTA_EXCEEDED", (answer.status, answer.text)
    assert answer.headers["x-ratelimit-limit"] == str(limit) and answer.headers["x-ratelimit-remaining"] == "0"
    assert int(answer.headers["retry-after"]) >= 1
    assert int(answer.headers["x-ratelimit-reset"]) > time.time()


def test_each_operator_subject_has_its_own_bucket(daemon_factory):
    daemon = daemon_factory(env=SMALL_BUCKETS)
    tenant_id = daemon.create_tenant("opsbucket", tier="gold")["tenant_id"]  # one request of the admin's bucket
    alice = token(daemon, "cdb_admin", username="alice", user_id="alice")
    bob = token(daemon, "cdb_admin", username="bob", user_id="bob")
    answers = [daemon.request("GET", "/api/v1/tenants", token=alice) for _ in range(BURST + 1)]
    assert [answer.status for answer in answers] == [200] * BURST + [429]
    assert [int(answer.headers["x-ratelimit-remaining"]) for answer in answers[:3]] == [BURST - 1, BURST - 2, BURST - 3]
    assert all(answer.headers["x-ratelimit-limit"] == "1" for answer in answers)
    _assert_refused(answers[-1], 1)
    # Another operator subject, and the tenant itself, are not held back by alice's bucket.
    other = daemon.request("GET", "/api/v1/tenants", token=bob)
    assert other.status == 200 and other.headers["x-ratelimit-remaining"] == str(BURST - 1)
    tenant = daemon.request("GET", f"/api/v1/tenants/{tenant_id}", token=token(daemon, "tenant_admin", tenant_id))
    assert tenant.status == 200 and tenant.headers["x-ratelimit-limit"] == str(TIERS["gold"].requests_per_hour)
    # Errors to an operator carry the operator bucket's headers too.
    missing = daemon.request("GET", "/api/v1/tenants/tenant_000000000000", token=bob)
    assert missing.error_code == "TENANT_NOT_FOUND" and missing.headers["x-ratelimit-remaining"] == str(BURST - 2)


def test_requests_without_a_valid_token_are_limited_per_client_address(daemon_factory):
    daemon = daemon_factory(env=SMALL_BUCKETS)
    forged = token(daemon, "cdb_admin")[:-4] + "AAAA"
    attempts = [
        daemon.request("GET", "/api/v1/tenants", token=None),                   # no token: 401
        daemon.request("GET", "/api/v1/tenants", token=forged),                 # bad signature: 401
        daemon.request("POST", "/api/v1/auth/token", json={"username": "nobody@x", "password": "wrong password"}, token=None),
        daemon.request("GET", "/api/v1/openapi.json", token=None),               # public: 200
        daemon.request("GET", "/api/v1/no/such/route", token=None),              # 404
    ]
    assert [answer.status for answer in attempts] == [401, 401, 401, 200, 404]
    assert [int(answer.headers["x-ratelimit-remaining"]) for answer in attempts] == list(range(BURST - 1, BURST - 6, -1))
    assert all(answer.headers["x-ratelimit-limit"] == "1" for answer in attempts)
    assert daemon.request("GET", "/api/v1/tenants", token=None).status == 401  # the burst's last token
    # The address's bucket is empty: guessing tokens or passwords is refused before any check runs.
    _assert_refused(daemon.request("GET", "/api/v1/tenants", token=forged), 1)
    login = daemon.request("POST", "/api/v1/auth/token", json={"username": "nobody@x", "password": "guess"}, token=None)
    _assert_refused(login, 1)
    # An authenticated operator is charged to its own bucket, not the address's.
    assert daemon.request("GET", "/api/v1/tenants").status == 200
    # Outside /api/v1, health probes are never limited.
    health = daemon.request("GET", "/healthz", token=None)
    assert health.status == 200 and not any(name in health.headers for name in RATE_HEADERS)


@pytest.mark.parametrize("method, path", [("GET", "/api/v1/tenants"), ("GET", "/api/v1/tenants/tenant_000000000000"),
                                          ("PATCH", "/api/v1/tenants"), ("GET", "/api/v1/nothing/here"),
                                          ("POST", "/api/v1/tenants")])
def test_every_api_answer_to_an_operator_carries_the_headers(api_daemon, method, path):
    answer = api_daemon.request(method, path, json={} if method == "POST" else None)
    assert all(name in answer.headers for name in RATE_HEADERS), (answer.status, answer.headers)
    assert answer.status != 429
