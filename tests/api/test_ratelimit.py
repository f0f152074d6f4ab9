"""Per-tier API rate limits in a real daemon: headers on every response, 429 after the burst.

(Operator and unauthenticated callers' buckets: test_ratelimit_callers.py.)

A bucket refills at requests_per_hour / 3600 per second (bronze: one token per
3.6 s), so sending the burst back to back shows the limit without sending an
hour's worth of requests: the number that pass is the burst plus whatever
refilled while they were sent, bounded below by the refill rate.
"""
from __future__ import annotations

import math
import time

import pytest

from rustymt.model.tiers import TIERS
from tests.api.edge_support import (  # noqa: F401 - daemon is a fixture
    daemon, protected_routes, request_for, role_without, route_id, settings_for, tenant_role_with, token, unique_name,
)

RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


def _tenant_with_token(daemon, tier: str) -> tuple[str, str]:
    tenant_id = daemon.create_tenant(unique_name(tier), tier=tier)["tenant_id"]
    return tenant_id, token(daemon, "tenant_admin", tenant_id)


def _drain(daemon, tenant_id: str, bearer: str, cap: int):
    """Send GET tenant until refused; returns (answers, seconds it took)."""
    started = time.monotonic()
    answers = []
    for _ in range(cap):
        answers.append(daemon.request("GET", f"/api/v1/tenants/{tenant_id}", token=bearer))
        if answers[-1].status == 429:
            break
    return answers, time.monotonic() - started


@pytest.mark.parametrize("tier", ["bronze", "silver"])
def test_burst_then_429_with_retry_after(daemon, tier):
    spec = TIERS[tier]
    tenant_id, bearer = _tenant_with_token(daemon, tier)
    answers, seconds = _drain(daemon, tenant_id, bearer, cap=spec.burst * 3)
    passed, refused = answers[:-1], answers[-1]
    assert refused.status == 429, f"no 429 after {len(answers)} requests"
    assert all(answer.status == 200 for answer in passed)
    # The burst passes; at most what refilled meanwhile passes on top of it.
    refilled = math.ceil(seconds * spec.requests_per_hour / 3600) + 1
    assert spec.burst <= len(passed) <= spec.burst + refilled, (len(passed), seconds)
    first = passed[0].headers
    assert int(first["x-ratelimit-limit"]) == spec.requests_per_hour
    assert int(first["x-ratelimit-remaining"]) == spec.burst - 1
    assert int(first["x-ratelimit-reset"]) >= int(time.time())
    assert refused.error_code == "QUOTA_EXCEEDED"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert int(refused.headers["x-ratelimit-limit"]) == spec.requests_per_hour
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= math.ceil(3600 / spec.requests_per_hour)


def test_remaining_counts_down(daemon):
    tenant_id, bearer = _tenant_with_token(daemon, "bronze")
    remaining = [int(daemon.request("GET", f"/api/v1/tenants/{tenant_id}", token=bearer).headers["x-ratelimit-remaining"])
                 for _ in range(5)]
    # Each request takes one token; bronze gets one back every 3.6 s, far slower than these requests.
    assert remaining[0] == TIERS["bronze"].burst - 1
    assert remaining[-1] < remaining[0]


def test_tiers_get_different_limits_and_a_tier_change_applies(daemon):
    tenant_id, bearer = _tenant_with_token(daemon, "bronze")
    path = f"/api/v1/tenants/{tenant_id}"
    assert daemon.request("GET", path, token=bearer).headers["x-ratelimit-limit"] == str(TIERS["bronze"].requests_per_hour)
    changed = daemon.request("PUT", f"{path}/tier", json={"new_tier": "platinum", "effective_date": "immediate"})
    assert changed.status == 200, changed.text
    after = daemon.request("GET", path, token=bearer).headers
    assert after["x-ratelimit-limit"] == str(TIERS["platinum"].requests_per_hour)


@pytest.mark.parametrize("route", protected_routes(), ids=route_id)
def test_every_response_to_a_tenant_carries_the_headers(daemon, route):
    """Allowed or refused (403, 404, 400 ...), every answer to a tenant-scoped caller has them."""
    tenant_id = daemon.create_tenant(unique_name("hdr"), tier="gold")["tenant_id"]
    path, body = request_for(route, tenant_id)
    callers = [token(daemon, tenant_role_with(route.permission) or "tenant_admin", tenant_id)]
    if role_without(route.permission):
        callers.append(token(daemon, role_without(route.permission), tenant_id))
    for bearer in callers:
        response = daemon.request(route.method, path, json=body, token=bearer)
        assert all(name in response.headers for name in RATE_HEADERS), (response.status, response.headers)
        assert response.status != 429
    # one gold tenant per route would exceed the host's CPU guarantees: give it back
    daemon.request("DELETE", f"/api/v1/tenants/{tenant_id}")


def test_errors_from_handlers_carry_the_headers(daemon):
    tenant_id, bearer = _tenant_with_token(daemon, "gold")
    answers = [
        daemon.request("GET", "/api/v1/tenants/tenant_elsewhere", token=bearer),  # other tenant: 403
        daemon.request("PUT", f"/api/v1/tenants/{tenant_id}/priority", json={"priority": "urgent"}, token=bearer),
        daemon.request("POST", f"/api/v1/tenants/{tenant_id}/suspend", body=b"{not json", token=bearer,
                       headers={"Content-Type": "application/json"}),
    ]
    assert [answer.error_code for answer in answers] == ["ISOLATION_VIOLATION", "INVALID_REQUEST", "INVALID_REQUEST"]
    for answer in answers:
        assert all(name in answer.headers for name in RATE_HEADERS), (answer.status, answer.text)


def test_operators_are_not_tenant_limited(daemon):
    """An operator token has a bucket of its own (api.operator_*), far larger than any tier's."""
    answers = [daemon.request("GET", "/api/v1/tenants") for _ in range(TIERS["bronze"].burst + 10)]
    assert all(answer.status == 200 for answer in answers)
    limits = settings_for(daemon.env).api
    assert answers[-1].headers["x-ratelimit-limit"] == str(limits.operator_requests_per_hour)
    assert int(answers[-1].headers["x-ratelimit-remaining"]) >= limits.operator_burst - len(answers) - 50  # other tests' requests


def test_public_routes_need_no_token(daemon):
    """Health probes carry no rate-limit headers; an /api/v1 route without a token is limited per client address."""
    health = daemon.request("GET", "/healthz", token=None)
    assert health.status == 200 and "x-ratelimit-limit" not in health.headers
    document = daemon.request("GET", "/api/v1/openapi.json", token=None)
    assert document.status == 200
    assert document.headers["x-ratelimit-limit"] == str(settings_for(daemon.env).api.anonymous_requests_per_hour)
