"""GET /metrics: Prometheus text exposition with prometheus-client.

Per-tenant families are rendered from the sampler's last sample
(`MeteringSampler.latest`, each tenant's lines cached until its next sample):
a scrape never asks the engine or scans history (bench/test_metering_metrics.py
measures 1000 tenants). API request counters and latency histograms are
ordinary prometheus-client metrics fed by `api_metrics_middleware`, one
registry per daemon (no process-global state, so in-process tests can run
several apps).

A tenant-scoped token sees only its own tenant's series.
"""
from __future__ import annotations

import math
import time
from typing import Any, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
QUOTA_FIELDS = ("cpu_percent", "memory_mb", "storage_gb", "iops", "network_mbps", "max_connections")


# Per-tenant families: (name, type, help, [(label suffix, value getter)]). Rendered by hand
# below: prometheus-client's generic exposition costs ~30 us a sample, and 1000 tenants have
# ~40,000 samples; these lines are the same text format, checked by its parser in the tests.
def _seconds(ns: int) -> float:
    return ns / 1e9


TENANT_FAMILIES = (
    ("rustymt_tenant_up", "gauge", "1 when the tenant's PDB is open and accepting (absent: not measured)",
     (("", lambda u: 1 if u.available else 0),)),
    ("rustymt_tenant_cpu_seconds_total", "counter", "CPU time used by the tenant's statements",
     (("", lambda u: _seconds(u.cpu_ns)),)),
    ("rustymt_tenant_cpu_queued_seconds_total", "counter", "time statements waited behind other tenants",
     (("", lambda u: _seconds(u.wait_ns)),)),
    ("rustymt_tenant_throttled_seconds_total", "counter", "time held at the tenant's own caps",
     ((',resource="cpu"', lambda u: _seconds(u.cpu_throttled_ns)), (',resource="io"', lambda u: _seconds(u.io_throttled_ns)))),
    ("rustymt_tenant_memory_bytes", "gauge", "engine memory allocated for the tenant", (("", lambda u: u.memory_bytes),)),
    ("rustymt_tenant_storage_bytes", "gauge", "size of the tenant's datafiles", (("", lambda u: u.storage_bytes),)),
    ("rustymt_tenant_io_operations_total", "counter", "datafile operations",
     ((',op="read"', lambda u: u.reads), (',op="write"', lambda u: u.writes))),
    ("rustymt_tenant_network_bytes_total", "counter", "bytes on the tenant's port",
     ((',direction="in"', lambda u: u.bytes_in), (',direction="out"', lambda u: u.bytes_out))),
    ("rustymt_tenant_connections", "gauge", "open sessions", (("", lambda u: u.sessions),)),
    ("rustymt_tenant_statements_total", "counter", "statements executed", (("", lambda u: u.statements),)),
    ("rustymt_tenant_buffer_pool_hit_ratio", "gauge", "page cache hit ratio", (("", lambda u: u.buffer_hit_ratio),)),
)
LATENCY_FAMILY = "rustymt_tenant_statement_latency_milliseconds"
FAMILY_NAMES = [family[0] for family in TENANT_FAMILIES]


def _num(value) -> str:
    if type(value) is int:
        return str(value)
    return repr(value) if math.isfinite(value) else floatToGoString(value)


def _label(value: str) -> str:
    if "\\" not in value and '"' not in value and "\n" not in value:
        return value  # ids, tiers, states: nothing to escape
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prepare(tenant_id: str, entry: dict) -> dict[str, str]:
    """One tenant's lines per family, cached in the sampler's entry until its next sample.

    The sampler calls this in its worker thread right after sampling, so a
    scrape only joins strings."""
    cached = entry.get("_exposition")
    if cached is not None:
        return cached
    usage, tid = entry["usage"], _label(tenant_id)
    lines = {"rustymt_tenant_info": f'rustymt_tenant_info{{tenant_id="{tid}",tier="{_label(entry["tier"])}",'
                                    f'state="{_label(entry["state"])}"}} 1.0\n',
             "rustymt_tenant_quota": "".join(f'rustymt_tenant_quota{{tenant_id="{tid}",resource="{name}"}} '
                                             f'{_num(entry["quota"][name])}\n' for name in QUOTA_FIELDS)}
    if usage.available is not None:  # nothing measures this tenant: no invented zeros
        for name, _type, _help, series in TENANT_FAMILIES:
            lines[name] = "".join(f'{name}{{tenant_id="{tid}"{labels}}} {_num(value(usage))}\n'
                                  for labels, value in series)
        sketch = usage.latency_ms
        if sketch is not None and sketch.count:
            counts = sketch.cumulative(LATENCY_BUCKETS_MS)
            text = [f'{LATENCY_FAMILY}_bucket{{tenant_id="{tid}",le="{_num(bound)}"}} {_num(count)}\n'
                    for bound, count in zip(LATENCY_BUCKETS_MS, counts)]
            text.append(f'{LATENCY_FAMILY}_bucket{{tenant_id="{tid}",le="+Inf"}} {_num(sketch.count)}\n')
            text.append(f'{LATENCY_FAMILY}_count{{tenant_id="{tid}"}} {_num(sketch.count)}\n')
            text.append(f'{LATENCY_FAMILY}_sum{{tenant_id="{tid}"}} {_num(sketch.total)}\n')
            lines[LATENCY_FAMILY] = "".join(text)
    entry["_exposition"] = lines
    return lines


HEADERS = (
    [("rustymt_tenant_info", "gauge", "tier and state of the tenant"), ("rustymt_tenant_quota", "gauge", "the tenant's quota vector")]
    + [(name, kind, text) for name, kind, text, _series in TENANT_FAMILIES]
    + [(LATENCY_FAMILY, "histogram", "statement latency (from the SLA sketch)")]
)


def render_tenants(latest: dict[str, dict], only_tenant: str | None = None) -> str:
    items = sorted(latest.items()) if only_tenant is None else \
        [(only_tenant, latest[only_tenant])] if only_tenant in latest else []
    per_tenant = [prepare(tenant_id, entry) for tenant_id, entry in items]
    out = []
    for name, kind, text in HEADERS:
        out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")  # counters: as prometheus-client writes them
        out.extend(lines[name] for lines in per_tenant if name in lines)
    return "".join(out)


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

    def render(self, only_tenant: str | None) -> bytes:
        """The scrape: platform and API families (operators only), then the tenants'."""
        tenant_text = render_tenants(self.metering.sampler.latest, only_tenant).encode()
        return tenant_text if only_tenant is not None else generate_latest(self.registry) + tenant_text


SERIES_CACHE_ENTRIES = 4096  # (method, route, status) children kept; methods come from clients


def route_resource(request: web.Request) -> Any:
    """The aiohttp resource that answered (None when no route matched)."""
    return getattr(getattr(request.match_info, "route", None), "resource", None)


def api_metrics_middleware(metrics: Metrics, api_requests: Any):
    """Outermost middleware: counts every answer (errors included) and the tenant it was for."""
    # (method, resource, status) -> (counter child, histogram child). labels() checks and joins
    # its arguments and takes the metric's lock on every call; a child never changes once made,
    # so each series is looked up once. Bounded: the method and unmatched paths come from clients.
    children: dict[tuple, tuple] = {}

    def series(method: str, resource: Any, status: int) -> tuple:
        key = (method, resource, status)
        found = children.get(key)
        if found is None:
            if len(children) >= SERIES_CACHE_ENTRIES:
                children.clear()
            route = resource.canonical if resource is not None else "unmatched"
            found = children[key] = (metrics.requests.labels(method, route, str(status)),
                                     metrics.latency.labels(method, route))
        return found

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
            requests, latency = series(request.method, route_resource(request), status)
            requests.inc()
            latency.observe(time.perf_counter() - started)
            tenant_id = request.match_info.get("tenant_id") or getattr(request.get("principal"), "tenant_id", None)
            if tenant_id:
                api_requests.count(tenant_id)

    return middleware
