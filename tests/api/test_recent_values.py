"""rustymt.service.recent.RecentValues: bounded age, one fetch for concurrent
callers, forget() disowning a running fetch, failures not kept.

Real asyncio; the clocks are the class's own parameters, advanced by hand so
the age bound is checked exactly.
"""
from __future__ import annotations

import asyncio

import pytest

from rustymt.service.recent import RecentValues


class Clock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _recent(max_age: float = 1.0) -> tuple[RecentValues, Clock]:
    clock = Clock()
    return RecentValues(max_age, clock=clock, wall_clock=lambda: clock.now + 1_000_000.0), clock


def test_concurrent_callers_share_one_fetch_and_its_start_time():
    async def scenario():
        recent, clock = _recent()
        calls, release = [], asyncio.Event()

        async def fetch():
            calls.append(clock.now)
            await release.wait()
            return len(calls)

        waiters = [asyncio.ensure_future(recent.get("shared", fetch)) for _ in range(50)]
        await asyncio.sleep(0)  # every waiter reaches the running fetch
        clock.now += 0.3  # the fetch takes a while: its measurement time is when it started
        release.set()
        results = await asyncio.gather(*waiters)
        assert len(calls) == 1
        assert set(results) == {(1, 100.0 + 1_000_000.0)}

    asyncio.run(scenario())


def test_value_is_served_until_older_than_max_age():
    async def scenario():
        recent, clock = _recent(max_age=1.0)
        fetched = []

        async def fetch():
            fetched.append(clock.now)
            return clock.now

        assert (await recent.get("k", fetch))[0] == 100.0
        clock.now = 101.0  # exactly max_age old: still served
        assert (await recent.get("k", fetch))[0] == 100.0
        clock.now = 101.01
        assert (await recent.get("k", fetch))[0] == 101.01
        assert fetched == [100.0, 101.01]
        assert recent.fresh("k") == (101.01, 101.01 + 1_000_000.0)

    asyncio.run(scenario())


def test_put_keeps_the_newer_measurement():
    recent, clock = _recent()
    recent.put("k", "new", started=100.0, started_wall=5.0)
    recent.put("k", "old", started=99.0, started_wall=4.0)
    assert recent.fresh("k") == ("new", 5.0)


def test_forget_disowns_a_running_fetch():
    async def scenario():
        recent, clock = _recent()
        gate = asyncio.Event()

        async def slow():
            await gate.wait()
            return "before the change"

        async def quick():
            return "after the change"

        first = asyncio.ensure_future(recent.get("k", slow))
        await asyncio.sleep(0)
        clock.now += 0.1
        recent.forget("k")  # e.g. a tenant attached: what `slow` measures may predate it
        assert await recent.get("k", quick) == ("after the change", clock.now + 1_000_000.0)
        gate.set()
        assert (await first)[0] == "before the change"  # its own caller still gets an answer
        assert recent.fresh("k")[0] == "after the change"  # but it is not kept over the newer one

    asyncio.run(scenario())


def test_a_failed_fetch_reaches_every_waiter_and_is_not_kept():
    async def scenario():
        recent, clock = _recent()
        attempts = []

        async def failing():
            attempts.append(1)
            await asyncio.sleep(0)
            raise OSError("instance gone")

        waiters = [asyncio.ensure_future(recent.get("k", failing)) for _ in range(3)]
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(result, OSError) for result in results) and len(attempts) == 1
        assert recent.fresh("k") is None
        with pytest.raises(OSError):
            await recent.get("k", failing)
        assert len(attempts) == 2

    asyncio.run(scenario())


def test_a_cancelled_caller_does_not_cancel_the_shared_fetch():
    async def scenario():
        recent, clock = _recent()
        gate = asyncio.Event()

        async def fetch():
            await gate.wait()
            return "measured"

        leaving = asyncio.ensure_future(recent.get("k", fetch))
        staying = asyncio.ensure_future(recent.get("k", fetch))
        await asyncio.sleep(0)
        leaving.cancel()
        gate.set()
        assert (await staying)[0] == "measured"
        assert leaving.cancelled()

    asyncio.run(scenario())
