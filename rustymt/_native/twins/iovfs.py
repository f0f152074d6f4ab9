"""Pure-Python twin of native/iovfs.c's accounting and token buckets.

A bucket is GCRA: one timestamp, the theoretical arrival time (tat) of the
next unit. Reserving `cost` units moves tat by cost/rate (integer ns, as in
C); the caller waits for however far tat is ahead of now + burst. The meter
counts operations and bytes per tenant and asks both buckets (IOPS, bytes/s),
waiting for the larger answer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

NS = 1_000_000_000
BURST_NS = 50_000_000
MIN_BURST_BYTES = 65536


class IoBucket:
    def __init__(self, rate: int, burst_units: int):
        if rate < 0 or burst_units < 0:
            raise ValueError("rate and burst_units must be >= 0")
        self.rate = rate
        self.burst_ns = burst_units * NS // rate if rate > 0 else 0
        self.tat_ns = 0

    def admit(self, cost: int, now_ns: int) -> int:
        if cost < 0:
            raise ValueError("cost must be >= 0")
        if self.rate <= 0:
            return 0
        self.tat_ns = max(self.tat_ns, now_ns) + cost * NS // self.rate
        return max(self.tat_ns - self.burst_ns - now_ns, 0)


@dataclass
class TenantIo:
    reads: int = 0
    writes: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    throttled_ns: int = 0
    iops: IoBucket = field(default_factory=lambda: IoBucket(0, 0))
    bytes: IoBucket = field(default_factory=lambda: IoBucket(0, 0))

    def set_limits(self, iops: int, bytes_per_sec: int) -> None:
        if iops < 0 or bytes_per_sec < 0:
            raise ValueError("limits must be >= 0")
        self.iops = IoBucket(iops, max(iops * BURST_NS // NS, 1))
        self.bytes = IoBucket(bytes_per_sec, max(bytes_per_sec * BURST_NS // NS, MIN_BURST_BYTES))

    def io(self, is_write: bool, amount: int, now_ns: int) -> int:
        """Count one read or write; returns the wait the VFS would impose."""
        if is_write:
            self.writes += 1
            self.write_bytes += amount
        else:
            self.reads += 1
            self.read_bytes += amount
        if self.iops.rate == 0 and self.bytes.rate == 0:
            return 0
        wait = max(self.iops.admit(1, now_ns), self.bytes.admit(amount, now_ns))
        self.throttled_ns += wait
        return wait
