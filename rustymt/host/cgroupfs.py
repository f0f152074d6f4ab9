"""The one writer of cgroupfs: create groups, write mapped values, place,
freeze, kill and remove — for cgroup v2 (one mount) and v1 (one hierarchy
per controller).

Layout under the root rustymt owns (`host.cgroup_root`):

    <root>/supervisor        the daemon itself (v2 "no internal processes")
    <root>/shared            the shared engine instance
    <root>/tenants/<id>      one dedicated tenant's instance

On v1 the same relative tree exists under every controller hierarchy that is
mounted. A tree object only ever touches paths under its root; every group
name is checked so a tenant id cannot climb out (`..`, `/`).

Safe write order (`apply`):
1. Values are written in the mapping's order (memory.high before memory.max,
   period before quota).
2. EBUSY/EAGAIN are retried with a short backoff: v1 returns EBUSY while it
   reclaims towards a new memory limit below usage; if usage stays above the
   limit, the write is reported as failed (memory below usage) and reconcile
   tries again next cycle — no task is killed for it. v2 would reclaim and
   then OOM-kill instead, so there memory.high goes first and memory.max
   waits for usage to drop under it (same report when it does not).
3. EINVAL on a v1 cfs quota means a parent/child constraint (a child's quota
   may not exceed its parent's): `apply_many` takes groups parents first and
   retries such writes after the rest, children first — parent-first when
   raising, child-first when lowering, without knowing which it is.
4. Nothing is written that already reads back the same (`same_value`), so a
   reconcile pass over correct state is read-only.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import re
import signal
import time

from rustymt.host import cgroupmap

GROUP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
RETRY_ERRNOS = (errno.EBUSY, errno.EAGAIN, errno.EINTR)
CPU_BANDWIDTH_FILES = ("cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.max")


class CgroupError(OSError):
    pass


@dataclasses.dataclass
class WriteOutcome:
    group: str
    file: str
    value: str
    previous: str | None      # content before the write (None: file missing)
    changed: bool
    error: str | None = None  # why it could not be applied


def check_group(rel: str) -> str:
    """Validate a relative group path like 'tenants/t_1'."""
    parts = [part for part in rel.split("/") if part]
    if not parts or not all(GROUP_NAME.match(part) for part in parts):
        raise ValueError(f"invalid cgroup name {rel!r}")
    return "/".join(parts)


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def _write(path: str, value: str) -> None:
    # One write() per value: cgroupfs parses each write call as a whole.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


class CgroupTree:
    """Shared logic; subclasses say where a (group, file) lives."""

    version: int

    def __init__(self, root: str):
        # the root comes from config or /proc/self/cgroup (systemd names such
        # as user@1000.service allowed); tenant groups below it are stricter
        parts = [part for part in root.split("/") if part]
        if any(part in (".", "..") or "\0" in part for part in parts):
            raise ValueError(f"invalid cgroup root {root!r}")
        self.root = "/" + "/".join(parts)

    # -- to be provided by v1 / v2
    def group_dirs(self, rel: str) -> list[str]:
        raise NotImplementedError

    def file_path(self, rel: str, file: str) -> str:
        raise NotImplementedError

    def _create(self, rel: str) -> bool:
        raise NotImplementedError

    # -- paths
    def _sub(self, mount: str, rel: str) -> str:
        base = mount + ("" if self.root == "/" else self.root)
        return f"{base}/{check_group(rel)}" if rel else base

    def exists(self, rel: str) -> bool:
        return all(os.path.isdir(path) for path in self.group_dirs(rel))

    def children(self, rel: str) -> list[str]:
        """Subgroup names of `rel` (in any hierarchy, on v1)."""
        names: set[str] = set()
        for base in self.group_dirs(rel):
            try:
                names.update(name for name in os.listdir(base) if os.path.isdir(os.path.join(base, name)))
            except FileNotFoundError:
                pass
        return sorted(names)

    def read(self, rel: str, file: str) -> str:
        return _read(self.file_path(rel, file))

    def ensure(self, rel: str, delegate: bool = True) -> bool:
        """Create `rel` and its parents below the root, parents first; True
        if anything was created. Only the groups above `rel` get controllers
        delegated to their children: `rel` itself is a leaf for processes.
        delegate=False only makes the directories — for moving processes out
        of the root first (v2 refuses subtree controllers on a group that
        still holds processes)."""
        parts = check_group(rel).split("/")
        chain = [""] + ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
        created = False
        for index, group in enumerate(chain):
            if group or self.root != "/":
                created |= self._create(group)
            if delegate and index < len(chain) - 1:
                self._delegate_down(group)
        return created

    def _delegate_down(self, rel: str) -> None:
        """v2: enable controllers for `rel`'s children; v1 has nothing to do."""

    # -- values
    def apply(self, rel: str, writes: list[tuple[str, str]], busy_timeout: float = 1.0) -> list[WriteOutcome]:
        return self.apply_many([(rel, writes)], busy_timeout)

    def apply_many(self, items: list[tuple[str, list[tuple[str, str]]]], busy_timeout: float = 1.0) -> list[WriteOutcome]:
        """Apply several groups' writes, given parents first. A CPU bandwidth
        write refused with EINVAL (v1: a child's quota may not exceed its
        parent's) is retried after everything else, children first — so
        raising works parent-first and lowering child-first."""
        outcomes: list[WriteOutcome] = []
        deferred: list[tuple[str, str, str]] = []
        for rel, writes in items:
            for file, value in writes:
                outcome = self._apply_one(rel, file, value, busy_timeout)
                if outcome.error and outcome.error.startswith("EINVAL") and file in CPU_BANDWIDTH_FILES:
                    deferred.append((rel, file, value))
                    continue
                outcomes.append(outcome)
        for rel, file, value in reversed(deferred):
            outcomes.append(self._apply_one(rel, file, value, busy_timeout))
        return outcomes

    def _apply_one(self, rel: str, file: str, value: str, busy_timeout: float) -> WriteOutcome:
        path = self.file_path(rel, file)
        try:
            previous = _read(path).strip()
        except FileNotFoundError:
            return WriteOutcome(rel, file, value, None, False, f"ENOENT: {path} does not exist")
        if cgroupmap.same_value(file, value, previous):
            return WriteOutcome(rel, file, value, previous, False)
        deadline = time.monotonic() + busy_timeout
        refusal = self._refuse_before_write(rel, file, value, deadline)
        if refusal:
            return WriteOutcome(rel, file, value, previous, False, refusal)
        delay = 0.005
        while True:
            try:
                _write(path, value)
                return WriteOutcome(rel, file, value, previous, True)
            except OSError as exc:
                if exc.errno in RETRY_ERRNOS and time.monotonic() < deadline:
                    time.sleep(delay)  # backoff while the kernel reclaims / settles
                    delay = min(delay * 2, 0.1)
                    continue
                reason = f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
                if exc.errno == errno.EBUSY and file.startswith("memory."):
                    reason += " (memory usage is above the new limit)"
                return WriteOutcome(rel, file, value, previous, False, reason)

    def _refuse_before_write(self, rel: str, file: str, value: str, deadline: float) -> str | None:
        """A reason not to write yet (v2 memory.max below usage), else None."""
        return None

    def mismatches(self, rel: str, writes: list[tuple[str, str]]) -> list[tuple[str, str, str | None]]:
        """(file, wanted, actual) for every value that does not read back."""
        drift = []
        for file, value in writes:
            try:
                actual = self.read(rel, file).strip()
            except FileNotFoundError:
                actual = None
            if actual is None or not cgroupmap.same_value(file, value, actual):
                drift.append((file, value, actual))
        return drift

    # -- processes
    def procs(self, rel: str) -> list[int]:
        pids: set[int] = set()
        for directory in self.group_dirs(rel):
            try:
                pids.update(int(line) for line in _read(os.path.join(directory, "cgroup.procs")).split())
            except FileNotFoundError:
                pass
        return sorted(pids)

    def place(self, rel: str, pid: int) -> None:
        """Move a process (all its threads) into the group, in every hierarchy."""
        for directory in self.group_dirs(rel):
            _write(os.path.join(directory, "cgroup.procs"), str(pid))

    def freeze(self, rel: str, frozen: bool = True, timeout: float = 5.0) -> None:
        (file, value), = cgroupmap.freeze_writes(self.version, frozen)
        _write(self.file_path(rel, file), value)
        if frozen:
            self._wait(lambda: self.is_frozen(rel), timeout, f"{rel} to freeze")

    def is_frozen(self, rel: str) -> bool:
        raise NotImplementedError

    def kill(self, rel: str, timeout: float = 5.0) -> None:
        """SIGKILL every process in the group and wait until it is empty.
        Freeze first so nothing forks in between; a frozen v1 task only dies
        once thawed, hence freeze -> kill -> thaw."""
        self.freeze(rel, True, timeout)
        for pid in self.procs(rel):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.freeze(rel, False)
        self._wait(lambda: not self.procs(rel), timeout, f"{rel} to empty")

    def remove(self, rel: str, timeout: float = 5.0) -> bool:
        """Kill what is left and remove the group and its subgroups; False if
        it did not exist."""
        rel = check_group(rel)
        if not any(os.path.isdir(path) for path in self.group_dirs(rel)):
            return False
        for child in self.children(rel):
            self.remove(f"{rel}/{child}", timeout)
        if self.procs(rel):
            self.kill(rel, timeout)
        for directory in self.group_dirs(rel):
            self._rmdir(directory, timeout)
        return True

    def remove_root(self, timeout: float = 5.0) -> None:
        """Remove everything rustymt created, the root included (tests, uninstall)."""
        self.prune(root_too=True, timeout=timeout)

    def prune(self, keep: frozenset[str] = frozenset(), root_too: bool = False, timeout: float = 5.0) -> list[str]:
        """Remove the groups under the root depth-first (killing what is left
        in them), except those in `keep` (relative names, "" the root): the
        groups a live process must stay in, given with their ancestors. The
        root itself goes only with root_too. Returns the removed groups."""
        if root_too and self.root == "/":
            raise CgroupError(errno.EPERM, "refusing to remove the cgroup root")
        removed: list[str] = []

        def walk(rel: str) -> None:
            for child in self.children(rel):
                walk(f"{rel}/{child}" if rel else child)
            if rel in keep:
                return
            if rel and self.remove(rel, timeout):
                removed.append(rel)
            elif not rel and root_too and any(os.path.isdir(path) for path in self.group_dirs("")):
                for directory in self.group_dirs(""):
                    self._rmdir(directory, timeout)
                removed.append(rel)

        walk("")
        return removed

    @staticmethod
    def _rmdir(directory: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(directory)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                # a killed task lingers for a moment after cgroup.procs empties
                if exc.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                raise

    @staticmethod
    def _wait(condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise CgroupError(errno.ETIMEDOUT, f"timed out waiting for {what}")
            time.sleep(0.002)


class CgroupV2(CgroupTree):
    """cgroup v2: one directory per group, controllers enabled top-down."""

    version = 2

    def __init__(self, root: str = "/rustymt", mount: str = "/sys/fs/cgroup",
                 controllers: tuple[str, ...] = cgroupmap.V2_CONTROLLERS):
        super().__init__(root)
        self.mount = mount.rstrip("/")
        self.controllers = controllers

    def group_dirs(self, rel: str) -> list[str]:
        return [self._sub(self.mount, rel)]

    def file_path(self, rel: str, file: str) -> str:
        return os.path.join(self._sub(self.mount, rel), file)

    def _create(self, rel: str) -> bool:
        directory = self._sub(self.mount, rel)
        if os.path.isdir(directory):
            return False
        if rel == "":
            # the root's parent must hand the controllers down too; only done
            # when that parent is the mount's top (a delegated root's parent
            # belongs to systemd, which already did it)
            parent = os.path.dirname(directory)
            if parent == self.mount:
                self._enable_subtree(parent)
        os.mkdir(directory)
        return True

    def _delegate_down(self, rel: str) -> None:
        self._enable_subtree(self._sub(self.mount, rel))

    def _enable_subtree(self, directory: str) -> None:
        """Enable in `directory`'s cgroup.subtree_control what it offers of
        our controllers (a no-op when already enabled)."""
        available = _read(os.path.join(directory, "cgroup.controllers")).split()
        enabled = _read(os.path.join(directory, "cgroup.subtree_control")).split()
        missing = [name for name in self.controllers if name in available and name not in enabled]
        if missing:
            _write(os.path.join(directory, "cgroup.subtree_control"), " ".join("+" + name for name in missing))

    def _refuse_before_write(self, rel: str, file: str, value: str, deadline: float) -> str | None:
        """v2 answers memory.max below usage with reclaim and then the OOM
        killer; v1 answers EBUSY. rustymt keeps v1's meaning on v2: memory.high
        (written just before, lower) throttles and reclaims; memory.max is
        written once usage is under it, else reported and retried next pass."""
        if file != "memory.max" or value == "max":
            return None
        limit = int(value)
        while True:
            try:
                current = int(self.read(rel, "memory.current"))
            except (OSError, ValueError):
                return None
            if current <= limit:
                return None
            if time.monotonic() >= deadline:
                return f"EBUSY: memory usage {current} is above the new limit {limit} (memory.high set; not forcing an OOM kill)"
            time.sleep(0.01)  # reclaim under memory.high is under way

    def is_frozen(self, rel: str) -> bool:
        for line in self.read(rel, "cgroup.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "frozen":
                return value.strip() == "1"
        return False

    def kill(self, rel: str, timeout: float = 5.0) -> None:
        path = self.file_path(rel, "cgroup.kill")
        if not os.path.exists(path):  # kernels before 5.14
            return super().kill(rel, timeout)
        _write(path, "1")
        self._wait(lambda: not self.procs(rel), timeout, f"{rel} to empty")


class CgroupV1(CgroupTree):
    """cgroup v1: the same relative tree under each controller's hierarchy;
    a file goes to the hierarchy named by its prefix."""

    version = 1

    def __init__(self, root: str = "/rustymt", mounts: dict[str, str] | None = None):
        super().__init__(root)
        if mounts is None:
            from rustymt.host.capabilities import v1_mounts
            mounts = v1_mounts()
        self.mounts = {name: path.rstrip("/") for name, path in mounts.items() if name in cgroupmap.V1_CONTROLLERS}
        if not self.mounts:
            raise CgroupError(errno.ENOENT, "no cgroup v1 controller hierarchy is mounted")

    def hierarchies(self) -> list[str]:
        """Distinct mount points (co-mounted controllers share one)."""
        return sorted(set(self.mounts.values()))

    def group_dirs(self, rel: str) -> list[str]:
        return [self._sub(mount, rel) for mount in self.hierarchies()]

    def file_path(self, rel: str, file: str) -> str:
        controller = cgroupmap.controller_of(file)
        mount = self.mounts.get(controller, self.hierarchies()[0] if controller == "cgroup" else None)
        if mount is None:
            raise CgroupError(errno.ENOENT, f"controller {controller} is not mounted (for {file})")
        return os.path.join(self._sub(mount, rel), file)

    def _create(self, rel: str) -> bool:
        created = False
        for mount in self.hierarchies():
            directory = self._sub(mount, rel)
            if os.path.isdir(directory):
                continue
            os.mkdir(directory)
            created = True
            # a v1 cpuset group starts with no CPUs or memory nodes and refuses
            # tasks until they are set: inherit the parent's
            if os.path.exists(os.path.join(directory, "cpuset.cpus")):
                parent = os.path.dirname(directory)
                for file in ("cpuset.cpus", "cpuset.mems"):
                    if not _read(os.path.join(directory, file)).strip():
                        _write(os.path.join(directory, file), _read(os.path.join(parent, file)).strip() or "\n")
        return created

    def is_frozen(self, rel: str) -> bool:
        return self.read(rel, "freezer.state").strip() == "FROZEN"
