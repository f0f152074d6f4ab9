"""REST through the full stack vs a bare aiohttp handler, 64 concurrent clients.

For GET /api/v1/tenants/{id} and GET /api/v1/tenants, wrk (C, epoll: the
client is not the bottleneck) drives the real daemon (metrics, rate-limit,
error and auth middlewares, JWT verification, request validation, service
layer, catalog query, usage from the engine's kept measurements) and then the
bare baseline that answers the same bytes from a dict, alternating ROUNDS
times in the same run. Reported:

* the throughput ratio full/bare (goal >= 0.5), and the ratio of the servers'
  own CPU time per request (read from /proc), which other load on the shared
  host disturbs much less than wall-clock throughput;
* the full stack's p50/p99 at 64 concurrent connections (goal p99 < 5 ms) and
  the arithmetic of that goal: in a closed loop each connection waits for its
  answer, so by Little's law the mean latency is 64 / throughput and p99 is
  above it; p99 < 5 ms needs more than 64 / 0.005 = 12,800 requests/s from
  the server, and little jitter. The line gives the BARE server's best
  requests/s and its p99 in the same run: when even the bare handler's p99 is
  above 5 ms, the goal is out of reach of any aiohttp handler on this host at
  that moment, whatever rustymt's stack costs;
* a one-connection run of the full stack: the service latency without queueing;
* the realistic latency: 64 clients with think time (bench/load.py, wrk Lua
  `delay()`, exponential, latency clocked from the request's write) offering
  PACED_FRACTION of the FULL STACK's own saturated throughput measured just
  before (the think time calibrated on the bare server, as wrk's timers fire
  late), to the full stack, the bare server and the floor (bench/floor_server.c,
  a C epoll server writing the same bytes) alike: p50/p99 of each at the
  same offered load, and the rate each achieved. This is the p99 of a
  deployment running at half its capacity (the line also gives it as a
  share of the bare rate: a slower stack is offered less); the goal p99 < 5 ms is judged on
  it too, and reported separately from the saturated one. The floor's p99
  is what the host, loopback and wrk give by themselves;
* how steadily the host runs Python in the same run (bench/hostnoise.py: a
  fixed unit of interpreter work repeated on each CPU, its spread): when
  units often take 2x their best, requests do too and any Python server
  queues far below its capacity, so when the bare handler's paced p99 is
  above the goal as well, this says why.

    .venv/bin/python -m pytest bench/test_api_bench.py -s
"""
from __future__ import annotations

import statistics

import pytest

from bench import hostnoise
from bench.load import CONCURRENCY, run_wrk, think_time_ms

ROUNDS = 3
PACED_ROUNDS = 2
PACED_FRACTION = 0.5  # of the full stack's saturated requests/s, same run
GOAL_RATIO = 0.5
NOISE_PROBE_SECONDS = 2.0
GOAL_P99_MS = 5.0
# Little's law, closed loop: mean latency = connections / throughput, and p99 >= mean.
P99_GOAL_NEEDS_RPS = CONCURRENCY / (GOAL_P99_MS / 1000.0)


@pytest.mark.parametrize("endpoint", ["get_tenant", "list_tenants"])
def test_full_stack_vs_bare(benchmark, stack, bare, floor, endpoint):
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
    bare_rps = statistics.mean(run.requests_per_second for run in bare_runs)
    full_rps = statistics.mean(run.requests_per_second for run in full_runs)
    offered = PACED_FRACTION * full_rps
    # wrk's timers fire late by up to a millisecond and each cycle also holds the answer time:
    # one calibration run on the bare server measures that overhead per cycle, and the think
    # time is shortened by it so the bare server is offered about `offered` requests/s.
    calibration = run_wrk(*baseline, seconds=3, think_ms=think_time_ms(CONCURRENCY, offered))
    overhead_ms = think_time_ms(CONCURRENCY, calibration.requests_per_second) - think_time_ms(CONCURRENCY, offered)
    think = max(0.5, think_time_ms(CONCURRENCY, offered) - overhead_ms)
    lowest = floor(path)
    paced_bare, paced_full, paced_floor = [], [], []
    for _ in range(PACED_ROUNDS):
        paced_bare.append(run_wrk(*baseline, think_ms=think))
        paced_full.append(run_wrk(*full, think_ms=think))
        paced_floor.append(run_wrk(lowest.url + path, stack.token, lowest.pid, think_ms=think))
    noise = hostnoise.measure(NOISE_PROBE_SECONDS)
    everything = bare_runs + full_runs + [single, calibration] + paced_bare + paced_full + paced_floor
    assert all(run.errors == 0 for run in everything), [r.errors for r in everything]

    ratio = full_rps / bare_rps
    # The least CPU per request over the rounds: contention from other work only ever adds to it.
    full_cpu = min(run.server_cpu_us for run in full_runs)
    bare_cpu = min(run.server_cpu_us for run in bare_runs)
    best_bare_rps = max(run.requests_per_second for run in bare_runs)
    p99 = max(run.p99_ms for run in full_runs)
    p50 = statistics.median(run.p50_ms for run in full_runs)
    bare_p99 = max(run.p99_ms for run in bare_runs)
    paced = {name: {"p50_ms": round(statistics.median(run.p50_ms for run in runs), 2),
                    "p99_ms": round(max(run.p99_ms for run in runs), 2),
                    "achieved_rps": round(statistics.mean(run.requests_per_second for run in runs), 1)}
             for name, runs in (("full", paced_full), ("bare", paced_bare), ("floor", paced_floor))}
    benchmark.extra_info.update({
        "endpoint": endpoint, "concurrency": CONCURRENCY,
        "full_rps": round(full_rps, 1), "bare_rps": round(bare_rps, 1), "ratio": round(ratio, 3),
        "full_cpu_us_per_request": round(full_cpu, 1), "bare_cpu_us_per_request": round(bare_cpu, 1),
        "cpu_ratio": round(bare_cpu / full_cpu, 3),
        "full_p50_ms": round(p50, 2), "full_p99_ms": round(p99, 2), "bare_p99_ms": round(bare_p99, 2),
        "full_p99_ms_one_client": round(single.p99_ms, 2),
        "goal_ratio_met": ratio >= GOAL_RATIO, "goal_p99_met": p99 < GOAL_P99_MS,
        "p99_goal_needs_rps": round(P99_GOAL_NEEDS_RPS), "best_bare_rps": round(best_bare_rps, 1),
        "paced_offered_rps": round(offered, 1), "paced_offered_of_bare": round(offered / bare_rps, 3), "paced_think_ms": round(think, 2),
        "paced_full": paced["full"], "paced_bare": paced["bare"], "paced_floor": paced["floor"], "goal_p99_met_paced": paced["full"]["p99_ms"] < GOAL_P99_MS,
        "host_noise": [{"cpu": cpu.cpu, "unit_best_us": round(cpu.fastest_us), "unit_p90_us": round(cpu.percentile_us(0.9)),
                        "slowed_share": round(cpu.slowed_share, 3), "longest_ms": round(cpu.longest_ms, 1)} for cpu in noise],
    })
    print(f"\n[bench] {endpoint}: full {full_rps:.0f} req/s vs bare {bare_rps:.0f} req/s -> ratio {ratio:.2f} "
          f"(goal >= {GOAL_RATIO}); least server CPU per request full {full_cpu:.0f} us vs bare {bare_cpu:.0f} us "
          f"-> {bare_cpu / full_cpu:.2f}; full p50 {p50:.2f} ms p99 {p99:.2f} ms, bare p99 {bare_p99:.2f} ms "
          f"(goal p99 < {GOAL_P99_MS} ms) at {CONCURRENCY} concurrent connections; "
          f"one client: p99 {single.p99_ms:.2f} ms; p99 < {GOAL_P99_MS} ms at {CONCURRENCY} clients needs "
          f"> {P99_GOAL_NEEDS_RPS:.0f} req/s with little jitter: the bare handler managed {best_bare_rps:.0f} req/s "
          f"at best with p99 {bare_p99:.1f} ms, so the goal is {'within' if bare_p99 < GOAL_P99_MS else 'out of'} "
          f"reach of any aiohttp handler on this host now")
    print(f"[bench] {endpoint} paced: {CONCURRENCY} clients with think time (mean {think:.1f} ms) offering "
          f"{offered:.0f} req/s = {PACED_FRACTION:.0%} of the full stack's saturated rate "
          f"({offered / bare_rps:.0%} of the bare handler's): full p50 "
          f"{paced['full']['p50_ms']:.2f} ms p99 {paced['full']['p99_ms']:.2f} ms at {paced['full']['achieved_rps']:.0f} req/s "
          f"achieved; bare p50 {paced['bare']['p50_ms']:.2f} ms p99 {paced['bare']['p99_ms']:.2f} ms at "
          f"{paced['bare']['achieved_rps']:.0f} req/s; C floor server p50 {paced['floor']['p50_ms']:.2f} ms p99 "
          f"{paced['floor']['p99_ms']:.2f} ms (goal p99 < {GOAL_P99_MS} ms: "
          f"{'met' if paced['full']['p99_ms'] < GOAL_P99_MS else 'not met'})")
    print(f"[bench] host steadiness, a fixed unit of Python work repeated {NOISE_PROBE_SECONDS:g} s per CPU: "
          + "; ".join(cpu.describe() for cpu in noise))
