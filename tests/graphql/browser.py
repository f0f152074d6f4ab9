"""Headless Chromium (Debian's) driven over the DevTools protocol with aiohttp,
and GraphiQL installed from the npm registry into a cache directory.

Chromium runs with the flags this machine needs (no sandbox as root, no GPU,
no background networking: the closed network refuses Google's hosts) and
its own empty profile; the DevTools port is read from the profile's
DevToolsActivePort file, never guessed.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import time

import aiohttp

from tests.conftest import wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1")
GRAPHIQL_PACKAGES = ("graphiql@3.9.0", "react@18.3.1", "react-dom@18.3.1")  # as rustymt.api.graphql.explorer.ASSETS


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rustymt-tests", "graphiql-" + "-".join(p.replace("@", "") for p in GRAPHIQL_PACKAGES))


def install_graphiql() -> str:
    """node_modules holding GraphiQL and React, installed once per cache dir; returns its path."""
    prefix = cache_dir()
    modules = os.path.join(prefix, "node_modules")
    if not os.path.isfile(os.path.join(modules, "graphiql", "graphiql.min.js")):
        os.makedirs(prefix, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix", prefix, *GRAPHIQL_PACKAGES],
                       check=True, capture_output=True, timeout=300)
    return modules


class Chromium:
    def __init__(self, process: subprocess.Popen, profile: str):
        self.process = process
        self.profile = profile
        self.port = 0

    @classmethod
    def start(cls, profile: str) -> "Chromium":
        process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        browser = cls(process, profile)
        port_file = os.path.join(profile, "DevToolsActivePort")
        try:
            wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(), 30, what="Chromium's DevTools port")
            browser.port = int(open(port_file).read().split()[0])
        except BaseException:
            browser.stop()
            raise
        return browser

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    async def page(self, session: aiohttp.ClientSession) -> "Page":
        async with session.get(f"http://127.0.0.1:{self.port}/json/list") as answer:
            targets = await answer.json(content_type=None)
        target = next(t for t in targets if t["type"] == "page")
        return Page(await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0))


class Page:
    """One tab: send DevTools commands, evaluate JavaScript, wait for conditions."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.ids = itertools.count(1)

    async def command(self, method: str, **params) -> dict:
        message_id = next(self.ids)
        await self.ws.send_str(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads((await self.ws.receive(timeout=30)).data)
            if message.get("id") == message_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]

    async def evaluate(self, expression: str):
        result = await self.command("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_until(self, expression: str, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.1)  # polling interval of a deadline-bounded wait
