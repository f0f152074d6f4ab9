"""The daemon's host enforcement: catalog + events -> HostController.

    binding = HostBinding.from_settings(settings, catalog, bus)
    binding.adopt_self()               # before READY=1 (only moves us when systemd delegated our cgroup)
    await binding.start()              # setup(), first reconcile, follow the bus, reconcile every few seconds
    binding.status()                   # GET /api/v1/cdb/status -> "host"
    binding.on_spawn(pid, tenant_id)   # the fleet's hook: an instance process -> its cgroup (None: shared)
    binding.usage(tenant_id)           # host usage of a dedicated tenant (dict) or None
    binding.placement_of(tenant_id)    # "shared" | "dedicated" (explicit choice, else the tier's default)
    await binding.set_placement(principal, tenant_id, placement)   # PUT .../placement; migrates
    await binding.stop()               # before the fleet stops: loops end, frozen instances thawed
    await binding.close()              # after the fleet stopped: teardown (host.teardown_on_stop), close

What reacts to what:

| event | host action |
|---|---|
| tenant.created / .quota.changed / .priority.changed | set_tenant: cgroup values (dedicated), tc class on its port |
| tenant.tier.changed | the same, and a migration when the tier's default placement changes |
| tenant.state.changed -> suspended | freeze the dedicated tenant's cgroup (sessions were told by the instance op first) |
| tenant.state.changed suspended -> active | thaw |
| tenant.state.changed -> terminated | kill, remove the cgroup and the tc class (the port goes back to the pool) |
| every RECONCILE_SECONDS | a full reconcile of the catalog's desired state; each repair -> log + system.alert |

CPU shares come from the tier/priority table (rustymt.model.tiers.cpu_shares)
so the kernel's weights agree with the engine scheduler's. A dedicated
tenant's cgroup carries its quota (cpu cap, shares, memory, iops); shared
tenants share <root>/shared, whose quota is their aggregate. Every tenant's
port is shaped to its network_mbps whatever its placement.

The host calls are synchronous (cgroupfs writes, netlink), so they run in a
worker thread; HostController serialises them.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import sqlite3
import threading
import time
import weakref
from typing import Any

from rustymt.catalog import placement as placement_rows
from rustymt.catalog import tenants as rows
from rustymt.catalog.db import Catalog
from rustymt.events.bus import EventBus, SubscriberDropped
from rustymt.host import DesiredState, HostController, HostQuota, TenantSpec
from rustymt.host import ownership
from rustymt.host import usage as host_usage
from rustymt.host.cgroupmap import SHARES_MAX, SHARES_MIN
from rustymt.host.reconcile import aggregate
from rustymt.model import timeutil
from rustymt.model.tenants import TenantState, check_transition
from rustymt.model.tiers import cpu_shares
from rustymt.service import authz, inputs
from rustymt.service.authz import Principal
from rustymt.service.errors import ServiceError

log = logging.getLogger("rustymt.hostbinding")

PLACEMENTS = placement_rows.PLACEMENTS
DEDICATED_TIERS = frozenset({"gold", "platinum"})
RECONCILE_SECONDS = 3.0
SESSION_DRAIN_SECONDS = 5.0   # suspend: how long sessions may take to end before the freeze
SESSION_POLL_SECONDS = 0.05
SHARED_INSTANCE_MEMORY_MB = 256   # the shared instance's own memory (interpreter, pool) above its tenants' quotas
PERMISSION = {"get": "resources:read", "set": "tenant:admin"}
WATCHED = frozenset({"tenant.created", "tenant.state.changed", "tenant.quota.changed", "tenant.tier.changed",
                     "tenant.priority.changed"})


def default_placement(tier: str) -> str:
    """The tier's placement: gold and platinum get an instance of their own."""
    return "dedicated" if tier in DEDICATED_TIERS else "shared"


def effective_placement(record: dict) -> str:
    return record.get("explicit_placement") or default_placement(record["service_tier"])


def host_quota(record: dict) -> HostQuota:
    """A tenant's catalog quota as the kernel enforces it (cpu shares from tier x priority)."""
    shares = min(SHARES_MAX, max(SHARES_MIN, cpu_shares(record["service_tier"], record["priority"])))
    return HostQuota.from_quota(record, cpu_shares=shares)


def shared_quota(quotas: list[HostQuota]) -> HostQuota:
    """The shared instance's group: its tenants' aggregate, plus memory for the
    instance itself, so one small shared tenant's quota cannot OOM-kill the
    process every shared tenant lives in (its allocator quota bites first)."""
    total = aggregate(quotas)
    if total.memory_mb is None:
        return total
    return dataclasses.replace(total, memory_mb=total.memory_mb + SHARED_INSTANCE_MEMORY_MB)


def host_merged(block: str):
    """Decorates TenantService.isolation_<block>: the host's counters of the
    tenant folded into the engine's body (HostBinding.merge_isolation) when
    the daemon gave the service a binding (`service.host`)."""
    def decorate(method):
        @functools.wraps(method)
        async def merged(service, principal, tenant_id, *args, **kwargs):
            body = await method(service, principal, tenant_id, *args, **kwargs)
            host = getattr(service, "host", None)
            return host.merge_isolation(tenant_id, block, body) if host is not None else body
        return merged
    return decorate


class HostBinding:
    def __init__(self, host: HostController, catalog: Catalog, bus: EventBus, fleet: Any = None,
                 interval: float = RECONCILE_SECONDS, teardown_on_stop: bool = True):
        self.host = host
        self.catalog = catalog
        self.bus = bus
        self.fleet = fleet                     # rustymt.service.fleet (optional): migrations go through it
        self.interval = interval
        self.teardown_on_stop = teardown_on_stop   # close() removes the host setup (else the next start adopts it)
        self.pids: dict[str | None, set[int]] = {}   # instance pids per tenant (None: the shared instance)
        self.ports: dict[str, int] = {}              # last port seen per tenant (terminate clears the catalog's)
        self.pending_placement: dict[str, str] = {}  # tenant_name (lower) -> placement asked for at create
        self.last_usage: dict[str, host_usage.GroupUsage] = {}
        self.reconcile_passes = 0
        self._tasks: list[asyncio.Task] = []
        self._subscription = None
        self._migrating: dict[str, asyncio.Event] = {}  # tenant -> set when its migration ends
        # REST's tier change and the tier.changed handler both settle a tenant: one at a time
        self._settling: "weakref.WeakValueDictionary[str, asyncio.Lock]" = weakref.WeakValueDictionary()
        self._lookup: sqlite3.Connection | None = None
        self._lookup_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any, catalog: Catalog, bus: EventBus, fleet: Any = None) -> "HostBinding":
        ledger = os.path.join(settings.server.data_dir, "run", ownership.FILE_NAME)
        host = HostController.from_settings(settings.host, data_dir=settings.server.data_dir, ledger=ledger)
        return cls(host, catalog, bus, fleet, interval=settings.host.reconcile_seconds,
                   teardown_on_stop=settings.host.teardown_on_stop)

    # ---- life cycle

    def adopt_self(self) -> bool:
        """Move the daemon into <root>/supervisor when systemd delegated its
        cgroup (v2 forbids processes beside child groups). Before READY=1 and
        before any instance starts."""
        moved = self.host.adopt_self()
        if moved:
            log.info("host: daemon moved into %s/supervisor (delegated cgroup)", self.host.tree.root)
        return moved

    async def start(self) -> None:
        repairs = await asyncio.to_thread(self.host.setup)
        for repair in repairs:
            log.info("host setup: %s %s", repair.kind, repair.group)
        self._subscription = self.bus.subscribe(WATCHED, maxsize=4096)
        await self.reconcile_once()
        self._tasks += [asyncio.create_task(self._follow_events()), asyncio.create_task(self._reconcile_forever())]
        status = self.status()
        unavailable = {name: m.get("reason") for name, m in status.get("mechanisms", {}).items() if m.get("state") != "enforced"}
        log.info("host enforcement: root %s; unavailable: %s", status.get("cgroup_root"), unavailable or "none")

    async def stop(self) -> None:
        """Before the fleet stops the instances: frozen ones are thawed so they
        can shut down (a v1-frozen task ignores even SIGKILL)."""
        for record in await asyncio.to_thread(self._live):
            if record["state"] == TenantState.SUSPENDED.value:
                with contextlib.suppress(Exception):
                    await self.before_wake(record["tenant_id"])
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    async def close(self, teardown: bool = True) -> None:
        """After the fleet stopped the instances (graceful stop): remove the
        cgroups, qdiscs and ifb device this daemon made, unless
        host.teardown_on_stop is false (kept; the next start adopts them).
        A failed teardown is logged, not raised: the stop itself succeeded,
        and the next start's reconcile adopts or clears what is left.
        teardown=False (a start that failed): nothing is removed — the
        failure may be another daemon already serving this host, whose
        instances live in these groups."""
        enforcing = self.host.tree is not None or self.host.shaper is not None
        if enforcing and teardown and self.teardown_on_stop:
            try:
                removed = await asyncio.to_thread(self.host.teardown)
                log.info("host teardown: removed %s", ", ".join(removed) or "nothing")
            except Exception:  # noqa: BLE001 - reported; the ownership record stays for the next start
                log.exception("host teardown failed; the next start reconciles what is left")
        elif enforcing:
            log.info("host teardown skipped (%s): cgroups and tc setup kept for the next start",
                     "host.teardown_on_stop = false" if teardown else "the start failed")
        await asyncio.to_thread(self.host.close)
        with self._lookup_lock:
            if self._lookup is not None:
                self._lookup.close()
                self._lookup = None

    def status(self) -> dict:
        return self.host.status()

    # ---- desired state from the catalog

    def _live(self) -> list[dict]:
        with self.catalog.read() as conn:
            return placement_rows.live_tenants(conn)

    def _record(self, tenant_id: str) -> dict | None:
        with self.catalog.read() as conn:
            return placement_rows.tenant(conn, tenant_id)

    def _placement(self, record: dict) -> str:
        if record.get("explicit_placement"):
            return record["explicit_placement"]
        return self.pending_placement.get(record["tenant_name"].lower()) or default_placement(record["service_tier"])

    def spec_for(self, record: dict) -> TenantSpec:
        placement = self._placement(record)
        if record["network_port"]:
            self.ports[record["tenant_id"]] = record["network_port"]
        pids = tuple(sorted(self.pids.get(record["tenant_id"], ()))) if placement == "dedicated" else ()
        return TenantSpec(record["tenant_id"], host_quota(record), placement=placement, port=record["network_port"], pids=pids)

    def desired(self) -> DesiredState:
        specs = tuple(self.spec_for(record) for record in self._live())
        return DesiredState(tenants=specs, shared_quota=shared_quota([s.quota for s in specs if s.placement == "shared"]),
                            shared_pids=tuple(sorted(self.pids.get(None, ()))))

    def _lookup_record(self, tenant_id: str) -> dict | None:
        """_record on a read connection of our own: the fleet asks for placements
        from inside its own catalog transactions (same thread, same connection)."""
        with self._lookup_lock:
            if self._lookup is None:
                self._lookup = sqlite3.connect(f"file:{self.catalog.path}?mode=ro", uri=True, check_same_thread=False)
                self._lookup.row_factory = sqlite3.Row
                self._lookup.execute("PRAGMA busy_timeout = 5000")
            return placement_rows.tenant(self._lookup, tenant_id)

    def placement_of(self, tenant_id: str) -> str:
        """shared | dedicated for a tenant (the fleet asks before attaching it)."""
        record = self._lookup_record(tenant_id)
        if record is None:
            raise ServiceError("TENANT_NOT_FOUND", f"tenant {tenant_id} does not exist", details={"tenant_id": tenant_id})
        return self._placement(record)

    # ---- reconcile

    async def reconcile_once(self) -> list[dict]:
        desired = await asyncio.to_thread(self.desired)
        repairs = await asyncio.to_thread(self.host.reconcile, desired)
        self.reconcile_passes += 1
        for repair in repairs:
            detail = repair.to_dict()
            log.warning("host reconcile: %s %s %s", repair.kind, repair.group or "", repair.detail)
            self.bus.publish("system.alert", repair.tenant_id, {"alert": "host.repair", **detail})
        return [repair.to_dict() for repair in repairs]

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)  # the loop's period, not synchronisation
            try:
                await self.reconcile_once()
            except Exception:  # noqa: BLE001 - one failed pass must not end the loop
                log.exception("host reconcile pass failed; next pass in %.1fs", self.interval)

    # ---- events

    async def _follow_events(self) -> None:
        while True:
            try:
                async for event in self._subscription:
                    try:
                        await self._on_event(event.event_type, event.tenant_id, event.data)
                    except Exception:  # noqa: BLE001 - the reconcile loop repairs what this missed
                        log.exception("host: handling %s for %s failed", event.event_type, event.tenant_id)
            except SubscriberDropped:
                # fell behind: follow again and let one full pass catch up
                self._subscription = self.bus.subscribe(WATCHED, maxsize=4096)
                await self.reconcile_once()

    async def _on_event(self, event_type: str, tenant_id: str | None, data: dict) -> None:
        if tenant_id is None:
            return
        if event_type == "tenant.state.changed":
            await self._on_state(tenant_id, data.get("old_state"), data.get("new_state"))
            return
        record = await asyncio.to_thread(self._record, tenant_id)
        if record is None or record["state"] == TenantState.TERMINATED.value:
            return
        if event_type == "tenant.created":
            self._remember_created_placement(record)
        await self.apply(record)
        if event_type == "tenant.tier.changed":
            await self.settle_tier(tenant_id, data.get("old_tier"))

    async def settle_tier(self, tenant_id: str, old_tier: str | None = None) -> None:
        """After a tier change: migrate when the tenant's placement (explicit, else
        the new tier's default) differs from where it runs. REST's tier change
        awaits this before answering, so the tenant is ACTIVE again when it does;
        the tenant.tier.changed handler calls it too (scheduled changes, GraphQL)."""
        async with self._settling.setdefault(tenant_id, asyncio.Lock()):
            # A migration already under way (the event handler's, or REST's own)
            # is waited for, so REST answers a tier change only once the tenant is
            # ACTIVE where it belongs (a suspend right after must not meet MIGRATING).
            while (ending := self._migrating.get(tenant_id)) is not None:
                await ending.wait()
            record = await asyncio.to_thread(self._record, tenant_id)
            if record is None or record["state"] != TenantState.ACTIVE.value:
                return
            want = self._placement(record)
            home = getattr(self.fleet, "home", {}).get(tenant_id) if self.fleet is not None else None
            if home is not None:
                have = "shared" if home == "shared" else "dedicated"
            elif self.fleet is None and old_tier:
                have = record["explicit_placement"] or default_placement(old_tier)
            else:
                return   # not attached anywhere yet: the fleet attaches it where it belongs
            if want != have:
                with contextlib.suppress(ServiceError):  # rolled back and reported as system.alert by migrate();
                    await self.migrate(tenant_id, have, want)   # the tier change itself stands

    async def settle_placement(self, tenant_id: str) -> None:
        """REST create, before answering: the placement asked for is stored (if
        tenant.created has not been handled yet)."""
        record = await asyncio.to_thread(self._record, tenant_id)
        if record is not None:
            self._remember_created_placement(record)

    def _remember_created_placement(self, record: dict) -> None:
        wanted = self.pending_placement.pop(record["tenant_name"].lower(), None)
        if wanted is not None:
            with self.catalog.write() as conn:
                placement_rows.set_explicit(conn, record["tenant_id"], wanted, timeutil.utc_now_iso())
            record["explicit_placement"] = wanted

    async def apply(self, record: dict) -> None:
        """Apply one tenant's quota and port shaping now (not waiting for the next pass)."""
        spec = self.spec_for(record)
        repairs = await asyncio.to_thread(self.host.set_tenant, spec)
        for repair in repairs:
            log.info("host: %s %s for %s %s", repair.kind, repair.group or "", spec.tenant_id, repair.detail)
        if record["state"] == TenantState.SUSPENDED.value and spec.placement == "dedicated":
            await asyncio.to_thread(self.host.freeze, spec.tenant_id)

    async def _on_state(self, tenant_id: str, old: str | None, new: str | None) -> None:
        if new == TenantState.TERMINATED.value:
            port = self.ports.pop(tenant_id, None)
            self.pids.pop(tenant_id, None)
            self.last_usage.pop(tenant_id, None)
            repairs = await asyncio.to_thread(self.host.remove, tenant_id, port)
            log.info("host: tenant %s terminated: %s", tenant_id, [repair.kind for repair in repairs])
            return
        record = await asyncio.to_thread(self._record, tenant_id)
        if record is None or self._placement(record) != "dedicated":
            return
        if new == TenantState.SUSPENDED.value:
            # The service told the instance before publishing; its sessions end
            # (57P01) as their statements stop. Freezing waits for that, so
            # clients get their error instead of a hung socket.
            await self._wait_sessions_gone(tenant_id)
            await asyncio.to_thread(self.host.freeze, tenant_id)
            log.info("host: tenant %s frozen", tenant_id)
        elif old == TenantState.SUSPENDED.value:
            await asyncio.to_thread(self.host.thaw, tenant_id)
            log.info("host: tenant %s thawed", tenant_id)

    async def _wait_sessions_gone(self, tenant_id: str) -> None:
        if self.fleet is None:
            return
        deadline = time.monotonic() + SESSION_DRAIN_SECONDS
        while time.monotonic() < deadline:
            stats = await self.fleet.stats(tenant_id)
            if not stats or not stats.get("sessions"):
                return
            await asyncio.sleep(SESSION_POLL_SECONDS)  # polling the instance's session count, bounded by the deadline
        log.warning("host: tenant %s still had sessions after %.0fs; freezing anyway", tenant_id, SESSION_DRAIN_SECONDS)

    # ---- the fleet's hook

    def on_spawn(self, pid: int, tenant_id: str | None = None) -> None:
        """An engine instance started: the shared one (tenant_id None) or a
        tenant's dedicated one. Places it in its cgroup before it serves;
        remembered so that every reconcile pass keeps it there. A suspended
        tenant's group may be frozen (daemon restart, instance crash): the new
        instance must start first, so the group is thawed and frozen again
        once the fleet reports the instance ready."""
        self.pids.setdefault(tenant_id, set()).add(pid)
        self.host.place(pid, tenant_id)
        log.info("host: instance pid %d placed in %s", pid, self.host.group(tenant_id))
        if tenant_id is not None and self.host.tree is not None:
            self.host.thaw(tenant_id)
            task = asyncio.get_running_loop().create_task(self._freeze_when_ready(tenant_id))
            self._tasks.append(task)
            task.add_done_callback(lambda done: done in self._tasks and self._tasks.remove(done))

    async def _freeze_when_ready(self, tenant_id: str) -> None:
        supervisor = getattr(self.fleet, "instances", {}).get(self.fleet.instance_for(tenant_id, "dedicated")) \
            if self.fleet is not None else None
        if supervisor is not None:
            with contextlib.suppress(Exception):  # not coming up: nothing to freeze
                await supervisor.wait_ready()
        record = await asyncio.to_thread(self._record, tenant_id)
        if record is not None and record["state"] == TenantState.SUSPENDED.value:
            await asyncio.to_thread(self.host.freeze, tenant_id)
            log.info("host: suspended tenant %s's new instance frozen", tenant_id)

    def asleep(self, tenant_id: str) -> bool:
        """The fleet's check before it asks a dedicated instance anything: frozen
        instances cannot answer (a cgroupfs read, no lock)."""
        tree = self.host.tree
        try:
            return tree is not None and tree.exists(self.host.group(tenant_id)) and tree.is_frozen(self.host.group(tenant_id))
        except (OSError, ValueError):
            return False

    async def before_wake(self, tenant_id: str) -> None:
        """The fleet's hook before it talks to (or stops) a tenant's instance for
        anything but suspending it: a frozen instance could not answer."""
        if self.host.tree is not None and self.host.tree.exists(self.host.group(tenant_id)):
            await asyncio.to_thread(self.host.thaw, tenant_id)

    def on_exit(self, pid: int, tenant_id: str | None = None) -> None:
        self.pids.get(tenant_id, set()).discard(pid)

    # ---- usage

    def usage(self, tenant_id: str) -> dict | None:
        """Host usage of a tenant's own cgroup (dedicated tenants), None when
        it has none (shared, or host enforcement unavailable). Rates come from
        the previous call's snapshot."""
        snapshot = self.host.usage(tenant_id) if self.host.tree is not None else None
        if snapshot is None:
            return None
        before = self.last_usage.get(tenant_id)
        self.last_usage[tenant_id] = snapshot
        rates = {"cpu_percent": host_usage.cpu_percent(before, snapshot) if before else None,
                 "iops": host_usage.iops(before, snapshot) if before else None}
        return {
            "cpu_usage_ns": snapshot.cpu_usage_ns, "throttled_ns": snapshot.throttled_ns,
            "nr_throttled": snapshot.nr_throttled, "memory_bytes": snapshot.memory_bytes,
            "memory_peak_bytes": snapshot.memory_peak_bytes, "oom_count": snapshot.oom_kills or 0,
            "read_ios": snapshot.read_ios, "write_ios": snapshot.write_ios, "read_bytes": snapshot.read_bytes,
            "write_bytes": snapshot.write_bytes, "pids": snapshot.pids, "processes": snapshot.processes,
            "rss_bytes": snapshot.rss_bytes, **rates, "source": f"cgroup {self.host.group(tenant_id)}",
        }

    def merge_isolation(self, tenant_id: str, block: str, body: dict) -> dict:
        """Host counters folded into the engine's isolation bodies (TenantService calls this):
        memory: oom_count += OOM kills in the tenant's cgroup (the cgroup outlives instance restarts);
        cpu: throttled_ns += CFS throttling of the tenant's cgroup; network: packets_dropped =
        drops of the tenant's tc classes, both directions. Shared tenants: engine figures only."""
        try:
            if block == "network":
                classes = self.host.network().get(body.get("port") or self.ports.get(tenant_id) or -1, {})
                if classes:
                    body["packets_dropped"] = sum(counters.drops for counters in classes.values())
                return body
            host = self.usage(tenant_id)
        except Exception:  # noqa: BLE001 - a host read must not fail the API request: engine figures stand
            log.exception("host counters of %s unavailable", tenant_id)
            return body
        if host is not None and block == "memory":
            body["oom_count"] = body.get("oom_count", 0) + host["oom_count"]
        elif host is not None and block == "cpu":
            body["throttled_ns"] = body.get("throttled_ns", 0) + (host["throttled_ns"] or 0)
        return body

    # ---- placement (REST)

    async def get_placement(self, principal: Principal, tenant_id: str) -> dict:
        authz.require(principal, PERMISSION["get"], tenant_id)
        record = await asyncio.to_thread(self._require, tenant_id)
        placement = self._placement(record)
        host = await asyncio.to_thread(self.usage, tenant_id) if placement == "dedicated" else None
        return {"tenant_id": tenant_id, "placement": placement, "explicit": bool(record["explicit_placement"]),
                "default_placement": default_placement(record["service_tier"]), "state": record["state"],
                "instance_pids": sorted(self.pids.get(tenant_id if placement == "dedicated" else None, ())),
                "host": host}

    def _require(self, tenant_id: str) -> dict:
        record = self._record(tenant_id)
        if record is None:
            raise ServiceError("TENANT_NOT_FOUND", f"tenant {tenant_id} does not exist", details={"tenant_id": tenant_id})
        return record

    @contextlib.contextmanager
    def expecting_placement(self, tenant_name: str, placement: str | None):
        """REST create: the placement asked for counts from tenant.created on
        (so the fleet's first attach already sees it); forgotten if the create fails."""
        if placement is None or not isinstance(tenant_name, str):
            yield
            return
        self.pending_placement[tenant_name.lower()] = inputs.choice("placement", placement, PLACEMENTS)
        try:
            yield
        except BaseException:
            self.pending_placement.pop(tenant_name.lower(), None)
            raise

    async def set_placement(self, principal: Principal, tenant_id: str, placement: str) -> dict:
        """Store an explicit placement; a change migrates the tenant (MIGRATING -> ACTIVE)."""
        authz.require(principal, PERMISSION["set"], tenant_id)
        placement = inputs.choice("placement", placement, PLACEMENTS)
        record = await asyncio.to_thread(self._require, tenant_id)
        if record["state"] == TenantState.TERMINATED.value:
            raise ServiceError("INVALID_STATE", "the tenant is terminated", details={"current_state": "terminated"})
        old = self._placement(record)
        if old != placement:
            check_transition(record["state"], TenantState.MIGRATING)
        await asyncio.to_thread(self._store_placement, tenant_id, placement)
        migrated = False
        if old != placement:
            try:
                await self.migrate(tenant_id, old, placement)
            except ServiceError:
                await asyncio.to_thread(self._store_placement, tenant_id, record["explicit_placement"])
                raise
            migrated = True
        return {"tenant_id": tenant_id, "old_placement": old, "placement": placement, "migrated": migrated,
                "state": TenantState.ACTIVE.value if migrated else record["state"]}

    def _store_placement(self, tenant_id: str, placement: str | None) -> None:
        with self.catalog.write() as conn:
            placement_rows.set_explicit(conn, tenant_id, placement, timeutil.utc_now_iso())

    # ---- migration

    def _set_state(self, tenant_id: str, target: TenantState, reason: str) -> str:
        now = timeutil.utc_now_iso()
        with self.catalog.write() as conn:
            record = rows.get(conn, tenant_id)
            check_transition(record["state"], target)
            rows.update(conn, tenant_id, {"state": target.value, "state_reason": reason, "updated_at": now,
                                          "state_changed_at": now})
            rows.log_state(conn, tenant_id, record["state"], target.value, reason, now)
        return record["state"]

    async def _transition(self, tenant_id: str, target: TenantState, reason: str) -> None:
        old = await asyncio.to_thread(self._set_state, tenant_id, target, reason)
        self.bus.publish("tenant.state.changed", tenant_id, {"old_state": old, "new_state": target.value, "reason": reason})

    async def migrate(self, tenant_id: str, old: str, new: str) -> None:
        """Move a tenant between the shared instance and a dedicated one.

        1. state MIGRATING (event); 2. a dedicated target gets its cgroup
        with its quota first; 3. the fleet closes the tenant's PDBs in the old
        instance (sessions end with 57P01) and opens them in the new one;
        4. a shared target's leftover cgroup is removed; 5. ACTIVE again.
        A failure in 3 moves the tenant back (the fleet's own rollback) and
        ends in ACTIVE on the old placement, reported as system.alert.
        """
        ending = self._migrating[tenant_id] = asyncio.Event()
        try:
            await self._transition(tenant_id, TenantState.MIGRATING, f"placement {old} -> {new}")
            record = await asyncio.to_thread(self._require, tenant_id)
            if new == "dedicated":
                await asyncio.to_thread(self.host.set_tenant, self.spec_for({**record, "explicit_placement": new}))
            try:
                move = getattr(self.fleet, "move_tenant", None)
                if move is not None:
                    await move(tenant_id, new)
            except Exception as exc:  # noqa: BLE001 - any failure rolls the move back
                log.error("host: migration of %s to %s failed: %s", tenant_id, new, exc)
                if new == "dedicated":
                    await asyncio.to_thread(self.host.remove, tenant_id, None)
                self.bus.publish("system.alert", tenant_id, {"alert": "migration failed, rolled back", "from": old,
                                                             "to": new, "error": str(exc)})
                await self._transition(tenant_id, TenantState.ACTIVE, f"migration to {new} failed; rolled back")
                raise ServiceError("INTERNAL_ERROR", f"migration to {new} failed and was rolled back: {exc}",
                                   details={"tenant_id": tenant_id, "placement": old}) from None
            if new == "shared":
                self.pids.pop(tenant_id, None)
                await asyncio.to_thread(self.host.remove, tenant_id, None)
            await self._transition(tenant_id, TenantState.ACTIVE, f"migrated to {new}")
        finally:
            if self._migrating.get(tenant_id) is ending:
                del self._migrating[tenant_id]
            ending.set()
