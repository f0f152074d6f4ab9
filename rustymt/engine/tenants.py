"""What an instance holds per tenant: its open PDBs, its sessions, its wire
listener — and the wire server's Backend that enforces the tenant rules.

    TenantRuntime  slot, quota, state; the PgServer on the tenant's port;
                   every TCP connection on it (WireLink, bytes counted at the
                   transport); its open PDBs
    OpenPdb        one open PDB: folder, open mode, dictionary (users with
                   SCRAM verifiers, tablespaces, lockdown) re-read when
                   system.db changes, live sessions, the in-process write lock
    TenantBackend  the pgwire Backend: database name -> PDB (3D000), tenant
                   suspended (57P01), max_connections (53300), UPGRADE and
                   MIGRATE admit only the PDB admin (28000)

Ending sessions (suspend, detach, close IMMEDIATE): see WireLink. The wire
server's own cleanup rolls back and hands the connection back
(TenantBackend.session_closed), which is what close_pdb waits for; the FATAL
57P01 is written after that, when nothing else writes to the socket.
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import socket
import struct
import threading

from rustymt.engine import lockdown, pdb_users, storage
from rustymt.engine.isolation import Quota
from rustymt.engine.pgwire import sqlstate as S
from rustymt.engine.pgwire.backend import Backend, DatabaseSession
from rustymt.engine.pgwire.errors import fatal
from rustymt.engine.pgwire.server import PgServer
from rustymt.engine.sessions import EngineSession, SqlError, StatementCounter, open_session_connection
from rustymt.sla.statements import StatementStats

log = logging.getLogger("rustymt.instance")

OPEN_MODES = ("READ_WRITE", "READ_ONLY", "UPGRADE", "MIGRATE")
RESTRICTED_MODES = ("UPGRADE", "MIGRATE")
TENANT_STATES = ("active", "suspended", "maintenance", "migrating")
GIB = 1 << 30


class OpenPdb:
    def __init__(self, pdb_id: str, tenant: "TenantRuntime", name: str, folder: str, mode: str):
        self.pdb_id, self.tenant, self.name, self.folder, self.mode = pdb_id, tenant, name, folder, mode
        # id -> DatabaseSession (wire) or EngineSession (execute op); by id: a
        # DatabaseSession is an unhashable dataclass
        self.sessions: dict[int, object] = {}
        self.write_lock = threading.Lock()  # writers of this PDB queue here (pgwire session contract)
        self.closing = False
        self.changed = asyncio.Event()      # a session ended (close_pdb waits on it)
        self._dictionary = None
        self._stamp = None
        self._generation = 0                # bumped by dictionary_changed()
        self.dictionary()

    def dictionary(self) -> dict:
        """The PDB's system.db contents, re-read when the file changed."""
        path = os.path.join(self.folder, storage.DICTIONARY_FILE)
        generation = self._generation  # read before the file: a write committed meanwhile re-reads next time
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino, generation)
        if stamp != self._stamp:
            dictionary = storage.read_dictionary(self.folder)
            lock = dictionary.get("lockdown")
            dictionary["profile_rules"] = lockdown.parse_rules(lock["rules"]) if lock else []
            self._dictionary, self._stamp = dictionary, stamp
        return self._dictionary

    def dictionary_changed(self) -> None:
        """system.db was just written in this process (pdb_users): re-read it at
        the next look even if its mtime and size look the same (coarse clock)."""
        self._generation += 1

    @property
    def readonly(self) -> bool:
        return self.mode == "READ_ONLY"

    def add_session(self, session) -> None:
        self.sessions[id(session)] = session

    def session_ended(self, session) -> None:
        self.sessions.pop(id(session), None)
        self.changed.set()

    def open_connection(self):
        d = self.dictionary()
        t = self.tenant
        conn = open_session_connection(self.folder, d["tablespaces"], t.slot, self.readonly,
                                       d["profile_rules"], t.statements, t.vfs, t.storage_budget())
        conn.lockdown_profile = (d["lockdown"] or {}).get("profile")
        return conn

    def storage_bytes(self) -> int:
        try:
            return storage.storage_bytes(self.folder)
        except OSError:
            return 0

    def apply_lockdown(self) -> None:
        """Re-install every live session's authorizer with the current profile."""
        d = self.dictionary()
        rules = lockdown.authorizer_rules(d["profile_rules"])
        for session in list(self.sessions.values()):
            conn = session.connection
            if not conn.closed:
                conn.set_authorizer(rules)
                conn.lockdown_profile = (d["lockdown"] or {}).get("profile")


_TCP_INFO_BYTES = struct.Struct("=QQ")  # struct tcp_info: tcpi_bytes_acked, tcpi_bytes_received
_TCP_INFO_OFFSET = 120                 # (Linux >= 4.2; the fields sit after the 64-bit pacing rates)


class WireLink:
    """One TCP connection on a tenant port, seen from outside the wire server.

    It keeps its own duplicate of the connection's socket, whatever the wire
    server does with its descriptors (asyncio transport, or a blocking socket
    on the session's thread), so that the instance can
      * count bytes without touching the wire server's hot path: the kernel's
        TCP_INFO byte counters of the connection (sent and acknowledged /
        received);
      * end the session: its connection refuses new statements with the
        FATAL error (a query already on its way gets it as its answer), the
        running statement is interrupted, the reading side is shut down (the
        wire server's recv() returns end-of-stream wherever it waits), and,
        once the wire server has let go, the FATAL ErrorResponse is written
        on the still-open connection, which is then closed.
    """
    __slots__ = ("sock", "session", "pdb", "farewell")

    def __init__(self, transport):
        raw = transport.get_extra_info("socket")
        self.sock = socket.socket(fileno=os.dup(raw.fileno())) if raw is not None else None
        self.session: DatabaseSession | None = None
        self.pdb: OpenPdb | None = None
        self.farewell: bytes | None = None

    def byte_counts(self) -> tuple[int, int]:
        """(bytes out, bytes in) of the connection so far."""
        if self.sock is None or self.sock.fileno() < 0:
            return 0, 0
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_OFFSET + _TCP_INFO_BYTES.size)
        except OSError:
            return 0, 0
        if len(info) < _TCP_INFO_OFFSET + _TCP_INFO_BYTES.size:
            return 0, 0
        return _TCP_INFO_BYTES.unpack_from(info, _TCP_INFO_OFFSET)

    def terminate(self, error) -> None:
        self.farewell = error.encode()
        if self.session is not None:
            self.session.connection.ended_with = error
            self.session.connection.interrupt()
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def close(self) -> None:
        """After the wire server is done with the connection."""
        if self.sock is None:
            return
        if self.farewell is not None:
            try:
                self.sock.setblocking(False)
                self.sock.send(self.farewell)  # a few hundred bytes into an idle socket buffer
            except OSError:
                pass
        self.sock.close()


_current_link: contextvars.ContextVar[WireLink | None] = contextvars.ContextVar("rustymt_wire_link", default=None)


class _LinkProtocol(asyncio.StreamReaderProtocol):
    """The wire server's StreamReaderProtocol, with a WireLink per connection."""

    def __init__(self, tenant: "TenantRuntime", loop):
        self._tenant = tenant
        self._link: WireLink | None = None
        super().__init__(asyncio.StreamReader(loop=loop), self._serve, loop=loop)

    def connection_made(self, transport):
        self._link = WireLink(transport)
        super().connection_made(transport)

    async def _serve(self, reader, writer):
        tenant, link = self._tenant, self._link
        tenant.links.add(link)
        _current_link.set(link)  # the Backend calls below run in this task: they find their link
        try:
            await tenant.pg._client_task(reader, writer)
        finally:
            tenant.links.discard(link)
            out, into = link.byte_counts()
            tenant.closed_bytes_out += out
            tenant.closed_bytes_in += into
            link.close()


class TenantRuntime:
    def __init__(self, tenant_id: str, slot: int, quota: Quota, state: str, vfs: str | None, make_wire_server=PgServer):
        self.tenant_id, self.slot, self.quota, self.state, self.vfs = tenant_id, slot, quota, state, vfs
        self.port: int | None = None
        self.listen_host = "127.0.0.1"
        self.pdbs: dict[str, OpenPdb] = {}
        self.links: set[WireLink] = set()
        self.closed_bytes_in = 0               # of connections already gone
        self.closed_bytes_out = 0
        self.statements = StatementCounter()
        self.statement_stats = StatementStats()  # latency sketch + outcomes for the SLA (rustymt.sla)
        self.reserved = 0                      # sessions being opened (counted against the limit)
        self.backend = TenantBackend(self)
        self.pg = make_wire_server(self.backend)
        self._listener: asyncio.AbstractServer | None = None

    # ---- listener

    async def listen(self, host: str, port: int) -> int:
        if self._listener is not None and (host, port) in ((self.listen_host, self.port), (self.listen_host, 0)):
            return self.port
        await self.stop_listening()
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(lambda: _LinkProtocol(self, loop), host, port, backlog=1024)
        self.listen_host = host
        self.port = self._listener.sockets[0].getsockname()[1]
        return self.port

    async def stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.is_serving()

    def network(self) -> dict:
        """Bytes on the tenant's port: connections gone plus live ones."""
        bytes_out, bytes_in = self.closed_bytes_out, self.closed_bytes_in
        for link in list(self.links):
            out, into = link.byte_counts()
            bytes_out += out
            bytes_in += into
        return {"bytes_in": bytes_in, "bytes_out": bytes_out}

    def storage_budget(self) -> int | None:
        """Bytes left of the storage quota over the tenant's open PDBs (None: no quota)."""
        if not self.quota.storage_gb:
            return None
        used = sum(pdb.storage_bytes() for pdb in list(self.pdbs.values()))
        return int(self.quota.storage_gb * GIB) - used

    # ---- sessions

    def session_count(self) -> int:
        return sum(len(pdb.sessions) for pdb in self.pdbs.values()) + self.reserved

    def pdb_by_name(self, name: str) -> OpenPdb | None:
        for pdb in self.pdbs.values():
            if pdb.name == name or pdb.pdb_id == name:
                return pdb
        return None

    def end_sessions(self, why: str, pdb: OpenPdb | None = None) -> int:
        """Terminate sessions (of one PDB, or all of the tenant incl. unauthenticated
        connections) with FATAL 57P01; returns how many sessions were ended."""
        error = fatal(S.ADMIN_SHUTDOWN, f"terminating connection due to administrator command: {why}")
        pdbs = [pdb] if pdb is not None else list(self.pdbs.values())
        ended = sum(len(p.sessions) for p in pdbs)
        links = [link for link in self.links if pdb is None or link.pdb is pdb]
        for link in links:
            link.terminate(error)
        for p in pdbs:
            for session in list(p.sessions.values()):
                if isinstance(session, EngineSession):
                    session.end(SqlError(S.ADMIN_SHUTDOWN, error.message))
                    p.session_ended(session)
        return ended

    async def wait_sessions_gone(self, pdb: OpenPdb, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pdb.sessions:
            pdb.changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(pdb.changed.wait(), remaining)
            except asyncio.TimeoutError:
                return not pdb.sessions
        return True

    def admission_error(self, pdb: OpenPdb | None, database: str):
        """Why a new session may not start now (a PgError), or None."""
        if self.state == "suspended":
            return fatal(S.ADMIN_SHUTDOWN, f'tenant "{self.tenant_id}" is suspended; new sessions are refused')
        if pdb is None:
            return fatal(S.INVALID_CATALOG_NAME, f'database "{database}" does not exist or is not open')
        if pdb.closing:
            return fatal(S.CANNOT_CONNECT_NOW, f'database "{database}" is closing')
        limit = self.quota.max_connections
        if limit and self.session_count() >= limit:
            self.statement_stats.rejected(S.TOO_MANY_CONNECTIONS)  # -> quota.exceeded (rustymt.metering.sampler)
            return fatal(S.TOO_MANY_CONNECTIONS, f'too many connections for tenant "{self.tenant_id}" '
                                                 f"(max_connections {limit})")
        return None

    async def open_engine_session(self, pdb: OpenPdb, user: str) -> EngineSession:
        """A session for the execute op: same admission rules as the wire, by user name
        (the control socket is the daemon's: no password)."""
        error = self.admission_error(pdb, pdb.name)
        if error is None:
            error = self.backend.mode_error(pdb, user)
        if error is not None:
            raise SqlError(error.code, error.message)
        self.reserved += 1
        try:
            conn = await asyncio.to_thread(pdb.open_connection)
        finally:
            self.reserved -= 1
        error = self.changed_meanwhile(pdb)
        if error is not None:
            conn.close()
            raise SqlError(error.code, error.message)
        session = EngineSession(conn, user, pdb)
        pdb.add_session(session)
        return session

    def changed_meanwhile(self, pdb: OpenPdb):
        """After a connection was opened off the loop: was the PDB closed or the
        tenant suspended in the meantime? (a PgError, or None)"""
        if pdb.closing or self.pdbs.get(pdb.pdb_id) is not pdb or self.state == "suspended":
            return self.admission_error(self.pdb_by_name(pdb.name), pdb.name) or \
                fatal(S.CANNOT_CONNECT_NOW, f'database "{pdb.name}" is closing')
        return None


class TenantBackend(Backend):
    """The wire server's Backend for one tenant (rules in the module docstring)."""

    def __init__(self, tenant: TenantRuntime):
        self.tenant = tenant

    def mode_error(self, pdb: OpenPdb, user: str):
        if pdb.mode in RESTRICTED_MODES:
            entry = pdb.dictionary()["users"].get(user)
            if entry is None or not entry["is_admin"]:
                return fatal(S.INVALID_AUTHORIZATION_SPECIFICATION,
                             f'database "{pdb.name}" is open in {pdb.mode} mode: only the PDB admin may connect')
        return None

    async def verifier(self, database, user):
        pdb = self.tenant.pdb_by_name(database)
        error = self.tenant.admission_error(pdb, database)
        if error is not None:
            raise error
        entry = pdb.dictionary()["users"].get(user)
        return entry["verifier"] if entry else None

    async def open_session(self, database, user):
        tenant = self.tenant
        pdb = tenant.pdb_by_name(database)
        error = tenant.admission_error(pdb, database) or self.mode_error(pdb, user)
        if error is not None:
            raise error
        tenant.reserved += 1
        try:
            conn = await asyncio.to_thread(pdb.open_connection)
        finally:
            tenant.reserved -= 1
        error = tenant.changed_meanwhile(pdb)
        if error is not None:
            conn.close()
            raise error
        admin = bool(pdb.dictionary()["users"].get(user, {}).get("is_admin"))
        session = DatabaseSession(conn, readonly=pdb.readonly, tenant=tenant.slot, write_lock=pdb.write_lock,
                                  parameters={"is_superuser": "on" if admin else "off"},
                                  on_statement=tenant.statement_stats.record,
                                  manage_users=functools.partial(pdb_users.execute, pdb, user))
        pdb.add_session(session)
        link = _current_link.get()
        if link is not None:
            link.session, link.pdb = session, pdb
        session.pdb = pdb
        return session

    def session_closed(self, session):
        try:
            session.connection.close()
        finally:
            pdb = getattr(session, "pdb", None)
            if pdb is not None:
                pdb.session_ended(session)
