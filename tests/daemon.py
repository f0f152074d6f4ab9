"""A real `python -m rustymt serve` in a subprocess, for tests that drive it over HTTP.

    daemon = Daemon.start(data_dir)          # ephemeral port, waits for /readyz
    daemon.port, daemon.base_url, daemon.admin_token
    response = daemon.request("POST", "/api/v1/tenants", json={...})   # admin token by default
    response.status, response.json, response.headers
    daemon.token("tenant_admin", tenant_id="tenant_...")              # via `rustymt token create`
    daemon.stop()                            # SIGTERM, then kill after a deadline; returns the exit code

The daemon listens on 127.0.0.1:0 and writes the bound address to
<data_dir>/run/rustymtd.addr; start() waits for that file and then for
/readyz to answer 200, both with a deadline, failing with the daemon's log.
"""
from __future__ import annotations

import dataclasses
import http.client
import json as jsonlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Mapping

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without RUSTYMT_* settings, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RUSTYMT_") or key == "RUSTYMT_REQUIRE_HOST"}
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def private_tenant_ports(size: int = 100) -> dict[str, str]:
    """env giving a daemon a random tenant port range of its own: its engine
    binds real ports, and other daemons (other tests, other people) run beside it."""
    low = random.randrange(30000, 60000 - size, size)
    return {"RUSTYMT_TENANT_PORTS": f"{low}-{low + size - 1}"}


def rustymt(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the CLI (`python -m rustymt ...`) to completion."""
    return subprocess.run([sys.executable, "-m", "rustymt", *args], capture_output=True, text=True,
                          env=clean_env(env), timeout=timeout, cwd=REPO_ROOT)


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return jsonlib.loads(self.text)

    @property
    def error_code(self) -> str | None:
        try:
            return self.json["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None


# Every daemon process any test started; the session-end fixture in
# tests/conftest.py stops those a test forgot, so none outlives the run.
STARTED: list["Daemon"] = []


class Daemon:
    def __init__(self, data_dir: str, process: subprocess.Popen, log_path: str, env: Mapping[str, str] | None):
        self.data_dir = data_dir
        self.process = process
        self.log_path = log_path
        self.env = dict(env or {})
        self.host = "127.0.0.1"
        self.port = 0
        self._admin_token: str | None = None
        self._token_lock = threading.Lock()

    # ---- life cycle

    @classmethod
    def start(cls, data_dir: str, env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()) -> "Daemon":
        os.makedirs(os.path.dirname(os.path.abspath(data_dir)), exist_ok=True)
        log_path = os.path.abspath(data_dir) + ".log"
        address_file = os.path.join(data_dir, "run", "rustymtd.addr")
        if os.path.exists(address_file):
            os.unlink(address_file)  # left by a killed predecessor
        log = open(log_path, "ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "rustymt", "serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0", *args],
            stdout=log, stderr=subprocess.STDOUT, env=clean_env(env), cwd=REPO_ROOT,
        )
        log.close()
        daemon = cls(data_dir, process, log_path, env)
        STARTED.append(daemon)
        try:
            daemon._wait_ready(address_file)
        except BaseException:
            daemon.kill()
            raise
        return daemon

    def _wait_ready(self, address_file: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"rustymt serve exited with {self.process.returncode}:\n{self.log()}")
            if self.port == 0 and os.path.exists(address_file):
                host, _, port = open(address_file).read().strip().rpartition(":")
                self.host, self.port = host, int(port)
            if self.port:
                try:
                    if self.request("GET", "/readyz", token=None).status == 200:
                        return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"rustymt serve not ready after {START_TIMEOUT}s:\n{self.log()}")
            time.sleep(0.05)  # polling interval of a deadline-bounded wait

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; kill when it does not stop in time. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def restart(self) -> "Daemon":
        """Stop (gracefully) and start a new daemon process on the same data dir.

        Returns self, now driving the new process, so whoever stops this
        object at teardown stops the new process too."""
        code = self.stop()
        assert code == 0, f"daemon exited with {code} on SIGTERM:\n{self.log()}"
        successor = Daemon.start(self.data_dir, self.env)
        STARTED.remove(successor)
        self.process, self.host, self.port = successor.process, successor.host, successor.port
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()[-8000:]
        except OSError:
            return "(no log)"

    # ---- HTTP

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_token(self) -> str:
        with self._token_lock:  # concurrent first callers share one `token create`
            if self._admin_token is None:
                self._admin_token = self.token("cdb_admin")
            return self._admin_token

    def token(self, role: str, tenant_id: str | None = None, ttl: int | None = None) -> str:
        args = ["token", "create", "--data-dir", self.data_dir, "--role", role]
        if tenant_id:
            args += ["--tenant", tenant_id]
        if ttl is not None:
            args += ["--ttl", str(ttl)]
        result = rustymt(*args, env=self.env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    _ADMIN = object()

    def request(self, method: str, path: str, json: Any = None, *, body: bytes | None = None,
                token: Any = _ADMIN, headers: Mapping[str, str] | None = None, timeout: float = 30) -> Response:
        """One HTTP request on a fresh connection; `token` defaults to the CDB admin's, None sends none."""
        send_headers = dict(headers or {})
        if token is Daemon._ADMIN:
            token = self.admin_token
        if token is not None:
            send_headers["Authorization"] = f"Bearer {token}"
        if json is not None:
            body = jsonlib.dumps(json).encode()
            send_headers.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=send_headers)
            answer = connection.getresponse()
            return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read().decode("utf-8", "replace"))
        finally:
            connection.close()

    # ---- conveniences

    def create_tenant(self, name: str, tier: str = "silver", **extra: Any) -> dict:
        body = {"tenant_name": name, "admin_user": f"admin@{name}.example", "admin_password": "correct horse battery",
                "service_tier": tier, **extra}
        response = self.request("POST", "/api/v1/tenants", json=body)
        assert response.status == 201, response.text
        return response.json
