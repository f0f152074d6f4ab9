"""How metering, SLA, billing, webhooks and /metrics hang off the daemon.

    attach_metering(services)            # Services.__init__: services.metering, .webhooks, .observability
    obs = services.observability
    obs.usage_source                     # engine stats via services.fleet (FleetUsageSource); replaceable
    obs.instance_restarts()              # {"shared": 2} from fleet.status()
    obs.install(app)                     # before the app starts: API request metrics
    tasks = obs.start()                  # sampler + webhook dispatcher; cancel them to stop
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from aiohttp import web

from rustymt.api.middleware import REQUEST_OBSERVER
from rustymt.events.webhooks import WebhookDispatcher, WebhookService
from rustymt.metering.prometheus import Metrics, api_request_observer
from rustymt.metering.sampler import ApiRequestCounter, MeteringSampler
from rustymt.metering.service import MeteringService
from rustymt.metering.usage import FleetUsageSource, ServiceUsageSource, UsageSource
from rustymt.sla.tracker import SlaTracker


class Observability:
    def __init__(self, services: Any):
        catalog, settings, bus = services.catalog, services.settings, services.bus
        fleet = getattr(services, "fleet", None)
        self.usage_source: UsageSource = FleetUsageSource(fleet) if fleet is not None else ServiceUsageSource(services)
        self.instance_restarts: Callable[[], dict[str, int]] = (
            (lambda: {i["name"]: i["restarts"] for i in fleet.status()}) if fleet is not None else (lambda: {}))
        self.api_requests = ApiRequestCounter()
        self.sla = SlaTracker(catalog, bus, settings.sla.latency_min_statements)
        self.sampler = MeteringSampler(catalog, settings, bus, _Deferred(self), self.sla, self.api_requests)
        self.webhooks = WebhookService(catalog, settings)
        self.dispatcher = WebhookDispatcher(catalog, settings, bus, self.webhooks)
        self.metrics = Metrics(self)

    def install(self, app: web.Application) -> None:
        app[REQUEST_OBSERVER] = api_request_observer(self.metrics, self.api_requests)

    def start(self) -> list[asyncio.Task]:
        return [asyncio.create_task(self.sampler.run(self.sampler.subscribe()), name="metering"),
                asyncio.create_task(self.dispatcher.run(self.dispatcher.subscribe()), name="webhooks")]


class _Deferred:
    """The sampler reads `usage_source` at each call, so the daemon may set it after wiring."""

    def __init__(self, owner: Observability):
        self.owner = owner

    def sample(self, tenant_id: str):
        return self.owner.usage_source.sample(tenant_id)


def attach_metering(services: Any) -> None:
    obs = Observability(services)
    services.observability = obs
    services.webhooks = obs.webhooks
    services.metering = MeteringService(services.catalog, services.settings, obs.sla)
    services.tenants.sla_source = services.metering.sla_metrics
