"""GET tenant's usage comes from measurements at most USAGE_MAX_AGE_SECONDS (1.5 s) old, and says when they were taken.

A real daemon with its engine instance: a session opened on the tenant's port
shows in active_connections within a deadline (not necessarily on the very
next GET), and usage.last_updated (GraphQL's Tenant.usage.lastUpdated; REST's
GET shows the spec's subset of the block) is when the figures were measured:
never after the answer, never more than a couple of seconds before it.
"""
from __future__ import annotations

import datetime

import pytest

from tests.conftest import wait_for
from tests.daemon_engine.conftest import connect, get_json, new_tenant, port_range_env

USAGE = "query($id: ID!) { tenant(id: $id) { usage { lastUpdated activeConnections } } }"


@pytest.fixture(scope="module")
def engine_daemon(tmp_path_factory):
    from tests.daemon import Daemon

    daemon = Daemon.start(str(tmp_path_factory.mktemp("fresh") / "data"), env=port_range_env())
    yield daemon
    assert daemon.stop() == 0, daemon.log()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _graphql_usage(daemon, tenant_id: str) -> dict:
    response = daemon.request("POST", "/graphql", json={"query": USAGE, "variables": {"id": tenant_id}})
    assert response.status == 200, response.text
    return response.json["data"]["tenant"]["usage"]


def test_a_new_session_shows_within_a_deadline_and_last_updated_tells_when(engine_daemon):
    tenant = new_tenant(engine_daemon, "fresh")
    tenant_id = tenant["tenant_id"]
    with connect(tenant) as session:
        assert session.execute("SELECT 1").fetchone() == (1,)

        def session_counted():
            usage = get_json(engine_daemon, f"/api/v1/tenants/{tenant_id}")["usage"]
            return usage["active_connections"] == 1

        wait_for(session_counted, timeout=5.0, what="the session in usage.active_connections")
        asked = _now()
        usage = _graphql_usage(engine_daemon, tenant_id)
        answered = _now()
    measured = datetime.datetime.fromisoformat(usage["lastUpdated"].replace("Z", "+00:00"))
    assert measured <= answered  # whole seconds, rounded down: never claimed newer than it is
    assert asked - measured <= datetime.timedelta(seconds=3)  # at most 1.5 s old, plus rounding (< 1 s) and the loop's lag
    assert usage["activeConnections"] == 1


def test_usage_agrees_across_rest_and_graphql_once_settled(engine_daemon):
    tenant = new_tenant(engine_daemon, "agree")
    tenant_id = tenant["tenant_id"]

    def same_figures():
        rest = get_json(engine_daemon, f"/api/v1/tenants/{tenant_id}")["usage"]
        resources = get_json(engine_daemon, f"/api/v1/tenants/{tenant_id}/resources")["current_usage"]
        return rest["storage_bytes"] == resources["storage_bytes"] > 0 and "engine instance" in rest["source"]

    wait_for(same_figures, timeout=5.0, what="REST GET and /resources serving the same kept measurement")
