"""Measurements no older than a bound, fetched once however many callers ask.

    recent = RecentValues(max_age=1.0)
    value, measured_at = await recent.get(key, fetch)   # fetch: async () -> value
    recent.put(key, value, started_mono, started_wall)  # a measurement taken elsewhere (the sampler)
    recent.forget(key)                                  # the thing measured changed: measure again

GET tenant reports usage the engine measures (a control-socket round trip)
and the size of the tenant's datafiles (a directory walk). Doing both per
request made one GET cost ten times a bare handler; a client polling a tenant
does not need them fresher than about a second. So a value is kept with the
time its measurement STARTED (monotonic for the age check, wall clock for the
answer's `last_updated`: a measurement is never claimed newer than it is) and
served while it is at most `max_age` seconds old. When it is older, the first
caller starts one fetch and every caller arriving while it runs awaits that
same fetch (single flight): a thousand concurrent GETs cost one round trip.

A fetch that raises hands its exception to every caller waiting on it and is
not kept. `forget` (the measured thing changed: a tenant attached, a PDB
dropped) drops the kept value and disowns a fetch already running, whose
result could predate the change: the next caller measures afresh. A caller that is cancelled (client gone) does not cancel the fetch
the others await (asyncio.shield). One event loop owns an instance.
"""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Generic, Hashable, TypeVar

T = TypeVar("T")


class RecentValues(Generic[T]):
    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self.max_age = max_age
        self._clock = clock
        self._wall_clock = wall_clock
        self._values: dict[Hashable, tuple[float, float, T]] = {}  # key -> (started monotonic, started wall, value)
        self._fetching: dict[Hashable, asyncio.Future] = {}  # key -> the one fetch running for it
        self._forgotten: dict[Hashable, float] = {}  # key -> when forget() last ran (monotonic)

    def put(self, key: Hashable, value: T, started: float, started_wall: float) -> None:
        """Keep a measurement begun at `started` (monotonic) / `started_wall`, unless a newer one is kept."""
        kept = self._values.get(key)
        if started < self._forgotten.get(key, float("-inf")):
            return  # begun before the change forget() announced
        if kept is None or kept[0] <= started:
            self._values[key] = (started, started_wall, value)

    def fresh(self, key: Hashable) -> tuple[T, float] | None:
        """(value, wall time its measurement started) when at most max_age old, else None."""
        kept = self._values.get(key)
        if kept is not None and self._clock() - kept[0] <= self.max_age:
            return kept[2], kept[1]
        return None

    def forget(self, key: Hashable) -> None:
        self._values.pop(key, None)
        self._fetching.pop(key, None)
        self._forgotten[key] = self._clock()

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> tuple[T, float]:
        """(value, wall time its measurement started), measuring again when the kept one is too old."""
        kept = self.fresh(key)
        if kept is not None:
            return kept
        running = self._fetching.get(key)
        if running is None:
            # The start is read now, not when the task first runs: forget() may come in between.
            started = self._clock(), self._wall_clock()
            running = self._fetching[key] = asyncio.ensure_future(self._measure(key, fetch, *started))
            running.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(running)

    def _finished(self, key: Hashable, done: asyncio.Future) -> None:
        if self._fetching.get(key) is done:
            del self._fetching[key]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone, asyncio must not warn

    async def _measure(self, key: Hashable, fetch: Callable[[], Awaitable[T]], started: float,
                       started_wall: float) -> tuple[T, float]:
        value = await fetch()
        self.put(key, value, started, started_wall)
        return value, started_wall
