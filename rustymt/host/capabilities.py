"""What this host can enforce, detected rather than assumed.

* cgroup layout by statfs on /sys/fs/cgroup: cgroup2 magic -> unified (v2);
  a tmpfs holding v1 hierarchies (and perhaps cgroup2 at ./unified) ->
  hybrid or legacy. The driver uses v2 when the cgroup2 mount has the
  resource controllers, else v1 (hybrid systems keep them on v1).
* usable controllers per hierarchy: v2 from cgroup.controllers; v1 from
  /proc/self/mountinfo + /proc/cgroups (enabled column).
* own cgroup (/proc/self/cgroup) and whether systemd delegated it: systemd
  (>= 251) marks a delegated cgroup with the xattr trusted.delegate=1 (or
  user.delegate=1 for user managers); v1 has no delegation to speak of.
* tc kinds by trying them in a throwaway network namespace: htb, u32,
  ingress, ifb, mirred. Nothing touches the host's own interfaces.
* the whole disk behind the data dir (blockdev.py).

`report()` turns that into the `host` section of GET /api/v1/cdb/status:
every mechanism `enforced` or `unavailable` with the reason, never silent.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import os
import secrets

from rustymt.host import blockdev, cgroupmap

CGROUP_MOUNT = "/sys/fs/cgroup"
CGROUP2_SUPER_MAGIC = 0x63677270
CGROUP_SUPER_MAGIC = 0x27E0EB
TMPFS_MAGIC = 0x01021994
TC_KINDS = ("htb", "u32", "ingress", "ifb", "mirred")


def fs_magic(path: str) -> int | None:
    """statfs(2) f_type (the first field of struct statfs on Linux)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    buffer = ctypes.create_string_buffer(256)
    if libc.statfs(os.fsencode(path), buffer) != 0:
        return None
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF


def cgroup_layout(mount: str = CGROUP_MOUNT) -> str:
    """unified | hybrid | legacy | none."""
    magic = fs_magic(mount)
    if magic == CGROUP2_SUPER_MAGIC:
        return "unified"
    if magic == TMPFS_MAGIC:
        return "hybrid" if fs_magic(os.path.join(mount, "unified")) == CGROUP2_SUPER_MAGIC else "legacy"
    return "none"


def v2_mount(mount: str = CGROUP_MOUNT) -> str | None:
    layout = cgroup_layout(mount)
    if layout == "unified":
        return mount
    if layout == "hybrid":
        return os.path.join(mount, "unified")
    return None


def v1_mounts(mountinfo: str = "/proc/self/mountinfo") -> dict[str, str]:
    """{controller: mount point} for the v1 hierarchies rustymt can use."""
    enabled = set()
    try:
        with open("/proc/cgroups") as handle:
            for line in handle:
                if not line.startswith("#"):
                    name, _hier, _num, on = line.split()
                    if on == "1":
                        enabled.add(name)
    except FileNotFoundError:
        pass
    mounts: dict[str, str] = {}
    with open(mountinfo) as handle:
        for line in handle:
            fields = line.split()
            tail = fields[fields.index("-") + 1:]
            if tail[0] != "cgroup":
                continue
            for option in tail[2].split(","):
                if option in cgroupmap.V1_CONTROLLERS and option in enabled:
                    mounts.setdefault(option, fields[4])
    return mounts


def own_cgroup(version: int, proc_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """v2: {"": path}; v1: {controller: path}."""
    paths: dict[str, str] = {}
    with open(proc_cgroup) as handle:
        for line in handle:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            if version == 2 and controllers == "":
                paths[""] = path
            elif version == 1:
                for name in controllers.split(","):
                    if name:
                        paths[name] = path
    return paths


def is_delegated(directory: str) -> bool:
    for attribute in ("trusted.delegate", "user.delegate"):
        try:
            if os.getxattr(directory, attribute).strip(b"\0") == b"1":
                return True
        except OSError:
            continue
    return False


@dataclasses.dataclass
class Capabilities:
    root_user: bool
    layout: str                          # unified | hybrid | legacy | none
    version: int | None                  # the cgroup driver rustymt uses
    v2_mount: str | None
    v2_controllers: tuple[str, ...]      # offered at the cgroup2 mount's top
    v1_mounts: dict[str, str]            # controller -> hierarchy
    own_cgroup: str | None               # v2 path, or the v1 cpu hierarchy's
    delegated: bool
    default_root: str                    # what host.cgroup_root "" means here
    tc: dict[str, str | None]            # kind -> None (works) or why not
    disk: blockdev.BlockDevice | None
    disk_reason: str | None

    def usable(self, controller: str) -> bool:
        if self.version == 2:
            return controller in self.v2_controllers or controller in ("freezer", "kill")
        if self.version == 1:
            return controller in self.v1_mounts
        return False


def probe_tc() -> dict[str, str | None]:
    """Try each tc kind in a throwaway network namespace; None = works."""
    try:
        from pyroute2 import NetNS, netns
    except ImportError as exc:
        return {kind: f"pyroute2 missing: {exc}" for kind in TC_KINDS}
    name = f"rustymt-probe-{secrets.token_hex(4)}"
    results: dict[str, str | None] = {}
    try:
        netns.create(name)
    except Exception as exc:  # no CAP_SYS_ADMIN, no netns support
        return {kind: f"cannot create a network namespace: {exc}" for kind in TC_KINDS}
    try:
        with NetNS(name) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")

            def attempt(kind, action):
                try:
                    action()
                    results[kind] = None
                except Exception as exc:
                    results[kind] = f"{type(exc).__name__}: {exc}"

            attempt("htb", lambda: ipr.tc("add", "htb", index=lo, handle=0x10000, default=0x99))
            attempt("u32", lambda: ipr.tc("add-filter", "u32", index=lo, parent=0x10000, prio=1,
                                           protocol=0x0800, target=0x10001, keys=["0x0/0x0+0"]))
            attempt("ingress", lambda: ipr.tc("add", "ingress", index=lo, handle=0xFFFF0000))
            attempt("ifb", lambda: ipr.link("add", ifname="rmtprobe0", kind="ifb"))
            ifb = ipr.link_lookup(ifname="rmtprobe0")
            if ifb and results.get("ingress") is None:
                attempt("mirred", lambda: ipr.tc(
                    "add-filter", "u32", index=lo, parent=0xFFFF0000, prio=1, protocol=0x0800, target=0x10001,
                    keys=["0x0/0x0+0"],
                    action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": ifb[0]}))
            else:
                results["mirred"] = "needs ingress and ifb"
    finally:
        try:
            netns.remove(name)
        except Exception:
            pass
    return results


def detect(data_dir: str = ".", probe_network: bool = True) -> Capabilities:
    layout = cgroup_layout()
    mount2 = v2_mount()
    v2_controllers: tuple[str, ...] = ()
    if mount2:
        try:
            with open(os.path.join(mount2, "cgroup.controllers")) as handle:
                v2_controllers = tuple(handle.read().split())
        except OSError:
            pass
    mounts1 = v1_mounts() if layout in ("hybrid", "legacy") else {}
    # v2 when it has the resource controllers; hybrid hosts keep them on v1
    if mount2 and {"cpu", "memory"} <= set(v2_controllers):
        version = 2
    elif mounts1:
        version = 1
    else:
        version = None
    own = None
    delegated = False
    if version == 2:
        own = own_cgroup(2).get("")
        delegated = bool(own and own != "/" and is_delegated(mount2 + own))
    elif version == 1:
        own = own_cgroup(1).get("cpu")
    default_root = own if delegated else "/rustymt"
    try:
        disk, disk_reason = blockdev.device_for_path(data_dir), None
    except (OSError, blockdev.NoBlockDevice) as exc:
        disk, disk_reason = None, str(exc)
    tc = probe_tc() if probe_network and os.geteuid() == 0 else {
        kind: "not probed (needs root)" if os.geteuid() != 0 else "not probed" for kind in TC_KINDS}
    return Capabilities(
        root_user=os.geteuid() == 0, layout=layout, version=version, v2_mount=mount2,
        v2_controllers=v2_controllers, v1_mounts=mounts1, own_cgroup=own, delegated=delegated,
        default_root=default_root, tc=tc, disk=disk, disk_reason=disk_reason,
    )


# mechanism -> (v2 controller/file, v1 controller/file)
MECHANISMS = {
    "cpu_limit": (("cpu", "cpu.max"), ("cpu", "cpu.cfs_quota_us")),
    "cpu_weight": (("cpu", "cpu.weight"), ("cpu", "cpu.shares")),
    "cpu_usage": (("cpu", "cpu.stat"), ("cpuacct", "cpuacct.usage")),
    "memory_limit": (("memory", "memory.max"), ("memory", "memory.limit_in_bytes")),
    "io_throttle": (("io", "io.max"), ("blkio", "blkio.throttle.*_iops_device")),
    "pids_limit": (("pids", "pids.max"), ("pids", "pids.max")),
    "freeze": (("freezer", "cgroup.freeze"), ("freezer", "freezer.state")),
}


def report(caps: Capabilities, enforce: bool = True, interface: str = "lo") -> dict:
    """The `host` section of GET /api/v1/cdb/status."""
    mechanisms: dict[str, dict] = {}

    def state(name, reason, via):
        mechanisms[name] = {"state": "unavailable" if reason else "enforced", "via": via}
        if reason:
            mechanisms[name]["reason"] = reason

    general = None
    if not enforce:
        general = "host.enforce is false"
    elif not caps.root_user:
        general = "not running as root"
    elif caps.version is None:
        general = f"no usable cgroup controllers (layout {caps.layout})"
    for name, (v2, v1) in MECHANISMS.items():
        controller, file = v2 if caps.version == 2 else v1
        reason = general
        if reason is None and not caps.usable(controller):
            reason = f"cgroup v{caps.version} controller {controller} is not available"
        if reason is None and name == "io_throttle" and caps.disk is None:
            reason = f"no block device behind the data dir: {caps.disk_reason}"
        via = f"cgroup v{caps.version} {file}" if caps.version else file
        if name == "io_throttle" and caps.disk is not None:
            via += f" on {caps.disk.name} ({caps.disk.devno})"
            if caps.version == 1:
                via += "; v1 throttles direct IO only"
        state(name, reason, via)
    for name, kinds in (("network_egress", ("htb", "u32")), ("network_ingress", ("htb", "u32", "ingress", "ifb", "mirred"))):
        missing = [f"{kind}: {caps.tc.get(kind)}" for kind in kinds if caps.tc.get(kind) is not None]
        reason = "host.enforce is false" if not enforce else ("; ".join(missing) or None)
        direction = "source" if name == "network_egress" else "destination"
        state(name, reason, f"tc htb on {interface}, u32 on TCP {direction} port" + ("" if name == "network_egress" else " via ifb"))
    return {
        "cgroup_layout": caps.layout,
        "cgroup_version": caps.version,
        "own_cgroup": caps.own_cgroup,
        "delegated": caps.delegated,
        "data_disk": caps.disk.devno if caps.disk else None,
        "mechanisms": mechanisms,
    }
