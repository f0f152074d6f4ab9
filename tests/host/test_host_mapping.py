"""Pure host-layer logic, no root: quota -> cgroup files (v1 and v2), the
shares<->weight conversion, read-back comparison, tc keys, sysfs disk
mapping on a synthetic tree, the status report, usage parsing."""
import os

import pytest

from rustymt.host import blockdev, capabilities, cgroupmap, reconcile, tc, usage
from rustymt.host.cgroupfs import check_group
from rustymt.host.cgroupmap import HostQuota

FULL = HostQuota(cpu_percent=20, cpu_shares=256, memory_mb=64, iops=100, read_bps=1 << 20, write_bps=2 << 20,
                 pids_max=5, cpuset_cpus="0", network_mbps=10)


def test_v2_full_quota_maps_to_exact_files_in_safe_order():
    assert cgroupmap.v2_writes(FULL, "7:0") == [
        ("cpuset.cpus", "0"),
        ("cpu.max", "20000 100000"),
        ("cpu.weight", "25"),
        ("memory.high", str(int(64 * 1024 * 1024 * 0.9) // 4096 * 4096)),
        ("memory.max", str(64 * 1024 * 1024)),
        ("io.max", "7:0 rbps=1048576 wbps=2097152 riops=100 wiops=100"),
        ("pids.max", "5"),
    ]


def test_v2_unset_quota_writes_the_unlimited_values_and_skips_io_without_a_disk():
    assert cgroupmap.v2_writes(HostQuota()) == [
        ("cpu.max", "max 100000"), ("cpu.weight", "100"),
        ("memory.high", "max"), ("memory.max", "max"), ("pids.max", "max"),
    ]
    assert ("io.max", "254:0 rbps=max wbps=max riops=max wiops=max") in cgroupmap.v2_writes(HostQuota(), "254:0")


def test_v1_full_quota_maps_to_exact_files():
    assert cgroupmap.v1_writes(FULL, "7:0") == [
        ("cpuset.cpus", "0"),
        ("cpu.cfs_period_us", "100000"),
        ("cpu.cfs_quota_us", "20000"),
        ("cpu.shares", "256"),
        ("memory.limit_in_bytes", str(64 * 1024 * 1024)),
        ("blkio.throttle.read_iops_device", "7:0 100"),
        ("blkio.throttle.write_iops_device", "7:0 100"),
        ("blkio.throttle.read_bps_device", "7:0 1048576"),
        ("blkio.throttle.write_bps_device", "7:0 2097152"),
        ("pids.max", "5"),
    ]


def test_v1_unset_quota_clears_limits_and_device_rules():
    writes = dict(cgroupmap.v1_writes(HostQuota(), "7:0"))
    assert writes["cpu.cfs_quota_us"] == "-1"
    assert writes["cpu.shares"] == "1024"
    assert writes["memory.limit_in_bytes"] == "-1"
    assert writes["blkio.throttle.read_iops_device"] == "7:0 0"
    assert writes["pids.max"] == "max"


def test_freeze_files_per_version():
    assert cgroupmap.freeze_writes(2, True) == [("cgroup.freeze", "1")]
    assert cgroupmap.freeze_writes(1, False) == [("freezer.state", "THAWED")]


def test_cpu_quota_is_clamped_to_the_kernel_minimum_and_scales_past_one_core():
    assert cgroupmap.cpu_quota_us(0.5) == 1000
    assert cgroupmap.cpu_quota_us(250) == 250_000


def test_shares_weight_conversion_is_systemds():
    assert cgroupmap.shares_to_weight(1024) == 100
    assert cgroupmap.shares_to_weight(256) == 25
    assert cgroupmap.shares_to_weight(4096) == 400
    assert cgroupmap.shares_to_weight(2) == 1            # clamped up
    assert cgroupmap.shares_to_weight(262144) == 10000   # clamped down
    assert cgroupmap.weight_to_shares(100) == 1024
    assert cgroupmap.weight_to_shares(10000) == 102400
    assert cgroupmap.weight_to_shares(1) == 10
    for shares in (256, 512, 1024, 2048, 8192):
        assert cgroupmap.weight_to_shares(cgroupmap.shares_to_weight(shares)) == shares


@pytest.mark.parametrize("field,value", [("cpu_percent", 0), ("memory_mb", -1), ("iops", True), ("pids_max", 0)])
def test_quota_rejects_non_positive_values(field, value):
    with pytest.raises(ValueError, match=field):
        HostQuota(**{field: value})


def test_quota_rejects_shares_out_of_range():
    with pytest.raises(ValueError, match="cpu_shares"):
        HostQuota(cpu_shares=1)


def test_quota_from_the_spec_quota_object():
    quota = HostQuota.from_quota({"cpu_percent": 200, "memory_mb": 4096, "storage_gb": 100, "iops": 3000,
                                  "network_mbps": 250, "max_connections": 100}, cpu_shares=2048)
    assert quota == HostQuota(cpu_percent=200, cpu_shares=2048, memory_mb=4096, iops=3000, network_mbps=250)


@pytest.mark.parametrize("file,wanted,actual,same", [
    ("memory.limit_in_bytes", "-1", "9223372036854771712\n", True),
    ("memory.limit_in_bytes", "67108864", "67108864\n", True),
    ("memory.limit_in_bytes", "67108865", "67108864\n", True),   # kernel rounds down to pages
    ("memory.max", "max", "max\n", True),
    ("memory.max", "67108864", "max\n", False),
    ("blkio.throttle.read_iops_device", "7:0 100", "7:0 100\n8:0 5\n", True),
    ("blkio.throttle.read_iops_device", "7:0 0", "8:0 5\n", True),      # rule removed = 0
    ("blkio.throttle.read_iops_device", "7:0 100", "7:0 90\n", False),
    ("io.max", "7:0 rbps=max wbps=max riops=100 wiops=max", "7:0 riops=100\n", True),
    ("io.max", "7:0 rbps=max wbps=max riops=max wiops=max", "", True),
    ("io.max", "7:0 rbps=max wbps=max riops=100 wiops=100", "7:0 riops=100\n", False),
    ("cpu.max", "max 100000", "max 100000\n", True),
    ("cpu.cfs_quota_us", "20000", "90000\n", False),
    ("cpuset.cpus", "0-2", "0,1,2\n", True),
])
def test_read_back_comparison_knows_kernel_normalisation(file, wanted, actual, same):
    assert cgroupmap.same_value(file, wanted, actual) is same


def test_controller_of_routes_v1_files_to_their_hierarchy():
    assert cgroupmap.controller_of("blkio.throttle.read_iops_device") == "blkio"
    assert cgroupmap.controller_of("cpuacct.usage") == "cpuacct"


@pytest.mark.parametrize("name", ["", "/", "..", "a/../b", "t 1", "a/./b", "x" * 200])
def test_group_names_cannot_escape_the_root(name):
    with pytest.raises(ValueError):
        check_group(name)


def test_group_names_accept_tenant_ids():
    assert check_group("/tenants/tenant_12345/") == "tenants/tenant_12345"


def test_tc_u32_keys_match_ip_version_tcp_and_port():
    assert tc.port_keys(20001, "egress", 4) == ["0x45000000/0xff000000+0", "0x00060000/0x00ff0000+8", "0x4e210000/0xffff0000+20"]
    assert tc.port_keys(20001, "ingress", 4)[-1] == "0x00004e21/0x0000ffff+20"
    assert tc.port_keys(443, "ingress", 6) == ["0x60000000/0xf0000000+0", "0x00000600/0x0000ff00+4", "0x000001bb/0x0000ffff+40"]
    with pytest.raises(ValueError):
        tc.port_keys(70000, "egress", 4)


def test_tc_names_and_rates():
    assert tc.classid(20001) == 0xA74E21
    assert tc.ifb_name("enp0s31f6-long") == "rmt-ifb-enp0s31"
    assert tc.mbps_rate(12.5) == "12500kbit"
    assert tc.burst_bytes(10) == 2 * 65536 + 1600
    assert tc.burst_bytes(100_000) == 125_000_000  # 10 ms at 100 Gbit/s


def test_shared_group_gets_the_aggregate_of_its_tenants():
    quotas = [HostQuota(cpu_percent=50, memory_mb=100, iops=10, cpu_shares=512),
              HostQuota(cpu_percent=25, memory_mb=50, iops=5)]
    assert reconcile.aggregate(quotas) == HostQuota(cpu_percent=75, memory_mb=150, iops=15, cpu_shares=1536)
    assert reconcile.aggregate(quotas + [HostQuota()]).cpu_percent is None
    assert reconcile.aggregate([]) == HostQuota()


def test_tenant_spec_validates_id_and_placement():
    with pytest.raises(ValueError):
        reconcile.TenantSpec("../etc", HostQuota())
    with pytest.raises(ValueError):
        reconcile.TenantSpec("t1", HostQuota(), placement="private")


def _fake_sysfs(tmp_path):
    """/sys/dev/block with a disk + partition, a loop device and a dm device."""
    devices = tmp_path / "devices"
    disk = devices / "vda"
    (disk / "vda1").mkdir(parents=True)
    (disk / "dev").write_text("254:0\n")
    (disk / "queue").mkdir()
    (disk / "vda1" / "dev").write_text("254:1\n")
    (disk / "vda1" / "partition").write_text("1\n")
    loop = devices / "loop3"
    (loop / "loop").mkdir(parents=True)
    (loop / "dev").write_text("7:3\n")
    (loop / "loop" / "backing_file").write_text("/srv/img.raw\n")
    dm = devices / "dm-0"
    (dm / "slaves" / "vda1").mkdir(parents=True)
    (dm / "dev").write_text("253:0\n")
    links = tmp_path / "dev-block"
    links.mkdir()
    for devno, target in (("254:0", disk), ("254:1", disk / "vda1"), ("7:3", loop), ("253:0", dm)):
        os.symlink(target, links / devno)
    return str(links)


def test_partition_maps_to_its_whole_disk(tmp_path):
    sysfs = _fake_sysfs(tmp_path)
    device = blockdev.whole_disk("254:1", sysfs)
    assert (device.devno, device.name, device.kind, device.partition) == ("254:0", "vda", "disk", "vda1")
    assert blockdev.whole_disk("254:0", sysfs).partition is None


def test_loop_and_dm_stay_the_top_of_the_stack(tmp_path):
    sysfs = _fake_sysfs(tmp_path)
    loop = blockdev.whole_disk("7:3", sysfs)
    assert (loop.devno, loop.kind, loop.backing) == ("7:3", "loop", ("/srv/img.raw",))
    dm = blockdev.whole_disk("253:0", sysfs)
    assert (dm.devno, dm.kind, dm.backing) == ("253:0", "dm", ("vda1",))


def test_unknown_device_is_a_clear_error(tmp_path):
    with pytest.raises(blockdev.NoBlockDevice, match="9:9"):
        blockdev.whole_disk("9:9", _fake_sysfs(tmp_path))


def _caps(**changes):
    base = dict(root_user=True, layout="hybrid", version=1, v2_mount=None, v2_controllers=(),
                v1_mounts={name: f"/sys/fs/cgroup/{name}" for name in cgroupmap.V1_CONTROLLERS},
                own_cgroup="/", delegated=False, default_root="/rustymt",
                tc={kind: None for kind in capabilities.TC_KINDS},
                disk=blockdev.BlockDevice("254:0", "vda", "disk", None, ()), disk_reason=None)
    base.update(changes)
    return capabilities.Capabilities(**base)


def test_report_lists_every_mechanism_enforced_with_how():
    section = capabilities.report(_caps())
    assert section["cgroup_version"] == 1
    assert {m["state"] for m in section["mechanisms"].values()} == {"enforced"}
    assert section["mechanisms"]["io_throttle"]["via"].endswith("v1 throttles direct IO only")
    assert set(section["mechanisms"]) == set(capabilities.MECHANISMS) | {"network_egress", "network_ingress"}


def test_report_says_why_a_mechanism_is_unavailable():
    mounts = {name: f"/sys/fs/cgroup/{name}" for name in ("cpu", "memory", "blkio")}
    section = capabilities.report(_caps(v1_mounts=mounts, disk=None, disk_reason="tmpfs",
                                        tc={**{kind: None for kind in capabilities.TC_KINDS}, "ifb": "no ifb"}))
    mechanisms = section["mechanisms"]
    assert mechanisms["cpu_limit"]["state"] == "enforced"
    assert mechanisms["pids_limit"] == {"state": "unavailable", "via": "cgroup v1 pids.max",
                                        "reason": "cgroup v1 controller pids is not available"}
    assert "tmpfs" in mechanisms["io_throttle"]["reason"]
    assert mechanisms["network_egress"]["state"] == "enforced"
    assert "ifb: no ifb" in mechanisms["network_ingress"]["reason"]


@pytest.mark.parametrize("changes,reason", [
    ({"root_user": False}, "not running as root"),
    ({"version": None, "layout": "none"}, "no usable cgroup controllers (layout none)"),
])
def test_report_without_privileges_or_cgroups_is_never_silent(changes, reason):
    section = capabilities.report(_caps(**changes))
    assert section["mechanisms"]["cpu_limit"] == {"state": "unavailable", "via": section["mechanisms"]["cpu_limit"]["via"],
                                                  "reason": reason}


def test_report_with_enforcement_off():
    mechanisms = capabilities.report(_caps(), enforce=False)["mechanisms"]
    assert {m["reason"] for m in mechanisms.values()} == {"host.enforce is false"}


def test_v1_mountinfo_parsing(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    with open("/proc/cgroups") as handle:
        enabled = {line.split()[0] for line in handle if not line.startswith("#") and line.split()[3] == "1"}
    mounts = capabilities.v1_mounts(str(mountinfo))
    assert mounts == {name: "/sys/fs/cgroup/cpu,cpuacct" for name in ("cpu", "cpuacct") if name in enabled}


def test_usage_parsers():
    assert usage._v1_blkio_totals("7:0 Read 10\n7:0 Write 2\n7:0 Sync 12\n8:0 Read 1\nTotal 13\n") == (11, 2)
    assert usage._v2_io_totals("7:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n8:0 rbytes=1 wbytes=2 rios=3 wios=4\n") == {
        "rbytes": 4097, "wbytes": 2, "rios": 4, "wios": 4}
    assert usage._keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")["oom_kill"] == 3


def test_usage_rates_from_two_snapshots():
    before = usage.GroupUsage(at=10.0, cpu_usage_ns=0, read_ios=0, write_ios=0)
    after = usage.GroupUsage(at=12.0, cpu_usage_ns=500_000_000, read_ios=150, write_ios=50)
    assert usage.cpu_percent(before, after) == 25.0
    assert usage.iops(before, after) == 100.0
    assert usage.cpu_percent(after, before) is None


def test_tree_root_accepts_systemd_names_and_rejects_climbing():
    from rustymt.host.cgroupfs import CgroupV2

    assert CgroupV2(root="/user.slice/user@0.service/rustymt", mount="/x").root == "/user.slice/user@0.service/rustymt"
    assert CgroupV2(root="", mount="/x").root == "/"
    assert CgroupV2(root="/rustymt/", mount="/x").file_path("tenants/a", "cpu.max") == "/x/rustymt/tenants/a/cpu.max"
    with pytest.raises(ValueError):
        CgroupV2(root="/rustymt/../etc", mount="/x")
