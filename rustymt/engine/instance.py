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
import logging
import os
import signal
import sys
import time

from rustymt.engine import lifeline
from rustymt.engine.control import PROTOCOL_VERSION, ControlError, ControlServer

log = logging.getLogger("rustymt.instance")


class Instance:
    """What one instance hosts, and the control ops over it."""

    def __init__(self, name: str, data_dir: str):
        self.name = name
        self.data_dir = data_dir
        self.started_monotonic = time.monotonic()
        self.started_at = time.time()
        self.tenants: dict[str, dict] = {}  # tenant_id -> attach arguments
        self.stopping = asyncio.Event()

    def handlers(self):
        return {
            "hello": self.op_hello,
            "health": self.op_health,
            "attach_tenant": self.op_attach_tenant,
            "detach_tenant": self.op_detach_tenant,
            "stats": self.op_stats,
            "shutdown": self.op_shutdown,
        }

    async def op_hello(self, args: dict) -> dict:
        return {"protocol": PROTOCOL_VERSION, "name": self.name, "pid": os.getpid(), "started_at": self.started_at}

    async def op_health(self, args: dict) -> dict:
        return {"status": "ok", "uptime_seconds": time.monotonic() - self.started_monotonic, "tenants": len(self.tenants)}

    async def op_attach_tenant(self, args: dict) -> dict:
        tenant_id = _require_str(args, "tenant_id")
        self.tenants[tenant_id] = dict(args)
        return {"tenant_id": tenant_id, "attached": True}

    async def op_detach_tenant(self, args: dict) -> dict:
        tenant_id = _require_str(args, "tenant_id")
        if self.tenants.pop(tenant_id, None) is None:
            raise ControlError("NOT_FOUND", f"tenant {tenant_id} is not attached")
        return {"tenant_id": tenant_id, "attached": False}

    async def op_stats(self, args: dict) -> dict:
        return {"tenants": {tenant_id: {} for tenant_id in self.tenants}}

    async def op_shutdown(self, args: dict) -> dict:
        asyncio.get_running_loop().call_soon(self.stopping.set)
        return {"stopping": True}


def _require_str(args: dict, name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise ControlError("BAD_REQUEST", f"{name} must be a non-empty string")
    return value


async def serve(name: str, data_dir: str, socket_path: str) -> None:
    instance = Instance(name, data_dir)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rustymt-instance")
    parser.add_argument("--name", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=f"%(asctime)s instance[{args.name}] %(levelname)s %(message)s")
    lifeline.die_with_parent(args.parent_pid)
    asyncio.run(serve(args.name, args.data_dir, args.socket))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
