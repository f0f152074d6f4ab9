"""Idempotency-Key on creating POSTs (tenants, PDBs, clones, plugs, webhooks, ...).

The first answer to a key (status and body, refusals below 500 included) is
kept in the catalog per principal scope; a retry with the same key gets that
answer back, marked `Idempotent-Replayed: true`, without doing the work again.
The same key on another method or path is 409 CONFLICT. Concurrent retries in
this process queue on the key, so two racing retries cannot both do the work.
The same key with another body (compared as canonical JSON, so key order and
whitespace do not matter) is 422 IDEMPOTENCY_KEY_REUSED, as the IETF
Idempotency-Key draft has it: replaying the first answer would hide that the
second request was never carried out.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
import weakref

from aiohttp import web

from rustymt.api.request import json_body, json_response, principal, services
from rustymt.catalog import jobs as job_rows
from rustymt.engine import storage
from rustymt.service.errors import ServiceError

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200
_key_locks: "weakref.WeakValueDictionary[tuple, asyncio.Lock]" = weakref.WeakValueDictionary()


async def idempotent(request: web.Request, run) -> web.Response:
    """run() -> (status, body). With an Idempotency-Key, the first answer is replayed."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        status, body = await run()
        return json_response(body, status=status)
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ServiceError("INVALID_REQUEST", f"{IDEMPOTENCY_HEADER} must be 1-{MAX_KEY_LENGTH} printable characters",
                           field=IDEMPOTENCY_HEADER)
    catalog = services(request).catalog
    scope = idempotency_scope(principal(request))
    fingerprint = request_fingerprint(await request.read())  # aiohttp keeps the body read once
    lock = _key_locks.setdefault((scope, key), asyncio.Lock())
    async with lock:
        def lookup():
            with catalog.read() as conn:
                return job_rows.remembered_answer(conn, scope, key)

        first = await asyncio.to_thread(lookup)
        if first is not None:
            if first["method"] != request.method or first["path"] != request.path:
                raise ServiceError("CONFLICT", f"{IDEMPOTENCY_HEADER} {key!r} was used for {first['method']} {first['path']}",
                                   field=IDEMPOTENCY_HEADER)
            if first["request_sha256"] not in (None, fingerprint):
                raise ServiceError("IDEMPOTENCY_KEY_REUSED",
                                   f"{IDEMPOTENCY_HEADER} {key!r} was used with another request body",
                                   field=IDEMPOTENCY_HEADER)
            response = json_response(first["body"], status=first["status_code"])
            response.headers["Idempotent-Replayed"] = "true"
            return response
        try:
            status, body = await run()
        except ServiceError as exc:
            status = exc.http_status
            if status >= 500:
                raise
            body = {"error": exc.to_dict()}

        def remember():
            with catalog.write() as conn:
                job_rows.remember_answer(conn, scope, key, request.method, request.path, status, body, storage.now_iso(),
                                         fingerprint)

        await asyncio.to_thread(remember)
        return json_response(body, status=status)


async def create_once(request: web.Request, status: int, call) -> web.Response:
    """A creating POST: call(principal, **body) once per Idempotency-Key."""
    body = await json_body(request)

    async def run():
        return status, await call(principal(request), **body)

    return await idempotent(request, run)


def request_fingerprint(raw: bytes) -> str:
    """SHA-256 of the body as canonical JSON (sorted keys, no spaces); the
    routes validated it already, so anything else is hashed as the bytes it is."""
    try:
        canonical = json.dumps(json.loads(raw) if raw.strip() else {}, sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = raw
    return hashlib.sha256(canonical).hexdigest()


def idempotency_scope(principal) -> str:
    return principal.tenant_id or f"operator:{principal.user_id or principal.username or uuid.uuid5(uuid.NAMESPACE_OID, ','.join(principal.roles))}"
