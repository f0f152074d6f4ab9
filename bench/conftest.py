"""Bench fixtures: the full stack (a real daemon with tenants), the bare baseline, and the floor.

All are separate processes on loopback, driven by the same load generator
(wrk, C, 2 threads) with the same headers, in the same run, so host
contention affects them alike and the ratio is what the stack costs. The
floor (bench/floor_server.c) is a C server writing the same bytes: what the
host and the network alone give.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.daemon import REPO_ROOT, Daemon

TENANTS = 20  # enough rows that listing is real work (one page of 20)
# The operator token's bucket (rustymt/api/ratelimit.py) is still charged on every request, but
# must never refuse one: a run sends a few hundred thousand.
UNLIMITED_OPERATOR = {"RUSTYMT_API_OPERATOR_BURST": "1000000000", "RUSTYMT_API_OPERATOR_REQUESTS_PER_HOUR": "1000000000"}


@dataclasses.dataclass
class Stack:
    daemon: Daemon
    tenant_id: str
    token: str


@dataclasses.dataclass
class Server:
    url: str
    pid: int
    answers: dict[str, dict] | None = None  # the bare server's: path -> {"body", "headers"} the daemon answered


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    daemon = Daemon.start(str(tmp_path_factory.mktemp("bench") / "data"), env=UNLIMITED_OPERATOR)
    try:
        tenants = [daemon.create_tenant(f"bench_{index}", tier="gold") for index in range(TENANTS)]
        # An operator token: not tenant-rate-limited, and its own bucket is unlimited here.
        yield Stack(daemon, tenants[0]["tenant_id"], daemon.admin_token)
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def bare(stack, tmp_path_factory):
    """The baseline server, answering what the daemon answers for the benched paths."""
    paths = [f"/api/v1/tenants/{stack.tenant_id}", "/api/v1/tenants"]
    answers = {}
    for path in paths:
        response = stack.daemon.request("GET", path, token=stack.token)
        assert response.status == 200, response.text
        # The same bytes: the body as sent, and the rate-limit headers every /api/v1 answer carries.
        headers = {"X-RateLimit-" + name[len("x-ratelimit-"):].title(): value
                   for name, value in response.headers.items() if name.startswith("x-ratelimit-")}
        assert len(headers) == 3, response.headers
        answers[path] = {"body": response.text, "headers": headers}
    bodies_file = tmp_path_factory.mktemp("bare") / "bodies.json"
    bodies_file.write_text(json.dumps(answers))
    process = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "bench", "bare_server.py"), str(bodies_file)],
                               stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        port = int(process.stdout.readline())  # printed once listening; EOF (ValueError) if it died
        yield Server(f"http://127.0.0.1:{port}", process.pid, answers)
    finally:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="session")
def floor(bare, tmp_path_factory):
    """floor(path) -> Server: bench/floor_server.c (C, epoll) answering that path's bytes to every request."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (scripts/apt-packages.txt lists build-essential)")
    folder = tmp_path_factory.mktemp("floor")
    binary = folder / "floor_server"
    subprocess.run([compiler, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary),
                    os.path.join(REPO_ROOT, "bench", "floor_server.c")], check=True)
    started: dict[str, tuple[subprocess.Popen, Server]] = {}

    def server_for(path: str) -> Server:
        if path not in started:
            answer = bare.answers[path]
            body = answer["body"].encode("utf-8")
            head = ["HTTP/1.1 200 OK", "Content-Type: application/json; charset=utf-8", f"Content-Length: {len(body)}",
                    *(f"{name}: {value}" for name, value in answer["headers"].items())]
            response_file = folder / f"response-{len(started)}"
            response_file.write_bytes(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body)
            process = subprocess.Popen([str(binary), str(response_file)], stdout=subprocess.PIPE, text=True)
            port = int(process.stdout.readline())
            started[path] = (process, Server(f"http://127.0.0.1:{port}", process.pid))
        return started[path][1]

    try:
        yield server_for
    finally:
        for process, _ in started.values():
            process.kill()
            process.wait(10)
