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

from tests.conftest import require_host
from tests.host.vm import assets as vm_assets
from tests.host.vm import guest_cgroup2_checks as checks
from tests.host.vm.harness import run_in_vm, unavailable_reason

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[3]
BOOT_TIMEOUT_SECONDS = 90  # per attempt; a healthy run takes ~20 s on an idle host
DISK_MB = 64


@pytest.fixture(scope="module")
def guest_report(tmp_path_factory) -> dict:
    reason = unavailable_reason()
    require_host(reason is None, reason or "")
    try:
        vm_assets.prepare()
    except vm_assets.AssetError as error:
        require_host(False, f"VM kernel unavailable: {error}")
    results = tmp_path_factory.mktemp("vm-results")
    result = run_in_vm([sys.executable, str(Path(checks.__file__).relative_to(REPO))],
                       timeout=BOOT_TIMEOUT_SECONDS, disk_mb=DISK_MB, cwd=REPO, results_dir=results)
    print(f"\nvm: boot to command {result.boot_seconds:.1f}s, whole run {result.total_seconds:.1f}s, "
          f"attempts {result.attempts}")
    assert result.returncode == 0, f"guest checks exited {result.returncode}:\n{result.stdout}"
    report = json.loads((results / "cgroup2.json").read_text())
    print(f"vm: guest checks took {report['guest_seconds']}s")
    return report


def outcome(report: dict, check: str) -> dict:
    """One check's counters; a check that raised in the guest fails with its traceback."""
    values = report[check]
    assert "error" not in values, f"guest check {check} raised:\n{values['error']}"
    return values


def test_guest_has_every_v2_controller_this_driver_uses(guest_report):
    assert set(checks.CONTROLLERS) <= set(guest_report["controllers"])


def test_cpu_max_throttles_a_burner_to_its_quota(guest_report):
    cpu = outcome(guest_report, "cpu")
    quota, period = checks.CPU_MAX
    assert cpu["cpu.max"] == f"{quota} {period}"
    assert cpu["nr_throttled"] >= checks.CPU_THROTTLED_PERIODS
    assert cpu["throttled_usec"] > 0
    # The kernel's own accounting: no more than the quota per elapsed period
    # (+1 for the period in progress when the burner was stopped).
    assert cpu["usage_usec"] <= (cpu["nr_periods"] + 1) * quota


def test_memory_max_oom_kills_the_allocation(guest_report):
    memory = outcome(guest_report, "memory")
    assert memory["memory.max"] == checks.MEMORY_MAX
    assert memory["returncode"] == -9  # SIGKILL from the OOM killer
    assert memory["oom_kill"] >= 1
    if memory["memory.peak"] is not None:
        assert memory["memory.peak"] <= checks.MEMORY_MAX


def test_pids_max_refuses_forks_with_eagain(guest_report):
    pids = outcome(guest_report, "pids")
    assert pids["pids.max"] == str(checks.PIDS_MAX)
    # The forking child is itself one of the pids.
    assert pids["forked"] == checks.PIDS_MAX - 1
    assert pids["eagain"] == checks.PIDS_FORKS - (checks.PIDS_MAX - 1)
    assert pids["other_errors"] == []
    assert pids["pids.current_while_held"] == checks.PIDS_MAX
    assert pids["events_max"] >= pids["eagain"]


def test_io_max_caps_direct_reads_on_the_whole_disk(guest_report):
    io = outcome(guest_report, "io")
    assert f"riops={checks.IO_RIOPS}" in io["io.max"]
    # Both readers ran for the same window; io.stat counted what reached the
    # disk. Capped: about riops per second (x2 tolerance + one slice of burst);
    # uncapped: far more, or the cap proved nothing.
    allowed = checks.IO_RIOPS * io["window_seconds"] * 2 + 10
    assert 0 < io["capped_rios"] <= allowed
    assert io["uncapped_rios"] >= 5 * allowed


def test_cgroup_freeze_stops_cpu_use_until_thawed(guest_report):
    freeze = outcome(guest_report, "freeze")
    assert freeze["usage_frozen_after"] == freeze["usage_frozen_at"]
    assert freeze["usage_thawed"] > freeze["usage_frozen_after"]
    assert freeze["burner_alive_after_thaw"]
