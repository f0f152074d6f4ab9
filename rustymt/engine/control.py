"""The control protocol between rustymtd and its engine instances (version 1).

Transport: a Unix stream socket, <data_dir>/run/<instance>.sock, mode 0600 (only
the daemon's user may drive an instance).

Framing: a 4-byte big-endian unsigned length, then that many bytes of UTF-8
JSON. Frames over MAX_FRAME_BYTES are a protocol error and close the
connection.

    request   {"v": 1, "id": 7, "op": "open_pdb", "args": {...}}
    success   {"v": 1, "id": 7, "ok": true, "result": {...}}
    failure   {"v": 1, "id": 7, "ok": false, "error": {"code": "...", "message": "..."}}

Requests may be pipelined on one connection; every response echoes its
request's id, and responses may come back in any order (a slow close_pdb does
not hold up a stats call). A request with a different "v" is answered with
VERSION_MISMATCH and the connection stays usable, so a newer daemon can probe
an older instance. Error codes are the CONTROL_ERRORS below; the daemon maps
them onto the API's error table.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import struct
from typing import Any, Awaitable, Callable

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 16 << 20
_LENGTH = struct.Struct(">I")

log = logging.getLogger(__name__)

CONTROL_ERRORS = {
    "BAD_REQUEST": "the request is malformed or its arguments are wrong",
    "UNKNOWN_OP": "the instance does not implement this operation",
    "VERSION_MISMATCH": "the request's protocol version is not spoken here",
    "NOT_FOUND": "the tenant or PDB is not attached to this instance",
    "INVALID_STATE": "the operation is not allowed in the object's current state",
    "BUSY": "the object is in use (sessions still open)",
    "INTERNAL": "the instance failed; details are in its log",
    "TIMEOUT": "no answer within the deadline",
    "UNAVAILABLE": "the instance is not running or not reachable",
    "SQL_ERROR": "a statement failed; the error carries its SQLSTATE",
}


class ControlError(Exception):
    """A refusal or failure reported through the control protocol."""

    def __init__(self, code: str, message: str, sqlstate: str | None = None):
        assert code in CONTROL_ERRORS, code
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.sqlstate = sqlstate  # set for SQL_ERROR: the statement's SQLSTATE

    def to_dict(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.sqlstate is not None:
            error["sqlstate"] = self.sqlstate
        return error


def encode_frame(message: dict) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_FRAME_BYTES:
        raise ControlError("BAD_REQUEST", f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _LENGTH.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> dict | None:
    """The next frame, or None on a clean end of stream between frames."""
    try:
        header = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ControlError("BAD_REQUEST", "stream ended inside a frame header") from None
        return None
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ControlError("BAD_REQUEST", f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ControlError("BAD_REQUEST", "stream ended inside a frame") from None
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError("BAD_REQUEST", f"frame is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ControlError("BAD_REQUEST", "frame is not a JSON object")
    return message


OpHandler = Callable[[dict], Awaitable[dict]]


class ControlServer:
    """Serves ops (name -> async handler(args) -> result dict) on a Unix socket."""

    def __init__(self, path: str, handlers: dict[str, OpHandler]):
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        old_umask = os.umask(0o177)  # the socket is created 0600
        try:
            self._server = await asyncio.start_unix_server(self._serve_connection, path=self.path)
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(asyncio.current_task())
        pending: set[asyncio.Task] = set()
        write_lock = asyncio.Lock()
        try:
            while True:
                try:
                    request = await read_frame(reader)
                except ControlError as exc:
                    log.warning("control connection dropped: %s", exc)
                    return
                if request is None:
                    return
                task = asyncio.create_task(self._answer(request, writer, write_lock))
                pending.add(task)
                task.add_done_callback(pending.discard)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for task in pending:
                task.cancel()
            writer.close()
            self._connections.discard(asyncio.current_task())

    async def _answer(self, request: dict, writer: asyncio.StreamWriter, write_lock: asyncio.Lock) -> None:
        request_id = request.get("id")
        try:
            if request.get("v") != PROTOCOL_VERSION:
                raise ControlError("VERSION_MISMATCH", f"this instance speaks version {PROTOCOL_VERSION}")
            op, args = request.get("op"), request.get("args", {})
            if not isinstance(op, str) or not isinstance(args, dict) or not isinstance(request_id, int):
                raise ControlError("BAD_REQUEST", "a request needs an integer id, a string op and an object args")
            handler = self.handlers.get(op)
            if handler is None:
                raise ControlError("UNKNOWN_OP", f"unknown op {op!r}")
            result = await handler(args)
            response = {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result or {}}
        except ControlError as exc:
            response = {"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": exc.to_dict()}
        except Exception as exc:  # a handler bug must not kill the instance's control plane
            log.exception("control op %r failed", request.get("op"))
            response = {"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": {"code": "INTERNAL", "message": type(exc).__name__}}
        with contextlib.suppress(ConnectionError):
            async with write_lock:
                writer.write(encode_frame(response))
                await writer.drain()


class ControlClient:
    """The daemon's side: pipelined requests with ids and per-request deadlines."""

    def __init__(self, path: str):
        self.path = path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiters: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._reader_task: asyncio.Task | None = None
        self._write_lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(self.path)
        except OSError as exc:
            raise ControlError("UNAVAILABLE", f"cannot connect to {self.path}: {exc.strerror}") from None
        self._reader_task = asyncio.create_task(self._read_responses())

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._fail_waiters("UNAVAILABLE", "control connection closed")
        self._writer = None

    async def request(self, op: str, args: dict | None = None, timeout: float = 10.0) -> dict:
        if not self.connected:
            await self.connect()
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        try:
            async with self._write_lock:
                self._writer.write(encode_frame({"v": PROTOCOL_VERSION, "id": request_id, "op": op, "args": args or {}}))
                await self._writer.drain()
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise ControlError("TIMEOUT", f"{op} got no answer within {timeout}s") from None
        except ConnectionError as exc:
            raise ControlError("UNAVAILABLE", f"control connection lost: {exc}") from None
        finally:
            self._waiters.pop(request_id, None)

    async def _read_responses(self) -> None:
        try:
            while True:
                response = await read_frame(self._reader)
                if response is None:
                    break
                future = self._waiters.get(response.get("id"))
                if future is None or future.done():
                    continue  # answer to a request that already timed out
                if response.get("ok"):
                    future.set_result(response.get("result", {}))
                else:
                    error = response.get("error") or {}
                    code = error.get("code") if error.get("code") in CONTROL_ERRORS else "INTERNAL"
                    sqlstate = error.get("sqlstate") if isinstance(error.get("sqlstate"), str) else None
                    future.set_exception(ControlError(code, str(error.get("message", "")), sqlstate))
        except (ControlError, ConnectionError):
            pass
        finally:
            self._fail_waiters("UNAVAILABLE", "control connection lost")
            if self._writer is not None:
                self._writer.close()

    def _fail_waiters(self, code: str, message: str) -> None:
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(ControlError(code, message))
