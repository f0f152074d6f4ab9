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

Ending sessions (suspend, detach, close IMMEDIATE): a FATAL 57P01
ErrorResponse is written to the client's transport from the event loop (whole
messages only, so it cannot interleave with a result being written), the
running statement is interrupted, and the transport is closed; the wire
server's own cleanup then rolls back and hands the connection back
(TenantBackend.session_closed), which is what close_pdb waits for.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading

from rustymt.engine import lockdown, storage
from rustymt.engine.isolation import Quota
from rustymt.engine.pgwire import sqlstate as S
from rustymt.engine.pgwire.backend import Backend, DatabaseSession
from rustymt.engine.pgwire.errors import fatal
from rustymt.engine.pgwire.server import PgServer
from rustymt.engine.sessions import EngineSession, SqlError, StatementCounter, open_session_connection

log = logging.getLogger("rustymt.instance")

OPEN_MODES = ("READ_WRITE", "READ_ONLY", "UPGRADE", "MIGRATE")
RESTRICTED_MODES = ("UPGRADE", "MIGRATE")
TENANT_STATES = ("active", "suspended", "maintenance", "migrating")


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
        self.dictionary()

    def dictionary(self) -> dict:
        """The PDB's system.db contents, re-read when the file changed."""
        path = os.path.join(self.folder, storage.DICTIONARY_FILE)
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            dictionary = storage.read_dictionary(self.folder)
            lock = dictionary.get("lockdown")
            dictionary["profile_rules"] = lockdown.parse_rules(lock["rules"]) if lock else []
            self._dictionary, self._stamp = dictionary, stamp
        return self._dictionary

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
                                       d["profile_rules"], t.statements, t.vfs)
        conn.lockdown_profile = (d["lockdown"] or {}).get("profile")
        return conn

    def apply_lockdown(self) -> None:
        """Re-install every live session's authorizer with the current profile."""
        d = self.dictionary()
        rules = lockdown.authorizer_rules(d["profile_rules"])
        for session in list(self.sessions.values()):
            conn = session.connection
            if not conn.closed:
                conn.set_authorizer(rules)
                conn.lockdown_profile = (d["lockdown"] or {}).get("profile")


class WireLink:
    """One TCP connection on a tenant port."""
    __slots__ = ("transport", "session", "pdb")

    def __init__(self):
        self.transport = None
        self.session: DatabaseSession | None = None
        self.pdb: OpenPdb | None = None

    def terminate(self, error_bytes: bytes) -> None:
        if self.session is not None:
            self.session.connection.interrupt()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(error_bytes)
            transport.close()


_current_link: contextvars.ContextVar[WireLink | None] = contextvars.ContextVar("rustymt_wire_link", default=None)


class _CountingTransport:
    """The transport the wire server writes to: counts bytes out."""

    def __init__(self, transport, tenant: "TenantRuntime"):
        self._transport = transport
        self._tenant = tenant

    def write(self, data):
        self._tenant.bytes_out += len(data)
        self._transport.write(data)

    def writelines(self, chunks):
        for chunk in chunks:
            self.write(chunk)

    def __getattr__(self, name):
        return getattr(self._transport, name)


class _CountingProtocol(asyncio.StreamReaderProtocol):
    """StreamReaderProtocol that counts bytes in and hands out a counting transport."""

    def __init__(self, tenant: "TenantRuntime", link: WireLink, loop):
        self._tenant = tenant
        self._link = link
        reader = asyncio.StreamReader(loop=loop)
        super().__init__(reader, self._serve, loop=loop)

    def connection_made(self, transport):
        self._link.transport = transport
        super().connection_made(_CountingTransport(transport, self._tenant))

    def data_received(self, data):
        self._tenant.bytes_in += len(data)
        super().data_received(data)

    async def _serve(self, reader, writer):
        tenant, link = self._tenant, self._link
        tenant.links.add(link)
        _current_link.set(link)
        try:
            await tenant.pg._client_task(reader, writer)
        finally:
            tenant.links.discard(link)


class TenantRuntime:
    def __init__(self, tenant_id: str, slot: int, quota: Quota, state: str, vfs: str | None, make_wire_server=PgServer):
        self.tenant_id, self.slot, self.quota, self.state, self.vfs = tenant_id, slot, quota, state, vfs
        self.port: int | None = None
        self.listen_host = "127.0.0.1"
        self.pdbs: dict[str, OpenPdb] = {}
        self.links: set[WireLink] = set()
        self.bytes_in = 0
        self.bytes_out = 0
        self.statements = StatementCounter()
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
        self._listener = await loop.create_server(lambda: _CountingProtocol(self, WireLink(), loop),
                                                  host, port, backlog=1024)
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
        encoded = error.encode()
        pdbs = [pdb] if pdb is not None else list(self.pdbs.values())
        ended = sum(len(p.sessions) for p in pdbs)
        links = [link for link in self.links if pdb is None or link.pdb is pdb]
        for link in links:
            link.terminate(encoded)
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
        session = EngineSession(conn, user, pdb)
        pdb.add_session(session)
        return session


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
        if pdb.closing or tenant.pdbs.get(pdb.pdb_id) is not pdb or tenant.state == "suspended":
            conn.close()  # closed or suspended while the connection was being opened
            raise tenant.admission_error(tenant.pdb_by_name(database), database) or \
                fatal(S.CANNOT_CONNECT_NOW, f'database "{database}" is closing')
        admin = bool(pdb.dictionary()["users"].get(user, {}).get("is_admin"))
        session = DatabaseSession(conn, readonly=pdb.readonly, tenant=tenant.slot, write_lock=pdb.write_lock,
                                  parameters={"is_superuser": "on" if admin else "off"})
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
