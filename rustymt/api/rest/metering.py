"""REST: metering records, monthly billing and the Prometheus scrape."""
from __future__ import annotations

from aiohttp import web

from rustymt.api.request import json_body, json_response, principal, query, services
from rustymt.api.routing import Route
from rustymt.api.schema import ERROR, array, integer, number, obj, string
from rustymt.metering.service import PERMISSION
from rustymt.metering.store import VALUE_FIELDS
from rustymt.service import authz

MONEY = string(description='decimal string, e.g. "123.45"')
RECORD = obj({"tenant_id": string(), "period_start": string(format="date-time"), "period_end": string(format="date-time"),
              "resolution": string(description="raw, 1m or 1h"), "tier": string(),
              **{name: number() for name in VALUE_FIELDS}})
RECORDS_RESPONSE = obj({"tenant_id": string(), "records": array(RECORD), "truncated": {"type": "boolean"},
                        "next_start": string(format="date-time")}, required=("tenant_id", "records"))
RANGE_QUERY = {
    "start": string(64, description="ISO-8601 date or date-time with offset (inclusive); default: end - 1 h"),
    "end": string(64, description="ISO-8601 date or date-time with offset (exclusive; default: now); "
                                  "at most metering.max_range_days after start"),
}
LINE_ITEM = obj({"description": string(), "tier": string(), "quantity": string(), "unit": string(), "unit_price": MONEY,
                 "amount": MONEY})
CREDIT = obj({"description": string(), "uptime_percent": string(), "credit_percent": string(), "amount": MONEY})
BILLING_RESPONSE = obj({"tenant_id": string(), "period": string(), "currency": string(), "line_items": array(LINE_ITEM),
                        "credits": array(CREDIT), "subtotal": MONEY, "total": MONEY,
                        "uptime_percent": string(nullable=True)})
BILLING_QUERY = {"period": string(7, description="YYYY-MM; default: the current month")}
ERRORS = {status: ERROR for status in (400, 401, 403, 404, 429)}
MAINTENANCE_REQUEST = obj({"start": string(64, description="ISO-8601 with offset"), "end": string(64, description="ISO-8601 with offset; "
                                                                                                        "at most 7 days after start"),
                           "reason": string(1024)})
MAINTENANCE_REQUEST["example"] = {"start": "2030-01-01T00:00:00Z", "end": "2030-01-01T02:00:00Z", "reason": "storage migration"}
WINDOW = obj({"window_id": integer(), "start": string(format="date-time"), "end": string(format="date-time"), "reason": string(),
              "declared_at": string(format="date-time")})


async def metering_records(request: web.Request) -> web.Response:
    args = query(request)
    return json_response(await services(request).metering.records(principal(request), request.match_info["tenant_id"],
                                                                    start=args.get("start"), end=args.get("end")))


async def billing_report(request: web.Request) -> web.Response:
    return json_response(await services(request).metering.billing(principal(request), request.match_info["tenant_id"],
                                                                   period=query(request).get("period")))


async def declare_maintenance(request: web.Request) -> web.Response:
    body = await json_body(request)
    return json_response(await services(request).metering.declare_maintenance(principal(request), request.match_info["tenant_id"],
                                                                              **body), status=201)


async def list_maintenance(request: web.Request) -> web.Response:
    return json_response(await services(request).metering.maintenance(principal(request), request.match_info["tenant_id"]))


async def prometheus_metrics(request: web.Request) -> web.Response:
    caller = principal(request)
    authz.require(caller, "resources:read")
    body = services(request).observability.metrics.render(caller.tenant_id)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


ROUTES = [
    Route("GET", "/api/v1/tenants/{tenant_id}/metering", metering_records, PERMISSION["records"],
          "Metering records of a tenant in [start, end)", None, {200: RECORDS_RESPONSE, **ERRORS}, query=RANGE_QUERY,
          tags=("metering",)),
    Route("GET", "/api/v1/tenants/{tenant_id}/billing", billing_report, PERMISSION["billing"],
          "A tenant's bill for one month", None, {200: BILLING_RESPONSE, **ERRORS}, query=BILLING_QUERY, tags=("metering",)),
    Route("POST", "/api/v1/tenants/{tenant_id}/maintenance", declare_maintenance, PERMISSION["declare_maintenance"],
          "Declare a maintenance window (excluded from the tenant's uptime)", MAINTENANCE_REQUEST,
          {201: obj({"tenant_id": string(), **WINDOW["properties"]}), **ERRORS}, tags=("metering",)),
    Route("GET", "/api/v1/tenants/{tenant_id}/maintenance", list_maintenance, PERMISSION["maintenance"],
          "Declared maintenance windows of a tenant, latest first", None,
          {200: obj({"tenant_id": string(), "windows": array(WINDOW)}), **ERRORS}, tags=("metering",)),
    Route("GET", "/metrics", prometheus_metrics, "resources:read", "Prometheus text exposition (tenant tokens: own series)",
          None, {200: {"type": "string"}, **ERRORS}, tags=("metering",)),
]
