"""How steadily this host runs Python: the floor under a Python server's tail latency.

One process per CPU (pinned) repeats a fixed unit of interpreter work for a
few seconds: the same 1,000 dict lookups and small allocations each time,
~170-200 us, the kind of work an aiohttp request is made of (the collector
off: the host is measured, not the GC). On a steady machine every unit takes
about as long as the fastest. Here they do not: a unit far above the fastest
was interrupted (the CPU ran something else: another task, interrupts, or on
a VM the hypervisor gave the vCPU away), and many units 2x or more slower
mean contention outside the process (caches, memory bandwidth, the sibling
hyperthread, shared with other tenants of the physical host).

Measured on the development VMs (2026-11, nothing else of ours running): a
tenth to a quarter of the units take 2x the fastest or more, p90 1.8-2.7x, the
longest 4-6 ms. A Python server's requests stretch alike, so its queue
builds far below its nominal capacity: at 2,000 requests/s from 64 paced
clients even a bare aiohttp handler's p99 was 5-15 ms, a raw asyncio
Protocol's 0.3-7 ms, and a C epoll server's 0.4 ms (same client, same
minute). bench/test_api_bench.py prints this measurement beside its p99
figures.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

SLOW_FACTOR = 2.0  # a unit this many times the fastest counts as slowed

# Repeats the unit for `seconds` on one CPU; prints "start_s duration_us" per unit.
_WORKER = """
import gc, os, random, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
seconds = float(sys.argv[2])
table = {f"key-{index}": [index, str(index)] for index in range(100_000)}  # ~8 MB of objects
keys = list(table)
random.seed(1)
picks = [random.choice(keys) for _ in range(1000)]
gc.disable()  # the host is measured, not the collector
now = time.perf_counter
begin = now()
out = []
while now() - begin < seconds:
    start = now()
    kept = []
    for key in picks:
        value = table[key]
        kept.append((value[0] + 1, value[1]))
    out.append(f"{start - begin:.4f} {(now() - start) * 1e6:.0f}")
print("\\n".join(out))
"""


@dataclasses.dataclass
class CpuNoise:
    cpu: int
    units: list[tuple[float, float]]  # (start s, duration us)

    @property
    def fastest_us(self) -> float:
        return min(duration for _, duration in self.units)

    @property
    def slowed_share(self) -> float:
        limit = SLOW_FACTOR * self.fastest_us
        return sum(1 for _, duration in self.units if duration >= limit) / len(self.units)

    @property
    def longest_ms(self) -> float:
        return max(duration for _, duration in self.units) / 1000.0

    def percentile_us(self, share: float) -> float:
        durations = sorted(duration for _, duration in self.units)
        return durations[min(len(durations) - 1, int(share * len(durations)))]

    def describe(self) -> str:
        best = self.fastest_us
        return (f"cpu{self.cpu}: unit {best:.0f} us at best, median {self.percentile_us(0.5) / best:.1f}x, "
                f"p90 {self.percentile_us(0.9) / best:.1f}x, {self.slowed_share:.0%} of units >= {SLOW_FACTOR:g}x, "
                f"longest {self.longest_ms:.1f} ms")


def measure(seconds: float = 2.0) -> list[CpuNoise]:
    """Run the unit on each CPU in turn for `seconds` (one at a time: two at once would
    measure how they disturb each other)."""
    reports = []
    for cpu in sorted(os.sched_getaffinity(0)):
        worker = subprocess.run([sys.executable, "-c", _WORKER, str(cpu), str(seconds)], capture_output=True, text=True,
                                timeout=seconds + 120)
        assert worker.returncode == 0 and worker.stdout.strip(), worker.stderr
        reports.append(CpuNoise(cpu, [(float(start), float(duration)) for start, duration in
                                      (line.split() for line in worker.stdout.splitlines())]))
    return reports


if __name__ == "__main__":
    for report in measure(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0):
        print(report.describe())
