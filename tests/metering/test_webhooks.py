"""Webhooks against a real daemon and a real receiver on loopback.

Every delivery's X-RustyMT-Signature is verified by the receiver; retries,
dead letters and kill -9 are driven for real (short retry settings).
"""
from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.daemon import Daemon
from tests.metering.receiver import Receiver, tenant_ports

SECRET = "webhook_secret_key_1"
FAST_RETRIES = {
    "RUSTYMT_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
    "RUSTYMT_WEBHOOKS_RETRY_BASE_SECONDS": "0.2",
    "RUSTYMT_WEBHOOKS_RETRY_MAX_SECONDS": "0.5",
    "RUSTYMT_WEBHOOKS_MAX_AGE_SECONDS": "6",
    "RUSTYMT_WEBHOOKS_TIMEOUT_SECONDS": "2",
}
SPEC_EVENTS = ["tenant.state.changed", "tenant.sla.violated", "pdb.opened", "pdb.closed", "quota.exceeded", "clone.completed"]
_names = iter(range(1, 10_000))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    running = Daemon.start(str(tmp_path_factory.mktemp("webhooks") / "data"), {**FAST_RETRIES, **tenant_ports()})
    yield running
    running.stop()


def new_tenant(daemon) -> str:
    return daemon.create_tenant(f"hooked_{next(_names)}")["tenant_id"]


def register(daemon, url, token=None, **extra):
    body = {"webhook_url": url, "events": SPEC_EVENTS, "secret": SECRET, **extra}
    return daemon.request("POST", "/api/v1/webhooks", json=body, token=token or daemon.admin_token)


def deliveries(daemon, webhook_id, state=None):
    query = f"?state={state}" if state else ""
    response = daemon.request("GET", f"/api/v1/webhooks/{webhook_id}/deliveries{query}")
    assert response.status == 200, response.text
    return response.json["deliveries"]


def bounce(daemon, tenant_id):
    """suspend + resume: two tenant.state.changed events."""
    assert daemon.request("POST", f"/api/v1/tenants/{tenant_id}/suspend", json={"reason": "test"}).status == 200
    assert daemon.request("POST", f"/api/v1/tenants/{tenant_id}/resume").status == 200


def test_signed_spec_payloads_reach_only_the_registering_tenant(daemon):
    mine, other = new_tenant(daemon), new_tenant(daemon)
    receiver = Receiver(SECRET).start()
    try:
        token = daemon.token("tenant_admin", tenant_id=mine)
        created = register(daemon, receiver.url, token=token)
        assert created.status == 201, created.text
        hook = created.json
        assert hook["tenant_id"] == mine and hook["events"] == sorted(SPEC_EVENTS) and "secret" not in hook
        refused = register(daemon, receiver.url, token=token, tenant_id=other)
        assert (refused.status, refused.error_code) == (403, "ISOLATION_VIOLATION")
        listed = daemon.request("GET", "/api/v1/webhooks", token=token).json["webhooks"]
        assert [w["webhook_id"] for w in listed] == [hook["webhook_id"]]
        outsider = daemon.token("tenant_admin", tenant_id=other)
        assert daemon.request("GET", "/api/v1/webhooks", token=outsider).json["webhooks"] == []
        assert daemon.request("GET", f"/api/v1/webhooks/{hook['webhook_id']}", token=outsider).error_code == "NOT_FOUND"

        bounce(daemon, other)  # not this webhook's tenant
        bounce(daemon, mine)
        wait_for(lambda: len(receiver.received) >= 2, 15, what="two deliveries")
        events = receiver.events()
        assert all(set(event) == {"event_id", "event_type", "timestamp", "tenant_id", "data"} for event in events)
        assert {e["tenant_id"] for e in events} == {mine}
        assert [(e["data"]["old_state"], e["data"]["new_state"]) for e in events] == [("active", "suspended"), ("suspended", "active")]
        assert receiver.all_signed()
        assert {h["X-RustyMT-Event"] for h, _b, _ok in receiver.received} == {"tenant.state.changed"}
        rows = deliveries(daemon, hook["webhook_id"])
        assert {(r["state"], r["attempts"], r["last_status"]) for r in rows} == {("delivered", 1, 200)}
        assert sorted(r["event_id"] for r in rows) == sorted(e["event_id"] for e in events)
        assert SECRET not in daemon.log()
    finally:
        receiver.stop()


def test_receiver_down_for_a_while_gets_retries_then_delivery(daemon):
    tenant = new_tenant(daemon)
    receiver = Receiver(SECRET)  # not listening yet: connections are refused
    hook = register(daemon, receiver.url, tenant_id=tenant).json
    bounce(daemon, tenant)
    wait_for(lambda: any(r["attempts"] >= 2 for r in deliveries(daemon, hook["webhook_id"])), 15, what="retries")
    failing = deliveries(daemon, hook["webhook_id"])
    assert all(r["state"] == "pending" and r["last_error"] for r in failing)
    receiver.start()
    try:
        wait_for(lambda: {r["state"] for r in deliveries(daemon, hook["webhook_id"])} == {"delivered"}, 15, what="delivery")
        assert receiver.all_signed()
        assert sorted({e["event_id"] for e in receiver.events()}) == sorted(r["event_id"] for r in failing)
    finally:
        receiver.stop()


def test_never_reachable_target_is_dead_lettered_and_visible(daemon):
    tenant = new_tenant(daemon)
    hook = register(daemon, Receiver(SECRET).url, tenant_id=tenant).json
    bounce(daemon, tenant)
    wait_for(lambda: len(deliveries(daemon, hook["webhook_id"], "dead")) == 2, 20, what="dead letters")
    dead = deliveries(daemon, hook["webhook_id"], "dead")
    assert all(r["attempts"] >= 2 and r["next_attempt_at"] is None for r in dead)
    deleted = daemon.request("DELETE", f"/api/v1/webhooks/{hook['webhook_id']}")
    assert deleted.status == 200 and deleted.json["deleted"] is True
    assert daemon.request("GET", f"/api/v1/webhooks/{hook['webhook_id']}").error_code == "NOT_FOUND"


def test_kill_9_between_enqueue_and_delivery_delivers_after_restart(tmp_path):
    data_dir = str(tmp_path / "data")
    first = Daemon.start(data_dir, {**FAST_RETRIES, "RUSTYMT_WEBHOOKS_MAX_AGE_SECONDS": "600", **tenant_ports()})
    receiver = Receiver(SECRET)
    second = None
    try:
        tenant = new_tenant(first)
        hook = register(first, receiver.url, tenant_id=tenant).json
        bounce(first, tenant)
        wait_for(lambda: len(deliveries(first, hook["webhook_id"])) == 2, 10, what="enqueued")
        queued = {r["event_id"] for r in deliveries(first, hook["webhook_id"])}
        first.kill()  # SIGKILL: nothing delivered yet (the receiver is down)
        receiver.start()
        second = Daemon.start(data_dir, first.env)
        wait_for(lambda: {e["event_id"] for e in receiver.events()} == queued, 20, what="delivery after restart")
        # at-least-once: a duplicate may only repeat an event_id that was queued
        assert {e["event_id"] for e in receiver.events()} <= queued and receiver.all_signed()
        wait_for(lambda: {r["state"] for r in deliveries(second, hook["webhook_id"])} == {"delivered"}, 10, what="marked")
    finally:
        receiver.stop()
        first.kill()
        if second is not None:
            second.stop()


def test_unsafe_urls_and_bad_registrations_are_refused(tmp_path):
    daemon = Daemon.start(str(tmp_path / "data"), tenant_ports())  # webhooks.allow_private_targets off (the default)
    try:
        for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.0.0.7/hook", "http://[::1]/hook",
                    "http://169.254.169.254/latest/meta-data", "http://192.168.1.10/x", "ftp://example.com/x",
                    "http://user:pw@8.8.8.8/x", "not a url"):
            response = register(daemon, url)
            assert (response.status, response.error_code) == (400, "INVALID_REQUEST"), (url, response.text)
            assert response.json["error"]["details"]["field"] == "webhook_url"
        for body, field in (({"events": ["no.such.event"]}, "events"), ({"events": []}, "events"), ({"secret": "short"}, "secret")):
            response = register(daemon, "https://8.8.8.8/hook", **body)
            assert (response.status, response.json["error"]["details"]["field"]) == (400, field), response.text
        scoped = daemon.token("monitor")
        assert register(daemon, "https://8.8.8.8/hook", token=scoped).error_code == "PERMISSION_DENIED"
        assert daemon.request("GET", "/api/v1/webhooks").json["webhooks"] == []
    finally:
        daemon.stop()
