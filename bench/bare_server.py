"""The baseline: a bare aiohttp server answering fixed bytes.

    python bench/bare_server.py ANSWERS.json     prints "PORT\n" once listening

ANSWERS.json maps a path to {"body": text, "headers": {name: value}}, captured
from the real daemon: the body exactly as the daemon encoded it and the
X-RateLimit-* headers it sends, so both servers write the same bytes per
answer (Date aside) and the difference measured is what rustymt's stack
(middlewares, JWT, catalog, services) costs. No middleware, no auth, no
database: one dict lookup per request, on the default asyncio loop like the
daemon.
"""
from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web


def build_app(answers: dict[str, dict]) -> web.Application:
    encoded = {path: (answer["body"].encode("utf-8"), answer["headers"]) for path, answer in answers.items()}

    async def answer(request: web.Request) -> web.Response:
        found = encoded.get(request.path_qs) or encoded.get(request.path)
        if found is None:
            raise web.HTTPNotFound()
        body, headers = found
        return web.Response(body=body, headers=headers, content_type="application/json", charset="utf-8")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    return app


async def main(answers_path: str) -> None:
    with open(answers_path) as handle:
        app = build_app(json.load(handle))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
