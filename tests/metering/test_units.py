"""Pure parts of metering, billing, SLA and webhooks, with real SQLite catalogs."""
from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest

from rustymt import config
from rustymt.catalog.db import Catalog
from rustymt.events.bus import EventBus
from rustymt.events.webhooks import address_allowed, check_url, sign, verify
from rustymt.metering import billing, store
from rustymt.metering.pricebook import parse_price_book
from rustymt.metering.usage import Usage
from rustymt.service.errors import ServiceError
from rustymt.sla.sketch import LatencySketch
from rustymt.sla.statements import StatementStats, is_server_error
from rustymt.sla.tracker import SlaTracker


def exact_quantile(values, q):
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sketch_p99_within_one_percent_and_merge_equals_union(seed):
    rng = random.Random(seed)
    first = [rng.lognormvariate(2.0, 1.5) for _ in range(20000)]
    second = [rng.paretovariate(1.2) * 3 for _ in range(20000)]
    a, b = LatencySketch(), LatencySketch()
    for value in first:
        a.add(value)
    for value in second:
        b.add(value)
    union = LatencySketch.from_dict(a.to_dict())
    union.merge(b)
    for q in (0.5, 0.95, 0.99, 0.999):
        true = exact_quantile(first + second, q)
        assert abs(union.quantile(q) - true) <= 0.01 * true, (q, union.quantile(q), true)
    assert union.count == 40000
    assert union.subtract(a).count == b.count and union.subtract(a).quantile(0.99) == pytest.approx(b.quantile(0.99))
    assert a.subtract(union) is None  # not a snapshot of `a`: a restarted source


def test_statement_outcomes_count_server_failures_only():
    stats = StatementStats()
    for sqlstate in (None, "42601", "53200", "23505", "57014", "XX000", "58030", "53100"):
        stats.record(5.0, sqlstate)
    snapshot = stats.snapshot()
    assert (snapshot["statements"], snapshot["server_errors"], snapshot["client_errors"]) == (8, 3, 4)
    assert not is_server_error("53300") and is_server_error("57P01")


def test_price_book_merges_overrides_and_rejects_nonsense():
    book = parse_price_book('{"gold": {"monthly_base": "500", "overage": {"cpu_hours": 0.5}}}')
    assert book["gold"].monthly_base == Decimal("500") and book["gold"].overage["cpu_hours"] == Decimal("0.5")
    assert book["gold"].overage["network_gb"] == Decimal("0.04")  # untouched keys keep the built-in price
    for bad in ('{"diamond": {}}', '{"gold": {"monthly_base": "-1"}}', '{"gold": {"overage": {"gpu": 1}}}', "[1"):
        with pytest.raises(ValueError):
            parse_price_book(bad)
    with pytest.raises(config.ConfigError) as refused:
        config.load(env={"RUSTYMT_BILLING_PRICE_BOOK": '{"gold": {"monthly_base": "NaN"}}'})
    assert refused.value.key == "billing.price_book"


def test_month_bounds_refuses_malformed_periods():
    assert billing.month_bounds("2026-12") == (1796083200, 1798761600)
    for bad in ("2026-13", "2026-1", "26-01", "2026/01", "2026-00", "abcd-ef"):
        with pytest.raises(ValueError):
            billing.month_bounds(bad)


def test_rollups_keep_sums_and_time_weighted_means(tmp_path):
    catalog = Catalog.open(str(tmp_path / "catalog.db"))
    base = 1_700_000_000 - 1_700_000_000 % 3600
    rows = [{"tenant_id": "t1", "resolution": store.RAW, "period_start": base + i * 10, "period_end": base + i * 10 + 10,
             "tier": "silver", "cpu_seconds": 1.5, "memory_mb_avg": 100.0 + i, "memory_mb_peak": 100.0 + i,
             "storage_gb": 2.0, "read_ops": 3, "write_ops": 4, "network_bytes_in": 5, "network_bytes_out": 6,
             "peak_connections": i % 7, "statements": 10, "api_requests": 1} for i in range(720)]  # two hours
    with catalog.write() as conn:
        store.insert(conn, rows)
        assert store.roll_up(conn, store.RAW, store.MINUTE, base + 7200) == 720
        assert store.roll_up(conn, store.MINUTE, store.HOUR, base + 7200) == 120
        hours = store.in_range(conn, "t1", base, base + 7200, 100)
    assert [h["resolution"] for h in hours] == [store.HOUR, store.HOUR]
    assert sum(h["cpu_seconds"] for h in hours) == pytest.approx(1.5 * 720)
    assert sum(h["statements"] for h in hours) == 7200
    assert hours[0]["memory_mb_avg"] == pytest.approx(100 + 359 / 2) and hours[1]["memory_mb_peak"] == 100 + 719
    assert hours[0]["peak_connections"] == 6
    catalog.close()


def test_url_safety_rules():
    assert not address_allowed("127.0.0.1", False) and address_allowed("127.0.0.1", True)
    for address in ("10.1.2.3", "192.168.1.1", "172.16.0.1", "169.254.169.254", "::1", "fe80::1", "::ffff:127.0.0.1",
                    "0.0.0.0", "100.64.0.1", "fc00::1"):
        assert not address_allowed(address, False), address
    assert address_allowed("8.8.8.8", False) and address_allowed("2001:4860:4860::8888", False)
    for url in ("ftp://example.com/x", "file:///etc/passwd", "http://user:pw@example.com/", "http:///nohost", "gopher://x"):
        with pytest.raises(ServiceError) as refused:
            check_url(url)
        assert refused.value.code == "INVALID_REQUEST" and refused.value.field == "webhook_url"


def test_signature_verifies_and_rejects_tampering_and_replays():
    body = b'{"event_id":"evt_1"}'
    header = sign("s3cret-key", body, 1_800_000_000)
    assert header.startswith("t=1800000000,v1=")
    assert verify("s3cret-key", body, header, now=1_800_000_010)
    assert not verify("s3cret-key", body + b" ", header, now=1_800_000_010)
    assert not verify("other-key", body, header, now=1_800_000_010)
    assert not verify("s3cret-key", body, header, now=1_800_001_000)  # too old: a replay


def _tick(tracker, tenant, available, seconds=1.0, now=1_800_000_000.0, **counters):
    usage = Usage(available=available, **counters)
    tracker.observe(tenant, "silver", "active", usage, seconds, now)


def test_throttled_at_own_cap_is_not_a_violation_but_queueing_is(tmp_path):
    async def scenario():
        catalog = Catalog.open(str(tmp_path / "catalog.db"))
        bus = EventBus()
        events = bus.subscribe({"tenant.sla.violated"})
        tracker = SlaTracker(catalog, bus, min_statements=10)
        slow = LatencySketch()
        for _ in range(100):
            slow.add(400.0)  # silver p99 target: 250 ms
        # own cap: the time went to throttling at its max_percent, not to waiting behind others
        _tick(tracker, "capped", True, statements=100, cpu_ns=10**9, wait_ns=10**8, cpu_throttled_ns=5 * 10**9,
              latency_ms=slow)
        assert tracker.evaluate("capped") == []
        assert tracker.metrics("capped")["time_breakdown"]["latency_cause"] == "tenant_cap"
        # the platform: queued behind other tenants
        _tick(tracker, "starved", True, statements=100, cpu_ns=10**9, wait_ns=5 * 10**9, latency_ms=LatencySketch.from_dict(slow.to_dict()))
        recorded = tracker.evaluate("starved")
        assert [v["violation_type"] for v in recorded] == ["latency"]
        assert tracker.evaluate("starved") == []  # once per episode
        event = await asyncio.wait_for(events.__anext__(), 5)
        assert event.tenant_id == "starved" and event.data["violation_type"] == "latency"
        assert event.data["sla_target"] == 250.0 and event.data["current_value"] == pytest.approx(400, rel=0.01)
        # server errors beyond the tier's error-rate target
        _tick(tracker, "failing", True, statements=100, server_errors=5)
        assert [v["violation_type"] for v in tracker.evaluate("failing")] == ["error_rate"]
        catalog.close()

    asyncio.run(scenario())


def test_uptime_counts_down_time_and_ignores_exclusions(tmp_path):
    catalog = Catalog.open(str(tmp_path / "catalog.db"))
    tracker = SlaTracker(catalog, EventBus(), min_statements=10)
    for _ in range(18):
        _tick(tracker, "t", True)
    for _ in range(50):
        tracker.observe("t", "silver", "suspended", Usage(available=False), 1.0, 1_800_000_000.0)
    for _ in range(2):
        _tick(tracker, "t", False)
    assert tracker.metrics("t")["uptime_percent"] == 90.0
    with catalog.write() as conn:
        tracker.write_hours(conn, tracker.pending_hours())
        row = conn.execute("SELECT up_seconds, down_seconds, excluded_seconds FROM sla_hours WHERE tenant_id = 't'").fetchone()
    assert tuple(row) == (18.0, 2.0, 50.0)
    catalog.close()


def test_crafted_month_bills_to_the_cent_and_is_deterministic():
    from tests.metering import crafted

    settings = config.load(env={})
    args = ("tenant_x", crafted.PERIOD, settings.billing.price_book, settings.billing.currency,
            (crafted.TIERS[0][1], None), crafted.TIERS, crafted.records("tenant_x"), (crafted.UP_SECONDS, crafted.DOWN_SECONDS))
    report = billing.bill(*args)
    assert {key: report[key] for key in crafted.EXPECTED_TOTALS} == crafted.EXPECTED_TOTALS
    assert [item["amount"] for item in report["line_items"]] == crafted.EXPECTED_AMOUNTS
    assert [{key: c[key] for key in crafted.EXPECTED_CREDIT} for c in report["credits"]] == [crafted.EXPECTED_CREDIT]
    assert billing.bill(*args) == report


def test_kept_sla_metrics_follow_every_sample_and_judgement(tmp_path):
    """metrics() hands out one dict per tenant until the next observe/evaluate; each of those
    must show at once (the kept dict never hides a sample, a new attribution or a violation)."""
    catalog = Catalog.open(str(tmp_path / "catalog.db"))
    tracker = SlaTracker(catalog, EventBus(), min_statements=10)
    _tick(tracker, "t", True, statements=100, cpu_ns=10**9)
    first = tracker.metrics("t")
    assert tracker.metrics("t") is first  # kept
    assert first["time_breakdown"]["executing_seconds"] == 1.0
    _tick(tracker, "t", False, statements=100, cpu_ns=10**9)
    second = tracker.metrics("t")
    assert second is not first
    assert second["time_breakdown"]["executing_seconds"] == 2.0 and second["uptime_percent"] == 50.0
    slow = LatencySketch()
    for _ in range(100):
        slow.add(400.0)
    _tick(tracker, "t", True, statements=100, wait_ns=5 * 10**9, latency_ms=slow)
    assert tracker.metrics("t")["violations"] == [] and tracker.metrics("t")["time_breakdown"]["latency_cause"] == "none"
    recorded = tracker.evaluate("t")
    assert "latency" in [v["violation_type"] for v in recorded]
    judged = tracker.metrics("t")
    assert judged["time_breakdown"]["latency_cause"] == "platform"
    assert [v["violation_type"] for v in judged["violations"]] == [v["violation_type"] for v in recorded]
    catalog.close()


def test_api_request_metrics_write_what_prometheus_client_wrote():
    """ApiRequestMetrics (plain numbers, samples made at scrape time) against the oracle it
    replaced: a prometheus-client Counter and Histogram fed the same answers, same text."""
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.exposition import generate_latest

    from rustymt.metering.prometheus import API_LATENCY_BUCKETS, ApiRequestMetrics

    oracle = CollectorRegistry(auto_describe=False)
    requests = Counter("rustymt_api_requests", "REST/GraphQL requests", ["method", "route", "status"], registry=oracle)
    latency = Histogram("rustymt_api_request_duration_seconds", "REST/GraphQL request latency", ["method", "route"],
                        registry=oracle, buckets=API_LATENCY_BUCKETS)
    ours = ApiRequestMetrics()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ours)
    assert generate_latest(registry) == generate_latest(oracle)  # no answers yet: HELP/TYPE only
    rng = random.Random(7)
    answers = [("GET", "/api/v1/tenants/{tenant_id}", 200), ("GET", "/api/v1/tenants", 200), ("POST", "/api/v1/tenants", 409),
               ("GET", "unmatched", 404), ("GET", "/api/v1/tenants", 401), ('BR"EW\\', "unmatched", 405)]
    # bucket bounds exactly (le is inclusive), just above them, beyond the last, and random values
    seconds = [*API_LATENCY_BUCKETS, *(bound * 1.0001 for bound in API_LATENCY_BUCKETS), 7.5, 0.0,
               *(rng.expovariate(200) for _ in range(300))]
    for index, value in enumerate(seconds):
        method, route, status = answers[index % len(answers)]
        series = ours.series(method, route, status)
        ours.observe(series, value)
        requests.labels(method, route, str(status)).inc()
        latency.labels(method, route).observe(value)
    created = {}  # the creation stamps differ by the microseconds between the two: take the oracle's
    for series_key, series in ours._requests.items():
        series.created = requests.labels(*series_key)._created
        created[series_key] = series.created
    for series_key, series in ours._latency.items():
        series.created = latency.labels(*series_key)._created
    assert generate_latest(registry).decode() == generate_latest(oracle).decode()
