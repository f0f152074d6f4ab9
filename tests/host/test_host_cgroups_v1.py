"""cgroup v1 enforcement, for real, on plain processes placed in tenant groups.

Rates are taken from kernel counters (cpuacct.usage, blkio io_serviced) over
a window that ends when a usage threshold is reached (wait_for with a
deadline), never from sleeps.
"""
import os
import subprocess
import time

import pytest

from rustymt.host import cgroupmap, usage
from rustymt.host.cgroupmap import HostQuota
from tests.conftest import wait_for

pytestmark = pytest.mark.host

BURN = "while True:\n    pass\n"


def apply(tree, group, quota, device=None):
    tree.ensure(group)
    outcomes = tree.apply(group, cgroupmap.v1_writes(quota, device))
    assert [o for o in outcomes if o.error] == []
    return outcomes


def favour(tree):
    """Give the test's own root (and tenants/) the largest cpu.shares, so a
    busy shared machine does not starve the measured groups below the rate
    under test; their caps and ratios are what is measured."""
    tree.ensure("tenants")
    outcomes = tree.apply_many([("", [("cpu.shares", str(cgroupmap.SHARES_MAX))]),
                                ("tenants", [("cpu.shares", str(cgroupmap.SHARES_MAX))])])
    assert [o for o in outcomes if o.error] == []


def cpu_ns(tree, group):
    return int(tree.read(group, "cpuacct.usage"))


def measure_cpu(tree, groups, cpu_seconds, timeout=20.0):
    """Per-group cpu ns used until the groups together used `cpu_seconds`."""
    start = {group: cpu_ns(tree, group) for group in groups}
    t0 = time.monotonic()
    wait_for(lambda: sum(cpu_ns(tree, g) - start[g] for g in groups) >= cpu_seconds * 1e9, timeout, what="cpu usage")
    elapsed = time.monotonic() - t0
    return {group: cpu_ns(tree, group) - start[group] for group in groups}, elapsed


def test_cpu_quota_caps_a_burner_at_20_percent(v1_tree, spawner):
    favour(v1_tree)
    apply(v1_tree, "tenants/a", HostQuota(cpu_percent=20))
    spawner.start(v1_tree, "tenants/a", BURN)
    wait_for(lambda: cpu_ns(v1_tree, "tenants/a") > 50_000_000, 10, what="burner to start")
    used, elapsed = measure_cpu(v1_tree, ["tenants/a"], 0.3)
    percent = used["tenants/a"] / elapsed / 1e7
    print(f"\ncpu quota 20%: measured {percent:.1f}% over {elapsed:.2f}s")
    assert 18.0 <= percent <= 22.0
    assert usage.group_usage(v1_tree, "tenants/a").nr_throttled > 0


def test_shares_split_one_cpu_4_to_1(v1_tree, spawner):
    cpu = str(sorted(os.sched_getaffinity(0))[0])
    favour(v1_tree)
    apply(v1_tree, "tenants/heavy", HostQuota(cpu_shares=1024, cpuset_cpus=cpu))
    apply(v1_tree, "tenants/light", HostQuota(cpu_shares=256, cpuset_cpus=cpu))
    for group in ("tenants/heavy", "tenants/light"):
        spawner.start(v1_tree, group, BURN)
    wait_for(lambda: cpu_ns(v1_tree, "tenants/light") > 20_000_000, 10, what="both burners to run")
    used, elapsed = measure_cpu(v1_tree, ["tenants/heavy", "tenants/light"], 0.6)
    ratio = used["tenants/heavy"] / used["tenants/light"]
    print(f"\nshares 1024:256 on cpu {cpu}: ratio {ratio:.2f}:1 over {elapsed:.2f}s")
    assert 3.6 <= ratio <= 4.4


def test_memory_limit_oom_kills_only_the_hog(v1_tree, spawner):
    apply(v1_tree, "tenants/m", HostQuota(memory_mb=64))
    apply(v1_tree, "tenants/other", HostQuota(memory_mb=64))
    bystander = spawner.start(v1_tree, "tenants/other", "sys.stdin.readline()\n")
    hog = spawner.start(v1_tree, "tenants/m", """
        chunks = []
        for _ in range(200):
            chunks.append(bytearray(1 << 20))   # 200 MiB, pages touched
        print("survived")
    """, stdout=subprocess.PIPE)
    assert hog.wait(timeout=30) == -9
    assert hog.stdout.read() == ""
    snapshot = usage.group_usage(v1_tree, "tenants/m")
    assert snapshot.oom_kills >= 1
    assert snapshot.memory_peak_bytes <= 64 << 20
    assert bystander.poll() is None
    assert usage.group_usage(v1_tree, "tenants/other").oom_kills == 0


def test_pids_cap_makes_fork_fail_with_eagain(v1_tree, spawner):
    apply(v1_tree, "tenants/p", HostQuota(pids_max=5))
    forker = spawner.start(v1_tree, "tenants/p", """
        import os
        read_end, write_end = os.pipe()
        made = refused = 0
        for _ in range(10):
            try:
                pid = os.fork()
            except BlockingIOError:     # EAGAIN from the pids controller
                refused += 1
                continue
            if pid == 0:
                os.close(write_end)
                os.read(read_end, 1)   # hold the slot until the parent exits
                os._exit(0)
            made += 1
        print(made, refused, flush=True)
    """, stdout=subprocess.PIPE)
    made, refused = map(int, forker.stdout.readline().split())
    print(f"\npids.max 5: {made} forks made, {refused} refused (EAGAIN)")
    assert (made, refused) == (4, 6)
    assert forker.wait(timeout=10) == 0


def test_freeze_stops_cpu_and_thaw_resumes(v1_tree, spawner):
    apply(v1_tree, "tenants/f", HostQuota())
    apply(v1_tree, "tenants/clock", HostQuota(cpu_percent=50))
    spawner.start(v1_tree, "tenants/f", BURN)
    spawner.start(v1_tree, "tenants/clock", BURN)
    wait_for(lambda: cpu_ns(v1_tree, "tenants/f") > 50_000_000, 10, what="burner to start")
    v1_tree.freeze("tenants/f")
    assert v1_tree.is_frozen("tenants/f")
    frozen_at = cpu_ns(v1_tree, "tenants/f")
    clock = cpu_ns(v1_tree, "tenants/clock")
    # the reference burner's 200 ms of cpu is the window
    wait_for(lambda: cpu_ns(v1_tree, "tenants/clock") - clock >= 200_000_000, 10, what="reference cpu")
    assert cpu_ns(v1_tree, "tenants/f") == frozen_at
    v1_tree.freeze("tenants/f", False)
    wait_for(lambda: cpu_ns(v1_tree, "tenants/f") - frozen_at > 50_000_000, 10, what="thawed burner to run")


def test_kill_empties_a_frozen_group_and_remove_deletes_it(v1_tree, spawner):
    apply(v1_tree, "tenants/k", HostQuota())
    victims = [spawner.start(v1_tree, "tenants/k", BURN) for _ in range(2)]
    v1_tree.freeze("tenants/k")
    v1_tree.kill("tenants/k")
    assert [victim.wait(timeout=5) for victim in victims] == [-9, -9]
    assert v1_tree.procs("tenants/k") == []
    assert v1_tree.remove("tenants/k") is True
    assert not any(os.path.exists(path) for path in v1_tree.group_dirs("tenants/k"))
    assert v1_tree.remove("tenants/k") is False


def test_memory_limit_below_usage_is_reported_not_forced(v1_tree, spawner):
    apply(v1_tree, "tenants/busy", HostQuota())
    holder = spawner.start(v1_tree, "tenants/busy", """
        import mmap
        block = mmap.mmap(-1, 48 << 20, flags=mmap.MAP_SHARED)   # shmem: not reclaimable without swap
        block.write(b"x" * (48 << 20))
        print("ready", flush=True)
        sys.stdin.readline()
    """, stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "ready"
    outcomes = v1_tree.apply("tenants/busy", [("memory.limit_in_bytes", str(16 << 20))], busy_timeout=0.2)
    assert outcomes[0].error is not None and "EBUSY" in outcomes[0].error, outcomes
    assert holder.poll() is None
    assert cgroupmap.same_value("memory.limit_in_bytes", "-1", v1_tree.read("tenants/busy", "memory.limit_in_bytes"))


@pytest.fixture
def loop_device(tmp_path):
    backing = tmp_path / "disk.img"
    with open(backing, "wb") as handle:
        handle.truncate(64 << 20)
    try:
        device = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        from tests.conftest import require_host
        require_host(False, f"cannot attach a loop device: {exc}")
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def test_blkio_caps_direct_reads_at_100_iops(v1_tree, spawner, loop_device):
    from rustymt.host import blockdev

    st = os.stat(loop_device)
    disk = blockdev.whole_disk(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    assert disk.kind == "loop"
    apply(v1_tree, "tenants/io", HostQuota(iops=100), device=disk.devno)
    spawner.start(v1_tree, "tenants/io", f"""
        import mmap, os, random
        fd = os.open({loop_device!r}, os.O_RDONLY | os.O_DIRECT)
        buffer = mmap.mmap(-1, 4096)            # page-aligned, as O_DIRECT wants
        while True:
            os.preadv(fd, [buffer], random.randrange(0, (64 << 20) // 4096) * 4096)
    """)

    def reads():
        return usage.group_usage(v1_tree, "tenants/io").read_ios or 0

    wait_for(lambda: reads() >= 20, 10, what="reads to start")
    first, t0 = reads(), time.monotonic()
    wait_for(lambda: reads() - first >= 150, 10, what="150 reads")
    rate = (reads() - first) / (time.monotonic() - t0)
    print(f"\nblkio read_iops 100 on {disk.name} ({disk.devno}), O_DIRECT: {rate:.1f} IOPS")
    assert 90 <= rate <= 110


def test_parent_and_child_cpu_quotas_apply_in_either_direction(v1_tree):
    v1_tree.ensure("tenants/c")

    def quotas(parent_percent, child_percent):
        return [("tenants", cgroupmap.v1_writes(HostQuota(cpu_percent=parent_percent))),
                ("tenants/c", cgroupmap.v1_writes(HostQuota(cpu_percent=child_percent)))]

    def read():
        return [int(v1_tree.read(group, "cpu.cfs_quota_us")) for group in ("tenants", "tenants/c")]

    for parent, child in ((50, 40), (30, 20), (80, 70)):   # set, lower both, raise both
        outcomes = v1_tree.apply_many(quotas(parent, child))
        assert [o for o in outcomes if o.error] == []
        assert read() == [parent * 1000, child * 1000]
    # a child above its parent is refused by the kernel and reported, not hidden:
    # the child goes to 40 (under the old 80), the parent cannot go to 30
    outcomes = v1_tree.apply_many(quotas(30, 40))
    assert [(o.group, o.file, o.error.split(":")[0]) for o in outcomes if o.error] == [("tenants", "cpu.cfs_quota_us", "EINVAL")]
    assert read() == [80_000, 40_000]
