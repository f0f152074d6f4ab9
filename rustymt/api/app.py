"""The aiohttp application: route table, middlewares, error rendering.

One middleware of rustymt's own (rustymt.api.middleware), doing in order:

    rate limit (rustymt.api.ratelimit) -> error rendering (here) -> auth (rustymt.api.auth) -> handler

The rate limiter picks the caller's bucket with rustymt.api.auth.authenticated
(the token verified once per request) and adds X-RateLimit-* to every
/api/v1 answer, which by then is always a response: errors are rendered inside it.

Every failure leaves the server as the spec's one error shape,

    {"error": {"code": "...", "message": "...", "details": ...}}

with the status of rustymt.service.errors.HTTP_STATUS: a ServiceError as it
is, aiohttp's own refusals (unknown route, wrong method, body too large)
mapped to NOT_FOUND / METHOD_NOT_ALLOWED / PAYLOAD_TOO_LARGE, and anything
unexpected as a 500 INTERNAL_ERROR that carries a request id and nothing of
the exception (the traceback goes to the log under the same id).
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
import secrets
import warnings
from typing import Any, Iterable

from aiohttp import web

from rustymt.api import encoding
from rustymt.api.routing import Route
from rustymt.service.errors import ServiceError

log = logging.getLogger("rustymt.api")

# aiohttp's own HTTP errors -> our codes.
HTTP_ERROR_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}


def error_response(error: ServiceError, headers: dict[str, str] | None = None) -> web.Response:
    return encoding.response({"error": error.to_dict()}, status=error.http_status, headers=headers)


def payload_too_large(request: web.Request) -> web.Response | None:
    """The refusal of a body declared larger than server.max_body_bytes, before it is read."""
    limit = request.app["settings"].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return error_response(ServiceError("PAYLOAD_TOO_LARGE", f"request body is larger than {limit} bytes",
                                           details={"max_body_bytes": limit}))
    return None


def failure_response(request: web.Request, exc: Exception) -> web.Response:
    """The spec's error answer for what a handler (or authentication) raised.

    A web.HTTPException below 400 (a redirect) is not a failure: re-raised."""
    if isinstance(exc, ServiceError):
        return error_response(exc, headers=getattr(exc, "headers", None))
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        limit = request.app["settings"].server.max_body_bytes
        code = HTTP_ERROR_CODES.get(exc.status, "INVALID_REQUEST" if exc.status < 500 else "INTERNAL_ERROR")
        message = {
            "NOT_FOUND": f"no such endpoint: {request.method} {request.path}",
            "METHOD_NOT_ALLOWED": f"{request.method} is not allowed on {request.path}",
            "PAYLOAD_TOO_LARGE": f"request body is larger than {limit} bytes",
        }.get(code, exc.reason)
        details = {"allowed_methods": sorted(exc.allowed_methods)} if isinstance(exc, web.HTTPMethodNotAllowed) else None
        # Keep headers others put on the exception (Allow, X-RateLimit-*), not its body's.
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return error_response(ServiceError(code, message, details=details), headers=headers)
    request_id = secrets.token_hex(8)
    log.error("internal error handling %s %s (request_id=%s)", request.method, request.path, request_id, exc_info=exc)
    return error_response(ServiceError("INTERNAL_ERROR", "internal error; the server log has the details",
                                       details={"request_id": request_id}))


def collect_routes(package: str = "rustymt.api.rest") -> list[Route]:
    """Every `ROUTES` list of the modules in `package`, in module-name order.

    A new route module is picked up by being dropped into the package.
    """
    routes: list[Route] = []
    root = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{package}.{info.name}")
        routes.extend(getattr(module, "ROUTES", ()))
    return routes


def _middlewares() -> list:
    from rustymt.api.middleware import api_middleware

    # Rate limit, error rendering and authentication in one layer (rustymt.api.middleware).
    return [api_middleware]


def _registration_order(route: Route) -> tuple[bool, str]:
    """Fixed paths before templated ones, then by path: aiohttp tries the resources under
    one path prefix in registration order (a regex each), so the hot /api/v1/tenants and
    /api/v1/tenants/{tenant_id} are found first, and one path's methods share one resource.
    No two of our templates match the same URL, and a fixed path that a template also
    matches (/api/v1/pdbs/plug) falls through to it on another method, so the order
    changes which resource is tried first, never which route answers."""
    return "{" in route.path, route.path


def create_app(services: Any, settings: Any, routes: Iterable[Route] | None = None) -> web.Application:
    routes = list(collect_routes() if routes is None else routes)
    app = web.Application(client_max_size=settings.server.max_body_bytes, middlewares=_middlewares())
    with warnings.catch_warnings():
        # API_CONTRACTS.md fixes these string keys (middlewares and GraphQL read them).
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["services"] = services
        app["settings"] = settings
        app["routes"] = routes
        app["route_by_handler"] = {}
        app["tier_of"] = services.tenants.tier_of
    seen: set[tuple[str, str]] = set()
    for route in sorted(routes, key=_registration_order):
        key = (route.method, route.path)
        if key in seen or route.handler in app["route_by_handler"]:
            raise ValueError(f"route declared twice: {route.method} {route.path}")
        seen.add(key)
        app["route_by_handler"][route.handler] = route
        if route.method == "GET":  # HEAD too, as HTTP expects of every GET (headers, no body)
            app.router.add_get(route.path, route.handler, allow_head=True)
        else:
            app.router.add_route(route.method, route.path, route.handler)
    from rustymt.api.graphql import setup_graphql  # /graphql (HTTP, websocket, explorer)
    setup_graphql(app)
    return app
