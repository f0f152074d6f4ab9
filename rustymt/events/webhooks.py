"""Webhooks: registrations, signed at-least-once delivery from a durable outbox.

Registration (REST POST /api/v1/webhooks, the spec's body plus optional
`tenant_id`) stores the URL, the event types and the secret. The secret must
be recoverable (it signs every delivery), so it is sealed with AES-GCM under
<data_dir>/keys/webhooks.key (0600) rather than hashed; it is never returned,
logged or put in an error.

Delivery, step by step:
1. The dispatcher subscribes to the event bus. For each event it inserts one
   outbox row per matching webhook (event type registered; the webhook's
   tenant is the event's, or the webhook is global) holding the exact JSON
   body to send — the spec's payload {event_id, event_type, timestamp,
   tenant_id, data} — in one catalog transaction. From here on the event
   survives kill -9: the outbox is the queue.
2. The delivery loop takes due rows (pending, next_attempt_at <= now) and
   POSTs the body with
       X-RustyMT-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
   plus X-RustyMT-Event and X-RustyMT-Delivery; receivers verify and reject
   old `t` (replays). Each attempt is signed afresh; the body and event_id
   never change, so a redelivery is recognisable as a duplicate.
3. 2xx = delivered. Anything else (status, timeout, refused connection,
   redirect — redirects are not followed) schedules the next attempt after
   base * 2^(attempts-1) seconds capped at retry_max, with jitter (uniformly
   in the upper half of that delay, so retries of many rows spread out).
   A row still failing `max_age_seconds` (24 h) after its event is dead-lettered:
   state "dead", visible in GET /api/v1/webhooks/{id}/deliveries?state=dead.
4. A row is marked delivered only after the receiver answered, so a crash
   between sending and marking redelivers it after restart (at-least-once).

URL safety: http and https only; the host's addresses (all of them, at
registration and again at every connection through our resolver, so DNS
rebinding cannot reach inside) must not be loopback, private, link-local,
multicast, reserved or unspecified unless `webhooks.allow_private_targets`.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import random
import secrets
import socket
import time
import urllib.parse
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver

from rustymt.events.bus import EVENT_TYPES, Event, SubscriberDropped
from rustymt.model import timeutil
from rustymt.service import authz, inputs
from rustymt.service.authz import Principal
from rustymt.service.errors import ServiceError

log = logging.getLogger("rustymt.webhooks")

SIGNATURE_HEADER = "X-RustyMT-Signature"
MAX_WEBHOOKS_PER_TENANT = 20
MAX_URL_LENGTH = 2048
MIN_SECRET_LENGTH = 8
MAX_SECRET_LENGTH = 512
DELIVERY_BATCH = 16
KEEP_DELIVERED_SECONDS = 7 * 86400
KEEP_DEAD_SECONDS = 30 * 86400
PERMISSION = {"register": "tenant:write", "delete": "tenant:write", "read": "tenant:read"}
DELIVERY_STATES = ("pending", "delivered", "dead", "cancelled")


# ---- signatures


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance: float = 300.0, now: float | None = None) -> bool:
    """The receiver's check (documented, used by the tests): signature matches and t is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


# ---- secrets at rest


class SecretBox:
    """AES-256-GCM with a key file of the data dir; sealed text is "v1:<base64 nonce|ciphertext>"."""

    def __init__(self, key: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        self._aead = AESGCM(key)

    @classmethod
    def for_data_dir(cls, data_dir: str) -> "SecretBox":
        path = os.path.join(data_dir, "keys", "webhooks.key")
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
                handle.flush()
                os.fsync(handle.fileno())
        with open(path, "rb") as handle:
            return cls(handle.read())

    def seal(self, secret: str) -> str:
        nonce = secrets.token_bytes(12)
        return "v1:" + base64.b64encode(nonce + self._aead.encrypt(nonce, secret.encode(), b"webhook")).decode()

    def open(self, sealed: str) -> str:
        raw = base64.b64decode(sealed.split(":", 1)[1])
        return self._aead.decrypt(raw[:12], raw[12:], b"webhook").decode()


# ---- URL safety


def address_allowed(address: str, allow_private: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if allow_private:
        return not (ip.is_multicast or ip.is_unspecified)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def check_url(url: Any) -> urllib.parse.SplitResult:
    """Syntax: http(s), a host, no credentials; raises INVALID_REQUEST naming webhook_url."""
    url = inputs.text("webhook_url", url, max_length=MAX_URL_LENGTH)
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise inputs.invalid("webhook_url", f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise inputs.invalid("webhook_url", "must be an http:// or https:// URL")
    if not parts.hostname:
        raise inputs.invalid("webhook_url", "needs a host")
    if parts.username is not None or parts.password is not None:
        raise inputs.invalid("webhook_url", "must not carry credentials (sign with the secret instead)")
    if port == 0:
        raise inputs.invalid("webhook_url", "port 0 is not a valid target")
    return parts


def resolve_checked(host: str, port: int, allow_private: bool) -> list[str]:
    """All addresses of `host`; ValueError when it does not resolve or one is not allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"host {host} does not resolve ({exc})") from None
    addresses = sorted({info[4][0] for info in infos})
    refused = [address for address in addresses if not address_allowed(address, allow_private)]
    if refused:
        raise ValueError(f"host {host} resolves to {', '.join(refused)}: loopback, private, link-local and reserved "
                         "targets are refused (webhooks.allow_private_targets)")
    return addresses


class CheckedResolver(AbstractResolver):
    """aiohttp resolver that refuses disallowed addresses at connect time (DNS rebinding)."""

    def __init__(self, allow_private: bool):
        self.allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        results = []
        for fam, _type, proto, _canon, sockaddr in infos:
            if not address_allowed(sockaddr[0], self.allow_private):
                raise OSError(f"{host} resolves to a refused address")
            results.append({"hostname": host, "host": sockaddr[0], "port": sockaddr[1], "family": fam,
                            "proto": proto, "flags": socket.AI_NUMERICHOST})
        return results

    async def close(self) -> None:
        return None


# ---- registrations and deliveries (service layer)


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else timeutil.to_iso(datetime.datetime.fromtimestamp(seconds, timeutil.UTC))


def _webhook_body(row: dict) -> dict:
    return {"webhook_id": row["webhook_id"], "webhook_url": row["url"], "events": json.loads(row["events"]),
            "tenant_id": row["tenant_id"], "created_at": row["created_at"]}


def _delivery_body(row: dict) -> dict:
    return {"delivery_id": row["delivery_id"], "event_id": row["event_id"], "event_type": row["event_type"],
            "state": row["state"], "attempts": row["attempts"], "last_status": row["last_status"],
            "last_error": row["last_error"], "created_at": _iso(row["created_at"]),
            "last_attempt_at": _iso(row["last_attempt_at"]), "delivered_at": _iso(row["delivered_at"]),
            "next_attempt_at": _iso(row["next_attempt_at"]) if row["state"] == "pending" else None}


@dataclasses.dataclass(frozen=True)
class Hook:
    webhook_id: str
    tenant_id: str | None
    events: frozenset[str]


class WebhookService:
    def __init__(self, catalog: Any, settings: Any, box: SecretBox | None = None):
        self.catalog = catalog
        self.settings = settings
        self._box = box
        self.dispatcher: "WebhookDispatcher | None" = None

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            self._box = SecretBox.for_data_dir(self.settings.server.data_dir)
        return self._box

    def _scope(self, principal: Principal, tenant_id: Any) -> str | None:
        if tenant_id is None and principal.tenant_id is not None:
            return principal.tenant_id  # a tenant's token registers for its own tenant
        if tenant_id is None:
            if not principal.is_cdb_admin:
                raise ServiceError("PERMISSION_DENIED", "only CDB administrators register webhooks for every tenant")
            return None
        tenant_id = inputs.text("tenant_id", tenant_id, max_length=64)
        authz.check_tenant_scope(principal, tenant_id)
        return tenant_id

    async def register(self, principal: Principal, *, webhook_url: Any, events: Any, secret: Any,
                       tenant_id: Any = None) -> dict:
        authz.require(principal, PERMISSION["register"])
        tenant_id = self._scope(principal, tenant_id)
        parts = check_url(webhook_url)
        if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
            raise inputs.invalid("events", f"must be a non-empty list of event types ({', '.join(sorted(EVENT_TYPES))})")
        unknown = sorted(set(events) - EVENT_TYPES)
        if unknown:
            raise inputs.invalid("events", f"unknown event type(s) {', '.join(unknown)}")
        secret = inputs.text("secret", secret, max_length=MAX_SECRET_LENGTH)
        if len(secret) < MIN_SECRET_LENGTH:
            raise inputs.invalid("secret", f"must be at least {MIN_SECRET_LENGTH} characters")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            await asyncio.to_thread(resolve_checked, parts.hostname, port, self.settings.webhooks.allow_private_targets)
        except ValueError as exc:
            raise inputs.invalid("webhook_url", str(exc)) from None
        sealed = await asyncio.to_thread(self.box.seal, secret)
        webhook_id = f"wh_{secrets.token_hex(8)}"
        now = timeutil.utc_now_iso()

        def tx():
            with self.catalog.write() as conn:
                if tenant_id is not None:
                    if conn.execute("SELECT 1 FROM tenants WHERE tenant_id = ? AND state != 'terminated'", (tenant_id,)).fetchone() is None:
                        raise ServiceError("TENANT_NOT_FOUND", f"tenant {tenant_id} does not exist", details={"tenant_id": tenant_id})
                    count = conn.execute("SELECT count(*) FROM webhooks WHERE tenant_id = ? AND deleted_at IS NULL",
                                         (tenant_id,)).fetchone()[0]
                    if count >= MAX_WEBHOOKS_PER_TENANT:
                        raise ServiceError("CONFLICT", f"a tenant may register at most {MAX_WEBHOOKS_PER_TENANT} webhooks")
                conn.execute("INSERT INTO webhooks (webhook_id, tenant_id, url, events, secret, created_at, created_by) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", (webhook_id, tenant_id, webhook_url.strip(),
                                                              json.dumps(sorted(set(events))), sealed, now, principal.username))

        await asyncio.to_thread(tx)
        if self.dispatcher is not None:
            self.dispatcher.reload()
        log.info("webhook %s registered for %s", webhook_id, tenant_id or "all tenants")
        return {"webhook_id": webhook_id, "webhook_url": webhook_url.strip(), "events": sorted(set(events)),
                "tenant_id": tenant_id, "created_at": now}

    def _visible(self, conn, principal: Principal, webhook_id: str) -> dict:
        row = conn.execute("SELECT * FROM webhooks WHERE webhook_id = ? AND deleted_at IS NULL", (webhook_id,)).fetchone()
        # Another tenant's webhook is "not found": its existence is that tenant's metadata.
        if row is None or (principal.tenant_id is not None and row["tenant_id"] != principal.tenant_id):
            raise ServiceError("NOT_FOUND", f"webhook {webhook_id} does not exist", details={"webhook_id": webhook_id})
        return dict(row)

    async def list(self, principal: Principal) -> dict:
        authz.require(principal, PERMISSION["read"])

        def query():
            with self.catalog.read() as conn:
                if principal.tenant_id is None:
                    rows = conn.execute("SELECT * FROM webhooks WHERE deleted_at IS NULL ORDER BY created_at, webhook_id")
                else:
                    rows = conn.execute("SELECT * FROM webhooks WHERE deleted_at IS NULL AND tenant_id = ? "
                                        "ORDER BY created_at, webhook_id", (principal.tenant_id,))
                return [dict(row) for row in rows]

        return {"webhooks": [_webhook_body(row) for row in await asyncio.to_thread(query)]}

    async def get(self, principal: Principal, webhook_id: str) -> dict:
        authz.require(principal, PERMISSION["read"])

        def query():
            with self.catalog.read() as conn:
                return self._visible(conn, principal, webhook_id)

        return _webhook_body(await asyncio.to_thread(query))

    async def delete(self, principal: Principal, webhook_id: str) -> dict:
        authz.require(principal, PERMISSION["delete"])
        now = timeutil.utc_now_iso()

        def tx():
            with self.catalog.write() as conn:
                self._visible(conn, principal, webhook_id)
                conn.execute("UPDATE webhooks SET deleted_at = ?, secret = '' WHERE webhook_id = ?", (now, webhook_id))
                conn.execute("UPDATE webhook_outbox SET state = 'cancelled' WHERE webhook_id = ? AND state = 'pending'",
                             (webhook_id,))

        await asyncio.to_thread(tx)
        if self.dispatcher is not None:
            self.dispatcher.reload()
        return {"webhook_id": webhook_id, "deleted": True, "deleted_at": now}

    async def deliveries(self, principal: Principal, webhook_id: str, state: str | None = None, limit: int = 100) -> dict:
        authz.require(principal, PERMISSION["read"])
        if state is not None:
            state = inputs.choice("state", state, DELIVERY_STATES)
        limit = inputs.integer("limit", limit, minimum=1, maximum=1000)

        def query():
            with self.catalog.read() as conn:
                self._visible(conn, principal, webhook_id)
                sql, params = "SELECT * FROM webhook_outbox WHERE webhook_id = ?", [webhook_id]
                if state is not None:
                    sql += " AND state = ?"
                    params.append(state)
                rows = conn.execute(sql + " ORDER BY delivery_id DESC LIMIT ?", (*params, limit))
                return [dict(row) for row in rows]

        return {"webhook_id": webhook_id, "deliveries": [_delivery_body(row) for row in await asyncio.to_thread(query)]}


# ---- the dispatcher (daemon loop)


class WebhookDispatcher:
    """Bus -> outbox -> HTTP. `run()` until cancelled; safe to restart at any point."""

    def __init__(self, catalog: Any, settings: Any, bus: Any, service: WebhookService, clock=time.time):
        self.catalog = catalog
        self.settings = settings
        self.bus = bus
        self.service = service
        self.clock = clock
        self.hooks: list[Hook] = []
        self.delivered = 0
        self.failed_attempts = 0
        self.dead_lettered = 0
        self._wake = asyncio.Event()
        self._reload = True
        service.dispatcher = self

    def reload(self) -> None:
        self._reload = True

    def _load_hooks(self) -> list[Hook]:
        with self.catalog.read() as conn:
            rows = conn.execute("SELECT webhook_id, tenant_id, events FROM webhooks WHERE deleted_at IS NULL").fetchall()
        return [Hook(row[0], row[1], frozenset(json.loads(row[2]))) for row in rows]

    def queue_depth(self) -> int:
        with self.catalog.read() as conn:
            return conn.execute("SELECT count(*) FROM webhook_outbox WHERE state = 'pending'").fetchone()[0]

    # 1. bus -> outbox

    def enqueue(self, event: Event) -> int:
        if self._reload:
            self._reload = False
            self.hooks = self._load_hooks()
        targets = [hook for hook in self.hooks if event.event_type in hook.events
                   and (hook.tenant_id is None or hook.tenant_id == event.tenant_id)]
        if not targets:
            return 0
        body = json.dumps(event.to_dict(), separators=(",", ":"), sort_keys=True)
        now = self.clock()
        with self.catalog.write() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO webhook_outbox (webhook_id, event_id, event_type, body, state, next_attempt_at, created_at) "
                "VALUES (?, ?, ?, ?, 'pending', ?, ?)", [(hook.webhook_id, event.event_id, event.event_type, body, now, now)
                                                         for hook in targets])
        return len(targets)

    async def _consume(self, subscription) -> None:
        while True:
            try:
                async for event in subscription:
                    try:
                        if await asyncio.to_thread(self.enqueue, event):
                            self._wake.set()
                    except Exception:
                        log.exception("could not queue event %s for webhooks", event.event_id)
                return
            except SubscriberDropped:
                # 100,000 events behind the bus: those are lost to webhooks; say so and carry on
                log.error("webhook dispatcher fell behind the event bus; events were dropped")
                subscription = self.subscribe()
            except asyncio.CancelledError:
                subscription.close()
                raise

    # 2.-4. outbox -> HTTP

    def _due(self, now: float) -> list[dict]:
        with self.catalog.read() as conn:
            rows = conn.execute(
                "SELECT o.delivery_id, o.webhook_id, o.event_id, o.event_type, o.body, o.attempts, o.created_at, w.url, w.secret "
                "FROM webhook_outbox o JOIN webhooks w USING (webhook_id) WHERE o.state = 'pending' AND o.next_attempt_at <= ? "
                "ORDER BY o.next_attempt_at LIMIT ?", (now, DELIVERY_BATCH)).fetchall()
        return [dict(row) for row in rows]

    def _next_due(self) -> float | None:
        with self.catalog.read() as conn:
            return conn.execute("SELECT min(next_attempt_at) FROM webhook_outbox WHERE state = 'pending'").fetchone()[0]

    def backoff(self, attempts: int) -> float:
        cfg = self.settings.webhooks
        delay = min(cfg.retry_max_seconds, cfg.retry_base_seconds * (2 ** max(0, attempts - 1)))
        return random.uniform(delay / 2, delay)

    async def _attempt(self, session: aiohttp.ClientSession, row: dict) -> tuple[int | None, str | None]:
        parts = urllib.parse.urlsplit(row["url"])
        allow_private = self.settings.webhooks.allow_private_targets
        try:
            ipaddress.ip_address(parts.hostname)
        except ValueError:
            pass  # a name: CheckedResolver checks what it resolves to
        else:
            if not address_allowed(parts.hostname, allow_private):
                return None, "target address refused (webhooks.allow_private_targets)"
        secret = self.service.box.open(row["secret"])
        body = row["body"].encode()
        headers = {"Content-Type": "application/json", "User-Agent": "rustymt-webhooks/1",
                   SIGNATURE_HEADER: sign(secret, body, int(self.clock())),
                   "X-RustyMT-Event": row["event_type"], "X-RustyMT-Delivery": str(row["delivery_id"])}
        try:
            async with session.post(row["url"], data=body, headers=headers, allow_redirects=False) as response:
                await response.read()
                return response.status, None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except asyncio.TimeoutError:
            return None, "timed out"
        except (aiohttp.ClientError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300]

    def _settle(self, row: dict, status: int | None, error: str | None, at: float) -> str:
        attempts = row["attempts"] + 1
        with self.catalog.write() as conn:
            if error is None:
                conn.execute("UPDATE webhook_outbox SET state = 'delivered', attempts = ?, last_attempt_at = ?, delivered_at = ?, "
                             "last_status = ?, last_error = NULL WHERE delivery_id = ? AND state = 'pending'",
                             (attempts, at, at, status, row["delivery_id"]))
                return "delivered"
            dead = at - row["created_at"] >= self.settings.webhooks.max_age_seconds
            conn.execute("UPDATE webhook_outbox SET state = ?, attempts = ?, last_attempt_at = ?, last_status = ?, last_error = ?, "
                         "next_attempt_at = ? WHERE delivery_id = ? AND state = 'pending'",
                         ("dead" if dead else "pending", attempts, at, status, error,
                          at if dead else at + self.backoff(attempts), row["delivery_id"]))
            return "dead" if dead else "retry"

    async def deliver_due(self, session: aiohttp.ClientSession) -> int:
        rows = await asyncio.to_thread(self._due, self.clock())
        if not rows:
            return 0

        async def one(row):
            status, error = await self._attempt(session, row)
            outcome = await asyncio.to_thread(self._settle, row, status, error, self.clock())
            if outcome == "delivered":
                self.delivered += 1
            else:
                self.failed_attempts += 1
                self.dead_lettered += outcome == "dead"
                log.info("webhook %s delivery %s failed (%s)%s", row["webhook_id"], row["delivery_id"], error,
                         ", dead-lettered" if outcome == "dead" else "")

        await asyncio.gather(*(one(row) for row in rows))
        return len(rows)

    def prune(self, now: float) -> None:
        with self.catalog.write() as conn:
            conn.execute("DELETE FROM webhook_outbox WHERE (state = 'delivered' AND delivered_at < ?) OR "
                         "(state IN ('dead', 'cancelled') AND created_at < ?)",
                         (now - KEEP_DELIVERED_SECONDS, now - KEEP_DEAD_SECONDS))

    def subscribe(self):
        """Call before anything can publish (Observability.start), so no event is missed."""
        return self.bus.subscribe(None, maxsize=100_000)

    async def run(self, subscription=None) -> None:
        subscription = subscription or self.subscribe()
        consumer = asyncio.create_task(self._consume(subscription))
        timeout = aiohttp.ClientTimeout(total=self.settings.webhooks.timeout_seconds)
        connector = aiohttp.TCPConnector(resolver=CheckedResolver(self.settings.webhooks.allow_private_targets), limit=64)
        last_prune = 0.0
        try:
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                while True:
                    self._wake.clear()  # before looking: an event queued from now on wakes the wait below
                    try:
                        if await self.deliver_due(session) == DELIVERY_BATCH:
                            continue  # more are due
                        if self.clock() - last_prune > 3600:
                            last_prune = self.clock()
                            await asyncio.to_thread(self.prune, last_prune)
                        next_due = await asyncio.to_thread(self._next_due)
                    except Exception:
                        log.exception("webhook delivery round failed")
                        next_due = self.clock() + 1.0
                    wait = 60.0 if next_due is None else max(0.0, next_due - self.clock())
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=min(wait, 60.0))
                    except asyncio.TimeoutError:
                        pass
        finally:
            subscription.close()
            consumer.cancel()
