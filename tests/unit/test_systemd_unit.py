"""systemd/rustymtd.service: systemd's own checker accepts it and the hardening holds.

The container this runs in has no systemd as PID 1, so the unit cannot be
started here; systemd-analyze verify (unit syntax, directives, executable
present) and `systemd-analyze security --offline` (the sandbox score) are what
systemd offers without a running manager. The notify protocol the unit relies
on is tested against a real daemon in tests/api/test_sdnotify_daemon.py. The
unit's capability bounding set is tried for real with setpriv (root): it must
let the daemon's host work through (cgroup directory + cpu.shares, the tc
probe in a throwaway network namespace), and each privileged capability must
be one that work needs. The rest of the sandbox (ProtectSystem=, syscall
filter, namespaces) only systemd can apply, so it is checked by verify only.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_host

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "rustymtd.service"
INSTALLED_EXEC = "/usr/local/bin/rustymtd"
MAX_EXPOSURE = 4.0  # systemd's scale: 0 locked down .. 10 unprotected; "OK" is below 5


def _service_section() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


@pytest.fixture
def local_unit(tmp_path) -> Path:
    """The unit with ExecStart pointing at this checkout's rustymtd (verify checks the file exists)."""
    rustymtd = Path(sys.executable).with_name("rustymtd")
    assert rustymtd.exists(), f"{rustymtd} missing: install the package (scripts/bootstrap)"
    text = UNIT.read_text()
    assert INSTALLED_EXEC in text
    target = tmp_path / "rustymtd.service"
    target.write_text(text.replace(INSTALLED_EXEC, str(rustymtd)))
    return target


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    require_host(path is not None, "systemd-analyze not installed (Debian package systemd)")
    return path


def test_systemd_analyze_verify_accepts_the_unit(local_unit):
    result = subprocess.run([_systemd_analyze(), "verify", str(local_unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "rustymtd" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_sandbox_exposure_stays_low(local_unit):
    result = subprocess.run([_systemd_analyze(), "security", "--offline=yes", "--no-pager", str(local_unit)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "SYSTEMD_COLORS": "0"})
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_is_notify_delegated_restarting_and_keeps_cgroup_and_tc_access():
    service = _service_section()
    assert service["Type"] == ["notify"]
    assert set(service["Delegate"][0].split()) == {"cpu", "cpuset", "io", "memory", "pids"}  # what the quotas use
    assert service["Restart"] == ["on-failure"]
    assert float(service["WatchdogSec"][0].rstrip("s")) > 0
    assert service["ExecStart"][0].split()[0] == INSTALLED_EXEC
    # /sys/fs/cgroup must stay writable and netlink usable, or cgroup/tc work fails.
    for forbidden in ("ProtectControlGroups", "ProtectKernelTunables", "PrivateNetwork"):
        assert forbidden not in service or service[forbidden] == ["no"], forbidden
    assert "AF_NETLINK" in service["RestrictAddressFamilies"][0].split()
    capabilities = set(service["CapabilityBoundingSet"][0].split())
    assert "CAP_NET_ADMIN" in capabilities
    assert capabilities <= {"CAP_NET_ADMIN", "CAP_SYS_NICE", "CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"}
    assert service["RestrictNamespaces"] == ["net"]  # the tc probe's throwaway namespace, nothing else


# What the daemon does on the host, run as root with exactly the unit's capability bounding set.
HOST_WORK = r"""
import json, os, sys
from rustymt.host.capabilities import probe_tc
cgroup = sys.argv[1]
result = {"tc": probe_tc()}
try:
    os.mkdir(cgroup)
    with open(os.path.join(cgroup, "cpu.shares"), "w") as handle:
        handle.write("512")
    with open(os.path.join(cgroup, "cpu.shares")) as handle:
        result["cpu.shares"] = handle.read().strip()
finally:
    if os.path.isdir(cgroup):
        os.rmdir(cgroup)
print(json.dumps(result))
"""


def _run_with_capabilities(capabilities: set[str], cgroup: str) -> dict:
    setpriv = shutil.which("setpriv")
    require_host(setpriv is not None, "setpriv (util-linux) missing")
    bounding = ",".join(["-all"] + [f"+{name.removeprefix('CAP_').lower()}" for name in sorted(capabilities)])
    result = subprocess.run(
        [setpriv, "--bounding-set", bounding, "--inh-caps", "-all", "--no-new-privs", sys.executable, "-c", HOST_WORK, cgroup],
        capture_output=True, text=True, timeout=120, cwd=UNIT.parents[1],
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.host
def test_unit_capabilities_suffice_for_cgroup_writes_and_the_tc_probe():
    require_host(os.geteuid() == 0, "needs root")
    require_host(os.path.exists("/sys/fs/cgroup/cpu/cpu.shares"), "no cgroup v1 cpu hierarchy at /sys/fs/cgroup/cpu")
    capabilities = set(_service_section()["CapabilityBoundingSet"][0].split())
    cgroup = f"/sys/fs/cgroup/cpu/rustymt-test-{secrets.token_hex(4)}"
    try:
        unrestricted = _run_with_capabilities({"CAP_" + name for name in ("SYS_ADMIN", "NET_ADMIN", "SYS_NICE", "DAC_OVERRIDE", "SYS_MODULE")}, cgroup)
        working_kinds = {kind for kind, failure in unrestricted["tc"].items() if failure is None}
        require_host(bool(working_kinds), f"no tc kind works on this host: {unrestricted['tc']}")
        confined = _run_with_capabilities(capabilities, cgroup)
        assert confined["cpu.shares"] == "512"
        assert {kind for kind, failure in confined["tc"].items() if failure is None} == working_kinds, confined["tc"]
        # And CAP_SYS_ADMIN is there because the probe needs it, not by habit.
        without = _run_with_capabilities(capabilities - {"CAP_SYS_ADMIN"}, cgroup)
        assert not any(failure is None for failure in without["tc"].values()), without["tc"]
        if stat.S_IMODE(os.stat("/sys/fs/cgroup/cpu").st_mode) & 0o200 == 0:
            # A 0555 hierarchy root (as here): without CAP_DAC_OVERRIDE root cannot create cgroups in it.
            with pytest.raises(AssertionError, match="PermissionError"):
                _run_with_capabilities(capabilities - {"CAP_DAC_OVERRIDE"}, cgroup)
    finally:
        if os.path.isdir(cgroup):
            os.rmdir(cgroup)
