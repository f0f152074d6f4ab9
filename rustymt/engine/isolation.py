"""A tenant's quota vector -> the native core's per-slot settings, and back
out as measured figures.

The mapping is pure (`native_settings`, `reserve_minimums`) so it can be
tested without an engine; `apply` hands the result to the binding, which
takes effect at once for live sessions (the pool, the allocator and the
scheduler read their per-slot settings on every decision).

Buffer partition rule (documented in docs/engine.md):
  * pool frames are charged to the tenant's memory account, so the page cache
    may hold at most HALF the memory quota; the other half is left to
    statements (sorts, hash tables, result rows):
        max_frames = clamp(memory_bytes / 2 / frame_bytes, MIN_FRAMES, pool_frames)
    with frame_bytes = 4 KiB page + 256 bytes of SQLite's per-page header
    (no memory quota -> max_frames = pool_frames);
  * a quarter of that is reserved (other tenants' scans cannot steal below it):
        min_frames = max_frames / 4
  * reservations never exceed half the pool: when the attached tenants'
    minimums add up to more, every minimum is scaled down by the same factor.
"""
from __future__ import annotations

import dataclasses

from rustymt._native import _core

MIB = 1 << 20
PAGE_FRAME_BYTES = 4096 + 256  # a 4 KiB page (the PDBs' page size) + SQLite's per-page extra
MIN_FRAMES = 64            # ~16-32 frames per active connection (notes), a few sessions
RESERVED_SHARE = 0.5       # at most this share of the pool is reserved by minimums
DEFAULT_SHARES = 1024
_CPU_COUNTERS = ("used_cpu_ns", "throttled_ns", "wait_ns")


@dataclasses.dataclass(frozen=True)
class Quota:
    """The attach/set_quota argument (0 = unlimited for every limit)."""
    memory_mb: float = 0
    cpu_percent: int = 0          # cap, percent of one core (200 = two cores)
    cpu_min_percent: int = 0      # guarantee under contention
    cpu_shares: int = DEFAULT_SHARES
    iops: int = 0
    max_connections: int = 0
    storage_gb: float = 0

    @classmethod
    def from_args(cls, args: dict | None) -> "Quota":
        args = dict(args or {})
        unknown = set(args) - {f.name for f in dataclasses.fields(cls)} - {"network_mbps"}
        if unknown:
            raise ValueError(f"unknown quota fields: {', '.join(sorted(unknown))}")
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in args or args[field.name] is None:
                continue
            value = args[field.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"quota.{field.name} must be a number >= 0")
            values[field.name] = value if field.type == "float" else int(value)
        quota = cls(**values)
        if quota.cpu_shares < 1:
            raise ValueError("quota.cpu_shares must be >= 1")
        if quota.cpu_percent and quota.cpu_min_percent > quota.cpu_percent:
            raise ValueError("quota.cpu_min_percent must not exceed cpu_percent")
        return quota

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_mb * MIB)


@dataclasses.dataclass(frozen=True)
class NativeSettings:
    memory_quota_bytes: int
    max_frames: int
    min_frames: int
    shares: int
    min_percent: int
    max_percent: int
    iops: int


def native_settings(quota: Quota, pool_frames: int, frame_bytes: int) -> NativeSettings:
    if quota.memory_bytes:
        max_frames = int(quota.memory_bytes / 2 // frame_bytes)
        max_frames = max(MIN_FRAMES, min(max_frames, pool_frames))
    else:
        max_frames = pool_frames
    return NativeSettings(
        memory_quota_bytes=quota.memory_bytes, max_frames=max_frames, min_frames=max_frames // 4,
        shares=quota.cpu_shares, min_percent=quota.cpu_min_percent, max_percent=quota.cpu_percent,
        iops=quota.iops)


def reserve_minimums(wanted: dict[int, int], pool_frames: int) -> dict[int, int]:
    """Scale every slot's min_frames down alike so they fit RESERVED_SHARE of the pool."""
    budget = int(pool_frames * RESERVED_SHARE)
    total = sum(wanted.values())
    if total <= budget:
        return dict(wanted)
    return {slot: want * budget // total for slot, want in wanted.items()}


# ---- the native side


class NativeCore:
    """The binding's isolation knobs in one place: page pool partitions,
    allocator quotas, the CPU scheduler and the IO VFS."""

    def __init__(self, pool_frames: int):
        _core.install(pool_frames=pool_frames)
        _core.canary()
        self.pool_frames = _core.pool_info()["frames"]
        self.frame_bytes = PAGE_FRAME_BYTES
        # Every statement of every connection opened from here on runs under the
        # weighted-fair scheduler; datafiles go through the metering VFS.
        self.scheduler = _core.WfqScheduler(tokens=0)
        self.scheduler.install()
        self.vfs = _core.IOVFS_NAME
        self._wanted_min: dict[int, int] = {}
        self._max: dict[int, int] = {}
        # the scheduler has no counter reset: a reused slot's CPU counters start
        # from these offsets instead
        self._cpu_offsets: dict[int, dict[str, int]] = {}

    def apply(self, slot: int, quota: Quota) -> NativeSettings:
        settings = native_settings(quota, self.pool_frames, self.frame_bytes)
        _core.set_memory_quota(slot, settings.memory_quota_bytes)
        self._wanted_min[slot] = settings.min_frames
        self._max[slot] = settings.max_frames
        self._apply_partitions()
        self.scheduler.configure(slot, settings.shares, settings.min_percent, settings.max_percent)
        _core.iovfs_set_limits(slot, settings.iops, 0)
        return settings

    def release(self, slot: int) -> None:
        """A tenant left its slot: no reservation, no quota, no cap."""
        self._wanted_min.pop(slot, None)
        self._max.pop(slot, None)
        _core.set_partition(slot, 0, 0)
        _core.set_memory_quota(slot, 0)
        self._apply_partitions()
        self.scheduler.configure(slot, DEFAULT_SHARES, 0, 0)
        _core.iovfs_set_limits(slot, 0, 0)

    def reset_counters(self, slot: int) -> None:
        """A slot handed to a different tenant starts from zero (quotas are set again by apply)."""
        _core.reset_tenant_stats(slot)
        _core.iovfs_reset_stats(slot)
        s = self.scheduler.stats(slot)
        self._cpu_offsets[slot] = {key: s[key] for key in _CPU_COUNTERS}

    def _apply_partitions(self) -> None:
        for slot, min_frames in reserve_minimums(self._wanted_min, self.pool_frames).items():
            _core.set_partition(slot, min_frames, self._max[slot])

    # ---- measured figures

    def memory(self, slot: int) -> dict:
        stats = _core.memory_stats(slot)
        return {key: stats[key] for key in ("allocated_bytes", "quota_bytes", "peak_usage_bytes",
                                            "oom_count", "allocation_count", "deallocation_count")}

    def buffer_pool(self, slot: int) -> dict:
        s = _core.pool_stats(slot)
        return {"hits": s["hits"], "misses": s["misses"], "hit_ratio": round(s["hit_ratio"], 6),
                "resident": s["resident"], "min_frames": s["min"], "max_frames": s["max"],
                "evictions": s["evictions"], "frame_bytes": self.frame_bytes}

    def cpu(self, slot: int) -> dict:
        s = self.scheduler.stats(slot)
        offsets = self._cpu_offsets.get(slot, {})
        used, throttled, waited = (s[key] - offsets.get(key, 0) for key in _CPU_COUNTERS)
        return {"shares": s["shares"], "min_percent": s["min_percent"], "max_percent": s["max_percent"],
                "used_cpu_ns": used, "throttled_ns": throttled,
                "throttle_ratio": throttled / (throttled + used) if throttled + used else 0.0,
                "allocation_percent": s["allocation_percent"], "wait_ns": waited}

    def io(self, slot: int) -> dict:
        s = _core.iovfs_stats(slot)
        return {"reads": s["reads"], "writes": s["writes"], "bytes": s["read_bytes"] + s["write_bytes"],
                "read_bytes": s["read_bytes"], "write_bytes": s["write_bytes"],
                "throttled_ns": s["throttled_ns"], "iops_limit": s["iops_limit"]}
