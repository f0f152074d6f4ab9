"""A month's bill from metering records: pure, Decimal, deterministic.

    report = bill(tenant_id, "2026-10", book, currency, lifetime, tiers, records, uptime)

1. The billed span is the month cut to the tenant's lifetime (created ..
   terminated). The tier log splits it into segments, one per tier in effect.
2. Each segment pays its tier's monthly base fee prorated by the segment's
   share of the month's seconds (a mid-month upgrade pays the old tier up to
   the change and the new one from it).
3. A record belongs to the segment its period starts in. Per segment and
   resource: used quantity, included = the tier's inclusion prorated like the
   fee, overage = max(0, used - included) billed at the tier's rate.
4. Subtotal = all line items. The SLA credit is the credit schedule of the
   tier in effect at the end of the span applied to the month's uptime (up /
   (up + down) seconds; suspensions and maintenance count in neither):
   credit = subtotal x percent. Total = subtotal - credits, never below 0.

Every amount is rounded once, to the cent, half up; quantities are shown to
6 places. The same inputs give the same report, to the byte.
"""
from __future__ import annotations

import calendar
import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable, Mapping

from rustymt.metering.pricebook import RESOURCES, TierPrices

CENT = Decimal("0.01")
QUANTITY = Decimal("0.000001")
UTC = datetime.timezone.utc


def month_bounds(period: str) -> tuple[int, int]:
    """"YYYY-MM" -> (start, end) unix seconds; ValueError when malformed."""
    if len(period) != 7 or period[4] != "-" or not (period[:4].isdigit() and period[5:].isdigit()):
        raise ValueError("period must be YYYY-MM")
    year, month = int(period[:4]), int(period[5:])
    if not (1 <= month <= 12 and 1970 <= year <= 9998):
        raise ValueError("period must be YYYY-MM with a month 01..12")
    start = calendar.timegm((year, month, 1, 0, 0, 0))
    end = calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0))
    return start, end


def _dec(value: Any) -> Decimal:
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def segments(span: tuple[float, float], tiers: list[tuple[str, float]]) -> list[tuple[str, float, float]]:
    """[(tier, start, end)] covering `span`; tiers = [(tier, effective_at)] sorted."""
    start, end = span
    out: list[tuple[str, float, float]] = []
    for index, (tier, effective) in enumerate(tiers):
        until = tiers[index + 1][1] if index + 1 < len(tiers) else end
        low, high = max(start, effective), min(end, until)
        if high > low:
            if out and out[-1][0] == tier and out[-1][2] == low:
                out[-1] = (tier, out[-1][1], high)
            else:
                out.append((tier, low, high))
    return out


def used_quantities(records: Iterable[Mapping[str, Any]], month_seconds: int) -> dict[str, Decimal]:
    totals = {name: Decimal(0) for name in RESOURCES}
    for r in records:
        totals["cpu_hours"] += _dec(r["cpu_seconds"]) / 3600
        totals["storage_gb_months"] += _dec(r["storage_gb"]) * _dec(r["period_end"] - r["period_start"]) / month_seconds
        totals["network_gb"] += Decimal(int(r["network_bytes_in"]) + int(r["network_bytes_out"])) / 10 ** 9
        totals["io_million_ops"] += Decimal(int(r["read_ops"]) + int(r["write_ops"])) / 10 ** 6
    return totals


def bill(tenant_id: str, period: str, book: Mapping[str, TierPrices], currency: str,
         lifetime: tuple[float, float | None], tiers: list[tuple[str, float]], records: list[Mapping[str, Any]],
         uptime: tuple[float, float]) -> dict[str, Any]:
    month_start, month_end = month_bounds(period)
    month_seconds = month_end - month_start
    created, terminated = lifetime
    span = (max(month_start, created), min(month_end, terminated if terminated is not None else month_end))
    line_items: list[dict[str, Any]] = []
    subtotal = Decimal(0)
    parts = segments(span, tiers) if span[1] > span[0] else []
    for tier, seg_start, seg_end in parts:
        prices = book[tier]
        share = Decimal(int(round(seg_end - seg_start))) / month_seconds
        base = (prices.monthly_base * share).quantize(CENT, rounding=ROUND_HALF_UP)
        subtotal += base
        line_items.append({
            "description": f"{tier} base fee {_iso(seg_start)} to {_iso(seg_end)}",
            "tier": tier, "quantity": str(share.quantize(QUANTITY, rounding=ROUND_HALF_UP)), "unit": "month",
            "unit_price": _money(prices.monthly_base), "amount": _money(base),
        })
        mine = [r for r in records if seg_start <= r["period_start"] < seg_end]
        for resource, used in used_quantities(mine, month_seconds).items():
            if used <= 0:
                continue
            unit, what = RESOURCES[resource]
            included = prices.included.get(resource, Decimal(0)) * share
            overage = max(Decimal(0), used - included)
            rate = prices.overage.get(resource, Decimal(0))
            amount = (overage * rate).quantize(CENT, rounding=ROUND_HALF_UP)
            subtotal += amount
            line_items.append({
                "description": (f"{what} on {tier}: {used.quantize(QUANTITY, rounding=ROUND_HALF_UP)} {unit} used, "
                                f"{included.quantize(QUANTITY, rounding=ROUND_HALF_UP)} included"),
                "tier": tier, "quantity": str(overage.quantize(QUANTITY, rounding=ROUND_HALF_UP)), "unit": unit,
                "unit_price": str(rate), "amount": _money(amount),
            })
    credits: list[dict[str, Any]] = []
    up, down = uptime
    uptime_percent = None
    if parts and up + down > 0:
        uptime_percent = _dec(up) * 100 / (_dec(up) + _dec(down))
        final_tier = parts[-1][0]
        percent = book[final_tier].credit_percent(uptime_percent)
        if percent > 0:
            amount = min(subtotal, (subtotal * percent / 100).quantize(CENT, rounding=ROUND_HALF_UP))
            credits.append({
                "description": f"SLA credit: uptime {uptime_percent.quantize(Decimal('0.001'), rounding=ROUND_HALF_UP)}% "
                               f"on {final_tier}, {percent}% of charges",
                "uptime_percent": str(uptime_percent.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)),
                "credit_percent": str(percent), "amount": _money(amount),
            })
    credit_total = sum((Decimal(c["amount"]) for c in credits), Decimal(0))
    return {
        "tenant_id": tenant_id, "period": period, "currency": currency,
        "line_items": line_items, "credits": credits,
        "subtotal": _money(subtotal), "total": _money(max(Decimal(0), subtotal - credit_total)),
        "uptime_percent": (str(uptime_percent.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))
                           if uptime_percent is not None else None),
    }
