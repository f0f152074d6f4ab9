"""What a REST handler reads from a request: principal, services, JSON body, query.

The body and query are checked against the handler's Route (request_schema,
query), the same schemas /api/v1/openapi.json publishes.
"""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from rustymt.api import encoding
from rustymt.api.routing import Route
from rustymt.api.schema import parse_query_value, validate
from rustymt.service.authz import Principal
from rustymt.service.errors import ServiceError


def route_of(request: web.Request) -> Route:
    return request.app["route_by_handler"][request.match_info.handler]


def principal(request: web.Request) -> Principal:
    return request["principal"]


def services(request: web.Request):
    return request.app["services"]


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The validated body; an empty body counts as {} (then required fields are reported)."""
    route = route_of(request)
    raw = await request.read()  # over client_max_size: HTTPRequestEntityTooLarge -> 413
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise ServiceError("INVALID_REQUEST", f"body is not valid JSON: {exc}", field="body") from None
        except RecursionError:  # "[[[[..." nested deeper than the parser's stack
            raise ServiceError("INVALID_REQUEST", "body is nested too deeply", field="body") from None
    schema = route.request_schema or {"type": "object", "properties": {}, "additionalProperties": False}
    return validate(schema, data)


def query(request: web.Request) -> dict[str, Any]:
    """Declared query parameters, typed and validated; undeclared ones are refused."""
    declared = route_of(request).query
    values: dict[str, Any] = {}
    for name in request.query:
        if name not in declared:
            raise ServiceError("INVALID_REQUEST", f"{name}: unknown query parameter", field=name)
        items = request.query.getall(name)
        if len(items) > 1:
            raise ServiceError("INVALID_REQUEST", f"{name}: given more than once", field=name)
        values[name] = parse_query_value(declared[name], items[0], name)
    for name, schema in declared.items():
        if schema.get("x-required") and name not in values:
            raise ServiceError("INVALID_REQUEST", f"{name}: query parameter is required", field=name)
    return values


def json_response(body: Any, status: int = 200) -> web.Response:
    return encoding.response(body, status=status)  # orjson when installed (rustymt.api.encoding)
