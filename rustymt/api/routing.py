"""The route table: the server registers it and OpenAPI is generated from it.

Every route declares the permission it needs (None: public, e.g. health and
token exchange) and JSON schemas for its body and answers, so the served API
and /api/v1/openapi.json cannot drift apart.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Awaitable, Callable

Handler = Callable[..., Awaitable[Any]]


@dataclasses.dataclass(frozen=True)
class Route:
    method: str  # GET, POST, PUT, DELETE
    path: str  # aiohttp style: /api/v1/tenants/{tenant_id}
    handler: Handler
    permission: str | None  # from rustymt.service.authz.PERMISSIONS; None = no token needed
    summary: str
    request_schema: dict | None = None  # JSON Schema of the body
    responses: dict[int, dict] = dataclasses.field(default_factory=dict)  # status -> JSON Schema
    query: dict[str, dict] = dataclasses.field(default_factory=dict)  # name -> JSON Schema
    tags: tuple[str, ...] = ()
