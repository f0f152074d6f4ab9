"""GET /metrics: Prometheus text exposition with prometheus-client.

Per-tenant families are rendered from the sampler's last sample
(`MeteringSampler.latest`, each tenant's lines cached until its next sample):
a scrape never asks the engine or scans history (bench/test_metering_metrics.py
measures 1000 tenants). API request counters and latency histograms are
plain numbers that `api_request_observer` adds to per request
(`ApiRequestMetrics`), turned into prometheus-client's samples only when
scraped, in the very text its Counter and Histogram write (names, label
order, buckets, float values, `_created`); one registry per daemon (no
process-global state, so in-process tests can run several apps).

A tenant-scoped token sees only its own tenant's series.
"""
from __future__ import annotations

import bisect
import math
import time
from typing import Any, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString

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


class _RequestSeries:
    """One (method, route, status) series of rustymt_api_requests."""
    __slots__ = ("count", "created")

    def __init__(self):
        self.count = 0
        self.created = time.time()  # as prometheus-client stamps a child when labels() makes it


class _LatencySeries:
    """One (method, route) series of rustymt_api_request_duration_seconds: per-bucket (not
    cumulative) counts, the +Inf bucket last, and the sum of the observed seconds."""
    __slots__ = ("buckets", "sum", "created")

    def __init__(self):
        self.buckets = [0] * (len(API_LATENCY_BUCKETS) + 1)
        self.sum = 0.0
        self.created = time.time()


API_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)  # seconds; +Inf implied
_API_LATENCY_LE = [floatToGoString(bound) for bound in (*API_LATENCY_BUCKETS, INF)]


class ApiRequestMetrics(Collector):
    """rustymt_api_requests{method,route,status} and rustymt_api_request_duration_seconds{method,route}.

    They were a prometheus-client Counter and Histogram: inc() and observe()
    take a lock per value and walk the bucket list in Python, 4-7 us per
    request in the metering middleware. Here a request adds to two plain
    objects (`observe`), and `collect` writes the samples a scrape asks for in
    the order and form the Counter and Histogram wrote them: series in the
    order they first occurred, labels method, route[, status | le], values as
    floats, cumulative buckets, _count, _sum and _created (unless
    prometheus-client's created series are disabled). Not thread-safe for
    writers: the event loop thread is the only one that calls observe()."""

    def __init__(self):
        self._requests: dict[tuple[str, str, str], _RequestSeries] = {}
        self._latency: dict[tuple[str, str], _LatencySeries] = {}

    def series(self, method: str, route: str, status: int) -> tuple[_RequestSeries, _LatencySeries]:
        """The series one answer counts in, created on first use."""
        key = (method, route, str(status))
        requests = self._requests.get(key)
        if requests is None:
            requests = self._requests[key] = _RequestSeries()
        latency = self._latency.get(key[:2])
        if latency is None:
            latency = self._latency[key[:2]] = _LatencySeries()
        return requests, latency

    @staticmethod
    def observe(series: tuple[_RequestSeries, _LatencySeries], seconds: float) -> None:
        requests, latency = series
        requests.count += 1
        latency.sum += seconds
        latency.buckets[bisect.bisect_left(API_LATENCY_BUCKETS, seconds)] += 1  # le: bound inclusive

    def collect(self) -> Iterable[Metric]:
        created = prometheus_metrics._use_created  # PROMETHEUS_DISABLE_CREATED_SERIES, as the Counter honours it
        counter = Metric("rustymt_api_requests", "REST/GraphQL requests", "counter")
        for (method, route, status), series in list(self._requests.items()):  # list(): one C-level copy
            labels = {"method": method, "route": route, "status": status}
            counter.add_sample("rustymt_api_requests_total", labels, float(series.count))
            if created:
                counter.add_sample("rustymt_api_requests_created", labels, series.created)
        yield counter
        name = "rustymt_api_request_duration_seconds"
        histogram = Metric(name, "REST/GraphQL request latency", "histogram")
        for (method, route), series in list(self._latency.items()):
            labels = {"method": method, "route": route}
            total = 0.0
            for le, count in zip(_API_LATENCY_LE, list(series.buckets)):
                total += count
                histogram.add_sample(name + "_bucket", {**labels, "le": le}, total)
            histogram.add_sample(name + "_count", labels, total)
            histogram.add_sample(name + "_sum", labels, series.sum)
            if created:
                histogram.add_sample(name + "_created", labels, series.created)
        yield histogram


class Metrics:
    """The daemon's registry: API metrics + collectors."""

    def __init__(self, metering: Any):
        self.metering = metering
        self.registry = CollectorRegistry(auto_describe=False)
        self.api = ApiRequestMetrics()
        self.registry.register(self.api)
        self.registry.register(PlatformCollector(metering))

    def render(self, only_tenant: str | None) -> bytes:
        """The scrape: platform and API families (operators only), then the tenants'."""
        tenant_text = render_tenants(self.metering.sampler.latest, only_tenant).encode()
        return tenant_text if only_tenant is not None else generate_latest(self.registry) + tenant_text


SERIES_CACHE_ENTRIES = 4096  # (method, route, status) children kept; methods come from clients


def route_resource(request: web.Request) -> Any:
    """The aiohttp resource that answered (None when no route matched)."""
    return getattr(getattr(request.match_info, "route", None), "resource", None)


def api_request_observer(metrics: Metrics, api_requests: Any):
    """observe(request, status, seconds) for every answer (errors and refusals included): the
    route's count and latency, and the request for the tenant it was for. rustymt.api.middleware
    calls it (app[REQUEST_OBSERVER]) around everything it does, as an outermost middleware
    would, without a middleware layer of its own (one coroutine and partial fewer per request)."""
    # (method, resource, status) -> the series it counts in: the route name and the status string
    # are made once per series, not per request. Bounded: the method and unmatched paths come
    # from clients (dropping this map forgets no counts: the series live in metrics.api).
    kept: dict[tuple, tuple] = {}
    api = metrics.api
    count_in = api.observe

    def series(method: str, resource: Any, status: int) -> tuple:
        key = (method, resource, status)
        found = kept.get(key)
        if found is None:
            if len(kept) >= SERIES_CACHE_ENTRIES:
                kept.clear()
            route = resource.canonical if resource is not None else "unmatched"
            found = kept[key] = api.series(method, route, status)
        return found

    def observe(request: web.Request, status: int, seconds: float) -> None:
        count_in(series(request.method, route_resource(request), status), seconds)
        tenant_id = request.match_info.get("tenant_id") or getattr(request.get("principal"), "tenant_id", None)
        if tenant_id:
            api_requests.count(tenant_id)

    return observe
