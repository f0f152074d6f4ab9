"""quota.exceeded (the spec's webhook event) from refusals by a tenant's own
quota: connections over max_connections on the wire, against a real daemon
with its engine instance, delivered to a real webhook receiver."""
from __future__ import annotations

import psycopg
import pytest

from tests.conftest import wait_for
from tests.daemon import Daemon
from tests.metering.receiver import Receiver, tenant_ports

PASSWORD = "correct horse battery"
REFUSED_CONNECTS = 5


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    running = Daemon.start(str(tmp_path_factory.mktemp("quota-events") / "data"),
                           {"RUSTYMT_METERING_INTERVAL_SECONDS": "1", "RUSTYMT_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
                            **tenant_ports()})
    yield running
    running.stop()


def test_connections_over_max_connections_raise_one_quota_exceeded_per_tick(daemon):
    tenant = daemon.create_tenant("quota_events_corp", "silver")
    tenant_id, port = tenant["tenant_id"], tenant["resources"]["network_port"]
    other = daemon.create_tenant("quota_events_other", "silver")
    assert daemon.request("PUT", f"/api/v1/tenants/{tenant_id}/quota", json={"max_connections": 1}).status == 200
    receiver = Receiver("quota-hook-secret").start()
    try:
        hooks = [daemon.request("POST", "/api/v1/webhooks", json={
            "webhook_url": receiver.url, "events": ["quota.exceeded"], "secret": "quota-hook-secret", "tenant_id": owner})
            for owner in (tenant_id, other["tenant_id"])]
        assert [hook.status for hook in hooks] == [201, 201], [hook.text for hook in hooks]
        dsn = dict(host="127.0.0.1", port=port, dbname=f"PDB_{'quota_events_corp'.upper()}",
                   user="admin@quota_events_corp.example", password=PASSWORD, sslmode="disable", connect_timeout=10)
        # (a session just closed may count for a moment: the first connect retries, refusals there count too)
        held = wait_for(lambda: _connect_or_none(dsn), 30, what="one session within max_connections 1")
        with held:
            assert held.execute("SELECT 1").fetchone() == (1,)
            for _ in range(REFUSED_CONNECTS):
                with pytest.raises(psycopg.OperationalError) as refused:
                    psycopg.connect(**dsn)
                assert "too many connections" in str(refused.value)  # (psycopg keeps no SQLSTATE for a failed connect)
        wait_for(lambda: sum(e["data"]["rejections"] for e in receiver.events()) >= REFUSED_CONNECTS, 20,
                 what="quota.exceeded delivered for every refusal")
        events = receiver.events()
        assert {e["event_type"] for e in events} == {"quota.exceeded"}
        assert {e["tenant_id"] for e in events} == {tenant_id}  # the other tenant's hook heard nothing
        assert all(e["data"]["resource"] == "connections" and e["data"]["sqlstate"] == "53300"
                   and e["data"]["limit"] == 1 and e["data"]["period_start"] < e["data"]["period_end"] for e in events)
        # one event per sampling tick, not per refusal: refusals milliseconds apart share one
        assert max(e["data"]["rejections"] for e in events) >= 2
        assert receiver.all_signed()
    finally:
        receiver.stop()


def _connect_or_none(dsn):
    try:
        return psycopg.connect(**dsn)
    except psycopg.OperationalError:
        return None
