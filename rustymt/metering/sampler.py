"""The metering sampler: every `metering.interval_seconds`, per live tenant,
one usage sample -> one raw metering record + the SLA tracker's tick.

Each tick:
1. reads the live tenants (id, tier, state) in one catalog read;
2. samples every tenant from the UsageSource (concurrently);
3. turns the cumulative counters into the delta since the tenant's previous
   sample (the first sample after start is only a baseline: what happened
   before it is not known, so no record is invented for it);
4. writes the raw records and the SLA hour increments in one transaction;
5. lets the SLA tracker judge each tenant (violations -> events);
6. once a minute rolls raw -> 1 min -> 1 h and prunes by retention.

Tier history for billing is logged from tenant.created / tenant.tier.changed
events (and seeded from the catalog for tenants that have none).
`latest` keeps the last sample per tenant for /metrics, so a scrape never
touches the engine or the catalog's history.
"""
from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import time
from typing import Any

from rustymt.metering import prometheus, store
from rustymt.metering.usage import QUOTA_REJECTIONS, Usage, UsageSource, sample_of
from rustymt.model import timeutil
from rustymt.sla.tracker import SlaTracker

log = logging.getLogger("rustymt.metering")

MAINTENANCE_EVERY_SECONDS = 60.0
SAMPLE_CONCURRENCY = 32
MIB, GIB = float(1 << 20), float(1 << 30)
QUOTA_LIMIT_COLUMN = {"memory": "memory_mb", "connections": "max_connections"}  # quota.exceeded's `limit`


class ApiRequestCounter:
    """API requests per tenant since the last drain (the REST/GraphQL middleware counts)."""

    def __init__(self):
        self._counts: collections.Counter[str] = collections.Counter()

    def count(self, tenant_id: str) -> None:
        self._counts[tenant_id] += 1

    def drain(self) -> collections.Counter[str]:
        counts, self._counts = self._counts, collections.Counter()
        return counts


class MeteringSampler:
    def __init__(self, catalog: Any, settings: Any, bus: Any, source: UsageSource, sla: SlaTracker,
                 api_requests: ApiRequestCounter, clock=time.time):
        self.catalog = catalog
        self.settings = settings
        self.bus = bus
        self.source = source
        self.sla = sla
        self.api_requests = api_requests
        self.clock = clock
        self.previous: dict[str, tuple[float, Usage]] = {}  # tenant -> (time, cumulative usage)
        self.latest: dict[str, dict[str, Any]] = {}  # tenant -> {"usage", "quota", "tier", "state", "at"}
        self.ticks = 0
        self._last_maintenance = 0.0

    @property
    def interval(self) -> float:
        return float(self.settings.metering.interval_seconds)

    # ---- the loops (started by the daemon)

    def subscribe(self):
        """Call before anything can publish (Observability.start), so no tier change is missed."""
        return self.bus.subscribe({"tenant.created", "tenant.tier.changed"}, maxsize=4096)

    async def run(self, subscription=None) -> None:
        subscription = subscription or self.subscribe()
        await asyncio.to_thread(self.seed_tier_log)
        events = asyncio.create_task(self._log_tiers(subscription))
        try:
            start = time.monotonic()
            while True:
                try:
                    await self.tick()
                except Exception:  # one bad tick must not end metering
                    log.exception("metering tick failed")
                self.ticks += 1
                # sleep to the next multiple of the interval, so ticks do not drift
                delay = self.interval - (time.monotonic() - start) % self.interval
                await asyncio.sleep(delay)
        finally:
            subscription.close()
            events.cancel()

    async def _log_tiers(self, subscription) -> None:
        async for event in subscription:
            at = timeutil.from_iso(event.timestamp).timestamp()
            tier = event.data.get("service_tier") or event.data.get("new_tier")
            old = event.data.get("old_tier")
            await asyncio.to_thread(self._log_tier, event.tenant_id, tier, at, old)

    def _log_tier(self, tenant_id: str, tier: str, at: float, old_tier: str | None) -> None:
        with self.catalog.write() as conn:
            if old_tier is not None and not store.tier_log(conn, tenant_id):
                created = conn.execute("SELECT created_at FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
                if created is not None:
                    store.log_tier(conn, tenant_id, old_tier, timeutil.from_iso(created[0]).timestamp())
            store.log_tier(conn, tenant_id, tier, at)

    def seed_tier_log(self) -> None:
        """Tenants without a tier log get one entry: their current tier since creation."""
        with self.catalog.write() as conn:
            rows = conn.execute("SELECT tenant_id, service_tier, created_at FROM tenants WHERE tenant_id NOT IN "
                                "(SELECT DISTINCT tenant_id FROM billing_tier_log)").fetchall()
            for tenant_id, tier, created_at in rows:
                store.log_tier(conn, tenant_id, tier, timeutil.from_iso(created_at).timestamp())

    # ---- one tick

    def _live_tenants(self, now: float) -> list[dict[str, Any]]:
        with self.catalog.read() as conn:
            rows = conn.execute(
                "SELECT tenant_id, service_tier, state, cpu_percent, memory_mb, storage_gb, iops, network_mbps, max_connections, "
                "(SELECT count(*) FROM pdbs p WHERE p.tenant_id = t.tenant_id AND p.state = 'open') AS open_pdbs "
                "FROM tenants t WHERE state != 'terminated'").fetchall()
            in_maintenance = {row[0] for row in conn.execute(
                "SELECT DISTINCT tenant_id FROM sla_maintenance WHERE starts_at <= ? AND ends_at > ?", (now, now))}
        return [{**dict(row), "maintenance": row["tenant_id"] in in_maintenance} for row in rows]

    async def tick(self) -> list[dict[str, Any]]:
        tenants = await asyncio.to_thread(self._live_tenants, self.clock())
        limit = asyncio.Semaphore(SAMPLE_CONCURRENCY)

        async def one(tenant_id: str) -> dict | None:
            async with limit:
                try:
                    return await sample_of(self.source, tenant_id)
                except Exception:  # noqa: BLE001 - the source failing is "unavailable", not a crash
                    log.warning("usage sample of %s failed", tenant_id, exc_info=True)
                    return {"available": False}

        samples = await asyncio.gather(*(one(t["tenant_id"]) for t in tenants))
        now = float(round(self.clock()))  # whole seconds: records answer in ISO-8601 seconds
        api_counts = self.api_requests.drain()
        records = await asyncio.to_thread(self._record, tenants, samples, now, api_counts)
        await asyncio.to_thread(lambda: [self.sla.evaluate(tenant["tenant_id"]) for tenant in tenants])
        if now - self._last_maintenance >= MAINTENANCE_EVERY_SECONDS:
            self._last_maintenance = now
            await asyncio.to_thread(self.maintain, now)
        return records

    def _record(self, tenants: list[dict], samples: list[dict | None], now: float, api_counts) -> list[dict]:
        records = []
        live = set()
        # /metrics reads `latest` on the event loop while this runs in a worker thread:
        # build a new dict and swap it in at the end, never mutate the one being read.
        latest = {}
        for tenant, stats in zip(tenants, samples):
            tenant_id = tenant["tenant_id"]
            live.add(tenant_id)
            usage = Usage.from_stats(stats)
            before = self.previous.get(tenant_id)
            if before is not None and before[0] >= now:
                if tenant_id in self.latest:
                    latest[tenant_id] = self.latest[tenant_id]
                continue  # two ticks within one second: the next one covers it
            self.previous[tenant_id] = (now, usage)
            quota = {key: tenant[key] for key in ("cpu_percent", "memory_mb", "storage_gb", "iops", "network_mbps",
                                                  "max_connections")}
            entry = {"usage": usage, "quota": quota, "tier": tenant["service_tier"], "state": tenant["state"], "at": now}
            prometheus.prepare(tenant_id, entry)  # here, off the event loop, not at scrape time
            latest[tenant_id] = entry
            # Refusals count from the instance's start, which is never before the daemon's: on a
            # baseline all of them are news (a tenant refused within its first second is reported).
            since, earlier = before if before else (now - self.settings.metering.interval_seconds, None)
            delta = usage.delta(earlier)
            self._quota_events(tenant, delta, since, now)
            if before is None:
                continue  # a baseline: nothing known about the time before it
            seconds = max(0.0, now - since)
            # A tenant whose PDBs the operator closed is not "down": its time counts as excluded.
            # Declared maintenance likewise.
            sla_state = "maintenance" if tenant["maintenance"] else tenant["state"] if tenant["open_pdbs"] else "closed"
            self.sla.observe(tenant_id, tenant["service_tier"], sla_state, delta, seconds, now)
            records.append({
                "tenant_id": tenant_id, "resolution": store.RAW, "period_start": since, "period_end": now,
                "tier": tenant["service_tier"], "cpu_seconds": delta.cpu_ns / 1e9,
                "memory_mb_avg": (usage.memory_bytes + earlier.memory_bytes) / 2 / MIB,
                "memory_mb_peak": max(usage.memory_bytes, earlier.memory_bytes) / MIB,
                "storage_gb": (usage.storage_bytes + earlier.storage_bytes) / 2 / GIB,
                "read_ops": delta.reads, "write_ops": delta.writes,
                "network_bytes_in": delta.bytes_in, "network_bytes_out": delta.bytes_out,
                "peak_connections": max(usage.sessions, earlier.sessions),
                "statements": delta.statements, "api_requests": api_counts.get(tenant_id, 0),
            })
        for gone in set(self.previous) - live:  # terminated since the last tick
            self.previous.pop(gone, None)
        self.latest = latest
        hours = self.sla.pending_hours()
        with self.catalog.write() as conn:
            store.insert(conn, records)
            self.sla.write_hours(conn, hours)
        return records

    def _quota_events(self, tenant: dict, delta: Usage, since: float, now: float) -> None:
        """quota.exceeded per resource whose quota refused something since the
        last sample: at most one event per tenant, resource and tick, however
        many refusals (a client retrying in a loop must not flood webhooks)."""
        for sqlstate, (counter, resource) in QUOTA_REJECTIONS.items():
            refused = getattr(delta, counter)
            if refused > 0:
                self.bus.publish("quota.exceeded", tenant["tenant_id"], {
                    "resource": resource, "sqlstate": sqlstate, "rejections": refused,
                    "limit": tenant[QUOTA_LIMIT_COLUMN[resource]] if resource in QUOTA_LIMIT_COLUMN else None,
                    "period_start": timeutil.to_iso(datetime.datetime.fromtimestamp(since, timeutil.UTC)),
                    "period_end": timeutil.to_iso(datetime.datetime.fromtimestamp(now, timeutil.UTC))})

    def maintain(self, now: float) -> None:
        """Rollups and retention: bounded size whatever the uptime."""
        m = self.settings.metering
        with self.catalog.write() as conn:
            store.roll_up(conn, store.RAW, store.MINUTE, now - m.raw_retention_seconds)
            store.roll_up(conn, store.MINUTE, store.HOUR, now - m.minute_retention_seconds)
            horizon = now - m.hour_retention_days * 86400
            store.prune(conn, store.HOUR, horizon)
            conn.execute("DELETE FROM sla_hours WHERE hour < ?", (horizon,))
            conn.execute("DELETE FROM sla_violations WHERE at < ?", (timeutil.to_iso(datetime.datetime.fromtimestamp(horizon, timeutil.UTC)),))
