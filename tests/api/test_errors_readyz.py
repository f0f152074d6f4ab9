"""/readyz answers 503 UNAVAILABLE when the catalog does not (in-process app on a loopback server)."""
from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from rustymt import config
from rustymt.api.app import create_app
from rustymt.daemon import prepare_data_dir
from rustymt.events.bus import EventBus
from rustymt.service.services import Services


def test_readyz_follows_the_catalog(tmp_path):
    settings = config.load(env={}, overrides={"server.data_dir": str(tmp_path / "data")})
    catalog = prepare_data_dir(settings)
    services = Services(catalog, settings, EventBus())

    async def scenario():
        async with TestClient(TestServer(create_app(services, settings), host="127.0.0.1")) as client:
            ready = await client.get("/readyz")
            assert ready.status == 200 and await ready.json() == {"status": "ready"}
            catalog.close()
            gone = await client.get("/readyz")
            assert gone.status == 503
            assert (await gone.json())["error"]["code"] == "UNAVAILABLE"
            alive = await client.get("/healthz")  # the process itself is still up
            assert alive.status == 200

    asyncio.run(scenario())
