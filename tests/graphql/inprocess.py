"""The app in this process on loopback, for tests and benches that need to see
inside it: a real catalog and Services (with room for many tenants' CPU
guarantees), optional call counting at the service boundary.
"""
from __future__ import annotations

import collections

import aiohttp
from aiohttp import web

from rustymt import config
from rustymt.api.app import create_app
from rustymt.daemon import prepare_data_dir
from rustymt.events.bus import EventBus
from rustymt.service.authz import Principal
from rustymt.service.capacity import HostCapacity
from rustymt.service.services import Services

ADMIN = Principal.from_claims({"roles": ["cdb_admin"], "user_id": "test", "username": "test"})


class Counting:
    """Counts calls of a real object's public methods (the object does the work)."""

    def __init__(self, target, counter: collections.Counter, prefix: str):
        self._target, self._counter, self._prefix = target, counter, prefix

    def __getattr__(self, name):
        attribute = getattr(self._target, name)
        if callable(attribute) and not name.startswith("_"):
            def counted(*args, **kwargs):
                self._counter[self._prefix + name] += 1
                return attribute(*args, **kwargs)
            return counted
        return attribute


class App:
    def __init__(self, tmp_path, **overrides):
        self.settings = config.load(env={}, overrides={"server.data_dir": str(tmp_path / "data"), **overrides})
        self.catalog = prepare_data_dir(self.settings)
        # capacity: room for many tenants' CPU guarantees on a 2-core test machine
        self.services = Services(self.catalog, self.settings, EventBus(), capacity=HostCapacity(cpu_percent=100 * 1000))
        self.calls = collections.Counter()

    def count_calls(self):
        tenants = self.services.tenants
        tenants.catalog = Counting(tenants.catalog, self.calls, "catalog.")
        self.services.tenants = Counting(tenants, self.calls, "tenants.")

    async def __aenter__(self):
        self.runner = web.AppRunner(create_app(self.services, self.settings))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = "http://127.0.0.1:%d/graphql" % self.runner.addresses[0][1]
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc):
        await self.http.close()
        await self.runner.cleanup()
        self.catalog.close()

    async def post(self, query: str, token: str) -> dict:
        async with self.http.post(self.url, json={"query": query}, headers={"Authorization": f"Bearer {token}"}) as answer:
            assert answer.status == 200
            return await answer.json()

    def token(self) -> str:
        from rustymt.api.auth import issue_token
        return issue_token(self.settings.server.data_dir, self.settings, "cdb_admin")


async def add_tenants(app: App, count: int) -> None:
    """One tenant through the service, the rest as copies of its catalog row:
    a scrypt hash per tenant would cost this test ~0.2 s x count for nothing it checks."""
    from rustymt.catalog import tenants as rows

    first = await app.services.tenants.create(ADMIN, tenant_name="batch0", admin_user="admin0@x.example",
                                              admin_password="correct horse battery", service_tier="bronze")
    with app.catalog.write() as conn:
        record = rows.get(conn, first["tenant_id"])
        low, _high = app.settings.tenant.ports
        for i in range(1, count):
            copy = {**record, "tenant_id": f"tenant_copy{i:06d}", "tenant_name": f"batch{i}",
                    "admin_user": f"admin{i}@x.example", "network_port": low + 100 + i}
            rows.insert(conn, copy)
            rows.log_state(conn, copy["tenant_id"], None, "active", "created", record["created_at"])
