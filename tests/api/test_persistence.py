"""What the API acknowledged survives a restart (graceful or kill -9), scheduled changes included."""
from __future__ import annotations

import datetime
import sqlite3

from tests.conftest import wait_for
from tests.daemon import private_tenant_ports

STABLE = ("tenant_id", "tenant_name", "service_tier", "state", "priority", "quota", "created_at", "pdb_id", "network_port")


def snapshot(daemon):
    tenants = daemon.request("GET", "/api/v1/tenants?page_size=100").json["tenants"]
    return {t["tenant_id"]: {k: v for k, v in daemon.request("GET", f"/api/v1/tenants/{t['tenant_id']}").json.items() if k in STABLE}
            for t in tenants}


def test_restart_keeps_everything(daemon_factory):
    daemon = daemon_factory(env=private_tenant_ports())  # "lowest free port" below needs ports nobody else binds
    kept = daemon.create_tenant("kept_corp", tier="gold")["tenant_id"]
    paused = daemon.create_tenant("paused_corp")["tenant_id"]
    gone_created = daemon.create_tenant("gone_corp")
    gone, gone_port = gone_created["tenant_id"], gone_created["resources"]["network_port"]
    daemon.request("POST", f"/api/v1/tenants/{paused}/suspend", json={"reason": "maintenance window"})
    daemon.request("PUT", f"/api/v1/tenants/{kept}/quota", json={"iops": 1234, "max_connections": 7})
    daemon.request("PUT", f"/api/v1/tenants/{kept}/priority", json={"priority": "best_effort"})
    daemon.request("DELETE", f"/api/v1/tenants/{gone}")
    token = daemon.admin_token
    before = snapshot(daemon)

    daemon = daemon.restart()  # SIGTERM -> exit 0 asserted, then a new process on the same data dir
    assert snapshot(daemon) == before
    assert daemon.request("GET", "/api/v1/tenants", token=token).status == 200  # signing key kept
    assert daemon.request("GET", f"/api/v1/tenants/{kept}/resources").json["quota"]["iops"] == 1234
    assert daemon.request("POST", f"/api/v1/tenants/{paused}/resume").status == 200
    # The terminated tenant's port is free again; the live ones' are not handed out twice.
    fresh = daemon.create_tenant("fresh_corp")["resources"]["network_port"]
    assert before[gone]["network_port"] is None and fresh == gone_port  # lowest free port of the range
    assert fresh not in {before[kept]["network_port"], before[paused]["network_port"]}


def test_kill_9_loses_nothing_and_scheduled_changes_survive(daemon_factory):
    daemon = daemon_factory()
    soon = daemon.create_tenant("soon_corp")["tenant_id"]
    later = daemon.create_tenant("later_corp")["tenant_id"]
    daemon.request("POST", f"/api/v1/tenants/{later}/suspend", json={"reason": "x"})
    due = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)
    assert daemon.request("PUT", f"/api/v1/tenants/{soon}/tier", json={"new_tier": "gold", "effective_date": due.isoformat()}).status == 202
    assert daemon.request("PUT", f"/api/v1/tenants/{later}/tier", json={"new_tier": "gold", "effective_date": "2099-01-01"}).status == 202
    before = snapshot(daemon)
    daemon.kill()  # SIGKILL: no shutdown code runs
    # The change falls due while no daemon runs.
    wait_for(lambda: datetime.datetime.now(datetime.timezone.utc) > due + datetime.timedelta(seconds=1), timeout=10,
             what="the scheduled time to pass")
    daemon = daemon_factory(data_dir=daemon.data_dir)
    wait_for(lambda: daemon.request("GET", f"/api/v1/tenants/{soon}").json["service_tier"] == "gold", timeout=10,
             what="the due change applied at startup")
    after = snapshot(daemon)
    assert after[later] == before[later]  # everything acknowledged is there
    assert after[soon]["service_tier"] == "gold" and after[soon]["quota"]["cpu_percent"] == 400
    # The far one is still pending in the catalog.
    conn = sqlite3.connect(f"file:{daemon.data_dir}/catalog.db?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT tenant_id, new_tier, effective_at FROM tier_changes").fetchall() == [
            (later, "gold", "2099-01-01T00:00:00Z")]
    finally:
        conn.close()
