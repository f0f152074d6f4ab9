"""The reconcile loop and the daemon-facing HostController, for real (v1
cgroups under the test's own root; tc in the test's own namespace)."""
import os
import secrets
from types import SimpleNamespace

import pytest

from rustymt.host import HostController, HostQuota, TenantSpec, DesiredState
from tests.host.conftest import host_caps, require_v1

pytestmark = pytest.mark.host

BURN = "while True:\n    pass\n"


@pytest.fixture
def host(netns_name):
    require_v1("cpu", "cpuacct", "memory", "pids", "freezer")
    settings = SimpleNamespace(cgroup_root=f"/rustymt-test-{secrets.token_hex(4)}", interface="lo", enforce=True)
    controller = HostController.from_settings(settings, data_dir="/tmp", netns=netns_name, caps=host_caps())
    try:
        yield controller
    finally:
        try:
            controller.tree.remove_root()
        finally:
            controller.close()


def kinds(repairs):
    return sorted((repair.kind, repair.group or repair.detail.get("port")) for repair in repairs)


def test_reconcile_creates_then_is_quiet_then_repairs_hand_changes(host, spawner):
    tree = host.tree
    shaped_port = 20000 + secrets.randbelow(20000)
    desired = DesiredState(tenants=(
        TenantSpec("alpha", HostQuota(cpu_percent=50), placement="dedicated"),
        TenantSpec("beta", HostQuota(cpu_percent=30, network_mbps=15), placement="dedicated", port=shaped_port),
        TenantSpec("gamma", HostQuota(cpu_percent=20, memory_mb=256)),
    ))
    host.setup()
    first = host.reconcile(desired)
    created = {(r.kind, r.group) for r in first if r.kind == "cgroup.created"}
    assert {("cgroup.created", "tenants/alpha"), ("cgroup.created", "tenants/beta")} <= created
    assert ("tc.class.created", shaped_port) in kinds(first)
    assert tree.read("shared", "cpu.cfs_quota_us").strip() == "20000"       # aggregate of shared tenants
    assert not [r for r in first if r.kind == "repair.failed"]
    assert host.reconcile(desired) == []                                   # steady state: read-only

    # hand damage: a deleted group, a changed quota, a stray group, a lost class, a stray class
    for directory in tree.group_dirs("tenants/alpha"):
        os.rmdir(directory)
    with open(tree.file_path("tenants/beta", "cpu.cfs_quota_us"), "w") as handle:
        handle.write("90000")
    tree.ensure("tenants/ghost")
    ghost = spawner.start(tree, "tenants/ghost", BURN)
    host.shaper.remove_port(shaped_port)
    host.shaper.set_port(shaped_port + 1, 5)

    repairs = host.reconcile(desired)
    assert ("cgroup.created", "tenants/alpha") in kinds(repairs)
    assert ("cgroup.removed", "tenants/ghost") in kinds(repairs)
    assert ("tc.class.created", shaped_port) in kinds(repairs)
    assert ("tc.class.removed", shaped_port + 1) in kinds(repairs)
    quota_fix = [r for r in repairs if r.kind == "cgroup.value.repaired" and r.group == "tenants/beta"]
    assert [(r.detail["file"], r.detail["old"], r.detail["new"]) for r in quota_fix] == [("cpu.cfs_quota_us", "90000", "30000")]
    assert tree.read("tenants/alpha", "cpu.cfs_quota_us").strip() == "50000"
    assert tree.read("tenants/beta", "cpu.cfs_quota_us").strip() == "30000"
    assert ghost.wait(timeout=5) == -9
    assert host.shaper.ports() == {shaped_port: {"egress": 15_000_000, "ingress": 15_000_000}}
    assert host.reconcile(desired) == []


def test_controller_places_freezes_thaws_and_removes_a_tenant(host, spawner):
    status = host.status()
    assert status["cgroup_root"] == host.tree.root
    assert {name: m["state"] for name, m in status["mechanisms"].items()
            if name in ("cpu_limit", "memory_limit", "pids_limit", "freeze", "network_egress", "network_ingress")} == {
        "cpu_limit": "enforced", "memory_limit": "enforced", "pids_limit": "enforced", "freeze": "enforced",
        "network_egress": "enforced", "network_ingress": "enforced"}
    host.setup()
    port = 20000 + secrets.randbelow(20000)
    spec = TenantSpec("t1", HostQuota(cpu_percent=40, pids_max=50, network_mbps=8), placement="dedicated", port=port)
    assert {r.kind for r in host.set_tenant(spec)} >= {"cgroup.created", "tc.class.created"}
    instance = spawner.start(host.tree, "supervisor", BURN)     # started anywhere, then placed
    host.place(instance.pid, "t1")
    assert host.tree.procs("tenants/t1") == [instance.pid]
    host.freeze("t1")
    assert host.tree.is_frozen("tenants/t1")
    host.thaw("t1")
    assert not host.tree.is_frozen("tenants/t1")
    snapshot = host.usage("t1")
    assert snapshot.processes == 1 and snapshot.pids == 1 and snapshot.cpu_usage_ns > 0
    assert host.network()[port]["egress"].rate_bps == 8_000_000
    removed = host.remove("t1", port)
    assert {r.kind for r in removed} == {"cgroup.removed", "tc.class.removed"}
    assert instance.wait(timeout=5) == -9
    assert host.usage("t1") is None
    assert port not in host.network()


def test_controller_without_enforcement_reports_and_does_nothing():
    settings = SimpleNamespace(cgroup_root="", interface="lo", enforce=False)
    controller = HostController.from_settings(settings, data_dir="/tmp", caps=host_caps())
    assert controller.tree is None and controller.shaper is None
    assert {m["reason"] for m in controller.status()["mechanisms"].values()} == {"host.enforce is false"}
    assert controller.set_tenant(TenantSpec("t1", HostQuota(cpu_percent=10), placement="dedicated", port=20001)) == []
    assert controller.reconcile(DesiredState()) == [] and controller.usage("t1") is None


def test_adopt_self_moves_the_daemon_only_when_delegated(host, spawner):
    import dataclasses

    host.setup()
    daemon = spawner.start(host.tree, "shared", "sys.stdin.readline()\n")   # stands in for the daemon
    assert host.adopt_self(daemon.pid) is False                          # these hosts: not delegated
    assert host.tree.procs("supervisor") == []
    host.caps = dataclasses.replace(host.caps, delegated=True)
    assert host.adopt_self(daemon.pid) is True
    assert host.tree.procs("supervisor") == [daemon.pid]


def test_freeze_of_a_tenant_without_cgroup_is_a_clear_error(host):
    host.setup()
    with pytest.raises(LookupError, match="tenant nobody has no cgroup"):
        host.freeze("nobody")
