"""HostBinding's pure parts and its catalog table, without root: placement
defaults and explicit choices, the quota handed to the kernel, and a binding
whose host enforcement is off (still answers, touches nothing)."""
from __future__ import annotations

import asyncio

import pytest

from rustymt.catalog import placement as placement_rows
from rustymt.catalog.db import Catalog
from rustymt.events.bus import EventBus
from rustymt.host import HostController
from rustymt.service.errors import ServiceError
from rustymt.service.hostbinding import HostBinding, default_placement, host_quota


def test_tier_defaults_and_quota_mapping():
    assert [default_placement(t) for t in ("bronze", "silver", "gold", "platinum")] == ["shared", "shared", "dedicated", "dedicated"]
    record = {"service_tier": "silver", "priority": "best_effort", "cpu_percent": 150, "memory_mb": 512, "iops": 300,
              "network_mbps": 25}
    quota = host_quota(record)
    assert (quota.cpu_percent, quota.cpu_shares, quota.memory_mb, quota.iops, quota.network_mbps) == (150, 128, 512, 300, 25)


@pytest.fixture
def binding(tmp_path):
    catalog = Catalog.open(str(tmp_path / "catalog.db"))
    host = HostController(tree=None, enforce=False)
    yield HostBinding(host, catalog, EventBus())
    catalog.close()


def insert_tenant(catalog, tenant_id, tier, name="acme"):
    with catalog.write() as conn:
        conn.execute("INSERT INTO tenants (tenant_id, tenant_name, admin_user, admin_password, service_tier, state, priority, "
                     "cpu_percent, memory_mb, storage_gb, iops, network_mbps, max_connections, network_port, created_at, "
                     "updated_at, state_changed_at) VALUES (?, ?, ?, 'x', ?, 'active', 'medium', 100, 256, 1, 100, 10, 5, "
                     "20001, 't', 't', 't')", (tenant_id, name, f"admin@{name}", tier))


def test_explicit_placement_wins_and_can_be_cleared(binding):
    insert_tenant(binding.catalog, "tenant_a", "gold")
    assert binding.placement_of("tenant_a") == "dedicated"
    with binding.catalog.write() as conn:
        placement_rows.set_explicit(conn, "tenant_a", "shared", "t")
    assert binding.placement_of("tenant_a") == "shared"
    with binding.catalog.write() as conn:
        placement_rows.set_explicit(conn, "tenant_a", None, "t")
    assert binding.placement_of("tenant_a") == "dedicated"
    with pytest.raises(ServiceError) as missing:
        binding.placement_of("tenant_nobody")
    assert missing.value.code == "TENANT_NOT_FOUND"


def test_placement_asked_at_create_counts_at_once_and_is_forgotten_when_create_fails(binding):
    with pytest.raises(ServiceError) as bad:
        with binding.expecting_placement("acme", "somewhere"):
            pass
    assert bad.value.code == "INVALID_REQUEST"
    with pytest.raises(RuntimeError):
        with binding.expecting_placement("acme", "shared"):
            raise RuntimeError("create refused")
    assert binding.pending_placement == {}
    with binding.expecting_placement("acme", "shared"):
        insert_tenant(binding.catalog, "tenant_b", "platinum")
        assert binding.placement_of("tenant_b") == "shared"   # before tenant.created is handled
        asyncio.run(binding.settle_placement("tenant_b"))
    assert binding.placement_of("tenant_b") == "shared" and binding.pending_placement == {}
    with binding.catalog.read() as conn:
        assert placement_rows.tenant(conn, "tenant_b")["explicit_placement"] == "shared"


def test_without_enforcement_the_binding_answers_and_touches_nothing(binding):
    insert_tenant(binding.catalog, "tenant_c", "gold")
    assert binding.usage("tenant_c") is None
    assert asyncio.run(binding.reconcile_once()) == []
    body = {"tenant_id": "tenant_c", "oom_count": 2}
    assert binding.merge_isolation("tenant_c", "memory", dict(body)) == body


def test_shared_group_gets_its_tenants_aggregate_plus_the_instance_itself():
    from rustymt.host import HostQuota
    from rustymt.service.hostbinding import SHARED_INSTANCE_MEMORY_MB, shared_quota

    total = shared_quota([HostQuota(cpu_percent=100, memory_mb=64), HostQuota(cpu_percent=50, memory_mb=100)])
    assert (total.cpu_percent, total.memory_mb) == (150, 164 + SHARED_INSTANCE_MEMORY_MB)
    assert shared_quota([]).memory_mb is None        # no shared tenant: unlimited
