"""The app in this process, served on loopback, where the test needs to see
inside: how many service calls and catalog transactions a page costs, a
subscriber the event bus drops, and an internal error's answer."""
from __future__ import annotations

import asyncio
import collections
import json

from rustymt.api.graphql import execution
from rustymt.api.graphql.context import Context
from rustymt.api.graphql.cursors import CursorCodec
from rustymt.api.graphql.schema import executable_schema
from tests.graphql.inprocess import ADMIN, App, add_tenants

PAGE = """{ tenants(pageSize: %d) { totalCount edges { node { tenantId tenantName state
  quota { cpuPercent memoryMb iops } usage { cpuPercent activeConnections lastUpdated }
  sla { uptimePercent violations { severity } } } } } }"""


def test_a_page_of_100_tenants_costs_a_constant_number_of_calls(tmp_path):
    async def scenario():
        app = App(tmp_path)
        await add_tenants(app, 100)
        app.count_calls()
        async with app:
            token = app.token()
            counts = {}
            for size in (10, 100):
                app.calls.clear()
                body = await app.post(PAGE % size, token)
                assert "errors" not in body, body
                edges = body["data"]["tenants"]["edges"]
                assert len(edges) == size and all(edge["node"]["quota"]["memoryMb"] > 0 for edge in edges)
                counts[size] = dict(app.calls)
            return counts

    counts = asyncio.run(scenario())
    print(f"service calls and catalog transactions per page: 10 tenants {counts[10]}, 100 tenants {counts[100]}")
    assert counts[10] == counts[100]
    assert counts[100]["tenants.list"] == 1 and counts[100]["tenants.describe_many"] == 1
    assert "tenants.describe" not in counts[100]
    # one read for the page (read_cached: the list path keeps it until the next commit), one for all 100 tenants' details
    assert counts[100].get("catalog.read_cached", 0) + counts[100].get("catalog.read", 0) == 2


def test_slow_subscriber_is_dropped_with_an_error_and_never_blocks_publish(tmp_path):
    async def scenario():
        app = App(tmp_path, **{"graphql.subscriber_queue": 4})
        tenant = await app.services.tenants.create(ADMIN, tenant_name="slow", admin_user="slow@x.example",
                                                   admin_password="correct horse battery", service_tier="bronze")
        async with app:
            ws = await app.http.ws_connect(app.url.replace("http", "ws"), protocols=("graphql-transport-ws",))
            await ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {app.token()}"}})
            assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"
            await ws.send_json({"id": "s", "type": "subscribe", "payload": {
                "query": 'subscription($t: ID!) { tenantStateChanged(tenantId: $t) { newState } }',
                "variables": {"t": tenant["tenant_id"]}}})
            await ws.send_json({"type": "ping"})
            assert (await ws.receive_json(timeout=5))["type"] == "pong"
            bus = app.services.bus
            assert bus.subscriber_count == 1
            # 50 events in one go, without yielding to the loop: the subscriber cannot keep up
            for i in range(50):
                bus.publish("tenant.state.changed", tenant["tenant_id"],
                            {"old_state": "active", "new_state": "suspended", "reason": str(i)})
            assert bus.subscriber_count == 0  # dropped at once; publish went on
            received = []
            while True:
                message = await ws.receive_json(timeout=5)
                received.append(message)
                if message["type"] in ("error", "complete"):
                    break
            await ws.close()
            return received

    received = asyncio.run(scenario())
    last = received[-1]
    assert last["type"] == "error" and last["id"] == "s"
    assert last["payload"][0]["extensions"]["code"] == "SUBSCRIBER_DROPPED"
    assert len(received) - 1 <= 4  # at most the queue's worth was delivered before the drop


def test_internal_errors_carry_no_internals(caplog):
    schema = executable_schema()
    from graphql import parse

    broken = Context(services=object(), principal=ADMIN, codec=CursorCodec(b"k" * 32), settings=None)
    body = asyncio.run(execution.run(schema, parse("{ cdb { cdbName } }"), None, None, broken))
    error = body["errors"][0]
    assert error["extensions"]["code"] == "INTERNAL_ERROR" and error["extensions"]["request_id"]
    assert error["message"] == "internal error; the server log has the details"
    text = json.dumps(body)
    assert "Traceback" not in text and "AttributeError" not in text and "object" not in text
    assert any(error["extensions"]["request_id"] in record.getMessage() for record in caplog.records)


def test_event_fed_subscriptions_map_bus_events(tmp_path):
    """pdbStateChanged, cloneProgress, tenantSlaViolations and systemAlerts from the
    bus events their producers publish (API_CONTRACTS.md event types), with a
    tenant-scoped caller seeing only its own tenant's events."""
    async def scenario():
        app = App(tmp_path)
        mine = await app.services.tenants.create(ADMIN, tenant_name="mine", admin_user="mine@x.example",
                                                 admin_password="correct horse battery", service_tier="bronze")
        pdb = mine["pdb_id"]  # a real PDB: the subscription checks that the caller may see it
        add_clone_job(app, "job_1", mine["tenant_id"])  # a real job row: cloneProgress looks the job up
        async with app:
            from rustymt.api.auth import issue_token

            scoped = issue_token(app.settings.server.data_dir, app.settings, "tenant_admin", tenant_id=mine["tenant_id"])
            admin_ws = await subscribed(app, app.token(), {
                "pdb": (f'subscription {{ pdbStateChanged(pdbId: "{pdb}") {{ pdbId oldState newState timestamp }} }}', None),
                "clone": ('subscription { cloneProgress(jobId: "job_1") { jobId progress bytesTransferred status estimatedCompletion } }', None),
                "sla": ('subscription($t: ID!) { tenantSlaViolations(tenantId: $t) { violationType severity description timestamp } }', {"t": mine["tenant_id"]}),
                "alert": ("subscription { systemAlerts { alertId severity source message tenantId } }", None),
            })
            scoped_ws = await subscribed(app, scoped, {
                "pdb": (f'subscription {{ pdbStateChanged(pdbId: "{pdb}") {{ pdbId newState }} }}', None)})
            bus = app.services.bus
            bus.publish("pdb.state.changed", "tenant_other", {"pdb_id": pdb, "old_state": "mounted", "new_state": "open"})
            bus.publish("pdb.state.changed", mine["tenant_id"], {"pdb_id": "pdb_2", "old_state": "mounted", "new_state": "open"})
            bus.publish("clone.progress", mine["tenant_id"], {"job_id": "job_1", "progress": 0.5, "bytes_transferred": 1024, "status": "in_progress"})
            bus.publish("clone.completed", mine["tenant_id"], {"job_id": "job_1", "bytes_transferred": 2048})
            bus.publish("tenant.sla.violated", mine["tenant_id"], {"violation_type": "uptime", "current_value": 98.5, "sla_target": 99.5, "severity": "high"})
            alert = bus.publish("system.alert", None, {"severity": "critical", "source": "instance", "message": "shared instance restarted"})
            bus.publish("pdb.state.changed", mine["tenant_id"], {"pdb_id": pdb, "old_state": "open", "new_state": "closed"})
            admin_msgs = [await admin_ws.receive_json(timeout=5) for _ in range(7)]
            scoped_msg = await scoped_ws.receive_json(timeout=5)
            await admin_ws.close()
            await scoped_ws.close()
            return admin_msgs, scoped_msg, alert, mine["tenant_id"], pdb

    admin_msgs, scoped_msg, alert, tenant_id, pdb = asyncio.run(scenario())
    by_id = collections.defaultdict(list)
    for message in admin_msgs:
        by_id[message["id"]].append(message)
    assert [m["payload"]["data"]["pdbStateChanged"]["newState"] for m in by_id["pdb"]] == ["OPEN", "CLOSED"]
    assert by_id["pdb"][0]["payload"]["data"]["pdbStateChanged"]["oldState"] == "MOUNTED"
    clone = [m["payload"]["data"]["cloneProgress"] for m in by_id["clone"] if m["type"] == "next"]
    assert clone == [{"jobId": "job_1", "progress": 0.5, "bytesTransferred": 1024, "status": "in_progress", "estimatedCompletion": None},
                     {"jobId": "job_1", "progress": 1.0, "bytesTransferred": 2048, "status": "completed", "estimatedCompletion": None}]
    assert by_id["clone"][-1]["type"] == "complete"  # the stream ends with the job
    sla = by_id["sla"][0]["payload"]["data"]["tenantSlaViolations"]
    assert sla["violationType"] == "uptime" and sla["severity"] == "HIGH" and "98.5" in sla["description"]
    assert by_id["alert"][0]["payload"]["data"]["systemAlerts"] == {
        "alertId": alert.event_id, "severity": "CRITICAL", "source": "instance", "message": "shared instance restarted", "tenantId": None}
    # the scoped caller got its own tenant's PDB change, not the other tenant's
    assert scoped_msg["payload"]["data"]["pdbStateChanged"] == {"pdbId": pdb, "newState": "CLOSED"}


def add_clone_job(app: App, job_id: str, tenant_id: str, status: str = "in_progress", **fields) -> None:
    from rustymt.catalog import jobs as job_rows

    now = "2026-01-01T00:00:00Z"
    with app.catalog.write() as conn:
        job_rows.insert(conn, {"job_id": job_id, "kind": "clone", "tenant_id": tenant_id, "status": status,
                               "created_at": now, "updated_at": now, **fields})


def test_clone_progress_checks_the_job_and_answers_a_finished_one_at_once(tmp_path):
    """An unknown job, or another tenant's, is NOT_FOUND (as GET /jobs/{id});
    a job that finished before the subscription answers its final state once
    and completes instead of waiting for an event that already went."""
    query = "subscription($j: ID!) { cloneProgress(jobId: $j) { jobId progress bytesTransferred status } }"

    async def scenario():
        app = App(tmp_path)
        mine = await app.services.tenants.create(ADMIN, tenant_name="mine", admin_user="mine@x.example",
                                                 admin_password="correct horse battery", service_tier="bronze")
        other = await app.services.tenants.create(ADMIN, tenant_name="other", admin_user="other@x.example",
                                                  admin_password="correct horse battery", service_tier="bronze")
        add_clone_job(app, "job_done", mine["tenant_id"], status="completed", progress=1.0, bytes_transferred=4096,
                      finished_at="2026-01-01T00:00:01Z")
        add_clone_job(app, "job_other", other["tenant_id"])
        async with app:
            from rustymt.api.auth import issue_token

            scoped = issue_token(app.settings.server.data_dir, app.settings, "tenant_admin", tenant_id=mine["tenant_id"])
            ws = await app.http.ws_connect(app.url.replace("http", "ws"), protocols=("graphql-transport-ws",))
            await ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {scoped}"}})
            assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"
            answers = {}
            for op_id, job in (("unknown", "job_nope"), ("foreign", "job_other"), ("done", "job_done")):
                await ws.send_json({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": {"j": job}}})
                answers[op_id] = [await ws.receive_json(timeout=5)]
                if answers[op_id][0]["type"] == "next":
                    answers[op_id].append(await ws.receive_json(timeout=5))
            await ws.close()
            return answers

    answers = asyncio.run(scenario())
    for op_id in ("unknown", "foreign"):
        (error,) = answers[op_id]
        assert error["type"] == "error" and error["payload"][0]["extensions"]["code"] == "NOT_FOUND", error
    assert "job_other" in answers["foreign"][0]["payload"][0]["message"]  # only the id the caller gave
    final, complete = answers["done"]
    assert final["payload"]["data"]["cloneProgress"] == {"jobId": "job_done", "progress": 1.0,
                                                          "bytesTransferred": 4096, "status": "completed"}
    assert complete == {"id": "done", "type": "complete"}


async def subscribed(app: App, token: str, operations: dict):
    ws = await app.http.ws_connect(app.url.replace("http", "ws"), protocols=("graphql-transport-ws",))
    await ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"
    for op_id, (query, variables) in operations.items():
        await ws.send_json({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}})
    await ws.send_json({"type": "ping"})
    answer = await ws.receive_json(timeout=5)
    assert answer["type"] == "pong", answer
    return ws
