"""The baseline: a bare aiohttp server answering fixed JSON bodies.

    python bench/bare_server.py BODIES.json     prints "PORT\n" once listening

BODIES.json maps a path to the JSON body to return, captured from the real
daemon, so both servers send the same bytes and the difference measured is
what rustymt's stack (middlewares, JWT, catalog, services) costs. No
middleware, no auth, no database: one dict lookup per request.
"""
from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web


def build_app(bodies: dict[str, object]) -> web.Application:
    encoded = {path: json.dumps(body) for path, body in bodies.items()}

    async def answer(request: web.Request) -> web.Response:
        text = encoded.get(request.path_qs) or encoded.get(request.path)
        if text is None:
            raise web.HTTPNotFound()
        return web.Response(text=text, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    return app


async def main(bodies_path: str) -> None:
    with open(bodies_path) as handle:
        app = build_app(json.load(handle))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
