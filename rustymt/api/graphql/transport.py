"""/graphql over HTTP (GET, POST, batches) and over a websocket.

HTTP: POST a JSON object {query, variables, operationName} or an array of
them (at most graphql.max_batch); GET with ?query= runs queries only. Bodies
above graphql.max_request_bytes -> 413. A GraphQL-level failure is HTTP 200
with `errors`; only transport failures (bad JSON, size, method, bad token)
use 4xx. A browser GET (Accept: text/html, no query) gets the explorer.

Auth: the same Bearer JWT and X-Tenant-ID rules as REST
(rustymt.api.auth.authenticate); a bad token is 401 with
extensions.code UNAUTHENTICATED. Without a token only introspection and
__typename answer; other fields fail with UNAUTHENTICATED. Tenant-scoped
callers are rate limited with REST's buckets (one token per HTTP request).

Websocket: the graphql-transport-ws protocol (github.com/enisdenjo/graphql-ws
PROTOCOL.md), subprotocol "graphql-transport-ws":

    client ConnectionInit {"Authorization": "Bearer <jwt>"}  -> ConnectionAck
    Ping <-> Pong; Subscribe{id, payload} -> Next* then Complete, or Error
    client Complete{id} stops that operation

Close codes: 1009 message above graphql.max_request_bytes, 4400 bad message, 4401 Subscribe before ConnectionAck, 4403 bad
or missing token, 4406 subprotocol missing, 4408 no ConnectionInit in time,
4409 duplicate operation id, 4429 second ConnectionInit. A subscriber the
event bus drops for falling behind gets Error {code SUBSCRIBER_DROPPED} for
that operation; the daemon never waits for a slow socket. A socket closes
with 4403 when its token expires.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import jwt
from aiohttp import WSMsgType, web
from graphql import ExecutionResult, OperationType

from rustymt.api.auth import app_keys, authenticate, verify_token
from rustymt.api.graphql import execution
from rustymt.api.graphql.context import Context
from rustymt.api.graphql.explorer import wants_explorer
from rustymt.api.ratelimit import app_limiter, tenant_tier
from rustymt.events.bus import SubscriberDropped
from rustymt.service.errors import ServiceError

log = logging.getLogger("rustymt.api.graphql")

SUBPROTOCOL = "graphql-transport-ws"
KEY = web.AppKey("graphql", dict)


def _gql(request: web.Request) -> dict:
    return request.app[KEY]


def _json(body: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _errors(status: int, message: str, code: str, **extensions) -> web.Response:
    return _json({"errors": [execution.error_dict(message, code, **extensions)]}, status)


async def _principal(request: web.Request):
    """The verified caller, None without an Authorization header; ServiceError for a bad one."""
    if "Authorization" not in request.headers:
        return None
    return authenticate(request)


async def _rate_limit(request: web.Request, principal) -> dict[str, str]:
    """REST's per-tenant bucket; QUOTA_EXCEEDED when empty. Headers for the answer."""
    if principal is None or principal.tenant_id is None:
        return {}
    tier = tenant_tier(request.app, principal.tenant_id)
    decision = app_limiter(request.app).take(principal.tenant_id, tier.requests_per_hour, tier.burst)
    if not decision.allowed:
        error = ServiceError("QUOTA_EXCEEDED", f"rate limit of {decision.limit} requests per hour exceeded; "
                             f"retry in {decision.retry_after} s",
                             details={"quota": "api_requests_per_hour", "retry_after_seconds": decision.retry_after})
        error.headers = decision.headers()
        raise error
    return decision.headers()


def new_context(request_app: web.Application, principal) -> Context:
    state = request_app[KEY]
    return Context(services=request_app["services"], principal=principal, codec=state["codec"],
                   settings=request_app["settings"])


async def http_handler(request: web.Request) -> web.StreamResponse:
    state = _gql(request)
    if request.method == "GET" and "query" not in request.query:
        if wants_explorer(request):
            return await state["explorer"](request)
        return _errors(400, "GET /graphql needs ?query= (or Accept: text/html for the explorer)", "INVALID_REQUEST")
    try:
        payloads, batched, allowed = await _read_operations(request, state)
        principal = await _principal(request)
        headers = await _rate_limit(request, principal)
    except ServiceError as exc:
        return _json({"errors": [execution.error_dict(exc.message, exc.code, **({"details": exc.details} if exc.details else {}))]},
                     exc.http_status, getattr(exc, "headers", None))
    context = new_context(request.app, principal)
    answers = [await _answer(state, payload, allowed, context) for payload in payloads]
    return _json(answers if batched else answers[0], headers=headers)


async def _answer(state: dict, payload: Any, allowed, context: Context) -> dict:
    try:
        document, operation_name, variables, _kind = execution.prepare(state["schema"], state["settings"], payload, allowed)
    except execution.RequestRejected as exc:
        return {"errors": exc.errors}
    return await execution.run(state["schema"], document, operation_name, variables, context)


async def _read_operations(request: web.Request, state: dict):
    """([payload, ...], batched?, allowed operation kinds)."""
    limit = state["max_request_bytes"]
    if request.method == "GET":
        if len(request.query_string) > limit:
            raise ServiceError("PAYLOAD_TOO_LARGE", f"query string is larger than {limit} bytes")
        variables = request.query.get("variables")
        try:
            variables = json.loads(variables) if variables else None
        except ValueError:
            raise ServiceError("INVALID_REQUEST", "variables is not valid JSON", field="variables") from None
        payload = {"query": request.query.get("query"), "variables": variables,
                   "operationName": request.query.get("operationName")}
        return [payload], False, execution.QUERY_ONLY
    if request.method != "POST":
        raise ServiceError("METHOD_NOT_ALLOWED", "/graphql takes GET and POST")
    if request.content_length is not None and request.content_length > limit:
        raise ServiceError("PAYLOAD_TOO_LARGE", f"GraphQL request is larger than {limit} bytes", details={"max_request_bytes": limit})
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise ServiceError("PAYLOAD_TOO_LARGE", f"GraphQL request is larger than {limit} bytes", details={"max_request_bytes": limit})
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ServiceError("INVALID_REQUEST", "body is not valid JSON", field="body") from None
    if isinstance(body, list):
        if not body:
            raise ServiceError("INVALID_REQUEST", "an empty batch", field="body")
        if len(body) > state["max_batch"]:
            raise ServiceError("INVALID_REQUEST", f"a batch holds at most {state['max_batch']} operations",
                               details={"max_batch": state["max_batch"]})
        return body, True, execution.QUERY_AND_MUTATION
    return [body], False, execution.QUERY_AND_MUTATION


# ---------------------------------------------------------------- websocket


class CloseConnection(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason[:120]  # a close frame's reason is at most 123 bytes


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    state = _gql(request)
    ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), heartbeat=None, max_msg_size=state["max_request_bytes"])
    await ws.prepare(request)
    state["sockets"].add(ws)
    session = WsSession(request, ws, state)
    try:
        await session.serve()
    finally:
        await session.stop_all()
    return ws


class WsSession:
    def __init__(self, request: web.Request, ws: web.WebSocketResponse, state: dict):
        self.request = request
        self.ws = ws
        self.state = state
        self.context: Context | None = None
        self.init_seen = False
        self.operations: dict[str, asyncio.Task] = {}
        self.send_lock = asyncio.Lock()
        self.expiry_timer: asyncio.TimerHandle | None = None

    async def serve(self) -> None:
        if self.ws.ws_protocol != SUBPROTOCOL:
            await self.ws.close(code=4406, message=b"Subprotocol not acceptable")
            return
        init_timer = asyncio.get_running_loop().call_later(self.state["init_timeout"], self._init_timeout)
        try:
            async for message in self.ws:
                if message.type is not WSMsgType.TEXT:
                    if message.type in (WSMsgType.ERROR,):
                        return
                    raise CloseConnection(4400, "messages must be JSON text")
                await self.handle(message.data)
        except CloseConnection as exc:
            await self.ws.close(code=exc.code, message=exc.reason.encode())
        finally:
            init_timer.cancel()

    def _init_timeout(self) -> None:
        if not self.init_seen and not self.ws.closed:
            asyncio.ensure_future(self.ws.close(code=4408, message=b"Connection initialisation timeout"))

    async def send(self, message: dict) -> None:
        if self.ws.closed:
            return
        async with self.send_lock:
            await self.ws.send_str(json.dumps(message))

    async def handle(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            raise CloseConnection(4400, "message is not valid JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise CloseConnection(4400, "message must be an object with a type")
        kind = message["type"]
        if kind == "connection_init":
            await self.on_init(message.get("payload"))
        elif kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            await self.on_subscribe(message)
        elif kind == "complete":
            task = self.operations.pop(str(message.get("id")), None)
            if task is not None:
                task.cancel()
        else:
            raise CloseConnection(4400, f"unknown message type {kind[:40]!r}")

    async def on_init(self, payload: Any) -> None:
        if self.init_seen:
            raise CloseConnection(4429, "Too many initialisation requests")
        self.init_seen = True
        if payload is not None and not isinstance(payload, dict):
            raise CloseConnection(4400, "connection_init payload must be an object")
        header = (payload or {}).get("Authorization") or (payload or {}).get("authorization")
        if not isinstance(header, str):
            raise CloseConnection(4403, "Forbidden: connection_init needs {\"Authorization\": \"Bearer <jwt>\"}")
        scheme, _, token = header.strip().partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise ServiceError("UNAUTHENTICATED", "Authorization must be 'Bearer <token>'")
            principal = verify_token(token.strip(), app_keys(self.request.app), self.request.app["settings"])
        except ServiceError as exc:
            raise CloseConnection(4403, f"Forbidden: {exc.message}") from None
        self.context = new_context(self.request.app, principal)
        self._close_when_expired(token.strip())
        await self.send({"type": "connection_ack"})

    def _close_when_expired(self, token: str) -> None:
        """A socket lives no longer than its token: at `exp` it closes with 4403."""
        expires = jwt.decode(token, options={"verify_signature": False})["exp"]  # verified just above
        delay = max(0.0, expires - time.time())
        self.expiry_timer = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        if not self.ws.closed:
            asyncio.ensure_future(self.ws.close(code=4403, message=b"Forbidden: token expired"))

    async def on_subscribe(self, message: dict) -> None:
        if self.context is None:
            raise CloseConnection(4401, "Unauthorized")
        op_id = message.get("id")
        if not isinstance(op_id, str) or not op_id or len(op_id) > 128:
            raise CloseConnection(4400, "subscribe needs a string id")
        if op_id in self.operations:
            raise CloseConnection(4409, f"Subscriber for {op_id} already exists")
        if len(self.operations) >= self.state["max_operations"]:
            await self.send({"id": op_id, "type": "error", "payload": [execution.error_dict(
                f"this connection already runs {len(self.operations)} operations, the most allowed", "QUOTA_EXCEEDED")]})
            return
        try:
            await _rate_limit(self.request, self.context.principal)
            document, operation_name, variables, kind = execution.prepare(
                self.state["schema"], self.state["settings"], message.get("payload"), execution.EVERY_KIND)
        except execution.RequestRejected as exc:
            await self.send({"id": op_id, "type": "error", "payload": exc.errors})
            return
        except ServiceError as exc:
            await self.send({"id": op_id, "type": "error", "payload": [execution.error_dict(exc.message, exc.code)]})
            return
        # Each operation gets its own Context: loaders cache per operation, like one HTTP request.
        context = new_context(self.request.app, self.context.principal)
        if kind is OperationType.SUBSCRIPTION:
            # Open the stream (authz + bus subscription) before reading the next message,
            # so an event published after this Subscribe was processed is never missed.
            stream = await execution.open_stream(self.state["schema"], document, operation_name, variables, context)
            if isinstance(stream, ExecutionResult):
                await self.send({"id": op_id, "type": "error", "payload": execution.result_dict(stream).get("errors", [])})
                return
            runner = self.pump(op_id, stream)
        else:
            runner = self.single(op_id, document, operation_name, variables, context)
        self.operations[op_id] = asyncio.ensure_future(runner)

    async def single(self, op_id: str, document, operation_name, variables, context) -> None:
        try:
            body = await execution.run(self.state["schema"], document, operation_name, variables, context)
            await self.send({"id": op_id, "type": "next", "payload": body})
            await self.send({"id": op_id, "type": "complete"})
        finally:
            self.operations.pop(op_id, None)

    async def pump(self, op_id: str, stream) -> None:
        try:
            async for result in stream:
                await self.send({"id": op_id, "type": "next", "payload": execution.result_dict(result)})
            await self.send({"id": op_id, "type": "complete"})
        except SubscriberDropped:
            await self.send({"id": op_id, "type": "error", "payload": [execution.error_dict(
                "this subscription fell behind the event stream and was dropped; subscribe again",
                "SUBSCRIBER_DROPPED")]})
        except ServiceError as exc:  # a periodic sample refused (tenant gone, scope): the operation ends
            await self.send({"id": op_id, "type": "error", "payload": [execution.error_dict(exc.message, exc.code)]})
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - reported to the client without internals, logged here
            log.exception("subscription %s failed", op_id)
            await self.send({"id": op_id, "type": "error", "payload": [execution.error_dict(
                "internal error; the server log has the details", "INTERNAL_ERROR")]})
        finally:
            self.operations.pop(op_id, None)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # noqa: BLE001 - closing a finished stream must not mask the outcome
                    pass

    async def stop_all(self) -> None:
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
        tasks = list(self.operations.values())
        self.operations.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
