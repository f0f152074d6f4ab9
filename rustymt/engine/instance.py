"""An engine instance process: `python -m rustymt.engine.instance`.

The data plane. The daemon starts one "shared" instance (every tenant whose
placement is shared) and one per dedicated tenant. An instance owns the SQLite
files of the PDBs it hosts, runs their sessions through the native core, serves
each tenant's PostgreSQL port, and takes orders only over its control socket
(rustymt.engine.control). It exits when its daemon goes away
(rustymt.engine.lifeline), so no instance is ever orphaned.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import signal
import sys
import time

from rustymt import config
from rustymt._native import _core
from rustymt.engine import lifeline, lockdown, storage
from rustymt.engine.control import PROTOCOL_VERSION, ControlError, ControlServer
from rustymt.engine.isolation import NativeCore, Quota
from rustymt.engine.pgwire.server import PgServer
from rustymt.engine.sessions import EngineSession, SqlError
from rustymt.engine.tenants import OPEN_MODES, TENANT_STATES, OpenPdb, TenantRuntime

log = logging.getLogger("rustymt.instance")

DEFAULT_CLOSE_TIMEOUT = 5.0      # close_pdb NORMAL: seconds to wait for sessions
CLOSE_GRACE_SECONDS = 5.0        # ended sessions: seconds to wait for their rollback
STATEMENT_THREADS = 64           # concurrent execute-op statements


class Instance:
    """What one instance hosts, and the control ops over it (docs/control-protocol.md)."""

    def __init__(self, name: str, data_dir: str, native: NativeCore, make_wire_server=PgServer):
        self.name = name
        self.data_dir = os.path.abspath(data_dir)
        self.native = native
        self.make_wire_server = make_wire_server   # backend -> PgServer (pgwire settings)
        self.started_monotonic = time.monotonic()
        self.started_at = time.time()
        self.tenants: dict[str, TenantRuntime] = {}
        self.pdbs: dict[str, OpenPdb] = {}                 # pdb_id -> open PDB (any tenant)
        self.engine_sessions: dict[str, EngineSession] = {}  # named execute-op sessions
        self.slot_owner: dict[int, str] = {}              # slots used in this process -> tenant
        # execute-op statements get their own threads: long statements must not
        # starve the default executor the control ops use
        self.statement_threads = concurrent.futures.ThreadPoolExecutor(STATEMENT_THREADS, thread_name_prefix="execute")
        self.stopping = asyncio.Event()

    def handlers(self):
        return {
            "hello": self.op_hello,
            "health": self.op_health,
            "attach_tenant": self.op_attach_tenant,
            "detach_tenant": self.op_detach_tenant,
            "set_tenant_state": self.op_set_tenant_state,
            "set_quota": self.op_set_quota,
            "open_pdb": self.op_open_pdb,
            "close_pdb": self.op_close_pdb,
            "set_lockdown": self.op_set_lockdown,
            "execute": self.op_execute,
            "end_session": self.op_end_session,
            "stats": self.op_stats,
            "shutdown": self.op_shutdown,
        }

    # ---- lookups

    def _tenant(self, args: dict) -> TenantRuntime:
        tenant_id = _require_str(args, "tenant_id")
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            raise ControlError("NOT_FOUND", f"tenant {tenant_id} is not attached")
        return tenant

    def _pdb(self, args: dict) -> OpenPdb:
        pdb_id = _require_str(args, "pdb_id")
        pdb = self.pdbs.get(pdb_id)
        if pdb is None:
            raise ControlError("NOT_FOUND", f"PDB {pdb_id} is not open in this instance")
        return pdb

    # ---- ops

    async def op_hello(self, args: dict) -> dict:
        return {"protocol": PROTOCOL_VERSION, "name": self.name, "pid": os.getpid(), "started_at": self.started_at}

    async def op_health(self, args: dict) -> dict:
        return {"status": "ok", "uptime_seconds": time.monotonic() - self.started_monotonic,
                "tenants": len(self.tenants), "pdbs": len(self.pdbs),
                "sessions": sum(t.session_count() for t in self.tenants.values())}

    async def op_attach_tenant(self, args: dict) -> dict:
        tenant_id = _require_str(args, "tenant_id")
        slot = args.get("slot")
        if not isinstance(slot, int) or isinstance(slot, bool) or not 1 <= slot < _core.MAX_TENANTS:
            raise ControlError("BAD_REQUEST", f"slot must be an integer in 1..{_core.MAX_TENANTS - 1}")
        port = args.get("port", 0)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ControlError("BAD_REQUEST", "port must be an integer in 0..65535")
        host = args.get("listen_host") or "127.0.0.1"
        state = args.get("state", "active")
        if state not in TENANT_STATES:
            raise ControlError("BAD_REQUEST", f"state must be one of {', '.join(TENANT_STATES)}")
        quota = _quota(args.get("quota"))
        for other in self.tenants.values():
            if other.slot == slot and other.tenant_id != tenant_id:
                raise ControlError("INVALID_STATE", f"slot {slot} is held by tenant {other.tenant_id}")
        tenant = self.tenants.get(tenant_id)
        if tenant is not None and tenant.slot != slot:
            raise ControlError("INVALID_STATE", f"tenant {tenant_id} is attached with slot {tenant.slot}; detach first")
        if tenant is None:
            if self.slot_owner.get(slot, tenant_id) != tenant_id:
                self.native.reset_counters(slot)  # a slot reused by another tenant starts from zero
            self.slot_owner[slot] = tenant_id
            tenant = TenantRuntime(tenant_id, slot, quota, state, self.native.vfs, self.make_wire_server)
        try:
            bound = await tenant.listen(host, port)
        except OSError as exc:
            raise ControlError("INVALID_STATE", f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self.tenants[tenant_id] = tenant
        tenant.quota = quota
        self.native.apply(slot, quota)
        await self._set_state(tenant, state)
        return {"tenant_id": tenant_id, "slot": slot, "port": bound, "listening": tenant.listening, "state": tenant.state}

    async def op_detach_tenant(self, args: dict) -> dict:
        tenant = self._tenant(args)
        ended = tenant.end_sessions("tenant detached")
        await tenant.stop_listening()
        for pdb in list(tenant.pdbs.values()):
            pdb.closing = True
            await tenant.wait_sessions_gone(pdb, CLOSE_GRACE_SECONDS)
            self._forget_pdb(pdb)
            await asyncio.to_thread(storage.record_open_mode, pdb.folder, "CLOSED")
        await tenant.pg.close()
        del self.tenants[tenant.tenant_id]
        self.native.release(tenant.slot)
        return {"tenant_id": tenant.tenant_id, "attached": False, "sessions_ended": ended}

    async def op_set_tenant_state(self, args: dict) -> dict:
        tenant = self._tenant(args)
        state = args.get("state")
        if state not in TENANT_STATES:
            raise ControlError("BAD_REQUEST", f"state must be one of {', '.join(TENANT_STATES)}")
        ended = await self._set_state(tenant, state)
        return {"tenant_id": tenant.tenant_id, "state": state, "sessions_ended": ended}

    async def _set_state(self, tenant: TenantRuntime, state: str) -> int:
        tenant.state = state
        if state == "suspended":
            return tenant.end_sessions("tenant suspended")
        return 0

    async def op_set_quota(self, args: dict) -> dict:
        tenant = self._tenant(args)
        quota = _quota(args.get("quota"))
        tenant.quota = quota
        settings = self.native.apply(tenant.slot, quota)
        return {"tenant_id": tenant.tenant_id, "applied": {
            "memory_quota_bytes": settings.memory_quota_bytes, "min_frames": settings.min_frames,
            "max_frames": settings.max_frames, "shares": settings.shares, "min_percent": settings.min_percent,
            "max_percent": settings.max_percent, "iops": settings.iops,
            "max_connections": quota.max_connections}}

    async def op_open_pdb(self, args: dict) -> dict:
        pdb_id = _require_str(args, "pdb_id")
        tenant = self._tenant(args)
        name = _require_str(args, "pdb_name")
        mode = args.get("mode", "READ_WRITE")
        if mode not in OPEN_MODES:
            raise ControlError("BAD_REQUEST", f"mode must be one of {', '.join(OPEN_MODES)}")
        folder = self._pdb_folder(_require_str(args, "path"))
        current = self.pdbs.get(pdb_id)
        if current is not None:
            if current.tenant is tenant and current.mode == mode:
                return {"pdb_id": pdb_id, "open_mode": mode}
            raise ControlError("INVALID_STATE", f"PDB {pdb_id} is already open ({current.mode}); close it first")
        if tenant.pdb_by_name(name) is not None:
            raise ControlError("INVALID_STATE", f"tenant {tenant.tenant_id} already has a PDB named {name} open")
        try:
            pdb = await asyncio.to_thread(OpenPdb, pdb_id, tenant, name, folder, mode)
            await asyncio.to_thread(storage.record_open_mode, folder, mode)
        except (OSError, _core.SQLiteError, ValueError) as exc:
            raise ControlError("INVALID_STATE", f"cannot open PDB {pdb_id}: {exc}") from None
        self.pdbs[pdb_id] = pdb
        tenant.pdbs[pdb_id] = pdb
        return {"pdb_id": pdb_id, "open_mode": mode}

    def _pdb_folder(self, path: str) -> str:
        root = os.path.realpath(storage.pdbs_dir(self.data_dir))
        folder = os.path.realpath(path)
        if os.path.dirname(folder) != root or os.path.basename(folder) == storage.SEED_ID:
            raise ControlError("BAD_REQUEST", f"path must be a PDB folder under {root} (not the seed)")
        if not os.path.isfile(os.path.join(folder, storage.DICTIONARY_FILE)):
            raise ControlError("NOT_FOUND", f"no PDB at {path}")
        return folder

    async def op_close_pdb(self, args: dict) -> dict:
        pdb = self._pdb(args)
        mode = args.get("mode", "NORMAL")
        if mode not in ("NORMAL", "IMMEDIATE"):
            raise ControlError("BAD_REQUEST", "mode must be NORMAL or IMMEDIATE")
        timeout = args.get("timeout_seconds", DEFAULT_CLOSE_TIMEOUT)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
            raise ControlError("BAD_REQUEST", "timeout_seconds must be a number >= 0")
        tenant = pdb.tenant
        pdb.closing = True  # no new sessions from here on
        ended = 0
        if mode == "IMMEDIATE":
            ended = tenant.end_sessions(f"database {pdb.name} closed", pdb)
            timeout = max(timeout, CLOSE_GRACE_SECONDS)
        if not await tenant.wait_sessions_gone(pdb, timeout):
            if mode == "NORMAL":
                pdb.closing = False
                raise ControlError("BUSY", f"PDB {pdb.pdb_id} still has {len(pdb.sessions)} session(s) after {timeout}s")
            log.error("PDB %s: %d session(s) did not end after IMMEDIATE close", pdb.pdb_id, len(pdb.sessions))
        self._forget_pdb(pdb)
        await asyncio.to_thread(storage.record_open_mode, pdb.folder, "CLOSED")
        return {"pdb_id": pdb.pdb_id, "sessions_ended": ended}

    def _forget_pdb(self, pdb: OpenPdb) -> None:
        self.pdbs.pop(pdb.pdb_id, None)
        pdb.tenant.pdbs.pop(pdb.pdb_id, None)
        for key, session in list(self.engine_sessions.items()):
            if session.pdb is pdb:
                del self.engine_sessions[key]

    async def op_set_lockdown(self, args: dict) -> dict:
        pdb = self._pdb(args)
        profile = args.get("profile")
        if profile is not None and not isinstance(profile, str):
            raise ControlError("BAD_REQUEST", "profile must be a string or null (null removes the profile)")
        try:
            rules = lockdown.parse_rules(args.get("rules", [])) if profile else []
        except ValueError as exc:
            raise ControlError("BAD_REQUEST", str(exc)) from None
        await asyncio.to_thread(storage.write_lockdown, pdb.folder, profile, lockdown.rules_json(rules))
        await asyncio.to_thread(pdb.apply_lockdown)
        return {"pdb_id": pdb.pdb_id, "profile": profile, "rules": len(rules), "sessions": len(pdb.sessions)}

    async def op_execute(self, args: dict) -> dict:
        pdb = self._pdb(args)
        user = _require_str(args, "user")
        sql = args.get("sql")
        params = args.get("params") or []
        if not isinstance(sql, str) or not isinstance(params, list):
            raise ControlError("BAD_REQUEST", "sql must be a string and params a list")
        key = args.get("session")
        session = self.engine_sessions.get(key) if key is not None else None
        if session is not None and (session.pdb is not pdb or session.user != user):
            raise ControlError("BAD_REQUEST", f"session {key} belongs to another PDB or user")
        try:
            if session is None:
                session = await pdb.tenant.open_engine_session(pdb, user)
                if key is not None:
                    self.engine_sessions[key] = session
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    self.statement_threads, session.execute, sql, params)
            finally:
                if key is None or session.ended is not None:
                    self._end_engine_session(session, key)
        except SqlError as exc:
            raise ControlError("SQL_ERROR", f"{exc.sqlstate}: {exc.message}", exc.sqlstate) from None
        result["rows"] = [[_jsonable(value) for value in row] for row in result["rows"]]
        return result

    def _end_engine_session(self, session: EngineSession, key: str | None) -> None:
        if key is not None and self.engine_sessions.get(key) is session:
            del self.engine_sessions[key]
        session.close()
        if session.pdb is not None:
            session.pdb.session_ended(session)

    async def op_end_session(self, args: dict) -> dict:
        key = _require_str(args, "session")
        session = self.engine_sessions.get(key)
        if session is None:
            raise ControlError("NOT_FOUND", f"no session {key}")
        await asyncio.to_thread(self._end_engine_session, session, key)
        return {"session": key, "ended": True}

    async def op_stats(self, args: dict) -> dict:
        tenants = [self._tenant(args)] if args.get("tenant_id") is not None else list(self.tenants.values())
        return {"tenants": {t.tenant_id: self._tenant_stats(t) for t in tenants}}  # counters + a few stat() calls

    def _tenant_stats(self, tenant: TenantRuntime) -> dict:
        native, slot = self.native, tenant.slot
        pdbs = {}
        for pdb in tenant.pdbs.values():
            size = pdb.storage_bytes()
            pdbs[pdb.pdb_id] = {"pdb_name": pdb.name, "open_mode": pdb.mode, "sessions": len(pdb.sessions),
                                "storage_bytes": size}
        return {
            "tenant_id": tenant.tenant_id, "slot": slot, "state": tenant.state, "port": tenant.port,
            "listening": tenant.listening,
            "memory": native.memory(slot), "cpu": native.cpu(slot), "io": native.io(slot),
            "buffer_pool": native.buffer_pool(slot),
            "network": tenant.network(),
            "sessions": sum(len(pdb.sessions) for pdb in tenant.pdbs.values()),
            "max_connections": tenant.quota.max_connections,
            "statements": tenant.statements.count,
            "statement_stats": tenant.statement_stats.snapshot(),
            "storage_bytes": sum(entry["storage_bytes"] for entry in pdbs.values()),
            "pdbs": pdbs,
        }

    async def op_shutdown(self, args: dict) -> dict:
        asyncio.get_running_loop().call_soon(self.stopping.set)
        return {"stopping": True}

    async def close(self) -> None:
        """End every session and listener (shutdown, SIGTERM, daemon gone)."""
        for tenant in list(self.tenants.values()):
            tenant.end_sessions("instance shutting down")
            await tenant.stop_listening()
        for tenant in list(self.tenants.values()):
            for pdb in list(tenant.pdbs.values()):
                await tenant.wait_sessions_gone(pdb, CLOSE_GRACE_SECONDS)
            await tenant.pg.close()
        self.statement_threads.shutdown(wait=False, cancel_futures=True)


def _quota(value) -> Quota:
    try:
        return Quota.from_args(value)
    except (TypeError, ValueError) as exc:
        raise ControlError("BAD_REQUEST", str(exc)) from None


def _jsonable(value):
    if isinstance(value, bytes):
        return "\\x" + value.hex()  # bytea text form
    return value


def _require_str(args: dict, name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise ControlError("BAD_REQUEST", f"{name} must be a non-empty string")
    return value


async def serve(name: str, data_dir: str, socket_path: str, cfg) -> None:
    instance = Instance(name, data_dir, NativeCore(cfg.engine.pool_frames),
                        make_wire_server=lambda backend: PgServer.from_config(cfg, backend))
    server = ControlServer(socket_path, instance.handlers())
    await server.start()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, instance.stopping.set)
    orphaned = asyncio.create_task(lifeline.wait_for_stdin_eof())
    stopping = asyncio.create_task(instance.stopping.wait())
    log.info("instance %s serving control on %s (pid %d)", name, socket_path, os.getpid())
    await asyncio.wait({orphaned, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if orphaned.done():
        log.warning("instance %s: daemon went away, exiting", name)
    await server.close()
    await instance.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rustymt-instance")
    parser.add_argument("--name", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    parser.add_argument("--config", default=None, help="the daemon's TOML settings ([engine], [pgwire]); env RUSTYMT_* applies too")
    args = parser.parse_args(argv)
    cfg = config.load(args.config)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=f"%(asctime)s instance[{args.name}] %(levelname)s %(message)s")
    lifeline.die_with_parent(args.parent_pid)
    asyncio.run(serve(args.name, args.data_dir, args.socket, cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
