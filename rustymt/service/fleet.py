"""The daemon's view of its engine instances: which instance hosts which
tenant, and the one place that talks to them.

    fleet = Fleet(settings, catalog, bus, placement_of=None, on_spawn=None, on_exit=None)
    await fleet.start()                       # the shared instance (+ dedicated ones), state re-applied
    await fleet.sync_tenant(tenant_id)        # attach / update quota + state (idempotent)
    await fleet.set_state(tenant_id, state)   # active | suspended | maintenance | migrating
    await fleet.open_pdb(pdb_row, mode) / close_pdb(pdb_row, mode) / detach(tenant_id)
    await fleet.move_tenant(tenant_id, "dedicated" | "shared")   # hostd's migrations
    await fleet.stats(tenant_id)              # the instance's `stats` block, None while it is down
    await fleet.recent_stats(tenant_id)       # (that block or None, wall time measured), at most USAGE_MAX_AGE_SECONDS old
    fleet.rates(tenant_id)                    # cpu_percent, iops, network_mbps over the last sample window
    fleet.status()                            # [{name, pid, uptime_seconds, restarts, health, ...}]
    await fleet.stop()

Placement: `placement_of(tenant_id) -> "shared" | "dedicated"` (hostd's
HostBinding.placement_of; default: everything shared). A dedicated tenant
gets an instance of its own named `ded-<tenant_id>`, started on demand and
stopped when the tenant leaves it. `on_spawn(pid, tenant_id | None)` runs
right after an instance process starts, before it serves any tenant (None =
the shared instance), so the host layer can put it in its cgroup;
`on_exit(pid, tenant_id | None)` after it exited.

The catalog is the desired state. Every (re)start of an instance runs
`_reapply`: every live tenant placed there is attached with its slot, port,
quota and state, and its PDBs whose catalog state is `open` are reopened in
the saved open mode, before the instance is reported healthy. So a change
made while an instance was down (the service commits first, then tells the
instance) is applied on restart; such a call answers `False` instead of
failing the API request.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Awaitable, Callable

from rustymt.catalog import pdbs as pdb_rows
from rustymt.catalog import tenants as tenant_rows
from rustymt.catalog.db import Catalog
from rustymt.engine import storage
from rustymt.engine.control import ControlError
from rustymt.engine.supervisor import InstanceSupervisor
from rustymt.events.bus import EventBus
from rustymt.model import timeutil
from rustymt.model.tiers import cpu_shares, guaranteed_cpu_percent
from rustymt.service.errors import ServiceError
from rustymt.service.recent import RecentValues

log = logging.getLogger("rustymt.fleet")

SHARED = "shared"
DEDICATED_PREFIX = "ded-"
SAMPLE_SECONDS = 1.0          # the usage sampler's period: rates are over this window
MIN_RATE_WINDOW_SECONDS = 0.5 * SAMPLE_SECONDS  # a sample closer than this to the previous one is not a new window
# GET tenant's usage: the sampler's latest, or one shared fetch when older. Half a period of slack
# over the sampler's schedule, so a GET waits for a control round trip only when the sampler is late.
USAGE_MAX_AGE_SECONDS = 1.5 * SAMPLE_SECONDS
REPAIR_EVERY_SECONDS = 5.0   # attach live tenants no instance has
CLOSE_TIMEOUT_SECONDS = 5.0   # close NORMAL: how long sessions may take to leave
ENGINE_STATES = ("active", "suspended", "maintenance", "migrating")

# ControlError code -> API error code (docs/engine.md "Errors")
API_CODES = {"NOT_FOUND": "PDB_NOT_FOUND", "INVALID_STATE": "INVALID_STATE", "BUSY": "CONFLICT",
             "UNAVAILABLE": "UNAVAILABLE", "TIMEOUT": "UNAVAILABLE", "BAD_REQUEST": "INVALID_REQUEST"}


def api_error(exc: ControlError, what: str) -> ServiceError:
    code = API_CODES.get(exc.code, "INTERNAL_ERROR")
    return ServiceError(code, f"{what}: {exc.message}", details={"engine_code": exc.code})


def engine_quota(record: dict) -> dict:
    """A tenant's catalog quota as the instance's attach/set_quota argument."""
    tier, cpu = record["service_tier"], record["cpu_percent"]
    return {"memory_mb": record["memory_mb"], "cpu_percent": cpu,
            "cpu_min_percent": min(cpu, guaranteed_cpu_percent(tier, cpu)),
            "cpu_shares": cpu_shares(tier, record["priority"]), "iops": record["iops"],
            "max_connections": record["max_connections"], "storage_gb": record["storage_gb"],
            "network_mbps": record["network_mbps"]}


class Fleet:
    def __init__(self, settings: Any, catalog: Catalog, bus: EventBus | None = None,
                 placement_of: Callable[[str], str] | None = None,
                 on_spawn: Callable[[int, str | None], None] | None = None,
                 on_exit: Callable[[int, str | None], None] | None = None):
        self.settings = settings
        self.catalog = catalog
        self.bus = bus
        self.data_dir = settings.server.data_dir
        self.listen_host = settings.tenant.listen_host
        self.config_path = getattr(settings, "config_path", None)
        self.placement_of = placement_of or (lambda tenant_id: SHARED)
        self.on_spawn = on_spawn
        self.on_exit = on_exit
        self.before_wake: Callable[[str], Awaitable[None]] | None = None  # hostd: thaw a tenant's cgroup
        self.asleep: Callable[[str], bool] | None = None  # hostd: True while a tenant's cgroup is frozen (suspended)
        self.instances: dict[str, InstanceSupervisor] = {}
        self.home: dict[str, str] = {}                 # tenant_id -> instance name it is attached to
        self._pids: dict[str, int] = {}                # instance -> pid of its current process
        self._samples: dict[str, list[tuple[float, dict]]] = {}  # tenant -> last two (time, stats)
        self._rates: dict[str, dict | None] = {}  # tenant -> rates between its last two samples
        # instance name -> {tenant_id: stats block} of its latest `stats` answer (sampler or recent_stats)
        self._recent: RecentValues[dict[str, dict]] = RecentValues(USAGE_MAX_AGE_SECONDS)
        self._sampler: asyncio.Task | None = None
        self._sampling: dict[str, asyncio.Task] = {}  # "stats <instance>" / "repair" -> the sampler's task while in flight
        self._background: set[asyncio.Task] = set()

    # ---- life cycle

    async def start(self) -> None:
        """The shared instance, then each dedicated tenant's; returns once all are healthy."""
        await self._start_instance(SHARED)
        records = await asyncio.to_thread(self._live_tenants)
        for record in records:
            if self._placement(record["tenant_id"]) != SHARED:
                await self._start_instance(self.instance_for(record["tenant_id"]))
        self._sampler = asyncio.create_task(self._sample_forever())

    async def stop(self) -> None:
        for task in [self._sampler, *self._sampling.values()]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task  # the sampler's tasks log their own failures
        for name in list(self.instances):
            await self._stop_instance(name)
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await task

    async def _start_instance(self, name: str) -> InstanceSupervisor:
        if name in self.instances:
            return self.instances[name]
        supervisor = InstanceSupervisor(name, self.data_dir, on_event=self._on_instance_event,
                                        on_started=self._reapply, config_path=self.config_path)
        self.instances[name] = supervisor
        try:
            await supervisor.start()
        except BaseException:
            self.instances.pop(name, None)
            with contextlib.suppress(Exception):
                await supervisor.stop()
            raise
        return supervisor

    async def _stop_instance(self, name: str) -> None:
        supervisor = self.instances.pop(name, None)
        if supervisor is None:
            return
        pid = self._pids.pop(name, None)
        await supervisor.stop()
        self._record_event("instance.stopped", {"instance": name, "pid": pid})
        if pid is not None and self.on_exit is not None:
            self.on_exit(pid, self._tenant_of_instance(name))

    # ---- placement

    def _placement(self, tenant_id: str) -> str:
        try:
            return self.placement_of(tenant_id)
        except ServiceError:
            return SHARED

    def instance_for(self, tenant_id: str, placement: str | None = None) -> str:
        placement = placement or self._placement(tenant_id)
        return SHARED if placement == SHARED else DEDICATED_PREFIX + tenant_id

    @staticmethod
    def _tenant_of_instance(name: str) -> str | None:
        return name[len(DEDICATED_PREFIX):] if name.startswith(DEDICATED_PREFIX) else None

    # ---- instance events and re-apply

    def _on_instance_event(self, kind: str, data: dict) -> None:
        name = data.get("instance", "")
        tenant_id = self._tenant_of_instance(name)
        if kind == "instance.started":
            self._pids[name] = data["pid"]
            if self.on_spawn is not None:
                self.on_spawn(data["pid"], tenant_id)  # into its cgroup before it serves anyone
        elif kind == "instance.crashed":
            pid = self._pids.get(name)
            if pid is not None and self.on_exit is not None:
                self.on_exit(pid, tenant_id)
            if self.bus is not None:
                self.bus.publish("system.alert", tenant_id, {
                    "severity": "high", "source": f"instance {name}", "alert": "instance.crashed",
                    "message": f"engine instance {name} exited with {data.get('exit_code')}; restarting"})
        self._record_event(kind, data)

    def _record_event(self, kind: str, data: dict) -> None:
        def write():
            with self.catalog.write() as conn:
                pdb_rows.record_instance_event(conn, data.get("instance", ""), kind, data, timeutil.utc_now_iso())

        log.info("%s %s", kind, data)
        try:
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(write))
        except RuntimeError:
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def instance_events(self, limit: int = 20) -> list[dict]:
        with self.catalog.read() as conn:
            return pdb_rows.instance_events(conn, limit=limit)

    def _live_tenants(self) -> list[dict]:
        with self.catalog.read() as conn:
            total, records = tenant_rows.page(conn, offset=0, limit=1 << 30)
            return [record for record in records if record["state"] != "terminated"]

    def _desired(self, name: str) -> list[tuple[dict, int, list[dict]]]:
        """(tenant record, slot, its open PDB rows) for each live tenant placed on `name`."""
        hosted = []
        with self.catalog.write() as conn:  # may assign a slot
            total, records = tenant_rows.page(conn, offset=0, limit=1 << 30)
            open_rows = [row for row in pdb_rows.live(conn) if row["state"] == "open"]
            for record in records:
                if record["state"] == "terminated" or self.instance_for(record["tenant_id"]) != name:
                    continue
                slot = pdb_rows.assign_slot(conn, record["tenant_id"])
                if slot is None:
                    log.error("no native slot left for tenant %s", record["tenant_id"])
                    continue
                open_pdbs = [row for row in open_rows if row["tenant_id"] == record["tenant_id"]]
                hosted.append((record, slot, open_pdbs))
        return hosted

    async def _reapply(self, supervisor: InstanceSupervisor) -> None:
        """Runs on every (re)start of an instance, before it is reported healthy."""
        self._recent.forget(supervisor.name)  # a new process: new counters, new tenants
        for record, slot, open_pdbs in await asyncio.to_thread(self._desired, supervisor.name):
            try:
                await supervisor.client.request("attach_tenant", self._attach_args(record, slot))
                self.home[record["tenant_id"]] = supervisor.name
                for row in open_pdbs:
                    await supervisor.client.request("open_pdb", self._open_args(row, row["open_mode"] or "READ_WRITE"))
            except ControlError as exc:  # one tenant's trouble must not keep the others down
                log.error("re-applying tenant %s on %s failed: %s", record["tenant_id"], supervisor.name, exc)

    def _attach_args(self, record: dict, slot: int) -> dict:
        state = record["state"] if record["state"] in ENGINE_STATES else "active"
        return {"tenant_id": record["tenant_id"], "slot": slot, "port": record["network_port"] or 0,
                "listen_host": self.listen_host, "state": state, "quota": engine_quota(record)}

    def _open_args(self, row: dict, mode: str) -> dict:
        return {"pdb_id": row["pdb_id"], "tenant_id": row["tenant_id"], "pdb_name": row["pdb_name"],
                "path": storage.pdb_dir(self.data_dir, row["pdb_id"]), "mode": mode}

    # ---- requests

    async def _request(self, tenant_id: str, op: str, args: dict, timeout: float = 10.0) -> dict:
        name = self.home.get(tenant_id) or self.instance_for(tenant_id)
        supervisor = self.instances.get(name)
        if supervisor is None:
            raise ControlError("UNAVAILABLE", f"instance {name} is not running")
        if self._frozen(name):  # would only time out
            raise ControlError("UNAVAILABLE", f"instance {name} is frozen (tenant suspended)")
        return await supervisor.request(op, args, timeout)

    def _frozen(self, name: str) -> bool:
        tenant_id = self._tenant_of_instance(name)
        return tenant_id is not None and self.asleep is not None and self.asleep(tenant_id)

    async def _best_effort(self, tenant_id: str, op: str, args: dict) -> bool:
        """Tell the instance; while it is down the restart's re-apply does it (False).
        A tenant the instance does not have (its re-apply failed, e.g. its port
        was held by another program) is attached now, which carries the new
        quota and state; if that fails too, the repair pass retries (False)."""
        try:
            await self._request(tenant_id, op, args)
            self._recent.forget(self.home.get(tenant_id) or self.instance_for(tenant_id))  # sessions, quota changed
            return True
        except ControlError as exc:
            if exc.code == "NOT_FOUND" and op != "attach_tenant":
                self.home.pop(tenant_id, None)
                try:
                    return await self.sync_tenant(tenant_id)
                except ServiceError as again:
                    log.warning("%s for %s: the tenant is not attached and attaching failed: %s", op, tenant_id, again)
                    return False
            if exc.code not in ("UNAVAILABLE", "TIMEOUT"):
                raise
            log.warning("%s for %s deferred to the instance's restart: %s", op, tenant_id, exc)
            return False

    async def sync_tenant(self, tenant_id: str) -> bool:
        """Attach the tenant where it is placed (starting a dedicated instance), or
        update its quota and state there. Idempotent."""
        name = self.home.get(tenant_id) or self.instance_for(tenant_id)
        if name != SHARED and name not in self.instances:
            await self._start_instance(name)  # its re-apply attaches the tenant
            return True
        record, slot = await asyncio.to_thread(self._record_and_slot, tenant_id)
        if record is None:
            return False
        try:
            ok = await self._best_effort(tenant_id, "attach_tenant", self._attach_args(record, slot))
        except ControlError as exc:  # e.g. its port is held by another program
            raise ServiceError("INSUFFICIENT_RESOURCES", f"tenant {tenant_id} cannot be attached: {exc.message}",
                               details={"resource": "network_port", "port": record["network_port"]}) from None
        if ok:
            self.home[tenant_id] = name
        return ok

    def _record_and_slot(self, tenant_id: str) -> tuple[dict | None, int | None]:
        with self.catalog.write() as conn:
            record = tenant_rows.get(conn, tenant_id)
            if record is None or record["state"] == "terminated":
                return None, None
            slot = pdb_rows.assign_slot(conn, tenant_id)
            if slot is None:
                raise ServiceError("INSUFFICIENT_RESOURCES", "no native tenant slot left (255 live tenants)",
                                   details={"resource": "tenant_slots"})
            return record, slot

    async def set_state(self, tenant_id: str, state: str) -> bool:
        if state != "suspended" and self.before_wake is not None:
            await self.before_wake(tenant_id)  # a suspended dedicated instance is frozen: thaw it first
        return await self._best_effort(tenant_id, "set_tenant_state", {"tenant_id": tenant_id, "state": state})

    async def set_quota(self, tenant_id: str, record: dict) -> bool:
        if self.before_wake is not None:
            await self.before_wake(tenant_id)  # frozen while suspended: hostd freezes it again after the change
        return await self._best_effort(tenant_id, "set_quota", {"tenant_id": tenant_id, "quota": engine_quota(record)})

    async def open_pdb(self, row: dict, mode: str) -> dict:
        try:
            return await self._request(row["tenant_id"], "open_pdb", self._open_args(row, mode))
        except ControlError as exc:
            raise api_error(exc, f"opening {row['pdb_id']}") from None

    async def close_pdb(self, row: dict, mode: str, timeout: float = CLOSE_TIMEOUT_SECONDS) -> dict:
        args = {"pdb_id": row["pdb_id"], "mode": mode, "timeout_seconds": timeout}
        try:
            return await self._request(row["tenant_id"], "close_pdb", args, timeout=timeout + 10)
        except ControlError as exc:
            if exc.code == "NOT_FOUND":  # not open there (e.g. the instance restarted): closed already
                return {"pdb_id": row["pdb_id"], "sessions_ended": 0}
            if exc.code == "BUSY":
                raise ServiceError("CONFLICT", f"PDB {row['pdb_id']} still has sessions after {timeout}s; "
                                   "close IMMEDIATE ends them", details={"pdb_id": row["pdb_id"]}) from None
            raise api_error(exc, f"closing {row['pdb_id']}") from None

    async def detach(self, tenant_id: str) -> bool:
        """The tenant leaves its instance (sessions end, PDBs close, port freed);
        a dedicated instance is stopped."""
        if self.before_wake is not None:
            await self.before_wake(tenant_id)  # a frozen instance could neither answer nor die
        name = self.home.pop(tenant_id, None) or self.instance_for(tenant_id)
        self._samples.pop(tenant_id, None)
        self._rates.pop(tenant_id, None)
        self._recent.forget(name)
        ok = True
        try:
            supervisor = self.instances.get(name)
            if supervisor is not None:
                await supervisor.request("detach_tenant", {"tenant_id": tenant_id})
        except ControlError as exc:
            ok = exc.code == "NOT_FOUND"
        if name != SHARED:
            await self._stop_instance(name)
        return ok

    async def move_tenant(self, tenant_id: str, placement: str) -> None:
        """Migrate a tenant between the shared instance and a dedicated one:
        detach from the old (sessions end with 57P01), attach and reopen its
        open PDBs in the new. On failure the tenant goes back and the error is raised."""
        old = self.home.get(tenant_id) or self.instance_for(tenant_id)
        new = self.instance_for(tenant_id, placement)
        if old == new:
            return
        await self._request_on(old, "detach_tenant", {"tenant_id": tenant_id}, missing_ok=True)
        self.home.pop(tenant_id, None)
        self._recent.forget(old)
        try:
            await self._attach_on(new, tenant_id)
        except Exception:
            await self._attach_on(old, tenant_id)
            raise
        if old != SHARED:
            await self._stop_instance(old)

    async def _request_on(self, name: str, op: str, args: dict, missing_ok: bool = False) -> dict | None:
        supervisor = self.instances.get(name)
        if supervisor is None:
            return None
        try:
            return await supervisor.request(op, args)
        except ControlError as exc:
            if missing_ok and exc.code == "NOT_FOUND":
                return None
            raise

    async def _attach_on(self, name: str, tenant_id: str) -> None:
        if name not in self.instances:
            await self._start_instance(name)  # its re-apply attaches tenants placed there
            if self.home.get(tenant_id) == name:
                return
        supervisor = self.instances[name]
        for record, slot, open_pdbs in await asyncio.to_thread(self._desired_for, tenant_id):
            await supervisor.request("attach_tenant", self._attach_args(record, slot))
            for row in open_pdbs:
                await supervisor.request("open_pdb", self._open_args(row, row["open_mode"] or "READ_WRITE"))
        self.home[tenant_id] = name
        self._recent.forget(name)

    def _desired_for(self, tenant_id: str) -> list[tuple[dict, int, list[dict]]]:
        with self.catalog.write() as conn:
            record = tenant_rows.get(conn, tenant_id)
            slot = pdb_rows.assign_slot(conn, tenant_id)
            rows = [row for row in pdb_rows.live(conn) if row["tenant_id"] == tenant_id and row["state"] == "open"]
        return [(record, slot, rows)] if record is not None else []

    # ---- statistics

    async def stats(self, tenant_id: str) -> dict | None:
        """The instance's stats of this tenant; None while it is down or not attached."""
        try:
            result = await self._request(tenant_id, "stats", {"tenant_id": tenant_id}, timeout=5.0)
        except ControlError:
            return None
        return result["tenants"].get(tenant_id)

    async def recent_stats(self, tenant_id: str) -> tuple[dict | None, float]:
        """(the tenant's stats block or None, wall time the measurement started), at most
        USAGE_MAX_AGE_SECONDS old: the sampler's latest answer of the tenant's instance,
        else one `stats` request of that instance shared by every caller meanwhile
        (rustymt.service.recent). None while the instance is down or lacks the tenant;
        that answer is kept as long, so a dead instance is not asked on every GET."""
        name = self.home.get(tenant_id) or self.instance_for(tenant_id)
        blocks, measured_at = await self._recent.get(name, lambda: self._all_stats(name))
        return blocks.get(tenant_id), measured_at

    def fresh_stats(self, tenant_id: str) -> tuple[dict | None, float] | None:
        """recent_stats() without awaiting when a young enough answer is kept; else None."""
        kept = self._recent.fresh(self.home.get(tenant_id) or self.instance_for(tenant_id))
        return None if kept is None else (kept[0].get(tenant_id), kept[1])

    async def _all_stats(self, name: str) -> dict[str, dict]:
        supervisor = self.instances.get(name)
        if supervisor is None or self._frozen(name):
            return {}
        try:
            return (await supervisor.request("stats", {}, timeout=5.0))["tenants"]
        except ControlError:
            return {}

    async def _repair_unattached(self) -> None:
        """Attach (and reopen the open PDBs of) live tenants no instance has,
        e.g. because their port was busy when their instance (re)started."""
        for record in await asyncio.to_thread(self._live_tenants):
            tenant_id = record["tenant_id"]
            name = self.instance_for(tenant_id)
            supervisor = self.instances.get(name)
            if tenant_id in self.home or supervisor is None or supervisor.health != "healthy":
                continue
            try:
                await self._attach_on(name, tenant_id)
                log.info("tenant %s attached to %s by the repair pass", tenant_id, name)
            except (ControlError, ServiceError) as exc:
                log.warning("tenant %s still not attached to %s: %s", tenant_id, name, exc)

    async def _sample_forever(self) -> None:
        """Every instance's stats once per SAMPLE_SECONDS, the instances spread over the period.

        Asked back to back, the instances made a burst each second: every
        instance process computing its stats at once and this loop parsing all
        the answers in a row (~20 ms of CPU on both cores with 21 instances),
        during which API requests queued. Now each instance has its own due
        time, SAMPLE_SECONDS after its previous sample started (so every rate
        window is at least a period), the first ones placed a slot
        (SAMPLE_SECONDS / instances) apart, and two samples are never closer
        than half a slot: instances that fell behind (a slow answer, a stalled
        loop) catch up spread out, not in a burst. Each sample is its own task,
        at most one per instance, so an instance slow to answer delays only its
        own figures; the repair pass runs beside them the same way."""
        loop = asyncio.get_running_loop()
        due: dict[str, float] = {}
        last_sample = -SAMPLE_SECONDS
        next_repair = loop.time() + REPAIR_EVERY_SECONDS
        while True:
            now = loop.time()
            if now >= next_repair:
                next_repair = now + REPAIR_EVERY_SECONDS
                self._in_background("repair", self._repair_unattached)
            slot = SAMPLE_SECONDS / max(1, len(self.instances))
            for name in [name for name in due if name not in self.instances]:
                del due[name]
            for index, name in enumerate([name for name in self.instances if name not in due]):
                due[name] = now + index * slot
            if not due:
                await asyncio.sleep(min(SAMPLE_SECONDS, next_repair - now))  # no instance: the period itself
                continue
            name = min(due, key=due.__getitem__)
            await asyncio.sleep(max(0.0, due[name] - now, last_sample + slot / 2 - now))  # the schedule itself
            if name not in self.instances:
                continue  # stopped meanwhile: dropped above on the next turn
            last_sample = loop.time()
            due[name] = last_sample + SAMPLE_SECONDS
            self._in_background("stats " + name, lambda: self._sample(name))

    def _in_background(self, key: str, run: Callable[[], Awaitable[None]]) -> None:
        """run() as a task unless the previous one under `key` is still going; a failure is logged
        (the sampler keeps running)."""
        if key in self._sampling:
            return

        async def guarded() -> None:
            try:
                await run()
            except Exception:  # noqa: BLE001 - logged; the next period tries again
                log.exception("%s failed", key)

        task = self._sampling[key] = asyncio.create_task(guarded(), name=key)
        task.add_done_callback(lambda _: self._sampling.pop(key, None))  # in flight only: no entry outlives its task

    async def _sample(self, name: str) -> None:
        supervisor = self.instances.get(name)
        if supervisor is None or supervisor.health != "healthy" or self._frozen(name):
            return
        started, started_wall = time.monotonic(), time.time()
        try:
            result = await supervisor.request("stats", {}, timeout=5.0)
        except ControlError:
            return
        self._recent.put(name, result["tenants"], started, started_wall)  # GET tenant serves it
        now = time.monotonic()
        for tenant_id, block in result["tenants"].items():
            samples = self._samples.setdefault(tenant_id, [])
            if samples and now - samples[-1][0] < MIN_RATE_WINDOW_SECONDS:
                continue  # a rate over a sliver of time is noise: keep the pair (and rates) we have
            samples.append((now, block))
            del samples[:-2]
            self._rates[tenant_id] = self._rates_between(samples)

    def rates(self, tenant_id: str) -> dict | None:
        """cpu_percent, iops and network_mbps between the last two samples (None before two exist).
        Computed once per sample by the sampler, not on every GET."""
        return self._rates.get(tenant_id)

    @staticmethod
    def _rates_between(samples: list[tuple[float, dict]]) -> dict | None:
        if len(samples) < 2:
            return None
        (t0, a), (t1, b) = samples
        window = t1 - t0
        if window <= 0 or b["cpu"]["used_cpu_ns"] < a["cpu"]["used_cpu_ns"]:
            return None  # counters restarted (instance restart): wait for the next pair
        io_ops = (b["io"]["reads"] + b["io"]["writes"]) - (a["io"]["reads"] + a["io"]["writes"])
        net_bytes = (b["network"]["bytes_in"] + b["network"]["bytes_out"]) - (a["network"]["bytes_in"] + a["network"]["bytes_out"])
        return {"cpu_percent": round(100.0 * (b["cpu"]["used_cpu_ns"] - a["cpu"]["used_cpu_ns"]) / (window * 1e9), 2),
                "iops": max(0, round(io_ops / window)),
                "network_mbps": max(0.0, round(net_bytes * 8 / window / 1e6, 3)),
                "window_seconds": round(window, 3)}

    async def open_pdb_count(self) -> int:
        """PDBs open right now in the running instances (not what the catalog wishes)."""
        total = 0
        for supervisor in list(self.instances.values()):
            with contextlib.suppress(ControlError):
                total += (await supervisor.request("health", {}, timeout=2.0))["pdbs"]
        return total

    def status(self) -> list[dict]:
        return [{**supervisor.status(), "placement": SHARED if name == SHARED else "dedicated",
                 "tenant_id": self._tenant_of_instance(name),
                 "tenants": sorted(t for t, home in self.home.items() if home == name)}
                for name, supervisor in self.instances.items()]
