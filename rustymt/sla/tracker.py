"""SLA tracking: uptime, statement latency, error rate, throttle attribution.

The metering sampler hands every tick's per-tenant usage delta to
SlaTracker.observe(). The tracker

* accounts time: the tick's seconds count as *up* when the tenant is active
  and its PDB open and accepting, *down* when it is active but not, and
  *excluded* while the operator has it suspended or in declared maintenance
  (state maintenance/migrating). Unknown availability (nothing measures the
  tenant) counts nowhere. Uptime = up / (up + down), month to date.
* keeps a rolling window of the last WINDOW_TICKS ticks: merged latency
  sketch (avg/p95/p99), statements, server errors, and where the time went —
  executing (cpu used), queued (waiting behind other tenants: the platform's
  contention) and throttled (held at the tenant's own max_percent / iops cap).
* judges the window against the tier's targets (rustymt.model.tiers for
  uptime and p99, ERROR_RATE_TARGET here). A p99 breach whose window spent
  more time throttled at the tenant's own caps than queued behind others is
  the tenant's doing, not a platform violation: it is reported in
  `attribution` and not recorded.
* records a violation once per episode (again only after the metric has
  recovered), stores it and publishes tenant.sla.violated with the spec's
  payload data {violation_type, current_value, sla_target, severity} plus
  description and remediation.

Hour aggregates are written by the sampler in its own transaction
(`pending_hours()`), so SLA history and metering rows commit together.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import sqlite3
import threading
from typing import Any

from rustymt.metering.usage import Usage
from rustymt.model.tiers import TIERS
from rustymt.sla.sketch import LatencySketch

WINDOW_TICKS = 60
MIN_JUDGED_TICKS = 10  # uptime is judged once this many ticks of known availability were seen
RECENT_VIOLATIONS = 20  # shown in GET tenant `sla`
ERROR_RATE_TARGET = {"bronze": 1.0, "silver": 0.5, "gold": 0.1, "platinum": 0.05}  # percent of statements
EXCLUDED_STATES = frozenset({"suspended", "maintenance", "migrating", "closed"})  # closed: no PDB meant to be open
REMEDIATION = {
    "uptime": "the platform restarts the instance automatically; check /api/v1/cdb/status and the daemon log",
    "latency": "statements wait behind other tenants: rebalance priorities or move the tenant to a dedicated instance",
    "error_rate": "server-side failures: check the engine instance log for the failing statements",
}


@dataclasses.dataclass
class _Window:
    ticks: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=WINDOW_TICKS))

    def totals(self) -> dict[str, Any]:
        sketch = LatencySketch()
        total = {"statements": 0, "server_errors": 0, "executing_ns": 0, "queued_ns": 0, "throttled_ns": 0}
        for tick in self.ticks:
            for key in total:
                total[key] += tick[key]
            if tick["sketch"] is not None:
                sketch.merge(tick["sketch"])
        total["sketch"] = sketch
        return total


@dataclasses.dataclass
class _TenantSla:
    tier: str
    month: str = ""
    up: float = 0.0
    down: float = 0.0
    judged_ticks: int = 0
    window: _Window = dataclasses.field(default_factory=_Window)
    violating: set = dataclasses.field(default_factory=set)
    recent: list = dataclasses.field(default_factory=list)
    attribution: str = "none"
    # SlaTracker.metrics()'s answer, kept until something it reads changes (observe, evaluate):
    # GET tenant asks for it on every request, the window changes once per sampler tick.
    metrics: dict | None = None


def severity_of(kind: str, value: float, target: float) -> str:
    if kind == "uptime":
        gap = target - value
        return "critical" if gap >= 5 else "high" if gap >= 1 else "medium" if gap >= 0.1 else "low"
    ratio = value / target if target else float("inf")
    return "critical" if ratio >= 4 else "high" if ratio >= 2 else "medium" if ratio >= 1.5 else "low"


class SlaTracker:
    def __init__(self, catalog: Any, bus: Any, min_statements: int = 100):
        self.catalog = catalog
        self.bus = bus
        self.min_statements = min_statements
        self._lock = threading.Lock()
        self._tenants: dict[str, _TenantSla] = {}
        self._hours: dict[tuple[str, int], dict[str, Any]] = {}

    # ---- fed by the sampler

    def _tenant(self, tenant_id: str, tier: str, now: float) -> _TenantSla:
        state = self._tenants.get(tenant_id)
        month = _month(now)
        if state is None or state.month != month:
            up, down = self._month_so_far(tenant_id, month)
            recent = state.recent if state else self._load_recent(tenant_id)
            state = _TenantSla(tier=tier, month=month, up=up, down=down, recent=recent,
                               violating=state.violating if state else set())
            self._tenants[tenant_id] = state
        state.tier = tier
        return state

    def _month_so_far(self, tenant_id: str, month: str) -> tuple[float, float]:
        from rustymt.metering.billing import month_bounds
        start, end = month_bounds(month)
        with self.catalog.read() as conn:
            row = conn.execute("SELECT coalesce(sum(up_seconds), 0), coalesce(sum(down_seconds), 0) FROM sla_hours "
                               "WHERE tenant_id = ? AND hour >= ? AND hour < ?", (tenant_id, start, end)).fetchone()
        return float(row[0]), float(row[1])

    def _load_recent(self, tenant_id: str) -> list[dict]:
        with self.catalog.read() as conn:
            rows = conn.execute("SELECT * FROM sla_violations WHERE tenant_id = ? ORDER BY violation_id DESC LIMIT ?",
                                (tenant_id, RECENT_VIOLATIONS)).fetchall()
        return [_violation_body(dict(row)) for row in reversed(rows)]

    def observe(self, tenant_id: str, tier: str, state: str, usage: Usage, seconds: float, now: float) -> None:
        """One tick of one tenant: `usage` is the delta since the previous tick (worker thread)."""
        with self._lock:
            sla = self._tenant(tenant_id, tier, now)
            hour = self._hours.setdefault((tenant_id, int(now // 3600) * 3600), {
                "up_seconds": 0.0, "down_seconds": 0.0, "excluded_seconds": 0.0, "statements": 0, "server_errors": 0,
                "executing_ns": 0, "queued_ns": 0, "throttled_ns": 0, "sketch": LatencySketch()})
            if state in EXCLUDED_STATES:
                hour["excluded_seconds"] += seconds
            elif usage.available is True:
                hour["up_seconds"] += seconds
                sla.up += seconds
                sla.judged_ticks += 1
            elif usage.available is False:
                hour["down_seconds"] += seconds
                sla.down += seconds
                sla.judged_ticks += 1
            tick = {"statements": usage.statements, "server_errors": usage.server_errors, "executing_ns": usage.cpu_ns,
                    "queued_ns": usage.wait_ns, "throttled_ns": usage.cpu_throttled_ns + usage.io_throttled_ns,
                    "sketch": usage.latency_ms}
            for key in ("statements", "server_errors", "executing_ns", "queued_ns", "throttled_ns"):
                hour[key] += tick[key]
            if usage.latency_ms is not None:
                hour["sketch"].merge(usage.latency_ms)
            sla.window.ticks.append(tick)
            sla.metrics = None

    def pending_hours(self) -> list[tuple[str, int, dict[str, Any]]]:
        """Hour increments since the last call (the sampler writes them in its transaction)."""
        with self._lock:
            hours, self._hours = self._hours, {}
        return [(tenant_id, hour, values) for (tenant_id, hour), values in hours.items()]

    @staticmethod
    def write_hours(conn: sqlite3.Connection, hours: list[tuple[str, int, dict[str, Any]]]) -> None:
        for tenant_id, hour, values in hours:
            row = conn.execute("SELECT latency_sketch FROM sla_hours WHERE tenant_id = ? AND hour = ?", (tenant_id, hour)).fetchone()
            sketch = values["sketch"]
            if row is not None and row[0]:
                sketch.merge(LatencySketch.from_dict(json.loads(row[0])))
            conn.execute(
                "INSERT INTO sla_hours (tenant_id, hour, up_seconds, down_seconds, excluded_seconds, statements, server_errors, "
                "executing_ns, queued_ns, throttled_ns, latency_sketch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant_id, hour) DO UPDATE SET up_seconds = up_seconds + excluded.up_seconds, "
                "down_seconds = down_seconds + excluded.down_seconds, excluded_seconds = excluded_seconds + excluded.excluded_seconds, "
                "statements = statements + excluded.statements, server_errors = server_errors + excluded.server_errors, "
                "executing_ns = executing_ns + excluded.executing_ns, queued_ns = queued_ns + excluded.queued_ns, "
                "throttled_ns = throttled_ns + excluded.throttled_ns, latency_sketch = excluded.latency_sketch",
                (tenant_id, hour, values["up_seconds"], values["down_seconds"], values["excluded_seconds"], values["statements"],
                 values["server_errors"], values["executing_ns"], values["queued_ns"], values["throttled_ns"],
                 json.dumps(sketch.to_dict()) if sketch.count else None))

    # ---- judging

    def evaluate(self, tenant_id: str) -> list[dict]:
        """Judge the tenant's window; returns violations newly recorded (and published)."""
        with self._lock:
            sla = self._tenants.get(tenant_id)
            if sla is None:
                return []
            found = self._breaches(sla)
            new = [v for v in found if v["violation_type"] not in sla.violating]
            sla.violating = {v["violation_type"] for v in found}
            sla.metrics = None  # attribution was judged again
        recorded = []
        for violation in new:
            event = self.bus.publish("tenant.sla.violated", tenant_id, violation)
            with self.catalog.write() as conn:
                conn.execute(
                    "INSERT INTO sla_violations (tenant_id, violation_type, at, severity, description, remediation, "
                    "current_value, sla_target, event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (tenant_id, violation["violation_type"], event.timestamp, violation["severity"], violation["description"],
                     violation["remediation"], violation["current_value"], violation["sla_target"], event.event_id))
            body = {**violation, "timestamp": event.timestamp, "event_id": event.event_id}
            with self._lock:
                sla.recent = (sla.recent + [body])[-RECENT_VIOLATIONS:]
                sla.metrics = None
            recorded.append(body)
        return recorded

    def _breaches(self, sla: _TenantSla) -> list[dict]:
        targets = TIERS[sla.tier].sla
        found = []
        uptime = self._uptime(sla)
        if uptime is not None and sla.judged_ticks >= MIN_JUDGED_TICKS and uptime < targets.uptime_percent:
            found.append(self._violation("uptime", uptime, targets.uptime_percent,
                                         f"uptime {uptime:.3f}% this month is below the {sla.tier} target of {targets.uptime_percent}%"))
        totals = sla.window.totals()
        sla.attribution = "none"
        if totals["statements"] >= self.min_statements:
            p99 = totals["sketch"].quantile(0.99)
            if p99 > targets.p99_response_time_ms:
                if totals["throttled_ns"] > totals["queued_ns"]:
                    sla.attribution = "tenant_cap"  # slow because of its own max_percent / iops cap
                else:
                    sla.attribution = "platform"
                    found.append(self._violation("latency", round(p99, 3), targets.p99_response_time_ms,
                                                 f"p99 statement latency {p99:.1f} ms is above the {sla.tier} target of "
                                                 f"{targets.p99_response_time_ms:g} ms"))
            rate = 100.0 * totals["server_errors"] / totals["statements"]
            target = ERROR_RATE_TARGET[sla.tier]
            if rate > target:
                found.append(self._violation("error_rate", round(rate, 3), target,
                                             f"{rate:.2f}% of statements failed server-side (target {target}%)"))
        return found

    @staticmethod
    def _violation(kind: str, value: float, target: float, description: str) -> dict:
        return {"violation_type": kind, "current_value": round(value, 3), "sla_target": target,
                "severity": severity_of(kind, value, target), "description": description, "remediation": REMEDIATION[kind]}

    @staticmethod
    def _uptime(sla: _TenantSla) -> float | None:
        known = sla.up + sla.down
        return 100.0 * sla.up / known if known > 0 else None

    # ---- read by the service layer (GET tenant `sla`, GraphQL tenantSla)

    def metrics(self, tenant_id: str) -> dict[str, Any] | None:
        """The measured parts of SlaMetrics, or None when this daemon has not observed the tenant.

        The same dict (callers must not mutate it) until the tenant's next sample or judgement:
        merging the window's 60 ticks and their sketches per call cost GET tenant ~6 us."""
        with self._lock:
            sla = self._tenants.get(tenant_id)
            if sla is None:
                return None
            if sla.metrics is None:
                sla.metrics = self._metrics(sla)
            return sla.metrics

    def _metrics(self, sla: _TenantSla) -> dict[str, Any]:
        totals = sla.window.totals()
        sketch = totals["sketch"]
        uptime = self._uptime(sla)
        return {
            "uptime_percent": round(uptime, 3) if uptime is not None else None,
            "avg_response_time_ms": round(sketch.mean, 3),
            "p95_response_time_ms": round(sketch.quantile(0.95), 3),
            "p99_response_time_ms": round(sketch.quantile(0.99), 3),
            "error_rate_percent": round(100.0 * totals["server_errors"] / totals["statements"], 3) if totals["statements"] else 0.0,
            "violations": [{key: v[key] for key in ("violation_type", "timestamp", "severity", "description", "remediation",
                                                     "current_value", "sla_target")} for v in sla.recent],
            "time_breakdown": {"executing_seconds": totals["executing_ns"] / 1e9, "queued_seconds": totals["queued_ns"] / 1e9,
                               "throttled_seconds": totals["throttled_ns"] / 1e9, "latency_cause": sla.attribution},
            "latency_sketch": sketch,
        }


def _month(now: float) -> str:
    import datetime
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m")


def _violation_body(row: dict) -> dict:
    return {"violation_type": row["violation_type"], "timestamp": row["at"], "severity": row["severity"],
            "description": row["description"], "remediation": row["remediation"],
            "current_value": row["current_value"], "sla_target": row["sla_target"], "event_id": row["event_id"]}
