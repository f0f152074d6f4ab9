"""Service tiers and priorities as data: the one table every part reads.

A tier is a product a tenant buys: a quota vector (what the tenant may use),
a default priority, CPU scheduling parameters, an API rate limit and SLA
targets. The values for silver and gold are the spec's examples (silver: 2
cores / 4096 MB / 100 GB, gold: 4 cores / 8192 MB / 250 GB); the rate limits
are the spec's "Rate Limiting" table. Nothing else in the code base spells
these numbers: the service layer copies a tier's quota into a new tenant, the
rate limiter reads requests_per_hour/burst, the scheduler reads the shares.

Units: cpu in percent of one core (200 = 2 cores), memory in MiB, storage in
GiB, network in Mbit/s. `cpu_min_percent` is the CPU the tier *guarantees*
(percent of one core, at the tier's default quota); the sum of guarantees over
all live tenants may not exceed the host's cores (admission control, 507).
"""
from __future__ import annotations

import dataclasses
import enum
from types import MappingProxyType
from typing import Mapping


class Priority(str, enum.Enum):
    """The spec's TenantPriority; REST spells the values lowercase."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    BEST_EFFORT = "best_effort"


# Priority scales a tenant's CPU shares (the weight of the weighted-fair
# scheduler and cgroup cpu.shares / cpu.weight), so two tenants of one tier
# but different priority get different CPU under contention. Factors are
# powers of two so the shares stay integers for every tier below.
PRIORITY_SHARE_FACTOR: Mapping[Priority, float] = MappingProxyType({
    Priority.CRITICAL: 4.0,
    Priority.HIGH: 2.0,
    Priority.MEDIUM: 1.0,
    Priority.LOW: 0.5,
    Priority.BEST_EFFORT: 0.25,
})


@dataclasses.dataclass(frozen=True)
class Quota:
    """A tenant's resource quota vector (the spec's ResourceQuota)."""

    cpu_percent: int  # ceiling, percent of one core
    memory_mb: int
    storage_gb: int
    iops: int
    network_mbps: int
    max_connections: int

    @property
    def cpu_cores(self) -> float:
        return self.cpu_percent / 100.0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


QUOTA_FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(Quota))


@dataclasses.dataclass(frozen=True)
class SlaTargets:
    uptime_percent: float
    avg_response_time_ms: float
    p99_response_time_ms: float


@dataclasses.dataclass(frozen=True)
class Tier:
    name: str  # lowercase, as REST spells it
    quota: Quota
    priority: Priority  # default priority of a new tenant
    cpu_shares: int  # scheduler weight at MEDIUM priority
    cpu_min_percent: int  # guaranteed CPU at the default quota, percent of one core
    requests_per_hour: int  # API rate limit (token bucket refill)
    burst: int  # API rate limit (bucket size)
    sla: SlaTargets


def _tier(name, cpu, mem, storage, iops, net, conns, priority, shares, cpu_min, rph, burst, uptime, avg_ms, p99_ms) -> Tier:
    return Tier(
        name=name,
        quota=Quota(cpu, mem, storage, iops, net, conns),
        priority=priority,
        cpu_shares=shares,
        cpu_min_percent=cpu_min,
        requests_per_hour=rph,
        burst=burst,
        sla=SlaTargets(uptime, avg_ms, p99_ms),
    )


#            name        cpu%  MiB    GiB  iops   Mbps  conns prio               shares min%  req/h   burst uptime  avg  p99 (ms)
TIERS: Mapping[str, Tier] = MappingProxyType({t.name: t for t in (
    _tier("bronze",    100,  2048,   50,  1000,  100,   50, Priority.LOW,       256,   2,   1000,   50, 99.0,  100.0, 500.0),
    _tier("silver",    200,  4096,  100,  3000,  250,  100, Priority.MEDIUM,    512,   5,   5000,  100, 99.5,   50.0, 250.0),
    _tier("gold",      400,  8192,  250, 10000,  500,  250, Priority.HIGH,     1024,  10,  25000,  250, 99.9,   20.0, 100.0),
    _tier("platinum",  800, 16384,  500, 25000, 1000,  500, Priority.CRITICAL, 2048,  20, 100000,  500, 99.99,  10.0,  50.0),
)})

TIER_NAMES: tuple[str, ...] = tuple(TIERS)
PRIORITY_NAMES: tuple[str, ...] = tuple(p.value for p in Priority)


def cpu_shares(tier: str, priority: Priority | str) -> int:
    """The tenant's scheduler weight: the tier's shares scaled by priority."""
    return max(1, round(TIERS[tier].cpu_shares * PRIORITY_SHARE_FACTOR[Priority(priority)]))


def guaranteed_cpu_percent(tier: str, cpu_percent: int) -> int:
    """CPU a tenant is guaranteed: the tier's minimum, scaled with its CPU quota.

    A silver tenant at its default 200 % ceiling is guaranteed 5 %; raising
    its ceiling to 400 % doubles the guarantee. Never above the ceiling.
    """
    spec = TIERS[tier]
    scaled = spec.cpu_min_percent * cpu_percent / spec.quota.cpu_percent
    return min(cpu_percent, max(1, round(scaled)))


def markdown_table() -> str:
    """docs/api.md's tier table (`python -m rustymt.model.tiers`)."""
    lines = [
        "| tier | cpu_percent | memory_mb | storage_gb | iops | network_mbps | max_connections | priority | cpu shares at medium | guaranteed cpu % | requests/hour | burst | SLA uptime % | SLA avg / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tier in TIERS.values():
        q = tier.quota
        lines.append(f"| {tier.name} | {q.cpu_percent} | {q.memory_mb} | {q.storage_gb} | {q.iops} | {q.network_mbps} | "
                     f"{q.max_connections} | {tier.priority.value} | {tier.cpu_shares} | {tier.cpu_min_percent} | "
                     f"{tier.requests_per_hour} | {tier.burst} | {tier.sla.uptime_percent} | "
                     f"{tier.sla.avg_response_time_ms:g} / {tier.sla.p99_response_time_ms:g} |")
    lines += ["", "| priority | CPU share factor |", "|---|---|"]
    lines += [f"| {priority.value} | {factor:g} |" for priority, factor in PRIORITY_SHARE_FACTOR.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
