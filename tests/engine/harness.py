"""A real instance process driven over its control socket, for synchronous tests.

The supervisor and its control client live on an asyncio loop in a
background thread; tests call `engine.request(op, args)` and use ordinary
blocking clients (psycopg, psql) against the tenant ports.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading

import psycopg

from rustymt.engine import scram, storage
from rustymt.engine.supervisor import InstanceSupervisor

ADMIN = "pdbadmin"
ADMIN_PASSWORD = "admin-secret-1"
USER = "app"
USER_PASSWORD = "app-secret-1"


class Engine:
    def __init__(self, data_dir: str, on_started=None, env: dict | None = None):
        self.data_dir = data_dir
        self.events: list[tuple[str, dict]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.supervisor = InstanceSupervisor("shared", data_dir, on_event=lambda k, d: self.events.append((k, d)),
                                             on_started=on_started, extra_env=env)
        self.call(self.supervisor.start())

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def request(self, op: str, args: dict | None = None, timeout: float = 30.0) -> dict:
        return self.call(self.supervisor.request(op, args or {}, timeout=timeout), timeout + 5)

    def stop(self):
        try:
            self.call(self.supervisor.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)

    # ---- fixtures of a scenario

    def create_pdb(self, pdb_id: str, name: str, users: dict[str, str] | None = None) -> str:
        """A PDB from the seed with the admin user and `users` (name -> password)."""
        stage = storage.stage_pdb_from_seed(self.data_dir, pdb_id, name, ADMIN, scram.make_verifier(ADMIN_PASSWORD))
        folder = storage.publish(self.data_dir, stage, pdb_id)
        from rustymt._native import _core
        conn = _core.Connection(os.path.join(folder, storage.DICTIONARY_FILE))
        try:
            for user, password in (users or {USER: USER_PASSWORD}).items():
                storage.execute(conn, "INSERT INTO users(username, verifier, is_admin, created_at) VALUES (?1, ?2, 0, ?3)",
                                (user, scram.make_verifier(password), storage.now_iso()))
        finally:
            conn.close()
        return folder

    def attach(self, tenant_id: str, slot: int, **quota) -> int:
        result = self.request("attach_tenant", {"tenant_id": tenant_id, "slot": slot, "port": 0,
                                                "listen_host": "127.0.0.1", "state": "active", "quota": quota})
        return result["port"]

    def open(self, pdb_id: str, tenant_id: str, name: str, mode: str = "READ_WRITE") -> dict:
        return self.request("open_pdb", {"pdb_id": pdb_id, "tenant_id": tenant_id, "pdb_name": name,
                                         "path": storage.pdb_dir(self.data_dir, pdb_id), "mode": mode})

    def stats(self, tenant_id: str) -> dict:
        return self.request("stats", {"tenant_id": tenant_id})["tenants"][tenant_id]


def connect(port: int, dbname: str, user: str = USER, password: str = USER_PASSWORD, **kw):
    return psycopg.connect(host="127.0.0.1", port=port, dbname=dbname, user=user, password=password,
                           sslmode="disable", connect_timeout=10, **kw)


def psql(port: int, dbname: str, sql: str, user: str = USER, password: str = USER_PASSWORD) -> subprocess.CompletedProcess:
    env = {**os.environ, "PGPASSWORD": password, "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run([shutil.which("psql"), "-X", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", dbname,
                           "-v", "ON_ERROR_STOP=1", "-At", "-c", sql], env=env, capture_output=True, text=True, timeout=60)
