"""The asyncio PostgreSQL server: sockets around ServerProtocol and Session.

One task per client connection:

  1. startup (bounded by auth_timeout): answer SSLRequest ('N', or 'S' + TLS
     when a certificate is configured), route CancelRequest, ask the Backend
     for the user's verifier, run SCRAM, open the database session, send
     ParameterStatus / BackendKeyData / ReadyForQuery;
  2. query phase, on the session's own thread: a plaintext connection's
     socket is handed over to that thread, which then reads, feeds the
     protocol, runs the events on the Session and writes the answer with
     blocking calls (which release the GIL, as statement steps do). No
     event-loop round trip per message: that halved the per-query cost.
     Repeated prepared read-only batches are answered by the session's
     native loop (native/wireloop.c, see docs/pgwire.md) without the GIL;
     what it does not serve comes back here untouched. A TLS
     connection stays on the event loop (asyncio owns its SSL state) and hops
     to the same thread once per read instead. Either way, while a
     transaction is open a read waits at most idle_in_transaction_timeout
     (then FATAL 25P03 and close), and the event loop never runs SQL.

A malformed or hostile client only ever ends its own task (the protocol
queues a FATAL error and the task closes the socket); the listener is never
involved.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import secrets
import socket
import ssl

from . import protocol as P
from . import sqlstate as S
from .backend import Backend
from .errors import PgError, fatal
from .exchange import exchange
from .session import Session
from .wireloop import REPORT_MS

try:
    from ..._native._core import LOOP_OS_ERROR, LOOP_REPORT, LOOP_STEP_ERROR
except ImportError:  # a build without the loop: sessions have none (Session.open_wire_loop)
    LOOP_OS_ERROR = LOOP_REPORT = LOOP_STEP_ERROR = None

log = logging.getLogger("rustymt.pgwire")
READ_BYTES = 256 * 1024
_NOT_SESSION_WORK = (P.Closed, P.Terminate)   # events the server handles, not Session.run


class PgServer:
    def __init__(self, backend: Backend, *, max_message_bytes: int = 64 << 20,
                 idle_in_transaction_timeout: float = 600, tls_cert: str = "", tls_key: str = "",
                 auth_timeout: float = 60.0, native_loop: bool = True):
        self.backend = backend
        # Serve repeated prepared read-only batches from native/wireloop.c
        # (False: every round trip through Python; the bench's baseline).
        self.native_loop = native_loop
        self.max_message_bytes = max_message_bytes
        self.idle_in_transaction_timeout = idle_in_transaction_timeout or None
        self.auth_timeout = auth_timeout
        self.ssl_context = None
        if tls_cert and tls_key:
            self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ssl_context.load_cert_chain(tls_cert, tls_key)
        self.sessions: dict[int, tuple[int, Session]] = {}   # pid -> (secret, session)
        self._server = None
        self._tasks: set[asyncio.Task] = set()
        self._clients: set = set()

    @classmethod
    def from_config(cls, cfg, backend: Backend) -> "PgServer":
        """Build from rustymt.config settings (section [pgwire])."""
        section = cfg.pgwire
        return cls(backend, max_message_bytes=section.max_message_bytes,
                   idle_in_transaction_timeout=section.idle_in_transaction_timeout_seconds,
                   tls_cert=section.tls_cert, tls_key=section.tls_key)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; return the bound port (port 0 = ephemeral)."""
        self._server = await asyncio.start_server(self._client_task, host, port, backlog=1024)
        return self._server.sockets[0].getsockname()[1]

    async def close(self):
        if self._server is not None:
            self._server.close()
        for state in list(self._clients):
            if state.raw is not None:
                try:
                    state.raw.shutdown(socket.SHUT_RDWR)  # wakes its thread's recv()
                except OSError:
                    pass
        if self._server is not None:
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client_task(self, reader, writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._client(reader, writer)
        except asyncio.CancelledError:
            pass  # server shutdown: the connection is already cleaned up
        finally:
            self._tasks.discard(task)

    # -- one connection ------------------------------------------------------------------------
    async def _client(self, reader, writer):
        proto = P.ServerProtocol(self.max_message_bytes, tls_available=self.ssl_context is not None)
        state = _Client(proto, reader, writer)
        self._clients.add(state)
        try:
            try:
                started = await asyncio.wait_for(self._startup(state), self.auth_timeout)
            except asyncio.TimeoutError:
                proto.fail(fatal(S.CONNECTION_FAILURE, "timeout expired during authentication"))
                started = False
            if started and not state.tls:
                await self._query_thread(state)
            elif started:
                await self._query_loop(state)
            await state.write(proto.data_to_send())
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one client's bug must not reach the listener
            log.exception("pgwire: client task failed")
        finally:
            await self._cleanup(state)

    async def _startup(self, state) -> bool:
        proto = state.proto
        events: list = []
        while True:
            if not events:
                await state.write(proto.data_to_send())
                data = await state.reader.read(READ_BYTES)
                if not data:
                    return False
                events = proto.feed(data)
                continue
            event = events.pop(0)
            kind = type(event)
            if kind is P.SSLRequest:
                accept = self.ssl_context is not None
                proto.answer_ssl(accept)
                await state.write(proto.data_to_send())
                if proto.closed:
                    return False
                if accept:
                    await state.writer.start_tls(self.ssl_context)
                    state.tls = True
                events = proto.resume()
            elif kind is P.CancelRequest:
                self._cancel(event.pid, event.secret)
                return False
            elif kind is P.Startup:
                try:
                    verifier = await self.backend.verifier(event.database, event.user)
                except PgError as error:
                    proto.fail(error)
                    return False
                proto.start_auth(verifier)
                events = proto.resume()
            elif kind is P.Authenticated:
                try:
                    db = await self.backend.open_session(event.database, event.user)
                except PgError as error:
                    proto.fail(error)
                    return False
                state.db = db
                pid = self._new_pid()
                secret = secrets.randbits(32)
                session = Session(db, event.database, event.user, pid, flush=state.flush_from_thread,
                                  parameters=db.parameters)
                session.settings["application_name"] = proto.application_name
                session.settings["client_encoding"] = proto.client_encoding
                state.session = session
                state.pid = pid
                self.sessions[pid] = (secret, session)
                state.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"pgwire-{pid}")
                state.events = proto.session_ready(session.parameter_status(), pid, secret)
                return True
            elif kind is P.Closed:
                return False

    async def _query_thread(self, state):
        """Hand the socket to the session's thread and wait until it is done."""
        transport = state.writer.transport
        transport.pause_reading()
        if transport.get_write_buffer_size():
            # Startup replies still queued (rare; a few hundred bytes): with a
            # zero high-water mark drain() returns only once the buffer is empty.
            transport.set_write_buffer_limits(high=0)
            await state.writer.drain()
        sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
        transport.abort()  # closes asyncio's descriptor only; `sock` keeps the connection
        state.raw = sock
        state.session.flush = sock.sendall
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(state.executor, self._serve_blocking, state, sock)
        finally:
            sock.close()

    def _serve_blocking(self, state, sock):
        """The query phase of a plaintext session, on its own thread.

        Each round trip is one exchange: send the answer, wait for the next
        bytes, under a single release of the GIL (see exchange.py). With the
        session's native loop (native/wireloop.c) the exchange also answers
        repeated prepared read-only batches in C, and returns here only with
        bytes Python must run (or latencies to report, or end of stream)."""
        proto, session = state.proto, state.session
        sock.setblocking(True)
        fd = sock.fileno()
        inbuf = bytearray(READ_BYTES)
        idle_timeout = self.idle_in_transaction_timeout
        loop = session.open_wire_loop(self.max_message_bytes) if self.native_loop else None
        events = state.events
        try:
            while True:
                # The protocol ends a batch with Closed/Terminate, if at all.
                work = events[:-1] if events and type(events[-1]) in _NOT_SESSION_WORK else events
                out = session.run(work) if work else b""
                pending = proto.data_to_send()
                if pending:
                    out += pending
                if proto.closed:
                    if out:
                        sock.sendall(out)
                    return
                idle = session.status() == b"I"
                if not (loop is not None and idle and proto.between_messages and session.loop_may_serve()):
                    try:
                        data = exchange(fd, out, inbuf, idle_timeout if idle_timeout and not idle else -1.0)
                    except socket.timeout:
                        return self._idle_timeout(proto, sock)
                else:
                    status, data, latencies, reused, step_error, os_error = loop.run(
                        fd, out, inbuf, -1.0, True, REPORT_MS)
                    if latencies:
                        session.loop_served(latencies, reused)
                    if status == LOOP_REPORT:
                        events = []
                        continue
                    if status == LOOP_OS_ERROR:
                        raise OSError(os_error, os.strerror(os_error))
                    if status == LOOP_STEP_ERROR:
                        session.loop_step_failed(*step_error)
                if not data:
                    return
                events = proto.feed(data)
        except OSError:
            return  # the client went away (or the server is closing its socket)

    @staticmethod
    def _idle_timeout(proto, sock):
        proto.fail(fatal(S.IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
                         "terminating connection due to idle-in-transaction timeout"))
        sock.sendall(proto.data_to_send())

    async def _query_loop(self, state):
        proto, session = state.proto, state.session
        loop = asyncio.get_running_loop()
        events = state.events
        while True:
            work = [e for e in events if not isinstance(e, (P.Closed, P.Terminate))]
            if work:
                out = await loop.run_in_executor(state.executor, session.run, work)
                await state.write(out)
            await state.write(proto.data_to_send())
            if proto.closed:
                return
            timeout = self.idle_in_transaction_timeout if session.status() != b"I" else None
            try:
                data = await asyncio.wait_for(state.reader.read(READ_BYTES), timeout)
            except asyncio.TimeoutError:
                proto.fail(fatal(S.IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
                                 "terminating connection due to idle-in-transaction timeout"))
                return
            if not data:
                return
            events = proto.feed(data)

    async def _cleanup(self, state):
        self._clients.discard(state)
        if state.pid is not None:
            self.sessions.pop(state.pid, None)
        if state.session is not None:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(state.executor, state.session.close)
            except Exception:  # noqa: BLE001 - closing must go on
                log.exception("pgwire: closing session failed")
        if state.executor is not None:
            state.executor.shutdown(wait=False)
        if state.db is not None:
            try:
                self.backend.session_closed(state.db)
            except Exception:  # noqa: BLE001
                log.exception("pgwire: backend.session_closed failed")
        if state.raw is None:
            state.writer.close()
            try:
                await state.writer.wait_closed()
            except (ConnectionError, OSError, ssl.SSLError):
                pass

    def _new_pid(self) -> int:
        while True:
            pid = secrets.randbelow(1 << 30) + 1
            if pid not in self.sessions:
                return pid

    def _cancel(self, pid, secret):
        entry = self.sessions.get(pid)
        if entry is not None and secrets.compare_digest(entry[0].to_bytes(4, "big"), secret.to_bytes(4, "big")):
            entry[1].cancel()


class _Client:
    """Per-connection state the server task keeps."""

    def __init__(self, proto, reader, writer):
        self.proto, self.reader, self.writer = proto, reader, writer
        self.loop = asyncio.get_running_loop()
        self.session = None
        self.db = None
        self.pid = None
        self.executor = None
        self.events = []
        self.tls = False
        self.raw = None     # the socket, once the session's thread owns it

    async def write(self, data: bytes):
        if data:
            self.writer.write(data)
            await self.writer.drain()

    def flush_from_thread(self, data: bytes):
        """Called by the session's worker thread with a big result chunk."""
        asyncio.run_coroutine_threadsafe(self.write(data), self.loop).result()
