"""GraphQL: one page of 100 tenants with quota, usage and SLA, against the same
data over REST (GET /api/v1/tenants?page_size=100 + GET each tenant), in the
same run on the same in-process server; p50/p99 of each, the ratio, and the
service calls one GraphQL request costs.

Run: .venv/bin/python -m pytest bench/test_graphql_bench.py -s
"""
from __future__ import annotations

import asyncio
import http.client
import json
import statistics
import threading
import time

import pytest

from tests.graphql.inprocess import App, add_tenants

ROUNDS = 30
QUERY = """{ tenants(pageSize: 100) { totalCount edges { node { tenantId tenantName serviceTier state priority
  quota { cpuPercent memoryMb storageGb iops networkMbps maxConnections }
  usage { cpuPercent memoryMb storageGb currentIops activeConnections lastUpdated }
  sla { uptimePercent avgResponseTimeMs p99ResponseTimeMs violations { severity } } } } } }"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on its own loop in a thread; the bench drives it with a plain HTTP client."""
    app = App(tmp_path_factory.mktemp("gqlbench"))
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = None

    async def main():
        nonlocal stop
        stop = asyncio.Event()
        await add_tenants(app, 100)
        app.count_calls()
        async with app:
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(60), "bench server did not start"
    yield app
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


def request(app: App, connection: http.client.HTTPConnection, method: str, path: str, body=None) -> dict:
    headers = {"Authorization": f"Bearer {app.bench_token}", "Content-Type": "application/json"}
    connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    answer = connection.getresponse()
    payload = json.loads(answer.read())
    assert answer.status == 200, payload
    return payload


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_list_100_tenants_graphql_vs_rest(server, benchmark):
    app = server
    app.bench_token = app.token()
    port = int(app.url.split(":")[2].split("/")[0])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def graphql_once():
        body = request(app, connection, "POST", "/graphql", {"query": QUERY})
        assert len(body["data"]["tenants"]["edges"]) == 100 and "errors" not in body

    def rest_once():
        page = request(app, connection, "GET", "/api/v1/tenants?page_size=100")
        details = [request(app, connection, "GET", f"/api/v1/tenants/{t['tenant_id']}") for t in page["tenants"]]
        assert len(details) == 100

    app.calls.clear()
    graphql_once()
    calls_per_request = dict(app.calls)

    timings = {"graphql": [], "rest": []}
    for _ in range(ROUNDS):  # interleaved, so contention on the shared machine hits both alike
        for name, once in (("graphql", graphql_once), ("rest", rest_once)):
            started = time.perf_counter()
            once()
            timings[name].append(time.perf_counter() - started)
    benchmark.pedantic(graphql_once, rounds=10, iterations=1)
    summary = {name: {"p50_ms": round(statistics.median(s) * 1000, 2), "p99_ms": round(percentile(s, 0.99) * 1000, 2)}
               for name, s in timings.items()}
    ratio = statistics.median(timings["rest"]) / statistics.median(timings["graphql"])
    benchmark.extra_info.update(summary=summary, rest_over_graphql_p50=round(ratio, 2), calls_per_request=calls_per_request)
    print(f"\nlist 100 tenants with quota/usage/sla: GraphQL {summary['graphql']}, REST list+100 GETs {summary['rest']}, "
          f"REST/GraphQL p50 ratio {ratio:.2f}; service calls per GraphQL request {calls_per_request}")
    assert calls_per_request == {"tenants.list": 1, "tenants.describe_many": 1, "catalog.read": 2}
