"""Cost of one steady-state reconcile pass (20 dedicated tenants, cgroup v1)
against the floor any reconcile has to pay: reading every mapped file once.
Run as root: .venv/bin/python -m pytest bench/test_host_reconcile.py -s"""
import secrets
import statistics
import time

import pytest

from rustymt.host import cgroupmap
from rustymt.host.cgroupfs import CgroupV1
from rustymt.host.cgroupmap import HostQuota
from rustymt.host.reconcile import DesiredState, Reconciler, TenantSpec, tenant_group
from tests.conftest import require_host
from tests.host.conftest import host_caps

pytestmark = pytest.mark.host

TENANTS = 20


def test_steady_state_reconcile_vs_reading_the_files(benchmark):
    caps = host_caps()
    require_host(caps.root_user and caps.version == 1, "needs root and the cgroup v1 driver")
    tree = CgroupV1(root=f"/rustymt-test-{secrets.token_hex(4)}", mounts=caps.v1_mounts)
    desired = DesiredState(tenants=tuple(
        TenantSpec(f"t{i}", HostQuota(cpu_percent=10 + i, memory_mb=64 + i, pids_max=100), placement="dedicated")
        for i in range(TENANTS)))
    reconciler = Reconciler(tree)
    try:
        assert reconciler.run(desired)          # first pass creates
        assert reconciler.run(desired) == []    # then it is read-only
        files = [(tenant_group(spec.tenant_id), file) for spec in desired.tenants
                 for file, _value in cgroupmap.v1_writes(spec.quota)]

        def read_all():
            for group, file in files:
                tree.read(group, file)

        baseline = []
        for _ in range(20):
            start = time.perf_counter()
            read_all()
            baseline.append(time.perf_counter() - start)
        result = benchmark.pedantic(reconciler.run, args=(desired,), rounds=20, iterations=1)
        assert result == []
        ratio = benchmark.stats.stats.median / statistics.median(baseline)
        benchmark.extra_info["ratio_to_reading_files"] = round(ratio, 2)
        print(f"\nreconcile pass, {TENANTS} tenants: {benchmark.stats.stats.median * 1e3:.2f} ms, "
              f"{ratio:.1f}x reading the {len(files)} mapped files once")
    finally:
        tree.remove_root()
