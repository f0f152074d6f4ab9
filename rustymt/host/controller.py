"""HostController: the one object the daemon drives for host enforcement.

    host = HostController.from_settings(cfg.host, data_dir=cfg.server.data_dir)
    host.status()                      # GET /api/v1/cdb/status -> "host"
    host.setup()                       # root, supervisor, shared, tenants/; tc root qdiscs
    host.adopt_self()                  # daemon -> <root>/supervisor when delegated (before READY=1)
    host.place(pid, tenant_id)         # a dedicated instance -> tenants/<id>; None -> shared
    host.set_tenant(spec)              # apply one tenant's quota + port shaping now
    host.freeze(tenant_id) / thaw(tenant_id) / kill(tenant_id)
    host.remove(tenant_id, port)       # terminate: kill, remove the cgroup and tc class
    host.usage(tenant_id)              # GroupUsage snapshot (None -> the shared group)
    host.network()                     # {port: {"egress"|"ingress": ClassCounters}}
    host.reconcile(DesiredState(...))  # every few seconds -> [Repair] to log/emit
    host.teardown()                    # graceful stop, after the instances stopped: remove what we made
    host.close()

Without root, without usable cgroups or with host.enforce = false, the
controller still answers: status() says why each mechanism is unavailable
and the mutating calls do nothing (returning no repairs), so the embedded
default runs everywhere and is never silent about it.
"""
from __future__ import annotations

import functools
import logging
import os
import threading

from rustymt.host import capabilities, ownership, usage
from rustymt.host.cgroupfs import CgroupTree, CgroupV1, CgroupV2
from rustymt.host.reconcile import SHARED, SUPERVISOR, TENANTS, DesiredState, Reconciler, Repair, TenantSpec, tenant_group

log = logging.getLogger("rustymt.host")


def serialized(method):
    """One host operation at a time: the reconcile thread and API calls share
    one netlink socket and the same cgroup files."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return locked


class HostController:
    def __init__(self, tree: CgroupTree | None, shaper=None, device: str | None = None,
                 caps: capabilities.Capabilities | None = None, enforce: bool = True, interface: str = "lo",
                 ledger: str | None = None):
        self.tree = tree if enforce else None
        self.shaper = shaper if enforce else None
        self.caps = caps
        self.enforce = enforce
        self.interface = interface
        self.reconciler = Reconciler(self.tree, self.shaper, device)
        self.ledger = ledger            # ownership record (ownership.py); None: this run's knowledge only
        self.owned: ownership.Ownership | None = None
        self._lock = threading.RLock()

    @classmethod
    def from_settings(cls, host_settings, data_dir: str = ".", netns: str | None = None,
                      caps: capabilities.Capabilities | None = None, ledger: str | None = None) -> "HostController":
        """Build from the `host` config section (cgroup_root, interface, enforce);
        `ledger` is where ownership is remembered across restarts (the daemon:
        <data_dir>/run/host-owned.json)."""
        caps = caps or capabilities.detect(data_dir)
        enforce = bool(host_settings.enforce) and caps.root_user
        root = host_settings.cgroup_root or caps.default_root
        tree: CgroupTree | None = None
        if enforce and caps.version == 2:
            tree = CgroupV2(root=root, mount=caps.v2_mount)
        elif enforce and caps.version == 1:
            tree = CgroupV1(root=root, mounts=caps.v1_mounts)
        shaper = None
        if enforce and all(caps.tc.get(kind) is None for kind in capabilities.TC_KINDS):
            from rustymt.host.tc import Shaper
            try:
                shaper = Shaper(host_settings.interface, netns=netns)
            except LookupError as exc:
                caps.tc = {kind: str(exc) for kind in capabilities.TC_KINDS}
        device = caps.disk.devno if caps.disk else None
        return cls(tree, shaper, device, caps, enforce, host_settings.interface, ledger)

    # -- reporting
    def status(self) -> dict:
        if self.caps is None:
            return {"mechanisms": {}}
        section = capabilities.report(self.caps, self.enforce, self.interface)
        section["cgroup_root"] = self.tree.root if self.tree else None
        return section

    # -- lifecycle
    @serialized
    def setup(self) -> list[Repair]:
        repairs: list[Repair] = []
        self._claim()
        if self.tree is not None:
            for group in (SUPERVISOR, SHARED, TENANTS):
                repairs += self.reconciler.ensure_group(group, None)
        if self.shaper is not None:
            self.shaper.setup()
        return repairs

    def _claim(self) -> None:
        """Decide, before making anything, which of the unmarked objects (the
        cgroup root, the ingress qdisc) are rustymt's: those missing now, or
        made by an earlier run (the ledger); save that. A foreign root qdisc
        on the interface turns shaping off instead of being replaced."""
        if self.tree is None and self.shaper is None:
            return
        if self.shaper is not None:
            foreign = self.shaper.foreign_root()
            if foreign:
                log.warning("host: network shaping off: %s", foreign)
                if self.caps is not None:
                    self.caps.tc["htb"] = foreign
                self.shaper.close()
                self.shaper = self.reconciler.shaper = None
        here = self._place_record()
        before = ownership.load(self.ledger, here) or here
        if self.tree is not None:
            here.root_created = before.root_created or not any(os.path.isdir(path) for path in self.tree.group_dirs(""))
        if self.shaper is not None:
            here.ingress_created = before.ingress_created or not self.shaper.has_ingress()
        ownership.save(self.ledger, here)
        self.owned = here

    def _place_record(self) -> ownership.Ownership:
        return ownership.Ownership(self.tree.root if self.tree else None, self.interface)

    @serialized
    def teardown(self) -> list[str]:
        """Graceful stop, after the instances have stopped: remove what
        setup() and the tenants made — every group under the root depth-first
        (the root only if rustymt created it; never a group this process still
        sits in, such as <root>/supervisor under systemd, which removes it
        once we exit), the root and ifb qdiscs, the ifb device, and the
        ingress qdisc if rustymt added it. Returns what was removed; the
        ownership record goes once everything is gone."""
        owned = self.owned or ownership.load(self.ledger, self._place_record())
        removed: list[str] = []
        failures: list[Exception] = []
        if self.tree is not None:
            kept = self._own_groups()
            if kept:
                log.info("host: cgroups kept while this process is in them: %s",
                         ", ".join(f"{self.tree.root}/{rel}".rstrip("/") for rel in sorted(kept)))
            root_too = bool(owned and owned.root_created) and "" not in kept
            try:
                removed += [f"cgroup {self.tree.root}/{rel}".rstrip("/") for rel in self.tree.prune(kept, root_too)]
            except OSError as exc:   # tc still goes; the record stays for the next start
                failures.append(exc)
        if self.shaper is not None:
            try:
                removed += self.shaper.teardown(ingress=bool(owned and owned.ingress_created))
            except Exception as exc:  # noqa: BLE001 - pyroute2 raises its own netlink errors
                failures.append(exc)
        for failure in failures[1:]:
            log.error("host teardown: %s", failure)
        if failures:
            raise failures[0]
        ownership.forget(self.ledger)
        self.owned = None
        return removed

    def _own_groups(self) -> frozenset[str]:
        """The groups under the root that hold this process, with their
        ancestors ("" = the root), in any hierarchy."""
        keep: set[str] = set()
        root = self.tree.root.rstrip("/")
        for path in capabilities.own_cgroup(self.tree.version).values():
            if path == self.tree.root or root == "":
                rel = path.strip("/") if root == "" else ""
            elif path.startswith(root + "/"):
                rel = path[len(root) + 1:]
            else:
                continue
            parts = [part for part in rel.split("/") if part]
            keep.update("/".join(parts[:depth]) for depth in range(len(parts) + 1))
        return frozenset(keep)

    @serialized
    def adopt_self(self, pid: int | None = None) -> bool:
        """Move the daemon (`pid`, default this process) into
        <root>/supervisor — only when its cgroup was delegated to it (then the
        root is its own cgroup and v2 forbids processes beside child groups).
        Call before READY=1."""
        if self.tree is None or self.caps is None or not self.caps.delegated:
            return False
        # the root is our own cgroup and still holds us: leave it first, then
        # hand the controllers down (v2 refuses that while it has processes).
        # Instances must not be started before this.
        self.tree.ensure(SUPERVISOR, delegate=False)
        self.tree.place(SUPERVISOR, os.getpid() if pid is None else pid)
        self.tree.ensure(SUPERVISOR)
        return True

    def group(self, tenant_id: str | None) -> str:
        return SHARED if tenant_id is None else tenant_group(tenant_id)

    @serialized
    def place(self, pid: int, tenant_id: str | None = None) -> None:
        if self.tree is not None:
            self.tree.ensure(self.group(tenant_id))
            self.tree.place(self.group(tenant_id), pid)

    @serialized
    def set_tenant(self, spec: TenantSpec) -> list[Repair]:
        repairs: list[Repair] = []
        if self.tree is not None and spec.placement == "dedicated":
            repairs += self.reconciler.ensure_group(tenant_group(spec.tenant_id), spec.quota, spec.pids, spec.tenant_id)
        if spec.port and spec.quota.network_mbps:
            repairs += self.reconciler.ensure_port(spec.port, spec.quota.network_mbps, spec.tenant_id)
        return repairs

    @serialized
    def freeze(self, tenant_id: str) -> None:
        """Suspend a dedicated tenant's processes (LookupError: no cgroup)."""
        if self.tree is not None:
            self.tree.freeze(self._existing(tenant_id), True)

    @serialized
    def thaw(self, tenant_id: str) -> None:
        if self.tree is not None:
            self.tree.freeze(self._existing(tenant_id), False)

    def _existing(self, tenant_id: str) -> str:
        group = tenant_group(tenant_id)
        if not self.tree.exists(group):
            raise LookupError(f"tenant {tenant_id} has no cgroup (not dedicated, or removed)")
        return group

    @serialized
    def kill(self, tenant_id: str) -> None:
        if self.tree is not None and self.tree.exists(tenant_group(tenant_id)):
            self.tree.kill(tenant_group(tenant_id))

    @serialized
    def remove(self, tenant_id: str, port: int | None = None) -> list[Repair]:
        """Terminate at the host: kill the tenant's processes, remove its
        cgroup and its tc class."""
        repairs: list[Repair] = []
        if self.tree is not None:
            repairs += self.reconciler.remove_group(tenant_group(tenant_id), tenant_id)
        if port:
            repairs += self.reconciler.remove_port(port, tenant_id)
        return repairs

    # -- observation
    @serialized
    def usage(self, tenant_id: str | None = None) -> usage.GroupUsage | None:
        if self.tree is None or not self.tree.exists(self.group(tenant_id)):
            return None
        return usage.group_usage(self.tree, self.group(tenant_id))

    @serialized
    def network(self) -> dict:
        return self.shaper.counters() if self.shaper is not None else {}

    @serialized
    def reconcile(self, desired: DesiredState) -> list[Repair]:
        return self.reconciler.run(desired)

    @serialized
    def close(self) -> None:
        if self.shaper is not None:
            self.shaper.close()
