"""The daemon's side of one engine instance: start it, watch it, restart it.

An instance that exits unexpectedly is restarted with exponential backoff
(BACKOFF_FIRST doubling to BACKOFF_MAX; the delay resets once an instance has
stayed up STABLE_AFTER seconds), and `on_started` re-applies the desired state
(tenants attached, PDBs reopened in their saved open modes) before the
instance is reported healthy again. Every start, exit and restart is reported
through `on_event` so the daemon can record it.

While an instance is down, `request()` fails at once with UNAVAILABLE rather
than waiting, so clients get a clean refusal instead of a hang.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from typing import Awaitable, Callable

from rustymt.engine.control import ControlClient, ControlError

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.2
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0
READY_TIMEOUT = 20.0

EventSink = Callable[[str, dict], None]


class InstanceSupervisor:
    def __init__(
        self,
        name: str,
        data_dir: str,
        on_event: EventSink | None = None,
        on_started: Callable[["InstanceSupervisor"], Awaitable[None]] | None = None,
        preexec: Callable[[], None] | None = None,
        extra_env: dict[str, str] | None = None,
        config_path: str | None = None,
    ):
        self.name = name
        self.data_dir = os.path.abspath(data_dir)
        self.socket_path = os.path.join(self.data_dir, "run", f"{name}.sock")
        self.on_event = on_event or (lambda kind, data: None)
        self.on_started = on_started
        self.preexec = preexec  # e.g. join a cgroup before exec (host enforcement)
        self.extra_env = extra_env or {}
        self.config_path = config_path  # the daemon's TOML, passed on as --config
        self.process: asyncio.subprocess.Process | None = None
        self.client: ControlClient | None = None
        self.restarts = 0
        self.health = "stopped"  # stopped | starting | healthy | restarting | failed
        self.last_exit: int | None = None
        self._started_monotonic: float | None = None
        self._stopping = False
        self._watch_task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    # ---- lifecycle

    async def start(self) -> None:
        self._stopping = False
        await self._spawn()
        self._watch_task = asyncio.create_task(self._watch())

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ControlError):
                await self.client.request("shutdown", timeout=2.0)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
        if self.client is not None:
            await self.client.close()
        self.health = "stopped"
        self._ready.clear()

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    # ---- requests

    async def request(self, op: str, args: dict | None = None, timeout: float = 10.0) -> dict:
        if self.health != "healthy" or self.client is None:
            raise ControlError("UNAVAILABLE", f"instance {self.name} is {self.health}")
        return await self.client.request(op, args, timeout)

    def status(self) -> dict:
        running = self.process is not None and self.process.returncode is None
        return {
            "name": self.name,
            "pid": self.process.pid if running else None,
            "uptime_seconds": round(time.monotonic() - self._started_monotonic, 3) if running and self._started_monotonic else 0,
            "restarts": self.restarts,
            "health": self.health,
            "last_exit_code": self.last_exit,
        }

    # ---- internals

    async def _spawn(self) -> None:
        os.makedirs(os.path.dirname(self.socket_path), mode=0o700, exist_ok=True)
        self.health = "starting"
        env = {**os.environ, **self.extra_env}
        extra_args = ["--config", self.config_path] if self.config_path else []
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rustymt.engine.instance",
            "--name", self.name, "--data-dir", self.data_dir, "--socket", self.socket_path,
            "--parent-pid", str(os.getpid()), *extra_args,
            stdin=asyncio.subprocess.PIPE,  # our end closing tells the instance we are gone
            preexec_fn=self.preexec,
            env=env,
        )
        self._started_monotonic = time.monotonic()
        self.on_event("instance.started", {"instance": self.name, "pid": self.process.pid, "restarts": self.restarts})
        await self._connect_when_listening()
        if self.on_started is not None:
            await self.on_started(self)
        self.health = "healthy"
        self._ready.set()

    async def _connect_when_listening(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        if self.client is not None:
            await self.client.close()
        self.client = ControlClient(self.socket_path)
        while True:
            if self.process.returncode is not None:
                raise ControlError("UNAVAILABLE", f"instance {self.name} exited with {self.process.returncode} while starting")
            try:
                hello = await self.client.request("hello", timeout=2.0)
                if hello.get("pid") == self.process.pid:
                    return
                await self.client.close()  # a stale socket of a previous process
            except ControlError:
                pass
            if time.monotonic() > deadline:
                raise ControlError("TIMEOUT", f"instance {self.name} did not come up within {READY_TIMEOUT}s")
            await asyncio.sleep(0.02)  # poll interval while the child binds its socket

    async def _watch(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._stopping:
            code = await self.process.wait()
            if self._stopping:
                return
            self.last_exit = code
            uptime = time.monotonic() - (self._started_monotonic or time.monotonic())
            self.health = "restarting"
            self._ready.clear()
            if uptime > STABLE_AFTER:
                backoff = BACKOFF_FIRST
            log.warning("instance %s exited with %s after %.1fs; restarting in %.1fs", self.name, code, uptime, backoff)
            self.on_event("instance.crashed", {"instance": self.name, "exit_code": code, "uptime_seconds": round(uptime, 3), "restart_in_seconds": backoff})
            await asyncio.sleep(backoff)  # the backoff itself, not synchronisation
            backoff = min(backoff * 2, BACKOFF_MAX)
            self.restarts += 1
            try:
                await self._spawn()
                self.on_event("instance.restarted", {"instance": self.name, "pid": self.process.pid, "restarts": self.restarts})
            except ControlError as exc:
                log.error("instance %s failed to restart: %s", self.name, exc)
                self.health = "failed"
                if self.process.returncode is None:
                    self.process.kill()
