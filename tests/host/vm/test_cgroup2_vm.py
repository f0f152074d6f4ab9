"""The cgroup v2 limits, for real, inside a qemu VM (these hosts have only v1 controllers).

One boot per module: guest_cgroup2_checks.py runs every workload inside the
guest and reports what the kernel counted; each test here asserts on one
limit's counters (never on wall time).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rustymt.host import cgroupmap
from tests.conftest import require_host
from tests.host.vm import assets as vm_assets
from tests.host.vm import guest_cgroup2_checks as checks
from tests.host.vm.harness import run_in_vm, unavailable_reason

REPO = Path(__file__).resolve().parents[3]
RUN_TIMEOUT_SECONDS = 180  # per attempt; ~22 s on a quiet host, 45-65 s with the 2 cores contended
DISK_MB = 64

# The VM bounds itself (boot watchdog, timeout per attempt, one retry); the
# suite-wide 300 s pytest timeout could cut a slow-but-healthy retry short.
pytestmark = [pytest.mark.host, pytest.mark.timeout(2 * RUN_TIMEOUT_SECONDS + 60)]


@pytest.fixture(scope="module")
def guest_report(tmp_path_factory) -> dict:
    reason = unavailable_reason()
    require_host(reason is None, reason or "")
    try:
        prepared = vm_assets.prepare()
    except vm_assets.AssetError as error:
        require_host(False, f"VM kernel unavailable: {error}")
    results = tmp_path_factory.mktemp("vm-results")
    result = run_in_vm([sys.executable, str(Path(checks.__file__).relative_to(REPO))],
                       timeout=RUN_TIMEOUT_SECONDS, disk_mb=DISK_MB, cwd=REPO, results_dir=results,
                       env={checks.BIG_FILE_ENV: str(prepared.vmlinux)})
    print(f"\nvm: boot to command {result.boot_seconds:.1f}s, whole run {result.total_seconds:.1f}s, "
          f"attempts {result.attempts}")
    assert result.returncode == 0, f"guest checks exited {result.returncode}:\n{result.stdout}"
    report = json.loads((results / "cgroup2.json").read_text())
    print(json.dumps(report, indent=1))  # shown with a failing test's setup output
    print(f"vm: guest checks took {report['guest_seconds']}s")
    return report


def outcome(report: dict, check: str) -> dict:
    """One check's counters; a check that raised in the guest fails with its traceback."""
    values = report[check]
    assert "error" not in values, f"guest check {check} raised:\n{values['error']}"
    return values


def test_capability_detection_sees_a_unified_v2_host(guest_report):
    caps = outcome(guest_report, "capabilities")
    assert (caps["layout"], caps["version"], caps["v2_mount"]) == ("unified", 2, checks.CGROUP_MOUNT)
    assert set(checks.CONTROLLERS) <= set(caps["v2_controllers"])
    assert all(caps["usable"].values()), caps["usable"]


def test_cpu_max_throttles_a_burner_to_its_quota(guest_report):
    cpu = outcome(guest_report, "cpu")
    quota = cgroupmap.cpu_quota_us(checks.CPU_PERCENT)
    assert cpu["written"] == f"{quota} {cgroupmap.CPU_PERIOD_US}"
    assert cpu["nr_throttled"] >= checks.CPU_THROTTLED_PERIODS
    assert cpu["throttled_usec"] > 0
    # The kernel's own accounting: no more than the quota per elapsed period
    # (+1 for the period in progress when the burner was stopped).
    assert cpu["usage_usec"] <= (cpu["nr_periods"] + 1) * quota
    # rustymt.host.usage reads the same counters.
    assert cpu["usage.nr_throttled"] == cpu["nr_throttled"]
    assert cpu["usage.throttled_ns"] == cpu["throttled_usec"] * 1000


def test_cpu_weight_splits_one_cpu_by_the_converted_shares(guest_report):
    weight = outcome(guest_report, "cpu_weight")
    expected = [cgroupmap.shares_to_weight(shares) for shares in checks.CPU_SHARES]
    assert weight["weights"] == [str(value) for value in expected]
    heavy, light = weight["usage_usec"]
    # cpu.stat usage of two burners sharing the guest's one CPU: 4:1, +-40 %
    # because TCG charges host-stolen time to whichever task ran (see the
    # guest's CPU_WEIGHT_WINDOW_USEC); equal weights (1:1) or a 2:1 split fail.
    wanted = expected[0] / expected[1]
    assert wanted * 0.6 <= heavy / light <= wanted * 1.4


def test_memory_max_oom_kills_the_allocation(guest_report):
    memory = outcome(guest_report, "memory")
    assert memory["memory.max"] == str(cgroupmap.memory_bytes(checks.MEMORY_MB))
    assert memory["memory.high"] == str(cgroupmap.memory_high_bytes(checks.MEMORY_MB))
    assert memory["returncode"] == -9  # SIGKILL from the OOM killer
    assert memory["oom_kill"] >= 1
    assert memory["high_events"] >= 1  # throttled at memory.high on the way up
    assert memory["usage.oom_kills"] == memory["oom_kill"]
    assert memory["usage.memory_peak_bytes"] <= cgroupmap.memory_bytes(checks.MEMORY_MB)


def test_lowering_memory_max_under_usage_reclaims_or_refuses_but_never_kills(guest_report):
    shrink = outcome(guest_report, "memory_below_usage")
    reclaimable_limit = cgroupmap.memory_bytes(checks.SHRINK_RECLAIMABLE_MB)
    # The holder's page cache put it over the limit; memory.high reclaimed it,
    # then memory.max was written.
    assert shrink["current_before"] > reclaimable_limit
    assert not any(shrink["reclaimable_errors"].values()), shrink["reclaimable_errors"]
    assert shrink["after_reclaim"]["memory.max"] == str(reclaimable_limit)
    assert shrink["after_reclaim"]["memory.current"] <= reclaimable_limit
    # Anonymous memory without swap cannot go: memory.max is refused (and left
    # as it was), memory.high is lowered, and nothing is OOM-killed.
    assert shrink["unreclaimable_errors"]["memory.max"].startswith("EBUSY")
    assert not shrink["unreclaimable_errors"]["memory.high"]
    assert shrink["after_refusal"]["memory.max"] == str(reclaimable_limit)
    assert shrink["after_refusal"]["memory.high"] == str(cgroupmap.memory_high_bytes(checks.SHRINK_UNRECLAIMABLE_MB))
    assert shrink["holder_alive"]
    assert shrink["oom_kill"] == 0


def test_pids_max_refuses_forks_with_eagain(guest_report):
    pids = outcome(guest_report, "pids")
    assert pids["written"] == str(checks.PIDS_MAX)
    # The forking child is itself one of the pids.
    assert pids["forked"] == checks.PIDS_MAX - 1
    assert pids["eagain"] == checks.PIDS_FORKS - (checks.PIDS_MAX - 1)
    assert pids["other_errors"] == []
    assert pids["pids.current_while_held"] == checks.PIDS_MAX
    assert pids["events_max"] >= pids["eagain"]


def test_io_max_on_the_whole_disk_caps_direct_reads_through_its_partition(guest_report):
    io = outcome(guest_report, "io")
    # blockdev maps the partition the reads go through to the disk io.max names.
    assert (io["partition_of"], io["disk_kind"]) == ("vda1", "disk")
    assert io["io.max"].startswith(f"{io['disk']} ")
    assert f"riops={checks.IOPS} wiops={checks.IOPS}" in io["io.max"]
    # Both readers ran for the same window; io.stat counted what reached the
    # disk. Capped: about riops per second (x2 tolerance + one slice of burst);
    # uncapped: far more, or the cap proved nothing.
    allowed = checks.IOPS * io["window_seconds"] * 2 + 10
    assert 0 < io["capped_rios"] <= allowed
    assert io["uncapped_rios"] >= 5 * allowed
    assert io["usage.read_ios"] == io["capped_rios"]


def test_cgroup_freeze_stops_cpu_use_until_thawed_and_kill_empties_it(guest_report):
    freeze = outcome(guest_report, "freeze")
    assert freeze["window_cpu_usec"] >= checks.FROZEN_WINDOW_CPU_USEC  # the reference burner ran meanwhile
    assert freeze["usage_frozen_after"] == freeze["usage_frozen_at"]
    assert freeze["usage_thawed"] > freeze["usage_frozen_after"]
    assert freeze["killed_status"] == -9  # cgroup.kill on the frozen group


def test_the_test_root_was_removed(guest_report):
    assert "cleanup_error" not in guest_report


def test_reconcile_builds_stays_read_only_then_repairs_drift_in_one_pass(guest_report):
    reconcile = outcome(guest_report, "reconcile")
    built = {(kind, group) for kind, group, _ in reconcile["built"]}
    groups = ("supervisor", "shared", "tenants", "tenants/alpha", "tenants/beta")
    assert {("cgroup.created", group) for group in groups} <= built
    assert ("process.placed", "tenants/alpha") in built
    assert not [r for r in reconcile["built"] if r[0] == "repair.failed"], reconcile["built"]
    # A pass over correct v2 state changes nothing (values read back as written).
    assert reconcile["steady"] == []
    # The hand edits, deletions and strays, all repaired in the next pass.
    repaired = [tuple(r) for r in reconcile["repaired"]]
    for expected in [("cgroup.value.repaired", "tenants/alpha", "cpu.max"),
                     ("cgroup.value.repaired", "shared", "memory.max"),
                     ("cgroup.created", "tenants/beta", None),
                     ("cgroup.removed", "tenants/ghost", None),
                     ("cgroup.removed", "stray", None),
                     ("process.placed", "tenants/alpha", reconcile["sleeper"])]:
        assert expected in repaired, (expected, repaired)
    assert not [r for r in repaired if r[0] == "repair.failed"], repaired
    assert reconcile["after"] == []
    assert reconcile["mismatches"] == {"tenants/alpha": [], "tenants/beta": []}
    assert reconcile["alpha_procs"] == [reconcile["sleeper"]]
