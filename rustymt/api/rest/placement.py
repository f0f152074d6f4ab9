"""REST: a tenant's placement (shared engine instance or a dedicated one of
its own, in its own cgroup) and the host usage of its cgroup.

    GET /api/v1/tenants/{tenant_id}/placement   placement, whether explicit, host usage (dedicated)
    PUT /api/v1/tenants/{tenant_id}/placement   {"placement": "dedicated"} -> migrates (MIGRATING -> ACTIVE)
"""
from __future__ import annotations

from aiohttp import web

from rustymt.api.request import json_body, json_response, principal, services
from rustymt.api.routing import Route
from rustymt.api.schema import ERROR, array, boolean, enum, integer, obj, string
from rustymt.model.tenants import STATE_NAMES
from rustymt.service.errors import ServiceError
from rustymt.service.hostbinding import PERMISSION, PLACEMENTS

PATH = "/api/v1/tenants/{tenant_id}/placement"
PLACEMENT = enum(PLACEMENTS, description="shared engine instance, or dedicated (own instance and cgroup)")
COUNTER = {"type": ["integer", "null"]}
HOST_USAGE = obj({
    **{name: COUNTER for name in ("cpu_usage_ns", "throttled_ns", "nr_throttled", "memory_bytes", "memory_peak_bytes",
                                  "read_ios", "write_ios", "read_bytes", "write_bytes", "pids")},
    "oom_count": integer(0), "processes": integer(0), "rss_bytes": integer(0),
    "cpu_percent": {"type": ["number", "null"]}, "iops": {"type": ["number", "null"]}, "source": string(),
}, description="usage of the tenant's own cgroup (null: shared placement or host enforcement unavailable)")
GET_RESPONSE = obj({
    "tenant_id": string(), "placement": PLACEMENT, "explicit": boolean(), "default_placement": PLACEMENT,
    "state": enum(STATE_NAMES), "instance_pids": array(integer(1)), "host": {**HOST_USAGE, "type": ["object", "null"]},
})
PUT_REQUEST = obj({"placement": PLACEMENT})
PUT_RESPONSE = obj({"tenant_id": string(), "old_placement": PLACEMENT, "placement": PLACEMENT, "migrated": boolean(),
                    "state": enum(STATE_NAMES)})
ERRORS = {status: ERROR for status in (400, 401, 403, 404, 429, 500, 503)}


def binding(request: web.Request):
    host = getattr(services(request), "host", None)
    if host is None:
        raise ServiceError("UNAVAILABLE", "host enforcement is not running in this process")
    return host


async def get_placement(request: web.Request) -> web.Response:
    return json_response(await binding(request).get_placement(principal(request), request.match_info["tenant_id"]))


async def set_placement(request: web.Request) -> web.Response:
    body = await json_body(request)
    return json_response(await binding(request).set_placement(principal(request), request.match_info["tenant_id"],
                                                              body["placement"]))


ROUTES = [
    Route("GET", PATH, get_placement, PERMISSION["get"], "A tenant's placement and its cgroup's host usage", None,
          {200: GET_RESPONSE, **ERRORS}, tags=("tenants",)),
    Route("PUT", PATH, set_placement, PERMISSION["set"], "Move a tenant to the shared or a dedicated instance",
          PUT_REQUEST, {200: PUT_RESPONSE, **ERRORS}, tags=("tenants",)),
]
