"""A real rustymtd with its real engine instance, shared by a test module.

    engine_daemon                      the daemon (tests/daemon.py Daemon)
    tenant = new_tenant(engine_daemon, "name")   -> REST create body + "password", "user", "pdb_name"
    connect(tenant)                    a psycopg connection to the tenant's PDB on its own port
"""
from __future__ import annotations

import itertools
import socket
import struct

import psycopg
import pytest

from tests.daemon import private_tenant_ports

PASSWORD = "correct horse battery"  # tests/daemon.py create_tenant's password
_names = itertools.count(1)


@pytest.fixture(scope="module")
def engine_daemon(tmp_path_factory):
    from tests.daemon import Daemon

    daemon = Daemon.start(str(tmp_path_factory.mktemp("de") / "data"), env=port_range_env())
    yield daemon
    assert daemon.stop() == 0, daemon.log()


def port_range_env() -> dict[str, str]:
    """A random tenant port range of our own: daemons of other tests (and other people) run beside us."""
    return private_tenant_ports()


def new_tenant(daemon, prefix: str, tier: str = "silver") -> dict:
    name = f"{prefix}_{next(_names)}"
    body = daemon.create_tenant(name, tier)
    return {**body, "name": name, "user": f"admin@{name}.example", "password": PASSWORD,
            "pdb_name": f"PDB_{name.upper()}", "port": body["resources"]["network_port"]}


def connect(tenant: dict, dbname: str | None = None, autocommit: bool = True, **kwargs) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=tenant["port"], dbname=dbname or tenant["pdb_name"], user=tenant["user"],
                           password=tenant["password"], connect_timeout=5, autocommit=autocommit, **kwargs)


def get_json(daemon, path: str, status: int = 200) -> dict:
    response = daemon.request("GET", path)
    assert response.status == status, response.text
    return response.json


def startup_sqlstate(tenant: dict, dbname: str | None = None, timeout: float = 5.0) -> str | None:
    """Send a PostgreSQL StartupMessage to the tenant's port: the SQLSTATE of
    the server's first answer when it is an ErrorResponse (admission refusals
    come before authentication), else None (the server asked for a password)."""
    params = b"".join(key + b"\0" + value.encode() + b"\0" for key, value in
                      ((b"user", tenant["user"]), (b"database", dbname or tenant["pdb_name"]))) + b"\0"
    message = struct.pack("!ii", 8 + len(params), 196608) + params
    with socket.create_connection(("127.0.0.1", tenant["port"]), timeout=timeout) as sock:
        sock.sendall(message)
        data = b""
        while len(data) < 5 or len(data) < 1 + struct.unpack("!i", data[1:5])[0]:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed after {data!r}")
            data += chunk
    if data[:1] != b"E":
        return None
    fields = dict((item[:1], item[1:].decode()) for item in data[5:1 + struct.unpack("!i", data[1:5])[0]].split(b"\0") if item)
    return fields.get(b"C")
