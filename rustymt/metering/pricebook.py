"""The price book: what each tier costs, as data (config `billing.price_book`).

Per tier: a monthly base fee, quantities included in it, overage rates per
unit beyond them, and the SLA credit schedule (monthly uptime below a
threshold -> that percent of the month's charges back). Prices are Decimal
from the first byte: the book is read from strings (or TOML numbers turned
into their shortest string), never through float arithmetic.

A configured book is merged over the built-in one tier by tier and key by
key, so an operator can change one price without restating the rest.
"""
from __future__ import annotations

import dataclasses
import json
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Mapping

from rustymt.model.tiers import TIER_NAMES

# Billed resources: key -> (unit, how the quantity is described).
RESOURCES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "cpu_hours": ("cpu-hour", "CPU time"),
    "storage_gb_months": ("GB-month", "storage"),
    "network_gb": ("GB", "network transfer (in + out)"),
    "io_million_ops": ("million ops", "read and write operations"),
})

DEFAULT_BOOK: dict[str, dict[str, Any]] = {
    "bronze": {"monthly_base": "49.00",
               "included": {"cpu_hours": "100", "storage_gb_months": "50", "network_gb": "100", "io_million_ops": "10"},
               "overage": {"cpu_hours": "0.04", "storage_gb_months": "0.10", "network_gb": "0.05", "io_million_ops": "0.20"},
               "sla_credits": [["99.0", "10"], ["95.0", "25"]]},
    "silver": {"monthly_base": "199.00",
               "included": {"cpu_hours": "400", "storage_gb_months": "100", "network_gb": "250", "io_million_ops": "50"},
               "overage": {"cpu_hours": "0.035", "storage_gb_months": "0.09", "network_gb": "0.05", "io_million_ops": "0.18"},
               "sla_credits": [["99.5", "10"], ["99.0", "25"], ["95.0", "50"]]},
    "gold": {"monthly_base": "499.00",
             "included": {"cpu_hours": "1200", "storage_gb_months": "250", "network_gb": "1000", "io_million_ops": "200"},
             "overage": {"cpu_hours": "0.03", "storage_gb_months": "0.08", "network_gb": "0.04", "io_million_ops": "0.15"},
             "sla_credits": [["99.9", "10"], ["99.0", "25"], ["95.0", "100"]]},
    "platinum": {"monthly_base": "1499.00",
                 "included": {"cpu_hours": "4000", "storage_gb_months": "500", "network_gb": "4000", "io_million_ops": "1000"},
                 "overage": {"cpu_hours": "0.025", "storage_gb_months": "0.07", "network_gb": "0.03", "io_million_ops": "0.12"},
                 "sla_credits": [["99.99", "10"], ["99.9", "25"], ["99.0", "50"], ["95.0", "100"]]},
}


@dataclasses.dataclass(frozen=True)
class TierPrices:
    monthly_base: Decimal
    included: Mapping[str, Decimal]
    overage: Mapping[str, Decimal]
    sla_credits: tuple[tuple[Decimal, Decimal], ...]  # (uptime below %, credit %), highest threshold first

    def credit_percent(self, uptime_percent: Decimal) -> Decimal:
        """The schedule's credit for a month's uptime: the deepest threshold it falls below."""
        percent = Decimal(0)
        for threshold, credit in self.sla_credits:
            if uptime_percent < threshold:
                percent = max(percent, credit)
        return percent


def _decimal(where: str, value: Any, minimum: Decimal = Decimal(0)) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{where}: expected a decimal number")
    try:
        number = Decimal(str(value))  # str(float) is its shortest round-trip form, never binary noise
    except InvalidOperation:
        raise ValueError(f"{where}: {value!r} is not a decimal number") from None
    if not number.is_finite() or number < minimum:
        raise ValueError(f"{where}: must be a finite number >= {minimum}")
    return number


def _resource_map(where: str, table: Any) -> dict[str, Decimal]:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table of {', '.join(RESOURCES)}")
    unknown = set(table) - set(RESOURCES)
    if unknown:
        raise ValueError(f"{where}: unknown resource(s) {', '.join(sorted(unknown))}")
    return {name: _decimal(f"{where}.{name}", value) for name, value in table.items()}


def _tier_prices(tier: str, entry: dict[str, Any]) -> TierPrices:
    unknown = set(entry) - {"monthly_base", "included", "overage", "sla_credits"}
    if unknown:
        raise ValueError(f"{tier}: unknown key(s) {', '.join(sorted(unknown))}")
    credits = entry["sla_credits"]
    if not isinstance(credits, list) or not all(isinstance(step, (list, tuple)) and len(step) == 2 for step in credits):
        raise ValueError(f"{tier}.sla_credits: expected a list of [uptime_below_percent, credit_percent] pairs")
    schedule = []
    for index, (threshold, credit) in enumerate(credits):
        threshold = _decimal(f"{tier}.sla_credits[{index}]", threshold)
        credit = _decimal(f"{tier}.sla_credits[{index}]", credit)
        if threshold > 100 or credit > 100:
            raise ValueError(f"{tier}.sla_credits[{index}]: percentages go up to 100")
        schedule.append((threshold, credit))
    return TierPrices(
        monthly_base=_decimal(f"{tier}.monthly_base", entry["monthly_base"]),
        included=MappingProxyType(_resource_map(f"{tier}.included", entry["included"])),
        overage=MappingProxyType(_resource_map(f"{tier}.overage", entry["overage"])),
        sla_credits=tuple(sorted(schedule, reverse=True)),
    )


def parse_price_book(value: Any) -> Mapping[str, TierPrices]:
    """A TOML table or a JSON string (env); "" = the built-in book. Raises ValueError."""
    if isinstance(value, str):
        if not value.strip():
            value = {}
        else:
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"price book is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("price book must be a table of tiers")
    unknown = set(value) - set(TIER_NAMES)
    if unknown:
        raise ValueError(f"price book names unknown tier(s) {', '.join(sorted(unknown))}")
    book = {}
    for tier in TIER_NAMES:
        entry = {key: (dict(item) if isinstance(item, dict) else item) for key, item in DEFAULT_BOOK[tier].items()}
        override = value.get(tier, {})
        if not isinstance(override, dict):
            raise ValueError(f"{tier}: expected a table")
        for key, item in override.items():
            if key in ("included", "overage") and isinstance(item, dict):
                entry[key] = {**entry[key], **item}
            else:
                entry[key] = item
        book[tier] = _tier_prices(tier, entry)
    return MappingProxyType(book)
