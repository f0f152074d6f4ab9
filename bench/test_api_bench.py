"""REST through the full stack vs a bare aiohttp handler, 64 concurrent clients.

For GET /api/v1/tenants/{id} and GET /api/v1/tenants, wrk drives the real
daemon (error middleware, JWT verification, rate-limit middleware, request
validation, service layer, catalog query) and then the bare baseline that
answers the same bytes from a dict, alternating ROUNDS times in the same run.
Reported: the throughput ratio full/bare (goal >= 0.5) and the full stack's
p50/p99 latency at 64 concurrent connections (goal p99 < 5 ms). Closed loop:
by Little's law p99 cannot be below about 64 / throughput, so the p99 goal
needs roughly 13,000 requests/s; the figures printed say how far off that is.
A one-connection run of the full stack gives the service latency without
queueing for comparison.

    .venv/bin/python -m pytest bench/test_api_bench.py -s
"""
from __future__ import annotations

import statistics

import pytest

from bench.load import CONCURRENCY, run_wrk

ROUNDS = 2
GOAL_RATIO = 0.5
GOAL_P99_MS = 5.0


@pytest.mark.parametrize("endpoint", ["get_tenant", "list_tenants"])
def test_full_stack_vs_bare(benchmark, stack, bare, endpoint):
    path = f"/api/v1/tenants/{stack.tenant_id}" if endpoint == "get_tenant" else "/api/v1/tenants"
    full = (stack.daemon.base_url + path, stack.token, stack.daemon.process.pid)
    baseline = (bare.url + path, stack.token, bare.pid)
    run_wrk(*full, seconds=1)  # warm both (connections, caches)
    run_wrk(*baseline, seconds=1)
    bare_runs, full_runs = [], []

    def measure():
        for _ in range(ROUNDS):
            bare_runs.append(run_wrk(*baseline))
            full_runs.append(run_wrk(*full))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    single = run_wrk(*full, connections=1, seconds=3)  # service latency without queueing
    assert all(run.errors == 0 for run in bare_runs + full_runs + [single]), [r.errors for r in bare_runs + full_runs]

    full_rps = statistics.mean(run.requests_per_second for run in full_runs)
    bare_rps = statistics.mean(run.requests_per_second for run in bare_runs)
    ratio = full_rps / bare_rps
    full_cpu = statistics.mean(run.server_cpu_us for run in full_runs)
    bare_cpu = statistics.mean(run.server_cpu_us for run in bare_runs)
    p99 = max(run.p99_ms for run in full_runs)
    p50 = statistics.median(run.p50_ms for run in full_runs)
    bare_p99 = max(run.p99_ms for run in bare_runs)
    benchmark.extra_info.update({
        "endpoint": endpoint, "concurrency": CONCURRENCY,
        "full_rps": round(full_rps, 1), "bare_rps": round(bare_rps, 1), "ratio": round(ratio, 3),
        "full_cpu_us_per_request": round(full_cpu, 1), "bare_cpu_us_per_request": round(bare_cpu, 1),
        "cpu_ratio": round(bare_cpu / full_cpu, 3),
        "full_p50_ms": round(p50, 2), "full_p99_ms": round(p99, 2), "bare_p99_ms": round(bare_p99, 2),
        "full_p99_ms_one_client": round(single.p99_ms, 2),
        "goal_ratio_met": ratio >= GOAL_RATIO, "goal_p99_met": p99 < GOAL_P99_MS,
    })
    print(f"\n[bench] {endpoint}: full {full_rps:.0f} req/s vs bare {bare_rps:.0f} req/s -> ratio {ratio:.2f} "
          f"(goal >= {GOAL_RATIO}); server CPU per request full {full_cpu:.0f} us vs bare {bare_cpu:.0f} us "
          f"-> {bare_cpu / full_cpu:.2f}; full p50 {p50:.2f} ms p99 {p99:.2f} ms, bare p99 {bare_p99:.2f} ms "
          f"(goal p99 < {GOAL_P99_MS} ms) at {CONCURRENCY} concurrent connections; "
          f"one client: p99 {single.p99_ms:.2f} ms")
