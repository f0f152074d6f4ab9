"""Tenant operations: the only code that changes tenant state.

Every public coroutine takes the acting Principal first, checks its
permission (and tenant scope) itself, runs its catalog work as one
transaction in a worker thread, publishes events after the commit, and
returns a plain dict shaped like the REST body of the spec. GraphQL calls the
same coroutines. Refusals are ServiceError with the spec's codes.

Admission control: a tenant is guaranteed a CPU minimum (its tier's
cpu_min_percent, scaled with its CPU quota); creating a tenant, raising its
quota or changing its tier is refused with INSUFFICIENT_RESOURCES (507) when
the guarantees of all live tenants would exceed the host's CPU. Ceilings
(cpu_percent, memory, storage, ...) may overcommit, as in any shared pool.
"""
from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import os
import secrets
import socket
import sqlite3
import time
import weakref
from typing import Any, Callable

from rustymt.catalog import cdb as cdb_rows
from rustymt.catalog import pdbs as pdb_rows
from rustymt.engine import storage
from rustymt.catalog import tenants as rows
from rustymt.catalog.db import Catalog
from rustymt.events.bus import EventBus
from rustymt.model import timeutil
from rustymt.model.tenants import STATE_NAMES, TenantState, check_mutable, check_transition
from rustymt.model.tiers import PRIORITY_NAMES, QUOTA_FIELDS, TIER_NAMES, TIERS, cpu_shares, guaranteed_cpu_percent
from rustymt.service import authz, inputs
from rustymt.service.authz import Principal
from rustymt.service.capacity import HostCapacity
from rustymt.service.errors import ServiceError
from rustymt.service.fleet import USAGE_MAX_AGE_SECONDS
from rustymt.service.hostbinding import host_merged
from rustymt.service.passwords import hash_password
from rustymt.service.recent import RecentValues

log = logging.getLogger("rustymt.tenants")

# The permission each operation needs; the REST route table reads it from here.
PERMISSION = {
    "create": "tenant:admin",
    "list": "tenant:read",
    "get": "tenant:read",
    "suspend": "tenant:admin",
    "resume": "tenant:admin",
    "change_tier": "tenant:admin",
    "set_priority": "tenant:admin",
    "terminate": "tenant:admin",
    "update_quota": "resources:update",
    "resources": "resources:read",
    "isolation": "resources:read",
}

TENANT_NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_]{0,62}"
MIN_PASSWORD_LENGTH = 8
MAX_PAGE_SIZE = 100
# Upper bounds of a quota field; beyond them the request is malformed (400),
# below them but beyond what the host can guarantee it is refused (507).
# GraphQL's Int is 32-bit signed: nothing REST accepts may be beyond it, or
# the GraphQL listings of every tenant would fail to serialize.
GRAPHQL_INT_MAX = (1 << 31) - 1
QUOTA_LIMITS = {
    "cpu_percent": 100 * 1024,
    "memory_mb": GRAPHQL_INT_MAX,
    "storage_gb": GRAPHQL_INT_MAX,
    "iops": GRAPHQL_INT_MAX,
    "network_mbps": GRAPHQL_INT_MAX,
    "max_connections": 100_000,
}

# GET /api/v1/tenants/{id} shows these of describe()'s quota, usage and sla blocks.
GET_QUOTA_FIELDS = ("cpu_percent", "memory_mb", "storage_gb", "iops", "max_connections")
GET_USAGE_FIELDS = ("cpu_percent", "memory_mb", "storage_gb", "iops", "active_connections", "storage_bytes", "source")
GET_SLA_FIELDS = ("uptime_percent", "avg_response_time_ms", "violations", "time_breakdown", "source")
# Throttle attribution before any statement was observed: nothing executed, queued or throttled.
NO_TIME_BREAKDOWN = {"executing_seconds": 0.0, "queued_seconds": 0.0, "throttled_seconds": 0.0, "latency_cause": "none"}

def sla_warnings(violations: list[dict]) -> list[dict]:
    """The spec's SLA_VIOLATION (HTTP 200, a warning): the answer succeeds and
    says, in the error table's shape, that the tenant's SLA is being violated."""
    if not violations:
        return []
    latest = violations[-1]
    return [{"code": "SLA_VIOLATION",
             "message": f"{len(violations)} SLA violation(s) in the current window; latest: {latest['description']}",
             "details": {"violations": len(violations), "latest_type": latest["violation_type"],
                         "latest_severity": latest["severity"], "latest_at": latest["timestamp"]}}]


NOT_MEASURED = "not measured: no engine instance serves this tenant right now, so usage counters are 0"
MEASURED = ("engine instance {instance}: allocator, scheduler, iovfs and session counters; cpu_percent, iops and "
            "network_mbps over the sampler's last window (0 until it has two samples)")
SLA_SOURCE = ("uptime_percent: share of the tenant's lifetime spent in state active (catalog state history); "
              "response times are not measured until the engine serves the tenant")


# The state log's timestamps never change once written: parse each once (GET tenant computes uptime every call).
_instant = functools.lru_cache(maxsize=65_536)(timeutil.from_iso)
# The clock has whole seconds: each second's ISO string is formatted once, not on every GET (strftime).
_iso = functools.lru_cache(maxsize=16)(timeutil.to_iso)


@functools.lru_cache(maxsize=16)
def _iso_of_whole_second(second: int) -> str:
    return timeutil.to_iso(datetime.datetime.fromtimestamp(second, timeutil.UTC))


@functools.lru_cache(maxsize=1024)
def _measured_source(instance: str) -> str:
    return MEASURED.format(instance=instance)  # formatted once per instance name, not on every GET


def _iso_of_unix(seconds: float) -> str:
    """Unix time as the API's ISO string, rounded down: a measurement is never claimed newer."""
    return _iso_of_whole_second(int(seconds))

MIB, GIB = 1 << 20, 1 << 30
MEMORY_FIELDS = ("allocated_bytes", "quota_bytes", "peak_usage_bytes", "oom_count", "allocation_count", "deallocation_count")
IO_FIELDS = ("reads", "writes", "bytes", "read_bytes", "write_bytes", "throttled_ns")
POOL_FIELDS = ("hits", "misses", "evictions", "resident", "pinned", "min_frames", "max_frames", "frame_bytes")
ENGINE_COUNTERS = "engine instance {instance}: native counters, cumulative since the tenant's slot was attached there"
NETWORK_SOURCE = ("bytes: every protocol byte on the tenant's port, counted by its engine instance; "
                  "packets_dropped: drops happen in the host's tc shaping, not counted here")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the instance's listener binds
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def pdb_name_for(tenant_name: str) -> str:
    return f"PDB_{tenant_name.upper()}"


class TenantService:
    def __init__(self, catalog: Catalog, settings: Any, bus: EventBus, capacity: HostCapacity,
                 clock: Callable[[], Any] = timeutil.utc_now, pdbs: Any = None, fleet: Any = None):
        self.catalog = catalog
        self.settings = settings
        self.bus = bus
        self.capacity = capacity
        self.clock = clock
        self.pdbs = pdbs    # rustymt.service.pdbs.PdbService: the tenant's PDB files
        self.fleet = fleet  # rustymt.service.fleet.Fleet: the engine; None = catalog and files only
        self.host = None  # rustymt.service.hostbinding.HostBinding (the daemon sets it): host counters merged in
        self._tier_cache: dict[str, str | None] = {}
        # tenant_id -> bytes of its live PDBs' datafiles, walked at most once per USAGE_MAX_AGE_SECONDS
        self._storage: RecentValues[int] = RecentValues(USAGE_MAX_AGE_SECONDS)
        self._uptime_kept: dict[str, tuple[list, Any, float]] = {}  # tenant_id -> (history, clock reading, uptime)
        self._get_kept: dict[str, tuple[tuple, dict]] = {}  # tenant_id -> (what get()'s body is made of, the body)
        self._create_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # tenant_id -> measured SLA block (rustymt.metering.service.MeteringService.sla_metrics) or None
        self.sla_source: Callable[[str], dict | None] | None = None

    # ---- helpers

    async def _in_thread(self, function, *args):
        return await asyncio.to_thread(function, *args)

    def _now(self) -> str:
        return _iso(self.clock())

    def _publish(self, events: list[tuple[str, str | None, dict]]) -> None:
        for event_type, tenant_id, data in events:
            self.bus.publish(event_type, tenant_id, data)

    @staticmethod
    def _require_tenant(conn: sqlite3.Connection, tenant_id: str) -> dict[str, Any]:
        record = rows.get(conn, tenant_id)
        if record is None:
            raise ServiceError("TENANT_NOT_FOUND", f"tenant {tenant_id} does not exist", details={"tenant_id": tenant_id})
        return record

    def _check_admission(self, conn: sqlite3.Connection, tenant_id: str | None, tier: str, cpu_percent: int) -> None:
        """Refuse when the CPU guarantees of all live tenants would exceed the host."""
        others = sum(guaranteed_cpu_percent(t, cpu) for t, cpu in rows.live_cpu_quotas(conn, exclude=tenant_id))
        wanted = guaranteed_cpu_percent(tier, cpu_percent)
        if others + wanted > self.capacity.cpu_percent:
            raise ServiceError(
                "INSUFFICIENT_RESOURCES",
                "the host cannot guarantee this tenant's CPU minimum",
                details={"resource": "cpu", "requested_guarantee_percent": wanted,
                         "available_percent": max(0, self.capacity.cpu_percent - others),
                         "host_cpu_percent": self.capacity.cpu_percent},
            )

    def _allocate_port(self, conn: sqlite3.Connection) -> int:
        low, high = self.settings.tenant.ports
        used = rows.used_ports(conn)
        for port in range(low, high + 1):
            # A port some other program already holds would leave the tenant
            # without a listener: skip it (checked again when the instance binds).
            if port not in used and (self.fleet is None or port_is_free(self.settings.tenant.listen_host, port)):
                return port
        raise ServiceError("INSUFFICIENT_RESOURCES", f"no free tenant port left in {low}-{high}",
                           details={"resource": "network_port", "range": f"{low}-{high}"})

    # ---- create

    async def create(self, principal: Principal, *, tenant_name: str, admin_user: str, admin_password: str,
                     service_tier: str, organization: str | None = None, tags: dict[str, str] | None = None) -> dict:
        authz.require(principal, PERMISSION["create"])
        tenant_name = inputs.text("tenant_name", tenant_name, max_length=63, pattern=TENANT_NAME_PATTERN)
        admin_user = inputs.text("admin_user", admin_user, max_length=256)
        inputs.text("admin_password", admin_password, max_length=1024)
        if len(admin_password) < MIN_PASSWORD_LENGTH:
            raise inputs.invalid("admin_password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
        tier = inputs.choice("service_tier", service_tier, TIER_NAMES)
        if organization is not None:
            organization = inputs.text("organization", organization, max_length=256, allow_empty=True)
        tags = inputs.string_map("tags", tags)
        # Creates of one name queue here so that the losers of a race are refused
        # by the cheap check below instead of each spending a scrypt hash (~0.1 s
        # of CPU). The transaction in _create_tx is still what guarantees
        # uniqueness (several processes, or names differing only in case).
        lock = self._create_locks.setdefault(tenant_name.lower(), asyncio.Lock())
        async with lock:
            await self._in_thread(self._refuse_duplicate_name, tenant_name)
            password_hash = await self._in_thread(hash_password, admin_password)
            tenant_id, pdb_id = f"tenant_{secrets.token_hex(6)}", f"pdb_{secrets.token_hex(6)}"
            # The PDB's files are staged (seed copy + the admin's SCRAM verifier),
            # the catalog committed, then the folder renamed into place.
            stage, guid = (await self._in_thread(self.pdbs.stage, pdb_id, pdb_name_for(tenant_name), admin_user, admin_password)
                           if self.pdbs else (None, ""))
            try:
                body = await self._in_thread(self._create_tx, tenant_id, pdb_id, guid, tenant_name, admin_user,
                                             password_hash, tier, organization, tags, stage is not None)
            except BaseException:
                if stage is not None:
                    storage.discard(stage)
                raise
            if stage is not None:
                await self._in_thread(storage.publish, self.settings.server.data_dir, stage, pdb_id)
        self._tier_cache[tenant_id] = tier
        pdb_state = "mounted" if stage is not None else "created"
        self._publish([
            ("tenant.created", tenant_id, {"tenant_name": tenant_name, "service_tier": tier, "pdb_id": pdb_id,
                                           "network_port": body["resources"]["network_port"]}),
            ("pdb.created", tenant_id, {"pdb_id": pdb_id, "pdb_name": pdb_name_for(tenant_name), "state": pdb_state}),
        ])
        if self.fleet is not None:
            await self._serve_new_tenant(tenant_id, pdb_id)
        return body

    async def _serve_new_tenant(self, tenant_id: str, pdb_id: str) -> None:
        """Attach the tenant to its instance and open its PDB READ_WRITE. The
        tenant exists once committed: if the engine is down now, the PDB stays
        mounted (logged) and POST /pdbs/{id}/open opens it later."""
        def read():
            with self.catalog.read() as conn:
                return pdb_rows.get(conn, pdb_id)

        try:
            await self.pdbs.open_row(await self._in_thread(read), "READ_WRITE")
        except ServiceError as exc:
            log.error("tenant %s created, but its PDB %s could not be opened: %s", tenant_id, pdb_id, exc)

    def _refuse_duplicate_name(self, tenant_name: str) -> None:
        with self.catalog.read() as conn:
            if rows.get_live_by_name(conn, tenant_name) is not None:
                raise self._name_taken(tenant_name)

    @staticmethod
    def _name_taken(tenant_name: str) -> ServiceError:
        return ServiceError("TENANT_ALREADY_EXISTS", f"tenant_name: a tenant named {tenant_name} already exists",
                            details={"tenant_name": tenant_name}, field="tenant_name")

    def _create_tx(self, tenant_id, pdb_id, guid, tenant_name, admin_user, password_hash, tier, organization, tags,
                   files_staged) -> dict:
        spec = TIERS[tier]
        now = self._now()
        with self.catalog.write() as conn:
            if rows.get_live_by_name(conn, tenant_name) is not None:
                raise self._name_taken(tenant_name)
            if rows.get_live_by_admin(conn, admin_user) is not None:
                raise ServiceError("CONFLICT", "admin_user: already the administrator of another tenant", field="admin_user")
            pdb_name = pdb_name_for(tenant_name)
            if cdb_rows.live_pdb_named(conn, pdb_name) is not None:
                raise ServiceError("CONFLICT", f"tenant_name: its PDB name {pdb_name} is taken", field="tenant_name")
            if cdb_rows.count_pdbs(conn)["total"] >= self.settings.cdb.max_pdbs:
                raise ServiceError("INSUFFICIENT_RESOURCES", f"the CDB already holds its maximum of {self.settings.cdb.max_pdbs} PDBs",
                                   details={"resource": "pdbs", "max_pdbs": self.settings.cdb.max_pdbs})
            self._check_admission(conn, None, tier, spec.quota.cpu_percent)
            port = self._allocate_port(conn)
            rows.insert(conn, {
                "tenant_id": tenant_id, "tenant_name": tenant_name, "admin_user": admin_user,
                "admin_password": password_hash, "organization": organization, "tags": tags,
                "service_tier": tier, "state": TenantState.ACTIVE.value, "priority": spec.priority.value,
                **spec.quota.as_dict(), "network_port": port, "created_at": now, "updated_at": now,
                "state_changed_at": now,
            })
            # The PDB's catalog rows: "mounted" when its files are staged (published after this commit).
            cdb_rows.insert_pdb(conn, pdb_id, pdb_name, tenant_id, "mounted" if files_staged else "created", now)
            if files_staged:
                pdb_rows.insert_files(conn, pdb_id, guid)
            rows.log_state(conn, tenant_id, None, TenantState.ACTIVE.value, "created", now)
        return {
            "tenant_id": tenant_id,
            "pdb_id": pdb_id,
            "status": TenantState.ACTIVE.value,
            "created_at": now,
            "resources": {"cpu_cores": spec.quota.cpu_cores, "memory_mb": spec.quota.memory_mb,
                          "storage_gb": spec.quota.storage_gb, "network_port": port},
        }

    # ---- read

    async def list(self, principal: Principal, page: int = 1, page_size: int = 20, tier: str | None = None,
                   state: str | None = None) -> dict:
        authz.require(principal, PERMISSION["list"])
        page = inputs.integer("page", page, minimum=1, maximum=1 << 31)
        page_size = inputs.integer("page_size", page_size, minimum=1, maximum=MAX_PAGE_SIZE)
        tier = inputs.choice("tier", tier, TIER_NAMES) if tier is not None else None
        state = inputs.choice("state", state, STATE_NAMES) if state is not None else None

        def query(conn: sqlite3.Connection) -> dict:
            # A tenant-scoped caller sees only its own tenant, never others' metadata.
            total, records = rows.page(conn, offset=(page - 1) * page_size, limit=page_size, tier=tier, state=state,
                                       tenant_id=principal.tenant_id)
            return {
                "tenants": [{key: record[key] for key in ("tenant_id", "tenant_name", "service_tier", "state", "created_at")}
                            for record in records],
                "total": total,
                "page": page,
                "page_size": page_size,
            }

        # Two SELECTs over a small catalog, on this thread, and the page built from them, kept until
        # the next commit (Catalog.read_cached): the same question gets the same dict (callers must
        # not mutate it), whose encoding the REST handler keeps beside it.
        return self.catalog.read_cached(("list", page, page_size, tier, state, principal.tenant_id), query)

    async def describe(self, principal: Principal, tenant_id: str) -> dict:
        """Everything known about a tenant (GraphQL's Tenant); REST's GET is a projection of it."""
        authz.require(principal, PERMISSION["get"], tenant_id)
        return self._describe_body(*self._catalog_view(tenant_id), measured=await self._measure(tenant_id))

    def _catalog_view(self, tenant_id: str) -> tuple:
        """(record, PDB rows, state history, pending tier change): four one-tenant SELECTs on this
        thread, kept until the next commit (Catalog.read_cached). Bodies are still built per call
        (uptime and usage move with the clock)."""
        def query(conn: sqlite3.Connection) -> tuple:
            record = self._require_tenant(conn, tenant_id)
            return record, cdb_rows.pdbs_of_tenant(conn, tenant_id), rows.state_history(conn, tenant_id), \
                rows.pending_tier_change(conn, tenant_id)

        return self.catalog.read_cached(("describe", tenant_id), query)

    async def describe_many(self, principal: Principal, tenant_ids: list[str]) -> dict[str, dict | ServiceError]:
        """describe() of many tenants in one catalog read (GraphQL lists): {tenant_id: body or refusal}.

        Each id is checked as describe() checks it; a refusal or a missing
        tenant is that id's value, so one bad id does not fail the others.
        """
        answers: dict[str, dict | ServiceError] = {}
        allowed = []
        for tenant_id in dict.fromkeys(tenant_ids):
            try:
                authz.require(principal, PERMISSION["get"], tenant_id)
                allowed.append(tenant_id)
            except ServiceError as exc:
                answers[tenant_id] = exc

        def query():
            found = {}
            with self.catalog.read() as conn:
                for tenant_id in allowed:
                    record = rows.get(conn, tenant_id)
                    found[tenant_id] = record and (record, cdb_rows.pdbs_of_tenant(conn, tenant_id),
                                                   rows.state_history(conn, tenant_id), rows.pending_tier_change(conn, tenant_id))
            return found

        for tenant_id, parts in (await self._in_thread(query)).items():
            answers[tenant_id] = self._describe_body(*parts, measured=await self._measure(tenant_id)) if parts else ServiceError(
                "TENANT_NOT_FOUND", f"tenant {tenant_id} does not exist", details={"tenant_id": tenant_id})
        return answers

    def _describe_body(self, record: dict, pdbs: list, history: list, pending: dict | None, measured: dict | None = None) -> dict:
        return {
            "tenant_id": record["tenant_id"],
            "tenant_name": record["tenant_name"],
            "service_tier": record["service_tier"],
            "state": record["state"],
            "priority": record["priority"],
            "cpu_shares": cpu_shares(record["service_tier"], record["priority"]),
            "quota": rows.quota_of(record),
            "usage": self._usage(record, measured),
            "sla": self._sla(record, history),
            "admin_user": record["admin_user"],
            "organization": record["organization"],
            "tags": record["tags"],
            "network_port": record["network_port"],
            "pdb_id": pdbs[0]["pdb_id"] if pdbs else None,
            "pdb_ids": [pdb["pdb_id"] for pdb in pdbs],
            "created_at": record["created_at"],
            "updated_at": record["updated_at"],
            "pending_tier_change": ({"new_tier": pending["new_tier"], "effective_date": pending["effective_at"]}
                                    if pending else None),
        }

    async def get(self, principal: Principal, tenant_id: str) -> dict:
        """The spec's GET /api/v1/tenants/{id} body, plus created_at, pdb_id and network_port.

        The fields describe() has, built directly rather than by projecting
        describe()'s larger body: this is the hottest read of the API. The body
        is kept per tenant and handed out again (the same dict: callers must not
        mutate it) while everything it is made of is the same: the catalog view
        (the same object until a commit), the uptime, the SLA tracker's block
        (the same until the next sample) and the engine measurements (replaced,
        never mutated, at each sample). Nothing else goes in (no clock: GET shows
        no last_updated), so the kept body is exactly what building it would give."""
        authz.require(principal, PERMISSION["get"], tenant_id)
        view = self._catalog_view(tenant_id)
        measured = await self._measure(tenant_id)
        uptime = self._uptime_of(tenant_id, view[2])
        measured_sla = self.sla_source(tenant_id) if self.sla_source else None
        inputs = (view, uptime, measured_sla, None) if measured is None else (
            view, uptime, measured_sla, measured["stats"], measured["rates"], measured["storage_bytes"], measured["instance"])
        kept = self._get_kept.get(tenant_id)
        if kept is not None and kept[0] == inputs:  # identical objects compare without looking inside
            return kept[1]
        record, pdbs, _history, _pending = view
        usage = self._usage(record, measured)
        sla = self._sla_block(uptime, measured_sla)
        body = {
            "tenant_id": record["tenant_id"],
            "tenant_name": record["tenant_name"],
            "service_tier": record["service_tier"],
            "state": record["state"],
            "priority": record["priority"],
            "quota": {key: record[key] for key in GET_QUOTA_FIELDS},
            "usage": {key: usage[key] for key in GET_USAGE_FIELDS},
            "sla": {key: sla[key] for key in GET_SLA_FIELDS},
            "created_at": record["created_at"],
            "pdb_id": pdbs[0]["pdb_id"] if pdbs else None,
            "network_port": record["network_port"],
            "warnings": sla_warnings(sla["violations"]),
        }
        self._get_kept[tenant_id] = (inputs, body)
        return body

    async def get_by_name(self, principal: Principal, tenant_name: str) -> dict:
        """describe() of the live tenant called `tenant_name` (GraphQL tenantByName)."""
        authz.require(principal, PERMISSION["get"])

        def query():
            with self.catalog.read() as conn:
                return rows.get_live_by_name(conn, tenant_name)

        record = await self._in_thread(query)
        # A scoped caller learns nothing about names that are not its own.
        if record is None or (principal.tenant_id is not None and record["tenant_id"] != principal.tenant_id):
            raise ServiceError("TENANT_NOT_FOUND", f"no tenant named {tenant_name}", details={"tenant_name": tenant_name})
        return await self.describe(principal, record["tenant_id"])

    async def _measure(self, tenant_id: str) -> dict | None:
        """What the engine measures of a tenant: {"stats", "rates", "instance", "storage_bytes",
        "measured_at"}; None without an engine.

        Served from measurements at most USAGE_MAX_AGE_SECONDS old (the fleet
        sampler's latest stats, the datafile sizes walked at most once that
        often per tenant; rustymt.service.recent): a GET is no longer a
        control-socket round trip plus a directory walk. `measured_at` (Unix
        seconds) is when the older of the two measurements started, so
        usage.last_updated never claims fresher figures than they are.
        """
        if self.fleet is None:
            return None
        # The kept values without a coroutine on the common path (both young enough).
        stats, stats_at = self.fleet.fresh_stats(tenant_id) or await self.fleet.recent_stats(tenant_id)
        storage_bytes, storage_at = self._storage.fresh(tenant_id) or await self._storage.get(
            tenant_id, lambda: self._in_thread(self._storage_bytes, tenant_id))
        return {"stats": stats, "rates": self.fleet.rates(tenant_id), "storage_bytes": storage_bytes,
                "instance": self.fleet.home.get(tenant_id) or self.fleet.instance_for(tenant_id),
                "measured_at": min(stats_at, storage_at) if stats is not None else storage_at}

    def _storage_bytes(self, tenant_id: str) -> int:
        """Datafile sizes (WAL included) of the tenant's live PDBs, open or not."""
        with self.catalog.read() as conn:
            pdb_ids = [pdb["pdb_id"] for pdb in cdb_rows.pdbs_of_tenant(conn, tenant_id) if pdb["state"] != "dropped"]
        total = 0
        for pdb_id in pdb_ids:
            folder = storage.pdb_dir(self.settings.server.data_dir, pdb_id)
            if os.path.isdir(folder):
                total += storage.storage_bytes(folder)
        return total

    def _usage(self, record: dict, measured: dict | None = None) -> dict:
        # Nothing sampled (no engine, or the instance is down): report 0 and
        # say so, rather than inventing numbers.
        stats = measured and measured["stats"]
        storage_bytes = measured["storage_bytes"] if measured else 0
        last_updated = _iso_of_unix(measured["measured_at"]) if measured else self._now()
        if not stats:
            return {"cpu_percent": 0.0, "memory_mb": 0, "storage_gb": round(storage_bytes / GIB), "iops": 0,
                    "network_mbps": 0, "active_connections": 0, "storage_bytes": storage_bytes,
                    "last_updated": last_updated, "source": NOT_MEASURED}
        source = _measured_source(measured["instance"])
        rates = measured["rates"] or {"cpu_percent": 0.0, "iops": 0, "network_mbps": 0}
        return {"cpu_percent": float(rates["cpu_percent"]), "memory_mb": round(stats["memory"]["allocated_bytes"] / MIB),
                "storage_gb": round(storage_bytes / GIB), "iops": int(rates["iops"]),
                "network_mbps": round(rates["network_mbps"]), "active_connections": stats["sessions"],
                "storage_bytes": storage_bytes, "last_updated": last_updated, "source": source}

    def _sla(self, record: dict, history: list[tuple[str, str]]) -> dict:
        return self._sla_block(self._uptime_of(record["tenant_id"], history),
                               self.sla_source(record["tenant_id"]) if self.sla_source else None)

    @staticmethod
    def _sla_block(uptime: float, measured: dict | None) -> dict:
        """The catalog's uptime, overridden by what the SLA tracker measured (when it has)."""
        body = {"uptime_percent": uptime, "avg_response_time_ms": 0.0,
                "p95_response_time_ms": 0.0, "p99_response_time_ms": 0.0, "error_rate_percent": 0.0,
                "violations": [], "time_breakdown": NO_TIME_BREAKDOWN, "source": SLA_SOURCE}
        body.update({key: value for key, value in (measured or {}).items() if value is not None})
        return body

    def _uptime_of(self, tenant_id: str, history: list[tuple[str, str]]) -> float:
        """_uptime_percent, computed once per tenant per clock second: the clock has whole
        seconds and `history` is the same object until the catalog changes (read_cached)."""
        # With the real clock, the current second is read from time.time() (a C call) rather
        # than by building a datetime; an injected clock (tests) is asked every time.
        second = int(time.time()) if self.clock is timeutil.utc_now else self.clock()
        kept = self._uptime_kept.get(tenant_id)
        if kept is not None and kept[0] is history and kept[1] == second:
            return kept[2]
        uptime = self._uptime_percent(history, self.clock())
        self._uptime_kept[tenant_id] = (history, second, uptime)
        return uptime

    def _uptime_percent(self, history: list[tuple[str, str]], now) -> float:
        if not history:
            return 0.0
        start = _instant(history[0][1])
        active_seconds = 0.0
        for index, (state, at) in enumerate(history):
            until = _instant(history[index + 1][1]) if index + 1 < len(history) else now
            if state == TenantState.ACTIVE.value:
                active_seconds += (until - _instant(at)).total_seconds()
        lifetime = (now - start).total_seconds()
        if lifetime <= 0:  # created within this second
            return 100.0 if history[-1][0] == TenantState.ACTIVE.value else 0.0
        return round(100.0 * active_seconds / lifetime, 3)

    # ---- lifecycle

    def _transition_tx(self, tenant_id: str, target: TenantState, reason: str | None) -> tuple[dict, str, list[dict]]:
        """(old record, time, PDB rows dropped) after moving the tenant to `target`."""
        now = self._now()
        dropped = []
        with self.catalog.write() as conn:
            record = self._require_tenant(conn, tenant_id)
            check_transition(record["state"], target)
            changes = {"state": target.value, "state_reason": reason, "updated_at": now, "state_changed_at": now}
            if target is TenantState.TERMINATED:
                changes["network_port"] = None  # the port goes back to the pool
                rows.cancel_tier_change(conn, tenant_id)
                dropped = [pdb for pdb in cdb_rows.pdbs_of_tenant(conn, tenant_id) if pdb["state"] != "dropped"]
                for pdb in dropped:
                    cdb_rows.set_pdb_state(conn, pdb["pdb_id"], "dropped", now)
                    pdb_rows.set_datafiles_kept(conn, pdb["pdb_id"], True)  # files kept: docs/daemon.md "Terminate"
                pdb_rows.release_slot(conn, tenant_id)
            rows.update(conn, tenant_id, changes)
            rows.log_state(conn, tenant_id, record["state"], target.value, reason, now)
        return record, now, dropped

    async def _transition(self, principal: Principal, permission: str, tenant_id: str, target: TenantState,
                          reason: str | None, extra_event_data: dict | None = None) -> str:
        authz.require(principal, permission, tenant_id)
        record, now, dropped = await self._in_thread(self._transition_tx, tenant_id, target, reason)
        if target is TenantState.TERMINATED:
            self._tier_cache.pop(tenant_id, None)
            self._storage.forget(tenant_id)  # its PDBs were dropped: they no longer count
        if self.fleet is not None:
            # The instance is told after the commit (sessions end with 57P01 on
            # suspend; terminate detaches: PDBs closed, listener gone).
            if target is TenantState.TERMINATED:
                await self.fleet.detach(tenant_id)
            else:
                await self.fleet.set_state(tenant_id, target.value)
        self._publish([("tenant.state.changed", tenant_id,
                        {"old_state": record["state"], "new_state": target.value, "reason": reason, **(extra_event_data or {})})]
                      + [event for pdb in dropped for event in (
                          ("pdb.dropped", tenant_id, {"pdb_id": pdb["pdb_id"], "pdb_name": pdb["pdb_name"], "keep_datafiles": True}),
                          ("pdb.state.changed", tenant_id, {"pdb_id": pdb["pdb_id"], "old_state": pdb["state"], "new_state": "dropped"}))])
        return now

    async def suspend(self, principal: Principal, tenant_id: str, reason: str, notify_admin: bool = False) -> dict:
        reason = inputs.text("reason", reason, max_length=1024)
        if not isinstance(notify_admin, bool):
            raise inputs.invalid("notify_admin", "must be a boolean")
        now = await self._transition(principal, PERMISSION["suspend"], tenant_id, TenantState.SUSPENDED, reason,
                                     {"notify_admin": notify_admin})
        return {"tenant_id": tenant_id, "state": TenantState.SUSPENDED.value, "suspended_at": now, "reason": reason}

    async def resume(self, principal: Principal, tenant_id: str) -> dict:
        now = await self._transition(principal, PERMISSION["resume"], tenant_id, TenantState.ACTIVE, None)
        return {"tenant_id": tenant_id, "state": TenantState.ACTIVE.value, "resumed_at": now}

    async def terminate(self, principal: Principal, tenant_id: str) -> dict:
        """Final: frees the tenant's port and name, drops its PDB rows."""
        now = await self._transition(principal, PERMISSION["terminate"], tenant_id, TenantState.TERMINATED, "terminated")
        self._get_kept.pop(tenant_id, None)  # kept answers of a tenant that is gone for good
        self._uptime_kept.pop(tenant_id, None)
        return {"tenant_id": tenant_id, "state": TenantState.TERMINATED.value, "terminated_at": now}

    # ---- tier, priority, quota

    async def change_tier(self, principal: Principal, tenant_id: str, new_tier: str, effective_date: str = "immediate") -> dict:
        """Immediate, or scheduled for an ISO date/date-time (applied by the daemon when due).

        The answer has "scheduled": true (REST: 202) when the change is pending.
        """
        authz.require(principal, PERMISSION["change_tier"], tenant_id)
        new_tier = inputs.choice("new_tier", new_tier, TIER_NAMES)
        inputs.text("effective_date", effective_date, max_length=64)
        if effective_date.strip().lower() == "immediate":
            when = None
        else:
            try:
                when = timeutil.parse_instant(effective_date)
            except ValueError as exc:
                raise inputs.invalid("effective_date", f'must be "immediate" or an ISO-8601 date or date-time ({exc})') from None
            if when <= self.clock():
                when = None  # already due: apply now
        if when is None:
            record, now = await self._in_thread(self._apply_tier_tx, tenant_id, new_tier, None)
            await self._push_quota(tenant_id)
            self._after_tier_change(tenant_id, record, new_tier)
            return self._tier_body(tenant_id, record["service_tier"], new_tier, now)
        record = await self._in_thread(self._schedule_tier_tx, tenant_id, new_tier, timeutil.to_iso(when))
        return {**self._tier_body(tenant_id, record["service_tier"], new_tier, timeutil.to_iso(when)), "scheduled": True}

    @staticmethod
    def _tier_body(tenant_id: str, old_tier: str, new_tier: str, at: str) -> dict:
        quota = TIERS[new_tier].quota
        return {"tenant_id": tenant_id, "old_tier": old_tier, "new_tier": new_tier, "upgraded_at": at,
                "new_quota": {"cpu_cores": quota.cpu_cores, "memory_mb": quota.memory_mb, "storage_gb": quota.storage_gb}}

    def _schedule_tier_tx(self, tenant_id: str, new_tier: str, effective_at: str) -> dict:
        with self.catalog.write() as conn:
            record = self._require_tenant(conn, tenant_id)
            check_mutable(record["state"])
            if record["service_tier"] == new_tier:
                raise inputs.invalid("new_tier", f"the tenant is already on tier {new_tier}")
            rows.schedule_tier_change(conn, tenant_id, new_tier, effective_at, self._now())
        return record

    def _apply_tier_tx(self, tenant_id: str, new_tier: str, conn: sqlite3.Connection | None) -> tuple[dict, str]:
        if conn is None:
            with self.catalog.write() as conn:
                return self._apply_tier_tx(tenant_id, new_tier, conn)
        now = self._now()
        record = self._require_tenant(conn, tenant_id)
        check_mutable(record["state"])
        if record["service_tier"] == new_tier:
            raise inputs.invalid("new_tier", f"the tenant is already on tier {new_tier}")
        spec = TIERS[new_tier]
        self._check_admission(conn, tenant_id, new_tier, spec.quota.cpu_percent)
        changes = {"service_tier": new_tier, **spec.quota.as_dict(), "updated_at": now}
        if not record["priority_is_explicit"]:
            changes["priority"] = spec.priority.value
        rows.update(conn, tenant_id, changes)
        rows.cancel_tier_change(conn, tenant_id)
        return record, now

    async def _push_quota(self, tenant_id: str) -> None:
        """The tenant's current quota, shares and guarantee to its instance (live sessions within a second)."""
        if self.fleet is not None:
            await self.fleet.set_quota(tenant_id, await self._in_thread(self._read_tenant, tenant_id))

    def _after_tier_change(self, tenant_id: str, record: dict, new_tier: str) -> None:
        self._tier_cache[tenant_id] = new_tier
        self._publish([("tenant.tier.changed", tenant_id,
                        {"old_tier": record["service_tier"], "new_tier": new_tier, "new_quota": TIERS[new_tier].quota.as_dict()})])

    async def apply_due_tier_changes(self) -> list[dict]:
        """Apply every scheduled tier change whose time has come (the daemon calls this).

        A change that can no longer be applied (tenant terminated, host full)
        is dropped and reported as a system.alert event instead of retried forever.
        """
        def apply():
            applied, failed = [], []
            with self.catalog.read() as conn:  # the usual case, every second: nothing due, no write lock
                earliest = rows.earliest_tier_change(conn)
            if earliest is None or earliest > self._now():
                return applied, failed
            with self.catalog.write() as conn:
                for change in rows.due_tier_changes(conn, self._now()):
                    conn.execute("SAVEPOINT tier_change")
                    try:
                        record, _ = self._apply_tier_tx(change["tenant_id"], change["new_tier"], conn)
                    except ServiceError as exc:
                        conn.execute("ROLLBACK TO tier_change")
                        rows.cancel_tier_change(conn, change["tenant_id"])
                        failed.append((change, exc))
                    else:
                        applied.append((change, record))
                    conn.execute("RELEASE tier_change")
            return applied, failed

        applied, failed = await self._in_thread(apply)
        for change, record in applied:
            await self._push_quota(change["tenant_id"])
            self._after_tier_change(change["tenant_id"], record, change["new_tier"])
        self._publish([("system.alert", change["tenant_id"],
                        {"alert": "scheduled tier change dropped", "new_tier": change["new_tier"],
                         "effective_date": change["effective_at"], "code": exc.code, "message": exc.message})
                       for change, exc in failed])
        return [{"tenant_id": change["tenant_id"], "new_tier": change["new_tier"]} for change, _ in applied]

    async def set_priority(self, principal: Principal, tenant_id: str, priority: str) -> dict:
        authz.require(principal, PERMISSION["set_priority"], tenant_id)
        priority = inputs.choice("priority", priority, PRIORITY_NAMES)

        def tx():
            now = self._now()
            with self.catalog.write() as conn:
                record = self._require_tenant(conn, tenant_id)
                check_mutable(record["state"])
                rows.update(conn, tenant_id, {"priority": priority, "priority_is_explicit": 1, "updated_at": now})
            return record, now

        record, now = await self._in_thread(tx)
        await self._push_quota(tenant_id)
        shares = cpu_shares(record["service_tier"], priority)
        self._publish([("tenant.priority.changed", tenant_id,
                        {"old_priority": record["priority"], "new_priority": priority, "cpu_shares": shares})])
        return {"tenant_id": tenant_id, "old_priority": record["priority"], "priority": priority,
                "cpu_shares": shares, "updated_at": now}

    async def update_quota(self, principal: Principal, tenant_id: str, quota: dict[str, int]) -> dict:
        """Change some fields of the quota vector; the others keep their values."""
        authz.require(principal, PERMISSION["update_quota"], tenant_id)
        if not isinstance(quota, dict) or not quota:
            raise inputs.invalid("quota", f"give at least one of {', '.join(QUOTA_FIELDS)}")
        for name in quota:
            if name not in QUOTA_FIELDS:
                raise inputs.invalid(name, "unknown quota field")
        quota = {name: inputs.integer(name, value, minimum=1, maximum=QUOTA_LIMITS[name]) for name, value in quota.items()}

        def tx():
            now = self._now()
            with self.catalog.write() as conn:
                record = self._require_tenant(conn, tenant_id)
                check_mutable(record["state"])
                if "cpu_percent" in quota:
                    self._check_admission(conn, tenant_id, record["service_tier"], quota["cpu_percent"])
                rows.update(conn, tenant_id, {**quota, "updated_at": now})
            return record

        record = await self._in_thread(tx)
        await self._push_quota(tenant_id)
        old = rows.quota_of(record)
        self._publish([("tenant.quota.changed", tenant_id, {"old_quota": old, "new_quota": {**old, **quota}})])
        return {"tenant_id": tenant_id, "quota_updated": True, "effective_immediately": True}

    # ---- resources and isolation statistics

    async def resources(self, principal: Principal, tenant_id: str) -> dict:
        authz.require(principal, PERMISSION["resources"], tenant_id)
        record = await self._in_thread(self._read_tenant, tenant_id)
        usage = self._usage(record, await self._measure(tenant_id))
        quota = rows.quota_of(record)

        def share(used: float, limit: float) -> str:
            return f"{100.0 * used / limit:.1f}%" if limit else "0.0%"

        return {
            "tenant_id": tenant_id,
            "current_usage": {key: usage[key] for key in ("cpu_percent", "memory_mb", "storage_gb", "iops", "network_mbps",
                                                          "active_connections", "storage_bytes", "source")},
            "quota": quota,
            "utilization": {
                "cpu": share(usage["cpu_percent"], quota["cpu_percent"]),
                "memory": share(usage["memory_mb"], quota["memory_mb"]),
                "storage": share(usage["storage_gb"], quota["storage_gb"]),
                "connections": share(usage["active_connections"], quota["max_connections"]),
            },
        }

    def _read_tenant(self, tenant_id: str) -> dict:
        with self.catalog.read() as conn:
            return self._require_tenant(conn, tenant_id)

    async def _engine_block(self, principal: Principal, tenant_id: str, block: str) -> tuple[dict, dict | None]:
        """(catalog record, the instance's `block` of this tenant's stats or None)."""
        authz.require(principal, PERMISSION["isolation"], tenant_id)
        record = await self._in_thread(self._read_tenant, tenant_id)
        stats = await self.fleet.stats(tenant_id) if self.fleet is not None else None
        return record, (stats[block] if stats else None)

    def _source(self, tenant_id: str) -> str:
        instance = self.fleet.home.get(tenant_id) or self.fleet.instance_for(tenant_id)
        return ENGINE_COUNTERS.format(instance=instance)

    @host_merged("memory")
    async def isolation_memory(self, principal: Principal, tenant_id: str) -> dict:
        """The engine allocator's per-tenant counters (0 with a `source` while no instance serves the tenant)."""
        record, memory = await self._engine_block(principal, tenant_id, "memory")
        if memory is not None:
            return {"tenant_id": tenant_id, **{key: int(memory[key]) for key in MEMORY_FIELDS}, "source": self._source(tenant_id)}
        return {"tenant_id": tenant_id, "allocated_bytes": 0, "quota_bytes": record["memory_mb"] << 20,
                "peak_usage_bytes": 0, "oom_count": 0, "allocation_count": 0, "deallocation_count": 0,
                "source": NOT_MEASURED}

    @host_merged("cpu")
    async def isolation_cpu(self, principal: Principal, tenant_id: str) -> dict:
        """The scheduler's parameters (real, from tier/priority/quota) and counters (0 until the engine runs)."""
        record, cpu = await self._engine_block(principal, tenant_id, "cpu")
        if cpu is not None:
            return {"tenant_id": tenant_id, **{key: int(cpu[key]) for key in ("shares", "min_percent", "max_percent",
                                                                              "used_cpu_ns", "throttled_ns")},
                    "throttle_ratio": float(cpu["throttle_ratio"]), "allocation_percent": float(cpu["allocation_percent"]),
                    "source": self._source(tenant_id)}
        return {"tenant_id": tenant_id, "shares": cpu_shares(record["service_tier"], record["priority"]),
                "min_percent": guaranteed_cpu_percent(record["service_tier"], record["cpu_percent"]),
                "max_percent": record["cpu_percent"], "used_cpu_ns": 0, "throttled_ns": 0, "throttle_ratio": 0.0,
                "allocation_percent": 0.0, "source": NOT_MEASURED}

    async def isolation_io(self, principal: Principal, tenant_id: str) -> dict:
        """Datafile IO through the engine's VFS: operations, bytes, time throttled by the iops quota."""
        record, io = await self._engine_block(principal, tenant_id, "io")
        body = {"tenant_id": tenant_id, **{key: int((io or {}).get(key, 0)) for key in IO_FIELDS}}
        body["iops_limit"] = int(io["iops_limit"]) if io else record["iops"]
        return {**body, "source": self._source(tenant_id) if io else NOT_MEASURED}

    async def isolation_buffer_pool(self, principal: Principal, tenant_id: str) -> dict:
        """The tenant's partition of its instance's page buffer pool."""
        record, pool = await self._engine_block(principal, tenant_id, "buffer_pool")
        body = {"tenant_id": tenant_id, **{key: int((pool or {}).get(key, 0)) for key in POOL_FIELDS},
                "hit_ratio": float((pool or {}).get("hit_ratio", 0.0))}
        return {**body, "source": self._source(tenant_id) if pool else NOT_MEASURED}

    @host_merged("network")
    async def isolation_network(self, principal: Principal, tenant_id: str) -> dict:
        """Bytes on the tenant's PostgreSQL port (counted by its instance) and its rate limit."""
        record, network = await self._engine_block(principal, tenant_id, "network")
        rates = self.fleet.rates(tenant_id) if self.fleet is not None else None
        body = {"tenant_id": tenant_id, "port": record["network_port"], "rate_limit_mbps": record["network_mbps"],
                "bytes_received": int((network or {}).get("bytes_in", 0)),
                "bytes_sent": int((network or {}).get("bytes_out", 0)),
                "network_mbps": float(rates["network_mbps"]) if rates else 0.0,
                "packets_dropped": 0,
                "source": (NETWORK_SOURCE if network is not None else NOT_MEASURED)}
        return body

    # ---- lookups for the auth and rate-limit middlewares (synchronous, fast)

    def admin_credentials(self, username: str) -> tuple[str, str] | None:
        """(tenant_id, scrypt hash) of the live tenant whose admin_user is `username`."""
        if not isinstance(username, str) or not username:
            return None
        with self.catalog.read() as conn:
            record = rows.get_live_by_admin(conn, username)
        return (record["tenant_id"], record["admin_password"]) if record else None

    def tier_of(self, tenant_id: str) -> str | None:
        """The tenant's tier, None when unknown or terminated (cached; updated on change)."""
        if tenant_id in self._tier_cache:
            return self._tier_cache[tenant_id]
        with self.catalog.read() as conn:
            record = rows.get(conn, tenant_id)
        tier = record["service_tier"] if record and record["state"] != TenantState.TERMINATED.value else None
        if record is not None:
            self._tier_cache[tenant_id] = tier
        return tier

