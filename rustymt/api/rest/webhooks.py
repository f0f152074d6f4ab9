"""REST: webhook registrations and their deliveries (rustymt/events/webhooks.py)."""
from __future__ import annotations

from aiohttp import web

from rustymt.api.idempotency import create_once
from rustymt.api.request import json_response, principal, query, services
from rustymt.api.routing import Route
from rustymt.api.schema import ERROR, array, boolean, integer, obj, string
from rustymt.events.webhooks import DELIVERY_STATES, MAX_SECRET_LENGTH, MAX_URL_LENGTH, PERMISSION

TIMESTAMP = string(format="date-time", nullable=True)
REGISTER_REQUEST = obj({
    "webhook_url": string(MAX_URL_LENGTH, description="http(s) URL; private/loopback targets only with webhooks.allow_private_targets"),
    "events": array(string(64)),
    "secret": string(MAX_SECRET_LENGTH, description="HMAC-SHA256 key for X-RustyMT-Signature; at least 8 characters; never returned"),
    "tenant_id": string(64, nullable=True, description="whose events; a tenant token may only name its own (the default)"),
}, required=("webhook_url", "events", "secret"))
# The spec's registration example, with a literal public address (no DNS needed) and an event
# this example tenant never causes; route-table tests send it (tests/api/edge_support.example).
REGISTER_REQUEST["example"] = {"webhook_url": "https://192.88.99.200/webhooks/rustydb",
                               "events": ["clone.completed"], "secret": "webhook_secret_key"}
WEBHOOK = obj({"webhook_id": string(), "webhook_url": string(), "events": array(string()), "tenant_id": string(nullable=True),
               "created_at": string(format="date-time")})
DELIVERY = obj({"delivery_id": integer(), "event_id": string(), "event_type": string(), "state": string(),
                "attempts": integer(0), "last_status": integer(nullable=True), "last_error": string(nullable=True),
                "created_at": TIMESTAMP, "last_attempt_at": TIMESTAMP, "delivered_at": TIMESTAMP, "next_attempt_at": TIMESTAMP})
DELIVERIES_QUERY = {"state": string(16, description=", ".join(DELIVERY_STATES)), "limit": integer(1, 1000)}
ERRORS = {status: ERROR for status in (400, 401, 403, 404, 429)}
TAGS = ("webhooks",)


async def register_webhook(request: web.Request) -> web.Response:
    return await create_once(request, 201, services(request).webhooks.register)


async def list_webhooks(request: web.Request) -> web.Response:
    return json_response(await services(request).webhooks.list(principal(request)))


async def get_webhook(request: web.Request) -> web.Response:
    return json_response(await services(request).webhooks.get(principal(request), request.match_info["webhook_id"]))


async def delete_webhook(request: web.Request) -> web.Response:
    return json_response(await services(request).webhooks.delete(principal(request), request.match_info["webhook_id"]))


async def list_deliveries(request: web.Request) -> web.Response:
    return json_response(await services(request).webhooks.deliveries(principal(request), request.match_info["webhook_id"],
                                                                     **query(request)))


ROUTES = [
    Route("POST", "/api/v1/webhooks", register_webhook, PERMISSION["register"], "Register a webhook",
          REGISTER_REQUEST, {201: WEBHOOK, 409: ERROR, **ERRORS}, tags=TAGS),
    Route("GET", "/api/v1/webhooks", list_webhooks, PERMISSION["read"], "List webhooks (a tenant token: its own)",
          None, {200: obj({"webhooks": array(WEBHOOK)}), **ERRORS}, tags=TAGS),
    Route("GET", "/api/v1/webhooks/{webhook_id}", get_webhook, PERMISSION["read"], "One webhook", None,
          {200: WEBHOOK, **ERRORS}, tags=TAGS),
    Route("DELETE", "/api/v1/webhooks/{webhook_id}", delete_webhook, PERMISSION["delete"],
          "Delete a webhook; its pending deliveries are cancelled", None,
          {200: obj({"webhook_id": string(), "deleted": boolean(), "deleted_at": string(format="date-time")}), **ERRORS}, tags=TAGS),
    Route("GET", "/api/v1/webhooks/{webhook_id}/deliveries", list_deliveries, PERMISSION["read"],
          "Deliveries of a webhook, newest first (state=dead: the dead letters)", None,
          {200: obj({"webhook_id": string(), "deliveries": array(DELIVERY)}), **ERRORS}, query=DELIVERIES_QUERY, tags=TAGS),
]
