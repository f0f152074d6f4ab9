"""A real webhook receiver: aiohttp on loopback in a thread of its own.

    receiver = Receiver(secret="...").start()      # port picked by the kernel, kept across stop/start
    receiver.url                                    # http://127.0.0.1:<port>/hook
    receiver.stop(); receiver.start()               # "down for a while" on the same port
    receiver.received                               # [(headers, raw body, signature_ok)]
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading

from aiohttp import web

from rustymt.events.webhooks import SIGNATURE_HEADER, verify


class Receiver:
    def __init__(self, secret: str, port: int | None = None):
        self.secret = secret
        self.port = port or _free_port()
        self.received: list[tuple[dict, bytes, bool]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ok = verify(self.secret, body, request.headers.get(SIGNATURE_HEADER, ""))
        with self._lock:
            self.received.append((dict(request.headers), body, ok))
        return web.Response(status=200 if ok else 401)

    def start(self) -> "Receiver":
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/hook", self._handle)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "receiver did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def events(self) -> list[dict]:
        with self._lock:
            return [json.loads(body) for _headers, body, _ok in self.received]

    def all_signed(self) -> bool:
        with self._lock:
            return all(ok for _h, _b, ok in self.received)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tenant_ports(count: int = 40) -> dict[str, str]:
    """RUSTYMT_TENANT_PORTS: a random free range, so parallel daemons (other developers') do not collide."""
    import random

    while True:
        low = random.randrange(30000, 60000 - count)
        try:
            probes = []
            for port in range(low, low + count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return {"RUSTYMT_TENANT_PORTS": f"{low}-{low + count - 1}"}
