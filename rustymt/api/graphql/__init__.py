"""GraphQL at /graphql: the spec's schema over the service layer REST uses.

    from rustymt.api.graphql import setup_graphql
    setup_graphql(app)   # after create_app(); needs app["services"], app["settings"]

Modules: schema.graphql (the SDL), schema (binding), resolvers and
subscriptions (service calls), context (per-operation batching), paging and
cursors (Relay connections), limits (depth/cost/aliases), execution (one
operation end to end), transport (HTTP + graphql-transport-ws), explorer
(GraphiQL page). docs/graphql.md is the operator's guide.
"""
from __future__ import annotations

import weakref

from aiohttp import WSCloseCode, web

from rustymt.api.graphql.cursors import CursorCodec, load_or_create_cursor_key
from rustymt.api.graphql.execution import Settings
from rustymt.api.graphql.explorer import setup_explorer
from rustymt.api.graphql.limits import Limits
from rustymt.api.graphql.schema import executable_schema
from rustymt.api.graphql.transport import KEY, http_handler, websocket_handler

PATH = "/graphql"


async def graphql_endpoint(request: web.Request) -> web.StreamResponse:
    if request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket":
        return await websocket_handler(request)
    return await http_handler(request)


async def close_sockets(app: web.Application) -> None:
    """On daemon stop: end every websocket with 1001 (going away) instead of waiting on it."""
    for ws in list(app[KEY]["sockets"]):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


def setup_graphql(app: web.Application) -> None:
    settings = app["settings"]
    options = settings.graphql
    app[KEY] = {
        "schema": executable_schema(),
        "settings": Settings(Limits(options.max_depth, options.max_cost, options.max_aliases), options.max_tokens),
        "codec": CursorCodec(load_or_create_cursor_key(settings.server.data_dir)),
        "max_request_bytes": options.max_request_bytes,
        "max_batch": options.max_batch,
        "init_timeout": options.connection_init_timeout_seconds,
        "max_operations": options.max_operations_per_socket,
        "explorer": setup_explorer(app, settings),
        "sockets": weakref.WeakSet(),
    }
    app.on_shutdown.append(close_sockets)
    app.router.add_route("GET", PATH, graphql_endpoint)
    app.router.add_route("POST", PATH, graphql_endpoint)
