"""REST: the spec's Isolation Statistics endpoints (memory and CPU)."""
from __future__ import annotations

from aiohttp import web

from rustymt.api.request import json_response, principal, query, services
from rustymt.api.routing import Route
from rustymt.api.schema import ERROR, SOURCE_NOTE, integer, number, obj, string
from rustymt.service.tenants import PERMISSION

TENANT_QUERY = {"tenant": string(description="tenant_id", **{"x-required": True})}

MEMORY_RESPONSE = obj({
    "tenant_id": string(), "allocated_bytes": integer(0), "quota_bytes": integer(0), "peak_usage_bytes": integer(0),
    "oom_count": integer(0), "allocation_count": integer(0), "deallocation_count": integer(0), "source": SOURCE_NOTE,
}, required=("tenant_id", "allocated_bytes", "quota_bytes", "peak_usage_bytes", "oom_count", "allocation_count",
             "deallocation_count"))
CPU_RESPONSE = obj({
    "tenant_id": string(), "shares": integer(1), "min_percent": integer(0), "max_percent": integer(0),
    "used_cpu_ns": integer(0), "throttled_ns": integer(0), "throttle_ratio": number(), "allocation_percent": number(),
    "source": SOURCE_NOTE,
}, required=("tenant_id", "shares", "min_percent", "max_percent", "used_cpu_ns", "throttled_ns", "throttle_ratio",
             "allocation_percent"))
ERRORS = {status: ERROR for status in (400, 401, 403, 404, 429)}


async def memory_stats(request: web.Request) -> web.Response:
    tenant_id = query(request)["tenant"]
    return json_response(await services(request).tenants.isolation_memory(principal(request), tenant_id))


async def cpu_stats(request: web.Request) -> web.Response:
    tenant_id = query(request)["tenant"]
    return json_response(await services(request).tenants.isolation_cpu(principal(request), tenant_id))


ROUTES = [
    Route("GET", "/api/v1/isolation/memory", memory_stats, PERMISSION["isolation"],
          "Per-tenant allocator accounting", None, {200: MEMORY_RESPONSE, **ERRORS}, query=TENANT_QUERY, tags=("isolation",)),
    Route("GET", "/api/v1/isolation/cpu", cpu_stats, PERMISSION["isolation"],
          "Per-tenant CPU scheduling", None, {200: CPU_RESPONSE, **ERRORS}, query=TENANT_QUERY, tags=("isolation",)),
]
