"""A real rustymt PostgreSQL server on an ephemeral loopback port, in-process:
its own asyncio loop in a thread, FileBackend over engine connections in a
temporary directory. Clients (psql, pgbench, psycopg, asyncpg, raw sockets)
connect to it over TCP like to any PostgreSQL server."""
from __future__ import annotations

import asyncio
import itertools
import os
import threading

import pytest

from rustymt.engine.pgwire.backend import FileBackend
from rustymt.engine.pgwire.server import PgServer

PASSWORD = "s3cret-pw"
QUOTA_SLOT = 7  # native tenant slot of the "quota" database (memory quota tests)
_names = itertools.count()


class ServerThread:
    def __init__(self, directory, **server_options):
        self.directory = directory
        self.backend = FileBackend(str(directory), readonly_databases={"ro"}, superusers={"alice"},
                                   tenant_slots={"quota": QUOTA_SLOT})
        self.backend.add_user("alice", PASSWORD)
        self.backend.add_user("bob", "bobs-pw")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="pgwire-test-server", daemon=True)
        self.thread.start()
        self.server = PgServer(self.backend, **server_options)
        self.port = self.call(self.server.start("127.0.0.1", 0))
        self.host = "127.0.0.1"

    def call(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def new_database(self, prefix="db") -> str:
        name = f"{prefix}{next(_names)}"
        self.backend.create_database(name)
        return name

    def dsn(self, database, user="alice", password=PASSWORD, **extra) -> str:
        parts = {"host": self.host, "port": self.port, "user": user, "password": password, "dbname": database}
        parts.update(extra)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def env(self, user="alice", password=PASSWORD) -> dict:
        return dict(os.environ, PGHOST=self.host, PGPORT=str(self.port), PGUSER=user, PGPASSWORD=password,
                    PGCONNECT_TIMEOUT="10")

    def session_count(self) -> int:
        return len(self.server.sessions)

    def stop(self):
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    server = ServerThread(tmp_path_factory.mktemp("pgwire"))
    server.backend.create_database("ro")
    yield server
    server.stop()


@pytest.fixture
def db(pg):
    """A fresh, empty database name on the module's server."""
    return pg.new_database()
