"""API rate limits: a token bucket per caller, X-RateLimit headers on every /api/v1 answer.

Three kinds of caller, each with buckets of its own:

    tenant-scoped token   one bucket per tenant, shaped by its tier: the spec's
                          "Rate Limiting" table (rustymt.model.tiers.TIERS
                          requests_per_hour and burst); REST and GraphQL share it
    operator token        (no tenant_id: cdb_admin, monitors) not tenant-limited:
                          one bucket per token subject (user_id claim), shaped
                          by api.operator_requests_per_hour / api.operator_burst
    no (valid) token      one bucket per client address, shaped by
                          api.anonymous_requests_per_hour / api.anonymous_burst:
                          401s, POST /api/v1/auth/token, the OpenAPI document,
                          paths no route serves; a guesser of passwords or
                          tokens is slowed by it (on top of /auth/token's own
                          failed-login limit)

A bucket holds at most `burst` tokens and refills continuously at
requests_per_hour / 3600 tokens per second; each request takes one token. A
full bucket lets a caller send `burst` requests back to back, after which it
is held to its hourly rate. Every answer under /api/v1/, and every answer of
another route that needs a token (GET /metrics), carries

    X-RateLimit-Limit      the bucket's requests per hour
    X-RateLimit-Remaining  whole tokens left in the bucket after this request
    X-RateLimit-Reset      Unix time (s) at which the bucket is full again

and when the bucket is empty the request is refused with 429 QUOTA_EXCEEDED,
a Retry-After (seconds until one token is back) and the same headers. The
refused request reaches neither authentication's checks nor the handler.
Health probes and /graphql (whose transport charges the tenant bucket itself)
carry no headers.

rustymt.api.middleware applies the limit first, outside error rendering, so
every answer gets the headers, errors and early refusals included. It picks
the bucket from rustymt.api.auth.authenticated(): the route's token verified
once, the Principal remembered on the request for authentication. A token for a tenant the catalog no longer knows is limited
like the lowest tier. Buckets live in the daemon's memory: a restart refills
them, which can only let a caller through sooner.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

from aiohttp import web

from rustymt.api.appstate import per_app
from rustymt.model.tiers import TIERS, Tier
from rustymt.service.authz import Principal
from rustymt.service.errors import ServiceError

API_PREFIX = "/api/v1/"  # answers under it carry the headers
OPERATOR_PREFIX = "operator:"  # bucket keys; a tenant's bucket is keyed by its bare tenant_id (tenant_...)
ADDRESS_PREFIX = "address:"
PRUNE_AT = 100_000  # buckets kept before full ones are dropped
# Tier applied to a tenant id the catalog has no tier for (e.g. terminated).
FALLBACK_TIER = min(TIERS.values(), key=lambda tier: tier.requests_per_hour).name


@dataclasses.dataclass
class TokenBucket:
    capacity: float  # burst: the most requests that can be sent back to back
    refill_per_second: float  # requests_per_hour / 3600
    tokens: float  # invariant: 0 <= tokens <= capacity
    updated: float  # clock reading `tokens` was computed at

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill_per_second)
            self.updated = now

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def seconds_until(self, tokens: float) -> float:
        """Seconds from `updated` until the bucket holds `tokens` (0 when it already does)."""
        return max(0.0, (tokens - self.tokens) / self.refill_per_second)


@dataclasses.dataclass(slots=True)  # one per request: plain slots, not frozen (cheaper to build)
class Decision:
    allowed: bool
    limit: int  # requests per hour of the tenant's tier
    remaining: int
    reset_at: int  # Unix seconds when the bucket is full again
    retry_after: int  # seconds until the next request can pass (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    """Token buckets keyed by tenant id. Not thread-safe: one event loop owns it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        self._clock = clock
        self._wall_clock = wall_clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, per_hour: int, burst: int, consume: bool = True) -> Decision:
        """Take one token from `key`'s bucket (shaped per_hour/burst); consume=False only looks."""
        now = self._clock()
        rate = per_hour / 3600.0
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= PRUNE_AT:
                self._drop_full(now)
            bucket = self._buckets[key] = TokenBucket(burst, rate, float(burst), now)
        elif bucket.capacity != burst or bucket.refill_per_second != rate:
            # The shape changed (tier change): settle the old rate up to now, then reshape.
            bucket.refill(now)
            bucket.capacity, bucket.refill_per_second = burst, rate
            bucket.tokens = min(bucket.tokens, bucket.capacity)
        if consume:
            allowed = bucket.take(now)
        else:
            bucket.refill(now)
            allowed = bucket.tokens >= 1.0
        wall = self._wall_clock()
        return Decision(
            allowed=allowed,
            limit=per_hour,
            remaining=int(bucket.tokens),
            reset_at=math.ceil(wall + bucket.seconds_until(bucket.capacity)),
            retry_after=0 if allowed else max(1, math.ceil(bucket.seconds_until(1.0))),
        )

    def _drop_full(self, now: float) -> None:
        """Forget the buckets that have refilled to the brim: a new one would be identical.
        Keys come from outside (client addresses, token subjects): memory stays bounded
        by the callers active within one refill period."""
        for key in [key for key, bucket in self._buckets.items()
                    if bucket.tokens + (now - bucket.updated) * bucket.refill_per_second >= bucket.capacity]:
            del self._buckets[key]

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)


app_limiter = per_app(lambda app: RateLimiter())


def tenant_tier(app: web.Application, tenant_id: str) -> Tier:
    # tier_of is a cached dict lookup (rustymt.service.tenants): no coroutine on the hot path.
    return TIERS.get(app["tier_of"](tenant_id)) or TIERS[FALLBACK_TIER]


def with_headers(error: ServiceError, headers: dict[str, str]) -> ServiceError:
    """Attach headers to a refusal; its error answer (rustymt.api.app.failure_response) carries them."""
    error.headers = {**(getattr(error, "headers", None) or {}), **headers}
    return error


def decide(app: web.Application, principal: Principal | None, client: str | None) -> Decision:
    """Take one request from the caller's bucket: the tenant's, the operator's or the client address's."""
    limiter = app_limiter(app)
    if principal is None:
        limits = app["settings"].api
        return limiter.take(ADDRESS_PREFIX + (client or "unknown"), limits.anonymous_requests_per_hour,
                            limits.anonymous_burst)
    if principal.tenant_id is None:
        limits = app["settings"].api
        return limiter.take(OPERATOR_PREFIX + principal.user_id, limits.operator_requests_per_hour, limits.operator_burst)
    tier = tenant_tier(app, principal.tenant_id)
    return limiter.take(principal.tenant_id, tier.requests_per_hour, tier.burst)


def quota_exceeded(decision: Decision) -> ServiceError:
    return ServiceError(
        "QUOTA_EXCEEDED",
        f"rate limit of {decision.limit} requests per hour exceeded; retry in {decision.retry_after} s",
        details={"quota": "api_requests_per_hour", "limit": decision.limit, "retry_after_seconds": decision.retry_after},
    )
