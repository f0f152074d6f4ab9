"""The whole block device behind a path, as the kernel's throttles want it.

io.max (cgroup v2) and blkio.throttle.* (v1) take a MAJ:MIN and only act on
the device that bios are submitted to at the top of the stack: a rule on a
partition is rejected (v2) or never matches (v1), so a partition is mapped to
its disk. Device-mapper and loop devices are their own top of the stack — the
tenant's bios reach dm-N / loopN first, and what the loop worker or dm target
later submits to the backing disk is not charged to the tenant — so they are
kept as they are. Filesystems without a block device (tmpfs, overlay, 9p,
NFS) have no device to throttle; `device_for_path` says so instead of
guessing.

All lookups go through sysfs (/sys/dev/block/MAJ:MIN), no udev needed.
"""
from __future__ import annotations

import dataclasses
import os

SYS_DEV_BLOCK = "/sys/dev/block"


@dataclasses.dataclass(frozen=True)
class BlockDevice:
    devno: str                 # "MAJ:MIN" of the device the throttle rule names
    name: str                  # kernel name: vda, loop0, dm-0, nvme0n1
    kind: str                  # disk | loop | dm | md | other
    partition: str | None      # the partition the path lives on, when it was one
    backing: tuple[str, ...]   # loop: backing file; dm/md: the slave devices


class NoBlockDevice(LookupError):
    """The path's filesystem has no block device (tmpfs, overlay, network fs)."""


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


def _mount_source_devno(st_dev: int) -> int | None:
    """For filesystems whose st_dev is anonymous (btrfs subvolumes), the mount
    source's device number from /proc/self/mountinfo."""
    wanted = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if fields[2] != wanted:
                continue
            source = fields[fields.index("-") + 2]
            if source.startswith("/dev/"):
                try:
                    return os.stat(source).st_rdev
                except OSError:
                    return None
    return None


def whole_disk(devno: str, sys_dev_block: str = SYS_DEV_BLOCK) -> BlockDevice:
    """Map MAJ:MIN (disk, partition, loop, dm) to the device a throttle names."""
    node = os.path.realpath(os.path.join(sys_dev_block, devno))
    if not os.path.isdir(node):
        raise NoBlockDevice(f"{devno} is not a block device in {sys_dev_block}")
    partition = None
    if os.path.exists(os.path.join(node, "partition")):
        partition = os.path.basename(node)
        node = os.path.dirname(node)
    name = os.path.basename(node)
    disk_devno = _read(os.path.join(node, "dev"))
    backing: tuple[str, ...] = ()
    if name.startswith("loop"):
        kind = "loop"
        backing_file = os.path.join(node, "loop", "backing_file")
        if os.path.exists(backing_file):
            backing = (_read(backing_file),)
    elif name.startswith(("dm-", "md")):
        kind = "dm" if name.startswith("dm-") else "md"
        slaves = os.path.join(node, "slaves")
        backing = tuple(sorted(os.listdir(slaves))) if os.path.isdir(slaves) else ()
    elif os.path.isdir(os.path.join(node, "device")) or os.path.exists(os.path.join(node, "queue")):
        kind = "disk"
    else:
        kind = "other"
    return BlockDevice(devno=disk_devno, name=name, kind=kind, partition=partition, backing=backing)


def device_for_path(path: str, sys_dev_block: str = SYS_DEV_BLOCK) -> BlockDevice:
    """The throttle device for the filesystem holding `path`."""
    st_dev = os.stat(path).st_dev
    if os.major(st_dev) == 0:
        source = _mount_source_devno(st_dev)
        if source is None:
            raise NoBlockDevice(f"{path} is on a filesystem without a block device (device {os.major(st_dev)}:{os.minor(st_dev)})")
        st_dev = source
    return whole_disk(f"{os.major(st_dev)}:{os.minor(st_dev)}", sys_dev_block)
