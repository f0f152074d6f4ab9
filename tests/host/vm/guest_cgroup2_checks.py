"""Runs INSIDE the test VM (a pure cgroup v2 host): rustymt.host's v2 driver, for real.

Started by tests/host/vm/test_cgroup2_vm.py through run_in_vm. A plain script
rather than pytest: under TCG Python runs ~10x slower and `import pytest` ~20x,
so the guest does only the work and the kernel-counter reads, and writes them
to $RUSTYMT_VM_RESULTS/cgroup2.json; the host-side tests assert on them. One
check failing records its traceback and the others still run.

Everything goes through rustymt.host the way the daemon uses it: capability
detection, the pure v2 mapping (HostQuota -> [(file, value)]), the CgroupV2
writer (ensure / apply / place / freeze / kill / remove_root), the whole-disk
lookup, group usage and the reconcile loop. Each check makes its own group
under a test root, applies one limit, runs a workload inside the group, and
reads what the kernel counted: cpu.stat throttling and usage, memory.events
oom_kill, pids.events max and fork's EAGAIN, io.stat, and cgroup.events frozen.

    guest_cgroup2_checks.py [CHECK ...]     default: every check in CHECKS
"""
from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback

from rustymt.host import blockdev, capabilities, usage
from rustymt.host.cgroupfs import CgroupV2
from rustymt.host.cgroupmap import HostQuota, v2_writes
from rustymt.host.reconcile import DesiredState, Reconciler, TenantSpec

CGROUP_MOUNT = "/sys/fs/cgroup"
CONTROLLERS = ("cpu", "io", "memory", "pids")
DISK = "vda"  # the harness's raw disk (disk_mb); the guest gives it one partition

# What each check applies, and the knobs of its workload.
CPU_PERCENT = 20  # of one CPU
CPU_THROTTLED_PERIODS = 5  # periods to observe before stopping the burner
CPU_SHARES = (4096, 1024)  # v1 scale; the mapping converts to cpu.weight 400 : 100
# CPU the two competing burners use together. Under TCG the time the host
# takes the vCPU away is charged to whichever guest task was running, so short
# windows are noisy when the host is loaded.
CPU_WEIGHT_WINDOW_USEC = 2_000_000
MEMORY_MB = 32
MEMORY_ALLOCATION = 48 << 20  # > the limit, < the guest's RAM
BIG_FILE_ENV = "RUSTYMT_VM_BIG_FILE"  # a host file of SHRINK_PAGE_CACHE_MB or more (the test passes vmlinux)
SHRINK_ANON_MB = 16  # what a holder keeps that cannot be reclaimed (the guest has no swap)
SHRINK_PAGE_CACHE_MB = 40  # what it has read: reclaimable
SHRINK_RECLAIMABLE_MB = 32  # limit over the holder's anon memory: its page cache must go
SHRINK_UNRECLAIMABLE_MB = 8  # limit under the holder's anon memory: refused, nobody killed
PIDS_MAX = 4
PIDS_FORKS = 10
IOPS = 20
IO_WINDOW_SECONDS = 1.0  # each reader runs this long; the capped one should do ~IOPS ios
FROZEN_WINDOW_CPU_USEC = 200_000  # CPU a reference burner uses while the frozen group must use none
DEADLINE_SECONDS = 30.0

BURNER = ["sh", "-c", "while :; do :; done"]


# --- plumbing ---------------------------------------------------------------------


def flat_keyed(text: str) -> dict[str, int]:
    """cpu.stat, memory.events, pids.events, cgroup.events: "key value" lines."""
    return {key: int(value) for key, value in (line.split() for line in text.splitlines())}


def nested_keyed(text: str) -> dict[str, dict[str, int]]:
    """io.stat: "MAJ:MIN key=value ..." lines."""
    stats = {}
    for line in text.splitlines():
        device, *pairs = line.split()
        stats[device] = {key: int(value) for key, value in (pair.split("=", 1) for pair in pairs)}
    return stats


def read_first_line(path: str) -> str:
    with open(path) as handle:
        return handle.readline().strip()


def wait_for(condition, what: str, timeout: float = DEADLINE_SECONDS, interval: float = 0.01):
    # tests.conftest.wait_for's twin: importing that module pulls in pytest,
    # which costs seconds under TCG.
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # polling interval of a deadline-bounded wait


class Group:
    """One test group in the tree: created, limited through the v2 mapping, populated."""

    def __init__(self, tree: CgroupV2, name: str, quota: HostQuota, device: str | None = None):
        self.tree, self.name = tree, name
        tree.ensure(name)
        self.writes = v2_writes(quota, device)
        failed = [(o.file, o.value, o.error) for o in tree.apply(name, self.writes) if o.error]
        if failed:
            raise AssertionError(f"writer refused {failed}")

    def read(self, file: str) -> str:
        return self.tree.read(self.name, file)

    def counters(self, file: str) -> dict[str, int]:
        return flat_keyed(self.read(file))

    def written(self, file: str) -> str:
        """What the mapping wrote to `file`."""
        return dict(self.writes)[file]

    def spawn(self, argv: list[str]) -> subprocess.Popen:
        # preexec_fn runs in the child before exec, so the workload starts
        # inside the group; this script has no threads, which makes it safe.
        return subprocess.Popen(argv, preexec_fn=lambda: self.tree.place(self.name, os.getpid()),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def fork(self, work) -> int:
        """Fork a child that joins the group, runs work(), and exits with its result."""
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                self.tree.place(self.name, os.getpid())
                status = work()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        return pid

    def usage(self) -> dict:
        return usage.group_usage(self.tree, self.name).to_dict()


def stopped(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


# --- the checks -------------------------------------------------------------------


def check_capabilities(tree: CgroupV2) -> dict:
    caps = capabilities.detect(data_dir="/", probe_network=False)
    return {"layout": caps.layout, "version": caps.version, "v2_mount": caps.v2_mount,
            "v2_controllers": list(caps.v2_controllers),
            "usable": {name: caps.usable(name) for name in (*CONTROLLERS, "freezer", "kill")}}


def check_cpu_max(tree: CgroupV2) -> dict:
    group = Group(tree, "cpu", HostQuota(cpu_percent=CPU_PERCENT))
    burner = group.spawn(BURNER)
    try:
        wait_for(lambda: group.counters("cpu.stat")["nr_throttled"] >= CPU_THROTTLED_PERIODS,
                 "the burner to be throttled")
    finally:
        stopped(burner)
    stat = group.counters("cpu.stat")
    sampled = group.usage()
    tree.remove(group.name)
    return {"written": group.written("cpu.max"), **{key: stat[key] for key in
            ("nr_periods", "nr_throttled", "throttled_usec", "usage_usec")},
            "usage.nr_throttled": sampled["nr_throttled"], "usage.throttled_ns": sampled["throttled_ns"]}


def check_cpu_weight(tree: CgroupV2) -> dict:
    heavy, light = (Group(tree, f"weight-{shares}", HostQuota(cpu_shares=shares)) for shares in CPU_SHARES)
    cpu_usec = lambda g: g.counters("cpu.stat")["usage_usec"]  # noqa: E731
    # One vCPU: the two burners compete for it, and the scheduler splits it by weight.
    burners = [heavy.spawn(BURNER), light.spawn(BURNER)]
    try:
        wait_for(lambda: cpu_usec(heavy) + cpu_usec(light) >= CPU_WEIGHT_WINDOW_USEC, "the burners' CPU window",
                 interval=0.1)  # poll gently: the poller competes for the same CPU
    finally:
        for burner in burners:
            stopped(burner)
    result = {"weights": [heavy.written("cpu.weight"), light.written("cpu.weight")],
              "usage_usec": [cpu_usec(heavy), cpu_usec(light)]}
    tree.remove(heavy.name)
    tree.remove(light.name)
    return result


def check_memory_max(tree: CgroupV2) -> dict:
    group = Group(tree, "memory", HostQuota(memory_mb=MEMORY_MB))
    # dd's one read() from /dev/zero fills (faults in) its whole block buffer.
    hog = group.spawn(["dd", "if=/dev/zero", "of=/dev/null", f"bs={MEMORY_ALLOCATION}", "count=1"])
    _, stderr = hog.communicate(timeout=DEADLINE_SECONDS)
    events = group.counters("memory.events")
    sampled = group.usage()
    tree.remove(group.name)
    return {"memory.max": group.written("memory.max"), "memory.high": group.written("memory.high"),
            "returncode": hog.returncode, "oom": events["oom"], "oom_kill": events["oom_kill"],
            "high_events": events["high"], "max_events": events["max"],
            "usage.oom_kills": sampled["oom_kills"], "usage.memory_peak_bytes": sampled["memory_peak_bytes"],
            "stderr": stderr.decode(errors="replace")[-300:]}


def check_memory_max_below_usage(tree: CgroupV2) -> dict:
    """Lowering memory.max under what a group uses: v2 alone would reclaim and
    then OOM-kill; the writer sets memory.high first and writes memory.max only
    once usage is under it, else reports the write as refused."""
    group = Group(tree, "memory-shrink", HostQuota())
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()

    def hold_memory() -> int:
        os.close(ready_r)
        os.close(hold_w)
        # Page cache charged to the group: a large host file read over 9p
        # (cache=loose). Reads of /dev/vda are not charged as file pages.
        with open(os.environ[BIG_FILE_ENV], "rb") as big:
            for _ in range(SHRINK_PAGE_CACHE_MB):
                big.read(1 << 20)
        anon = b"\x01" * (SHRINK_ANON_MB << 20)  # written, so every page is resident
        os.write(ready_w, b"1")
        os.read(hold_r, 1)  # until the group is killed
        return len(anon) and 0

    holder = group.fork(hold_memory)
    os.close(ready_w)
    os.close(hold_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise AssertionError("the memory holder died before holding")
        current_before = int(group.read("memory.current"))
        reclaimable = {o.file: o.error for o in tree.apply(group.name, v2_writes(HostQuota(memory_mb=SHRINK_RECLAIMABLE_MB)))}
        after_reclaim = {"memory.current": int(group.read("memory.current")), "memory.max": group.read("memory.max").strip()}
        unreclaimable = {o.file: o.error for o in tree.apply(group.name, v2_writes(HostQuota(memory_mb=SHRINK_UNRECLAIMABLE_MB)))}
        after_refusal = {"memory.max": group.read("memory.max").strip(), "memory.high": group.read("memory.high").strip()}
        holder_alive = os.waitpid(holder, os.WNOHANG) == (0, 0)
        events = group.counters("memory.events")
    finally:
        tree.remove(group.name)  # cgroup.kill ends the holder
        os.waitpid(holder, 0)
        os.close(ready_r)
        os.close(hold_w)
    return {"current_before": current_before, "reclaimable_errors": reclaimable, "after_reclaim": after_reclaim,
            "unreclaimable_errors": unreclaimable, "after_refusal": after_refusal,
            "holder_alive": holder_alive, "oom_kill": events["oom_kill"]}


def check_pids_max(tree: CgroupV2) -> dict:
    group = Group(tree, "pids", HostQuota(pids_max=PIDS_MAX))
    report_r, report_w = os.pipe()
    release_r, release_w = os.pipe()

    def fork_many() -> int:
        # Runs in a child inside the group: the child itself is one of the pids.
        os.close(report_r)
        os.close(release_w)
        forked, refused, other = 0, 0, []
        for _ in range(PIDS_FORKS):
            try:
                pid = os.fork()
            except OSError as error:
                if error.errno == errno.EAGAIN:
                    refused += 1
                else:
                    other.append(errno.errorcode.get(error.errno, str(error.errno)))
                continue
            if pid == 0:
                os.close(report_w)  # or the parent's read of the report never sees EOF
                os.read(release_r, 1)  # hold the pid until released (EOF)
                os._exit(0)
            forked += 1
        os.write(report_w, json.dumps({"forked": forked, "eagain": refused, "other_errors": other}).encode())
        os.close(report_w)
        return 0

    child = group.fork(fork_many)
    os.close(report_w)
    os.close(release_r)
    with os.fdopen(report_r) as report:
        outcome = json.loads(report.read() or "{}")
    current_while_held = int(group.read("pids.current"))
    os.close(release_w)  # EOF releases the grandchildren
    _, status = os.waitpid(child, 0)
    events = group.counters("pids.events")
    tree.remove(group.name)
    return {"written": group.written("pids.max"), **outcome, "pids.current_while_held": current_while_held,
            "events_max": events["max"], "child_status": os.waitstatus_to_exitcode(status)}


BLKRRPART = 0x125F  # ioctl: re-read the partition table
SECTOR = 512


def partitioned_disk() -> tuple[str, blockdev.BlockDevice]:
    """Give the raw disk one MBR partition; (its device node, the disk a throttle names).

    Written by hand (one 16-byte entry + signature) so no partitioning tool is needed.
    """
    fd = os.open(f"/dev/{DISK}", os.O_RDWR)
    try:
        sectors = os.lseek(fd, 0, os.SEEK_END) // SECTOR
        first = 2048
        entry = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + first.to_bytes(4, "little") + (sectors - first).to_bytes(4, "little")
        os.pwrite(fd, entry + b"\0" * 48 + b"\x55\xaa", 446)
        os.fsync(fd)
        fcntl.ioctl(fd, BLKRRPART)
    finally:
        os.close(fd)
    partition = f"/dev/{DISK}1"
    wait_for(lambda: os.path.exists(partition), f"{partition} to appear")
    rdev = os.stat(partition).st_rdev
    return partition, blockdev.whole_disk(f"{os.major(rdev)}:{os.minor(rdev)}")


def direct_reader(device: str):
    def read_for_a_window() -> int:
        """Sequential 4 KiB O_DIRECT reads for IO_WINDOW_SECONDS."""
        buffer = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT requires
        fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
        size = os.lseek(fd, 0, os.SEEK_END)
        offset, stop = 0, time.monotonic() + IO_WINDOW_SECONDS
        while time.monotonic() < stop:
            os.preadv(fd, [buffer], offset)
            offset = (offset + 4096) % size
        os.close(fd)
        return 0
    return read_for_a_window


def reads_in(group: Group, device: str, disk: str) -> tuple[int, int | None]:
    """(rios io.stat counted on the disk, usage's read_ios) after one reader's window."""
    _, status = os.waitpid(group.fork(direct_reader(device)), 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise AssertionError(f"direct reader in {group.name} failed: {status}")
    rios = nested_keyed(group.read("io.stat")).get(disk, {}).get("rios", 0)
    return rios, group.usage()["read_ios"]


def check_io_max(tree: CgroupV2) -> dict:
    partition, disk = partitioned_disk()
    uncapped = Group(tree, "io-uncapped", HostQuota(), disk.devno)
    capped = Group(tree, "io-capped", HostQuota(iops=IOPS), disk.devno)
    uncapped_rios, _ = reads_in(uncapped, partition, disk.devno)
    capped_rios, capped_usage_ios = reads_in(capped, partition, disk.devno)
    result = {"partition": partition, "partition_of": disk.partition, "disk": disk.devno, "disk_kind": disk.kind,
              "io.max": capped.read("io.max").strip(), "window_seconds": IO_WINDOW_SECONDS,
              "uncapped_rios": uncapped_rios, "capped_rios": capped_rios, "usage.read_ios": capped_usage_ios}
    tree.remove(capped.name)
    tree.remove(uncapped.name)
    return result


def check_freeze(tree: CgroupV2) -> dict:
    group = Group(tree, "freeze", HostQuota())
    clock = Group(tree, "clock", HostQuota())  # a reference burner: its CPU time is the window
    cpu_usec = lambda g: g.counters("cpu.stat")["usage_usec"]  # noqa: E731
    burner = group.spawn(BURNER)
    try:
        wait_for(lambda: cpu_usec(group) > 0, "the burner to run")
        tree.freeze(group.name)  # returns once cgroup.events says frozen 1
        frozen_at = cpu_usec(group)
        reference = clock.spawn(BURNER)
        try:
            wait_for(lambda: cpu_usec(clock) >= FROZEN_WINDOW_CPU_USEC, "the reference burner's CPU window")
        finally:
            stopped(reference)
        frozen_after = cpu_usec(group)
        tree.freeze(group.name, False)
        wait_for(lambda: not tree.is_frozen(group.name), "frozen 0")
        wait_for(lambda: cpu_usec(group) > frozen_after, "the thawed burner to run again")
        thawed = cpu_usec(group)
        tree.freeze(group.name)
        tree.kill(group.name)  # cgroup.kill, on a frozen group
        killed_status = burner.wait(timeout=DEADLINE_SECONDS)
    finally:
        if burner.poll() is None:
            stopped(burner)
    window = cpu_usec(clock)
    tree.remove(group.name)
    tree.remove(clock.name)
    return {"usage_frozen_at": frozen_at, "usage_frozen_after": frozen_after, "usage_thawed": thawed,
            "window_cpu_usec": window, "killed_status": killed_status}


def check_reconcile(tree: CgroupV2) -> dict:
    """The reconcile loop on v2, in its own root: build, stay read-only when
    nothing drifted, then repair hand edits and deletions in one pass."""
    own = CgroupV2(root=f"{tree.root}-reconcile", mount=CGROUP_MOUNT, controllers=CONTROLLERS)
    sleeper = subprocess.Popen(["sleep", "600"])  # a dedicated tenant's "instance", started outside
    try:
        desired = DesiredState(tenants=(
            TenantSpec("alpha", HostQuota(cpu_percent=20, cpu_shares=2048, memory_mb=64, iops=100, pids_max=32),
                       "dedicated", pids=(sleeper.pid,)),
            TenantSpec("beta", HostQuota(cpu_percent=50, memory_mb=32), "dedicated"),
            TenantSpec("gamma", HostQuota(cpu_percent=30, memory_mb=16), "shared"),
        ))
        device = blockdev.whole_disk(read_first_line(f"/sys/class/block/{DISK}/dev")).devno
        reconciler = Reconciler(own, device=device)

        def summary(repairs) -> list:
            """[kind, group, what] per repair, sorted: JSON-friendly and comparable."""
            return sorted([r.kind, r.group, r.detail.get("file") or r.detail.get("pid") or r.detail.get("error")]
                          for r in repairs)

        built = summary(reconciler.run(desired))
        steady = summary(reconciler.run(desired))
        # Drift by hand: a value, a deleted tenant group, strays, a process moved out.
        own.apply("tenants/alpha", [("cpu.max", "max 100000")])
        own.apply("shared", [("memory.max", "max")])
        os.rmdir(own.group_dirs("tenants/beta")[0])
        own.ensure("tenants/ghost")
        own.ensure("stray")
        with open(f"{CGROUP_MOUNT}/cgroup.procs", "w") as top:
            top.write(str(sleeper.pid))
        repaired = summary(reconciler.run(desired))
        after = summary(reconciler.run(desired))
        mismatches = {group: own.mismatches(group, v2_writes(quota, device)) for group, quota in
                      (("tenants/alpha", desired.tenants[0].quota), ("tenants/beta", desired.tenants[1].quota))}
        alpha_procs = own.procs("tenants/alpha")
    finally:
        stopped(sleeper)
        own.remove_root()
    return {"built": built, "steady": steady, "repaired": repaired, "after": after,
            "mismatches": mismatches, "alpha_procs": alpha_procs, "sleeper": sleeper.pid}


CHECKS = {"capabilities": check_capabilities, "cpu": check_cpu_max, "cpu_weight": check_cpu_weight,
          "memory": check_memory_max, "memory_below_usage": check_memory_max_below_usage,
          "pids": check_pids_max, "io": check_io_max, "freeze": check_freeze, "reconcile": check_reconcile}


class CheckTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise CheckTimeout(f"check exceeded {DEADLINE_SECONDS * 2}s")


def main() -> int:
    # A stuck check fails alone instead of holding the VM until the host's timeout.
    signal.signal(signal.SIGALRM, on_alarm)
    started = time.monotonic()
    tree = CgroupV2(root=f"/rustymt-test-{secrets.token_hex(4)}", mount=CGROUP_MOUNT, controllers=CONTROLLERS)
    report: dict = {}
    only = sys.argv[1:] or list(CHECKS)  # names of checks to run (all by default)
    try:
        for name, check in ((name, CHECKS[name]) for name in only):
            began = time.monotonic()
            signal.alarm(int(DEADLINE_SECONDS * 2))
            try:
                report[name] = check(tree)
            except Exception:
                report[name] = {"error": traceback.format_exc()}
            finally:
                signal.alarm(0)
            report[name]["guest_seconds"] = round(time.monotonic() - began, 2)
            print(f"{name}: {json.dumps(report[name])}", flush=True)
    finally:
        try:
            tree.remove_root()
        except OSError as error:  # reported; the VM is disposable anyway
            report["cleanup_error"] = str(error)
    report["guest_seconds"] = round(time.monotonic() - started, 2)
    with open(os.path.join(os.environ["RUSTYMT_VM_RESULTS"], "cgroup2.json"), "w") as out:
        json.dump(report, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
