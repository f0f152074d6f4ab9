"""What the engine records per statement for the SLA: latency and outcome.

The engine keeps one StatementStats per tenant and calls, after each
statement,

    stats.record(latency_ms, sqlstate=None)     # None = success

and puts `stats.snapshot()` into its `stats` answer under "statement_stats".
Refusals by the tenant's own quota (TENANT_QUOTA_CODES) are also counted
per SQLSTATE, with `rejected(sqlstate)` for those outside a statement (a
connection over max_connections): the daemon publishes quota.exceeded from
their differences (rustymt.metering.sampler).
Counters are cumulative since the instance started; the daemon's SLA tracker
takes differences between samples (LatencySketch.subtract) and treats a
counter that went backwards as a restart.

Error rate counts server-side failures only. The tenant's own mistakes
(syntax, undefined objects, constraint and data errors, permission), its own
quota rejections (53200 out of memory quota, 53300 too many connections,
53400 configuration limit) and cancellations it asked for (57014) are client
errors; internal errors (XX), system errors (58), insufficient resources of
the host (53000, 53100 disk full) and operator intervention other than its
own cancel (57P01..57P03) are the platform's.
"""
from __future__ import annotations

import threading
from typing import Any

from rustymt.sla.sketch import LatencySketch

# SQLSTATE classes / codes that are the platform's fault.
SERVER_CLASSES = frozenset({"XX", "58", "08"})
SERVER_CODES = frozenset({"53000", "53100", "57P01", "57P02", "57P03", "40001", "40P01"})
# 53xxx codes that are the tenant's own quota at work.
TENANT_QUOTA_CODES = frozenset({"53200", "53300", "53400"})


def is_server_error(sqlstate: str | None) -> bool:
    if not sqlstate or sqlstate == "00000":
        return False
    sqlstate = sqlstate.upper()
    if sqlstate in TENANT_QUOTA_CODES:
        return False
    return sqlstate in SERVER_CODES or sqlstate[:2] in SERVER_CLASSES


class StatementStats:
    """Thread-safe per-tenant statement counters and latency sketch."""

    def __init__(self):
        self._lock = threading.Lock()
        self.latency_ms = LatencySketch()
        self.statements = 0
        self.server_errors = 0
        self.client_errors = 0
        self.quota_rejections = dict.fromkeys(sorted(TENANT_QUOTA_CODES), 0)

    def record(self, latency_ms: float, sqlstate: str | None = None) -> None:
        with self._lock:
            self.latency_ms.add(max(0.0, latency_ms))
            self.statements += 1
            if sqlstate and sqlstate != "00000":
                if is_server_error(sqlstate):
                    self.server_errors += 1
                else:
                    self.client_errors += 1
                if sqlstate in self.quota_rejections:
                    self.quota_rejections[sqlstate] += 1

    def rejected(self, sqlstate: str) -> None:
        """A refusal by the tenant's quota that is not a statement (a connection)."""
        with self._lock:
            self.quota_rejections[sqlstate] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"statements": self.statements, "server_errors": self.server_errors,
                    "client_errors": self.client_errors, "latency_ms": self.latency_ms.to_dict(),
                    "quota_rejections": dict(self.quota_rejections)}
