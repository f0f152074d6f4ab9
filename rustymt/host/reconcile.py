"""Desired host state vs actual -> repairs, each returned as an event.

Desired state is what the catalog says (a list of TenantSpec); actual state is
read back from cgroupfs and tc every cycle, never remembered, so a hand
deletion or a hand edit is seen at the next pass. One pass:

1. groups: <root>/supervisor, <root>/shared and <root>/tenants/<id> for every
   dedicated tenant exist (created parents-first) -> `cgroup.created`;
2. values: every mapped file reads back as wanted, else it is rewritten ->
   `cgroup.value.repaired` (old and new value in the detail); the shared
   group gets the aggregate of its tenants' quotas unless one is given;
3. processes: each listed pid is in its group -> `process.placed`;
4. leftovers: anything else under the root (or under tenants/) is a group
   rustymt made for a tenant that is gone: its processes are killed and it is
   removed -> `cgroup.removed`;
5. network: each tenant with a port and network_mbps has its class at that
   rate and its filters both ways -> `tc.class.created` / `tc.class.repaired`;
   rustymt classes for ports nobody has any more -> `tc.class.removed`.

What could not be done is a `repair.failed` event with the reason (for
example a v1 memory limit below current usage); the next pass tries again.
Nothing outside rustymt's root and rustymt's tc handle is read for
changes or touched.
"""
from __future__ import annotations

import dataclasses
import errno
import logging

from rustymt.host import cgroupmap
from rustymt.host.cgroupfs import CgroupTree, check_group
from rustymt.host.cgroupmap import HostQuota

log = logging.getLogger("rustymt.host.reconcile")

SUPERVISOR, SHARED, TENANTS = "supervisor", "shared", "tenants"


@dataclasses.dataclass(frozen=True)
class TenantSpec:
    tenant_id: str
    quota: HostQuota
    placement: str = "shared"          # shared | dedicated
    port: int | None = None
    pids: tuple[int, ...] = ()         # a dedicated tenant's instance process(es)

    def __post_init__(self):
        check_group(self.tenant_id)
        if self.placement not in ("shared", "dedicated"):
            raise ValueError(f"placement must be shared or dedicated, got {self.placement!r}")


@dataclasses.dataclass(frozen=True)
class DesiredState:
    tenants: tuple[TenantSpec, ...] = ()
    shared_quota: HostQuota | None = None   # None: the aggregate of shared tenants
    shared_pids: tuple[int, ...] = ()       # the shared instance
    supervisor_pids: tuple[int, ...] = ()   # the daemon, when it was delegated


@dataclasses.dataclass
class Repair:
    kind: str
    group: str | None = None
    tenant_id: str | None = None
    detail: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def tenant_group(tenant_id: str) -> str:
    return f"{TENANTS}/{check_group(tenant_id)}"


def aggregate(quotas: list[HostQuota]) -> HostQuota:
    """The shared group's quota: sums; one unlimited tenant makes it unlimited."""
    if not quotas:
        return HostQuota()

    def total(name):
        values = [getattr(quota, name) for quota in quotas]
        return None if any(value is None for value in values) else sum(values)

    shares = sum(quota.cpu_shares or cgroupmap.SHARES_DEFAULT for quota in quotas)
    return HostQuota(
        cpu_percent=total("cpu_percent"), memory_mb=total("memory_mb"), iops=total("iops"),
        read_bps=total("read_bps"), write_bps=total("write_bps"), pids_max=total("pids_max"),
        cpu_shares=min(cgroupmap.SHARES_MAX, shares),
    )


class Reconciler:
    def __init__(self, tree: CgroupTree | None, shaper=None, device: str | None = None):
        self.tree = tree
        self.shaper = shaper
        self.device = device          # MAJ:MIN io throttles name

    # -- groups
    def ensure_group(self, group: str, quota: HostQuota | None, pids=(), tenant_id: str | None = None) -> list[Repair]:
        return self.ensure_groups([(group, quota, tuple(pids), tenant_id)])

    def ensure_groups(self, items: list[tuple[str, HostQuota | None, tuple[int, ...], str | None]]) -> list[Repair]:
        """Create, then write values (parents first, see apply_many), then
        place processes, for (group, quota, pids, tenant_id) items."""
        repairs: list[Repair] = []
        tree = self.tree
        tenant_of = {group: tenant_id for group, _quota, _pids, tenant_id in items}
        for group, _quota, _pids, tenant_id in items:
            if tree.ensure(group):
                repairs.append(Repair("cgroup.created", group, tenant_id))
        writes = [(group, cgroupmap.writes_for(tree.version, quota, self.device))
                  for group, quota, _pids, _tenant in items if quota is not None]
        for outcome in tree.apply_many(writes):
            if outcome.error:
                repairs.append(Repair("repair.failed", outcome.group, tenant_of[outcome.group], {
                    "file": outcome.file, "value": outcome.value, "error": outcome.error}))
            elif outcome.changed:
                repairs.append(Repair("cgroup.value.repaired", outcome.group, tenant_of[outcome.group], {
                    "file": outcome.file, "old": outcome.previous, "new": outcome.value}))
        for group, _quota, pids, tenant_id in items:
            present = set(tree.procs(group)) if pids else set()
            for pid in pids:
                if pid in present:
                    continue
                try:
                    tree.place(group, pid)
                    repairs.append(Repair("process.placed", group, tenant_id, {"pid": pid}))
                except OSError as exc:
                    reason = "no such process" if exc.errno == errno.ESRCH else str(exc)
                    repairs.append(Repair("repair.failed", group, tenant_id, {"pid": pid, "error": reason}))
        return repairs

    def remove_group(self, group: str, tenant_id: str | None = None) -> list[Repair]:
        return [Repair("cgroup.removed", group, tenant_id)] if self.tree.remove(group) else []

    # -- network
    def ensure_port(self, port: int, mbps: float, tenant_id: str | None = None) -> list[Repair]:
        if self.shaper is None:
            return []
        shaped = self.shaper.ports().get(port, {})
        filtered = self.shaper.filtered_ports().get(port, set())
        wanted_bps = int(round(mbps * 1000)) * 1000
        if shaped and set(shaped.values()) == {wanted_bps} and set(shaped) == filtered == {"egress", "ingress"}:
            return []
        self.shaper.set_port(port, mbps)
        kind = "tc.class.repaired" if shaped or filtered else "tc.class.created"
        return [Repair(kind, None, tenant_id, {"port": port, "network_mbps": mbps,
                                               "was_bps": shaped, "had_filters": sorted(filtered)})]

    def remove_port(self, port: int, tenant_id: str | None = None) -> list[Repair]:
        if self.shaper is not None and self.shaper.remove_port(port):
            return [Repair("tc.class.removed", None, tenant_id, {"port": port})]
        return []

    # -- the whole pass
    def run(self, desired: DesiredState) -> list[Repair]:
        repairs: list[Repair] = []
        if self.tree is not None:
            repairs += self._cgroups(desired)
        if self.shaper is not None:
            repairs += self._network(desired)
        for repair in repairs:
            log.info("host repair %s %s %s %s", repair.kind, repair.group or "", repair.tenant_id or "", repair.detail)
        return repairs

    def _cgroups(self, desired: DesiredState) -> list[Repair]:
        shared_tenants = [spec for spec in desired.tenants if spec.placement == "shared"]
        shared_quota = desired.shared_quota or aggregate([spec.quota for spec in shared_tenants])
        items = [(SUPERVISOR, None, desired.supervisor_pids, None),
                 (SHARED, shared_quota, desired.shared_pids, None),
                 (TENANTS, None, (), None)]
        wanted = set()
        for spec in desired.tenants:
            if spec.placement == "dedicated":
                wanted.add(check_group(spec.tenant_id))
                items.append((tenant_group(spec.tenant_id), spec.quota, spec.pids, spec.tenant_id))
        repairs = self.ensure_groups(items)
        for name in self.tree.children(TENANTS):
            if name not in wanted:
                repairs += self.remove_group(f"{TENANTS}/{name}", name)
        for name in self.tree.children(""):
            if name not in (SUPERVISOR, SHARED, TENANTS):
                repairs += self.remove_group(name)
        return repairs

    def _network(self, desired: DesiredState) -> list[Repair]:
        repairs: list[Repair] = []
        wanted = {spec.port: spec for spec in desired.tenants if spec.port and spec.quota.network_mbps}
        for port, spec in sorted(wanted.items()):
            repairs += self.ensure_port(port, spec.quota.network_mbps, spec.tenant_id)
        present = set(self.shaper.ports()) | set(self.shaper.filtered_ports())
        for port in sorted(present - set(wanted)):
            repairs += self.remove_port(port)
        return repairs
