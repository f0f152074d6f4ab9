"""GET /api/v1/openapi.json: the API's description, generated from the route table."""
from __future__ import annotations

from rustymt.api.openapi import serve_openapi
from rustymt.api.routing import Route
from rustymt.api.schema import obj, string

ROUTES: list[Route] = [
    Route(
        "GET", "/api/v1/openapi.json", serve_openapi, None,
        "This API's OpenAPI 3.1 description, generated from the route table the server registered",
        responses={200: obj({"openapi": string(), "info": {"type": "object"}, "paths": {"type": "object"}},
                            extra=True)},
        tags=("meta",),
    ),
]
