"""graphql-transport-ws against a real daemon with aiohttp's websocket client."""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.graphql.client import WsClient, unique

STATE_CHANGED = "subscription($t: ID!) { tenantStateChanged(tenantId: $t) { tenantId oldState newState timestamp reason } }"


@pytest.fixture(scope="module")
def tenant(daemon):
    return daemon.create_tenant(unique("subs"), tier="bronze")


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


async def next_for(client: WsClient, op_id: str, timeout: float) -> dict:
    while True:
        message = await client.receive(timeout)
        if message.get("id") == op_id:
            return message


def test_rest_suspend_arrives_as_tenant_state_changed(daemon, tenant):
    tenant_id = tenant["tenant_id"]

    async def scenario():
        async with WsClient.opened(daemon, daemon.admin_token) as client:
            await client.subscribe("s1", STATE_CHANGED, {"t": tenant_id})
            started = time.monotonic()
            answer = await asyncio.to_thread(daemon.request, "POST", f"/api/v1/tenants/{tenant_id}/suspend",
                                             {"reason": "payment overdue"})
            assert answer.status == 200, answer.text
            message = await next_for(client, "s1", timeout=1.0)  # the deadline: within 1 s
            elapsed = time.monotonic() - started
            assert message["type"] == "next", message
            change = message["payload"]["data"]["tenantStateChanged"]
            assert change == {"tenantId": tenant_id, "oldState": "ACTIVE", "newState": "SUSPENDED",
                              "timestamp": change["timestamp"], "reason": "payment overdue"}
            assert change["timestamp"].endswith("Z")
            # client Complete stops it: a later change is not delivered, the socket stays usable
            await client.send({"id": "s1", "type": "complete"})
            await asyncio.to_thread(daemon.request, "POST", f"/api/v1/tenants/{tenant_id}/resume", {})
            await client.send({"type": "ping"})
            assert (await client.receive())["type"] == "pong"
            return elapsed

    elapsed = run(scenario())
    print(f"tenantStateChanged delivered {elapsed * 1000:.1f} ms after the REST call started")


def test_queries_and_mutations_over_the_socket(daemon, tenant):
    async def scenario():
        async with WsClient.opened(daemon, daemon.admin_token) as client:
            await client.send({"id": "q", "type": "subscribe", "payload": {
                "query": "query($t: ID!) { tenant(id: $t) { tenantId state } }", "variables": {"t": tenant["tenant_id"]}}})
            first = await next_for(client, "q", 5)
            assert first["type"] == "next" and first["payload"]["data"]["tenant"]["tenantId"] == tenant["tenant_id"]
            assert (await next_for(client, "q", 5))["type"] == "complete"
            await client.send({"id": "bad", "type": "subscribe", "payload": {"query": "subscription { nope }"}})
            refused = await next_for(client, "bad", 5)
            assert refused["type"] == "error" and refused["payload"][0]["extensions"]["code"] == "INVALID_REQUEST"
            await client.send({"id": "gone", "type": "subscribe", "payload": {
                "query": STATE_CHANGED, "variables": {"t": "tenant_000000000000"}}})
            missing = await next_for(client, "gone", 5)
            assert missing["type"] == "error" and missing["payload"][0]["extensions"]["code"] == "TENANT_NOT_FOUND"

    run(scenario())


def test_periodic_resource_usage(daemon, tenant):
    async def scenario():
        async with WsClient.opened(daemon, daemon.admin_token) as client:
            await client.send({"id": "u", "type": "subscribe", "payload": {
                "query": "subscription($t: ID!) { tenantResourceUsage(tenantId: $t) { cpuPercent memoryMb activeConnections lastUpdated } }",
                "variables": {"t": tenant["tenant_id"]}}})
            samples = [await next_for(client, "u", 5) for _ in range(3)]
            assert all(s["type"] == "next" for s in samples), samples
            rest = await asyncio.to_thread(daemon.request, "GET", f"/api/v1/tenants/{tenant['tenant_id']}/resources")
            usage = samples[-1]["payload"]["data"]["tenantResourceUsage"]
            assert usage["activeConnections"] == rest.json["current_usage"]["active_connections"]
            assert usage["memoryMb"] == rest.json["current_usage"]["memory_mb"]

    run(scenario())


def test_tenant_scope_and_permissions(daemon, tenant):
    other = daemon.create_tenant(unique("subs"), tier="bronze")
    scoped = daemon.token("tenant_admin", tenant_id=tenant["tenant_id"])
    monitor = daemon.token("monitor")

    async def scenario():
        async with WsClient.opened(daemon, scoped) as client:
            await client.send({"id": "x", "type": "subscribe", "payload": {"query": STATE_CHANGED, "variables": {"t": other["tenant_id"]}}})
            refused = await next_for(client, "x", 5)
            assert refused["type"] == "error" and refused["payload"][0]["extensions"]["code"] == "ISOLATION_VIOLATION"
            await client.send({"id": "a", "type": "subscribe", "payload": {"query": "subscription { systemAlerts { message } }"}})
            alerts = await next_for(client, "a", 5)
            assert alerts["payload"][0]["extensions"]["code"] == "PERMISSION_DENIED"
            await client.subscribe("own", STATE_CHANGED, {"t": tenant["tenant_id"]})
        async with WsClient.opened(daemon, monitor) as client:
            await client.subscribe("m", STATE_CHANGED, {"t": other["tenant_id"]})  # monitors read every tenant
            await client.send({"id": "mut", "type": "subscribe", "payload": {"query": 'mutation($t: ID!) { suspendTenant(tenantId: $t, reason: "x") { __typename } }', "variables": {"t": other["tenant_id"]}}})
            denied = await next_for(client, "mut", 5)
            assert denied["type"] == "next" and denied["payload"]["errors"][0]["extensions"]["code"] == "PERMISSION_DENIED"

    run(scenario())


async def _close_code(daemon, messages, token=None, protocols=("graphql-transport-ws",)) -> int | None:
    client = await WsClient.connect(daemon, protocols=protocols)
    try:
        for message in messages:
            if message == "init":
                await client.init(token)
            elif isinstance(message, str):
                await client.ws.send_str(message)
            else:
                await client.send(message)
        return await client.closed_with()
    finally:
        await client.close()


SUB = {"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }"}}


@pytest.mark.parametrize("case, messages, code", [
    ("subscribe before init", [SUB], 4401),
    ("forged token", [{"type": "connection_init", "payload": {"Authorization": "Bearer not.a.jwt"}}], 4403),
    ("no token", [{"type": "connection_init", "payload": {}}], 4403),
    ("second init", ["init", {"type": "connection_init", "payload": {}}], 4429),
    ("invalid JSON", ["{nope"], 4400),
    ("unknown type", [{"type": "start", "id": "1"}], 4400),
    ("no init in time", [], 4408),
    ("message too big", ["init", {"type": "ping", "payload": {"pad": "x" * (70 << 10)}}], 1009),
])
def test_protocol_close_codes(daemon, case, messages, code):
    assert run(_close_code(daemon, messages, token=daemon.admin_token)) == code, case


def test_duplicate_subscription_id_closes_4409(daemon, tenant):
    duplicate = {"id": "dup", "type": "subscribe", "payload": {"query": STATE_CHANGED, "variables": {"t": tenant["tenant_id"]}}}
    assert run(_close_code(daemon, ["init", duplicate, duplicate], token=daemon.admin_token)) == 4409


def test_missing_subprotocol_closes_4406(daemon):
    assert run(_close_code(daemon, [], protocols=())) == 4406


def test_expired_token_is_refused(daemon):
    import jwt

    from rustymt import config
    from rustymt.api.auth import token_claims
    from rustymt.api.keys import load_or_create_keys

    settings = config.load(env={})
    keys = load_or_create_keys(daemon.data_dir, settings.auth.algorithms)

    def signed(now: int) -> str:
        claims = token_claims("cdb_admin", None, 60, settings.auth.issuer, now=now)
        return jwt.encode(claims, keys.signing_key("EdDSA"), algorithm="EdDSA")

    async def accepted(token: str) -> bool:
        async with WsClient.opened(daemon, token):  # asserts connection_ack
            return True

    assert run(accepted(signed(int(time.time()))))  # control: the same token, fresh, is accepted
    token = signed(int(time.time()) - 3600)  # expired an hour ago
    assert run(_close_code(daemon, [{"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}])) == 4403
    # a socket does not outlive its token: one expiring in ~2 s is closed with 4403 then
    expiring = signed(int(time.time()) - 58)
    assert run(_close_code(daemon, ["init"], token=expiring)) == 4403


def test_operations_per_socket_are_capped(daemon, tenant):
    """The test daemon allows 5 running operations per socket (graphql.max_operations_per_socket)."""
    async def scenario():
        async with WsClient.opened(daemon, daemon.admin_token) as client:
            for index in range(5):
                await client.subscribe(f"s{index}", STATE_CHANGED, {"t": tenant["tenant_id"]})
            await client.send({"id": "s5", "type": "subscribe", "payload": {"query": STATE_CHANGED, "variables": {"t": tenant["tenant_id"]}}})
            refused = await next_for(client, "s5", 5)
            assert refused["type"] == "error" and refused["payload"][0]["extensions"]["code"] == "QUOTA_EXCEEDED"
            await client.send({"id": "s0", "type": "complete"})  # one ends: room again
            await client.subscribe("s6", STATE_CHANGED, {"t": tenant["tenant_id"]})

    run(scenario())
