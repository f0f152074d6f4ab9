"""What the host can guarantee: the denominator of admission control."""
from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class HostCapacity:
    cpu_percent: int  # usable cores x 100

    @classmethod
    def detect(cls) -> "HostCapacity":
        # The CPUs this process may run on (taskset / cpuset), not the machine's count.
        return cls(cpu_percent=100 * len(os.sched_getaffinity(0)))
