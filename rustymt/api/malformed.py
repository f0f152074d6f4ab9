"""Answers for requests aiohttp's HTTP parser rejects before any middleware
sees them: a duplicated Content-Type, a header line without a colon, a bad
Content-Length, an unknown method, TLS on the plain port.

aiohttp answers those itself with text/plain and logs a traceback at ERROR.
A client's malformed bytes are not a server fault, and every other refusal
of the API is the spec's JSON shape: here they get 400 INVALID_REQUEST (413
PAYLOAD_TOO_LARGE where aiohttp says 413) and one WARNING line. Server faults
(5xx) keep aiohttp's own handling.
"""
from __future__ import annotations

import logging

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError

from rustymt.api.app import error_response
from rustymt.service.errors import ServiceError

log = logging.getLogger("rustymt.api")

# aiohttp's parser statuses -> the spec's codes (anything else below 500: INVALID_REQUEST, 400).
_CODES = {413: "PAYLOAD_TOO_LARGE"}


class _RequestHandler(web_protocol.RequestHandler):
    def handle_error(self, request, status=500, exc=None, message=None):
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        # The parser's message names the fault on its first line, then quotes
        # the offending bytes: those stay out (a mangled Authorization line would
        # put a credential into the log and the answer).
        text = str(exc.message or exc).strip()
        reason = text.splitlines()[0].rstrip(":") if text else "bad request"
        log.warning("malformed HTTP request from %s: %s", request.remote, reason)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent on this connection")
        response = error_response(ServiceError(_CODES.get(status, "INVALID_REQUEST"), f"malformed HTTP request: {reason}"))
        response.force_close()  # the parser's position in the stream is lost: as aiohttp, close after answering
        return response


class AppRunner(web.AppRunner):
    """web.AppRunner whose connections answer parser-level errors as above.

    aiohttp builds one RequestHandler per connection by calling `runner.server`
    (web.Server.__call__); this factory builds ours with the same arguments."""

    @property
    def server(self):
        base = super().server
        if base is None:
            return None

        def handler() -> _RequestHandler:
            return _RequestHandler(base, loop=base._loop, **base._kwargs)
        return handler
