"""Requests aiohttp's HTTP parser rejects (before any middleware) get the
spec's JSON error shape and one WARNING line, not text/plain and an ERROR
traceback; the offending bytes (which may hold a credential) are not echoed."""
from __future__ import annotations

import json
import socket
import urllib.parse

import pytest

MALFORMED = {
    "duplicate content-type": b"GET /api/v1/tenants HTTP/1.1\r\nHost: x\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n",
    "header without colon": b"GET /api/v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization Bearer sekrit-token-123\r\n\r\n",
    "negative content-length": b"POST /api/v1/tenants HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "unknown method": b"BREW /api/v1/tenants HTTP/1.1\r\nHost: x\r\n\r\n",
    "tls on the plain port": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(64),
}


def raw_exchange(base_url: str, data: bytes) -> bytes:
    address = urllib.parse.urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):  # the server closes after answering a malformed request
            received += chunk
    return received


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_parser_rejections_are_json_invalid_request(api_daemon, name):
    answer = raw_exchange(api_daemon.base_url, MALFORMED[name])
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.split()[1] == "400", answer
    headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in header_lines}
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert error["message"].startswith("malformed HTTP request: ") and len(error["message"]) > 25
    assert b"sekrit" not in answer


def test_parser_rejections_log_one_warning_without_traceback_or_secret(api_daemon):
    raw_exchange(api_daemon.base_url, MALFORMED["header without colon"])
    log = api_daemon.log()
    assert "malformed HTTP request from 127.0.0.1: Invalid header token" in log
    assert "sekrit-token" not in log
    assert "aiohttp.http_exceptions.BadHttpMessage" not in log and "Error handling request" not in log
