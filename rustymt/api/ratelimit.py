"""Per-tenant API rate limits by service tier: one token bucket per tenant.

The spec's "Rate Limiting" table gives each tier requests/hour and a burst
(rustymt.model.tiers.TIERS holds them). A tenant's bucket holds at most
`burst` tokens and refills continuously at requests_per_hour / 3600 tokens per
second; each request takes one token. A full bucket lets a tenant send `burst`
requests back to back, after which it is held to its hourly rate.

Every response to a tenant-scoped request carries

    X-RateLimit-Limit      the tier's requests per hour
    X-RateLimit-Remaining  whole tokens left in the bucket after this request
    X-RateLimit-Reset      Unix time (s) at which the bucket is full again

and when the bucket is empty the request is refused with 429 QUOTA_EXCEEDED,
a Retry-After (seconds until one token is back) and the same headers. The
refused request does not reach the handler and costs nothing.

Operator tokens (no tenant_id: cdb_admin, monitors) are not tenant-limited and
get no X-RateLimit headers; a token for a tenant the catalog no longer knows
is limited like the lowest tier. Buckets live in the daemon's memory: a
restart refills them, which can only let a tenant through sooner.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import time
from typing import Callable

from aiohttp import web

from rustymt.api.appstate import per_app
from rustymt.model.tiers import TIERS, Tier
from rustymt.service.errors import ServiceError

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


@dataclasses.dataclass(frozen=True)
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

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)


app_limiter = per_app(lambda app: RateLimiter())


async def tenant_tier(app: web.Application, tenant_id: str) -> Tier:
    name = app["tier_of"](tenant_id)
    if inspect.isawaitable(name):
        name = await name
    return TIERS.get(name) or TIERS[FALLBACK_TIER]


def with_headers(error: ServiceError, headers: dict[str, str]) -> ServiceError:
    """Attach headers to a refusal; the error middleware (rustymt.api.app) sends them."""
    error.headers = {**(getattr(error, "headers", None) or {}), **headers}
    return error


async def charge(app: web.Application, principal) -> dict[str, str]:
    """Take one request from the principal's tenant bucket; the X-RateLimit headers for the answer.

    Operators (no tenant_id) are not limited: {}. An empty bucket raises
    QUOTA_EXCEEDED (the API-request quota) carrying the headers and Retry-After. REST's middleware and
    GraphQL's transport both come here, so they share one bucket per tenant.
    """
    if principal is None or principal.tenant_id is None:
        return {}
    tier = await tenant_tier(app, principal.tenant_id)
    decision = app_limiter(app).take(principal.tenant_id, tier.requests_per_hour, tier.burst)
    headers = decision.headers()
    if not decision.allowed:
        raise with_headers(ServiceError(
            "QUOTA_EXCEEDED",
            f"rate limit of {decision.limit} requests per hour exceeded; retry in {decision.retry_after} s",
            details={"quota": "api_requests_per_hour", "limit": decision.limit, "retry_after_seconds": decision.retry_after},
        ), headers)
    return headers


@web.middleware
async def ratelimit_middleware(request: web.Request, handler):
    headers = await charge(request.app, request.get("principal"))
    if not headers:
        return await handler(request)
    # Errors get the headers too: the caller needs them most when it is refused.
    try:
        response = await handler(request)
    except ServiceError as error:
        raise with_headers(error, headers)
    except web.HTTPException as error:
        error.headers.update(headers)
        raise
    if not response.prepared:  # a streamed response has sent its headers already
        response.headers.update(headers)
    return response
