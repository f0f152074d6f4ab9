"""Metering, billing and SLA answers for REST and GraphQL (service layer).

    services.metering.records(p, tenant_id, start=, end=)   # datetimes or ISO-8601 strings
    services.metering.billing(p, tenant_id, period="YYYY-MM")
    services.metering.sla_metrics(tenant_id)                 # sync; TenantService's `sla` block

Permissions: records and billing need resources:read, SLA sla:read (through
the tenant GET); a tenant-scoped token reads only its own tenant.
"""
from __future__ import annotations

import asyncio
import datetime
from typing import Any

from rustymt.metering import billing, store
from rustymt.metering.store import RESOLUTION_NAMES, VALUE_FIELDS
from rustymt.model import timeutil
from rustymt.service import authz, inputs
from rustymt.service.authz import Principal
from rustymt.service.errors import ServiceError

DEFAULT_RANGE = datetime.timedelta(hours=1)
MAX_RECORDS = 10_000  # one answer; "truncated" + "next_start" say where to continue
PERMISSION = {"records": "resources:read", "billing": "resources:read",
              "declare_maintenance": "tenant:admin", "maintenance": "sla:read"}
MAX_MAINTENANCE = datetime.timedelta(days=7)
SLA_SOURCE = ("measured by the metering sampler: uptime = up / (up + down) time this month (suspensions and "
              "maintenance excluded), latency and error rate over the last 60 samples")


def _instant(field: str, value: Any) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise inputs.invalid(field, "needs a UTC offset or Z")
        return value
    if not isinstance(value, str) or not value.strip():
        raise inputs.invalid(field, "is required (ISO-8601 date or date-time with offset)")
    try:
        return timeutil.parse_instant(value)
    except ValueError as exc:
        raise inputs.invalid(field, f"must be an ISO-8601 date or date-time with offset ({exc})") from None


def record_body(row: dict[str, Any]) -> dict[str, Any]:
    body = {"tenant_id": row["tenant_id"],
            "period_start": timeutil.to_iso(datetime.datetime.fromtimestamp(row["period_start"], timeutil.UTC)),
            "period_end": timeutil.to_iso(datetime.datetime.fromtimestamp(row["period_end"], timeutil.UTC)),
            "resolution": RESOLUTION_NAMES[row["resolution"]], "tier": row["tier"]}
    for name in VALUE_FIELDS:
        value = row[name]
        body[name] = round(value, 6) if isinstance(value, float) else value
    return body


class MeteringService:
    def __init__(self, catalog: Any, settings: Any, sla: Any = None, clock=timeutil.utc_now):
        self.catalog = catalog
        self.settings = settings
        self.sla = sla  # SlaTracker, when the daemon runs the sampler
        self.clock = clock
        # tenant_id -> (the tracker's metrics dict, our block made of it): the tracker hands out the
        # same dict until the tenant's next sample, so the block is made once per sample, not per GET.
        self._sla_blocks: dict[str, tuple[dict, dict]] = {}

    @staticmethod
    def _require_tenant(conn, tenant_id: str) -> dict:
        row = conn.execute("SELECT * FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
        if row is None:
            raise ServiceError("TENANT_NOT_FOUND", f"tenant {tenant_id} does not exist", details={"tenant_id": tenant_id})
        return dict(row)

    async def records(self, principal: Principal, tenant_id: str, *, start: Any, end: Any) -> dict:
        authz.require(principal, PERMISSION["records"], tenant_id)
        end = self.clock() if end is None else _instant("end", end)
        start = end - DEFAULT_RANGE if start is None else _instant("start", start)
        if end <= start:
            raise inputs.invalid("end", "must be after start")
        widest = self.settings.metering.max_range_days
        if end - start > datetime.timedelta(days=widest):
            raise ServiceError("INVALID_REQUEST", f"end: the range may span at most {widest} days",
                               details={"max_range_days": widest}, field="end")

        def query():
            with self.catalog.read() as conn:
                self._require_tenant(conn, tenant_id)
                return store.in_range(conn, tenant_id, start.timestamp(), end.timestamp(), MAX_RECORDS + 1)

        rows = await asyncio.to_thread(query)
        body: dict[str, Any] = {"tenant_id": tenant_id, "records": [record_body(row) for row in rows[:MAX_RECORDS]]}
        if len(rows) > MAX_RECORDS:
            body["truncated"] = True
            body["next_start"] = body["records"][-1]["period_end"]
        return body

    async def billing(self, principal: Principal, tenant_id: str, *, period: Any) -> dict:
        authz.require(principal, PERMISSION["billing"], tenant_id)
        if period is None:
            period = self.clock().strftime("%Y-%m")
        if not isinstance(period, str):
            raise inputs.invalid("period", "must be YYYY-MM")
        try:
            month_start, month_end = billing.month_bounds(period)
        except ValueError as exc:
            raise inputs.invalid("period", str(exc)) from None
        if month_start > self.clock().timestamp():
            raise inputs.invalid("period", "is in the future")

        def gather():
            with self.catalog.read() as conn:
                tenant = self._require_tenant(conn, tenant_id)
                created = timeutil.from_iso(tenant["created_at"]).timestamp()
                ended = conn.execute("SELECT min(at) FROM tenant_state_log WHERE tenant_id = ? AND new_state = 'terminated'",
                                     (tenant_id,)).fetchone()[0]
                tiers = store.tier_log(conn, tenant_id) or [(tenant["service_tier"], created)]
                rows = [dict(row) for row in conn.execute(
                    f"SELECT {', '.join(store.COLUMNS)} FROM metering_records WHERE tenant_id = ? AND period_start >= ? "
                    "AND period_start < ? ORDER BY period_start, resolution", (tenant_id, month_start, month_end))]
                up, down = conn.execute(
                    "SELECT coalesce(sum(up_seconds), 0), coalesce(sum(down_seconds), 0) FROM sla_hours "
                    "WHERE tenant_id = ? AND hour >= ? AND hour < ?", (tenant_id, month_start, month_end)).fetchone()
            terminated = timeutil.from_iso(ended).timestamp() if ended else None
            return (created, terminated), tiers, rows, (up, down)

        lifetime, tiers, rows, uptime = await asyncio.to_thread(gather)
        return billing.bill(tenant_id, period, self.settings.billing.price_book, self.settings.billing.currency,
                            lifetime, tiers, rows, uptime)

    async def declare_maintenance(self, principal: Principal, tenant_id: str, *, start: Any, end: Any, reason: Any) -> dict:
        """An operator's declared maintenance window: its time counts neither up nor down."""
        authz.require(principal, PERMISSION["declare_maintenance"], tenant_id)
        start, end = _instant("start", start), _instant("end", end)
        reason = inputs.text("reason", reason, max_length=1024)
        if end <= start:
            raise inputs.invalid("end", "must be after start")
        if end - start > MAX_MAINTENANCE:
            raise inputs.invalid("end", "a maintenance window lasts at most 7 days")
        if end <= self.clock():
            raise inputs.invalid("end", "is in the past: maintenance is declared ahead, not after the fact")
        now = timeutil.to_iso(self.clock())

        def tx():
            with self.catalog.write() as conn:
                self._require_tenant(conn, tenant_id)
                cursor = conn.execute("INSERT INTO sla_maintenance (tenant_id, starts_at, ends_at, reason, declared_by, declared_at) "
                                      "VALUES (?, ?, ?, ?, ?, ?)", (tenant_id, start.timestamp(), end.timestamp(), reason,
                                                                    principal.username, now))
                return cursor.lastrowid

        window_id = await asyncio.to_thread(tx)
        return {"tenant_id": tenant_id, "window_id": window_id, "start": timeutil.to_iso(start), "end": timeutil.to_iso(end),
                "reason": reason, "declared_at": now}

    async def maintenance(self, principal: Principal, tenant_id: str) -> dict:
        authz.require(principal, PERMISSION["maintenance"], tenant_id)

        def query():
            with self.catalog.read() as conn:
                self._require_tenant(conn, tenant_id)
                return [dict(row) for row in conn.execute(
                    "SELECT * FROM sla_maintenance WHERE tenant_id = ? ORDER BY starts_at DESC LIMIT 100", (tenant_id,))]

        def iso(seconds: float) -> str:
            return timeutil.to_iso(datetime.datetime.fromtimestamp(seconds, timeutil.UTC))

        return {"tenant_id": tenant_id, "windows": [
            {"window_id": row["window_id"], "start": iso(row["starts_at"]), "end": iso(row["ends_at"]), "reason": row["reason"],
             "declared_at": row["declared_at"]} for row in await asyncio.to_thread(query)]}

    def sla_metrics(self, tenant_id: str) -> dict | None:
        """The measured SLA block for TenantService (None: not observed by this daemon).

        The same dict (not to be mutated) until the tracker's metrics change."""
        if self.sla is None:
            return None
        metrics = self.sla.metrics(tenant_id)
        if metrics is None:
            self._sla_blocks.pop(tenant_id, None)  # the tracker forgot it (terminated): so do we
            return None
        kept = self._sla_blocks.get(tenant_id)
        if kept is not None and kept[0] is metrics:
            return kept[1]
        block = {key: value for key, value in metrics.items() if key != "latency_sketch"}
        block["source"] = SLA_SOURCE
        self._sla_blocks[tenant_id] = (metrics, block)
        return block
