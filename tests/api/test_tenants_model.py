"""The pure tenant model: state machine, tier arithmetic, time parsing."""
from __future__ import annotations

import datetime
import itertools

import pytest

from rustymt.model import timeutil
from rustymt.model.tenants import TRANSITIONS, TenantState, check_transition
from rustymt.model.tiers import TIERS, Priority, cpu_shares, guaranteed_cpu_percent
from rustymt.service.errors import ServiceError

LEGAL = {
    ("active", "suspended"), ("active", "maintenance"), ("active", "migrating"), ("active", "terminated"),
    ("suspended", "active"), ("suspended", "terminated"), ("maintenance", "active"), ("maintenance", "terminated"),
    ("migrating", "active"), ("migrating", "terminated"),
}


@pytest.mark.parametrize("current,target", list(itertools.product([s.value for s in TenantState], repeat=2)))
def test_every_transition_is_legal_or_invalid_state(current, target):
    if (current, target) in LEGAL:
        check_transition(current, target)
    else:
        with pytest.raises(ServiceError) as refused:
            check_transition(current, target)
        assert refused.value.code == "INVALID_STATE" and refused.value.http_status == 400


def test_terminated_is_final():
    assert TRANSITIONS[TenantState.TERMINATED] == frozenset()


def test_priority_orders_shares_within_every_tier():
    for tier in TIERS:
        shares = [cpu_shares(tier, p) for p in Priority]  # CRITICAL .. BEST_EFFORT
        assert shares == sorted(shares, reverse=True) and len(set(shares)) == len(shares)


def test_guarantee_scales_with_the_cpu_quota_and_stays_under_it():
    assert guaranteed_cpu_percent("silver", 200) == TIERS["silver"].cpu_min_percent
    assert guaranteed_cpu_percent("silver", 400) == 2 * TIERS["silver"].cpu_min_percent
    assert guaranteed_cpu_percent("platinum", 1) == 1
    for tier in TIERS.values():
        assert 0 < tier.cpu_min_percent < tier.quota.cpu_percent


@pytest.mark.parametrize("text,expected", [
    ("2026-12-01", "2026-12-01T00:00:00Z"),
    ("2026-12-01T10:30:00Z", "2026-12-01T10:30:00Z"),
    ("2026-12-01T12:30:00+02:00", "2026-12-01T10:30:00Z"),
])
def test_effective_dates(text, expected):
    assert timeutil.to_iso(timeutil.parse_instant(text)) == expected


@pytest.mark.parametrize("text", ["2026-12-01T10:30:00", "tomorrow", "2026-13-01", ""])
def test_effective_dates_refused(text):
    with pytest.raises(ValueError):
        timeutil.parse_instant(text)


def test_iso_round_trip():
    moment = datetime.datetime(2025, 12, 11, 10, 0, tzinfo=datetime.timezone.utc)
    assert timeutil.from_iso(timeutil.to_iso(moment)) == moment
