"""GET /metrics: Prometheus text exposition with prometheus-client.

Per-tenant families are built at scrape time from the sampler's last sample
(`MeteringSampler.latest`): a scrape never asks the engine or scans history,
so its cost is one pass over the tenants (bench/test_metering_metrics.py
measures 1000 tenants). API request counters and latency histograms are
ordinary prometheus-client metrics fed by `api_metrics_middleware`, one
registry per daemon (no process-global state, so in-process tests can run
several apps).

A tenant-scoped token sees only its own tenant's series.
"""
from __future__ import annotations

import time
from typing import Any, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

LATENCY_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
QUOTA_FIELDS = ("cpu_percent", "memory_mb", "storage_gb", "iops", "network_mbps", "max_connections")


class TenantCollector(Collector):
    def __init__(self, metering: Any):
        self.metering = metering  # rustymt.metering.wiring.Metering
        self.only_tenant: str | None = None

    def collect(self) -> Iterable:
        latest = self.metering.sampler.latest
        items = sorted(latest.items()) if self.only_tenant is None else \
            [(self.only_tenant, latest[self.only_tenant])] if self.only_tenant in latest else []
        f = {
            "cpu": CounterMetricFamily("rustymt_tenant_cpu_seconds", "CPU time used by the tenant's statements", labels=["tenant_id"]),
            "queued": CounterMetricFamily("rustymt_tenant_cpu_queued_seconds", "time statements waited behind other tenants", labels=["tenant_id"]),
            "throttled": CounterMetricFamily("rustymt_tenant_throttled_seconds", "time held at the tenant's own caps", labels=["tenant_id", "resource"]),
            "mem": GaugeMetricFamily("rustymt_tenant_memory_bytes", "engine memory allocated for the tenant", labels=["tenant_id"]),
            "storage": GaugeMetricFamily("rustymt_tenant_storage_bytes", "size of the tenant's datafiles", labels=["tenant_id"]),
            "io": CounterMetricFamily("rustymt_tenant_io_operations", "datafile operations", labels=["tenant_id", "op"]),
            "net": CounterMetricFamily("rustymt_tenant_network_bytes", "bytes on the tenant's port", labels=["tenant_id", "direction"]),
            "conn": GaugeMetricFamily("rustymt_tenant_connections", "open sessions", labels=["tenant_id"]),
            "stmts": CounterMetricFamily("rustymt_tenant_statements", "statements executed", labels=["tenant_id"]),
            "hit": GaugeMetricFamily("rustymt_tenant_buffer_pool_hit_ratio", "page cache hit ratio", labels=["tenant_id"]),
            "up": GaugeMetricFamily("rustymt_tenant_up", "1 when the tenant's PDB is open and accepting (absent: not measured)", labels=["tenant_id"]),
            "quota": GaugeMetricFamily("rustymt_tenant_quota", "the tenant's quota vector", labels=["tenant_id", "resource"]),
            "info": GaugeMetricFamily("rustymt_tenant_info", "tier and state of the tenant", labels=["tenant_id", "tier", "state"]),
        }
        latency = HistogramMetricFamily("rustymt_tenant_statement_latency_milliseconds", "statement latency (from the SLA sketch)",
                                        labels=["tenant_id"])
        for tenant_id, entry in items:
            usage, labels = entry["usage"], [tenant_id]
            f["info"].add_metric([tenant_id, entry["tier"], entry["state"]], 1)
            for name in QUOTA_FIELDS:
                f["quota"].add_metric([tenant_id, name], entry["quota"][name])
            if usage.available is None:
                continue  # nothing measures this tenant: no invented zeros
            f["up"].add_metric(labels, 1 if usage.available else 0)
            f["cpu"].add_metric(labels, usage.cpu_ns / 1e9)
            f["queued"].add_metric(labels, usage.wait_ns / 1e9)
            f["throttled"].add_metric([tenant_id, "cpu"], usage.cpu_throttled_ns / 1e9)
            f["throttled"].add_metric([tenant_id, "io"], usage.io_throttled_ns / 1e9)
            f["mem"].add_metric(labels, usage.memory_bytes)
            f["storage"].add_metric(labels, usage.storage_bytes)
            f["io"].add_metric([tenant_id, "read"], usage.reads)
            f["io"].add_metric([tenant_id, "write"], usage.writes)
            f["net"].add_metric([tenant_id, "in"], usage.bytes_in)
            f["net"].add_metric([tenant_id, "out"], usage.bytes_out)
            f["conn"].add_metric(labels, usage.sessions)
            f["stmts"].add_metric(labels, usage.statements)
            f["hit"].add_metric(labels, usage.buffer_hit_ratio)
            sketch = usage.latency_ms
            if sketch is not None and sketch.count:
                buckets = [(str(bound), sketch.count_at_most(bound)) for bound in LATENCY_BUCKETS_MS] + [("+Inf", sketch.count)]
                latency.add_metric(labels, buckets, sketch.total)
        yield from f.values()
        yield latency


class PlatformCollector(Collector):
    """Webhook queue and failures, instance restarts."""

    def __init__(self, metering: Any):
        self.metering = metering

    def collect(self) -> Iterable:
        dispatcher = self.metering.dispatcher
        depth = GaugeMetricFamily("rustymt_webhook_queue_depth", "webhook deliveries waiting in the outbox")
        depth.add_metric([], dispatcher.queue_depth())
        outcomes = CounterMetricFamily("rustymt_webhook_deliveries", "webhook delivery attempts by outcome", labels=["outcome"])
        outcomes.add_metric(["delivered"], dispatcher.delivered)
        outcomes.add_metric(["failed"], dispatcher.failed_attempts)
        outcomes.add_metric(["dead_lettered"], dispatcher.dead_lettered)
        yield depth
        yield outcomes
        restarts = CounterMetricFamily("rustymt_instance_restarts", "engine instance restarts since the daemon started",
                                       labels=["instance"])
        for name, count in sorted((self.metering.instance_restarts() or {}).items()):
            restarts.add_metric([name], count)
        yield restarts
        ticks = CounterMetricFamily("rustymt_metering_ticks", "metering sampler ticks")
        ticks.add_metric([], self.metering.sampler.ticks)
        yield ticks


class Metrics:
    """The daemon's registry: API metrics + collectors."""

    def __init__(self, metering: Any):
        self.metering = metering
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("rustymt_api_requests", "REST/GraphQL requests", ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("rustymt_api_request_duration_seconds", "REST/GraphQL request latency", ["method", "route"],
                                 registry=self.registry, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.registry.register(PlatformCollector(metering))
        self.tenants = TenantCollector(metering)
        self.tenant_registry = CollectorRegistry(auto_describe=False)
        self.tenant_registry.register(self.tenants)

    def render(self, only_tenant: str | None) -> bytes:
        self.tenants.only_tenant = only_tenant
        tenant_text = generate_latest(self.tenant_registry)
        return tenant_text if only_tenant is not None else generate_latest(self.registry) + tenant_text


def route_label(request: web.Request) -> str:
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    return resource.canonical if resource is not None else "unmatched"


def api_metrics_middleware(metrics: Metrics, api_requests: Any):
    """Outermost middleware: counts every answer (errors included) and the tenant it was for."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = route_label(request)
            metrics.requests.labels(request.method, route, str(status)).inc()
            metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)
            principal = request.get("principal")
            tenant_id = request.match_info.get("tenant_id") or getattr(principal, "tenant_id", None)
            if tenant_id:
                api_requests.count(tenant_id)

    return middleware
