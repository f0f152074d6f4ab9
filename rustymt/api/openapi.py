"""OpenAPI 3.1 description of the REST API, generated from the route table.

The document is built from the very Route objects the server registered
(app["route_by_handler"]), so a route cannot be served without being
described, nor described without being served. Schemas are the routes' own
JSON Schemas (OpenAPI 3.1 uses JSON Schema 2020-12 as is). Added here, from
what every route shares:

* path parameters from the path template ({tenant_id}; an aiohttp regex
  suffix such as {name:\\d+} is dropped);
* the bearer-JWT security scheme on every route that declares a permission,
  with the permission named in `x-permission` and the description;
* the error answers the edge adds to every route: 401 and 403 for protected
  routes, 429 (with Retry-After) for every rate-limited route, 400 for routes
  with a body; all as the spec's error shape (components/schemas/Error);
* the X-RateLimit-* headers on every answer of a rate-limited route: every
  /api/v1 route and every protected one (rustymt.api.ratelimit).

Served at GET /api/v1/openapi.json without a token (rustymt.api.rest.openapi_routes).
"""
from __future__ import annotations

import re
from typing import Iterable

from aiohttp import web

from rustymt import __version__
from rustymt.api.appstate import per_app
from rustymt.api.routing import Route
from rustymt.service.errors import HTTP_STATUS

OPENAPI_VERSION = "3.1.0"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
PATH_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*(?:\{[^{}]*\}[^{}]*)*)?\}")

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": sorted(HTTP_STATUS)},
                "message": {"type": "string"},
                "details": {},
            },
        },
    },
}

RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": ("integer", "the caller's limit in requests per hour: the tenant's tier for tenant-scoped "
                                     "tokens, api.operator_* for operator tokens, api.anonymous_* per client address "
                                     "without a valid token"),
    "X-RateLimit-Remaining": ("integer", "requests left in the caller's burst bucket"),
    "X-RateLimit-Reset": ("integer", "Unix time at which the bucket is full again"),
    "Retry-After": ("integer", "seconds until a request can pass (429 only)"),
}

# The answers the edge itself gives, beyond what a route declares.
EDGE_ERRORS = {
    400: "invalid request: malformed JSON, wrong types, unknown or missing fields (INVALID_REQUEST)",
    401: "missing, malformed, expired or forged bearer token (UNAUTHENTICATED)",
    403: "lacking the route's permission (PERMISSION_DENIED) or another tenant's resource (ISOLATION_VIOLATION)",
    429: "the caller's API rate limit is exhausted (QUOTA_EXCEEDED); see Retry-After",
}


def openapi_path(path: str) -> str:
    """aiohttp's /x/{id:\\d+} -> OpenAPI's /x/{id}."""
    return PATH_PARAMETER.sub(lambda match: "{" + match.group(1) + "}", path)


def _header_ref(name: str) -> dict:
    return {"$ref": f"#/components/headers/{name}"}


def _response(description: str, schema: dict | None, limited: bool, error: bool = False) -> dict:
    answer: dict = {"description": description}
    if schema is not None:
        answer["content"] = {"application/json": {"schema": schema}}
    if limited:
        names = list(RATE_LIMIT_HEADERS) if error else [name for name in RATE_LIMIT_HEADERS if name != "Retry-After"]
        answer["headers"] = {name: _header_ref(name) for name in names}
    return answer


def _description(status: int, schema: dict | None) -> str:
    if schema and schema.get("description"):
        return schema["description"]
    return EDGE_ERRORS.get(status, "error") if status >= 400 else "success"


def _operation_id(route: Route, taken: set[str]) -> str:
    base = getattr(route.handler, "__name__", "") or "operation"
    if base in taken or base == "<lambda>":
        slug = re.sub(r"[^A-Za-z0-9]+", "_", openapi_path(route.path)).strip("_")
        base = f"{route.method.lower()}_{slug}"
    candidate, counter = base, 2
    while candidate in taken:
        candidate, counter = f"{base}_{counter}", counter + 1
    taken.add(candidate)
    return candidate


def _operation(route: Route, taken: set[str]) -> dict:
    protected = route.permission is not None
    limited = protected or route.path.startswith("/api/v1/")  # answers carry X-RateLimit-*, may be 429
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in PATH_PARAMETER.findall(route.path)
    ]
    parameters += [
        {"name": name, "in": "query", "required": bool(schema.get("x-required")), "schema": schema}
        for name, schema in route.query.items()
    ]
    if protected:
        parameters.append({
            "name": "X-Tenant-ID", "in": "header", "required": False, "schema": {"type": "string"},
            "description": "optional; when sent with a tenant-scoped token it must name the token's tenant",
        })
    responses = {
        str(status): _response(_description(status, schema), schema, limited, error=status >= 400)
        for status, schema in sorted(route.responses.items())
    }
    error_ref = {"$ref": "#/components/schemas/Error"}
    edge = dict(EDGE_ERRORS) if protected else {429: EDGE_ERRORS[429]} if limited else {}
    if route.request_schema is not None:
        edge[400] = EDGE_ERRORS[400]
    for status, description in edge.items():
        responses.setdefault(str(status), _response(description, error_ref, limited, error=True))
    operation = {
        "operationId": _operation_id(route, taken),
        "summary": route.summary,
        "tags": list(route.tags),
        "parameters": parameters,
        "responses": responses,
    }
    if route.request_schema is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": route.request_schema}},
        }
    if protected:
        operation["security"] = [{"bearerAuth": []}]
        operation["x-permission"] = route.permission
        operation["description"] = f"Requires the `{route.permission}` permission."
    else:
        operation["security"] = []
    return operation


def build_document(routes: Iterable[Route], title: str = "rustymt REST API") -> dict:
    """The OpenAPI 3.1 document for `routes` (a plain JSON-able dict)."""
    paths: dict[str, dict] = {}
    taken: set[str] = set()
    for route in sorted(routes, key=lambda r: (openapi_path(r.path), r.method)):
        paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = _operation(route, taken)
    return {
        "openapi": OPENAPI_VERSION,
        "jsonSchemaDialect": JSON_SCHEMA_DIALECT,
        "info": {
            "title": title,
            "version": __version__,
            "description": "Multitenant database host: tenants, pluggable databases, quotas. "
                           "Generated from the server's route table.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "JWT signed with a pinned algorithm (EdDSA by default); "
                                   "get one from `rustymt token create` or POST /api/v1/auth/token",
                },
            },
            "headers": {
                name: {"description": description, "schema": {"type": kind}}
                for name, (kind, description) in RATE_LIMIT_HEADERS.items()
            },
        },
    }


# Built once per application, on first request: the route table is fixed by then.
_document = per_app(lambda app: build_document(app["route_by_handler"].values()))


async def serve_openapi(request: web.Request) -> web.Response:
    return web.json_response(_document(request.app))

