"""A crafted September 2026 for one tenant and its bill computed by hand.

The tenant exists since 2026-08-15 on silver and moves to gold at
2026-09-16T00:00Z (mid-month). September has 30 days = 2,592,000 s, so
each tier holds exactly half of it.

Records:
* silver half: 2 hour records, 900,000 cpu-seconds each -> 500 cpu-hours;
  silver includes 400 x 0.5 = 200 -> overage 300 x 0.035 = 10.50
* gold half: 1 hour record with 2.5e12 bytes of network -> 2500 GB;
  gold includes 1000 x 0.5 = 500 -> overage 2000 x 0.04 = 80.00;
  storage 600 GB for one hour = 600 x 3600 / 2,592,000 = 0.833333 GB-month,
  under the 125 included -> 0.00
Base fees: silver 199 x 0.5 = 99.50; gold 499 x 0.5 = 249.50.
Subtotal: 99.50 + 10.50 + 249.50 + 80.00 + 0.00 = 439.50.
Uptime: 12 h down, 708 h up -> 98.333 %; gold's schedule (<99.9 -> 10 %,
<99.0 -> 25 %, <95.0 -> 100 %) gives 25 % -> 109.875 -> 109.88 (half up).
Total: 439.50 - 109.88 = 329.62 USD.
"""
from __future__ import annotations

import calendar

PERIOD = "2026-09"
SEPTEMBER = calendar.timegm((2026, 9, 1, 0, 0, 0))
MID = calendar.timegm((2026, 9, 16, 0, 0, 0))
CREATED_AT = "2026-08-15T00:00:00Z"
TIERS = [("silver", calendar.timegm((2026, 8, 15, 0, 0, 0))), ("gold", MID)]
ZERO = {"memory_mb_avg": 0.0, "memory_mb_peak": 0.0, "storage_gb": 0.0, "read_ops": 0, "write_ops": 0,
        "network_bytes_in": 0, "network_bytes_out": 0, "peak_connections": 0, "statements": 0, "api_requests": 0,
        "cpu_seconds": 0.0}


def records(tenant_id: str) -> list[dict]:
    def hour(start: int, tier: str, **values) -> dict:
        return {**ZERO, "tenant_id": tenant_id, "resolution": 3600, "period_start": float(start),
                "period_end": float(start + 3600), "tier": tier, **values}

    return [
        hour(SEPTEMBER + 3600, "silver", cpu_seconds=900_000.0),
        hour(SEPTEMBER + 7200, "silver", cpu_seconds=900_000.0),
        hour(MID + 3600, "gold", network_bytes_in=1_000_000_000_000, network_bytes_out=1_500_000_000_000, storage_gb=600.0),
    ]


UP_SECONDS, DOWN_SECONDS = 708 * 3600.0, 12 * 3600.0

EXPECTED_TOTALS = {"subtotal": "439.50", "total": "329.62", "currency": "USD"}
EXPECTED_AMOUNTS = ["99.50", "10.50", "249.50", "0.00", "80.00"]  # base, cpu (silver); base, storage, network (gold)
EXPECTED_CREDIT = {"amount": "109.88", "credit_percent": "25", "uptime_percent": "98.333"}
