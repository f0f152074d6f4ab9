"""Metering, billing, /metrics, SLA and quota.exceeded against a real daemon with engine instances.

One daemon (metering.interval_seconds = 1) serves the module; the outage test
stops the engine instance and runs last.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import signal
import sqlite3

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for
from tests.daemon import Daemon
from tests.metering import crafted
from tests.metering.receiver import Receiver, tenant_ports

PASSWORD = "correct horse battery"
_names = iter(range(1, 10_000))
QUOTA_REFUSED_CONNECTS = 5  # quota.exceeded test: refused connects in a row


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    running = Daemon.start(str(tmp_path_factory.mktemp("metering") / "data"),
                           {"RUSTYMT_METERING_INTERVAL_SECONDS": "1", "RUSTYMT_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
                            **tenant_ports()})
    yield running
    running.stop()


def new_tenant(daemon, tier="silver") -> dict:
    name = f"metered_{next(_names)}"
    created = daemon.create_tenant(name, tier)
    return {**created, "name": name, **daemon.request("GET", f"/api/v1/tenants/{created['tenant_id']}").json}


def iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def records(daemon, tenant_id, minutes=10):
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = iso(now - datetime.timedelta(minutes=minutes)), iso(now + datetime.timedelta(minutes=1))
    response = daemon.request("GET", f"/api/v1/tenants/{tenant_id}/metering?start={start}&end={end}")
    assert response.status == 200, response.text
    return response.json["records"]


def metrics(daemon, token=None) -> dict:
    response = daemon.request("GET", "/metrics", token=token or daemon.admin_token)
    assert response.status == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def tenant_value(samples, name, tenant_id, **labels):
    return samples.get((name, tuple(sorted({"tenant_id": tenant_id, **labels}.items()))))


def test_records_every_second_match_the_engine_workload(daemon):
    tenant = new_tenant(daemon)
    tenant_id = tenant["tenant_id"]
    wait_for(lambda: len(records(daemon, tenant_id)) >= 2, 20, what="first metering records")
    with psycopg.connect(host="127.0.0.1", port=tenant["network_port"], dbname=f"PDB_{tenant['name'].upper()}",
                         user=f"admin@{tenant['name']}.example", password=PASSWORD, sslmode="disable",
                         connect_timeout=10, autocommit=True) as conn:
        conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, payload BLOB)")
        for index in range(40):
            conn.execute("INSERT INTO blobs (id, payload) VALUES (%s, %s)", (index, os.urandom(50_000)))
        statements_run = 2  # the engine counts statements it compiles: CREATE and the (cached) INSERT
        # connections are a gauge sampled each second: held open, this session shows as a peak
        wait_for(lambda: any(r["peak_connections"] >= 1 for r in records(daemon, tenant_id)), 20, what="peak connections")

    def settled():
        rows, samples = records(daemon, tenant_id), metrics(daemon)
        total = tenant_value(samples, "rustymt_tenant_statements_total", tenant_id)
        storage = tenant_value(samples, "rustymt_tenant_storage_bytes", tenant_id)
        if total is None or sum(r["statements"] for r in rows) != total or total < statements_run:
            return None
        # records show GB to 6 places (1074 bytes)
        if abs(rows[-1]["storage_gb"] * (1 << 30) - storage) > 1100 or storage < 2_000_000:
            return None  # the last record's two samples must both see the final size
        return rows, samples

    rows, samples = wait_for(settled, 30, what="records matching the engine's counters")
    assert all(r["resolution"] == "raw" and r["tenant_id"] == tenant_id for r in rows)
    assert all(a["period_end"] == b["period_start"] for a, b in zip(rows, rows[1:])), "records tile time"
    lengths = {(datetime.datetime.fromisoformat(r["period_end"]) - datetime.datetime.fromisoformat(r["period_start"])).seconds
               for r in rows}
    assert min(lengths) >= 1 and sorted(lengths)[len(lengths) // 2] <= 2  # a 1 s interval (some ticks late on 2 cores)
    for field, name, labels in (("write_ops", "rustymt_tenant_io_operations_total", {"op": "write"}),
                                ("read_ops", "rustymt_tenant_io_operations_total", {"op": "read"}),
                                ("network_bytes_in", "rustymt_tenant_network_bytes_total", {"direction": "in"})):
        # every counter the engine reported since the tenant's first sample is in exactly one record
        assert sum(r[field] for r in rows) == tenant_value(samples, name, tenant_id, **labels), field
    assert sum(r["write_ops"] for r in rows) >= 40 * 50_000 // 4096  # the blobs were written to the datafile
    assert sum(r["api_requests"] for r in rows) >= 1  # these GETs name the tenant
    graphql = daemon.request("POST", "/graphql", json={
        "query": "query($t: ID!, $s: DateTime!, $e: DateTime!) { tenantMeteringRecords(tenantId: $t, startDate: $s, endDate: $e)"
                 " { periodStart periodEnd statements writeOps } }",
        "variables": {"t": tenant_id, "s": rows[0]["period_start"], "e": rows[-1]["period_end"]}}).json["data"]
    assert [(r["periodStart"], r["writeOps"]) for r in graphql["tenantMeteringRecords"]] == \
        [(r["period_start"], r["write_ops"]) for r in rows]


def test_metering_range_is_validated_and_scoped(daemon):
    tenant_id = new_tenant(daemon)["tenant_id"]
    base = f"/api/v1/tenants/{tenant_id}/metering"
    for query, field in (("?start=yesterday", "start"), ("?start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z", "end"),
                         ("?start=2026-01-01T00:00:00&end=2026-01-02T00:00:00Z", "start"),
                         ("?start=2025-01-01&end=2026-01-01", "end"), ("?begin=2026-01-01", "begin")):
        response = daemon.request("GET", base + query)
        assert (response.status, response.json["error"]["details"]["field"]) == (400, field), (query, response.text)
    assert daemon.request("GET", "/api/v1/tenants/tenant_nope/metering").error_code == "TENANT_NOT_FOUND"
    other = daemon.token("tenant_admin", tenant_id=new_tenant(daemon)["tenant_id"])
    assert daemon.request("GET", base, token=other).error_code == "ISOLATION_VIOLATION"
    assert daemon.request("GET", base + "?start=2026-01-01&end=2026-01-02").json == {"tenant_id": tenant_id, "records": []}


def test_crafted_month_bills_to_the_cent(daemon):
    tenant_id = new_tenant(daemon)["tenant_id"]
    wait_for(lambda: records(daemon, tenant_id), 20, what="the sampler saw the tenant")  # its tier log is seeded
    conn = sqlite3.connect(os.path.join(daemon.data_dir, "catalog.db"), timeout=10)
    with conn:
        conn.execute("UPDATE tenants SET created_at = ? WHERE tenant_id = ?", (crafted.CREATED_AT, tenant_id))
        conn.execute("DELETE FROM billing_tier_log WHERE tenant_id = ?", (tenant_id,))
        conn.executemany("INSERT INTO billing_tier_log (tenant_id, tier, effective_at) VALUES (?, ?, ?)",
                         [(tenant_id, tier, at) for tier, at in crafted.TIERS])
        rows = crafted.records(tenant_id)
        conn.executemany(f"INSERT INTO metering_records ({', '.join(rows[0])}) VALUES ({', '.join('?' * len(rows[0]))})",
                         [tuple(row.values()) for row in rows])
        conn.execute("INSERT INTO sla_hours (tenant_id, hour, up_seconds, down_seconds) VALUES (?, ?, ?, ?)",
                     (tenant_id, crafted.SEPTEMBER, crafted.UP_SECONDS, crafted.DOWN_SECONDS))
    conn.close()
    response = daemon.request("GET", f"/api/v1/tenants/{tenant_id}/billing?period={crafted.PERIOD}")
    assert response.status == 200, response.text
    report = response.json
    assert {key: report[key] for key in crafted.EXPECTED_TOTALS} == crafted.EXPECTED_TOTALS
    assert (report["tenant_id"], report["period"]) == (tenant_id, crafted.PERIOD)
    assert [item["amount"] for item in report["line_items"]] == crafted.EXPECTED_AMOUNTS
    assert [item["tier"] for item in report["line_items"]] == ["silver", "silver", "gold", "gold", "gold"]
    assert [{key: c[key] for key in crafted.EXPECTED_CREDIT} for c in report["credits"]] == [crafted.EXPECTED_CREDIT]
    again = daemon.request("GET", f"/api/v1/tenants/{tenant_id}/billing?period={crafted.PERIOD}")
    assert again.text == response.text  # deterministic
    graphql = daemon.request("POST", "/graphql", json={
        "query": "query($t: ID!, $p: String!) { tenantBilling(tenantId: $t, period: $p) { total currency credits { amount } } }",
        "variables": {"t": tenant_id, "p": crafted.PERIOD}})
    assert graphql.json["data"]["tenantBilling"] == {"total": "329.62", "currency": "USD", "credits": [{"amount": "109.88"}]}
    for period in ("2026-13", "2026-9", "September", "2099-01"):
        refused = daemon.request("GET", f"/api/v1/tenants/{tenant_id}/billing?period={period}")
        assert (refused.status, refused.error_code) == (400, "INVALID_REQUEST"), (period, refused.text)


def test_declared_maintenance_is_excluded_time(daemon):
    tenant_id = new_tenant(daemon)["tenant_id"]
    now = datetime.datetime.now(datetime.timezone.utc)
    path = f"/api/v1/tenants/{tenant_id}/maintenance"
    window = {"start": iso(now - datetime.timedelta(minutes=1)), "end": iso(now + datetime.timedelta(hours=1)), "reason": "upgrade"}
    declared = daemon.request("POST", path, json=window)
    assert declared.status == 201, declared.text
    assert daemon.request("GET", path).json["windows"] == [{key: declared.json[key] for key in
                                                            ("window_id", "start", "end", "reason", "declared_at")}]
    for bad, field in (({"end": window["start"]}, "end"), ({"end": iso(now + datetime.timedelta(days=8))}, "end"),
                       ({"start": iso(now - datetime.timedelta(hours=3)), "end": iso(now - datetime.timedelta(hours=2))}, "end"),
                       ({"start": "soon"}, "start")):
        refused = daemon.request("POST", path, json={**window, **bad})
        assert (refused.status, refused.json["error"]["details"]["field"]) == (400, field), refused.text
    tenant_token = daemon.token("tenant_admin", tenant_id=tenant_id)  # a tenant cannot excuse its own downtime
    assert daemon.request("POST", path, json=window, token=tenant_token).error_code == "PERMISSION_DENIED"

    def excluded_and_up():
        conn = sqlite3.connect(os.path.join(daemon.data_dir, "catalog.db"), timeout=10)
        try:
            return conn.execute("SELECT coalesce(sum(excluded_seconds), 0), coalesce(sum(up_seconds), 0) FROM sla_hours "
                                "WHERE tenant_id = ?", (tenant_id,)).fetchone()
        finally:
            conn.close()

    wait_for(lambda: excluded_and_up()[0] >= 3, 20, what="maintenance seconds excluded")
    assert excluded_and_up()[1] == 0  # none of its time counted as up (nor down)


def test_metrics_parse_and_tenant_tokens_see_only_their_series(daemon):
    tenant = new_tenant(daemon, "gold")
    other = new_tenant(daemon)
    wait_for(lambda: tenant_value(metrics(daemon), "rustymt_tenant_up", tenant["tenant_id"]) == 1, 20, what="tenant sampled")
    samples = metrics(daemon)
    assert tenant_value(samples, "rustymt_tenant_quota", tenant["tenant_id"], resource="cpu_percent") == 400
    assert tenant_value(samples, "rustymt_tenant_buffer_pool_hit_ratio", tenant["tenant_id"]) is not None
    assert any(name == "rustymt_api_requests_total" and dict(labels).get("route") == "/api/v1/tenants"
               for name, labels in samples)
    assert ("rustymt_webhook_queue_depth", ()) in samples
    assert any(name == "rustymt_instance_restarts_total" for name, _ in samples)
    own = metrics(daemon, token=daemon.token("tenant_admin", tenant_id=tenant["tenant_id"]))
    assert {dict(labels).get("tenant_id") for _, labels in own} == {tenant["tenant_id"]}
    assert other["tenant_id"] not in str(own)


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
            for _ in range(QUOTA_REFUSED_CONNECTS):
                with pytest.raises(psycopg.OperationalError) as refused:
                    psycopg.connect(**dsn)
                assert "too many connections" in str(refused.value)  # (psycopg keeps no SQLSTATE for a failed connect)
        wait_for(lambda: sum(e["data"]["rejections"] for e in receiver.events()) >= QUOTA_REFUSED_CONNECTS, 20,
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


def test_engine_outage_is_an_uptime_violation_with_its_event(daemon):
    tenant_id = new_tenant(daemon)["tenant_id"]
    receiver = Receiver("sla-hook-secret").start()
    try:
        hook = daemon.request("POST", "/api/v1/webhooks", json={"webhook_url": receiver.url, "events": ["tenant.sla.violated"],
                                                                "secret": "sla-hook-secret", "tenant_id": tenant_id})
        assert hook.status == 201, hook.text
        wait_for(lambda: len(records(daemon, tenant_id)) >= 12, 30, what="a dozen seconds of uptime")
        assert daemon.request("GET", f"/api/v1/tenants/{tenant_id}").json["sla"]["uptime_percent"] == 100.0
        status = daemon.request("GET", "/api/v1/cdb/status").json
        pid = next(i["pid"] for i in status["instances"] if tenant_id in i["tenants"])
        os.kill(pid, signal.SIGSTOP)  # the instance is held down: stats time out, the port stops answering
        try:
            violations = wait_for(lambda: daemon.request("GET", f"/api/v1/tenants/{tenant_id}").json["sla"]["violations"], 40,
                                  what="uptime violation")
        finally:
            with contextlib.suppress(ProcessLookupError):  # the supervisor may have replaced it meanwhile
                os.kill(pid, signal.SIGCONT)
        assert violations[0]["violation_type"] == "uptime" and violations[0]["severity"] in ("critical", "high")
        sla = daemon.request("POST", "/graphql", json={
            "query": "query($t: ID!) { tenantSla(tenantId: $t) { uptimePercent violations { violationType severity } } }",
            "variables": {"t": tenant_id}}).json["data"]["tenantSla"]
        assert sla["uptimePercent"] < 99.5
        assert sla["violations"][0] == {"violationType": "uptime", "severity": violations[0]["severity"].upper()}
        wait_for(lambda: receiver.events(), 20, what="tenant.sla.violated delivered")
        event = receiver.events()[0]
        assert event["event_type"] == "tenant.sla.violated" and event["tenant_id"] == tenant_id
        assert event["data"]["violation_type"] == "uptime" and event["data"]["sla_target"] == 99.5
        assert event["data"]["current_value"] < 99.5 and event["data"]["severity"] == violations[0]["severity"]
        assert receiver.all_signed()
    finally:
        receiver.stop()
