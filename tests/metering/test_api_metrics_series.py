"""API request metrics per (method, route, status): every answer counted in its own series.

The metering middleware keeps each series' labelled children after first use
(rustymt.metering.prometheus); these checks make sure a kept child still
counts, and that statuses and unmatched paths land in series of their own.
"""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import Daemon
from tests.metering.receiver import tenant_ports

TENANTS = "/api/v1/tenants"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    running = Daemon.start(str(tmp_path_factory.mktemp("api-metrics") / "data"), tenant_ports())
    yield running
    running.stop()


def api_series(daemon) -> dict:
    response = daemon.request("GET", "/metrics")
    assert response.status == 200, response.text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples
            if sample.name.startswith("rustymt_api_request")}


def requests_total(samples, method, route, status) -> float:
    return samples.get(("rustymt_api_requests_total", (("method", method), ("route", route), ("status", status))), 0.0)


def latency_count(samples, method, route) -> float:
    return samples.get(("rustymt_api_request_duration_seconds_count", (("method", method), ("route", route))), 0.0)


def test_each_answer_counts_once_in_its_series(daemon):
    before = api_series(daemon)
    for _ in range(3):
        assert daemon.request("GET", TENANTS).status == 200
    assert daemon.request("GET", TENANTS, token=None).status == 401
    assert daemon.request("GET", "/api/v1/no-such-thing").status == 404
    after = api_series(daemon)
    assert requests_total(after, "GET", TENANTS, "200") - requests_total(before, "GET", TENANTS, "200") == 3
    assert requests_total(after, "GET", TENANTS, "401") - requests_total(before, "GET", TENANTS, "401") == 1
    assert requests_total(after, "GET", "unmatched", "404") - requests_total(before, "GET", "unmatched", "404") == 1
    assert latency_count(after, "GET", TENANTS) - latency_count(before, "GET", TENANTS) == 4
    # The scrape itself is counted too, under its own route.
    assert requests_total(after, "GET", "/metrics", "200") >= 1
