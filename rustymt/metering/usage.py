"""Where metering, SLA and /metrics get a tenant's usage from: one function.

    class UsageSource(Protocol):
        def sample(self, tenant_id) -> dict | None | Awaitable[dict | None]

The answer is the engine instance's `stats` block for the tenant
(docs/control-protocol.md: memory, cpu, io, buffer_pool, network, sessions,
statements, storage_bytes, listening, pdbs) optionally with
`statement_stats` (rustymt.sla.statements.StatementStats.snapshot()) and
`available` (bool: the tenant's PDB is open and its port accepting; derived
from `listening` and `pdbs` when absent). An instance that is down answers
{"available": False}. None means nothing measures the tenant (no engine):
its usage is unknown, not zero, and its minutes count neither up nor down.

Counters (cpu ns, io ops, network bytes, statements, errors) are cumulative
since the instance started; Usage.delta() turns two samples into what
happened between them and treats a counter that went backwards as a restart
(the new value is then the delta).

FleetUsageSource is the daemon's: the engine instances' stats. ServiceUsageSource
is the fallback without engine instances (in-process apps): it reads the service
layer's resources() answer and answers None while that says "not measured".
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Protocol

from rustymt.service.authz import ROLE_PERMISSIONS, Principal
from rustymt.sla.sketch import LatencySketch

# The daemon's own identity when it reads usage through the service layer.
SYSTEM_PRINCIPAL = Principal("rustymtd", "rustymtd", ("cdb_admin",), None, ROLE_PERMISSIONS["cdb_admin"])


class UsageSource(Protocol):
    def sample(self, tenant_id: str) -> Any: ...


async def sample_of(source: UsageSource, tenant_id: str) -> dict | None:
    answer = source.sample(tenant_id)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer


class ServiceUsageSource:
    """Usage from services.tenants.resources(); None while it reports "not measured"."""

    def __init__(self, services: Any):
        self.services = services

    async def sample(self, tenant_id: str) -> dict | None:
        answer = await self.services.tenants.resources(SYSTEM_PRINCIPAL, tenant_id)
        usage = answer["current_usage"]
        if usage.get("source"):
            return None  # the service layer says nothing measures this tenant
        return {
            "memory": {"allocated_bytes": int(usage["memory_mb"]) << 20},
            "storage_bytes": int(usage["storage_gb"]) << 30,
            "sessions": int(usage["active_connections"]),
        }


class FleetUsageSource:
    """Usage from the engine instances (rustymt.service.fleet.Fleet.stats): the daemon's real source.

    The fleet answers None while the tenant's instance is down or has not
    attached it: that is the platform being unavailable, so {"available": False}.
    """

    def __init__(self, fleet: Any):
        self.fleet = fleet

    async def sample(self, tenant_id: str) -> dict | None:
        stats = await self.fleet.stats(tenant_id)
        return {"available": False} if stats is None else stats


# Refusals by the tenant's own quota (StatementStats.quota_rejections): SQLSTATE -> (Usage counter, quota resource).
QUOTA_REJECTIONS = {"53200": ("memory_rejections", "memory"), "53300": ("connection_rejections", "connections"),
                    "53400": ("limit_rejections", "limits")}
COUNTERS = ("cpu_ns", "wait_ns", "cpu_throttled_ns", "io_throttled_ns", "reads", "writes", "bytes_in", "bytes_out",
            "statements", "server_errors", "buffer_hits", "buffer_misses",
            *(counter for counter, _resource in QUOTA_REJECTIONS.values()))


@dataclasses.dataclass
class Usage:
    """One sample, flattened: cumulative counters plus current gauges."""

    available: bool | None
    memory_bytes: int = 0
    memory_peak_bytes: int = 0
    storage_bytes: int = 0
    sessions: int = 0
    cpu_ns: int = 0
    wait_ns: int = 0  # queued behind other tenants (the platform's contention)
    cpu_throttled_ns: int = 0  # held at the tenant's own max_percent
    io_throttled_ns: int = 0  # held at the tenant's own iops cap
    reads: int = 0
    writes: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    statements: int = 0
    server_errors: int = 0
    buffer_hits: int = 0
    buffer_misses: int = 0
    memory_rejections: int = 0      # statements refused by the memory quota (53200)
    connection_rejections: int = 0  # connections refused at max_connections (53300)
    limit_rejections: int = 0       # statements over a configured limit (53400)
    latency_ms: LatencySketch | None = None

    @classmethod
    def from_stats(cls, stats: dict | None) -> "Usage":
        if stats is None:
            return cls(available=None)
        get = lambda block, key: int((stats.get(block) or {}).get(key) or 0)  # noqa: E731
        available = stats.get("available")
        if available is None and "listening" in stats:
            pdbs = stats.get("pdbs") or {}
            available = bool(stats["listening"]) and any(p.get("open_mode") for p in pdbs.values())
        statement_stats = stats.get("statement_stats") or {}
        sketch = statement_stats.get("latency_ms")
        rejections = statement_stats.get("quota_rejections") or {}
        return cls(
            available=available,
            memory_bytes=get("memory", "allocated_bytes"),
            memory_peak_bytes=get("memory", "peak_usage_bytes"),
            storage_bytes=int(stats.get("storage_bytes") or 0),
            sessions=int(stats.get("sessions") or 0),
            cpu_ns=get("cpu", "used_cpu_ns"), wait_ns=get("cpu", "wait_ns"), cpu_throttled_ns=get("cpu", "throttled_ns"),
            io_throttled_ns=get("io", "throttled_ns"), reads=get("io", "reads"), writes=get("io", "writes"),
            bytes_in=get("network", "bytes_in"), bytes_out=get("network", "bytes_out"),
            statements=int(stats.get("statements") or statement_stats.get("statements") or 0),
            server_errors=int(statement_stats.get("server_errors") or 0),
            buffer_hits=get("buffer_pool", "hits"), buffer_misses=get("buffer_pool", "misses"),
            latency_ms=LatencySketch.from_dict(sketch) if sketch else None,
            **{counter: int(rejections.get(sqlstate) or 0) for sqlstate, (counter, _) in QUOTA_REJECTIONS.items()},
        )

    def delta(self, earlier: "Usage | None") -> "Usage":
        """Counters since `earlier`; gauges as now. A counter that went back = restart."""
        changes = {}
        for name in COUNTERS:
            now, before = getattr(self, name), getattr(earlier, name) if earlier else 0
            changes[name] = now - before if now >= before else now
        latency = self.latency_ms
        if latency is not None and earlier is not None and earlier.latency_ms is not None:
            latency = latency.subtract(earlier.latency_ms) or latency
        return dataclasses.replace(self, latency_ms=latency, **changes)

    @property
    def buffer_hit_ratio(self) -> float:
        total = self.buffer_hits + self.buffer_misses
        return self.buffer_hits / total if total else 0.0
