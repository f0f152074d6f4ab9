"""The v2 writer on a real cgroup2 mount without resource controllers (the
hybrid mount of these machines): tree layout, placement, cgroup.freeze,
cgroup.kill, removal, and mapped files whose controller is missing reported
per file rather than crashing. The resource controllers themselves are
exercised in the qemu VM (developer "vm")."""
import os
import secrets

import pytest

from rustymt.host import cgroupmap, usage
from rustymt.host.cgroupfs import CgroupV2
from rustymt.host.cgroupmap import HostQuota
from tests.conftest import require_host, wait_for
from tests.host.conftest import host_caps

pytestmark = pytest.mark.host

BURN = "while True:\n    pass\n"


@pytest.fixture
def v2_tree():
    caps = host_caps()
    require_host(caps.root_user, "needs root")
    require_host(caps.v2_mount is not None, f"no cgroup2 mount (layout {caps.layout})")
    require_host(os.path.exists(os.path.join(caps.v2_mount, "cgroup.subtree_control")), "cgroup2 mount unusable")
    tree = CgroupV2(root=f"/rustymt-test-{secrets.token_hex(4)}", mount=caps.v2_mount)
    try:
        yield tree
    finally:
        tree.remove_root()


def cpu_ns(tree, group):
    return usage.group_usage(tree, group).cpu_usage_ns


def test_v2_tree_place_freeze_thaw_kill_remove(v2_tree, spawner):
    assert v2_tree.ensure("tenants/a") is True
    assert v2_tree.ensure("tenants/a") is False
    assert v2_tree.children("") == ["tenants"]
    burner = spawner.start(v2_tree, "tenants/a", BURN)
    assert v2_tree.procs("tenants/a") == [burner.pid]
    wait_for(lambda: cpu_ns(v2_tree, "tenants/a") > 50_000_000, 10, what="burner to run")
    v2_tree.freeze("tenants/a")
    assert v2_tree.is_frozen("tenants/a")
    frozen_at = cpu_ns(v2_tree, "tenants/a")
    v2_tree.ensure("clock")
    spawner.start(v2_tree, "clock", BURN)
    wait_for(lambda: cpu_ns(v2_tree, "clock") >= 200_000_000, 10, what="reference cpu")
    assert cpu_ns(v2_tree, "tenants/a") == frozen_at
    v2_tree.freeze("tenants/a", False)
    wait_for(lambda: cpu_ns(v2_tree, "tenants/a") - frozen_at > 50_000_000, 10, what="thawed burner")
    v2_tree.freeze("tenants/a")
    v2_tree.kill("tenants/a")                      # cgroup.kill: works on a frozen group too
    assert burner.wait(timeout=5) == -9
    assert v2_tree.remove("tenants") is True
    assert v2_tree.children("") == ["clock"]


def test_v2_missing_controller_files_are_reported_per_file(v2_tree):
    v2_tree.ensure("tenants/b")
    offered = set(v2_tree.read("tenants/b", "cgroup.controllers").split())
    outcomes = v2_tree.apply("tenants/b", cgroupmap.v2_writes(HostQuota(cpu_percent=20, pids_max=5)))
    for outcome in outcomes:
        if cgroupmap.controller_of(outcome.file) in offered:
            assert outcome.error is None
        else:
            assert outcome.error.startswith("ENOENT"), outcome
