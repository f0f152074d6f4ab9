"""The token bucket behind the per-tier rate limits, on a clock the test turns.

The clock is injected (RateLimiter(clock, wall_clock)) so refill can be shown
exactly, without waiting an hour; the daemon tests show the same limiter in
the real server.
"""
from __future__ import annotations

import math

from rustymt.api.ratelimit import RateLimiter
from rustymt.model.tiers import TIERS


class TurnedClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


def _limiter():
    clock = TurnedClock()
    wall = TurnedClock(1_734_528_000.0)
    return RateLimiter(clock, wall), clock, wall


def test_full_bucket_allows_exactly_the_burst_then_refuses():
    limiter, _, _ = _limiter()
    bronze = TIERS["bronze"]
    decisions = [limiter.take("t", bronze.requests_per_hour, bronze.burst) for _ in range(bronze.burst + 1)]
    assert all(decision.allowed for decision in decisions[:-1])
    assert [decision.remaining for decision in decisions[:3]] == [bronze.burst - 1, bronze.burst - 2, bronze.burst - 3]
    refused = decisions[-1]
    assert not refused.allowed and refused.remaining == 0
    # One token comes back after 3600 / requests_per_hour seconds.
    assert refused.retry_after == math.ceil(3600 / bronze.requests_per_hour)
    assert refused.headers()["Retry-After"] == str(refused.retry_after)
    assert "Retry-After" not in decisions[0].headers()


def test_refill_is_continuous_at_the_hourly_rate_and_capped_at_the_burst():
    limiter, clock, wall = _limiter()
    per_hour, burst = 3600, 10  # one token per second
    for _ in range(burst):
        assert limiter.take("t", per_hour, burst).allowed
    assert not limiter.take("t", per_hour, burst).allowed
    clock.now += 2.5
    assert limiter.take("t", per_hour, burst).allowed
    assert limiter.take("t", per_hour, burst).allowed
    assert not limiter.take("t", per_hour, burst).allowed  # 0.5 left: not a whole token
    clock.now += 10_000  # idle for hours: still only `burst`
    wall.now += 10_000
    decision = limiter.take("t", per_hour, burst)
    assert decision.remaining == burst - 1
    # Reset: when the bucket is full again, as Unix seconds.
    assert decision.reset_at == math.ceil(wall.now + 1.0)


def test_tiers_and_tenants_have_separate_buckets():
    limiter, _, _ = _limiter()
    bronze, gold = TIERS["bronze"], TIERS["gold"]
    for _ in range(bronze.burst):
        limiter.take("a", bronze.requests_per_hour, bronze.burst)
    assert not limiter.take("a", bronze.requests_per_hour, bronze.burst).allowed
    fresh = limiter.take("b", gold.requests_per_hour, gold.burst)
    assert fresh.allowed and fresh.remaining == gold.burst - 1 and fresh.limit == gold.requests_per_hour


def test_tier_change_reshapes_the_bucket():
    limiter, clock, _ = _limiter()
    gold, bronze = TIERS["gold"], TIERS["bronze"]
    assert limiter.take("t", gold.requests_per_hour, gold.burst).remaining == gold.burst - 1
    # Downgrade: tokens above the new burst are dropped.
    down = limiter.take("t", bronze.requests_per_hour, bronze.burst)
    assert down.limit == bronze.requests_per_hour and down.remaining == bronze.burst - 1
    # Upgrade: time before it is settled at the old shape (full = bronze's burst) ...
    clock.now += 3600
    up = limiter.take("t", gold.requests_per_hour, gold.burst)
    assert up.limit == gold.requests_per_hour and up.remaining == bronze.burst - 1
    # ... and from then on it refills at the new rate up to the new burst.
    clock.now += 3600
    assert limiter.take("t", gold.requests_per_hour, gold.burst).remaining == gold.burst - 1


def test_looking_does_not_consume():
    limiter, _, _ = _limiter()
    for _ in range(5):
        assert limiter.take("t", 3600, 1, consume=False).allowed
    assert limiter.take("t", 3600, 1).allowed
    assert not limiter.take("t", 3600, 1, consume=False).allowed


def test_full_buckets_are_dropped_when_there_are_too_many():
    """Keys come from outside (client addresses): past PRUNE_AT buckets, those refilled to the brim go."""
    from rustymt.api import ratelimit

    limiter, clock, _ = _limiter()
    for index in range(ratelimit.PRUNE_AT - 1):
        limiter.take(f"address:{index}", 3600, 10)  # one token each: refilled after 1 s
    limiter.take("busy", 1, 10_000)  # one token back per hour: not full again for an hour
    clock.now += 2.0
    decision = limiter.take("address:new", 3600, 10)  # the PRUNE_AT+1-th key: the full ones are dropped
    assert decision.allowed and decision.remaining == 9
    assert len(limiter._buckets) == 2  # "busy" (still drained by one) and the new one
    assert limiter.take("busy", 1, 10_000).remaining == 10_000 - 2
