"""Run a standalone wire server over FileBackend (a directory of SQLite files):
for the bench, manual testing and trying clients. Not the product daemon (that
is the engine instance with its own Backend).

    python -m rustymt.engine.pgwire --dir /tmp/dbs --port 5433 --user alice:secret --create app

Prints "listening <port>" once it accepts connections.
"""
from __future__ import annotations

import argparse
import asyncio
import os

from .backend import FileBackend
from .server import PgServer


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rustymt.engine.pgwire")
    parser.add_argument("--dir", required=True, help="directory of <database>.db files")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user", action="append", default=[], help="user:password (repeatable)")
    parser.add_argument("--create", action="append", default=[], help="create this database if missing")
    parser.add_argument("--max-message-bytes", type=int, default=64 << 20)
    parser.add_argument("--no-native-loop", action="store_true",
                        help="answer every round trip in Python (baseline for measurements)")
    args = parser.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    backend = FileBackend(args.dir)
    for spec in args.user:
        user, _, password = spec.partition(":")
        backend.add_user(user, password)
    for database in args.create:
        if not os.path.exists(backend.path_of(database)):
            backend.create_database(database)

    async def serve():
        server = PgServer(backend, max_message_bytes=args.max_message_bytes, native_loop=not args.no_native_loop)
        port = await server.start(args.host, args.port)
        print(f"listening {port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
