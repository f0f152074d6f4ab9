"""REST: the spec's Tenant Management and Resource Management endpoints,
plus terminate (DELETE) and priority, which the spec has only in GraphQL."""
from __future__ import annotations

from aiohttp import web

from rustymt.api import encoding
from rustymt.api.appstate import per_app
from rustymt.api.idempotency import idempotent
from rustymt.api.request import json_body, json_response, principal, query, services
from rustymt.api.routing import Route
from rustymt.api.schema import (ERROR, SOURCE_NOTE, TIMESTAMP, array, boolean, enum, integer, number, obj, string,
                                string_map)
from rustymt.model.tenants import STATE_NAMES
from rustymt.model.tiers import PRIORITY_NAMES, TIER_NAMES
from rustymt.service.tenants import MAX_PAGE_SIZE, PERMISSION, QUOTA_LIMITS

TIER = enum(TIER_NAMES, description="service tier")
STATE = enum(STATE_NAMES, description="tenant state")
PRIORITY = enum(PRIORITY_NAMES, description="tenant priority")
TENANT_ID = "/api/v1/tenants/{tenant_id}"

# ---- schemas (the spec's examples, field for field)

CREATE_REQUEST = obj({
    "tenant_name": string(63, description="letters, digits, underscore; starts with a letter"),
    "admin_user": string(256),
    "admin_password": string(1024, description="at least 8 characters; stored only as a scrypt hash"),
    "service_tier": TIER,
    "organization": string(256, nullable=True),
    "tags": string_map("free-form string labels"),
    "placement": enum(("shared", "dedicated"), description="engine instance: shared, or dedicated (own instance and cgroup); "
                                                         "default from the tier (gold, platinum: dedicated)"),
}, required=("tenant_name", "admin_user", "admin_password", "service_tier"))
CREATE_RESPONSE = obj({
    "tenant_id": string(), "pdb_id": string(), "status": STATE, "created_at": TIMESTAMP,
    "resources": obj({"cpu_cores": number(), "memory_mb": integer(), "storage_gb": integer(),
                      "network_port": integer(description="the tenant's PostgreSQL port")}),
})
LIST_RESPONSE = obj({
    "tenants": array(obj({"tenant_id": string(), "tenant_name": string(), "service_tier": TIER, "state": STATE,
                          "created_at": TIMESTAMP})),
    "total": integer(0), "page": integer(1), "page_size": integer(1, MAX_PAGE_SIZE),
})
QUOTA_SHORT = obj({name: integer(1) for name in ("cpu_percent", "memory_mb", "storage_gb", "iops", "max_connections")})
QUOTA_FULL = obj({name: integer(1) for name in QUOTA_LIMITS})
STORAGE_BYTES = integer(0, description="datafile bytes (WAL included) of the tenant's live PDBs; storage_gb rounds it")
USAGE = obj({"cpu_percent": number(), "memory_mb": integer(0), "storage_gb": integer(0), "iops": integer(0),
             "active_connections": integer(0), "storage_bytes": STORAGE_BYTES, "source": SOURCE_NOTE},
            required=("cpu_percent", "memory_mb", "storage_gb", "iops", "active_connections"))
GET_RESPONSE = obj({
    "tenant_id": string(), "tenant_name": string(), "service_tier": TIER, "state": STATE, "priority": PRIORITY,
    "quota": QUOTA_SHORT, "usage": USAGE,
    "sla": obj({"uptime_percent": number(), "avg_response_time_ms": number(),
                "violations": array(obj({}, extra=True)), "source": SOURCE_NOTE,
                "time_breakdown": obj({
                    "executing_seconds": number(), "queued_seconds": number(),
                    "throttled_seconds": number(),
                    "latency_cause": string(description="why the latest slow window was slow: none, platform (queued "
                                                          "behind other tenants) or tenant_cap (its own limits)"),
                }, required=("executing_seconds", "queued_seconds", "throttled_seconds"),
                    description="statement time split: executing, queued behind other tenants (the platform's), "
                                "throttled at the tenant's own cap (its own doing; never an SLA violation)")},
               required=("uptime_percent", "avg_response_time_ms", "violations")),
    "created_at": TIMESTAMP, "pdb_id": string(nullable=True), "network_port": integer(nullable=True),
    "warnings": {**array(obj({"code": enum(["SLA_VIOLATION"]), "message": string(), "details": obj({}, extra=True)})),
                 "description": "the spec's SLA_VIOLATION (200, a warning) while the tenant's SLA is violated; else []"},
})
SUSPEND_REQUEST = obj({"reason": string(1024), "notify_admin": boolean("tell the tenant admin (event data)")},
                      required=("reason",))
SUSPEND_RESPONSE = obj({"tenant_id": string(), "state": STATE, "suspended_at": TIMESTAMP, "reason": string()})
RESUME_RESPONSE = obj({"tenant_id": string(), "state": STATE, "resumed_at": TIMESTAMP})
TIER_REQUEST = obj({"new_tier": TIER, "effective_date": string(64, description='"immediate" (default) or an ISO-8601 date / date-time with offset')},
                   required=("new_tier",))
TIER_RESPONSE = obj({
    "tenant_id": string(), "old_tier": TIER, "new_tier": TIER,
    "upgraded_at": string(description="when the change took (or, if scheduled, will take) effect", format="date-time"),
    "new_quota": obj({"cpu_cores": number(), "memory_mb": integer(), "storage_gb": integer()}),
    "scheduled": boolean("present and true when the change is pending (HTTP 202)"),
}, required=("tenant_id", "old_tier", "new_tier", "upgraded_at", "new_quota"))
RESOURCES_RESPONSE = obj({
    "tenant_id": string(),
    "current_usage": obj({"cpu_percent": number(), "memory_mb": integer(0), "storage_gb": integer(0), "iops": integer(0),
                          "network_mbps": integer(0), "active_connections": integer(0), "storage_bytes": STORAGE_BYTES,
                          "source": SOURCE_NOTE},
                         required=("cpu_percent", "memory_mb", "storage_gb", "iops", "network_mbps", "active_connections")),
    "quota": QUOTA_FULL,
    "utilization": obj({name: string(description='percent of quota, e.g. "22.6%"') for name in ("cpu", "memory", "storage", "connections")}),
})
QUOTA_REQUEST = obj({name: integer(1, limit) for name, limit in QUOTA_LIMITS.items()}, required=())
QUOTA_RESPONSE = obj({"tenant_id": string(), "quota_updated": boolean(), "effective_immediately": boolean()})
PRIORITY_REQUEST = obj({"priority": PRIORITY})
PRIORITY_RESPONSE = obj({"tenant_id": string(), "old_priority": PRIORITY, "priority": PRIORITY,
                         "cpu_shares": integer(1, description="scheduler weight: tier shares x priority factor"),
                         "updated_at": TIMESTAMP})
TERMINATE_RESPONSE = obj({"tenant_id": string(), "state": STATE, "terminated_at": TIMESTAMP})


def answers(ok_status: int, ok_schema: dict, *errors: int) -> dict[int, dict]:
    return {ok_status: ok_schema, **{status: ERROR for status in (400, 401, 403, 429, *errors)}}


# ---- handlers


async def create_tenant(request: web.Request) -> web.Response:
    body = await json_body(request)
    placement = body.pop("placement", None)
    host = getattr(services(request), "host", None)  # rustymt.service.hostbinding, set by the daemon

    async def run():
        if host is None:
            return 201, await services(request).tenants.create(principal(request), **body)
        with host.expecting_placement(body.get("tenant_name"), placement):
            created = await services(request).tenants.create(principal(request), **body)
            await host.settle_placement(created["tenant_id"])
        return 201, created

    return await idempotent(request, run)


# TenantService.list hands out one kept page per question until the next catalog commit: its
# encoding is kept beside it, per caller scope and query string (a client picks those: bounded).
LIST_ENCODINGS_KEPT = 256
_list_encodings = per_app(lambda app: encoding.KeptEncodings(limit=LIST_ENCODINGS_KEPT))


async def list_tenants(request: web.Request) -> web.Response:
    caller = principal(request)
    body = await services(request).tenants.list(caller, **query(request))
    return encoding.encoded_response(_list_encodings(request.app).encode((caller.tenant_id, request.query_string), body))


# TenantService.get hands out one kept body per tenant until something in it changes: its
# encoding is kept beside it (one per tenant that exists: get() refuses unknown ids first).
_get_encodings = per_app(lambda app: encoding.KeptEncodings())


async def get_tenant(request: web.Request) -> web.Response:
    tenant_id = request.match_info["tenant_id"]
    body = await services(request).tenants.get(principal(request), tenant_id)
    return encoding.encoded_response(_get_encodings(request.app).encode(tenant_id, body))


async def suspend_tenant(request: web.Request) -> web.Response:
    body = await json_body(request)
    return json_response(await services(request).tenants.suspend(principal(request), request.match_info["tenant_id"], **body))


async def resume_tenant(request: web.Request) -> web.Response:
    await json_body(request)  # none expected; anything but {} is refused
    return json_response(await services(request).tenants.resume(principal(request), request.match_info["tenant_id"]))


async def change_tier(request: web.Request) -> web.Response:
    body = await json_body(request)
    result = await services(request).tenants.change_tier(principal(request), request.match_info["tenant_id"], **body)
    host = getattr(services(request), "host", None)  # rustymt.service.hostbinding: a placement change migrates now
    if host is not None and not result.get("scheduled"):
        await host.settle_tier(request.match_info["tenant_id"])
    return json_response(result, status=202 if result.get("scheduled") else 200)


async def set_priority(request: web.Request) -> web.Response:
    body = await json_body(request)
    return json_response(await services(request).tenants.set_priority(principal(request), request.match_info["tenant_id"], **body))


async def terminate_tenant(request: web.Request) -> web.Response:
    return json_response(await services(request).tenants.terminate(principal(request), request.match_info["tenant_id"]))


async def get_resources(request: web.Request) -> web.Response:
    return json_response(await services(request).tenants.resources(principal(request), request.match_info["tenant_id"]))


async def update_quota(request: web.Request) -> web.Response:
    body = await json_body(request)
    return json_response(await services(request).tenants.update_quota(principal(request), request.match_info["tenant_id"], body))


TAGS = ("tenants",)
ROUTES = [
    Route("POST", "/api/v1/tenants", create_tenant, PERMISSION["create"], "Create a tenant (and its PDB row and port)",
          CREATE_REQUEST, answers(201, CREATE_RESPONSE, 409, 507), tags=TAGS),
    Route("GET", "/api/v1/tenants", list_tenants, PERMISSION["list"], "List tenants, paginated and filtered",
          None, answers(200, LIST_RESPONSE),
          query={"page": integer(1, description="1-based page number (default 1)"),
                 "page_size": integer(1, MAX_PAGE_SIZE, description="tenants per page (default 20)"),
                 "tier": TIER, "state": STATE}, tags=TAGS),
    Route("GET", TENANT_ID, get_tenant, PERMISSION["get"], "Tenant details: quota, usage, SLA",
          None, answers(200, GET_RESPONSE, 404), tags=TAGS),
    Route("DELETE", TENANT_ID, terminate_tenant, PERMISSION["terminate"], "Terminate a tenant (final; frees its port)",
          None, answers(200, TERMINATE_RESPONSE, 404), tags=TAGS),
    Route("POST", TENANT_ID + "/suspend", suspend_tenant, PERMISSION["suspend"], "Suspend a tenant",
          SUSPEND_REQUEST, answers(200, SUSPEND_RESPONSE, 404), tags=TAGS),
    Route("POST", TENANT_ID + "/resume", resume_tenant, PERMISSION["resume"], "Resume a suspended tenant",
          obj({}), answers(200, RESUME_RESPONSE, 404), tags=TAGS),
    Route("PUT", TENANT_ID + "/tier", change_tier, PERMISSION["change_tier"],
          "Change service tier now (200) or at a date (202, applied by the daemon when due)",
          TIER_REQUEST, {**answers(200, TIER_RESPONSE, 404, 507), 202: TIER_RESPONSE}, tags=TAGS),
    Route("PUT", TENANT_ID + "/priority", set_priority, PERMISSION["set_priority"], "Set the tenant's priority",
          PRIORITY_REQUEST, answers(200, PRIORITY_RESPONSE, 404), tags=TAGS),
    Route("GET", TENANT_ID + "/resources", get_resources, PERMISSION["resources"], "Resource usage against quota",
          None, answers(200, RESOURCES_RESPONSE, 404), tags=("resources",)),
    Route("PUT", TENANT_ID + "/quota", update_quota, PERMISSION["update_quota"],
          "Update some fields of the quota vector", QUOTA_REQUEST, answers(200, QUOTA_RESPONSE, 404, 507),
          tags=("resources",)),
]
