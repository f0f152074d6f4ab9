"""In-process publish/subscribe for state changes.

The service layer publishes an Event after every committed state change;
GraphQL subscriptions, webhooks and metering subscribe. Publishing never
blocks and never fails because of a subscriber: each subscription has a
bounded queue, and a subscriber that lets its queue fill up is dropped (its
iterator then raises SubscriberDropped) instead of slowing everyone down.

Event.to_dict() is the spec's webhook payload:
    {"event_id", "event_type", "timestamp" (ISO-8601 Z), "tenant_id", "data"}

publish() may be called from any thread; subscribers are woken on the event
loop they subscribed from.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import secrets
import threading
from typing import Any, Iterable

from rustymt.model.timeutil import utc_now_iso

EVENT_TYPES = frozenset({
    "tenant.state.changed", "tenant.created", "tenant.tier.changed", "tenant.quota.changed",
    "tenant.priority.changed", "pdb.created", "pdb.opened", "pdb.closed", "pdb.dropped",
    "pdb.state.changed", "quota.exceeded", "clone.progress", "clone.completed",
    "tenant.sla.violated", "system.alert",
})


class SubscriberDropped(Exception):
    """This subscriber fell behind (its queue filled up) and was dropped."""


@dataclasses.dataclass(frozen=True)
class Event:
    event_id: str
    event_type: str
    timestamp: str
    tenant_id: str | None
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Subscription:
    """Async iterator over the events matching one subscriber's filter."""

    def __init__(self, bus: "EventBus", event_types: frozenset[str] | None, tenant_id: str | None, maxsize: int):
        self._bus = bus
        self.event_types = event_types
        self.tenant_id = tenant_id
        self._maxsize = maxsize
        self._items: collections.deque[Event] = collections.deque()
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future | None = None
        self.closed = False
        self.dropped = False

    def matches(self, event: Event) -> bool:
        return (self.event_types is None or event.event_type in self.event_types) and (
            self.tenant_id is None or event.tenant_id == self.tenant_id
        )

    def _offer(self, event: Event) -> bool:
        """Queue `event`; False when the queue is full (the bus then drops us)."""
        if len(self._items) >= self._maxsize:
            self.dropped = True
            self._wake()
            return False
        self._items.append(event)
        self._wake()
        return True

    def _wake(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._set_waiter()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._set_waiter)

    def _set_waiter(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Event:
        while True:
            if self.dropped:
                raise SubscriberDropped("subscriber fell behind and was dropped")
            if self._items:
                return self._items.popleft()
            if self.closed:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            await self._waiter

    def close(self) -> None:
        self.closed = True
        self._bus._remove(self)
        self._wake()


class EventBus:
    def __init__(self):
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self.published = 0  # events published since start (for /metrics and tests)

    def subscribe(self, event_types: Iterable[str] | None = None, tenant_id: str | None = None, maxsize: int = 256) -> Subscription:
        """Call on the event loop that will consume the events."""
        types = frozenset(event_types) if event_types is not None else None
        if types is not None and not types <= EVENT_TYPES:
            raise ValueError(f"unknown event types: {sorted(types - EVENT_TYPES)}")
        subscription = Subscription(self, types, tenant_id, maxsize)
        with self._lock:
            self._subscribers.append(subscription)
        return subscription

    def publish(self, event_type: str, tenant_id: str | None, data: dict[str, Any]) -> Event:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}")
        event = Event(f"evt_{secrets.token_hex(8)}", event_type, utc_now_iso(), tenant_id, dict(data))
        with self._lock:
            subscribers = [s for s in self._subscribers if s.matches(event)]
            self.published += 1
        for subscription in subscribers:
            if not subscription._offer(event):
                self._remove(subscription)
        return event

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)
