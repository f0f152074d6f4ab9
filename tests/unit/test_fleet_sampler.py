"""Fleet._sample_forever's schedule, with stand-in instances that record when they are asked.

Every instance is asked once per SAMPLE_SECONDS and never sooner (each rate
window is at least a period), two samples are never closer than half a slot
(instances that fell behind catch up spread out, not in a burst), and an
instance slow to answer has at most one request in flight and holds up no
other instance's schedule.
"""
from __future__ import annotations

import asyncio
import time

from rustymt import config
from rustymt.catalog.db import Catalog, catalog_path
from rustymt.service import fleet as fleet_module
from rustymt.service.fleet import Fleet

SLOW_ANSWER_SECONDS = 1.4  # longer than the period: the next due time comes while it is in flight
EARLY = 0.005  # asyncio may run a timer up to its clock resolution early


class StandIn:
    """What the sampler uses of an InstanceSupervisor: health and request("stats")."""

    def __init__(self, name: str, answer_seconds: float = 0.0):
        self.name = name
        self.health = "healthy"
        self.answer_seconds = answer_seconds
        self.asked: list[float] = []
        self.in_flight = self.most_in_flight = 0

    async def request(self, op: str, args: dict, timeout: float) -> dict:
        assert op == "stats"
        self.asked.append(time.monotonic())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.answer_seconds)  # the stand-in's answer time, not synchronisation
        finally:
            self.in_flight -= 1
        used = len(self.asked) * 1_000_000
        block = {"cpu": {"used_cpu_ns": used}, "io": {"reads": used, "writes": 0},
                 "network": {"bytes_in": used, "bytes_out": 0}}
        return {"tenants": {"tenant-" + self.name: block}}


def test_instances_are_asked_once_a_period_spread_out_and_a_slow_one_delays_nobody(tmp_path):
    settings = config.load(None, env={}, overrides={"server.data_dir": str(tmp_path)})
    catalog = Catalog.open(catalog_path(str(tmp_path)))
    fleet = Fleet(settings, catalog)
    stand_ins = [StandIn(f"i{index}") for index in range(6)] + [StandIn("slow", SLOW_ANSWER_SECONDS)]
    fleet.instances.update({stand_in.name: stand_in for stand_in in stand_ins})

    async def scenario():
        sampler = asyncio.create_task(fleet._sample_forever())
        fleet._sampler = sampler
        deadline = time.monotonic() + 30
        while min(len(stand_in.asked) for stand_in in stand_ins) < 4:
            assert time.monotonic() < deadline, [len(stand_in.asked) for stand_in in stand_ins]
            await asyncio.sleep(0.05)  # polling the recorded calls, bounded by the deadline
        fleet.instances.clear()  # stop() must not try to stop the stand-ins as processes
        await fleet.stop()
        return [task for task in fleet._sampling.values() if not task.done()]

    try:
        still_running = asyncio.run(scenario())
    finally:
        catalog.close()
    assert still_running == []
    period = fleet_module.SAMPLE_SECONDS
    slot = period / len(stand_ins)
    for stand_in in stand_ins:
        gaps = [later - earlier for earlier, later in zip(stand_in.asked, stand_in.asked[1:])]
        assert min(gaps) >= period - EARLY, (stand_in.name, gaps)
    slow = stand_ins[-1]
    assert slow.most_in_flight == 1
    everything = sorted(moment for stand_in in stand_ins for moment in stand_in.asked)
    assert min(later - earlier for earlier, later in zip(everything, everything[1:])) >= slot / 2 - EARLY
    # The fast instances kept their period while the slow one was in flight most of the time.
    fast_gaps = [later - earlier for stand_in in stand_ins[:-1] for earlier, later in zip(stand_in.asked, stand_in.asked[1:])]
    assert max(fast_gaps) < period + SLOW_ANSWER_SECONDS, fast_gaps
    # Rates come from windows of at least half a period.
    assert all(fleet.rates("tenant-" + stand_in.name) is not None for stand_in in stand_ins[:-1])
