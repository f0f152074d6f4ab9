"""Liveness and readiness probes (no token needed)."""
from __future__ import annotations

from aiohttp import web

from rustymt.api.request import json_response, services
from rustymt.api.routing import Route
from rustymt.api.schema import ERROR, enum, obj
from rustymt.service.errors import ServiceError


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving HTTP."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The catalog answers: the API can do work."""
    if not await services(request).ready():
        raise ServiceError("UNAVAILABLE", "the catalog is not available")
    return json_response({"status": "ready"})


ROUTES = [
    Route("GET", "/healthz", healthz, None, "Liveness probe", None, {200: obj({"status": enum(["ok"])})}, tags=("health",)),
    Route("GET", "/readyz", readyz, None, "Readiness probe", None,
          {200: obj({"status": enum(["ready"])}), 503: ERROR}, tags=("health",)),
]
