"""The event bus, and the events the service layer publishes (in-process, real catalog)."""
from __future__ import annotations

import asyncio
import re
import threading

import pytest

from rustymt import config
from rustymt.daemon import prepare_data_dir
from rustymt.events.bus import EventBus, SubscriberDropped
from rustymt.service.authz import Principal
from rustymt.service.capacity import HostCapacity
from rustymt.service.services import Services

ADMIN = Principal.from_claims({"roles": ["cdb_admin"]})


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


async def next_event(subscription):
    return await asyncio.wait_for(subscription.__anext__(), 5)


def test_publish_reaches_matching_subscribers_only():
    async def scenario():
        bus = EventBus()
        everything = bus.subscribe()
        states_of_a = bus.subscribe({"tenant.state.changed"}, tenant_id="a")
        bus.publish("tenant.created", "a", {"n": 1})
        bus.publish("tenant.state.changed", "b", {"n": 2})
        event = bus.publish("tenant.state.changed", "a", {"n": 3})
        assert [(await next_event(everything)).data["n"] for _ in range(3)] == [1, 2, 3]
        got = await next_event(states_of_a)
        assert got == event and got.data == {"n": 3}
        payload = got.to_dict()
        assert set(payload) == {"event_id", "event_type", "timestamp", "tenant_id", "data"}
        assert payload["event_id"].startswith("evt_") and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", payload["timestamp"])
        states_of_a.close()
        with pytest.raises(StopAsyncIteration):
            await next_event(states_of_a)
        assert bus.subscriber_count == 1

    run(scenario())


def test_a_full_subscriber_is_dropped_and_publish_never_blocks():
    async def scenario():
        bus = EventBus()
        slow = bus.subscribe(maxsize=3)
        fast = bus.subscribe(maxsize=1000)
        for n in range(10):
            bus.publish("system.alert", None, {"n": n})
        with pytest.raises(SubscriberDropped):
            await next_event(slow)
        assert [(await next_event(fast)).data["n"] for _ in range(10)] == list(range(10))
        assert bus.subscriber_count == 1

    run(scenario())


def test_publish_from_another_thread_wakes_the_subscriber():
    async def scenario():
        bus = EventBus()
        subscription = bus.subscribe()
        waiting = asyncio.ensure_future(next_event(subscription))
        await asyncio.sleep(0)  # let the consumer start waiting
        thread = threading.Thread(target=bus.publish, args=("system.alert", None, {"from": "thread"}))
        thread.start()
        assert (await waiting).data == {"from": "thread"}
        thread.join()

    run(scenario())


def test_unknown_event_types_are_refused():
    bus = EventBus()
    with pytest.raises(ValueError):
        bus.publish("tenant.exploded", None, {})


@pytest.fixture
def services(tmp_path):
    settings = config.load(env={}, overrides={"server.data_dir": str(tmp_path / "data")})
    catalog = prepare_data_dir(settings)
    yield Services(catalog, settings, EventBus(), HostCapacity(cpu_percent=800))
    catalog.close()


def test_service_publishes_on_every_state_change(services):
    async def scenario():
        bus = services.bus
        events = bus.subscribe()
        created = await services.tenants.create(ADMIN, tenant_name="evented", admin_user="a@e", admin_password="long enough",
                                                service_tier="silver")
        tid = created["tenant_id"]
        await services.tenants.suspend(ADMIN, tid, "Payment overdue", notify_admin=True)
        await services.tenants.resume(ADMIN, tid)
        await services.tenants.change_tier(ADMIN, tid, "gold")
        await services.tenants.set_priority(ADMIN, tid, "low")
        await services.tenants.update_quota(ADMIN, tid, {"iops": 42})
        await services.tenants.terminate(ADMIN, tid)
        seen = [await next_event(events) for _ in range(9)]
        assert [e.event_type for e in seen] == [
            "tenant.created", "pdb.created", "tenant.state.changed", "tenant.state.changed", "tenant.tier.changed",
            "tenant.priority.changed", "tenant.quota.changed", "tenant.state.changed", "pdb.dropped"]
        assert all(e.tenant_id == tid for e in seen)
        suspend, resume, terminate = seen[2], seen[3], seen[7]
        assert suspend.data == {"old_state": "active", "new_state": "suspended", "reason": "Payment overdue", "notify_admin": True}
        assert resume.data == {"old_state": "suspended", "new_state": "active", "reason": None}
        assert terminate.data["new_state"] == "terminated"
        assert seen[6].data["new_quota"]["iops"] == 42 and seen[6].data["old_quota"]["iops"] == 10000
        assert seen[5].data == {"old_priority": "high", "new_priority": "low", "cpu_shares": 512}

    run(scenario())


def test_refused_changes_publish_nothing(services):
    async def scenario():
        created = await services.tenants.create(ADMIN, tenant_name="quiet", admin_user="q@e", admin_password="long enough",
                                                service_tier="bronze")
        events = services.bus.subscribe()
        with pytest.raises(Exception) as refused:
            await services.tenants.resume(ADMIN, created["tenant_id"])
        assert refused.value.code == "INVALID_STATE"
        services.bus.publish("system.alert", None, {"marker": True})
        assert (await next_event(events)).data == {"marker": True}  # nothing came before the marker

    run(scenario())
