"""Clients for the GraphQL tests: `gql(...)` posts one operation over HTTP;
`WsClient` speaks graphql-transport-ws on aiohttp's websocket client.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os

import aiohttp

from tests.daemon import Daemon

_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_names)}"


def gql(daemon: Daemon, query: str, variables: dict | None = None, token=Daemon._ADMIN, headers=None):
    body = {"query": query}
    if variables is not None:
        body["variables"] = variables
    return daemon.request("POST", "/graphql", json=body, token=token, headers=headers)


def data_of(response) -> dict:
    assert response.status == 200, response.text
    body = response.json
    assert not body.get("errors"), body
    return body["data"]


def error_codes(response) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in response.json.get("errors", [])]


class WsClient:
    """graphql-transport-ws over aiohttp; every receive has a deadline."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws

    @classmethod
    async def connect(cls, daemon: Daemon, protocols=("graphql-transport-ws",)) -> "WsClient":
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"ws://{daemon.host}:{daemon.port}/graphql", protocols=protocols)
        return cls(session, ws)

    @classmethod
    @contextlib.asynccontextmanager
    async def opened(cls, daemon: Daemon, token: str):
        """A connected client past connection_ack; closed on exit."""
        client = await cls.connect(daemon)
        try:
            await client.init(token)
            yield client
        finally:
            await client.close()

    async def send(self, message: dict) -> None:
        await self.ws.send_str(json.dumps(message))

    async def receive(self, timeout: float = 5.0) -> dict:
        message = await asyncio.wait_for(self.ws.receive(), timeout)
        if message.type is not aiohttp.WSMsgType.TEXT:
            return {"type": "__closed__", "code": self.ws.close_code, "message": message}
        return json.loads(message.data)

    async def init(self, token: str) -> None:
        await self.send({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        assert (await self.receive())["type"] == "connection_ack"

    async def subscribe(self, op_id: str, query: str, variables: dict | None = None) -> None:
        """Subscribe, then ping/pong: the server handles messages in order, so after
        the pong the subscription is registered with the event bus."""
        await self.send({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}})
        await self.send({"type": "ping"})
        while True:
            message = await self.receive()
            if message["type"] == "pong":
                return
            if message["type"] in ("error", "__closed__"):
                raise AssertionError(f"subscribe refused: {message}")

    async def closed_with(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; the close code."""
        while True:
            message = await asyncio.wait_for(self.ws.receive(), timeout)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()
