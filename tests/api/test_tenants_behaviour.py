"""Tenant semantics over REST: pagination, filters, enums, tiers, priorities, scheduling, scoping."""
from __future__ import annotations

import datetime

import pytest

from rustymt.model.tiers import PRIORITY_SHARE_FACTOR, TIERS, Priority
from tests.conftest import wait_for


def get(daemon, tid):
    response = daemon.request("GET", f"/api/v1/tenants/{tid}")
    assert response.status == 200, response.text
    return response.json


def test_pagination_and_filters(api_daemon):
    created = [api_daemon.create_tenant(f"page_{i}", tier="gold" if i % 3 == 0 else "bronze")["tenant_id"] for i in range(7)]
    seen, page = [], 1
    while True:
        body = api_daemon.request("GET", f"/api/v1/tenants?page={page}&page_size=3").json
        assert body["page"] == page and body["page_size"] == 3 and len(body["tenants"]) <= 3
        if not body["tenants"]:
            break
        seen += [t["tenant_id"] for t in body["tenants"]]
        page += 1
    assert len(seen) == len(set(seen)) == body["total"]  # pages neither overlap nor skip
    assert set(created) <= set(seen)
    gold = api_daemon.request("GET", "/api/v1/tenants?tier=GOLD&page_size=100").json
    assert {t["tenant_id"] for t in gold["tenants"]} >= {created[0], created[3], created[6]}
    assert all(t["service_tier"] == "gold" for t in gold["tenants"]) and gold["total"] == len(gold["tenants"])
    api_daemon.request("POST", f"/api/v1/tenants/{created[1]}/suspend", json={"reason": "filter test"})
    suspended = api_daemon.request("GET", "/api/v1/tenants?state=Suspended").json
    assert [t["tenant_id"] for t in suspended["tenants"]] == [created[1]]


def test_tier_table_is_the_spec(api_daemon):
    assert (TIERS["silver"].quota.cpu_cores, TIERS["silver"].quota.memory_mb, TIERS["silver"].quota.storage_gb) == (2.0, 4096, 100)
    assert (TIERS["gold"].quota.cpu_cores, TIERS["gold"].quota.memory_mb, TIERS["gold"].quota.storage_gb) == (4.0, 8192, 250)
    assert [(t.requests_per_hour, t.burst) for t in TIERS.values()] == [(1000, 50), (5000, 100), (25000, 250), (100000, 500)]
    for name, tier in TIERS.items():
        tid = api_daemon.create_tenant(f"tier_{name}", tier=name.upper())["tenant_id"]
        quota = api_daemon.request("GET", f"/api/v1/tenants/{tid}/resources").json["quota"]
        assert quota == tier.quota.as_dict()
        assert get(api_daemon, tid)["priority"] == tier.priority.value


def test_priority_scales_cpu_shares(api_daemon):
    low = api_daemon.create_tenant("prio_low")["tenant_id"]
    high = api_daemon.create_tenant("prio_high")["tenant_id"]
    assert api_daemon.request("PUT", f"/api/v1/tenants/{low}/priority", json={"priority": "best_effort"}).status == 200
    assert api_daemon.request("PUT", f"/api/v1/tenants/{high}/priority", json={"priority": "Critical"}).status == 200
    shares = {tid: api_daemon.request("GET", f"/api/v1/isolation/cpu?tenant={tid}").json["shares"] for tid in (low, high)}
    assert shares[low] == TIERS["silver"].cpu_shares * PRIORITY_SHARE_FACTOR[Priority.BEST_EFFORT]
    assert shares[high] == TIERS["silver"].cpu_shares * PRIORITY_SHARE_FACTOR[Priority.CRITICAL]
    assert shares[high] == 16 * shares[low]
    assert get(api_daemon, high)["priority"] == "critical"


def test_tier_change_sets_quota_and_keeps_an_explicit_priority(api_daemon):
    follows = api_daemon.create_tenant("follows_tier")["tenant_id"]
    pinned = api_daemon.create_tenant("pinned_prio")["tenant_id"]
    api_daemon.request("PUT", f"/api/v1/tenants/{pinned}/priority", json={"priority": "low"})
    api_daemon.request("PUT", f"/api/v1/tenants/{follows}/quota", json={"iops": 7})
    for tid in (follows, pinned):
        assert api_daemon.request("PUT", f"/api/v1/tenants/{tid}/tier", json={"new_tier": "gold"}).status == 200
    assert get(api_daemon, follows)["priority"] == "high"  # gold's default
    assert get(api_daemon, pinned)["priority"] == "low"  # set explicitly, kept
    assert get(api_daemon, follows)["quota"]["iops"] == TIERS["gold"].quota.iops  # the tier's vector replaces it


def test_scheduled_tier_change_is_applied_when_due(api_daemon):
    tid = api_daemon.create_tenant("scheduled_corp")["tenant_id"]
    due = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    response = api_daemon.request("PUT", f"/api/v1/tenants/{tid}/tier",
                                  json={"new_tier": "platinum", "effective_date": due.isoformat()})
    assert response.status == 202, response.text
    assert response.json["scheduled"] is True and response.json["old_tier"] == "silver"
    assert get(api_daemon, tid)["service_tier"] == "silver"  # not yet
    wait_for(lambda: get(api_daemon, tid)["service_tier"] == "platinum", timeout=15, what="scheduled tier change")
    assert get(api_daemon, tid)["quota"]["cpu_percent"] == TIERS["platinum"].quota.cpu_percent


def test_date_in_the_past_applies_now(api_daemon):
    tid = api_daemon.create_tenant("past_date_corp")["tenant_id"]
    response = api_daemon.request("PUT", f"/api/v1/tenants/{tid}/tier", json={"new_tier": "bronze", "effective_date": "2020-01-01"})
    assert response.status == 200 and "scheduled" not in response.json
    assert get(api_daemon, tid)["service_tier"] == "bronze"


def test_terminated_name_can_be_reused(api_daemon):
    first = api_daemon.create_tenant("phoenix")["tenant_id"]
    assert api_daemon.request("DELETE", f"/api/v1/tenants/{first}").status == 200
    assert get(api_daemon, first)["network_port"] is None  # port went back to the pool
    second = api_daemon.create_tenant("phoenix")["tenant_id"]
    assert second != first
    assert get(api_daemon, first)["state"] == "terminated"


def test_tenant_admin_logs_in_with_its_password(api_daemon):
    tid = api_daemon.create_tenant("login_corp")["tenant_id"]
    response = api_daemon.request("POST", "/api/v1/auth/token", token=None,
                                  json={"username": "admin@login_corp.example", "password": "correct horse battery"})
    assert response.status == 200, response.text
    token = response.json["access_token"]
    assert api_daemon.request("GET", f"/api/v1/tenants/{tid}", token=token).json["tenant_id"] == tid
    # Tenant admins cannot suspend themselves or create tenants.
    assert api_daemon.request("POST", f"/api/v1/tenants/{tid}/suspend", json={"reason": "x"}, token=token).status == 403


@pytest.mark.parametrize("index,tier", list(enumerate(["bronze", "BRONZE", "Bronze"])))
def test_enums_are_case_insensitive_and_answered_lowercase(api_daemon, index, tier):
    body = api_daemon.create_tenant(f"case_{index}", tier=tier)
    assert get(api_daemon, body["tenant_id"])["service_tier"] == "bronze"
