"""REST: the spec's Isolation Statistics endpoints (memory and CPU) and the
other IsolationTypes (io, buffer_pool, network), measured by the engine."""
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
IO_RESPONSE = obj({
    "tenant_id": string(), "reads": integer(0), "writes": integer(0), "bytes": integer(0), "read_bytes": integer(0),
    "write_bytes": integer(0), "throttled_ns": integer(0), "iops_limit": integer(0, description="0 = unlimited"),
    "source": SOURCE_NOTE,
}, required=("tenant_id", "reads", "writes", "bytes", "read_bytes", "write_bytes", "throttled_ns", "iops_limit"))
BUFFER_POOL_RESPONSE = obj({
    "tenant_id": string(), "hits": integer(0), "misses": integer(0), "hit_ratio": number(), "evictions": integer(0),
    "resident": integer(0, description="frames (pages) the tenant holds"), "min_frames": integer(0), "max_frames": integer(0),
    "frame_bytes": integer(0), "source": SOURCE_NOTE,
}, required=("tenant_id", "hits", "misses", "hit_ratio", "evictions", "resident", "min_frames", "max_frames", "frame_bytes"))
NETWORK_RESPONSE = obj({
    "tenant_id": string(), "port": integer(nullable=True), "rate_limit_mbps": integer(0),
    "bytes_received": integer(0), "bytes_sent": integer(0), "network_mbps": number(), "packets_dropped": integer(0),
    "source": SOURCE_NOTE,
}, required=("tenant_id", "port", "rate_limit_mbps", "bytes_received", "bytes_sent", "network_mbps", "packets_dropped"))
ERRORS = {status: ERROR for status in (400, 401, 403, 404, 429)}


async def memory_stats(request: web.Request) -> web.Response:
    tenant_id = query(request)["tenant"]
    return json_response(await services(request).tenants.isolation_memory(principal(request), tenant_id))


async def cpu_stats(request: web.Request) -> web.Response:
    tenant_id = query(request)["tenant"]
    return json_response(await services(request).tenants.isolation_cpu(principal(request), tenant_id))


def _stats_handler(method_name: str):
    async def handler(request: web.Request) -> web.Response:
        tenant_id = query(request)["tenant"]
        method = getattr(services(request).tenants, method_name)
        return json_response(await method(principal(request), tenant_id))

    handler.__name__ = method_name
    return handler


io_stats = _stats_handler("isolation_io")
buffer_pool_stats = _stats_handler("isolation_buffer_pool")
network_stats = _stats_handler("isolation_network")

ROUTES = [
    Route("GET", "/api/v1/isolation/memory", memory_stats, PERMISSION["isolation"],
          "Per-tenant allocator accounting", None, {200: MEMORY_RESPONSE, **ERRORS}, query=TENANT_QUERY, tags=("isolation",)),
    Route("GET", "/api/v1/isolation/cpu", cpu_stats, PERMISSION["isolation"],
          "Per-tenant CPU scheduling", None, {200: CPU_RESPONSE, **ERRORS}, query=TENANT_QUERY, tags=("isolation",)),
    Route("GET", "/api/v1/isolation/io", io_stats, PERMISSION["isolation"],
          "Per-tenant datafile IO (metered and throttled by the engine's VFS)", None, {200: IO_RESPONSE, **ERRORS},
          query=TENANT_QUERY, tags=("isolation",)),
    Route("GET", "/api/v1/isolation/buffer_pool", buffer_pool_stats, PERMISSION["isolation"],
          "Per-tenant partition of the page buffer pool", None, {200: BUFFER_POOL_RESPONSE, **ERRORS},
          query=TENANT_QUERY, tags=("isolation",)),
    Route("GET", "/api/v1/isolation/network", network_stats, PERMISSION["isolation"],
          "Bytes on the tenant's PostgreSQL port and its rate limit", None, {200: NETWORK_RESPONSE, **ERRORS},
          query=TENANT_QUERY, tags=("isolation",)),
]
