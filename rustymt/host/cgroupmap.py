"""Quota -> cgroup files, for cgroup v2 and v1. Pure: no filesystem access.

Following containerd/cgroups, each controller maps its typed limit to a list
of (file, value) pairs and one writer (cgroupfs.py) applies them. The lists
are complete: a limit that is unset maps to the file's "unlimited" value, so
applying a mapping both sets and clears, and reconcile can compare every file
it names against what the kernel reports (`same_value`).

Conventions (documented in docs/host.md):

* cpu_percent is a cap in percent of one CPU (200 = two cores): quota =
  cpu_percent/100 * period with a 100 ms period. The kernel refuses quotas
  under 1 ms, so caps below 1 % become 1 %.
* cpu_shares is on the v1 scale (2..262144, default 1024). v2 cpu.weight
  (1..10000, default 100) uses systemd's conversion w = s * 100 / 1024 (so
  1024 <-> 100 and ratios are kept), clamped; the old runc formula
  1 + (s - 2) * 9999 / 262142 maps 1024 to 39 and breaks the default, so it
  is not used.
* memory_mb sets memory.max; v2 also gets memory.high at 90 % of it, so the
  group is throttled and reclaimed before the OOM killer fires. v1 has no
  high watermark; memory.limit_in_bytes is the hard limit.
* iops applies to reads and writes each (riops / wiops, or
  read_iops_device / write_iops_device); read_bps / write_bps likewise.
  Throttles name the whole disk (blockdev.py). v1 throttles direct IO only:
  buffered writeback is not charged to the writer's cgroup.
* pids_max caps tasks (processes and threads).
* The order of the list is the safe write order for one group: memory.high
  before memory.max (lowering max while high is still above it would jump
  straight to OOM), cfs_period before cfs_quota.
"""
from __future__ import annotations

import dataclasses

CPU_PERIOD_US = 100_000
CPU_QUOTA_MIN_US = 1_000
SHARES_MIN, SHARES_MAX, SHARES_DEFAULT = 2, 262_144, 1024
WEIGHT_MIN, WEIGHT_MAX, WEIGHT_DEFAULT = 1, 10_000, 100
MEMORY_HIGH_FRACTION = 0.9
PAGE_SIZE = 4096
# v1 reports "no limit" as the largest page-aligned signed 64-bit value.
V1_UNLIMITED_BYTES = 0x7FFFFFFFFFFFF000

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "blkio", "pids", "freezer")
V2_CONTROLLERS = ("cpu", "cpuset", "memory", "io", "pids")


@dataclasses.dataclass(frozen=True)
class HostQuota:
    """What the host enforces for one cgroup; None = unlimited / default."""

    cpu_percent: float | None = None   # cap, percent of one CPU
    cpu_shares: int | None = None      # relative weight, v1 scale
    memory_mb: int | None = None
    iops: int | None = None            # read and write each
    read_bps: int | None = None
    write_bps: int | None = None
    pids_max: int | None = None
    cpuset_cpus: str | None = None     # e.g. "0" or "0-1"; None = inherit
    network_mbps: float | None = None  # enforced by tc.py, not cgroups

    def __post_init__(self):
        for name in ("cpu_percent", "memory_mb", "iops", "read_bps", "write_bps", "pids_max", "network_mbps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        if self.cpu_shares is not None and not SHARES_MIN <= self.cpu_shares <= SHARES_MAX:
            raise ValueError(f"cpu_shares must be within [{SHARES_MIN}, {SHARES_MAX}], got {self.cpu_shares}")

    @classmethod
    def from_quota(cls, quota: dict, cpu_shares: int | None = None, pids_max: int | None = None) -> "HostQuota":
        """From the spec's quota object (cpu_percent, memory_mb, iops, network_mbps)."""
        return cls(
            cpu_percent=quota.get("cpu_percent") or None,
            cpu_shares=cpu_shares,
            memory_mb=quota.get("memory_mb") or None,
            iops=quota.get("iops") or None,
            network_mbps=quota.get("network_mbps") or None,
            pids_max=pids_max,
        )


# ---- conversions


def shares_to_weight(shares: int) -> int:
    """systemd's mapping: 1024 shares <-> weight 100, proportional, clamped."""
    return max(WEIGHT_MIN, min(WEIGHT_MAX, round(shares * WEIGHT_DEFAULT / SHARES_DEFAULT)))


def weight_to_shares(weight: int) -> int:
    return max(SHARES_MIN, min(SHARES_MAX, round(weight * SHARES_DEFAULT / WEIGHT_DEFAULT)))


def cpu_quota_us(cpu_percent: float, period_us: int = CPU_PERIOD_US) -> int:
    return max(CPU_QUOTA_MIN_US, round(cpu_percent * period_us / 100))


def memory_bytes(memory_mb: int) -> int:
    return memory_mb * 1024 * 1024


def memory_high_bytes(memory_mb: int) -> int:
    return int(memory_bytes(memory_mb) * MEMORY_HIGH_FRACTION) // PAGE_SIZE * PAGE_SIZE


# ---- v2


def v2_writes(quota: HostQuota, device: str | None = None) -> list[tuple[str, str]]:
    """[(file, value)] for one cgroup v2 directory; `device` is the throttled
    disk's MAJ:MIN (io.max is skipped without one)."""
    writes: list[tuple[str, str]] = []
    if quota.cpuset_cpus is not None:
        writes.append(("cpuset.cpus", quota.cpuset_cpus))
    quota_value = "max" if quota.cpu_percent is None else str(cpu_quota_us(quota.cpu_percent))
    writes.append(("cpu.max", f"{quota_value} {CPU_PERIOD_US}"))
    shares = SHARES_DEFAULT if quota.cpu_shares is None else quota.cpu_shares
    writes.append(("cpu.weight", str(shares_to_weight(shares))))
    if quota.memory_mb is None:
        writes += [("memory.high", "max"), ("memory.max", "max")]
    else:
        writes += [("memory.high", str(memory_high_bytes(quota.memory_mb))), ("memory.max", str(memory_bytes(quota.memory_mb)))]
    if device is not None:
        def limit(value):
            return "max" if value is None else str(value)
        writes.append(("io.max", f"{device} rbps={limit(quota.read_bps)} wbps={limit(quota.write_bps)} "
                                 f"riops={limit(quota.iops)} wiops={limit(quota.iops)}"))
    writes.append(("pids.max", "max" if quota.pids_max is None else str(quota.pids_max)))
    return writes


def v2_freeze(frozen: bool) -> list[tuple[str, str]]:
    return [("cgroup.freeze", "1" if frozen else "0")]


# ---- v1


def v1_writes(quota: HostQuota, device: str | None = None) -> list[tuple[str, str]]:
    """[(file, value)] for one group; the file's prefix names the hierarchy
    (cpu., memory., blkio., pids., cpuset.) it is written under."""
    writes: list[tuple[str, str]] = []
    if quota.cpuset_cpus is not None:
        writes.append(("cpuset.cpus", quota.cpuset_cpus))
    writes.append(("cpu.cfs_period_us", str(CPU_PERIOD_US)))
    writes.append(("cpu.cfs_quota_us", "-1" if quota.cpu_percent is None else str(cpu_quota_us(quota.cpu_percent))))
    writes.append(("cpu.shares", str(SHARES_DEFAULT if quota.cpu_shares is None else quota.cpu_shares)))
    writes.append(("memory.limit_in_bytes", "-1" if quota.memory_mb is None else str(memory_bytes(quota.memory_mb))))
    if device is not None:
        # 0 removes a device's rule in v1.
        for file, value in (("read_iops_device", quota.iops), ("write_iops_device", quota.iops),
                            ("read_bps_device", quota.read_bps), ("write_bps_device", quota.write_bps)):
            writes.append((f"blkio.throttle.{file}", f"{device} {value or 0}"))
    writes.append(("pids.max", "max" if quota.pids_max is None else str(quota.pids_max)))
    return writes


def v1_freeze(frozen: bool) -> list[tuple[str, str]]:
    return [("freezer.state", "FROZEN" if frozen else "THAWED")]


def controller_of(file: str) -> str:
    """The controller (and v1 hierarchy) a cgroup file belongs to."""
    return file.split(".", 1)[0]


def writes_for(version: int, quota: HostQuota, device: str | None = None) -> list[tuple[str, str]]:
    return v2_writes(quota, device) if version == 2 else v1_writes(quota, device)


def freeze_writes(version: int, frozen: bool) -> list[tuple[str, str]]:
    return v2_freeze(frozen) if version == 2 else v1_freeze(frozen)


# ---- read-back comparison: the kernel normalises some values on write


def _bytes_or_unlimited(text: str) -> int | None:
    text = text.strip()
    if text in ("max", "-1"):
        return None
    number = int(text)
    return None if number >= V1_UNLIMITED_BYTES else number // PAGE_SIZE * PAGE_SIZE


def _device_lines(text: str) -> dict[str, str]:
    rules = {}
    for line in text.splitlines():
        device, _, rest = line.strip().partition(" ")
        if device:
            rules[device] = rest.strip()
    return rules


def _io_max_fields(rest: str) -> dict[str, str]:
    fields = {"rbps": "max", "wbps": "max", "riops": "max", "wiops": "max"}
    fields.update(item.split("=", 1) for item in rest.split() if "=" in item)
    return fields


def same_value(file: str, wanted: str, actual: str) -> bool:
    """Whether the kernel's `actual` content of `file` already says `wanted`."""
    if file in ("memory.max", "memory.high", "memory.limit_in_bytes"):
        return _bytes_or_unlimited(wanted) == _bytes_or_unlimited(actual)
    if file.startswith("blkio.throttle."):
        device, _, value = wanted.partition(" ")
        return int(_device_lines(actual).get(device, "0")) == int(value)
    if file == "io.max":
        device, _, rest = wanted.partition(" ")
        return _io_max_fields(rest) == _io_max_fields(_device_lines(actual).get(device, ""))
    if file == "cpuset.cpus":
        return _cpu_list(wanted) == _cpu_list(actual)
    return wanted.split() == actual.split()


def _cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus
