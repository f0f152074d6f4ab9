"""rustymt's one aiohttp middleware: metrics, rate limit, error rendering and authentication.

They run in this order for every request (rustymt.api.app lists the order's
reasons; rustymt.api.ratelimit and rustymt.api.auth hold the rules):

    0. metrics      around everything below: the answer's status and time go to
                    app[REQUEST_OBSERVER] (rustymt.metering.prometheus), refusals
                    included
    1. rate limit   the caller's bucket (rustymt.api.auth.authenticated picks it:
                    the token is verified once, the Principal or the refusal kept
                    on the request); an empty bucket is answered 429 at once
    2. errors       whatever 3 or the handler raises becomes the spec's error shape
                    (rustymt.api.app.failure_response); a body declared too large
                    is refused before anything reads it
    3. auth         the kept refusal is raised (401/403), or a route that needs a
                    token and was not authenticated in 1 is authenticated now
    4. handler

and X-RateLimit-* go on the answer, errors included. These were four
middlewares; aiohttp adds a handler partial, a coroutine and an await per
middleware per request, so one layer does the same work with less of it
(docs/api.md "Performance").
"""
from __future__ import annotations

import time
from typing import Callable

from aiohttp import web

from rustymt.api.app import error_response, failure_response, payload_too_large
from rustymt.api.auth import REFUSAL, authenticate, authenticated, route_needs_token
from rustymt.api.ratelimit import API_PREFIX, decide, quota_exceeded

# observe(request, status, seconds), set by rustymt.metering.wiring; absent in apps without metering.
REQUEST_OBSERVER = web.AppKey("request_observer", Callable)


@web.middleware
async def api_middleware(request: web.Request, handler):
    started = time.perf_counter()
    status = 500  # until an answer says otherwise: what escapes here becomes aiohttp's 500
    try:
        # 1. rate limit: /api/v1, and any route that needs a token (GET /metrics).
        principal = authenticated(request)
        headers = response = None
        if principal is not None or REFUSAL in request or request.path.startswith(API_PREFIX):
            decision = decide(request.app, principal, request.remote)
            headers = decision.headers()
            if not decision.allowed:
                response = error_response(quota_exceeded(decision))
        # 2. errors, around 3 and 4.
        if response is None:
            response = payload_too_large(request)
        if response is None:
            try:
                # 3. auth (authenticated() above already did the work for a route that needs a token).
                if principal is None:
                    refusal = request.get(REFUSAL)
                    if refusal is not None:
                        raise refusal
                    if route_needs_token(request):
                        request["principal"] = authenticate(request)
                response = await handler(request)
            except Exception as exc:  # the spec's error shape; redirects (HTTPException < 400) re-raised
                response = failure_response(request, exc)
        if headers is not None and not response.prepared:  # a streamed answer has sent its headers already
            response.headers.update(headers)
        status = response.status
        return response
    except web.HTTPException as exc:  # a redirect, re-raised by failure_response
        status = exc.status
        raise
    finally:
        observe = request.app.get(REQUEST_OBSERVER)
        if observe is not None:
            observe(request, status, time.perf_counter() - started)
