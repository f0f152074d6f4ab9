"""POST /api/v1/auth/token: a tenant administrator's password for a tenant-scoped token.

The tenant admin named at tenant creation (`admin_user`, `admin_password`)
sends {"username", "password"} and gets the spec's bearer token for the
tenant_admin role, scoped to that tenant:

    {"access_token": "<jwt>", "token_type": "Bearer", "expires_in": <seconds>}

An unknown user and a wrong password get the same 401 UNAUTHENTICATED after the
same work (a full scrypt verification against a decoy hash), so the answer
does not tell which usernames exist. Failed attempts are counted per client
address; past LOGIN_FAILURE_BURST of them the endpoint answers 429
QUOTA_EXCEEDED with Retry-After until the bucket refills (successful logins cost
nothing). Password checks run in a small pool of their own: scrypt must not
stall the event loop, and a burst of logins must not occupy the default
executor the catalog reads run in.
"""
from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from rustymt.api.appstate import per_app
from rustymt.api.auth import app_keys, issue_token
from rustymt.api.ratelimit import RateLimiter, with_headers
from rustymt.api.request import json_body, json_response
from rustymt.api.routing import Route
from rustymt.api.schema import enum, integer, obj, string
from rustymt.service.errors import ServiceError
from rustymt.service.passwords import burn_verify, verify_password

LOGIN_FAILURE_BURST = 20  # failed logins one client address may make back to back
LOGIN_FAILURES_PER_HOUR = 120  # then this many per hour

PASSWORD_CHECK_THREADS = 2  # concurrent scrypt verifications (16 MiB each)

login_failures = per_app(lambda app: RateLimiter())


@functools.lru_cache(maxsize=1)
def _password_checks() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=PASSWORD_CHECK_THREADS, thread_name_prefix="rustymt-password")


def _bad_credentials() -> ServiceError:
    error = ServiceError("UNAUTHENTICATED", "unknown user or wrong password")
    error.headers = {"WWW-Authenticate": 'Bearer realm="rustymt"'}
    return error


async def exchange_token(request: web.Request) -> web.Response:
    body = await json_body(request)
    app = request.app
    settings = app["settings"]
    client = request.remote or "unknown"
    failures = login_failures(app)
    allowance = failures.take(client, LOGIN_FAILURES_PER_HOUR, LOGIN_FAILURE_BURST, consume=False)
    if not allowance.allowed:
        raise with_headers(ServiceError(
            "QUOTA_EXCEEDED", f"too many failed logins from this address; retry in {allowance.retry_after} s",
            details={"quota": "failed_logins_per_hour", "retry_after_seconds": allowance.retry_after},
        ), {"Retry-After": str(allowance.retry_after)})
    username, password = body["username"], body["password"]
    found = app["services"].tenants.admin_credentials(username)
    loop = asyncio.get_running_loop()
    if found is None:
        matched = await loop.run_in_executor(_password_checks(), burn_verify, password)
    else:
        tenant_id, stored_hash = found
        matched = await loop.run_in_executor(_password_checks(), verify_password, password, stored_hash)
    if not matched:
        failures.take(client, LOGIN_FAILURES_PER_HOUR, LOGIN_FAILURE_BURST)
        raise _bad_credentials()
    ttl = settings.auth.token_ttl_seconds
    token = issue_token(app_keys(app), settings, "tenant_admin", tenant_id, ttl,
                        username=username, user_id=f"{tenant_id}:{username}")
    return json_response({"access_token": token, "token_type": "Bearer", "expires_in": ttl})


TOKEN_REQUEST = obj({
    "username": string(320, description="the tenant's admin_user"),
    "password": string(1024, description="the tenant's admin_password"),
})
TOKEN_RESPONSE = obj({
    "access_token": string(description="JWT for the tenant_admin role, scoped to the tenant"),
    "token_type": enum(["Bearer"]),
    "expires_in": integer(1, description="seconds until the token expires"),
})

ROUTES: list[Route] = [
    Route(
        "POST", "/api/v1/auth/token", exchange_token, None,
        "Exchange a tenant administrator's username and password for a tenant-scoped bearer token",
        request_schema=TOKEN_REQUEST,
        responses={200: TOKEN_RESPONSE, 401: {"$ref": "#/components/schemas/Error"},
                   429: {"$ref": "#/components/schemas/Error"}},
        tags=("auth",),
    ),
]
