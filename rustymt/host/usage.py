"""Per-group usage read from cgroupfs (v2 or v1) plus psutil for the processes.

One snapshot per call; rates (cpu percent, iops) come from two snapshots:
`cpu_percent(before, after)`, `iops(before, after)`. Missing files (a
controller that is not mounted, an older kernel without memory.peak) leave
the field None rather than guessing.

    field            v2                           v1
    cpu_usage_ns     cpu.stat usage_usec*1000     cpuacct.usage
    throttled_ns     cpu.stat throttled_usec*1000 cpu.stat throttled_time
    nr_throttled     cpu.stat nr_throttled        cpu.stat nr_throttled
    memory_bytes     memory.current               memory.usage_in_bytes
    memory_peak      memory.peak                  memory.max_usage_in_bytes
    oom_kills        memory.events oom_kill       memory.oom_control oom_kill
    read/write ios   io.stat rios/wios            blkio.throttle.io_serviced
    read/write bytes io.stat rbytes/wbytes        blkio.throttle.io_service_bytes
    pids             pids.current                 pids.current
"""
from __future__ import annotations

import dataclasses
import time

import psutil

from rustymt.host.cgroupfs import CgroupTree


@dataclasses.dataclass
class GroupUsage:
    at: float                       # time.monotonic() of the snapshot
    cpu_usage_ns: int | None = None
    throttled_ns: int | None = None
    nr_throttled: int | None = None
    memory_bytes: int | None = None
    memory_peak_bytes: int | None = None
    oom_kills: int | None = None
    read_ios: int | None = None
    write_ios: int | None = None
    read_bytes: int | None = None
    write_bytes: int | None = None
    pids: int | None = None
    processes: int = 0
    rss_bytes: int = 0              # psutil: resident memory of the group's processes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _keyed(text: str) -> dict[str, int]:
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def _try(tree: CgroupTree, rel: str, file: str) -> str | None:
    try:
        return tree.read(rel, file)
    except OSError:
        return None


def _v1_blkio_totals(text: str) -> tuple[int, int]:
    """Sum Read / Write over the devices of blkio.throttle.io_service*."""
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            read += int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            write += int(parts[2])
    return read, write


def _v2_io_totals(text: str) -> dict[str, int]:
    totals = {"rbytes": 0, "wbytes": 0, "rios": 0, "wios": 0}
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key in totals:
                totals[key] += int(value)
    return totals


# memory usage, peak, and the file with the oom_kill counter, per version
MEMORY_FILES = {
    2: ("memory.current", "memory.peak", "memory.events"),
    1: ("memory.usage_in_bytes", "memory.max_usage_in_bytes", "memory.oom_control"),
}


def _int(tree: CgroupTree, rel: str, file: str) -> int | None:
    text = _try(tree, rel, file)
    return int(text) if text else None


def group_usage(tree: CgroupTree, rel: str) -> GroupUsage:
    usage = GroupUsage(at=time.monotonic())
    cpu = _keyed(_try(tree, rel, "cpu.stat") or "")
    usage.nr_throttled = cpu.get("nr_throttled")
    if tree.version == 2:
        if "usage_usec" in cpu:
            usage.cpu_usage_ns = cpu["usage_usec"] * 1000
        if "throttled_usec" in cpu:
            usage.throttled_ns = cpu["throttled_usec"] * 1000
        io = _try(tree, rel, "io.stat")
        if io is not None:
            totals = _v2_io_totals(io)
            usage.read_ios, usage.write_ios = totals["rios"], totals["wios"]
            usage.read_bytes, usage.write_bytes = totals["rbytes"], totals["wbytes"]
    else:
        usage.cpu_usage_ns = _int(tree, rel, "cpuacct.usage")
        usage.throttled_ns = cpu.get("throttled_time")
        serviced = _try(tree, rel, "blkio.throttle.io_serviced")
        if serviced is not None:
            usage.read_ios, usage.write_ios = _v1_blkio_totals(serviced)
        service_bytes = _try(tree, rel, "blkio.throttle.io_service_bytes")
        if service_bytes is not None:
            usage.read_bytes, usage.write_bytes = _v1_blkio_totals(service_bytes)
    current, peak, events = MEMORY_FILES[tree.version]
    usage.memory_bytes = _int(tree, rel, current)
    usage.memory_peak_bytes = _int(tree, rel, peak)
    usage.oom_kills = _keyed(_try(tree, rel, events) or "").get("oom_kill")
    usage.pids = _int(tree, rel, "pids.current")
    for pid in tree.procs(rel):
        try:
            usage.rss_bytes += psutil.Process(pid).memory_info().rss
            usage.processes += 1
        except psutil.Error:
            continue  # exited between listing and reading
    return usage


def cpu_percent(before: GroupUsage, after: GroupUsage) -> float | None:
    """CPU used between two snapshots, percent of one CPU (200 = two cores)."""
    if before.cpu_usage_ns is None or after.cpu_usage_ns is None or after.at <= before.at:
        return None
    return (after.cpu_usage_ns - before.cpu_usage_ns) / ((after.at - before.at) * 1e9) * 100


def iops(before: GroupUsage, after: GroupUsage) -> float | None:
    if None in (before.read_ios, after.read_ios, before.write_ios, after.write_ios) or after.at <= before.at:
        return None
    return ((after.read_ios - before.read_ios) + (after.write_ios - before.write_ios)) / (after.at - before.at)
